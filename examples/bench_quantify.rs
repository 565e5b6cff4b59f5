//! Cost of one quantify pass (reference facts section 8: one class, one method, every
//! validation image) done the reference's way against ours, at the real
//! geometry and with no download: DINOv2 ViT-B/14-reg with random weights,
//! a random ReLU SAE on layer 10 (768 -> 24,576), a random probe 768 -> 151
//! and a synthetic ADE20K validation split, cached once (float32, every
//! token) in a scratch folder.
//!
//! Per iteration, over every validation image in batches of `--batch`:
//! - full: the whole ViT from pixels twice (unedited, then edited at the SAE's
//!   layer through the full-width SAE encode/decode), as the reference does;
//! - cached: the cached layer activations, the rank-1 edit, the remaining
//!   blocks, the final norm and the probe, one class at a time;
//! - stacked: the same with `--classes-per-batch` classes in one batch, as
//!   `Quantify::run` does, per class.
//!
//! One warm-up iteration, then the median of `--iters` timed ones.
//!
//! ```text
//! cargo run --release -p sae-steer-examples --example bench_quantify -- --images 16 --iters 3
//! ```

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::bench_quantify::main()
}

//! Caches ViT activations (and labels) of an image list, for probe and SAE
//! training, feature statistics and steering:
//!
//! ```text
//! cargo run --release --example cache -- \
//!   --vit <hub id | HF folder | .pth> --ade20k DIR --split validation \
//!   --taps layer10:f32,final_norm:f16 --labels pixel --out DIR \
//!   [--max-images N] [--batch 16] [--shard-images 256] [--skip-bad] [--device cpu|cuda]
//! ```
//!
//! `--images DIR` reads an image folder (ImageNet layout or flat) instead of
//! ADE20K. Taps: `layer<L>` (residual stream after block L, all tokens) or
//! `final_norm` (the probe's input, patch tokens), each with `:f32` or `:f16`
//! and optionally `:patches` / `:all`. Caches that feed steering must be f32.
//!
//! Rerunning the same command resumes an interrupted run; a directory holding
//! a cache made differently is refused with the list of differences.

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::cache::main()
}

//! Throughput of a 768 x 24,576 SAE (the published DINOv2 SAE's shape) with
//! random weights: (a) encode + decode, in patches/s; (b) one saev training
//! step (forward, hand-written backward, parallel-gradient removal, Adam,
//! decoder renormalisation), in steps/s and rows/s. With `--torch PYTHON`
//! the same measurements run in PyTorch (`scripts/bench_sae_torch.py`) right
//! after, on the same machine, and the ratios are printed.
//!
//! ```text
//! cargo run --release -p sae-steer-examples --example bench_sae -- \
//!     --torch /work/pyenv/bin/python --threads 2
//! ```

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::bench_sae::main()
}

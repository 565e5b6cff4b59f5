//! Seconds per epoch of the probe sweep (18 probes 768 -> 151 by default)
//! over synthetic cached activations with the real shapes: f16 patches in
//! memory, widened to f32 per batch as the cache reader does, batches of
//! 1,024 whole images of 256 patches. With `--torch PYTHON` the reference's
//! PyTorch loop (`scripts/bench_probe_torch.py`) runs right after on the same
//! data sizes and machine.
//!
//! ```text
//! cargo run --release -p sae-steer-examples --example bench_probe -- \
//!     --images 2048 --epochs 2 --torch /work/pyenv/bin/python --threads 2
//! ```

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::bench_probe::main()
}

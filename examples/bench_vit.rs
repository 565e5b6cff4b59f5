//! Throughput of DINOv2 ViT-B/14-reg at 224 px with random weights (no
//! download): images/s per batch size and the process's peak memory.
//! Run through `cargo xtask bench vit`, which also runs PyTorch when asked.

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::bench_vit::main()
}

//! Feature statistics of an SAE over a reference set of images (reference facts
//! section 5, saev's `visuals`): per latent the largest activation
//! (`max_obs`, the steering slider's unit), the firing frequency, the mean
//! over active patches and the top-k images with their per-patch values.
//!
//! ```text
//! cargo run --release -p sae-steer-examples --example stats -- \
//!   --sae osunlp/SAE_DINOv2_24K_ViT-B-14_IN1K --images /data/imagenet/train \
//!   --max-images 50000 --save-norm stats/normalization.safetensors \
//!   --out stats/feature-stats.safetensors
//! ```
//!
//! The layer's activations are cached first (`--cache-dir`, resumable), then
//! the statistics are computed from the cache into `--out`, which is saved
//! every minute (`--save-every`): rerunning after an interruption, even a
//! `kill -9`, continues where it stopped and ends with the file an
//! uninterrupted run writes, and rerunning a finished run only prints its
//! summary.

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::stats::main()
}

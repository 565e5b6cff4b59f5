//! Writes an SAE as a SAELens folder (`cfg.json` + `sae_weights.safetensors`)
//! with its input normalization folded into the weights, so SAELens and the
//! tools built on it compute the same latents from raw ViT activations:
//!
//! ```text
//! cargo run --release --example export_sae -- --sae runs/demo/sae/relu-s512-lr0.001-l1_0.002.safetensors \
//!     --out runs/demo/saelens --hook-name layer.1
//! ```

fn main() -> std::process::ExitCode {
    sae_steer_cli::commands::export_sae::main()
}

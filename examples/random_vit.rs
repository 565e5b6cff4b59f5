//! Writes a DINOv2 with deterministic random weights as a Hugging Face folder
//! (`config.json`, `model.safetensors`), so every program that takes `--vit`
//! can run at a real geometry with no download (`cargo xtask reproduce
//! --scale` uses it):
//!
//! ```text
//! cargo run --release --example random_vit -- --out runs/vit-b14-reg --geometry vit-b14-reg
//! ```

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::random_vit::main()
}

//! Trains one SAE or a sweep of SAEs on cached ViT activations, all in one
//! pass over the data (reference facts section 4; saev's recipe by default).
//!
//! ```text
//! cargo run --release -p sae-steer-examples --example train_sae -- \
//!     --data cache/ade20k-train --tensor layer10 --tokens 0..1,5..261 \
//!     --exp-factor 16,32 --lr 3e-4,1e-3,3e-3 --l1 4e-4,8e-4,1.6e-3 \
//!     --out runs/sweep --device cuda
//! ```
//! `--data` takes an activation-cache directory (its `manifest.json` lists the
//! shards), a directory of `.safetensors` files, or files. Rerunning the same
//! command resumes from the last checkpoint in `--out`.

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::train_sae::main()
}

//! Runs DINOv2 on one image and writes every layer's activations.
//!
//! A stable interface other tools call (parity checks, notebooks):
//!
//! ```text
//! cargo run --release --example activations -- \
//!   --vit <HF folder | .pth file | hub id> (--image <file> | --pixel-values <file>) \
//!   --out <file.safetensors> \
//!   [--sae <file | hub id> [--sae-layer L] [--sae-norm <file>] \
//!    [--steer-latent J --steer-value V]]
//! ```
//!
//! Writes float32 tensors: `pixel_values` [3, H, W] (the model input),
//! `layer.{i}` [tokens, d] for every block i (0-based, residual after block i,
//! before the final norm), `x_norm_patchtokens` [patches, d], `x_norm_clstoken` [d].
//!
//! With `--sae` also, for the patch tokens of layer L: `sae.f_x` [patches, d_sae]
//! and `sae.x_hat` [patches, d] (the SAE's units: normalized when it has a
//! normalization), and with `--steer-latent J --steer-value V`, `sae.steered`
//! [patches, d] (model units): layer L's patches with latent J set to V on every
//! patch, the SAE's error term kept. A saev `sae.pt` carries no normalization,
//! so none is applied unless `--sae-norm` gives one; our own checkpoints apply
//! the one they store, which `--sae-norm` replaces.

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::activations::main()
}

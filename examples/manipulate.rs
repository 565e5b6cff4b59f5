//! The interactive steering app (the preprint's web demo, reference facts section 9):
//!
//! ```text
//! cargo run --release --example manipulate -- \
//!   --vit <hub id | folder | .pth> --sae <file | hub id> --probe <checkpoint folder | file> \
//!   --ade20k DIR [--stats FILE|DIR] [--sae-norm FILE] [--layer 10] \
//!   [--addr 127.0.0.1:8000] [--device cpu|cuda]
//! ```
//!
//! Then open the printed address. Pick an ADE20K validation image (or upload
//! one), click patches, and move the sliders of the SAE latents found there:
//! a slider `s` sets the latent to `s * max_obs` on every patch at the SAE's
//! layer (error term kept), and the probe's segmentation is recomputed from
//! the blocks after that layer.
//!
//! `--stats` is a feature-statistics file (ours) or a saev `visuals` folder;
//! without it slider units are per-image maxima and nothing is hidden. An
//! SAE without a stored input normalization gets `--sae-norm`, or one
//! estimated on `--norm-images` ADE20K training images (the page says so).
//! The server listens on loopback unless `--addr` says otherwise; it serves
//! only its embedded page and the API, never files.

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::manipulate::main()
}

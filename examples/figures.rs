//! Static steering figures: for each `--edit IMAGE:LATENT:SLIDER`, a PNG with
//! the image, its true labels, the probe's prediction, and the prediction
//! after setting the latent to `SLIDER * max_obs` on every patch at the SAE's
//! layer, with a legend of the classes shown.
//!
//! ```text
//! cargo run --release --example figures -- \
//!   --vit <hub id | folder | .pth> --sae <file | hub id> --probe <checkpoint> \
//!   --ade20k DIR [--stats FILE|DIR] [--sae-norm FILE] \
//!   [--edit 1872:7235:-6 ...] --out DIR
//! ```
//!
//! Without `--edit`, the preprint's four examples (car, painting, toilet,
//! bed); with `--from-selection` (quantify's `selection.csv`), the best
//! automatically selected features instead, each on the image where its class
//! covers most pixels. Writes `DIR/steer-{image}-{latent}-{slider}.png` and
//! `DIR/index.txt` (the files written, one per line); an edit whose image or
//! latent the data at hand lacks is reported and skipped.

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::figures::main()
}

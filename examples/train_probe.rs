//! Trains a sweep of linear segmentation probes on DINOv2's ADE20K patch
//! features, all probes in one pass over the data (saev `contrib/semseg train`):
//!
//! ```text
//! cargo run --release --example train_probe -- \
//!   --sweep sweep.toml --ade20k DIR [--vit <hub id | folder | .pth>] [--device cpu|cuda] \
//!   [--ckpt-path checkpoints/contrib/semseg] [--log-to logs/contrib/semseg] [--cache DIR]
//! ```
//!
//! The reference's spellings work too (`--imgs.root`, `--n-epochs`,
//! `--batch-size`, `--eval-every`, `--learning-rate`, `--weight-decay`,
//! `--seed`, `--n-workers`). Without `--sweep` or rates on the command line,
//! the preprint's 6 x 3 sweep is trained. A sweep file's keys override the
//! command line, as in the reference.
//!
//! The probes read the final-norm patch tokens from an activation cache of the
//! training split (f16, patch labels); when it is missing or incomplete it is
//! built (or resumed) first with the ViT. Rerunning the command resumes
//! training from the newest checkpoint all probes share.

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::train_probe::main()
}

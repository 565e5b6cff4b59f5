//! Quantify pseudo-orthogonality (the preprint's "Quantitative" section,
//! reference facts section 8): for each ADE20K class and each of four ways to pick a
//! direction, edit every patch of every validation image at the SAE's layer
//! and count how the probe's patch predictions change.
//!
//! ```text
//! cargo run --release --example quantify -- \
//!   --sae-ckpt checkpoints/public/oebd6e6i/sae.pt \
//!   --seg-ckpt checkpoints/contrib/semseg/lr_0_001__wd_0_1/ \
//!   --imgs.root /data/ade20k/
//! ```
//!
//! The seed's command works as is. A full run is a GPU job (about 600
//! class-method passes over 2,000 images); on a CPU use `--classes` and
//! `--max-images`. Results go to `--out` (default `logs/contrib/semseg/quantify`):
//! `results.csv`, `per_class.csv`, `changes.csv`, `selection.csv`, `summary.md`,
//! and `passes.jsonl`, which lets an interrupted run resume at the next class.
//! In `results.csv`, `target_change`, `target_std`, `other_change` and
//! `other_std` mean what the reference's columns of those names mean (pooled
//! fractions, std over all 150 classes with 0 for a class without patches);
//! our macro means and stds in percent are the `*_macro_pct` columns.
//! The files hold results only (the time per pass is printed, not written),
//! so a run resumed after a `kill -9` writes exactly the bytes of an
//! uninterrupted one.

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::quantify::main()
}

//! Scores every probe under a checkpoint root on ADE20K validation and writes
//! the sweep's reports (saev `contrib/semseg validate`):
//!
//! ```text
//! cargo run --release --example validate -- \
//!   --ade20k DIR [--ckpt-root checkpoints/contrib/semseg] [--dump-to logs/contrib/semseg] \
//!   [--vit <hub id | folder | .pth>] [--device cpu|cuda] [--cache DIR]
//! ```
//!
//! `--imgs.root` is accepted for `--ade20k`. Probe folders may be ours
//! (`model_step{N}.safetensors`) or the reference's (`model_step{N}.pt`); the
//! latest step of each is scored. Writes `results.csv`, `hparam-sweeps.png`
//! and `best.json` into `--dump-to`.
//!
//! The probes read final-norm patch tokens from an activation cache of the
//! validation split (f32, pixel labels), built or resumed first when it is
//! missing or incomplete.

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::validate::main()
}

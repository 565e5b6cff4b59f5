//! `cargo xtask synth-ade20k`: a synthetic dataset in the real ADE20K layout,
//! written by the `synth_ade20k` example (release build).

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Dataset root to write (relative paths are taken from where xtask runs).
    #[arg(long)]
    out: PathBuf,
    /// Training images.
    #[arg(long, default_value_t = 200)]
    train: usize,
    /// Validation images.
    #[arg(long, default_value_t = 50)]
    val: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Further options for the example (e.g. `--classes car,bed`), after `--`.
    #[arg(last = true)]
    rest: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    // cargo runs the example from the workspace root: resolve `--out` here.
    let out = std::path::absolute(&args.out)
        .with_context(|| format!("cannot resolve {}", args.out.display()))?;
    let mut cmd = crate::example("synth_ade20k");
    cmd.arg("--")
        .arg("--out")
        .arg(out)
        .args(["--train", &args.train.to_string()])
        .args(["--val", &args.val.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .args(&args.rest);
    sae_steer_jobs::status(cmd)
}

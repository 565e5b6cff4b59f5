//! The `random_vit` program; its usage is documented in `examples/random_vit.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use sae_steer::vit::{VitConfig, write_random_hf_folder};

#[derive(Parser, Debug)]
#[command(about = "Write a random-weight DINOv2 as a Hugging Face folder (no download)")]
pub struct Args {
    /// Folder to write (config.json, model.safetensors).
    #[arg(long)]
    out: PathBuf,
    /// The geometry: `vit-b14-reg` (facebook/dinov2-with-registers-base:
    /// 768 wide, 12 blocks, 4 registers, patch 14).
    #[arg(long, default_value = "vit-b14-reg")]
    geometry: String,
    /// Seed of the weights (the same seed writes the same file).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn run(args: Args) -> Result<()> {
    let config = match args.geometry.as_str() {
        "vit-b14-reg" => VitConfig::vit_b14_reg(),
        other => bail!("unknown geometry `{other}` (known: vit-b14-reg)"),
    };
    write_random_hf_folder(&config, args.seed, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "wrote a random-weight {} ({} blocks, width {}) to {}",
        args.geometry,
        config.num_hidden_layers,
        config.hidden_size,
        args.out.display()
    );
    Ok(())
}

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    crate::cli::report(run(args))
}

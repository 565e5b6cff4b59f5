//! The `export_sae` program: writes an SAE (ours, saev's or SAELens's) as a
//! SAELens folder, `cfg.json` + `sae_weights.safetensors`, that SAELens's
//! `SAE.load_from_disk` and the tools built on it read.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use sae_steer::backend::Cpu;
use sae_steer::sae::{NormalizationSource, Sae, saelens};

#[derive(Parser, Debug)]
#[command(
    about = "Write an SAE as a SAELens folder (cfg.json + sae_weights.safetensors)",
    long_about = "Write an SAE as a SAELens folder (cfg.json + sae_weights.safetensors). SAELens \
SAEs read raw activations, so the input normalization is folded into the weights: the exported \
SAE computes the same latents and reconstructions from the ViT's own activations."
)]
pub struct Args {
    /// The SAE: our .safetensors, a saev sae.pt, a SAELens folder or a hub id.
    #[arg(long)]
    sae: String,
    /// Its input normalization: a file with `mean` and `scalar` (saev's
    /// checkpoints carry none). Without it the checkpoint's own is used,
    /// or none if it has none.
    #[arg(long)]
    normalization: Option<PathBuf>,
    /// Folder to write.
    #[arg(long)]
    out: PathBuf,
    /// Recorded in cfg.json's metadata: the backbone (default: the SAE's own record).
    #[arg(long)]
    model_name: Option<String>,
    /// Recorded in cfg.json's metadata: where the activations are read, e.g. `layer.10`.
    #[arg(long)]
    hook_name: Option<String>,
}

fn run(args: Args) -> Result<()> {
    let file = Sae::<Cpu>::load(&args.sae, &Default::default())
        .with_context(|| format!("cannot load the SAE {}", args.sae))?;
    let source = match &args.normalization {
        Some(path) => NormalizationSource::File(path.clone()),
        None if file.has_normalization() => NormalizationSource::Checkpoint,
        None => NormalizationSource::None,
    };
    let (sae, source) = file.resolve(source)?;
    saelens::write(
        &sae.to_weights(),
        &args.out,
        args.model_name.as_deref(),
        args.hook_name.as_deref(),
    )
    .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "wrote {} ({} -> {} latents, {:?}, normalization {source} folded in) as a SAELens folder",
        args.out.display(),
        sae.d_model(),
        sae.d_sae(),
        sae.config.activation
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

//! The `toy_files` program; its usage is documented in `examples/toy_files.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sae_steer::Vit;
use sae_steer::backend::Cpu;
use sae_steer_app::toy::{ToyOptions, build};

#[derive(Parser, Debug)]
pub struct Args {
    /// Output folder (the dataset goes to OUT/ade20k).
    #[arg(long)]
    out: PathBuf,
    /// The ViT (a Hugging Face folder, .pth or hub id).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/vit/reg"))]
    vit: String,
    /// The SAE's layer.
    #[arg(long, default_value_t = 1)]
    layer: usize,
    /// Validation images.
    #[arg(long, default_value_t = 12)]
    images: usize,
}

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let device = Default::default();
        let vit = Vit::<Cpu>::load(&args.vit, &device)?;
        let opts = ToyOptions {
            layer: args.layer,
            images: args.images,
            ..ToyOptions::default()
        };
        let toy = build(vit, &args.out.join("ade20k"), &opts)?;
        let files = toy.save(&args.out)?;
        println!(
            "cargo run --release --example manipulate -- --vit {} --sae {} --probe {} --ade20k {} --stats {} --layer {}",
            args.vit,
            files.sae.display(),
            files.probe.display(),
            files.ade20k.display(),
            files
                .stats
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            args.layer,
        );
        Ok(())
    };
    // The error with its causes (the I/O error under "cannot access ...").
    crate::report(run())
}

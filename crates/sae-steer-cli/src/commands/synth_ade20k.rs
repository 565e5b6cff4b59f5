//! The `synth_ade20k` program; its usage is documented in `examples/synth_ade20k.rs`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Parser;
use sae_steer_ade20k::synth::{SynthOptions, synthesize};
use sae_steer_ade20k::{ClassNames, NUM_CLASSES};

use crate::cli::IndicatifProgress;

#[derive(Parser, Debug)]
#[command(about = "Write a synthetic dataset in the ADE20K SceneParsing layout")]
pub struct Args {
    /// Dataset root to write (images/, annotations/, objectInfo150.txt, ...).
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
    /// Smallest long side of an image in pixels.
    #[arg(long, default_value_t = 96)]
    min_side: u32,
    /// Largest long side of an image in pixels.
    #[arg(long, default_value_t = 512)]
    max_side: u32,
    /// Only these classes (names or numbers, comma-separated), e.g.
    /// `car,bed,painting,toilet`; default all 150.
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// JPEG quality (1-100).
    #[arg(long, default_value_t = 90)]
    quality: u8,
    /// Image sizes: `uniform` (long side in --min-side..=--max-side) or `ade`
    /// (ADE20K's mix: mostly about 683 x 512, some small, some over 1,000 px
    /// wide; ignores --min-side and --max-side).
    #[arg(long, default_value = "uniform")]
    sizes: sae_steer_ade20k::synth::Sizes,
}

fn run(args: Args) -> Result<()> {
    let names = ClassNames::ade20k_default();
    let mut classes = Vec::new();
    for name in &args.classes {
        match names.find(name) {
            Some(c) if c > 0 => classes.push(c as u8),
            _ => {
                bail!("`{name}` is not an ADE20K class (a name from objectInfo150.txt or 1..=150)")
            }
        }
    }
    if classes.is_empty() {
        classes = (1..=NUM_CLASSES as u8).collect();
    }
    let opts = SynthOptions {
        train: args.train,
        val: args.val,
        seed: args.seed,
        min_side: args.min_side,
        max_side: args.max_side,
        classes,
        jpeg_quality: args.quality,
        sizes: args.sizes,
        ..SynthOptions::default()
    };
    let start = Instant::now();
    let report = synthesize(&args.out, &opts, &IndicatifProgress::new())?;
    let secs = start.elapsed().as_secs_f64();
    if report.up_to_date {
        println!(
            "{} already holds this dataset ({} training + {} validation images); nothing written",
            report.root.display(),
            report.train,
            report.val
        );
    } else {
        println!(
            "wrote {} training + {} validation images with annotations to {} ({} files, {:.1} s{})",
            report.train,
            report.val,
            report.root.display(),
            report.files_written,
            secs,
            if report.files_removed > 0 {
                format!(", {} stale files removed", report.files_removed)
            } else {
                String::new()
            }
        );
    }
    let total: u64 = report.class_pixels.iter().sum();
    let present = report.class_pixels[1..].iter().filter(|&&n| n > 0).count();
    println!(
        "{present} classes present; {:.1}% of pixels unlabelled (0)",
        100.0 * report.class_pixels.first().copied().unwrap_or(0) as f64 / total.max(1) as f64
    );
    let mut top: Vec<(usize, u64)> = report
        .class_pixels
        .iter()
        .copied()
        .enumerate()
        .skip(1)
        .collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let shown: Vec<String> = top
        .iter()
        .take(5)
        .filter(|(_, n)| *n > 0)
        .map(|&(c, n)| {
            format!(
                "{c} {} {:.1}%",
                names.name(c),
                100.0 * n as f64 / total.max(1) as f64
            )
        })
        .collect();
    println!("largest classes: {}", shown.join(", "));
    Ok(())
}

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    crate::cli::report(run(args))
}

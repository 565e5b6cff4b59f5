//! `cargo xtask <command>`: developer tasks, in Rust rather than shell
//! scripts (the rust-analyzer convention). It drives cargo and never links the
//! heavy crates itself, so it builds in seconds. `fetch`, `reproduce` and
//! `scale-fit` are the `sae-steer` program's own jobs (`sae-steer-jobs`),
//! reachable here too because our docs and CI use them.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};
use sae_steer_jobs::{Programs, cargo, fetch, reproduce, root, scale, status};

mod synth;

#[derive(Parser)]
#[command(about = "sae-steer project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// What CI runs: format check, clippy with warnings as errors, all tests.
    Ci,
    /// Benchmarks (release builds), printed next to PyTorch when available.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
    /// Write a synthetic dataset in the real ADE20K layout (tests, offline demo).
    SynthAde20k(synth::Args),
    /// Download ADE20K, DINOv2 and the published SAE (see data-manifests/).
    Fetch(fetch::Args),
    /// The preprint end to end (fetch, caches, probes, statistics, quantify,
    /// figures, report.md); `--demo` runs it offline on embedded defaults.
    Reproduce(reproduce::Args),
    /// Fit the costs of several `reproduce --scale` runs (their scale.json)
    /// against their size: the growth table, its extrapolation to the full
    /// job, and the reference's estimated cost beside ours.
    ScaleFit {
        /// scale.json files of runs at different fractions, one device.
        #[arg(required = true, num_args = 2..)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// DINOv2 ViT-B/14-reg forward at 224 px, random weights, on the CPU.
    Vit {
        /// Batch sizes to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        batch: Vec<usize>,
        /// Timed repetitions per batch size (after one warm-up).
        #[arg(long, default_value_t = 3)]
        iters: usize,
        /// A Python with torch + transformers: also run scripts/bench_vit_torch.py
        /// with the same settings, in the same run.
        #[arg(long)]
        python: Option<PathBuf>,
        /// Extra cargo features for the Rust side (e.g. openblas-system, flex).
        #[arg(long)]
        features: Option<String>,
        /// Device for the Rust side: cpu, flex or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo run -p sae-steer-examples --example NAME`, optimised: the
/// experiments push real tensors and are too slow in a debug build.
pub(crate) fn example(name: &str) -> Command {
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "-p",
        "sae-steer-examples",
        "--example",
        name,
    ]);
    c
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::SynthAde20k(args) => synth::run(args),
        Cmd::Fetch(args) => fetch::run(args),
        Cmd::Reproduce(args) => reproduce::run(args, Programs::Build),
        Cmd::ScaleFit { files } => {
            let reports = files
                .iter()
                .map(|f| scale::read_report(f))
                .collect::<Result<Vec<_>>>()?;
            print!("{}", scale::fit_markdown(&reports));
            Ok(())
        }
        Cmd::Ci => {
            let mut fmt = cargo();
            fmt.args(["fmt", "--all", "--check"]);
            status(fmt)?;
            let mut clippy = cargo();
            clippy.args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]);
            status(clippy)?;
            let mut test = cargo();
            test.args(["test", "--workspace", "--no-fail-fast"]);
            status(test)
        }
        Cmd::Bench {
            what:
                Bench::Vit {
                    batch,
                    iters,
                    python,
                    features,
                    device,
                },
        } => {
            let batches = batch
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let mut rust = cargo();
            rust.args([
                "run",
                "--release",
                "-p",
                "sae-steer-examples",
                "--example",
                "bench_vit",
            ]);
            if let Some(f) = &features {
                rust.args(["--features", f]);
            }
            rust.args([
                "--",
                "--batch",
                &batches,
                "--iters",
                &iters.to_string(),
                "--device",
                &device,
            ]);
            status(rust)?;
            if let Some(py) = python {
                let mut torch = Command::new(py);
                torch.current_dir(root()).args([
                    "scripts/bench_vit_torch.py",
                    "--batch",
                    &batches,
                    "--iters",
                    &iters.to_string(),
                ]);
                status(torch)?;
            }
            Ok(())
        }
    }
}

//! `cargo xtask <command>`: developer tasks, in Rust rather than shell
//! scripts (the rust-analyzer convention). It drives cargo and never links the
//! heavy crates itself, so it builds in seconds. `fetch`, `reproduce` and
//! `scale-fit` are the `sae-steer` program's own jobs (`sae-steer-jobs`),
//! reachable here too because our docs and CI use them.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};
use sae_steer_jobs::{Programs, cargo, fetch, reproduce, scale, status};

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
    /// DINOv2 ViT-B/14-reg forward at 224 px, random weights (images/s by
    /// batch size).
    Vit(BenchArgs),
    /// SAE encode + decode and training steps: ReLU + L1, and TopK + AuxK
    /// with `-- --topk K` (rows/s).
    Sae(BenchArgs),
    /// One epoch of the linear-probe sweep over cached activations.
    Probe(BenchArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// A Python with torch + transformers (../shared/tools/baseline-python.sh
    /// makes one): runs the PyTorch side in the same run and prints the ratio.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Extra cargo features for the Rust side (cuda, openblas-system).
    #[arg(long)]
    features: Option<String>,
    /// Everything after `--` goes to the benchmark (`-- --help` lists it).
    #[arg(last = true)]
    args: Vec<String>,
}

impl Bench {
    /// The benchmark's example and its arguments.
    fn command(self) -> (&'static str, BenchArgs) {
        match self {
            Self::Vit(a) => ("bench_vit", a),
            Self::Sae(a) => ("bench_sae", a),
            Self::Probe(a) => ("bench_probe", a),
        }
    }
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
        Cmd::Bench { what } => {
            let (name, args) = what.command();
            let mut rust = example(name);
            if let Some(f) = &args.features {
                rust.args(["--features", f]);
            }
            rust.arg("--");
            if let Some(py) = &args.python {
                rust.arg("--torch").arg(py);
            }
            rust.args(&args.args);
            status(rust)
        }
    }
}

//! The `bench_vit` program; its usage is documented in `examples/bench_vit.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use sae_steer::backend::{BackendTask, DeviceChoice, run_on};
use sae_steer::burn::prelude::*;
use sae_steer::{Vit, VitConfig};

#[derive(Parser, Clone)]
#[command(about = "Benchmark the DINOv2 ViT-B/14-reg forward pass (random weights, 224 px)")]
pub struct Args {
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    batch: Vec<usize>,
    /// Timed repetitions per batch size, after one warm-up.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// cpu (burn-flex, the default), ndarray, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    #[command(flatten)]
    baseline: crate::cli::BaselineArgs,
}

/// Images per second by batch size.
type Results = BTreeMap<usize, f64>;

struct Bench(Args);

impl BackendTask for Bench {
    type Output = Result<Results>;
    fn run<B: Backend>(self, device: B::Device) -> Result<Results> {
        let vit = Vit::<B>::random(VitConfig::vit_b14_reg(), 0, &device)?;
        println!(
            "backend={} threads={}",
            self.0.device,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        let mut results = Results::new();
        for &b in &self.0.batch {
            let x = Tensor::<B, 4>::random(
                [b, 3, 224, 224],
                sae_steer::burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            );
            // Warm-up: resamples the position embeddings, fills allocator pools.
            vit.forward(x.clone())?.into_data();
            let start = Instant::now();
            for _ in 0..self.0.iters {
                // into_data forces the (possibly asynchronous) backend to finish.
                vit.forward(x.clone())?.into_data();
            }
            let secs = start.elapsed().as_secs_f64();
            let rate = (b * self.0.iters) as f64 / secs;
            println!(
                "rust batch={b} images_per_s={rate:.3} peak_rss_mib={:.0}",
                crate::cli::peak_rss_mib()
            );
            results.insert(b, rate);
        }
        Ok(results)
    }
}

fn torch_results(args: &Args, python: &Path) -> Result<Results> {
    let batches: Vec<String> = args.batch.iter().map(|b| b.to_string()).collect();
    let torch_device = match args.device {
        DeviceChoice::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    let lines = crate::cli::run_torch_script(
        python,
        "bench_vit_torch.py",
        &[
            "--batch".into(),
            batches.join(","),
            "--iters".into(),
            args.iters.to_string(),
            "--threads".into(),
            args.baseline.threads.to_string(),
            "--device".into(),
            torch_device,
        ],
    )?;
    let mut results = Results::new();
    for line in lines {
        // "torch batch=N images_per_s=R peak_rss_mib=M"
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        };
        if let (Some(Ok(b)), Some(Ok(rate))) = (
            field("batch").map(str::parse),
            field("images_per_s").map(str::parse),
        ) {
            results.insert(b, rate);
        }
    }
    Ok(results)
}

fn main_inner(args: Args) -> Result<()> {
    let (ours, theirs) = crate::cli::alternate_rounds(
        args.baseline.rounds,
        || run_on(args.device, Bench(args.clone()))?,
        args.baseline
            .torch
            .as_ref()
            .map(|py| || torch_results(&args, py)),
        |kept: &mut f64, new| *kept = kept.max(new),
    )?;
    if args.baseline.torch.is_some() {
        println!("\n| batch | ours (images/s) | PyTorch (images/s) | ours / PyTorch |");
        println!("|---:|---:|---:|---:|");
        for (b, rate) in &ours {
            if let Some(t) = theirs.get(b) {
                println!("| {b} | {rate:.2} | {t:.2} | {:.2} |", rate / t);
            }
        }
    }
    Ok(())
}

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    crate::cli::report(main_inner(args))
}

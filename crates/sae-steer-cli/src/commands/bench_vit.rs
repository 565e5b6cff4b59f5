//! The `bench_vit` program; its usage is documented in `examples/bench_vit.rs`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use sae_steer::backend::{BackendTask, DeviceChoice};
use sae_steer::burn::prelude::*;
use sae_steer::{Dinov2, Dinov2Config};

#[derive(Parser)]
#[command(about = "Benchmark the DINOv2 ViT-B/14-reg forward pass")]
pub struct Args {
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    batch: Vec<usize>,
    #[arg(long, default_value_t = 3)]
    iters: usize,
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

struct Bench(Args);

impl BackendTask for Bench {
    type Output = Result<()>;
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let vit = Dinov2::<B>::random(Dinov2Config::vit_b14_reg(), 0, &device)?;
        println!(
            "backend={} threads={}",
            self.0.device,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
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
            println!(
                "rust batch={b} images_per_s={:.3} peak_rss_mib={:.0}",
                (b * self.0.iters) as f64 / secs,
                crate::cli::peak_rss_mib()
            );
        }
        Ok(())
    }
}

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    let device = args.device;
    crate::cli::run_and_report(device, Bench(args))
}

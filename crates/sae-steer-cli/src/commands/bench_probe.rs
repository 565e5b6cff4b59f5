//! The `bench_probe` program; its usage is documented in `examples/bench_probe.rs`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::Parser;
use half::f16;
use sae_steer::SharedProgress;
use sae_steer::backend::{BackendTask, DeviceChoice, run_on};
use sae_steer::burn::prelude::Backend;
use sae_steer_probe::data::PatchSource;
use sae_steer_probe::{SweepConfig, TrainOptions, train_sweep};

use crate::cli::IndicatifProgress;

#[derive(Parser, Debug, Clone)]
#[command(about = "Benchmark a probe sweep's training epoch against PyTorch")]
pub struct Args {
    #[arg(long, default_value_t = 2048)]
    images: usize,
    #[arg(long, default_value_t = 256)]
    patches: usize,
    #[arg(long, default_value_t = 768)]
    dim: usize,
    /// Images per step.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Patches per forward/backward pass.
    #[arg(long, default_value_t = 2048)]
    chunk_patches: usize,
    /// Hold the f32 patches on the device instead of streaming f16 batches.
    #[arg(long)]
    resident: bool,
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Python with torch: run scripts/bench_probe_torch.py afterwards.
    #[arg(long)]
    torch: Option<PathBuf>,
    /// Threads PyTorch may use (torch.set_num_threads).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Also run PyTorch's batched variant (one [P, d, C] weight, one bmm).
    #[arg(long)]
    torch_batched: bool,
}

/// Random f16 activations and labels, as a cache would hold them.
struct HalfPatches {
    x: Vec<f16>,
    labels: Vec<u8>,
    patches: usize,
    dim: usize,
}

impl PatchSource for HalfPatches {
    fn n_images(&self) -> usize {
        self.labels.len() / self.patches
    }

    fn patches_per_image(&self) -> usize {
        self.patches
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn read(
        &self,
        rows: &[usize],
        x: &mut Vec<f32>,
        labels: &mut Vec<u8>,
    ) -> sae_steer_probe::Result<()> {
        let row = self.patches * self.dim;
        x.clear();
        labels.clear();
        for &r in rows {
            x.extend(self.x[r * row..(r + 1) * row].iter().map(|v| v.to_f32()));
            labels.extend_from_slice(&self.labels[r * self.patches..(r + 1) * self.patches]);
        }
        Ok(())
    }

    fn fingerprint(&self) -> String {
        "bench".into()
    }
}

struct Bench {
    args: Args,
    data: HalfPatches,
    ckpt: PathBuf,
}

impl BackendTask for Bench {
    type Output = Result<Vec<f64>>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let sweep = SweepConfig {
            n_epochs: self.args.epochs,
            batch_size: self.args.batch,
            eval_every: usize::MAX,
            ..SweepConfig::default()
        };
        let opts = TrainOptions {
            ckpt_root: self.ckpt.clone(),
            resident_bytes: if self.args.resident { u64::MAX } else { 0 },
            chunk_patches: self.args.chunk_patches,
            save_every: 0,
            progress: SharedProgress::new(IndicatifProgress::without_bars()),
            ..TrainOptions::default()
        };
        let report = train_sweep::<B, _>(&sweep, &self.data, &opts, &device)?;
        Ok(report.epoch_seconds)
    }
}

/// User + system CPU seconds of this process so far (robust to other
/// processes sharing the machine, unlike wall time).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of those, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    crate::cli::report(run(args))
}

fn run(args: Args) -> Result<()> {
    // A cheap deterministic generator: the values only need the real sizes.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let n = args.images * args.patches;
    let x: Vec<f16> = (0..n * args.dim)
        .map(|_| f16::from_f32((next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0))
        .collect();
    let labels: Vec<u8> = (0..n).map(|_| (next() % 151) as u8).collect();
    let data = HalfPatches {
        x,
        labels,
        patches: args.patches,
        dim: args.dim,
    };
    let tmp = std::env::temp_dir().join(format!("bench-probe-{}", std::process::id()));
    let probes = SweepConfig::default().probes().len();
    println!(
        "ours: {probes} probes, {} images x {} patches x {}, {} images a step, {}, device {}",
        args.images,
        args.patches,
        args.dim,
        args.batch,
        if args.resident {
            "resident f32"
        } else {
            "streamed f16 -> f32"
        },
        args.device
    );
    let cpu_before = cpu_seconds();
    let secs = run_on(
        args.device,
        Bench {
            args: args.clone(),
            data,
            ckpt: tmp.clone(),
        },
    )??;
    let cpu = cpu_seconds() - cpu_before;
    let _ = std::fs::remove_dir_all(&tmp);
    for (epoch, s) in secs.iter().enumerate() {
        println!("ours epoch={epoch} seconds={s:.2}");
    }
    println!(
        "ours cpu_seconds_per_epoch={:.2}",
        cpu / secs.len().max(1) as f64
    );
    println!("ours peak_rss_mib={:.0}", crate::cli::peak_rss_mib());

    if let Some(python) = &args.torch {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_probe_torch.py");
        let mut variants = vec![false];
        if args.torch_batched {
            variants.push(true);
        }
        for batched in variants {
            let mut cmd = Command::new(python);
            cmd.arg(&script)
                .args(["--images", &args.images.to_string()])
                .args(["--patches", &args.patches.to_string()])
                .args(["--dim", &args.dim.to_string()])
                .args(["--batch", &args.batch.to_string()])
                .args(["--epochs", &args.epochs.to_string()])
                .args(["--threads", &args.threads.to_string()])
                .args(["--probes", &probes.to_string()]);
            if batched {
                cmd.arg("--batched");
            }
            let status = cmd
                .status()
                .with_context(|| format!("running {}", python.display()))?;
            if !status.success() {
                bail!("{} {} failed: {status}", python.display(), script.display());
            }
        }
    }
    Ok(())
}

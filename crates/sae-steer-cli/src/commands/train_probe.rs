//! The `train_probe` program; its usage is documented in `examples/train_probe.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use sae_steer::backend::{BackendTask, DeviceChoice, run_on};
use sae_steer::burn::prelude::Backend;
use sae_steer_ade20k::{Ade20k, Split};
use sae_steer_data::ImageList;
use sae_steer_probe::activations::PROBE_TAP;
use sae_steer_probe::data::CachePatches;
use sae_steer_probe::{ProbeError, SweepConfig, TrainOptions, TrainReport, train_sweep};
use serde_json::{Map, json};

use crate::cli::IndicatifProgress;

#[derive(Parser, Debug)]
#[command(
    about = "Train linear segmentation probes (a learning-rate x weight-decay sweep) on ADE20K"
)]
pub struct Args {
    /// A sweep TOML file (learning_rate = [...], weight_decay = [...], ...).
    #[arg(long)]
    sweep: Option<PathBuf>,
    /// ADE20K root (ADEChallengeData2016).
    #[arg(long = "ade20k", visible_alias = "imgs.root")]
    ade20k: PathBuf,
    /// The ViT: a hub id, a Hugging Face folder or a torch-hub .pth.
    #[arg(long, default_value = sae_steer::vit::load::DEFAULT_VIT)]
    vit: String,
    /// Activation cache of the training split [default: <ckpt-path>/cache-training].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Learning rates (comma-separated) [default: 3e-5,1e-4,3e-4,1e-3,3e-3,1e-2].
    #[arg(long, value_delimiter = ',')]
    learning_rate: Vec<f64>,
    /// Weight decays (comma-separated) [default: 0.1,1e-3,1e-5].
    #[arg(long, value_delimiter = ',')]
    weight_decay: Vec<f64>,
    #[arg(long, default_value_t = 400)]
    n_epochs: usize,
    /// Images per step (all their patches).
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
    /// Epochs between kept checkpoints (plus epoch 0 and the last).
    #[arg(long, default_value_t = 100)]
    eval_every: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the probe folders go.
    #[arg(long, default_value = "checkpoints/contrib/semseg")]
    ckpt_path: PathBuf,
    /// Where train.log goes.
    #[arg(long, default_value = "logs/contrib/semseg")]
    log_to: PathBuf,
    /// cpu (burn-flex, the default), ndarray, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    #[command(flatten)]
    cache_build: crate::cli::CacheBuildArgs,
    /// Only the first N training images (quick runs).
    #[arg(long)]
    max_images: Option<usize>,
    /// Hold all training patches on the device when they fit in this many GiB
    /// (f32) [default: 24 on a GPU, 4 on the CPU].
    #[arg(long)]
    resident_gib: Option<f64>,
    /// Patches per forward/backward pass (memory: chunk x probes x 151
    /// floats) [default: 32768 on a GPU, 2048 on the CPU].
    #[arg(long)]
    chunk_patches: Option<usize>,
    /// Also write a resumable checkpoint every N epochs (0: only the kept ones).
    #[arg(long, default_value_t = 10)]
    save_every: usize,
    /// Stop after N epochs in this run (resume later with the same command).
    #[arg(long)]
    max_epochs: Option<usize>,
}

struct Train {
    args: Args,
    images: ImageList,
    sweep: SweepConfig,
    cache_dir: PathBuf,
}

impl BackendTask for Train {
    type Output = Result<TrainReport>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let args = &self.args;
        let cache = args.cache_build.probe_cache::<B>(
            &self.cache_dir,
            &self.images,
            &args.vit,
            false,
            &device,
        )?;
        let data = CachePatches::new(&cache, PROBE_TAP)?;
        let gib = args.resident_gib.unwrap_or(match args.device {
            DeviceChoice::Cuda(_) => 24.0,
            _ => 4.0,
        });
        let mut run_info = Map::new();
        run_info.insert(
            "imgs".into(),
            json!({"root": args.ade20k, "split": "training"}),
        );
        run_info.insert("device".into(), json!(args.device.to_string()));
        run_info.insert("ckpt_path".into(), json!(args.ckpt_path));
        run_info.insert("log_to".into(), json!(args.log_to));
        run_info.insert("vit".into(), json!(args.vit));
        run_info.insert("cache".into(), json!(self.cache_dir));
        run_info.insert("tap".into(), json!(PROBE_TAP));
        let opts = TrainOptions {
            ckpt_root: args.ckpt_path.clone(),
            log_file: Some(args.log_to.join("train.log")),
            n_classes: sae_steer_ade20k::NUM_CLASSES + 1,
            resident_bytes: (gib * f64::from(1u32 << 30)) as u64,
            chunk_patches: args.chunk_patches.unwrap_or(match args.device {
                DeviceChoice::Cuda(_) => 32_768,
                _ => 2048,
            }),
            save_every: args.save_every,
            max_epochs: args.max_epochs,
            progress: IndicatifProgress::shared(),
            run_info,
        };
        train_sweep::<B, _>(&self.sweep, &data, &opts, &device).map_err(|e| {
            // The library's message names `TrainOptions::ckpt_root`; here
            // that is --ckpt-path.
            let resume = matches!(e, ProbeError::Resume { .. });
            let e = anyhow::Error::from(e);
            if resume {
                e.context(format!(
                    "cannot resume the sweep in --ckpt-path {}: pass another --ckpt-path or \
                     delete its probe folders",
                    args.ckpt_path.display()
                ))
            } else {
                e
            }
        })
    }
}

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    crate::cli::report(run(args))
}

fn run(args: Args) -> Result<()> {
    let mut sweep = SweepConfig {
        n_epochs: args.n_epochs,
        batch_size: args.batch_size,
        eval_every: args.eval_every,
        seed: args.seed,
        ..SweepConfig::default()
    };
    if !args.learning_rate.is_empty() {
        sweep.learning_rate = args.learning_rate.clone();
    }
    if !args.weight_decay.is_empty() {
        sweep.weight_decay = args.weight_decay.clone();
    }
    if let Some(path) = &args.sweep {
        for key in sweep.apply_file(path)? {
            eprintln!(
                "{}: `{key}` is ignored (set it on the command line)",
                path.display()
            );
        }
    }
    sweep.check()?;
    let ade = Ade20k::open(&args.ade20k)?;
    let images = ade.split(Split::Training)?;
    let images = match args.max_images {
        Some(n) => images.take(n),
        None => images,
    };
    let cache_dir = args
        .cache
        .clone()
        .unwrap_or_else(|| args.ckpt_path.join("cache-training"));
    let probes = sweep.probes();
    eprintln!(
        "training {} probes ({} learning rates x {} weight decays) for {} epochs on {} images, \
         {} images a step, into {}",
        probes.len(),
        sweep.learning_rate.len(),
        sweep.weight_decay.len(),
        sweep.n_epochs,
        images.len(),
        sweep.batch_size,
        args.ckpt_path.display()
    );
    let device = args.device;
    let ckpt = args.ckpt_path.clone();
    let report = run_on(
        device,
        Train {
            args,
            images,
            sweep,
            cache_dir,
        },
    )??;
    if report.epochs_run > 0 {
        let secs: f64 = report.epoch_seconds.iter().sum();
        eprintln!(
            "{} epochs in {secs:.1} s ({:.2} s an epoch, data {}), {} steps in all",
            report.epochs_run,
            secs / report.epochs_run as f64,
            if report.resident {
                "on the device"
            } else {
                "streamed"
            },
            report.steps
        );
    }
    eprintln!(
        "probe folders in {}; validate with: cargo run --release --example validate -- --ade20k DIR --ckpt-root {}",
        ckpt.display(),
        ckpt.display()
    );
    Ok(())
}

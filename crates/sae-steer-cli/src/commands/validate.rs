//! The `validate` program; its usage is documented in `examples/validate.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use sae_steer::backend::{BackendTask, DeviceChoice, run_on};
use sae_steer::burn::prelude::Backend;
use sae_steer_ade20k::{Ade20k, ClassNames, Split};
use sae_steer_data::ImageList;
use sae_steer_probe::activations::PROBE_TAP;
use sae_steer_probe::validate::Reports;
use sae_steer_probe::{
    ProbeCheckpoint, ValidateOptions, read_probes, validate_probes, write_reports,
};

use crate::cli::IndicatifProgress;

#[derive(Parser, Debug)]
#[command(
    about = "Validate linear segmentation probes on ADE20K and report the best sweep setting"
)]
pub struct Args {
    /// ADE20K root (ADEChallengeData2016).
    #[arg(long = "ade20k", visible_alias = "imgs.root")]
    ade20k: PathBuf,
    /// Folder of probe folders (each with cfg.json and model_step{N} files).
    #[arg(long, default_value = "checkpoints/contrib/semseg")]
    ckpt_root: PathBuf,
    /// Where results.csv, hparam-sweeps.png and best.json go.
    #[arg(long, default_value = "logs/contrib/semseg")]
    dump_to: PathBuf,
    /// The ViT: a hub id, a Hugging Face folder or a torch-hub .pth.
    #[arg(long, default_value = sae_steer::vit::load::DEFAULT_VIT)]
    vit: String,
    /// Activation cache of the validation split [default: <dump-to>/cache-validation].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Host threads for upsampling and argmax (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Only the first N validation images (quick runs).
    #[arg(long)]
    max_images: Option<usize>,
    /// cpu (burn-flex, the default), ndarray, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    #[command(flatten)]
    cache_build: crate::cli::CacheBuildArgs,
}

struct Validate {
    args: Args,
    images: ImageList,
    probes: Vec<ProbeCheckpoint>,
    classes: ClassNames,
    cache_dir: PathBuf,
}

impl BackendTask for Validate {
    type Output = Result<Reports>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let args = &self.args;
        let cache = args.cache_build.probe_cache::<B>(
            &self.cache_dir,
            &self.images,
            &args.vit,
            true,
            &device,
        )?;
        let opts = ValidateOptions {
            tap: PROBE_TAP.into(),
            batch_images: args.batch_size,
            threads: args.threads,
            progress: IndicatifProgress::shared(),
        };
        let scores = validate_probes::<B>(&self.probes, &cache, &opts, &device)?;
        Ok(write_reports(
            &args.dump_to,
            &self.probes,
            &scores,
            &self.classes,
        )?)
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
    let probes = read_probes(&args.ckpt_root)?;
    let ade = Ade20k::open(&args.ade20k)?;
    let classes = ade.classes().clone();
    let images = ade.split(Split::Validation)?;
    let images = match args.max_images {
        Some(n) => images.take(n),
        None => images,
    };
    let cache_dir = args
        .cache
        .clone()
        .unwrap_or_else(|| args.dump_to.join("cache-validation"));
    eprintln!(
        "validating {} probes from {} on {} images",
        probes.len(),
        args.ckpt_root.display(),
        images.len()
    );
    for p in &probes {
        eprintln!("  {} ({})", p.name(), p.file.display());
    }
    let device = args.device;
    let reports = run_on(
        device,
        Validate {
            args,
            images,
            probes,
            classes,
            cache_dir,
        },
    )??;
    let mut rows: Vec<_> = reports.rows.iter().collect();
    rows.sort_by(|a, b| {
        b.mean_iou
            .unwrap_or(-1.0)
            .total_cmp(&a.mean_iou.unwrap_or(-1.0))
    });
    eprintln!(
        "{:>10} {:>10} {:>8} {:>8}  probe",
        "lr", "wd", "acc %", "mIoU"
    );
    for r in rows {
        let fmt =
            |v: Option<f64>, scale: f64| v.map_or("nan".into(), |v| format!("{:.3}", v * scale));
        eprintln!(
            "{:>10} {:>10} {:>8} {:>8}  {}",
            sae_steer_probe::python_float_repr(r.learning_rate),
            sae_steer_probe::python_float_repr(r.weight_decay),
            fmt(r.acc, 1.0),
            fmt(r.mean_iou, 100.0),
            r.checkpoint.display()
        );
    }
    match &reports.best {
        Some(b) => eprintln!(
            "best: {} (mIoU {:.2}%); wrote {}, {}, {}",
            b.checkpoint.display(),
            100.0 * b.mean_iou,
            reports.results_csv.display(),
            reports.plot.display(),
            reports
                .best_json
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        ),
        None => eprintln!(
            "no probe has a mean IoU; wrote {} and {}",
            reports.results_csv.display(),
            reports.plot.display()
        ),
    }
    Ok(())
}

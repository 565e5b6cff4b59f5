//! The `cache` program; its usage is documented in `examples/cache.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use sae_steer::Vit;
use sae_steer::backend::{BackendTask, DeviceChoice, run_on};
use sae_steer::burn::prelude::Backend;
use sae_steer_ade20k::{Ade20k, Split};
use sae_steer_data::cache::{
    CacheReport, CacheSpec, LabelKind, TapRequest, build_cache, part_range,
};
use sae_steer_data::{ImageList, image_folder};

use crate::cli::IndicatifProgress;

#[derive(Parser, Debug)]
#[command(about = "Cache DINOv2 activations and labels of ADE20K or an image folder")]
pub struct Args {
    /// The ViT: a Hugging Face folder, a torch-hub .pth checkpoint, or a hub id.
    #[arg(long, default_value = sae_steer::vit::load::DEFAULT_VIT)]
    vit: String,
    /// ADE20K root (ADEChallengeData2016: images/, annotations/, objectInfo150.txt).
    #[arg(long, conflicts_with = "images", required_unless_present = "images")]
    ade20k: Option<PathBuf>,
    /// ADE20K split: training or validation.
    #[arg(long, default_value = "validation")]
    split: Split,
    /// An image folder (class sub-folders or flat) instead of ADE20K; no labels.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Comma-separated taps, e.g. layer10:f32,final_norm:f16.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "layer10:f32,final_norm:f16"
    )]
    taps: Vec<TapRequest>,
    /// none, patch (patch labels + purity) or pixel (also 224x224 pixel
    /// labels). Default: patch for ADE20K, none for an image folder.
    #[arg(long)]
    labels: Option<LabelKind>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Only the first N images of the list.
    #[arg(long)]
    max_images: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Images per shard file.
    #[arg(long, default_value_t = 256)]
    shard_images: usize,
    /// Skip images that cannot be decoded (they are listed in the manifest).
    #[arg(long)]
    skip_bad: bool,
    /// Image decoding threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// cpu (burn-flex, the default), ndarray, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Cache only part I of N (1-based) of the image list, into the same
    /// --out as the other parts, e.g. one Slurm array task each
    /// (`--shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT`). Parts
    /// may run at once, on machines sharing the folder; when the last one
    /// finishes, the folder reads as one cache (the same rows as a build in
    /// one process). Every part needs the same flags besides --shard.
    #[arg(long, value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
}

/// `I/N` with 1 <= I <= N.
fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}`: expected I/N, e.g. 2/8"))?;
    let parse = |t: &str| t.trim().parse::<usize>().map_err(|e| format!("`{s}`: {e}"));
    let (i, n) = (parse(i)?, parse(n)?);
    if i == 0 || i > n {
        return Err(format!("`{s}`: I must be 1 to N"));
    }
    Ok((i, n))
}

struct Cache {
    args: Args,
    images: ImageList,
    spec: CacheSpec,
}

impl BackendTask for Cache {
    type Output = Result<CacheReport>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let vit = Vit::<B>::load(&self.args.vit, &device)
            .with_context(|| format!("loading the ViT `{}`", self.args.vit))?;
        crate::cli::shard_hint(crate::cli::skip_bad_hint(
            build_cache(&vit, &self.images, &self.args.out, &self.spec).map_err(Into::into),
        ))
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
    let (images, default_labels) = match (&args.ade20k, &args.images) {
        (Some(root), _) => (Ade20k::open(root)?.split(args.split)?, LabelKind::Patch),
        (None, Some(dir)) => (image_folder(dir)?, LabelKind::None),
        (None, None) => anyhow::bail!("give --ade20k or --images"),
    };
    let images = match args.max_images {
        Some(n) => images.take(n),
        None => images,
    };
    let mut spec = CacheSpec::new(args.vit.clone(), args.taps.clone());
    spec.labels = args.labels.unwrap_or(default_labels);
    spec.batch = args.batch;
    spec.shard_images = args.shard_images;
    spec.skip_bad = args.skip_bad;
    spec.workers = args.workers;
    spec.part = args.shard;
    spec.progress = IndicatifProgress::shared();
    let out = args.out.clone();
    let n = images.len();
    let part = match args.shard {
        Some((i, count)) => {
            let (start, end) = part_range(n, args.shard_images, i, count);
            format!("part {i} of {count} (images {start}..{end}) of ")
        }
        None => String::new(),
    };
    eprintln!(
        "caching {part}{n} images into {} (taps {}, labels {})",
        out.display(),
        args.taps
            .iter()
            .map(|t| format!("{}:{}", t.name(), t.dtype))
            .collect::<Vec<_>>()
            .join(","),
        spec.labels
    );
    let device = args.device;
    let report = run_on(device, Cache { args, images, spec })??;
    let whole = if report.cache_complete {
        "the cache is complete"
    } else {
        "the cache is complete once every part is"
    };
    if report.images_processed == 0 && report.complete {
        eprintln!(
            "{} already holds the complete {}({} rows); {whole}",
            out.display(),
            if part.is_empty() { "cache " } else { "part " },
            report.total_rows
        );
        return Ok(());
    }
    if report.resumed_from > 0 {
        eprintln!("resumed at image {}", report.resumed_from);
    }
    eprintln!(
        "{} images in {:.1} s ({:.2} images/s): {} rows in {} shards, {:.1} MB; waited {:.1} s for images, {:.1} s for the writer",
        report.images_processed,
        report.seconds,
        report.images_per_second(),
        report.rows_written,
        report.shards_written,
        report.bytes_written as f64 / 1e6,
        report.seconds_waiting_for_images,
        report.seconds_waiting_for_writer,
    );
    for s in &report.skipped {
        eprintln!("skipped image {} ({}): {}", s.index, s.path, s.error);
    }
    eprintln!(
        "{}: {} rows, {}",
        out.display(),
        report.total_rows,
        match (report.complete, !part.is_empty()) {
            (true, false) => "complete".to_string(),
            (true, true) => format!("part complete; {whole}"),
            (false, _) => "incomplete (rerun to continue)".to_string(),
        }
    );
    Ok(())
}

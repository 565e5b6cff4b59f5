//! The `bench_cache` program; its usage is documented in `examples/bench_cache.rs`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use sae_steer::backend::{BackendTask, DeviceChoice, run_on};
use sae_steer::burn::prelude::*;
use sae_steer::{PixelValues, Preprocess, Vit, VitConfig};
use sae_steer_ade20k::synth::{SynthOptions, synthesize};
use sae_steer_ade20k::{Ade20k, Split};
use sae_steer_data::cache::{ActivationCache, CacheSpec, LabelKind, TapRequest, build_cache};
use sae_steer_data::{ImageList, load_sample};

use crate::cli::IndicatifProgress;

#[derive(Parser)]
#[command(about = "Benchmark activation caching and cache reads")]
pub struct Args {
    #[arg(long, default_value_t = 64)]
    images: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    shard_images: usize,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "layer10:f32,final_norm:f16"
    )]
    taps: Vec<TapRequest>,
    /// Image decoding threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Work folder for the synthetic dataset and the cache (default: a
    /// temporary folder, removed afterwards).
    #[arg(long)]
    work: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Only measure reads of an existing cache in this directory.
    #[arg(long)]
    read: Option<PathBuf>,
}

struct Bench {
    args: Args,
    images: ImageList,
    work: PathBuf,
}

fn gb_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / 1e9 / secs.max(1e-9)
}

impl BackendTask for Bench {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let args = &self.args;
        let vit = Vit::<B>::random(VitConfig::vit_b14_reg(), 0, &device)?;
        let n = self.images.len();
        let pre = Preprocess::default();
        let layers: Vec<usize> = vec![10];

        // Bare: every image decoded beforehand.
        let pixels: Vec<PixelValues> = self
            .images
            .items
            .iter()
            .map(|item| load_sample(item, &pre).map(|s| s.pixels))
            .collect::<Result<_, _>>()?;
        let forward = |batch: &[PixelValues]| -> Result<()> {
            let x = PixelValues::batch::<B>(batch, &device);
            let (x, kept) = vit.forward_taps(x, 10, &layers)?;
            let x = vit.run_blocks(x, 11, 11, |_, _| {})?;
            let patches = vit.split_tokens(vit.final_norm(x)).patches;
            for (_, t) in kept {
                t.into_data();
            }
            patches.into_data();
            Ok(())
        };
        forward(&pixels[..args.batch.min(n)])?; // warm-up (position embeddings, pools)
        let time_bare = || -> Result<f64> {
            let t0 = Instant::now();
            for batch in pixels.chunks(args.batch) {
                forward(batch)?;
            }
            Ok(t0.elapsed().as_secs_f64())
        };
        let bare_before = time_bare()?;

        let dir = self.work.join("cache");
        let _ = std::fs::remove_dir_all(&dir);
        let mut spec = CacheSpec::new("random:vit_b14_reg:0", args.taps.clone());
        spec.labels = LabelKind::Pixel;
        spec.batch = args.batch;
        spec.shard_images = args.shard_images;
        spec.workers = args.workers;
        spec.progress = IndicatifProgress::shared();
        let report = build_cache(&vit, &self.images, &dir, &spec)?;
        let cached = report.seconds;
        // Shared machines drift: the baseline is the mean of runs before and
        // after the cache run.
        let bare_after = time_bare()?;
        let bare = (bare_before + bare_after) / 2.0;
        println!(
            "backend={} cores={} images={n} batch={}",
            args.device,
            std::thread::available_parallelism().map_or(1, |c| c.get()),
            args.batch
        );
        println!(
            "bare_forward images_per_s={:.2} (before {:.2}, after {:.2}) | cache_build images_per_s={:.2} | cache/bare time ratio={:.3} (overhead {:+.1}%)",
            n as f64 / bare,
            n as f64 / bare_before,
            n as f64 / bare_after,
            n as f64 / cached,
            cached / bare,
            (cached / bare - 1.0) * 100.0
        );
        println!(
            "cache_build waited_for_images_s={:.2} compute_s={:.2} waited_for_writer_s={:.2} total_s={:.2} written_mb={:.0} model_idle={:.1}%",
            report.seconds_waiting_for_images,
            report.seconds_compute,
            report.seconds_waiting_for_writer,
            cached,
            report.bytes_written as f64 / 1e6,
            (report.seconds_waiting_for_images + report.seconds_waiting_for_writer) / cached
                * 100.0
        );

        bench_reads(&dir)
    }
}

/// Read throughput of a cache: whole images in a shuffled order (the probe)
/// and one epoch of shuffled patch tokens (SAE training).
fn bench_reads(dir: &std::path::Path) -> Result<()> {
    let cache = ActivationCache::open(dir)?;
    let mut rows: Vec<usize> = (0..cache.len()).collect();
    // A fixed permutation, as the probe's shuffled epochs read.
    rows.sort_by_key(|&r| (r * 7919) % cache.len().max(1));
    let mut out = Vec::new();
    for tap in cache.taps().to_vec() {
        let t0 = Instant::now();
        let mut reps = 0;
        while reps < 3 || t0.elapsed().as_secs_f64() < 1.0 {
            for chunk in rows.chunks(64) {
                cache.read_images(&tap.name, chunk, &mut out)?;
            }
            reps += 1;
        }
        let secs = t0.elapsed().as_secs_f64() / reps as f64;
        let stored = cache.len() * tap.row_bytes();
        println!(
            "read_images tap={} dtype={} rows={} stored_gb_per_s={:.2} f32_out_gb_per_s={:.2}",
            tap.name,
            tap.dtype,
            cache.len(),
            gb_per_s(stored, secs),
            gb_per_s(cache.len() * tap.n_tokens * tap.dim * 4, secs)
        );
        // The patch tokens are the last ones, after the model's prefix.
        let patches =
            sae_steer::pipeline::patch_range(tap.n_tokens, cache.manifest().patches_per_image());
        let mut batches = cache.patch_batches(&tap.name, patches, 16_384, 0)?;
        let t0 = Instant::now();
        let mut tokens = 0;
        loop {
            let n = batches.next_into(&mut out)?;
            if n == 0 {
                break;
            }
            tokens += n;
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "patch_batches tap={} tokens={tokens} stored_gb_per_s={:.2} f32_out_gb_per_s={:.2} tokens_per_s={:.0}",
            tap.name,
            gb_per_s(tokens * tap.dim * tap.dtype.size(), secs),
            gb_per_s(tokens * tap.dim * 4, secs),
            tokens as f64 / secs
        );
    }
    Ok(())
}

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    crate::cli::report(run(args))
}

fn run(args: Args) -> Result<()> {
    if let Some(dir) = &args.read {
        return bench_reads(dir);
    }
    let keep = args.work.is_some();
    let work = args.work.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("bench-cache-{}", std::process::id()))
    });
    let opts = SynthOptions {
        train: 0,
        val: args.images,
        min_side: 384,
        max_side: 683,
        ..SynthOptions::default()
    };
    let synth = synthesize(&work.join("ade20k"), &opts, &IndicatifProgress::new())?;
    let images = Ade20k::open(&synth.root)?.split(Split::Validation)?;
    let device = args.device;
    let result = run_on(
        device,
        Bench {
            args,
            images,
            work: work.clone(),
        },
    )
    .map_err(Into::into)
    .and_then(|r| r);
    if !keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

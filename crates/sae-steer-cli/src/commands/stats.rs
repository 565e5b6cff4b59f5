//! The `stats` program; its usage is documented in `examples/stats.rs`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use sae_steer::ade20k::{Ade20k, Split};
use sae_steer::backend::{BackendTask, DeviceChoice};
use sae_steer::burn::prelude::Backend;
use sae_steer::data::cache::LabelKind;
use sae_steer::data::{ImageList, image_folder};
use sae_steer::pipeline::{
    LazyVit, NORMALIZATION_SAMPLES, StatsOptions, ensure_cache, feature_stats_file,
    feature_stats_shards_file, resolve_normalization, sae_layer_cache_spec,
};
use sae_steer::sae::stats::{DEFAULT_TOP_K, FREQUENT, StatsInfo};
use sae_steer::sae::train::{ActivationShards, NormalizationPlan, SaevShardInfo, estimate_start};
use sae_steer::{FeatureStats, Normalization, NormalizationSource, Sae};

use crate::cli::IndicatifProgress;

/// The layer of the published DINOv2 SAE, for checkpoints that do not record theirs.
const DEFAULT_LAYER: usize = 10;

#[derive(Parser, Debug)]
#[command(
    about = "Feature statistics of an SAE over images: max_obs, firing frequency, top images",
    long_about = "Caches the SAE layer's activations over the reference images, then computes per \
latent the largest activation (max_obs, the slider's unit), the share of patches it fires on, its \
mean when active and the top-k images, in the SAE's normalized units. Interrupted runs resume; a \
finished run is left as it is."
)]
pub struct Args {
    /// The SAE: a saev sae.pt, one of our checkpoints, or a hub id owner/name[:file].
    #[arg(long)]
    sae: String,
    /// The ViT: hub id, Hugging Face folder or torch-hub .pth.
    #[arg(long, default_value = sae_steer::vit::load::DEFAULT_VIT)]
    vit: String,
    /// 0-based block whose output the SAE reads (default: the checkpoint's
    /// recorded layer, else 10).
    #[arg(long)]
    layer: Option<usize>,
    /// ADE20K root (ADEChallengeData2016 or the folder holding it) as the reference set.
    #[arg(
        long,
        conflicts_with_all = ["images", "saev_shards"],
        required_unless_present_any = ["images", "saev_shards"]
    )]
    ade20k: Option<PathBuf>,
    /// A saev activation-shard folder (metadata.json, acts*.bin) as the
    /// reference set: its activations of --layer (as its metadata names the
    /// layers) are used as they are, so no ViT runs. Images are its examples,
    /// in order.
    #[arg(long, conflicts_with = "images")]
    saev_shards: Option<PathBuf>,
    /// The ADE20K split to use.
    #[arg(long, default_value = "training")]
    split: Split,
    /// A folder of images as the reference set: ImageNet-style
    /// (`<class>/<image>`) or flat, in sorted order.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Use only the first N images of the reference set.
    #[arg(long)]
    max_images: Option<usize>,
    /// The SAE's input normalization (safetensors with `mean`, `scalar`).
    /// Default: the checkpoint's own; for a file without one (saev's),
    /// estimated on the reference activations, and the output says so.
    #[arg(long)]
    sae_norm: Option<PathBuf>,
    /// Write the normalization the statistics are in to this file, for the
    /// steps that read them (their --sae-norm). An estimated one is written
    /// next to --out when this is not given.
    #[arg(long)]
    save_norm: Option<PathBuf>,
    /// Exemplar images kept per latent.
    #[arg(long, default_value_t = DEFAULT_TOP_K)]
    top_k: usize,
    /// Where activation caches live (default: `caches` next to --out); the
    /// ADE20K ones are named as quantify names them (`training-layer10`).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// The statistics file; an unfinished one is continued.
    #[arg(long, default_value = "feature-stats.safetensors")]
    out: PathBuf,
    /// Save progress at most every this many seconds (0: after every batch
    /// of images), so an interrupted run loses at most that much work.
    #[arg(long, default_value_t = sae_steer::pipeline::STATS_SAVE_INTERVAL.as_secs_f64())]
    save_every: f64,
    /// cpu (burn-flex, the default), ndarray, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

struct Run(Args);

impl BackendTask for Run {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let args = self.0;
        if args.top_k == 0 {
            bail!("--top-k must be at least 1");
        }
        let sae = Sae::<B>::load(&args.sae, &device)
            .with_context(|| format!("loading the SAE {}", args.sae))?;
        let layer = args.layer.or(sae.config().layer).unwrap_or(DEFAULT_LAYER);
        if let (Some(given), Some(recorded)) = (args.layer, sae.config().layer)
            && given != recorded
        {
            eprintln!(
                "warning: the SAE was trained on layer {recorded}; computing statistics on layer {given}"
            );
        }

        if let Some(dir) = args.saev_shards.clone() {
            return stats_over_saev_shards(args, sae, &dir, layer);
        }
        let (images, reference, cache_name) = reference_images(&args, layer)?;
        let out_dir = args
            .out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let caches = args
            .cache_dir
            .clone()
            .unwrap_or_else(|| out_dir.join("caches"));
        let progress = IndicatifProgress::shared();
        let mut spec = sae_layer_cache_spec(&args.vit, layer);
        spec.progress = progress.clone();
        if args.images.is_some() {
            spec.labels = LabelKind::None;
        }
        let cache_dir = caches.join(&cache_name);
        let (cache, _) = ensure_cache(
            &cache_dir,
            &images,
            &spec,
            &mut LazyVit::<B>::new(&args.vit, &device),
        )
        .with_context(|| {
            format!(
                "caching layer {layer} activations in {}",
                cache_dir.display()
            )
        })?;
        if cache.is_empty() {
            bail!("{}: no image could be read", cache_dir.display());
        }
        let n_patches = cache.manifest().patches_per_image();
        let tap = format!("layer{layer}");

        let (sae, source) = resolve_normalization(
            sae,
            args.sae_norm.as_deref(),
            Some((&cache, tap.as_str(), n_patches)),
        )?;
        let norm_note = match &source {
            NormalizationSource::File(path) => format!("from {}", path.display()),
            NormalizationSource::Checkpoint => "the checkpoint's own".into(),
            NormalizationSource::Estimated { images, norm } => format!(
                "ESTIMATED on {images} reference images (scalar {:.4}): the SAE file carries \
                 none, so the statistics are in these units, not necessarily its training ones",
                norm.scalar
            ),
            NormalizationSource::None => "none (raw activations)".into(),
        };
        let save_norm = match (&args.save_norm, &source) {
            (Some(path), _) => Some(path.clone()),
            (None, NormalizationSource::Estimated { .. }) => {
                Some(beside(&args.out, "normalization"))
            }
            (None, _) => None,
        };
        if let Some(path) = &save_norm {
            sae_steer::pipeline::remove_stale_temporaries(path);
            let norm = device_normalization(&sae).context("the SAE has no normalization")?;
            // Rewritten only when it differs, so a finished run stays untouched.
            if Normalization::load(path, sae.d_model()).ok().as_ref() != Some(&norm) {
                norm.save(path)?;
            }
        }

        let info = StatsInfo {
            sae: args.sae.clone(),
            reference: format!("{reference} ({} images)", cache.len()),
            fingerprint: cache.manifest().images.fingerprint.clone(),
            normalization: source.to_string(),
        };
        let options = StatsOptions {
            n_patches,
            max_images: None,
            top_k: args.top_k,
            info,
            save_every: std::time::Duration::try_from_secs_f64(args.save_every)
                .context("--save-every must be a number of seconds, 0 or more")?,
            progress,
        };
        let run = feature_stats_file(&sae, &cache, &tap, options, &args.out)?;
        match run.resumed_from {
            _ if run.was_complete() => println!(
                "{} is complete ({} images): nothing to do",
                args.out.display(),
                cache.len()
            ),
            Some(done) => println!(
                "resumed {} at image {done}; added {} images",
                args.out.display(),
                run.added
            ),
            None => println!("computed over {} images", run.added),
        }
        println!("reference: {}", run.stats.info.reference);
        println!("normalization: {norm_note}");
        if let Some(path) = &save_norm {
            println!("normalization saved to {}", path.display());
        }
        summary(&run.stats);
        println!("statistics in {}", args.out.display());
        Ok(())
    }
}

/// The image list, its description and the name of its cache folder.
fn reference_images(args: &Args, layer: usize) -> Result<(ImageList, String, String)> {
    let (mut images, reference, cache_name) = match (&args.ade20k, &args.images) {
        (Some(root), None) => {
            let ade = Ade20k::open(root)?;
            (
                ade.split(args.split)?,
                format!("ADE20K {}", args.split),
                format!("{}-layer{layer}", args.split),
            )
        }
        (None, Some(dir)) => {
            let name = dir
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "images".into());
            (
                image_folder(dir)?,
                format!("images in {}", dir.display()),
                format!("images-{name}-layer{layer}"),
            )
        }
        _ => bail!("name the reference images with either --ade20k or --images"),
    };
    if let Some(n) = args.max_images {
        images = images.take(n);
    }
    Ok((images, reference, cache_name))
}

/// The statistics over a saev shard folder's activations of `layer`.
fn stats_over_saev_shards<B: Backend>(
    args: Args,
    sae: sae_steer::SaeFile<B>,
    dir: &Path,
    layer: usize,
) -> Result<()> {
    let info = SaevShardInfo::read(dir)?;
    let first = usize::from(info.cls_token);
    let shards = ActivationShards::open_saev(dir, layer as i64)?
        .with_tokens(std::slice::from_ref(&(first..first + info.patches)))?;
    let source = match (&args.sae_norm, sae.has_normalization()) {
        (Some(path), _) => NormalizationSource::File(path.clone()),
        (None, true) => NormalizationSource::Checkpoint,
        (None, false) => {
            let samples = NORMALIZATION_SAMPLES.min(shards.rows() as usize);
            let (norm, _) = estimate_start(
                &mut shards.clone(),
                0,
                4096,
                shards.dim(),
                samples,
                &NormalizationPlan::Estimate,
            )?;
            NormalizationSource::Estimated {
                images: shards.items(),
                norm: norm.context("no normalization was estimated")?,
            }
        }
    };
    let (sae, source) = sae.resolve(source)?;
    if let Some(path) = &args.save_norm
        && let Some(norm) = device_normalization(&sae)
    {
        norm.save(path)?;
    }
    let options = StatsOptions {
        n_patches: info.patches,
        max_images: args.max_images,
        top_k: args.top_k,
        info: StatsInfo {
            sae: args.sae.clone(),
            reference: format!(
                "saev shards {} ({} examples, {})",
                dir.display(),
                info.examples,
                info.ckpt.as_deref().unwrap_or("unknown model")
            ),
            // The folder is named by saev after a hash of its metadata.
            fingerprint: format!("saev:{}", dir.display()),
            normalization: source.to_string(),
        },
        save_every: std::time::Duration::try_from_secs_f64(args.save_every)
            .context("--save-every must be a number of seconds, 0 or more")?,
        progress: IndicatifProgress::shared(),
    };
    let run = feature_stats_shards_file(&sae, &shards, options, &args.out)?;
    println!(
        "computed over {} saev examples (normalization: {source})",
        run.stats.n_images().unwrap_or(0)
    );
    summary(&run.stats);
    println!("statistics in {}", args.out.display());
    Ok(())
}

/// `<out stem>-<what>.safetensors` in the folder of `out`.
fn beside(out: &Path, what: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or("feature-stats".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}-{what}.safetensors"))
}

/// The normalization `sae` applies, copied to the host.
fn device_normalization<B: Backend>(sae: &Sae<B>) -> Option<Normalization> {
    let norm = sae.norm.as_ref()?;
    let mean = norm
        .mean
        .clone()
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .ok()?;
    Some(Normalization {
        mean,
        scalar: norm.scalar,
    })
}

/// Dead and frequent latents, and the spread of max_obs.
fn summary(stats: &FeatureStats) {
    let s = stats.d_sae();
    let freq = stats.frequencies();
    let dead = freq.iter().filter(|&&f| f == 0.0).count();
    let frequent = freq.iter().filter(|&&f| f >= FREQUENT).count();
    let mut max_obs: Vec<f32> = stats
        .max_values()
        .iter()
        .zip(freq)
        .filter(|&(_, &f)| f > 0.0)
        .map(|(&m, _)| m)
        .collect();
    max_obs.sort_by(f32::total_cmp);
    let pct = |n: usize| 100.0 * n as f64 / s as f64;
    println!(
        "{s} latents over {} images x {} patches:",
        stats.n_images().unwrap_or(0),
        stats.n_patches()
    );
    println!("  dead (never fired): {dead} ({:.1}%)", pct(dead));
    println!(
        "  frequent (fire on >= {FREQUENT:e} of patches): {frequent} ({:.1}%)",
        pct(frequent)
    );
    match max_obs.len() {
        0 => println!("  median max_obs: n/a (no latent fired)"),
        n => println!(
            "  median max_obs over the {n} live latents: {:.4} (min {:.4}, max {:.4})",
            median(&max_obs),
            max_obs[0],
            max_obs[n - 1]
        ),
    }
}

/// Median of sorted, non-empty values.
fn median(sorted: &[f32]) -> f32 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    let device = args.device;
    crate::cli::run_and_report(device, Run(args))
}

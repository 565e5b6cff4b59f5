//! The `quantify` program; its usage is documented in `examples/quantify.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use sae_steer::ade20k::{Ade20k, ClassNames, Split};
use sae_steer::backend::{BackendTask, DeviceChoice};
use sae_steer::burn::prelude::Backend;
use sae_steer::pipeline::{
    LazyVit, StatsOptions, ensure_cache, feature_stats_file, resolve_normalization,
    sae_layer_cache_spec,
};
use sae_steer::quantify::{
    Method, Quantify, QuantifyInputs, QuantifyOptions, read_manual_table, select_features,
    write_reports,
};
use sae_steer::sae::stats::{DEFAULT_TOP_K, StatsInfo};
use sae_steer::{FeatureStats, NormalizationSource, Probe, Sae, Steerer};

use crate::cli::IndicatifProgress;

#[derive(Parser, Debug)]
#[command(
    about = "Measure how specifically SAE features steer a segmentation probe (four methods, every class)",
    long_about = "For each ADE20K class and each method (random-vector, random-latent, auto, manual), \
edit every patch of every validation image at the SAE's layer, finish the network, predict with \
the probe (argmax over classes 1..150) and count target/other change rates. Accepts the reference's \
command line (--sae-ckpt, --seg-ckpt, --imgs.root)."
)]
pub struct Args {
    /// The SAE: a saev sae.pt, one of our checkpoints, or a hub id owner/name[:file].
    #[arg(long, alias = "sae")]
    sae_ckpt: String,
    /// The probe: a checkpoint folder (ours or the reference's cfg.json +
    /// model_step{N}.pt) or a file in one.
    #[arg(long, alias = "probe")]
    seg_ckpt: PathBuf,
    /// ADE20K root (ADEChallengeData2016 or the folder holding it).
    #[arg(long, alias = "imgs.root", alias = "imgs-root")]
    ade20k: PathBuf,
    /// The ViT: hub id, Hugging Face folder or torch-hub .pth.
    #[arg(long, default_value = sae_steer::vit::load::DEFAULT_VIT)]
    vit: String,
    /// 0-based block whose output the SAE reads and edits.
    #[arg(long, default_value_t = 10)]
    layer: usize,
    /// Methods to run, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random-vector,random-latent,auto,manual"
    )]
    methods: Vec<Method>,
    /// Slider position for latent edits: the latent is set to scale * max_obs.
    #[arg(long, default_value_t = -2.0, allow_negative_numbers = true)]
    scale: f32,
    /// Target classes: ids (21) or names (car), comma separated; default all 150.
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// Use only the first N validation images.
    #[arg(long)]
    max_images: Option<usize>,
    /// Split the automatic method scores latents on; `validation`
    /// reproduces the reference's choice (which leaks the test split).
    #[arg(long, default_value = "training")]
    select_split: Split,
    /// Latents firing on at least this fraction of patches of the reference
    /// set are never selected nor drawn as random latents (reference facts section 8:
    /// 1e-2). Datasets with only a
    /// few classes need more: each class covers a large share of patches.
    #[arg(long, default_value_t = sae_steer::sae::stats::FREQUENT)]
    max_frequency: f32,
    /// Use only the first N images of the selection split (and of the
    /// normalization/statistics stand-in).
    #[arg(long)]
    select_max_images: Option<usize>,
    /// Feature statistics: one of our stats files, or a folder with saev's
    /// visuals output (top_values.pt, sparsity.pt, ...). Default: computed
    /// over ADE20K training images, and the report says so.
    #[arg(long)]
    stats: Option<PathBuf>,
    /// The SAE's input normalization (safetensors with `mean`, `scalar`).
    /// Default: the checkpoint's own; for a saev file, estimated on ADE20K
    /// training activations, and the report says so.
    #[arg(long)]
    sae_norm: Option<PathBuf>,
    /// The manual method's class -> latent table (TOML `[[feature]]` rows).
    #[arg(long, default_value = "data-manifests/manual-features.toml")]
    manual: PathBuf,
    /// Fixed norm of the random-vector edit; default: the automatic
    /// method's mean edit norm for the same class.
    #[arg(long)]
    vector_scale: Option<f32>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Validation images per forward batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Classes edited together in one forward batch.
    #[arg(long, default_value_t = 4)]
    classes_per_batch: usize,
    /// Output folder.
    #[arg(
        long,
        alias = "dump-to",
        default_value = "logs/contrib/semseg/quantify"
    )]
    out: PathBuf,
    /// Where activation caches live (default: <out>/caches).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// cpu (burn-flex, the default), ndarray, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

struct Run(Args);

impl BackendTask for Run {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let args = self.0;
        let ade = Ade20k::open(&args.ade20k)?;
        let names = ade.classes().clone();
        let classes = parse_classes(&args.classes, &names)?;
        let mut val = ade.split(Split::Validation)?;
        if let Some(n) = args.max_images {
            val = val.take(n);
        }
        let caches = args
            .cache_dir
            .clone()
            .unwrap_or_else(|| args.out.join("caches"));
        // One renderer for every step's progress.
        let progress = IndicatifProgress::shared();
        let mut spec = sae_layer_cache_spec(&args.vit, args.layer);
        spec.progress = progress.clone();
        // Loaded once, by the first cache that needs it, and handed on.
        let mut vit = LazyVit::<B>::new(&args.vit, &device);
        let (val_cache, _) = ensure_cache(
            &caches.join(format!("validation-layer{}", args.layer)),
            &val,
            &spec,
            &mut vit,
        )?;

        let mut notes = Vec::new();
        let sae = Sae::<B>::load(&args.sae_ckpt, &device)
            .with_context(|| format!("loading the SAE {}", args.sae_ckpt))?;
        let tap = format!("layer{}", args.layer);
        let n_patches = val_cache.patch_labels(0)?.len();

        // The training split stands in for ImageNet wherever a reference
        // set is needed; cache it only if something needs it.
        let needs_select = args.methods.contains(&Method::Auto)
            || (args.methods.contains(&Method::RandomVector) && args.vector_scale.is_none());
        let needs_train = args.stats.is_none()
            || (!sae.has_normalization() && args.sae_norm.is_none())
            || (needs_select && args.select_split == Split::Training);
        let train_cache = if needs_train {
            let mut train = ade.split(Split::Training)?;
            if let Some(n) = args.select_max_images {
                train = train.take(n);
            }
            Some(
                ensure_cache(
                    &caches.join(format!("training-layer{}", args.layer)),
                    &train,
                    &spec,
                    &mut vit,
                )?
                .0,
            )
        } else {
            None
        };

        let (sae, norm_source) = resolve_normalization(
            sae,
            args.sae_norm.as_deref(),
            train_cache.as_ref().map(|c| (c, tap.as_str(), n_patches)),
        )?;
        match &norm_source {
            NormalizationSource::File(path) => {
                notes.push(format!("SAE input normalization from {}.", path.display()))
            }
            NormalizationSource::Estimated { images, norm } => {
                norm.save(args.out.join("normalization.safetensors"))?;
                notes.push(format!(
                    "The SAE file carries no input normalization: it was ESTIMATED on {images} \
                     ADE20K training images (scalar {:.4}), not on the SAE's own training data; \
                     saved to normalization.safetensors.",
                    norm.scalar
                ));
            }
            NormalizationSource::Checkpoint => {
                notes.push("SAE input normalization from the checkpoint.".into())
            }
            NormalizationSource::None => {
                notes.push("The SAE runs WITHOUT input normalization.".into())
            }
        }

        let stats = match &args.stats {
            Some(path) if path.is_dir() => {
                notes.push(format!(
                    "Feature statistics (max_obs) from saev files in {}.",
                    path.display()
                ));
                FeatureStats::load_saev(path, StatsInfo::default())?
            }
            Some(path) => {
                notes.push(format!(
                    "Feature statistics (max_obs) from {}.",
                    path.display()
                ));
                FeatureStats::load(path)?
            }
            None => {
                let cache = train_cache
                    .as_ref()
                    .context("no training cache for statistics")?;
                let info = StatsInfo {
                    sae: args.sae_ckpt.clone(),
                    reference: format!("ADE20K training ({} images)", cache.len()),
                    fingerprint: cache.manifest().images.fingerprint.clone(),
                    normalization: norm_source.to_string(),
                };
                let options = StatsOptions {
                    n_patches,
                    max_images: None,
                    top_k: DEFAULT_TOP_K,
                    info,
                    save_every: sae_steer::pipeline::STATS_SAVE_INTERVAL,
                    progress: progress.clone(),
                };
                let path = args.out.join("feature-stats.safetensors");
                let stats = feature_stats_file(&sae, cache, &tap, options, &path)?.stats;
                notes.push(format!(
                    "Feature statistics (max_obs, frequency) computed over {} ADE20K training \
                     images, standing in for ImageNet-1K; saved to feature-stats.safetensors.",
                    cache.len()
                ));
                stats
            }
        };

        let selection = if needs_select {
            let (cache, split) = match args.select_split {
                Split::Training => (
                    train_cache.as_ref().context("no training cache")?,
                    "training",
                ),
                Split::Validation => (&val_cache, "validation"),
            };
            let sel = select_features(
                &sae,
                cache,
                args.layer,
                &stats,
                args.max_frequency,
                split,
                None,
                8,
                &*progress,
            )?;
            if args.max_frequency != sae_steer::sae::stats::FREQUENT {
                notes.push(format!(
                    "Latents firing on >= {} of reference patches were excluded from automatic \
                     selection (the preprint excludes >= {}).",
                    args.max_frequency,
                    sae_steer::sae::stats::FREQUENT
                ));
            }
            if split == "validation" {
                notes.push(
                    "Automatic latents were selected on the VALIDATION split (the reference's \
                     choice, which leaks the evaluation data)."
                        .into(),
                );
            }
            Some(sel)
        } else {
            None
        };

        let manual = if args.methods.contains(&Method::Manual) {
            read_manual_table(&args.manual)?
        } else {
            Default::default()
        };
        let probe = Probe::<B>::load(&args.seg_ckpt, &device)?;
        notes.push(format!("Probe: {}.", args.seg_ckpt.display()));
        let steerer = Steerer::new(vit.into_vit()?, sae, probe, args.layer)?;
        let options = QuantifyOptions {
            layer: args.layer,
            methods: args.methods.clone(),
            classes,
            slider: args.scale,
            vector_scale: args.vector_scale,
            seed: args.seed,
            batch_images: args.batch,
            classes_per_batch: args.classes_per_batch,
            max_images: None,
            max_frequency: args.max_frequency,
            progress,
        };
        let run = Quantify::new(
            QuantifyInputs {
                steerer: &steerer,
                stats: &stats,
                cache: &val_cache,
                selection: selection.as_ref(),
                manual: &manual,
            },
            options,
        )?;
        let report = run.run(&args.out).map_err(vector_scale_hint)?;
        let class_names: Vec<String> = (1..=names.len())
            .map(|c| names.name(c).to_string())
            .collect();
        write_reports(&args.out, &report, selection.as_ref(), &class_names, &notes)?;
        println!(
            "{} validation images; results in {}",
            report.images,
            args.out.display()
        );
        for s in &report.summaries {
            let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
            println!(
                "{:>14}: target change {}% (± {}), other change {}% (± {}), macro over {} \
                 classes; the reference's pooled fractions: target {:.4} (± {:.4}), other \
                 {:.4} (± {:.4}), std over {} classes",
                s.method,
                f(s.target_change_macro_pct),
                f(s.target_std_macro_pct),
                f(s.other_change_macro_pct),
                f(s.other_std_macro_pct),
                s.n_classes_macro,
                s.reference_target_pooled_fraction,
                s.reference_target_std_fraction,
                s.reference_other_pooled_fraction,
                s.reference_other_std_fraction,
                s.n_classes_all
            );
        }
        // Timings go to the console only: the files depend on the inputs alone.
        if let Some(t) = report.seconds_per_pass {
            println!("mean time per (class, method) pass in this run: {t:.3} s");
        }
        Ok(())
    }
}

/// The library names its option (`QuantifyOptions::vector_scale`) where the
/// random-vector method has no scale to match; here that is --vector-scale.
fn vector_scale_hint(e: sae_steer::Error) -> anyhow::Error {
    let names_option = matches!(
        &e,
        sae_steer::Error::Input(m) if m.contains("QuantifyOptions::vector_scale")
    );
    let e = anyhow::Error::from(e);
    if names_option {
        e.context("the random-vector method needs a scale here: pass --vector-scale")
    } else {
        e
    }
}

/// Class ids from ids or names; all 150 when empty.
fn parse_classes(given: &[String], names: &ClassNames) -> Result<Vec<usize>> {
    if given.is_empty() {
        return Ok((1..=names.len()).collect());
    }
    given
        .iter()
        .map(|g| match g.trim().parse::<usize>() {
            Ok(c) if (1..=names.len()).contains(&c) => Ok(c),
            Ok(c) => bail!("class {c} is out of range 1..={}", names.len()),
            Err(_) => names
                .find(g.trim())
                .with_context(|| format!("no ADE20K class is called `{g}`")),
        })
        .collect()
}

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    let device = args.device;
    crate::cli::run_and_report(device, Run(args))
}

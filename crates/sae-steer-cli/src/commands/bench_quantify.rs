//! The `bench_quantify` program; its usage is documented in `examples/bench_quantify.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use sae_steer::ade20k::synth::{SynthOptions, synthesize};
use sae_steer::ade20k::{Ade20k, Split};
use sae_steer::backend::{BackendTask, DeviceChoice};
use sae_steer::burn::prelude::*;
use sae_steer::burn::tensor::Distribution;
use sae_steer::pipeline::{LazyVit, ensure_cache, sae_layer_cache_spec};
use sae_steer::probe::ProbeWeights;
use sae_steer::quantify::{OUTPUTS, Quantify, QuantifyInputs, QuantifyOptions};
use sae_steer::sae::stats::StatsInfo;
use sae_steer::sae::{Activation, DeviceNorm, EncodeRule, SaeConfig};
use sae_steer::{
    Edit, FeatureStats, Labels, PixelValues, Probe, Sae, Steerer, Vit, VitConfig, preprocess_path,
};

use crate::cli::IndicatifProgress;

#[derive(Parser)]
#[command(
    about = "Benchmark one quantify pass: the reference's full forward vs cached activations + rank-1 edit"
)]
pub struct Args {
    /// Synthetic validation images (all are cached and timed).
    #[arg(long, default_value_t = 16)]
    images: usize,
    /// Timed iterations after one warm-up; the median is reported.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Validation images per forward batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Classes stacked in one batch for the stacked strategy.
    #[arg(long, default_value_t = 4)]
    classes_per_batch: usize,
    /// 0-based block the SAE reads and edits.
    #[arg(long, default_value_t = 10)]
    layer: usize,
    /// SAE latents (the published DINOv2 SAE has 24,576).
    #[arg(long, default_value_t = 24_576)]
    d_sae: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Scratch folder for the synthetic dataset and its cache, kept
    /// afterwards (a rerun reuses the cache); default: a temporary folder,
    /// removed at the end.
    #[arg(long)]
    work: Option<PathBuf>,
    /// cpu (burn-flex, the default), ndarray, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// A ReLU SAE with random weights on the device (no 150 MB host copy).
/// Decoder rows have about unit norm, as saev keeps them.
fn random_sae<B: Backend>(d: usize, s: usize, layer: usize, device: &B::Device) -> Sae<B> {
    let std = 1.0 / (d as f64).sqrt();
    Sae {
        config: SaeConfig {
            d_model: d,
            d_sae: s,
            activation: Activation::Relu,
            encode: EncodeRule::CentreOnDecoderBias,
            vit: None,
            layer: Some(layer),
        },
        w_enc: Tensor::random([d, s], Distribution::Normal(0.0, std), device),
        b_enc: Tensor::zeros([s], device),
        w_dec: Tensor::random([s, d], Distribution::Normal(0.0, std), device),
        b_dec: Tensor::zeros([d], device),
        threshold: None,
        // Normalization on, as for the published SAE, so its cost is in.
        norm: Some(DeviceNorm {
            mean: Tensor::zeros([d], device),
            scalar: 1.0,
        }),
    }
}

fn random_probe<B: Backend>(d: usize, device: &B::Device) -> Result<ProbeWeights> {
    let w = Tensor::<B, 2>::random(
        [OUTPUTS, d],
        Distribution::Normal(0.0, 1.0 / (d as f64).sqrt()),
        device,
    );
    let weight = w
        .into_data()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading the probe weights back: {e:?}"))?;
    Ok(ProbeWeights {
        in_features: d,
        out_features: OUTPUTS,
        weight,
        bias: vec![0.0; OUTPUTS],
    })
}

struct Bench(Args);

impl BackendTask for Bench {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        ensure!(a.images > 0, "--images must be at least 1");
        ensure!(a.iters > 0, "--iters must be at least 1");
        ensure!(a.batch > 0, "--batch must be at least 1");
        ensure!(
            a.classes_per_batch > 0,
            "--classes-per-batch must be at least 1"
        );
        let (work, temporary) = match &a.work {
            Some(w) => (w.clone(), false),
            None => (
                std::env::temp_dir()
                    .join(format!("sae-steer-bench-quantify-{}", std::process::id())),
                true,
            ),
        };
        let result = bench::<B>(&a, &work, &device);
        if temporary {
            // Best effort: a leftover scratch folder in /tmp is harmless.
            let _ = std::fs::remove_dir_all(&work);
        }
        result
    }
}

fn bench<B: Backend>(a: &Args, work: &std::path::Path, device: &B::Device) -> Result<()> {
    let config = VitConfig::vit_b14_reg();
    let d = config.hidden_size;
    ensure!(
        a.layer + 1 < config.num_hidden_layers,
        "--layer {} leaves no block to re-run: the ViT has {} blocks",
        a.layer,
        config.num_hidden_layers
    );

    let synth = synthesize(
        &work.join("ade20k"),
        &SynthOptions {
            train: 1,
            val: a.images,
            seed: a.seed,
            ..SynthOptions::default()
        },
        &IndicatifProgress::new(),
    )
    .with_context(|| format!("synthesizing ADE20K in {}", work.display()))?;
    let val = Ade20k::open(&synth.root)?.split(Split::Validation)?;
    // The seed is part of the model id: a rerun with another seed must not
    // reuse activations of other random weights.
    let mut spec =
        sae_layer_cache_spec(&format!("random-seed{}/dinov2_vitb14_reg", a.seed), a.layer);
    spec.progress = IndicatifProgress::shared();
    // Random weights are a function of the seed, so the cache's ViT and the
    // one timed below are the same (the unedited agreement checks it).
    let mut vit = LazyVit::from(Vit::<B>::random(config, a.seed, device)?);
    let (cache, _) = ensure_cache(
        &work.join(format!("validation-layer{}", a.layer)),
        &val,
        &spec,
        &mut vit,
    )?;

    let sae = random_sae::<B>(d, a.d_sae, a.layer, device);
    let probe = Probe::<B>::new(&random_probe::<B>(d, device)?, device)?;
    let steerer = Steerer::new(vit.into_vit()?, sae, probe, a.layer)?;
    let n_patches = cache.patch_labels(0)?.len();
    let stats = FeatureStats::new(a.d_sae, 1, n_patches, StatsInfo::default())?;
    let manual = Default::default();
    let run = Quantify::new(
        QuantifyInputs {
            steerer: &steerer,
            stats: &stats,
            cache: &cache,
            selection: None,
            manual: &manual,
        },
        QuantifyOptions {
            layer: a.layer,
            batch_images: a.batch,
            classes_per_batch: a.classes_per_batch,
            progress: IndicatifProgress::shared(),
            ..QuantifyOptions::default()
        },
    )?;

    // Methods 2-4 all set one latent to -2 x max_obs; the value only
    // matters for what changes, not for the cost.
    let steers: Vec<Edit> = (0..a.classes_per_batch)
        .map(|k| Edit::new().set((1_000 + 7_919 * k) % a.d_sae, -2.0 * 3.0))
        .collect();
    let batches: Vec<Vec<usize>> = (0..a.images)
        .step_by(a.batch)
        .map(|s| (s..(s + a.batch).min(a.images)).collect())
        .collect();
    let pixels: Vec<Tensor<B, 4>> = batches
        .iter()
        .map(|rows| {
            let p = rows
                .iter()
                .map(|&r| preprocess_path(&val.items[r].image))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(PixelValues::batch::<B>(&p, device))
        })
        .collect::<Result<_>>()?;

    println!(
        "backend={} threads={} images={} batch={} classes_per_batch={} layer={} d_sae={}",
        a.device,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        a.images,
        a.batch,
        a.classes_per_batch,
        a.layer,
        a.d_sae
    );
    let mut per_iter: Vec<StrategyTimes> = Vec::new();
    for iter in 0..=a.iters {
        let mut sum = StrategyTimes {
            images: 0,
            full: 0.0,
            cached: 0.0,
            stacked: 0.0,
            agree_unedited: 0.0,
            agree_edited: 0.0,
            agree_stacked: 0.0,
        };
        for (rows, px) in batches.iter().zip(&pixels) {
            let t = time_strategies(&run, &steerer, rows, px.clone(), &steers)?;
            let w = t.images as f64;
            sum.images += t.images;
            sum.full += t.full;
            sum.cached += t.cached;
            sum.stacked += t.stacked;
            sum.agree_unedited += t.agree_unedited * w;
            sum.agree_edited += t.agree_edited * w;
            sum.agree_stacked += t.agree_stacked * w;
        }
        let n = sum.images as f64;
        sum.agree_unedited /= n;
        sum.agree_edited /= n;
        sum.agree_stacked /= n;
        println!(
            "{} full={:.3}s cached={:.3}s stacked={:.3}s per pass over {} images",
            if iter == 0 {
                "warm-up".to_string()
            } else {
                format!("iter {iter}")
            },
            sum.full,
            sum.cached,
            sum.stacked,
            sum.images
        );
        if iter > 0 {
            per_iter.push(sum);
        }
    }
    let n = a.images as f64;
    let full = median(per_iter.iter().map(|t| t.full).collect()) / n;
    let cached = median(per_iter.iter().map(|t| t.cached).collect()) / n;
    let stacked = median(per_iter.iter().map(|t| t.stacked).collect()) / n;
    let last = per_iter.last().context("no timed iteration")?;
    println!();
    println!("| strategy | s per (class, method) per image | full / this |");
    println!("|---|---:|---:|");
    println!("| full forward twice, full-width SAE edit (reference) | {full:.4} | 1.0 |");
    println!(
        "| cached layer {} + rank-1 edit, one class per batch | {cached:.4} | {:.1} |",
        a.layer,
        full / cached
    );
    println!(
        "| cached layer {} + rank-1 edit, {} classes per batch | {stacked:.4} | {:.1} |",
        a.layer,
        a.classes_per_batch,
        full / stacked
    );
    println!();
    println!(
        "patch predictions agreeing: unedited full vs cached {:.4}, edited full vs cached {:.4}, \
         stacked vs alone {:.4}",
        last.agree_unedited, last.agree_edited, last.agree_stacked
    );
    println!("peak_rss_mib={:.0}", crate::cli::peak_rss_mib());
    Ok(())
}

/// Seconds of one (class, method) pass over a batch of images by strategy,
/// and how far the strategies' patch predictions agree (fractions in 0..=1;
/// 1 means identical).
#[derive(Debug, Clone, Copy, PartialEq)]
struct StrategyTimes {
    images: usize,
    /// The reference's way: the whole ViT twice, full-width SAE edit.
    full: f64,
    /// Ours for one class: cached activations, rank-1 edit, the rest of the network.
    cached: f64,
    /// Ours with the classes stacked in one batch, per class.
    stacked: f64,
    /// Full forward's unedited predictions vs those from the cache.
    agree_unedited: f64,
    /// Full forward + full-width edit vs cached + rank-1 edit.
    agree_edited: f64,
    /// The first class of the stacked batch vs the same class alone.
    agree_stacked: f64,
}

/// Times one (class, method) pass over the validation images `rows` three
/// ways; `pixels` `[rows.len(), 3, H, W]` must be those images, preprocessed
/// (their decoding is left out of the reference's time, in its favour):
///
/// - full: the reference's way, the whole ViT from pixels twice (unedited,
///   then edited at the SAE's layer through the full-width SAE
///   encode/decode with its error term), with `steers[0]`;
/// - cached: ours for one class, [`Quantify::predict_edited`] with
///   `steers[0]` alone (the unedited predictions come from [`Quantify::new`]);
/// - stacked: ours as [`Quantify::run`] batches it, every steer at once,
///   divided by `steers.len()`.
///
/// Every timed section ends by reading the predictions back to the host, so
/// asynchronous backends have finished their work.
fn time_strategies<B: Backend>(
    run: &Quantify<'_, B>,
    steerer: &Steerer<B>,
    rows: &[usize],
    pixels: Tensor<B, 4>,
    steers: &[Edit],
) -> Result<StrategyTimes> {
    let [b, ..] = pixels.dims();
    ensure!(
        b == rows.len(),
        "{b} images' pixels for {} cache rows",
        rows.len()
    );
    ensure!(!steers.is_empty(), "no steer to time");
    let original = run.original_of(rows)?;

    let start = std::time::Instant::now();
    let unedited = steerer.segment(steerer.tokens(pixels.clone())?, Labels::Classes)?;
    let x = steerer.steer_tokens_full(steerer.tokens(pixels)?, &steers[0])?;
    let full_edited = steerer.segment(x, Labels::Classes)?;
    let full = start.elapsed().as_secs_f64();

    let start = std::time::Instant::now();
    let cached_edited = run.predict_edited(rows, &steers[..1])?;
    let cached = start.elapsed().as_secs_f64();

    let start = std::time::Instant::now();
    let stacked_preds = run.predict_edited(rows, steers)?;
    let stacked = start.elapsed().as_secs_f64() / steers.len() as f64;

    let agree = |a: &[u8], b: &[u8]| {
        a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
    };
    Ok(StrategyTimes {
        images: b,
        full,
        cached,
        stacked,
        agree_unedited: agree(&unedited, &original),
        agree_edited: agree(&full_edited, &cached_edited),
        agree_stacked: agree(&stacked_preds[..cached_edited.len()], &cached_edited),
    })
}

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    let device = args.device;
    crate::cli::run_and_report(device, Bench(args))
}

//! The `train_sae` program; its usage is documented in `examples/train_sae.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use sae_steer::backend::{BackendTask, DeviceChoice, run_on};
use sae_steer::burn::prelude::Backend;
use sae_steer::data::cache::{CacheManifest, MANIFEST_FILE};
use sae_steer::sae::train::{
    self, ActivationShards, NormalizationPlan, RunOptions, SaeSpec, TrainConfig,
};
use sae_steer::sae::{Activation, Normalization};

use crate::cli::IndicatifProgress;

#[derive(Parser)]
#[command(about = "Train sparse autoencoders on cached ViT activations")]
pub struct Args {
    /// Activation-cache directory, a saev activation-shard folder (with its
    /// metadata.json), a directory of .safetensors files, or files.
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// Tensor to read from every file; for a saev shard folder, the layer
    /// (`layer10` or `10`, as its metadata.json lists them, e.g. `-2`).
    #[arg(long, default_value = "layer10", allow_hyphen_values = true)]
    tensor: String,
    /// Token positions (axis 1) to train on, e.g. `0..261` or `0..1,5..261`,
    /// or `patches`: the patch tokens of whatever ViT made the activation
    /// cache or saev shard folder (after its CLS and registers).
    #[arg(long)]
    tokens: Option<String>,
    /// SAE widths (comma-separated); or use --exp-factor.
    #[arg(long, value_delimiter = ',')]
    d_sae: Vec<usize>,
    /// Widths as multiples of the activation width.
    #[arg(long, value_delimiter = ',')]
    exp_factor: Vec<usize>,
    /// `relu`, `topk:K` and/or `batchtopk:K` (k latents per row on average
    /// over the batch; saved as a JumpReLU with its running threshold).
    #[arg(long, value_delimiter = ',', default_value = "relu")]
    activation: Vec<String>,
    /// Train every SAE with the Matryoshka objective over this many nested
    /// prefixes (saev: 10); 0 trains the plain objective.
    #[arg(long, default_value_t = 0)]
    matryoshka: usize,
    #[arg(long, value_delimiter = ',', default_value = "4e-4")]
    lr: Vec<f64>,
    /// L1 coefficients (ReLU SAEs; TopK SAEs train without L1).
    #[arg(long, value_delimiter = ',', default_value = "4e-4")]
    l1: Vec<f64>,
    #[arg(long, default_value_t = 16_384)]
    batch: usize,
    /// Training rows in total (passes repeat as needed).
    #[arg(long, default_value_t = 100_000_000)]
    tokens_total: u64,
    /// Steps of linear learning-rate warmup.
    #[arg(long, default_value_t = 500)]
    warmup: u64,
    /// Steps of linear L1 warmup (0: none).
    #[arg(long, default_value_t = 0)]
    l1_warmup: u64,
    /// AuxK: dead latents used per row (default d_model / 2) and the loss weight.
    #[arg(long)]
    aux_k: Option<usize>,
    #[arg(long, default_value_t = 1.0 / 32.0)]
    aux_coeff: f64,
    /// A latent silent for this many rows is dead.
    #[arg(long, default_value_t = 10_000_000)]
    dead_tokens: u64,
    /// `estimate` (saev), `off`, or a safetensors file with `mean` and `scalar`.
    #[arg(long, default_value = "estimate")]
    normalization: String,
    /// Rows read for the normalization and the initial b_dec.
    #[arg(long, default_value_t = 524_288)]
    init_samples: usize,
    #[arg(long, default_value_t = 50)]
    log_every: u64,
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    /// Rows of the shuffle window held in memory.
    #[arg(long, default_value_t = 1 << 18)]
    window_rows: usize,
    /// Recorded in the checkpoints: backbone and layer.
    #[arg(long)]
    vit: Option<String>,
    #[arg(long)]
    layer: Option<usize>,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Seed of the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seed of the initial weights (shared by the SAEs of a sweep, as in saev).
    #[arg(long, default_value_t = 0)]
    sae_seed: u64,
}

/// The training rows: an activation cache's shards (through its manifest),
/// a saev shard folder (its metadata.json), the .safetensors files of a
/// folder, or the files given.
fn open_data(paths: &[PathBuf], tensor: &str) -> Result<ActivationShards> {
    let mut files = paths.to_vec();
    if let [dir] = paths
        && dir.is_dir()
    {
        if dir.join(MANIFEST_FILE).exists() {
            return Ok(ActivationShards::open_cache(dir, tensor)?);
        }
        if dir.join("metadata.json").exists() {
            let layer: i64 = tensor
                .strip_prefix("layer")
                .unwrap_or(tensor)
                .parse()
                .with_context(|| {
                    format!("--tensor `{tensor}`: a saev shard folder needs a layer, e.g. layer10")
                })?;
            return Ok(ActivationShards::open_saev(dir, layer)?);
        }
        files = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!(
                "{} holds no {MANIFEST_FILE} and no .safetensors files",
                dir.display()
            );
        }
    }
    Ok(ActivationShards::open(&files, tensor)?)
}

fn sweep(args: &Args, d_model: usize) -> Result<Vec<SaeSpec>> {
    let mut widths: Vec<usize> = args.d_sae.clone();
    widths.extend(args.exp_factor.iter().map(|e| e * d_model));
    if widths.is_empty() {
        widths.push(32 * d_model);
    }
    let mut specs = Vec::new();
    for act in &args.activation {
        let (activation, batch) = match act.as_str() {
            "relu" => (Activation::Relu, false),
            other => {
                let (batch, k) = match other.split_once(':') {
                    Some(("topk", k)) => (false, k),
                    Some(("batchtopk", k)) => (true, k),
                    _ => bail!("--activation `{other}`: expected relu, topk:K or batchtopk:K"),
                };
                match k.parse::<usize>() {
                    Ok(k) => (Activation::Topk { k }, batch),
                    Err(_) => bail!("--activation `{other}`: K must be a positive integer"),
                }
            }
        };
        for &d_sae in &widths {
            for &lr in &args.lr {
                let l1s: Vec<f64> = match activation {
                    Activation::Relu => args.l1.clone(),
                    _ => vec![0.0],
                };
                for l1 in l1s {
                    let mut spec = match activation {
                        Activation::Topk { k } => {
                            let mut s = if batch {
                                SaeSpec::batch_topk(d_model, d_sae, k, lr)
                            } else {
                                SaeSpec::topk(d_model, d_sae, k, lr)
                            };
                            if let Some(a) = args.aux_k {
                                s.aux_k = a;
                            }
                            s.aux_coeff = args.aux_coeff;
                            s
                        }
                        _ => SaeSpec::relu(d_sae, lr, l1),
                    };
                    spec.seed = args.sae_seed;
                    spec.matryoshka_prefixes = args.matryoshka;
                    spec.name = spec.default_name();
                    specs.push(spec);
                }
            }
        }
    }
    Ok(specs)
}

struct Train {
    args: Args,
    config: TrainConfig,
    shards: ActivationShards,
}

impl BackendTask for Train {
    type Output = Result<()>;
    fn run<B: Backend>(mut self, device: B::Device) -> Result<()> {
        eprintln!(
            "training {} SAE(s) on {} rows per pass of `{}` ({} files), {} rows in total, batch {}",
            self.config.saes.len(),
            self.shards.rows(),
            self.args.tensor,
            self.shards.files().len(),
            self.config.total_tokens,
            self.config.batch_size
        );
        let report = train::train::<B>(
            &self.config,
            &mut self.shards,
            &self.args.out,
            &device,
            &RunOptions {
                progress: IndicatifProgress::shared(),
            },
        )?;
        if let Some(step) = report.resumed_from {
            eprintln!("(resumed from step {step})");
        }
        if let Some(n) = &report.normalization {
            eprintln!(
                "normalization: scalar {:.4} (mean and scalar are stored in each checkpoint)",
                n.scalar
            );
        }
        for (m, path) in report.metrics.iter().zip(&report.checkpoints) {
            println!(
                "{}: loss {:.5} nmse {:.4} L0 {:.1} dead {} dense {} -> {}",
                m.sae,
                m.loss,
                m.nmse,
                m.l0,
                m.dead,
                m.dense,
                path.display()
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
    crate::cli::report(main_inner(args))
}

/// The patch-token positions of the data: after the prefix tokens the
/// cache's manifest or the saev metadata describes.
fn patch_tokens(paths: &[PathBuf]) -> Result<std::ops::Range<usize>> {
    if let [dir] = paths {
        if dir.join(MANIFEST_FILE).exists() {
            let m = CacheManifest::read(dir)?;
            let first = m.model_config.prefix_tokens();
            return Ok(first..first + m.patches_per_image());
        }
        if dir.join("metadata.json").exists() {
            let info = train::SaevShardInfo::read(dir)?;
            let first = usize::from(info.cls_token);
            return Ok(first..first + info.patches);
        }
    }
    bail!(
        "--tokens patches needs an activation cache or a saev shard folder (they say which \
         tokens are patches); give the positions for plain files, e.g. --tokens 5..261"
    )
}

fn main_inner(args: Args) -> Result<()> {
    let mut shards = open_data(&args.data, &args.tensor)?;
    match args.tokens.as_deref() {
        Some("patches") => shards = shards.with_tokens(&[patch_tokens(&args.data)?])?,
        Some(t) => shards = shards.with_tokens(&train::parse_ranges(t)?)?,
        None => {}
    }
    shards.window_rows = args.window_rows;
    let d_model = shards.dim();
    let normalization = match args.normalization.as_str() {
        "estimate" => NormalizationPlan::Estimate,
        "off" => NormalizationPlan::Off,
        file => {
            let n = Normalization::load(file, d_model)?;
            NormalizationPlan::Given {
                mean: n.mean,
                scalar: n.scalar,
            }
        }
    };
    let mut config = TrainConfig::saev(d_model, sweep(&args, d_model)?);
    config.batch_size = args.batch;
    config.total_tokens = args.tokens_total;
    config.lr_warmup_steps = args.warmup;
    config.l1_warmup_steps = args.l1_warmup;
    config.normalization = normalization;
    config.init_samples = args.init_samples;
    config.dead_tokens = args.dead_tokens;
    config.log_every = args.log_every;
    config.checkpoint_every = args.checkpoint_every;
    config.data_seed = args.seed;
    config.vit = args.vit.clone();
    config.layer = args.layer;
    config.validate()?;
    let device = args.device;
    run_on(
        device,
        Train {
            args,
            config,
            shards,
        },
    )?
}

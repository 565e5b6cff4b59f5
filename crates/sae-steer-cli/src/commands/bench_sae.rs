//! The `bench_sae` program; its usage is documented in `examples/bench_sae.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use sae_steer::backend::{BackendTask, DeviceChoice, run_on};
use sae_steer::burn::prelude::*;
use sae_steer::burn::tensor::Distribution;
use sae_steer::sae::train::{NormalizationPlan, SaeParams, SaeSpec, TrainConfig, Trainer};
use sae_steer::sae::{Activation, EncodeRule, Sae, SaeConfig};

#[derive(Parser, Clone)]
#[command(about = "Benchmark SAE encode/decode and training steps")]
pub struct Args {
    #[arg(long, default_value_t = 768)]
    d_model: usize,
    #[arg(long, default_value_t = 24_576)]
    d_sae: usize,
    /// Patches per encode + decode call.
    #[arg(long, default_value_t = 4096)]
    batch: usize,
    /// Rows per training step (saev: 16,384; smaller keeps CPU runs short).
    #[arg(long, default_value_t = 4096)]
    train_batch: usize,
    /// Also measure a TopK SAE with this k (training includes AuxK).
    #[arg(long)]
    topk: Option<usize>,
    #[arg(long, default_value_t = 3)]
    iters: usize,
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    #[command(flatten)]
    baseline: crate::cli::BaselineArgs,
}

/// One measurement: what, per-second rate, rows per second.
type Results = BTreeMap<String, (f64, f64)>;

struct Bench(Args);

impl BackendTask for Bench {
    type Output = Result<Results>;
    fn run<B: Backend>(self, device: B::Device) -> Result<Results> {
        let a = &self.0;
        let (d, s) = (a.d_model, a.d_sae);
        let mut results = Results::new();
        let mut activations = vec![("relu".to_string(), Activation::Relu)];
        if let Some(k) = a.topk {
            activations.push((format!("topk{k}"), Activation::Topk { k }));
        }
        for (label, activation) in activations {
            let spec = match activation {
                Activation::Topk { k } => SaeSpec::topk(d, s, k, 4e-4),
                _ => SaeSpec::relu(s, 4e-4, 4e-4),
            };
            // (a) inference: the crate's Sae, as the steering pipeline uses it.
            let params = SaeParams::<B>::init(d, &spec, &vec![0.0; d], &device);
            let config = SaeConfig {
                d_model: d,
                d_sae: s,
                activation,
                encode: EncodeRule::Plain,
                vit: None,
                layer: None,
            };
            let sae = Sae::from_weights(params.to_weights(config, None), &device);
            let x = Tensor::<B, 2>::random([a.batch, d], Distribution::Normal(0.0, 1.0), &device);
            sae.decode(sae.encode(x.clone())).into_data();
            let start = Instant::now();
            for _ in 0..a.iters {
                // into_data waits for asynchronous backends.
                sae.decode(sae.encode(x.clone())).into_data();
            }
            let secs = start.elapsed().as_secs_f64() / a.iters as f64;
            let rate = a.batch as f64 / secs;
            println!(
                "rust {label} encode+decode batch={} patches_per_s={rate:.0} peak_rss_mib={:.0}",
                a.batch,
                crate::cli::peak_rss_mib()
            );
            results.insert(format!("{label} encode+decode"), (1.0 / secs, rate));
            drop(sae);

            // (b) one training step. TopK is measured twice: with no dead
            // latent (AuxK idle, as early in training) and with every latent
            // dead (AuxK at its largest, the worst case).
            let runs: Vec<(String, u64)> = match activation {
                Activation::Topk { .. } => vec![
                    (label.clone(), u64::MAX),
                    (format!("{label}+auxk_all_dead"), 0),
                ],
                _ => vec![(label.clone(), u64::MAX)],
            };
            for (name, dead_tokens) in runs {
                let mut config = TrainConfig::saev(d, vec![spec.clone()]);
                config.batch_size = a.train_batch;
                config.normalization = NormalizationPlan::Off;
                config.dead_tokens = dead_tokens;
                config.lr_warmup_steps = 0;
                let mut trainer = Trainer::<B>::new(config, None, &vec![0.0; d], &device)?;
                let rows: Vec<f32> = Tensor::<B, 2>::random(
                    [a.train_batch, d],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                )
                .into_data()
                .into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                trainer.step(&rows)?;
                let start = Instant::now();
                for _ in 0..a.iters {
                    trainer.step(&rows)?;
                }
                // Reading the step statistics waits for an asynchronous backend.
                trainer.take_metrics();
                let secs = start.elapsed().as_secs_f64() / a.iters as f64;
                println!(
                    "rust {name} train_step batch={} steps_per_s={:.4} rows_per_s={:.0} peak_rss_mib={:.0}",
                    a.train_batch,
                    1.0 / secs,
                    a.train_batch as f64 / secs,
                    crate::cli::peak_rss_mib()
                );
                results.insert(
                    format!("{name} train_step"),
                    (1.0 / secs, a.train_batch as f64 / secs),
                );
            }
        }
        Ok(results)
    }
}

fn torch_results(args: &Args, python: &Path) -> Result<Results> {
    let mut script_args: Vec<String> = vec![
        "--d-model".into(),
        args.d_model.to_string(),
        "--d-sae".into(),
        args.d_sae.to_string(),
        "--batch".into(),
        args.batch.to_string(),
        "--train-batch".into(),
        args.train_batch.to_string(),
        "--iters".into(),
        args.iters.to_string(),
        "--threads".into(),
        args.baseline.threads.to_string(),
    ];
    if let Some(k) = args.topk {
        script_args.extend(["--topk".into(), k.to_string()]);
    }
    let lines = crate::cli::run_torch_script(python, "bench_sae_torch.py", &script_args)?;
    let mut results = Results::new();
    for line in &lines {
        // "torch <label> <what> batch=N <unit>=R ... rows_per_s=R"
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 5 || words[0] != "torch" {
            continue;
        }
        let field = |key: &str| {
            words
                .iter()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse::<f64>().ok())
        };
        let key = format!("{} {}", words[1], words[2]);
        if let Some(rate) = field("patches_per_s") {
            results.insert(key, (0.0, rate));
        } else if let (Some(steps), Some(rows)) = (field("steps_per_s"), field("rows_per_s")) {
            results.insert(key, (steps, rows));
        }
    }
    Ok(results)
}

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    crate::cli::report(main_inner(args))
}

fn main_inner(args: Args) -> Result<()> {
    println!(
        "device={} threads_available={} d_model={} d_sae={}",
        args.device,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.d_model,
        args.d_sae
    );
    let (ours, theirs) = crate::cli::alternate_rounds(
        args.baseline.rounds,
        || run_on(args.device, Bench(args.clone()))?,
        args.baseline
            .torch
            .as_ref()
            .map(|py| || torch_results(&args, py)),
        |kept: &mut (f64, f64), new| *kept = (kept.0.max(new.0), kept.1.max(new.1)),
    )?;
    if args.baseline.torch.is_some() {
        println!("\n| measurement | ours (rows/s) | PyTorch (rows/s) | ours / PyTorch |");
        println!("|---|---:|---:|---:|");
        for (key, (_, rate)) in &ours {
            if let Some((_, t)) = theirs.get(key) {
                println!("| {key} | {rate:.0} | {t:.0} | {:.2} |", rate / t);
            }
        }
    }
    Ok(())
}

//! `sae-steer`: the experiments of the preprint as one program.
//!
//! ```text
//! cargo install --path crates/sae-steer-cli        # add --features cuda on a GPU machine
//! sae-steer cache --ade20k data/ade20k --split training --out caches/train
//! sae-steer quantify --sae-ckpt sae.pt --seg-ckpt probes/lr_0_001__wd_0_1 --imgs.root data/ade20k
//! sae-steer reproduce --demo                        # the whole chain, offline, from a checkout
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sae_steer_cli::commands::{
    activations, cache, export_sae, figures, manipulate, quantify, random_vit, stats, synth_ade20k,
    train_probe, train_sae, validate,
};
use sae_steer_jobs::{Programs, fetch, reproduce, scale};

#[derive(Parser)]
#[command(
    name = "sae-steer",
    version,
    about = "Find interpretable features inside vision transformers with sparse autoencoders, and steer them",
    long_about = "Find interpretable features inside vision transformers with sparse autoencoders, \
and steer them. Each subcommand is one step of the preprint's experiments; `sae-steer <command> \
--help` explains its flags. The reference's own flags (--sae-ckpt, --imgs.root, ...) are accepted \
where the reference has them."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a ViT (DINOv2, DINOv3, CLIP, SigLIP) on one image and save every layer's
    /// activations (and an SAE's view of one).
    Activations(activations::Args),
    /// Cache ViT activations and labels of ADE20K or an image folder.
    Cache(cache::Args),
    /// Train linear segmentation probes (a learning-rate x weight-decay sweep) on ADE20K.
    TrainProbe(train_probe::Args),
    /// Validate segmentation probes on ADE20K and report the best setting.
    Validate(validate::Args),
    /// Train sparse autoencoders on cached ViT activations.
    TrainSae(train_sae::Args),
    /// Write an SAE (ours, saev's, SAELens's) as a SAELens folder, normalization folded in.
    ExportSae(export_sae::Args),
    /// Feature statistics of an SAE over images: max_obs, firing frequency, top images.
    Stats(stats::Args),
    /// Measure how specifically SAE features steer a segmentation probe.
    Quantify(quantify::Args),
    /// Serve the interactive steering page.
    Serve(manipulate::Args),
    /// Draw steering figures: image | true labels | prediction | after the edit.
    Figures(figures::Args),
    /// Download ADE20K, DINOv2 and the published SAE (pinned by data-manifests/).
    Fetch(fetch::Args),
    /// The preprint end to end (caches, probes, statistics, quantify, figures, report.md);
    /// `--demo` runs it offline on embedded defaults. Runs from a checkout.
    Reproduce(reproduce::Args),
    /// Fit the costs of several `reproduce --scale` runs and extrapolate to the full job.
    ScaleFit {
        /// scale.json files of runs at different fractions, one device.
        #[arg(required = true, num_args = 2..)]
        files: Vec<PathBuf>,
    },
    /// Write a synthetic dataset in the ADE20K SceneParsing layout.
    SynthAde20k(synth_ade20k::Args),
    /// Write a random-weight DINOv2 as a Hugging Face folder (no download).
    RandomVit(random_vit::Args),
}

fn main() -> ExitCode {
    sae_steer_cli::cli::tune_allocator();
    match Cli::parse().command {
        Command::Activations(a) => activations::run_args(a),
        Command::Cache(a) => cache::run_args(a),
        Command::TrainProbe(a) => train_probe::run_args(a),
        Command::Validate(a) => validate::run_args(a),
        Command::TrainSae(a) => train_sae::run_args(a),
        Command::ExportSae(a) => export_sae::run_args(a),
        Command::Stats(a) => stats::run_args(a),
        Command::Quantify(a) => quantify::run_args(a),
        Command::Serve(a) => manipulate::run_args(a),
        Command::Figures(a) => figures::run_args(a),
        Command::SynthAde20k(a) => synth_ade20k::run_args(a),
        Command::RandomVit(a) => random_vit::run_args(a),
        Command::Fetch(a) => sae_steer_cli::report(fetch::run(a)),
        Command::Reproduce(a) => sae_steer_cli::report(
            std::env::current_exe()
                .map_err(anyhow::Error::from)
                .and_then(|exe| reproduce::run(a, Programs::Binary(exe))),
        ),
        Command::ScaleFit { files } => sae_steer_cli::report(
            files
                .iter()
                .map(|f| scale::read_report(f))
                .collect::<anyhow::Result<Vec<_>>>()
                .map(|reports| print!("{}", scale::fit_markdown(&reports))),
        ),
    }
}

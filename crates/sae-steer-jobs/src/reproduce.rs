//! `cargo xtask reproduce`: the preprint's experiments end to end, as a chain
//! of stages that each run one `sae-steer` subcommand.
//!
//! data -> caches -> probe sweep -> validation -> (SAE training, demo only) ->
//! feature statistics -> quantify -> figures -> `report.md`.
//!
//! Every stage records, in `<out>/stages/<name>.json`, the exact command it
//! ran and how long it took. A rerun skips a stage whose record matches the
//! command it would run now and whose outputs are all present; anything else
//! runs again, and the programs themselves resume their own partial work
//! (caches, probe and SAE checkpoints, quantify's `passes.jsonl`). So after a
//! crash the same command continues where it stopped, and changing a flag
//! redoes exactly the stages it affects and those after them.
//!
//! `--scale F` runs the same chain at the real geometry on synthetic data
//! (ADE20K's sizes and 150 classes, a random-weight ViT-B/14-reg, a
//! 24,576-latent SAE at layer 10, the full probe sweep) with F of the real
//! image counts, and writes each stage's cost to `scale.json` ([`crate::scale`]).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::fetch;
use crate::scale::{self, StageCost, Usage};

/// The small random-weight DINOv2 (hidden 128, 3 blocks, 4 registers) the
/// tests use: the demo needs no download.
const DEMO_VIT: &str = "tests/fixtures/vit/reg";
/// The demo's SAE reads the middle block of the three.
const DEMO_LAYER: usize = 1;
/// Classes of the demo's synthetic scenes: the four of the preprint's guided
/// examples (car, painting, toilet, bed) among common scene classes.
const DEMO_CLASSES: &str = "wall,floor,sky,tree,grass,person,car,painting,toilet,bed";
/// The published SAE (data-manifests/sae.toml) and its block.
const PUBLISHED_SAE: &str = "osunlp/SAE_DINOv2_24K_ViT-B-14_IN1K";
const PUBLISHED_VIT: &str = "facebook/dinov2-with-registers-base";
const PUBLISHED_LAYER: usize = 10;
/// Scale runs: the published SAE's width, trained briefly on this many
/// patch tokens (the preprint studies a trained SAE, it does not train one).
const SCALE_D_SAE: usize = 24_576;
const SCALE_SAE_TOKENS: u64 = 16_384;

/// Command-line flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The offline demo: a synthetic ADE20K-layout dataset, the embedded
    /// small random-weight ViT and an SAE trained on the spot. A few minutes
    /// on two CPU cores.
    #[arg(long)]
    demo: bool,
    /// A smaller demo (fewer images and steps), for tests.
    #[arg(long, requires = "demo")]
    quick: bool,
    /// The real job's geometry on synthetic data, at this fraction of its
    /// image counts (1 = 20,210 + 2,000 images; at least 20 + 4): ADE20K's
    /// image sizes and 150 classes, a random-weight ViT-B/14 with 4
    /// registers, a 24,576-latent SAE at layer 10, the 6 x 3 probe sweep for
    /// 400 epochs, quantify for every class with all four methods. Writes
    /// each stage's time, memory, bytes and throughput to `scale.json`.
    #[arg(long, conflicts_with_all = ["demo", "sae", "vit", "imagenet"])]
    scale: Option<f64>,
    /// Scale runs: probe epochs instead of the preprint's 400 (for tests;
    /// the report says the run is then not the real job's cost).
    #[arg(long, requires = "scale")]
    probe_epochs: Option<usize>,
    /// Scale runs: a Python with torch and transformers. PyTorch's ViT-B/14
    /// forward is then measured in the same run (scripts/bench_vit_torch.py)
    /// and the report sets the Python reference's estimated cost beside ours.
    #[arg(long, requires = "scale")]
    python: Option<PathBuf>,
    /// cpu (burn-flex, the default), ndarray, cuda or cuda:N. The full run is a GPU job.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Output folder [default: runs/demo, or runs/reproduce].
    #[arg(long)]
    out: Option<PathBuf>,
    /// An ImageNet-1K folder (class sub-folders, e.g. its `train/`) for the
    /// feature statistics and the SAE's input normalization, as in the
    /// preprint. Without it ADE20K training images stand in, and the report
    /// says so.
    #[arg(long)]
    imagenet: Option<PathBuf>,
    /// Use at most this many ImageNet images (the preprint used all 1.28 M).
    /// Their layer cache takes about 0.8 MB an image (80 GB at the default).
    #[arg(long, default_value_t = 100_000)]
    imagenet_images: usize,
    /// Where datasets are (or are downloaded to) [default: data/].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The SAE to study (full run): a saev sae.pt, one of our checkpoints or
    /// a hub id [default: the published DINOv2 SAE].
    #[arg(long)]
    sae: Option<String>,
    /// The backbone [default: facebook/dinov2-with-registers-base]: a hub id
    /// or a Hugging Face folder of any supported family (DINOv2, DINOv3,
    /// CLIP, SigLIP). With --demo, a local folder replaces the embedded
    /// DINOv2 (its block 1 is read), e.g. tests/fixtures/vit/clip.
    #[arg(long)]
    vit: Option<String>,
    /// Do not download: use what `cargo xtask fetch` placed before, or fail
    /// saying what is missing.
    #[arg(long)]
    offline: bool,
    /// Start the full run on a CPU even though it takes days.
    #[arg(long)]
    yes: bool,
    /// Extra cargo features for the programs (e.g. `cuda`, `openblas-system`).
    #[arg(long)]
    features: Option<String>,
    /// Run the prebuilt `sae-steer` program in this folder instead of
    /// building it (e.g. `target/release` on a machine without cargo).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// The `sae-steer` subcommands the stages run (as `snake_case` names; the
/// subcommand is the `kebab-case` form).
pub const PROGRAMS: [&str; 9] = [
    "synth_ade20k",
    "random_vit",
    "cache",
    "train_probe",
    "validate",
    "train_sae",
    "stats",
    "quantify",
    "figures",
];

/// One step of the chain.
struct Stage {
    name: &'static str,
    /// One line for the log and the report.
    about: String,
    run: Step,
    /// Files and folders that exist once the stage is complete.
    outputs: Vec<PathBuf>,
    /// The work it does, for throughput.
    work: Work,
}

/// How much work a stage does, in its own unit.
#[derive(Clone)]
enum Work {
    Items(u64, &'static str),
    /// Quantify: the passes it ran (counted in `passes.jsonl` afterwards)
    /// times the validation images each pass covers.
    QuantifyPasses {
        log: PathBuf,
        images: u64,
    },
    /// Lines of a file written by the stage (figures' `index.txt`).
    Lines(PathBuf, &'static str),
}

impl Work {
    fn count(&self) -> (u64, &'static str) {
        match self {
            Work::Items(n, unit) => (*n, unit),
            Work::QuantifyPasses { log, images } => {
                // A settings line, then one line per chunk of passes.
                let passes: u64 = std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .lines()
                    .skip(1)
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter_map(|v| v.get("passes")?.as_array().map(|a| a.len() as u64))
                    .sum();
                (passes * images, "image-passes")
            }
            Work::Lines(path, unit) => (
                std::fs::read_to_string(path)
                    .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count() as u64)
                    .unwrap_or(0),
                unit,
            ),
        }
    }
}

enum Step {
    /// A `sae-steer` subcommand with its arguments.
    Program(&'static str, Vec<OsString>),
    /// `cargo xtask fetch` with these flags, in process.
    Fetch(Vec<OsString>),
}

impl Step {
    /// What the stage record compares: the full command.
    fn signature(&self) -> Vec<String> {
        match self {
            Step::Program(name, args) => std::iter::once(name.to_string())
                .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
                .collect(),
            Step::Fetch(args) => std::iter::once("fetch".to_string())
                .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
                .collect(),
        }
    }
}

/// Size and modification time of every existing file a stage's arguments
/// name, besides its outputs: a stage whose input was rewritten under the
/// same name (an SAE retrained into the same file) must run again, though
/// its command is the same.
fn input_stamps(stage: &Stage) -> Vec<String> {
    let Step::Program(_, args) = &stage.run else {
        return Vec::new();
    };
    args.iter()
        .map(Path::new)
        .filter(|p| !stage.outputs.iter().any(|o| o == p))
        .filter_map(|p| {
            let meta = std::fs::metadata(p).ok().filter(|m| m.is_file())?;
            let mtime = meta
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            Some(format!(
                "{} {} {}.{:09}",
                p.display(),
                meta.len(),
                mtime.as_secs(),
                mtime.subsec_nanos()
            ))
        })
        .collect()
}

/// `<out>/stages/<name>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct StageRecord {
    command: Vec<String>,
    /// [`input_stamps`] when the stage ran (absent in records of older
    /// versions, which are taken as matching).
    #[serde(default)]
    inputs: Option<Vec<String>>,
    seconds: f64,
    /// What the run cost (absent in records of older versions).
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    items: u64,
    #[serde(default)]
    unit: String,
}

/// Everything the stages are built from.
struct Plan {
    demo: bool,
    quick: bool,
    /// `--scale F`: (F, probe epochs).
    scale: Option<(f64, usize)>,
    out: PathBuf,
    ade20k: PathBuf,
    vit: String,
    layer: usize,
    device: String,
    /// The SAE, or `None` when the demo trains it (found after training).
    sae: Option<String>,
    imagenet: Option<PathBuf>,
    imagenet_images: usize,
    /// Flags of the fetch stage (full run).
    fetch: Vec<OsString>,
}

impl Plan {
    fn new(args: &Args, root: &Path) -> Result<Self> {
        let out = absolute(args.out.clone().unwrap_or_else(|| match args.scale {
            Some(f) => root.join(format!("runs/scale-{f}")),
            None if args.demo => root.join("runs/demo"),
            None => root.join("runs/reproduce"),
        }))?;
        let data_dir = absolute(args.data_dir.clone().unwrap_or_else(|| root.join("data")))?;
        if let Some(f) = args.scale {
            if !(f > 0.0 && f <= 1.0) {
                bail!("--scale {f}: the fraction must be in (0, 1]");
            }
            if args.probe_epochs == Some(0) {
                bail!("--probe-epochs must be at least 1");
            }
            return Ok(Self {
                demo: false,
                quick: false,
                scale: Some((f, args.probe_epochs.unwrap_or(400))),
                ade20k: out.join("data/ade20k"),
                vit: out.join("vit").to_string_lossy().into_owned(),
                out,
                layer: PUBLISHED_LAYER,
                device: args.device.clone(),
                sae: None,
                imagenet: None,
                imagenet_images: 0,
                fetch: Vec::new(),
            });
        }
        if args.demo {
            if args.sae.is_some() || args.imagenet.is_some() {
                bail!("--demo trains its own SAE on its own data: drop --sae and --imagenet");
            }
            let vit = match &args.vit {
                Some(v) if Path::new(v).join("config.json").is_file() => absolute(v)?,
                Some(v) => bail!(
                    "--demo --vit {v}: the demo runs offline, so the ViT must be a local \
                     Hugging Face folder (config.json + model.safetensors)"
                ),
                None => root.join(DEMO_VIT),
            };
            return Ok(Self {
                demo: true,
                quick: args.quick,
                scale: None,
                ade20k: out.join("data/ade20k"),
                out,
                vit: vit.to_string_lossy().into_owned(),
                layer: DEMO_LAYER,
                device: args.device.clone(),
                sae: None,
                imagenet: None,
                imagenet_images: 0,
                fetch: Vec::new(),
            });
        }
        let mut items = vec!["ade20k"];
        if args.vit.is_none() {
            items.push("dinov2");
        }
        if args.sae.is_none() {
            items.push("sae");
        }
        let mut fetch = Vec::new();
        push(&mut fetch, "--only", items.join(","));
        push(&mut fetch, "--data-dir", data_dir.as_os_str());
        if args.offline {
            fetch.push("--offline".into());
        }
        if let Some(dir) = &args.imagenet
            && !dir.is_dir()
        {
            bail!("--imagenet {}: no such folder", dir.display());
        }
        Ok(Self {
            demo: false,
            quick: false,
            scale: None,
            ade20k: data_dir.join("ADEChallengeData2016"),
            out,
            vit: args.vit.clone().unwrap_or_else(|| PUBLISHED_VIT.into()),
            layer: PUBLISHED_LAYER,
            device: args.device.clone(),
            sae: Some(args.sae.clone().unwrap_or_else(|| PUBLISHED_SAE.into())),
            imagenet: args.imagenet.as_deref().map(absolute).transpose()?,
            imagenet_images: args.imagenet_images,
            fetch,
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.out.join(rel)
    }

    /// Scale runs: the manual method's class -> latent table, generated.
    fn manual_table(&self) -> PathBuf {
        self.path("manual-features.toml")
    }

    fn caches(&self) -> PathBuf {
        self.path("caches")
    }

    /// Caches are named as quantify looks for them under `--cache-dir`.
    fn cache(&self, split: &str) -> PathBuf {
        self.caches().join(format!("{split}-layer{}", self.layer))
    }

    /// (training, validation) images of the run.
    fn images(&self) -> (usize, usize) {
        match self.scale {
            Some((f, _)) => scale::scale_images(f),
            None if self.demo => {
                let s = self.sizes();
                (s.train, s.val)
            }
            None => (scale::ADE20K_TRAIN, scale::ADE20K_VAL),
        }
    }

    /// Epochs of the probe sweep.
    fn probe_epochs(&self) -> usize {
        match self.scale {
            Some((_, epochs)) => epochs,
            None if self.demo => self.sizes().probe_epochs,
            None => 400,
        }
    }

    fn sizes(&self) -> DemoSizes {
        if self.quick {
            DemoSizes {
                train: 48,
                val: 12,
                probe_epochs: 20,
                sae_tokens: 200_000,
            }
        } else {
            DemoSizes {
                train: 160,
                val: 40,
                probe_epochs: 40,
                sae_tokens: 1_000_000,
            }
        }
    }

    /// The stages up to (and including) SAE training; the rest need the SAE
    /// file, which the demo only knows after training.
    fn first_stages(&self) -> Vec<Stage> {
        let mut stages = Vec::new();
        let common = |args: &mut Vec<OsString>| {
            push(args, "--vit", &self.vit);
            push(args, "--device", &self.device);
        };
        if self.demo {
            let s = self.sizes();
            let mut args = Vec::new();
            push(&mut args, "--out", self.ade20k.as_os_str());
            push(&mut args, "--train", s.train.to_string());
            push(&mut args, "--val", s.val.to_string());
            push(&mut args, "--classes", DEMO_CLASSES);
            push(&mut args, "--max-side", "320");
            stages.push(Stage {
                name: "data",
                about: format!(
                    "synthetic ADE20K: {} training and {} validation scenes of {} classes",
                    s.train,
                    s.val,
                    DEMO_CLASSES.split(',').count()
                ),
                run: Step::Program("synth_ade20k", args),
                outputs: vec![self.ade20k.join("objectInfo150.txt")],
                work: Work::Items((s.train + s.val) as u64, "images"),
            });
        } else if self.scale.is_some() {
            let (train, val) = self.images();
            let mut args = Vec::new();
            push(&mut args, "--out", self.ade20k.as_os_str());
            push(&mut args, "--train", train.to_string());
            push(&mut args, "--val", val.to_string());
            push(&mut args, "--sizes", "ade");
            stages.push(Stage {
                name: "data",
                about: format!(
                    "synthetic ADE20K: {train} training and {val} validation scenes of all 150 \
                     classes at ADE20K's image sizes"
                ),
                run: Step::Program("synth_ade20k", args),
                outputs: vec![self.ade20k.join("objectInfo150.txt")],
                work: Work::Items((train + val) as u64, "images"),
            });
            let mut args = Vec::new();
            push(&mut args, "--out", &self.vit);
            push(&mut args, "--geometry", "vit-b14-reg");
            stages.push(Stage {
                name: "vit",
                about: "a random-weight DINOv2 ViT-B/14 with 4 registers (no download)".into(),
                run: Step::Program("random_vit", args),
                outputs: vec![Path::new(&self.vit).join("config.json")],
                work: Work::Items(1, "models"),
            });
        } else {
            stages.push(Stage {
                name: "data",
                about: "download and check ADE20K, DINOv2 and the SAE (data-manifests/)".into(),
                run: Step::Fetch(self.fetch.clone()),
                outputs: vec![self.ade20k.join("objectInfo150.txt")],
                work: Work::Items(0, "files"),
            });
        }

        // One ViT pass per split feeds every later stage: the probe reads
        // final_norm, the SAE, statistics and quantify read the SAE's layer.
        for (split, taps, labels) in [
            ("training", "final_norm:f16", "patch"),
            ("validation", "final_norm:f32", "pixel"),
        ] {
            let mut args = Vec::new();
            common(&mut args);
            push(&mut args, "--ade20k", self.ade20k.as_os_str());
            push(&mut args, "--split", split);
            push(
                &mut args,
                "--taps",
                format!("layer{}:f32:all,{taps}", self.layer),
            );
            push(&mut args, "--labels", labels);
            push(&mut args, "--out", self.cache(split).as_os_str());
            let (train, val) = self.images();
            let images = if split == "training" { train } else { val };
            stages.push(Stage {
                name: if split == "training" {
                    "cache-training"
                } else {
                    "cache-validation"
                },
                about: format!(
                    "ViT activations of ADE20K {split}: layer {} (f32) and the final norm",
                    self.layer
                ),
                run: Step::Program("cache", args),
                outputs: vec![self.cache(split).join("manifest.json")],
                work: Work::Items(images as u64, "images"),
            });
        }

        let mut args = Vec::new();
        common(&mut args);
        push(&mut args, "--ade20k", self.ade20k.as_os_str());
        push(&mut args, "--cache", self.cache("training").as_os_str());
        push(&mut args, "--ckpt-path", self.path("probes").as_os_str());
        push(&mut args, "--log-to", self.path("logs").as_os_str());
        if self.demo {
            let s = self.sizes();
            push(&mut args, "--learning-rate", "3e-3,1e-2,3e-2");
            push(&mut args, "--weight-decay", "1e-3");
            push(&mut args, "--n-epochs", s.probe_epochs.to_string());
            push(&mut args, "--eval-every", (s.probe_epochs / 2).to_string());
            push(&mut args, "--batch-size", "16");
        } else if let Some((_, epochs)) = self.scale
            && epochs != 400
        {
            push(&mut args, "--n-epochs", epochs.to_string());
            push(&mut args, "--eval-every", epochs.to_string());
        }
        let epochs = self.probe_epochs();
        stages.push(Stage {
            name: "train-probe",
            about: if self.demo {
                "linear probes: 3 learning rates x 1 weight decay".into()
            } else {
                format!("linear probes: the preprint's 6 x 3 sweep, {epochs} epochs")
            },
            run: Step::Program("train_probe", args),
            outputs: vec![self.path("probes")],
            // Patch-epochs: every probe sees every patch once an epoch.
            work: Work::Items(
                (self.images().0 * patches_per_image(&self.vit) * epochs) as u64,
                "patch-epochs",
            ),
        });

        let mut args = Vec::new();
        common(&mut args);
        push(&mut args, "--ade20k", self.ade20k.as_os_str());
        push(&mut args, "--cache", self.cache("validation").as_os_str());
        push(&mut args, "--ckpt-root", self.path("probes").as_os_str());
        push(&mut args, "--dump-to", self.path("validate").as_os_str());
        stages.push(Stage {
            name: "validate",
            about: "probe mIoU and accuracy on ADE20K validation; the best probe".into(),
            run: Step::Program("validate", args),
            outputs: ["results.csv", "hparam-sweeps.png", "best.json"]
                .iter()
                .map(|f| self.path("validate").join(f))
                .collect(),
            work: Work::Items(self.images().1 as u64, "images"),
        });

        if self.scale.is_some() {
            stages.push(self.train_sae_stage(SaeRecipe {
                d_sae: SCALE_D_SAE,
                // saev's defaults (train_sae's).
                lr: None,
                l1: None,
                batch: 4096,
                tokens: SCALE_SAE_TOKENS,
                warmup: 1,
                dead_tokens: SCALE_SAE_TOKENS,
                log_every: 1,
                checkpoint_every: 2,
                about: format!(
                    "a ReLU SAE (768 -> {SCALE_D_SAE} latents) on layer {} patch activations, \
                     briefly ({SCALE_SAE_TOKENS} tokens)",
                    self.layer
                ),
            }));
        }
        if self.demo {
            stages.push(self.train_sae_stage(SaeRecipe {
                d_sae: 512,
                lr: Some("3e-3"),
                // Strong enough for an L0 of about 25 on these activations.
                l1: Some("3e-2"),
                batch: 2048,
                tokens: self.sizes().sae_tokens,
                warmup: 50,
                dead_tokens: 200_000,
                log_every: 20,
                checkpoint_every: 100,
                about: format!(
                    "a ReLU SAE (128 -> 512 latents) on layer {} patch activations, saev's recipe",
                    self.layer
                ),
            }));
        }
        stages
    }

    /// `train_sae` on the training cache's patch tokens.
    fn train_sae_stage(&self, r: SaeRecipe) -> Stage {
        let mut args = Vec::new();
        push(&mut args, "--device", &self.device);
        push(&mut args, "--data", self.cache("training").as_os_str());
        push(&mut args, "--tensor", format!("layer{}", self.layer));
        // Patch tokens only (the cache's manifest says which they are).
        push(&mut args, "--tokens", "patches");
        push(&mut args, "--d-sae", r.d_sae.to_string());
        if let Some(lr) = r.lr {
            push(&mut args, "--lr", lr);
        }
        if let Some(l1) = r.l1 {
            push(&mut args, "--l1", l1);
        }
        push(&mut args, "--batch", r.batch.to_string());
        push(&mut args, "--tokens-total", r.tokens.to_string());
        push(&mut args, "--warmup", r.warmup.to_string());
        push(&mut args, "--init-samples", "20000");
        push(&mut args, "--dead-tokens", r.dead_tokens.to_string());
        push(&mut args, "--log-every", r.log_every.to_string());
        push(
            &mut args,
            "--checkpoint-every",
            r.checkpoint_every.to_string(),
        );
        push(&mut args, "--vit", &self.vit);
        push(&mut args, "--layer", self.layer.to_string());
        push(&mut args, "--out", self.path("sae").as_os_str());
        Stage {
            name: "train-sae",
            about: r.about,
            run: Step::Program("train_sae", args),
            outputs: vec![self.path("sae")],
            work: Work::Items(r.tokens, "tokens"),
        }
    }

    /// Statistics, quantify and figures for the SAE file `sae`.
    fn last_stages(&self, sae: &str, probe: &Path) -> Vec<Stage> {
        let mut stages = Vec::new();
        let stats = self.path("stats/feature-stats.safetensors");
        let norm = self.path("stats/normalization.safetensors");
        let mut args = Vec::new();
        push(&mut args, "--sae", sae);
        push(&mut args, "--vit", &self.vit);
        push(&mut args, "--layer", self.layer.to_string());
        push(&mut args, "--device", &self.device);
        let reference = match &self.imagenet {
            Some(dir) => {
                push(&mut args, "--images", dir.as_os_str());
                push(&mut args, "--max-images", self.imagenet_images.to_string());
                push(&mut args, "--cache-dir", self.caches().as_os_str());
                format!("{} ImageNet-1K images", self.imagenet_images)
            }
            None => {
                push(&mut args, "--ade20k", self.ade20k.as_os_str());
                push(&mut args, "--split", "training");
                push(&mut args, "--cache-dir", self.caches().as_os_str());
                "ADE20K training images (standing in for ImageNet-1K)".into()
            }
        };
        push(&mut args, "--save-norm", norm.as_os_str());
        push(&mut args, "--out", stats.as_os_str());
        stages.push(Stage {
            name: "stats",
            about: format!("feature statistics (max_obs, frequency, top images) over {reference}"),
            run: Step::Program("stats", args),
            outputs: vec![stats.clone(), norm.clone()],
            work: Work::Items(
                match &self.imagenet {
                    Some(_) => self.imagenet_images as u64,
                    None => self.images().0 as u64,
                },
                "images",
            ),
        });

        let quantify = self.path("quantify");
        let mut args = Vec::new();
        push(&mut args, "--sae-ckpt", sae);
        push(&mut args, "--seg-ckpt", probe.as_os_str());
        push(&mut args, "--ade20k", self.ade20k.as_os_str());
        push(&mut args, "--vit", &self.vit);
        push(&mut args, "--layer", self.layer.to_string());
        push(&mut args, "--stats", stats.as_os_str());
        push(&mut args, "--sae-norm", norm.as_os_str());
        push(&mut args, "--cache-dir", self.caches().as_os_str());
        push(&mut args, "--device", &self.device);
        push(&mut args, "--out", quantify.as_os_str());
        if self.demo {
            // The manual table names latents of the published SAE.
            push(&mut args, "--methods", "random-vector,random-latent,auto");
            push(&mut args, "--classes", DEMO_CLASSES);
            // Ten classes share every patch, so a class's own latent fires on
            // about a tenth of them: the preprint's 1e-2 cut would drop it.
            push(&mut args, "--max-frequency", "0.5");
        } else if self.scale.is_some() {
            push(&mut args, "--manual", self.manual_table().as_os_str());
            // A briefly trained SAE is dense (most latents fire on most
            // patches): with the preprint's 1e-2 cut no latent would be
            // left to select. The cost of the passes does not depend on it.
            push(&mut args, "--max-frequency", "1");
        } else {
            push(
                &mut args,
                "--manual",
                crate::root()
                    .join("data-manifests/manual-features.toml")
                    .as_os_str(),
            );
        }
        stages.push(Stage {
            name: "quantify",
            about: "pseudo-orthogonality: target and other change rates per class and method"
                .into(),
            run: Step::Program("quantify", args),
            outputs: ["results.csv", "per_class.csv", "changes.csv", "summary.md"]
                .iter()
                .map(|f| quantify.join(f))
                .collect(),
            work: Work::QuantifyPasses {
                log: quantify.join("passes.jsonl"),
                images: self.images().1 as u64,
            },
        });

        let figures = self.path("figures");
        let mut args = Vec::new();
        push(&mut args, "--vit", &self.vit);
        push(&mut args, "--sae", sae);
        push(&mut args, "--probe", probe.as_os_str());
        push(&mut args, "--ade20k", self.ade20k.as_os_str());
        push(&mut args, "--stats", stats.as_os_str());
        push(&mut args, "--sae-norm", norm.as_os_str());
        push(&mut args, "--layer", self.layer.to_string());
        push(&mut args, "--device", &self.device);
        push(&mut args, "--out", figures.as_os_str());
        if self.demo || self.scale.is_some() {
            // No guided examples exist for a fresh SAE: show the features
            // the automatic method picked, on the image where their class
            // is largest.
            push(
                &mut args,
                "--from-selection",
                quantify.join("selection.csv").as_os_str(),
            );
            push(&mut args, "--slider", "-2");
        }
        stages.push(Stage {
            work: Work::Lines(figures.join("index.txt"), "figures"),
            name: "figures",
            about: if self.demo || self.scale.is_some() {
                "steering figures for the best automatically selected features".into()
            } else {
                "steering figures for the preprint's four guided examples".into()
            },
            run: Step::Program("figures", args),
            outputs: vec![figures.join("index.txt")],
        });
        stages
    }
}

/// A manual table for an SAE nobody has looked at: one latent per class,
/// spread over the dictionary, so quantify's manual method costs what it
/// does with the published table (which names 20 classes; this names 150).
fn write_manual_table(path: &Path, d_sae: usize, layer: usize) -> Result<()> {
    let mut toml = format!(
        "# Generated by `cargo xtask reproduce --scale`: one latent per class of a\n\
         # random SAE, for measuring quantify's cost with all four methods.\n\
         layer = {layer}\nd_sae = {d_sae}\n"
    );
    for class in 1..=150usize {
        // A fixed odd multiplier visits distinct latents for distinct classes.
        let latent = (class * 7919) % d_sae;
        toml += &format!("\n[[feature]]\nclass = {class}\nlatent = {latent}\n");
    }
    // Rewritten only when it changes: quantify reruns when its inputs do.
    if std::fs::read_to_string(path).is_ok_and(|t| t == toml) {
        return Ok(());
    }
    write_atomic(path, toml.as_bytes())
}

/// How the demo and the scale runs train their SAE.
struct SaeRecipe {
    d_sae: usize,
    lr: Option<&'static str>,
    l1: Option<&'static str>,
    batch: usize,
    tokens: u64,
    warmup: u64,
    dead_tokens: u64,
    log_every: u64,
    checkpoint_every: u64,
    about: String,
}

/// Patches of a 224-px crop (the crop of every supported family's
/// processor) for the ViT's patch size: the `patch_size` of a local
/// folder's config.json (a multimodal config's `vision_config`), else
/// DINOv2's 14 (16 x 16 patches). Only the stages' progress totals use it;
/// the programs take the geometry from the model itself.
fn patches_per_image(vit: &str) -> usize {
    let patch = std::fs::read_to_string(Path::new(vit).join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|c| {
            let c = c.get("vision_config").cloned().unwrap_or(c);
            c.get("patch_size")?.as_u64()
        })
        .filter(|&p| (1..=224).contains(&p))
        .unwrap_or(14) as usize;
    (224 / patch).pow(2)
}

struct DemoSizes {
    train: usize,
    val: usize,
    probe_epochs: usize,
    sae_tokens: u64,
}

fn push(args: &mut Vec<OsString>, flag: &str, value: impl Into<OsString>) {
    args.push(flag.into());
    args.push(value.into());
}

fn absolute(p: impl AsRef<Path>) -> Result<PathBuf> {
    std::path::absolute(p.as_ref())
        .with_context(|| format!("cannot resolve {}", p.as_ref().display()))
}

/// Runs stages, skipping those already done, and keeps their costs.
struct Runner<'a> {
    args: &'a Args,
    plan: &'a Plan,
    programs: crate::Programs,
    built: bool,
    log: Vec<Ran>,
}

/// A stage as the report shows it.
struct Ran {
    name: String,
    about: String,
    seconds: f64,
    /// From an earlier invocation's record.
    skipped: bool,
    usage: Option<Usage>,
    items: u64,
    unit: String,
}

impl Runner<'_> {
    fn record_path(&self, stage: &Stage) -> PathBuf {
        self.plan
            .path("stages")
            .join(format!("{}.json", stage.name))
    }

    fn run(&mut self, stage: &Stage) -> Result<()> {
        let signature = stage.run.signature();
        let inputs = input_stamps(stage);
        let record_path = self.record_path(stage);
        let record: Option<StageRecord> = std::fs::read_to_string(&record_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if let Some(r) = &record
            && r.command == signature
            && r.inputs.as_ref().is_none_or(|i| *i == inputs)
            && stage.outputs.iter().all(|p| p.exists())
        {
            eprintln!(
                "reproduce: {} is up to date ({:.0} s when it ran)",
                stage.name, r.seconds
            );
            self.log.push(Ran {
                name: stage.name.into(),
                about: stage.about.clone(),
                seconds: r.seconds,
                skipped: true,
                usage: r.usage.clone(),
                items: r.items,
                unit: r.unit.clone(),
            });
            return Ok(());
        }
        // A stale record must not survive a failed rerun.
        if record.is_some() {
            std::fs::remove_file(&record_path)
                .with_context(|| format!("cannot remove {}", record_path.display()))?;
        }
        eprintln!("reproduce: {}: {}", stage.name, stage.about);
        // Building the programs (first stage only) is not the stage's time.
        let program = match &stage.run {
            Step::Program(name, args) => {
                let mut cmd = self.program(name)?;
                cmd.args(args);
                Some(cmd)
            }
            Step::Fetch(_) => None,
        };
        let started = Instant::now();
        let mut usage = None;
        if let Some(cmd) = program {
            let gpu = self.plan.device.starts_with("cuda");
            usage = Some(
                scale::run_measured(cmd, &self.plan.out, gpu)
                    .with_context(|| format!("stage {} failed", stage.name))?,
            );
        } else if let Step::Fetch(args) = &stage.run {
            #[derive(clap::Parser)]
            struct Fetch {
                #[command(flatten)]
                args: fetch::Args,
            }
            let parsed = <Fetch as clap::Parser>::try_parse_from(
                std::iter::once(OsString::from("fetch")).chain(args.iter().cloned()),
            )?;
            fetch::run(parsed.args).with_context(|| format!("stage {} failed", stage.name))?;
        }
        let seconds = started.elapsed().as_secs_f64();
        if let Some(missing) = stage.outputs.iter().find(|p| !p.exists()) {
            bail!(
                "stage {} finished but {} is missing",
                stage.name,
                missing.display()
            );
        }
        let (items, unit) = stage.work.count();
        let record = StageRecord {
            command: signature,
            inputs: Some(inputs),
            seconds,
            usage: usage.clone(),
            items,
            unit: unit.into(),
        };
        write_atomic(
            &record_path,
            serde_json::to_string_pretty(&record)?.as_bytes(),
        )?;
        self.log.push(Ran {
            name: stage.name.into(),
            about: stage.about.clone(),
            seconds,
            skipped: false,
            usage,
            items,
            unit: unit.into(),
        });
        Ok(())
    }

    /// The command that runs program `name` (`sae-steer <name>`): the
    /// running or a prebuilt `sae-steer`, or the release build (made once,
    /// on first need).
    fn program(&mut self, name: &str) -> Result<Command> {
        let exe = format!("{}{}", crate::PROGRAM, std::env::consts::EXE_SUFFIX);
        let path = match (&self.args.bin_dir, &self.programs) {
            (Some(dir), _) => dir.join(&exe),
            (None, crate::Programs::Binary(path)) => path.clone(),
            (None, crate::Programs::Build) => {
                if !self.built {
                    let mut build = crate::cargo();
                    build.args(["build", "--release", "-p", "sae-steer-cli"]);
                    if let Some(f) = self.args.features.as_deref() {
                        build.args(["--features", f]);
                    }
                    crate::status(build)?;
                    self.built = true;
                }
                crate::target_dir().join("release").join(&exe)
            }
        };
        if !path.is_file() {
            bail!(
                "{} is missing: build it first (cargo build --release -p sae-steer-cli)",
                path.display()
            );
        }
        // The binary itself, not `cargo run`: its process is the one
        // measured (memory is sampled from /proc), and no stage pays for
        // cargo's freshness check.
        let mut cmd = Command::new(path);
        cmd.current_dir(crate::root()).arg(name.replace('_', "-"));
        Ok(cmd)
    }
}

/// Runs the chain of stages, each a `sae-steer` subcommand taken from
/// `programs`.
pub fn run(args: Args, programs: crate::Programs) -> Result<()> {
    let root = crate::root();
    let plan = Plan::new(&args, &root)?;
    if !plan.demo
        && plan.scale.is_none()
        && (plan.device.starts_with("cpu")
            || plan.device.starts_with("flex")
            || plan.device.starts_with("ndarray"))
    {
        let warning = cpu_estimate();
        if !args.yes {
            bail!(
                "{warning}\nPass --yes to start anyway, or --device cuda on a GPU machine (build with --features cuda)."
            );
        }
        eprintln!("reproduce: {warning}");
    }
    std::fs::create_dir_all(&plan.out)
        .with_context(|| format!("cannot create {}", plan.out.display()))?;
    let started = Instant::now();
    let mut runner = Runner {
        args: &args,
        plan: &plan,
        programs,
        built: false,
        log: Vec::new(),
    };
    for stage in plan.first_stages() {
        runner.run(&stage)?;
    }
    let sae = match &plan.sae {
        Some(s) => s.clone(),
        None => trained_sae(&plan.path("sae"))?
            .to_string_lossy()
            .into_owned(),
    };
    let best = BestProbe::read(&plan.path("validate/best.json"))?;
    if plan.scale.is_some() {
        write_manual_table(&plan.manual_table(), SCALE_D_SAE, plan.layer)?;
    }
    for stage in plan.last_stages(&sae, &best.checkpoint) {
        runner.run(&stage)?;
    }
    let mut scale_json = None;
    if let Some((fraction, _)) = plan.scale {
        let mut report = scale_report(&plan, fraction, &runner.log);
        if let Some(python) = &args.python {
            report.torch_vit_images_per_s = Some(torch_vit_rate(python, &plan)?);
        }
        write_atomic(
            &plan.path("scale.json"),
            serde_json::to_string_pretty(&report)?.as_bytes(),
        )?;
        scale_json = Some(report);
    }
    let report = plan.path("report.md");
    let mut text = report_markdown(
        &plan,
        &sae,
        &best,
        &runner.log,
        started.elapsed().as_secs_f64(),
    )?;
    if let Some(scale) = &scale_json {
        text += &scale_markdown(scale);
    }
    write_atomic(&report, text.as_bytes())?;
    eprintln!("reproduce: done; report in {}", report.display());
    Ok(())
}

/// The committed CPU scale runs (`cargo xtask reproduce --scale F` on the
/// two-core development machine, docs/scale/): the full run's CPU estimate
/// is their fit, extrapolated, not a constant.
const CPU_SCALE_RUNS: [&str; 3] = [
    include_str!("../../../docs/scale/cpu-0.001.json"),
    include_str!("../../../docs/scale/cpu-0.002.json"),
    include_str!("../../../docs/scale/cpu-0.004.json"),
];

/// What a CPU run of the full data costs, from the committed scale runs.
fn cpu_estimate() -> String {
    let reports: Vec<scale::ScaleReport> = CPU_SCALE_RUNS
        .iter()
        .filter_map(|t| serde_json::from_str(t).ok())
        .collect();
    let fits = scale::fit(&reports);
    let wall = |name: &str| scale::full_wall(&fits, name).unwrap_or(0.0);
    let caches = wall("cache-training") + wall("cache-validation");
    let (probe, quantify) = (wall("train-probe"), wall("quantify"));
    let rest = wall("validate") + wall("stats");
    let host = reports.first().map_or("unknown", |r| r.host.as_str());
    format!(
        "a full run on the CPU takes days: about {} to cache ADE20K activations, {} for the \
         probe sweep, {} for quantify and {} for validation and statistics ({} in all), \
         extrapolated from scale runs on a {host} machine (docs/performance.md).",
        scale::human_seconds(caches),
        scale::human_seconds(probe),
        scale::human_seconds(quantify),
        scale::human_seconds(rest),
        scale::human_seconds(caches + probe + quantify + rest),
    )
}

/// `scale.json` from the stages' records.
fn scale_report(plan: &Plan, fraction: f64, log: &[Ran]) -> scale::ScaleReport {
    let (train_images, val_images) = plan.images();
    let stages = log
        .iter()
        .map(|r| {
            let mut usage = r.usage.clone().unwrap_or_default();
            usage.wall_s = r.seconds;
            StageCost {
                name: r.name.clone(),
                usage,
                items: r.items,
                unit: r.unit.clone(),
                items_per_s: r.items as f64 / r.seconds.max(1e-9),
            }
        })
        .collect();
    scale::ScaleReport {
        fraction,
        device: plan.device.clone(),
        train_images,
        val_images,
        host: host_line(),
        stages,
        torch_vit_images_per_s: None,
    }
}

/// The scale report's extrapolation to the full job, linear from this run
/// (`cargo xtask scale-fit` fits several runs).
fn scale_markdown(report: &scale::ScaleReport) -> String {
    let fits = scale::fit(std::slice::from_ref(report));
    let mut md = String::from("\n## At full size\n\n");
    let Some(ours) = scale::ours_wall_s(&fits) else {
        return md + "Not every stage ran in this invocation; no extrapolation.\n";
    };
    md += &format!(
        "This run's cost per item, times the real job's items (20,210 + 2,000 images, \
         400 probe epochs, 150 classes x 4 methods): **{}** on this device ({}) for caching, \
         the probe sweep, validation, statistics and quantify. `scale.json` holds every \
         stage's numbers; `cargo xtask scale-fit` fits several runs' growth.\n",
        scale::human_seconds(ours),
        report.device
    );
    if let Some(rate) = report.torch_vit_images_per_s
        && let Some(reference) = scale::reference_wall_s(&fits, rate)
    {
        md += &format!(
            "\nThe Python reference on the same job and device, from its code (the ViT \
             recomputed every probe epoch and twice per quantify pass and image) and \
             PyTorch's ViT-B/14 forward measured here at {rate:.2} images/s: **{}**, \
             {:.1}x ours.\n",
            scale::human_seconds(reference),
            reference / ours
        );
    }
    md
}

/// PyTorch's ViT-B/14-reg forward rate at batch 16 on the run's device.
fn torch_vit_rate(python: &Path, plan: &Plan) -> Result<f64> {
    let json = plan.path("torch-vit.json");
    let mut cmd = Command::new(python);
    cmd.current_dir(crate::root()).args([
        "scripts/bench_vit_torch.py",
        "--batch",
        "16",
        "--iters",
        "3",
    ]);
    cmd.arg("--device").arg(if plan.device.starts_with("cuda") {
        "cuda"
    } else {
        "cpu"
    });
    cmd.arg("--json").arg(&json);
    crate::status(cmd).context("the PyTorch ViT benchmark failed")?;
    let text = std::fs::read_to_string(&json)
        .with_context(|| format!("cannot read {}", json.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)?;
    value["images_per_s"]
        .as_f64()
        .with_context(|| format!("{}: no images_per_s", json.display()))
}

/// Cores and CPU model of this machine, for reading the numbers later.
fn host_line() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}

/// The one SAE the demo's training stage wrote.
fn trained_sae(dir: &Path) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".safetensors") && !name.ends_with(".optim.safetensors") && path.is_file()
        {
            found.push(path);
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no SAE checkpoint in {}", dir.display()),
        many => bail!(
            "{} SAE checkpoints in {}; expected one",
            many.len(),
            dir.display()
        ),
    }
}

/// `best.json` of the validation stage.
#[derive(Debug, Deserialize)]
struct BestProbe {
    checkpoint: PathBuf,
    learning_rate: f64,
    weight_decay: f64,
    acc: Option<f64>,
    mean_iou: f64,
}

impl BestProbe {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a best-probe record", path.display()))
    }
}

/// `report.md`: every result table, plot and figure, with timings and
/// versions.
fn report_markdown(
    plan: &Plan,
    sae: &str,
    best: &BestProbe,
    log: &[Ran],
    wall: f64,
) -> Result<String> {
    let mut md = String::new();
    let title = if plan.demo {
        "sae-steer demo report"
    } else if plan.scale.is_some() {
        "sae-steer scale report"
    } else {
        "sae-steer reproduction report"
    };
    writeln!(md, "# {title}\n")?;
    if plan.demo {
        writeln!(
            md,
            "The offline demo: a synthetic ADE20K-layout dataset, a small random-weight \
             ViT (`{}`) and an SAE trained here on its block {}. The numbers show the \
             pipeline working, not the preprint's results.\n",
            plan.vit, plan.layer
        )?;
    }
    if let Some((fraction, epochs)) = plan.scale {
        let (train, val) = plan.images();
        writeln!(
            md,
            "A scale run: the real job's geometry on synthetic data at fraction {fraction} of \
             its image counts ({train} training + {val} validation images of ADE20K's sizes \
             and 150 classes), a random-weight ViT-B/14-reg, a {SCALE_D_SAE}-latent SAE \
             trained briefly, the 6 x 3 probe sweep for {epochs} epochs. The results measure \
             cost, not meaning; each stage's cost is under Stages and in `scale.json`.{}\n",
            if epochs == 400 {
                ""
            } else {
                " **The probe sweep ran fewer epochs than the real job's 400**, so its time is \
                 not the job's."
            }
        )?;
    }
    writeln!(md, "- ViT: `{}`, SAE layer {}", plan.vit, plan.layer)?;
    writeln!(md, "- SAE: `{sae}`")?;
    writeln!(md, "- ADE20K: `{}`", plan.ade20k.display())?;
    writeln!(md, "- device: {}", plan.device)?;
    match (&plan.imagenet, plan.demo) {
        (Some(dir), _) => writeln!(
            md,
            "- feature statistics and SAE normalization: {} images of `{}`",
            plan.imagenet_images,
            dir.display()
        )?,
        (None, _) => writeln!(
            md,
            "- feature statistics and SAE normalization: ADE20K training images \
             **stand in for ImageNet-1K** (the preprint's reference set)"
        )?,
    }
    writeln!(md)?;

    writeln!(md, "## Linear probe (ADE20K validation)\n")?;
    writeln!(
        md,
        "Best of the sweep: learning rate {}, weight decay {}: mIoU {:.1}%, pixel accuracy {}.\n",
        best.learning_rate,
        best.weight_decay,
        best.mean_iou * 100.0,
        // best.json keeps the reference's units: IoU a fraction, accuracy in percent.
        best.acc.map_or("n/a".into(), |a| format!("{a:.1}%"))
    )?;
    writeln!(md, "![hyper-parameter sweep](validate/hparam-sweeps.png)\n")?;
    writeln!(md, "Every probe: `validate/results.csv`.\n")?;

    writeln!(md, "## Quantify: pseudo-orthogonality\n")?;
    let results = plan.path("quantify/results.csv");
    writeln!(md, "{}", csv_table(&results)?)?;
    writeln!(
        md,
        "`target_change`, `target_std`, `other_change`, `other_std` are the reference's \
         columns and mean what its do: pooled fractions (not percent), std over all \
         `n_classes_all` classes with 0 for a class without patches. Ours, in percent: \
         `*_macro_pct` (macro mean and population std over the `n_classes_macro` classes with \
         at least one originally predicted patch) and `*_pooled_pct` (sum changed / sum \
         original over those classes).\n"
    )?;
    writeln!(
        md,
        "Per class: `quantify/per_class.csv`; change matrices: `quantify/changes.csv`; \
         selected features: `quantify/selection.csv`; notes: `quantify/summary.md`.\n"
    )?;

    writeln!(md, "## Steering figures\n")?;
    let figures = plan.path("figures");
    let index = std::fs::read_to_string(figures.join("index.txt")).unwrap_or_default();
    for line in index.lines().filter(|l| !l.trim().is_empty()) {
        writeln!(md, "![{line}](figures/{line})\n")?;
    }

    writeln!(md, "## Stages\n")?;
    writeln!(
        md,
        "| stage | what | wall s | CPU s | peak RSS MiB | peak heap MiB | peak GPU MiB | MB written | work | per s | |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for r in log {
        let note = if r.skipped { "from an earlier run" } else { "" };
        let (cpu, rss, anon, gpu, mb) = match &r.usage {
            Some(u) => (
                format!("{:.1}", u.cpu_s),
                format!("{:.0}", u.peak_rss_mib),
                u.peak_anon_mib.map_or("-".into(), |a| format!("{a:.0}")),
                u.peak_gpu_mib.map_or("-".into(), |g| format!("{g:.0}")),
                format!("{:.1}", u.bytes_written as f64 / 1e6),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        writeln!(
            md,
            "| {} | {} | {:.1} | {cpu} | {rss} | {anon} | {gpu} | {mb} | {} {} | {:.1} | {note} |",
            r.name,
            r.about,
            r.seconds,
            r.items,
            r.unit,
            r.items as f64 / r.seconds.max(1e-9)
        )?;
    }
    writeln!(md, "\nThis invocation: {wall:.1} s.\n")?;

    writeln!(md, "## Versions\n")?;
    writeln!(md, "- sae-steer {}", env!("CARGO_PKG_VERSION"))?;
    writeln!(md, "- burn 0.21.0")?;
    for (what, cmd, args) in [
        ("commit", "git", &["rev-parse", "--short", "HEAD"][..]),
        ("rustc", "rustc", &["--version"][..]),
    ] {
        let text = Command::new(cmd)
            .args(args)
            .current_dir(crate::root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        writeln!(md, "- {what}: {text}")?;
    }
    Ok(md)
}

/// A small CSV file as a markdown table.
fn csv_table(path: &Path) -> Result<String> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let header = reader
        .headers()
        .with_context(|| format!("{}: no header", path.display()))?
        .clone();
    // Percentages (`*_pct` columns) to two decimals, other numbers with a
    // fraction (the reference's fractions) to four; counts and names as written.
    let cell = |(c, name): (&str, &str)| match c.parse::<f64>() {
        Ok(v) if name.ends_with("_pct") => format!("{v:.2}"),
        Ok(v) if c.contains('.') || c.contains('e') => format!("{v:.4}"),
        _ => c.to_string(),
    };
    let row = |r: &csv::StringRecord, names: &csv::StringRecord| {
        format!(
            "| {} |\n",
            r.iter()
                .zip(names.iter().chain(std::iter::repeat("")))
                .map(cell)
                .collect::<Vec<_>>()
                .join(" | ")
        )
    };
    let plain = csv::StringRecord::new();
    let mut md = row(&header, &plain) + &format!("|{}\n", "---|".repeat(header.len()));
    for record in reader.records() {
        md += &row(
            &record.with_context(|| format!("{}: bad row", path.display()))?,
            &header,
        );
    }
    Ok(md)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    sae_steer_files::write_atomic(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_cpu_runs_give_a_full_run_estimate() {
        let reports: Vec<scale::ScaleReport> = CPU_SCALE_RUNS
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        let fits = scale::fit(&reports);
        for stage in ["cache-training", "train-probe", "quantify", "stats"] {
            let fit = fits.iter().find(|f| f.name == stage).unwrap();
            let b = fit.time_growth.unwrap();
            // The work grows by 4x across the runs; every stage's time must
            // follow it about linearly (a defect otherwise).
            assert!((0.5..1.3).contains(&b), "{stage}: time ~ items^{b}");
        }
        let estimate = cpu_estimate();
        assert!(estimate.contains("days"), "{estimate}");
    }
}

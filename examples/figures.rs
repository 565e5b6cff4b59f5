//! Static steering figures: for each `--edit IMAGE:LATENT:SLIDER`, a PNG with
//! the image, its true labels, the probe's prediction, and the prediction
//! after setting the latent to `SLIDER * max_obs` on every patch at the SAE's
//! layer, with a legend of the classes shown.
//!
//! ```text
//! cargo run --release --example figures -- \
//!   --vit <hub id | folder | .pth> --sae <file | hub id> --probe <checkpoint> \
//!   --ade20k DIR [--stats FILE|DIR] [--sae-norm FILE] \
//!   [--edit 1872:7235:-6 ...] --out DIR
//! ```
//!
//! Without `--edit`, the preprint's four examples (car, painting, toilet,
//! bed). Writes `DIR/steer-{image}-{latent}-{slider}.png`; an edit whose
//! image or latent the data at hand lacks is reported and skipped.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;
use sae_steer::backend::{BackendTask, DeviceChoice, run_on};
use sae_steer::burn::prelude::Backend;
use sae_steer_ade20k::Split;
use sae_steer_app::figures::{Panel, render_panel, save_png};
use sae_steer_app::setup::{DEFAULT_NORM_IMAGES, LoadOptions, load, parse_edit};
use sae_steer_app::{GUIDED_EXAMPLES, ImageKey, Session, SliderEdit, UnitSource};

#[derive(Parser, Debug)]
#[command(about = "Draw steering figures: image | true labels | prediction | after the edit")]
struct Args {
    /// The ViT: a hub id, a Hugging Face folder or a torch-hub .pth.
    #[arg(long, default_value = sae_steer::vit::load::DEFAULT_VIT)]
    vit: String,
    /// The SAE: a file or a hub id `owner/name[:file]`.
    #[arg(long, default_value = sae_steer::sae::PUBLISHED_DINOV2_SAE)]
    sae: String,
    /// Linear probe checkpoint folder or file.
    #[arg(long)]
    probe: PathBuf,
    /// ADE20K root (ADEChallengeData2016).
    #[arg(long = "ade20k", visible_alias = "imgs.root")]
    ade20k: PathBuf,
    /// The split the image indices refer to.
    #[arg(long, default_value = "validation")]
    split: Split,
    /// Feature statistics (max_obs is the slider's unit): our file or a saev
    /// `visuals` folder. Without it the unit is the latent's largest value
    /// on the image (said in the caption).
    #[arg(long)]
    stats: Option<PathBuf>,
    /// SAE input normalization (safetensors with `mean` [d] and `scalar`).
    #[arg(long)]
    sae_norm: Option<PathBuf>,
    /// Without a stored or given normalization, estimate it on this many
    /// ADE20K training images (0: run without).
    #[arg(long, default_value_t = DEFAULT_NORM_IMAGES)]
    norm_images: usize,
    /// 0-based block the SAE reads [default: the checkpoint's, else 10].
    #[arg(long)]
    layer: Option<usize>,
    /// IMAGE:LATENT:SLIDER, repeatable [default: the preprint's four examples].
    #[arg(long = "edit", value_parser = parse_edit, allow_hyphen_values = true)]
    edits: Vec<(usize, usize, f32)>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// cpu, flex, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

struct Figures(Args);

impl BackendTask for Figures {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let args = self.0;
        let edits = if args.edits.is_empty() {
            GUIDED_EXAMPLES
                .iter()
                .map(|g| (g.index, g.latent, g.slider))
                .collect()
        } else {
            args.edits.clone()
        };
        let loaded = load::<B>(
            &LoadOptions {
                vit: args.vit.clone(),
                sae: args.sae.clone(),
                probe: args.probe.clone(),
                ade20k: args.ade20k.clone(),
                split: args.split,
                stats: args.stats.clone(),
                sae_norm: args.sae_norm.clone(),
                norm_images: args.norm_images,
                layer: args.layer,
            },
            &device,
        )?;
        for note in &loaded.notes {
            eprintln!("note: {note}");
        }
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        let store = Arc::new(loaded.store);
        let mut session = Session::new(loaded.steering, store.clone(), 2);
        let (n_images, d_sae, layer) = (
            store.len(),
            session.steering().d_sae(),
            session.steering().layer(),
        );
        let mut written = 0;
        for (image, latent, slider) in edits {
            if image >= n_images {
                eprintln!(
                    "skipped {image}:{latent}:{slider}: the {} has {n_images} images",
                    loaded.dataset
                );
                continue;
            }
            if latent >= d_sae {
                eprintln!("skipped {image}:{latent}:{slider}: the SAE has {d_sae} latents");
                continue;
            }
            let key = ImageKey::Example(image);
            let shown = store.get(key)?;
            let (steered, grid) = session.steer(key, &[SliderEdit { latent, slider }])?;
            let applied = steered.edits[0];
            let unit = match applied.unit_source {
                UnitSource::Stats => "max_obs".to_string(),
                UnitSource::Image => format!("{:.3} (its max on this image)", applied.unit),
                UnitSource::Default => "1".to_string(),
            };
            let n = steered.labels.len();
            let panel = Panel {
                image: &shown.rgb,
                truth: shown.labels.as_deref().map(|l| l.as_slice()),
                prediction: &steered.original,
                edited: &steered.labels,
                grid,
                titles: [
                    format!("#{image} {}", shown.name),
                    "true labels".into(),
                    "prediction".into(),
                    format!("latent {latent} at {slider}"),
                ],
                caption: format!(
                    "layer {layer}: latent {latent} set to {slider} x {unit} = {:.3} on every patch; {} of {n} patches changed",
                    applied.value,
                    steered.changed()
                ),
            };
            let figure = render_panel(&panel, store.classes())?;
            let path = args
                .out
                .join(format!("steer-{image}-{latent}-{slider}.png"));
            save_png(&path, &figure)?;
            println!(
                "{} ({} of {n} patches changed)",
                path.display(),
                steered.changed()
            );
            written += 1;
        }
        if written == 0 {
            bail!("no figure written: every edit was skipped");
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let device = args.device;
    sae_steer_examples::report(
        run_on(device, Figures(args))
            .map_err(anyhow::Error::from)
            .and_then(|r| r),
    )
}

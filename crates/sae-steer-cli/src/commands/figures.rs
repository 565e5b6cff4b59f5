//! The `figures` program; its usage is documented in `examples/figures.rs`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;
use sae_steer::backend::{BackendTask, DeviceChoice};
use sae_steer::burn::prelude::Backend;
use sae_steer_app::figures::{Panel, render_panel, save_png};
use sae_steer_app::setup::parse_edit;
use sae_steer_app::{GUIDED_EXAMPLES, ImageKey, ImageStore, Session, SliderEdit, UnitSource};

#[derive(Parser, Debug)]
#[command(about = "Draw steering figures: image | true labels | prediction | after the edit")]
pub struct Args {
    #[command(flatten)]
    session: crate::cli::SessionArgs,
    /// IMAGE:LATENT:SLIDER, repeatable [default: the preprint's four examples].
    #[arg(long = "edit", value_parser = parse_edit, allow_hyphen_values = true)]
    edits: Vec<(usize, usize, f32)>,
    /// quantify's `selection.csv`: draw the features the automatic method
    /// chose, best F1 first, instead of `--edit`.
    #[arg(long, conflicts_with = "edits")]
    from_selection: Option<PathBuf>,
    /// How many selected features to draw (with `--from-selection`).
    #[arg(long, default_value_t = 4)]
    max_figures: usize,
    /// Slider for the selected features (with `--from-selection`).
    #[arg(long, default_value_t = -2.0, allow_negative_numbers = true)]
    slider: f32,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// cpu (burn-flex, the default), ndarray, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

struct Figures(Args);

impl BackendTask for Figures {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let args = self.0;
        let loaded = args.session.load::<B>(&device)?;
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        let store = Arc::new(loaded.store);
        let edits = if let Some(path) = &args.from_selection {
            // Best F1 first among the classes these images show: the
            // selection split's best classes may be absent from them.
            let picks = read_selection(path)?;
            let shown: Vec<_> = largest_instances(&store, &picks)?
                .into_iter()
                .take(args.max_figures)
                .map(|(image, latent)| (image, latent, args.slider))
                .collect();
            if shown.is_empty() {
                bail!(
                    "none of the {} classes with a selected feature in {} appears in the {} images",
                    picks.len(),
                    path.display(),
                    store.len()
                );
            }
            shown
        } else if args.edits.is_empty() {
            GUIDED_EXAMPLES
                .iter()
                .map(|g| (g.index, g.latent, g.slider))
                .collect()
        } else {
            args.edits.clone()
        };
        let mut session = Session::new(loaded.steering, store.clone(), 2);
        let (n_images, d_sae, layer) = (
            store.len(),
            session.steering().d_sae(),
            session.steering().layer(),
        );
        let mut written = Vec::new();
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
            written.push(format!("steer-{image}-{latent}-{slider}.png\n"));
        }
        if written.is_empty() {
            bail!("no figure written: every edit was skipped");
        }
        let index = args.out.join("index.txt");
        sae_steer::vit::write_atomic(&index, written.concat().as_bytes())
            .with_context(|| format!("cannot write {}", index.display()))?;
        Ok(())
    }
}

/// (class, latent) of the rank-1 rows of a `selection.csv`
/// (`class,name,rank,latent,threshold,f1,...`), highest F1 first.
fn read_selection(path: &Path) -> Result<Vec<(u8, usize)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("{}: no `{name}` column", path.display()))
    };
    let (class, rank, latent, f1) = (col("class")?, col("rank")?, col("latent")?, col("f1")?);
    let mut picks = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        // The class name may be quoted and hold commas: count from the end.
        let fields: Vec<&str> = line.split(',').collect();
        let shift = fields.len().saturating_sub(header.len());
        let field = |c: usize| {
            let at = if c > 1 { c + shift } else { c };
            fields
                .get(at)
                .map(|f| f.trim())
                .with_context(|| format!("{} line {}: too few fields", path.display(), i + 2))
        };
        let number = |c: usize| -> Result<f64> {
            let f = field(c)?;
            f.parse().with_context(|| {
                format!("{} line {}: `{f}` is not a number", path.display(), i + 2)
            })
        };
        if number(rank)? != 1.0 {
            continue;
        }
        picks.push((number(class)? as u8, number(latent)? as usize, number(f1)?));
    }
    picks.sort_by(|a, b| b.2.total_cmp(&a.2));
    Ok(picks.into_iter().map(|(c, l, _)| (c, l)).collect())
}

/// For each (class, latent), the example where the class covers the most
/// pixels, as (image, latent); classes absent from every image are dropped.
fn largest_instances(store: &ImageStore, picks: &[(u8, usize)]) -> Result<Vec<(usize, usize)>> {
    let mut best = vec![(0usize, 0usize); picks.len()];
    for image in 0..store.len() {
        let shown = store.get(ImageKey::Example(image))?;
        let Some(labels) = shown.labels else { continue };
        for (slot, (class, _)) in best.iter_mut().zip(picks) {
            let pixels = labels.iter().filter(|&&l| l == *class).count();
            if pixels > slot.1 {
                *slot = (image, pixels);
            }
        }
    }
    Ok(best
        .into_iter()
        .zip(picks)
        .filter(|((_, pixels), _)| *pixels > 0)
        .map(|((image, _), (_, latent))| (image, *latent))
        .collect())
}

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    let device = args.device;
    crate::cli::run_and_report(device, Figures(args))
}

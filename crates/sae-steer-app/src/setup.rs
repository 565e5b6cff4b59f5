//! Loading what the `manipulate` and `figures` examples need from command-line
//! paths: ViT, SAE (with its input normalization), probe, feature
//! statistics, ADE20K, and which split the statistics' exemplars index.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use sae_steer::ade20k::{Ade20k, Split};
use sae_steer::data::ImageList;
use sae_steer::pipeline::estimate_normalization_on_images;
use sae_steer::sae::StatsInfo;
use sae_steer::{FeatureStats, NormalizationSource, Probe, Sae, Steerer, Vit};

use crate::error::Result;
use crate::images::{ImageStore, ReferenceSet};
use crate::steering::Steering;

/// The block the published DINOv2 SAE reads.
pub const DEFAULT_LAYER: usize = 10;

/// Images the SAE normalization is estimated on when none is given.
pub const DEFAULT_NORM_IMAGES: usize = 64;

/// Where everything comes from.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Hub id, Hugging Face folder or torch-hub `.pth`.
    pub vit: String,
    /// SAE file or hub id (`owner/name[:file]`).
    pub sae: String,
    /// Probe checkpoint folder (latest step) or file, ours or the reference's.
    pub probe: PathBuf,
    /// ADE20K root.
    pub ade20k: PathBuf,
    /// The split whose images are the examples.
    pub split: Split,
    /// Feature statistics: our file, or saev's `visuals` folder.
    pub stats: Option<PathBuf>,
    /// Normalization file (`mean` [d], `scalar`), replacing the checkpoint's.
    pub sae_norm: Option<PathBuf>,
    /// Without a normalization from the checkpoint or `sae_norm`: estimate
    /// one on this many training images (0: use none).
    pub norm_images: usize,
    /// The SAE's layer (default: what the checkpoint records, else 10).
    pub layer: Option<usize>,
}

/// What was loaded, ready for a [`crate::Session`] or the figures.
pub struct Loaded<B: Backend> {
    pub steering: Steering<B>,
    pub store: ImageStore,
    /// What the examples are, e.g. `ADE20K validation`.
    pub dataset: String,
    /// Facts a user must know (estimated normalization, missing statistics, ...).
    pub notes: Vec<String>,
}

/// Loads and checks everything (see [`LoadOptions`]); prints what it does.
pub fn load<B: Backend>(opts: &LoadOptions, device: &B::Device) -> Result<Loaded<B>> {
    let mut notes = Vec::new();
    eprintln!("loading the ViT {}", opts.vit);
    let vit = Vit::<B>::load(&opts.vit, device)?;
    eprintln!("loading the SAE {}", opts.sae);
    let sae = Sae::<B>::load(&opts.sae, device)?;
    let layer = opts.layer.or(sae.config().layer).unwrap_or(DEFAULT_LAYER);
    eprintln!("loading the probe {}", opts.probe.display());
    let probe = Probe::load(&opts.probe, device)?;
    let ade = Ade20k::open(&opts.ade20k)?;
    let examples = ade.split(opts.split)?;
    let dataset = format!("ADE20K {}", split_name(opts.split));

    let with = match (&opts.sae_norm, sae.has_normalization()) {
        (Some(path), _) => NormalizationSource::File(path.clone()),
        (None, true) => NormalizationSource::Checkpoint,
        (None, false) if opts.norm_images > 0 => {
            let (images, from) = match ade.split(Split::Training) {
                Ok(list) => (list, "training"),
                Err(_) => (examples.clone(), split_name(opts.split)),
            };
            let images = spread(images, opts.norm_images);
            eprintln!(
                "estimating the SAE normalization on {} ADE20K {from} images",
                images.len()
            );
            let norm = estimate_normalization_on_images(&vit, layer, &images, &vit.preprocess())?;
            NormalizationSource::Estimated {
                images: images.len(),
                norm,
            }
        }
        (None, false) => NormalizationSource::None,
    };
    let (sae, source) = sae.resolve(with)?;
    notes.push(match &source {
        NormalizationSource::Checkpoint => "SAE input normalization from the checkpoint.".into(),
        NormalizationSource::File(path) => {
            format!("SAE input normalization from {}.", path.display())
        }
        NormalizationSource::Estimated { images, .. } => format!(
            "The SAE file has no input normalization: mean and scalar were estimated on \
             {images} ADE20K images (pass --sae-norm to use the training run's)."
        ),
        NormalizationSource::None => "The SAE runs without input normalization (none in the \
             file, none given, none estimated): a saev SAE's latents mean little this way."
            .into(),
    });

    let stats = match &opts.stats {
        None => {
            notes.push(
                "No feature statistics (--stats): slider units are per-image maxima, frequent \
                 latents are not hidden, no exemplars."
                    .into(),
            );
            None
        }
        Some(path) => {
            eprintln!("loading feature statistics {}", path.display());
            let stats = if path.is_dir() {
                FeatureStats::load_saev(
                    path,
                    StatsInfo {
                        sae: opts.sae.clone(),
                        reference: format!("saev visuals {}", path.display()),
                        ..StatsInfo::default()
                    },
                )?
            } else {
                FeatureStats::load(path)?
            };
            Some(stats)
        }
    };
    let reference = match &stats {
        Some(stats) => reference_set(&ade, &examples, opts.split, &stats.info, &mut notes),
        None => None,
    };
    let preprocess = vit.preprocess();
    let steering = Steering::new(Steerer::new(vit, sae, probe, layer)?, stats)?;
    let store =
        ImageStore::new(examples, ade.classes().clone(), preprocess).with_reference(reference);
    Ok(Loaded {
        steering,
        store,
        dataset,
        notes,
    })
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Training => "training",
        Split::Validation => "validation",
    }
}

/// The split whose ordered image list the statistics were computed over,
/// found by its fingerprint; exemplar ids index it.
fn reference_set(
    ade: &Ade20k,
    examples: &ImageList,
    split: Split,
    info: &StatsInfo,
    notes: &mut Vec<String>,
) -> Option<ReferenceSet> {
    let described = if info.reference.is_empty() {
        "an unnamed reference set".to_string()
    } else {
        info.reference.clone()
    };
    if !info.fingerprint.is_empty() {
        if examples.fingerprint() == info.fingerprint {
            return Some(ReferenceSet {
                name: format!("ADE20K {}", split_name(split)),
                list: examples.clone(),
            });
        }
        for other in [Split::Training, Split::Validation] {
            if other == split {
                continue;
            }
            if let Ok(list) = ade.split(other)
                && list.fingerprint() == info.fingerprint
            {
                return Some(ReferenceSet {
                    name: format!("ADE20K {}", split_name(other)),
                    list,
                });
            }
        }
    }
    notes.push(format!(
        "Exemplars come from {described}, whose images this server does not have: they are \
         shown as patch heat maps only."
    ));
    None
}

/// `n` images spread evenly over the list (all when it is shorter).
fn spread(list: ImageList, n: usize) -> ImageList {
    if n >= list.len() {
        return list;
    }
    let step = list.len() as f64 / n as f64;
    let items = (0..n)
        .map(|k| list.items[(k as f64 * step) as usize].clone())
        .collect();
    ImageList {
        root: list.root,
        items,
    }
}

/// Parses `image:latent:slider` (e.g. `1872:7235:-6`).
pub fn parse_edit(text: &str) -> std::result::Result<(usize, usize, f32), String> {
    let parts: Vec<&str> = text.split(':').collect();
    let [image, latent, slider] = parts[..] else {
        return Err(format!(
            "`{text}`: expected IMAGE:LATENT:SLIDER, e.g. 1872:7235:-6"
        ));
    };
    let image = image
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: image index `{image}` is not a number"))?;
    let latent = latent
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: latent `{latent}` is not a number"))?;
    let slider: f32 = slider
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: slider `{slider}` is not a number"))?;
    if !slider.is_finite() || slider.abs() > crate::steering::SLIDER_MAX {
        return Err(format!("`{text}`: slider {slider} is outside [-10, 10]"));
    }
    Ok((image, latent, slider))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_parse_and_check_their_range() {
        assert_eq!(parse_edit("1872:7235:-6").unwrap(), (1872, 7235, -6.0));
        assert_eq!(parse_edit(" 3 : 4 : 2.5 ").unwrap(), (3, 4, 2.5));
        assert!(
            parse_edit("1872:7235")
                .unwrap_err()
                .contains("IMAGE:LATENT:SLIDER")
        );
        assert!(parse_edit("a:1:1").unwrap_err().contains("image index"));
        assert!(parse_edit("1:1:11").unwrap_err().contains("outside"));
        assert!(parse_edit("1:1:nan").unwrap_err().contains("outside"));
    }

    #[test]
    fn spread_picks_evenly() {
        let list = ImageList {
            root: PathBuf::from("/r"),
            items: (0..10)
                .map(|i| sae_steer::data::ImageItem {
                    image: PathBuf::from(format!("/r/{i}.jpg")),
                    label: None,
                })
                .collect(),
        };
        let picked = spread(list.clone(), 3);
        let names: Vec<_> = picked.items.iter().map(|i| i.image.clone()).collect();
        assert_eq!(
            names,
            ["/r/0.jpg", "/r/3.jpg", "/r/6.jpg"].map(PathBuf::from)
        );
        assert_eq!(spread(list, 20).len(), 10);
    }
}

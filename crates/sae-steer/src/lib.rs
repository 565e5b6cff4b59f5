//! sae-steer: find interpretable features inside vision transformers with
//! sparse autoencoders, and steer them.
//!
//! This facade is the public API: it re-exports what an experiment needs,
//! so downstream code writes `use sae_steer::...` and `sae_steer::Result`.
//! The member crates are reachable as modules (`vit`, `sae`, `probe`,
//! `ade20k`, `metrics`) for the rest.
//!
//! Load DINOv2 and an SAE with its normalization (saev's files carry none,
//! so the choice is explicit), then steer one latent on an image's patches
//! and segment it with a probe:
//!
//! ```no_run
//! use sae_steer::{Vit, Edit, NormalizationSource, Probe, Sae, Steerer, backend::Cpu, preprocess_path};
//! # fn main() -> sae_steer::Result<()> {
//! let device = Default::default();
//! let vit = Vit::<Cpu>::load("facebook/dinov2-with-registers-base", &device)?;
//! let (sae, _) = Sae::<Cpu>::load("osunlp/SAE_DINOv2_24K_ViT-B-14_IN1K", &device)?
//!     .resolve(NormalizationSource::File("normalization.safetensors".into()))?;
//! let probe = Probe::<Cpu>::load("checkpoints/contrib/semseg/lr_0_001__wd_0_1", &device)?;
//! let steerer = Steerer::new(vit, sae, probe, 10)?;
//! let image = preprocess_path("photo.jpg")?;
//! let labels = steerer.steer_and_segment(&image, &Edit::new().set(7235, -12.0))?; // 256 labels
//! # Ok(()) }
//! ```
//!
//! Feature statistics (max_obs, frequency, top images) over a folder of
//! images, through an activation cache the ViT fills once:
//!
//! ```no_run
//! use sae_steer::data::{cache::LabelKind, image_folder};
//! use sae_steer::pipeline::{LazyVit, ensure_cache, feature_stats, sae_layer_cache_spec};
//! use sae_steer::{NoProgress, NormalizationSource, Sae, backend::Cpu, sae::StatsInfo};
//! # fn main() -> sae_steer::Result<()> {
//! # let device = Default::default();
//! # let (sae, _) = Sae::<Cpu>::load("sae.safetensors", &device)?.resolve(NormalizationSource::Checkpoint)?;
//! let vit = "facebook/dinov2-with-registers-base";
//! let images = image_folder("photos/")?;
//! let mut spec = sae_layer_cache_spec(vit, 10);
//! spec.labels = LabelKind::None;
//! let mut vit = LazyVit::<Cpu>::new(vit, &device);
//! let (cache, _) = ensure_cache("caches/photos".as_ref(), &images, &spec, &mut vit)?;
//! let info = StatsInfo::default();
//! let stats = feature_stats(&sae, &cache, "layer10", 256, None, info, &NoProgress)?;
//! # Ok(()) }
//! ```

pub mod activations;
pub mod backend;
mod error;
pub mod pipeline;
pub mod quantify;
mod steerer;

pub use error::{Error, Result};
pub use sae_steer_files::ErrorChain;
pub use steerer::{Labels, Steerer};

pub use activations::{
    NamedTensors, SaeTap, layer_activations, layer_activations_with_sae, sae_outputs, to_host,
};

pub use burn;
pub use sae_steer_ade20k as ade20k;
pub use sae_steer_data as data;
/// How long jobs report progress: the facade's functions, and every crate's,
/// take one of these sinks (see [`Progress`]).
pub use sae_steer_files::{NoProgress, Phase, Progress, SharedProgress};
pub use sae_steer_metrics as metrics;
pub use sae_steer_probe as probe;
pub use sae_steer_probe::{Probe, ProbeError};
pub use sae_steer_sae as sae;
pub use sae_steer_sae::{
    Edit, FeatureStats, Normalization, NormalizationSource, Sae, SaeError, SaeFile, SaeWeights,
};
pub use sae_steer_vit as vit;
pub use sae_steer_vit::{
    HostTensor, PixelValues, Preprocess, SafetensorsFile, TensorSource, Tokens, TorchFile, Vit,
    VitConfig, VitError, open_image, preprocess_path,
};

/// The README's library example, compiled as a doctest so it stays true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

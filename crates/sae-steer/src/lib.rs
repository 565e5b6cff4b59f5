//! sae-steer: find interpretable features inside vision transformers with
//! sparse autoencoders, and steer them.
//!
//! This facade re-exports what an experiment needs, so downstream code writes
//! `use sae_steer::...`:
//!
//! ```no_run
//! use sae_steer::{Dinov2, backend::Cpu, preprocess_path};
//! # fn main() -> Result<(), sae_steer::VitError> {
//! let device = Default::default();
//! let vit = Dinov2::<Cpu>::load("facebook/dinov2-with-registers-base", &device)?;
//! let pixels = preprocess_path("photo.jpg")?.to_tensor::<Cpu>(&device);
//! let layer10 = vit.forward_until(pixels, 10)?; // [1, 261, 768]
//! let patches = vit.split_tokens(layer10).patches; // [1, 256, 768]
//! # Ok(()) }
//! ```

pub mod activations;
pub mod backend;
mod error;
pub mod pipeline;
pub mod quantify;
mod steerer;

pub use error::{Error, Result};
pub use steerer::{Labels, Steerer};

pub use activations::{
    NamedTensors, SaeTap, layer_activations, layer_activations_with_sae, sae_outputs, to_host,
};

pub use burn;
pub use sae_steer_ade20k as ade20k;
/// How long jobs report progress: the facade's functions, and every crate's,
/// take one of these sinks (see [`Progress`]).
pub use sae_steer_files::{NoProgress, Phase, Progress, SharedProgress};
pub use sae_steer_metrics as metrics;
pub use sae_steer_probe as probe;
pub use sae_steer_probe::{Probe, ProbeError};
pub use sae_steer_sae as sae;
pub use sae_steer_sae::{
    Edit, FeatureStats, Normalization, NormalizationSource, NormalizeWith, Sae, SaeError, SaeFile,
    SaeWeights,
};
pub use sae_steer_vit as vit;
pub use sae_steer_vit::{
    Dinov2, Dinov2Config, HostTensor, PixelValues, Preprocess, SafetensorsFile, TensorSource,
    Tokens, TorchFile, VitError, open_image, preprocess_path,
};

/// The README's library example, compiled as a doctest so it stays true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

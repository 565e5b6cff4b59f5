//! The one error type of the facade: every member crate's error converts
//! into it, so downstream code writes `sae_steer::Result` and `?`.

use std::path::PathBuf;

use sae_steer_ade20k::{Ade20kError, CacheError};
use sae_steer_metrics::MetricsError;
use sae_steer_probe::ProbeError;
use sae_steer_sae::SaeError;
use sae_steer_vit::VitError;

/// What can go wrong in sae-steer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Vit(#[from] VitError),
    #[error(transparent)]
    Sae(#[from] SaeError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Ade20k(#[from] Ade20kError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("layer {layer} does not exist: the ViT has {depth} blocks (0 to {last})", last = depth.saturating_sub(1))]
    Layer { layer: usize, depth: usize },
    #[error("the {what} reads {got}-wide activations, but the ViT's are {vit} wide")]
    Width {
        what: &'static str,
        got: usize,
        vit: usize,
    },
    #[error("latent {latent} does not exist: the SAE has {d_sae} latents (0 to {last})", last = d_sae.saturating_sub(1))]
    Latent { latent: usize, d_sae: usize },
    #[error("steering value {0} is not a finite number")]
    Value(f32),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Input(String),
}

/// `Result` with the facade's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

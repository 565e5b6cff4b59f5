//! The one error type of the facade: every member crate's error converts
//! into it, so downstream code writes `sae_steer::Result` and `?`.

use std::path::PathBuf;

use sae_steer_ade20k::Ade20kError;
use sae_steer_data::{CacheError, DataError};
use sae_steer_metrics::MetricsError;
use sae_steer_probe::ProbeError;
use sae_steer_sae::SaeError;
use sae_steer_vit::VitError;

/// What can go wrong in sae-steer.
///
/// A wrapped error (an I/O error, or one of the member crates' own errors
/// down to their I/O errors) is the [`source`](std::error::Error::source),
/// not part of the message, so a printer of the chain (anyhow's `{:#}`,
/// [`sae_steer_files::ErrorChain`]) shows each cause once:
/// `cannot read features.toml: No such file or directory (os error 2)`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Vit(#[from] VitError),
    #[error(transparent)]
    Sae(#[from] SaeError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Data(#[from] DataError),
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
    /// A file that is there but unusable (a malformed table, a progress
    /// log of other settings).
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// A file system operation failed: `action` is what was tried ("read",
    /// "write", ...), the I/O error is the `source`.
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
}

/// `Result` with the facade's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        error: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            error,
        }
    }
}

use std::path::{Path, PathBuf};

/// Everything that can go wrong while configuring, training, loading or
/// validating linear probes.
///
/// File errors name the file and what was wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A file could not be read or written; the I/O error is the `source`.
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("sweep config {path}: {message}")]
    SweepFile { path: PathBuf, message: String },
    #[error("invalid sweep: {0}")]
    Sweep(String),
    #[error("{path} is not a readable probe checkpoint: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("no probe checkpoint in {path}: {message}")]
    NoCheckpoint { path: PathBuf, message: String },
    #[error("cannot resume from {path}: {message}")]
    Resume { path: PathBuf, message: String },
    #[error("training data: {0}")]
    Data(String),
    #[error("probe shapes disagree: {0}")]
    Shape(String),
    #[error(transparent)]
    Cache(#[from] sae_steer_data::cache::CacheError),
    #[error(transparent)]
    Metrics(#[from] sae_steer_metrics::MetricsError),
    /// Tensor containers (safetensors, torch.save zips).
    #[error(transparent)]
    Tensor(#[from] sae_steer_vit::VitError),
}

pub type Result<T, E = ProbeError> = std::result::Result<T, E>;

impl ProbeError {
    pub(crate) fn io(path: impl AsRef<Path>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().to_path_buf(),
            error,
        }
    }

    pub(crate) fn checkpoint(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::Checkpoint {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}

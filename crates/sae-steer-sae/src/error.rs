use std::path::PathBuf;

use sae_steer_vit::VitError;

/// Everything that can go wrong while loading, saving or running an SAE.
///
/// File errors name the file and what was expected, so a user can fix the
/// input without reading the source.
#[derive(Debug, thiserror::Error)]
pub enum SaeError {
    /// A file could not be read or written; the I/O error is the `source`.
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// Errors of the underlying tensor containers (safetensors, torch zip).
    #[error(transparent)]
    Tensor(#[from] VitError),
    #[error("{path}: the saev header (first line) is not valid: {message}")]
    Header { path: PathBuf, message: String },
    #[error(
        "{path}: unknown saev header schema {schema} (this reader knows schemas 1 to 5 and pre-schema files)"
    )]
    UnknownSchema { path: PathBuf, schema: i64 },
    #[error("{path}: unsupported SAE activation `{name}`")]
    Activation { path: PathBuf, name: String },
    #[error("tensor `{name}` is missing from {path}")]
    MissingTensor { path: PathBuf, name: String },
    #[error("tensor `{name}` in {path} has shape {found:?}, but {context} implies {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        context: String,
    },
    #[error("{path} is not a valid sae-steer SAE file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("invalid SAE input: {0}")]
    Input(String),
    /// An SAE given as a hub id that could not be found or downloaded.
    #[error("SAE `{spec}`: {message}")]
    Hub { spec: String, message: String },
    #[error("invalid edit: {0}")]
    Edit(String),
    /// Training settings that cannot work.
    #[error("invalid training settings: {0}")]
    TrainConfig(String),
    /// Training data that could not be read or has the wrong shape.
    #[error("training data: {0}")]
    Data(String),
    /// An activation cache (training data) that cannot be read.
    #[error(transparent)]
    Cache(#[from] sae_steer_data::CacheError),
    /// A training state that cannot be resumed.
    #[error("{path}: cannot resume training: {message}")]
    Resume { path: PathBuf, message: String },
}

pub type Result<T, E = SaeError> = std::result::Result<T, E>;

impl SaeError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error,
        }
    }
}

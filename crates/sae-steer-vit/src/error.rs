use std::path::PathBuf;

/// Everything that can go wrong while loading or running a ViT.
///
/// Messages name the file or tensor involved and what was expected, so a user
/// can fix the input without reading the source.
#[derive(Debug, thiserror::Error)]
pub enum VitError {
    /// A file could not be read or written; the I/O error is the `source`.
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{path} is not a valid model config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("unsupported model in {path}: {message}")]
    Unsupported { path: PathBuf, message: String },
    #[error("{path} is not a readable {format} file: {message}")]
    Format {
        path: PathBuf,
        format: &'static str,
        message: String,
    },
    #[error("tensor `{name}` is missing from {path}")]
    MissingTensor { path: PathBuf, name: String },
    #[error("tensor `{name}` in {path} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}` in {path} has dtype {dtype}, which cannot be read as float")]
    DType {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("cannot decode image {path}: {message}")]
    Image { path: PathBuf, message: String },
    #[error("input of {height}x{width} pixels is not a multiple of the patch size {patch}")]
    InputSize {
        height: usize,
        width: usize,
        patch: usize,
    },
    #[error("expected pixel values of shape [batch, {channels}, H, W], found {found:?}")]
    InputShape { channels: usize, found: Vec<usize> },
    #[error("layer {layer} does not exist: the model has {depth} blocks (0-based indices 0..={})", depth.saturating_sub(1))]
    Layer { layer: usize, depth: usize },
    #[error("cannot fetch `{repo}` from the Hugging Face hub: {message}")]
    Hub { repo: String, message: String },
}

pub type Result<T, E = VitError> = std::result::Result<T, E>;

impl VitError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error: source,
        }
    }
}

use std::path::PathBuf;

/// Everything that can go wrong while reading ADE20K or writing the
/// synthetic dataset.
///
/// Messages name the file or folder and what was expected there, so a user can
/// fix the input without reading the source.
#[derive(Debug, thiserror::Error)]
pub enum Ade20kError {
    /// A file or folder could not be read or written; the I/O error is the
    /// `source`.
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// A folder or file the layout requires is not there.
    #[error("{path} is missing: {expected}")]
    Missing { path: PathBuf, expected: String },
    /// An image of a split has no label map beside it.
    #[error("image {image} has no annotation: expected {expected}")]
    MissingAnnotation { image: PathBuf, expected: PathBuf },
    /// A split without a single image.
    #[error("{path} holds no images ({expected})")]
    NoImages { path: PathBuf, expected: String },
    /// `objectInfo150.txt` is malformed (line 0: the file as a whole).
    #[error("{path}, line {line}: {message}")]
    ClassFile {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// Bad synthesis options, a foreign output folder, or a failed write.
    #[error("cannot write the synthetic dataset to {path}: {message}")]
    Synth { path: PathBuf, message: String },
    /// A split name other than train/training/val/validation.
    #[error("`{0}` is not a split: expected train, training, val or validation")]
    Split(String),
    /// Listing images or reading an image or its label map failed.
    #[error(transparent)]
    Data(#[from] sae_steer_data::DataError),
}

pub type Result<T, E = Ade20kError> = std::result::Result<T, E>;

impl Ade20kError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error,
        }
    }

    pub(crate) fn missing(path: impl Into<PathBuf>, expected: impl Into<String>) -> Self {
        Self::Missing {
            path: path.into(),
            expected: expected.into(),
        }
    }
}

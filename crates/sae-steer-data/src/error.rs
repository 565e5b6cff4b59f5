use std::path::PathBuf;

use sae_steer_vit::VitError;

/// Everything that can go wrong while listing an image folder or reading an
/// image with its label map. (The activation cache has its own
/// [`crate::cache::CacheError`].)
///
/// Messages name the file or folder and what was expected there, so a user can
/// fix the input without reading the source.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read; the I/O error is the `source`.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// A folder or file that should be there is not.
    #[error("{path} is missing: {expected}")]
    Missing { path: PathBuf, expected: String },
    /// A folder without a single image.
    #[error("{path} holds no images ({expected})")]
    NoImages { path: PathBuf, expected: String },
    /// The label file is not a label map we can read (not a PNG, RGB, ...).
    #[error("label map {path}: {message}")]
    LabelFormat { path: PathBuf, message: String },
    /// A label above [`crate::MAX_LABEL`]; `x`, `y` locate the first such pixel.
    #[error(
        "label map {path} holds label {value} at pixel (x {x}, y {y}); ADE20K labels are 0..=150"
    )]
    LabelValue {
        path: PathBuf,
        value: u32,
        x: u32,
        y: u32,
    },
    /// The label map's size differs from its image's.
    #[error(
        "annotation {label} is {label_width}x{label_height} pixels but its image {image} is {image_width}x{image_height}"
    )]
    SizeMismatch {
        image: PathBuf,
        label: PathBuf,
        image_width: u32,
        image_height: u32,
        label_width: u32,
        label_height: u32,
    },
    /// An image could not be opened or decoded (the message names the file).
    #[error(transparent)]
    Image(#[from] VitError),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
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

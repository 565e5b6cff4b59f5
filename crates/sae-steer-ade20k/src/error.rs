use std::path::PathBuf;

use sae_steer_vit::VitError;

/// Everything that can go wrong while reading ADE20K, an image folder or
/// label maps, or while writing the synthetic dataset.
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
    /// A split or image folder without a single image.
    #[error("{path} holds no images ({expected})")]
    NoImages { path: PathBuf, expected: String },
    /// `objectInfo150.txt` is malformed (line 0: the file as a whole).
    #[error("{path}, line {line}: {message}")]
    ClassFile {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The label file is not a label map we can read (not a PNG, RGB, ...).
    #[error("label map {path}: {message}")]
    LabelFormat { path: PathBuf, message: String },
    /// A label above 150; `x`, `y` locate the first such pixel.
    #[error(
        "label map {path} holds label {value} at pixel (x {x}, y {y}); ADE20K labels are 0..=150"
    )]
    LabelValue {
        path: PathBuf,
        value: u32,
        x: u32,
        y: u32,
    },
    /// The annotation's size differs from its image's.
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
    /// Bad synthesis options, a foreign output folder, or an image that cannot
    /// be encoded (a failed write is [`Ade20kError::Io`]).
    #[error("cannot write the synthetic dataset to {path}: {message}")]
    Synth { path: PathBuf, message: String },
    /// A split name other than train/training/val/validation.
    #[error("`{0}` is not a split: expected train, training, val or validation")]
    Split(String),
    /// Building or reading an activation cache failed.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
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

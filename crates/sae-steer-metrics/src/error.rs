use std::path::{Path, PathBuf};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A buffer or table has the wrong length for the sizes it came with.
    #[error("{what}: expected {expected} values, got {got}")]
    Length {
        /// Which argument, e.g. "logits [h*w, classes]".
        what: String,
        /// Length implied by the other arguments.
        expected: usize,
        /// Length actually passed.
        got: usize,
    },
    /// A class id at or above the number of classes.
    #[error("{what}: class {class} at position {position} is out of range (classes 0..{classes})")]
    ClassOutOfRange {
        /// Which argument held it.
        what: String,
        /// The offending value.
        class: usize,
        /// Its index in the argument.
        position: usize,
        /// The number of classes the accumulator was made for.
        classes: usize,
    },
    /// Any other argument that makes no sense (zero sizes, negative thresholds, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Two accumulators of different shapes were merged.
    #[error("cannot merge {what}: {ours} vs {theirs}")]
    Mismatch {
        /// What was merged.
        what: &'static str,
        /// This accumulator's shape, in words.
        ours: String,
        /// The other one's.
        theirs: String,
    },
    /// Reading or writing a file failed. Like every wrapped error, the cause
    /// is the `source` and not part of the message: a printer of the chain
    /// shows `{path}: {source}`.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing a CSV file failed.
    #[error("{path}: writing CSV")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: csv::Error,
    },
    /// Reading or writing a JSON file failed.
    #[error("{path}: JSON")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Drawing or encoding a plot failed.
    #[error("{path}: plotting: {message}")]
    Plot {
        /// The image file being made.
        path: PathBuf,
        /// What the plotting or PNG library said.
        message: String,
    },
}

impl MetricsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn csv(path: &Path, source: csv::Error) -> Self {
        Self::Csv {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn json(path: &Path, source: serde_json::Error) -> Self {
        Self::Json {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn plot(path: &Path, message: impl std::fmt::Display) -> Self {
        Self::Plot {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }

    pub(crate) fn check_len(what: &str, expected: usize, got: usize) -> Result<()> {
        if expected == got {
            Ok(())
        } else {
            Err(Self::Length {
                what: what.to_string(),
                expected,
                got,
            })
        }
    }
}

/// This crate's result type.
pub type Result<T, E = MetricsError> = std::result::Result<T, E>;

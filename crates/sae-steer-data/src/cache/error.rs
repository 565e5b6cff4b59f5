use std::path::{Path, PathBuf};

/// Everything that can go wrong while building or reading an activation cache.
///
/// Messages name the directory or file involved and what to do about it; a
/// wrapped error (an I/O error, an undecodable image) is the `source`, left
/// out of the message, so a printer of the chain shows it once.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// Another process holds the cache folder's lock (it is building there);
    /// the lock's error, naming the holder, is the `source`.
    #[error("cannot build the cache in {dir}")]
    Locked {
        dir: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{path} is not a valid cache manifest: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("shard {path} is damaged: {message}")]
    Shard { path: PathBuf, message: String },
    #[error(
        "{dir} holds a cache made with other settings ({}); use another output directory or delete this one",
        differences.join("; ")
    )]
    Mismatch {
        dir: PathBuf,
        differences: Vec<String>,
    },
    /// A sharded cache (built in parts, `CacheSpec::part`) whose parts do not
    /// make one cache yet.
    #[error("{dir} is not a complete sharded cache: {message}")]
    Parts { dir: PathBuf, message: String },
    #[error("invalid cache request: {0}")]
    Spec(String),
    #[error("the cache has no tap `{name}` (it holds: {})", available.join(", "))]
    UnknownTap {
        name: String,
        available: Vec<String>,
    },
    #[error("the cache in {dir} was built without {what} (labels: {kind})")]
    NoLabels {
        dir: PathBuf,
        what: &'static str,
        kind: String,
    },
    #[error("image {path} has no label map, but labels were requested")]
    MissingLabel { path: PathBuf },
    #[error("row {row} is out of range: the cache holds {len} rows")]
    Row { row: usize, len: usize },
    #[error(
        "token range {start}..{end} is out of range: tap `{tap}` holds {n_tokens} tokens per image"
    )]
    Tokens {
        tap: String,
        start: usize,
        end: usize,
        n_tokens: usize,
    },
    /// An image that cannot be loaded; why is the `source`.
    #[error(
        "image {index} ({path}) cannot be cached (a build that skips bad images records it and goes on)"
    )]
    BadImage {
        index: usize,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Vit(#[from] sae_steer_vit::VitError),
    #[error("the compute backend failed: {0}")]
    Backend(String),
    #[error("an image loader thread stopped unexpectedly")]
    Loader,
}

impl CacheError {
    pub(crate) fn io(path: impl AsRef<Path>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().to_path_buf(),
            error,
        }
    }

    pub(crate) fn shard(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::Shard {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}

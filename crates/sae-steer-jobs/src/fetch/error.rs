//! What can go wrong while fetching, each case naming the file or URL involved.

use std::path::PathBuf;

/// Errors of `cargo xtask fetch`.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A file system operation failed; the cause is the `source` (main
    /// prints the chain, `path: cause`).
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A manifest, the lock file or a marker file cannot be read or is invalid.
    #[error("{}: {message}", path.display())]
    Manifest { path: PathBuf, message: String },
    /// The server could not be reached (offline, DNS, refused, timed out).
    #[error("cannot download {url}: {message}\n{manual}")]
    Network {
        url: String,
        message: String,
        manual: String,
    },
    /// The server answered with an error status.
    #[error("cannot download {url}: HTTP {status}\n{manual}")]
    Http {
        url: String,
        status: u16,
        manual: String,
    },
    /// The server answered in a way we cannot use (bad Content-Range, missing
    /// Hugging Face headers, too many redirects).
    #[error("unexpected answer from {url}: {message}")]
    BadResponse { url: String, message: String },
    /// A URL (from a manifest, `HF_ENDPOINT` or a redirect) that the
    /// download policy does not request: a downgrade to plain http, clear
    /// text for an unpinned file, another scheme.
    #[error("refusing to request {url}: {reason}")]
    RefusedUrl { url: String, reason: String },
    /// The server sent more bytes than the file may have; what was received
    /// is deleted.
    #[error(
        "{url}: the server sent more than the {limit} bytes {limit_by} allows; \
         the download was cut off there and not kept"
    )]
    TooLong {
        url: String,
        limit: u64,
        limit_by: String,
    },
    /// `--locked` and nothing pins the file's SHA-256.
    #[error(
        "{what}: no SHA-256 pinned by its manifest or by {}, and --locked refuses first use: \
         fetch once without --locked to record it, then review and commit the lock",
        lock.display()
    )]
    Unpinned { what: String, lock: PathBuf },
    /// `--offline` (or `HF_HUB_OFFLINE`) and the item is not on disk.
    #[error("{what} is not on disk and downloads are off (--offline or HF_HUB_OFFLINE)\n{manual}")]
    Offline { what: String, manual: String },
    /// The connection broke too often; what was received is kept for the next run.
    #[error(
        "download of {url} interrupted after {have} of {total} bytes ({message}); \
         the partial file {} is kept: rerun to resume",
        part.display()
    )]
    Interrupted {
        url: String,
        part: PathBuf,
        have: u64,
        total: String,
        message: String,
    },
    /// The file's size differs from the one recorded in `expected_by`.
    #[error(
        "{what}: size {actual} bytes, but {expected_by} says {expected}; the file was not kept"
    )]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
        expected_by: String,
    },
    /// The file's SHA-256 differs from the one recorded in `expected_by`.
    #[error(
        "{what}: SHA-256 {actual}, but {expected_by} says {expected}; the file was not kept. \
         If the upstream file changed on purpose, update or delete that entry and rerun"
    )]
    HashMismatch {
        what: String,
        expected: String,
        actual: String,
        expected_by: String,
    },
    /// A zip archive cannot be read.
    #[error("{}: {message}", archive.display())]
    Zip { archive: PathBuf, message: String },
    /// A zip entry would land outside the target folder, is a link, repeats
    /// another entry's path, or unpacks to more than the archive may hold.
    #[error("{}: refusing entry {entry:?}: {reason}; nothing was kept", archive.display())]
    UnsafeZipEntry {
        archive: PathBuf,
        entry: String,
        reason: String,
    },
    /// An unpacked dataset does not have the layout its manifest describes.
    #[error("{}: {problem}", dir.display())]
    Layout { dir: PathBuf, problem: String },
}

impl FetchError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result of the fetch module.
pub type Result<T, E = FetchError> = std::result::Result<T, E>;

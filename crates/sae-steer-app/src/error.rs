use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong in the steering app: loading the models and
/// data, serving requests, and drawing figures.
///
/// Request errors carry the HTTP status they are answered with
/// ([`AppError::status`]); the message of a 4xx is what the client sees,
/// that of a 500 (which may name files of the machine) goes to the server's
/// log and the client gets a generic one. A wrapped error (an I/O error, a
/// member crate's error down to its I/O error) is the `source`, not part of
/// the message: the log prints the chain ([`sae_steer::ErrorChain`]).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Core(#[from] sae_steer::Error),
    #[error(transparent)]
    Vit(#[from] sae_steer_vit::VitError),
    #[error(transparent)]
    Sae(#[from] sae_steer_sae::SaeError),
    #[error(transparent)]
    Probe(#[from] sae_steer_probe::ProbeError),
    #[error(transparent)]
    Ade20k(#[from] sae_steer_ade20k::Ade20kError),
    #[error(transparent)]
    Data(#[from] sae_steer_data::DataError),
    /// The ViT, SAE, probe and statistics do not fit together.
    #[error("the models do not fit together: {0}")]
    Setup(String),
    /// A malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// An index, image or latent that does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// An upload over the byte or pixel limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// An upload that is not a JPEG or PNG image (415).
    #[error("{0}")]
    Unsupported(String),
    /// An upload that is truncated or damaged (422).
    #[error("{0}")]
    Corrupt(String),
    /// The model worker's queue is full (503).
    #[error("{0}")]
    Busy(String),
    /// A bug or a dead worker (500).
    #[error("{0}")]
    Internal(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

pub type Result<T, E = AppError> = std::result::Result<T, E>;

impl AppError {
    /// The HTTP status a request failing with this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::NotFound(_) => 404,
            Self::TooLarge(_) => 413,
            Self::Unsupported(_) => 415,
            Self::Corrupt(_) => 422,
            Self::Busy(_) => 503,
            // A corrupt dataset file or a failed model call is the server's
            // problem, not the client's.
            _ => 500,
        }
    }
}

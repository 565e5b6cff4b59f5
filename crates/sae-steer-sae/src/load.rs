//! Loading an SAE so that its input normalization cannot be missed.
//!
//! saev's published checkpoints carry no normalization, yet its latents are
//! only meaningful on normalized inputs (`max_obs`, thresholds and sliders
//! are all in normalized units). [`Sae::load`] therefore returns an
//! [`SaeFile`]: the caller settles the normalization with
//! [`SaeFile::resolve`] (the file's own, a normalization file, one
//! estimated on activations, or explicitly none) and gets back the
//! [`NormalizationSource`] that every report names.

use std::ffi::OsStr;
use std::fmt;
use std::path::PathBuf;

use burn::tensor::backend::Backend;

use crate::checkpoint::{Normalization, SaeWeights};
use crate::config::SaeConfig;
use crate::error::{Result, SaeError};
use crate::sae::Sae;

/// Where an SAE's input normalization came from.
#[derive(Debug, Clone, PartialEq)]
pub enum NormalizationSource {
    /// The SAE checkpoint's own.
    Checkpoint,
    /// A normalization file the user named.
    File(PathBuf),
    /// Estimated on the patch tokens of `images` images.
    Estimated { images: usize, norm: Normalization },
    /// None, by the caller's explicit choice: raw activations go in.
    None,
}

/// What reports and statistics files record: `checkpoint`, the file's path,
/// `estimated on N images (scalar S)` or `none`. Deterministic, so a resumed
/// run can check that it continues in the same units.
impl fmt::Display for NormalizationSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Checkpoint => f.write_str("checkpoint"),
            Self::Estimated { images, norm } => {
                write!(f, "estimated on {images} images (scalar {})", norm.scalar)
            }
            Self::None => f.write_str("none"),
        }
    }
}

/// How to settle an SAE's input normalization.
#[derive(Debug, Clone, PartialEq)]
pub enum NormalizeWith {
    /// The file's own; an error when it carries none.
    Checkpoint,
    /// A normalization file (`mean [d]`, `scalar`), replacing the file's own.
    File(PathBuf),
    /// One estimated elsewhere, on `images` images.
    Estimated { images: usize, norm: Normalization },
    /// No normalization at all, even if the file carries one.
    None,
}

/// An SAE just read, whose input normalization is not settled yet.
#[must_use = "an SAE file must be resolved to an Sae, choosing its normalization"]
#[derive(Debug, Clone)]
pub struct SaeFile<B: Backend> {
    sae: Sae<B>,
    spec: String,
}

impl<B: Backend> Sae<B> {
    /// Loads an SAE from a file (saev `sae.pt` or our safetensors) or a
    /// Hugging Face hub id `owner/name[:file]` (see [`crate::SaeSource`]).
    pub fn load(spec: impl AsRef<OsStr>, device: &B::Device) -> Result<SaeFile<B>> {
        let spec = spec.as_ref();
        Ok(SaeFile {
            sae: Sae::from_weights(SaeWeights::load(spec)?, device),
            spec: spec.to_string_lossy().into_owned(),
        })
    }
}

/// An SAE made in memory (trained, or built by hand), its normalization
/// still to be settled like a file's.
impl<B: Backend> From<Sae<B>> for SaeFile<B> {
    fn from(sae: Sae<B>) -> Self {
        Self {
            sae,
            spec: "(in memory)".into(),
        }
    }
}

impl<B: Backend> SaeFile<B> {
    /// What the SAE was loaded from.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    pub fn config(&self) -> &SaeConfig {
        &self.sae.config
    }

    /// Whether the file carries its own input normalization.
    pub fn has_normalization(&self) -> bool {
        self.sae.norm.is_some()
    }

    /// The SAE with its normalization settled, and where it came from.
    pub fn resolve(self, with: NormalizeWith) -> Result<(Sae<B>, NormalizationSource)> {
        let sae = self.sae;
        match with {
            NormalizeWith::Checkpoint if sae.norm.is_some() => {
                Ok((sae, NormalizationSource::Checkpoint))
            }
            NormalizeWith::Checkpoint => Err(SaeError::Input(format!(
                "the SAE {} carries no input normalization (saev's checkpoints do not): name a \
                 normalization file, estimate one on activations, or choose none explicitly",
                self.spec
            ))),
            NormalizeWith::File(path) => {
                let norm = Normalization::load(&path, sae.d_model())?;
                Ok((
                    sae.with_normalization(Some(&norm))?,
                    NormalizationSource::File(path),
                ))
            }
            NormalizeWith::Estimated { images, norm } => Ok((
                sae.with_normalization(Some(&norm))?,
                NormalizationSource::Estimated { images, norm },
            )),
            NormalizeWith::None => Ok((sae.with_normalization(None)?, NormalizationSource::None)),
        }
    }
}

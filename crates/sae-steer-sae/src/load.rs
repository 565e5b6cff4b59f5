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

/// Where an SAE's input normalization comes from: what a caller asks
/// [`SaeFile::resolve`] for, and what reports name.
#[derive(Debug, Clone, PartialEq)]
pub enum NormalizationSource {
    /// The SAE checkpoint's own; resolving to it is an error when the file
    /// carries none.
    Checkpoint,
    /// A normalization file (`mean [d]`, `scalar`), replacing the file's own.
    File(PathBuf),
    /// Estimated on the patch tokens of `images` images.
    Estimated { images: usize, norm: Normalization },
    /// None, by the caller's explicit choice (even if the file carries one):
    /// raw activations go in.
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

    /// The SAE with its normalization taken from `source`, and the source
    /// (for the caller's report).
    pub fn resolve(self, source: NormalizationSource) -> Result<(Sae<B>, NormalizationSource)> {
        let sae = self.sae;
        match source {
            NormalizationSource::Checkpoint if sae.norm.is_some() => {
                Ok((sae, NormalizationSource::Checkpoint))
            }
            NormalizationSource::Checkpoint => Err(SaeError::Input(format!(
                "the SAE {} carries no input normalization (saev's checkpoints do not): name a \
                 normalization file, estimate one on activations, or choose none explicitly",
                self.spec
            ))),
            NormalizationSource::File(path) => {
                let norm = Normalization::load(&path, sae.d_model())?;
                Ok((
                    sae.with_normalization(Some(&norm))?,
                    NormalizationSource::File(path),
                ))
            }
            NormalizationSource::Estimated { images, norm } => Ok((
                sae.with_normalization(Some(&norm))?,
                NormalizationSource::Estimated { images, norm },
            )),
            NormalizationSource::None => {
                Ok((sae.with_normalization(None)?, NormalizationSource::None))
            }
        }
    }
}

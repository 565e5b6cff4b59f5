//! Where training patches come from: whole images at a time, each image's
//! patches with their labels.

use sae_steer_data::cache::{ActivationCache, LabelKind};

use crate::error::{ProbeError, Result};

/// Training data for probes: `n_images` images of `patches_per_image`
/// patches, each a `dim`-vector with a class label.
///
/// `Sync` because the trainer reads the next batch on another thread while
/// the device works on the current one.
pub trait PatchSource: Sync {
    fn n_images(&self) -> usize;
    fn patches_per_image(&self) -> usize;
    fn dim(&self) -> usize;
    /// Fills `x` with `[rows.len() * patches_per_image, dim]` and `labels`
    /// with `[rows.len() * patches_per_image]`, images in the order of `rows`.
    fn read(&self, rows: &[usize], x: &mut Vec<f32>, labels: &mut Vec<u8>) -> Result<()>;
    /// Identifies the data (a cache's image-list fingerprint, ...), so a
    /// resumed run can refuse to continue on other data.
    fn fingerprint(&self) -> String;
}

/// Patches held in host memory (tests, benchmarks, small experiments).
#[derive(Debug, Clone)]
pub struct InMemoryPatches {
    /// `[n_images * patches, dim]`.
    pub x: Vec<f32>,
    /// `[n_images * patches]`.
    pub labels: Vec<u8>,
    pub patches_per_image: usize,
    pub dim: usize,
    /// What [`PatchSource::fingerprint`] returns.
    pub name: String,
}

impl InMemoryPatches {
    /// Checks that the buffers agree with the sizes.
    pub fn new(
        x: Vec<f32>,
        labels: Vec<u8>,
        patches_per_image: usize,
        dim: usize,
        name: impl Into<String>,
    ) -> Result<Self> {
        if patches_per_image == 0
            || dim == 0
            || !labels.len().is_multiple_of(patches_per_image)
            || x.len() != labels.len() * dim
        {
            return Err(ProbeError::Data(format!(
                "{} values and {} labels do not make whole images of {patches_per_image} \
                 patches of dimension {dim}",
                x.len(),
                labels.len()
            )));
        }
        Ok(Self {
            x,
            labels,
            patches_per_image,
            dim,
            name: name.into(),
        })
    }
}

impl PatchSource for InMemoryPatches {
    fn n_images(&self) -> usize {
        self.labels.len() / self.patches_per_image
    }

    fn patches_per_image(&self) -> usize {
        self.patches_per_image
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn read(&self, rows: &[usize], x: &mut Vec<f32>, labels: &mut Vec<u8>) -> Result<()> {
        let (p, d) = (self.patches_per_image, self.dim);
        x.clear();
        labels.clear();
        for &row in rows {
            if row >= self.n_images() {
                return Err(ProbeError::Data(format!(
                    "image {row} is out of range ({} images)",
                    self.n_images()
                )));
            }
            x.extend_from_slice(&self.x[row * p * d..(row + 1) * p * d]);
            labels.extend_from_slice(&self.labels[row * p..(row + 1) * p]);
        }
        Ok(())
    }

    fn fingerprint(&self) -> String {
        self.name.clone()
    }
}

/// The patches of one tap of an activation cache with their patch labels
/// (the probe's input is tap `final_norm`, the reference's
/// `x_norm_patchtokens`).
pub struct CachePatches<'a> {
    cache: &'a ActivationCache,
    tap: String,
    patches: usize,
    dim: usize,
}

impl<'a> CachePatches<'a> {
    /// Fails unless the tap holds exactly one token per labelled patch and
    /// the cache was built with labels.
    pub fn new(cache: &'a ActivationCache, tap: &str) -> Result<Self> {
        let spec = cache.tap(tap)?;
        let patches = cache.manifest().patches_per_image();
        if spec.n_tokens != patches {
            return Err(ProbeError::Data(format!(
                "tap `{tap}` of the cache in {} holds {} tokens per image, but probes need \
                 exactly the {patches} patch tokens (a `final_norm` or `:patches` tap)",
                cache.dir().display(),
                spec.n_tokens
            )));
        }
        if cache.manifest().labels == LabelKind::None {
            return Err(ProbeError::Data(format!(
                "the cache in {} was built without labels; probes need patch labels",
                cache.dir().display()
            )));
        }
        Ok(Self {
            cache,
            tap: tap.to_string(),
            patches,
            dim: spec.dim,
        })
    }
}

impl PatchSource for CachePatches<'_> {
    fn n_images(&self) -> usize {
        self.cache.len()
    }

    fn patches_per_image(&self) -> usize {
        self.patches
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn read(&self, rows: &[usize], x: &mut Vec<f32>, labels: &mut Vec<u8>) -> Result<()> {
        self.cache.read_images(&self.tap, rows, x)?;
        labels.clear();
        for &row in rows {
            labels.extend_from_slice(self.cache.patch_labels(row)?);
        }
        Ok(())
    }

    fn fingerprint(&self) -> String {
        let m = self.cache.manifest();
        format!(
            "{} images {} ({}), model {}, tap {}",
            m.images.count,
            m.images.fingerprint,
            self.cache.len(),
            m.model,
            self.tap
        )
    }
}

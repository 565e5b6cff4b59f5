//! The probe's input: an activation cache of one ADE20K split, built or
//! resumed on demand so the reference's commands (which run the ViT on the
//! fly) work as they are.

use std::path::Path;

use sae_steer_data::ImageList;
use sae_steer_data::cache::{ActivationCache, CacheDtype, CacheSpec, LabelKind, TapRequest};

/// The cache tap the probes read: patch tokens after the final LayerNorm.
pub const PROBE_TAP: &str = "final_norm";

/// The cache request for probe training (f16 patches, patch labels) or
/// validation (f32 patches, pixel labels).
pub fn probe_cache_spec(model_id: &str, validation: bool) -> CacheSpec {
    let (dtype, labels) = if validation {
        (CacheDtype::F32, LabelKind::Pixel)
    } else {
        (CacheDtype::F16, LabelKind::Patch)
    };
    let mut spec = CacheSpec::new(model_id, vec![TapRequest::final_norm(dtype)]);
    spec.labels = labels;
    spec
}

/// Whether `dir` already holds a complete cache that serves this request
/// (see [`ActivationCache::serves`]), so the ViT need not even be loaded.
pub fn cache_is_ready(dir: &Path, images: &ImageList, spec: &CacheSpec) -> bool {
    ActivationCache::open(dir).is_ok_and(|cache| cache.serves(images, spec))
}

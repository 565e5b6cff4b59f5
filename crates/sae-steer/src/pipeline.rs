//! Steps the experiments share: making sure an activation cache exists,
//! estimating an SAE's input normalization, and feature statistics over a
//! cache.

use std::ops::Range;
use std::path::Path;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use indicatif::{ProgressBar, ProgressStyle};
use sae_steer_ade20k::ImageList;
use sae_steer_ade20k::cache::{
    ActivationCache, CacheDtype, CacheError, CacheSpec, LabelKind, TapRequest, TapTokens,
    build_cache,
};
use sae_steer_sae::stats::{DEFAULT_TOP_K, StatsInfo};
use sae_steer_sae::train::{NormalizationPlan, TrainingData, estimate_start};
use sae_steer_sae::{FeatureStats, Normalization, Sae, SaeError};
use sae_steer_vit::Dinov2;

/// Activations sampled to estimate a normalization (saev samples a few
/// hundred thousand; the estimate is stable well before that).
pub const NORMALIZATION_SAMPLES: usize = 262_144;

/// The cache quantify and feature statistics read: the SAE layer's tokens
/// in float32 (every token, so the rest of the network can run) with patch
/// labels and purity.
pub fn sae_layer_cache_spec(model_id: &str, layer: usize) -> CacheSpec {
    let mut tap = TapRequest::layer(layer, CacheDtype::F32);
    tap.tokens = TapTokens::All;
    let mut spec = CacheSpec::new(model_id, vec![tap]);
    spec.labels = LabelKind::Patch;
    spec
}

/// Opens the cache in `dir`, building or resuming it first unless it is
/// complete. `vit` is only called when the ViT must run.
pub fn ensure_cache<B: Backend>(
    dir: &Path,
    images: &ImageList,
    spec: &CacheSpec,
    vit: impl FnOnce() -> Result<Dinov2<B>, sae_steer_vit::VitError>,
) -> Result<ActivationCache, CacheError> {
    if let Ok(cache) = ActivationCache::open(dir) {
        let m = cache.manifest();
        let same_taps = m.taps.len() == spec.taps.len()
            && m.taps.iter().zip(&spec.taps).all(|(have, want)| {
                have.name == want.name() && have.dtype == want.dtype && have.tokens == want.tokens
            });
        if cache.is_complete()
            && same_taps
            && m.labels == spec.labels
            && m.images.fingerprint == images.fingerprint()
            && m.model == spec.model_id
        {
            return Ok(cache);
        }
    }
    // Anything else goes to the builder, which resumes a partial cache and
    // refuses one made with other settings, saying what differs.
    let vit = vit().map_err(CacheError::from)?;
    build_cache(&vit, images, dir, spec)?;
    ActivationCache::open(dir)
}

/// Token positions of the patches in a tap of `n_tokens` tokens per image
/// (patches come last: `[CLS, registers.., patches..]`).
pub fn patch_range(n_tokens: usize, n_patches: usize) -> Range<usize> {
    n_tokens.saturating_sub(n_patches)..n_tokens
}

/// Estimates saev's input normalization (SPEC section 4) on the patch tokens
/// of a cache tap: `mean` over a sample, `scalar = mean ||x - mean|| / sqrt(d)`.
pub fn estimate_normalization(
    cache: &ActivationCache,
    tap: &str,
    n_patches: usize,
    samples: usize,
) -> Result<Normalization, SaeError> {
    let spec = cache
        .tap(tap)
        .map_err(|e| SaeError::Data(e.to_string()))?
        .clone();
    let tokens = patch_range(spec.n_tokens, n_patches);
    let mut data = |seed: u64, batch: usize| cache.patch_batches(tap, tokens.clone(), batch, seed);
    let data: &mut dyn TrainingData<'_> = &mut data;
    let (norm, _) = estimate_start(
        data,
        0,
        4096,
        spec.dim,
        samples,
        &NormalizationPlan::Estimate,
    )?;
    norm.ok_or_else(|| SaeError::Data("no normalization was estimated".into()))
}

/// Feature statistics (SPEC section 5) of `sae` over the patch tokens of the
/// first `max_images` images of a cache tap.
pub fn feature_stats<B: Backend>(
    sae: &Sae<B>,
    cache: &ActivationCache,
    tap: &str,
    n_patches: usize,
    max_images: Option<usize>,
    info: StatsInfo,
) -> Result<FeatureStats, SaeError> {
    let spec = cache
        .tap(tap)
        .map_err(|e| SaeError::Data(e.to_string()))?
        .clone();
    let tokens = patch_range(spec.n_tokens, n_patches);
    let rows = max_images.map_or(cache.len(), |m| m.min(cache.len()));
    let mut stats = FeatureStats::new(sae.d_sae(), DEFAULT_TOP_K, n_patches, info)?;
    let device = sae.w_enc.device();
    let bar = ProgressBar::new(rows as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "feature statistics [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut buf = Vec::new();
    let batch = 16;
    for start in (0..rows).step_by(batch) {
        let ids: Vec<usize> = (start..(start + batch).min(rows)).collect();
        cache
            .read_images(tap, &ids, &mut buf)
            .map_err(|e| SaeError::Data(e.to_string()))?;
        let b = ids.len();
        let x = Tensor::<B, 3>::from_data(
            TensorData::new(std::mem::take(&mut buf), [b, spec.n_tokens, spec.dim]),
            &device,
        )
        .slice([0..b, tokens.clone(), 0..spec.dim]);
        let images: Vec<u32> = ids.iter().map(|&r| cache.image_index(r) as u32).collect();
        stats.update(sae, x, &images)?;
        bar.inc(b as u64);
    }
    bar.finish_and_clear();
    Ok(stats)
}

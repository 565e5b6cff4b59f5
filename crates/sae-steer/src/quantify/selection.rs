//! The automatic and manual methods' choices: F1 selection of a latent per
//! class over a cache's pure patches (the scoring itself is the metrics
//! crate's [`F1Selector`]), and the user's class -> latent table.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use sae_steer_data::ActivationCache;
use sae_steer_files::{Phase, Progress};
use sae_steer_metrics::{F1Selector, FeatureChoice};
use sae_steer_sae::{FeatureStats, Sae};
use serde::{Deserialize, Serialize};

use super::OUTPUTS;
use crate::error::{Error, Result};

/// Detection thresholds of the automatic selection (reference facts section 8).
pub const THRESHOLDS: [f32; 4] = [0.0, 0.1, 0.3, 1.0];

/// Training patches count for selection only when at least this share of
/// their pixels (196 for a 14-px patch, 256 for a 16-px one) carries the
/// patch's label.
pub const MIN_PURITY: f32 = 0.9;

/// The purity count (pixels of a `patch x patch` patch carrying its label)
/// a patch needs; counts are stored as u8 (saturating at 255), which holds
/// the threshold for patches up to 16 px.
pub fn min_purity_count(patch: usize) -> Result<u8> {
    let count = (MIN_PURITY as f64 * (patch * patch) as f64).ceil();
    if patch == 0 || count > 255.0 {
        return Err(Error::Input(format!(
            "patch size {patch}: the cache stores patch purity as a pixel count of at \
             most 255, so the {MIN_PURITY} purity threshold is only defined for patches \
             of 1 to 16 pixels"
        )));
    }
    Ok(count as u8)
}

/// The automatic method's choices: the best latent per class and the top 3.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Selection {
    /// Where the F1 scores were computed (`training`, `validation`, ...).
    pub split: String,
    /// Patches scored (purity >= 0.9).
    pub patches: u64,
    /// Per class: up to three best latents, best first.
    pub top: BTreeMap<usize, Vec<FeatureChoice>>,
}

impl Selection {
    /// The best choice for a class, if any latent fired on it.
    pub fn best(&self, class: usize) -> Option<&FeatureChoice> {
        self.top.get(&class).and_then(|t| t.first())
    }
}

/// The manual method's class -> latent table, read from a TOML file shaped
/// like `data-manifests/manual-features.toml`: `[[feature]]` rows with
/// `class` and `latent` (other keys are ignored).
pub fn read_manual_table(path: &Path) -> Result<BTreeMap<usize, usize>> {
    #[derive(Deserialize)]
    struct Row {
        class: usize,
        latent: usize,
    }
    #[derive(Deserialize)]
    struct Table {
        #[serde(default)]
        feature: Vec<Row>,
    }
    let err = |message: String| Error::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let table: Table =
        toml::from_str(&text).map_err(|e| err(format!("not a feature table: {e}")))?;
    let mut out = BTreeMap::new();
    for row in table.feature {
        if !(1..OUTPUTS).contains(&row.class) {
            return Err(err(format!(
                "class {} is out of range 1..={}",
                row.class,
                OUTPUTS - 1
            )));
        }
        if out.insert(row.class, row.latent).is_some() {
            return Err(err(format!("class {} appears twice", row.class)));
        }
    }
    Ok(out)
}

/// Scores every latent against the patch labels of a cache (reference facts section 8):
/// F1 of `f_j > t` vs `label == c` over patches with purity >= 0.9, latents
/// with frequency >= `max_frequency` (1e-2 in the preprint,
/// [`sae_steer_sae::stats::FREQUENT`]) excluded. The images scored are
/// reported to `progress` as one phase, "selecting features (`split`)".
#[allow(clippy::too_many_arguments)]
pub fn select_features<B: Backend>(
    sae: &Sae<B>,
    cache: &ActivationCache,
    layer: usize,
    stats: &FeatureStats,
    max_frequency: f32,
    split: &str,
    max_images: Option<usize>,
    batch_images: usize,
    progress: &dyn Progress,
) -> Result<Selection> {
    let tap = format!("layer{layer}");
    let spec = cache.tap(&tap)?.clone();
    let device = sae.w_enc.device();
    let excluded: Vec<bool> = (0..sae.d_sae())
        .map(|j| stats.frequency(j) >= max_frequency)
        .collect();
    let mut selector = F1Selector::new(sae.d_sae(), OUTPUTS, &THRESHOLDS, Some(&excluded))?;
    let rows = max_images.map_or(cache.len(), |m| m.min(cache.len()));
    let bar = Phase::start(
        progress,
        &format!("selecting features ({split})"),
        "images",
        rows as u64,
        0,
    );
    let mut buf = Vec::new();
    let min_count = min_purity_count(cache.manifest().model_config.patch_size)?;
    for start in (0..rows).step_by(batch_images.max(1)) {
        let batch: Vec<usize> = (start..(start + batch_images).min(rows)).collect();
        cache.read_images(&tap, &batch, &mut buf)?;
        let mut keep_rows = Vec::new();
        let mut labels = Vec::new();
        for &row in &batch {
            let pl = cache.patch_labels(row)?;
            let pu = cache.patch_purity(row)?;
            let offset = spec.n_tokens.checked_sub(pl.len()).ok_or_else(|| {
                Error::Input(format!(
                    "cache tap {tap} has {} tokens per image, fewer than its {} patch labels",
                    spec.n_tokens,
                    pl.len()
                ))
            })?;
            let local = row - start;
            for (p, (&label, &purity)) in pl.iter().zip(pu).enumerate() {
                // Purity is stored as a count of the patch's pixels.
                if purity >= min_count {
                    keep_rows.push((local * spec.n_tokens + offset + p) as i64);
                    labels.push(label);
                }
            }
        }
        bar.advance(batch.len() as u64);
        if keep_rows.is_empty() {
            continue;
        }
        let x = Tensor::<B, 2>::from_data(
            TensorData::new(
                std::mem::take(&mut buf),
                [batch.len() * spec.n_tokens, spec.dim],
            ),
            &device,
        );
        let idx = Tensor::<B, 1, Int>::from_data(
            TensorData::new(keep_rows.clone(), [keep_rows.len()]),
            &device,
        );
        let f = sae.encode(sae.normalize(x.select(0, idx)));
        let f = f
            .into_data()
            .into_vec::<f32>()
            .map_err(|e| Error::Input(format!("reading SAE activations back: {e:?}")))?;
        selector.add_dense(&f, &labels)?;
    }
    drop(bar);
    let mut top = BTreeMap::new();
    for class in 1..OUTPUTS {
        let t = selector.top_k(class, 3);
        if !t.is_empty() {
            top.insert(class, t);
        }
    }
    Ok(Selection {
        split: split.to_string(),
        patches: selector.patches(),
        top,
    })
}

#[cfg(test)]
mod tests {
    use super::min_purity_count;

    #[test]
    fn the_purity_count_follows_the_patch_size() {
        // 90% of 196 pixels (14 px) and of 256 (16 px), rounded up.
        assert_eq!(min_purity_count(14).unwrap(), 177);
        assert_eq!(min_purity_count(16).unwrap(), 231);
        // 32-px patches need 922 pixels: more than a u8 count holds.
        assert!(min_purity_count(32).is_err());
        assert!(min_purity_count(0).is_err());
    }
}

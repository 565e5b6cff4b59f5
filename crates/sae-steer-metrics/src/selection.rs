//! F1 feature selection: the "automatic" method of reference facts section 8.
//!
//! For every latent `j`, threshold `t` and class `c`, the detector
//! "`f_j > t`" is scored against "patch label == `c`" over training patches
//! (the caller passes only patches with purity >= 0.9):
//! `F1 = 2 TP / (fires + positives)`, with `fires` the patches where
//! `f_j > t` and `positives` the patches labelled `c`.
//!
//! Memory: true positives as `u32` per (latent, class, threshold), e.g.
//! 4 x 24,576 x 151 x 4 bytes = 59 MB for the published SAE; fires per
//! (latent, threshold) and positives per class as `u64`. Only non-zero
//! activations are visited: thresholds are `>= 0`, so `f_j <= 0` never fires.
//!
//! ```
//! use sae_steer_metrics::F1Selector;
//! // 3 latents, labels 0..2; latent 1 fires exactly on class-1 patches.
//! let mut sel = F1Selector::new(3, 2, &F1Selector::DEFAULT_THRESHOLDS, None).unwrap();
//! let activations = [
//!     0.5, 2.0, 0.0, // label 1
//!     0.5, 0.0, 0.0, // label 0
//!     0.0, 0.2, 0.0, // label 1
//! ];
//! sel.add_dense(&activations, &[1, 0, 1]).unwrap();
//! let best = sel.best(1).unwrap();
//! assert_eq!((best.latent, best.threshold, best.f1), (1, 0.0, 1.0));
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::files::{class_name, write_csv};

/// One latent chosen for one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FeatureChoice {
    /// The class.
    pub class: usize,
    /// The SAE latent.
    pub latent: usize,
    /// The threshold `t` of the detector `f_j > t`.
    pub threshold: f32,
    /// `2 TP / (fires + positives)`.
    pub f1: f64,
    /// Patches of the class where the latent fires above the threshold.
    pub true_positives: u64,
    /// Patches where the latent fires above the threshold.
    pub fires: u64,
    /// Patches of the class.
    pub positives: u64,
}

/// F1 as an exact fraction, compared without rounding so ties are ties.
#[derive(Clone, Copy)]
struct Ratio {
    num: u64,
    den: u64,
}

impl Ratio {
    fn f1(tp: u64, fires: u64, positives: u64) -> Self {
        let den = fires + positives;
        if den == 0 {
            Self { num: 0, den: 1 }
        } else {
            Self { num: 2 * tp, den }
        }
    }

    fn gt(self, other: Self) -> bool {
        u128::from(self.num) * u128::from(other.den) > u128::from(other.num) * u128::from(self.den)
    }

    fn value(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

/// Accumulates true positives of every (threshold, latent, class) detector
/// over batches of patches; then picks the best latent per class.
#[derive(Debug, Clone)]
pub struct F1Selector {
    d_sae: usize,
    classes: usize,
    thresholds: Vec<f32>,
    excluded: Vec<bool>,
    /// `[latent][class][threshold]`: one patch's thresholds share a cache
    /// line, which matters because these updates are random accesses.
    tp: Vec<u32>,
    /// `[latent][threshold]`.
    fires: Vec<u64>,
    positives: Vec<u64>,
    patches: u64,
}

impl F1Selector {
    /// The thresholds of reference facts section 8.
    pub const DEFAULT_THRESHOLDS: [f32; 4] = [0.0, 0.1, 0.3, 1.0];

    /// A selector for `d_sae` latents and labels `0..classes`, scoring the
    /// detectors `f_j > t` for each of `thresholds` (finite, `>= 0`; sorted and
    /// deduplicated here). `excluded[j] == true` (e.g. firing frequency
    /// `>= 1e-2`) removes latent `j` from accumulation and selection; `None`
    /// excludes nothing.
    pub fn new(
        d_sae: usize,
        classes: usize,
        thresholds: &[f32],
        excluded: Option<&[bool]>,
    ) -> Result<Self> {
        if d_sae == 0 || classes == 0 || classes > 256 {
            return Err(MetricsError::Invalid(format!(
                "F1 selection over {d_sae} latents and {classes} classes: need at least one latent and 1..=256 classes"
            )));
        }
        if thresholds.is_empty() || thresholds.iter().any(|t| !t.is_finite() || *t < 0.0) {
            return Err(MetricsError::Invalid(format!(
                "F1 selection thresholds {thresholds:?}: need at least one, all finite and >= 0"
            )));
        }
        let mut sorted = thresholds.to_vec();
        sorted.sort_by(f32::total_cmp);
        sorted.dedup();
        let excluded = match excluded {
            Some(mask) => {
                MetricsError::check_len(
                    "excluded-latent mask (one per latent)",
                    d_sae,
                    mask.len(),
                )?;
                mask.to_vec()
            }
            None => vec![false; d_sae],
        };
        let n_t = sorted.len();
        Ok(Self {
            d_sae,
            classes,
            thresholds: sorted,
            excluded,
            tp: vec![0; n_t * d_sae * classes],
            fires: vec![0; n_t * d_sae],
            positives: vec![0; classes],
            patches: 0,
        })
    }

    /// Number of latents.
    pub fn d_sae(&self) -> usize {
        self.d_sae
    }

    /// Number of labels.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Thresholds in ascending order.
    pub fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }

    /// Whether latent `j` is left out.
    pub fn is_excluded(&self, latent: usize) -> bool {
        self.excluded.get(latent).copied().unwrap_or(true)
    }

    /// Patches added so far.
    pub fn patches(&self) -> u64 {
        self.patches
    }

    /// Patches labelled `class` so far.
    pub fn positives(&self, class: usize) -> u64 {
        self.positives.get(class).copied().unwrap_or(0)
    }

    fn check_labels(&self, labels: &[u8]) -> Result<()> {
        if let Some(position) = labels.iter().position(|&l| l as usize >= self.classes) {
            return Err(MetricsError::ClassOutOfRange {
                what: "patch label".into(),
                class: labels[position] as usize,
                position,
                classes: self.classes,
            });
        }
        // True positives are u32: no detector can count more than all patches.
        if self.patches + labels.len() as u64 > u64::from(u32::MAX) {
            return Err(MetricsError::Invalid(format!(
                "F1 selection over more than {} patches overflows its u32 counts",
                u32::MAX
            )));
        }
        Ok(())
    }

    #[inline]
    fn count(&mut self, label: usize, latent: usize, value: f32) {
        if self.excluded[latent] {
            return;
        }
        let n_t = self.thresholds.len();
        let fires = &mut self.fires[latent * n_t..(latent + 1) * n_t];
        let base = (latent * self.classes + label) * n_t;
        let tp = &mut self.tp[base..base + n_t];
        for ((&threshold, f), p) in self.thresholds.iter().zip(fires).zip(tp) {
            if value <= threshold || value.is_nan() {
                break;
            }
            *f += 1;
            *p += 1;
        }
    }

    /// Adds a batch of patches: dense activations `[n, d_sae]` (row-major) and
    /// their labels `[n]`. Errors (changing nothing) on a shape mismatch or a
    /// label `>= classes`.
    pub fn add_dense(&mut self, activations: &[f32], labels: &[u8]) -> Result<()> {
        MetricsError::check_len(
            "SAE activations [n, d_sae]",
            labels.len() * self.d_sae,
            activations.len(),
        )?;
        self.check_labels(labels)?;
        for (row, &label) in activations.chunks_exact(self.d_sae).zip(labels) {
            let label = label as usize;
            self.positives[label] += 1;
            for (j, &v) in row.iter().enumerate() {
                if v > 0.0 {
                    self.count(label, j, v);
                }
            }
        }
        self.patches += labels.len() as u64;
        Ok(())
    }

    /// Adds one patch given sparsely: its label and its non-zero activations
    /// (`latents[i]` has value `values[i]`; each latent at most once).
    pub fn add_sparse(&mut self, label: u8, latents: &[u32], values: &[f32]) -> Result<()> {
        MetricsError::check_len(
            "sparse activation values (one per latent index)",
            latents.len(),
            values.len(),
        )?;
        self.check_labels(&[label])?;
        if let Some(&j) = latents.iter().find(|&&j| j as usize >= self.d_sae) {
            return Err(MetricsError::Invalid(format!(
                "sparse activations name latent {j}, but the SAE has {} latents",
                self.d_sae
            )));
        }
        self.positives[label as usize] += 1;
        for (&j, &v) in latents.iter().zip(values) {
            if v > 0.0 {
                self.count(label as usize, j as usize, v);
            }
        }
        self.patches += 1;
        Ok(())
    }

    /// Adds another selector's counts (same latents, classes, thresholds and
    /// exclusions), e.g. from another thread.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if other.d_sae != self.d_sae
            || other.classes != self.classes
            || other.thresholds != self.thresholds
            || other.excluded != self.excluded
        {
            return Err(MetricsError::Mismatch {
                what: "F1 selectors",
                ours: format!(
                    "{} latents, {} classes, thresholds {:?}",
                    self.d_sae, self.classes, self.thresholds
                ),
                theirs: format!(
                    "{} latents, {} classes, thresholds {:?} (or other exclusions)",
                    other.d_sae, other.classes, other.thresholds
                ),
            });
        }
        if self.patches + other.patches > u64::from(u32::MAX) {
            return Err(MetricsError::Invalid(
                "merged F1 selectors overflow their u32 counts".into(),
            ));
        }
        for (a, b) in self.tp.iter_mut().zip(&other.tp) {
            *a += b;
        }
        for (a, b) in self.fires.iter_mut().zip(&other.fires) {
            *a += b;
        }
        for (a, b) in self.positives.iter_mut().zip(&other.positives) {
            *a += b;
        }
        self.patches += other.patches;
        Ok(())
    }

    fn choice(&self, class: usize, latent: usize, t: usize) -> (Ratio, FeatureChoice) {
        let n_t = self.thresholds.len();
        let tp = u64::from(self.tp[(latent * self.classes + class) * n_t + t]);
        let fires = self.fires[latent * n_t + t];
        let positives = self.positives[class];
        let ratio = Ratio::f1(tp, fires, positives);
        let choice = FeatureChoice {
            class,
            latent,
            threshold: self.thresholds[t],
            f1: ratio.value(),
            true_positives: tp,
            fires,
            positives,
        };
        (ratio, choice)
    }

    /// Latent `j`'s best threshold for `class` (the lowest on ties), if it
    /// has any true positive.
    fn best_threshold(&self, class: usize, latent: usize) -> Option<(Ratio, FeatureChoice)> {
        let mut best: Option<(Ratio, FeatureChoice)> = None;
        for t in 0..self.thresholds.len() {
            let (ratio, choice) = self.choice(class, latent, t);
            if choice.true_positives > 0 && best.is_none_or(|(b, _)| ratio.gt(b)) {
                best = Some((ratio, choice));
            }
        }
        best
    }

    /// The best detector for `class`: highest F1 over non-excluded latents
    /// and all thresholds; ties go to the lowest latent, then the lowest
    /// threshold. `None` for a class without training patches, or when no
    /// latent fires on any of its patches (F1 = 0).
    pub fn best(&self, class: usize) -> Option<FeatureChoice> {
        self.top_k(class, 1).into_iter().next()
    }

    /// [`best`](Self::best) for every label `0..classes` (index = class).
    pub fn best_per_class(&self) -> Vec<Option<FeatureChoice>> {
        (0..self.classes).map(|c| self.best(c)).collect()
    }

    /// The `k` best latents for `class`, each with its own best threshold,
    /// by descending F1 (ties: lower latent first); only latents with at
    /// least one true positive.
    pub fn top_k(&self, class: usize, k: usize) -> Vec<FeatureChoice> {
        if class >= self.classes || self.positives[class] == 0 || k == 0 {
            return Vec::new();
        }
        let mut ranked: Vec<(Ratio, FeatureChoice)> = (0..self.d_sae)
            .filter(|&j| !self.excluded[j])
            .filter_map(|j| self.best_threshold(class, j))
            .collect();
        // Candidates are in latent order and the sort is stable, so equal F1s
        // keep the lower latent first.
        ranked.sort_by(|a, b| {
            if a.0.gt(b.0) {
                std::cmp::Ordering::Less
            } else if b.0.gt(a.0) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        ranked.truncate(k);
        ranked.into_iter().map(|(_, c)| c).collect()
    }

    /// F1 of the detector `f_latent > thresholds()[threshold]` for `class`
    /// (0 when nothing fires and the class is absent); `None` out of range.
    pub fn f1(&self, threshold: usize, latent: usize, class: usize) -> Option<f64> {
        (threshold < self.thresholds.len() && latent < self.d_sae && class < self.classes)
            .then(|| self.choice(class, latent, threshold).1.f1)
    }
}

/// Column headers of quantify's `selection.csv`.
pub const SELECTION_COLUMNS: [&str; 9] = [
    "class",
    "name",
    "rank",
    "latent",
    "threshold",
    "f1",
    "true_positives",
    "fires",
    "positives",
];

/// Writes quantify's `selection.csv` (columns [`SELECTION_COLUMNS`]): for
/// each `(class, choices)` of `ranked`, in the order given, one row per
/// choice with its rank (1 = best, the order of `choices`), F1 to six
/// decimals. `class_names` names classes `1..=N`.
///
/// ```
/// use sae_steer_metrics::{FeatureChoice, write_selection_csv};
/// let best = FeatureChoice {
///     class: 2, latent: 7235, threshold: 0.1, f1: 0.5,
///     true_positives: 3, fires: 4, positives: 8,
/// };
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("selection.csv");
/// let names = ["wall".to_string(), "building, edifice".to_string()];
/// write_selection_csv(&path, [(2, &[best][..])], &names).unwrap();
/// assert_eq!(
///     std::fs::read_to_string(&path).unwrap(),
///     "class,name,rank,latent,threshold,f1,true_positives,fires,positives\n\
///      2,\"building, edifice\",1,7235,0.1,0.500000,3,4,8\n"
/// );
/// ```
pub fn write_selection_csv<'a>(
    path: impl AsRef<Path>,
    ranked: impl IntoIterator<Item = (usize, &'a [FeatureChoice])>,
    class_names: &[String],
) -> Result<()> {
    write_csv(path.as_ref(), |w| {
        w.write_record(SELECTION_COLUMNS)?;
        for (class, choices) in ranked {
            for (rank, c) in choices.iter().enumerate() {
                w.write_record([
                    class.to_string(),
                    class_name(class_names, class),
                    (rank + 1).to_string(),
                    c.latent.to_string(),
                    c.threshold.to_string(),
                    format!("{:.6}", c.f1),
                    c.true_positives.to_string(),
                    c.fires.to_string(),
                    c.positives.to_string(),
                ])?;
            }
        }
        Ok(())
    })
}

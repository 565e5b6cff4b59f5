//! Counting what a steering edit changes (reference facts section 8).
//!
//! One *pass* edits every validation patch in the direction chosen for one
//! class `c` by one method and compares each patch's edited prediction with
//! its original one:
//!
//! - target change rate(c) = original-c patches whose class changed /
//!   original-c patches x 100;
//! - other change rate(c) = original-not-c patches whose class changed (to any
//!   class, not only to c) / original-not-c patches x 100.
//!
//! [`MethodSummary`] summarises a method's passes both as we report them
//! (macro means and stds in percent over the classes with patches) and as
//! the reference does (pooled fractions, std over all classes);
//! [`write_summary_csv`] writes the reference's under the reference's column
//! names and ours under names that say what they are.
//!
//! ```
//! use sae_steer_metrics::{ClassPass, MethodSummary};
//! let original = [5u8, 5, 5, 5, 1, 2, 3, 4];
//! let edited = [1u8, 1, 5, 5, 1, 3, 5, 4];
//! let mut pass = ClassPass::new("auto", 5, 151).unwrap();
//! pass.add(&original, &edited).unwrap();
//! assert_eq!(pass.counts.target_change_rate(), Some(50.0)); // 2 of 4 left class 5
//! assert_eq!(pass.counts.other_change_rate(), Some(50.0));  // 2 -> 3 and 3 -> 5
//! assert_eq!(pass.changes.count(5, 1), 2);
//! let summary = MethodSummary::from_passes(&[pass], 150).unwrap();
//! assert_eq!(summary[0].n_classes_macro, 1);
//! assert_eq!(summary[0].target_change_macro_pct, Some(50.0)); // percent
//! assert_eq!(summary[0].reference_target_pooled_fraction, 0.5); // fraction
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::files::{class_name, fmt_opt, write_atomic, write_csv};
use crate::python::python_float_repr;

fn check_class(what: &str, class: usize, classes: usize) -> Result<()> {
    if classes == 0 || classes > 256 {
        return Err(MetricsError::Invalid(format!(
            "{what}: {classes} classes (must be 1..=256 for u8 class ids)"
        )));
    }
    if class >= classes {
        return Err(MetricsError::Invalid(format!(
            "{what}: class {class} is out of range (classes 0..{classes})"
        )));
    }
    Ok(())
}

fn check_predictions(original: &[u8], edited: &[u8], classes: usize) -> Result<()> {
    MetricsError::check_len(
        "edited predictions (same count as original)",
        original.len(),
        edited.len(),
    )?;
    for (what, values) in [
        ("original prediction", original),
        ("edited prediction", edited),
    ] {
        if let Some(position) = values.iter().position(|&v| v as usize >= classes) {
            return Err(MetricsError::ClassOutOfRange {
                what: what.into(),
                class: values[position] as usize,
                position,
                classes,
            });
        }
    }
    Ok(())
}

/// The outcomes of one pass for its target class `c`, over all patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeCounts {
    /// The target class `c`.
    pub class: usize,
    /// Originally `c`, now not `c`.
    pub target_to_other: u64,
    /// Originally `c`, still `c`.
    pub target_to_target: u64,
    /// Originally not `c`, now `c`.
    pub other_to_target: u64,
    /// Originally not `c`, still not `c` (possibly another class than before).
    pub other_to_other: u64,
    /// Originally not `c` and changed to any other class (`c` included): the
    /// numerator of the other change rate. Equals `other_to_target` plus the
    /// `other_to_other` patches whose class changed.
    pub other_changed: u64,
}

impl ChangeCounts {
    /// Zero counts for target class `class`.
    pub fn new(class: usize) -> Self {
        Self {
            class,
            target_to_other: 0,
            target_to_target: 0,
            other_to_target: 0,
            other_to_other: 0,
            other_changed: 0,
        }
    }

    /// Counts patches: `original[i]` and `edited[i]` are the predictions of
    /// patch `i` before and after the edit (equal lengths).
    pub fn add(&mut self, original: &[u8], edited: &[u8]) -> Result<()> {
        MetricsError::check_len(
            "edited predictions (same count as original)",
            original.len(),
            edited.len(),
        )?;
        for (&o, &e) in original.iter().zip(edited) {
            let (o, e) = (o as usize, e as usize);
            match (o == self.class, e == self.class) {
                (true, true) => self.target_to_target += 1,
                (true, false) => self.target_to_other += 1,
                (false, true) => {
                    self.other_to_target += 1;
                    self.other_changed += 1;
                }
                (false, false) => {
                    self.other_to_other += 1;
                    self.other_changed += u64::from(o != e);
                }
            }
        }
        Ok(())
    }

    /// Adds another count of the same class (e.g. from another thread).
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if other.class != self.class {
            return Err(MetricsError::Mismatch {
                what: "change counts",
                ours: format!("class {}", self.class),
                theirs: format!("class {}", other.class),
            });
        }
        self.target_to_other += other.target_to_other;
        self.target_to_target += other.target_to_target;
        self.other_to_target += other.other_to_target;
        self.other_to_other += other.other_to_other;
        self.other_changed += other.other_changed;
        Ok(())
    }

    /// Patches originally predicted `c`.
    pub fn original_target(&self) -> u64 {
        self.target_to_other + self.target_to_target
    }

    /// Patches originally predicted something else than `c`.
    pub fn original_other(&self) -> u64 {
        self.other_to_target + self.other_to_other
    }

    /// Original-`c` patches whose class changed, in percent of the
    /// original-`c` patches; `None` without any.
    pub fn target_change_rate(&self) -> Option<f64> {
        percent(self.target_to_other, self.original_target())
    }

    /// Original-not-`c` patches whose class changed, in percent of the
    /// original-not-`c` patches; `None` without any.
    pub fn other_change_rate(&self) -> Option<f64> {
        percent(self.other_changed, self.original_other())
    }
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64 * 100.0)
}

/// Where changed patches went: counts of `original -> edited` class pairs
/// over the patches whose prediction changed, `classes x classes`.
///
/// Serialised sparsely (`{"classes", "entries": [[from, to, count], ...]}`)
/// so a resumable job can store one per pass cheaply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "SparseMatrix", try_from = "SparseMatrix")]
pub struct ChangeMatrix {
    classes: usize,
    counts: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct SparseMatrix {
    classes: usize,
    entries: Vec<(usize, usize, u64)>,
}

impl From<ChangeMatrix> for SparseMatrix {
    fn from(m: ChangeMatrix) -> Self {
        Self {
            classes: m.classes,
            entries: m.nonzero().collect(),
        }
    }
}

impl TryFrom<SparseMatrix> for ChangeMatrix {
    type Error = MetricsError;
    fn try_from(s: SparseMatrix) -> Result<Self> {
        let mut m = ChangeMatrix::new(s.classes)?;
        for (from, to, count) in s.entries {
            check_class("change matrix entry (from)", from, s.classes)?;
            check_class("change matrix entry (to)", to, s.classes)?;
            m.counts[from * s.classes + to] += count;
        }
        Ok(m)
    }
}

impl ChangeMatrix {
    /// An empty matrix for class ids `0..classes` (151 for ADE20K).
    pub fn new(classes: usize) -> Result<Self> {
        check_class("change matrix", 0, classes)?;
        Ok(Self {
            classes,
            counts: vec![0; classes * classes],
        })
    }

    /// Number of class ids.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Counts the patches whose prediction changed from `original[i]` to
    /// `edited[i]`. Errors (changing nothing) on a length mismatch or a class
    /// id out of range.
    pub fn add(&mut self, original: &[u8], edited: &[u8]) -> Result<()> {
        check_predictions(original, edited, self.classes)?;
        for (&o, &e) in original.iter().zip(edited) {
            if o != e {
                self.counts[o as usize * self.classes + e as usize] += 1;
            }
        }
        Ok(())
    }

    /// Patches changed from `from` to `to` (0 out of range or for `from == to`).
    pub fn count(&self, from: usize, to: usize) -> u64 {
        if from < self.classes && to < self.classes {
            self.counts[from * self.classes + to]
        } else {
            0
        }
    }

    /// All changed patches.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Non-zero entries `(from, to, count)` in row-major order.
    pub fn nonzero(&self) -> impl Iterator<Item = (usize, usize, u64)> + '_ {
        let k = self.classes;
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(move |(i, &n)| (i / k, i % k, n))
    }

    /// Adds another matrix of the same size.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if other.classes != self.classes {
            return Err(MetricsError::Mismatch {
                what: "change matrices",
                ours: format!("{} classes", self.classes),
                theirs: format!("{} classes", other.classes),
            });
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        Ok(())
    }
}

/// Everything one pass (one class, one method) measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassPass {
    /// Method name as reported ("random-vector", "random-latent", "auto", "manual", ...).
    pub method: String,
    /// The SAE latent edited, if the method edits one.
    pub latent: Option<usize>,
    /// The latent's F1 on the selection split (automatic method).
    pub f1: Option<f64>,
    /// Outcome counts for the pass's target class.
    pub counts: ChangeCounts,
    /// Where changed patches went.
    pub changes: ChangeMatrix,
}

impl ClassPass {
    /// An empty pass of `method` for target class `class`, for class ids
    /// `0..classes`.
    pub fn new(method: impl Into<String>, class: usize, classes: usize) -> Result<Self> {
        check_class("quantify pass", class, classes)?;
        Ok(Self {
            method: method.into(),
            latent: None,
            f1: None,
            counts: ChangeCounts::new(class),
            changes: ChangeMatrix::new(classes)?,
        })
    }

    /// Records the latent edited and its F1 (builder style).
    pub fn with_latent(mut self, latent: usize, f1: Option<f64>) -> Self {
        self.latent = Some(latent);
        self.f1 = f1;
        self
    }

    /// The target class.
    pub fn class(&self) -> usize {
        self.counts.class
    }

    /// Counts one batch of patches (original and edited predictions) into
    /// both the outcome counts and the change matrix. Errors change nothing.
    pub fn add(&mut self, original: &[u8], edited: &[u8]) -> Result<()> {
        self.changes.add(original, edited)?;
        self.counts.add(original, edited)
    }
}

/// One method's change rates summarised over classes, in two ways.
///
/// **Ours** (the `*_macro_pct` and `*_pooled_pct` fields and columns), in
/// percent over the classes with at least one original patch
/// (`n_classes_macro` of them; both rates use this same set): the macro mean
/// of the per-class rates with their population standard deviation, and the
/// pooled rate, sum of changed / sum of original patches over those classes.
/// `None` when `n_classes_macro` is 0.
///
/// **The reference's** (the `reference_*` fields, written under the
/// reference's column names `target_change`, `target_std`, `other_change`,
/// `other_std`), as saev's `contrib/semseg` quantify computes them:
/// fractions, not percent. The change is pooled over every class with a pass
/// (sum of changed / sum of original patches, 0 without any original patch);
/// the std is numpy's `np.std` (population) over all `n_classes_all` classes
/// of the per-class fractions, a class without original patches (or without
/// a pass) counting 0.
///
/// ```
/// use sae_steer_metrics::{ChangeCounts, MethodSummary};
/// let mut car = ChangeCounts::new(21);
/// car.add(&[21, 21, 21, 21, 3], &[1, 1, 21, 21, 3]).unwrap();
/// let s = MethodSummary::from_counts("auto", [&car], 150).unwrap();
/// assert_eq!(s.target_change_macro_pct, Some(50.0)); // 2 of 4 car patches changed
/// assert_eq!(s.target_std_macro_pct, Some(0.0)); // over the one class with patches
/// assert_eq!(s.reference_target_pooled_fraction, 0.5);
/// // np.std of [0.5, 0, 0, ..., 0] (150 values)
/// let std = (0.25 / 150.0 - (0.5f64 / 150.0).powi(2)).sqrt();
/// assert!((s.reference_target_std_fraction - std).abs() < 1e-15);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    /// The method.
    pub method: String,
    /// Macro mean of the target change rate (%).
    pub target_change_macro_pct: Option<f64>,
    /// Population standard deviation of the target change rate (%).
    pub target_std_macro_pct: Option<f64>,
    /// Macro mean of the other change rate (%).
    pub other_change_macro_pct: Option<f64>,
    /// Population standard deviation of the other change rate (%).
    pub other_std_macro_pct: Option<f64>,
    /// Pooled target change rate (%) over the `n_classes_macro` classes.
    pub target_pooled_pct: Option<f64>,
    /// Pooled other change rate (%) over the `n_classes_macro` classes.
    pub other_pooled_pct: Option<f64>,
    /// Classes with at least one original patch, those the macro and pooled
    /// percentages summarise.
    pub n_classes_macro: usize,
    /// The reference's `target_change`: pooled target change as a fraction.
    pub reference_target_pooled_fraction: f64,
    /// The reference's `target_std`: population std of the per-class target
    /// change fractions over all `n_classes_all` classes (0 where absent).
    pub reference_target_std_fraction: f64,
    /// The reference's `other_change`: pooled other change as a fraction,
    /// over every class with a pass.
    pub reference_other_pooled_fraction: f64,
    /// The reference's `other_std`: population std of the per-class other
    /// change fractions over all `n_classes_all` classes (0 where absent).
    pub reference_other_std_fraction: f64,
    /// Classes a pass can target (ids `1..=n_classes_all`; 150 for ADE20K),
    /// those the reference's standard deviations run over.
    pub n_classes_all: usize,
}

impl MethodSummary {
    /// Summarises the passes of one method (one [`ChangeCounts`] per class).
    /// `n_classes_all` is the number of classes a pass can target, ids
    /// `1..=n_classes_all` (150 for ADE20K; class 0 is never a target); the
    /// reference's standard deviations run over all of them. Errors on
    /// `n_classes_all == 0`, a class out of that range or a class counted
    /// twice.
    pub fn from_counts<'a>(
        method: impl Into<String>,
        counts: impl IntoIterator<Item = &'a ChangeCounts>,
        n_classes_all: usize,
    ) -> Result<Self> {
        let method = method.into();
        if n_classes_all == 0 {
            return Err(MetricsError::Invalid(format!(
                "summary of {method}: no classes (n_classes_all is 0)"
            )));
        }
        let all: Vec<&ChangeCounts> = counts.into_iter().collect();
        let mut seen = vec![false; n_classes_all];
        for c in &all {
            if !(1..=n_classes_all).contains(&c.class) {
                return Err(MetricsError::Invalid(format!(
                    "summary of {method}: class {} is out of range 1..={n_classes_all}",
                    c.class
                )));
            }
            if std::mem::replace(&mut seen[c.class - 1], true) {
                return Err(MetricsError::Invalid(format!(
                    "summary of {method}: class {} counted twice",
                    c.class
                )));
            }
        }

        // Ours: the classes with at least one original patch.
        let used: Vec<&ChangeCounts> = all
            .iter()
            .copied()
            .filter(|c| c.original_target() > 0)
            .collect();
        let target: Vec<f64> = used.iter().filter_map(|c| c.target_change_rate()).collect();
        let other: Vec<f64> = used.iter().filter_map(|c| c.other_change_rate()).collect();
        let sum = |set: &[&ChangeCounts], f: fn(&ChangeCounts) -> u64| {
            set.iter().map(|c| f(c)).sum::<u64>()
        };
        let (target_mean, target_std) = mean_std(&target, target.len());
        let (other_mean, other_std) = mean_std(&other, other.len());

        // The reference's: every class with a pass pooled, the per-class
        // fractions padded with 0 to all classes for the std.
        let fraction = |part: u64, whole: u64| {
            if whole > 0 {
                part as f64 / whole as f64
            } else {
                0.0
            }
        };
        let ref_target: Vec<f64> = all
            .iter()
            .map(|c| fraction(c.target_to_other, c.original_target()))
            .collect();
        let ref_other: Vec<f64> = all
            .iter()
            .map(|c| fraction(c.other_changed, c.original_other()))
            .collect();
        let ref_std = |values: &[f64]| mean_std(values, n_classes_all).1.unwrap_or(0.0);
        Ok(Self {
            target_change_macro_pct: target_mean,
            target_std_macro_pct: target_std,
            other_change_macro_pct: other_mean,
            other_std_macro_pct: other_std,
            target_pooled_pct: percent(
                sum(&used, |c| c.target_to_other),
                sum(&used, ChangeCounts::original_target),
            ),
            other_pooled_pct: percent(
                sum(&used, |c| c.other_changed),
                sum(&used, ChangeCounts::original_other),
            ),
            n_classes_macro: used.len(),
            reference_target_pooled_fraction: fraction(
                sum(&all, |c| c.target_to_other),
                sum(&all, ChangeCounts::original_target),
            ),
            reference_target_std_fraction: ref_std(&ref_target),
            reference_other_pooled_fraction: fraction(
                sum(&all, |c| c.other_changed),
                sum(&all, ChangeCounts::original_other),
            ),
            reference_other_std_fraction: ref_std(&ref_other),
            n_classes_all,
            method,
        })
    }

    /// One summary per method, in the order methods first appear in
    /// `passes`; `n_classes_all` as in [`MethodSummary::from_counts`].
    pub fn from_passes(passes: &[ClassPass], n_classes_all: usize) -> Result<Vec<Self>> {
        let mut methods: Vec<&str> = Vec::new();
        for p in passes {
            if !methods.contains(&p.method.as_str()) {
                methods.push(&p.method);
            }
        }
        methods
            .into_iter()
            .map(|m| {
                Self::from_counts(
                    m,
                    passes.iter().filter(|p| p.method == m).map(|p| &p.counts),
                    n_classes_all,
                )
            })
            .collect()
    }
}

/// Mean and population standard deviation of `values` padded with zeros to
/// `n >= values.len()` values (numpy's `mean` and `std` of that array);
/// `None` for `n == 0`.
fn mean_std(values: &[f64], n: usize) -> (Option<f64>, Option<f64>) {
    if n == 0 {
        return (None, None);
    }
    let zeros = n.saturating_sub(values.len()) as f64;
    let n = n as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var =
        (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() + zeros * mean * mean) / n;
    (Some(mean), Some(var.sqrt()))
}

/// Column headers of the quantify `results.csv`: the reference's five
/// (`method`, then its pooled fractions and std over all classes), then ours.
/// See [`write_summary_csv`].
pub const SUMMARY_COLUMNS: [&str; 13] = [
    "method",
    "target_change",
    "target_std",
    "other_change",
    "other_std",
    "target_change_macro_pct",
    "target_std_macro_pct",
    "other_change_macro_pct",
    "other_std_macro_pct",
    "target_pooled_pct",
    "other_pooled_pct",
    "n_classes_macro",
    "n_classes_all",
];

/// Writes the quantify `results.csv`, one row per method (columns
/// [`SUMMARY_COLUMNS`]):
///
/// - `target_change`, `target_std`, `other_change`, `other_std`: the
///   reference's, meaning what saev's `contrib/semseg` quantify writes under
///   those names: pooled fractions (not percent) and `np.std` over all
///   `n_classes_all` classes, 0 for a class without patches (the `reference_*`
///   fields of [`MethodSummary`]), spelled as Python writes floats;
/// - `*_macro_pct`: our macro means and population stds in percent over the
///   `n_classes_macro` classes with at least one original patch;
///   `*_pooled_pct`: sum changed / sum original over those classes, in
///   percent; `nan` when there is no such class.
pub fn write_summary_csv(path: impl AsRef<Path>, summaries: &[MethodSummary]) -> Result<()> {
    write_csv(path.as_ref(), |w| {
        w.write_record(SUMMARY_COLUMNS)?;
        for s in summaries {
            w.write_record([
                s.method.clone(),
                python_float_repr(s.reference_target_pooled_fraction),
                python_float_repr(s.reference_target_std_fraction),
                python_float_repr(s.reference_other_pooled_fraction),
                python_float_repr(s.reference_other_std_fraction),
                fmt_opt(s.target_change_macro_pct),
                fmt_opt(s.target_std_macro_pct),
                fmt_opt(s.other_change_macro_pct),
                fmt_opt(s.other_std_macro_pct),
                fmt_opt(s.target_pooled_pct),
                fmt_opt(s.other_pooled_pct),
                s.n_classes_macro.to_string(),
                s.n_classes_all.to_string(),
            ])?;
        }
        Ok(())
    })
}

/// Writes quantify's `summary.md`: the images and patches counted, one
/// bullet per note, a table of our rates (percent to two decimals, "–" when
/// undefined), a table of the reference's columns (fractions to four
/// decimals), each table saying which `results.csv` columns it shows, and
/// the classes each method skipped. `skipped` holds `(method, class,
/// reason)`; the reasons are not written.
pub fn write_summary_md(
    path: impl AsRef<Path>,
    images: usize,
    patches: usize,
    summaries: &[MethodSummary],
    skipped: &[(String, usize, String)],
    notes: &[String],
) -> Result<()> {
    let mut md = String::from("# Quantify: pseudo-orthogonality of steering directions\n\n");
    md.push_str(&format!(
        "{images} validation images, {patches} patches.\n\n"
    ));
    for n in notes {
        md.push_str(&format!("- {n}\n"));
    }
    if !notes.is_empty() {
        md.push('\n');
    }
    md.push_str(
        "Ours (`results.csv` columns `*_macro_pct`, `*_pooled_pct`, `n_classes_macro`): rates \
         in percent, macro mean and population std over the classes with at least one \
         originally predicted patch (the classes column); pooled = sum changed / sum original \
         over those classes.\n\n",
    );
    md.push_str(
        "| method | target change | ± std | other change | ± std | target pooled | other pooled \
         | classes |\n",
    );
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
    for s in summaries {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.method,
            f(s.target_change_macro_pct),
            f(s.target_std_macro_pct),
            f(s.other_change_macro_pct),
            f(s.other_std_macro_pct),
            f(s.target_pooled_pct),
            f(s.other_pooled_pct),
            s.n_classes_macro
        ));
    }
    md.push_str(
        "\nThe reference's (`results.csv` columns `target_change`, `target_std`, \
         `other_change`, `other_std`, meaning what saev's contrib/semseg quantify writes \
         under those names): fractions, not percent; change = sum changed / sum original \
         over every class with a pass; std = population std over all classes (the classes \
         column, `n_classes_all`) of the per-class fractions, 0 for a class without \
         patches or without a pass.\n\n",
    );
    md.push_str("| method | target_change | target_std | other_change | other_std | classes |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|\n");
    for s in summaries {
        md.push_str(&format!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {} |\n",
            s.method,
            s.reference_target_pooled_fraction,
            s.reference_target_std_fraction,
            s.reference_other_pooled_fraction,
            s.reference_other_std_fraction,
            s.n_classes_all
        ));
    }
    if !skipped.is_empty() {
        let mut by_method: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (m, c, _) in skipped {
            by_method.entry(m).or_default().push(*c);
        }
        md.push_str("\nSkipped classes:\n");
        for (m, cs) in by_method {
            md.push_str(&format!("- {m}: {} classes ({cs:?})\n", cs.len()));
        }
    }
    write_atomic(path.as_ref(), md.as_bytes())
}

/// Column headers of the per-class CSV.
pub const CLASS_COLUMNS: [&str; 12] = [
    "class",
    "name",
    "method",
    "latent",
    "f1",
    "target_to_other",
    "target_to_target",
    "other_to_target",
    "other_to_other",
    "other_changed",
    "target_change",
    "other_change",
];

/// Writes one row per pass (columns [`CLASS_COLUMNS`]): class id and name,
/// method, latent and F1 (empty when the method has none), the outcome
/// counts and both rates in percent (`nan` when undefined). `class_names`
/// names classes `1..=N`.
pub fn write_class_csv(
    path: impl AsRef<Path>,
    passes: &[ClassPass],
    class_names: &[String],
) -> Result<()> {
    write_csv(path.as_ref(), |w| {
        w.write_record(CLASS_COLUMNS)?;
        for p in passes {
            let c = &p.counts;
            w.write_record([
                c.class.to_string(),
                class_name(class_names, c.class),
                p.method.clone(),
                p.latent.map(|l| l.to_string()).unwrap_or_default(),
                p.f1.map(|f| f.to_string()).unwrap_or_default(),
                c.target_to_other.to_string(),
                c.target_to_target.to_string(),
                c.other_to_target.to_string(),
                c.other_to_other.to_string(),
                c.other_changed.to_string(),
                fmt_opt(c.target_change_rate()),
                fmt_opt(c.other_change_rate()),
            ])?;
        }
        Ok(())
    })
}

/// Column headers of the change-matrix CSV.
pub const CHANGE_COLUMNS: [&str; 8] = [
    "method",
    "class",
    "name",
    "from",
    "from_name",
    "to",
    "to_name",
    "count",
];

/// Writes the change matrices of all passes in long form, non-zero entries
/// only (columns [`CHANGE_COLUMNS`]): the pass (method, target class and
/// its name), then `from -> to: count`.
pub fn write_change_csv(
    path: impl AsRef<Path>,
    passes: &[ClassPass],
    class_names: &[String],
) -> Result<()> {
    write_csv(path.as_ref(), |w| {
        w.write_record(CHANGE_COLUMNS)?;
        for p in passes {
            let class = p.class();
            for (from, to, count) in p.changes.nonzero() {
                w.write_record([
                    p.method.clone(),
                    class.to_string(),
                    class_name(class_names, class),
                    from.to_string(),
                    class_name(class_names, from),
                    to.to_string(),
                    class_name(class_names, to),
                    count.to_string(),
                ])?;
            }
        }
        Ok(())
    })
}

//! Counting what a steering edit changes (SPEC section 8).
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
//! ```
//! use sae_steer_metrics::{ClassPass, MethodSummary};
//! let original = [5u8, 5, 5, 5, 1, 2, 3, 4];
//! let edited = [1u8, 1, 5, 5, 1, 3, 5, 4];
//! let mut pass = ClassPass::new("auto", 5, 151).unwrap();
//! pass.add(&original, &edited).unwrap();
//! assert_eq!(pass.counts.target_change_rate(), Some(50.0)); // 2 of 4 left class 5
//! assert_eq!(pass.counts.other_change_rate(), Some(50.0));  // 2 -> 3 and 3 -> 5
//! assert_eq!(pass.changes.count(5, 1), 2);
//! let summary = MethodSummary::from_passes(&[pass]);
//! assert_eq!(summary[0].n_classes, 1);
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::files::{class_name, fmt_opt, write_atomic, write_csv};

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

/// One method's change rates summarised over classes.
///
/// Macro means and population standard deviations are in percent over the
/// classes with at least one original patch (`n_classes` of them; both rates
/// use this same set). The pooled rates are sums over those classes (sum of
/// changed / sum of original patches), also in percent. `None` when
/// `n_classes` is 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    /// The method.
    pub method: String,
    /// Mean target change rate (%).
    pub target_change: Option<f64>,
    /// Population standard deviation of the target change rate (%).
    pub target_std: Option<f64>,
    /// Mean other change rate (%).
    pub other_change: Option<f64>,
    /// Population standard deviation of the other change rate (%).
    pub other_std: Option<f64>,
    /// Pooled target change rate (%).
    pub target_pooled: Option<f64>,
    /// Pooled other change rate (%).
    pub other_pooled: Option<f64>,
    /// Classes with at least one original patch, those summarised.
    pub n_classes: usize,
}

impl MethodSummary {
    /// Summarises the passes of one method (one [`ChangeCounts`] per class).
    pub fn from_counts<'a>(
        method: impl Into<String>,
        counts: impl IntoIterator<Item = &'a ChangeCounts>,
    ) -> Self {
        let used: Vec<&ChangeCounts> = counts
            .into_iter()
            .filter(|c| c.original_target() > 0)
            .collect();
        let target: Vec<f64> = used.iter().filter_map(|c| c.target_change_rate()).collect();
        let other: Vec<f64> = used.iter().filter_map(|c| c.other_change_rate()).collect();
        let sum = |f: fn(&ChangeCounts) -> u64| used.iter().map(|c| f(c)).sum::<u64>();
        let (target_mean, target_std) = mean_std(&target);
        let (other_mean, other_std) = mean_std(&other);
        Self {
            method: method.into(),
            target_change: target_mean,
            target_std,
            other_change: other_mean,
            other_std,
            target_pooled: percent(
                sum(|c| c.target_to_other),
                sum(ChangeCounts::original_target),
            ),
            other_pooled: percent(sum(|c| c.other_changed), sum(ChangeCounts::original_other)),
            n_classes: used.len(),
        }
    }

    /// One summary per method, in the order methods first appear in `passes`.
    pub fn from_passes(passes: &[ClassPass]) -> Vec<Self> {
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
                )
            })
            .collect()
    }
}

/// Mean and population standard deviation; `None` for no values.
fn mean_std(values: &[f64]) -> (Option<f64>, Option<f64>) {
    if values.is_empty() {
        return (None, None);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (Some(mean), Some(var.sqrt()))
}

/// Column headers of the quantify `results.csv`.
pub const SUMMARY_COLUMNS: [&str; 8] = [
    "method",
    "target_change",
    "target_std",
    "other_change",
    "other_std",
    "target_pooled",
    "other_pooled",
    "n_classes",
];

/// Writes the quantify `results.csv`, one row per method (columns
/// [`SUMMARY_COLUMNS`], rates in percent, `nan` when undefined).
pub fn write_summary_csv(path: impl AsRef<Path>, summaries: &[MethodSummary]) -> Result<()> {
    write_csv(path.as_ref(), |w| {
        w.write_record(SUMMARY_COLUMNS)?;
        for s in summaries {
            w.write_record([
                s.method.clone(),
                fmt_opt(s.target_change),
                fmt_opt(s.target_std),
                fmt_opt(s.other_change),
                fmt_opt(s.other_std),
                fmt_opt(s.target_pooled),
                fmt_opt(s.other_pooled),
                s.n_classes.to_string(),
            ])?;
        }
        Ok(())
    })
}

/// Writes quantify's `summary.md`: the images and patches counted, one
/// bullet per note, a table of `summaries` (rates to two decimals, "–" when
/// undefined) and the classes each method skipped. `skipped` holds
/// `(method, class, reason)`; the reasons are not written.
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
        "{images} validation images, {patches} patches; rates in percent, macro mean and \
         population std over classes with at least one originally predicted patch; pooled = \
         sum changed / sum original.\n\n"
    ));
    for n in notes {
        md.push_str(&format!("- {n}\n"));
    }
    if !notes.is_empty() {
        md.push('\n');
    }
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
            f(s.target_change),
            f(s.target_std),
            f(s.other_change),
            f(s.other_std),
            f(s.target_pooled),
            f(s.other_pooled),
            s.n_classes
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

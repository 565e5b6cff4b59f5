//! Quantify pseudo-orthogonality (reference facts section 8): for every class and every
//! way of picking a direction, edit every patch of every validation image at
//! the SAE's layer, finish the network, and count how the probe's patch
//! predictions change.
//!
//! The Python reference re-runs the whole ViT for every edit. Here the SAE
//! layer's activations come from an [`ActivationCache`] (float32: f16
//! rounding flips argmaxes), an SAE edit uses the rank-1 form of reference facts
//! section 6 ([`Edit::apply`]), and only the blocks after the layer, the
//! final norm and the probe run, with several classes stacked in one batch.
//!
//! A run appends every finished chunk of (method, class) passes to
//! `passes.jsonl` (a settings line, then one line per chunk: the whole state
//! is never rewritten, which would cost the square of the passes), so an
//! interrupted run resumes at the next class and ends with the files of an
//! uninterrupted one, bit for bit: every output is a function of the inputs
//! alone (timings are reported, not written). The run holds a [`FolderLock`]
//! on its output folder, so two runs cannot interleave their writes there.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use burn::tensor::{ElementConversion, Int, Tensor, TensorData, backend::Backend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sae_steer_data::ActivationCache;
use sae_steer_files::{Phase, SharedProgress};
use sae_steer_metrics::{
    ClassPass, MethodSummary, write_change_csv, write_class_csv, write_selection_csv,
    write_summary_csv, write_summary_md,
};
use sae_steer_sae::{Edit, FeatureStats};

use crate::error::{Error, Result};
use crate::steerer::{Labels, Steerer};

mod log;
mod selection;

pub use log::PROGRESS_FILE;
use log::{ProgressChunk, append_progress, lock_output, open_progress};
pub use selection::{
    MIN_PURITY, Selection, THRESHOLDS, min_purity_count, read_manual_table, select_features,
};
use serde::{Deserialize, Serialize};

/// Number of probe outputs: label 0 (other) and the 150 ADE20K classes.
pub const OUTPUTS: usize = 151;

/// How a pass picks the direction it edits for a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Method {
    /// A random unit vector (one per class, seeded) added to each patch.
    RandomVector,
    /// A random SAE latent (one per class, seeded) set to `slider * max_obs`.
    RandomLatent,
    /// The latent with the best F1 for the class, set to `slider * max_obs`.
    Auto,
    /// The latent of a user-written class -> latent table.
    Manual,
}

impl Method {
    pub const ALL: [Method; 4] = [
        Method::RandomVector,
        Method::RandomLatent,
        Method::Auto,
        Method::Manual,
    ];

    /// The name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::RandomVector => "random-vector",
            Self::RandomLatent => "random-latent",
            Self::Auto => "auto",
            Self::Manual => "manual",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "random-vector" | "random" | "vector" | "1" => Ok(Self::RandomVector),
            "random-latent" | "random-feature" | "2" => Ok(Self::RandomLatent),
            "auto" | "automatic" | "automatic-feature" | "3" => Ok(Self::Auto),
            "manual" | "4" => Ok(Self::Manual),
            other => Err(format!(
                "unknown method `{other}`: expected random-vector, random-latent, auto or manual"
            )),
        }
    }
}

/// A pass's edit, the latent it sets (if any) and that latent's F1.
type PassDirection = (Edit, Option<usize>, Option<f64>);

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct QuantifyOptions {
    /// The SAE's layer (0-based block index; the cache tap `layer{L}`).
    pub layer: usize,
    pub methods: Vec<Method>,
    /// Target classes (1..=150 by default).
    pub classes: Vec<usize>,
    /// Slider position for latent edits: value = `slider * max_obs` (-2 in the preprint).
    pub slider: f32,
    /// Norm of the random-vector edit; `None` matches the mean norm of the
    /// automatic method's edit of the same class (reference facts section 8).
    pub vector_scale: Option<f32>,
    pub seed: u64,
    /// Validation images per forward batch (each stacked `classes_per_batch` times).
    pub batch_images: usize,
    /// Classes edited together in one forward batch.
    pub classes_per_batch: usize,
    /// Use only the first N validation images.
    pub max_images: Option<usize>,
    /// Latents this frequent on the reference set are never drawn by the
    /// random-latent method (nor selected; see [`select_features`]).
    pub max_frequency: f32,
    /// Where the run reports its work: the unedited predictions of
    /// [`Quantify::new`] (a phase of images), then one phase per method in
    /// [`Quantify::run`] (its classes still to do); silent by default.
    pub progress: SharedProgress,
}

impl Default for QuantifyOptions {
    fn default() -> Self {
        Self {
            layer: 10,
            methods: Method::ALL.to_vec(),
            classes: (1..OUTPUTS).collect(),
            slider: -2.0,
            vector_scale: None,
            seed: 0,
            batch_images: 8,
            classes_per_batch: 4,
            max_images: None,
            max_frequency: sae_steer_sae::stats::FREQUENT,
            progress: SharedProgress::default(),
        }
    }
}

/// Everything a run reads.
pub struct QuantifyInputs<'a, B: Backend> {
    /// ViT, SAE and probe, at the layer of [`QuantifyOptions::layer`]; the
    /// probe has 151 outputs (label 0 and the 150 classes).
    pub steerer: &'a Steerer<B>,
    pub stats: &'a FeatureStats,
    /// Validation cache holding tap `layer{L}` with every token, float32.
    pub cache: &'a ActivationCache,
    /// The automatic method's choices (needed for `auto`, and for the
    /// default random-vector scale).
    pub selection: Option<&'a Selection>,
    /// class -> latent, for `manual`.
    pub manual: &'a BTreeMap<usize, usize>,
}

/// What a run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuantifyReport {
    pub passes: Vec<ClassPass>,
    pub summaries: Vec<MethodSummary>,
    /// Classes a method skipped, with the reason.
    pub skipped: Vec<(String, usize, String)>,
    /// Validation images and patches used.
    pub images: usize,
    pub patches: usize,
    /// Mean seconds per (class, method) pass over the passes this call ran
    /// (`None` when it ran none: all were done by an earlier call).
    pub seconds_per_pass: Option<f64>,
}

/// The run: original predictions once, then one pass per (method, class).
pub struct Quantify<'a, B: Backend> {
    inputs: QuantifyInputs<'a, B>,
    options: QuantifyOptions,
    tap: String,
    rows: usize,
    /// Tokens before the patches (CLS and registers).
    prefix: usize,
    n_patches: usize,
    dim: usize,
    /// `[rows * n_patches]`
    original: Vec<u8>,
    /// Mean edit norms by (latent, value bits): the random-vector fallback
    /// asks for the same latents' norms for every class without a choice.
    edit_norms: std::sync::Mutex<BTreeMap<(usize, u32), f32>>,
}

impl<'a, B: Backend> Quantify<'a, B> {
    /// Checks the inputs against each other and predicts the unedited patches.
    pub fn new(inputs: QuantifyInputs<'a, B>, options: QuantifyOptions) -> Result<Self> {
        let tap = format!("layer{}", options.layer);
        let spec = inputs.cache.tap(&tap)?.clone();
        let steerer = inputs.steerer;
        if options.layer != steerer.layer() {
            return Err(Error::Input(format!(
                "quantify runs at layer {}, the steerer's SAE reads layer {}",
                options.layer,
                steerer.layer()
            )));
        }
        if steerer.probe().n_classes() != OUTPUTS {
            return Err(Error::Input(format!(
                "the probe has {} outputs; quantify needs {OUTPUTS} (label 0 and 150 classes)",
                steerer.probe().n_classes()
            )));
        }
        if spec.tokens != sae_steer_data::cache::TapTokens::All {
            return Err(Error::Input(format!(
                "cache tap {tap} keeps only the patch tokens; finishing the network needs every \
                 token (rebuild the cache with `{tap}:all:f32`)"
            )));
        }
        if spec.dtype != sae_steer_data::cache::CacheDtype::F32 {
            return Err(Error::Input(format!(
                "cache tap {tap} is stored as {:?}; quantify needs float32 (f16 rounding flips \
                 predictions)",
                spec.dtype
            )));
        }
        if spec.dim != inputs.steerer.sae().d_model() {
            return Err(Error::Input(format!(
                "cache tap {tap} has width {}, the SAE expects {}",
                spec.dim,
                inputs.steerer.sae().d_model()
            )));
        }
        if inputs.stats.d_sae() != inputs.steerer.sae().d_sae() {
            return Err(Error::Input(format!(
                "feature statistics cover {} latents, the SAE has {}",
                inputs.stats.d_sae(),
                inputs.steerer.sae().d_sae()
            )));
        }
        for c in &options.classes {
            if !(1..OUTPUTS).contains(c) {
                return Err(Error::Input(format!(
                    "class {c} is out of range 1..={}",
                    OUTPUTS - 1
                )));
            }
        }
        let prefix = steerer.prefix();
        let n_patches = spec.n_tokens.checked_sub(prefix).ok_or_else(|| {
            Error::Input(format!("cache tap {tap} has only {} tokens", spec.n_tokens))
        })?;
        let rows = options
            .max_images
            .map_or(inputs.cache.len(), |m| m.min(inputs.cache.len()));
        if rows == 0 {
            return Err(Error::Input("the validation cache holds no images".into()));
        }
        let mut run = Self {
            inputs,
            options,
            tap,
            rows,
            prefix,
            n_patches,
            dim: spec.dim,
            original: Vec::new(),
            edit_norms: Default::default(),
        };
        run.original = run.predict_original()?;
        Ok(run)
    }

    /// Validation images used.
    pub fn images(&self) -> usize {
        self.rows
    }

    /// Unedited predictions, `[images * patches]`.
    pub fn original(&self) -> &[u8] {
        &self.original
    }

    fn device(&self) -> B::Device {
        self.inputs.steerer.device().clone()
    }

    /// `[b, tokens, d]` of cache rows.
    fn load(&self, rows: &[usize], buf: &mut Vec<f32>) -> Result<Tensor<B, 3>> {
        self.inputs.cache.read_images(&self.tap, rows, buf)?;
        let t = self.prefix + self.n_patches;
        Ok(Tensor::from_data(
            TensorData::new(std::mem::take(buf), [rows.len(), t, self.dim]),
            &self.device(),
        ))
    }

    /// Finishes the network from the SAE's layer and predicts every patch
    /// (classes only: label 0 is never predicted, reference facts section 8).
    fn predict(&self, x: Tensor<B, 3>) -> Result<Vec<u8>> {
        self.inputs.steerer.segment(x, Labels::Classes)
    }

    fn batches(&self) -> Vec<Vec<usize>> {
        let step = self.options.batch_images.max(1);
        (0..self.rows)
            .step_by(step)
            .map(|s| (s..(s + step).min(self.rows)).collect())
            .collect()
    }

    fn predict_original(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.rows * self.n_patches);
        let mut buf = Vec::new();
        let bar = Phase::start(
            &*self.options.progress,
            "unedited predictions",
            "images",
            self.rows as u64,
            0,
        );
        for rows in self.batches() {
            let x = self.load(&rows, &mut buf)?;
            out.extend(self.predict(x)?);
            bar.advance(rows.len() as u64);
        }
        drop(bar);
        Ok(out)
    }

    /// Mean norm, over the validation patches, of setting `latent` to
    /// `value`: `scalar * |value - f_j(x)| * ||W_dec[j]||`.
    fn mean_edit_norm(&self, latent: usize, value: f32) -> Result<f32> {
        let key = (latent, value.to_bits());
        if let Some(norm) = self
            .edit_norms
            .lock()
            .ok()
            .and_then(|m| m.get(&key).copied())
        {
            return Ok(norm);
        }
        let steerer = self.inputs.steerer;
        let sae = steerer.sae();
        let mut buf = Vec::new();
        let mut sum = 0.0f64;
        let device = self.device();
        let idx =
            Tensor::<B, 1, Int>::from_data(TensorData::new(vec![latent as i64], [1]), &device);
        for rows in self.batches() {
            let x = self.load(&rows, &mut buf)?;
            // Only this latent's encoder column: a full-width encode here was
            // 19 TFLOP per class over 2,000 images.
            let f = steerer.encode_latents(steerer.patches(x), &[latent])?;
            let total: f32 = f.sub_scalar(value).abs().sum().into_scalar().elem();
            sum += f64::from(total);
        }
        let row = sae.w_dec.clone().select(0, idx);
        let row_norm: f32 = row.powf_scalar(2.0).sum().sqrt().into_scalar().elem();
        let n = (self.rows * self.n_patches) as f64;
        let norm = (sum / n) as f32 * sae.scalar() * row_norm;
        if let Ok(mut memo) = self.edit_norms.lock() {
            memo.insert(key, norm);
        }
        Ok(norm)
    }

    /// The direction of one (method, class) pass, or why there is none.
    fn steer_for(
        &self,
        method: Method,
        class: usize,
        vector_scale: &mut BTreeMap<usize, f32>,
    ) -> Result<std::result::Result<PassDirection, String>> {
        let stats = self.inputs.stats;
        let slider = self.options.slider;
        let latent_steer = |j: usize| Edit::new().set(j, slider * stats.max_obs(j));
        let mut rng = StdRng::seed_from_u64(
            self.options
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(class as u64 * 16 + method as u64),
        );
        Ok(match method {
            Method::Auto => match self.inputs.selection.and_then(|s| s.best(class)) {
                Some(choice) => Ok((
                    latent_steer(choice.latent),
                    Some(choice.latent),
                    Some(choice.f1),
                )),
                None => Err("no latent fires on this class in the selection split".into()),
            },
            Method::Manual => match self.inputs.manual.get(&class) {
                Some(&j) if j < self.inputs.steerer.sae().d_sae() => {
                    Ok((latent_steer(j), Some(j), None))
                }
                Some(&j) => {
                    return Err(Error::Input(format!(
                        "manual table: latent {j} for class {class} does not exist (the SAE has {} latents)",
                        self.inputs.steerer.sae().d_sae()
                    )));
                }
                None => Err("not in the manual table".into()),
            },
            Method::RandomLatent => {
                let candidates: Vec<usize> = (0..stats.d_sae())
                    .filter(|&j| {
                        let f = stats.frequency(j);
                        f > 0.0 && f < self.options.max_frequency && stats.max_obs(j) > 0.0
                    })
                    .collect();
                if candidates.is_empty() {
                    return Err(Error::Input(format!(
                        "no latent has 0 < frequency < {} and max_obs > 0: cannot draw a random latent",
                        self.options.max_frequency
                    )));
                }
                let j = candidates[rng.random_range(0..candidates.len())];
                Ok((latent_steer(j), Some(j), None))
            }
            Method::RandomVector => {
                let scale = match self.options.vector_scale {
                    Some(s) => s,
                    None => match vector_scale.get(&class) {
                        Some(&s) => s,
                        None => {
                            let s = self.default_vector_scale(class)?;
                            vector_scale.insert(class, s);
                            s
                        }
                    },
                };
                let mut v: Vec<f32> = (0..self.dim).map(|_| gaussian(&mut rng)).collect();
                let norm = v
                    .iter()
                    .map(|x| x * x)
                    .sum::<f32>()
                    .sqrt()
                    .max(f32::MIN_POSITIVE);
                v.iter_mut().for_each(|x| *x /= norm);
                Ok((Edit::new().shift(v, scale), None, None))
            }
        })
    }

    /// The automatic method's mean edit norm for the class; falls back to
    /// the mean over the run's classes when the class has no choice.
    fn default_vector_scale(&self, class: usize) -> Result<f32> {
        let selection = self.inputs.selection.ok_or_else(|| {
            Error::Input(
                "the random-vector method scales to the automatic method's edits, which needs \
                 the feature selection; give a fixed scale instead \
                 (`QuantifyOptions::vector_scale`)"
                    .into(),
            )
        })?;
        let value = |j: usize| self.options.slider * self.inputs.stats.max_obs(j);
        if let Some(c) = selection.best(class) {
            return self.mean_edit_norm(c.latent, value(c.latent));
        }
        let mut norms = Vec::new();
        for c in &self.options.classes {
            if let Some(choice) = selection.best(*c) {
                norms.push(self.mean_edit_norm(choice.latent, value(choice.latent))?);
            }
            if norms.len() >= 8 {
                break;
            }
        }
        if norms.is_empty() {
            return Err(Error::Input(
                "no class has an automatic choice to match the random vector's scale to; give \
                 a fixed scale (`QuantifyOptions::vector_scale`)"
                    .into(),
            ));
        }
        Ok(norms.iter().sum::<f32>() / norms.len() as f32)
    }

    /// Runs every (method, class) pass not yet in `out_dir/passes.jsonl`,
    /// persisting after each chunk of classes. Holds the folder's lock while
    /// it runs; [`write_reports`] writes the reports.
    pub fn run(&self, out_dir: &Path) -> Result<QuantifyReport> {
        let _lock = lock_output(out_dir)?;
        let key = self.key();
        let (mut log, mut state) = open_progress(&out_dir.join(PROGRESS_FILE), &key)?;
        let (mut pass_seconds, mut timed_passes) = (0.0, 0usize);
        let mut vector_scale = BTreeMap::new();
        let batches = self.batches();
        let mut buf = Vec::new();
        for &method in &self.options.methods {
            let todo: Vec<usize> = self
                .options
                .classes
                .iter()
                .copied()
                .filter(|&c| {
                    !state
                        .passes
                        .iter()
                        .any(|p| p.method == method.name() && p.class() == c)
                        && !state
                            .skipped
                            .iter()
                            .any(|(m, sc, _)| m == method.name() && *sc == c)
                })
                .collect();
            if todo.is_empty() {
                continue;
            }
            let bar = Phase::start(
                &*self.options.progress,
                method.name(),
                "classes",
                todo.len() as u64,
                0,
            );
            for chunk in todo.chunks(self.options.classes_per_batch.max(1)) {
                let started = Instant::now();
                let skipped_before = state.skipped.len();
                let mut passes = Vec::new();
                let mut steers = Vec::new();
                for &class in chunk {
                    match self.steer_for(method, class, &mut vector_scale)? {
                        Ok((steer, latent, f1)) => {
                            let mut pass = ClassPass::new(method.name(), class, OUTPUTS)?;
                            if let Some(j) = latent {
                                pass = pass.with_latent(j, f1);
                            }
                            passes.push(pass);
                            steers.push(steer);
                        }
                        Err(why) => state.skipped.push((method.name().into(), class, why)),
                    }
                }
                if !steers.is_empty() {
                    let setup = started.elapsed().as_secs_f64();
                    let timed = Instant::now();
                    for rows in &batches {
                        let x = self.load(rows, &mut buf)?;
                        let edited = steers
                            .iter()
                            .map(|s| self.inputs.steerer.steer_tokens(x.clone(), s))
                            .collect::<Result<Vec<_>>>()?;
                        let preds = self.predict(Tensor::cat(edited, 0))?;
                        let per = rows.len() * self.n_patches;
                        let first = rows[0] * self.n_patches;
                        let original = &self.original[first..first + per];
                        for (k, pass) in passes.iter_mut().enumerate() {
                            pass.add(original, &preds[k * per..(k + 1) * per])?;
                        }
                    }
                    pass_seconds += timed.elapsed().as_secs_f64() + setup;
                    timed_passes += passes.len();
                }
                let line = ProgressChunk {
                    passes,
                    skipped: state.skipped[skipped_before..].to_vec(),
                };
                append_progress(&mut log, &line)?;
                state.passes.extend(line.passes);
                bar.advance(chunk.len() as u64);
            }
            drop(bar);
        }
        let mut passes: Vec<ClassPass> = state
            .passes
            .iter()
            .filter(|p| {
                self.options.classes.contains(&p.class())
                    && self.options.methods.iter().any(|m| m.name() == p.method)
            })
            .cloned()
            .collect();
        passes.sort_by_key(|p| {
            (
                Method::from_str(&p.method).map_or(usize::MAX, |m| m as usize),
                p.class(),
            )
        });
        // Classes 1..=150: the reference's stds run over all of them.
        let summaries = MethodSummary::from_passes(&passes, OUTPUTS - 1)?;
        Ok(QuantifyReport {
            summaries,
            skipped: state.skipped.clone(),
            images: self.rows,
            patches: self.rows * self.n_patches,
            seconds_per_pass: (timed_passes > 0).then(|| pass_seconds / timed_passes as f64),
            passes,
        })
    }

    /// Settings that change results; a resumed run must have the same.
    fn key(&self) -> String {
        format!(
            "layer={} slider={} vector_scale={:?} seed={} images={} cache={}",
            self.options.layer,
            self.options.slider,
            self.options.vector_scale,
            self.options.seed,
            self.rows,
            self.inputs.cache.manifest().images.fingerprint,
        )
    }

    /// Predictions after each steer for cache rows `rows`, the way
    /// [`Quantify::run`] computes a chunk of classes: the rows' cached layer
    /// activations are read once, edited with every steer (rank-1 form),
    /// stacked into one batch of `steers.len() * rows.len()` images, and only
    /// the blocks after the SAE's layer, the final norm and the probe run.
    /// Returns `[steers.len() * rows.len() * patches]` class ids, steer-major.
    pub fn predict_edited(&self, rows: &[usize], steers: &[Edit]) -> Result<Vec<u8>> {
        if steers.is_empty() {
            return Err(Error::Input(
                "predict_edited needs at least one steer".into(),
            ));
        }
        self.original_of(rows)?;
        let mut buf = Vec::new();
        let x = self.load(rows, &mut buf)?;
        let edited = steers
            .iter()
            .map(|s| self.inputs.steerer.steer_tokens(x.clone(), s))
            .collect::<Result<Vec<_>>>()?;
        self.predict(Tensor::cat(edited, 0))
    }

    /// The unedited predictions of cache rows `rows`, `[rows.len() * patches]`;
    /// fails on an empty list or a row outside the run.
    pub fn original_of(&self, rows: &[usize]) -> Result<Vec<u8>> {
        if rows.is_empty() {
            return Err(Error::Input("no validation image given".into()));
        }
        let mut out = Vec::with_capacity(rows.len() * self.n_patches);
        for &r in rows {
            if r >= self.rows {
                return Err(Error::Input(format!(
                    "image {r} is not among the run's {} validation images",
                    self.rows
                )));
            }
            out.extend_from_slice(&self.original[r * self.n_patches..(r + 1) * self.n_patches]);
        }
        Ok(out)
    }
}

/// Writes `results.csv`, `per_class.csv`, `changes.csv`, `selection.csv`
/// (when there is a selection) and `summary.md` for a finished run, under
/// the output folder's lock; the files are written by the metrics crate
/// ([`write_summary_csv`], [`write_class_csv`], [`write_change_csv`],
/// [`write_selection_csv`], [`write_summary_md`]).
pub fn write_reports(
    out_dir: &Path,
    report: &QuantifyReport,
    selection: Option<&Selection>,
    class_names: &[String],
    notes: &[String],
) -> Result<()> {
    // The reports go into the run's folder: the same lock as the run, so a
    // second run there cannot interleave its writes with these.
    let _lock = lock_output(out_dir)?;
    write_summary_csv(out_dir.join("results.csv"), &report.summaries)?;
    write_class_csv(out_dir.join("per_class.csv"), &report.passes, class_names)?;
    write_change_csv(out_dir.join("changes.csv"), &report.passes, class_names)?;
    if let Some(sel) = selection {
        let ranked = sel.top.iter().map(|(c, top)| (*c, top.as_slice()));
        write_selection_csv(out_dir.join("selection.csv"), ranked, class_names)?;
    }
    write_summary_md(
        out_dir.join("summary.md"),
        report.images,
        report.patches,
        &report.summaries,
        &report.skipped,
        notes,
    )?;
    Ok(())
}

/// A standard normal draw (Box-Muller), so random directions are isotropic.
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

//! Where training rows come from, and what is estimated from them before
//! the first step.

use crate::checkpoint::Normalization;
use crate::error::{Result, SaeError};
use crate::sae::CLAMP;
use crate::train::NormalizationPlan;

/// Any error a data source may report.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One pass over the data: host batches of `[rows, d]` row-major f32 values.
pub type Batches<'d> = Box<dyn Iterator<Item = std::result::Result<Vec<f32>, BoxError>> + 'd>;

/// A source of training activations that can be read again and again
/// (one pass per epoch), each pass in an order given by a seed.
///
/// Every closure `FnMut(seed, batch) -> Result<impl Iterator<Item = Result<Vec<f32>, E>>, E>`
/// is one, e.g. the activation cache of `sae-steer-data`:
/// ```ignore
/// let mut data = |seed, batch| cache.patch_batches("layer10", 0..261, batch, seed);
/// sae_steer_sae::train::train::<B>(&config, &mut data, out, &device, &options)?;
/// ```
/// [`super::ActivationShards`] is another.
pub trait TrainingData<'d> {
    /// A full pass in the order given by `seed`, in batches of `batch` rows
    /// (the last may be shorter). The same seed must give the same batches.
    fn epoch(&mut self, seed: u64, batch: usize) -> std::result::Result<Batches<'d>, BoxError>;

    /// The pass of [`TrainingData::epoch`] without its first `skip_batches`
    /// batches, to resume a run. The default reads and drops them; sources
    /// that can seek should override it.
    fn epoch_from(
        &mut self,
        seed: u64,
        batch: usize,
        skip_batches: u64,
    ) -> std::result::Result<Batches<'d>, BoxError> {
        let mut batches = self.epoch(seed, batch)?;
        for _ in 0..skip_batches {
            match batches.next() {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(batches)
    }
}

impl<'d, F, I, E> TrainingData<'d> for F
where
    F: FnMut(u64, usize) -> std::result::Result<I, E>,
    I: Iterator<Item = std::result::Result<Vec<f32>, E>> + 'd,
    E: Into<BoxError> + 'd,
{
    fn epoch(&mut self, seed: u64, batch: usize) -> std::result::Result<Batches<'d>, BoxError> {
        let batches = self(seed, batch).map_err(Into::into)?;
        Ok(Box::new(batches.map(|b| b.map_err(Into::into))))
    }
}

impl Normalization {
    /// saev's normalization of the rows `[n, d]` held in memory (the same
    /// estimator as [`estimate_start`]'s, on all of them): `mean` of the
    /// clamped rows and `scalar = mean ||clamp(x) - mean||_2 / sqrt(d)`.
    pub fn estimate(rows: &[f32], d: usize) -> Result<Self> {
        if d == 0 || rows.is_empty() || !rows.len().is_multiple_of(d) {
            return Err(SaeError::Data(format!(
                "{} values are no whole number of {d}-wide rows",
                rows.len()
            )));
        }
        let n = rows.len() / d;
        let mut data = |_seed: u64, _batch: usize| {
            Ok::<_, SaeError>(std::iter::once(Ok::<_, SaeError>(rows.to_vec())))
        };
        let (norm, _) = estimate_start(&mut data, 0, n, d, n, &NormalizationPlan::Estimate)?;
        norm.ok_or_else(|| SaeError::Data("no normalization was estimated".into()))
    }
}

/// Reads up to `samples` rows of one pass (seed `seed`) and returns the
/// normalization to train with and the initial `b_dec` (the mean of the
/// sample in the units the SAE sees).
///
/// For [`NormalizationPlan::Estimate`] this reads the sample twice (the same
/// rows: passes are reproducible): once for `mean` (over clamped values), once
/// for `scalar = mean ||clamp(x) - mean||_2 / sqrt(d)`; nothing is held in
/// memory but a batch. `b_dec` is then the mean of the normalised sample, 0 up
/// to rounding, as in saev where both come from the same activations.
pub fn estimate_start<'d>(
    data: &mut dyn TrainingData<'d>,
    seed: u64,
    batch: usize,
    d: usize,
    samples: usize,
    plan: &NormalizationPlan,
) -> Result<(Option<Normalization>, Vec<f32>)> {
    let clamp = !matches!(plan, NormalizationPlan::Off);
    let mut sum = vec![0f64; d];
    let rows = for_sample(data, seed, batch, d, samples, |row| {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += f64::from(if clamp { v.clamp(-CLAMP, CLAMP) } else { *v });
        }
    })?;
    let mean: Vec<f64> = sum.iter().map(|s| s / rows as f64).collect();
    let norm = match plan {
        NormalizationPlan::Off => None,
        NormalizationPlan::Given { mean, scalar } => Some(Normalization {
            mean: mean.clone(),
            scalar: *scalar,
        }),
        NormalizationPlan::Estimate => {
            let mut norms = 0f64;
            let again = for_sample(data, seed, batch, d, samples, |row| {
                let sq: f64 = row
                    .iter()
                    .zip(&mean)
                    .map(|(v, m)| (f64::from(v.clamp(-CLAMP, CLAMP)) - m).powi(2))
                    .sum();
                norms += sq.sqrt();
            })?;
            if again != rows {
                return Err(SaeError::Data(format!(
                    "two reads of the same pass gave {rows} and {again} rows: the data source is not reproducible"
                )));
            }
            let scalar = (norms / rows as f64 / (d as f64).sqrt()) as f32;
            if !(scalar.is_finite() && scalar > 0.0) {
                return Err(SaeError::Data(format!(
                    "normalization scalar is {scalar} over {rows} rows: the activations are constant or not finite"
                )));
            }
            Some(Normalization {
                mean: mean.iter().map(|&m| m as f32).collect(),
                scalar,
            })
        }
    };
    // The sample mean in the SAE's units: normalisation is affine, so it is
    // the normalised mean of the (clamped) sample.
    let b_dec = match &norm {
        None => mean.iter().map(|&m| m as f32).collect(),
        Some(n) => mean
            .iter()
            .zip(&n.mean)
            .map(|(&m, &nm)| ((m - f64::from(nm)) / f64::from(n.scalar)) as f32)
            .collect(),
    };
    Ok((norm, b_dec))
}

/// Calls `visit` on the first `samples` rows of the pass `seed`; returns how
/// many rows there were (fewer when the data is smaller).
fn for_sample<'d>(
    data: &mut dyn TrainingData<'d>,
    seed: u64,
    batch: usize,
    d: usize,
    samples: usize,
    mut visit: impl FnMut(&[f32]),
) -> Result<usize> {
    let mut seen = 0;
    let batches = data.epoch(seed, batch).map_err(data_error)?;
    for b in batches {
        let b = b.map_err(data_error)?;
        check_width(&b, d)?;
        for row in b.chunks_exact(d) {
            if seen == samples {
                return Ok(seen);
            }
            if row.iter().any(|v| v.is_nan()) {
                return Err(SaeError::Data(format!(
                    "row {seen} of the sample holds NaN"
                )));
            }
            visit(row);
            seen += 1;
        }
        if seen == samples {
            break;
        }
    }
    if seen == 0 {
        return Err(SaeError::Data("the data source yielded no rows".into()));
    }
    Ok(seen)
}

pub(crate) fn data_error(e: BoxError) -> SaeError {
    // The source's causes (an I/O error under a cache error, say) go into
    // the message: `Data` holds text, not the error.
    SaeError::Data(sae_steer_files::ErrorChain(&*e).to_string())
}

pub(crate) fn check_width(batch: &[f32], d: usize) -> Result<()> {
    if !batch.len().is_multiple_of(d) {
        return Err(SaeError::Data(format!(
            "a batch holds {} values, not a whole number of {d}-wide rows",
            batch.len()
        )));
    }
    Ok(())
}

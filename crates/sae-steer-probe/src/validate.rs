//! Scoring probes on the validation split, as saev's `contrib/semseg
//! validate` does: logits on the patch grid of every image, upsampled
//! bilinearly (`align_corners = false`) to the crop and argmaxed over all
//! outputs, then per-class IoU and pixel accuracy over the whole split.
//!
//! All probes are evaluated together: one matmul gives every probe's logits
//! for a batch of images; the upsample + argmax (the expensive part) runs on
//! the host, fused, over all cores.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use sae_steer_ade20k::ClassNames;
use sae_steer_data::cache::ActivationCache;
use sae_steer_files::{Phase, SharedProgress};
use sae_steer_metrics::{
    BestProbe, BilinearUpsampler, SegmentationScores, SweepRow, best_by_mean_iou,
    plot_hparam_sweeps, write_best_json, write_results_csv,
};

use crate::checkpoint::ProbeCheckpoint;
use crate::error::{ProbeError, Result};
use crate::sweep::{ProbeSet, host_vec};

/// How to run a validation.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    /// The cache tap holding the probe input (patch tokens after the final norm).
    pub tap: String,
    /// Images per device batch (the reference's `batch_size`).
    pub batch_images: usize,
    /// Host threads for the upsample + argmax; 0 = one per core.
    pub threads: usize,
    /// Where the validation reports the images it has scored (one phase,
    /// "validating"); silent by default.
    pub progress: SharedProgress,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        Self {
            tap: "final_norm".into(),
            batch_images: 128,
            threads: 0,
            progress: SharedProgress::default(),
        }
    }
}

/// Validation scores of probes (in the order given) over every row of `cache`.
///
/// The cache must hold tap `opts.tap` (one token per patch, a square grid)
/// and pixel labels; all probes must have the same shape.
pub fn validate_probes<B: Backend>(
    probes: &[ProbeCheckpoint],
    cache: &ActivationCache,
    opts: &ValidateOptions,
    device: &B::Device,
) -> Result<Vec<SegmentationScores>> {
    let weights: Vec<_> = probes.iter().map(|p| &p.weights).collect();
    let set = ProbeSet::<B>::new(&weights, device)?;
    let (p, c) = (set.n_probes(), set.n_classes());
    let spec = cache.tap(&opts.tap)?;
    let patches = spec.n_tokens;
    let grid = (patches as f64).sqrt().round() as usize;
    if grid * grid != patches {
        return Err(ProbeError::Data(format!(
            "tap `{}` holds {patches} tokens per image, not a square grid of patches",
            opts.tap
        )));
    }
    if spec.dim != set.d_in() {
        return Err(ProbeError::Shape(format!(
            "the probes read {} features, tap `{}` holds {}",
            set.d_in(),
            opts.tap,
            spec.dim
        )));
    }
    if c > 256 {
        return Err(ProbeError::Shape(format!(
            "{c} outputs do not fit byte-sized predictions"
        )));
    }
    let crop = cache.manifest().preprocess.crop as usize;
    let upsampler = BilinearUpsampler::new(grid, grid, crop, crop)?;
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    };
    let n = cache.len();
    let progress = Phase::start(&*opts.progress, "validating", "images", n as u64, 0);
    progress.status(&format!("{p} probes"));

    let mut totals: Vec<SegmentationScores> = (0..p).map(|_| SegmentationScores::new(c)).collect();
    let mut x = Vec::new();
    let batch = opts.batch_images.max(1);
    for start in (0..n).step_by(batch) {
        let rows: Vec<usize> = (start..(start + batch).min(n)).collect();
        let k = rows.len();
        cache.read_images(&opts.tap, &rows, &mut x)?;
        let xt = Tensor::<B, 2>::from_data(
            TensorData::new(std::mem::take(&mut x), [k * patches, spec.dim]),
            device,
        );
        // [k*patches, P, C] -> [P, k*patches, C]: each (probe, image) is then
        // one contiguous [patches, C] block, the upsampler's layout.
        let logits = host_vec(set.logits(xt).swap_dims(0, 1));
        let labels: Vec<&[u8]> = rows
            .iter()
            .map(|&r| cache.pixel_labels(r))
            .collect::<std::result::Result<_, _>>()?;
        let jobs: Vec<(usize, usize)> =
            (0..p).flat_map(|pi| (0..k).map(move |i| (pi, i))).collect();
        let per_thread = jobs.len().div_ceil(threads);
        let block = patches * c;
        let partials: Vec<Result<Vec<SegmentationScores>>> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .chunks(per_thread.max(1))
                .map(|part| {
                    let (logits, labels, upsampler) = (&logits, &labels, &upsampler);
                    s.spawn(move || -> Result<Vec<SegmentationScores>> {
                        let mut scores: Vec<SegmentationScores> =
                            (0..p).map(|_| SegmentationScores::new(c)).collect();
                        let mut pred = vec![0u8; crop * crop];
                        for &(pi, i) in part {
                            let at = (pi * k + i) * block;
                            upsampler.argmax(&logits[at..at + block], c, &mut pred)?;
                            scores[pi].add(&pred, labels[i])?;
                        }
                        Ok(scores)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(ProbeError::Data("a scoring thread panicked".into()))
                    })
                })
                .collect()
        });
        for part in partials {
            for (total, s) in totals.iter_mut().zip(part?) {
                total.merge(&s)?;
            }
        }
        progress.advance(k as u64);
    }
    drop(progress);
    Ok(totals)
}

/// What [`write_reports`] wrote.
#[derive(Debug, Clone)]
pub struct Reports {
    pub results_csv: PathBuf,
    pub plot: PathBuf,
    pub best_json: Option<PathBuf>,
    pub best: Option<BestProbe>,
    pub rows: Vec<SweepRow>,
}

/// Writes `results.csv` (the reference's columns, one IoU column per class
/// named as in `objectInfo150.txt`), `hparam-sweeps.png` and `best.json`
/// (when some probe has a mean IoU) into `dump_to`.
pub fn write_reports(
    dump_to: &Path,
    probes: &[ProbeCheckpoint],
    scores: &[SegmentationScores],
    classes: &ClassNames,
) -> Result<Reports> {
    std::fs::create_dir_all(dump_to).map_err(|e| ProbeError::io(dump_to, e))?;
    let rows: Vec<SweepRow> = probes
        .iter()
        .zip(scores)
        .map(|(p, s)| {
            SweepRow::from_scores(
                p.learning_rate.unwrap_or(f64::NAN),
                p.weight_decay.unwrap_or(f64::NAN),
                p.dir(),
                s,
            )
        })
        .collect();
    let names: Vec<String> = (1..=classes.len())
        .map(|c| classes.full_name(c).to_string())
        .collect();
    let results_csv = dump_to.join("results.csv");
    write_results_csv(&results_csv, &rows, &names)?;
    let plot = dump_to.join("hparam-sweeps.png");
    plot_hparam_sweeps(&plot, &rows)?;
    let best = best_by_mean_iou(&rows);
    let best_json = match &best {
        Some(b) => {
            let path = dump_to.join("best.json");
            write_best_json(&path, b)?;
            Some(path)
        }
        None => None,
    };
    Ok(Reports {
        results_csv,
        plot,
        best_json,
        best,
        rows,
    })
}

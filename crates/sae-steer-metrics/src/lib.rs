//! Metrics and reports of sae-steer: host-side Rust, no tensors.
//!
//! - [`segmentation`]: probe logits to pixel predictions (bilinear upsampling
//!   with PyTorch semantics fused with the argmax) and the validation scores
//!   (per-class IoU, mIoU, pixel accuracy) of reference facts section 7.
//! - [`sweep`]: the probe sweep's `results.csv`, `best.json` and
//!   `hparam-sweeps.png`.
//! - [`quantify`]: change counts and rates of the steering experiment, their
//!   summaries (ours and the reference's) and quantify's report files:
//!   `results.csv`, `per_class.csv`, `changes.csv`, `summary.md`
//!   (reference facts section 8).
//! - [`selection`]: F1 feature selection (the "automatic" method of reference facts
//!   section 8) and quantify's `selection.csv`.
//!
//! Class ids are `u8` (ADE20K: 0 = unlabelled, 1..=150). Functions that name
//! classes take `class_names: &[String]` for classes `1..=N` (index 0 =
//! class 1); class 0 is written as "other". Every file is written to a
//! temporary name and renamed.

mod error;
mod files;
mod python;
pub mod quantify;
pub mod segmentation;
pub mod selection;
pub mod sweep;

pub use error::{MetricsError, Result};
pub use files::write_atomic;
pub use python::python_float_repr;
pub use quantify::{
    ChangeCounts, ChangeMatrix, ClassPass, MethodSummary, write_change_csv, write_class_csv,
    write_summary_csv, write_summary_md,
};
pub use segmentation::{
    BilinearUpsampler, SegmentationScores, argmax_rows, upsample_argmax, upsample_bilinear,
};
pub use selection::{F1Selector, FeatureChoice, write_selection_csv};
pub use sweep::{
    BestProbe, SweepRow, best_by_mean_iou, plot_hparam_sweeps, write_best_json, write_results_csv,
};

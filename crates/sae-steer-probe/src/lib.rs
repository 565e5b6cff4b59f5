//! Linear-probe semantic segmentation on DINOv2 patch features, as saev's
//! `contrib/semseg` trains and validates it (reference facts section 7).
//!
//! - [`sweep`]: [`ProbeSweep`], `P` probes `768 -> 151` side by side (one
//!   `[d, P*C]` weight), their softmax cross-entropy gradient written by hand
//!   and AdamW with a learning rate and weight decay per probe.
//! - [`config`]: the sweep file (`learning_rate`/`weight_decay` lists and
//!   shared settings), expanded like saev's `config.grid`.
//! - [`train`]: [`train_sweep`], all probes in one pass over an activation
//!   cache per epoch, with checkpoints and resume.
//! - [`checkpoint`]: our safetensors checkpoints and the reference's `.pt`
//!   folders; [`Probe::load`] takes either.
//! - [`validate`]: mIoU / accuracy of every probe over the validation split
//!   and the sweep's reports.
//! - [`naming`]: folder names as Python prints floats (`lr_3e-05__wd_1e-05`).
//!
//! ```no_run
//! use burn::backend::NdArray;
//! use sae_steer_probe::{SweepConfig, TrainOptions, train_sweep};
//! use sae_steer_probe::data::CachePatches;
//! use sae_steer_data::ActivationCache;
//! # fn main() -> sae_steer_probe::Result<()> {
//! let cache = ActivationCache::open("caches/ade20k-train")?;
//! let data = CachePatches::new(&cache, "final_norm")?;
//! let report = train_sweep::<NdArray, _>(
//!     &SweepConfig::default(),
//!     &data,
//!     &TrainOptions::default(),
//!     &Default::default(),
//! )?;
//! println!("{} steps", report.steps);
//! # Ok(()) }
//! ```

pub mod activations;
pub mod checkpoint;
pub mod config;
pub mod data;
mod error;
pub mod naming;
pub mod sweep;
pub mod train;
pub mod validate;

pub use checkpoint::{Probe, ProbeCheckpoint, read_probes};
pub use config::{ProbeHparams, SweepConfig};
pub use error::{ProbeError, Result};
pub use naming::{checkpoint_dir_name, python_float_repr};
pub use sweep::{ProbeSet, ProbeSweep, ProbeWeights};
pub use train::{TrainOptions, TrainReport, train_sweep};
pub use validate::{ValidateOptions, validate_probes, write_reports};

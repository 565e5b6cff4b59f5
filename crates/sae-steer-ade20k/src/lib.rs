//! ADE20K for sae-steer: the SceneParsing layout, class names, and a
//! synthetic dataset in the same layout. A split is an
//! [`sae_steer_data::ImageList`] whose items carry their annotation PNGs;
//! reading those label maps, the reference's label preprocessing, patch
//! labels and the activation cache are `sae-steer-data`'s, for any dataset.
//!
//! ```no_run
//! use sae_steer_ade20k::{Ade20k, Split};
//! use sae_steer_data::{load_sample, patch_labels};
//! use sae_steer_vit::Preprocess;
//! # fn main() -> sae_steer_ade20k::Result<()> {
//! let ade = Ade20k::open("data/ADEChallengeData2016")?;
//! let val = ade.split(Split::Validation)?.take(10);
//! let pre = Preprocess::default();
//! let sample = load_sample(&val.items[0], &pre)?;
//! let pixels = sample.labels.expect("ADE20K images have labels"); // 224 x 224
//! let patches = patch_labels(&pixels, pre.crop as usize, 14); // 16 x 16
//! println!("patch 0 is {}", ade.classes().name(patches.labels[0] as usize));
//! # Ok(()) }
//! ```
//!
//! A dataset to try things on without the 923 MB download:
//!
//! ```no_run
//! use sae_steer_ade20k::synth::{SynthOptions, synthesize};
//! # fn main() -> sae_steer_ade20k::Result<()> {
//! let opts = SynthOptions { train: 100, val: 20, ..SynthOptions::default() };
//! let report = synthesize(
//!     std::path::Path::new("target/synth-ade20k"),
//!     &opts,
//!     &sae_steer_files::NoProgress,
//! )?;
//! let ade = sae_steer_ade20k::Ade20k::open(&report.root)?;
//! # Ok(()) }
//! ```

mod classes;
mod dataset;
mod error;
pub mod synth;

pub use classes::{ClassInfo, ClassNames, NUM_CLASSES, OBJECT_INFO_150};
pub use dataset::{ADE20K_DIR, Ade20k, OBJECT_INFO_FILE, Split};
pub use error::{Ade20kError, Result};

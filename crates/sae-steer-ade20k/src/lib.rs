//! ADE20K for sae-steer: the SceneParsing layout, class names, label maps,
//! the reference's label preprocessing and patch labels, image folders, and a
//! synthetic dataset in the same layout.
//!
//! ```no_run
//! use sae_steer_ade20k::{Ade20k, Split, load_sample, patch_labels};
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

pub mod cache;
mod classes;
mod dataset;
mod error;
mod labels;
pub mod synth;

pub use cache::{ActivationCache, CacheError, CacheSpec, build_cache};
pub use classes::{ClassInfo, ClassNames, OBJECT_INFO_150};
pub use dataset::{
    ADE20K_DIR, Ade20k, ImageItem, ImageList, OBJECT_INFO_FILE, Split, image_folder,
};
pub use error::{Ade20kError, Result};
pub use labels::{
    LabelMap, NUM_CLASSES, PatchLabels, Sample, load_sample, patch_labels, read_label_map,
    resize_crop_labels,
};

//! Data for sae-steer, whatever the dataset: ordered image lists (each image
//! with its label map, when the dataset has them), image folders, label maps
//! and the reference's label preprocessing and patch labels, and the
//! activation cache, which runs the ViT over an image list once and stores
//! its activations (and patch labels) for every later stage.
//!
//! Dataset crates sit on top: `sae-steer-ade20k` turns the ADE20K layout into
//! an [`ImageList`] whose items carry their annotation PNGs.
//!
//! ```no_run
//! use sae_steer_data::{image_folder, load_sample, patch_labels};
//! use sae_steer_vit::Preprocess;
//! # fn main() -> sae_steer_data::Result<()> {
//! let images = image_folder("data/imagenet/val")?.take(10);
//! let pre = Preprocess::default();
//! let sample = load_sample(&images.items[0], &pre)?; // [3, 224, 224]
//! if let Some(pixels) = sample.labels {
//!     let patches = patch_labels(&pixels, pre.crop as usize, 14); // 16 x 16
//!     println!("patch 0 is class {}", patches.labels[0]);
//! }
//! # Ok(()) }
//! ```
//!
//! The activation cache is in [`cache`].

pub mod cache;
mod error;
mod images;
mod labels;

pub use cache::{ActivationCache, CacheError, CacheSpec, build_cache};
pub use error::{DataError, Result};
pub use images::{
    IMAGE_EXTENSIONS, ImageItem, ImageList, image_files, image_folder, is_image, sorted_entries,
};
pub use labels::{
    LabelMap, MAX_LABEL, PatchLabels, Sample, load_sample, patch_labels, read_label_map,
    resize_crop_labels,
};

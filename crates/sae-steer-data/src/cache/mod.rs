//! Activation caches: ViT activations of a whole image list, computed once and
//! read many times (probe training, SAE training, feature statistics, steering).
//!
//! A cache is a directory:
//!
//! ```text
//! <dir>/manifest.json            what was cached, how, and which shards are complete
//! <dir>/shard-00000.safetensors  "<tap>" [rows, n_tokens, dim] F32|F16, "image_index" [rows] U32,
//!                                "patch_labels"/"patch_purity" [rows, patches] U8,
//!                                "pixel_labels" [rows, crop, crop] U8
//! ```
//!
//! `cache --shard I/N` builds one part of the image list per process into
//! the same folder, for job arrays ([`PartInfo`]; the parts' manifests
//! `part-000I-of-000N.json` are merged into `manifest.json` by the last part
//! to finish, and a reader refuses a folder whose parts are missing,
//! incomplete, duplicated or built with other settings, naming the part).
//!
//! `<dir>/.lock` is held by the one process building the cache
//! ([`sae_steer_files::FolderLock`]): a second builder is refused at once,
//! naming the holder, and the lock dies with its process (even `kill -9`).
//! Shards are written under a temporary name unique to the process and
//! renamed, the manifest is rewritten atomically after each one (both through
//! `sae_steer_files`: fsync, rename, folder fsync). The reader only sees
//! shards the manifest lists, so a crash never exposes a half-written shard,
//! and [`build_cache`] resumes from the last complete shard, removing the
//! dead run's temporaries.
//!
//! Everything read back is checked before it is used: the manifest's sizes
//! ([`CacheManifest::validate`]: no zero patch or image size, shard files
//! named by position inside the folder, checked arithmetic), each shard's
//! tensor shapes against the manifest, image indices and labels (0..=150).
//!
//! ```no_run
//! use sae_steer_data::cache::ActivationCache;
//! # fn main() -> Result<(), sae_steer_data::cache::CacheError> {
//! let cache = ActivationCache::open("caches/ade20k-val")?;
//! let mut x = Vec::new();
//! cache.read_images("final_norm", &[0, 1, 2], &mut x)?; // [3, 256, 768] as f32
//! for batch in cache.patch_batches("layer10", 5..261, 16_384, 0)? {
//!     let batch = batch?; // [16384, 768], shuffled patch rows
//! #   let _ = batch;
//! }
//! # Ok(()) }
//! ```

mod build;
mod error;
mod manifest;
mod parts;
mod reader;
mod shard;

pub use build::{CacheReport, CacheSpec, build_cache, build_cache_until};
pub use error::CacheError;
pub use manifest::{
    CacheDtype, CacheManifest, FORMAT, ImagesInfo, LabelKind, PreprocessInfo, ShardEntry,
    SkippedImage, TapPoint, TapRequest, TapSpec, TapTokens,
};
pub use parts::{PartInfo, part_range};
pub use reader::{ActivationCache, DEFAULT_SHUFFLE_WINDOW, PatchBatches};

/// Name of the manifest file inside a cache directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// File name of shard `k`.
pub fn shard_file_name(k: usize) -> String {
    format!("shard-{k:05}.safetensors")
}

/// `k` of a [`shard_file_name`]; `None` for any other name.
pub fn parse_shard_file_name(name: &str) -> Option<usize> {
    name.strip_prefix("shard-")
        .and_then(|n| n.strip_suffix(".safetensors"))
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .filter(|&k| shard_file_name(k) == name)
}

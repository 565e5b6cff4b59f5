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
//! Shards are written under a temporary name and renamed; the manifest is
//! rewritten atomically after each one. The reader only sees shards the
//! manifest lists, so a crash never exposes a half-written shard, and
//! [`build_cache`] resumes from the last complete shard.
//!
//! ```no_run
//! use sae_steer_ade20k::cache::ActivationCache;
//! # fn main() -> Result<(), sae_steer_ade20k::cache::CacheError> {
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
mod reader;
mod shard;

pub use build::{CacheReport, CacheSpec, build_cache, build_cache_until};
pub use error::CacheError;
pub use manifest::{
    CacheDtype, CacheManifest, FORMAT, ImagesInfo, LabelKind, PreprocessInfo, ShardEntry,
    SkippedImage, TapPoint, TapRequest, TapSpec, TapTokens,
};
pub use reader::{ActivationCache, DEFAULT_SHUFFLE_WINDOW, PatchBatches};

/// Name of the manifest file inside a cache directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// File name of shard `k`.
pub fn shard_file_name(k: usize) -> String {
    format!("shard-{k:05}.safetensors")
}

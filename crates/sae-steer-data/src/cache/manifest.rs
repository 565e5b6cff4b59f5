//! `manifest.json`: what a cache holds and how it was made.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use sae_steer_vit::{Preprocess, Resample, ResizeRule, VitConfig};
use serde::{Deserialize, Serialize};

use super::parts::PartInfo;
use super::{CacheError, MANIFEST_FILE};

/// Value of the manifest's `format` field.
pub const FORMAT: &str = "sae-steer-cache/1";

/// How a tap's activations are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheDtype {
    /// Half precision: half the disk, ~1e-3 relative rounding. Fine for SAE
    /// and probe training; not for caches that feed steering (reference facts section 8).
    F16,
    F32,
}

impl CacheDtype {
    pub fn size(self) -> usize {
        match self {
            Self::F16 => 2,
            Self::F32 => 4,
        }
    }
}

impl fmt::Display for CacheDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F16 => "f16",
            Self::F32 => "f32",
        })
    }
}

/// Which tokens of a layer a tap keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TapTokens {
    /// The prefix tokens (CLS where the family has one, registers) and the
    /// patches, in the model's order: `[CLS, reg0.., patch0..]`.
    All,
    /// The patch tokens only, row-major over the patch grid.
    Patches,
}

impl fmt::Display for TapTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::All => "all",
            Self::Patches => "patches",
        })
    }
}

/// Where in the network a tap reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapPoint {
    /// The residual stream after block `L` (0-based), before the final norm.
    Layer(usize),
    /// The final LayerNorm of the last block's output (`x_norm_*` in DINOv2).
    FinalNorm,
}

/// One tap the builder is asked for.
///
/// Parsed from `layer10`, `layer10:f16`, `layer10:patches:f16`,
/// `final_norm:f16`, `final_norm:all`: a point, then optional token
/// selection (`all`, `patches`) and dtype (`f16`, `f32`) in any order.
/// Defaults: all tokens for a layer, patches for `final_norm` (the probe's
/// input), f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapRequest {
    pub point: TapPoint,
    pub tokens: TapTokens,
    pub dtype: CacheDtype,
}

impl TapRequest {
    /// A layer tap with every token.
    pub fn layer(layer: usize, dtype: CacheDtype) -> Self {
        Self {
            point: TapPoint::Layer(layer),
            tokens: TapTokens::All,
            dtype,
        }
    }

    /// The final norm's patch tokens (the probe's input).
    pub fn final_norm(dtype: CacheDtype) -> Self {
        Self {
            point: TapPoint::FinalNorm,
            tokens: TapTokens::Patches,
            dtype,
        }
    }

    /// The tensor name in the shards: `layer{L}` or `final_norm`.
    pub fn name(&self) -> String {
        match self.point {
            TapPoint::Layer(l) => format!("layer{l}"),
            TapPoint::FinalNorm => "final_norm".into(),
        }
    }

    /// What this tap stores for a model and crop size.
    pub fn spec(&self, config: &VitConfig, crop: usize) -> TapSpec {
        let grid = crop / config.patch_size;
        let patches = grid * grid;
        TapSpec {
            name: self.name(),
            layer: match self.point {
                TapPoint::Layer(l) => Some(l),
                TapPoint::FinalNorm => None,
            },
            tokens: self.tokens,
            n_tokens: match self.tokens {
                TapTokens::All => config.prefix_tokens() + patches,
                TapTokens::Patches => patches,
            },
            dim: config.hidden_size,
            dtype: self.dtype,
        }
    }
}

impl FromStr for TapRequest {
    type Err = CacheError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            CacheError::Spec(format!(
                "tap `{s}`: {why} (expected e.g. layer10:f32, final_norm:f16, layer10:patches:f16)"
            ))
        };
        let mut parts = s.trim().split(':');
        let point = match parts.next().unwrap_or("") {
            "final_norm" | "norm" => TapPoint::FinalNorm,
            p => TapPoint::Layer(
                p.strip_prefix("layer")
                    .and_then(|l| l.parse().ok())
                    .ok_or_else(|| bad("the tap point must be layer<N> or final_norm"))?,
            ),
        };
        let mut req = match point {
            TapPoint::Layer(l) => Self::layer(l, CacheDtype::F32),
            TapPoint::FinalNorm => Self::final_norm(CacheDtype::F32),
        };
        for part in parts {
            match part {
                "f16" => req.dtype = CacheDtype::F16,
                "f32" => req.dtype = CacheDtype::F32,
                "all" => req.tokens = TapTokens::All,
                "patches" => req.tokens = TapTokens::Patches,
                other => return Err(bad(&format!("unknown option `{other}`"))),
            }
        }
        Ok(req)
    }
}

/// Which labels a cache stores beside the activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelKind {
    /// Images only (e.g. an ImageNet folder).
    #[default]
    None,
    /// Per-patch labels and purity.
    Patch,
    /// Patch labels and the crop x crop pixel labels (for validation mIoU).
    Pixel,
}

impl fmt::Display for LabelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Patch => "patch",
            Self::Pixel => "pixel",
        })
    }
}

impl FromStr for LabelKind {
    type Err = CacheError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "patch" | "patches" => Ok(Self::Patch),
            "pixel" | "pixels" => Ok(Self::Pixel),
            other => Err(CacheError::Spec(format!(
                "labels `{other}`: expected none, patch or pixel"
            ))),
        }
    }
}

/// One tap as stored: tensor `name` of shape `[rows, n_tokens, dim]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapSpec {
    pub name: String,
    /// The block index for `layer{L}` taps; `None` for `final_norm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    pub tokens: TapTokens,
    pub n_tokens: usize,
    pub dim: usize,
    pub dtype: CacheDtype,
}

impl TapSpec {
    /// Bytes of one image (row) of this tap.
    pub fn row_bytes(&self) -> usize {
        self.n_tokens * self.dim * self.dtype.size()
    }
}

/// The image pipeline the activations were computed with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessInfo {
    pub resize: u32,
    pub crop: u32,
    /// Absent in manifests written before other backbones: they are square
    /// bilinear (the DINOv2 reference pipeline).
    #[serde(default)]
    pub rule: ResizeRule,
    #[serde(default)]
    pub resample: Resample,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl From<&Preprocess> for PreprocessInfo {
    fn from(p: &Preprocess) -> Self {
        Self {
            resize: p.resize,
            crop: p.crop,
            rule: p.rule,
            resample: p.resample,
            mean: p.mean,
            std: p.std,
        }
    }
}

/// The image list a cache was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagesInfo {
    pub count: usize,
    /// `ImageList::fingerprint` of the list.
    pub fingerprint: String,
}

/// A complete shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub rows: usize,
    /// Dataset position of the shard's first row.
    pub first_image: usize,
    /// File size, checked when the shard is opened (0: not recorded).
    #[serde(default)]
    pub bytes: u64,
}

/// An image left out with `skip_bad`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedImage {
    /// Dataset position.
    pub index: usize,
    pub path: String,
    pub error: String,
}

/// The content of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheManifest {
    pub format: String,
    /// The ViT as the user named it (hub id, folder or file).
    pub model: String,
    pub model_config: VitConfig,
    pub preprocess: PreprocessInfo,
    pub images: ImagesInfo,
    pub taps: Vec<TapSpec>,
    pub labels: LabelKind,
    pub shard_images: usize,
    /// Complete shards only, in dataset order.
    pub shards: Vec<ShardEntry>,
    /// Dataset position to resume from.
    pub next_image: usize,
    pub complete: bool,
    #[serde(default)]
    pub skipped: Vec<SkippedImage>,
    /// A part's own manifest (`cache --shard I/N`): which part, and the
    /// dataset positions it covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<PartInfo>,
    /// A merged manifest: how many parts built the cache (0: one process).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parts: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl CacheManifest {
    /// Reads `<dir>/manifest.json` and checks it (see [`Self::validate`]), so
    /// no size read from it is used unchecked.
    pub fn read(dir: &Path) -> Result<Self, CacheError> {
        Self::read_file(&dir.join(MANIFEST_FILE))
    }

    /// [`Self::read`] of a manifest file by its path (a part's own
    /// `part-000I-of-000N.json`, or `manifest.json`).
    pub fn read_file(path: &Path) -> Result<Self, CacheError> {
        let path = path.to_path_buf();
        // A manifest lists one entry per shard: megabytes at most. The
        // bound keeps a hostile (or misnamed) huge file from being read.
        const MAX_MANIFEST_BYTES: u64 = 64 << 20;
        let len = std::fs::metadata(&path)
            .map_err(|e| CacheError::io(&path, e))?
            .len();
        if len > MAX_MANIFEST_BYTES {
            return Err(CacheError::Manifest {
                path,
                message: format!(
                    "the file has {len} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have"
                ),
            });
        }
        // Bounded again while reading: the file may grow after the check.
        let text = sae_steer_files::read_to_string_bounded(&path, MAX_MANIFEST_BYTES)
            .map_err(|e| CacheError::io(&path, e))?;
        Self::parse(&text).map_err(|message| CacheError::Manifest { path, message })
    }

    /// Parses and checks manifest text; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks everything a reader or a resumed build relies on, before any of
    /// it sizes an allocation or an index: the format; non-zero patch size,
    /// hidden size, image sizes and shard size; the crop a multiple of the
    /// patch size; each tap's token count and width as the model and crop
    /// imply them (so row sizes are computed with checked arithmetic once,
    /// here); shard files named `shard-NNNNN.safetensors` in order (never a
    /// path: nothing outside the cache folder is opened); shard rows and
    /// positions consistent with the progress counts.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format `{}`, this version reads `{FORMAT}`",
                self.format
            ));
        }
        let c = &self.model_config;
        // The model's own rules (sizes, heads, layers, eps), as for a config.json.
        c.validate().map_err(|e| format!("model config: {e}"))?;
        let p = &self.preprocess;
        if p.resize == 0 || p.crop == 0 || p.crop > p.resize {
            return Err(format!(
                "preprocessing resize {} crop {}: both must be at least 1 and the crop at most the resize",
                p.resize, p.crop
            ));
        }
        if !(p.crop as usize).is_multiple_of(c.patch_size) {
            return Err(format!(
                "crop {} is not a multiple of the patch size {}",
                p.crop, c.patch_size
            ));
        }
        if self.shard_images == 0 {
            return Err("shard size 0: a shard holds at least one image".into());
        }
        if self.images.count > u32::MAX as usize {
            return Err(format!(
                "{} images: a cache indexes at most {}",
                self.images.count,
                u32::MAX
            ));
        }
        if self.taps.is_empty() {
            return Err("no taps".into());
        }
        let patches = self.patches_per_image();
        for (i, t) in self.taps.iter().enumerate() {
            let expected_name = match t.layer {
                Some(l) if l < c.num_hidden_layers => format!("layer{l}"),
                Some(l) => {
                    return Err(format!(
                        "tap `{}` reads layer {l}, the model has {} layers",
                        t.name, c.num_hidden_layers
                    ));
                }
                None => "final_norm".into(),
            };
            if t.name != expected_name {
                return Err(format!(
                    "tap `{}` should be called `{expected_name}`",
                    t.name
                ));
            }
            if self.taps[..i].iter().any(|o| o.name == t.name) {
                return Err(format!("tap `{}` is listed twice", t.name));
            }
            let n_tokens = match t.tokens {
                TapTokens::All => c.prefix_tokens().checked_add(patches),
                TapTokens::Patches => Some(patches),
            };
            if Some(t.n_tokens) != n_tokens || t.dim != c.hidden_size {
                return Err(format!(
                    "tap `{}` stores {} tokens of width {}; the model and crop give {} tokens of width {}",
                    t.name,
                    t.n_tokens,
                    t.dim,
                    n_tokens.map_or("too many".into(), |n| n.to_string()),
                    c.hidden_size
                ));
            }
            // Row and shard sizes are products of these: refuse any that
            // does not fit, so plain arithmetic on them is safe from here on.
            let shard_bytes = t
                .n_tokens
                .checked_mul(t.dim)
                .and_then(|n| n.checked_mul(t.dtype.size()))
                .and_then(|n| n.checked_mul(self.shard_images));
            if shard_bytes.is_none_or(|b| b > isize::MAX as usize) {
                return Err(format!(
                    "tap `{}`: {} images of {} x {} values overflow the address space",
                    t.name, self.shard_images, t.n_tokens, t.dim
                ));
            }
        }
        let crop = p.crop as usize;
        if crop
            .checked_mul(crop)
            .and_then(|n| n.checked_mul(self.shard_images))
            .is_none_or(|b| b > isize::MAX as usize)
        {
            return Err(format!(
                "{} images of {crop} x {crop} pixel labels overflow the address space",
                self.shard_images
            ));
        }
        // A part holds the dataset positions start..end and the shard
        // numbers an unsharded build gives them; a merged manifest lists
        // the parts' shards in order (numbers increasing, with gaps where a
        // part skipped images).
        let end_image = match self.part {
            Some(p) => {
                if p.index == 0 || p.index > p.count || self.parts != 0 {
                    return Err(format!("part {} of {} is not a part", p.index, p.count));
                }
                let range = super::parts::part_range(
                    self.images.count,
                    self.shard_images,
                    p.index,
                    p.count,
                );
                if (p.start, p.end) != range || self.next_image < p.start {
                    return Err(format!(
                        "part {} of {} covers images {}..{} and is at image {}; the part's \
                         images are {}..{}",
                        p.index, p.count, p.start, p.end, self.next_image, range.0, range.1
                    ));
                }
                p.end
            }
            None => self.images.count,
        };
        let numbers = self.part.map(|p| p.shard_numbers(self.shard_images));
        let mut rows = 0usize;
        let mut next_first = self.part.map_or(0, |p| p.start);
        let mut next_number = numbers.as_ref().map_or(0, |r| r.start);
        for (k, s) in self.shards.iter().enumerate() {
            let number = super::parse_shard_file_name(&s.file);
            let in_order = match number {
                // One process numbers its shards by position.
                Some(n) if self.part.is_none() && self.parts == 0 => n == k,
                Some(n) => n >= next_number && numbers.as_ref().is_none_or(|r| r.contains(&n)),
                None => false,
            };
            if !in_order {
                let expected = if self.part.is_none() && self.parts == 0 {
                    format!("`{}`", super::shard_file_name(k))
                } else {
                    format!(
                        "`shard-NNNNN.safetensors` numbered from {next_number}{}",
                        numbers
                            .as_ref()
                            .map_or(String::new(), |r| format!(" below {}", r.end))
                    )
                };
                return Err(format!(
                    "shards[{k}].file is `{}`, expected {expected} (shards are files of the cache folder, named by position)",
                    s.file
                ));
            }
            next_number = number.unwrap_or(0) + 1;
            if s.rows == 0 || s.rows > self.shard_images {
                return Err(format!(
                    "{} holds {} rows; a shard holds 1 to {} (the shard size)",
                    s.file, s.rows, self.shard_images
                ));
            }
            let end = s.first_image.checked_add(s.rows);
            if s.first_image < next_first || end.is_none_or(|e| e > self.next_image) {
                return Err(format!(
                    "{} starts at image {} with {} rows: shards must follow each other and end by the next image {}",
                    s.file, s.first_image, s.rows, self.next_image
                ));
            }
            next_first = end.unwrap_or(usize::MAX);
            rows += s.rows; // at most next_image, checked just above
        }
        if self.skipped.iter().any(|s| s.index >= self.next_image) {
            return Err(format!(
                "a skipped image lies at or after the next image {}",
                self.next_image
            ));
        }
        if rows
            .checked_add(self.skipped.len())
            .is_none_or(|n| n > self.next_image)
            || self.next_image > end_image
            || (self.complete && self.next_image != end_image)
        {
            return Err(format!(
                "inconsistent counts: {rows} rows + {} skipped, next image {}, {} images{}",
                self.skipped.len(),
                self.next_image,
                self.images.count,
                if self.complete { ", complete" } else { "" }
            ));
        }
        Ok(())
    }

    /// Writes `<dir>/manifest.json` atomically (exclusive temporary, fsync,
    /// rename, folder fsync).
    pub fn write(&self, dir: &Path) -> Result<(), CacheError> {
        let path = dir.join(self.file_name());
        let text = serde_json::to_string_pretty(self).map_err(|e| CacheError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        sae_steer_files::write_atomic(&path, text.as_bytes()).map_err(|e| CacheError::io(&path, e))
    }

    /// `manifest.json`, or a part's own `part-000I-of-000N.json`.
    pub fn file_name(&self) -> String {
        self.part
            .map_or_else(|| MANIFEST_FILE.to_string(), |p| p.file_name())
    }

    /// Rows (images) in the complete shards.
    pub fn rows(&self) -> usize {
        self.shards.iter().map(|s| s.rows).sum()
    }

    /// Patches per image (labels are per patch of the crop).
    pub fn patches_per_image(&self) -> usize {
        let grid = self.preprocess.crop as usize / self.model_config.patch_size;
        grid * grid
    }

    /// What differs between the settings of two caches (ignoring progress),
    /// one human-readable line per difference; empty when they match.
    pub fn differences(&self, other: &Self) -> Vec<String> {
        let mut out = Vec::new();
        if self.model != other.model {
            out.push(format!(
                "model: cache has `{}`, asked for `{}`",
                self.model, other.model
            ));
        }
        if self.model_config != other.model_config {
            out.push(format!(
                "model config: cache has {}, asked for {}",
                serde_json::to_string(&self.model_config).unwrap_or_default(),
                serde_json::to_string(&other.model_config).unwrap_or_default()
            ));
        }
        if self.preprocess != other.preprocess {
            out.push(format!(
                "preprocessing: cache has {:?}, asked for {:?}",
                self.preprocess, other.preprocess
            ));
        }
        if self.images != other.images {
            out.push(format!(
                "image list: cache has {} images (fingerprint {}), asked for {} images (fingerprint {})",
                self.images.count,
                short(&self.images.fingerprint),
                other.images.count,
                short(&other.images.fingerprint)
            ));
        }
        if self.taps != other.taps {
            let list = |taps: &[TapSpec]| {
                taps.iter()
                    .map(|t| format!("{}:{}:{}", t.name, t.tokens, t.dtype))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            out.push(format!(
                "taps: cache has {}, asked for {}",
                list(&self.taps),
                list(&other.taps)
            ));
        }
        if self.labels != other.labels {
            out.push(format!(
                "labels: cache has {}, asked for {}",
                self.labels, other.labels
            ));
        }
        if self.shard_images != other.shard_images {
            out.push(format!(
                "shard size: cache has {} images per shard, asked for {}",
                self.shard_images, other.shard_images
            ));
        }
        out
    }
}

fn short(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

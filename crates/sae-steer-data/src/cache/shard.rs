//! One shard file: an in-memory buffer that is written atomically, and a
//! memory-mapped view for reading.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::f16;
use safetensors::tensor::{Dtype, View};

use super::{CacheError, CacheManifest, LabelKind, ShardEntry, SkippedImage, TapSpec};

// Shards are read and written by reinterpreting host memory: safetensors is
// little-endian, and so must the host be.
#[cfg(not(target_endian = "little"))]
compile_error!("the activation cache assumes a little-endian host (safetensors is little-endian)");

pub(crate) const IMAGE_INDEX: &str = "image_index";
pub(crate) const PATCH_LABELS: &str = "patch_labels";
pub(crate) const PATCH_PURITY: &str = "patch_purity";
pub(crate) const PIXEL_LABELS: &str = "pixel_labels";

/// The activations of one tap for the rows of a shard under construction.
pub(crate) enum TapData {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl TapData {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::F32(v) => bytemuck::cast_slice(v),
            Self::F16(v) => bytemuck::cast_slice(v),
        }
    }

    /// Appends f32 values, rounding to nearest-even for f16 taps.
    pub(crate) fn extend(&mut self, values: &[f32]) {
        use half::slice::HalfFloatSliceExt;
        match self {
            Self::F32(v) => v.extend_from_slice(values),
            Self::F16(v) => {
                let start = v.len();
                v.resize(start + values.len(), f16::ZERO);
                v[start..].convert_from_f32_slice(values);
            }
        }
    }
}

/// A shard being filled, row by row, before it is written.
pub(crate) struct ShardBuffer {
    pub taps: Vec<(TapSpec, TapData)>,
    pub image_index: Vec<u32>,
    pub patch_labels: Vec<u8>,
    pub patch_purity: Vec<u8>,
    pub pixel_labels: Vec<u8>,
    pub rows: usize,
    /// Dataset position of the first row.
    pub first_image: Option<usize>,
    /// Dataset position after the last image this shard accounts for
    /// (including images skipped on the way).
    pub end_image: usize,
    pub skipped: Vec<SkippedImage>,
}

impl ShardBuffer {
    /// An empty shard with room for `capacity` rows.
    pub(crate) fn new(manifest: &CacheManifest, capacity: usize, end_image: usize) -> Self {
        let patches = manifest.patches_per_image();
        let crop = manifest.preprocess.crop as usize;
        let labels = |n: usize, on: bool| Vec::with_capacity(if on { capacity * n } else { 0 });
        Self {
            taps: manifest
                .taps
                .iter()
                .map(|t| {
                    let n = capacity * t.n_tokens * t.dim;
                    let data = match t.dtype {
                        super::CacheDtype::F32 => TapData::F32(Vec::with_capacity(n)),
                        super::CacheDtype::F16 => TapData::F16(Vec::with_capacity(n)),
                    };
                    (t.clone(), data)
                })
                .collect(),
            image_index: Vec::with_capacity(capacity),
            patch_labels: labels(patches, manifest.labels != LabelKind::None),
            patch_purity: labels(patches, manifest.labels != LabelKind::None),
            pixel_labels: labels(crop * crop, manifest.labels == LabelKind::Pixel),
            rows: 0,
            first_image: None,
            end_image,
            skipped: Vec::new(),
        }
    }

    /// Writes the shard to `dir/file` through a temporary file and a rename;
    /// returns the entry for the manifest.
    pub(crate) fn write(
        &self,
        dir: &Path,
        file: &str,
        manifest: &CacheManifest,
    ) -> Result<ShardEntry, CacheError> {
        let rows = self.rows;
        let patches = manifest.patches_per_image();
        let crop = manifest.preprocess.crop as usize;
        let mut views: Vec<(String, Raw)> = Vec::new();
        for (spec, data) in &self.taps {
            let dtype = match data {
                TapData::F32(_) => Dtype::F32,
                TapData::F16(_) => Dtype::F16,
            };
            views.push((
                spec.name.clone(),
                Raw::new(dtype, vec![rows, spec.n_tokens, spec.dim], data.bytes()),
            ));
        }
        views.push((
            IMAGE_INDEX.into(),
            Raw::new(
                Dtype::U32,
                vec![rows],
                bytemuck::cast_slice(&self.image_index),
            ),
        ));
        if manifest.labels != LabelKind::None {
            views.push((
                PATCH_LABELS.into(),
                Raw::new(Dtype::U8, vec![rows, patches], &self.patch_labels),
            ));
            views.push((
                PATCH_PURITY.into(),
                Raw::new(Dtype::U8, vec![rows, patches], &self.patch_purity),
            ));
        }
        if manifest.labels == LabelKind::Pixel {
            views.push((
                PIXEL_LABELS.into(),
                Raw::new(Dtype::U8, vec![rows, crop, crop], &self.pixel_labels),
            ));
        }
        for (name, view) in &views {
            let expected = view.shape.iter().product::<usize>() * view.dtype.bitsize() / 8;
            if view.data.len() != expected {
                // A builder bug, not a user error: refuse to write a shard
                // whose header would lie about its data.
                return Err(CacheError::shard(
                    dir.join(file),
                    format!(
                        "tensor `{name}` holds {} bytes, its shape {:?} needs {expected}",
                        view.data.len(),
                        view.shape
                    ),
                ));
            }
        }

        // An exclusive temporary unique to this process and call: a second
        // builder (refused by the folder lock anyway) or a leftover of a
        // killed run can never share it. Dropped uncommitted, it is removed.
        let path = dir.join(file);
        let out =
            sae_steer_files::AtomicFile::create(&path).map_err(|e| CacheError::io(&path, e))?;
        safetensors::serialize_to_file(views, None, out.temp_path()).map_err(|e| match e {
            // A full disk, say: the file system's error, not a bad shard.
            safetensors::SafeTensorError::IoError(e) => CacheError::io(out.temp_path(), e),
            e => CacheError::shard(out.temp_path(), e.to_string()),
        })?;
        let bytes = out.commit().map_err(|e| CacheError::io(&path, e))?;
        Ok(ShardEntry {
            file: file.to_string(),
            rows,
            first_image: self.first_image.unwrap_or(self.end_image),
            bytes,
        })
    }
}

/// Whether a directory entry is a leftover of an interrupted write:
/// [`sae_steer_files::is_temp_name`], or `.<shard>.tmp` of caches built before
/// the shared implementation.
pub(crate) fn is_temp_file(name: &str) -> bool {
    sae_steer_files::is_temp_name(name) || (name.starts_with('.') && name.ends_with(".tmp"))
}

/// A borrowed tensor for `safetensors::serialize_to_file`.
struct Raw<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: &'a [u8],
}

impl<'a> Raw<'a> {
    fn new(dtype: Dtype, shape: Vec<usize>, data: &'a [u8]) -> Self {
        Self { dtype, shape, data }
    }
}

impl View for Raw<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Where one tensor lies in a mapped shard.
#[derive(Debug, Clone)]
pub(crate) struct TensorLoc {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Absolute offset of the first byte in the file.
    pub start: usize,
}

/// A complete shard, memory-mapped.
pub(crate) struct ShardFile {
    pub path: PathBuf,
    mmap: memmap2::Mmap,
    tensors: HashMap<String, TensorLoc>,
}

impl ShardFile {
    /// Maps a shard and checks that its header is whole and matches the file
    /// length (`expected_bytes`: from the manifest, 0 when unknown).
    pub(crate) fn open(path: &Path, expected_bytes: u64) -> Result<Self, CacheError> {
        let file = File::open(path).map_err(|e| CacheError::io(path, e))?;
        let len = file.metadata().map_err(|e| CacheError::io(path, e))?.len();
        if expected_bytes != 0 && len != expected_bytes {
            return Err(CacheError::shard(
                path,
                format!(
                    "the file is {len} bytes, the manifest records {expected_bytes} (truncated or overwritten); delete the cache directory and rebuild it"
                ),
            ));
        }
        if len < 8 {
            return Err(CacheError::shard(
                path,
                format!("the file is {len} bytes, too short for a safetensors header"),
            ));
        }
        // SAFETY: read-only map of a file only the builder writes, and the
        // builder never rewrites a shard the manifest lists; a file changed by
        // someone else underneath us is outside what any mmap reader can guard.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| CacheError::io(path, e))?;
        let (header_len, metadata) =
            safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| {
                CacheError::shard(
                    path,
                    match e {
                        safetensors::SafeTensorError::MetadataIncompleteBuffer
                        | safetensors::SafeTensorError::InvalidHeaderLength => format!(
                            "the file ({len} bytes) does not match the size its header promises (truncated?)"
                        ),
                        e => format!("not a readable safetensors file: {e}"),
                    },
                )
            })?;
        let base = 8 + header_len;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                (
                    name,
                    TensorLoc {
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start: base + info.data_offsets.0,
                    },
                )
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            tensors,
        })
    }

    /// The location of tensor `name`, checked against a dtype and shape.
    pub(crate) fn expect(
        &self,
        name: &str,
        dtype: Dtype,
        shape: &[usize],
    ) -> Result<TensorLoc, CacheError> {
        let loc = self
            .tensors
            .get(name)
            .ok_or_else(|| CacheError::shard(&self.path, format!("tensor `{name}` is missing")))?;
        if loc.dtype != dtype || loc.shape != shape {
            return Err(CacheError::shard(
                &self.path,
                format!(
                    "tensor `{name}` is {:?} {:?}, the manifest says {dtype:?} {shape:?}",
                    loc.dtype, loc.shape
                ),
            ));
        }
        Ok(loc.clone())
    }

    pub(crate) fn bytes(&self, start: usize, end: usize) -> &[u8] {
        &self.mmap[start..end]
    }

    /// Asks the kernel to read the whole file ahead (sequential scans).
    pub(crate) fn advise_willneed(&self) {
        #[cfg(unix)]
        let _ = self.mmap.advise(memmap2::Advice::WillNeed);
    }
}

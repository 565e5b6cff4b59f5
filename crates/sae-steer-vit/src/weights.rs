//! Reading named float tensors from checkpoint files.
//!
//! Two containers matter for DINOv2 and saev: safetensors (Hugging Face) and
//! `torch.save` zip archives (torch hub, saev; [`TorchFile`]). Both are read
//! lazily, tensor by tensor, from a memory map, so loading a model never holds
//! the file and the model in memory twice.
//!
//! Both are hostile-input safe in the same way: when a file is opened, every
//! tensor's declared size (checked multiplication of its shape, times the
//! dtype size) is checked against the bytes the file really holds, so a
//! later read is a slice of the map and never a short, zero-filled or
//! oversized allocation.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::Metadata};

use crate::error::{Result, VitError};

mod pickle;
mod torch;

pub use pickle::TorchDtype;
pub use torch::TorchFile;

/// The largest safetensors header (JSON) accepted. Real headers are a few
/// hundred bytes per tensor (a 7B LLM's: about 30 KB); the format's own limit
/// of 100 MB would let a hostile file make the JSON parser build a huge map.
pub const MAX_SAFETENSORS_HEADER: u64 = 16 << 20;

/// A float tensor on the host: row-major data and its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }
}

/// A checkpoint file whose tensors can be read one at a time by name.
pub trait TensorSource {
    /// The file behind the tensors, for error messages.
    fn path(&self) -> &Path;
    /// Names of all tensors in the file.
    fn names(&self) -> Vec<String>;
    /// Shape of a tensor, `None` when it is absent.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// Reads a tensor as f32 (f16 and bf16 are widened, f64 narrowed).
    fn read(&self, name: &str) -> Result<HostTensor>;

    /// Reads a tensor and checks its shape, naming both on a mismatch.
    fn read_shaped(&self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let found = self.shape(name).ok_or_else(|| VitError::MissingTensor {
            path: self.path().to_path_buf(),
            name: name.to_string(),
        })?;
        if found != expected {
            return Err(VitError::ShapeMismatch {
                path: self.path().to_path_buf(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found,
            });
        }
        self.read(name)
    }

    /// Whether a tensor with this name exists.
    fn contains(&self, name: &str) -> bool {
        self.shape(name).is_some()
    }
}

/// A memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    header_len: usize,
    metadata: Metadata,
}

impl SafetensorsFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut file = File::open(&path).map_err(|e| VitError::io(&path, e))?;
        let format_error = |message: String| VitError::Format {
            path: path.clone(),
            format: "safetensors",
            message,
        };
        // The header length comes first: bound it before the parser sees it.
        let mut len = [0u8; 8];
        if file.read_exact(&mut len).is_ok() {
            let header = u64::from_le_bytes(len);
            if header > MAX_SAFETENSORS_HEADER {
                return Err(format_error(format!(
                    "the header declares {header} bytes of JSON, more than the \
                     {MAX_SAFETENSORS_HEADER} this reader accepts (corrupt or not safetensors)"
                )));
            }
        }
        // SAFETY: the map is read-only; a file truncated underneath us is a
        // user error we cannot guard against, as with every mmap reader.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| VitError::io(&path, e))?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| VitError::Format {
                path: path.clone(),
                format: "safetensors",
                message: match e {
                    safetensors::SafeTensorError::MetadataIncompleteBuffer
                    | safetensors::SafeTensorError::HeaderTooSmall
                    | safetensors::SafeTensorError::InvalidHeaderLength => {
                        format!("{e} (the file is truncated or not safetensors)")
                    }
                    safetensors::SafeTensorError::TensorInvalidInfo
                    | safetensors::SafeTensorError::ValidationOverflow => {
                        format!("{e}: a tensor's data bytes do not match its shape and dtype")
                    }
                    e => e.to_string(),
                },
            })?;
        // read_metadata checks these too (safetensors 0.7); they are repeated
        // here, in checked arithmetic, because `read` slices the map with
        // them and must not depend on a dependency's version for that.
        // Each tensor's byte range must hold exactly its shape's elements.
        for (name, info) in metadata.tensors() {
            let (start, end) = info.data_offsets;
            let bits = info
                .shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .and_then(|n| n.checked_mul(info.dtype.bitsize()));
            let expected = bits.filter(|b| b % 8 == 0).map(|b| b / 8);
            if end < start || expected != Some(end - start) {
                return Err(format_error(format!(
                    "tensor `{name}` ({:?} {:?}) has {} data bytes, its shape needs {}",
                    info.dtype,
                    info.shape,
                    end.saturating_sub(start),
                    expected.map_or_else(|| "more than can be addressed".into(), |b| b.to_string())
                )));
            }
        }
        // And the data must be in the file: a truncated download fails here,
        // not on first access.
        let needed = 8usize
            .checked_add(header_len)
            .and_then(|n| n.checked_add(metadata.data_len()));
        if needed.is_none_or(|n| mmap.len() < n) {
            return Err(format_error(format!(
                "file is truncated: {} bytes, the header promises {}",
                mmap.len(),
                needed.map_or_else(|| "more than can be addressed".into(), |n| n.to_string())
            )));
        }
        Ok(Self {
            path,
            mmap,
            header_len,
            metadata,
        })
    }

    /// The free-form `__metadata__` map of the header.
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.metadata.metadata().as_ref()
    }
}

impl TensorSource for SafetensorsFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn names(&self) -> Vec<String> {
        self.metadata.tensors().into_keys().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.metadata.info(name).map(|i| i.shape.clone())
    }

    fn read(&self, name: &str) -> Result<HostTensor> {
        let info = self
            .metadata
            .info(name)
            .ok_or_else(|| VitError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        let (start, end) = info.data_offsets;
        let base = 8 + self.header_len;
        let bytes = &self.mmap[base + start..base + end];
        let data = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            other => {
                return Err(VitError::DType {
                    path: self.path.clone(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok(HostTensor::new(info.shape.clone(), data))
    }
}

/// Writes f32 tensors to a safetensors file, atomically: the data goes to a
/// temporary file beside `path` that is renamed over it once complete, so a
/// crash never leaves a half-written file under the final name.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &[(String, HostTensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    use safetensors::tensor::TensorView;
    let path = path.as_ref();
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), b)| {
            TensorView::new(Dtype::F32, t.shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| VitError::Format {
                    path: path.to_path_buf(),
                    format: "safetensors",
                    message: format!("tensor `{name}`: {e}"),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, metadata).map_err(|e| VitError::Format {
        path: path.to_path_buf(),
        format: "safetensors",
        message: e.to_string(),
    })?;
    write_atomic(path, &canonical_safetensors(data))
}

/// `safetensors::serialize`'s bytes with the header's JSON keys in sorted
/// order. The crate writes the metadata from a `HashMap`, whose order changes
/// from process to process, so the same tensors and metadata gave different
/// files; with sorted keys a file is a function of its contents (a resumed
/// run writes the bytes of an uninterrupted one). The sorted header has the
/// same length, so offsets and padding stay; anything unexpected is returned
/// unchanged.
pub fn canonical_safetensors(mut data: Vec<u8>) -> Vec<u8> {
    let Some(len) = data
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(|b: [u8; 8]| u64::from_le_bytes(b))
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n.checked_add(8).is_some_and(|end| end <= data.len()))
    else {
        return data;
    };
    let header = &data[8..8 + len];
    // serde_json's map is ordered by key (no `preserve_order` in this build).
    let sorted =
        serde_json::from_slice::<serde_json::Value>(header).and_then(|v| serde_json::to_vec(&v));
    if let Ok(sorted) = sorted {
        let text = header.trim_ascii_end().len();
        if sorted.len() == text {
            data[8..8 + text].copy_from_slice(&sorted);
        }
    }
    data
}

/// Writes `data` to `path` atomically through the toolkit's one
/// implementation ([`sae_steer_files::write_atomic`]: exclusive temporary,
/// fsync, rename, folder fsync), with the error naming `path`.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    sae_steer_files::write_atomic(path, data).map_err(|e| VitError::io(path, e))
}

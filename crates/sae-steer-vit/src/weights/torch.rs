//! `torch.save` zip archives (PyTorch >= 1.6), checked before any tensor is read.
//!
//! The archive holds `<name>/data.pkl`, a pickle that rebuilds the state dict,
//! and one entry `<name>/data/<key>` per storage with its raw little-endian
//! bytes. [`TorchFile::open`] reads the zip's entry table and the pickle
//! (see [`super::pickle`]) and checks, for every tensor, with checked
//! arithmetic on metadata only:
//!
//! - its storage entry exists, lies inside the file, and an uncompressed
//!   entry declares no more bytes than it stores (a deflated one no more
//!   than deflate can expand its compressed bytes to);
//! - the storage's declared element count times the dtype size fits that
//!   entry (a short storage is an error, never zero-filled);
//! - the tensor's elements (offset, shape and strides) lie inside the storage.
//!
//! A read is then a slice of the memory-mapped file and one conversion: no
//! second copy of the data, no allocation the file's size does not bound.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use zip::{CompressionMethod, ZipArchive};

use super::pickle::{TensorRecord, TorchDtype, read_tensors};
use super::{HostTensor, TensorSource};
use crate::error::{Result, VitError};

const FORMAT: &str = "PyTorch checkpoint";

/// The largest `data.pkl` accepted; a ViT-L state dict's is about 30 KB.
const MAX_PICKLE_BYTES: u64 = 16 << 20;

/// Deflate expands at most about 1032:1 (258-byte matches coded in 2 bits);
/// an entry that claims more is a zip bomb or corrupt. The slack covers the
/// fixed overhead of tiny streams.
const MAX_DEFLATE_RATIO: u64 = 1032;
const DEFLATE_SLACK: u64 = 1024;

/// How an entry's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Stored,
    Deflated,
}

/// One zip entry, its sizes already checked against the file.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    /// Index in the zip's central directory.
    index: usize,
    /// `Err(method)` for compression methods torch never writes.
    method: std::result::Result<Method, String>,
    /// Absolute file offset of the entry's (possibly compressed) bytes.
    data_start: u64,
    /// Uncompressed size.
    size: u64,
}

/// A tensor whose element range has been checked against its storage.
#[derive(Debug, Clone)]
struct Tensor {
    /// `Err(storage class)` for element types this reader cannot decode.
    dtype: std::result::Result<TorchDtype, String>,
    shape: Vec<usize>,
    stride: Vec<usize>,
    numel: usize,
    /// First element in the storage.
    offset: usize,
    /// Elements from `offset` to the last one the tensor touches, + 1.
    span: usize,
    /// Index into [`TorchFile::entries`].
    entry: usize,
}

impl Tensor {
    /// Row-major without gaps (size-1 dimensions may have any stride).
    fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&size, &stride) in self.shape.iter().zip(&self.stride).rev() {
            if size != 1 && stride != expected {
                return false;
            }
            expected = expected.saturating_mul(size);
        }
        true
    }
}

/// A `torch.save` checkpoint: a state dict (nested dicts are flattened with
/// `.`, as `load_state_dict` names them) or one bare tensor, which is named
/// [`TorchFile::ROOT`].
///
/// Prepended bytes are allowed: saev's `sae.pt` and the reference probes'
/// `.pt` put a JSON line before the archive, which the zip reader finds from
/// its end (as for self-extracting archives).
pub struct TorchFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    entries: Vec<Entry>,
    tensors: HashMap<String, Tensor>,
}

impl TorchFile {
    /// The name of the tensor of a `torch.save(tensor)` file.
    pub const ROOT: &'static str = "";

    /// Opens and checks a checkpoint; no tensor data is read yet.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| VitError::io(&path, e))?;
        let meta = file.metadata().map_err(|e| VitError::io(&path, e))?;
        let format_error = |message: String| VitError::Format {
            path: path.clone(),
            format: FORMAT,
            message,
        };
        if !meta.is_file() {
            return Err(format_error("not a regular file".into()));
        }
        if meta.len() == 0 {
            return Err(format_error("the file is empty".into()));
        }
        // SAFETY: the map is read-only; a file truncated underneath us is a
        // user error we cannot guard against, as with every mmap reader.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| VitError::io(&path, e))?;
        let (entries, by_name) = read_entries(&mmap).map_err(format_error)?;
        let tensors = read_tensor_table(&mmap, &entries, &by_name).map_err(format_error)?;
        Ok(Self {
            path,
            mmap,
            entries,
            tensors,
        })
    }

    /// The element type of a tensor; `None` when it is absent or stored in a
    /// type this reader cannot decode (complex, quantized, ...).
    pub fn dtype(&self, name: &str) -> Option<TorchDtype> {
        self.tensors.get(name)?.dtype.clone().ok()
    }

    /// Reads an integer (or bool) tensor exactly, widened to i64: ids above
    /// 2^24 that f32 would round.
    pub fn read_i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let (t, dtype) = self.tensor(name)?;
        let bytes = self.tensor_bytes(t, dtype)?;
        let values = match dtype {
            TorchDtype::I64 => gather(t, &bytes, dtype.size(), |b| i64::from_le_bytes(arr(b))),
            TorchDtype::I32 => gather(t, &bytes, dtype.size(), |b| {
                i64::from(i32::from_le_bytes(arr(b)))
            }),
            TorchDtype::I16 => gather(t, &bytes, dtype.size(), |b| {
                i64::from(i16::from_le_bytes(arr(b)))
            }),
            TorchDtype::I8 => gather(t, &bytes, dtype.size(), |b| i64::from(b[0] as i8)),
            TorchDtype::U8 => gather(t, &bytes, dtype.size(), |b| i64::from(b[0])),
            TorchDtype::Bool => gather(t, &bytes, dtype.size(), |b| i64::from(b[0] != 0)),
            other => {
                return Err(VitError::DType {
                    path: self.path.clone(),
                    name: name.to_string(),
                    dtype: format!("{other} (expected an integer tensor)"),
                });
            }
        };
        Ok((t.shape.clone(), values))
    }

    fn tensor(&self, name: &str) -> Result<(&Tensor, TorchDtype)> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| VitError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        let dtype = t.dtype.clone().map_err(|class| VitError::DType {
            path: self.path.clone(),
            name: name.to_string(),
            dtype: class,
        })?;
        Ok((t, dtype))
    }

    /// The bytes of elements `offset .. offset + span` of a tensor's storage.
    fn tensor_bytes(&self, t: &Tensor, dtype: TorchDtype) -> Result<Cow<'_, [u8]>> {
        let entry = &self.entries[t.entry];
        // Checked when the file was opened: (offset + span) * size fits the entry.
        let start = t.offset * dtype.size();
        let len = t.span * dtype.size();
        let format_error = |message: String| VitError::Format {
            path: self.path.clone(),
            format: FORMAT,
            message: format!("storage `{}`: {message}", entry.name),
        };
        match entry.method {
            Ok(Method::Stored) => {
                let at = entry.data_start as usize + start;
                Ok(Cow::Borrowed(&self.mmap[at..at + len]))
            }
            Ok(Method::Deflated) => {
                let mut zip = ZipArchive::new(Cursor::new(&self.mmap[..]))
                    .map_err(|e| format_error(e.to_string()))?;
                let mut reader = zip
                    .by_index(entry.index)
                    .map_err(|e| format_error(e.to_string()))?;
                let skipped =
                    std::io::copy(&mut (&mut reader).take(start as u64), &mut std::io::sink())
                        .map_err(|e| format_error(e.to_string()))?;
                // `len` is bounded by the entry's declared size, itself bounded
                // by deflate's ratio to the compressed bytes in the file.
                let mut data = vec![0u8; len];
                if skipped != start as u64 || reader.read_exact(&mut data).is_err() {
                    return Err(format_error(format!(
                        "inflates to fewer than the {} bytes it declares (corrupt archive)",
                        entry.size
                    )));
                }
                Ok(Cow::Owned(data))
            }
            Err(ref method) => Err(format_error(format!(
                "compression method {method} is not supported (torch.save stores entries uncompressed)"
            ))),
        }
    }
}

impl TensorSource for TorchFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|t| t.shape.clone())
    }

    fn read(&self, name: &str) -> Result<HostTensor> {
        let (t, dtype) = self.tensor(name)?;
        let bytes = self.tensor_bytes(t, dtype)?;
        let data = match dtype {
            TorchDtype::F32 => gather(t, &bytes, dtype.size(), |b| f32::from_le_bytes(arr(b))),
            TorchDtype::F64 => gather(t, &bytes, dtype.size(), |b| {
                f64::from_le_bytes(arr(b)) as f32
            }),
            TorchDtype::F16 => gather(t, &bytes, dtype.size(), |b| {
                half::f16::from_le_bytes(arr(b)).to_f32()
            }),
            TorchDtype::BF16 => gather(t, &bytes, dtype.size(), |b| {
                half::bf16::from_le_bytes(arr(b)).to_f32()
            }),
            TorchDtype::I64 => gather(t, &bytes, dtype.size(), |b| {
                i64::from_le_bytes(arr(b)) as f32
            }),
            TorchDtype::I32 => gather(t, &bytes, dtype.size(), |b| {
                i32::from_le_bytes(arr(b)) as f32
            }),
            TorchDtype::I16 => gather(t, &bytes, dtype.size(), |b| {
                f32::from(i16::from_le_bytes(arr(b)))
            }),
            TorchDtype::I8 => gather(t, &bytes, dtype.size(), |b| f32::from(b[0] as i8)),
            TorchDtype::U8 => gather(t, &bytes, dtype.size(), |b| f32::from(b[0])),
            TorchDtype::Bool => gather(t, &bytes, dtype.size(), |b| f32::from(u8::from(b[0] != 0))),
        };
        Ok(HostTensor::new(t.shape.clone(), data))
    }
}

/// The first `N` bytes of an element (the caller passes exactly `N`).
fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

/// The tensor's elements in row-major order, decoded from `bytes` (which
/// start at its first element), `size` bytes each.
fn gather<T>(t: &Tensor, bytes: &[u8], size: usize, decode: impl Fn(&[u8]) -> T) -> Vec<T> {
    if t.is_contiguous() {
        return bytes.chunks_exact(size).take(t.numel).map(decode).collect();
    }
    // An odometer over the dimensions of size > 1; a size-1 dimension's index
    // is always 0, so its (possibly huge) stride never enters a sum.
    let dims: Vec<(usize, usize)> = t
        .shape
        .iter()
        .zip(&t.stride)
        .filter(|(size, _)| **size > 1)
        .map(|(&n, &s)| (n, s))
        .collect();
    let mut index = vec![0usize; dims.len()];
    let mut at = 0usize;
    let mut out = Vec::with_capacity(t.numel);
    for _ in 0..t.numel {
        out.push(decode(&bytes[at * size..(at + 1) * size]));
        for (d, &(n, s)) in dims.iter().enumerate().rev() {
            index[d] += 1;
            if index[d] < n {
                at += s;
                break;
            }
            // Checked at open: (n - 1) * s < span.
            at -= (n - 1) * s;
            index[d] = 0;
        }
    }
    out
}

type Entries = (Vec<Entry>, HashMap<String, usize>);

/// The zip's entries, each checked to lie inside the file and to declare
/// no more bytes than its stored bytes can hold.
fn read_entries(mmap: &[u8]) -> std::result::Result<Entries, String> {
    let file_len = mmap.len() as u64;
    let mut zip = ZipArchive::new(Cursor::new(mmap)).map_err(|e| {
        format!("not a torch.save zip archive ({e}); PyTorch writes this format since 1.6")
    })?;
    let mut entries = Vec::with_capacity(zip.len());
    let mut by_name = HashMap::with_capacity(zip.len());
    for index in 0..zip.len() {
        let f = zip
            .by_index_raw(index)
            .map_err(|e| format!("zip entry {index}: {e}"))?;
        let name = f.name().to_string();
        if f.encrypted() {
            return Err(format!("zip entry `{name}` is encrypted"));
        }
        let data_start = f
            .data_start()
            .ok_or_else(|| format!("zip entry `{name}` has no local header"))?;
        let (compressed, size) = (f.compressed_size(), f.size());
        let fits = data_start
            .checked_add(compressed)
            .is_some_and(|end| end <= file_len);
        if !fits {
            return Err(format!(
                "zip entry `{name}` claims {compressed} bytes at byte {data_start}, past the end \
                 of the file ({file_len} bytes): the archive is truncated or corrupt"
            ));
        }
        let method = match f.compression() {
            CompressionMethod::Stored => {
                if size != compressed {
                    return Err(format!(
                        "zip entry `{name}` is stored uncompressed but declares {size} bytes \
                         for its {compressed} stored bytes"
                    ));
                }
                Ok(Method::Stored)
            }
            CompressionMethod::Deflated => {
                let limit = compressed
                    .saturating_mul(MAX_DEFLATE_RATIO)
                    .saturating_add(DEFLATE_SLACK);
                if size > limit {
                    return Err(format!(
                        "zip entry `{name}` declares {size} bytes from {compressed} compressed \
                         bytes, more than deflate can expand to (a zip bomb or a corrupt archive)"
                    ));
                }
                Ok(Method::Deflated)
            }
            other => Err(other.to_string()),
        };
        by_name.insert(name.clone(), entries.len());
        entries.push(Entry {
            name,
            index,
            method,
            data_start,
            size,
        });
    }
    Ok((entries, by_name))
}

/// The bytes of a small entry (the pickle, the byte order), at most `limit`.
fn entry_bytes<'a>(
    mmap: &'a [u8],
    entry: &Entry,
    limit: u64,
) -> std::result::Result<Cow<'a, [u8]>, String> {
    if entry.size > limit {
        return Err(format!(
            "`{}` declares {} bytes, more than the {limit} this reader accepts",
            entry.name, entry.size
        ));
    }
    match entry.method {
        Ok(Method::Stored) => {
            let start = entry.data_start as usize;
            Ok(Cow::Borrowed(&mmap[start..start + entry.size as usize]))
        }
        Ok(Method::Deflated) => {
            let mut zip = ZipArchive::new(Cursor::new(mmap)).map_err(|e| e.to_string())?;
            let reader = zip.by_index(entry.index).map_err(|e| e.to_string())?;
            let mut data = Vec::with_capacity(entry.size as usize);
            reader
                .take(entry.size)
                .read_to_end(&mut data)
                .map_err(|e| format!("`{}`: {e}", entry.name))?;
            Ok(Cow::Owned(data))
        }
        Err(ref method) => Err(format!(
            "`{}` uses compression method {method} (torch.save stores entries uncompressed)",
            entry.name
        )),
    }
}

/// Parses `data.pkl` and checks every tensor against its storage entry.
fn read_tensor_table(
    mmap: &[u8],
    entries: &[Entry],
    by_name: &HashMap<String, usize>,
) -> std::result::Result<HashMap<String, Tensor>, String> {
    // torch.save names the top folder after the file it first wrote
    // (`archive`, `top_values`, ...): the one folder holding a data.pkl.
    let pickles: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            e.name == "data.pkl"
                || (e.name.ends_with("/data.pkl") && e.name.matches('/').count() == 1)
        })
        .collect();
    let pickle = match pickles[..] {
        [one] => one,
        [] => {
            return Err(
                "the zip archive has no data.pkl: not a torch.save checkpoint (PyTorch >= 1.6)"
                    .into(),
            );
        }
        _ => return Err("the zip archive holds more than one data.pkl".into()),
    };
    let prefix = &pickle.name[..pickle.name.len() - "data.pkl".len()];
    if let Some(&i) = by_name.get(&format!("{prefix}byteorder")) {
        let order = entry_bytes(mmap, &entries[i], 16)?;
        if &order[..] != b"little" {
            return Err(format!(
                "byte order `{}`: only little-endian checkpoints are supported",
                String::from_utf8_lossy(&order)
            ));
        }
    }
    let program = entry_bytes(mmap, pickle, MAX_PICKLE_BYTES)?;
    let records = read_tensors(&program).map_err(|e| format!("{}: {e}", pickle.name))?;
    let mut tensors = HashMap::with_capacity(records.len());
    for (name, record) in records {
        let tensor = check_tensor(&name, &record, prefix, entries, by_name)?;
        tensors.insert(name, tensor);
    }
    Ok(tensors)
}

/// The checks of the module docs for one tensor.
fn check_tensor(
    name: &str,
    r: &TensorRecord,
    prefix: &str,
    entries: &[Entry],
    by_name: &HashMap<String, usize>,
) -> std::result::Result<Tensor, String> {
    let label = if name.is_empty() {
        "the tensor".to_string()
    } else {
        format!("tensor `{name}`")
    };
    let storage = format!("{prefix}data/{}", r.storage);
    let &entry = by_name.get(&storage).ok_or_else(|| {
        format!("{label}: its storage `{storage}` is not in the archive (truncated or corrupt)")
    })?;
    let too_big = || format!("{label}: shape {:?} is too large to address", r.shape);
    let to_usize = |v: u64| usize::try_from(v).map_err(|_| too_big());
    let shape = r
        .shape
        .iter()
        .map(|&d| to_usize(d))
        .collect::<Result<Vec<_>, _>>()?;
    let stride = r
        .stride
        .iter()
        .map(|&d| to_usize(d))
        .collect::<Result<Vec<_>, _>>()?;
    let offset = to_usize(r.offset)?;
    let numel = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(too_big)?;
    // Elements from the first to the last one touched: 1 + sum (size - 1) * stride.
    let span = if numel == 0 {
        0
    } else {
        shape
            .iter()
            .zip(&stride)
            .try_fold(1usize, |acc, (&n, &s)| {
                (n - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
            })
            .ok_or_else(too_big)?
    };
    let end = offset.checked_add(span).ok_or_else(too_big)?;
    let storage_numel = to_usize(r.storage_numel)?;
    if end > storage_numel {
        return Err(format!(
            "{label} (shape {shape:?}, storage offset {offset}) needs {end} elements of storage \
             `{storage}`, which declares {storage_numel}: its shape is larger than its storage"
        ));
    }
    if numel > storage_numel {
        return Err(format!(
            "{label} has {numel} elements, more than its storage `{storage}` ({storage_numel}): \
             repeated (zero-stride) elements are not supported"
        ));
    }
    if let Ok(dtype) = &r.dtype {
        let entry = &entries[entry];
        let bytes = storage_numel.checked_mul(dtype.size());
        if bytes.is_none_or(|b| b as u64 > entry.size) {
            return Err(format!(
                "{label}: storage `{storage}` declares {storage_numel} {dtype} elements ({} bytes) \
                 but its archive entry holds {} bytes: the storage is short (truncated or corrupt)",
                bytes.map_or_else(|| "too many".to_string(), |b| b.to_string()),
                entry.size
            ));
        }
    }
    Ok(Tensor {
        dtype: r.dtype.clone(),
        shape,
        stride,
        numel,
        offset,
        span,
        entry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(shape: &[usize], stride: &[usize], span: usize) -> Tensor {
        Tensor {
            dtype: Ok(TorchDtype::U8),
            shape: shape.to_vec(),
            stride: stride.to_vec(),
            numel: shape.iter().product(),
            offset: 0,
            span,
            entry: 0,
        }
    }

    #[test]
    fn strided_reads_follow_the_strides() {
        // [2, 1, 3] with strides [1, huge, 2]: the size-1 dimension's stride
        // never enters a sum; element (i, 0, k) is at i + 2k.
        let t = tensor(&[2, 1, 3], &[1, usize::MAX / 2, 2], 6);
        assert!(!t.is_contiguous());
        let bytes: Vec<u8> = (0..6).collect();
        assert_eq!(gather(&t, &bytes, 1, |b| b[0]), [0, 2, 4, 1, 3, 5]);
        // Contiguous, with an arbitrary stride on a size-1 dimension.
        let t = tensor(&[2, 1, 3], &[3, 99, 1], 6);
        assert!(t.is_contiguous());
        assert_eq!(gather(&t, &bytes, 1, |b| b[0]), [0, 1, 2, 3, 4, 5]);
        // Empty tensors read nothing.
        let t = tensor(&[0, 4], &[4, 1], 0);
        assert!(gather(&t, &[], 1, |b| b[0]).is_empty());
    }

    #[test]
    fn tensor_extents_are_checked_against_the_storage() {
        let entries = [Entry {
            name: "archive/data/0".into(),
            index: 0,
            method: Ok(Method::Stored),
            data_start: 0,
            size: 24,
        }];
        let by_name = HashMap::from([("archive/data/0".to_string(), 0)]);
        let record = |shape: Vec<u64>, stride: Vec<u64>, offset: u64, numel: u64| TensorRecord {
            storage: "0".into(),
            dtype: Ok(TorchDtype::F32),
            storage_numel: numel,
            offset,
            shape,
            stride,
        };
        let check = |r: &TensorRecord| check_tensor("w", r, "archive/", &entries, &by_name);
        assert!(check(&record(vec![2, 3], vec![3, 1], 0, 6)).is_ok());
        // Offset pushes the last element out of the storage.
        let err = check(&record(vec![2, 3], vec![3, 1], 1, 6)).unwrap_err();
        assert!(err.contains("larger than its storage"), "{err}");
        // The storage declares more floats than the entry's 24 bytes.
        let err = check(&record(vec![2, 3], vec![3, 1], 0, 7)).unwrap_err();
        assert!(err.contains("short"), "{err}");
        // Shapes whose products overflow, and zero strides repeating elements.
        let err = check(&record(vec![u64::MAX, 2], vec![1, 1], 0, 6)).unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let err = check(&record(vec![1000], vec![0], 0, 6)).unwrap_err();
        assert!(err.contains("zero-stride"), "{err}");
    }
}

//! Training rows from sets of activation files: safetensors files, our
//! activation caches and saev's activation shards.
//!
//! Safetensors: one tensor per file (same name, same trailing shape),
//! `[items, ..., d]`: every leading dimension is flattened into rows of `d`
//! values. For a 3-D tensor `[items, tokens, d]` (the activation cache's
//! `layer10`, `[images, 261, 768]`) a set of token ranges on axis 1 picks the
//! rows of each item. An activation cache is such a set:
//! [`ActivationShards::open_cache`] reads the shards its manifest lists,
//! through `sae-steer-data`.
//!
//! saev's shards ([`ActivationShards::open_saev`], its `protocol.md`): a
//! folder with `metadata.json`, `acts000000.bin`, ... (raw little-endian f32,
//! C order `[examples_per_shard, layers, tokens, d]`, CLS first when
//! `cls_token`) and, from protocol 1.1, `shards.json` with each file's
//! number of valid examples. One layer is read; its `[tokens, d]` block of
//! each example is an item, as for a 3-D safetensors tensor.
//!
//! Shuffling with bounded memory: the items of all files are cut into chunks
//! of about [`ActivationShards::chunk_rows`] rows; the chunks are shuffled;
//! consecutive chunks make up windows of at most
//! [`ActivationShards::window_rows`] rows; a window is read into memory
//! (contiguous reads from memory-mapped files, f16/bf16 widened to f32) and
//! its rows are shuffled. Memory is one window plus one batch. Every window
//! has its own seed, so a resumed pass can skip whole windows unread.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sae_steer_data::ActivationCache;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Result, SaeError};
use crate::train::data::{Batches, BoxError, TrainingData};
use crate::train::random::SplitMix64;

/// A set of activation files read as one shuffled stream of rows.
#[derive(Clone)]
pub struct ActivationShards {
    set: Arc<ShardSet>,
    /// Selected positions on axis 1 (all `0..inner` unless narrowed).
    tokens: Vec<Range<usize>>,
    /// Target rows per chunk (one contiguous read).
    pub chunk_rows: usize,
    /// Rows held in memory at once.
    pub window_rows: usize,
}

struct ShardSet {
    tensor: String,
    files: Vec<ShardFile>,
    /// Rank of the tensor.
    ndim: usize,
    d: usize,
    /// Rows per item before token selection (product of the middle dims).
    inner: usize,
    /// Rows from one item to the next in a file (`inner`, or for saev's
    /// shards all layers' tokens).
    item_stride: usize,
    /// Rows before an item's first row (saev: the layers before the one read).
    item_offset: usize,
}

struct ShardFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    start: usize,
    dtype: Dtype,
    items: usize,
}

impl std::fmt::Debug for ActivationShards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivationShards")
            .field("tensor", &self.set.tensor)
            .field("files", &self.set.files.len())
            .field("rows", &self.rows())
            .field("dim", &self.set.d)
            .finish()
    }
}

impl ActivationShards {
    /// The complete shards of the activation cache in `dir`, tensor `tap`
    /// (e.g. `layer10`, `[images, 261, 768]`). The cache is opened and
    /// checked by [`ActivationCache::open`] (manifest, shard files inside the
    /// folder, shapes); an incomplete cache gives the shards it has so far.
    pub fn open_cache(dir: impl AsRef<Path>, tap: &str) -> Result<Self> {
        let cache = ActivationCache::open(dir)?;
        cache.tap(tap)?;
        if cache.is_empty() {
            return Err(SaeError::Data(format!(
                "the activation cache in {} holds no completed shard yet",
                cache.dir().display()
            )));
        }
        Self::open(&cache.shard_files(), tap)
    }

    /// Opens `files` and checks that each holds `tensor` as f32, f16 or bf16
    /// with the same trailing shape.
    pub fn open(files: &[PathBuf], tensor: &str) -> Result<Self> {
        if files.is_empty() {
            return Err(SaeError::Data(format!(
                "no safetensors files given for tensor `{tensor}`"
            )));
        }
        let mut opened: Vec<ShardFile> = Vec::with_capacity(files.len());
        let mut tail: Option<(Vec<usize>, PathBuf)> = None;
        for path in files {
            let format_error = |message: String| SaeError::Format {
                path: path.clone(),
                message,
            };
            let file = std::fs::File::open(path).map_err(|e| SaeError::io(path, e))?;
            // SAFETY: read-only map; files changing under a running job are a
            // user error every mmap reader shares.
            let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| SaeError::io(path, e))?;
            let (header_len, meta) = SafeTensors::read_metadata(&mmap)
                .map_err(|e| format_error(format!("not a safetensors file: {e}")))?;
            let info = meta.info(tensor).ok_or_else(|| SaeError::MissingTensor {
                path: path.clone(),
                name: tensor.to_string(),
            })?;
            if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(format_error(format!(
                    "tensor `{tensor}` is {:?}; rows must be F32, F16 or BF16",
                    info.dtype
                )));
            }
            if info.shape.len() < 2 || info.shape.contains(&0) {
                return Err(format_error(format!(
                    "tensor `{tensor}` has shape {:?}; expected [items, ..., d] with no empty axis",
                    info.shape
                )));
            }
            let start = 8 + header_len + info.data_offsets.0;
            let end = 8 + header_len + info.data_offsets.1;
            if mmap.len() < end {
                return Err(format_error(format!(
                    "file is truncated: {} bytes, tensor `{tensor}` ends at byte {end}",
                    mmap.len()
                )));
            }
            let rest = info.shape[1..].to_vec();
            match &tail {
                None => tail = Some((rest, path.clone())),
                Some((first, first_path)) if *first != rest => {
                    return Err(format_error(format!(
                        "tensor `{tensor}` has shape {:?}, but {} has [_, {}]: all files must agree after the first axis",
                        info.shape,
                        first_path.display(),
                        first
                            .iter()
                            .map(|v| v.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                Some(_) => {}
            }
            opened.push(ShardFile {
                path: path.clone(),
                mmap,
                start,
                dtype: info.dtype,
                items: info.shape[0],
            });
        }
        let rest = tail.map(|t| t.0).unwrap_or_default();
        let d = *rest.last().unwrap_or(&1);
        let inner: usize = rest[..rest.len() - 1].iter().product();
        Ok(Self {
            set: Arc::new(ShardSet {
                tensor: tensor.to_string(),
                files: opened,
                ndim: rest.len() + 1,
                d,
                inner,
                item_stride: inner,
                item_offset: 0,
            }),
            tokens: std::iter::once(0..inner).collect(),
            chunk_rows: 4096,
            window_rows: 1 << 18,
        })
    }

    /// Keeps only these positions of axis 1 of a `[items, tokens, d]` tensor
    /// (e.g. `[0..1, 5..261]`: CLS and patches of a 4-register ViT).
    pub fn with_tokens(mut self, ranges: &[Range<usize>]) -> Result<Self> {
        let set = &self.set;
        if set.ndim != 3 {
            return Err(SaeError::Data(format!(
                "token ranges need a [items, tokens, d] tensor; `{}` in {} has {} axes",
                set.tensor,
                set.files[0].path.display(),
                set.ndim
            )));
        }
        if ranges.is_empty() {
            return Err(SaeError::Data("an empty list of token ranges".into()));
        }
        for r in ranges {
            if r.start >= r.end || r.end > set.inner {
                return Err(SaeError::Data(format!(
                    "token range {}..{} is empty or past the {} tokens of `{}`",
                    r.start, r.end, set.inner, set.tensor
                )));
            }
        }
        let mut sorted = ranges.to_vec();
        sorted.sort_by_key(|r| r.start);
        if sorted.windows(2).any(|w| w[0].end > w[1].start) {
            return Err(SaeError::Data(format!(
                "token ranges {ranges:?} overlap: a row would be read twice per pass"
            )));
        }
        self.tokens = ranges.to_vec();
        Ok(self)
    }

    fn rows_per_item(&self) -> usize {
        rows_per_item(&self.tokens)
    }

    /// Width of a row.
    pub fn dim(&self) -> usize {
        self.set.d
    }

    /// Rows in one pass.
    pub fn rows(&self) -> u64 {
        self.set.files.iter().map(|f| f.items as u64).sum::<u64>() * self.rows_per_item() as u64
    }

    /// Items (images) over all files, in file order.
    pub fn items(&self) -> usize {
        self.set.files.iter().map(|f| f.items).sum()
    }

    /// Rows each item contributes (the selected tokens).
    pub fn tokens_per_item(&self) -> usize {
        self.rows_per_item()
    }

    /// Reads whole items in order, `[ids.len(), tokens_per_item, d]` into
    /// `buf` (replacing its content): the per-image access the feature
    /// statistics need. Ids count across the files in order.
    pub fn read_items(&self, ids: &[usize], buf: &mut Vec<f32>) -> Result<()> {
        let set = &self.set;
        let d = set.d;
        buf.clear();
        buf.reserve(ids.len() * self.rows_per_item() * d);
        for &id in ids {
            let mut local = id;
            let file = set
                .files
                .iter()
                .find(|f| {
                    let here = local < f.items;
                    if !here {
                        local -= f.items;
                    }
                    here
                })
                .ok_or_else(|| {
                    SaeError::Data(format!(
                        "item {id} is past the {} items of `{}`",
                        self.items(),
                        set.tensor
                    ))
                })?;
            let size = match file.dtype {
                Dtype::F32 => 4,
                _ => 2,
            };
            for r in &self.tokens {
                let first = (local * set.item_stride + set.item_offset + r.start) * d * size;
                let bytes = &file.mmap[file.start + first..file.start + first + r.len() * d * size];
                widen(bytes, file.dtype, buf);
            }
        }
        Ok(())
    }

    /// The files, in the order given.
    pub fn files(&self) -> Vec<&Path> {
        self.set.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// One shuffled pass in batches of `batch` rows (the last may be shorter).
    pub fn epoch(&self, seed: u64, batch: usize) -> ShardBatches {
        self.epoch_from(seed, batch, 0)
    }

    /// The pass of [`ActivationShards::epoch`] without its first
    /// `skip_batches` batches; whole windows before the resume point are not read.
    pub fn epoch_from(&self, seed: u64, batch: usize, skip_batches: u64) -> ShardBatches {
        let per_item = self.rows_per_item();
        let chunk_items = (self.chunk_rows / per_item).max(1);
        let mut chunks = Vec::new();
        for (f, file) in self.set.files.iter().enumerate() {
            let mut start = 0;
            while start < file.items {
                let end = (start + chunk_items).min(file.items);
                chunks.push(Chunk {
                    file: f,
                    items: start..end,
                });
                start = end;
            }
        }
        SplitMix64::stream(seed, &[0]).shuffle(&mut chunks);
        let mut windows: Vec<Vec<Chunk>> = Vec::new();
        let mut rows = 0;
        for c in chunks {
            let r = c.items.len() * per_item;
            match windows.last_mut() {
                Some(w) if rows + r <= self.window_rows.max(1) => {
                    w.push(c);
                    rows += r;
                }
                _ => {
                    windows.push(vec![c]);
                    rows = r;
                }
            }
        }
        let mut it = ShardBatches {
            set: Arc::clone(&self.set),
            tokens: self.tokens.clone(),
            seed,
            batch: batch.max(1),
            windows,
            next_window: 0,
            buffer: Vec::new(),
            order: Vec::new(),
            pos: 0,
            pending_skip: 0,
        };
        let mut skip = skip_batches.saturating_mul(batch as u64);
        while it.next_window < it.windows.len() {
            let r = it.window_rows(it.next_window) as u64;
            if skip < r {
                break;
            }
            skip -= r;
            it.next_window += 1;
        }
        it.pending_skip = skip as usize;
        it
    }
}

fn rows_per_item(tokens: &[Range<usize>]) -> usize {
    tokens.iter().map(|r| r.len()).sum()
}

struct Chunk {
    file: usize,
    items: Range<usize>,
}

/// The batches of one pass over [`ActivationShards`].
pub struct ShardBatches {
    set: Arc<ShardSet>,
    tokens: Vec<Range<usize>>,
    seed: u64,
    batch: usize,
    windows: Vec<Vec<Chunk>>,
    next_window: usize,
    /// The current window, `[rows, d]`.
    buffer: Vec<f32>,
    /// Its rows in shuffled order.
    order: Vec<u32>,
    pos: usize,
    /// Rows of the next window to drop (resume inside a window).
    pending_skip: usize,
}

impl ShardBatches {
    fn window_rows(&self, w: usize) -> usize {
        let per_item = rows_per_item(&self.tokens);
        self.windows[w]
            .iter()
            .map(|c| c.items.len() * per_item)
            .sum()
    }

    /// Reads the next window into memory and shuffles its rows.
    fn load_window(&mut self) -> Result<bool> {
        if self.next_window >= self.windows.len() {
            return Ok(false);
        }
        let w = self.next_window;
        self.next_window += 1;
        let set = &self.set;
        let d = set.d;
        let rows = self.window_rows(w);
        self.buffer.clear();
        self.buffer.reserve(rows * d);
        for chunk in &self.windows[w] {
            let file = &set.files[chunk.file];
            let size = match file.dtype {
                Dtype::F32 => 4,
                _ => 2,
            };
            for item in chunk.items.clone() {
                for r in &self.tokens {
                    let first = (item * set.item_stride + set.item_offset + r.start) * d * size;
                    let bytes =
                        &file.mmap[file.start + first..file.start + first + r.len() * d * size];
                    widen(bytes, file.dtype, &mut self.buffer);
                }
            }
        }
        if let Some(bad) = self.buffer.iter().position(|v| v.is_nan()) {
            let chunk = &self.windows[w];
            return Err(SaeError::Data(format!(
                "NaN in `{}` (window of {} chunks, first in {}), row {} of the window",
                set.tensor,
                chunk.len(),
                set.files[chunk[0].file].path.display(),
                bad / d
            )));
        }
        self.order = (0..rows as u32).collect();
        SplitMix64::stream(self.seed, &[1, w as u64]).shuffle(&mut self.order);
        self.pos = std::mem::take(&mut self.pending_skip).min(rows);
        Ok(true)
    }
}

impl Iterator for ShardBatches {
    type Item = Result<Vec<f32>>;

    fn next(&mut self) -> Option<Self::Item> {
        let d = self.set.d;
        let mut out = Vec::with_capacity(self.batch * d);
        while out.len() < self.batch * d {
            if self.pos >= self.order.len() {
                match self.load_window() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => return Some(Err(e)),
                }
            }
            let take = (self.batch - out.len() / d).min(self.order.len() - self.pos);
            for &r in &self.order[self.pos..self.pos + take] {
                let r = r as usize;
                out.extend_from_slice(&self.buffer[r * d..(r + 1) * d]);
            }
            self.pos += take;
        }
        (!out.is_empty()).then_some(Ok(out))
    }
}

fn widen(bytes: &[u8], dtype: Dtype, out: &mut Vec<f32>) {
    match dtype {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        Dtype::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        _ => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
    }
}

impl<'d> TrainingData<'d> for ActivationShards {
    fn epoch(&mut self, seed: u64, batch: usize) -> std::result::Result<Batches<'d>, BoxError> {
        Ok(Box::new(
            ActivationShards::epoch(self, seed, batch).map(|b| b.map_err(BoxError::from)),
        ))
    }

    fn epoch_from(
        &mut self,
        seed: u64,
        batch: usize,
        skip_batches: u64,
    ) -> std::result::Result<Batches<'d>, BoxError> {
        Ok(Box::new(
            ActivationShards::epoch_from(self, seed, batch, skip_batches)
                .map(|b| b.map_err(BoxError::from)),
        ))
    }
}

/// Parses token ranges: `0..261`, `5..261`, `0..1,5..261`, or single indices (`0`).
pub fn parse_ranges(text: &str) -> Result<Vec<Range<usize>>> {
    let bad = || {
        SaeError::Data(format!(
            "cannot read token ranges `{text}`: expected e.g. 0..1,5..261"
        ))
    };
    text.split(',')
        .map(|part| {
            let part = part.trim();
            match part.split_once("..") {
                Some((a, b)) => {
                    let a: usize = a.trim().parse().map_err(|_| bad())?;
                    let b: usize = b.trim().parse().map_err(|_| bad())?;
                    if a >= b {
                        return Err(bad());
                    }
                    Ok(a..b)
                }
                None => {
                    let a: usize = part.parse().map_err(|_| bad())?;
                    Ok(a..a + 1)
                }
            }
        })
        .collect()
}

/// The largest `metadata.json` / `shards.json` read (real ones are a few KB).
const MAX_JSON_BYTES: u64 = 16 << 20;

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = sae_steer_files::read_to_string_bounded(path, MAX_JSON_BYTES)
        .map_err(|e| SaeError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| SaeError::Format {
        path: path.to_path_buf(),
        message: format!("not JSON: {e}"),
    })
}

/// The geometry of a saev shard folder, from its `metadata.json` (any
/// protocol: the keys were renamed twice).
#[derive(Debug, Clone, PartialEq)]
pub struct SaevShardInfo {
    /// The layers stored, in file order.
    pub layers: Vec<i64>,
    /// Patches per example (without the CLS token).
    pub patches: usize,
    pub cls_token: bool,
    pub d_model: usize,
    pub examples: usize,
    /// Examples each `acts*.bin` has room for.
    pub examples_per_shard: usize,
    /// The backbone family and checkpoint, for reports.
    pub family: Option<String>,
    pub ckpt: Option<String>,
}

impl SaevShardInfo {
    /// Reads `dir/metadata.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("metadata.json");
        let meta = read_json(&path)?;
        let bad = |message: String| SaeError::Format {
            path: path.clone(),
            message,
        };
        let size = |keys: &[&str]| -> Result<usize> {
            for key in keys {
                if let Some(v) = meta.get(*key) {
                    return v
                        .as_u64()
                        .and_then(|v| usize::try_from(v).ok())
                        .filter(|&v| v > 0)
                        .ok_or_else(|| bad(format!("`{key}` is {v}, not a positive size")));
                }
            }
            Err(bad(format!("none of {keys:?} is in metadata.json")))
        };
        let layers: Vec<i64> = meta
            .get("layers")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .filter(|l: &Vec<i64>| !l.is_empty())
            .ok_or_else(|| bad("`layers` is not a non-empty list of integers".into()))?;
        if let Some(dtype) = meta.get("dtype").and_then(|d| d.as_str())
            && dtype != "float32"
        {
            return Err(bad(format!(
                "dtype `{dtype}`: only float32 shards are read"
            )));
        }
        let cls_token = meta
            .get("cls_token")
            .and_then(|c| c.as_bool())
            .ok_or_else(|| bad("`cls_token` is not true or false".into()))?;
        let patches = size(&[
            "content_tokens_per_example",
            "patches_per_ex",
            "n_patches_per_img",
        ])?;
        let d_model = size(&["d_model", "d_vit"])?;
        let examples = size(&["n_examples", "n_imgs"])?;
        let per_shard = size(&[
            "max_tokens_per_shard",
            "patches_per_shard",
            "max_patches_per_shard",
            "n_patches_per_shard",
        ])?;
        let tokens = patches
            .checked_add(usize::from(cls_token))
            .ok_or_else(|| bad(format!("{patches} patches per example is too many")))?;
        let per_example = tokens
            .checked_mul(layers.len())
            .filter(|&t| t <= per_shard)
            .ok_or_else(|| {
                bad(format!(
                    "{tokens} tokens x {} layers per example do not fit the {per_shard} tokens of a shard",
                    layers.len()
                ))
            })?;
        // One example's bytes must be addressable, so no size computed from
        // the metadata later overflows.
        if per_example
            .checked_mul(d_model)
            .and_then(|v| v.checked_mul(4))
            .is_none_or(|b| b > isize::MAX as usize)
        {
            return Err(bad(format!(
                "{per_example} tokens of width {d_model} per example are too large to address"
            )));
        }
        let text = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| meta.get(*k).and_then(|v| v.as_str()).map(str::to_string))
        };
        Ok(Self {
            examples_per_shard: per_shard / per_example,
            family: text(&["family", "vit_family"]),
            ckpt: text(&["ckpt", "vit_ckpt"]),
            layers,
            patches,
            cls_token,
            d_model,
            examples,
        })
    }

    /// Tokens per example and layer: the CLS token (if stored) and the patches.
    pub fn tokens(&self) -> usize {
        self.patches + usize::from(self.cls_token)
    }
}

impl ActivationShards {
    /// The activations of `layer` (a value of `metadata.json`'s `layers`,
    /// e.g. `10` or `-2`) in a saev shard folder, every token of each
    /// example (`[CLS,] patches`; narrow with [`Self::with_tokens`]). Each
    /// file's size is checked against the metadata before it is mapped.
    pub fn open_saev(dir: impl AsRef<Path>, layer: i64) -> Result<Self> {
        let dir = dir.as_ref();
        let info = SaevShardInfo::read(dir)?;
        let layer_index = info
            .layers
            .iter()
            .position(|&l| l == layer)
            .ok_or_else(|| {
                SaeError::Data(format!(
                    "layer {layer} is not in {} (it holds layers {:?})",
                    dir.join("metadata.json").display(),
                    info.layers
                ))
            })?;
        let (t, l, d) = (info.tokens(), info.layers.len(), info.d_model);
        // Valid examples per file: shards.json (protocol >= 1.1) or, before
        // it, full shards and a remainder.
        let listed = dir.join("shards.json");
        let files: Vec<(String, usize)> = if listed.is_file() {
            let bad = |message: String| SaeError::Format {
                path: listed.clone(),
                message,
            };
            let list = read_json(&listed)?;
            let list = list
                .as_array()
                .ok_or_else(|| bad("not a list of shards".into()))?;
            list.iter()
                .map(|s| {
                    let name = s
                        .get("name")
                        .and_then(|n| n.as_str())
                        .filter(|n| {
                            n.starts_with("acts") && n.ends_with(".bin") && !n.contains(['/', '\\'])
                        })
                        .ok_or_else(|| bad(format!("shard {s} has no acts*.bin `name`")))?;
                    let n = s
                        .get("n_examples")
                        .or_else(|| s.get("n_imgs"))
                        .and_then(|n| n.as_u64())
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|&n| n <= info.examples_per_shard)
                        .ok_or_else(|| {
                            bad(format!(
                                "shard {s}: its example count is missing or more than the {} a shard holds",
                                info.examples_per_shard
                            ))
                        })?;
                    Ok((name.to_string(), n))
                })
                .collect::<Result<_>>()?
        } else {
            let mut left = info.examples;
            let mut out = Vec::new();
            while left > 0 {
                let n = left.min(info.examples_per_shard);
                out.push((format!("acts{:06}.bin", out.len()), n));
                left -= n;
            }
            out
        };
        let total: usize = files.iter().map(|f| f.1).sum();
        if total != info.examples {
            return Err(SaeError::Data(format!(
                "{}: the shards hold {total} examples, metadata.json says {}",
                dir.display(),
                info.examples
            )));
        }
        let mut opened = Vec::with_capacity(files.len());
        for (name, items) in files {
            if items == 0 {
                continue;
            }
            let path = dir.join(&name);
            let file = std::fs::File::open(&path).map_err(|e| SaeError::io(&path, e))?;
            let len = file.metadata().map_err(|e| SaeError::io(&path, e))?.len();
            // l t d 4 fits (checked by `SaevShardInfo::read`); the product
            // with the example count is checked here.
            let need = (items as u64)
                .checked_mul((l * t * d * 4) as u64)
                .ok_or_else(|| SaeError::Format {
                    path: path.clone(),
                    message: format!("{items} examples are too many to address"),
                })?;
            if len < need {
                return Err(SaeError::Format {
                    path,
                    message: format!(
                        "{len} bytes, but {items} examples of {l} layers x {t} tokens x {d} f32 need {need}: truncated?"
                    ),
                });
            }
            // SAFETY: read-only map, as for safetensors files.
            let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| SaeError::io(&path, e))?;
            opened.push(ShardFile {
                path,
                mmap,
                start: 0,
                dtype: Dtype::F32,
                items,
            });
        }
        Ok(Self {
            set: Arc::new(ShardSet {
                tensor: format!("layer {layer}"),
                files: opened,
                ndim: 3,
                d,
                inner: t,
                item_stride: l * t,
                item_offset: layer_index * t,
            }),
            tokens: std::iter::once(0..t).collect(),
            chunk_rows: 4096,
            window_rows: 1 << 18,
        })
    }
}

/// saev's optional `labels.bin`: one uint8 class per patch, `[examples,
/// patches]` row-major (no CLS column). `None` when the folder has none.
pub fn read_saev_labels(dir: impl AsRef<Path>) -> Result<Option<Vec<u8>>> {
    let dir = dir.as_ref();
    let info = SaevShardInfo::read(dir)?;
    let path = dir.join("labels.bin");
    if !path.is_file() {
        return Ok(None);
    }
    let need = (info.examples as u64).saturating_mul(info.patches as u64);
    let len = std::fs::metadata(&path)
        .map_err(|e| SaeError::io(&path, e))?
        .len();
    if len != need {
        return Err(SaeError::Format {
            path,
            message: format!(
                "{len} bytes, but {} examples x {} patches need {need}",
                info.examples, info.patches
            ),
        });
    }
    std::fs::read(&path)
        .map(Some)
        .map_err(|e| SaeError::io(&path, e))
}

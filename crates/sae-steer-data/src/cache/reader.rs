//! Reading a cache: whole images (probe, steering) and shuffled patch rows
//! (SAE training), straight from memory-mapped shards.

use std::ops::Range;
use std::path::{Path, PathBuf};

use half::f16;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use safetensors::tensor::Dtype;

use super::shard::{IMAGE_INDEX, PATCH_LABELS, PATCH_PURITY, PIXEL_LABELS, ShardFile, TensorLoc};
use super::{CacheDtype, CacheError, CacheManifest, CacheSpec, LabelKind, ShardEntry, TapSpec};
use crate::{ImageList, MAX_LABEL};

/// Shards whose rows [`ActivationCache::patch_batches`] mixes at a time.
pub const DEFAULT_SHUFFLE_WINDOW: usize = 4;

/// Below this many bytes a read is not worth spreading over threads.
const PARALLEL_READ_BYTES: usize = 16 << 20;

struct OpenShard {
    file: ShardFile,
    /// Parallel to the manifest's taps.
    taps: Vec<TensorLoc>,
    image_index: TensorLoc,
    patch_labels: Option<TensorLoc>,
    patch_purity: Option<TensorLoc>,
    pixel_labels: Option<TensorLoc>,
}

/// A cache opened for reading. Only the shards the manifest lists as complete
/// are visible; rows are numbered 0..len() across shards in dataset order.
pub struct ActivationCache {
    dir: PathBuf,
    manifest: CacheManifest,
    shards: Vec<OpenShard>,
    /// First row of each shard, plus the total at the end.
    row_starts: Vec<usize>,
}

impl ActivationCache {
    /// Opens the cache in `dir`, mapping and checking every complete shard
    /// (header, size, tensor names, dtypes and shapes).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, CacheError> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = super::parts::read_whole(&dir)?;
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut row_starts = vec![0];
        for entry in &manifest.shards {
            let file = ShardFile::open(&dir.join(&entry.file), entry.bytes)?;
            shards.push(check_shard(file, &manifest, entry)?);
            row_starts.push(row_starts.last().copied().unwrap_or(0) + entry.rows);
        }
        Ok(Self {
            dir,
            manifest,
            shards,
            row_starts,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &CacheManifest {
        &self.manifest
    }

    /// The shard files this cache reads: the manifest's complete shards, in
    /// dataset order, inside [`Self::dir`] (the manifest names no other
    /// file), each checked when the cache was opened. For readers of the
    /// safetensors files themselves, such as SAE training.
    pub fn shard_files(&self) -> Vec<PathBuf> {
        self.manifest
            .shards
            .iter()
            .map(|s| self.dir.join(&s.file))
            .collect()
    }

    /// Whether every image of the list has been processed.
    pub fn is_complete(&self) -> bool {
        self.manifest.complete
    }

    /// Whether this cache, complete, can stand in for one built with `spec`
    /// over `images`: same model and image list, every requested tap stored
    /// with the same tokens and at least the requested precision, labels at
    /// least as rich. Extra taps are welcome: one ViT pass over a split can
    /// feed the probe, the SAE and quantify alike.
    pub fn serves(&self, images: &ImageList, spec: &CacheSpec) -> bool {
        let m = &self.manifest;
        let rank = |l: LabelKind| match l {
            LabelKind::None => 0,
            LabelKind::Patch => 1,
            LabelKind::Pixel => 2,
        };
        let has_tap = |want: &super::TapRequest| {
            m.taps.iter().any(|have| {
                have.name == want.name()
                    && have.tokens == want.tokens
                    && have.dtype.size() >= want.dtype.size()
            })
        };
        m.complete
            && m.model == spec.model_id
            // The model's own pipeline is what the same model id recorded.
            && spec
                .preprocess
                .is_none_or(|p| m.preprocess == super::PreprocessInfo::from(&p))
            && m.images.count == images.len()
            && m.images.fingerprint == images.fingerprint()
            && rank(m.labels) >= rank(spec.labels)
            && spec.taps.iter().all(has_tap)
    }

    /// Rows (images) readable.
    pub fn len(&self) -> usize {
        self.row_starts.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored taps.
    pub fn taps(&self) -> &[TapSpec] {
        &self.manifest.taps
    }

    /// The tap called `name`.
    pub fn tap(&self, name: &str) -> Result<&TapSpec, CacheError> {
        Ok(&self.manifest.taps[self.tap_index(name)?])
    }

    fn tap_index(&self, name: &str) -> Result<usize, CacheError> {
        self.manifest
            .taps
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| CacheError::UnknownTap {
                name: name.to_string(),
                available: self.manifest.taps.iter().map(|t| t.name.clone()).collect(),
            })
    }

    /// (shard, row within the shard)
    fn locate(&self, row: usize) -> Result<(usize, usize), CacheError> {
        if row >= self.len() {
            return Err(CacheError::Row {
                row,
                len: self.len(),
            });
        }
        let shard = self.row_starts.partition_point(|&start| start <= row) - 1;
        Ok((shard, row - self.row_starts[shard]))
    }

    /// Reads whole images of one tap as f32: replaces the content of `out` with
    /// `[rows.len(), n_tokens, dim]`, in the order of `rows` (which may be
    /// shuffled and repeat). Reads proceed in file order and, for large
    /// requests, on several threads.
    pub fn read_images(
        &self,
        tap: &str,
        rows: &[usize],
        out: &mut Vec<f32>,
    ) -> Result<(), CacheError> {
        let t = self.tap_index(tap)?;
        let spec = &self.manifest.taps[t];
        let row_len = spec.n_tokens * spec.dim;
        let located = rows
            .iter()
            .map(|&r| self.locate(r))
            .collect::<Result<Vec<_>, _>>()?;
        // Every element is overwritten below: resizing without clearing
        // spares a pass over the buffer when it is reused.
        out.resize(rows.len() * row_len, 0.0);
        if row_len == 0 {
            return Ok(());
        }
        let mut jobs: Vec<((usize, usize), &mut [f32])> =
            located.into_iter().zip(out.chunks_mut(row_len)).collect();
        jobs.sort_unstable_by_key(|(at, _)| *at);
        let copy = |jobs: &mut [((usize, usize), &mut [f32])]| {
            for ((shard, local), dst) in jobs.iter_mut() {
                let src = self.tap_bytes(t, *shard, *local, 0..spec.n_tokens);
                widen(src, spec.dtype, dst);
            }
        };
        let threads = if rows.len() * spec.row_bytes() < PARALLEL_READ_BYTES {
            1
        } else {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(8)
        };
        if threads <= 1 {
            copy(&mut jobs);
        } else {
            let chunk = jobs.len().div_ceil(threads);
            std::thread::scope(|s| {
                for part in jobs.chunks_mut(chunk) {
                    s.spawn(move || copy(part));
                }
            });
        }
        Ok(())
    }

    /// Bytes of tokens `tokens` of one row of tap `t`.
    fn tap_bytes(&self, t: usize, shard: usize, local: usize, tokens: Range<usize>) -> &[u8] {
        let spec = &self.manifest.taps[t];
        let token_bytes = spec.dim * spec.dtype.size();
        let loc = &self.shards[shard].taps[t];
        let row = loc.start + local * spec.row_bytes();
        self.shards[shard].file.bytes(
            row + tokens.start * token_bytes,
            row + tokens.end * token_bytes,
        )
    }

    /// Dataset position (index into the image list) of a row.
    ///
    /// # Panics
    /// If `row >= self.len()`.
    pub fn image_index(&self, row: usize) -> usize {
        let (shard, local) = self
            .locate(row)
            .unwrap_or_else(|e| panic!("ActivationCache::image_index: {e}"));
        let loc = &self.shards[shard].image_index;
        let b = self.shards[shard]
            .file
            .bytes(loc.start + 4 * local, loc.start + 4 * local + 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
    }

    fn label_row(
        &self,
        row: usize,
        pick: impl Fn(&OpenShard) -> Option<&TensorLoc>,
        what: &'static str,
        per_row: usize,
    ) -> Result<&[u8], CacheError> {
        let (shard, local) = self.locate(row)?;
        let loc = pick(&self.shards[shard]).ok_or_else(|| CacheError::NoLabels {
            dir: self.dir.clone(),
            what,
            kind: self.manifest.labels.to_string(),
        })?;
        let start = loc.start + local * per_row;
        Ok(self.shards[shard].file.bytes(start, start + per_row))
    }

    /// Patch labels of a row: one class (0..=150) per patch, row-major.
    pub fn patch_labels(&self, row: usize) -> Result<&[u8], CacheError> {
        let n = self.manifest.patches_per_image();
        self.label_row(row, |s| s.patch_labels.as_ref(), "patch labels", n)
    }

    /// Patch purity of a row: how many of the patch's pixels carry its label.
    pub fn patch_purity(&self, row: usize) -> Result<&[u8], CacheError> {
        let n = self.manifest.patches_per_image();
        self.label_row(row, |s| s.patch_purity.as_ref(), "patch purity", n)
    }

    /// Pixel labels of a row: crop x crop, row-major, each checked to be a
    /// label (0..=150) here rather than when the cache is opened (they are
    /// 50 KB a row).
    pub fn pixel_labels(&self, row: usize) -> Result<&[u8], CacheError> {
        let crop = self.manifest.preprocess.crop as usize;
        let labels = self.label_row(
            row,
            |s| s.pixel_labels.as_ref(),
            "pixel labels",
            crop * crop,
        )?;
        let (shard, local) = self.locate(row)?;
        check_labels(
            &self.shards[shard].file,
            labels,
            crop * crop,
            local,
            "pixel",
        )?;
        Ok(labels)
    }

    /// One epoch of single-token rows `[batch, dim]` (the last batch may be
    /// shorter), shuffled with bounded memory: shards come in a random order
    /// and the `(image, token)` pairs of [`DEFAULT_SHUFFLE_WINDOW`] shards at
    /// a time are shuffled together. `tokens` picks token positions within
    /// each image (`0..1` CLS, `5..261` the patches of ViT-B/14-reg); every
    /// selected token of every row is returned exactly once.
    pub fn patch_batches(
        &self,
        tap: &str,
        tokens: Range<usize>,
        batch: usize,
        seed: u64,
    ) -> Result<PatchBatches<'_>, CacheError> {
        self.patch_batches_windowed(tap, tokens, batch, seed, DEFAULT_SHUFFLE_WINDOW)
    }

    /// [`Self::patch_batches`] mixing `window` shards at a time (memory for
    /// the shuffle grows with it: 12 bytes per selected token).
    pub fn patch_batches_windowed(
        &self,
        tap: &str,
        tokens: Range<usize>,
        batch: usize,
        seed: u64,
        window: usize,
    ) -> Result<PatchBatches<'_>, CacheError> {
        let t = self.tap_index(tap)?;
        let spec = &self.manifest.taps[t];
        if tokens.start >= tokens.end || tokens.end > spec.n_tokens {
            return Err(CacheError::Tokens {
                tap: tap.to_string(),
                start: tokens.start,
                end: tokens.end,
                n_tokens: spec.n_tokens,
            });
        }
        if batch == 0 || window == 0 {
            return Err(CacheError::Spec(
                "patch batches need a batch size and a shuffle window of at least 1".into(),
            ));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut shard_order: Vec<usize> = (0..self.shards.len()).collect();
        shard_order.shuffle(&mut rng);
        Ok(PatchBatches {
            cache: self,
            tap: t,
            remaining: self.len() * tokens.len(),
            tokens,
            batch,
            window,
            rng,
            shard_order,
            next_shard: 0,
            pairs: Vec::new(),
            cursor: 0,
        })
    }
}

/// Checks one shard against the manifest (dtypes, shapes, labels).
pub(super) fn check_shard_file(
    file: ShardFile,
    manifest: &CacheManifest,
    entry: &ShardEntry,
) -> Result<(), CacheError> {
    check_shard(file, manifest, entry).map(|_| ())
}

/// Checks one shard against the manifest and records where its tensors are:
/// tensor dtypes and shapes (so the rows the manifest records are the rows
/// the file holds), image indices increasing within the shard's range of the
/// image list, and patch labels within 0..=150 (a larger one would index past
/// a class table later). Pixel labels are checked as they are read
/// ([`ActivationCache::pixel_labels`]).
fn check_shard(
    file: ShardFile,
    manifest: &CacheManifest,
    entry: &ShardEntry,
) -> Result<OpenShard, CacheError> {
    let rows = entry.rows;
    let taps = manifest
        .taps
        .iter()
        .map(|t| {
            let dtype = match t.dtype {
                CacheDtype::F16 => Dtype::F16,
                CacheDtype::F32 => Dtype::F32,
            };
            file.expect(&t.name, dtype, &[rows, t.n_tokens, t.dim])
        })
        .collect::<Result<Vec<_>, _>>()?;
    let image_index = file.expect(IMAGE_INDEX, Dtype::U32, &[rows])?;
    let indices = file.bytes(image_index.start, image_index.start + 4 * rows);
    let mut previous = None;
    for (row, b) in indices.chunks_exact(4).enumerate() {
        let index = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if index < entry.first_image
            || index >= manifest.next_image
            || previous.is_some_and(|p| index <= p)
        {
            return Err(CacheError::shard(
                &file.path,
                format!(
                    "row {row} is image {index}; the shard's rows are increasing images from {} to before {}",
                    entry.first_image, manifest.next_image
                ),
            ));
        }
        previous = Some(index);
    }
    let patches = manifest.patches_per_image();
    let crop = manifest.preprocess.crop as usize;
    let (patch_labels, patch_purity) = if manifest.labels != LabelKind::None {
        let labels = file.expect(PATCH_LABELS, Dtype::U8, &[rows, patches])?;
        check_labels(
            &file,
            file.bytes(labels.start, labels.start + rows * patches),
            patches,
            0,
            "patch",
        )?;
        (
            Some(labels),
            Some(file.expect(PATCH_PURITY, Dtype::U8, &[rows, patches])?),
        )
    } else {
        (None, None)
    };
    let pixel_labels = if manifest.labels == LabelKind::Pixel {
        Some(file.expect(PIXEL_LABELS, Dtype::U8, &[rows, crop, crop])?)
    } else {
        None
    };
    Ok(OpenShard {
        file,
        taps,
        image_index,
        patch_labels,
        patch_purity,
        pixel_labels,
    })
}

/// Refuses a label above [`MAX_LABEL`] in `per_row`-sized rows of a shard,
/// the first of which is the shard's row `first_row`.
fn check_labels(
    file: &ShardFile,
    labels: &[u8],
    per_row: usize,
    first_row: usize,
    what: &str,
) -> Result<(), CacheError> {
    match labels.iter().position(|&v| v as usize > MAX_LABEL) {
        None => Ok(()),
        Some(at) => Err(CacheError::shard(
            &file.path,
            format!(
                "{what} label {} in row {}, position {}; labels are 0..={MAX_LABEL}",
                labels[at],
                first_row + at / per_row.max(1),
                at % per_row.max(1)
            ),
        )),
    }
}

/// Converts stored values to f32; `dst.len()` elements.
fn widen(src: &[u8], dtype: CacheDtype, dst: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    match dtype {
        CacheDtype::F32 => match bytemuck::try_cast_slice::<u8, f32>(src) {
            Ok(values) => dst.copy_from_slice(values),
            // Unaligned data (not what we write, but legal safetensors).
            Err(_) => {
                for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                    *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        },
        CacheDtype::F16 => match bytemuck::try_cast_slice::<u8, f16>(src) {
            // SIMD (F16C / NEON) where the CPU has it.
            Ok(values) => values.convert_to_f32_slice(dst),
            Err(_) => {
                for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                    *d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
        },
    }
}

/// One selected token: (shard, row within the shard, token position).
#[derive(Clone, Copy)]
struct TokenRef {
    shard: u32,
    row: u32,
    token: u32,
}

/// An epoch of shuffled token rows; see [`ActivationCache::patch_batches`].
pub struct PatchBatches<'a> {
    cache: &'a ActivationCache,
    tap: usize,
    tokens: Range<usize>,
    batch: usize,
    window: usize,
    rng: StdRng,
    shard_order: Vec<usize>,
    next_shard: usize,
    /// The shuffled tokens of the current window.
    pairs: Vec<TokenRef>,
    cursor: usize,
    /// Token rows not yet returned this epoch.
    remaining: usize,
}

impl PatchBatches<'_> {
    /// Token rows per epoch.
    pub fn total_rows(&self) -> usize {
        self.cache.len() * self.tokens.len()
    }

    /// Width of each row.
    pub fn dim(&self) -> usize {
        self.cache.manifest.taps[self.tap].dim
    }

    /// Loads the next window of shards' token list, shuffled.
    fn refill(&mut self) {
        self.pairs.clear();
        self.cursor = 0;
        let end = (self.next_shard + self.window).min(self.shard_order.len());
        for &s in &self.shard_order[self.next_shard..end] {
            let rows = self.cache.row_starts[s + 1] - self.cache.row_starts[s];
            self.cache.shards[s].file.advise_willneed();
            for row in 0..rows {
                for token in self.tokens.clone() {
                    self.pairs.push(TokenRef {
                        shard: s as u32,
                        row: row as u32,
                        token: token as u32,
                    });
                }
            }
        }
        self.next_shard = end;
        self.pairs.shuffle(&mut self.rng);
    }
}

impl PatchBatches<'_> {
    /// The next batch into `out` (its content replaced by `[rows, dim]`), reusing its
    /// allocation; returns the number of rows, 0 once the epoch is over.
    /// Large batches are gathered on several threads.
    pub fn next_into(&mut self, out: &mut Vec<f32>) -> Result<usize, CacheError> {
        let n = self.batch.min(self.remaining);
        if n == 0 {
            out.clear();
            return Ok(0);
        }
        let mut refs = Vec::with_capacity(n);
        while refs.len() < n {
            if self.cursor == self.pairs.len() {
                if self.next_shard >= self.shard_order.len() {
                    // `remaining` counts what the shards hold; running out
                    // early would mean the shard table changed under us.
                    return Err(CacheError::shard(
                        &self.cache.dir,
                        "the shards hold fewer rows than the manifest lists",
                    ));
                }
                self.refill();
                continue;
            }
            let take = (n - refs.len()).min(self.pairs.len() - self.cursor);
            refs.extend_from_slice(&self.pairs[self.cursor..self.cursor + take]);
            self.cursor += take;
        }
        let spec = &self.cache.manifest.taps[self.tap];
        let dim = spec.dim;
        // Every element is overwritten below; no clear, so a reused buffer
        // is not zeroed first.
        out.resize(n * dim, 0.0);
        let copy = |refs: &[TokenRef], out: &mut [f32]| {
            for (r, dst) in refs.iter().zip(out.chunks_mut(dim)) {
                let t = r.token as usize;
                let src =
                    self.cache
                        .tap_bytes(self.tap, r.shard as usize, r.row as usize, t..t + 1);
                widen(src, spec.dtype, dst);
            }
        };
        let threads = if n * dim * 4 < PARALLEL_READ_BYTES / 4 {
            1
        } else {
            std::thread::available_parallelism()
                .map_or(1, |c| c.get())
                .min(8)
        };
        if threads <= 1 {
            copy(&refs, out);
        } else {
            let per = n.div_ceil(threads);
            std::thread::scope(|s| {
                for (refs, out) in refs.chunks(per).zip(out.chunks_mut(per * dim)) {
                    s.spawn(move || copy(refs, out));
                }
            });
        }
        self.remaining -= n;
        Ok(n)
    }
}

impl Iterator for PatchBatches<'_> {
    type Item = Result<Vec<f32>, CacheError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut out = Vec::new();
        match self.next_into(&mut out) {
            Ok(0) => None,
            Ok(_) => Some(Ok(out)),
            Err(e) => {
                self.remaining = 0;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining.div_ceil(self.batch);
        (n, Some(n))
    }
}

impl ExactSizeIterator for PatchBatches<'_> {}

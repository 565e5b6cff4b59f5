//! Building a cache: images are decoded and preprocessed on loader threads
//! while the model runs; full shards are written on a writer thread.
//!
//! ```text
//! loader w (x N) --sync_channel--> main: batch -> forward (all taps at once) -> readback
//!                                        \-- full shard --sync_channel(0)--> writer: shard, manifest
//! ```
//!
//! Plain `std::thread` + bounded `sync_channel`s rather than rayon: each
//! loader owns every N-th image, so the main thread receives images in order
//! from a fixed channel without a reorder buffer, and memory stays bounded
//! (N x prefetch samples + two shards) however large the dataset is. rayon's
//! pool would also compete with burn-ndarray's own rayon pool for the same
//! workers.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use burn::prelude::*;
use half::f16;
use sae_steer_files::{ErrorChain, Phase, SharedProgress};
use sae_steer_vit::{Preprocess, Vit};

use super::reader::check_shard_file;
use super::shard::{ShardBuffer, ShardFile, is_temp_file};
use super::{
    CacheDtype, CacheError, CacheManifest, FORMAT, ImagesInfo, LabelKind, MANIFEST_FILE, PartInfo,
    PreprocessInfo, SkippedImage, TapPoint, TapRequest, TapTokens, shard_file_name,
};
use crate::{ImageItem, ImageList, Sample, load_sample, patch_labels};

/// Largest shard the builder writes (it holds two in memory).
const MAX_SHARD_BYTES: usize = 1 << 30;

/// What to cache and how.
#[derive(Debug, Clone)]
pub struct CacheSpec {
    /// The ViT as the user named it (hub id, folder or `.pth`), recorded in
    /// the manifest; a rerun with another id is refused.
    pub model_id: String,
    pub taps: Vec<TapRequest>,
    pub labels: LabelKind,
    /// Images per shard file.
    pub shard_images: usize,
    /// Images per forward pass.
    pub batch: usize,
    /// Skip (and record) images that cannot be decoded instead of failing.
    pub skip_bad: bool,
    /// The image pipeline; `None` (the default) for the model's own
    /// ([`Vit::preprocess`]: the reference's for DINOv2, the processor
    /// config's for the others).
    pub preprocess: Option<Preprocess>,
    /// Image loader threads; 0 = one per core (at most 16).
    pub workers: usize,
    /// Where the build reports the images it has consumed (one phase,
    /// "caching", counted from the position it resumes at) and the images
    /// it skips; silent by default.
    pub progress: SharedProgress,
    /// Build only part `I` of `N` (1-based) of the image list, beside other
    /// processes building the other parts in the same folder (see
    /// [`super::PartInfo`]).
    pub part: Option<(usize, usize)>,
}

impl CacheSpec {
    /// The image pipeline this request runs with `vit`.
    pub fn preprocess_for<B: Backend>(&self, vit: &Vit<B>) -> Preprocess {
        self.preprocess.unwrap_or_else(|| vit.preprocess())
    }

    /// Defaults: no labels, 256 images per shard, batches of 16, no skipping,
    /// the model's own preprocessing, one loader per core, no progress shown.
    pub fn new(model_id: impl Into<String>, taps: Vec<TapRequest>) -> Self {
        Self {
            model_id: model_id.into(),
            taps,
            labels: LabelKind::None,
            shard_images: 256,
            batch: 16,
            skip_bad: false,
            preprocess: None,
            workers: 0,
            progress: SharedProgress::default(),
            part: None,
        }
    }
}

/// What a [`build_cache`] call did.
#[derive(Debug, Clone)]
pub struct CacheReport {
    pub dir: PathBuf,
    /// Dataset position this run started from (0 for a fresh cache).
    pub resumed_from: usize,
    /// Dataset positions consumed by this run, skipped images included.
    pub images_processed: usize,
    /// Rows written by this run.
    pub rows_written: usize,
    pub shards_written: usize,
    pub bytes_written: u64,
    /// Rows in the cache now.
    pub total_rows: usize,
    /// Images skipped by this run.
    pub skipped: Vec<SkippedImage>,
    /// This build's work is done (for a part: the part).
    pub complete: bool,
    /// The folder reads as one complete cache (for a part: every part is
    /// done and `manifest.json` is merged).
    pub cache_complete: bool,
    pub seconds: f64,
    /// Time the model waited for decoded images (the data pipeline's cost).
    pub seconds_waiting_for_images: f64,
    /// Forward passes and reading the activations back to the host.
    pub seconds_compute: f64,
    /// Time the model waited for the shard writer.
    pub seconds_waiting_for_writer: f64,
}

impl CacheReport {
    pub fn images_per_second(&self) -> f64 {
        self.images_processed as f64 / self.seconds.max(1e-9)
    }
}

/// Computes the requested taps for every image of `images` and stores them in
/// `dir` (see the module docs for the format).
///
/// Resumes an interrupted run from its last complete shard, returns at once
/// for a complete cache, and refuses a directory holding a cache made with
/// another model, taps, labels, shard size, preprocessing or image list, or
/// one another process is building ([`CacheError::Locked`]).
pub fn build_cache<B: Backend>(
    vit: &Vit<B>,
    images: &ImageList,
    dir: &Path,
    spec: &CacheSpec,
) -> Result<CacheReport, CacheError> {
    build_cache_until(vit, images, dir, spec, None)
}

/// [`build_cache`] that stops (as if killed) after writing
/// `stop_after_shards` shards in this call. For crash/resume tests.
#[doc(hidden)]
pub fn build_cache_until<B: Backend>(
    vit: &Vit<B>,
    images: &ImageList,
    dir: &Path,
    spec: &CacheSpec,
    stop_after_shards: Option<usize>,
) -> Result<CacheReport, CacheError> {
    let started = Instant::now();
    let mut wanted = wanted_manifest(vit, images, spec)?;
    if let Some((index, count)) = spec.part {
        let part =
            PartInfo::new(index, count, images.len(), spec.shard_images).ok_or_else(|| {
                CacheError::Spec(format!(
                    "shard {index}/{count}: the part must be 1 to {count} (and N at least 1)"
                ))
            })?;
        wanted.part = Some(part);
        wanted.next_image = part.start;
    }
    // One builder per folder (or per part) for the whole build: a second
    // process is refused at once (naming the holder) instead of
    // interleaving shards and manifests, and leftovers are only removed
    // while we own them. Parts share the folder's lock, so a build of the
    // whole list cannot run beside them. The kernel frees the locks when the
    // process dies, even by kill -9.
    let locked = |error| CacheError::Locked {
        dir: dir.to_path_buf(),
        error,
    };
    let _locks = match wanted.part {
        None => vec![sae_steer_files::FolderLock::acquire(dir).map_err(locked)?],
        Some(part) => vec![
            sae_steer_files::FolderLock::acquire_shared(dir).map_err(locked)?,
            sae_steer_files::FolderLock::acquire_file(dir, &part.lock_name()).map_err(locked)?,
        ],
    };
    let manifest = open_or_create(dir, wanted)?;
    let start = manifest.next_image;
    let mut report = CacheReport {
        dir: dir.to_path_buf(),
        resumed_from: start,
        images_processed: 0,
        rows_written: 0,
        shards_written: 0,
        bytes_written: 0,
        total_rows: manifest.rows(),
        skipped: Vec::new(),
        complete: manifest.complete,
        cache_complete: false,
        seconds: 0.0,
        seconds_waiting_for_images: 0.0,
        seconds_compute: 0.0,
        seconds_waiting_for_writer: 0.0,
    };
    if manifest.complete {
        report.cache_complete = super::parts::whole_cache_complete(dir, &manifest)?;
        return Ok(report);
    }

    let end = manifest.part.map_or(images.len(), |p| p.end);
    let workers = match spec.workers {
        0 => std::thread::available_parallelism().map_or(4, |n| n.get().min(16)),
        n => n,
    }
    .min((end - start).max(1));
    // Enough decoded images in flight for two batches.
    let prefetch = (2 * spec.batch).div_ceil(workers).max(2);
    let progress = Phase::start(
        &*spec.progress,
        "caching",
        "images",
        end as u64,
        start as u64,
    );
    let template = manifest.clone();

    let outcome = std::thread::scope(|s| {
        let mut loaders = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(prefetch);
            let items = &images.items;
            let pre = spec.preprocess_for(vit);
            s.spawn(move || {
                let mut i = start + w;
                while i < end {
                    if tx.send(load(&items[i], &pre)).is_err() {
                        return; // the builder stopped
                    }
                    i += workers;
                }
            });
            loaders.push(rx);
        }
        let (shard_tx, shard_rx) = sync_channel::<Finished>(0);
        let writer = s.spawn(move || write_shards(dir, manifest, shard_rx, stop_after_shards));
        let mut run = Run {
            vit,
            images,
            spec,
            template: &template,
            loaders,
            shard_tx,
            progress: &progress,
            report: &mut report,
            pos: start,
            end,
        };
        let produced = run.produce();
        // Closing the channels lets every thread finish before the scope ends.
        drop(run);
        let written = writer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (produced, written)
    });
    drop(progress);
    let (produced, written) = outcome;
    // A writer error explains a producer that stopped because the writer
    // went away, so it comes first.
    let written = written?;
    produced?;
    report.shards_written = written.shards;
    report.bytes_written = written.bytes;
    report.rows_written = written.rows;
    report.total_rows = written.manifest.rows();
    report.complete = written.manifest.complete;
    report.cache_complete = super::parts::whole_cache_complete(dir, &written.manifest)?;
    report.images_processed = written.manifest.next_image - start;
    report
        .skipped
        .retain(|s| s.index < written.manifest.next_image);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The manifest this request would produce, with no progress.
fn wanted_manifest<B: Backend>(
    vit: &Vit<B>,
    images: &ImageList,
    spec: &CacheSpec,
) -> Result<CacheManifest, CacheError> {
    let config = vit.config();
    let pre = &spec.preprocess_for(vit);
    if spec.taps.is_empty() {
        return Err(CacheError::Spec("no taps requested".into()));
    }
    if spec.shard_images == 0 || spec.batch == 0 {
        return Err(CacheError::Spec(
            "shard size and batch size must be at least 1".into(),
        ));
    }
    if pre.crop == 0
        || pre.crop > pre.resize
        || !(pre.crop as usize).is_multiple_of(config.patch_size)
    {
        return Err(CacheError::Spec(format!(
            "crop {} must be at most the resize {} and a multiple of the patch size {}",
            pre.crop, pre.resize, config.patch_size
        )));
    }
    let taps: Vec<_> = spec
        .taps
        .iter()
        .map(|t| t.spec(config, pre.crop as usize))
        .collect();
    for (i, t) in spec.taps.iter().enumerate() {
        if let TapPoint::Layer(l) = t.point
            && l >= vit.depth()
        {
            return Err(CacheError::Spec(format!(
                "tap `{}`: the model has {} blocks (layers 0..={})",
                t.name(),
                vit.depth(),
                vit.depth() - 1
            )));
        }
        if taps[..i].iter().any(|o| o.name == taps[i].name) {
            return Err(CacheError::Spec(format!(
                "tap `{}` is requested twice",
                taps[i].name
            )));
        }
    }
    // The builder holds two shards in memory (one filling, one being
    // written): their size, not the split's, bounds its memory.
    let patch_label_bytes = 2 * (pre.crop as usize / config.patch_size).pow(2);
    let row_bytes: usize = taps.iter().map(|t| t.row_bytes()).sum::<usize>()
        + match spec.labels {
            LabelKind::None => 0,
            LabelKind::Patch => patch_label_bytes,
            LabelKind::Pixel => patch_label_bytes + (pre.crop as usize).pow(2),
        };
    if row_bytes.saturating_mul(spec.shard_images) > MAX_SHARD_BYTES {
        return Err(CacheError::Spec(format!(
            "{} images per shard of {:.1} MB each make {:.2} GB shards; the builder holds two \
             at once, so at most {} GiB a shard is allowed (use at most {} images per shard)",
            spec.shard_images,
            row_bytes as f64 / 1e6,
            (row_bytes * spec.shard_images) as f64 / 1e9,
            MAX_SHARD_BYTES >> 30,
            MAX_SHARD_BYTES / row_bytes.max(1)
        )));
    }
    if images.len() > u32::MAX as usize {
        return Err(CacheError::Spec(format!(
            "{} images: a cache indexes at most {} images",
            images.len(),
            u32::MAX
        )));
    }
    if spec.labels != LabelKind::None
        && let Some(item) = images.items.iter().find(|i| i.label.is_none())
    {
        return Err(CacheError::MissingLabel {
            path: item.image.clone(),
        });
    }
    Ok(CacheManifest {
        format: FORMAT.into(),
        model: spec.model_id.clone(),
        model_config: config.clone(),
        preprocess: PreprocessInfo::from(pre),
        images: ImagesInfo {
            count: images.len(),
            fingerprint: images.fingerprint(),
        },
        taps,
        labels: spec.labels,
        shard_images: spec.shard_images,
        shards: Vec::new(),
        next_image: 0,
        complete: false,
        skipped: Vec::new(),
        part: None,
        parts: 0,
    })
}

/// Opens an existing cache (or part) for resuming, after checking it was
/// made the same way and its shards are whole, or starts a new one; removes
/// leftovers of an interrupted write either way. A part also checks the
/// other parts already in the folder, so one built with other settings is
/// refused before any work.
fn open_or_create(dir: &Path, wanted: CacheManifest) -> Result<CacheManifest, CacheError> {
    std::fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
    let parts = super::parts::list_parts(dir)?;
    let whole = dir.join(MANIFEST_FILE);
    let refuse = |message: String| CacheError::Parts {
        dir: dir.to_path_buf(),
        message,
    };
    if let Some(part) = wanted.part {
        if whole.exists() {
            let found = CacheManifest::read(dir)?;
            let differences = found.differences(&wanted);
            if !differences.is_empty() {
                return Err(CacheError::Mismatch {
                    dir: dir.to_path_buf(),
                    differences,
                });
            }
            if found.parts != part.count {
                return Err(refuse(format!(
                    "it holds a complete cache built {}; part {} of {} does not belong to it",
                    if found.parts == 0 {
                        "by one process".to_string()
                    } else {
                        format!("in {} parts", found.parts)
                    },
                    part.index,
                    part.count
                )));
            }
            // The merged cache already holds this part.
            return Ok(found);
        }
        for (i, n, path) in &parts {
            let other = CacheManifest::read_file(path)?;
            if *n != part.count {
                return Err(refuse(format!(
                    "{} is part {i} of {n}; this build is part {} of {}",
                    path.display(),
                    part.index,
                    part.count
                )));
            }
            let differences = other.differences(&wanted);
            if !differences.is_empty() {
                return Err(refuse(format!(
                    "part {i} of {n} was built with other settings ({})",
                    differences.join("; ")
                )));
            }
        }
    } else if let Some((i, n, path)) = parts.first() {
        return Err(refuse(format!(
            "it holds part {i} of {n} of a sharded build ({}); build its parts (the same \
             settings, `CacheSpec::part` I/{n}) or use another folder",
            path.display()
        )));
    }
    let own = dir.join(wanted.file_name());
    let manifest = if own.exists() {
        let found = CacheManifest::read_file(&own)?;
        let mut differences = found.differences(&wanted);
        if found.part != wanted.part {
            differences.push(format!(
                "part: the folder has {:?}, asked for {:?}",
                found.part, wanted.part
            ));
        }
        if !differences.is_empty() {
            return Err(CacheError::Mismatch {
                dir: dir.to_path_buf(),
                differences,
            });
        }
        for entry in &found.shards {
            let file = ShardFile::open(&dir.join(&entry.file), entry.bytes)?;
            check_shard_file(file, &found, entry)?;
        }
        found
    } else {
        wanted.write(dir)?;
        wanted
    };
    remove_leftovers(dir, &manifest)?;
    Ok(manifest)
}

/// Deletes this build's temporary files and the shards its manifest does
/// not list (written, but the run died before recording them); they would
/// be rewritten anyway. Only called under the build's lock: no live writer
/// owns them. A part touches only its own files: other parts may be
/// writing theirs right now.
fn remove_leftovers(dir: &Path, manifest: &CacheManifest) -> Result<(), CacheError> {
    let numbers = manifest
        .part
        .map(|p| p.shard_numbers(manifest.shard_images));
    let shard_number = super::parse_shard_file_name;
    let ours = |file: &str| match &numbers {
        None => true,
        Some(range) => {
            file == manifest.file_name() || shard_number(file).is_some_and(|k| range.contains(&k))
        }
    };
    let entries = std::fs::read_dir(dir).map_err(|e| CacheError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CacheError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let unlisted_shard = shard_number(&name).is_some_and(|k| match &numbers {
            None => k >= manifest.shards.len(),
            Some(range) => range.contains(&k) && !manifest.shards.iter().any(|s| s.file == name),
        });
        let own_temp = is_temp_file(&name)
            && match sae_steer_files::temp_target(&name) {
                Some(target) => ours(target),
                // An older version's `.name.tmp`.
                None => ours(name[1..].trim_end_matches(".tmp")),
            };
        if own_temp || unlisted_shard {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| CacheError::io(&path, e))?;
        }
    }
    Ok(())
}

/// A decoded image, ready for the model.
struct Loaded {
    sample: Sample,
}

/// Why a loader thread could not load an image.
type LoadError = Box<dyn std::error::Error + Send + Sync>;

/// Runs on a loader thread. A panic inside the decoder becomes an error that
/// names the file, so `skip_bad` can skip it like any corrupt image.
fn load(item: &ImageItem, pre: &Preprocess) -> Result<Loaded, LoadError> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| load_sample(item, pre))) {
        Ok(Ok(sample)) => Ok(Loaded { sample }),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(format!("the image decoder panicked on {}", item.image.display()).into()),
    }
}

/// A batch whose forward pass has been launched. Backends that run
/// asynchronously (CUDA) compute it while the previous batch is read back.
struct InFlight<B: Backend> {
    /// One output per tap: [b, n_tokens, d]
    outputs: Vec<Tensor<B, 3>>,
    /// (dataset position, pixel labels) of each row.
    rows: Vec<(usize, Option<Vec<u8>>)>,
    skipped: Vec<SkippedImage>,
    /// Dataset position after the batch's last image.
    end: usize,
}

/// A shard handed to the writer.
struct Finished {
    buffer: ShardBuffer,
    /// No images follow: the cache is complete once this is written.
    last: bool,
}

struct Run<'a, B: Backend> {
    vit: &'a Vit<B>,
    images: &'a ImageList,
    spec: &'a CacheSpec,
    template: &'a CacheManifest,
    loaders: Vec<Receiver<Result<Loaded, LoadError>>>,
    shard_tx: std::sync::mpsc::SyncSender<Finished>,
    progress: &'a Phase<'a>,
    report: &'a mut CacheReport,
    /// Next dataset position to receive.
    pos: usize,
    end: usize,
}

impl<B: Backend> Run<'_, B> {
    /// The main loop. Returns Ok also when the writer stopped early (the
    /// writer's own result says why).
    fn produce(&mut self) -> Result<(), CacheError> {
        let shard_images = self.spec.shard_images;
        let mut buffer = self.new_buffer(self.pos);
        let mut planned = 0;
        let mut pending: Option<InFlight<B>> = None;
        loop {
            let want = self.spec.batch.min(shard_images - planned);
            let batch = match self.next_batch(want) {
                Ok(batch) => batch,
                Err(e) => {
                    // Keep what was computed: a shard completed by the
                    // pending batch survives for a resume.
                    if let Some(prev) = pending.take() {
                        self.read_back(prev, &mut buffer)?;
                        if buffer.rows == shard_images {
                            self.send(buffer, false);
                        }
                    }
                    return Err(e);
                }
            };
            planned = (planned + batch.rows.len()) % shard_images;
            let done = self.pos == self.end;
            let mut to_finish: Vec<InFlight<B>> = pending.replace(batch).into_iter().collect();
            if done {
                to_finish.extend(pending.take());
            }
            for batch in to_finish {
                let t0 = Instant::now();
                self.read_back(batch, &mut buffer)?;
                self.report.seconds_compute += t0.elapsed().as_secs_f64();
                if buffer.rows == shard_images {
                    let next = self.new_buffer(buffer.end_image);
                    let full = std::mem::replace(&mut buffer, next);
                    if !self.send(full, false) {
                        return Ok(());
                    }
                }
            }
            if done {
                self.send(buffer, true);
                return Ok(());
            }
        }
    }

    fn new_buffer(&self, at: usize) -> ShardBuffer {
        let capacity = self.spec.shard_images.min(self.end - at);
        ShardBuffer::new(self.template, capacity, at)
    }

    /// Hands a shard to the writer; false when the writer has stopped.
    fn send(&mut self, buffer: ShardBuffer, last: bool) -> bool {
        let t0 = Instant::now();
        let sent = self.shard_tx.send(Finished { buffer, last }).is_ok();
        self.report.seconds_waiting_for_writer += t0.elapsed().as_secs_f64();
        sent
    }

    /// Receives up to `want` good images and launches their forward pass.
    fn next_batch(&mut self, want: usize) -> Result<InFlight<B>, CacheError> {
        let start = self.report.resumed_from;
        let mut pixels = Vec::new();
        let mut rows = Vec::with_capacity(want);
        let mut skipped = Vec::new();
        let mut waited = Duration::ZERO;
        while rows.len() < want && self.pos < self.end {
            let t0 = Instant::now();
            let loaded = self.loaders[(self.pos - start) % self.loaders.len()]
                .recv()
                .map_err(|_| CacheError::Loader)?;
            waited += t0.elapsed();
            let index = self.pos;
            self.pos += 1;
            self.progress.advance(1);
            let item = &self.images.items[index];
            match loaded {
                Ok(Loaded { sample }) => {
                    if self.spec.labels != LabelKind::None && sample.labels.is_none() {
                        return Err(CacheError::MissingLabel {
                            path: item.image.clone(),
                        });
                    }
                    pixels.extend_from_slice(&sample.pixels.data);
                    let labels = sample
                        .labels
                        .filter(|_| self.spec.labels != LabelKind::None);
                    rows.push((index, labels));
                }
                Err(error) if self.spec.skip_bad => {
                    // The report keeps the whole chain (the I/O error under
                    // "cannot access ...", say) as text.
                    let error = ErrorChain(&*error).to_string();
                    self.progress.note(&format!(
                        "skipping image {index} ({}): {error}",
                        item.image.display()
                    ));
                    let skip = SkippedImage {
                        index,
                        path: item.image.display().to_string(),
                        error,
                    };
                    self.report.skipped.push(skip.clone());
                    skipped.push(skip);
                }
                Err(error) => {
                    return Err(CacheError::BadImage {
                        index,
                        path: item.image.clone(),
                        source: error,
                    });
                }
            }
        }
        self.report.seconds_waiting_for_images += waited.as_secs_f64();
        let t0 = Instant::now();
        let outputs = if rows.is_empty() {
            Vec::new()
        } else {
            self.forward(pixels, rows.len())?
        };
        self.report.seconds_compute += t0.elapsed().as_secs_f64();
        Ok(InFlight {
            outputs,
            rows,
            skipped,
            end: self.pos,
        })
    }

    /// One forward pass yielding every tap: blocks run once, up to the
    /// deepest tap; `final_norm` continues from there.
    fn forward(&self, pixels: Vec<f32>, b: usize) -> Result<Vec<Tensor<B, 3>>, CacheError> {
        let vit = self.vit;
        let crop = self.spec.preprocess_for(self.vit).crop as usize;
        let device = vit.device();
        let x = Tensor::<B, 4>::from_data(TensorData::new(pixels, [b, 3, crop, crop]), device);
        let layers: Vec<usize> = self
            .spec
            .taps
            .iter()
            .filter_map(|t| match t.point {
                TapPoint::Layer(l) => Some(l),
                TapPoint::FinalNorm => None,
            })
            .collect();
        let wants_norm = self
            .spec
            .taps
            .iter()
            .any(|t| t.point == TapPoint::FinalNorm);
        let depth = vit.depth();
        let last = if wants_norm {
            depth - 1
        } else {
            layers.iter().copied().max().unwrap_or(depth - 1)
        };
        let deepest_tap = layers.iter().copied().max().unwrap_or(last);
        let (x, kept) = vit.forward_taps(x, deepest_tap, &layers)?;
        let normed = if wants_norm {
            let x = vit.run_blocks(x, deepest_tap + 1, last, |_, _| {})?;
            Some(vit.final_norm(x))
        } else {
            None
        };
        let prefix = vit.config().prefix_tokens();
        self.spec
            .taps
            .iter()
            .map(|t| {
                let full = match t.point {
                    TapPoint::Layer(l) => kept
                        .iter()
                        .find(|(i, _)| *i == l)
                        .map(|(_, x)| x.clone())
                        .ok_or_else(|| {
                            CacheError::Backend(format!("layer {l} was not returned"))
                        })?,
                    TapPoint::FinalNorm => normed.clone().ok_or_else(|| {
                        CacheError::Backend("the final norm was not computed".into())
                    })?,
                };
                Ok(match t.tokens {
                    TapTokens::All => full,
                    TapTokens::Patches => {
                        let [b, n, d] = full.dims();
                        full.slice([0..b, prefix..n, 0..d])
                    }
                })
            })
            .collect()
    }

    /// Reads a batch's activations back to the host and appends it (with its
    /// labels and skips) to the shard buffer.
    fn read_back(&self, batch: InFlight<B>, buffer: &mut ShardBuffer) -> Result<(), CacheError> {
        for (output, (spec, data)) in batch.outputs.into_iter().zip(buffer.taps.iter_mut()) {
            let values = output
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| CacheError::Backend(format!("{e:?}")))?;
            if spec.dtype == CacheDtype::F16
                && let Some(v) = values.iter().find(|v| v.abs() > f16::MAX.to_f32())
            {
                // f16 would store an infinity: refuse rather than corrupt.
                return Err(CacheError::Spec(format!(
                    "tap `{}` holds the value {v}, beyond the f16 range (±65504); cache it as f32",
                    spec.name
                )));
            }
            data.extend(&values);
        }
        let crop = self.spec.preprocess_for(self.vit).crop as usize;
        let patch = self.vit.config().patch_size;
        for (index, labels) in batch.rows {
            buffer.first_image.get_or_insert(index);
            buffer.image_index.push(index as u32);
            if let Some(pixels) = labels {
                let per_patch = patch_labels(&pixels, crop, patch);
                buffer.patch_labels.extend_from_slice(&per_patch.labels);
                buffer.patch_purity.extend_from_slice(&per_patch.purity);
                if self.spec.labels == LabelKind::Pixel {
                    buffer.pixel_labels.extend_from_slice(&pixels);
                }
            }
            buffer.rows += 1;
        }
        buffer.skipped.extend(batch.skipped);
        buffer.end_image = batch.end;
        Ok(())
    }
}

/// What the writer thread did.
struct Written {
    manifest: CacheManifest,
    shards: usize,
    rows: usize,
    bytes: u64,
}

/// The writer thread: writes each shard, then the manifest that lists it.
fn write_shards(
    dir: &Path,
    mut manifest: CacheManifest,
    rx: Receiver<Finished>,
    stop_after: Option<usize>,
) -> Result<Written, CacheError> {
    let mut written = Written {
        manifest: manifest.clone(),
        shards: 0,
        rows: 0,
        bytes: 0,
    };
    // A part numbers its shards as a build of the whole list would.
    let first = manifest.part.map_or(0, |p| p.start / manifest.shard_images);
    for Finished { buffer, last } in rx {
        if buffer.rows > 0 {
            let file = shard_file_name(first + manifest.shards.len());
            let entry = buffer.write(dir, &file, &manifest)?;
            written.shards += 1;
            written.rows += entry.rows;
            written.bytes += entry.bytes;
            manifest.shards.push(entry);
        }
        manifest.next_image = buffer.end_image;
        manifest.skipped.extend(buffer.skipped);
        manifest.complete = last;
        manifest.write(dir)?;
        written.manifest = manifest.clone();
        if stop_after.is_some_and(|n| written.shards >= n) {
            break;
        }
    }
    Ok(written)
}

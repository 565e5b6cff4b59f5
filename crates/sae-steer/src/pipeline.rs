//! Steps the experiments share: making sure an activation cache exists,
//! estimating an SAE's input normalization, and feature statistics over a
//! cache.

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use burn::tensor::{Tensor, TensorData, backend::Backend};
use sae_steer_data::ImageList;
use sae_steer_data::cache::{
    ActivationCache, CacheDtype, CacheError, CacheReport, CacheSpec, LabelKind, TapRequest,
    TapTokens, build_cache,
};
use sae_steer_files::{ErrorChain, Phase, Progress, SharedProgress};
use sae_steer_sae::stats::{DEFAULT_TOP_K, StatsInfo};
use sae_steer_sae::train::{ActivationShards, NormalizationPlan, TrainingData, estimate_start};
use sae_steer_sae::{FeatureStats, Normalization, NormalizationSource, Sae, SaeError, SaeFile};
use sae_steer_vit::{Vit, VitError};

/// Activations sampled to estimate a normalization (saev samples a few
/// hundred thousand; the estimate is stable well before that).
pub const NORMALIZATION_SAMPLES: usize = 262_144;

/// The cache quantify and feature statistics read: the SAE layer's tokens
/// in float32 (every token, so the rest of the network can run) with patch
/// labels and purity.
pub fn sae_layer_cache_spec(model_id: &str, layer: usize) -> CacheSpec {
    let mut tap = TapRequest::layer(layer, CacheDtype::F32);
    tap.tokens = TapTokens::All;
    let mut spec = CacheSpec::new(model_id, vec![tap]);
    spec.labels = LabelKind::Patch;
    spec
}

/// A ViT loaded on first use: a run that needs several caches loads it at
/// most once (and not at all when every cache is complete), then hands it
/// on to the steps that run it.
pub struct LazyVit<B: Backend> {
    spec: String,
    device: B::Device,
    vit: Option<Vit<B>>,
}

impl<B: Backend> LazyVit<B> {
    /// The ViT `spec` (see [`Vit::load`]), not loaded yet.
    pub fn new(spec: impl Into<String>, device: &B::Device) -> Self {
        Self {
            spec: spec.into(),
            device: device.clone(),
            vit: None,
        }
    }

    /// The ViT, loading it first if needed.
    pub fn get(&mut self) -> Result<&Vit<B>, VitError> {
        if self.vit.is_none() {
            self.vit = Some(Vit::load(&self.spec, &self.device)?);
        }
        Ok(self.vit.as_ref().expect("loaded above"))
    }

    /// The ViT itself, loading it first if needed.
    pub fn into_vit(mut self) -> Result<Vit<B>, VitError> {
        self.get()?;
        Ok(self.vit.expect("loaded above"))
    }
}

/// A ViT already in memory.
impl<B: Backend> From<Vit<B>> for LazyVit<B> {
    fn from(vit: Vit<B>) -> Self {
        Self {
            spec: String::new(),
            device: vit.device().clone(),
            vit: Some(vit),
        }
    }
}

/// Opens the cache in `dir`, building or resuming it first unless it is
/// complete and serves `images` and `spec`; the ViT is only loaded when it
/// must run. Returns the build report when it ran.
pub fn ensure_cache<B: Backend>(
    dir: &Path,
    images: &ImageList,
    spec: &CacheSpec,
    vit: &mut LazyVit<B>,
) -> Result<(ActivationCache, Option<CacheReport>), CacheError> {
    if let Ok(cache) = ActivationCache::open(dir)
        && cache.serves(images, spec)
    {
        return Ok((cache, None));
    }
    // Anything else goes to the builder, which resumes a partial cache and
    // refuses one made with other settings, saying what differs.
    let report = build_cache(vit.get()?, images, dir, spec)?;
    Ok((ActivationCache::open(dir)?, Some(report)))
}

/// Token positions of the patches in a tap of `n_tokens` tokens per image
/// (patches come last: `[CLS, registers.., patches..]`).
pub fn patch_range(n_tokens: usize, n_patches: usize) -> Range<usize> {
    n_tokens.saturating_sub(n_patches)..n_tokens
}

/// Estimates saev's input normalization (reference facts section 4) on the patch tokens
/// of a cache tap: `mean` over a sample, `scalar = mean ||x - mean|| / sqrt(d)`.
pub fn estimate_normalization(
    cache: &ActivationCache,
    tap: &str,
    n_patches: usize,
    samples: usize,
) -> Result<Normalization, SaeError> {
    let spec = cache
        .tap(tap)
        .map_err(|e| SaeError::Data(ErrorChain(&e).to_string()))?
        .clone();
    let tokens = patch_range(spec.n_tokens, n_patches);
    let mut data = |seed: u64, batch: usize| cache.patch_batches(tap, tokens.clone(), batch, seed);
    let data: &mut dyn TrainingData<'_> = &mut data;
    let (norm, _) = estimate_start(
        data,
        0,
        4096,
        spec.dim,
        samples,
        &NormalizationPlan::Estimate,
    )?;
    norm.ok_or_else(|| SaeError::Data("no normalization was estimated".into()))
}

/// Estimates saev's input normalization on the patch tokens of `images`,
/// each run through `vit` up to `layer` (no cache: the web app's way, on a
/// few dozen images). The same estimator as [`estimate_normalization`].
pub fn estimate_normalization_on_images<B: Backend>(
    vit: &Vit<B>,
    layer: usize,
    images: &ImageList,
    pre: &sae_steer_vit::Preprocess,
) -> crate::Result<Normalization> {
    const BATCH: usize = 8;
    if images.is_empty() {
        return Err(crate::Error::Input(
            "no images to estimate the SAE normalization on".into(),
        ));
    }
    let d = vit.config().hidden_size;
    let prefix = vit.config().prefix_tokens();
    let mut rows: Vec<f32> = Vec::new();
    for chunk in images.items.chunks(BATCH) {
        let pixels = chunk
            .iter()
            .map(|item| Ok(sae_steer_data::load_sample(item, pre)?.pixels))
            .collect::<crate::Result<Vec<_>>>()?;
        let tokens = vit.forward_until(
            sae_steer_vit::PixelValues::batch::<B>(&pixels, vit.device()),
            layer,
        )?;
        let [b, t, _] = tokens.dims();
        let patches = tokens.slice([0..b, prefix..t, 0..d]);
        rows.extend(
            patches
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| crate::Error::Input(format!("cannot read activations back: {e:?}")))?,
        );
    }
    Ok(Normalization::estimate(&rows, d)?)
}

/// Images per [`FeatureStats::update`] call in [`feature_stats`] and
/// [`feature_stats_file`]. Fixed, so that a resumed run splits the images
/// into the same batches as an uninterrupted one and ends with the same sums
/// to the last bit.
pub const STATS_BATCH: usize = 16;

/// How often [`feature_stats_file`] saves its progress: a save rewrites the
/// whole file (200 MB for a 24k-latent SAE), so not after every batch.
pub const STATS_SAVE_INTERVAL: Duration = Duration::from_secs(60);

/// Settles an SAE's input normalization (reference facts section 4): read from `file`
/// when one is named, else the checkpoint's own, else estimated with
/// [`estimate_normalization`] on `estimate_on` = (cache, tap, patches per
/// image). `estimate_on` is only read in the last case, which is an error
/// when it is `None`. (Running without one is [`NormalizationSource::None`],
/// chosen explicitly through [`SaeFile::resolve`].)
pub fn resolve_normalization<B: Backend>(
    sae: impl Into<SaeFile<B>>,
    file: Option<&Path>,
    estimate_on: Option<(&ActivationCache, &str, usize)>,
) -> Result<(Sae<B>, NormalizationSource), SaeError> {
    let sae = sae.into();
    if let Some(path) = file {
        return sae.resolve(NormalizationSource::File(path.to_path_buf()));
    }
    if sae.has_normalization() {
        return sae.resolve(NormalizationSource::Checkpoint);
    }
    let Some((cache, tap, n_patches)) = estimate_on else {
        // The checkpoint's own, which it lacks: the error says what to do.
        return sae.resolve(NormalizationSource::Checkpoint);
    };
    let norm = estimate_normalization(cache, tap, n_patches, NORMALIZATION_SAMPLES)?;
    sae.resolve(NormalizationSource::Estimated {
        images: cache.len(),
        norm,
    })
}

/// Feature statistics (reference facts section 5) of `sae` over the patch tokens of the
/// first `max_images` images of a cache tap, with [`DEFAULT_TOP_K`]
/// exemplars per latent, in memory. [`feature_stats_file`] is the resumable
/// form. The images are reported to `progress` as one phase, "feature
/// statistics".
pub fn feature_stats<B: Backend>(
    sae: &Sae<B>,
    cache: &ActivationCache,
    tap: &str,
    n_patches: usize,
    max_images: Option<usize>,
    info: StatsInfo,
    progress: &dyn Progress,
) -> Result<FeatureStats, SaeError> {
    let mut stats = FeatureStats::new(sae.d_sae(), DEFAULT_TOP_K, n_patches, info)?;
    let input = CacheInput::new(cache, tap)?;
    let rows = input.rows().min(max_images.unwrap_or(usize::MAX));
    add_rows(sae, &input, &mut stats, rows, progress, |_| Ok(()))?;
    Ok(stats)
}

/// What [`feature_stats_file`] computes, and where it reports progress.
#[derive(Debug, Clone)]
pub struct StatsOptions {
    /// Patches per image (the last `n_patches` tokens of the tap).
    pub n_patches: usize,
    /// Use only the first N rows of the cache.
    pub max_images: Option<usize>,
    /// Exemplar images kept per latent.
    pub top_k: usize,
    /// Recorded in the file, and checked against it when resuming: `sae`,
    /// `fingerprint` and `normalization` must match.
    pub info: StatsInfo,
    /// Progress is saved when this long has passed since the last save
    /// ([`STATS_SAVE_INTERVAL`] by default; zero saves after every batch).
    pub save_every: Duration,
    /// Where the run reports the images it adds (one phase, "feature
    /// statistics", counted from the image it resumes at); silent by
    /// default.
    pub progress: SharedProgress,
}

/// The outcome of [`feature_stats_file`].
#[derive(Debug, Clone)]
pub struct StatsRun {
    pub stats: FeatureStats,
    /// Images the file held when the run started; `None` for a new file.
    pub resumed_from: Option<u64>,
    /// Images this run added.
    pub added: u64,
}

impl StatsRun {
    /// Whether the file was complete already and nothing was computed.
    pub fn was_complete(&self) -> bool {
        self.resumed_from.is_some() && self.added == 0
    }
}

/// Feature statistics of `sae` over the first `max_images` rows of a cache
/// tap, kept in `path`. A missing file is started; an existing one (left by
/// an interrupted run) is checked against the SAE, the options and the
/// reference set, and continued at its next image; a complete one is
/// returned as it is. Progress is saved every [`STATS_SAVE_INTERVAL`] and at
/// the end, always between batches of [`STATS_BATCH`] images, so a resumed
/// run ends with exactly the statistics of an uninterrupted one.
pub fn feature_stats_file<B: Backend>(
    sae: &Sae<B>,
    cache: &ActivationCache,
    tap: &str,
    options: StatsOptions,
    path: &Path,
) -> Result<StatsRun, SaeError> {
    stats_file(sae, &CacheInput::new(cache, tap)?, options, path)
}

/// [`feature_stats_file`] over activations someone else computed: each item
/// of `shards` ([`ActivationShards::open_saev`] for saev's shards, with the
/// patch tokens selected) is one image, `[tokens, d]`, whose last
/// `options.n_patches` tokens are its patches. Images are numbered in the
/// shards' order.
pub fn feature_stats_shards_file<B: Backend>(
    sae: &Sae<B>,
    shards: &ActivationShards,
    options: StatsOptions,
    path: &Path,
) -> Result<StatsRun, SaeError> {
    stats_file(sae, shards, options, path)
}

/// Where the statistics read their images: one `[tokens, d]` block each.
trait StatsInput {
    /// Images available.
    fn rows(&self) -> usize;
    fn tokens(&self) -> usize;
    fn dim(&self) -> usize;
    /// Reads images `rows` into `buf`, `[rows.len(), tokens, d]`.
    fn read(&self, rows: &[usize], buf: &mut Vec<f32>) -> Result<(), SaeError>;
    /// The id an image is recorded under (its dataset index).
    fn image_index(&self, row: usize) -> u32;
}

/// A cache tap as [`StatsInput`].
struct CacheInput<'a> {
    cache: &'a ActivationCache,
    tap: &'a str,
    tokens: usize,
    dim: usize,
}

impl<'a> CacheInput<'a> {
    fn new(cache: &'a ActivationCache, tap: &'a str) -> Result<Self, SaeError> {
        let spec = cache
            .tap(tap)
            .map_err(|e| SaeError::Data(ErrorChain(&e).to_string()))?;
        Ok(Self {
            cache,
            tap,
            tokens: spec.n_tokens,
            dim: spec.dim,
        })
    }
}

impl StatsInput for CacheInput<'_> {
    fn rows(&self) -> usize {
        self.cache.len()
    }
    fn tokens(&self) -> usize {
        self.tokens
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn read(&self, rows: &[usize], buf: &mut Vec<f32>) -> Result<(), SaeError> {
        self.cache
            .read_images(self.tap, rows, buf)
            .map_err(|e| SaeError::Data(ErrorChain(&e).to_string()))
    }
    fn image_index(&self, row: usize) -> u32 {
        self.cache.image_index(row) as u32
    }
}

impl StatsInput for ActivationShards {
    fn rows(&self) -> usize {
        self.items()
    }
    fn tokens(&self) -> usize {
        self.tokens_per_item()
    }
    fn dim(&self) -> usize {
        ActivationShards::dim(self)
    }
    fn read(&self, rows: &[usize], buf: &mut Vec<f32>) -> Result<(), SaeError> {
        self.read_items(rows, buf)
    }
    fn image_index(&self, row: usize) -> u32 {
        row as u32
    }
}

fn stats_file<B: Backend>(
    sae: &Sae<B>,
    input: &dyn StatsInput,
    options: StatsOptions,
    path: &Path,
) -> Result<StatsRun, SaeError> {
    let rows = input.rows().min(options.max_images.unwrap_or(usize::MAX));
    let save_every = options.save_every;
    remove_stale_temporaries(path);
    let (mut stats, resumed_from) = if path.exists() {
        let stats = FeatureStats::load(path)?;
        let done = check_resumable(&stats, sae, &options, rows, path)?;
        (stats, Some(done))
    } else {
        let stats = FeatureStats::new(sae.d_sae(), options.top_k, options.n_patches, options.info)?;
        (stats, None)
    };
    let start = resumed_from.unwrap_or(0);
    if resumed_from.is_some() && start as usize == rows {
        return Ok(StatsRun {
            stats,
            resumed_from,
            added: 0,
        });
    }
    let mut last_save = Instant::now();
    add_rows(sae, input, &mut stats, rows, &*options.progress, |stats| {
        if last_save.elapsed() >= save_every {
            stats.save(path)?;
            last_save = Instant::now();
        }
        Ok(())
    })?;
    stats.save(path)?;
    let added = stats.n_images().unwrap_or(0) - start;
    Ok(StatsRun {
        stats,
        resumed_from,
        added,
    })
}

/// Removes the temporaries an interrupted atomic write of `path` left beside
/// it (`sae_steer_files` names them after `path`), as [`feature_stats_file`]
/// does for its file. Another process writing the same file at this moment
/// would be a clash anyway: its write then fails instead of being silently
/// mixed with ours.
pub fn remove_stale_temporaries(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) && sae_steer_files::is_temp_name(&n) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Checks that statistics read from `path` can be continued with `sae` and
/// `options` up to `rows` images; returns how many images they hold.
fn check_resumable<B: Backend>(
    stats: &FeatureStats,
    sae: &Sae<B>,
    options: &StatsOptions,
    rows: usize,
    path: &Path,
) -> Result<u64, SaeError> {
    let Some(done) = stats.n_images().filter(|_| stats.can_update()) else {
        return Err(SaeError::Input(format!(
            "{} holds statistics without running counts: they cannot be continued; \
             delete the file or choose another output",
            path.display()
        )));
    };
    let (have, want) = (&stats.info, &options.info);
    let mut differences = Vec::new();
    let mut differ = |what: &str, have: String, want: String| {
        if have != want {
            differences.push(format!("{what}: file has `{have}`, asked for `{want}`"));
        }
    };
    differ(
        "latents",
        stats.d_sae().to_string(),
        sae.d_sae().to_string(),
    );
    differ("top-k", stats.k().to_string(), options.top_k.to_string());
    differ(
        "patches per image",
        stats.n_patches().to_string(),
        options.n_patches.to_string(),
    );
    differ("SAE", have.sae.clone(), want.sae.clone());
    differ(
        "reference images (fingerprint)",
        have.fingerprint.clone(),
        want.fingerprint.clone(),
    );
    differ(
        "normalization",
        have.normalization.clone(),
        want.normalization.clone(),
    );
    if done as usize > rows {
        differences.push(format!(
            "images: file covers {done}, asked for {rows} (it cannot shrink)"
        ));
    }
    if differences.is_empty() {
        Ok(done)
    } else {
        Err(SaeError::Input(format!(
            "{} holds statistics of another run; delete it or choose another output. {}",
            path.display(),
            differences.join("; ")
        )))
    }
}

/// Adds images `stats.n_images()..rows` of `input` to `stats`, in batches
/// of [`STATS_BATCH`], calling `after_batch` after each batch and reporting
/// the images to `progress`.
fn add_rows<B: Backend>(
    sae: &Sae<B>,
    input: &dyn StatsInput,
    stats: &mut FeatureStats,
    rows: usize,
    progress: &dyn Progress,
    mut after_batch: impl FnMut(&FeatureStats) -> Result<(), SaeError>,
) -> Result<(), SaeError> {
    let (n_tokens, dim) = (input.tokens(), input.dim());
    if stats.n_patches() > n_tokens {
        return Err(SaeError::Input(format!(
            "{} patches per image asked for, the activations hold {n_tokens} tokens",
            stats.n_patches()
        )));
    }
    let tokens = patch_range(n_tokens, stats.n_patches());
    let start = (stats.n_images().unwrap_or(0) as usize).min(rows);
    let device = sae.w_enc.device();
    let bar = Phase::start(
        progress,
        "feature statistics",
        "images",
        rows as u64,
        start as u64,
    );
    let mut buf = Vec::new();
    for first in (start..rows).step_by(STATS_BATCH) {
        let ids: Vec<usize> = (first..(first + STATS_BATCH).min(rows)).collect();
        input.read(&ids, &mut buf)?;
        let b = ids.len();
        let x = Tensor::<B, 3>::from_data(
            TensorData::new(std::mem::take(&mut buf), [b, n_tokens, dim]),
            &device,
        )
        .slice([0..b, tokens.clone(), 0..dim]);
        let images: Vec<u32> = ids.iter().map(|&r| input.image_index(r)).collect();
        stats.update(sae, x, &images)?;
        after_batch(stats)?;
        bar.advance(b as u64);
    }
    drop(bar);
    Ok(())
}

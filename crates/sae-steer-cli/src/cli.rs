//! Command-line plumbing shared by the example programs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sae_steer::backend::{BackendTask, DeviceChoice, run_on};
use sae_steer::burn::prelude::Backend;
use sae_steer::pipeline::{LazyVit, ensure_cache};
use sae_steer::{Progress, SharedProgress};
use sae_steer_ade20k::Split;
use sae_steer_app::setup::{DEFAULT_NORM_IMAGES, LoadOptions, Loaded, load};
use sae_steer_data::ImageList;
use sae_steer_data::cache::{ActivationCache, CacheError};
use sae_steer_probe::activations::probe_cache_spec;

/// Tunes glibc's allocator for tensor work; every program calls it first.
///
/// A ViT at batch 16 makes 50 MB temporaries (the MLP's [16, 261, 3072]
/// activations) many times a forward pass. Above glibc's mmap threshold
/// (at most 32 MiB by default) each one is a fresh `mmap`, page-faulted in
/// and returned on free: 5% of the CPU time and more of the wall time went
/// to the kernel. With the threshold at 1 GiB and trimming off, freed
/// blocks stay in the heap and are reused (+15% images/s at batch 16 on the
/// CPU, docs/performance.md); the peak memory is unchanged. Elsewhere than
/// glibc this does nothing.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's thresholds; it is called
    // before the program allocates in earnest.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Prints an error with its chain of causes and returns a failing exit code:
/// examples report bad input as a message, never as a panic.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, `outer: cause: root cause`, for the
/// places that keep an error as text.
pub fn error_text(error: impl Into<anyhow::Error>) -> String {
    format!("{:#}", error.into())
}

/// Runs `task` on the chosen backend and turns the outcome (an unusable
/// device or the task's own error) into the program's exit code.
pub fn run_and_report<T>(device: DeviceChoice, task: T) -> ExitCode
where
    T: BackendTask<Output = anyhow::Result<()>>,
{
    report(run_on(device, task).map_err(Into::into).and_then(|r| r))
}

/// Draws the library's progress reports (see [`sae_steer::Progress`]) as
/// indicatif bars on stderr: one bar per phase, `what [bar] done/total unit
/// [elapsed] rate eta status`, cleared when the phase finishes. indicatif
/// hides the bars when stderr is not a terminal; notes are printed either
/// way, above the bar.
#[derive(Debug)]
pub struct IndicatifProgress {
    bar: Mutex<Option<ProgressBar>>,
    bars: bool,
}

impl IndicatifProgress {
    /// Bars and notes.
    pub fn new() -> Self {
        Self {
            bar: Mutex::new(None),
            bars: true,
        }
    }

    /// Notes only, no bars: for benchmarks, whose output is their table.
    pub fn without_bars() -> Self {
        Self {
            bar: Mutex::new(None),
            bars: false,
        }
    }

    /// A new renderer as the options structs hold it.
    pub fn shared() -> SharedProgress {
        SharedProgress::new(Self::new())
    }

    fn slot(&self) -> MutexGuard<'_, Option<ProgressBar>> {
        // A lock poisoned by a panic elsewhere still holds a usable bar.
        self.bar.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open phase's bar (a cheap handle), if any.
    fn current(&self) -> Option<ProgressBar> {
        self.slot().clone()
    }
}

impl Default for IndicatifProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for IndicatifProgress {
    fn start(&self, what: &str, unit: &str, total: u64, done: u64) {
        let bar = if self.bars {
            ProgressBar::new(total)
        } else {
            ProgressBar::hidden()
        };
        // The unit goes into the template itself: escape its braces.
        let unit = unit.replace('{', "{{").replace('}', "}}");
        let counts = if unit.is_empty() {
            "{pos}/{len}".to_string()
        } else {
            format!("{{pos}}/{{len}} {unit}")
        };
        let template = format!(
            "{{prefix}} [{{bar:30}}] {counts} [{{elapsed_precise}}] {{per_sec}} eta {{eta}} {{msg}}"
        );
        bar.set_style(
            ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(what.to_string());
        bar.set_position(done);
        // The rate and eta count from here, not from a resumed job's start.
        bar.reset_eta();
        if let Some(previous) = self.slot().replace(bar) {
            previous.finish_and_clear();
        }
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = self.current() {
            bar.inc(n);
        }
    }

    fn status(&self, text: &str) {
        if let Some(bar) = self.current() {
            bar.set_message(text.to_string());
        }
    }

    fn note(&self, line: &str) {
        match self.current() {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.slot().take() {
            bar.finish_and_clear();
        }
    }
}

/// The PyTorch side of a benchmark, the same flags in each.
#[derive(clap::Args, Debug, Clone)]
pub struct BaselineArgs {
    /// Python with torch (+ transformers for the ViT): run the benchmark's
    /// script under scripts/ with the same sizes and print the ratio.
    #[arg(long)]
    pub torch: Option<PathBuf>,
    /// Threads PyTorch may use (torch.set_num_threads); ours use every core.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Alternate ours and PyTorch this many times and keep each one's best
    /// rate: on a shared machine the load changes between measurements.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
}

/// A benchmark's rounds: ours, then PyTorch's when `theirs` is given,
/// `rounds` times in turn, each side keeping its best figure per key
/// (`best(kept, new)`): on a shared machine the load changes between
/// measurements, and alternating gives both sides the same chances.
pub fn alternate_rounds<K: Ord, V: Default>(
    rounds: usize,
    mut ours: impl FnMut() -> anyhow::Result<std::collections::BTreeMap<K, V>>,
    mut theirs: Option<impl FnMut() -> anyhow::Result<std::collections::BTreeMap<K, V>>>,
    best: impl Fn(&mut V, V),
) -> anyhow::Result<(
    std::collections::BTreeMap<K, V>,
    std::collections::BTreeMap<K, V>,
)> {
    let (mut kept_ours, mut kept_theirs) = Default::default();
    let keep = |all: &mut std::collections::BTreeMap<K, V>,
                new: std::collections::BTreeMap<K, V>| {
        for (key, value) in new {
            best(all.entry(key).or_default(), value);
        }
    };
    for round in 0..rounds.max(1) {
        if rounds > 1 {
            println!("round {}", round + 1);
        }
        keep(&mut kept_ours, ours()?);
        if let Some(theirs) = theirs.as_mut() {
            keep(&mut kept_theirs, theirs()?);
        }
    }
    Ok((kept_ours, kept_theirs))
}

/// Runs `scripts/<script>` (a benchmark's PyTorch side) with `python` and
/// `args`, echoes its output and returns its lines.
pub fn run_torch_script(
    python: &Path,
    script: &str,
    args: &[String],
) -> anyhow::Result<Vec<String>> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(script);
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    for line in &lines {
        println!("{line}");
    }
    Ok(lines)
}

/// Peak resident memory of this process in MiB (Linux; 0 elsewhere), for the
/// benchmarks' memory columns.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// What a steering session loads; `manipulate` and `figures` share these flags.
#[derive(clap::Args, Debug)]
pub struct SessionArgs {
    /// The ViT: a hub id, a Hugging Face folder or a torch-hub .pth.
    #[arg(long, default_value = sae_steer::vit::load::DEFAULT_VIT)]
    pub vit: String,
    /// The SAE: a saev sae.pt or one of our checkpoints, or a hub id
    /// `owner/name[:file]`.
    #[arg(long, default_value = sae_steer::sae::PUBLISHED_DINOV2_SAE)]
    pub sae: String,
    /// Linear probe: a checkpoint folder (its latest step) or file, ours or
    /// the reference's (cfg.json + model_step{N}.pt).
    #[arg(long)]
    pub probe: PathBuf,
    /// ADE20K root (ADEChallengeData2016).
    #[arg(long = "ade20k", visible_alias = "imgs.root")]
    pub ade20k: PathBuf,
    /// The split whose images are the examples (image indices refer to it).
    #[arg(long, default_value = "validation")]
    pub split: Split,
    /// Feature statistics (max_obs is the slider's unit): our file or a saev
    /// `visuals` folder. Without it the unit is the latent's largest value on
    /// the image.
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// SAE input normalization (safetensors with `mean` [d] and `scalar`).
    #[arg(long)]
    pub sae_norm: Option<PathBuf>,
    /// Without a stored or given normalization, estimate it on this many
    /// ADE20K training images (0: run without).
    #[arg(long, default_value_t = DEFAULT_NORM_IMAGES)]
    pub norm_images: usize,
    /// 0-based block the SAE reads [default: the checkpoint's, else 10].
    #[arg(long)]
    pub layer: Option<usize>,
}

impl SessionArgs {
    /// Loads the session's models and data on `device`, printing the notes
    /// the loader leaves (where the normalization came from, say).
    pub fn load<B: Backend>(&self, device: &B::Device) -> anyhow::Result<Loaded<B>> {
        let loaded = load::<B>(&self.load_options(), device)?;
        for note in &loaded.notes {
            eprintln!("note: {note}");
        }
        Ok(loaded)
    }

    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            vit: self.vit.clone(),
            sae: self.sae.clone(),
            probe: self.probe.clone(),
            ade20k: self.ade20k.clone(),
            split: self.split,
            stats: self.stats.clone(),
            sae_norm: self.sae_norm.clone(),
            norm_images: self.norm_images,
            layer: self.layer,
        }
    }
}

/// Puts `hint` (the command-line way around a library refusal, whose own
/// message names the library's option, not a flag) above the error when a
/// cause in its chain is a `CacheError` that `applies` picks.
fn cache_hint<T>(
    result: anyhow::Result<T>,
    applies: impl Fn(&CacheError) -> bool,
    hint: &'static str,
) -> anyhow::Result<T> {
    result.map_err(|e| {
        if e.chain()
            .any(|c| c.downcast_ref::<CacheError>().is_some_and(&applies))
        {
            e.context(hint)
        } else {
            e
        }
    })
}

/// Adds the command-line way past an image the cache builder cannot decode,
/// for the programs that have `--skip-bad` (the library's message names no
/// flag).
pub fn skip_bad_hint<T>(result: anyhow::Result<T>) -> anyhow::Result<T> {
    cache_hint(
        result,
        |e| matches!(e, CacheError::BadImage { .. }),
        "an image cannot be decoded (--skip-bad skips and lists such images)",
    )
}

/// Adds the command-line way to build the missing or other parts of a
/// sharded cache (the library's message names `CacheSpec::part`).
pub fn shard_hint<T>(result: anyhow::Result<T>) -> anyhow::Result<T> {
    cache_hint(
        result,
        |e| matches!(e, CacheError::Parts { .. }),
        "the parts of a sharded cache are built by `cache --shard I/N`, every part with the \
         same flags besides --shard",
    )
}

/// How the probe's activation cache is built when it is missing or partial;
/// `train_probe` and `validate` share these flags.
#[derive(clap::Args, Debug)]
pub struct CacheBuildArgs {
    /// Image decoding threads when the cache is built (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub n_workers: usize,
    /// Images per ViT forward pass when the cache is built.
    #[arg(long, default_value_t = 16)]
    pub cache_batch: usize,
    /// Skip images that cannot be decoded when the cache is built.
    #[arg(long)]
    pub skip_bad: bool,
}

impl CacheBuildArgs {
    /// The probe's activation cache in `dir` for training or validation
    /// (see [`probe_cache_spec`]), built or resumed first when it does not
    /// serve the request yet (saying how fast the ViT ran); an incomplete
    /// cache is refused.
    pub fn probe_cache<B: Backend>(
        &self,
        dir: &Path,
        images: &ImageList,
        vit: &str,
        validation: bool,
        device: &B::Device,
    ) -> anyhow::Result<ActivationCache> {
        let mut spec = probe_cache_spec(vit, validation);
        spec.workers = self.n_workers;
        spec.batch = self.cache_batch;
        spec.skip_bad = self.skip_bad;
        spec.progress = IndicatifProgress::shared();
        let (cache, built) = shard_hint(skip_bad_hint(
            ensure_cache(dir, images, &spec, &mut LazyVit::<B>::new(vit, device))
                .with_context(|| format!("preparing the activation cache {}", dir.display())),
        ))?;
        if let Some(r) = built {
            eprintln!(
                "cached {} images in {:.0} s ({:.2} images/s)",
                r.images_processed,
                r.seconds,
                r.images_per_second()
            );
            for s in &r.skipped {
                eprintln!("skipped image {} ({}): {}", s.index, s.path, s.error);
            }
        }
        if !cache.is_complete() {
            bail!(
                "the cache {} is incomplete; rerun to continue building it",
                dir.display()
            );
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_renderer_follows_phases_and_counts_from_a_resumed_start() {
        // Not a terminal under the test harness: indicatif draws nothing,
        // but the bar still counts.
        let progress = IndicatifProgress::new();
        progress.note("a line before any phase");
        progress.start("caching", "images {odd}", 10, 3);
        progress.advance(2);
        progress.status("status");
        progress.note("a line during a phase");
        let bar = progress.current().expect("an open phase");
        assert_eq!((bar.position(), bar.length()), (5, Some(10)));
        assert_eq!(bar.prefix(), "caching");
        // A new phase replaces the open one.
        progress.start("synth", "", 4, 0);
        progress.advance(4);
        assert_eq!(progress.current().map(|b| b.position()), Some(4));
        progress.finish();
        assert!(progress.current().is_none());
        // Reports outside a phase are ignored.
        progress.advance(1);
        progress.finish();
        let quiet = IndicatifProgress::without_bars();
        quiet.start("validating", "images", 2, 0);
        quiet.advance(2);
        assert!(quiet.current().is_some_and(|b| b.is_hidden()));
    }
}

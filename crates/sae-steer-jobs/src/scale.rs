//! What each stage of `reproduce` costs: wall and CPU time, peak memory,
//! bytes written and throughput, measured on the stage's own process, and the
//! power-law fit of those costs against the run's size that extrapolates a
//! small `--scale` run to the full job.
//!
//! CPU time and peak RSS come from `wait4`, which reports the stage's process
//! together with the processes it waited for (so `cargo run`'s wrapper does
//! not hide the program). Peak GPU memory is sampled from `nvidia-smi` every
//! 200 ms while a CUDA stage runs (the device's used memory above what it held
//! when the stage started).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The real job's image counts (ADE20K SceneParsing).
pub const ADE20K_TRAIN: usize = 20_210;
pub const ADE20K_VAL: usize = 2_000;

/// One stage's measured cost.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    pub wall_s: f64,
    /// User + system time of the stage's processes.
    pub cpu_s: f64,
    pub peak_rss_mib: f64,
    /// Peak anonymous memory (heap) of the stage's process, sampled every
    /// 100 ms: RSS also counts the pages of memory-mapped cache files a
    /// reader touched, which the kernel reclaims at will.
    #[serde(default)]
    pub peak_anon_mib: Option<f64>,
    /// `None` off the GPU.
    pub peak_gpu_mib: Option<f64>,
    /// Growth of the stage's outputs on disk.
    pub bytes_written: u64,
}

/// One stage in `scale.json`: its [`Usage`] (flat: `wall_s`, `cpu_s`, ...)
/// and its work.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageCost {
    pub name: String,
    #[serde(flatten)]
    pub usage: Usage,
    /// Work done, in `unit`s (images, patch-epochs, image-passes, ...).
    pub items: u64,
    pub unit: String,
    pub items_per_s: f64,
}

/// `scale.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScaleReport {
    pub fraction: f64,
    pub device: String,
    pub train_images: usize,
    pub val_images: usize,
    /// Machine and build, for reading the numbers later.
    #[serde(default)]
    pub host: String,
    pub stages: Vec<StageCost>,
    /// PyTorch's ViT-B/14-reg forward on the same device, measured in the
    /// same run (`--python`): the reference's cost is estimated from it.
    #[serde(default)]
    pub torch_vit_images_per_s: Option<f64>,
}

/// Runs `cmd` to completion and measures it; fails if it fails. Bytes
/// written are the growth of `out`, the folder all stages write under.
pub fn run_measured(mut cmd: Command, out: &Path, gpu: bool) -> Result<Usage> {
    eprintln!("xtask> {cmd:?}");
    let before = disk_bytes(out);
    let sampler = gpu.then(GpuSampler::start);
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let anon = AnonSampler::start(child.id());
    let (status, cpu_s, peak_rss_mib) = wait_with_usage(child)?;
    let wall_s = started.elapsed().as_secs_f64();
    let peak_anon_mib = anon.stop();
    let peak_gpu_mib = sampler.map(GpuSampler::stop);
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    let after = disk_bytes(out);
    Ok(Usage {
        wall_s,
        cpu_s,
        peak_rss_mib,
        peak_anon_mib,
        peak_gpu_mib,
        bytes_written: after.saturating_sub(before),
    })
}

/// Samples `RssAnon` of a running process from `/proc` (Linux).
struct AnonSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Option<f64>>,
}

impl AnonSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let path = format!("/proc/{pid}/status");
        let thread = std::thread::spawn(move || {
            let mut peak: Option<f64> = None;
            while !flag.load(Ordering::Relaxed) {
                // Gone (exited, not yet reaped: a zombie has no RssAnon).
                let Some(kib) = std::fs::read_to_string(&path).ok().and_then(|t| {
                    t.lines()
                        .find(|l| l.starts_with("RssAnon:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                }) else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                peak = Some(peak.unwrap_or(0.0).max(kib / 1024.0));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        Self { stop, thread }
    }

    fn stop(self) -> Option<f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

#[cfg(unix)]
fn wait_with_usage(child: std::process::Child) -> Result<(std::process::ExitStatus, f64, f64)> {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain old data that wait4 fills; the pid is our
    // own unwaited child, so wait4 reaps exactly it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("wait4");
        }
    }
    // The child is reaped; `Child` must not wait for it again.
    std::mem::forget(child);
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    // Linux reports ru_maxrss in KiB.
    let rss_mib = usage.ru_maxrss as f64 / 1024.0;
    Ok((std::process::ExitStatus::from_raw(status), cpu, rss_mib))
}

#[cfg(not(unix))]
fn wait_with_usage(mut child: std::process::Child) -> Result<(std::process::ExitStatus, f64, f64)> {
    Ok((child.wait()?, 0.0, 0.0))
}

/// Bytes under `path` (a file or a folder tree); 0 if absent.
pub fn disk_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| disk_bytes(&e.path()))
                .sum::<u64>()
        })
        .unwrap_or(0)
}

/// Polls `nvidia-smi` on a thread while a stage runs.
struct GpuSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<f64>,
}

impl GpuSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let baseline = gpu_used_mib().unwrap_or(0.0);
            let mut peak = baseline;
            while !flag.load(Ordering::Relaxed) {
                if let Some(used) = gpu_used_mib() {
                    peak = peak.max(used);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            peak - baseline
        });
        Self { stop, thread }
    }

    fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0.0)
    }
}

/// Memory in use on the first GPU, from `nvidia-smi`.
fn gpu_used_mib() -> Option<f64> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=memory.used", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Image counts of a `--scale F` run: F of ADE20K's, never fewer than 20
/// training and 4 validation images (the probe and quantify need a few of
/// each to mean anything).
pub fn scale_images(fraction: f64) -> (usize, usize) {
    let of = |n: usize, min: usize| ((n as f64 * fraction).round() as usize).max(min);
    (of(ADE20K_TRAIN, 20), of(ADE20K_VAL, 4))
}

/// The growth of a stage's cost with its work: the exponent `b` of
/// `cost ~ items^b`, by least squares on the logs of two or more runs. `b`
/// near 1 is linear, well above 1 a defect. (Fixed costs such as loading the
/// model pull `b` below 1 at small sizes, so the extrapolation uses
/// [`Affine`].)
pub fn growth_exponent(points: &[(f64, f64)]) -> Option<f64> {
    let logs: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    let fit = Affine::fit_signed(&logs)?;
    Some(fit.per_item)
}

/// A stage's cost as a fixed part plus a part per item, `cost = fixed +
/// per_item * items`, by least squares over two or more runs: what the
/// extrapolation to F = 1 uses.
#[derive(Debug, Clone, Copy)]
pub struct Affine {
    pub fixed: f64,
    pub per_item: f64,
}

impl Affine {
    /// `None` with fewer than two distinct sizes, or when the cost fell as
    /// the work grew (noise larger than the growth: no extrapolation).
    pub fn fit(points: &[(f64, f64)]) -> Option<Self> {
        let fit = Self::fit_signed(points)?;
        (fit.per_item >= 0.0).then(|| Self {
            fixed: fit.fixed.max(0.0),
            per_item: fit.per_item,
        })
    }

    /// The least-squares line, whatever its slope.
    fn fit_signed(points: &[(f64, f64)]) -> Option<Self> {
        let n = points.len() as f64;
        if points.len() < 2 {
            return None;
        }
        let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
        let my = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let per_item = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx;
        Some(Self {
            fixed: my - per_item * mx,
            per_item,
        })
    }

    pub fn at(&self, items: f64) -> f64 {
        self.fixed + self.per_item * items
    }
}

/// A stage's work at F = 1 (the real job on synthetic data), from a run's
/// record of it: image stages scale with their split, the probe sweep with
/// training patches, quantify to 150 classes x 4 methods x 2,000 images;
/// the random ViT, the brief SAE training and the figures do not grow.
pub fn full_items(report: &ScaleReport, stage: &StageCost) -> Option<u64> {
    let train = ADE20K_TRAIN as f64 / report.train_images.max(1) as f64;
    let val = ADE20K_VAL as f64 / report.val_images.max(1) as f64;
    let scaled = |ratio: f64| Some((stage.items as f64 * ratio).round() as u64);
    match stage.name.as_str() {
        "data" => Some((ADE20K_TRAIN + ADE20K_VAL) as u64),
        "cache-training" | "train-probe" | "stats" => scaled(train),
        "cache-validation" | "validate" => scaled(val),
        "quantify" => Some(QUANTIFY_PASSES * ADE20K_VAL as u64),
        "vit" | "train-sae" | "figures" => Some(stage.items),
        _ => None,
    }
}

/// (class, method) passes of quantify at full size: every class, four methods.
pub const QUANTIFY_PASSES: u64 = 150 * 4;

/// Each stage of several runs (one device), fitted and extrapolated to
/// `full_items` (the stage's work at F = 1).
pub struct StageFit {
    pub name: String,
    pub unit: String,
    /// (items, wall s, peak RSS MiB) per run, smallest first.
    pub runs: Vec<(u64, f64, f64)>,
    pub time: Option<Affine>,
    /// [`growth_exponent`] of the wall time and of the peak RSS.
    pub time_growth: Option<f64>,
    pub memory_growth: Option<f64>,
    pub full_items: u64,
}

impl StageFit {
    /// Wall time at F = 1: the fitted fixed + per-item cost, or, for a stage
    /// whose work did not change between runs (nothing to fit), its mean.
    pub fn full_wall_s(&self) -> Option<f64> {
        match self.time {
            Some(t) => Some(t.at(self.full_items as f64)),
            None if !self.runs.is_empty() => {
                Some(self.runs.iter().map(|r| r.1).sum::<f64>() / self.runs.len() as f64)
            }
            None => None,
        }
    }

    /// Linear extrapolation from the largest run: the cost per item there,
    /// times the items at F = 1 (the fit's sanity check: a stage that
    /// scales linearly gives about the same).
    pub fn linear_wall_s(&self) -> Option<f64> {
        let (items, wall, _) = *self.runs.last()?;
        (items > 0).then(|| wall / items as f64 * self.full_items as f64)
    }
}

/// A stage's wall time at F = 1: fitted over several runs, linear from one.
pub fn full_wall(fits: &[StageFit], name: &str) -> Option<f64> {
    let fit = fits.iter().find(|f| f.name == name)?;
    if fit.runs.len() > 1 {
        fit.full_wall_s()
    } else {
        fit.linear_wall_s()
    }
}

/// Our whole job at F = 1 (the stages the preprint needs: not the random
/// ViT, the brief SAE training or the synthetic data).
pub fn ours_wall_s(fits: &[StageFit]) -> Option<f64> {
    [
        "cache-training",
        "cache-validation",
        "train-probe",
        "validate",
        "stats",
        "quantify",
    ]
    .iter()
    .map(|name| full_wall(fits, name))
    .sum()
}

/// What the Python reference would spend on the same job on this machine,
/// from its code and PyTorch's measured ViT rate: it recomputes the ViT for
/// every probe epoch (400 x 20,210 forwards) and runs the whole ViT twice per
/// quantify pass and image, plus a full-width SAE edit (about 0.4 of a
/// forward, docs/performance.md), instead of caching one forward per image.
/// Its probe steps, statistics and validation are counted at our cost (a
/// lower bound: its probe loop was slower per CPU-second than ours).
pub fn reference_wall_s(fits: &[StageFit], torch_images_per_s: f64) -> Option<f64> {
    let wall = |name: &str| full_wall(fits, name);
    let forwards = 400.0 * ADE20K_TRAIN as f64
        + ADE20K_VAL as f64
        + ADE20K_TRAIN as f64
        + 2.4 * (QUANTIFY_PASSES * ADE20K_VAL as u64) as f64;
    Some(forwards / torch_images_per_s + wall("train-probe")? + wall("validate")? + wall("stats")?)
}

/// Fits every stage present in all `reports` and extrapolates it to F = 1.
pub fn fit(reports: &[ScaleReport]) -> Vec<StageFit> {
    let mut sorted: Vec<&ScaleReport> = reports.iter().collect();
    sorted.sort_by(|a, b| a.fraction.total_cmp(&b.fraction));
    let Some(first) = sorted.first() else {
        return Vec::new();
    };
    first
        .stages
        .iter()
        .filter_map(|stage| {
            let runs: Vec<(u64, f64, f64)> = sorted
                .iter()
                .filter_map(|r| r.stages.iter().find(|s| s.name == stage.name))
                .map(|s| (s.items, s.usage.wall_s, s.usage.peak_rss_mib))
                .collect();
            if runs.len() != sorted.len() {
                return None;
            }
            let time: Vec<(f64, f64)> = runs.iter().map(|r| (r.0 as f64, r.1)).collect();
            let memory: Vec<(f64, f64)> = runs.iter().map(|r| (r.0 as f64, r.2)).collect();
            let largest = sorted.last()?;
            let largest_stage = largest.stages.iter().find(|s| s.name == stage.name)?;
            Some(StageFit {
                name: stage.name.clone(),
                unit: stage.unit.clone(),
                time: Affine::fit(&time),
                time_growth: growth_exponent(&time),
                memory_growth: growth_exponent(&memory),
                full_items: full_items(largest, largest_stage)?,
                runs,
            })
        })
        .collect()
}

/// The growth table of `docs/performance.md`.
pub fn markdown_table(fits: &[StageFit], fractions: &[f64]) -> String {
    let mut md = String::from("| stage | unit |");
    for f in fractions {
        md += &format!(" F={f}: items / wall s / RSS MiB |");
    }
    md += " time ~ items^b | fixed s | s per 1k items | RSS ~ items^b | F=1 items | F=1 wall |\n|---|---|";
    md += &"---:|".repeat(fractions.len() + 6);
    md += "\n";
    for fit in fits {
        md += &format!("| {} | {} |", fit.name, fit.unit);
        for (items, wall, rss) in &fit.runs {
            md += &format!(" {items} / {wall:.1} / {rss:.0} |");
        }
        let exp = |b: Option<f64>| b.map_or("-".into(), |b| format!("{b:.2}"));
        let (fixed, per_k) = match fit.time {
            Some(t) => (
                format!("{:.1}", t.fixed),
                format!("{:.3}", t.per_item * 1e3),
            ),
            None => ("-".into(), "-".into()),
        };
        md += &format!(
            " {} | {fixed} | {per_k} | {} | {} | {} |\n",
            exp(fit.time_growth),
            exp(fit.memory_growth),
            fit.full_items,
            fit.full_wall_s().map_or("-".into(), human_seconds),
        );
    }
    md
}

/// The growth table of several runs, with the full job's extrapolated cost
/// and, when a run measured PyTorch, the reference's beside it.
pub fn fit_markdown(reports: &[ScaleReport]) -> String {
    let mut fractions: Vec<f64> = reports.iter().map(|r| r.fraction).collect();
    fractions.sort_by(f64::total_cmp);
    let fits = fit(reports);
    let mut md = markdown_table(&fits, &fractions);
    if let Some(ours) = ours_wall_s(&fits) {
        md += &format!(
            "\nThe full job (caches, probe sweep, validation, statistics, quantify), fitted: {}.\n",
            human_seconds(ours)
        );
        let torch = reports
            .iter()
            .filter_map(|r| r.torch_vit_images_per_s)
            .collect::<Vec<_>>();
        if !torch.is_empty() {
            let rate = torch.iter().sum::<f64>() / torch.len() as f64;
            if let Some(reference) = reference_wall_s(&fits, rate) {
                md += &format!(
                    "The Python reference, from PyTorch's ViT at {rate:.2} images/s: {} ({:.1}x ours).\n",
                    human_seconds(reference),
                    reference / ours
                );
            }
        }
    }
    md
}

pub fn human_seconds(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 3.0 * 86400.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86400.0)
    }
}

pub fn read_report(path: &Path) -> Result<ScaleReport> {
    let text = sae_steer_files::read_to_string_bounded(path, 1 << 20)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a scale.json", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_fit_recovers_fixed_and_per_item_costs() {
        let pts: Vec<(f64, f64)> = [10.0, 20.0, 40.0]
            .iter()
            .map(|&x| (x, 5.0 + 0.5 * x))
            .collect();
        let a = Affine::fit(&pts).unwrap();
        assert!(
            (a.fixed - 5.0).abs() < 1e-9 && (a.per_item - 0.5).abs() < 1e-9,
            "{a:?}"
        );
        assert!((a.at(1000.0) - 505.0).abs() < 1e-6);
        assert!(Affine::fit(&[(10.0, 3.0), (10.0, 4.0)]).is_none());
        assert!(
            Affine::fit(&[(10.0, 4.0), (20.0, 3.0)]).is_none(),
            "falling cost"
        );
    }

    #[test]
    fn growth_exponent_recovers_a_power_law() {
        let pts: Vec<(f64, f64)> = [10.0, 20.0, 40.0]
            .iter()
            .map(|&x: &f64| (x, 3.0 * x.powf(1.5)))
            .collect();
        let b = growth_exponent(&pts).unwrap();
        assert!((b - 1.5).abs() < 1e-9, "{b}");
        assert!(growth_exponent(&pts[..1]).is_none());
    }

    #[test]
    fn scale_images_never_fall_below_the_minimum() {
        assert_eq!(scale_images(1.0), (20_210, 2_000));
        assert_eq!(scale_images(0.01), (202, 20));
        assert_eq!(scale_images(1e-6), (20, 4));
    }

    #[test]
    fn a_measured_child_reports_its_own_cpu_and_memory() {
        // A shell that burns CPU for a moment: its CPU time must be seen
        // even though it runs as a grandchild of `sh -c`.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"]);
        let dir = std::env::temp_dir();
        let usage = run_measured(cmd, &dir.join("sae-steer-no-such-dir"), false).unwrap();
        assert!(usage.cpu_s > 0.01, "{usage:?}");
        assert!(usage.peak_rss_mib > 0.1, "{usage:?}");
        assert!(usage.wall_s >= usage.cpu_s * 0.5, "{usage:?}");
        let mut failing = Command::new("sh");
        failing.args(["-c", "exit 3"]);
        assert!(run_measured(failing, &dir, false).is_err());
    }
}

//! Training a sweep of probes in one pass over the data, with checkpoints
//! and resume.
//!
//! Every epoch visits the images in a fresh order drawn from the sweep seed
//! and the epoch number (so a resumed run sees exactly the batches an
//! uninterrupted one would); a step is the patches of `batch_size` whole
//! images, the last step of an epoch being smaller (PyTorch's DataLoader
//! without `drop_last`). All probes see each batch once.
//!
//! A run holds a [`FolderLock`] on the checkpoint root, so two sweeps cannot
//! write the same probe folders; a rerun after a crash removes what the crash
//! left (temporaries of interrupted writes, a checkpoint the pruning did not
//! get to) and ends with the files of an uninterrupted run, bit for bit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use sae_steer_files::{FolderLock, Phase, Progress, SharedProgress};
use serde_json::{Map, Value, json};

use crate::checkpoint::{
    CONFIG_FILE, CheckpointMeta, checkpoint_file_name, checkpoint_files, read_state, write_state,
};
use crate::config::SweepConfig;
use crate::data::PatchSource;
use crate::error::{ProbeError, Result};
use crate::sweep::{BatchStats, ProbeState, ProbeSweep};

/// How to run a sweep (as opposed to what to train, [`SweepConfig`]).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Probe folders are created here (`lr_0_001__wd_0_1`, ...).
    pub ckpt_root: PathBuf,
    /// Per-epoch log lines are appended here too (besides stderr).
    pub log_file: Option<PathBuf>,
    /// Classes per probe (151 for ADE20K: labels 0..=150).
    pub n_classes: usize,
    /// When all training patches as f32 fit in this many bytes, they are
    /// loaded onto the device once and batches are gathered there;
    /// otherwise every batch is read from the source (one batch ahead, on
    /// another thread).
    pub resident_bytes: u64,
    /// Patches per forward/backward pass; bounds the `[chunk, P, C]` logits.
    /// On the CPU small chunks win (2,048: the temporaries stay below
    /// glibc's mmap threshold, so they are reused instead of faulted in
    /// afresh); a GPU prefers large ones (fewer, bigger kernels).
    pub chunk_patches: usize,
    /// Besides the kept checkpoints of the evaluation epochs, write a
    /// resumable one every `save_every` epochs (0: never); only the newest
    /// of those is kept.
    pub save_every: usize,
    /// Stop after this many epochs in this call (an interruption, for tests
    /// and time-boxed jobs); the run resumes from its checkpoint.
    pub max_epochs: Option<usize>,
    /// Where the sweep reports its optimizer steps (one phase, "training
    /// probes", of this call's steps) and its log lines; silent by default
    /// (the log file still gets every line).
    pub progress: SharedProgress,
    /// Extra keys for each probe's `cfg.json` (dataset root, ViT, cache, ...).
    pub run_info: Map<String, Value>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            ckpt_root: PathBuf::from("checkpoints/contrib/semseg"),
            log_file: None,
            n_classes: 151,
            resident_bytes: 8 << 30,
            chunk_patches: 2048,
            save_every: 10,
            max_epochs: None,
            progress: SharedProgress::default(),
            run_info: Map::new(),
        }
    }
}

/// What a call to [`train_sweep`] did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The epoch this call started at (0, or one past a checkpoint).
    pub start_epoch: usize,
    /// Epochs completed by this call.
    pub epochs_run: usize,
    /// Optimizer steps taken in total (including before a resume).
    pub steps: u64,
    /// Whether the data was held on the device.
    pub resident: bool,
    /// Statistics of the last batch.
    pub last_batch: Option<BatchStats>,
    /// Wall-clock seconds of each epoch run.
    pub epoch_seconds: Vec<f64>,
    /// The probe folders.
    pub probe_dirs: Vec<PathBuf>,
}

/// Trains every probe of `sweep` on `data`, resuming from the newest step
/// all probe folders under `opts.ckpt_root` share.
pub fn train_sweep<B: Backend, S: PatchSource>(
    sweep: &SweepConfig,
    data: &S,
    opts: &TrainOptions,
    device: &B::Device,
) -> Result<TrainReport> {
    sweep.check()?;
    let hparams = sweep.probes();
    let n_images = data.n_images();
    let (patches, d, c) = (data.patches_per_image(), data.dim(), opts.n_classes);
    if n_images == 0 {
        return Err(ProbeError::Data("the training data holds no images".into()));
    }
    if c == 0 || c > 256 {
        return Err(ProbeError::Data(format!(
            "{c} classes: labels are bytes, so 1..=256 classes"
        )));
    }
    let steps_per_epoch = n_images.div_ceil(sweep.batch_size) as u64;
    let run = json!({
        "n_images": n_images,
        "patches_per_image": patches,
        "dim": d,
        "n_classes": c,
        "batch_size": sweep.batch_size,
        "seed": sweep.seed,
        "data": data.fingerprint(),
    });
    let dirs: Vec<PathBuf> = hparams
        .iter()
        .map(|h| opts.ckpt_root.join(h.dir_name()))
        .collect();
    let _lock =
        FolderLock::acquire(&opts.ckpt_root).map_err(|e| ProbeError::io(&opts.ckpt_root, e))?;
    remove_temporaries(&dirs)?;

    let (mut probes, start_epoch) = match resume_point(&dirs, &run, sweep, steps_per_epoch)? {
        Some((states, step, epoch)) => {
            // What the interrupted run's last pruning would have removed.
            prune(&dirs, step, steps_per_epoch, sweep)?;
            let sweep_probes = ProbeSweep::<B>::from_states(&states, step, device)?;
            (sweep_probes, epoch + 1)
        }
        None => (ProbeSweep::<B>::new(&hparams, d, c, device)?, 0),
    };
    for (dir, h) in dirs.iter().zip(&hparams) {
        write_config(dir, sweep, h, d, c, &opts.run_info)?;
    }
    let mut log = Log::open(opts.log_file.as_deref(), &*opts.progress)?;
    let mut report = TrainReport {
        start_epoch,
        epochs_run: 0,
        steps: probes.step(),
        resident: false,
        last_batch: None,
        epoch_seconds: Vec::new(),
        probe_dirs: dirs.clone(),
    };
    let end_epoch = match opts.max_epochs {
        Some(k) => sweep.n_epochs.min(start_epoch + k),
        None => sweep.n_epochs,
    };
    if start_epoch >= end_epoch {
        log.line(&format!(
            "nothing to do: {} probes already trained for {start_epoch} of {} epochs",
            hparams.len(),
            sweep.n_epochs
        ))?;
        return Ok(report);
    }
    if start_epoch > 0 {
        log.line(&format!(
            "resuming {} probes after epoch {} (step {})",
            hparams.len(),
            start_epoch - 1,
            probes.step()
        ))?;
    }

    let bytes = (n_images * patches * d) as u64 * 4;
    let resident = if bytes <= opts.resident_bytes {
        log.line(&format!(
            "loading all {n_images} training images ({:.2} GiB of f32 patches) onto the device once",
            bytes as f64 / f64::from(1u32 << 30)
        ))?;
        Some(Resident::<B>::load(data, c, device)?)
    } else {
        log.line(&format!(
            "streaming batches from the source: {:.2} GiB of f32 patches exceed the device budget of {:.2} GiB",
            bytes as f64 / f64::from(1u32 << 30),
            opts.resident_bytes as f64 / f64::from(1u32 << 30)
        ))?;
        None
    };
    report.resident = resident.is_some();

    let progress = Phase::start(
        &*opts.progress,
        "training probes",
        "steps",
        (end_epoch - start_epoch) as u64 * steps_per_epoch,
        0,
    );
    for epoch in start_epoch..end_epoch {
        let started = Instant::now();
        let order = epoch_order(n_images, sweep.seed, epoch);
        let batches: Vec<&[usize]> = order.chunks(sweep.batch_size).collect();
        let mut last = None;
        let mut step_fn = |x: Tensor<B, 2>, y: Tensor<B, 1, Int>| {
            let stats = probes.train_step(x, y, opts.chunk_patches);
            progress.advance(1);
            progress.status(&format!(
                "epoch {epoch}, loss {:.4}..{:.4}, best acc {:.1}%",
                min(&stats.loss),
                max(&stats.loss),
                100.0 * max(&stats.accuracy)
            ));
            last = Some(stats);
        };
        match &resident {
            Some(res) => {
                for rows in &batches {
                    let (x, y) = res.batch(rows, patches);
                    step_fn(x, y);
                }
            }
            None => stream_epoch(data, &batches, c, device, &mut step_fn)?,
        }
        let stats = last.ok_or_else(|| ProbeError::Data("an epoch without batches".into()))?;
        let step = probes.step();
        let line = format!(
            "epoch: {epoch}, step: {step}, mean train loss: {:.5}, max train acc: {:.3} \
             (last batch; loss over probes {:.5}..{:.5})",
            mean(&stats.loss),
            100.0 * max(&stats.accuracy),
            min(&stats.loss),
            max(&stats.loss),
        );
        log.line(&line)?;

        let keep = sweep.is_eval_epoch(epoch);
        let rolling = opts.save_every > 0 && (epoch + 1).is_multiple_of(opts.save_every);
        if keep || rolling {
            let states = probes.states();
            save_all(&dirs, &states, step, epoch, &run)?;
            prune(&dirs, step, steps_per_epoch, sweep)?;
        }
        report.epoch_seconds.push(started.elapsed().as_secs_f64());
        report.epochs_run += 1;
        report.steps = step;
        report.last_batch = Some(stats);
    }
    drop(progress);
    Ok(report)
}

/// The image order of an epoch: a permutation drawn from the seed and the
/// epoch alone, so it does not depend on where a run was resumed.
pub fn epoch_order(n_images: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n_images).collect();
    let mixed = seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    order.shuffle(&mut StdRng::seed_from_u64(mixed));
    order
}

/// Reads each batch on a helper thread, one ahead of the device.
fn stream_epoch<B: Backend, S: PatchSource>(
    data: &S,
    batches: &[&[usize]],
    n_classes: usize,
    device: &B::Device,
    step: &mut impl FnMut(Tensor<B, 2>, Tensor<B, 1, Int>),
) -> Result<()> {
    let (d, patches) = (data.dim(), data.patches_per_image());
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Result<(Vec<f32>, Vec<u8>)>>(1);
        scope.spawn(move || {
            for rows in batches {
                let (mut x, mut y) = (Vec::new(), Vec::new());
                let read = data
                    .read(rows, &mut x, &mut y)
                    .and_then(|()| check_labels(&y, n_classes, rows, patches))
                    .map(|()| (x, y));
                let failed = read.is_err();
                if tx.send(read).is_err() || failed {
                    return;
                }
            }
        });
        for _ in batches {
            let (x, y) = rx
                .recv()
                .map_err(|_| ProbeError::Data("the batch reader thread stopped".into()))??;
            let n = y.len();
            let x = Tensor::<B, 2>::from_data(TensorData::new(x, [n, d]), device);
            let y: Vec<i64> = y.into_iter().map(i64::from).collect();
            let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [n]), device);
            step(x, y);
        }
        Ok(())
    })
}

fn check_labels(labels: &[u8], n_classes: usize, rows: &[usize], patches: usize) -> Result<()> {
    match labels.iter().position(|&l| usize::from(l) >= n_classes) {
        None => Ok(()),
        Some(i) => Err(ProbeError::Data(format!(
            "image {} has patch label {}, but the probes have {n_classes} classes",
            rows.get(i / patches.max(1))
                .copied()
                .unwrap_or(i / patches.max(1)),
            labels[i]
        ))),
    }
}

/// All training patches on the device, in slabs of whole images so that
/// loading never needs twice the memory.
struct Resident<B: Backend> {
    slabs: Vec<Tensor<B, 2>>,
    slab_images: usize,
    labels: Tensor<B, 1, Int>,
}

impl<B: Backend> Resident<B> {
    const SLAB_IMAGES: usize = 512;

    fn load<S: PatchSource>(data: &S, n_classes: usize, device: &B::Device) -> Result<Self> {
        let (n, p, d) = (data.n_images(), data.patches_per_image(), data.dim());
        let mut slabs = Vec::new();
        let mut all_labels: Vec<i64> = Vec::with_capacity(n * p);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for start in (0..n).step_by(Self::SLAB_IMAGES) {
            let rows: Vec<usize> = (start..(start + Self::SLAB_IMAGES).min(n)).collect();
            data.read(&rows, &mut x, &mut y)?;
            check_labels(&y, n_classes, &rows, p)?;
            slabs.push(Tensor::from_data(
                TensorData::new(std::mem::take(&mut x), [y.len(), d]),
                device,
            ));
            all_labels.extend(y.iter().map(|&l| i64::from(l)));
        }
        let labels = Tensor::from_data(TensorData::new(all_labels, [n * p]), device);
        Ok(Self {
            slabs,
            slab_images: Self::SLAB_IMAGES,
            labels,
        })
    }

    /// The patches and labels of `rows`, gathered on the device.
    fn batch(&self, rows: &[usize], patches: usize) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
        let device = self.labels.device();
        let mut per_slab: Vec<Vec<i64>> = vec![Vec::new(); self.slabs.len()];
        let mut global: Vec<i64> = Vec::with_capacity(rows.len() * patches);
        // Images are grouped by slab; the order within a batch only changes
        // the summation order of the gradient.
        let mut sorted = rows.to_vec();
        sorted.sort_unstable();
        for &row in &sorted {
            let (slab, local) = (row / self.slab_images, row % self.slab_images);
            for j in 0..patches {
                per_slab[slab].push((local * patches + j) as i64);
                global.push((row * patches + j) as i64);
            }
        }
        let parts: Vec<Tensor<B, 2>> = per_slab
            .into_iter()
            .zip(&self.slabs)
            .filter(|(idx, _)| !idx.is_empty())
            .map(|(idx, slab)| {
                let k = idx.len();
                slab.clone()
                    .select(0, Tensor::from_data(TensorData::new(idx, [k]), &device))
            })
            .collect();
        let n = global.len();
        let labels = self
            .labels
            .clone()
            .select(0, Tensor::from_data(TensorData::new(global, [n]), &device));
        (Tensor::cat(parts, 0), labels)
    }
}

/// The newest step every probe folder has a checkpoint of, and the states
/// there; `None` when there is nothing to resume.
#[allow(clippy::type_complexity)]
fn resume_point(
    dirs: &[PathBuf],
    run: &Value,
    sweep: &SweepConfig,
    steps_per_epoch: u64,
) -> Result<Option<(Vec<ProbeState>, u64, usize)>> {
    let mut common: Option<Vec<u64>> = None;
    let mut any = false;
    for dir in dirs {
        let steps: Vec<u64> = if dir.is_dir() {
            checkpoint_files(dir)?
                .into_iter()
                .filter(|(p, _)| p.extension().is_some_and(|e| e == "safetensors"))
                .filter_map(|(_, s)| s)
                .collect()
        } else {
            Vec::new()
        };
        any |= !steps.is_empty();
        common = Some(match common {
            None => steps,
            Some(c) => c.into_iter().filter(|s| steps.contains(s)).collect(),
        });
    }
    let Some(&step) = common.unwrap_or_default().iter().max() else {
        if any {
            let root = dirs
                .first()
                .and_then(|d| d.parent())
                .unwrap_or(Path::new("."));
            return Err(ProbeError::Resume {
                path: root.to_path_buf(),
                message: "some probe folders hold checkpoints but no step is common to all \
                          probes of this sweep (was the sweep changed?); use another checkpoint \
                          root (`TrainOptions::ckpt_root`) or delete the old folders"
                    .into(),
            });
        }
        return Ok(None);
    };
    let mut states = Vec::with_capacity(dirs.len());
    let mut epoch = 0;
    for (dir, hp) in dirs.iter().zip(sweep.probes()) {
        let file = dir.join(checkpoint_file_name(step));
        let (state, meta) = read_state(&file)?;
        let bad = |message: String| {
            Err(ProbeError::Resume {
                path: file.clone(),
                message,
            })
        };
        if meta.run != *run {
            return bad(format!(
                "it was trained with {}, this run is {run}; use another checkpoint root \
                 (`TrainOptions::ckpt_root`) or delete it",
                meta.run
            ));
        }
        if state.hparams != hp {
            return bad(format!(
                "it holds {:?}, this sweep asks for {hp:?}",
                state.hparams
            ));
        }
        // Checked: step and epoch come from the file's metadata.
        let epoch_end = (meta.epoch as u64)
            .checked_add(1)
            .and_then(|e| e.checked_mul(steps_per_epoch));
        if epoch_end != Some(meta.step) {
            return bad(format!(
                "step {} does not end epoch {} at {steps_per_epoch} steps an epoch",
                meta.step, meta.epoch
            ));
        }
        epoch = meta.epoch;
        states.push(state);
    }
    Ok(Some((states, step, epoch)))
}

fn save_all(
    dirs: &[PathBuf],
    states: &[ProbeState],
    step: u64,
    epoch: usize,
    run: &Value,
) -> Result<()> {
    for (dir, state) in dirs.iter().zip(states) {
        write_state(
            dir,
            state,
            &CheckpointMeta {
                hparams: state.hparams,
                step,
                epoch,
                run: run.clone(),
            },
        )?;
    }
    Ok(())
}

/// Removes the temporaries of writes a crash interrupted (the lock is held:
/// no other process is writing them).
fn remove_temporaries(dirs: &[PathBuf]) -> Result<()> {
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        sae_steer_files::remove_temporaries(dir).map_err(|e| ProbeError::io(dir, e))?;
    }
    Ok(())
}

/// Removes our older checkpoints that ended no evaluation epoch: only the
/// kept ones and the newest survive.
fn prune(dirs: &[PathBuf], newest: u64, steps_per_epoch: u64, sweep: &SweepConfig) -> Result<()> {
    for dir in dirs {
        for (path, step) in checkpoint_files(dir)? {
            let ours = path.extension().is_some_and(|e| e == "safetensors");
            let Some(step) = step else {
                continue;
            };
            let ends_epoch = step > 0 && step.is_multiple_of(steps_per_epoch);
            let kept = ends_epoch && sweep.is_eval_epoch((step / steps_per_epoch - 1) as usize);
            if ours && step < newest && !kept {
                std::fs::remove_file(&path).map_err(|e| ProbeError::io(&path, e))?;
            }
        }
    }
    Ok(())
}

/// A probe's `cfg.json`: the reference's keys, then the caller's extras.
fn write_config(
    dir: &Path,
    sweep: &SweepConfig,
    hp: &crate::config::ProbeHparams,
    d: usize,
    c: usize,
    extra: &Map<String, Value>,
) -> Result<()> {
    let mut cfg = Map::new();
    cfg.insert("learning_rate".into(), json!(hp.learning_rate));
    cfg.insert("weight_decay".into(), json!(hp.weight_decay));
    cfg.insert("n_epochs".into(), json!(sweep.n_epochs));
    cfg.insert("batch_size".into(), json!(sweep.batch_size));
    cfg.insert("eval_every".into(), json!(sweep.eval_every));
    cfg.insert("seed".into(), json!(hp.seed));
    cfg.insert("in_features".into(), json!(d));
    cfg.insert("out_features".into(), json!(c));
    for (k, v) in extra {
        cfg.insert(k.clone(), v.clone());
    }
    let text = serde_json::to_string_pretty(&Value::Object(cfg)).unwrap_or_default();
    let path = dir.join(CONFIG_FILE);
    sae_steer_files::write_atomic(&path, text.as_bytes()).map_err(|e| ProbeError::io(&path, e))
}

/// Log lines to the progress sink (as notes) and, when asked, appended to a
/// file. The file is a record of what each call did (a resumed run adds its
/// own lines) and is never read back; a line a crash cut short is ended
/// before new lines go on.
struct Log<'p> {
    file: Option<(PathBuf, std::fs::File)>,
    progress: &'p dyn Progress,
}

impl<'p> Log<'p> {
    fn open(path: Option<&Path>, progress: &'p dyn Progress) -> Result<Self> {
        let file = match path {
            None => None,
            Some(path) => {
                if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| ProbeError::io(dir, e))?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| ProbeError::io(path, e))?;
                if !ends_a_line(&mut f).map_err(|e| ProbeError::io(path, e))? {
                    f.write_all(b"\n").map_err(|e| ProbeError::io(path, e))?;
                }
                Some((path.to_path_buf(), f))
            }
        };
        Ok(Self { file, progress })
    }

    fn line(&mut self, line: &str) -> Result<()> {
        self.progress.note(line);
        if let Some((path, f)) = &mut self.file {
            writeln!(f, "{line}").map_err(|e| ProbeError::io(&*path, e))?;
        }
        Ok(())
    }
}

/// Whether a file is empty or ends with a newline.
fn ends_a_line(f: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if f.metadata()?.len() == 0 {
        return Ok(true);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

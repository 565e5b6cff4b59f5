//! A whole training run: start or resume, steps, metrics, checkpoints.
//!
//! Output directory:
//! ```text
//! <out>/train-state.json            where the run stands (written last, atomically)
//! <out>/state-<step>/<name>.safetensors        SAE weights at that step (our format)
//! <out>/state-<step>/<name>.optim.safetensors  Adam moments, firing counters
//! <out>/<name>.safetensors          the latest weights of each SAE (our format)
//! <out>/metrics.csv                 one row per SAE per logging interval
//! ```
//! A checkpoint writes a new `state-<step>` directory, then the latest SAE
//! files, then points `train-state.json` at the new state, then removes older
//! state directories: a crash at any moment leaves a complete state to resume
//! from, and latest files at least as new as it. Rerunning the same command
//! resumes from it and ends with the files of an uninterrupted run, bit for
//! bit: the metrics rows written after the state (and a row cut short by the
//! crash) are dropped, leftovers of interrupted writes and older states are
//! removed. The run holds a [`FolderLock`] on the directory, so a second
//! process training into it is refused instead of interleaving its writes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sae_steer_files::{FolderLock, Phase, SharedProgress, is_temp_name};

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checkpoint::Normalization;
use crate::error::{Result, SaeError};
use crate::train::TrainConfig;
use crate::train::data::{BoxError, TrainingData, check_width, data_error, estimate_start};
use crate::train::random::SplitMix64;
use crate::train::trainer::{IntervalMetrics, Trainer};

/// Name of the run's state file inside the output directory.
pub const STATE_FILE: &str = "train-state.json";
const STATE_FORMAT: &str = "sae-steer-train/1";
const METRICS_FILE: &str = "metrics.csv";

/// How [`train`] reports progress.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Where the run reports its steps (one phase, "training SAEs", counted
    /// from the step it resumes at), the latest metrics (as the status; a
    /// line per SAE when it trains several) and where it resumed and ended
    /// (as notes); silent by default.
    pub progress: SharedProgress,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub steps: u64,
    pub tokens_seen: u64,
    /// The step the run resumed from, if it did.
    pub resumed_from: Option<u64>,
    /// Latest checkpoint of each SAE, in the order of the config.
    pub checkpoints: Vec<PathBuf>,
    /// The last logging interval's metrics, one per SAE.
    pub metrics: Vec<IntervalMetrics>,
    pub normalization: Option<Normalization>,
    /// Batches shorter than the batch size (ends of passes), skipped.
    pub short_batches: u64,
}

/// Where the run stands; `train-state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    format: String,
    step: u64,
    tokens_seen: u64,
    /// Pass over the data in progress and batches already taken from it.
    epoch: u64,
    batches_in_epoch: u64,
    short_batches: u64,
    state_dir: String,
    finished: bool,
    config: TrainConfig,
    last_metrics: Vec<IntervalMetrics>,
}

/// The seed of pass `epoch` (and of the initial sample, `u64::MAX`).
fn epoch_seed(data_seed: u64, epoch: u64) -> u64 {
    SplitMix64::stream(data_seed, &[epoch]).next_u64()
}

/// Trains `config.saes` on `data` into `out`, resuming from `out`'s state
/// file when there is one (the config must match it, except for
/// `total_tokens`, `log_every` and `checkpoint_every`).
///
/// Batches must hold `config.batch_size` rows; a shorter one (the end of a
/// pass) is skipped, a longer one is an error. Passes repeat, each with its
/// own seed, until `config.total_tokens` rows have been trained on.
pub fn train<'d, B: Backend>(
    config: &TrainConfig,
    data: &mut dyn TrainingData<'d>,
    out: &Path,
    device: &B::Device,
    options: &RunOptions,
) -> Result<TrainReport> {
    config.validate()?;
    let _lock = FolderLock::acquire(out).map_err(|e| SaeError::io(out, e))?;
    let state_path = out.join(STATE_FILE);
    let total_steps = config.total_steps();
    let d = config.d_model;
    let batch = config.batch_size;

    let (mut trainer, mut pos, resumed_from, mut last_metrics) = if state_path.exists() {
        let state = read_state(&state_path)?;
        check_compatible(&state_path, &state.config, config)?;
        remove_leftovers(out, &state.state_dir);
        let trainer = Trainer::<B>::load_state(
            config.clone(),
            &out.join(&state.state_dir),
            state.step,
            state.tokens_seen,
            device,
        )?;
        let pos = Position {
            epoch: state.epoch,
            batches: state.batches_in_epoch,
            short: state.short_batches,
        };
        (trainer, pos, Some(state.step), state.last_metrics)
    } else {
        // A run killed before its first checkpoint: nothing of it is kept.
        remove_leftovers(out, "");
        let (norm, b_dec) = estimate_start(
            data,
            epoch_seed(config.data_seed, u64::MAX),
            batch,
            d,
            config.init_samples,
            &config.normalization,
        )?;
        let trainer = Trainer::<B>::new(config.clone(), norm, &b_dec, device)?;
        let pos = Position {
            epoch: 0,
            batches: 0,
            short: 0,
        };
        (trainer, pos, None, Vec::new())
    };

    let mut csv = MetricsCsv::open(&out.join(METRICS_FILE), resumed_from.unwrap_or(0))?;
    let progress = &*options.progress;
    let bar = Phase::start(
        progress,
        "training SAEs",
        "steps",
        total_steps,
        trainer.steps().min(total_steps),
    );
    if let Some(step) = resumed_from {
        bar.note(&format!(
            "resuming {} at step {step} (pass {}, batch {})",
            out.display(),
            pos.epoch,
            pos.batches
        ));
    }

    let started = Instant::now();
    let mut batches = if trainer.steps() < total_steps {
        Some(
            data.epoch_from(epoch_seed(config.data_seed, pos.epoch), batch, pos.batches)
                .map_err(data_error)?,
        )
    } else {
        None
    };
    let mut trained_in_epoch = pos.batches > 0;
    while trainer.steps() < total_steps {
        let Some(source) = batches.as_mut() else {
            break;
        };
        let rows = match source.next() {
            Some(r) => r.map_err(|e: BoxError| data_error(e))?,
            None => {
                if !trained_in_epoch {
                    return Err(SaeError::Data(format!(
                        "pass {} of the data held no full batch of {batch} rows",
                        pos.epoch
                    )));
                }
                pos.epoch += 1;
                pos.batches = 0;
                trained_in_epoch = false;
                batches = Some(
                    data.epoch(epoch_seed(config.data_seed, pos.epoch), batch)
                        .map_err(data_error)?,
                );
                continue;
            }
        };
        pos.batches += 1;
        check_width(&rows, d)?;
        let n = rows.len() / d;
        if n > batch {
            return Err(SaeError::Data(format!(
                "a batch of {n} rows, more than the batch size {batch}"
            )));
        }
        if n < batch {
            pos.short += 1;
            continue;
        }
        trainer.step(&rows)?;
        trained_in_epoch = true;
        bar.advance(1);

        let step = trainer.steps();
        if step % config.log_every == 0 || step == total_steps {
            last_metrics = trainer.take_metrics();
            csv.write(&last_metrics)?;
            report_metrics(&bar, &last_metrics);
        }
        if step % config.checkpoint_every == 0 || step == total_steps {
            checkpoint(&trainer, out, &pos, &last_metrics, step == total_steps)?;
        }
    }
    drop(batches);
    drop(bar);

    // A resumed run that had already finished: make sure the final files exist.
    let checkpoints: Vec<PathBuf> = config
        .saes
        .iter()
        .map(|s| out.join(format!("{}.safetensors", s.name)))
        .collect();
    if checkpoints.iter().any(|p| !p.exists()) {
        checkpoint(&trainer, out, &pos, &last_metrics, true)?;
    }
    progress.note(&format!(
        "trained {} steps ({} rows) in {:.1}s; SAEs in {}",
        trainer.steps(),
        trainer.tokens_seen(),
        started.elapsed().as_secs_f64(),
        out.display()
    ));
    Ok(TrainReport {
        steps: trainer.steps(),
        tokens_seen: trainer.tokens_seen(),
        resumed_from,
        checkpoints,
        metrics: last_metrics,
        normalization: trainer.normalization().cloned(),
        short_batches: pos.short,
    })
}

#[derive(Debug, Clone)]
struct Position {
    epoch: u64,
    batches: u64,
    short: u64,
}

fn report_metrics(bar: &Phase<'_>, metrics: &[IntervalMetrics]) {
    if let Some(m) = metrics.first() {
        bar.status(&format!(
            "loss {:.4} nmse {:.3} L0 {:.1} dead {}",
            m.loss, m.nmse, m.l0, m.dead
        ));
    }
    if metrics.len() > 1 {
        for m in metrics {
            bar.note(&format!(
                "step {:>7} {:<32} loss {:.5} nmse {:.4} L0 {:>7.1} dead {:>6} dense {:>6}",
                m.step, m.sae, m.loss, m.nmse, m.l0, m.dead, m.dense
            ));
        }
    }
}

/// Writes the state of every SAE, then the latest SAE files, then the state
/// file, then removes older states. The latest files go before the state
/// file: a crash between the two resumes from the older state and rewrites
/// them, while the other order could leave a finished state beside stale
/// latest files that no resumed run would rewrite.
fn checkpoint<B: Backend>(
    trainer: &Trainer<B>,
    out: &Path,
    pos: &Position,
    metrics: &[IntervalMetrics],
    finished: bool,
) -> Result<()> {
    let config = trainer.config();
    let step = trainer.steps();
    let state_dir = format!("state-{step:09}");
    let training = |i: usize| {
        let spec = &config.saes[i];
        json!({
            "step": step,
            "tokens_seen": trainer.tokens_seen(),
            "finished": finished,
            "spec": spec,
            "batch_size": config.batch_size,
            "total_tokens": config.total_tokens,
            "lr_warmup_steps": config.lr_warmup_steps,
            "l1_warmup_steps": config.l1_warmup_steps,
            "adam": config.adam,
            "dead_tokens": config.dead_tokens,
            "data_seed": config.data_seed,
            "metrics": metrics.iter().find(|m| m.sae == spec.name),
        })
    };
    trainer.save_state(&out.join(&state_dir), &training)?;
    for i in 0..config.saes.len() {
        trainer.save_sae(
            i,
            &training(i),
            &out.join(format!("{}.safetensors", config.saes[i].name)),
        )?;
    }
    let state = RunState {
        format: STATE_FORMAT.into(),
        step,
        tokens_seen: trainer.tokens_seen(),
        epoch: pos.epoch,
        batches_in_epoch: pos.batches,
        short_batches: pos.short,
        state_dir: state_dir.clone(),
        finished,
        config: config.clone(),
        last_metrics: metrics.to_vec(),
    };
    let path = out.join(STATE_FILE);
    let text = serde_json::to_string_pretty(&state).map_err(|e| SaeError::Resume {
        path: path.clone(),
        message: format!("cannot serialise: {e}"),
    })?;
    sae_steer_files::write_atomic(&path, text.as_bytes()).map_err(|e| SaeError::io(&path, e))?;
    remove_leftovers(out, &state_dir);
    Ok(())
}

/// Removes what the state file no longer points at: state directories other
/// than `keep` (older ones, or a newer one whose checkpoint was cut short) and
/// temporaries of interrupted writes, in `out` and in `keep`. The caller holds
/// the folder's lock, so no other process is writing them; a failed removal
/// only costs disk.
fn remove_leftovers(out: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.starts_with("state-") && name != keep && path.is_dir() {
            let _ = std::fs::remove_dir_all(&path);
        } else if is_temp_name(&name) {
            let _ = std::fs::remove_file(&path);
        }
    }
    if keep.is_empty() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(out.join(keep)) {
        for e in entries.flatten() {
            if is_temp_name(&e.file_name().to_string_lossy()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn read_state(path: &Path) -> Result<RunState> {
    let text = std::fs::read_to_string(path).map_err(|e| SaeError::io(path, e))?;
    let state: RunState = serde_json::from_str(&text).map_err(|e| SaeError::Resume {
        path: path.to_path_buf(),
        message: format!("not a training state: {e}"),
    })?;
    if state.format != STATE_FORMAT {
        return Err(SaeError::Resume {
            path: path.to_path_buf(),
            message: format!(
                "format `{}`, this version writes `{STATE_FORMAT}`",
                state.format
            ),
        });
    }
    // The resume deletes every other `state-*` folder, so the one it keeps
    // must be exactly a name this module writes (`state-NNNNNNNNN`): anything
    // else (`./state-...`, a trailing slash, an absolute path) would delete
    // the state being resumed or reach outside the locked folder.
    let plain = state
        .state_dir
        .strip_prefix("state-")
        .is_some_and(|n| n.len() >= 9 && n.bytes().all(|b| b.is_ascii_digit()));
    if !plain {
        return Err(SaeError::Resume {
            path: path.to_path_buf(),
            message: format!(
                "state_dir {:?} is not a state folder name (state-NNNNNNNNN)",
                state.state_dir
            ),
        });
    }
    Ok(state)
}

/// A resumed run must train the same SAEs on the same data in the same way.
fn check_compatible(path: &Path, saved: &TrainConfig, now: &TrainConfig) -> Result<()> {
    let strip = |c: &TrainConfig| {
        let mut v = serde_json::to_value(c).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            for k in ["total_tokens", "log_every", "checkpoint_every"] {
                o.remove(k);
            }
        }
        v
    };
    let (a, b) = (strip(saved), strip(now));
    if a == b {
        return Ok(());
    }
    let mut differ = Vec::new();
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, va) in a {
            if b.get(k) != Some(va) {
                differ.push(k.clone());
            }
        }
    }
    Err(SaeError::Resume {
        path: path.to_path_buf(),
        message: format!(
            "the directory holds a run with other settings ({}); use another output directory or the same settings",
            differ.join(", ")
        ),
    })
}

/// `metrics.csv`, kept consistent with the state: on resume, rows written
/// after the checkpoint (lost work) and a last row cut short by a crash are
/// dropped before new ones are added.
struct MetricsCsv {
    writer: csv::Writer<std::fs::File>,
    path: PathBuf,
}

impl MetricsCsv {
    fn open(path: &Path, keep_until_step: u64) -> Result<Self> {
        let mut kept = if keep_until_step > 0 {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let end = metrics_prefix(path, &bytes, keep_until_step)?;
                    bytes[..end].to_vec()
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(SaeError::io(path, e)),
            }
        } else {
            Vec::new()
        };
        if kept.is_empty() {
            let mut header = csv::Writer::from_writer(Vec::new());
            header
                .write_record(csv_header())
                .map_err(|e| csv_error(path, e))?;
            kept = header
                .into_inner()
                .map_err(|e| SaeError::io(path, e.into_error()))?;
        }
        // The kept rows are copied as they were, so a resumed run's file is
        // byte for byte the one an uninterrupted run writes.
        sae_steer_files::write_atomic(path, &kept).map_err(|e| SaeError::io(path, e))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| SaeError::io(path, e))?;
        Ok(Self {
            writer: csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(file),
            path: path.to_path_buf(),
        })
    }

    fn write(&mut self, rows: &[IntervalMetrics]) -> Result<()> {
        for row in rows {
            // csv's I/O errors convert back to the `std::io::Error` they
            // wrap; its other errors become the `io::Error`'s payload.
            self.writer
                .serialize(row)
                .map_err(|e| SaeError::io(&self.path, e.into()))?;
        }
        self.writer.flush().map_err(|e| SaeError::io(&self.path, e))
    }
}

fn csv_error(path: &Path, e: csv::Error) -> SaeError {
    SaeError::Resume {
        path: path.to_path_buf(),
        message: format!("not a metrics file of this version: {e}"),
    }
}

/// The length of the part of a metrics file `bytes` to keep when resuming at
/// `keep_until_step`: the header and the rows up to that step. A last line
/// without its newline, or with too few fields, is what a crash mid-write
/// leaves and is dropped; a damaged row before it, or another header, is an
/// error. Returns 0 when not even the header is complete.
fn metrics_prefix(path: &Path, bytes: &[u8], keep_until_step: u64) -> Result<usize> {
    // Everything after the last newline is a line cut short.
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let bytes = &bytes[..complete];
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    // Byte records: a line cut inside a multi-byte character must not fail
    // the read before it can be recognised as the torn last line.
    let mut records = reader.byte_records().peekable();
    match records.next() {
        None => return Ok(0),
        Some(header) => {
            let header = header.map_err(|e| csv_error(path, e))?;
            if header.iter().ne(csv_header().iter().map(|h| h.as_bytes())) {
                return Err(SaeError::Resume {
                    path: path.to_path_buf(),
                    message: format!(
                        "its header is `{}`, this version writes `{}`",
                        fields(&header),
                        csv_header().join(",")
                    ),
                });
            }
        }
    }
    let header = csv::ByteRecord::from(csv_header().to_vec());
    while let Some(record) = records.next() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let last = records.peek().is_none();
        let start = record.position().map_or(complete as u64, |p| p.byte()) as usize;
        let row = if record.len() == header.len() {
            record.deserialize::<IntervalMetrics>(Some(&header)).ok()
        } else {
            None
        };
        match row {
            Some(row) if row.step <= keep_until_step => {}
            // Rows are in step order: the first one past the state ends the kept part.
            Some(_) => return Ok(start),
            None if last => return Ok(start),
            None => {
                return Err(SaeError::Resume {
                    path: path.to_path_buf(),
                    message: format!(
                        "line {} is not a metrics row of {} fields: `{}`",
                        record.position().map_or(0, |p| p.line()),
                        header.len(),
                        fields(&record)
                    ),
                });
            }
        }
    }
    Ok(complete)
}

/// A record as the comma-separated text it came from, for messages.
fn fields(record: &csv::ByteRecord) -> String {
    record
        .iter()
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(",")
}

fn csv_header() -> [&'static str; 14] {
    [
        "step",
        "tokens",
        "sae",
        "lr",
        "l1_coeff",
        "loss",
        "mse",
        "nmse",
        "l1",
        "aux",
        "l0",
        "dead",
        "dense",
        "steps_in_interval",
    ]
}

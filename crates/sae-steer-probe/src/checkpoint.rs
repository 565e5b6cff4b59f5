//! Probe checkpoints: ours (safetensors) and the reference's (`.pt`).
//!
//! A sweep writes one folder per probe under its checkpoint root, named like
//! the reference's (`lr_0_001__wd_0_1`), holding
//!
//! - `cfg.json`: the probe's configuration, with the reference's keys
//!   (`learning_rate`, `weight_decay`, `n_epochs`, `batch_size`, ...);
//! - `model_step{N}.safetensors`: `weight` `[C, d]` and `bias` `[C]` as in
//!   `torch.nn.Linear`, AdamW's moments (`optimizer.exp_avg.weight`, ...) so
//!   training can resume, and metadata (`format`, `step`, `epoch`, `run`).
//!
//! The reference's folders hold `cfg.json` and `model_step{N}.pt`: a JSON line
//! `{"in_features": 768, "out_features": 151}` followed by a `torch.save` zip
//! of `weight` and `bias`. Both are read; a folder means its latest step.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use sae_steer_vit::{HostTensor, SafetensorsFile, TensorSource, TorchFile, write_safetensors};
use serde_json::Value;

use crate::config::ProbeHparams;
use crate::error::{ProbeError, Result};
use crate::sweep::{AdamMoments, ProbeSet, ProbeState, ProbeWeights};

/// `format` metadata of our checkpoint files.
pub const FORMAT: &str = "sae-steer-probe/1";
/// The per-probe configuration file (the reference's name).
pub const CONFIG_FILE: &str = "cfg.json";

const EXP_AVG_W: &str = "optimizer.exp_avg.weight";
const EXP_AVG_SQ_W: &str = "optimizer.exp_avg_sq.weight";
const EXP_AVG_B: &str = "optimizer.exp_avg.bias";
const EXP_AVG_SQ_B: &str = "optimizer.exp_avg_sq.bias";

/// The longest header line accepted in a reference `.pt` file.
const MAX_HEADER_BYTES: u64 = 1 << 16;

/// Which container a checkpoint file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// Ours: `model_step{N}.safetensors`.
    SaeSteer,
    /// saev's: `model_step{N}.pt` (JSON line + `torch.save`).
    Reference,
}

/// A probe read from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeCheckpoint {
    /// The file the weights came from.
    pub file: PathBuf,
    pub format: CheckpointFormat,
    /// The `_step{N}` of the file name, if any.
    pub step: Option<u64>,
    /// From `cfg.json` beside the file (or our file's metadata).
    pub learning_rate: Option<f64>,
    pub weight_decay: Option<f64>,
    pub weights: ProbeWeights,
}

impl ProbeCheckpoint {
    /// The folder holding the file.
    pub fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    /// The folder's name (`lr_0_001__wd_0_1`), or the file name.
    pub fn name(&self) -> String {
        let dir = self.dir();
        dir.file_name()
            .or(self.file.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// One probe on a device, for inference.
#[derive(Debug, Clone)]
pub struct Probe<B: Backend> {
    set: ProbeSet<B>,
}

impl<B: Backend> Probe<B> {
    pub fn new(weights: &ProbeWeights, device: &B::Device) -> Result<Self> {
        Ok(Self {
            set: ProbeSet::new(&[weights], device)?,
        })
    }

    /// Logits `[n, C]` for patches `x` `[n, d]`.
    pub fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let n = x.dims()[0];
        self.set.logits(x).reshape([n, self.set.n_classes()])
    }

    pub fn d_in(&self) -> usize {
        self.set.d_in()
    }

    pub fn n_classes(&self) -> usize {
        self.set.n_classes()
    }

    /// The weights back on the host.
    pub fn to_host(&self) -> ProbeWeights {
        self.set.to_host().remove(0)
    }

    /// Loads a probe from a checkpoint folder (its latest step) or file, in
    /// either format (see [`ProbeCheckpoint::read`]).
    pub fn load(spec: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        Self::new(&ProbeCheckpoint::read(spec)?.weights, device)
    }

    /// The predicted label of each patch `x` `[n, d]`: the argmax over
    /// outputs `first..C`, as an output id. Validation and the app take
    /// every output (`first = 0`); quantify leaves out label 0, "other"
    /// (`first = 1`), so that every patch is predicted some class.
    pub fn predict(&self, x: Tensor<B, 2>, first: usize) -> Result<Vec<u8>> {
        let c = self.n_classes();
        if first >= c || c > usize::from(u8::MAX) + 1 {
            return Err(ProbeError::Shape(format!(
                "cannot predict over outputs {first}..{c} as byte labels"
            )));
        }
        let n = x.dims()[0];
        let best = self.logits(x).slice([0..n, first..c]).argmax(1); // [n, 1]
        let ids = best
            .into_data()
            .convert::<i64>()
            .into_vec::<i64>()
            .map_err(|e| ProbeError::Shape(format!("cannot read predictions back: {e:?}")))?;
        Ok(ids
            .into_iter()
            .map(|i| (i as usize + first) as u8)
            .collect())
    }
}

impl ProbeCheckpoint {
    /// Reads a probe from a checkpoint folder (its latest step) or file, in
    /// either format.
    pub fn read(path: impl AsRef<Path>) -> Result<ProbeCheckpoint> {
        read_checkpoint(path.as_ref())
    }
}

fn read_checkpoint(path: &Path) -> Result<ProbeCheckpoint> {
    let file = if path.is_dir() {
        latest_file(path)?.0
    } else {
        path.to_path_buf()
    };
    let step = step_of(&file);
    let (format, weights, meta) = match format_of(&file) {
        Some(CheckpointFormat::Reference) => {
            (CheckpointFormat::Reference, read_reference(&file)?, None)
        }
        Some(CheckpointFormat::SaeSteer) => {
            let (state, meta) = read_state(&file)?;
            (CheckpointFormat::SaeSteer, state.weights, Some(meta))
        }
        None => {
            return Err(ProbeError::checkpoint(
                &file,
                "expected a .safetensors (sae-steer) or .pt (saev) probe file",
            ));
        }
    };
    let (mut learning_rate, mut weight_decay) = (None, None);
    if let Some(meta) = &meta {
        learning_rate = Some(meta.hparams.learning_rate);
        weight_decay = Some(meta.hparams.weight_decay);
    }
    let cfg = file.parent().map(|d| d.join(CONFIG_FILE));
    if let Some(cfg) = cfg.filter(|c| c.is_file()) {
        let (lr, wd) = read_config_rates(&cfg)?;
        learning_rate = lr.or(learning_rate);
        weight_decay = wd.or(weight_decay);
    }
    Ok(ProbeCheckpoint {
        file,
        format,
        step,
        learning_rate,
        weight_decay,
        weights,
    })
}

/// The probe folders under `root`: sub-folders holding a `cfg.json`, sorted
/// by name (the reference's `load_ckpts` rule).
pub fn probe_dirs(root: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let root = root.as_ref();
    let entries = std::fs::read_dir(root).map_err(|e| ProbeError::io(root, e))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ProbeError::io(root, e))?;
        let path = entry.path();
        if path.is_dir() && path.join(CONFIG_FILE).is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    if dirs.is_empty() {
        return Err(ProbeError::NoCheckpoint {
            path: root.to_path_buf(),
            message: format!("no sub-folder with a {CONFIG_FILE}"),
        });
    }
    Ok(dirs)
}

/// Reads the latest checkpoint of every probe folder under `root`.
pub fn read_probes(root: impl AsRef<Path>) -> Result<Vec<ProbeCheckpoint>> {
    probe_dirs(root)?
        .iter()
        .map(ProbeCheckpoint::read)
        .collect()
}

/// Checkpoint files in a folder with their step (`None` for `model.pt`).
pub fn checkpoint_files(dir: &Path) -> Result<Vec<(PathBuf, Option<u64>)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| ProbeError::io(dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| ProbeError::io(dir, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        // Temporary files of an interrupted write start with a dot.
        if name.is_none_or(|n| n.starts_with('.')) || !path.is_file() {
            continue;
        }
        if format_of(&path).is_some() {
            out.push((path.clone(), step_of(&path)));
        }
    }
    out.sort();
    Ok(out)
}

/// The latest checkpoint file of a folder: the largest `_step{N}`, ours
/// before the reference's on a tie; a file without a step only when no file
/// has one (as the reference's `load_latest`).
pub fn latest_file(dir: &Path) -> Result<(PathBuf, Option<u64>)> {
    let files = checkpoint_files(dir)?;
    // `Option` orders `None` below every `Some(step)`: no `step + 1`, which
    // overflows for a file named `model_step18446744073709551615`.
    let best = files
        .iter()
        .max_by_key(|(path, step)| (*step, format_of(path) == Some(CheckpointFormat::SaeSteer)));
    best.cloned().ok_or_else(|| ProbeError::NoCheckpoint {
        path: dir.to_path_buf(),
        message: "no model_step{N}.safetensors or model_step{N}.pt file".into(),
    })
}

/// The `N` of `model_step{N}.{pt,safetensors}`.
pub fn step_of(file: &Path) -> Option<u64> {
    let stem = file.file_stem()?.to_str()?;
    let (_, digits) = stem.rsplit_once("_step")?;
    digits.parse().ok()
}

fn format_of(file: &Path) -> Option<CheckpointFormat> {
    match file.extension()?.to_str()? {
        "safetensors" => Some(CheckpointFormat::SaeSteer),
        "pt" => Some(CheckpointFormat::Reference),
        _ => None,
    }
}

/// Our file name for a step.
pub fn checkpoint_file_name(step: u64) -> String {
    format!("model_step{step}.safetensors")
}

/// What our checkpoint metadata records besides the tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    pub hparams: ProbeHparams,
    /// Optimizer steps taken.
    pub step: u64,
    /// The last completed epoch (0-based).
    pub epoch: usize,
    /// Identity of the training run (data, batch size, seed, ...): a resume
    /// continues only a run with the same identity.
    pub run: Value,
}

/// Writes a probe's state to `dir/model_step{step}.safetensors`, atomically.
pub fn write_state(dir: &Path, state: &ProbeState, meta: &CheckpointMeta) -> Result<PathBuf> {
    let w = &state.weights;
    let (d, c) = (w.in_features, w.out_features);
    let m = &state.moments;
    let t = |shape: Vec<usize>, data: &Vec<f32>| HostTensor::new(shape, data.clone());
    let tensors = vec![
        ("weight".to_string(), t(vec![c, d], &w.weight)),
        ("bias".to_string(), t(vec![c], &w.bias)),
        (EXP_AVG_W.to_string(), t(vec![c, d], &m.exp_avg_weight)),
        (
            EXP_AVG_SQ_W.to_string(),
            t(vec![c, d], &m.exp_avg_sq_weight),
        ),
        (EXP_AVG_B.to_string(), t(vec![c], &m.exp_avg_bias)),
        (EXP_AVG_SQ_B.to_string(), t(vec![c], &m.exp_avg_sq_bias)),
    ];
    let h = &meta.hparams;
    let metadata: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("step", meta.step.to_string()),
        ("epoch", meta.epoch.to_string()),
        // JSON numbers keep every bit of the doubles.
        ("learning_rate", Value::from(h.learning_rate).to_string()),
        ("weight_decay", Value::from(h.weight_decay).to_string()),
        ("seed", h.seed.to_string()),
        ("run", meta.run.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let path = dir.join(checkpoint_file_name(meta.step));
    write_safetensors(&path, &tensors, Some(metadata))?;
    Ok(path)
}

/// Reads one of our checkpoint files: weights, moments and metadata.
pub fn read_state(file: &Path) -> Result<(ProbeState, CheckpointMeta)> {
    let st = SafetensorsFile::open(file)?;
    let meta = st.metadata().cloned().unwrap_or_default();
    let get = |key: &str| {
        meta.get(key)
            .ok_or_else(|| ProbeError::checkpoint(file, format!("metadata `{key}` is missing")))
    };
    let format = get("format")?;
    if format != FORMAT {
        return Err(ProbeError::checkpoint(
            file,
            format!("metadata format is `{format}`, expected `{FORMAT}`"),
        ));
    }
    let number = |key: &str| -> Result<f64> {
        get(key)?
            .parse()
            .map_err(|_| ProbeError::checkpoint(file, format!("metadata `{key}` is not a number")))
    };
    let integer = |key: &str| -> Result<u64> {
        get(key)?.parse().map_err(|_| {
            ProbeError::checkpoint(file, format!("metadata `{key}` is not an integer"))
        })
    };
    let hparams = ProbeHparams {
        learning_rate: number("learning_rate")?,
        weight_decay: number("weight_decay")?,
        seed: integer("seed")?,
    };
    let run: Value = serde_json::from_str(get("run")?)
        .map_err(|e| ProbeError::checkpoint(file, format!("metadata `run` is not JSON: {e}")))?;
    let weight_shape = st
        .shape("weight")
        .ok_or_else(|| ProbeError::checkpoint(file, "tensor `weight` is missing"))?;
    let [c, d] = weight_shape[..] else {
        return Err(ProbeError::checkpoint(
            file,
            format!("`weight` has shape {weight_shape:?}, expected [classes, d]"),
        ));
    };
    let weights = ProbeWeights {
        in_features: d,
        out_features: c,
        weight: st.read_shaped("weight", &[c, d])?.data,
        bias: st.read_shaped("bias", &[c])?.data,
    };
    let moments = AdamMoments {
        exp_avg_weight: st.read_shaped(EXP_AVG_W, &[c, d])?.data,
        exp_avg_sq_weight: st.read_shaped(EXP_AVG_SQ_W, &[c, d])?.data,
        exp_avg_bias: st.read_shaped(EXP_AVG_B, &[c])?.data,
        exp_avg_sq_bias: st.read_shaped(EXP_AVG_SQ_B, &[c])?.data,
    };
    let meta = CheckpointMeta {
        hparams,
        step: integer("step")?,
        epoch: usize::try_from(integer("epoch")?)
            .map_err(|_| ProbeError::checkpoint(file, "metadata `epoch` is too large"))?,
        run,
    };
    Ok((
        ProbeState {
            hparams,
            weights,
            moments,
        },
        meta,
    ))
}

/// Reads a reference `model_step{N}.pt`: the JSON line, then the zip.
pub fn read_reference(file: &Path) -> Result<ProbeWeights> {
    let f = std::fs::File::open(file).map_err(|e| ProbeError::io(file, e))?;
    let mut line = Vec::new();
    BufReader::new(f)
        .take(MAX_HEADER_BYTES)
        .read_until(b'\n', &mut line)
        .map_err(|e| ProbeError::io(file, e))?;
    if line.last() != Some(&b'\n') {
        return Err(ProbeError::checkpoint(
            file,
            format!(
                "no JSON line `{{\"in_features\": .., \"out_features\": ..}}` within the first \
                 {MAX_HEADER_BYTES} bytes"
            ),
        ));
    }
    let header: Value = serde_json::from_slice(&line)
        .map_err(|e| ProbeError::checkpoint(file, format!("the first line is not JSON: {e}")))?;
    let size = |key: &str| {
        header
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| {
                ProbeError::checkpoint(
                    file,
                    format!("the header line {header} has no positive `{key}`"),
                )
            })
    };
    let (d, c) = (size("in_features")?, size("out_features")?);
    // The zip reader finds the archive after the prepended header line, as
    // for saev's sae.pt (see sae-steer-sae's saev module).
    let torch = TorchFile::open(file).map_err(|e| {
        ProbeError::checkpoint(
            file,
            format!(
                "the torch.save archive after the header cannot be read (truncated?): {}",
                sae_steer_files::ErrorChain(&e)
            ),
        )
    })?;
    Ok(ProbeWeights {
        in_features: d,
        out_features: c,
        weight: torch.read_shaped("weight", &[c, d])?.data,
        bias: torch.read_shaped("bias", &[c])?.data,
    })
}

/// `learning_rate` and `weight_decay` of a `cfg.json` (ours or the reference's).
pub fn read_config_rates(path: &Path) -> Result<(Option<f64>, Option<f64>)> {
    // A cfg.json is a few hundred bytes; a bigger file is refused, not read whole.
    const MAX_CONFIG_BYTES: u64 = 1 << 20;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| ProbeError::io(path, e))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ProbeError::checkpoint(
            path,
            format!("larger than {MAX_CONFIG_BYTES} bytes; a cfg.json is a few hundred"),
        ));
    }
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| ProbeError::checkpoint(path, format!("not JSON: {e}")))?;
    let rate = |key: &str| -> Result<Option<f64>> {
        match cfg.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                ProbeError::checkpoint(path, format!("`{key}` is {v}, not a number"))
            }),
        }
    };
    Ok((rate("learning_rate")?, rate("weight_decay")?))
}

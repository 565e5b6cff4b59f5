//! Sweep configuration: which probes to train together, and how.
//!
//! The file is shaped like the reference's `contrib/semseg/sweep.toml`:
//!
//! ```toml
//! learning_rate = [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
//! weight_decay = [1e-1, 1e-3, 1e-5]
//! # optional, the same for every probe:
//! n_epochs = 400
//! batch_size = 1024   # images per step
//! eval_every = 100    # epochs between kept checkpoints
//! seed = 42
//! ```
//!
//! Lists expand to their cartesian product in the reference's order (the last
//! key varies fastest: for each learning rate, every weight decay), and probe
//! `i` of the product gets seed `seed + i`, as saev's `config.grid` does.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ProbeError, Result};
use crate::naming::checkpoint_dir_name;

/// The preprint's sweep (reference facts section 7).
pub const DEFAULT_LEARNING_RATES: [f64; 6] = [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2];
/// The preprint's weight decays.
pub const DEFAULT_WEIGHT_DECAYS: [f64; 3] = [1e-1, 1e-3, 1e-5];

/// Keys of the reference's `Train` config that mean nothing to a batched
/// sweep over a cache (data loading, devices, paths come from the command
/// line); a sweep file may carry them and they are reported as ignored.
const IGNORED_KEYS: [&str; 6] = [
    "n_workers",
    "device",
    "imgs",
    "ckpt_path",
    "log_to",
    "patch_size_px",
];

/// A sweep of linear probes trained in one pass over the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepConfig {
    /// Learning rates; the sweep is their product with `weight_decay`.
    pub learning_rate: Vec<f64>,
    /// AdamW (decoupled) weight decays.
    pub weight_decay: Vec<f64>,
    /// Passes over the training images.
    pub n_epochs: usize,
    /// Images per optimizer step (all their patches).
    pub batch_size: usize,
    /// Checkpoints are kept after epoch 0, every `eval_every` epochs, and
    /// after the last epoch, as the reference dumps them.
    pub eval_every: usize,
    /// Seed of the data order; probe `i` is initialised from `seed + i`.
    pub seed: u64,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            learning_rate: DEFAULT_LEARNING_RATES.to_vec(),
            weight_decay: DEFAULT_WEIGHT_DECAYS.to_vec(),
            n_epochs: 400,
            batch_size: 1024,
            eval_every: 100,
            seed: 42,
        }
    }
}

/// One probe's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeHparams {
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Seed of its initial weights.
    pub seed: u64,
}

impl ProbeHparams {
    /// The reference's checkpoint folder name, `lr_0_001__wd_0_1`.
    pub fn dir_name(&self) -> String {
        checkpoint_dir_name(self.learning_rate, self.weight_decay)
    }
}

impl SweepConfig {
    /// Reads a sweep file; keys it leaves out keep the values of `self`.
    ///
    /// Returns the keys that were present but ignored (see [`IGNORED_KEYS`]),
    /// so a caller can say so.
    pub fn apply_file(&mut self, path: &Path) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(path).map_err(|e| ProbeError::io(path, e))?;
        self.apply_toml(&text)
            .map_err(|message| ProbeError::SweepFile {
                path: path.to_path_buf(),
                message,
            })
    }

    /// [`Self::apply_file`] on a string; errors are plain messages.
    pub fn apply_toml(&mut self, text: &str) -> std::result::Result<Vec<String>, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut ignored = Vec::new();
        for (key, value) in &table {
            match key.as_str() {
                "learning_rate" => self.learning_rate = floats(key, value)?,
                "weight_decay" => self.weight_decay = floats(key, value)?,
                "n_epochs" => self.n_epochs = count(key, value)?,
                "batch_size" => self.batch_size = count(key, value)?,
                "eval_every" => self.eval_every = count(key, value)?,
                "seed" => self.seed = count(key, value)? as u64,
                k if IGNORED_KEYS.contains(&k) => ignored.push(key.clone()),
                _ => {
                    return Err(format!(
                        "unknown key `{key}` (known: learning_rate, weight_decay, n_epochs, \
                         batch_size, eval_every, seed)"
                    ));
                }
            }
        }
        self.check().map_err(|e| e.to_string())?;
        Ok(ignored)
    }

    /// Fails on sizes of zero, non-finite or negative rates, and duplicates
    /// (two probes would share one checkpoint folder).
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(ProbeError::Sweep(m));
        if self.learning_rate.is_empty() || self.weight_decay.is_empty() {
            return bad("learning_rate and weight_decay need at least one value each".into());
        }
        if self.n_epochs == 0 || self.batch_size == 0 || self.eval_every == 0 {
            return bad(format!(
                "n_epochs ({}), batch_size ({}) and eval_every ({}) must be positive",
                self.n_epochs, self.batch_size, self.eval_every
            ));
        }
        for &lr in &self.learning_rate {
            if !(lr.is_finite() && lr > 0.0) {
                return bad(format!("learning rate {lr} is not a positive number"));
            }
        }
        for &wd in &self.weight_decay {
            if !(wd.is_finite() && wd >= 0.0) {
                return bad(format!("weight decay {wd} is not a non-negative number"));
            }
        }
        let mut names: Vec<String> = self.probes().iter().map(|p| p.dir_name()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return bad(format!("two probes share the folder {}", w[0]));
        }
        Ok(())
    }

    /// The probes of the sweep, in the reference's order.
    pub fn probes(&self) -> Vec<ProbeHparams> {
        let mut out = Vec::with_capacity(self.learning_rate.len() * self.weight_decay.len());
        for &learning_rate in &self.learning_rate {
            for &weight_decay in &self.weight_decay {
                let seed = self.seed + out.len() as u64;
                out.push(ProbeHparams {
                    learning_rate,
                    weight_decay,
                    seed,
                });
            }
        }
        out
    }

    /// Whether the checkpoint after `epoch` (0-based) is kept, as the
    /// reference dumps: epoch 0, every `eval_every`, and the last.
    pub fn is_eval_epoch(&self, epoch: usize) -> bool {
        epoch.is_multiple_of(self.eval_every) || epoch + 1 == self.n_epochs
    }
}

fn floats(key: &str, value: &toml::Value) -> std::result::Result<Vec<f64>, String> {
    let one = |v: &toml::Value| match v {
        toml::Value::Float(f) => Ok(*f),
        toml::Value::Integer(i) => Ok(*i as f64),
        other => Err(format!("`{key}` holds {other}, not a number")),
    };
    match value {
        toml::Value::Array(items) => items.iter().map(one).collect(),
        v => Ok(vec![one(v)?]),
    }
}

fn count(key: &str, value: &toml::Value) -> std::result::Result<usize, String> {
    match value {
        toml::Value::Integer(i) if *i >= 0 => Ok(*i as usize),
        toml::Value::Array(_) => Err(format!(
            "cannot parallelize training over `{key}`: all probes of a sweep share it"
        )),
        other => Err(format!("`{key}` holds {other}, not a non-negative integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_sweep_file_expands_like_saev() {
        let mut cfg = SweepConfig {
            seed: 7,
            ..Default::default()
        };
        let ignored = cfg
            .apply_toml(
                "learning_rate = [3e-5, 1e-4]\nweight_decay = [1e-1, 1e-3, 1e-5]\nn_workers = 8\n",
            )
            .unwrap();
        assert_eq!(ignored, ["n_workers"]);
        let probes = cfg.probes();
        let pairs: Vec<(f64, f64, u64)> = probes
            .iter()
            .map(|p| (p.learning_rate, p.weight_decay, p.seed))
            .collect();
        assert_eq!(
            pairs,
            [
                (3e-5, 1e-1, 7),
                (3e-5, 1e-3, 8),
                (3e-5, 1e-5, 9),
                (1e-4, 1e-1, 10),
                (1e-4, 1e-3, 11),
                (1e-4, 1e-5, 12)
            ]
        );
        assert_eq!(probes[2].dir_name(), "lr_3e-05__wd_1e-05");
        assert_eq!(cfg.n_epochs, 400);
    }

    #[test]
    fn scalars_and_errors() {
        let mut cfg = SweepConfig::default();
        cfg.apply_toml("learning_rate = 1e-3\nweight_decay = 0\nn_epochs = 3")
            .unwrap();
        assert_eq!(cfg.probes().len(), 1);
        assert_eq!(cfg.n_epochs, 3);
        let err = SweepConfig::default()
            .apply_toml("n_epochs = [1, 2]")
            .unwrap_err();
        assert!(err.contains("cannot parallelize"), "{err}");
        let err = SweepConfig::default()
            .apply_toml("learning_rat = [1e-3]")
            .unwrap_err();
        assert!(err.contains("unknown key `learning_rat`"), "{err}");
        let err = SweepConfig::default()
            .apply_toml("learning_rate = [1e-3, 1e-3]")
            .unwrap_err();
        assert!(err.contains("share the folder"), "{err}");
        let err = SweepConfig::default()
            .apply_toml("learning_rate = [-1e-3]")
            .unwrap_err();
        assert!(err.contains("not a positive"), "{err}");
    }

    #[test]
    fn eval_epochs_match_the_reference() {
        let cfg = SweepConfig::default();
        let kept: Vec<usize> = (0..400).filter(|&e| cfg.is_eval_epoch(e)).collect();
        assert_eq!(kept, [0, 100, 200, 300, 399]);
    }
}

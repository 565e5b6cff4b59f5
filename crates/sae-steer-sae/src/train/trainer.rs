//! The stepping engine: several SAEs, one batch at a time.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use sae_steer_vit::{HostTensor, SafetensorsFile, write_safetensors};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Normalization, SaeWeights};
use crate::config::{Activation, SaeConfig};
use crate::error::{Result, SaeError};
use crate::sae::CLAMP;
use crate::train::adam::adam_update;
use crate::train::objective::{
    BATCH_TOPK_MOMENTUM, STAT_NAMES, SaeParams, from_host, matryoshka_prefixes, normalize_rows,
    objective_gradients, remove_parallel_grad, to_host,
};
use crate::train::random::SplitMix64;
use crate::train::{SaeSpec, TrainConfig};

/// saev's linear warmup: `value * min(step, steps) / steps` at the 0-based
/// `step` (so the very first step runs at 0), `value` when `steps` is 0.
pub fn warmup(step: u64, steps: u64, value: f64) -> f64 {
    if steps == 0 {
        value
    } else {
        value * step.min(steps) as f64 / steps as f64
    }
}

/// Quality of one SAE over one logging interval (a row of the metrics CSV).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntervalMetrics {
    /// Steps done when the row was written.
    pub step: u64,
    /// Training rows seen by then.
    pub tokens: u64,
    pub sae: String,
    /// Learning rate and L1 coefficient of the interval's last step.
    pub lr: f64,
    pub l1_coeff: f64,
    /// Means over the interval's steps.
    pub loss: f64,
    pub mse: f64,
    /// Sum of squared errors / sum of squares around each batch's mean.
    pub nmse: f64,
    /// `mean_batch(sum_j |f_j|)`.
    pub l1: f64,
    pub aux: f64,
    /// Mean number of non-zero latents per row.
    pub l0: f64,
    /// Latents that have not fired for `dead_tokens` tokens.
    pub dead: usize,
    /// Latents that fired on more than `dense_threshold` of the interval's rows.
    pub dense: usize,
    pub steps_in_interval: u64,
}

/// Sums over the current logging interval, on the device.
struct Interval<B: Backend> {
    stats: Tensor<B, 1>,
    fired: Tensor<B, 1>,
    steps: u64,
    tokens: u64,
}

struct SaeState<B: Backend> {
    spec: SaeSpec,
    params: SaeParams<B>,
    m: SaeParams<B>,
    v: SaeParams<B>,
    /// Tokens since each latent last fired, `[s]`. f32 counts exactly here:
    /// every step adds the batch size, so the values are multiples of it.
    since_fired: Tensor<B, 1>,
    interval: Interval<B>,
    /// BatchTopK's inference threshold, `[1]` (saev starts it at 0).
    threshold: Option<Tensor<B, 1>>,
}

/// Trains a set of SAEs on a stream of host batches.
///
/// Each [`Trainer::step`] normalises the batch once and then, for every SAE:
/// computes the gradients, removes the decoder gradient's parallel
/// component, takes an Adam step at the warmed-up learning rate and
/// renormalises the decoder rows.
pub struct Trainer<B: Backend> {
    config: TrainConfig,
    norm: Option<Normalization>,
    device: B::Device,
    saes: Vec<SaeState<B>>,
    step: u64,
    tokens: u64,
}

const OPTIM_FORMAT: &str = "sae-steer-train-optim/1";

impl<B: Backend> Trainer<B> {
    /// Fresh SAEs: weights from each spec's seed, `b_dec` from `b_dec`
    /// (the data mean in normalised units, `[d]`).
    pub fn new(
        config: TrainConfig,
        norm: Option<Normalization>,
        b_dec: &[f32],
        device: &B::Device,
    ) -> Result<Self> {
        config.validate()?;
        if b_dec.len() != config.d_model {
            return Err(SaeError::TrainConfig(format!(
                "b_dec has {} values, d_model is {}",
                b_dec.len(),
                config.d_model
            )));
        }
        if let Some(n) = norm.as_ref().filter(|n| n.mean.len() != config.d_model) {
            return Err(SaeError::TrainConfig(format!(
                "normalization mean has {} values, d_model is {}",
                n.mean.len(),
                config.d_model
            )));
        }
        let saes = config
            .saes
            .iter()
            .map(|spec| {
                let params = SaeParams::init(config.d_model, spec, b_dec, device);
                let zeros = params.zeros_like();
                SaeState {
                    spec: spec.clone(),
                    m: zeros.clone(),
                    v: zeros,
                    params,
                    since_fired: Tensor::zeros([spec.d_sae], device),
                    interval: Interval::new(spec.d_sae, device),
                    threshold: spec.batch_topk.then(|| Tensor::zeros([1], device)),
                }
            })
            .collect();
        Ok(Self {
            config,
            norm,
            device: device.clone(),
            saes,
            step: 0,
            tokens: 0,
        })
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn normalization(&self) -> Option<&Normalization> {
        self.norm.as_ref()
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Rows trained on so far.
    pub fn tokens_seen(&self) -> u64 {
        self.tokens
    }

    /// Learning rate of SAE `i` at the next step.
    pub fn lr(&self, i: usize) -> f64 {
        warmup(self.step, self.config.lr_warmup_steps, self.saes[i].spec.lr)
    }

    /// L1 coefficient of SAE `i` at the next step.
    pub fn l1_coeff(&self, i: usize) -> f64 {
        warmup(
            self.step,
            self.config.l1_warmup_steps,
            self.saes[i].spec.l1_coeff,
        )
    }

    /// One optimizer step of every SAE on `batch`, `[n, d_model]` row-major
    /// activations in model units.
    pub fn step(&mut self, batch: &[f32]) -> Result<()> {
        let d = self.config.d_model;
        crate::train::data::check_width(batch, d)?;
        let n = batch.len() / d;
        if n == 0 {
            return Err(SaeError::Data("empty batch".into()));
        }
        let x = Tensor::<B, 2>::from_data(TensorData::new(batch.to_vec(), [n, d]), &self.device);
        let x = self.normalize(x);
        let t = self.step + 1;
        for i in 0..self.saes.len() {
            let lr = self.lr(i);
            let l1 = self.l1_coeff(i);
            let dead = self.dead_indices(i);
            let adam = self.config.adam;
            let step = self.step;
            let sae = &mut self.saes[i];
            // A fresh draw of prefixes every step, as saev; seeded by the
            // step so that a resumed run draws the same ones.
            let ends = if sae.spec.matryoshka_prefixes > 1 {
                let mut rng = SplitMix64::stream(sae.spec.seed, &[0x3a7, step]);
                matryoshka_prefixes(sae.spec.d_sae, sae.spec.matryoshka_prefixes, &mut rng)
            } else {
                Vec::new()
            };
            let out = objective_gradients(&sae.params, &sae.spec, l1, x.clone(), dead, &ends);
            if let (Some(t), Some(kept)) = (sae.threshold.take(), out.min_kept.clone()) {
                let m = BATCH_TOPK_MOMENTUM;
                let moved = t.clone().mul_scalar(1.0 - m) + kept.clone().mul_scalar(m);
                // A batch without a positive kept value leaves it unchanged.
                sae.threshold = Some(t.mask_where(kept.is_finite(), moved));
            }
            let mut g = out.grads;
            g.w_dec = remove_parallel_grad(g.w_dec, &sae.params.w_dec);

            let p = sae.params.clone();
            let (m, v) = (sae.m.clone(), sae.v.clone());
            let (w_enc, m_w_enc, v_w_enc) =
                adam_update(p.w_enc, g.w_enc, m.w_enc, v.w_enc, t, lr, &adam);
            let (b_enc, m_b_enc, v_b_enc) =
                adam_update(p.b_enc, g.b_enc, m.b_enc, v.b_enc, t, lr, &adam);
            let (w_dec, m_w_dec, v_w_dec) =
                adam_update(p.w_dec, g.w_dec, m.w_dec, v.w_dec, t, lr, &adam);
            let (b_dec, m_b_dec, v_b_dec) =
                adam_update(p.b_dec, g.b_dec, m.b_dec, v.b_dec, t, lr, &adam);
            sae.params = SaeParams {
                w_enc,
                b_enc,
                w_dec: normalize_rows(w_dec),
                b_dec,
            };
            sae.m = SaeParams {
                w_enc: m_w_enc,
                b_enc: m_b_enc,
                w_dec: m_w_dec,
                b_dec: m_b_dec,
            };
            sae.v = SaeParams {
                w_enc: v_w_enc,
                b_enc: v_b_enc,
                w_dec: v_w_dec,
                b_dec: v_b_dec,
            };

            let fired_now = out.fired.clone().greater_elem(0.0);
            sae.since_fired = sae
                .since_fired
                .clone()
                .add_scalar(n as f64)
                .mask_fill(fired_now, 0.0);
            let iv = &mut sae.interval;
            iv.stats = iv.stats.clone() + out.stats;
            iv.fired = iv.fired.clone() + out.fired;
            iv.steps += 1;
            iv.tokens += n as u64;
        }
        self.step += 1;
        self.tokens += n as u64;
        Ok(())
    }

    fn normalize(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.norm {
            None => x,
            Some(n) => {
                let d = n.mean.len();
                let mean =
                    Tensor::<B, 1>::from_data(TensorData::new(n.mean.clone(), [d]), &self.device);
                x.clamp(-CLAMP, CLAMP)
                    .sub(mean.unsqueeze_dim(0))
                    .div_scalar(n.scalar)
            }
        }
    }

    /// Latents of SAE `i` that AuxK may use at this step (`None` without AuxK
    /// or without dead latents). Reads `[s]` counters from the device.
    fn dead_indices(&self, i: usize) -> Option<Tensor<B, 1, Int>> {
        let sae = &self.saes[i];
        if !sae.spec.uses_aux() {
            return None;
        }
        let idx = self.dead_list(i);
        if idx.is_empty() {
            return None;
        }
        let len = idx.len();
        Some(Tensor::from_data(TensorData::new(idx, [len]), &self.device))
    }

    fn dead_list(&self, i: usize) -> Vec<i64> {
        let since = to_host(self.saes[i].since_fired.clone()).data;
        let threshold = self.config.dead_tokens as f32;
        since
            .iter()
            .enumerate()
            .filter(|(_, t)| **t >= threshold)
            .map(|(j, _)| j as i64)
            .collect()
    }

    /// Metrics of every SAE since the last call (or the start), and a new interval.
    pub fn take_metrics(&mut self) -> Vec<IntervalMetrics> {
        let mut rows = Vec::with_capacity(self.saes.len());
        for i in 0..self.saes.len() {
            let dead = self.dead_list(i).len();
            let (lr, l1_coeff) = (
                warmup(
                    self.step.saturating_sub(1),
                    self.config.lr_warmup_steps,
                    self.saes[i].spec.lr,
                ),
                warmup(
                    self.step.saturating_sub(1),
                    self.config.l1_warmup_steps,
                    self.saes[i].spec.l1_coeff,
                ),
            );
            let sae = &mut self.saes[i];
            let fresh = Interval::new(sae.spec.d_sae, &self.device);
            let iv = std::mem::replace(&mut sae.interval, fresh);
            let s = to_host(iv.stats).data;
            let steps = iv.steps.max(1) as f64;
            let tokens = iv.tokens.max(1) as f64;
            let dense_limit = self.config.dense_threshold * iv.tokens as f64;
            let dense = to_host(iv.fired)
                .data
                .iter()
                .filter(|&&c| iv.tokens > 0 && f64::from(c) > dense_limit)
                .count();
            rows.push(IntervalMetrics {
                step: self.step,
                tokens: self.tokens,
                sae: sae.spec.name.clone(),
                lr,
                l1_coeff,
                loss: f64::from(s[0]) / steps,
                mse: f64::from(s[1]) / steps,
                nmse: f64::from(s[4]) / f64::from(s[5]).max(f64::MIN_POSITIVE),
                l1: f64::from(s[2]) / steps,
                aux: f64::from(s[3]) / steps,
                l0: f64::from(s[6]) / tokens,
                dead,
                dense,
                steps_in_interval: iv.steps,
            });
        }
        rows
    }

    /// Steps in the current (unfinished) logging interval.
    pub fn interval_steps(&self) -> u64 {
        self.saes.first().map_or(0, |s| s.interval.steps)
    }

    /// The SAEs as host weights (config with the run's `vit`/`layer`, and the
    /// normalization).
    pub fn weights(&self) -> Vec<SaeWeights> {
        (0..self.saes.len()).map(|i| self.sae_weights(i)).collect()
    }

    fn sae_config(&self, sae: &SaeState<B>) -> SaeConfig {
        let spec = &sae.spec;
        // A BatchTopK SAE is used as a JumpReLU with its running threshold.
        let activation = match &sae.threshold {
            Some(t) => Activation::JumpRelu {
                threshold: to_host(t.clone()).data[0],
            },
            None => spec.activation,
        };
        SaeConfig {
            d_model: self.config.d_model,
            d_sae: spec.d_sae,
            activation,
            encode: spec.encode,
            vit: self.config.vit.clone(),
            layer: self.config.layer,
        }
    }

    fn sae_weights(&self, i: usize) -> SaeWeights {
        let sae = &self.saes[i];
        sae.params
            .to_weights(self.sae_config(sae), self.norm.clone())
    }

    /// Writes SAE `i` in our checkpoint format with `training` (JSON) added to
    /// the metadata: what [`SaeWeights::load`] reads, plus how it was trained.
    pub fn save_sae(&self, i: usize, training: &serde_json::Value, path: &Path) -> Result<()> {
        self.sae_weights(i)
            .save_with_metadata(path, [("training".to_string(), training.to_string())])
    }

    /// Writes each SAE's weights (`<name>.safetensors`) and optimizer state
    /// (`<name>.optim.safetensors`) into `dir`; `training(i)` gives the
    /// metadata of SAE `i`'s checkpoint.
    pub(crate) fn save_state(
        &self,
        dir: &Path,
        training: &dyn Fn(usize) -> serde_json::Value,
    ) -> Result<()> {
        for (i, sae) in self.saes.iter().enumerate() {
            self.save_sae(
                i,
                &training(i),
                &dir.join(format!("{}.safetensors", sae.spec.name)),
            )?;
            let mut tensors: Vec<(String, HostTensor)> = Vec::new();
            for (prefix, p) in [("m", &sae.m), ("v", &sae.v)] {
                for (name, t) in p.to_host() {
                    tensors.push((format!("{prefix}.{name}"), t));
                }
            }
            tensors.push(("since_fired".into(), to_host(sae.since_fired.clone())));
            tensors.push(("interval.stats".into(), to_host(sae.interval.stats.clone())));
            tensors.push(("interval.fired".into(), to_host(sae.interval.fired.clone())));
            let meta = HashMap::from([
                ("format".to_string(), OPTIM_FORMAT.to_string()),
                ("step".to_string(), self.step.to_string()),
                ("interval_steps".to_string(), sae.interval.steps.to_string()),
                (
                    "interval_tokens".to_string(),
                    sae.interval.tokens.to_string(),
                ),
            ]);
            write_safetensors(
                dir.join(format!("{}.optim.safetensors", sae.spec.name)),
                &tensors,
                Some(meta),
            )?;
        }
        Ok(())
    }

    /// Restores a trainer written by [`Trainer::save_state`] after `step`
    /// steps and `tokens` rows.
    pub(crate) fn load_state(
        config: TrainConfig,
        dir: &Path,
        step: u64,
        tokens: u64,
        device: &B::Device,
    ) -> Result<Self> {
        let d = config.d_model;
        let mut saes = Vec::new();
        let mut norm = None;
        for spec in &config.saes {
            let path = dir.join(format!("{}.safetensors", spec.name));
            let w = SaeWeights::load_safetensors(&path)?;
            let resume_error = |message: String| SaeError::Resume {
                path: path.clone(),
                message,
            };
            if w.config.d_model != d || w.config.d_sae != spec.d_sae {
                return Err(resume_error(format!(
                    "holds a {}x{} SAE, the run trains {d}x{}",
                    w.config.d_model, w.config.d_sae, spec.d_sae
                )));
            }
            norm = w.norm.clone();
            let params = SaeParams::from_host(w.w_enc, w.b_enc, w.w_dec, w.b_dec, device);

            let optim_path = dir.join(format!("{}.optim.safetensors", spec.name));
            let file = SafetensorsFile::open(&optim_path)?;
            let meta = file.metadata().cloned().unwrap_or_default();
            let optim_error = |message: String| SaeError::Resume {
                path: optim_path.clone(),
                message,
            };
            if meta.get("format").map(String::as_str) != Some(OPTIM_FORMAT) {
                return Err(optim_error(format!(
                    "no `format` = `{OPTIM_FORMAT}` in its metadata"
                )));
            }
            let number = |key: &str| -> Result<u64> {
                meta.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| {
                    optim_error(format!("metadata `{key}` is missing or not a number"))
                })
            };
            if number("step")? != step {
                return Err(optim_error(format!(
                    "written at step {}, the state file says {step}",
                    number("step")?
                )));
            }
            let s = spec.d_sae;
            let read = |name: &str, shape: &[usize]| -> Result<HostTensor> {
                crate::checkpoint::read_checked(&file, name, shape, "the run's config")
            };
            let moments = |prefix: &str| -> Result<SaeParams<B>> {
                Ok(SaeParams::from_host(
                    read(&format!("{prefix}.W_enc"), &[d, s])?,
                    read(&format!("{prefix}.b_enc"), &[s])?,
                    read(&format!("{prefix}.W_dec"), &[s, d])?,
                    read(&format!("{prefix}.b_dec"), &[d])?,
                    device,
                ))
            };
            let threshold = match (spec.batch_topk, w.config.activation) {
                (false, _) => None,
                (true, Activation::JumpRelu { threshold }) => Some(Tensor::from_data(
                    TensorData::new(vec![threshold], [1]),
                    device,
                )),
                (true, other) => {
                    return Err(resume_error(format!(
                        "holds a {other:?} SAE, the run trains BatchTopK (saved as a JumpReLU)"
                    )));
                }
            };
            saes.push(SaeState {
                threshold,
                spec: spec.clone(),
                params,
                m: moments("m")?,
                v: moments("v")?,
                since_fired: from_host(read("since_fired", &[s])?, device),
                interval: Interval {
                    stats: from_host(read("interval.stats", &[STAT_NAMES.len()])?, device),
                    fired: from_host(read("interval.fired", &[s])?, device),
                    steps: number("interval_steps")?,
                    tokens: number("interval_tokens")?,
                },
            });
        }
        Ok(Self {
            config,
            norm,
            device: device.clone(),
            saes,
            step,
            tokens,
        })
    }
}

impl<B: Backend> Interval<B> {
    fn new(d_sae: usize, device: &B::Device) -> Self {
        Self {
            stats: Tensor::zeros([STAT_NAMES.len()], device),
            fired: Tensor::zeros([d_sae], device),
            steps: 0,
            tokens: 0,
        }
    }
}

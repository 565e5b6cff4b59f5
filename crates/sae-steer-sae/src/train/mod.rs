//! Training sparse autoencoders (reference facts section 4).
//!
//! Two recipes:
//! - saev's ReLU + L1: `loss = MSE + l1 * mean_batch(sum_j |f_j|)`, Adam with a
//!   linear learning-rate warmup, `b_dec` initialised to the data mean,
//!   decoder rows at unit norm after every step and the gradient component
//!   parallel to each decoder row removed before the step.
//! - TopK (Gao et al. 2024) with the AuxK loss: the `aux_k` largest
//!   pre-activations among dead latents reconstruct the main reconstruction's
//!   error, weighted by `aux_coeff` (1/32).
//! - BatchTopK (Bussmann et al. 2024, saev's `BatchTopK`): the `k * n`
//!   largest pre-activations of the whole batch of `n` rows, so rows differ
//!   in how many latents they use; the threshold for inference is the running
//!   mean (momentum 0.1) of the smallest kept positive value, and the
//!   checkpoint holds the SAE as a JumpReLU with that threshold.
//! - Any of them with the Matryoshka objective (Bussmann et al. 2025; saev's
//!   default): at every step `n_prefixes - 1` prefix lengths are drawn (saev's
//!   distribution, `p(l) ~ (l-1)^-1/2 - l^-1/2`) and the full width added;
//!   the reconstruction loss is the mean over these prefixes of the MSE of
//!   the reconstruction from the first `l` latents only (with `b_dec`), so
//!   early latents learn coarse, general features.
//!
//! Several SAEs (a sweep over learning rate, L1 coefficient, width,
//! activation) train in one pass over the data, as in saev: each batch is
//! read once, normalised once and fed to every SAE. The SAEs do not interact,
//! so each ends exactly as it would have trained alone on the same batches.
//!
//! Inputs are normalised like saev's: `x_n = (clamp(x, -1e5, 1e5) - mean) / scalar`
//! with `mean` and `scalar` estimated on a sample of the data at the start
//! and stored in every checkpoint ([`crate::Normalization`]).
//!
//! Gradients are written out by hand (the SAE is five matrix products) and
//! Adam runs on plain tensors, so training works on any `B: Backend` with no
//! autodiff graph; a test checks every gradient against burn's autodiff.
//! [`train`] drives a whole run with checkpoints, resume, progress reports and
//! a metrics CSV; [`Trainer`] is the in-memory stepping engine under it.

mod adam;
mod data;
mod objective;
mod random;
mod run;
mod shards;
mod trainer;

use serde::{Deserialize, Serialize};

use crate::config::{Activation, EncodeRule};
use crate::error::{Result, SaeError};

pub use adam::{AdamConfig, adam_update};
pub use data::{Batches, BoxError, TrainingData, estimate_start};
pub use objective::{
    BATCH_TOPK_MOMENTUM, STAT_NAMES, SaeParams, StepOutput, kth_largest, matryoshka_prefixes,
    normalize_rows, objective_gradients, remove_parallel_grad,
};
pub use random::SplitMix64;
pub use run::{RunOptions, STATE_FILE, TrainReport, train};
pub use shards::{ActivationShards, SaevShardInfo, parse_ranges, read_saev_labels};
pub use trainer::{IntervalMetrics, Trainer, warmup};

/// How the encoder weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderInit {
    /// saev: `W_enc` and `W_dec` drawn independently from PyTorch's
    /// `kaiming_uniform_` (bound `sqrt(6 / fan_in)`, fan_in = number of
    /// columns), then `W_dec` rows normalised; `b_enc = 0`.
    Kaiming,
    /// Gao et al.: `W_dec` rows random unit vectors, `W_enc = W_dec^T`, `b_enc = 0`.
    DecoderTranspose,
}

/// One SAE of a sweep: its shape and its own hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeSpec {
    /// File stem of its checkpoint; unique within a run, `[A-Za-z0-9._-]`.
    pub name: String,
    pub d_sae: usize,
    /// `Relu` or `Topk { k }`.
    pub activation: Activation,
    /// How the encoder reads its input; [`EncodeRule::Plain`] for new SAEs.
    pub encode: EncodeRule,
    pub init: EncoderInit,
    /// Peak learning rate (after warmup).
    pub lr: f64,
    /// Coefficient of `mean_batch(sum_j |f_j|)` (0 for TopK by default).
    pub l1_coeff: f64,
    /// Number of dead latents in the AuxK reconstruction (TopK only; 0 disables AuxK).
    pub aux_k: usize,
    /// Weight of the AuxK loss.
    pub aux_coeff: f64,
    /// Seed of the initial weights.
    pub seed: u64,
    /// BatchTopK: with a TopK activation, keep the `k * n` largest
    /// pre-activations of the batch instead of `k` per row.
    #[serde(default)]
    pub batch_topk: bool,
    /// Matryoshka objective: the number of nested prefixes whose
    /// reconstruction losses are averaged (saev's default is 10); 0 or 1 is
    /// the plain objective.
    #[serde(default)]
    pub matryoshka_prefixes: usize,
}

impl SaeSpec {
    /// saev's ReLU + L1 SAE with its defaults (lr 4e-4 and L1 4e-4 unless given).
    pub fn relu(d_sae: usize, lr: f64, l1_coeff: f64) -> Self {
        let mut spec = Self {
            name: String::new(),
            d_sae,
            activation: Activation::Relu,
            encode: EncodeRule::Plain,
            init: EncoderInit::Kaiming,
            lr,
            l1_coeff,
            aux_k: 0,
            aux_coeff: 0.0,
            seed: 0,
            batch_topk: false,
            matryoshka_prefixes: 0,
        };
        spec.name = spec.default_name();
        spec
    }

    /// A TopK SAE with Gao et al.'s AuxK defaults: `aux_k = d_model / 2`
    /// (their heuristic, a power of two near it in the paper), coefficient 1/32,
    /// encoder initialised as the decoder's transpose, no L1.
    pub fn topk(d_model: usize, d_sae: usize, k: usize, lr: f64) -> Self {
        let mut spec = Self {
            name: String::new(),
            d_sae,
            activation: Activation::Topk { k },
            encode: EncodeRule::Plain,
            init: EncoderInit::DecoderTranspose,
            lr,
            l1_coeff: 0.0,
            aux_k: (d_model / 2).max(1),
            aux_coeff: 1.0 / 32.0,
            seed: 0,
            batch_topk: false,
            matryoshka_prefixes: 0,
        };
        spec.name = spec.default_name();
        spec
    }

    /// A BatchTopK SAE (saev's `BatchTopK`): [`Self::topk`]'s settings with
    /// `k` latents per row on average over the batch.
    pub fn batch_topk(d_model: usize, d_sae: usize, k: usize, lr: f64) -> Self {
        let mut spec = Self::topk(d_model, d_sae, k, lr);
        spec.batch_topk = true;
        spec.name = spec.default_name();
        spec
    }

    /// The same SAE trained with the Matryoshka objective over `prefixes`
    /// nested prefixes (saev: 10).
    pub fn with_matryoshka(mut self, prefixes: usize) -> Self {
        self.matryoshka_prefixes = prefixes;
        self.name = self.default_name();
        self
    }

    /// `relu-s24576-lr0.0004-l1_0.0004` / `topk32-s24576-lr0.0004`: readable and
    /// distinct for the sweeps the example builds.
    pub fn default_name(&self) -> String {
        let base = match self.activation {
            Activation::Topk { k } if self.batch_topk => {
                format!("batchtopk{k}-s{}-lr{}", self.d_sae, self.lr)
            }
            Activation::Topk { k } => format!("topk{k}-s{}-lr{}", self.d_sae, self.lr),
            _ => format!("relu-s{}-lr{}-l1_{}", self.d_sae, self.lr, self.l1_coeff),
        };
        if self.matryoshka_prefixes > 1 {
            format!("{base}-matryoshka{}", self.matryoshka_prefixes)
        } else {
            base
        }
    }

    /// Whether this SAE computes the AuxK loss.
    pub fn uses_aux(&self) -> bool {
        matches!(self.activation, Activation::Topk { .. }) && self.aux_k > 0 && self.aux_coeff > 0.0
    }
}

/// Where the input normalization comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NormalizationPlan {
    /// Estimate `mean` and `scalar` on the first [`TrainConfig::init_samples`]
    /// rows of a shuffled pass (saev's `scale_mean` + `scale_norm`).
    Estimate,
    /// Use these values (e.g. to continue in the units of an earlier SAE).
    Given { mean: Vec<f32>, scalar: f32 },
    /// Train on raw activations (no clamp, no centring, no scaling).
    Off,
}

/// Everything that defines a training run. Stored in the run's state file;
/// a resumed run must agree on all of it except `total_tokens`,
/// `log_every` and `checkpoint_every`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Width of the activations (768 for ViT-B).
    pub d_model: usize,
    /// Rows per step (saev: 16,384).
    pub batch_size: usize,
    /// Training stops after `ceil(total_tokens / batch_size)` steps (saev: 100M).
    pub total_tokens: u64,
    /// Steps of linear learning-rate warmup from 0 (saev: 500).
    pub lr_warmup_steps: u64,
    /// Steps of linear L1-coefficient warmup from 0 (saev's `n_sparsity_warmup`; 0 = off).
    pub l1_warmup_steps: u64,
    pub adam: AdamConfig,
    pub normalization: NormalizationPlan,
    /// Rows read to estimate the normalization and to initialise `b_dec`
    /// (saev's `n_reinit_samples`, 524,288).
    pub init_samples: usize,
    /// A latent is dead once it has not fired for this many tokens
    /// (AuxK's candidates and the `dead` metric; Gao et al.: 10M).
    pub dead_tokens: u64,
    /// A latent is dense when it fires on more than this share of an
    /// interval's tokens (0.01).
    pub dense_threshold: f64,
    /// Steps between metric rows (CSV, progress bar).
    pub log_every: u64,
    /// Steps between checkpoints (SAE files and the training state).
    pub checkpoint_every: u64,
    /// Seed of the data order; epoch `e` reads the data with a seed derived from it.
    pub data_seed: u64,
    /// Recorded in each SAE's config: the backbone, e.g. `dinov2_vitb14_reg`.
    pub vit: Option<String>,
    /// Recorded in each SAE's config: the 0-based block the SAE reads.
    pub layer: Option<usize>,
    pub saes: Vec<SaeSpec>,
}

impl TrainConfig {
    /// saev's defaults for `d_model`-wide activations and the given SAEs.
    pub fn saev(d_model: usize, saes: Vec<SaeSpec>) -> Self {
        Self {
            d_model,
            batch_size: 16_384,
            total_tokens: 100_000_000,
            lr_warmup_steps: 500,
            l1_warmup_steps: 0,
            adam: AdamConfig::default(),
            normalization: NormalizationPlan::Estimate,
            init_samples: 524_288,
            dead_tokens: 10_000_000,
            dense_threshold: 0.01,
            log_every: 50,
            checkpoint_every: 500,
            data_seed: 0,
            vit: None,
            layer: None,
            saes,
        }
    }

    /// Number of optimizer steps of the run.
    pub fn total_steps(&self) -> u64 {
        self.total_tokens.div_ceil(self.batch_size.max(1) as u64)
    }

    /// Checks the settings, naming the first one that cannot work.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SaeError::TrainConfig(m));
        if self.d_model == 0 || self.batch_size == 0 {
            return bad(format!(
                "d_model = {} and batch_size = {} must be positive",
                self.d_model, self.batch_size
            ));
        }
        if self.total_tokens == 0 {
            return bad("total_tokens must be positive".into());
        }
        if self.log_every == 0 || self.checkpoint_every == 0 {
            return bad("log_every and checkpoint_every must be positive".into());
        }
        if self.init_samples == 0 {
            return bad("init_samples must be positive (b_dec starts at the data mean)".into());
        }
        let a = &self.adam;
        if !(0.0..1.0).contains(&a.beta1) || !(0.0..1.0).contains(&a.beta2) || a.eps <= 0.0 {
            return bad(format!(
                "Adam betas must lie in [0, 1) and eps be positive, got {a:?}"
            ));
        }
        if let NormalizationPlan::Given { mean, scalar } = &self.normalization
            && (mean.len() != self.d_model || !(scalar.is_finite() && *scalar > 0.0))
        {
            return bad(format!(
                "given normalization has {} means (expected {}) and scalar {scalar}",
                mean.len(),
                self.d_model
            ));
        }
        if self.saes.is_empty() {
            return bad("no SAE to train".into());
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.saes {
            let ok_name = !s.name.is_empty()
                && !s.name.starts_with('.')
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok_name {
                return bad(format!(
                    "SAE name `{}` must be non-empty and use only letters, digits, `.`, `_`, `-`",
                    s.name
                ));
            }
            if !names.insert(&s.name) {
                return bad(format!("two SAEs are named `{}`", s.name));
            }
            if s.d_sae == 0 {
                return bad(format!("SAE `{}`: d_sae must be positive", s.name));
            }
            match s.activation {
                Activation::Relu => {}
                Activation::Topk { k } if k >= 1 && k <= s.d_sae => {}
                Activation::Topk { k } => {
                    return bad(format!(
                        "SAE `{}`: TopK k = {k} must lie in 1..={}",
                        s.name, s.d_sae
                    ));
                }
                Activation::JumpRelu { .. } | Activation::TopkRelu { .. } => {
                    let what = match s.activation {
                        Activation::JumpRelu { .. } => "JumpReLU",
                        _ => "SAELens-style TopK (ReLU after the selection)",
                    };
                    return bad(format!(
                        "SAE `{}`: {what} SAEs cannot be trained here (ReLU, TopK or BatchTopK)",
                        s.name
                    ));
                }
            }
            if s.batch_topk && !matches!(s.activation, Activation::Topk { .. }) {
                return bad(format!(
                    "SAE `{}`: BatchTopK needs a TopK activation (its k per row on average)",
                    s.name
                ));
            }
            if s.matryoshka_prefixes > s.d_sae {
                return bad(format!(
                    "SAE `{}`: {} Matryoshka prefixes are more than its {} latents",
                    s.name, s.matryoshka_prefixes, s.d_sae
                ));
            }
            let finite = [s.lr, s.l1_coeff, s.aux_coeff]
                .iter()
                .all(|v| v.is_finite());
            if !finite || s.lr <= 0.0 || s.l1_coeff < 0.0 || s.aux_coeff < 0.0 {
                return bad(format!(
                    "SAE `{}`: lr must be positive, l1_coeff and aux_coeff non-negative (got {}, {}, {})",
                    s.name, s.lr, s.l1_coeff, s.aux_coeff
                ));
            }
        }
        Ok(())
    }
}

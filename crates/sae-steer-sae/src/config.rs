//! What an SAE computes, independent of its weights.

use serde::{Deserialize, Serialize};

/// The nonlinearity applied to the encoder pre-activations `h = ... W_enc + b_enc`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Activation {
    /// `f = max(h, 0)` (saev's default and every preprint-era checkpoint).
    Relu,
    /// Keep the `k` largest pre-activations of each row, zero the rest. Like
    /// saev's `TopKActivation` there is no ReLU: a kept value may be negative.
    /// Ties at the k-th value keep every tied entry.
    Topk { k: usize },
    /// SAELens's TopK: the `k` largest pre-activations of each row, then a
    /// ReLU (a kept negative value becomes 0).
    TopkRelu { k: usize },
    /// `f = h if h > threshold else 0`: saev's BatchTopK at inference time
    /// (its running threshold; a threshold <= 0 acts as ReLU), and SAELens's
    /// JumpReLU, whose per-latent thresholds (`SaeWeights::threshold`)
    /// replace this one.
    JumpRelu { threshold: f32 },
}

/// Whether the encoder centres its input on the decoder bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodeRule {
    /// `h = (x - b_dec) W_enc + b_enc`: saev up to schema 1 (all preprint-era files).
    CentreOnDecoderBias,
    /// `h = x W_enc + b_enc`: saev from schema 2.
    Plain,
}

/// Geometry and computation of an SAE, stored as JSON in our checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeConfig {
    /// Width of the activations the SAE reads (`d`).
    pub d_model: usize,
    /// Number of latents (`s`).
    pub d_sae: usize,
    pub activation: Activation,
    pub encode: EncodeRule,
    /// Which backbone produced the training activations, e.g. `dinov2_vitb14_reg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vit: Option<String>,
    /// 0-based block index whose output the SAE reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
}

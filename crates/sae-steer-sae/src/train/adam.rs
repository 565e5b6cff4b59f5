//! Adam on plain tensors, step for step PyTorch's `torch.optim.Adam`
//! (no weight decay, no amsgrad), which saev uses.

use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

/// Adam's constants (saev / PyTorch defaults: 0.9, 0.999, 1e-8).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// One Adam update of parameter `p` with gradient `g` and moments `m`, `v`
/// at step `t` (1-based) and learning rate `lr`; returns `(p, m, v)`.
///
/// As in PyTorch: `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
/// `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
/// The moments advance even when `lr` is 0 (saev's first warmup step).
pub fn adam_update<B: Backend, const D: usize>(
    p: Tensor<B, D>,
    g: Tensor<B, D>,
    m: Tensor<B, D>,
    v: Tensor<B, D>,
    t: u64,
    lr: f64,
    cfg: &AdamConfig,
) -> (Tensor<B, D>, Tensor<B, D>, Tensor<B, D>) {
    let m = m.mul_scalar(cfg.beta1) + g.clone().mul_scalar(1.0 - cfg.beta1);
    let v = v.mul_scalar(cfg.beta2) + g.square().mul_scalar(1.0 - cfg.beta2);
    let t = t.min(i32::MAX as u64) as i32;
    let bc1 = 1.0 - cfg.beta1.powi(t);
    let bc2_sqrt = (1.0 - cfg.beta2.powi(t)).sqrt();
    let denom = v.clone().sqrt().div_scalar(bc2_sqrt).add_scalar(cfg.eps);
    let p = p - m.clone().div(denom).mul_scalar(lr / bc1);
    (p, m, v)
}

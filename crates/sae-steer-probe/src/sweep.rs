//! Many linear probes trained together: one weight matrix, one matmul.
//!
//! `P` probes `d -> C` are stored side by side as one weight `[d, P*C]`
//! (column `p*C + c` is probe `p`'s class `c`) and one bias `[P*C]`, so the
//! logits of all probes for a batch of patches `[n, d]` are a single GEMM, and
//! so is the weight gradient `x^T dlogits`. The cross-entropy gradient is
//! written by hand (`dlogits = softmax - onehot`), which needs no autodiff
//! backend and keeps the probes' training a few fused passes over `[n, P, C]`.

use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::ProbeHparams;
use crate::error::{ProbeError, Result};

/// One probe's weights on the host, laid out like `torch.nn.Linear`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeWeights {
    pub in_features: usize,
    pub out_features: usize,
    /// `[out_features, in_features]`, row-major.
    pub weight: Vec<f32>,
    /// `[out_features]`.
    pub bias: Vec<f32>,
}

impl ProbeWeights {
    /// `torch.nn.Linear`'s initialisation: weight and bias uniform in
    /// `±1/sqrt(in_features)` (kaiming-uniform with `a = sqrt(5)`), drawn
    /// from a generator seeded with `seed`.
    pub fn kaiming_uniform(in_features: usize, out_features: usize, seed: u64) -> Self {
        let bound = 1.0 / (in_features as f32).sqrt();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
        let weight = draw(in_features * out_features);
        let bias = draw(out_features);
        Self {
            in_features,
            out_features,
            weight,
            bias,
        }
    }

    /// Fails unless the buffers match the sizes.
    pub fn check(&self) -> Result<()> {
        let (d, c) = (self.in_features, self.out_features);
        if d == 0 || c == 0 || self.weight.len() != d * c || self.bias.len() != c {
            return Err(ProbeError::Shape(format!(
                "a probe {d} -> {c} needs a weight of {} and a bias of {c} values, got {} and {}",
                d * c,
                self.weight.len(),
                self.bias.len()
            )));
        }
        Ok(())
    }
}

/// AdamW's first and second moments of one probe, in its weight layout.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamMoments {
    /// `[out_features, in_features]`.
    pub exp_avg_weight: Vec<f32>,
    pub exp_avg_sq_weight: Vec<f32>,
    /// `[out_features]`.
    pub exp_avg_bias: Vec<f32>,
    pub exp_avg_sq_bias: Vec<f32>,
}

impl AdamMoments {
    fn zeros(d: usize, c: usize) -> Self {
        Self {
            exp_avg_weight: vec![0.0; d * c],
            exp_avg_sq_weight: vec![0.0; d * c],
            exp_avg_bias: vec![0.0; c],
            exp_avg_sq_bias: vec![0.0; c],
        }
    }
}

/// The full training state of one probe on the host: what a checkpoint holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeState {
    pub hparams: ProbeHparams,
    pub weights: ProbeWeights,
    pub moments: AdamMoments,
}

/// PyTorch's AdamW constants (`torch.optim.AdamW` defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamW {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// `P` probes `d -> C` side by side on a device, for inference.
#[derive(Debug, Clone)]
pub struct ProbeSet<B: Backend> {
    d_in: usize,
    n_classes: usize,
    n_probes: usize,
    /// `[d, P*C]`.
    weight: Tensor<B, 2>,
    /// `[P*C]`.
    bias: Tensor<B, 1>,
}

impl<B: Backend> ProbeSet<B> {
    /// Puts host probes (all of the same shape) on `device`.
    pub fn new(probes: &[&ProbeWeights], device: &B::Device) -> Result<Self> {
        let first = probes
            .first()
            .ok_or_else(|| ProbeError::Shape("a probe set needs at least one probe".into()))?;
        let (d, c) = (first.in_features, first.out_features);
        for p in probes {
            p.check()?;
            if (p.in_features, p.out_features) != (d, c) {
                return Err(ProbeError::Shape(format!(
                    "probes {d} -> {c} and {} -> {} cannot share a set",
                    p.in_features, p.out_features
                )));
            }
        }
        let weights: Vec<&[f32]> = probes.iter().map(|p| p.weight.as_slice()).collect();
        let biases: Vec<f32> = probes.iter().flat_map(|p| p.bias.iter().copied()).collect();
        Ok(Self {
            d_in: d,
            n_classes: c,
            n_probes: probes.len(),
            weight: columns_tensor(&weights, d, c, device),
            bias: Tensor::from_data(TensorData::new(biases, [probes.len() * c]), device),
        })
    }

    /// Input width `d`.
    pub fn d_in(&self) -> usize {
        self.d_in
    }

    /// Outputs per probe `C` (151 for ADE20K).
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Number of probes `P`.
    pub fn n_probes(&self) -> usize {
        self.n_probes
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.weight.device()
    }

    /// Logits of every probe for patches `x` `[n, d]`: `[n, P, C]`.
    pub fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 3> {
        let n = x.dims()[0];
        self.flat_logits(x)
            .reshape([n, self.n_probes, self.n_classes])
    }

    /// `x W + b` as `[n, P*C]`.
    fn flat_logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(self.weight.clone())
            .add(self.bias.clone().unsqueeze::<2>())
    }

    /// The probes' weights back on the host.
    pub fn to_host(&self) -> Vec<ProbeWeights> {
        let (d, c, p) = (self.d_in, self.n_classes, self.n_probes);
        split_probes(&self.weight, &self.bias, d, c, p)
    }
}

/// Per-probe `torch.nn.Linear` tensors from the batched `[d, P*C]` weight
/// and `[P*C]` bias layout (parameters and gradients alike).
fn split_probes<B: Backend>(
    weight: &Tensor<B, 2>,
    bias: &Tensor<B, 1>,
    d: usize,
    c: usize,
    p: usize,
) -> Vec<ProbeWeights> {
    let weights = probes_from_columns(&host_vec(weight.clone()), d, c, p);
    let bias = host_vec(bias.clone());
    weights
        .into_iter()
        .enumerate()
        .map(|(i, weight)| ProbeWeights {
            in_features: d,
            out_features: c,
            weight,
            bias: bias[i * c..(i + 1) * c].to_vec(),
        })
        .collect()
}

/// Gradients of the sweep's loss, and per-probe statistics of the batch.
#[derive(Debug, Clone)]
pub struct SweepGradients<B: Backend> {
    /// `[d, P*C]`, same layout as the weight.
    pub weight: Tensor<B, 2>,
    /// `[P*C]`.
    pub bias: Tensor<B, 1>,
    /// Sum over the batch's patches of each probe's cross-entropy, `[P]`.
    pub loss_sum: Tensor<B, 1>,
    /// Patches whose label holds each probe's largest logit, `[P]` (a tie
    /// for the maximum counts as a hit; the statistic is only logged).
    pub correct: Tensor<B, 1>,
    /// Patches in the batch.
    pub patches: usize,
}

impl<B: Backend> SweepGradients<B> {
    /// The gradients on the host in each probe's `torch.nn.Linear` layout
    /// (what `param.grad` of its weight and bias would hold).
    pub fn per_probe(&self) -> Vec<ProbeWeights> {
        let [d, pc] = self.weight.dims();
        let p = self.loss_sum.dims()[0];
        let c = pc / p.max(1);
        split_probes(&self.weight, &self.bias, d, c, p)
    }
}

/// Per-probe statistics of one optimizer step.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    /// Mean cross-entropy of each probe over the batch's patches (before the step).
    pub loss: Vec<f64>,
    /// Share of the batch's patches each probe got right (before the step).
    pub accuracy: Vec<f64>,
    pub patches: usize,
}

/// `P` probes and their AdamW state, trained together.
///
/// The loss is the reference's: one `cross_entropy` over the logits of all
/// probes and all patches, i.e. the mean over `P * n` terms, so each probe's
/// gradient is its own mean-CE gradient divided by `P`. (AdamW is invariant
/// to that scale except through `eps`; matching it keeps us bit-comparable
/// with saev's `contrib/semseg/training.py`.) Learning rate and weight decay
/// are per probe and act on weight and bias alike, as saev's one param group
/// per probe does.
#[derive(Debug, Clone)]
pub struct ProbeSweep<B: Backend> {
    set: ProbeSet<B>,
    hparams: Vec<ProbeHparams>,
    adam: AdamW,
    exp_avg_weight: Tensor<B, 2>,
    exp_avg_sq_weight: Tensor<B, 2>,
    exp_avg_bias: Tensor<B, 1>,
    exp_avg_sq_bias: Tensor<B, 1>,
    /// `1 - lr * wd` per column, `[1, P*C]` and `[P*C]`.
    decay_weight: Tensor<B, 2>,
    decay_bias: Tensor<B, 1>,
    /// Optimizer steps taken (AdamW's `t`).
    step: u64,
}

impl<B: Backend> ProbeSweep<B> {
    /// Fresh probes initialised like `torch.nn.Linear`, probe `i` from `hparams[i].seed`.
    pub fn new(
        hparams: &[ProbeHparams],
        d_in: usize,
        n_classes: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let states: Vec<ProbeState> = hparams
            .iter()
            .map(|&hp| ProbeState {
                hparams: hp,
                weights: ProbeWeights::kaiming_uniform(d_in, n_classes, hp.seed),
                moments: AdamMoments::zeros(d_in, n_classes),
            })
            .collect();
        Self::from_states(&states, 0, device)
    }

    /// Probes with given weights and optimizer state, `step` steps into training.
    pub fn from_states(states: &[ProbeState], step: u64, device: &B::Device) -> Result<Self> {
        // The step comes from a checkpoint: one that no run could reach would
        // overflow the step counter of the next `apply`.
        if step > u64::from(u32::MAX) {
            return Err(ProbeError::Shape(format!(
                "a checkpoint at step {step} cannot come from training (at most {} steps)",
                u32::MAX
            )));
        }
        let weights: Vec<&ProbeWeights> = states.iter().map(|s| &s.weights).collect();
        let set = ProbeSet::new(&weights, device)?;
        let (d, c) = (set.d_in, set.n_classes);
        for s in states {
            let m = &s.moments;
            if m.exp_avg_weight.len() != d * c
                || m.exp_avg_sq_weight.len() != d * c
                || m.exp_avg_bias.len() != c
                || m.exp_avg_sq_bias.len() != c
            {
                return Err(ProbeError::Shape(format!(
                    "the AdamW moments of probe {} do not match its {d} -> {c} weights",
                    s.hparams.dir_name()
                )));
            }
        }
        let columns = |f: fn(&AdamMoments) -> &Vec<f32>| {
            let parts: Vec<&[f32]> = states.iter().map(|s| f(&s.moments).as_slice()).collect();
            columns_tensor::<B>(&parts, d, c, device)
        };
        let flat = |f: fn(&AdamMoments) -> &Vec<f32>| {
            let v: Vec<f32> = states
                .iter()
                .flat_map(|s| f(&s.moments).iter().copied())
                .collect();
            Tensor::<B, 1>::from_data(TensorData::new(v, [states.len() * c]), device)
        };
        let hparams: Vec<ProbeHparams> = states.iter().map(|s| s.hparams).collect();
        let decay = per_column(&hparams, c, |h| 1.0 - h.learning_rate * h.weight_decay);
        let decay_bias =
            Tensor::<B, 1>::from_data(TensorData::new(decay, [hparams.len() * c]), device);
        Ok(Self {
            exp_avg_weight: columns(|m| &m.exp_avg_weight),
            exp_avg_sq_weight: columns(|m| &m.exp_avg_sq_weight),
            exp_avg_bias: flat(|m| &m.exp_avg_bias),
            exp_avg_sq_bias: flat(|m| &m.exp_avg_sq_bias),
            decay_weight: decay_bias.clone().unsqueeze::<2>(),
            decay_bias,
            set,
            hparams,
            adam: AdamW::default(),
            step,
        })
    }

    /// The probes, for inference.
    pub fn probes(&self) -> &ProbeSet<B> {
        &self.set
    }

    /// Each probe's hyper-parameters, in weight order.
    pub fn hparams(&self) -> &[ProbeHparams] {
        &self.hparams
    }

    /// Optimizer steps taken so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Everything needed to continue training, on the host.
    pub fn states(&self) -> Vec<ProbeState> {
        let (d, c, p) = (self.set.d_in, self.set.n_classes, self.set.n_probes);
        let weights = self.set.to_host();
        let cols = |t: &Tensor<B, 2>| probes_from_columns(&host_vec(t.clone()), d, c, p);
        let m_w = cols(&self.exp_avg_weight);
        let v_w = cols(&self.exp_avg_sq_weight);
        let m_b = host_vec(self.exp_avg_bias.clone());
        let v_b = host_vec(self.exp_avg_sq_bias.clone());
        weights
            .into_iter()
            .zip(m_w.into_iter().zip(v_w))
            .enumerate()
            .map(
                |(i, (weights, (exp_avg_weight, exp_avg_sq_weight)))| ProbeState {
                    hparams: self.hparams[i],
                    weights,
                    moments: AdamMoments {
                        exp_avg_weight,
                        exp_avg_sq_weight,
                        exp_avg_bias: m_b[i * c..(i + 1) * c].to_vec(),
                        exp_avg_sq_bias: v_b[i * c..(i + 1) * c].to_vec(),
                    },
                },
            )
            .collect()
    }

    /// Gradient of the reference's loss (mean cross-entropy over all probes
    /// and patches) for patches `x` `[n, d]` with `labels` `[n]` in `0..C`.
    ///
    /// The batch is processed `chunk` patches at a time, so memory holds
    /// `chunk x P x C` logits rather than all of them; the sums are the same.
    /// The bias rides along as an extra input column of ones, so logits and
    /// both gradients are one matmul each; the softmax is computed in place
    /// (max-shift, exp, normalise, minus one at the label), which keeps the
    /// passes over the `[chunk, P, C]` logits to a minimum on every backend.
    pub fn gradients(
        &self,
        x: Tensor<B, 2>,
        labels: Tensor<B, 1, Int>,
        chunk: usize,
    ) -> SweepGradients<B> {
        let [n, d] = x.dims();
        let (p, c) = (self.set.n_probes, self.set.n_classes);
        let device = x.device();
        let chunk = chunk.max(1);
        // [d + 1, P*C]: the weight with the bias as its last row.
        let weight_aug = Tensor::cat(
            vec![
                self.set.weight.clone(),
                self.set.bias.clone().unsqueeze::<2>(),
            ],
            0,
        );
        let mut grad_aug = Tensor::<B, 2>::zeros([d + 1, p * c], &device);
        let mut loss_sum = Tensor::<B, 1>::zeros([p], &device);
        let mut correct = Tensor::<B, 1>::zeros([p], &device);
        for start in (0..n).step_by(chunk) {
            let m = chunk.min(n - start);
            let x_aug = Tensor::cat(
                vec![x.clone().narrow(0, start, m), Tensor::ones([m, 1], &device)],
                1,
            );
            let logits = x_aug.clone().matmul(weight_aug.clone()).reshape([m, p, c]);
            let max = logits.clone().max_dim(2);
            let shifted = logits - max;
            let idx = labels
                .clone()
                .narrow(0, start, m)
                .reshape([m, 1, 1])
                .expand([m, p, 1]);
            // The label's shifted logit: -log p = log(sum exp) - it, and it
            // is 0 exactly when the label holds the maximum (a hit).
            let target = shifted.clone().gather(2, idx.clone());
            let e = shifted.exp();
            let sum = e.clone().sum_dim(2);
            loss_sum = loss_sum + (sum.clone().log() - target.clone()).sum_dim(0).reshape([p]);
            correct = correct + target.equal_elem(0.0).float().sum_dim(0).reshape([p]);
            let dlogits = (e / sum)
                .scatter(
                    2,
                    idx,
                    Tensor::full([m, p, 1], -1.0, &device),
                    IndexingUpdateOp::Add,
                )
                .reshape([m, p * c]);
            grad_aug = grad_aug + x_aug.transpose().matmul(dlogits);
        }
        // One cross_entropy over all P*n terms: its mean, applied once to the
        // small gradient instead of to every logit.
        let grad_aug = grad_aug.mul_scalar(1.0 / (p * n.max(1)) as f64);
        SweepGradients {
            weight: grad_aug.clone().narrow(0, 0, d),
            bias: grad_aug.narrow(0, d, 1).reshape([p * c]),
            loss_sum,
            correct,
            patches: n,
        }
    }

    /// One AdamW step with each probe's learning rate and weight decay,
    /// exactly as `torch.optim.AdamW` (single-tensor path) computes it:
    /// `p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    /// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`.
    pub fn apply(&mut self, grads: &SweepGradients<B>) {
        self.step += 1;
        let t = self.step as f64;
        let AdamW { beta1, beta2, eps } = self.adam;
        let bc1 = 1.0 - beta1.powf(t);
        let bc2_sqrt = (1.0 - beta2.powf(t)).sqrt();
        let c = self.set.n_classes;
        let device = self.set.device();
        let step_size = per_column(&self.hparams, c, |h| h.learning_rate / bc1);
        let step_size = Tensor::<B, 1>::from_data(
            TensorData::new(step_size, [self.hparams.len() * c]),
            &device,
        );

        let (w, m, v) = adamw_update(
            self.set.weight.clone(),
            self.exp_avg_weight.clone(),
            self.exp_avg_sq_weight.clone(),
            grads.weight.clone(),
            self.decay_weight.clone(),
            step_size.clone().unsqueeze::<2>(),
            (beta1, beta2, eps, bc2_sqrt),
        );
        self.set.weight = w;
        self.exp_avg_weight = m;
        self.exp_avg_sq_weight = v;
        let (b, m, v) = adamw_update(
            self.set.bias.clone(),
            self.exp_avg_bias.clone(),
            self.exp_avg_sq_bias.clone(),
            grads.bias.clone(),
            self.decay_bias.clone(),
            step_size,
            (beta1, beta2, eps, bc2_sqrt),
        );
        self.set.bias = b;
        self.exp_avg_bias = m;
        self.exp_avg_sq_bias = v;
    }

    /// Gradients and an AdamW step on one batch; returns the batch's
    /// per-probe loss and accuracy before the step.
    pub fn train_step(
        &mut self,
        x: Tensor<B, 2>,
        labels: Tensor<B, 1, Int>,
        chunk: usize,
    ) -> BatchStats {
        let grads = self.gradients(x, labels, chunk);
        self.apply(&grads);
        let n = grads.patches.max(1) as f64;
        BatchStats {
            loss: host_vec(grads.loss_sum)
                .into_iter()
                .map(|s| f64::from(s) / n)
                .collect(),
            accuracy: host_vec(grads.correct)
                .into_iter()
                .map(|s| f64::from(s) / n)
                .collect(),
            patches: grads.patches,
        }
    }
}

/// One decoupled-decay Adam update on a tensor of any rank; `decay` and
/// `step_size` broadcast over it.
fn adamw_update<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    exp_avg: Tensor<B, D>,
    exp_avg_sq: Tensor<B, D>,
    grad: Tensor<B, D>,
    decay: Tensor<B, D>,
    step_size: Tensor<B, D>,
    (beta1, beta2, eps, bc2_sqrt): (f64, f64, f64, f64),
) -> (Tensor<B, D>, Tensor<B, D>, Tensor<B, D>) {
    let param = param * decay;
    // torch: exp_avg.lerp_(grad, 1 - beta1)
    let exp_avg = exp_avg.clone() + (grad.clone() - exp_avg).mul_scalar(1.0 - beta1);
    let exp_avg_sq = exp_avg_sq.mul_scalar(beta2) + (grad.clone() * grad).mul_scalar(1.0 - beta2);
    let denom = exp_avg_sq
        .clone()
        .sqrt()
        .div_scalar(bc2_sqrt)
        .add_scalar(eps);
    let param = param - (exp_avg.clone() / denom) * step_size;
    (param, exp_avg, exp_avg_sq)
}

/// A per-probe value repeated over the probe's `C` columns.
fn per_column(hparams: &[ProbeHparams], c: usize, f: impl Fn(&ProbeHparams) -> f64) -> Vec<f32> {
    hparams
        .iter()
        .flat_map(|h| std::iter::repeat_n(f(h) as f32, c))
        .collect()
}

/// Probes' `[C, d]` matrices side by side as one `[d, P*C]` tensor.
fn columns_tensor<B: Backend>(
    probes: &[&[f32]],
    d: usize,
    c: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let pc = probes.len() * c;
    let mut out = vec![0f32; d * pc];
    for (p, w) in probes.iter().enumerate() {
        for class in 0..c {
            let row = &w[class * d..(class + 1) * d];
            for (i, &v) in row.iter().enumerate() {
                out[i * pc + p * c + class] = v;
            }
        }
    }
    Tensor::from_data(TensorData::new(out, [d, pc]), device)
}

/// The inverse of [`columns_tensor`] on host data: `P` matrices `[C, d]`.
fn probes_from_columns(data: &[f32], d: usize, c: usize, p: usize) -> Vec<Vec<f32>> {
    let pc = p * c;
    (0..p)
        .map(|probe| {
            let mut w = vec![0f32; c * d];
            for class in 0..c {
                for i in 0..d {
                    w[class * d + i] = data[i * pc + probe * c + class];
                }
            }
            w
        })
        .collect()
}

/// A device tensor's values as f32 on the host.
pub(crate) fn host_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    // convert::<f32> makes the element type f32, so into_vec cannot fail.
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn layout_round_trips() {
        let device = Default::default();
        let a = ProbeWeights::kaiming_uniform(3, 2, 1);
        let b = ProbeWeights::kaiming_uniform(3, 2, 2);
        assert_ne!(a, b);
        let set = ProbeSet::<B>::new(&[&a, &b], &device).unwrap();
        assert_eq!(set.to_host(), vec![a.clone(), b.clone()]);
        // Probe 1's logits are its own x W^T + b.
        let x = [0.5f32, -1.0, 2.0];
        let logits = host_vec(set.logits(Tensor::from_data(
            TensorData::new(x.to_vec(), [1, 3]),
            &device,
        )));
        for (p, w) in [&a, &b].iter().enumerate() {
            for class in 0..2 {
                let want: f32 =
                    (0..3).map(|i| x[i] * w.weight[class * 3 + i]).sum::<f32>() + w.bias[class];
                assert!((logits[p * 2 + class] - want).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn kaiming_bounds() {
        let w = ProbeWeights::kaiming_uniform(768, 151, 0);
        let bound = 1.0 / 768f32.sqrt();
        assert!(w.weight.iter().chain(&w.bias).all(|v| v.abs() <= bound));
        let max = w.weight.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            max > 0.99 * bound,
            "uniform over the whole range: {max} vs {bound}"
        );
        assert_eq!(w, ProbeWeights::kaiming_uniform(768, 151, 0));
    }
}

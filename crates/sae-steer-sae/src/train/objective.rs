//! The training objective of one SAE and its gradients, written out by hand.
//!
//! Shapes: `x [n, d]` (normalised), `W_enc [d, s]`, `b_enc [s]`, `W_dec [s, d]`,
//! `b_dec [d]`. Forward:
//! ```text
//! h     = (x - c b_dec) W_enc + b_enc          c = 1 for CentreOnDecoderBias, else 0
//! f     = act(h)                               ReLU, or TopK (the k largest, kept as they are)
//! x_hat = f W_dec + b_dec,  e = x_hat - x
//! loss  = sum(e^2) / (n d) + l1 * sum|f| / n + aux_coeff * aux
//! aux   = sum((e_aux + e)^2) / (n d),  e_aux = f_aux W_dec
//! ```
//! where `f_aux` keeps the `aux_k` largest pre-activations among the dead
//! latents and zeroes the rest; `e_aux` is trained to reconstruct `x - x_hat`
//! with `x_hat` held fixed, so AuxK only moves the dead latents.
//! Backward (`g = 2 e / (n d)`, `g_a = 2 aux_coeff (e_aux + e) / (n d)`):
//! ```text
//! dW_dec = f^T g + f_aux^T g_a           db_dec = sum_n g  (- db_enc W_enc^T if centred)
//! dh     = [g W_dec^T + l1/n sign(f)] * [f active] + [g_a W_dec^T] * [f_aux active]
//! dW_enc = (x - c b_dec)^T dh            db_enc = sum_n dh
//! ```
//! The mask of a TopK or ReLU is held fixed, as autodiff does with
//! `mask_fill`. AuxK works on the dead columns only (gathered with `select`),
//! so it costs little while few latents are dead.
//!
//! BatchTopK takes the `k n` largest entries of the whole `h` instead of `k`
//! per row. The Matryoshka objective replaces the MSE by the mean over
//! prefix ends `c_1 < ... < c_P = s` of the MSE of `x_hat_m = f[:, :c_m]
//! W_dec[:c_m] + b_dec`. With blocks `B_b = [c_{b-1}, c_b)`, `e_m = x_hat_m - x`
//! and `g_m = 2 e_m / (n d P)`, a latent of block `b` feeds every prefix
//! `m >= b`, so its upstream gradient is the suffix sum `G_b = sum_{m>=b} g_m`:
//! ```text
//! df[:, B_b] = G_b W_dec[B_b]^T     dW_dec[B_b] = f[:, B_b]^T G_b     db_dec = sum_n G_1
//! ```
//! AuxK reconstructs the full-width error `e_P`.

use burn::tensor::{Bool, IndexingUpdateOp, Int, Tensor, TensorData, backend::Backend};

use crate::checkpoint::{Normalization, SaeWeights};
use crate::config::{Activation, EncodeRule, SaeConfig};
use crate::train::random::SplitMix64;
use crate::train::{EncoderInit, SaeSpec};
use sae_steer_vit::HostTensor;

/// The parameters of one SAE (or their gradients, or Adam moments).
#[derive(Debug, Clone)]
pub struct SaeParams<B: Backend> {
    /// `[d, s]`
    pub w_enc: Tensor<B, 2>,
    /// `[s]`
    pub b_enc: Tensor<B, 1>,
    /// `[s, d]`
    pub w_dec: Tensor<B, 2>,
    /// `[d]`
    pub b_dec: Tensor<B, 1>,
}

/// Names of the entries of [`StepOutput::stats`], in order: the total loss,
/// the MSE, `mean_batch(sum |f|)`, the AuxK MSE, the sum of squared errors,
/// the sum of squares around the batch mean, and the number of active latents.
pub const STAT_NAMES: [&str; 7] = ["loss", "mse", "l1", "aux", "sse", "sst", "nonzero"];

/// Gradients and statistics of one batch.
#[derive(Debug, Clone)]
pub struct StepOutput<B: Backend> {
    pub grads: SaeParams<B>,
    /// `[7]`, see [`STAT_NAMES`]; kept on the device so that a step never waits
    /// for the GPU.
    pub stats: Tensor<B, 1>,
    /// `[s]`: on how many rows the activation selected each latent.
    pub fired: Tensor<B, 1>,
    /// BatchTopK only, `[1]`: the smallest positive kept activation
    /// (infinite when none was positive), for the inference threshold.
    pub min_kept: Option<Tensor<B, 1>>,
}

impl<B: Backend> SaeParams<B> {
    /// Initial weights of `spec` for `d_model`-wide inputs, with `b_dec` set
    /// to `b_dec` (the data mean). Drawn on the host from the spec's seed, so
    /// they are the same on every backend.
    pub fn init(d_model: usize, spec: &SaeSpec, b_dec: &[f32], device: &B::Device) -> Self {
        let (d, s) = (d_model, spec.d_sae);
        let mut rng = SplitMix64::stream(spec.seed, &[0x5ae]);
        let uniform = |rng: &mut SplitMix64, len: usize, bound: f32| -> Vec<f32> {
            (0..len).map(|_| rng.uniform(-bound, bound)).collect()
        };
        // W_dec first so both inits share its draw; its rows are normalised
        // before the first step either way.
        let mut w_dec = match spec.init {
            EncoderInit::Kaiming => uniform(&mut rng, s * d, (6.0 / d as f32).sqrt()),
            EncoderInit::DecoderTranspose => (0..s * d).map(|_| rng.normal()).collect(),
        };
        for row in w_dec.chunks_mut(d) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= norm);
        }
        let w_enc = match spec.init {
            EncoderInit::Kaiming => uniform(&mut rng, d * s, (6.0 / s as f32).sqrt()),
            EncoderInit::DecoderTranspose => {
                let mut t = vec![0.0; d * s];
                for (j, row) in w_dec.chunks(d).enumerate() {
                    for (i, v) in row.iter().enumerate() {
                        t[i * s + j] = *v;
                    }
                }
                t
            }
        };
        Self {
            w_enc: Tensor::from_data(TensorData::new(w_enc, [d, s]), device),
            b_enc: Tensor::zeros([s], device),
            w_dec: Tensor::from_data(TensorData::new(w_dec, [s, d]), device),
            b_dec: Tensor::from_data(TensorData::new(b_dec.to_vec(), [d]), device),
        }
    }

    /// Zeros shaped like `self` (fresh Adam moments).
    pub fn zeros_like(&self) -> Self {
        Self {
            w_enc: self.w_enc.zeros_like(),
            b_enc: self.b_enc.zeros_like(),
            w_dec: self.w_dec.zeros_like(),
            b_dec: self.b_dec.zeros_like(),
        }
    }

    /// Host copies under the names of our checkpoint format.
    pub fn to_host(&self) -> [(&'static str, HostTensor); 4] {
        [
            ("W_enc", to_host(self.w_enc.clone())),
            ("b_enc", to_host(self.b_enc.clone())),
            ("W_dec", to_host(self.w_dec.clone())),
            ("b_dec", to_host(self.b_dec.clone())),
        ]
    }

    /// Parameters from host tensors (as [`SaeParams::to_host`] names them).
    pub fn from_host(
        w_enc: HostTensor,
        b_enc: HostTensor,
        w_dec: HostTensor,
        b_dec: HostTensor,
        device: &B::Device,
    ) -> Self {
        Self {
            w_enc: from_host(w_enc, device),
            b_enc: from_host(b_enc, device),
            w_dec: from_host(w_dec, device),
            b_dec: from_host(b_dec, device),
        }
    }

    /// The SAE as host weights in our checkpoint's terms.
    pub fn to_weights(&self, config: SaeConfig, norm: Option<Normalization>) -> SaeWeights {
        let [(_, w_enc), (_, b_enc), (_, w_dec), (_, b_dec)] = self.to_host();
        SaeWeights {
            config,
            w_enc,
            b_enc,
            w_dec,
            b_dec,
            threshold: None,
            norm,
        }
    }
}

pub(crate) use crate::sae::{from_host, to_host};

/// Re-exported so that `train::kth_largest` keeps working; it lives with the
/// SAE because TopK inference uses it too.
pub use crate::sae::kth_largest;

/// saev's BatchTopK threshold momentum: `t <- (1 - m) t + m min(kept > 0)`.
pub const BATCH_TOPK_MOMENTUM: f64 = 0.1;

/// Keeps `h` where the activation is on, zero elsewhere; returns `(f, off)`
/// with `off` the entries it zeroed (one mask serves the forward and backward
/// passes). `batch`: a TopK keeps the `k n` largest entries of the batch.
fn activate<B: Backend>(
    h: Tensor<B, 2>,
    activation: &Activation,
    batch: bool,
) -> (Tensor<B, 2>, Tensor<B, 2, Bool>) {
    let off = match *activation {
        Activation::Topk { k } if batch => {
            let [n, s] = h.dims();
            let kth = kth_largest(h.clone().reshape([1, n * s]), k.saturating_mul(n));
            h.clone().lower(kth.expand([n, s]))
        }
        Activation::Relu => h.clone().lower_equal_elem(0.0),
        Activation::JumpRelu { threshold } => h.clone().lower_equal_elem(threshold.max(0.0)),
        Activation::Topk { k } => {
            let dims = h.dims();
            let kth = kth_largest(h.clone(), k).expand(dims);
            h.clone().lower(kth)
        }
        Activation::TopkRelu { k } => {
            let dims = h.dims();
            let kth = kth_largest(h.clone(), k).expand(dims);
            h.clone()
                .lower(kth)
                .bool_or(h.clone().lower_equal_elem(0.0))
        }
    };
    (h.mask_fill(off.clone(), 0.0), off)
}

/// Prefix ends for one Matryoshka step: `prefixes - 1` distinct lengths in
/// `1..s` drawn without replacement with saev's weights `(l-1)^-1/2 - l^-1/2`
/// (0 for `l = 1`), then `s`; sorted. `[s]` for `prefixes <= 1`.
pub fn matryoshka_prefixes(s: usize, prefixes: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let draws = prefixes.saturating_sub(1).min(s.saturating_sub(2));
    // Weighted sampling without replacement (Efraimidis and Spirakis): the
    // `draws` largest keys `u^(1/w)`, compared as `ln(u) / w`.
    let mut keys: Vec<(f64, usize)> = (2..s)
        .map(|l| {
            let w = ((l - 1) as f64).powf(-0.5) - (l as f64).powf(-0.5);
            let u = f64::from(rng.next_f32()).max(f64::MIN_POSITIVE);
            (u.ln() / w, l)
        })
        .collect();
    let draws = draws.min(keys.len());
    if draws > 0 {
        keys.select_nth_unstable_by(draws - 1, |a, b| b.0.total_cmp(&a.0));
    }
    let mut ends: Vec<usize> = keys[..draws].iter().map(|k| k.1).collect();
    ends.push(s);
    ends.sort_unstable();
    ends
}

/// The reconstruction term of a step and the gradients it sends back.
struct Reconstruction<B: Backend> {
    /// `[n, d]`: the full-width error `x_hat - x`.
    error: Tensor<B, 2>,
    /// `[1]`: the (Matryoshka mean) MSE.
    loss: Tensor<B, 1>,
    /// `[n, s]`, before the activation's mask.
    df: Tensor<B, 2>,
    /// `[s, d]`
    dw_dec: Tensor<B, 2>,
    /// `[1, d]`
    db_dec: Tensor<B, 2>,
}

/// [`Reconstruction`] of `f` against `x`; `ends`: the Matryoshka prefix
/// ends (`[s]` or empty: the plain MSE).
fn reconstruction<B: Backend>(
    p: &SaeParams<B>,
    f: &Tensor<B, 2>,
    x: &Tensor<B, 2>,
    ends: &[usize],
) -> Reconstruction<B> {
    let [n, d] = x.dims();
    let s = f.dims()[1];
    let inv_nd = 1.0 / (n * d) as f64;
    if ends.len() <= 1 {
        let x_hat = f.clone().matmul(p.w_dec.clone()) + p.b_dec.clone().unsqueeze_dim(0);
        let e = x_hat - x.clone();
        let loss = e.clone().square().sum().mul_scalar(inv_nd);
        let g = e.clone().mul_scalar(2.0 * inv_nd);
        return Reconstruction {
            df: g.clone().matmul(p.w_dec.clone().transpose()),
            dw_dec: f.clone().transpose().matmul(g.clone()),
            db_dec: g.sum_dim(0),
            error: e,
            loss,
        };
    }
    let scale = inv_nd / ends.len() as f64;
    let mut blocks = Vec::with_capacity(ends.len());
    let mut start = 0;
    for &end in ends {
        blocks.push(start..end.min(s));
        start = end.min(s);
    }
    // e_m, one per prefix: b_dec - x plus the blocks so far.
    let mut running = p.b_dec.clone().unsqueeze_dim::<2>(0).expand([n, d]) - x.clone();
    let mut errors = Vec::with_capacity(blocks.len());
    for b in &blocks {
        let fb = f.clone().slice([0..n, b.clone()]);
        let wb = p.w_dec.clone().slice([b.clone(), 0..d]);
        running = running + fb.matmul(wb);
        errors.push(running.clone());
    }
    let loss = errors
        .iter()
        .map(|e| e.clone().square().sum())
        .reduce(|a, b| a + b)
        .expect("at least one prefix")
        .mul_scalar(scale);
    // Suffix sums G_b, from the last block back.
    let mut df = Vec::with_capacity(blocks.len());
    let mut dw = Vec::with_capacity(blocks.len());
    let mut suffix: Option<Tensor<B, 2>> = None;
    for (b, e) in blocks.iter().zip(&errors).rev() {
        let g = e.clone().mul_scalar(2.0 * scale);
        let gb = match suffix {
            Some(acc) => acc + g,
            None => g,
        };
        let fb = f.clone().slice([0..n, b.clone()]);
        let wb = p.w_dec.clone().slice([b.clone(), 0..d]);
        df.push(gb.clone().matmul(wb.transpose()));
        dw.push(fb.transpose().matmul(gb.clone()));
        suffix = Some(gb);
    }
    df.reverse();
    dw.reverse();
    Reconstruction {
        db_dec: suffix.expect("at least one prefix").sum_dim(0),
        error: errors.pop().expect("at least one prefix"),
        loss,
        df: Tensor::cat(df, 1),
        dw_dec: Tensor::cat(dw, 0),
    }
}

/// Loss terms, gradients and firing counts of one SAE on one batch `x [n, d]`
/// (normalised units). `l1_coeff` is the coefficient in force at this step;
/// `dead` lists the latents AuxK may use (`None` or empty: no AuxK term);
/// `ends` are the Matryoshka prefix ends of this step ([`matryoshka_prefixes`];
/// empty or `[s]` for the plain objective). The `mse` statistic is always
/// the full-width reconstruction's; `loss` has the Matryoshka mean.
pub fn objective_gradients<B: Backend>(
    p: &SaeParams<B>,
    spec: &SaeSpec,
    l1_coeff: f64,
    x: Tensor<B, 2>,
    dead: Option<Tensor<B, 1, Int>>,
    ends: &[usize],
) -> StepOutput<B> {
    let [n, d] = x.dims();
    let inv_nd = 1.0 / (n * d) as f64;
    let centred = spec.encode == EncodeRule::CentreOnDecoderBias;
    let xc = if centred {
        x.clone() - p.b_dec.clone().unsqueeze_dim(0)
    } else {
        x.clone()
    };
    let h = xc.clone().matmul(p.w_enc.clone()) + p.b_enc.clone().unsqueeze_dim(0);

    // Dead columns are gathered before `h` is consumed by the activation;
    // when every latent is dead (`None` below) no gather or scatter is needed.
    let s = h.dims()[1];
    let aux_input = dead
        .filter(|idx| spec.uses_aux() && idx.dims()[0] > 0)
        .map(|idx| {
            if idx.dims()[0] == s {
                (h.clone(), None)
            } else {
                (h.clone().select(1, idx.clone()), Some(idx))
            }
        });

    let (f, off) = activate(h, &spec.activation, spec.batch_topk);
    let relu = spec.activation == Activation::Relu;
    let min_kept = spec.batch_topk.then(|| {
        f.clone()
            .mask_fill(f.clone().lower_equal_elem(0.0), f32::INFINITY)
            .min()
    });
    let Reconstruction {
        error: e,
        loss: recon,
        mut df,
        mut dw_dec,
        db_dec: g_sum,
    } = reconstruction(p, &f, &x, ends);

    let sse = e.clone().square().sum();
    let mse = sse.clone().mul_scalar(inv_nd);
    // ReLU outputs are non-negative: no |.| pass needed.
    let l1 = if relu {
        f.clone().sum()
    } else {
        f.clone().abs().sum()
    }
    .div_scalar(n as f64);
    let fired = off
        .clone()
        .float()
        .sum_dim(0)
        .squeeze_dim::<1>(0)
        .neg()
        .add_scalar(n as f64);
    let nonzero = fired.clone().sum();
    let sst = (x.clone() - x.mean_dim(0)).square().sum();

    if l1_coeff != 0.0 {
        let c = l1_coeff / n as f64;
        // sign(f) is 1 wherever a ReLU is on, and the off entries are masked below.
        df = if relu {
            df.add_scalar(c)
        } else {
            df + f.clone().sign().mul_scalar(c)
        };
    }
    let mut dh = df.mask_fill(off, 0.0);

    let aux = match aux_input {
        Some((h_dead, idx)) => {
            let [_, n_dead] = h_dead.dims();
            let (f_aux, off_aux) = activate(
                h_dead,
                &Activation::Topk {
                    k: spec.aux_k.min(n_dead),
                },
                false,
            );
            let w_dead = match &idx {
                Some(idx) => p.w_dec.clone().select(0, idx.clone()),
                None => p.w_dec.clone(),
            };
            let r = f_aux.clone().matmul(w_dead.clone()) + e;
            let aux = r.clone().square().sum().mul_scalar(inv_nd);
            let ga = r.mul_scalar(2.0 * spec.aux_coeff * inv_nd);
            let dw_dead = f_aux.transpose().matmul(ga.clone());
            let dh_dead = ga.matmul(w_dead.transpose()).mask_fill(off_aux, 0.0);
            match idx {
                Some(idx) => {
                    dw_dec = dw_dec.select_assign(0, idx.clone(), dw_dead, IndexingUpdateOp::Add);
                    dh = dh.select_assign(1, idx, dh_dead, IndexingUpdateOp::Add);
                }
                None => {
                    dw_dec = dw_dec + dw_dead;
                    dh = dh + dh_dead;
                }
            }
            aux
        }
        None => mse.zeros_like(),
    };

    let db_enc = dh.clone().sum_dim(0);
    let dw_enc = xc.transpose().matmul(dh);
    let mut db_dec = g_sum;
    if centred {
        db_dec = db_dec - db_enc.clone().matmul(p.w_enc.clone().transpose());
    }

    let loss = recon + l1.clone().mul_scalar(l1_coeff) + aux.clone().mul_scalar(spec.aux_coeff);
    StepOutput {
        grads: SaeParams {
            w_enc: dw_enc,
            b_enc: db_enc.squeeze_dim(0),
            w_dec: dw_dec,
            b_dec: db_dec.squeeze_dim(0),
        },
        stats: Tensor::cat(vec![loss, mse, l1, aux, sse, sst, nonzero], 0),
        fired,
        min_kept,
    }
}

/// Removes from each row of the decoder gradient its component along that
/// decoder row: `G - (sum_d G * W) W`, rows of `W` being unit vectors. Adam
/// would otherwise spend steps on a length the renormalisation undoes.
pub fn remove_parallel_grad<B: Backend>(grad: Tensor<B, 2>, w_dec: &Tensor<B, 2>) -> Tensor<B, 2> {
    let parallel = (grad.clone() * w_dec.clone()).sum_dim(1);
    grad - w_dec.clone() * parallel
}

/// Scales each row to unit L2 norm.
pub fn normalize_rows<B: Backend>(w: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = w.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    w / norm
}

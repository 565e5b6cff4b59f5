//! The SAE on a burn backend: normalization, encode and decode of `[n, d]` batches.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use sae_steer_vit::HostTensor;

use crate::checkpoint::{Normalization, SaeWeights};
use crate::config::{Activation, EncodeRule, SaeConfig};
use crate::error::{Result, SaeError};

/// saev clamps activations to this magnitude before normalizing, because a
/// few ViT activations are huge outliers.
pub const CLAMP: f32 = 1e5;

/// Input normalization on the device.
#[derive(Debug, Clone)]
pub struct DeviceNorm<B: Backend> {
    /// `[d]`
    pub mean: Tensor<B, 1>,
    pub scalar: f32,
}

/// A sparse autoencoder whose input normalization is part of it: [`Sae::encode`]
/// and [`Sae::decode`] work in normalized units, [`Sae::normalize`] and
/// [`Sae::denormalize`] convert from and to model units.
#[derive(Debug, Clone)]
pub struct Sae<B: Backend> {
    pub config: SaeConfig,
    /// `[d, s]`
    pub w_enc: Tensor<B, 2>,
    /// `[s]`
    pub b_enc: Tensor<B, 1>,
    /// `[s, d]`
    pub w_dec: Tensor<B, 2>,
    /// `[d]`
    pub b_dec: Tensor<B, 1>,
    /// `[s]`: per-latent JumpReLU thresholds (SAELens), replacing the
    /// config's single one.
    pub threshold: Option<Tensor<B, 1>>,
    pub norm: Option<DeviceNorm<B>>,
}

impl<B: Backend> Sae<B> {
    /// Moves host weights to the device. Takes them by value so that each
    /// host buffer is released as soon as its tensor exists: a 24k-latent
    /// SAE is 150 MB and must not be held twice.
    pub fn from_weights(w: SaeWeights, device: &B::Device) -> Self {
        Self {
            config: w.config,
            w_enc: from_host(w.w_enc, device),
            b_enc: from_host(w.b_enc, device),
            w_dec: from_host(w.w_dec, device),
            b_dec: from_host(w.b_dec, device),
            threshold: w.threshold.map(|t| from_host(t, device)),
            norm: w.norm.map(|n| {
                let d = n.mean.len();
                DeviceNorm {
                    mean: Tensor::from_data(TensorData::new(n.mean, [d]), device),
                    scalar: n.scalar,
                }
            }),
        }
    }

    /// Copies the weights back to the host, e.g. to save them.
    pub fn to_weights(&self) -> SaeWeights {
        SaeWeights {
            config: self.config.clone(),
            w_enc: to_host(self.w_enc.clone()),
            b_enc: to_host(self.b_enc.clone()),
            w_dec: to_host(self.w_dec.clone()),
            b_dec: to_host(self.b_dec.clone()),
            threshold: self.threshold.as_ref().map(|t| to_host(t.clone())),
            norm: self.norm.as_ref().map(|n| Normalization {
                mean: to_host(n.mean.clone()).data,
                scalar: n.scalar,
            }),
        }
    }

    /// Replaces the input normalization (`None` removes it).
    pub fn with_normalization(mut self, norm: Option<&Normalization>) -> Result<Self> {
        let device = self.b_dec.device();
        self.norm = match norm {
            None => None,
            Some(n) => {
                if n.mean.len() != self.config.d_model {
                    return Err(SaeError::Input(format!(
                        "normalization mean has {} entries, the SAE width is {}",
                        n.mean.len(),
                        self.config.d_model
                    )));
                }
                Some(DeviceNorm {
                    mean: Tensor::from_data(
                        TensorData::new(n.mean.clone(), [n.mean.len()]),
                        &device,
                    ),
                    scalar: n.scalar,
                })
            }
        };
        Ok(self)
    }

    pub fn d_model(&self) -> usize {
        self.config.d_model
    }

    pub fn d_sae(&self) -> usize {
        self.config.d_sae
    }

    /// The factor from normalized to model units (1 without normalization).
    pub fn scalar(&self) -> f32 {
        self.norm.as_ref().map_or(1.0, |n| n.scalar)
    }

    /// Checks that `x` is `[n, d_model]`.
    pub fn check_input(&self, x: &Tensor<B, 2>) -> Result<()> {
        let [_, d] = x.dims();
        if d != self.config.d_model {
            return Err(SaeError::Input(format!(
                "activations have width {d}, the SAE expects {}",
                self.config.d_model
            )));
        }
        Ok(())
    }

    /// Model units to normalized units: `(clamp(x, -1e5, 1e5) - mean) / scalar`.
    /// `[n, d] -> [n, d]`; the identity without normalization.
    pub fn normalize(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.norm {
            None => x,
            Some(n) => x
                .clamp(-CLAMP, CLAMP)
                .sub(n.mean.clone().unsqueeze_dim(0))
                .div_scalar(n.scalar),
        }
    }

    /// Normalized units back to model units: `x_n * scalar + mean`.
    pub fn denormalize(&self, x_n: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.norm {
            None => x_n,
            Some(n) => x_n
                .mul_scalar(n.scalar)
                .add(n.mean.clone().unsqueeze_dim(0)),
        }
    }

    /// Encoder pre-activations of normalized inputs, `[n, d] -> [n, s]`.
    pub fn pre_activations(&self, x_n: Tensor<B, 2>) -> Tensor<B, 2> {
        self.pre_activations_of(x_n, self.w_enc.clone(), self.b_enc.clone())
    }

    /// Pre-activations against a subset of encoder columns `w [d, m]`, `b [m]`.
    pub(crate) fn pre_activations_of(
        &self,
        x_n: Tensor<B, 2>,
        w: Tensor<B, 2>,
        b: Tensor<B, 1>,
    ) -> Tensor<B, 2> {
        let x_n = match self.config.encode {
            EncodeRule::CentreOnDecoderBias => x_n.sub(self.b_dec.clone().unsqueeze_dim(0)),
            EncodeRule::Plain => x_n,
        };
        x_n.matmul(w).add(b.unsqueeze_dim(0))
    }

    /// Latent activations of normalized inputs, `f = act(h)`: `[n, d] -> [n, s]`.
    pub fn encode(&self, x_n: Tensor<B, 2>) -> Tensor<B, 2> {
        self.activate(self.pre_activations(x_n))
    }

    /// Activations of the latents `idx [m]` only, `[n, d] -> [n, m]`. For
    /// ReLU and JumpReLU this touches only their encoder columns (`2 n d m`
    /// FLOPs instead of `2 n d s`); a TopK latent's value depends on every
    /// latent of its row, so TopK encodes in full.
    pub fn encode_latents(&self, x_n: Tensor<B, 2>, idx: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        match self.config.activation {
            Activation::Topk { .. } | Activation::TopkRelu { .. } => {
                self.encode(x_n).select(1, idx)
            }
            Activation::Relu | Activation::JumpRelu { .. } => {
                let w = self.w_enc.clone().select(1, idx.clone()); // [d, m]
                let b = self.b_enc.clone().select(0, idx.clone()); // [m]
                let t = self.threshold.clone().map(|t| t.select(0, idx));
                self.activate_with(self.pre_activations_of(x_n, w, b), t)
            }
        }
    }

    /// Applies the activation to pre-activations `[n, s]` (all latents: TopK
    /// compares each latent with the others of its row; see [`keep_top_k`]).
    /// TopK with `k >= s` keeps every pre-activation unchanged.
    pub fn activate(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        self.activate_with(h, self.threshold.clone())
    }

    /// [`Self::activate`] with the per-latent thresholds of `h`'s columns.
    fn activate_with(&self, h: Tensor<B, 2>, thresholds: Option<Tensor<B, 1>>) -> Tensor<B, 2> {
        match self.config.activation {
            Activation::Relu => h.clamp_min(0.0),
            Activation::JumpRelu { threshold } => {
                let off = match thresholds {
                    // SAELens: relu(h) * (h > t_j), i.e. off where h <= max(t_j, 0).
                    Some(t) => {
                        let dims = h.dims();
                        h.clone()
                            .lower_equal(t.clamp_min(0.0).unsqueeze_dim::<2>(0).expand(dims))
                    }
                    None => h.clone().lower_equal_elem(threshold.max(0.0)),
                };
                h.mask_fill(off, 0.0)
            }
            Activation::Topk { k } => keep_top_k(h, k),
            Activation::TopkRelu { k } => keep_top_k(h, k).clamp_min(0.0),
        }
    }

    /// Reconstruction in normalized units, `x_hat = f W_dec + b_dec`: `[n, s] -> [n, d]`.
    pub fn decode(&self, f: Tensor<B, 2>) -> Tensor<B, 2> {
        f.matmul(self.w_dec.clone())
            .add(self.b_dec.clone().unsqueeze_dim(0))
    }
}

/// Where a backend's tensors live, for the TopK selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// ndarray or flex, with or without autodiff: the data is already in
    /// host memory, and burn's `topk` there copies it and sorts every row.
    Host,
    /// A device backend with a `topk` of its own.
    Device,
    /// A device backend under burn's autodiff, which has no `topk` but passes
    /// `argtopk` through.
    DeviceAutodiff,
}

fn memory<B: Backend>(device: &B::Device) -> Memory {
    let name = B::name(device);
    let inner = name
        .strip_prefix("autodiff<")
        .and_then(|n| n.strip_suffix('>'));
    match inner.unwrap_or(&name) {
        "ndarray" | "flex" => Memory::Host,
        _ if inner.is_some() => Memory::DeviceAutodiff,
        _ => Memory::Device,
    }
}

/// Runs `f(row, out, scratch)` on every `s`-wide row of `values` with its
/// entry of `out`, rows split over all cores; `scratch` is a per-thread buffer.
fn for_each_row<T: Send>(
    values: &mut [f32],
    s: usize,
    out: &mut [T],
    f: impl Fn(&mut [f32], &mut T, &mut Vec<f32>) + Sync,
) {
    let n = out.len();
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(n.max(1));
    let rows_per_thread = n.div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|scope| {
        for (rows, out) in values
            .chunks_mut(rows_per_thread * s)
            .zip(out.chunks_mut(rows_per_thread))
        {
            scope.spawn(move || {
                let mut scratch = Vec::new();
                for (row, out) in rows.chunks_mut(s).zip(out.iter_mut()) {
                    f(row, out, &mut scratch);
                }
            });
        }
    });
}

/// The `k`-th largest of `row` (descending order, ties counted separately),
/// reordering `row`; `1 <= k <= row.len()`.
fn select_kth(row: &mut [f32], k: usize) -> f32 {
    *row.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a)).1
}

fn into_host_vec<B: Backend>(h: Tensor<B, 2>) -> Vec<f32> {
    h.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}

/// The `k`-th largest value of each row, `[n, s] -> [n, 1]`, counting tied
/// values separately (`k = 0` acts as 1; `k >= s` gives the row minimum).
/// TopK training and AuxK threshold with it.
///
/// On backends whose tensors live in host memory (ndarray, flex, with or
/// without autodiff) this is a partial selection (`select_nth_unstable`,
/// O(s) per row) on all cores: their `topk` copies to the host anyway and
/// then fully sorts every row, which made TopK training several times
/// slower. Elsewhere (CubeCL GPUs) it is burn's `topk`, which runs on the
/// device.
pub fn kth_largest<B: Backend>(h: Tensor<B, 2>, k: usize) -> Tensor<B, 2> {
    let [n, s] = h.dims();
    let device = h.device();
    if k >= s {
        return h.min_dim(1);
    }
    let k = k.max(1);
    match memory::<B>(&device) {
        // min over the k kept values: correct whether or not the backend
        // returns them sorted. burn's topk needs k < s, ensured above.
        Memory::Device => h.topk(k, 1).min_dim(1),
        Memory::DeviceAutodiff => {
            let idx = h.clone().argtopk(k, 1);
            h.gather(1, idx).min_dim(1)
        }
        Memory::Host => {
            let mut values = into_host_vec(h);
            let mut kth = vec![0f32; n];
            for_each_row(&mut values, s, &mut kth, |row, out, _| {
                *out = select_kth(row, k);
            });
            Tensor::from_data(TensorData::new(kth, [n, 1]), &device)
        }
    }
}

/// TopK without ReLU, `[n, s] -> [n, s]`: keeps the `k` largest entries of
/// each row as they are, and every entry tied with the k-th; zeroes the
/// rest. `k >= s` returns `h` unchanged (`k = 0` acts as 1).
///
/// On host backends the selection and the zeroing are one parallel pass
/// over each row; burn-ndarray would run the comparison with the broadcast
/// threshold and the masked fill as two more single-threaded passes over
/// the whole `[n, s]` tensor.
pub fn keep_top_k<B: Backend>(h: Tensor<B, 2>, k: usize) -> Tensor<B, 2> {
    let [n, s] = h.dims();
    if k >= s {
        return h;
    }
    let device = h.device();
    if memory::<B>(&device) != Memory::Host {
        let kth = kth_largest(h.clone(), k).expand([n, s]);
        let off = h.clone().lower(kth);
        return h.mask_fill(off, 0.0);
    }
    let k = k.max(1);
    let mut values = into_host_vec(h);
    let mut rows = vec![(); n];
    for_each_row(&mut values, s, &mut rows, |row, _, scratch| {
        scratch.clear();
        scratch.extend_from_slice(row);
        let kth = select_kth(scratch, k);
        // `<` keeps ties and, like `lower`, keeps NaN.
        row.iter_mut().filter(|v| **v < kth).for_each(|v| *v = 0.0);
    });
    Tensor::from_data(TensorData::new(values, [n, s]), &device)
}

pub(crate) fn from_host<B: Backend, const D: usize>(
    t: HostTensor,
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(t.data, t.shape), device)
}

pub(crate) fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> HostTensor {
    let shape = t.dims().to_vec();
    // f32 backends give their data back as is; others are converted.
    let data = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default();
    HostTensor::new(shape, data)
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};

    use super::*;

    /// Pre-activations with negatives and ties, `[2, 6]`.
    const H: [f32; 12] = [
        0.5, -1.0, 2.0, 0.5, -3.0, 1.0, //
        -0.25, -0.5, -2.0, 4.0, 4.0, 0.75,
    ];

    fn sae<B: Backend>(k: usize) -> Sae<B> {
        let config = SaeConfig {
            d_model: 3,
            d_sae: 6,
            activation: Activation::Topk { k },
            encode: EncodeRule::Plain,
            vit: None,
            layer: None,
        };
        let device = Default::default();
        Sae::from_weights(
            SaeWeights {
                config,
                w_enc: HostTensor::new(vec![3, 6], vec![0.0; 18]),
                b_enc: HostTensor::new(vec![6], vec![0.0; 6]),
                w_dec: HostTensor::new(vec![6, 3], vec![0.0; 18]),
                b_dec: HostTensor::new(vec![3], vec![0.0; 3]),
                threshold: None,
                norm: None,
            },
            &device,
        )
    }

    fn activate<B: Backend>(k: usize) -> Vec<f32> {
        let h = Tensor::<B, 2>::from_data(TensorData::new(H.to_vec(), [2, 6]), &Default::default());
        to_host(sae::<B>(k).activate(h)).data
    }

    #[test]
    fn topk_with_k_at_or_above_the_width_keeps_every_pre_activation() {
        // saev's TopK has no ReLU: negative pre-activations stay as they are.
        for k in [6, 7, 100] {
            assert_eq!(activate::<NdArray<f32>>(k), H.to_vec(), "ndarray, k = {k}");
            // burn's topk panics for k >= s: the activation must not reach it.
            assert_eq!(
                activate::<Autodiff<NdArray<f32>>>(k),
                H.to_vec(),
                "autodiff, k = {k}"
            );
        }
    }

    #[test]
    fn topk_keeps_the_k_largest_and_every_tie_at_the_kth_value() {
        let cases: [(usize, [f32; 12]); 3] = [
            // Row 2 has two 4.0 tied for first: both are kept.
            (
                1,
                [
                    0.0, 0.0, 2.0, 0.0, 0.0, 0.0, //
                    0.0, 0.0, 0.0, 4.0, 4.0, 0.0,
                ],
            ),
            // Row 1 has two 0.5 tied for third: both are kept.
            (
                3,
                [
                    0.5, 0.0, 2.0, 0.5, 0.0, 1.0, //
                    0.0, 0.0, 0.0, 4.0, 4.0, 0.75,
                ],
            ),
            (
                5,
                [
                    0.5, -1.0, 2.0, 0.5, 0.0, 1.0, //
                    -0.25, -0.5, 0.0, 4.0, 4.0, 0.75,
                ],
            ),
        ];
        // A hand-built k = 0 acts as 1.
        assert_eq!(activate::<NdArray<f32>>(0), cases[0].1, "k = 0");
        for (k, expected) in cases {
            assert_eq!(activate::<NdArray<f32>>(k), expected, "ndarray, k = {k}");
            assert_eq!(
                activate::<Autodiff<NdArray<f32>>>(k),
                expected,
                "autodiff, k = {k}"
            );
        }
    }
}

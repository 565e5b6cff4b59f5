//! The SAE on a burn backend: normalization, encode and decode of `[n, d]` batches.

use std::path::Path;

use burn::tensor::{Tensor, TensorData, backend::Backend};
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
    pub norm: Option<DeviceNorm<B>>,
}

impl<B: Backend> Sae<B> {
    /// Loads a saev `sae.pt` or one of our checkpoints (see [`SaeWeights::load`]).
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        Ok(Self::from_weights(SaeWeights::load(path)?, device))
    }

    /// Moves host weights to the device. Takes them by value so that each
    /// host buffer is released as soon as its tensor exists: a 24k-latent
    /// SAE is 150 MB and must not be held twice.
    pub fn from_weights(w: SaeWeights, device: &B::Device) -> Self {
        Self {
            config: w.config,
            w_enc: host_to_device(w.w_enc, device),
            b_enc: host_to_device(w.b_enc, device),
            w_dec: host_to_device(w.w_dec, device),
            b_dec: host_to_device(w.b_dec, device),
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
            w_enc: device_to_host(self.w_enc.clone()),
            b_enc: device_to_host(self.b_enc.clone()),
            w_dec: device_to_host(self.w_dec.clone()),
            b_dec: device_to_host(self.b_dec.clone()),
            norm: self.norm.as_ref().map(|n| Normalization {
                mean: device_to_host(n.mean.clone()).data,
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

    /// Applies the activation to pre-activations `[n, s]` (all latents: TopK
    /// compares each latent with the others of its row).
    pub fn activate(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        match self.config.activation {
            Activation::Relu => h.clamp_min(0.0),
            Activation::JumpRelu { threshold } => {
                let t = threshold.max(0.0);
                let off = h.clone().lower_equal_elem(t);
                h.mask_fill(off, 0.0)
            }
            Activation::Topk { k } => {
                let [n, s] = h.dims();
                // Loaders reject k = 0; clamping keeps a hand-built config from panicking.
                let k = k.clamp(1, s.max(1));
                // The k-th largest value of each row, [n, 1]; entries below it are dropped.
                let kth = h.clone().topk(k, 1).narrow(1, k - 1, 1).expand([n, s]);
                let off = h.clone().lower(kth);
                h.mask_fill(off, 0.0)
            }
        }
    }

    /// Reconstruction in normalized units, `x_hat = f W_dec + b_dec`: `[n, s] -> [n, d]`.
    pub fn decode(&self, f: Tensor<B, 2>) -> Tensor<B, 2> {
        f.matmul(self.w_dec.clone())
            .add(self.b_dec.clone().unsqueeze_dim(0))
    }
}

fn host_to_device<B: Backend, const D: usize>(t: HostTensor, device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(t.data, t.shape), device)
}

fn device_to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> HostTensor {
    let shape = t.dims().to_vec();
    // f32 backends give their data back as is; others are converted.
    let data = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default();
    HostTensor::new(shape, data)
}

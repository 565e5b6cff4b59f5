//! Every layer of the ViT for one image, as named host tensors (the
//! `activations` example's file format), optionally with what an SAE makes
//! of one layer's patch tokens.

use burn::prelude::*;
use sae_steer_sae::{Edit, Sae, SaeError};
use sae_steer_vit::{HostTensor, PixelValues, Vit, VitError};

use crate::error::Error;

/// An SAE applied to the patch tokens of one layer.
#[derive(Debug, Clone)]
pub struct SaeTap<'a, B: Backend> {
    /// The SAE, with the normalization it should apply (if any).
    pub sae: &'a Sae<B>,
    /// 0-based block whose output (residual stream) the SAE reads.
    pub layer: usize,
    /// Latent `j` set to value `v` on every patch, for `sae.steered`.
    pub steer: Option<(usize, f32)>,
}

impl<B: Backend> SaeTap<'_, B> {
    /// Checks the tap against the ViT before any work is done.
    pub fn check(&self, vit: &Vit<B>) -> Result<(), Error> {
        let depth = vit.depth();
        if self.layer >= depth {
            return Err(Error::Layer {
                layer: self.layer,
                depth,
            });
        }
        let width = vit.config().hidden_size;
        if self.sae.d_model() != width {
            return Err(Error::Width {
                what: "SAE",
                got: self.sae.d_model(),
                vit: width,
            });
        }
        if let Some((latent, value)) = self.steer {
            if latent >= self.sae.d_sae() {
                return Err(Error::Latent {
                    latent,
                    d_sae: self.sae.d_sae(),
                });
            }
            if !value.is_finite() {
                return Err(Error::Value(value));
            }
        }
        Ok(())
    }
}

/// Named host tensors, in the order they are written to the file.
pub type NamedTensors = Vec<(String, HostTensor)>;

/// Copies a device tensor to the host.
pub fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> HostTensor {
    let shape = t.dims().to_vec();
    let data = t.into_data().convert::<f32>();
    // convert::<f32> makes the element type f32, so this cannot fail.
    let data = data.into_vec::<f32>().unwrap_or_default();
    HostTensor::new(shape, data)
}

/// `pixel_values` [3, H, W], `layer.{i}` [tokens, d] for every block (residual
/// after block i, before the final norm), `last_hidden_state` [tokens, d] as
/// transformers returns it, `x_norm_patchtokens` [patches, d] (its patch rows) and,
/// for families with a CLS token, `x_norm_clstoken` `[d]`.
pub fn layer_activations<B: Backend>(
    vit: &Vit<B>,
    pixels: &PixelValues,
) -> Result<NamedTensors, VitError> {
    Ok(run_layers(vit, pixels, None)?.0)
}

/// [`layer_activations`] plus the SAE's view of layer `tap.layer`'s patch
/// tokens (see [`sae_outputs`]).
pub fn layer_activations_with_sae<B: Backend>(
    vit: &Vit<B>,
    pixels: &PixelValues,
    tap: &SaeTap<'_, B>,
) -> Result<NamedTensors, Error> {
    tap.check(vit)?;
    let (mut out, layer) = run_layers(vit, pixels, Some(tap.layer))?;
    let Some(layer) = layer else {
        // run_layers keeps every block, and check() bounded the layer.
        return Err(Error::Layer {
            layer: tap.layer,
            depth: vit.depth(),
        });
    };
    let patches = vit.split_tokens(layer).patches;
    let [_, n, d] = patches.dims();
    out.extend(sae_outputs(tap.sae, patches.reshape([n, d]), tap.steer)?);
    Ok(out)
}

/// What an SAE makes of patch activations `x` [patches, d] (model units):
/// `sae.f_x` [patches, d_sae] and `sae.x_hat` [patches, d] in the SAE's
/// (normalized) units, as saev's forward returns them; with `steer = (j, v)`
/// also `sae.steered` [patches, d] in model units: `x` with latent `j` set to
/// `v` on every patch and the SAE's error term kept.
pub fn sae_outputs<B: Backend>(
    sae: &Sae<B>,
    x: Tensor<B, 2>,
    steer: Option<(usize, f32)>,
) -> Result<NamedTensors, SaeError> {
    sae.check_input(&x)?;
    let f = sae.encode(sae.normalize(x.clone()));
    let x_hat = sae.decode(f.clone());
    let mut out = vec![
        ("sae.f_x".to_string(), to_host(f)),
        ("sae.x_hat".to_string(), to_host(x_hat)),
    ];
    if let Some((latent, value)) = steer {
        let steered = Edit::new().set(latent, value).apply(sae, x)?;
        out.push(("sae.steered".to_string(), to_host(steered)));
    }
    Ok(out)
}

/// The layer tensors on the host, and block `keep`'s output still on the device.
fn run_layers<B: Backend>(
    vit: &Vit<B>,
    pixels: &PixelValues,
    keep: Option<usize>,
) -> Result<(NamedTensors, Option<Tensor<B, 3>>), VitError> {
    let device = vit.device();
    let last = vit.depth() - 1;
    let all: Vec<usize> = (0..=last).collect();
    let (residual, taps) = vit.forward_taps(pixels.to_tensor::<B>(device), last, &all)?;
    // `last_hidden_state` as transformers returns it: the final norm where the
    // family has one (CLIP's vision tower has none; its post-LayerNorm is pooled-only).
    let last_hidden = vit.final_norm(residual);
    let mut out = vec![(
        "pixel_values".to_string(),
        HostTensor::new(vec![3, pixels.height, pixels.width], pixels.data.clone()),
    )];
    let mut kept = None;
    for (i, t) in taps {
        if Some(i) == keep {
            kept = Some(t.clone());
        }
        let [_, n, d] = t.dims();
        out.push((format!("layer.{i}"), to_host(t.reshape([n, d]))));
    }
    let [_, n, d] = last_hidden.dims();
    out.push((
        "last_hidden_state".into(),
        to_host(last_hidden.clone().reshape([n, d])),
    ));
    let normed = vit.split_tokens(last_hidden);
    let [_, n, d] = normed.patches.dims();
    out.push((
        "x_norm_patchtokens".into(),
        to_host(normed.patches.reshape([n, d])),
    ));
    if let Some(cls) = normed.cls {
        out.push(("x_norm_clstoken".into(), to_host(cls.reshape([d]))));
    }
    Ok((out, kept))
}

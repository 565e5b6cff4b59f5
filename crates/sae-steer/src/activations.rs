//! Every layer of the ViT for one image, as named host tensors (the
//! `activations` example's file format).

use burn::prelude::*;
use sae_steer_vit::{Dinov2, HostTensor, PixelValues, VitError};

/// Copies a device tensor to the host.
pub fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> HostTensor {
    let shape = t.dims().to_vec();
    let data = t.into_data().convert::<f32>();
    // convert::<f32> makes the element type f32, so this cannot fail.
    let data = data.into_vec::<f32>().unwrap_or_default();
    HostTensor::new(shape, data)
}

/// `pixel_values` [3, H, W], `layer.{i}` [tokens, d] for every block (residual
/// after block i, before the final norm), `x_norm_patchtokens` [patches, d] and
/// `x_norm_clstoken` [d].
pub fn layer_activations<B: Backend>(
    vit: &Dinov2<B>,
    pixels: &PixelValues,
) -> Result<Vec<(String, HostTensor)>, VitError> {
    let device = vit.device();
    let last = vit.depth() - 1;
    let all: Vec<usize> = (0..=last).collect();
    let (residual, taps) = vit.forward_taps(pixels.to_tensor::<B>(device), last, &all)?;
    let normed = vit.split_tokens(vit.final_norm(residual));
    let mut out = vec![(
        "pixel_values".to_string(),
        HostTensor::new(vec![3, pixels.height, pixels.width], pixels.data.clone()),
    )];
    for (i, t) in taps {
        let [_, n, d] = t.dims();
        out.push((format!("layer.{i}"), to_host(t.reshape([n, d]))));
    }
    let [_, n, d] = normed.patches.dims();
    out.push((
        "x_norm_patchtokens".into(),
        to_host(normed.patches.reshape([n, d])),
    ));
    out.push(("x_norm_clstoken".into(), to_host(normed.cls.reshape([d]))));
    Ok(out)
}

//! SigLIP (Zhai et al. 2023) and SigLIP 2 (Tschannen et al. 2025) vision
//! towers at fixed resolution, as transformers' `SiglipVisionModel` holds
//! them (alone, or as the `vision_model` of a `SiglipModel`:
//! `google/siglip2-base-patch16-224` is one).
//!
//! CLIP's encoder (same tensor names) with a biased patch convolution, no
//! CLS token and no LayerNorm before the blocks; position embeddings for the
//! patches only; the tanh GELU; `post_layernorm` applied to every token
//! gives `last_hidden_state`. The attention-pooling head is not loaded
//! (nothing here reads the pooled embedding).

use burn::prelude::*;

use crate::clip::{
    encoder_blocks, encoder_shapes, vision_config, vision_config_to_hf, vision_prefix,
};
use crate::config::{Family, VitConfig};
use crate::error::Result;
use crate::vit::{Loader, Parts};
use crate::weights::TensorSource;

/// Reads a `siglip_vision_model` config (or a `siglip` config's `vision_config`).
pub(crate) fn config_from_hf(value: serde_json::Value) -> std::result::Result<VitConfig, String> {
    vision_config(&value, Family::Siglip, "gelu_pytorch_tanh", 1e-6, 16)
}

pub(crate) fn config_to_hf(c: &VitConfig) -> serde_json::Value {
    let mut json = vision_config_to_hf(c, "siglip_vision_model", "SiglipVisionModel");
    json["vision_use_head"] = serde_json::Value::Bool(false);
    json
}

pub(crate) fn parts<B: Backend>(
    c: &VitConfig,
    src: &dyn TensorSource,
    device: &B::Device,
) -> Result<Parts<B>> {
    let (d, ch, p, g) = (c.hidden_size, c.num_channels, c.patch_size, c.native_grid());
    let w = Loader::<B>::new(
        c,
        src,
        vision_prefix(src, "embeddings.patch_embedding.weight"),
        device,
    );
    Ok(Parts {
        cls_token: None,
        register_tokens: None,
        position_embeddings: Some(w.host("embeddings.position_embedding.weight", &[g * g, d])?),
        patch_embed: w.linear(
            w.host("embeddings.patch_embedding.weight", &[d, ch, p, p])?,
            Some(w.host("embeddings.patch_embedding.bias", &[d])?),
        ),
        pre_norm: None,
        blocks: encoder_blocks(&w, c)?,
        norm: Some(w.norm("post_layernorm", d)?),
    })
}

/// Every tensor of a `SiglipVisionModel` state dict (without the head) with its shape.
pub(crate) fn tensor_shapes(c: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let (d, ch, p, g) = (c.hidden_size, c.num_channels, c.patch_size, c.native_grid());
    let mut out = vec![
        (
            "embeddings.patch_embedding.weight".into(),
            vec![d, ch, p, p],
        ),
        ("embeddings.patch_embedding.bias".into(), vec![d]),
        (
            "embeddings.position_embedding.weight".into(),
            vec![g * g, d],
        ),
        ("post_layernorm.weight".into(), vec![d]),
        ("post_layernorm.bias".into(), vec![d]),
    ];
    out.extend(encoder_shapes(c));
    out
}

//! CLIP's vision tower (Radford et al. 2021), as transformers'
//! `CLIPVisionModel` holds it (alone, or as the `vision_model` of a
//! `CLIPModel`, which is how `openai/clip-vit-base-patch16` is published).
//!
//! A CLS token (`class_embedding`) and learned position embeddings for it and
//! the patches, a LayerNorm on the embeddings before the first block
//! (`pre_layrnorm`, sic), pre-norm blocks without LayerScale and with
//! OpenAI's quick GELU. `last_hidden_state` is the last block's output, not
//! normalised: `post_layernorm` only normalises the pooled CLS token.

use burn::prelude::*;

use crate::config::{Family, HiddenAct, PosEmbedResample, VitConfig, field};
use crate::error::Result;
use crate::vit::{Block, Loader, Parts};
use crate::weights::TensorSource;

/// Reads a `clip_vision_model` config (or a `clip` config's `vision_config`).
pub(crate) fn config_from_hf(value: serde_json::Value) -> std::result::Result<VitConfig, String> {
    vision_config(&value, Family::Clip, "quick_gelu", 1e-5, 32)
}

/// The fields CLIP and SigLIP vision configs share, with their family's defaults.
pub(crate) fn vision_config(
    v: &serde_json::Value,
    family: Family,
    act: &str,
    eps: f64,
    patch: usize,
) -> std::result::Result<VitConfig, String> {
    let act: String = field(v, "hidden_act", Some(act.to_string()))?;
    Ok(VitConfig {
        family,
        hidden_size: field(v, "hidden_size", Some(768))?,
        num_hidden_layers: field(v, "num_hidden_layers", Some(12))?,
        num_attention_heads: field(v, "num_attention_heads", Some(12))?,
        intermediate_size: field(v, "intermediate_size", Some(3072))?,
        layer_norm_eps: field(v, "layer_norm_eps", Some(eps))?,
        image_size: field(v, "image_size", Some(224))?,
        patch_size: field(v, "patch_size", Some(patch))?,
        num_channels: field(v, "num_channels", Some(3))?,
        qkv_bias: true,
        num_register_tokens: 0,
        // transformers' `interpolate_pos_encoding`: bicubic to the target size.
        pos_embed_resample: PosEmbedResample::BICUBIC,
        hidden_act: HiddenAct::from_hf(&act)?,
        rope_theta: None,
    })
}

/// The `config.json` of a CLIP or SigLIP vision geometry.
pub(crate) fn vision_config_to_hf(
    c: &VitConfig,
    model_type: &str,
    architecture: &str,
) -> serde_json::Value {
    serde_json::json!({
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_channels": c.num_channels,
        "image_size": c.image_size,
        "patch_size": c.patch_size,
        "hidden_act": c.hidden_act.hf_name(),
        "layer_norm_eps": c.layer_norm_eps,
    })
}

pub(crate) fn config_to_hf(c: &VitConfig) -> serde_json::Value {
    vision_config_to_hf(c, "clip_vision_model", "CLIPVisionModel")
}

/// The prefix a vision tower's tensors sit under: none for a vision model
/// saved alone, `vision_model.` inside a multimodal model.
pub(crate) fn vision_prefix(src: &dyn TensorSource, probe: &str) -> String {
    if !src.contains(probe) && src.contains(&format!("vision_model.{probe}")) {
        "vision_model.".into()
    } else {
        String::new()
    }
}

/// `encoder.layers.{i}`: the blocks CLIP and SigLIP share.
pub(crate) fn encoder_blocks<B: Backend>(
    w: &Loader<'_, B>,
    c: &VitConfig,
) -> Result<Vec<Block<B>>> {
    let (d, m) = (c.hidden_size, c.intermediate_size);
    (0..c.num_hidden_layers)
        .map(|i| {
            let l = |name: &str| format!("encoder.layers.{i}.{name}");
            Ok(Block {
                norm1: w.norm(&l("layer_norm1"), d)?,
                qkv: w.fused_qkv(
                    [
                        &l("self_attn.q_proj"),
                        &l("self_attn.k_proj"),
                        &l("self_attn.v_proj"),
                    ],
                    d,
                )?,
                proj: w.dense(&l("self_attn.out_proj"), d, d, true)?,
                ls1: w.ones(d),
                norm2: w.norm(&l("layer_norm2"), d)?,
                fc1: w.dense(&l("mlp.fc1"), m, d, true)?,
                fc2: w.dense(&l("mlp.fc2"), d, m, true)?,
                ls2: w.ones(d),
                heads: c.num_attention_heads,
                act: c.hidden_act,
            })
        })
        .collect()
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
        vision_prefix(src, "embeddings.class_embedding"),
        device,
    );
    let cls = w.host("embeddings.class_embedding", &[d])?;
    Ok(Parts {
        cls_token: Some(Tensor::from_data(
            TensorData::new(cls.data, [1, 1, d]),
            device,
        )),
        register_tokens: None,
        position_embeddings: Some(w.host("embeddings.position_embedding.weight", &[1 + g * g, d])?),
        patch_embed: w.linear(
            w.host("embeddings.patch_embedding.weight", &[d, ch, p, p])?,
            None,
        ),
        pre_norm: Some(w.norm("pre_layrnorm", d)?),
        blocks: encoder_blocks(&w, c)?,
        norm: None,
    })
}

/// Every tensor of a `CLIPVisionModel` state dict with its shape.
pub(crate) fn tensor_shapes(c: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let (d, ch, p, g) = (c.hidden_size, c.num_channels, c.patch_size, c.native_grid());
    let mut out = vec![
        ("embeddings.class_embedding".into(), vec![d]),
        (
            "embeddings.patch_embedding.weight".into(),
            vec![d, ch, p, p],
        ),
        (
            "embeddings.position_embedding.weight".into(),
            vec![1 + g * g, d],
        ),
        ("pre_layrnorm.weight".into(), vec![d]),
        ("pre_layrnorm.bias".into(), vec![d]),
        ("post_layernorm.weight".into(), vec![d]),
        ("post_layernorm.bias".into(), vec![d]),
    ];
    out.extend(encoder_shapes(c));
    out
}

/// The shapes of [`encoder_blocks`]' tensors.
pub(crate) fn encoder_shapes(c: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let (d, m) = (c.hidden_size, c.intermediate_size);
    let mut out = Vec::new();
    for i in 0..c.num_hidden_layers {
        for (name, shape) in [
            ("layer_norm1.weight", vec![d]),
            ("layer_norm1.bias", vec![d]),
            ("self_attn.q_proj.weight", vec![d, d]),
            ("self_attn.q_proj.bias", vec![d]),
            ("self_attn.k_proj.weight", vec![d, d]),
            ("self_attn.k_proj.bias", vec![d]),
            ("self_attn.v_proj.weight", vec![d, d]),
            ("self_attn.v_proj.bias", vec![d]),
            ("self_attn.out_proj.weight", vec![d, d]),
            ("self_attn.out_proj.bias", vec![d]),
            ("layer_norm2.weight", vec![d]),
            ("layer_norm2.bias", vec![d]),
            ("mlp.fc1.weight", vec![m, d]),
            ("mlp.fc1.bias", vec![m]),
            ("mlp.fc2.weight", vec![d, m]),
            ("mlp.fc2.bias", vec![d]),
        ] {
            out.push((format!("encoder.layers.{i}.{name}"), shape));
        }
    }
    out
}

//! DINOv3 ViTs (Siméoni et al. 2025), as transformers' `DINOv3ViTModel`
//! holds them (`facebook/dinov3-vitb16-pretrain-lvd1689m` and siblings).
//!
//! DINOv2's block (pre-norm, LayerScale, exact GELU) with RoPE instead of
//! learned position embeddings: each patch's query and key are rotated by
//! angles from its centre on the grid (normalised to [-1, 1] per axis), so
//! any input size works without resampling; CLS and registers are not
//! rotated. The key projection has no bias. A final LayerNorm (`norm`)
//! gives `last_hidden_state`.

use burn::prelude::*;
use serde::Deserialize;

use crate::config::{Family, HiddenAct, PosEmbedResample, VitConfig};
use crate::error::Result;
use crate::vit::{Block, Loader, Parts};
use crate::weights::TensorSource;

/// The fields of a `dinov3_vit` config we read; unknown keys are ignored.
#[derive(Deserialize)]
struct HfConfig {
    #[serde(default = "d384")]
    hidden_size: usize,
    #[serde(default = "d1536")]
    intermediate_size: usize,
    #[serde(default = "d12")]
    num_hidden_layers: usize,
    #[serde(default = "d6")]
    num_attention_heads: usize,
    #[serde(default = "gelu")]
    hidden_act: String,
    #[serde(default = "eps")]
    layer_norm_eps: f64,
    #[serde(default = "theta")]
    rope_theta: f64,
    #[serde(default = "d224")]
    image_size: usize,
    #[serde(default = "d16")]
    patch_size: usize,
    #[serde(default = "d3")]
    num_channels: usize,
    #[serde(default)]
    use_gated_mlp: bool,
    #[serde(default)]
    num_register_tokens: usize,
}

fn d384() -> usize {
    384
}
fn d1536() -> usize {
    1536
}
fn d12() -> usize {
    12
}
fn d6() -> usize {
    6
}
fn d224() -> usize {
    224
}
fn d16() -> usize {
    16
}
fn d3() -> usize {
    3
}
fn gelu() -> String {
    "gelu".into()
}
fn eps() -> f64 {
    1e-5
}
fn theta() -> f64 {
    100.0
}

pub(crate) fn config_from_hf(value: serde_json::Value) -> std::result::Result<VitConfig, String> {
    let hf: HfConfig = serde_json::from_value(value).map_err(|e| e.to_string())?;
    if hf.use_gated_mlp {
        return Err(
            "gated (SwiGLU) MLPs (DINOv3 ViT-S+/H+/7B) are not supported; use ViT-S, B or L".into(),
        );
    }
    if hf.hidden_act != "gelu" {
        return Err(format!(
            "hidden_act `{}` is not supported (DINOv3 ViTs use exact `gelu`)",
            hf.hidden_act
        ));
    }
    Ok(VitConfig {
        family: Family::Dinov3,
        hidden_size: hf.hidden_size,
        num_hidden_layers: hf.num_hidden_layers,
        num_attention_heads: hf.num_attention_heads,
        intermediate_size: hf.intermediate_size,
        layer_norm_eps: hf.layer_norm_eps,
        image_size: hf.image_size,
        patch_size: hf.patch_size,
        num_channels: hf.num_channels,
        qkv_bias: true,
        num_register_tokens: hf.num_register_tokens,
        pos_embed_resample: PosEmbedResample::BICUBIC,
        hidden_act: HiddenAct::Gelu,
        rope_theta: Some(hf.rope_theta),
    })
}

pub(crate) fn config_to_hf(c: &VitConfig) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["DINOv3ViTModel"],
        "model_type": "dinov3_vit",
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "hidden_act": "gelu",
        "layer_norm_eps": c.layer_norm_eps,
        "rope_theta": c.rope_theta.unwrap_or(100.0),
        "image_size": c.image_size,
        "patch_size": c.patch_size,
        "num_channels": c.num_channels,
        "query_bias": true,
        "key_bias": false,
        "value_bias": true,
        "proj_bias": true,
        "mlp_bias": true,
        "use_gated_mlp": false,
        "num_register_tokens": c.num_register_tokens,
    })
}

pub(crate) fn parts<B: Backend>(
    c: &VitConfig,
    src: &dyn TensorSource,
    device: &B::Device,
) -> Result<Parts<B>> {
    let (d, m, ch, p, r) = (
        c.hidden_size,
        c.intermediate_size,
        c.num_channels,
        c.patch_size,
        c.num_register_tokens,
    );
    let w = Loader::<B>::new(c, src, "", device);
    // The checkpoint's bias flags (`proj_bias`, `mlp_bias`) show as present
    // or absent tensors.
    let dense = |name: &str, out: usize, inp: usize| {
        w.dense(name, out, inp, w.contains(&format!("{name}.bias")))
    };
    // Published checkpoints name the blocks `layer.{i}`; the module tree
    // (what `state_dict()` gives without the checkpoint key mapping) says
    // `model.layer.{i}`.
    let blocks_at = if w.contains("layer.0.norm1.weight") || c.num_hidden_layers == 0 {
        "layer"
    } else {
        "model.layer"
    };
    let blocks = (0..c.num_hidden_layers)
        .map(|i| {
            let l = |name: &str| format!("{blocks_at}.{i}.{name}");
            Ok(Block {
                norm1: w.norm(&l("norm1"), d)?,
                qkv: w.fused_qkv(
                    [
                        &l("attention.q_proj"),
                        &l("attention.k_proj"),
                        &l("attention.v_proj"),
                    ],
                    d,
                )?,
                proj: dense(&l("attention.o_proj"), d, d)?,
                ls1: w.vector(&l("layer_scale1.lambda1"), d)?,
                norm2: w.norm(&l("norm2"), d)?,
                fc1: dense(&l("mlp.up_proj"), m, d)?,
                fc2: dense(&l("mlp.down_proj"), d, m)?,
                ls2: w.vector(&l("layer_scale2.lambda1"), d)?,
                heads: c.num_attention_heads,
                act: HiddenAct::Gelu,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let patch = "embeddings.patch_embeddings";
    Ok(Parts {
        cls_token: Some(w.tensor3("embeddings.cls_token", [1, 1, d])?),
        register_tokens: if r > 0 {
            Some(w.tensor3("embeddings.register_tokens", [1, r, d])?)
        } else {
            None
        },
        position_embeddings: None,
        patch_embed: w.linear(
            w.host(&format!("{patch}.weight"), &[d, ch, p, p])?,
            Some(w.host(&format!("{patch}.bias"), &[d])?),
        ),
        pre_norm: None,
        blocks,
        norm: Some(w.norm("norm", d)?),
    })
}

/// Every tensor of a `DINOv3ViTModel` state dict with its shape.
pub(crate) fn tensor_shapes(c: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let (d, m, ch, p, r) = (
        c.hidden_size,
        c.intermediate_size,
        c.num_channels,
        c.patch_size,
        c.num_register_tokens,
    );
    let mut out = vec![
        ("embeddings.cls_token".into(), vec![1, 1, d]),
        ("embeddings.mask_token".into(), vec![1, 1, d]),
        ("embeddings.register_tokens".into(), vec![1, r, d]),
        (
            "embeddings.patch_embeddings.weight".into(),
            vec![d, ch, p, p],
        ),
        ("embeddings.patch_embeddings.bias".into(), vec![d]),
        ("norm.weight".into(), vec![d]),
        ("norm.bias".into(), vec![d]),
    ];
    for i in 0..c.num_hidden_layers {
        for (name, shape) in [
            ("norm1.weight", vec![d]),
            ("norm1.bias", vec![d]),
            ("attention.q_proj.weight", vec![d, d]),
            ("attention.q_proj.bias", vec![d]),
            ("attention.k_proj.weight", vec![d, d]),
            ("attention.v_proj.weight", vec![d, d]),
            ("attention.v_proj.bias", vec![d]),
            ("attention.o_proj.weight", vec![d, d]),
            ("attention.o_proj.bias", vec![d]),
            ("layer_scale1.lambda1", vec![d]),
            ("norm2.weight", vec![d]),
            ("norm2.bias", vec![d]),
            ("mlp.up_proj.weight", vec![m, d]),
            ("mlp.up_proj.bias", vec![m]),
            ("mlp.down_proj.weight", vec![d, m]),
            ("mlp.down_proj.bias", vec![d]),
            ("layer_scale2.lambda1", vec![d]),
        ] {
            out.push((format!("layer.{i}.{name}"), shape));
        }
    }
    out
}

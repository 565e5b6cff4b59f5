//! DINOv2 (Oquab et al. 2023; registers: Darcet et al. 2024): its
//! `config.json`, its Hugging Face tensor names (`Dinov2Model`,
//! `Dinov2WithRegistersModel`) and the torch-hub layout
//! (`dinov2_vitb14_reg4_pretrain.pth`) mapped onto the same pieces.
//!
//! Pre-norm blocks with LayerScale, exact GELU, a CLS token, optional
//! registers (inserted after the position embeddings are added) and a final
//! LayerNorm (`layernorm`) that gives `last_hidden_state`.

use burn::prelude::*;
use serde::Deserialize;

use crate::config::{Family, HiddenAct, PosEmbedResample, VitConfig};
use crate::error::{Result, VitError};
use crate::vit::{Block, Loader, Parts};
use crate::weights::TensorSource;

/// Where a tensor lives in the two DINOv2 checkpoint layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLayout {
    /// `Dinov2Model` / `Dinov2WithRegistersModel` state dicts.
    HuggingFace,
    /// `torch.hub.load("facebookresearch/dinov2", ...)` state dicts.
    TorchHub,
}

/// The fields of a DINOv2 `config.json` we read; unknown keys are ignored.
#[derive(Deserialize)]
struct HfConfig {
    model_type: String,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default = "default_mlp_ratio")]
    mlp_ratio: f64,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    image_size: usize,
    patch_size: usize,
    #[serde(default = "default_channels")]
    num_channels: usize,
    #[serde(default = "default_true")]
    qkv_bias: bool,
    #[serde(default)]
    num_register_tokens: usize,
    #[serde(default)]
    use_swiglu_ffn: bool,
    #[serde(default = "default_act")]
    hidden_act: String,
}

fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_channels() -> usize {
    3
}
fn default_true() -> bool {
    true
}
fn default_act() -> String {
    "gelu".into()
}

/// Reads a `dinov2` / `dinov2_with_registers` config.
pub(crate) fn config_from_hf(value: serde_json::Value) -> std::result::Result<VitConfig, String> {
    let hf: HfConfig = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let antialias = hf.model_type == "dinov2_with_registers";
    if hf.use_swiglu_ffn {
        return Err("SwiGLU MLPs (ViT-g) are not supported; use ViT-S, B or L".into());
    }
    if hf.hidden_act != "gelu" {
        return Err(format!(
            "hidden_act `{}` is not supported (DINOv2 uses exact `gelu`)",
            hf.hidden_act
        ));
    }
    // `as usize` saturates: a huge, negative or NaN ratio must not become
    // a width of usize::MAX (or 0) that the model then allocates.
    let mlp_width = hf.hidden_size as f64 * hf.mlp_ratio;
    if !(hf.mlp_ratio.is_finite() && mlp_width >= 1.0 && mlp_width <= (1u64 << 40) as f64) {
        return Err(format!(
            "mlp_ratio {} with hidden_size {} does not give a positive MLP width",
            hf.mlp_ratio, hf.hidden_size
        ));
    }
    Ok(VitConfig {
        family: Family::Dinov2,
        hidden_size: hf.hidden_size,
        num_hidden_layers: hf.num_hidden_layers,
        num_attention_heads: hf.num_attention_heads,
        intermediate_size: mlp_width as usize,
        layer_norm_eps: hf.layer_norm_eps,
        image_size: hf.image_size,
        patch_size: hf.patch_size,
        num_channels: hf.num_channels,
        qkv_bias: hf.qkv_bias,
        num_register_tokens: hf.num_register_tokens,
        pos_embed_resample: PosEmbedResample {
            antialias,
            offset: 0.0,
        },
        hidden_act: HiddenAct::Gelu,
        rope_theta: None,
    })
}

/// The `config.json` of a DINOv2 geometry; `None` for the torch-hub
/// no-register position-embedding rule, which the format cannot say.
pub(crate) fn config_to_hf(c: &VitConfig) -> Option<serde_json::Value> {
    if c.pos_embed_resample.offset != 0.0 {
        return None;
    }
    let (model_type, architecture) = if c.pos_embed_resample.antialias {
        ("dinov2_with_registers", "Dinov2WithRegistersModel")
    } else {
        ("dinov2", "Dinov2Model")
    };
    Some(serde_json::json!({
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "mlp_ratio": c.intermediate_size as f64 / c.hidden_size as f64,
        "layer_norm_eps": c.layer_norm_eps,
        "image_size": c.image_size,
        "patch_size": c.patch_size,
        "num_channels": c.num_channels,
        "qkv_bias": c.qkv_bias,
        "num_register_tokens": c.num_register_tokens,
        "hidden_act": "gelu",
        "use_swiglu_ffn": false,
        "layerscale_value": 1.0,
    }))
}

/// Infers the geometry of a torch-hub checkpoint from its tensor shapes
/// (the file carries no config).
pub fn infer_from_hub(src: &dyn TensorSource) -> Result<VitConfig> {
    let path = src.path().to_path_buf();
    let shape = |name: &str| {
        src.shape(name).ok_or_else(|| VitError::MissingTensor {
            path: path.clone(),
            name: name.to_string(),
        })
    };
    if src.contains("blocks.0.mlp.w12.weight") {
        return Err(VitError::Unsupported {
            path,
            message: "SwiGLU MLPs (ViT-g) are not supported; use ViT-S, B or L".into(),
        });
    }
    // Every shape comes from the file: check its rank before indexing it.
    let ranked = |name: &str, shape: Vec<usize>, layout: &str| -> Result<Vec<usize>> {
        if shape.len() == layout.split(',').count() {
            Ok(shape)
        } else {
            Err(VitError::Unsupported {
                path: path.clone(),
                message: format!(
                    "`{name}` has shape {shape:?}, expected a {}-D tensor [{layout}]",
                    layout.split(',').count()
                ),
            })
        }
    };
    let unsupported = |message: String| VitError::Unsupported {
        path: path.clone(),
        message,
    };
    let cls = ranked("cls_token", shape("cls_token")?, "1, 1, hidden")?;
    let hidden_size = cls[2];
    let patch = ranked(
        "patch_embed.proj.weight",
        shape("patch_embed.proj.weight")?,
        "hidden, channels, patch, patch",
    )?;
    let pos = ranked("pos_embed", shape("pos_embed")?, "1, 1 + grid^2, hidden")?;
    let fc1 = ranked(
        "blocks.0.mlp.fc1.weight",
        shape("blocks.0.mlp.fc1.weight")?,
        "mlp, hidden",
    )?;
    let num_register_tokens = match src.shape("register_tokens") {
        Some(s) => ranked("register_tokens", s, "1, registers, hidden")?[1],
        None => 0,
    };
    let num_hidden_layers = (0..)
        .take_while(|i| src.contains(&format!("blocks.{i}.norm1.weight")))
        .count();
    let grid = pos[1].saturating_sub(1).isqrt();
    if pos[1] == 0 || grid * grid + 1 != pos[1] || patch[2] != patch[3] {
        return Err(unsupported(format!(
            "pos_embed {pos:?} / patch_embed.proj.weight {patch:?} do not describe a square ViT"
        )));
    }
    if !hidden_size.is_multiple_of(64) || hidden_size == 0 {
        return Err(unsupported(format!(
            "cls_token width {hidden_size} is not a positive multiple of DINOv2's 64-wide heads"
        )));
    }
    let image_size = grid.checked_mul(patch[2]).ok_or_else(|| {
        unsupported(format!(
            "a {grid}-patch grid of {} pixels overflows",
            patch[2]
        ))
    })?;
    let cfg = VitConfig {
        family: Family::Dinov2,
        hidden_size,
        num_hidden_layers,
        // Every DINOv2 uses 64-wide heads.
        num_attention_heads: hidden_size / 64,
        intermediate_size: fc1[0],
        layer_norm_eps: 1e-6,
        image_size,
        patch_size: patch[2],
        num_channels: patch[1],
        qkv_bias: src.contains("blocks.0.attn.qkv.bias"),
        num_register_tokens,
        // hubconf: register models interpolate with antialias and no
        // offset, the original ones without antialias and offset 0.1.
        pos_embed_resample: if num_register_tokens > 0 {
            PosEmbedResample {
                antialias: true,
                offset: 0.0,
            }
        } else {
            PosEmbedResample {
                antialias: false,
                offset: 0.1,
            }
        },
        hidden_act: HiddenAct::Gelu,
        rope_theta: None,
    };
    cfg.validate().map_err(|message| VitError::Unsupported {
        path: src.path().to_path_buf(),
        message,
    })?;
    Ok(cfg)
}

/// Reads a DINOv2 state dict in either key layout.
pub(crate) fn parts<B: Backend>(
    config: &VitConfig,
    src: &dyn TensorSource,
    layout: KeyLayout,
    device: &B::Device,
) -> Result<Parts<B>> {
    let d = config.hidden_size;
    let c = config.num_channels;
    let p = config.patch_size;
    let g = config.native_grid();
    let r = config.num_register_tokens;
    let m = config.intermediate_size;
    let hf = layout == KeyLayout::HuggingFace;
    // Models saved from a task head (e.g. `Dinov2ForImageClassification`)
    // nest the backbone under `dinov2.`.
    let prefix = if hf
        && !src.contains("embeddings.cls_token")
        && src.contains("dinov2.embeddings.cls_token")
    {
        "dinov2."
    } else {
        ""
    };
    let w = Loader::<B>::new(config, src, prefix, device);
    let name = |hf_name: &str, hub_name: &str| {
        if hf {
            hf_name.to_string()
        } else {
            hub_name.to_string()
        }
    };
    let cls_token = w.tensor3(&name("embeddings.cls_token", "cls_token"), [1, 1, d])?;
    let register_tokens = if r > 0 {
        Some(w.tensor3(
            &name("embeddings.register_tokens", "register_tokens"),
            [1, r, d],
        )?)
    } else {
        None
    };
    let mut position_embeddings = w.host(
        &name("embeddings.position_embeddings", "pos_embed"),
        &[1, 1 + g * g, d],
    )?;
    position_embeddings.shape = vec![1 + g * g, d];
    let proj = name("embeddings.patch_embeddings.projection", "patch_embed.proj");
    let patch_embed = w.linear(
        w.host(&format!("{proj}.weight"), &[d, c, p, p])?,
        Some(w.host(&format!("{proj}.bias"), &[d])?),
    );

    let mut blocks = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let blk = |hf_name: &str, hub_name: &str| {
            if hf {
                format!("encoder.layer.{i}.{hf_name}")
            } else {
                format!("blocks.{i}.{hub_name}")
            }
        };
        let qkv = if hf {
            let part = |p: &str| blk(&format!("attention.attention.{p}"), "");
            w.fused_qkv([&part("query"), &part("key"), &part("value")], d)?
        } else {
            w.dense(&blk("", "attn.qkv"), 3 * d, d, config.qkv_bias)?
        };
        blocks.push(Block {
            norm1: w.norm(&blk("norm1", "norm1"), d)?,
            qkv,
            proj: w.dense(&blk("attention.output.dense", "attn.proj"), d, d, true)?,
            ls1: w.vector(&blk("layer_scale1.lambda1", "ls1.gamma"), d)?,
            norm2: w.norm(&blk("norm2", "norm2"), d)?,
            fc1: w.dense(&blk("mlp.fc1", "mlp.fc1"), m, d, true)?,
            fc2: w.dense(&blk("mlp.fc2", "mlp.fc2"), d, m, true)?,
            ls2: w.vector(&blk("layer_scale2.lambda1", "ls2.gamma"), d)?,
            heads: config.num_attention_heads,
            act: HiddenAct::Gelu,
        });
    }
    Ok(Parts {
        cls_token: Some(cls_token),
        register_tokens,
        position_embeddings: Some(position_embeddings),
        patch_embed,
        pre_norm: None,
        blocks,
        norm: Some(w.norm(&name("layernorm", "norm"), d)?),
    })
}

/// Every tensor of a Hugging Face DINOv2 state dict with its shape.
pub(crate) fn tensor_shapes(config: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let (d, m, c, p) = (
        config.hidden_size,
        config.intermediate_size,
        config.num_channels,
        config.patch_size,
    );
    let g = config.native_grid();
    let mut out = vec![
        ("embeddings.cls_token".into(), vec![1, 1, d]),
        ("embeddings.mask_token".into(), vec![1, d]),
        (
            "embeddings.position_embeddings".into(),
            vec![1, 1 + g * g, d],
        ),
        (
            "embeddings.patch_embeddings.projection.weight".into(),
            vec![d, c, p, p],
        ),
        (
            "embeddings.patch_embeddings.projection.bias".into(),
            vec![d],
        ),
        ("layernorm.weight".into(), vec![d]),
        ("layernorm.bias".into(), vec![d]),
    ];
    if config.num_register_tokens > 0 {
        out.push((
            "embeddings.register_tokens".into(),
            vec![1, config.num_register_tokens, d],
        ));
    }
    for i in 0..config.num_hidden_layers {
        let l = format!("encoder.layer.{i}");
        for (name, shape) in [
            ("norm1.weight", vec![d]),
            ("norm1.bias", vec![d]),
            ("attention.attention.query.weight", vec![d, d]),
            ("attention.attention.query.bias", vec![d]),
            ("attention.attention.key.weight", vec![d, d]),
            ("attention.attention.key.bias", vec![d]),
            ("attention.attention.value.weight", vec![d, d]),
            ("attention.attention.value.bias", vec![d]),
            ("attention.output.dense.weight", vec![d, d]),
            ("attention.output.dense.bias", vec![d]),
            ("layer_scale1.lambda1", vec![d]),
            ("norm2.weight", vec![d]),
            ("norm2.bias", vec![d]),
            ("mlp.fc1.weight", vec![m, d]),
            ("mlp.fc1.bias", vec![m]),
            ("mlp.fc2.weight", vec![d, m]),
            ("mlp.fc2.bias", vec![d]),
            ("layer_scale2.lambda1", vec![d]),
        ] {
            out.push((format!("{l}.{name}"), shape));
        }
    }
    out
}

//! DINOv2 geometry, read from a Hugging Face `config.json` or inferred from
//! torch-hub weights.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, VitError};
use crate::weights::TensorSource;

/// How the stored position embeddings are resampled to another patch grid.
///
/// The implementations disagree: Hugging Face's `Dinov2Model` uses plain
/// bicubic, `Dinov2WithRegistersModel` and the torch-hub register models use
/// antialiased bicubic, and the torch-hub models without registers ask torch for
/// a scale factor of `(grid + 0.1) / native` instead of a target size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PosEmbedResample {
    pub antialias: bool,
    pub offset: f64,
}

/// The geometry of a DINOv2 ViT (S, B, L with GELU MLPs), with or without registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dinov2Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Width of the MLP's hidden layer (`mlp_ratio * hidden_size`).
    pub intermediate_size: usize,
    pub layer_norm_eps: f64,
    /// The native input size; position embeddings are stored for its patch grid.
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub qkv_bias: bool,
    pub num_register_tokens: usize,
    pub pos_embed_resample: PosEmbedResample,
}

/// The fields of a Hugging Face `config.json` we read; unknown keys are ignored.
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

impl Dinov2Config {
    /// DINOv2 ViT-B/14 with 4 registers (`facebook/dinov2-with-registers-base`).
    pub fn vit_b14_reg() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            layer_norm_eps: 1e-6,
            image_size: 518,
            patch_size: 14,
            num_channels: 3,
            qkv_bias: true,
            num_register_tokens: 4,
            pos_embed_resample: PosEmbedResample {
                antialias: true,
                offset: 0.0,
            },
        }
    }

    /// Reads a Hugging Face `config.json` (`dinov2` or `dinov2_with_registers`).
    pub fn from_hf_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| VitError::io(path, e))?;
        Self::from_hf_str(&text).map_err(|message| VitError::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses the text of a Hugging Face `config.json`.
    pub fn from_hf_str(text: &str) -> std::result::Result<Self, String> {
        let hf: HfConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let antialias = match hf.model_type.as_str() {
            "dinov2" => false,
            "dinov2_with_registers" => true,
            other => {
                return Err(format!(
                    "model_type `{other}` is not a DINOv2 (expected `dinov2` or `dinov2_with_registers`)"
                ));
            }
        };
        if hf.use_swiglu_ffn {
            return Err("SwiGLU MLPs (ViT-g) are not supported; use ViT-S, B or L".into());
        }
        if hf.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act `{}` is not supported (DINOv2 uses exact `gelu`)",
                hf.hidden_act
            ));
        }
        let cfg = Self {
            hidden_size: hf.hidden_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            intermediate_size: (hf.hidden_size as f64 * hf.mlp_ratio) as usize,
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
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Infers the geometry of a torch-hub checkpoint from its tensor shapes
    /// (the file carries no config).
    pub fn infer_from_hub(src: &dyn TensorSource) -> Result<Self> {
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
        let cls = shape("cls_token")?;
        let hidden_size = *cls.last().unwrap_or(&0);
        let patch = shape("patch_embed.proj.weight")?;
        let pos = shape("pos_embed")?;
        let fc1 = shape("blocks.0.mlp.fc1.weight")?;
        let num_register_tokens = src.shape("register_tokens").map_or(0, |s| s[1]);
        let num_hidden_layers = (0..)
            .take_while(|i| src.contains(&format!("blocks.{i}.norm1.weight")))
            .count();
        let grid = ((pos[1] - 1) as f64).sqrt().round() as usize;
        if grid * grid + 1 != pos[1] || patch.len() != 4 {
            return Err(VitError::Unsupported {
                path,
                message: format!(
                    "pos_embed {pos:?} / patch_embed.proj.weight {patch:?} do not describe a square ViT"
                ),
            });
        }
        let cfg = Self {
            hidden_size,
            num_hidden_layers,
            // Every DINOv2 uses 64-wide heads.
            num_attention_heads: hidden_size / 64,
            intermediate_size: fc1[0],
            layer_norm_eps: 1e-6,
            image_size: grid * patch[2],
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
        };
        cfg.validate().map_err(|message| VitError::Unsupported {
            path: src.path().to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.num_hidden_layers == 0 || self.hidden_size == 0 || self.patch_size == 0 {
            return Err("the model has no layers, no width or no patch size".into());
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Side of the native patch grid the position embeddings are stored for.
    pub fn native_grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens before the patches: CLS and the registers.
    pub fn prefix_tokens(&self) -> usize {
        1 + self.num_register_tokens
    }
}

//! DINOv2 geometry, read from a Hugging Face `config.json` or inferred from
//! torch-hub weights.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, VitError};
use crate::weights::TensorSource;

/// The largest `config.json` read (real ones are about 1 KB): a bigger file
/// is refused rather than read whole into memory.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// More blocks than any ViT has; a config claiming more is refused before
/// anything is allocated per block.
pub const MAX_LAYERS: usize = 1024;

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
        use std::io::Read;
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| VitError::io(path, e))?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| VitError::io(path, e))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(VitError::Config {
                path: path.to_path_buf(),
                message: format!(
                    "larger than {MAX_CONFIG_BYTES} bytes; a config.json is about 1 KB"
                ),
            });
        }
        Self::from_hf_str(&text).map_err(|message| VitError::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    /// This geometry as a Hugging Face `config.json` ([`Self::from_hf_str`]
    /// reads it back to the same config). `None` for the one geometry the
    /// format cannot say: the torch-hub no-register position-embedding rule
    /// (`pos_embed_resample.offset` not 0).
    pub fn to_hf_json(&self) -> Option<String> {
        if self.pos_embed_resample.offset != 0.0 {
            return None;
        }
        let (model_type, architecture) = if self.pos_embed_resample.antialias {
            ("dinov2_with_registers", "Dinov2WithRegistersModel")
        } else {
            ("dinov2", "Dinov2Model")
        };
        let json = serde_json::json!({
            "architectures": [architecture],
            "model_type": model_type,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "mlp_ratio": self.intermediate_size as f64 / self.hidden_size as f64,
            "layer_norm_eps": self.layer_norm_eps,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_channels": self.num_channels,
            "qkv_bias": self.qkv_bias,
            "num_register_tokens": self.num_register_tokens,
            "hidden_act": "gelu",
            "use_swiglu_ffn": false,
            "layerscale_value": 1.0,
        });
        serde_json::to_string_pretty(&json).ok()
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
        // `as usize` saturates: a huge, negative or NaN ratio must not become
        // a width of usize::MAX (or 0) that the model then allocates.
        let mlp_width = hf.hidden_size as f64 * hf.mlp_ratio;
        if !(hf.mlp_ratio.is_finite() && mlp_width >= 1.0 && mlp_width <= (1u64 << 40) as f64) {
            return Err(format!(
                "mlp_ratio {} with hidden_size {} does not give a positive MLP width",
                hf.mlp_ratio, hf.hidden_size
            ));
        }
        let cfg = Self {
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
        let cfg = Self {
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
        };
        cfg.validate().map_err(|message| VitError::Unsupported {
            path: src.path().to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    /// Checks that the geometry describes a model that can be built: no zero
    /// size or head count, sizes that divide, and every tensor size the model
    /// computes from them representable (checked arithmetic), so nothing
    /// later divides by zero, overflows or allocates from a bogus number.
    /// Configs read from files are checked by their readers; call this on
    /// one deserialised from elsewhere (e.g. a cache manifest).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let zero: Vec<&str> = [
            ("num_hidden_layers", self.num_hidden_layers),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("num_channels", self.num_channels),
        ]
        .into_iter()
        .filter(|(_, v)| *v == 0)
        .map(|(name, _)| name)
        .collect();
        if !zero.is_empty() {
            return Err(format!("{} must be positive", zero.join(", ")));
        }
        if self.num_hidden_layers > MAX_LAYERS {
            return Err(format!(
                "num_hidden_layers {} is more than the {MAX_LAYERS} this reader accepts",
                self.num_hidden_layers
            ));
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
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return Err(format!(
                "layer_norm_eps {} is not a non-negative number",
                self.layer_norm_eps
            ));
        }
        if !self.pos_embed_resample.offset.is_finite() {
            return Err("the position embedding resampling offset is not finite".into());
        }
        let (d, m) = (self.hidden_size, self.intermediate_size);
        let g = self.image_size / self.patch_size;
        let sizes = [
            // position embeddings [1, 1 + g^2, d] plus the registers
            g.checked_mul(g)
                .and_then(|t| t.checked_add(1 + self.num_register_tokens))
                .and_then(|t| t.checked_mul(d)),
            // fused qkv [3d, d]
            d.checked_mul(d).and_then(|x| x.checked_mul(3)),
            // patch embedding [d, c, p, p]
            d.checked_mul(self.num_channels)
                .and_then(|x| x.checked_mul(self.patch_size))
                .and_then(|x| x.checked_mul(self.patch_size)),
            // MLP [m, d]
            m.checked_mul(d),
        ];
        if sizes
            .iter()
            .any(|s| s.is_none_or(|n| n > isize::MAX as usize / 4))
        {
            return Err(format!(
                "hidden_size {d}, intermediate_size {m}, a {g}x{g} patch grid and \
                 {} channels give tensors too large to address",
                self.num_channels
            ));
        }
        Ok(())
    }

    /// Width of an attention head (0 for a config [`Self::validate`] refuses).
    pub fn head_dim(&self) -> usize {
        self.hidden_size
            .checked_div(self.num_attention_heads)
            .unwrap_or(0)
    }

    /// Side of the native patch grid the position embeddings are stored for
    /// (0 for a config [`Self::validate`] refuses).
    pub fn native_grid(&self) -> usize {
        self.image_size.checked_div(self.patch_size).unwrap_or(0)
    }

    /// Tokens before the patches: CLS and the registers.
    pub fn prefix_tokens(&self) -> usize {
        1 + self.num_register_tokens
    }
}

//! ViT geometry of every supported family, read from a Hugging Face
//! `config.json` (each family's file parses its own fields) or inferred from
//! torch-hub weights (DINOv2).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, VitError};

/// The largest `config.json` read (real ones are a few KB): a bigger file
/// is refused rather than read whole into memory.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// More blocks than any ViT has; a config claiming more is refused before
/// anything is allocated per block.
pub const MAX_LAYERS: usize = 1024;

/// How the stored position embeddings are resampled to another patch grid.
///
/// The implementations disagree: Hugging Face's `Dinov2Model`, CLIP and
/// SigLIP use plain bicubic, `Dinov2WithRegistersModel` and the torch-hub
/// register models use antialiased bicubic, and the torch-hub models without
/// registers ask torch for a scale factor of `(grid + 0.1) / native` instead
/// of a target size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PosEmbedResample {
    pub antialias: bool,
    pub offset: f64,
}

impl PosEmbedResample {
    /// Plain bicubic to the target size (`align_corners=False`).
    pub const BICUBIC: Self = Self {
        antialias: false,
        offset: 0.0,
    };
}

/// Which family a ViT belongs to: how its embeddings are built, which
/// tensors its checkpoints hold and what its `last_hidden_state` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// DINOv2, with or without registers (`Dinov2Model`,
    /// `Dinov2WithRegistersModel`, torch-hub files).
    #[default]
    Dinov2,
    /// CLIP's vision tower (`CLIPVisionModel`, or the vision half of a
    /// `CLIPModel`).
    Clip,
    /// SigLIP and SigLIP 2 at fixed resolution (`SiglipVisionModel`, or the
    /// vision half of a `SiglipModel`): no CLS token.
    Siglip,
    /// DINOv3 ViTs (`DINOv3ViTModel`): RoPE instead of position embeddings.
    Dinov3,
}

impl Family {
    /// The name reports print.
    pub fn name(self) -> &'static str {
        match self {
            Family::Dinov2 => "dinov2",
            Family::Clip => "clip",
            Family::Siglip => "siglip",
            Family::Dinov3 => "dinov3",
        }
    }

    /// Whether the family's token sequence starts with a CLS token.
    pub fn has_cls_token(self) -> bool {
        !matches!(self, Family::Siglip)
    }
}

/// The MLP's nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// The exact (erf) GELU: DINOv2, DINOv3, some CLIPs.
    #[default]
    Gelu,
    /// `x * sigmoid(1.702 x)`: OpenAI's CLIPs.
    QuickGelu,
    /// The tanh approximation of GELU: SigLIP (`gelu_pytorch_tanh`).
    GeluTanh,
}

impl HiddenAct {
    /// Reads a transformers `hidden_act` name.
    pub fn from_hf(name: &str) -> std::result::Result<Self, String> {
        match name {
            "gelu" => Ok(Self::Gelu),
            "quick_gelu" => Ok(Self::QuickGelu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Self::GeluTanh),
            other => Err(format!(
                "hidden_act `{other}` is not supported (gelu, quick_gelu or gelu_pytorch_tanh)"
            )),
        }
    }

    /// The transformers `hidden_act` name.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Gelu => "gelu",
            Self::QuickGelu => "quick_gelu",
            Self::GeluTanh => "gelu_pytorch_tanh",
        }
    }
}

/// The geometry of a ViT of any supported [`Family`].
///
/// Serialised into cache manifests; the fields added with the other
/// families default to DINOv2's, so manifests written before read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    #[serde(default)]
    pub family: Family,
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
    /// Whether the attention projections carry biases.
    pub qkv_bias: bool,
    pub num_register_tokens: usize,
    /// How learned position embeddings are resampled to another grid
    /// (unused by RoPE models).
    pub pos_embed_resample: PosEmbedResample,
    #[serde(default)]
    pub hidden_act: HiddenAct,
    /// DINOv3's RoPE base period; `None` for learned position embeddings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
}

/// Reads a whole small text file, refusing one over `MAX_CONFIG_BYTES`
/// before reading it.
pub(crate) fn read_small_text(path: &Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| VitError::io(path, e))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| VitError::io(path, e))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(VitError::Config {
            path: path.to_path_buf(),
            message: format!("larger than {MAX_CONFIG_BYTES} bytes; a config is a few KB"),
        });
    }
    Ok(text)
}

impl VitConfig {
    /// DINOv2 ViT-B/14 with 4 registers (`facebook/dinov2-with-registers-base`).
    pub fn vit_b14_reg() -> Self {
        Self {
            family: Family::Dinov2,
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
            hidden_act: HiddenAct::Gelu,
            rope_theta: None,
        }
    }

    /// Reads a Hugging Face `config.json` of any supported family.
    pub fn from_hf_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_small_text(path)?;
        Self::from_hf_str(&text).map_err(|message| VitError::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses the text of a Hugging Face `config.json`, dispatching on its
    /// `model_type`. A multimodal config (`clip`, `siglip`) is read through
    /// its `vision_config`.
    pub fn from_hf_str(text: &str) -> std::result::Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or("no `model_type` string")?
            .to_string();
        let vision = || -> std::result::Result<serde_json::Value, String> {
            value
                .get("vision_config")
                .cloned()
                .ok_or_else(|| format!("a `{model_type}` config without `vision_config`"))
        };
        let cfg = match model_type.as_str() {
            "dinov2" | "dinov2_with_registers" => crate::dinov2::config_from_hf(value.clone())?,
            "clip_vision_model" => crate::clip::config_from_hf(value.clone())?,
            "clip" => crate::clip::config_from_hf(vision()?)?,
            "siglip_vision_model" => crate::siglip::config_from_hf(value.clone())?,
            "siglip" => crate::siglip::config_from_hf(vision()?)?,
            "dinov3_vit" => crate::dinov3::config_from_hf(value.clone())?,
            "siglip2" | "siglip2_vision_model" => {
                return Err(
                    "SigLIP 2 NaFlex (variable resolution) models are not supported; \
                     use a fixed-resolution SigLIP 2 such as google/siglip2-base-patch16-224"
                        .into(),
                );
            }
            other => {
                return Err(format!(
                    "model_type `{other}` is not a supported ViT (dinov2, dinov2_with_registers, \
                     clip, clip_vision_model, siglip, siglip_vision_model, dinov3_vit)"
                ));
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// This geometry as a Hugging Face `config.json` ([`Self::from_hf_str`]
    /// reads it back to the same config). `None` for the one geometry the
    /// format cannot say: the torch-hub no-register position-embedding rule
    /// (`pos_embed_resample.offset` not 0).
    pub fn to_hf_json(&self) -> Option<String> {
        let json = match self.family {
            Family::Dinov2 => crate::dinov2::config_to_hf(self)?,
            Family::Clip => crate::clip::config_to_hf(self),
            Family::Siglip => crate::siglip::config_to_hf(self),
            Family::Dinov3 => crate::dinov3::config_to_hf(self),
        };
        serde_json::to_string_pretty(&json).ok()
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
        if let Some(theta) = self.rope_theta {
            if !(theta.is_finite() && theta > 0.0) {
                return Err(format!("rope_theta {theta} is not a positive number"));
            }
            if !self.head_dim().is_multiple_of(4) {
                return Err(format!(
                    "RoPE needs a head width divisible by 4, not {}",
                    self.head_dim()
                ));
            }
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

    /// Tokens before the patches: the CLS token (where the family has one)
    /// and the registers.
    pub fn prefix_tokens(&self) -> usize {
        usize::from(self.family.has_cls_token()) + self.num_register_tokens
    }

    /// Tokens of an image of `side x side` pixels: the prefix and the patches.
    pub fn tokens_for(&self, side: usize) -> usize {
        let g = side / self.patch_size.max(1);
        self.prefix_tokens() + g * g
    }
}

/// A field of a config JSON object, with the reader's default when absent.
pub(crate) fn field<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    name: &str,
    default: Option<T>,
) -> std::result::Result<T, String> {
    match value.get(name) {
        Some(v) if !v.is_null() => {
            serde_json::from_value(v.clone()).map_err(|e| format!("`{name}`: {e}"))
        }
        _ => default.ok_or_else(|| format!("no `{name}`")),
    }
}

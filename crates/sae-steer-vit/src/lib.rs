//! Vision transformers for sae-steer: the backbones whose features the SAEs
//! read and edit.
//!
//! - [`Vit`]: one model type for DINOv2, CLIP, SigLIP / SigLIP 2 and
//!   DINOv3, generic over burn's `Backend`, with layer taps
//!   ([`Vit::forward_until`], [`Vit::forward_from`]) so an edit at one
//!   layer only re-runs what follows it. Each family's checkpoint names and
//!   config live in its own module file; [`VitConfig::family`] says which.
//! - [`Vit::load`]: from a Hugging Face folder, a torch-hub `.pth` (DINOv2)
//!   or a hub id.
//! - [`Preprocess`]: each family's image pipeline (resize rule, crop,
//!   mean/std), read from a `preprocessor_config.json` where there is one.
//! - [`decode_image`]: the one bounded image decoder (sizes checked before
//!   decoding, truncated files refused), behind [`open_image`].

mod clip;
mod config;
mod decode;
mod dinov2;
mod dinov3;
mod error;
mod kernels;
pub mod load;
mod preprocess;
#[cfg(feature = "random")]
mod random;
pub mod resample;
mod siglip;
mod vit;
pub mod weights;

pub use config::{Family, HiddenAct, PosEmbedResample, VitConfig};
pub use decode::{DecodeError, DecodeErrorKind, ImageLimits, decode_image};
pub use dinov2::{KeyLayout, infer_from_hub};
pub use error::{Result, VitError};
pub use preprocess::{
    CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, PixelValues, Preprocess, Resample,
    ResizeRule, open_image, preprocess_path,
};
#[cfg(feature = "random")]
pub use random::write_random_hf_folder;
pub use vit::{LayerTaps, Tokens, Vit};
pub use weights::{
    HostTensor, SafetensorsFile, TensorSource, TorchFile, canonical_safetensors, write_atomic,
    write_safetensors,
};

/// Every tensor of a Hugging Face state dict of `config`'s family with its
/// shape (what [`write_random_hf_folder`] writes).
pub fn hf_tensor_shapes(config: &VitConfig) -> Vec<(String, Vec<usize>)> {
    match config.family {
        Family::Dinov2 => dinov2::tensor_shapes(config),
        Family::Clip => clip::tensor_shapes(config),
        Family::Siglip => siglip::tensor_shapes(config),
        Family::Dinov3 => dinov3::tensor_shapes(config),
    }
}

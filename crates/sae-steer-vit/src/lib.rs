//! DINOv2 for sae-steer: the backbone whose features the SAEs read and edit.
//!
//! - [`Dinov2`]: the ViT, generic over burn's `Backend`, with layer taps
//!   ([`Dinov2::forward_until`], [`Dinov2::forward_from`]) so an edit at one
//!   layer only re-runs what follows it.
//! - [`load`]: from a Hugging Face folder, a torch-hub `.pth` or a hub id.
//! - [`Preprocess`]: the reference's image pipeline.
//! - [`decode_image`]: the one bounded image decoder (sizes checked before
//!   decoding, truncated files refused), behind [`open_image`].

mod config;
mod decode;
mod dinov2;
mod error;
mod kernels;
pub mod load;
mod preprocess;
pub mod resample;
pub mod weights;

pub use config::{Dinov2Config, PosEmbedResample};
pub use decode::{DecodeError, DecodeErrorKind, ImageLimits, decode_image};
#[cfg(feature = "random")]
pub use dinov2::write_random_hf_folder;
pub use dinov2::{Dinov2, KeyLayout, LayerTaps, Tokens, hf_tensor_shapes};
pub use error::{Result, VitError};
pub use preprocess::{
    IMAGENET_MEAN, IMAGENET_STD, PixelValues, Preprocess, open_image, preprocess_path,
};
pub use weights::{
    HostTensor, SafetensorsFile, TensorSource, TorchFile, canonical_safetensors, write_atomic,
    write_safetensors,
};

//! Sparse autoencoders over ViT activations: reading saev checkpoints,
//! our own safetensors format, batched encode/decode on any burn backend,
//! and steering edits that keep the SAE's error term (reference facts sections 4 and 6).

pub mod checkpoint;
pub mod config;
pub mod edit;
pub mod error;
pub mod hub;
pub mod load;
pub mod sae;
pub mod saelens;
pub mod saev;
pub mod stats;
pub mod train;

pub use checkpoint::{FORMAT_TAG, Normalization, SaeWeights, convert_saev};
pub use config::{Activation, EncodeRule, SaeConfig};
pub use edit::{Edit, EditOp, Rows, Shift, slider_value};
pub use error::{Result, SaeError};
pub use hub::{DEFAULT_SAE_FILE, PUBLISHED_DINOV2_SAE, SaeSource, resolve_sae};
pub use load::{NormalizationSource, SaeFile};
pub use sae::{CLAMP, DeviceNorm, Sae};
pub use saev::{SaevHeader, parse_saev_header, read_saev_header};
pub use stats::{
    DEFAULT_TOP_K, Exemplar, FREQUENT, FeatureStats, NO_IMAGE, STATS_FORMAT_TAG, StatsInfo,
};
pub use train::{
    ActivationShards, NormalizationPlan, SaeSpec, TrainConfig, TrainReport, Trainer, TrainingData,
    train,
};

//! Interactive steering (reference facts sections 6 and 9): a web app that shows an
//! ADE20K image, its true labels and the linear probe's prediction, lists
//! the SAE latents of the patches a user clicks, and shows the segmentation
//! after setting latents with sliders; and the same steering as static
//! figures.
//!
//! - [`Steering`]: ViT up to the SAE's layer, latents of patches, the
//!   probe's patch labels after `{latent: slider}` edits.
//! - [`Session`]: [`Steering`] plus a cache of images at the SAE's layer, so
//!   moving a slider re-runs only the blocks after it.
//! - [`serve`]: the HTTP server (embedded page + JSON API), bounded against
//!   hostile pages and clients ([`ServerLimits`], [`UploadLimits`], a Host
//!   check; see [`server`]).
//! - [`figures`]: image | true labels | prediction | prediction after the edit.
//! - [`setup`]: loading ViT, SAE, probe, statistics and ADE20K from paths.
//! - [`toy`]: a tiny random setup (synthetic data, random SAE and probe) for
//!   tests, benchmarks and trying the page without downloads.

mod assets;
mod error;
pub mod figures;
pub mod images;
pub mod palette;
pub mod server;
pub mod session;
pub mod setup;
pub mod steering;
pub mod toy;

pub use error::{AppError, Result};
pub use images::{ImageKey, ImageStore, ReferenceSet, ShownImage, UploadLimits};
pub use server::{GUIDED_EXAMPLES, GuidedExample, ServeOptions, ServerHandle, ServerLimits, serve};
pub use session::{DEFAULT_CACHED_IMAGES, Session, Steered};
pub use steering::{
    AppliedEdit, LatentInfo, LatentReport, SLIDER_MAX, SliderEdit, SliderUnit, Steering, UnitSource,
};

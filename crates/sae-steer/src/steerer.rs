//! The steering core: ViT up to layer `L`, an SAE there, and a probe after
//! the rest of the network (reference facts sections 6 and 8).
//!
//! Everything that steers is built on [`Steerer`]: quantify, the figures and
//! the web app. An image is run once up to the SAE's layer
//! ([`Steerer::tokens`]); an edit changes only its patch tokens
//! ([`Steerer::steer_tokens`], rank-1 form with the SAE's error term kept);
//! [`Steerer::segment`] runs the blocks after `L`, the final norm and the
//! probe. Every call takes a batch.
//!
//! ```no_run
//! use sae_steer::{Vit, Edit, NormalizationSource, Probe, Sae, Steerer, backend::Cpu, preprocess_path};
//! # fn main() -> sae_steer::Result<()> {
//! let device = Default::default();
//! let vit = Vit::<Cpu>::load("facebook/dinov2-with-registers-base", &device)?;
//! let (sae, _) = Sae::load("sae.safetensors", &device)?.resolve(NormalizationSource::Checkpoint)?;
//! let probe = Probe::load("probes/lr_0_001__wd_0_1", &device)?;
//! let steerer = Steerer::new(vit, sae, probe, 10)?;
//! let pixels = preprocess_path("photo.jpg")?;
//! let labels = steerer.steer_and_segment(&pixels, &Edit::new().set(7235, -12.0))?;
//! assert_eq!(labels.len(), 256); // one label per patch of the 16 x 16 grid
//! # Ok(()) }
//! ```

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use sae_steer_probe::Probe;
use sae_steer_sae::{Edit, Sae};
use sae_steer_vit::{PixelValues, Vit};

use crate::error::{Error, Result};

/// Which probe outputs a prediction may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    /// Every output, label 0 ("other") included, as validation counts them.
    All,
    /// Classes only: label 0 is never predicted, as quantify counts changes
    /// (reference facts section 8).
    Classes,
}

impl Labels {
    fn first(self) -> usize {
        match self {
            Self::All => 0,
            Self::Classes => 1,
        }
    }
}

/// A ViT, an SAE reading block `layer`'s output, and a probe on the final
/// patch tokens.
pub struct Steerer<B: Backend> {
    vit: Vit<B>,
    sae: Sae<B>,
    probe: Probe<B>,
    layer: usize,
}

impl<B: Backend> Steerer<B> {
    /// Checks that the parts fit: the layer exists, and the SAE and the
    /// probe read the ViT's width.
    pub fn new(vit: Vit<B>, sae: Sae<B>, probe: Probe<B>, layer: usize) -> Result<Self> {
        let depth = vit.depth();
        if layer >= depth {
            return Err(Error::Layer { layer, depth });
        }
        let d = vit.config().hidden_size;
        for (what, got) in [("SAE", sae.d_model()), ("probe", probe.d_in())] {
            if got != d {
                return Err(Error::Width { what, got, vit: d });
            }
        }
        Ok(Self {
            vit,
            sae,
            probe,
            layer,
        })
    }

    /// The 0-based block whose output the SAE reads and edits.
    pub fn layer(&self) -> usize {
        self.layer
    }

    pub fn vit(&self) -> &Vit<B> {
        &self.vit
    }

    pub fn sae(&self) -> &Sae<B> {
        &self.sae
    }

    pub fn probe(&self) -> &Probe<B> {
        &self.probe
    }

    pub fn device(&self) -> &B::Device {
        self.vit.device()
    }

    /// Tokens before the patches: CLS (where the family has one) and the registers.
    pub fn prefix(&self) -> usize {
        self.vit.config().prefix_tokens()
    }

    /// The residual stream after block `layer`, `[b, 3, H, W] -> [b, t, d]`.
    pub fn tokens(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        Ok(self.vit.forward_until(pixels, self.layer)?)
    }

    /// The patch tokens of `[b, t, d]` tokens, flattened to `[b * n, d]`.
    pub fn patches(&self, tokens: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, t, d] = tokens.dims();
        let p = self.prefix().min(t);
        tokens.slice([0..b, p..t, 0..d]).reshape([b * (t - p), d])
    }

    /// SAE latents of patches `[n, d]` (model units) -> `[n, s]`.
    pub fn encode(&self, patches: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        self.sae.check_input(&patches)?;
        Ok(self.sae.encode(self.sae.normalize(patches)))
    }

    /// The values of some latents only, `[n, d] -> [n, latents.len()]`:
    /// ReLU and JumpReLU latents from their own encoder columns, TopK ones
    /// from the full encoding (see [`Sae::encode_latents`]).
    pub fn encode_latents(&self, patches: Tensor<B, 2>, latents: &[usize]) -> Result<Tensor<B, 2>> {
        self.sae.check_input(&patches)?;
        if let Some(&latent) = latents.iter().find(|&&j| j >= self.sae.d_sae()) {
            return Err(Error::Latent {
                latent,
                d_sae: self.sae.d_sae(),
            });
        }
        let ids: Vec<i64> = latents.iter().map(|&j| j as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(
            TensorData::new(ids, [latents.len()]),
            &patches.device(),
        );
        Ok(self.sae.encode_latents(self.sae.normalize(patches), idx))
    }

    /// Patches `[n, d]` after `edit` (model units, error term kept).
    pub fn steer(&self, patches: Tensor<B, 2>, edit: &Edit) -> Result<Tensor<B, 2>> {
        Ok(edit.apply(&self.sae, patches)?)
    }

    /// Tokens `[b, t, d]` after `edit` on their patch tokens; CLS and
    /// registers pass unchanged (the SAE was trained on patches only). A
    /// row mask in `edit` indexes the `b * n` patches.
    pub fn steer_tokens(&self, tokens: Tensor<B, 3>, edit: &Edit) -> Result<Tensor<B, 3>> {
        self.map_patches(tokens, edit, |patches| self.steer(patches, edit))
    }

    /// [`Steerer::steer_tokens`] the reference's way: a latent edit goes
    /// through the full-width SAE encode/decode ([`Edit::apply_full`])
    /// instead of the rank-1 form. Slower; what the rank-1 form must match.
    pub fn steer_tokens_full(&self, tokens: Tensor<B, 3>, edit: &Edit) -> Result<Tensor<B, 3>> {
        self.map_patches(tokens, edit, |patches| {
            Ok(edit.apply_full(&self.sae, patches)?)
        })
    }

    /// `tokens` with their patch tokens `[b * n, d]` replaced by `f` of them.
    fn map_patches(
        &self,
        tokens: Tensor<B, 3>,
        edit: &Edit,
        f: impl FnOnce(Tensor<B, 2>) -> Result<Tensor<B, 2>>,
    ) -> Result<Tensor<B, 3>> {
        if edit.is_empty() {
            return Ok(tokens);
        }
        let [b, t, d] = tokens.dims();
        let p = self.prefix().min(t);
        let prefix = tokens.clone().slice([0..b, 0..p, 0..d]);
        let edited = f(self.patches(tokens))?;
        Ok(Tensor::cat(vec![prefix, edited.reshape([b, t - p, d])], 1))
    }

    /// One label per patch of layer-`L` tokens `[b, t, d]`, image-major
    /// (`b * n` labels): the blocks after `layer`, the final norm, the probe
    /// and its argmax over `labels`.
    pub fn segment(&self, tokens: Tensor<B, 3>, labels: Labels) -> Result<Vec<u8>> {
        let normed = self.vit.forward_from(self.layer, tokens)?;
        Ok(self.probe.predict(self.patches(normed), labels.first())?)
    }

    /// One image steered and segmented: its patch labels (every probe
    /// output) after `edit`. An empty edit gives the unedited segmentation.
    pub fn steer_and_segment(&self, image: &PixelValues, edit: &Edit) -> Result<Vec<u8>> {
        let tokens = self.tokens(image.to_tensor(self.device()))?;
        self.segment(self.steer_tokens(tokens, edit)?, Labels::All)
    }
}

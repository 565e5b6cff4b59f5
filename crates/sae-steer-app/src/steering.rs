//! The model side of the app: the facade's [`Steerer`] plus what the page
//! needs around it, the sliders' mapping to [`Edit`]s and the latents'
//! cards (reference facts sections 6 and 9).
//!
//! An image is run once up to layer `L` ([`Steering::encode_image`]); every
//! later request on it starts from those cached tokens, so moving a slider
//! costs the rank-1 edit, the blocks after `L`, the final norm and the probe.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use sae_steer::ade20k::NUM_CLASSES;
use sae_steer::{Edit, FeatureStats, Labels, PixelValues, Probe, Sae, Steerer, Vit};
use serde::Serialize;

use crate::error::{AppError, Result};

/// Sliders run from `-SLIDER_MAX` to `SLIDER_MAX` (the reference's range).
pub const SLIDER_MAX: f32 = 10.0;

/// Exemplars returned per latent.
pub const EXEMPLARS_SHOWN: usize = 6;

/// Most latents one request may list or edit.
pub const MAX_LATENTS: usize = 64;

/// One slider: latent `latent` set to `slider * unit` on every patch (the
/// app's mapping onto an [`Edit`], see [`Steering::predict`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliderEdit {
    pub latent: usize,
    pub slider: f32,
}

/// Where a latent's slider unit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitSource {
    /// `max_obs` of the feature statistics (reference facts section 6).
    Stats,
    /// No statistics (or the latent never fired on the reference set): the
    /// latent's largest value on the current image.
    Image,
    /// Neither: the latent is silent on the current image too, so the unit
    /// is 1 (the SAE's normalized units).
    Default,
}

/// A slider's unit: `value = slider * unit`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SliderUnit {
    pub unit: f32,
    pub source: UnitSource,
}

/// An edit as it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AppliedEdit {
    pub latent: usize,
    pub slider: f32,
    pub unit: f32,
    pub unit_source: UnitSource,
    /// The value the latent was set to on every patch (normalized units).
    pub value: f32,
}

/// One exemplar of a latent from the feature statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExemplarInfo {
    /// Position of the image in the statistics' reference set.
    pub image: u32,
    /// The latent's largest value on the image.
    pub value: f32,
    /// The latent's value on each patch, row-major over the grid.
    pub patches: Vec<f32>,
}

/// What the page shows on a latent's card.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatentInfo {
    pub latent: usize,
    /// Sum of the latent over the selected patches.
    pub activation: f32,
    /// Share of reference patches it fires on (with statistics).
    pub frequency: Option<f32>,
    /// Largest value over the reference set (with statistics).
    pub max_obs: Option<f32>,
    /// Mean over the reference patches it fires on (with statistics).
    pub mean_active: Option<f32>,
    /// Fires on at least 1% of the reference patches (hidden unless asked for).
    pub frequent: bool,
    #[serde(flatten)]
    pub unit: SliderUnit,
    /// The latent's value on every patch of the current image.
    pub image_patches: Vec<f32>,
    pub exemplars: Vec<ExemplarInfo>,
}

/// The top latents of a set of patches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatentReport {
    /// The selected patches, sorted, without repeats.
    pub patches: Vec<usize>,
    /// Top latents by summed activation, then the ones asked for by id.
    pub latents: Vec<LatentInfo>,
    /// Latents active on the selection.
    pub active: usize,
    /// Of those, how many are hidden as frequent.
    pub hidden_frequent: usize,
}

/// An image run up to the SAE's layer, with its unedited prediction.
#[derive(Debug, Clone)]
pub struct ImageState<B: Backend> {
    /// Residual stream after block `layer`, `[1, tokens, d]`.
    tokens: Tensor<B, 3>,
    /// CLS and registers come first.
    prefix: usize,
    /// Patch labels of the unedited image, row-major.
    pub prediction: Vec<u8>,
}

impl<B: Backend> ImageState<B> {
    /// Number of patches.
    pub fn n_patches(&self) -> usize {
        self.tokens.dims()[1] - self.prefix
    }

    /// Side of the (square) patch grid.
    pub fn grid(&self) -> usize {
        (self.n_patches() as f64).sqrt().round() as usize
    }

    /// The patch tokens, `[n, d]`.
    fn patches(&self) -> Tensor<B, 2> {
        let [_, t, d] = self.tokens.dims();
        self.tokens
            .clone()
            .slice([0..1, self.prefix..t, 0..d])
            .reshape([t - self.prefix, d])
    }
}

/// The steering core and (optionally) feature statistics.
pub struct Steering<B: Backend> {
    steerer: Steerer<B>,
    stats: Option<FeatureStats>,
}

impl<B: Backend> Steering<B> {
    /// Checks what the steering core does not: the probe maps to the 151
    /// ADE20K outputs, and the statistics describe this SAE's latents.
    pub fn new(steerer: Steerer<B>, stats: Option<FeatureStats>) -> Result<Self> {
        let probe = steerer.probe();
        if probe.n_classes() != NUM_CLASSES + 1 {
            return Err(AppError::Setup(format!(
                "the probe has {} outputs; an ADE20K probe has {} (classes 0..={NUM_CLASSES})",
                probe.n_classes(),
                NUM_CLASSES + 1
            )));
        }
        if let Some(stats) = &stats
            && stats.d_sae() != steerer.sae().d_sae()
        {
            return Err(AppError::Setup(format!(
                "the feature statistics describe {} latents, the SAE has {}",
                stats.d_sae(),
                steerer.sae().d_sae()
            )));
        }
        Ok(Self { steerer, stats })
    }

    /// The 0-based block whose output the SAE reads and edits.
    pub fn layer(&self) -> usize {
        self.steerer.layer()
    }

    pub fn d_sae(&self) -> usize {
        self.sae().d_sae()
    }

    pub fn stats(&self) -> Option<&FeatureStats> {
        self.stats.as_ref()
    }

    pub fn steerer(&self) -> &Steerer<B> {
        &self.steerer
    }

    pub fn vit(&self) -> &Vit<B> {
        self.steerer.vit()
    }

    pub fn sae(&self) -> &Sae<B> {
        self.steerer.sae()
    }

    pub fn probe(&self) -> &Probe<B> {
        self.steerer.probe()
    }

    /// Runs the ViT up to the SAE's layer and predicts the unedited labels.
    pub fn encode_image(&self, pixels: &PixelValues) -> Result<ImageState<B>> {
        let tokens = self
            .steerer
            .tokens(pixels.to_tensor(self.steerer.device()))?;
        let prediction = self.steerer.segment(tokens.clone(), Labels::All)?;
        Ok(ImageState {
            tokens,
            prefix: self.steerer.prefix(),
            prediction,
        })
    }

    /// Checks a latent id.
    pub fn check_latent(&self, latent: usize) -> Result<()> {
        if latent >= self.d_sae() {
            return Err(AppError::BadRequest(format!(
                "latent {latent} does not exist: the SAE has latents 0..={}",
                self.d_sae().saturating_sub(1)
            )));
        }
        Ok(())
    }

    /// The slider unit of a latent given its largest value on the current image.
    fn unit(&self, latent: usize, image_max: f32) -> SliderUnit {
        if let Some(stats) = &self.stats {
            let m = stats.max_obs(latent);
            if m.is_finite() && m > 0.0 {
                return SliderUnit {
                    unit: m,
                    source: UnitSource::Stats,
                };
            }
        }
        if image_max.is_finite() && image_max > 0.0 {
            SliderUnit {
                unit: image_max,
                source: UnitSource::Image,
            }
        } else {
            SliderUnit {
                unit: 1.0,
                source: UnitSource::Default,
            }
        }
    }

    /// Largest value of each latent over the image's patches.
    fn image_max(&self, state: &ImageState<B>, latents: &[usize]) -> Result<Vec<f32>> {
        if latents.is_empty() {
            return Ok(Vec::new());
        }
        host(
            self.steerer
                .encode_latents(state.patches(), latents)?
                .max_dim(0),
        )
    }

    /// The slider units of the latents on this image.
    pub fn slider_units(
        &self,
        state: &ImageState<B>,
        latents: &[usize],
    ) -> Result<Vec<SliderUnit>> {
        for &j in latents {
            self.check_latent(j)?;
        }
        let needs_image = latents.iter().any(|&j| {
            self.stats
                .as_ref()
                .is_none_or(|s| !(s.max_obs(j).is_finite() && s.max_obs(j) > 0.0))
        });
        let maxima = if needs_image {
            self.image_max(state, latents)?
        } else {
            vec![0.0; latents.len()]
        };
        Ok(latents
            .iter()
            .zip(maxima)
            .map(|(&j, m)| self.unit(j, m))
            .collect())
    }

    /// Patch labels after setting each edited latent to `slider * unit` on
    /// every patch (reference facts section 6: error term kept, rank-1 form). Sliders
    /// must lie in `[-SLIDER_MAX, SLIDER_MAX]`; a latent edited twice keeps
    /// its last slider. No edits give the unedited prediction.
    pub fn predict(
        &self,
        state: &ImageState<B>,
        edits: &[SliderEdit],
    ) -> Result<(Vec<u8>, Vec<AppliedEdit>)> {
        if edits.len() > MAX_LATENTS {
            return Err(AppError::BadRequest(format!(
                "{} edits; at most {MAX_LATENTS} latents can be edited at once",
                edits.len()
            )));
        }
        let mut last: Vec<SliderEdit> = Vec::new();
        for e in edits {
            self.check_latent(e.latent)?;
            if !e.slider.is_finite() || e.slider.abs() > SLIDER_MAX {
                return Err(AppError::BadRequest(format!(
                    "slider {} of latent {} is outside [-{SLIDER_MAX}, {SLIDER_MAX}]",
                    e.slider, e.latent
                )));
            }
            match last.iter_mut().find(|l| l.latent == e.latent) {
                Some(l) => l.slider = e.slider,
                None => last.push(*e),
            }
        }
        if last.is_empty() {
            return Ok((state.prediction.clone(), Vec::new()));
        }
        let ids: Vec<usize> = last.iter().map(|e| e.latent).collect();
        let units = self.slider_units(state, &ids)?;
        let mut edit = Edit::new();
        let mut applied = Vec::with_capacity(last.len());
        for (e, u) in last.iter().zip(units) {
            let value = e.slider * u.unit;
            edit = edit.set(e.latent, value);
            applied.push(AppliedEdit {
                latent: e.latent,
                slider: e.slider,
                unit: u.unit,
                unit_source: u.source,
                value,
            });
        }
        let tokens = self.steerer.steer_tokens(state.tokens.clone(), &edit)?;
        Ok((self.steerer.segment(tokens, Labels::All)?, applied))
    }

    /// The `top` latents with the largest summed activation over `patches`
    /// (all patches when empty), leaving out frequent ones when statistics
    /// are known, followed by the latents in `include` (shown whatever their
    /// activation or frequency).
    pub fn top_latents(
        &self,
        state: &ImageState<B>,
        patches: &[usize],
        top: usize,
        include: &[usize],
    ) -> Result<LatentReport> {
        let n = state.n_patches();
        if top > MAX_LATENTS || include.len() > MAX_LATENTS {
            return Err(AppError::BadRequest(format!(
                "at most {MAX_LATENTS} latents can be listed at once"
            )));
        }
        for &j in include {
            self.check_latent(j)?;
        }
        let mut selected: Vec<usize> = if patches.is_empty() {
            (0..n).collect()
        } else {
            patches.to_vec()
        };
        if let Some(&bad) = selected.iter().find(|&&p| p >= n) {
            return Err(AppError::BadRequest(format!(
                "patch {bad} does not exist: the image has patches 0..={}",
                n - 1
            )));
        }
        selected.sort_unstable();
        selected.dedup();

        let device = state.tokens.device();
        let rows: Vec<i64> = selected.iter().map(|&p| p as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [selected.len()]), &device);
        let x = state.patches().select(0, idx);
        let sums = host(self.steerer.encode(x)?.sum_dim(0))?;

        let frequent = |j: usize| self.stats.as_ref().is_some_and(|s| s.is_frequent(j));
        let active: Vec<usize> = (0..sums.len()).filter(|&j| sums[j] > 0.0).collect();
        let hidden_frequent = active.iter().filter(|&&j| frequent(j)).count();
        let mut ranked: Vec<usize> = active.iter().copied().filter(|&j| !frequent(j)).collect();
        ranked.sort_by(|&a, &b| sums[b].total_cmp(&sums[a]).then(a.cmp(&b)));
        ranked.truncate(top);
        for &j in include {
            if !ranked.contains(&j) {
                ranked.push(j);
            }
        }

        let columns = if ranked.is_empty() {
            Vec::new()
        } else {
            host(self.steerer.encode_latents(state.patches(), &ranked)?)?
        };
        let m = ranked.len();
        let latents = ranked
            .iter()
            .enumerate()
            .map(|(k, &j)| {
                let image_patches: Vec<f32> = (0..n).map(|p| columns[p * m + k]).collect();
                let image_max = image_patches.iter().copied().fold(0.0, f32::max);
                let stats = self.stats.as_ref();
                let finite = |v: f32| v.is_finite().then_some(v);
                LatentInfo {
                    latent: j,
                    activation: sums[j],
                    frequency: stats.map(|s| s.frequency(j)),
                    max_obs: stats.and_then(|s| finite(s.max_obs(j))),
                    mean_active: stats.map(|s| s.mean_active(j)),
                    frequent: frequent(j),
                    unit: self.unit(j, image_max),
                    image_patches,
                    exemplars: stats
                        .map(|s| {
                            s.top_images(j)
                                .iter()
                                .take(EXEMPLARS_SHOWN)
                                .map(|e| ExemplarInfo {
                                    image: e.image,
                                    value: e.value,
                                    patches: e.patch_values(),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        Ok(LatentReport {
            patches: selected,
            latents,
            active: active.len(),
            hidden_frequent,
        })
    }
}

/// A tensor's values on the host, row-major.
fn host<const D: usize, B: Backend>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| AppError::Internal(format!("cannot read a tensor back: {e:?}")))
}

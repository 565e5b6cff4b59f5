//! [`Steering`] with a cache of images run up to the SAE's layer, keyed by
//! image id: the state the model worker owns.

use std::collections::VecDeque;
use std::sync::Arc;

use burn::tensor::backend::Backend;

use crate::error::{AppError, Result};
use crate::images::{ImageKey, ImageStore};
use crate::steering::{AppliedEdit, ImageState, LatentReport, SliderEdit, Steering};

/// Images kept at the SAE's layer by default (each is `tokens x d` floats,
/// 0.8 MB for ViT-B).
pub const DEFAULT_CACHED_IMAGES: usize = 16;

/// A prediction after edits, with the unedited one to compare.
#[derive(Debug, Clone, PartialEq)]
pub struct Steered {
    /// Patch labels after the edits, row-major.
    pub labels: Vec<u8>,
    /// Patch labels without edits.
    pub original: Vec<u8>,
    pub edits: Vec<AppliedEdit>,
}

impl Steered {
    /// Patches whose label the edits changed.
    pub fn changed(&self) -> usize {
        self.labels
            .iter()
            .zip(&self.original)
            .filter(|(a, b)| a != b)
            .count()
    }
}

/// The models, the images, and the layer-`L` tokens of recent images.
pub struct Session<B: Backend> {
    steering: Steering<B>,
    store: Arc<ImageStore>,
    cache: VecDeque<(ImageKey, ImageState<B>)>,
    capacity: usize,
    encodes: u64,
}

impl<B: Backend> Session<B> {
    /// Keeps up to `capacity` images (at least one) at the SAE's layer.
    pub fn new(steering: Steering<B>, store: Arc<ImageStore>, capacity: usize) -> Self {
        Self {
            steering,
            store,
            cache: VecDeque::new(),
            capacity: capacity.max(1),
            encodes: 0,
        }
    }

    pub fn steering(&self) -> &Steering<B> {
        &self.steering
    }

    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    /// How many times an image was run through the blocks up to the layer:
    /// once per image while it stays cached.
    pub fn encodes(&self) -> u64 {
        self.encodes
    }

    /// Makes the image's state the most recent cache entry, computing it
    /// if needed, and returns it with the steering models.
    fn state(&mut self, key: ImageKey) -> Result<(&Steering<B>, &ImageState<B>)> {
        if let Some(at) = self.cache.iter().position(|(k, _)| *k == key) {
            if let Some(hit) = self.cache.remove(at) {
                self.cache.push_back(hit);
            }
        } else {
            let pixels = self.store.pixels(key)?;
            let state = self.steering.encode_image(&pixels)?;
            self.encodes += 1;
            self.cache.push_back((key, state));
            while self.cache.len() > self.capacity {
                self.cache.pop_front();
            }
        }
        match self.cache.back() {
            Some((_, state)) => Ok((&self.steering, state)),
            None => Err(AppError::Internal("the image cache is empty".into())),
        }
    }

    /// The unedited patch labels and the grid side.
    pub fn prediction(&mut self, key: ImageKey) -> Result<(Vec<u8>, usize)> {
        let (_, state) = self.state(key)?;
        Ok((state.prediction.clone(), state.grid()))
    }

    /// See [`Steering::top_latents`].
    pub fn latents(
        &mut self,
        key: ImageKey,
        patches: &[usize],
        top: usize,
        include: &[usize],
    ) -> Result<LatentReport> {
        let (steering, state) = self.state(key)?;
        steering.top_latents(state, patches, top, include)
    }

    /// See [`Steering::predict`]; also returns the grid side.
    pub fn steer(&mut self, key: ImageKey, edits: &[SliderEdit]) -> Result<(Steered, usize)> {
        let (steering, state) = self.state(key)?;
        let (labels, edits) = steering.predict(state, edits)?;
        Ok((
            Steered {
                labels,
                original: state.prediction.clone(),
                edits,
            },
            state.grid(),
        ))
    }
}

//! Feature statistics over a reference set of images (reference facts section 5), the
//! numbers behind the steering slider and the web app's exemplars.
//!
//! Per latent `j`, in the SAE's normalized units (like saev's `visuals`):
//! the largest activation seen (`max_obs`, the slider's unit), the firing
//! frequency (share of patches with `f_j > 0`), the mean over active patches,
//! and the `k` images with the largest per-image maximum, with all their
//! per-patch values (stored as f16) for heat maps.
//!
//! [`FeatureStats::update`] takes one batch of images' patch activations at a
//! time. The work per batch is one batched encode and three reductions on the
//! device; the host sees only the `[b, s]` per-image maxima and the patch
//! columns of the (image, latent) pairs that enter a top-k list.
//!
//! Files: our own safetensors ([`FeatureStats::save`] / [`FeatureStats::load`],
//! also the resume point of a long run) and saev's `visuals` output
//! ([`FeatureStats::load_saev`]).

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
pub use half::f16;
use sae_steer_vit::{TensorSource, TorchFile};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::config::Activation;
use crate::error::{Result, SaeError};
use crate::sae::Sae;

/// Value of the `format` metadata key in our statistics files.
pub const STATS_FORMAT_TAG: &str = "sae-steer-stats/1";

/// Default number of exemplar images kept per latent.
pub const DEFAULT_TOP_K: usize = 16;

/// Latents firing on at least this share of patches are "dense" and hidden
/// from the feature picker (the reference keeps `sparsity < 1e-2`).
pub const FREQUENT: f32 = 1e-2;

/// Marks an empty top-k slot in [`FeatureStats`] files.
pub const NO_IMAGE: u32 = u32::MAX;

/// Where statistics come from; stored in the file's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsInfo {
    /// The SAE file or hub id.
    pub sae: String,
    /// The reference images, e.g. `ImageNet-1K train (1,281,167 images)`.
    pub reference: String,
    /// A fingerprint of the reference set (e.g. a hash of its ordered image
    /// list), so a resumed run can check it continues over the same images.
    pub fingerprint: String,
    /// Where the normalization mean and scalar came from (`checkpoint`, a file,
    /// `estimated on ...`, `none`): statistics are in those units.
    pub normalization: String,
}

/// One exemplar image of a latent.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar<'a> {
    /// The image's id in the reference set.
    pub image: u32,
    /// The latent's largest value over the image's patches.
    pub value: f32,
    /// The latent's value on each patch, `[n_patches]`, row-major over the grid.
    pub patches: &'a [f16],
}

impl Exemplar<'_> {
    /// The per-patch values widened to f32.
    pub fn patch_values(&self) -> Vec<f32> {
        self.patches.iter().map(|v| v.to_f32()).collect()
    }
}

/// Exact running sums, kept so that a run can be saved and resumed without
/// rounding: frequency and mean are derived from them after every batch.
#[derive(Debug, Clone, PartialEq)]
struct Counts {
    /// Patches with `f_j > 0`.
    active: Vec<u64>,
    /// Sum of `f_j` over those patches.
    active_sum: Vec<f64>,
}

/// Per-latent statistics over a reference set of images; see the module docs.
///
/// The top-k lists hold distinct images sorted by their per-image maximum,
/// largest first; on equal values the earlier image stays ahead. Only images
/// on which the latent fires (maximum > 0) enter a list, so a rare latent has
/// empty slots ([`NO_IMAGE`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    pub info: StatsInfo,
    d_sae: usize,
    k: usize,
    n_patches: usize,
    /// `None` when unknown (saev files do not record it).
    n_images: Option<u64>,
    /// `[s]`; `-inf` before the first image.
    max: Vec<f32>,
    /// `[s]`
    frequency: Vec<f32>,
    /// `[s]`; 0 for a latent that never fired.
    mean_active: Vec<f32>,
    /// `[s, k]`
    top_images: Vec<u32>,
    /// `[s, k]`; `-inf` in empty slots.
    top_values: Vec<f32>,
    /// `[s, k, n_patches]`
    top_patches: Vec<f16>,
    /// `None` for statistics read from saev files, which cannot be extended.
    counts: Option<Counts>,
}

impl FeatureStats {
    /// Empty statistics for an SAE with `d_sae` latents over images of
    /// `n_patches` patches, keeping `k` exemplars per latent.
    ///
    /// Memory: `d_sae * k * n_patches * 2` bytes for the exemplar patches
    /// (24,576 latents, k = 16, 256 patches: 200 MB).
    pub fn new(d_sae: usize, k: usize, n_patches: usize, info: StatsInfo) -> Result<Self> {
        if d_sae == 0 || k == 0 || n_patches == 0 {
            return Err(SaeError::Input(format!(
                "feature statistics need d_sae, k and n_patches > 0, got {d_sae}, {k}, {n_patches}"
            )));
        }
        let slots = d_sae.checked_mul(k).and_then(|s| s.checked_mul(n_patches));
        let Some(slots) = slots else {
            return Err(SaeError::Input(format!(
                "{d_sae} latents x {k} exemplars x {n_patches} patches does not fit in memory"
            )));
        };
        Ok(Self {
            info,
            d_sae,
            k,
            n_patches,
            n_images: Some(0),
            max: vec![f32::NEG_INFINITY; d_sae],
            frequency: vec![0.0; d_sae],
            mean_active: vec![0.0; d_sae],
            top_images: vec![NO_IMAGE; d_sae * k],
            top_values: vec![f32::NEG_INFINITY; d_sae * k],
            top_patches: vec![f16::ZERO; slots],
            counts: Some(Counts {
                active: vec![0; d_sae],
                active_sum: vec![0.0; d_sae],
            }),
        })
    }

    /// Number of latents.
    pub fn d_sae(&self) -> usize {
        self.d_sae
    }

    /// Exemplar slots per latent.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Patches per image.
    pub fn n_patches(&self) -> usize {
        self.n_patches
    }

    /// Images seen so far; `None` for saev files, which do not record it.
    pub fn n_images(&self) -> Option<u64> {
        self.n_images
    }

    /// Whether [`Self::update`] can add images (false for saev files).
    pub fn can_update(&self) -> bool {
        self.counts.is_some()
    }

    /// The largest activation of latent `j` over the reference set: the unit
    /// of the steering slider (`v = s * max_obs`). Panics if `j >= d_sae`.
    pub fn max_obs(&self, j: usize) -> f32 {
        self.max[j]
    }

    /// Share of patches on which latent `j` fires (`f_j > 0`). Panics if `j >= d_sae`.
    pub fn frequency(&self, j: usize) -> f32 {
        self.frequency[j]
    }

    /// Mean of latent `j` over the patches where it fires; 0 if it never fired.
    /// Panics if `j >= d_sae`.
    pub fn mean_active(&self, j: usize) -> f32 {
        self.mean_active[j]
    }

    /// Whether latent `j` fires on at least [`FREQUENT`] of the patches
    /// (hidden from the feature picker). Panics if `j >= d_sae`.
    pub fn is_frequent(&self, j: usize) -> bool {
        self.frequency[j] >= FREQUENT
    }

    /// The exemplars of latent `j`, largest first; empty slots are skipped.
    /// Panics if `j >= d_sae`.
    pub fn top_images(&self, j: usize) -> Vec<Exemplar<'_>> {
        let n = self.n_patches;
        (0..self.k)
            .map(|slot| j * self.k + slot)
            .filter(|&at| self.top_images[at] != NO_IMAGE)
            .map(|at| Exemplar {
                image: self.top_images[at],
                value: self.top_values[at],
                patches: &self.top_patches[at * n..(at + 1) * n],
            })
            .collect()
    }

    /// `max_obs` of every latent, `[s]`.
    pub fn max_values(&self) -> &[f32] {
        &self.max
    }

    /// Firing frequency of every latent, `[s]`.
    pub fn frequencies(&self) -> &[f32] {
        &self.frequency
    }

    /// Mean over active patches of every latent, `[s]`.
    pub fn mean_actives(&self) -> &[f32] {
        &self.mean_active
    }

    /// Adds a batch of images: `x` holds their patch activations at the SAE's
    /// layer in model units, `[b, n_patches, d]`, and `images` their ids.
    /// The SAE's normalization is applied, so the statistics are in its units.
    /// Ids must be distinct over the whole run: an image seen twice would be
    /// counted twice and could take two slots of a list.
    pub fn update<B: Backend>(
        &mut self,
        sae: &Sae<B>,
        x: Tensor<B, 3>,
        images: &[u32],
    ) -> Result<()> {
        let [b, n, d] = x.dims();
        let s = self.d_sae;
        if self.counts.is_none() {
            return Err(SaeError::Input(
                "these statistics were read from saev files, which lack the running counts \
                 needed to add images"
                    .into(),
            ));
        }
        if sae.d_sae() != s {
            return Err(SaeError::Input(format!(
                "the SAE has {} latents, the statistics {s}",
                sae.d_sae()
            )));
        }
        if d != sae.d_model() {
            return Err(SaeError::Input(format!(
                "activations have width {d}, the SAE expects {}",
                sae.d_model()
            )));
        }
        if n != self.n_patches {
            return Err(SaeError::Input(format!(
                "images have {n} patches, the statistics were started with {}",
                self.n_patches
            )));
        }
        if images.len() != b {
            return Err(SaeError::Input(format!(
                "{} image ids for a batch of {b} images",
                images.len()
            )));
        }
        if let Some(bad) = images.iter().find(|&&i| i == NO_IMAGE) {
            return Err(SaeError::Input(format!(
                "image id {bad} is reserved for empty slots"
            )));
        }
        if b == 0 {
            return Ok(());
        }

        let f = sae.encode(sae.normalize(x.reshape([b * n, d]))); // [b*n, s]
        let active = host_f32(f.clone().greater_elem(0.0).float().sum_dim(0)); // [1, s]
        // Only TopK keeps negative values; the other activations are >= 0.
        let positive = match sae.config.activation {
            Activation::Topk { .. } => f.clone().clamp_min(0.0),
            Activation::Relu | Activation::TopkRelu { .. } | Activation::JumpRelu { .. } => {
                f.clone()
            }
        };
        let active_sum = host_f32(positive.sum_dim(0)); // [1, s]
        let f = f.reshape([b, n, s]);
        let image_max = host_f32(f.clone().max_dim(1)); // [b, 1, s]

        let Some(counts) = self.counts.as_mut() else {
            return Ok(());
        };
        // Checked: a resumed run's image count comes from a file.
        let n_images = self
            .n_images
            .unwrap_or(0)
            .checked_add(b as u64)
            .filter(|images| images.checked_mul(n as u64).is_some())
            .ok_or_else(|| {
                SaeError::Input(format!(
                    "{:?} images + {b} more overflow the patch count",
                    self.n_images
                ))
            })?;
        self.n_images = Some(n_images);
        let total = (n_images * n as u64) as f64;
        for j in 0..s {
            // The batch's counts are exact in f32 (at most b * n < 2^24 per entry).
            counts.active[j] += active[j] as u64;
            counts.active_sum[j] += f64::from(active_sum[j]);
            let c = counts.active[j];
            self.frequency[j] = (c as f64 / total) as f32;
            self.mean_active[j] = if c == 0 {
                0.0
            } else {
                (counts.active_sum[j] / c as f64) as f32
            };
            for i in 0..b {
                self.max[j] = self.max[j].max(image_max[i * s + j]);
            }
        }

        let candidates = self.candidates(&image_max, b, images);
        if candidates.is_empty() {
            return Ok(());
        }
        // Patch values of each candidate pair, read per image as the columns
        // of its chosen latents: never the whole [b, n, s] activation tensor.
        let mut by_image: Vec<Vec<usize>> = vec![Vec::new(); b];
        for (c, cand) in candidates.iter().enumerate() {
            by_image[cand.batch_index].push(c);
        }
        let mut patches = vec![f16::ZERO; candidates.len() * n];
        let device = f.device();
        for (i, picked) in by_image.iter().enumerate() {
            if picked.is_empty() {
                continue;
            }
            let m = picked.len();
            let latents: Vec<i64> = picked
                .iter()
                .map(|&c| candidates[c].latent as i64)
                .collect();
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(latents, [m]), &device);
            let cols = host_f32(
                f.clone()
                    .slice([i..i + 1, 0..n, 0..s])
                    .reshape([n, s])
                    .select(1, idx),
            ); // [n, m]
            for (col, &c) in picked.iter().enumerate() {
                for p in 0..n {
                    patches[c * n + p] = f16::from_f32(cols[p * m + col]);
                }
            }
        }
        self.merge(&candidates, &patches);
        Ok(())
    }

    /// The (image, latent) pairs of a batch that enter a top-k list, grouped
    /// by latent and sorted like the lists (value descending, earlier first).
    fn candidates(&self, image_max: &[f32], b: usize, images: &[u32]) -> Vec<Candidate> {
        let (s, k) = (self.d_sae, self.k);
        // A pair must fire and beat the current k-th entry (ties keep the old one).
        let threshold: Vec<f32> = (0..s)
            .map(|j| self.top_values[j * k + k - 1].max(0.0))
            .collect();
        let mut out = Vec::new();
        for i in 0..b {
            let row = &image_max[i * s..(i + 1) * s];
            for (j, (&v, &t)) in row.iter().zip(&threshold).enumerate() {
                if v > t {
                    out.push(Candidate {
                        latent: j,
                        batch_index: i,
                        image: images[i],
                        value: v,
                    });
                }
            }
        }
        // Stable: equal values keep batch order.
        out.sort_by(|a, b| a.latent.cmp(&b.latent).then(b.value.total_cmp(&a.value)));
        // Only a latent's k best of this batch can survive the merge.
        let mut kept = Vec::with_capacity(out.len());
        let mut run = (usize::MAX, 0);
        for c in out {
            if c.latent != run.0 {
                run = (c.latent, 0);
            }
            if run.1 < k {
                kept.push(c);
                run.1 += 1;
            }
        }
        kept
    }

    /// Merges sorted candidates (grouped by latent) into the top-k lists.
    fn merge(&mut self, candidates: &[Candidate], patches: &[f16]) {
        let (k, n) = (self.k, self.n_patches);
        let mut old_patches = vec![f16::ZERO; k * n];
        let mut start = 0;
        while start < candidates.len() {
            let j = candidates[start].latent;
            let end = candidates[start..]
                .iter()
                .position(|c| c.latent != j)
                .map_or(candidates.len(), |p| start + p);
            let base = j * k;
            let old_images = self.top_images[base..base + k].to_vec();
            let old_values = self.top_values[base..base + k].to_vec();
            old_patches.copy_from_slice(&self.top_patches[base * n..(base + k) * n]);
            let (mut o, mut c) = (0, start);
            for slot in 0..k {
                let old_live = o < k && old_images[o] != NO_IMAGE;
                let take_new = c < end && (!old_live || candidates[c].value > old_values[o]);
                let dst = (base + slot) * n..(base + slot + 1) * n;
                if take_new {
                    let cand = &candidates[c];
                    self.top_images[base + slot] = cand.image;
                    self.top_values[base + slot] = cand.value;
                    self.top_patches[dst].copy_from_slice(&patches[c * n..(c + 1) * n]);
                    c += 1;
                } else if old_live {
                    self.top_images[base + slot] = old_images[o];
                    self.top_values[base + slot] = old_values[o];
                    self.top_patches[dst].copy_from_slice(&old_patches[o * n..(o + 1) * n]);
                    o += 1;
                } else {
                    self.top_images[base + slot] = NO_IMAGE;
                    self.top_values[base + slot] = f32::NEG_INFINITY;
                    self.top_patches[dst].fill(f16::ZERO);
                }
            }
            start = end;
        }
    }

    /// Writes the statistics to one safetensors file, atomically: `max`,
    /// `frequency`, `mean_active` `[s]` f32, `top_images` `[s, k]` u32,
    /// `top_values` `[s, k]` f32, `top_patches` `[s, k, n_patches]` f16, and
    /// when the run can be resumed its exact counts `active_count` `[s]` u64
    /// and `active_sum` `[s]` f64. Metadata: `format`, `sae`, `reference`,
    /// `fingerprint`, `normalization`, `n_images`, `n_patches`, `top_k`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let (s, k, n) = (self.d_sae, self.k, self.n_patches);
        let le = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let mut tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
            ("max", Dtype::F32, vec![s], le(&self.max)),
            ("frequency", Dtype::F32, vec![s], le(&self.frequency)),
            ("mean_active", Dtype::F32, vec![s], le(&self.mean_active)),
            (
                "top_images",
                Dtype::U32,
                vec![s, k],
                self.top_images
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            ("top_values", Dtype::F32, vec![s, k], le(&self.top_values)),
            (
                "top_patches",
                Dtype::F16,
                vec![s, k, n],
                self.top_patches
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
        ];
        if let Some(counts) = &self.counts {
            tensors.push((
                "active_count",
                Dtype::U64,
                vec![s],
                counts.active.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ));
            tensors.push((
                "active_sum",
                Dtype::F64,
                vec![s],
                counts
                    .active_sum
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ));
        }
        let format_error = |message: String| SaeError::Format {
            path: path.to_path_buf(),
            message,
        };
        let views = tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|v| (name.to_string(), v))
                    .map_err(|e| format_error(format!("tensor `{name}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut meta = HashMap::from([
            ("format".to_string(), STATS_FORMAT_TAG.to_string()),
            ("sae".to_string(), self.info.sae.clone()),
            ("reference".to_string(), self.info.reference.clone()),
            ("fingerprint".to_string(), self.info.fingerprint.clone()),
            ("normalization".to_string(), self.info.normalization.clone()),
            ("n_patches".to_string(), n.to_string()),
            ("top_k".to_string(), k.to_string()),
        ]);
        if let Some(n_images) = self.n_images {
            meta.insert("n_images".to_string(), n_images.to_string());
        }
        let data = safetensors::serialize(views, Some(meta))
            .map_err(|e| format_error(format!("cannot serialise: {e}")))?;
        let data = sae_steer_vit::canonical_safetensors(data);
        sae_steer_files::write_atomic(path, &data).map_err(|e| SaeError::io(path, e))
    }

    /// Reads a file written by [`Self::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| SaeError::io(path, e))?;
        // SAFETY: the map is read-only and dropped before returning; a file
        // truncated underneath us is a user error no mmap reader can guard against.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| SaeError::io(path, e))?;
        let format_error = |message: String| SaeError::Format {
            path: path.to_path_buf(),
            message,
        };
        let (_, header) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| format_error(format!("not a safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        match meta.get("format") {
            Some(tag) if tag == STATS_FORMAT_TAG => {}
            Some(tag) => {
                return Err(format_error(format!(
                    "format tag is `{tag}`, this reader knows `{STATS_FORMAT_TAG}`"
                )));
            }
            None => {
                return Err(format_error(
                    "no `format` key in __metadata__: not a feature statistics file".into(),
                ));
            }
        }
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| format_error(format!("not a safetensors file: {e}")))?;
        let number = |key: &str| -> Result<Option<u64>> {
            meta.get(key)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| {
                        format_error(format!("metadata `{key}` is `{v}`, not a count"))
                    })
                })
                .transpose()
        };
        let tensor = |name: &str, dtype: Dtype| -> Result<(Vec<usize>, &[u8])> {
            let view = st.tensor(name).map_err(|_| SaeError::MissingTensor {
                path: path.to_path_buf(),
                name: name.to_string(),
            })?;
            if view.dtype() != dtype {
                return Err(format_error(format!(
                    "tensor `{name}` is {:?}, expected {dtype:?}",
                    view.dtype()
                )));
            }
            Ok((view.shape().to_vec(), view.data()))
        };
        let (shape, _) = tensor("top_patches", Dtype::F16)?;
        let [s, k, n] = shape[..] else {
            return Err(format_error(format!(
                "`top_patches` has shape {shape:?}, expected [d_sae, k, n_patches]"
            )));
        };
        if s == 0 || k == 0 || n == 0 {
            return Err(format_error(format!(
                "`top_patches` has shape {shape:?}: every size must be positive"
            )));
        }
        let ctx = format!("`top_patches` [{s}, {k}, {n}]");
        let shaped = |name: &str, dtype: Dtype, expected: &[usize]| -> Result<&[u8]> {
            let (found, bytes) = tensor(name, dtype)?;
            if found != expected {
                return Err(SaeError::Shape {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                    expected: expected.to_vec(),
                    found,
                    context: ctx.clone(),
                });
            }
            Ok(bytes)
        };
        let f32s = |name: &str, expected: &[usize]| -> Result<Vec<f32>> {
            Ok(shaped(name, Dtype::F32, expected)?
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        if let Some(meta_n) = number("n_patches")?
            && meta_n != n as u64
        {
            return Err(format_error(format!(
                "metadata says {meta_n} patches per image, `top_patches` holds {n}"
            )));
        }
        let counts = if st.names().contains(&"active_count") {
            Some(Counts {
                active: shaped("active_count", Dtype::U64, &[s])?
                    .chunks_exact(8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                    .collect(),
                active_sum: shaped("active_sum", Dtype::F64, &[s])?
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                    .collect(),
            })
        } else {
            None
        };
        let n_images = number("n_images")?;
        if counts.is_some() && n_images.is_none() {
            return Err(format_error(
                "running counts without `n_images` in the metadata".into(),
            ));
        }
        // A count above the patches seen would overflow when the run resumes.
        if let (Some(c), Some(images)) = (&counts, n_images) {
            let total = images.checked_mul(n as u64);
            if total.is_none_or(|t| c.active.iter().any(|&a| a > t)) {
                return Err(format_error(format!(
                    "running counts exceed n_images ({images}) x n_patches ({n})"
                )));
            }
        }
        let text = |key: &str| meta.get(key).cloned().unwrap_or_default();
        Ok(Self {
            info: StatsInfo {
                sae: text("sae"),
                reference: text("reference"),
                fingerprint: text("fingerprint"),
                normalization: text("normalization"),
            },
            d_sae: s,
            k,
            n_patches: n,
            n_images,
            max: f32s("max", &[s])?,
            frequency: f32s("frequency", &[s])?,
            mean_active: f32s("mean_active", &[s])?,
            top_images: shaped("top_images", Dtype::U32, &[s, k])?
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            top_values: f32s("top_values", &[s, k])?,
            top_patches: shaped("top_patches", Dtype::F16, &[s, k, n])?
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]))
                .collect(),
            counts,
        })
    }

    /// Reads the output of saev's `visuals` step from its folder
    /// (`.../sort_by_patch`): `top_values.pt` `[s, k, n_patches]`,
    /// `top_img_i.pt` `[s, k]`, `sparsity.pt` `[s]` and `mean_values.pt` `[s]`,
    /// each a bare tensor written by `torch.save`.
    ///
    /// Conversions: `max_obs` is `top_values[j].max()` (as saev's web app);
    /// saev's lists may name an image twice (it picks the top patches of a
    /// batch, then sorts images by their maximum), so repeats are dropped,
    /// as are slots whose image maximum is not positive (the latent did not
    /// fire there; saev fills unused slots with -1 or zeros); a `NaN` mean
    /// (a latent that never fired) becomes 0. The number of images is unknown.
    pub fn load_saev(dir: impl AsRef<Path>, info: StatsInfo) -> Result<Self> {
        let dir = dir.as_ref();
        // Every file is checked against its size when opened (TorchFile):
        // the allocations below are bounded by the files' real bytes.
        let values_file = open_bare_tensor(&dir.join("top_values.pt"))?;
        let values_shape = values_file.shape(TorchFile::ROOT).unwrap_or_default();
        let [s, k, n] = values_shape[..] else {
            return Err(SaeError::Format {
                path: dir.join("top_values.pt"),
                message: format!(
                    "shape {values_shape:?}, expected [d_sae, k, n_patches] (saev `sort_by = patch`)"
                ),
            });
        };
        let ctx = format!("top_values.pt [{s}, {k}, {n}]");
        let open = |name: &str, expected: &[usize]| -> Result<TorchFile> {
            let path = dir.join(name);
            let file = open_bare_tensor(&path)?;
            let shape = file.shape(TorchFile::ROOT).unwrap_or_default();
            if shape != expected {
                return Err(SaeError::Shape {
                    path,
                    name: name.trim_end_matches(".pt").to_string(),
                    expected: expected.to_vec(),
                    found: shape,
                    context: ctx.clone(),
                });
            }
            Ok(file)
        };
        let images = open("top_img_i.pt", &[s, k])?;
        let sparsity = open("sparsity.pt", &[s])?;
        let mean_values = open("mean_values.pt", &[s])?;
        let values = values_file.read(TorchFile::ROOT)?.data;
        let frequency = sparsity.read(TorchFile::ROOT)?.data;
        let mean_active: Vec<f32> = mean_values
            .read(TorchFile::ROOT)?
            .data
            .into_iter()
            .map(|v| if v.is_nan() { 0.0 } else { v })
            .collect();
        // i64 keeps ids above 2^24 exact, which f32 would not.
        let (_, ids) = images.read_i64(TorchFile::ROOT)?;

        let mut stats = Self::new(s, k, n, info)?;
        stats.n_images = None;
        stats.counts = None;
        stats.frequency = frequency;
        stats.mean_active = mean_active;
        for j in 0..s {
            let latent = &values[j * k * n..(j + 1) * k * n];
            stats.max[j] = latent.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut slot = 0;
            for src in 0..k {
                let id = ids[j * k + src];
                let patches = &latent[src * n..(src + 1) * n];
                let value = patches.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let image = u32::try_from(id)
                    .ok()
                    .filter(|&i| i != NO_IMAGE)
                    .ok_or_else(|| SaeError::Format {
                        path: dir.join("top_img_i.pt"),
                        message: format!("image id {id} (latent {j}) is not a valid u32 id"),
                    })?;
                let base = j * k;
                let seen = stats.top_images[base..base + slot].contains(&image);
                if value <= 0.0 || seen {
                    continue;
                }
                stats.top_images[base + slot] = image;
                stats.top_values[base + slot] = value;
                let dst = (base + slot) * n..(base + slot + 1) * n;
                for (d, v) in stats.top_patches[dst].iter_mut().zip(patches) {
                    *d = f16::from_f32(*v);
                }
                slot += 1;
            }
        }
        Ok(stats)
    }
}

/// A pair (batch image, latent) that enters the latent's top-k list.
#[derive(Debug, Clone)]
struct Candidate {
    latent: usize,
    batch_index: usize,
    image: u32,
    value: f32,
}

fn host_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    // convert::<f32> makes the element type f32, so into_vec cannot fail.
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}

/// Opens a `torch.save(tensor, path)` file: an archive whose pickle is one
/// bare tensor ([`TorchFile::ROOT`]) rather than a state dict.
fn open_bare_tensor(path: &Path) -> Result<TorchFile> {
    let file = TorchFile::open(path)?;
    if !file.contains(TorchFile::ROOT) {
        return Err(SaeError::Format {
            path: path.to_path_buf(),
            message: "the pickle is not a single tensor (saev writes each statistic with \
                      torch.save(tensor))"
                .into(),
        });
    }
    Ok(file)
}

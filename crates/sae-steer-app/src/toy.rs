//! A tiny, fully random steering setup: a synthetic ADE20K (a few images in
//! the real layout), an SAE built for the ViT's activations on them, its
//! feature statistics over the same images, and a random probe.
//!
//! It exercises every path of the app without downloads: most latents are
//! rare (they fire on 0.2-1% of the patches, so the feature picker shows
//! them), every fourth is dense (fires on half the patches, so it is hidden
//! as frequent), the SAE carries an input normalization, and the exemplars'
//! reference set is the examples' own split, so exemplar images are served.
//! Nothing it computes means anything.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData, backend::Backend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sae_steer::{NoProgress, Steerer};
use sae_steer_ade20k::synth::{SynthOptions, synthesize};
use sae_steer_ade20k::{Ade20k, NUM_CLASSES, Split};
use sae_steer_data::load_sample;
use sae_steer_probe::checkpoint::{CheckpointMeta, Probe, write_state};
use sae_steer_probe::config::ProbeHparams;
use sae_steer_probe::sweep::{AdamMoments, ProbeState, ProbeWeights};
use sae_steer_sae::{
    Activation, EncodeRule, FeatureStats, Normalization, Sae, SaeConfig, SaeWeights, StatsInfo,
};
use sae_steer_vit::{HostTensor, PixelValues, Vit};

use crate::error::{AppError, Result};
use crate::images::{ImageStore, ReferenceSet};
use crate::steering::Steering;

/// What to build.
#[derive(Debug, Clone, PartialEq)]
pub struct ToyOptions {
    /// The SAE's layer (must have a block after it).
    pub layer: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// Validation images (the examples and the statistics' reference set).
    pub images: usize,
    /// Exemplars kept per latent.
    pub exemplars: usize,
    /// Whether to compute feature statistics (without them the app falls
    /// back to per-image slider units and shows no exemplars).
    pub stats: bool,
    pub seed: u64,
}

impl Default for ToyOptions {
    fn default() -> Self {
        Self {
            layer: 1,
            d_sae: 1024,
            images: 6,
            exemplars: 4,
            stats: true,
            seed: 0,
        }
    }
}

/// The parts of a toy setup.
pub struct Toy<B: Backend> {
    pub steering: Steering<B>,
    pub store: ImageStore,
    /// The synthetic dataset's root.
    pub root: PathBuf,
}

/// Builds a toy setup around `vit`, writing the synthetic dataset to `dir`
/// (an empty folder, or one this function wrote before).
pub fn build<B: Backend>(vit: Vit<B>, dir: &Path, opts: &ToyOptions) -> Result<Toy<B>> {
    let synth = SynthOptions {
        train: 1,
        val: opts.images.max(1),
        seed: opts.seed,
        min_side: 96,
        max_side: 320,
        ..SynthOptions::default()
    };
    // A handful of images: nothing worth a progress bar.
    let report = synthesize(dir, &synth, &NoProgress)?;
    let ade = Ade20k::open(&report.root)?;
    let val = ade.split(Split::Validation)?;
    let pre = vit.preprocess();
    let device = vit.device().clone();
    let d = vit.config().hidden_size;
    let prefix = vit.config().prefix_tokens();

    let pixels: Vec<PixelValues> = val
        .items
        .iter()
        .map(|item| Ok(load_sample(item, &pre)?.pixels))
        .collect::<Result<_>>()?;
    let tokens = vit.forward_until(PixelValues::batch::<B>(&pixels, &device), opts.layer)?;
    let [b, t, _] = tokens.dims();
    let n = t - prefix;
    let patches: Tensor<B, 3> = tokens.slice([0..b, prefix..t, 0..d]);
    let x = host(patches.clone().reshape([b * n, d]))?;

    let rows = b * n;
    let norm = Normalization::estimate(&x, d)?;
    let (mean, scalar) = (norm.mean.clone(), norm.scalar);

    // Decoder rows: random unit vectors; encoder: their transpose.
    let s = opts.d_sae;
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5ae5_7ee7);
    let mut w_dec = vec![0f32; s * d];
    for row in w_dec.chunks_exact_mut(d) {
        for v in row.iter_mut() {
            *v = rng.random_range(-1.0..1.0);
        }
        let len = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
        row.iter_mut().for_each(|v| *v /= len);
    }
    let mut w_enc = vec![0f32; d * s];
    for j in 0..s {
        for i in 0..d {
            w_enc[i * s + j] = w_dec[j * d + i];
        }
    }

    // Encoder biases from the pre-activations' quantiles set how often
    // each latent fires.
    let x_n = Tensor::<B, 2>::from_data(TensorData::new(x, [rows, d]), &device)
        .sub(Tensor::<B, 1>::from_data(TensorData::new(mean, [d]), &device).unsqueeze_dim(0))
        .div_scalar(scalar);
    let w_enc_t = Tensor::<B, 2>::from_data(TensorData::new(w_enc.clone(), [d, s]), &device);
    let h = host(x_n.matmul(w_enc_t).transpose())?; // [s, rows]
    let b_enc: Vec<f32> = h
        .chunks_exact(rows)
        .enumerate()
        .map(|(j, column)| {
            let mut column = column.to_vec();
            column.sort_by(f32::total_cmp);
            let q = if j % 4 == 3 {
                0.5
            } else {
                0.990 + 0.008 * ((j as f32 * 0.377).fract())
            };
            let at = ((q * rows as f32) as usize).min(rows - 1);
            -column[at]
        })
        .collect();

    let weights = SaeWeights {
        config: SaeConfig {
            d_model: d,
            d_sae: s,
            activation: Activation::Relu,
            encode: EncodeRule::CentreOnDecoderBias,
            vit: Some("toy".into()),
            layer: Some(opts.layer),
        },
        w_enc: HostTensor::new(vec![d, s], w_enc),
        b_enc: HostTensor::new(vec![s], b_enc),
        w_dec: HostTensor::new(vec![s, d], w_dec),
        b_dec: HostTensor::new(vec![d], vec![0.0; d]),
        threshold: None,
        norm: Some(norm),
    };
    let sae = Sae::from_weights(weights, &device);

    let stats = if opts.stats {
        let mut stats = FeatureStats::new(
            s,
            opts.exemplars.max(1),
            n,
            StatsInfo {
                sae: "toy".into(),
                reference: format!("toy ADE20K validation ({b} images)"),
                fingerprint: val.fingerprint(),
                normalization: "toy (estimated on the same images)".into(),
            },
        )?;
        let ids: Vec<u32> = (0..b as u32).collect();
        stats.update(&sae, patches, &ids)?;
        Some(stats)
    } else {
        None
    };

    let probe = Probe::new(
        &ProbeWeights::kaiming_uniform(d, NUM_CLASSES + 1, opts.seed),
        &device,
    )?;
    let steering = Steering::new(Steerer::new(vit, sae, probe, opts.layer)?, stats)?;
    let reference = opts.stats.then(|| ReferenceSet {
        name: "toy ADE20K validation".into(),
        list: val.clone(),
    });
    let store = ImageStore::new(val, ade.classes().clone(), pre).with_reference(reference);
    Ok(Toy {
        steering,
        store,
        root: report.root,
    })
}

/// Where [`Toy::save`] put the files.
#[derive(Debug, Clone, PartialEq)]
pub struct ToyFiles {
    /// Our SAE checkpoint (with its normalization).
    pub sae: PathBuf,
    /// Feature statistics over the validation split.
    pub stats: Option<PathBuf>,
    /// A probe checkpoint folder (`model_step0.safetensors`).
    pub probe: PathBuf,
    /// The synthetic ADE20K root.
    pub ade20k: PathBuf,
}

impl<B: Backend> Toy<B> {
    /// Writes the SAE, statistics and probe under `dir`, in the formats the
    /// `manipulate` and `figures` examples read, so that the app can be
    /// tried without downloads.
    pub fn save(&self, dir: &Path) -> Result<ToyFiles> {
        let io = |path: &Path, error: std::io::Error| AppError::Write {
            path: path.to_path_buf(),
            error,
        };
        let probe_dir = dir.join("probe");
        std::fs::create_dir_all(&probe_dir).map_err(|e| io(&probe_dir, e))?;
        let sae = dir.join("sae.safetensors");
        self.steering.sae().to_weights().save(&sae)?;
        let stats = match self.steering.stats() {
            Some(stats) => {
                let path = dir.join("stats.safetensors");
                stats.save(&path)?;
                Some(path)
            }
            None => None,
        };
        let weights = self.steering.probe().to_host();
        let (c, d) = (weights.out_features, weights.in_features);
        let state = ProbeState {
            hparams: ProbeHparams {
                learning_rate: 1e-3,
                weight_decay: 1e-3,
                seed: 0,
            },
            weights,
            moments: AdamMoments {
                exp_avg_weight: vec![0.0; c * d],
                exp_avg_sq_weight: vec![0.0; c * d],
                exp_avg_bias: vec![0.0; c],
                exp_avg_sq_bias: vec![0.0; c],
            },
        };
        let meta = CheckpointMeta {
            hparams: state.hparams,
            step: 0,
            epoch: 0,
            run: serde_json::json!({ "toy": true }),
        };
        write_state(&probe_dir, &state, &meta)?;
        Ok(ToyFiles {
            sae,
            stats,
            probe: probe_dir,
            ade20k: self.root.clone(),
        })
    }
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| AppError::Internal(format!("cannot read a tensor back: {e:?}")))
}

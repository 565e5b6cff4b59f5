//! Deterministic random weights at any geometry of any family (the
//! `random` feature): benchmarks, the offline demo and the scale runs run
//! at a real geometry with no download, the same numbers on every machine.

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;

use crate::config::VitConfig;
use crate::error::{Result, VitError};
use crate::hf_tensor_shapes;
use crate::vit::Vit;
use crate::weights::{HostTensor, TensorSource};

/// Deterministic random weights with a family's shapes, for benchmarks and the
/// offline demo: no download, same numbers on every machine.
struct RandomSource {
    shapes: HashMap<String, Vec<usize>>,
    seed: u64,
}

impl TensorSource for RandomSource {
    fn path(&self) -> &std::path::Path {
        std::path::Path::new("<random weights>")
    }
    fn names(&self) -> Vec<String> {
        self.shapes.keys().cloned().collect()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.shapes.get(name).cloned()
    }
    fn read(&self, name: &str) -> Result<HostTensor> {
        let shape = self.shape(name).ok_or_else(|| VitError::MissingTensor {
            path: self.path().to_path_buf(),
            name: name.to_string(),
        })?;
        let n: usize = shape.iter().product();
        // Name-keyed stream: a tensor's values do not depend on load order.
        let mut state = name
            .bytes()
            .fold(self.seed ^ 0x9E37_79B9_7F4A_7C15, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01B3)
            });
        let mut next = || {
            // splitmix64 -> uniform in [-1, 1)
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 52) as f32 - 1.0
        };
        let fan_in = if shape.len() >= 2 {
            shape[1..].iter().product::<usize>()
        } else {
            1
        };
        let (center, spread) = if name.ends_with("lambda1") {
            (0.5, 0.4)
        } else if name.contains("norm") && name.ends_with("weight") {
            (1.0, 0.2)
        } else if name.ends_with("bias") {
            (0.0, 0.05)
        } else if shape.len() >= 2 && !name.contains("embeddings.") {
            (0.0, (3.0 / fan_in as f32).sqrt())
        } else {
            (0.0, 0.5)
        };
        Ok(HostTensor::new(
            shape,
            (0..n).map(|_| center + spread * next()).collect(),
        ))
    }
}

impl<B: Backend> Vit<B> {
    /// A model with deterministic random weights (for benchmarks and demos;
    /// the `random` feature).
    pub fn random(config: VitConfig, seed: u64, device: &B::Device) -> Result<Self> {
        let src = RandomSource {
            shapes: hf_tensor_shapes(&config).into_iter().collect(),
            seed,
        };
        Self::from_source(config, &src, device)
    }
}

/// Writes the weights of [`Vit::random`] as a Hugging Face folder
/// (`config.json`, `model.safetensors`), which [`Vit::load`] reads back as
/// the same model: programs that take `--vit` can run at a real geometry
/// (ViT-B/14 is 346 MB of f32) with no download. (The `random` feature.)
pub fn write_random_hf_folder(config: &VitConfig, seed: u64, dir: &Path) -> Result<()> {
    config.validate().map_err(|message| VitError::Config {
        path: dir.join("config.json"),
        message,
    })?;
    let json = config.to_hf_json().ok_or_else(|| VitError::Config {
        path: dir.join("config.json"),
        message: "the torch-hub no-register geometry has no Hugging Face config".into(),
    })?;
    let shapes = hf_tensor_shapes(config);
    let src = RandomSource {
        shapes: shapes.iter().cloned().collect(),
        seed,
    };
    let tensors = shapes
        .into_iter()
        .map(|(name, _)| Ok((name.clone(), src.read(&name)?)))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(dir).map_err(|e| VitError::io(dir, e))?;
    // Weights first: a folder with a config.json is a complete model.
    crate::weights::write_safetensors(dir.join("model.safetensors"), &tensors, None)?;
    crate::weights::write_atomic(&dir.join("config.json"), json.as_bytes())
}

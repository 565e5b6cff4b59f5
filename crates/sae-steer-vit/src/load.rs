//! Finding and opening ViT weights: a Hugging Face folder (any supported
//! family, with its `preprocessor_config.json` where there is one), a
//! DINOv2 torch-hub `.pth`, a single `.safetensors` file next to its
//! `config.json`, or a hub id resolved through `hf-hub` and its normal cache.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::config::{Family, VitConfig};
use crate::dinov2::KeyLayout;
use crate::error::{Result, VitError};
use crate::preprocess::Preprocess;
use crate::vit::Vit;
use crate::weights::{SafetensorsFile, TorchFile};

/// The Hugging Face id of the backbone the published SAEs read.
pub const DEFAULT_VIT: &str = "facebook/dinov2-with-registers-base";

/// Where a model comes from, decided from the string a user typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VitSource {
    /// A folder with `config.json` and `model.safetensors`.
    HfFolder(PathBuf),
    /// A torch-hub checkpoint such as `dinov2_vitb14_reg4_pretrain.pth`.
    TorchHub(PathBuf),
    /// A Hugging Face hub id such as `facebook/dinov2-with-registers-base`.
    HubId(String),
}

impl VitSource {
    /// Existing paths win; otherwise `owner/name` is a hub id.
    pub fn parse(spec: &str) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(Self::HfFolder(path.to_path_buf()));
        }
        if path.is_file() {
            return match path.extension().and_then(|e| e.to_str()) {
                Some("pth" | "pt" | "bin") => Ok(Self::TorchHub(path.to_path_buf())),
                Some("safetensors") => Ok(Self::HfFolder(
                    path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                )),
                _ => Err(VitError::Unsupported {
                    path: path.to_path_buf(),
                    message: "expected a folder with config.json + model.safetensors, a .pth file or a hub id".into(),
                }),
            };
        }
        let parts: Vec<&str> = spec.split('/').collect();
        if parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && !p.starts_with('.')) {
            return Ok(Self::HubId(spec.to_string()));
        }
        Err(VitError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file or folder, and not a hub id of the form owner/name",
            ),
        ))
    }
}

/// Whether `HF_HUB_OFFLINE` forbids downloads, as in the Python hub client.
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Finds `files` of a hub repository: in the local hf-hub cache first (no
/// network), else by download unless `offline`. The error says what to
/// download and where to put it.
pub fn hub_files(
    repo: &str,
    files: &[&str],
    cache: Option<&Path>,
    offline: bool,
) -> Result<Vec<PathBuf>> {
    let cache = match cache {
        Some(dir) => hf_hub::Cache::new(dir.to_path_buf()),
        None => hf_hub::Cache::from_env(),
    };
    let cached: Option<Vec<PathBuf>> = files
        .iter()
        .map(|f| cache.model(repo.to_string()).get(f))
        .collect();
    if let Some(paths) = cached {
        return Ok(paths);
    }
    let how_to = || {
        format!(
            "download {} from https://huggingface.co/{repo} into a folder and pass that folder instead, \
             or put them in the hf-hub cache under {}",
            files.join(", "),
            cache
                .path()
                .join(format!("models--{}", repo.replace('/', "--")))
                .display()
        )
    };
    if offline {
        return Err(VitError::Hub {
            repo: repo.to_string(),
            message: format!(
                "offline (HF_HUB_OFFLINE) and not in the local cache; {}",
                how_to()
            ),
        });
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .with_progress(true)
        .build()
        .map_err(|e| VitError::Hub {
            repo: repo.to_string(),
            message: e.to_string(),
        })?;
    files
        .iter()
        .map(|f| {
            api.model(repo.to_string())
                .get(f)
                .map_err(|e| VitError::Hub {
                    repo: repo.to_string(),
                    message: format!("{f}: {e}; offline? {}", how_to()),
                })
        })
        .collect()
}

/// The name of a Hugging Face image processor's config.
const PROCESSOR_CONFIG: &str = "preprocessor_config.json";

impl<B: Backend> Vit<B> {
    /// Loads a model from a folder, a `.pth` file or a hub id (see [`VitSource`]).
    pub fn load(spec: &str, device: &B::Device) -> Result<Self> {
        match VitSource::parse(spec)? {
            VitSource::HfFolder(dir) => Self::from_hf_folder(&dir, device),
            VitSource::TorchHub(path) => Self::from_torch_hub(&path, device),
            VitSource::HubId(id) => Self::from_hub_id(&id, None, device),
        }
    }

    /// `config.json` + `model.safetensors`, as Hugging Face saves them, and
    /// `preprocessor_config.json` if present (DINOv2 keeps the reference's
    /// pipeline regardless; see [`Preprocess::default`]).
    pub fn from_hf_folder(dir: &Path, device: &B::Device) -> Result<Self> {
        let processor = dir.join(PROCESSOR_CONFIG);
        Self::from_files(
            &dir.join("config.json"),
            &dir.join("model.safetensors"),
            processor.is_file().then_some(processor.as_path()),
            device,
        )
    }

    fn from_files(
        config: &Path,
        weights: &Path,
        processor: Option<&Path>,
        device: &B::Device,
    ) -> Result<Self> {
        let config = VitConfig::from_hf_json(config)?;
        let preprocess = match processor {
            // The preprint's DINOv2 pipeline is the reference's (256 square,
            // crop 224), not the processor's (shortest edge, bicubic).
            Some(path) if config.family != Family::Dinov2 => {
                Some(Preprocess::from_hf_json(path, &config)?)
            }
            _ => None,
        };
        let weights = SafetensorsFile::open(weights)?;
        let vit = Self::from_source(config, &weights, device)?;
        Ok(match preprocess {
            Some(p) => vit.with_preprocess(p),
            None => vit,
        })
    }

    /// A DINOv2 torch-hub checkpoint; the geometry is read off the tensor shapes.
    pub fn from_torch_hub(path: &Path, device: &B::Device) -> Result<Self> {
        let weights = TorchFile::open(path)?;
        let config = crate::dinov2::infer_from_hub(&weights)?;
        let parts = crate::dinov2::parts(&config, &weights, KeyLayout::TorchHub, device)?;
        Ok(Self::from_parts(
            config,
            Preprocess::default(),
            parts,
            device,
        ))
    }

    /// A hub id, through the hf-hub cache (`cache` overrides its location);
    /// downloads what is missing unless `HF_HUB_OFFLINE` is set.
    pub fn from_hub_id(repo: &str, cache: Option<&Path>, device: &B::Device) -> Result<Self> {
        let paths = hub_files(
            repo,
            &["config.json", "model.safetensors"],
            cache,
            hub_offline(),
        )?;
        // The processor config is small and optional: a repository without
        // one uses its family's defaults.
        let processor = hub_files(repo, &[PROCESSOR_CONFIG], cache, hub_offline())
            .ok()
            .and_then(|p| p.into_iter().next());
        Self::from_files(&paths[0], &paths[1], processor.as_deref(), device)
    }
}

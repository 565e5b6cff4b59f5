//! Finding an SAE from what a user typed: a file, or a Hugging Face hub id
//! resolved through hf-hub's cache like the backbone (`sae_steer_vit::load`).
//!
//! - an existing path is a file (saev `sae.pt` or one of our safetensors);
//! - otherwise `owner/name` means the file `sae.pt` of that hub repository,
//!   and `owner/name:path/in/repo` names another file of it.
//!
//! The cache is looked at first, so nothing is downloaded for a file that is
//! already there; with `HF_HUB_OFFLINE` set a missing file is an error that
//! says which URL to fetch and where to put it.

use std::path::{Path, PathBuf};

use sae_steer_vit::load::{hub_files, hub_offline};

use crate::error::{Result, SaeError};

/// The file a hub id without `:file` refers to (saev's checkpoint name).
pub const DEFAULT_SAE_FILE: &str = "sae.pt";

/// The published DINOv2 SAE of the preprint (ViT-B/14 with registers, layer 10,
/// 24,576 latents, trained on ImageNet-1K).
pub const PUBLISHED_DINOV2_SAE: &str = "osunlp/SAE_DINOv2_24K_ViT-B-14_IN1K";

/// Where an SAE comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaeSource {
    /// A local file.
    File(PathBuf),
    /// A file of a Hugging Face hub model repository.
    Hub {
        /// `owner/name`
        repo: String,
        /// Path of the file inside the repository, e.g. `sae.pt`.
        file: String,
    },
}

impl SaeSource {
    /// Existing files win; otherwise `owner/name[:file]` is a hub id.
    pub fn parse(spec: &str) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_file() {
            return Ok(Self::File(path.to_path_buf()));
        }
        if path.is_dir() {
            return Err(SaeError::Hub {
                spec: spec.to_string(),
                message: "is a folder but not a SAELens one (cfg.json + sae_weights.safetensors); \
                          give the SAE file inside it (e.g. sae.pt)"
                    .into(),
            });
        }
        // `runs/sae.pt` is a missing file, not the hub repository `runs/sae.pt`.
        let file_like = [".pt", ".safetensors"].iter().any(|e| spec.ends_with(e));
        if !spec.contains(':') && file_like {
            return Err(SaeError::Hub {
                spec: spec.to_string(),
                message: "no such file".into(),
            });
        }
        let (repo, file) = spec.split_once(':').unwrap_or((spec, DEFAULT_SAE_FILE));
        if valid_repo(repo) && valid_file(file) {
            return Ok(Self::Hub {
                repo: repo.to_string(),
                file: file.to_string(),
            });
        }
        Err(SaeError::Hub {
            spec: spec.to_string(),
            message: "no such file, and not a hub id of the form owner/name or owner/name:file"
                .into(),
        })
    }

    /// The local path of the SAE file: the file itself, or the hub file from
    /// the hf-hub cache at `cache` (default: `HF_HUB_CACHE`, else
    /// `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), downloaded into it
    /// first unless `offline`.
    pub fn resolve(&self, cache: Option<&Path>, offline: bool) -> Result<PathBuf> {
        match self {
            Self::File(path) => Ok(path.clone()),
            Self::Hub { repo, file } => fetch(repo, file, cache, offline),
        }
    }
}

/// Resolves a user's SAE string to a local file (see [`SaeSource`]), with the
/// default cache and `HF_HUB_OFFLINE` from the environment.
pub fn resolve_sae(spec: &str) -> Result<PathBuf> {
    SaeSource::parse(spec)?.resolve(None, hub_offline())
}

/// The hf-hub cache folder: `HF_HUB_CACHE` as in the Python client, which
/// hf-hub itself ignores, else hf-hub's own choice.
fn default_cache() -> PathBuf {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => hf_hub::Cache::from_env().path().clone(),
    }
}

fn fetch(repo: &str, file: &str, cache: Option<&Path>, offline: bool) -> Result<PathBuf> {
    let cache = cache.map_or_else(default_cache, Path::to_path_buf);
    // Offline lookup first: it touches only the cache, so a cached file never
    // needs the network (and never fails for the lack of it).
    if let Ok(mut paths) = hub_files(repo, &[file], Some(&cache), true)
        && let Some(path) = paths.pop()
    {
        return Ok(path);
    }
    let spec = format!("{repo}:{file}");
    let how_to = format!(
        "download https://huggingface.co/{repo}/resolve/main/{file} and pass the file's path instead, \
         or put it in the hf-hub cache under {} (snapshots/<revision>/{file} with refs/main naming the revision)",
        cache
            .join(format!("models--{}", repo.replace('/', "--")))
            .display()
    );
    if offline {
        return Err(SaeError::Hub {
            spec,
            message: format!(
                "{file} is not in the local hf-hub cache and downloads are off (HF_HUB_OFFLINE); {how_to}"
            ),
        });
    }
    hub_files(repo, &[file], Some(&cache), false)
        .map_err(|e| SaeError::Hub {
            spec: spec.clone(),
            message: sae_steer_files::ErrorChain(&e).to_string(),
        })?
        .pop()
        .ok_or_else(|| SaeError::Hub {
            spec,
            message: format!("the hub client returned no path; {how_to}"),
        })
}

/// `owner/name` with the characters Hugging Face allows.
fn valid_repo(repo: &str) -> bool {
    let parts: Vec<&str> = repo.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// A relative path inside a repository that cannot climb out of the cache.
fn valid_file(file: &str) -> bool {
    !file.is_empty()
        && !file.starts_with('/')
        && file
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

//! The typed schema of `data-manifests/*.toml` (documented for humans in
//! `data-manifests/README.md`). Unknown keys are errors, so a typo in a
//! manifest cannot silently disable a check.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{FetchError, Result};

/// File names in the manifest folder that are not download manifests.
pub const LOCK_FILE: &str = "lock.toml";
pub const MANUAL_FEATURES_FILE: &str = "manual-features.toml";

/// One downloadable item (`ade20k.toml`, `dinov2.toml`, `sae.toml`): zip
/// archives unpacked into the data folder, Hugging Face hub files placed in
/// the hf-hub cache, and plain files.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceManifest {
    /// What `--only` selects.
    pub name: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    #[serde(default, rename = "archive", skip_serializing_if = "Vec::is_empty")]
    pub archives: Vec<Archive>,
    #[serde(default, rename = "hub", skip_serializing_if = "Vec::is_empty")]
    pub hub: Vec<HubRepo>,
    #[serde(default, rename = "url", skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<UrlFile>,
}

/// A zip archive downloaded to `<data-dir>/downloads/<file>` and unpacked to
/// `<data-dir>/<root>`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Archive {
    pub url: String,
    /// File name of the download.
    pub file: String,
    /// Exact size in bytes, when known in advance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Lower-case hex SHA-256, when known in advance; otherwise the lock
    /// file records it on the first download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The single top-level folder of the zip; it becomes `<data-dir>/<root>`.
    pub root: String,
    pub layout: Layout,
}

/// What an unpacked dataset must contain, relative to its root.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Files that must exist and be non-empty.
    #[serde(default)]
    pub files: Vec<String>,
    /// Folders holding an exact number of files with one extension.
    #[serde(default)]
    pub dirs: Vec<DirCount>,
}

/// `count` files ending in `.extension` directly inside `path`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirCount {
    pub path: String,
    pub extension: String,
    pub count: usize,
}

/// Files of one Hugging Face model repository.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HubRepo {
    /// `owner/name`.
    pub repo: String,
    /// Branch, tag or commit to resolve when the lock file has no pin yet.
    #[serde(default = "default_revision")]
    pub revision: String,
    pub files: Vec<HubFile>,
}

fn default_revision() -> String {
    "main".into()
}

/// One file of a hub repository.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HubFile {
    /// Path inside the repository.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A plain file downloaded to `<data-dir>/<dest>`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UrlFile {
    pub url: String,
    /// Path relative to the data folder.
    pub dest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Another form of something the manifest already provides; fetched only
    /// with `--alternatives`.
    #[serde(default)]
    pub alternative: bool,
}

/// `manual-features.toml`: the user-written class -> latent table of
/// quantify's manual method, with the reference demo's guided examples.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ManualFeatures {
    /// The SAE the latent indices refer to (hub id or path).
    pub sae: String,
    /// 0-based block whose output the SAE reads.
    pub layer: usize,
    /// Number of SAE latents; every `latent` must be below it.
    pub d_sae: usize,
    #[serde(rename = "feature")]
    pub features: Vec<ManualFeature>,
}

/// One row of the manual table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ManualFeature {
    /// ADE20K class index, 1..=150.
    pub class: u16,
    /// Class name, for people reading the file.
    pub name: String,
    pub latent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<GuidedExample>,
}

/// A guided example of the reference demo.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuidedExample {
    /// ADE20K validation index (position in the sorted file list).
    pub image: usize,
    /// Slider value in [-10, 10].
    pub slider: f32,
}

/// Every manifest of a folder.
#[derive(Debug, Clone)]
pub struct Manifests {
    /// Sorted by file name.
    pub sources: Vec<(PathBuf, SourceManifest)>,
    pub manual_features: Option<ManualFeatures>,
}

impl Manifests {
    /// Reads and checks every `*.toml` of `dir`: `lock.toml` is skipped (see
    /// [`super::lock`]), `manual-features.toml` is a [`ManualFeatures`], the
    /// rest are [`SourceManifest`]s.
    pub fn load(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|e| FetchError::io(dir, e))?;
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| FetchError::io(dir, e))?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                paths.push(path);
            }
        }
        paths.sort();
        let mut sources: Vec<(PathBuf, SourceManifest)> = Vec::new();
        let mut manual_features = None;
        for path in paths {
            let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if file_name == LOCK_FILE {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| FetchError::io(&path, e))?;
            if file_name == MANUAL_FEATURES_FILE {
                let table =
                    ManualFeatures::parse(&text).map_err(|message| FetchError::Manifest {
                        path: path.clone(),
                        message,
                    })?;
                manual_features = Some(table);
                continue;
            }
            let manifest =
                SourceManifest::parse(&text).map_err(|message| FetchError::Manifest {
                    path: path.clone(),
                    message,
                })?;
            if let Some((other, _)) = sources.iter().find(|(_, m)| m.name == manifest.name) {
                return Err(FetchError::Manifest {
                    path,
                    message: format!(
                        "name {:?} is also used by {}",
                        manifest.name,
                        other.display()
                    ),
                });
            }
            sources.push((path, manifest));
        }
        Ok(Self {
            sources,
            manual_features,
        })
    }

    /// Names `--only` accepts.
    pub fn names(&self) -> Vec<&str> {
        self.sources.iter().map(|(_, m)| m.name.as_str()).collect()
    }
}

impl SourceManifest {
    /// Parses and checks one manifest; the error message says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "name {:?}: use letters, digits, '-' and '_'",
                self.name
            ));
        }
        if self.archives.is_empty() && self.hub.is_empty() && self.urls.is_empty() {
            return Err("nothing to fetch: no [[archive]], [[hub]] or [[url]]".into());
        }
        for a in &self.archives {
            check_url(&a.url, a.sha256.as_deref())?;
            check_file_name(&a.file)?;
            check_relative(&a.root)?;
            check_sha256(a.sha256.as_deref())?;
            for f in &a.layout.files {
                check_relative(f)?;
            }
            for d in &a.layout.dirs {
                check_relative(&d.path)?;
            }
        }
        for h in &self.hub {
            let parts: Vec<&str> = h.repo.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty() || p.starts_with('.')) {
                return Err(format!("hub repo {:?}: expected owner/name", h.repo));
            }
            // It names `refs/<revision>` in the cache and is part of the URL.
            if !is_url_path(&h.revision) {
                return Err(format!(
                    "hub repo {}: bad revision {:?}",
                    h.repo, h.revision
                ));
            }
            if h.files.is_empty() {
                return Err(format!("hub repo {}: no files", h.repo));
            }
            for f in &h.files {
                check_relative(&f.name)?;
                if !is_url_path(&f.name) {
                    return Err(format!(
                        "hub repo {}: file {:?}: use letters, digits, '.', '_', '-' and '/'",
                        h.repo, f.name
                    ));
                }
                check_sha256(f.sha256.as_deref())?;
            }
        }
        for u in &self.urls {
            check_url(&u.url, u.sha256.as_deref())?;
            check_relative(&u.dest)?;
            check_sha256(u.sha256.as_deref())?;
        }
        Ok(())
    }
}

impl ManualFeatures {
    /// Parses and checks the table: classes in 1..=150, each at most once,
    /// latents below `d_sae`, sliders in [-10, 10].
    pub fn parse(text: &str) -> Result<Self, String> {
        let table: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut seen = std::collections::BTreeSet::new();
        for f in &table.features {
            if !(1..=150).contains(&f.class) {
                return Err(format!(
                    "class {} ({}): ADE20K classes are 1..=150",
                    f.class, f.name
                ));
            }
            if !seen.insert(f.class) {
                return Err(format!("class {} ({}) appears twice", f.class, f.name));
            }
            if f.latent as usize >= table.d_sae {
                return Err(format!(
                    "class {} ({}): latent {} is not below d_sae = {}",
                    f.class, f.name, f.latent, table.d_sae
                ));
            }
            if let Some(ex) = f.example
                && !(-10.0..=10.0).contains(&ex.slider)
            {
                return Err(format!(
                    "class {} ({}): slider {} is outside [-10, 10]",
                    f.class, f.name, ex.slider
                ));
            }
        }
        Ok(table)
    }
}

/// The downloader's rule ([`super::download::check_url`]), checked when the
/// manifest is read: https, or plain http only to a loopback host or with the
/// file's sha256 in the manifest entry itself (ADE20K is served over http
/// only; its published hash, not the transport, is what vouches for it).
fn check_url(url: &str, sha256: Option<&str>) -> Result<(), String> {
    super::download::check_url(url, false, sha256.is_some())
        .map_err(|reason| format!("url {url:?}: {reason}"))
}

/// Relative, `/`-separated, made of URL- and path-safe characters only, with
/// no empty, `.` or `..` segment.
fn is_url_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        Err(format!("file {name:?}: expected a plain file name"))
    } else {
        Ok(())
    }
}

/// Paths in manifests stay inside the folder they are relative to.
fn check_relative(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && !path.contains('\\')
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "path {path:?}: expected a relative path without '..'"
        ))
    }
}

fn check_sha256(hash: Option<&str>) -> Result<(), String> {
    match hash {
        Some(h) if !is_sha256_hex(h) => {
            Err(format!("sha256 {h:?}: expected 64 lower-case hex digits"))
        }
        _ => Ok(()),
    }
}

/// Whether `s` is a lower-case hex SHA-256.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

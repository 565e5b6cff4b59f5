//! `data-manifests/lock.toml`: sizes and SHA-256 hashes that could not be
//! written into a manifest in advance, recorded on the first successful
//! download and checked on every later one; for hub repositories also the
//! commit a moving revision (`main`) resolved to, so later downloads fetch
//! exactly the same files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{FetchError, Result};
use super::manifest::is_sha256_hex;

const HEADER: &str = "\
# Written by `cargo xtask fetch`: sizes and SHA-256 hashes learned on the first
# download (and the commit each hub revision resolved to), checked on every
# later fetch. Commit this file. Delete an entry to accept a changed upstream
# file.

";

/// The whole lock file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Plain downloads and archives, by URL.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub url: BTreeMap<String, LockedFile>,
    /// Hugging Face repositories, by `owner/name`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hub: BTreeMap<String, LockedRepo>,
}

/// A file's identity.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LockedFile {
    pub size: u64,
    pub sha256: String,
}

/// A hub repository pinned to one commit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LockedRepo {
    /// The revision the manifest asked for when the pin was taken.
    pub revision: String,
    /// The commit it resolved to.
    pub commit: String,
    #[serde(default)]
    pub files: BTreeMap<String, LockedFile>,
}

/// The lock file on disk: read once, updated in memory, written back
/// (atomically) after each item that added something.
#[derive(Debug)]
pub struct LockFile {
    pub path: PathBuf,
    pub lock: Lock,
}

impl LockFile {
    /// Reads `path`; a missing file is an empty lock.
    pub fn load(path: &Path) -> Result<Self> {
        let lock = match std::fs::read_to_string(path) {
            Ok(text) => Lock::parse(&text).map_err(|message| FetchError::Manifest {
                path: path.to_path_buf(),
                message,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Lock::default(),
            Err(e) => return Err(FetchError::io(path, e)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            lock,
        })
    }

    /// Writes the lock atomically ([`write_atomic`]), so a crash never leaves
    /// half a lock file.
    pub fn save(&self) -> Result<()> {
        let body = toml::to_string_pretty(&self.lock).map_err(|e| FetchError::Manifest {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&self.path, format!("{HEADER}{body}").as_bytes())
    }
}

impl Lock {
    /// Parses and checks a lock file's text; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lock: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        lock.check()?;
        Ok(lock)
    }

    fn check(&self) -> Result<(), String> {
        let files = self.url.iter().map(|(k, f)| (k.as_str(), f)).chain(
            self.hub
                .values()
                .flat_map(|r| r.files.iter().map(|(k, f)| (k.as_str(), f))),
        );
        for (key, f) in files {
            if !is_sha256_hex(&f.sha256) {
                return Err(format!(
                    "{key}: sha256 {:?} is not 64 lower-case hex digits",
                    f.sha256
                ));
            }
        }
        for (repo, r) in &self.hub {
            if !super::hub::is_commit_id(&r.commit) {
                return Err(format!("{repo}: bad commit {:?}", r.commit));
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically through the toolkit's one
/// implementation ([`sae_steer_files::write_atomic`]: an exclusive temporary
/// unique to this process and call, fsync, rename, folder fsync).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    sae_steer_files::write_atomic(path, bytes).map_err(|e| FetchError::io(path, e))
}

//! Placing downloaded Hugging Face files in the hf-hub cache layout, which
//! the model loaders read (`hf_hub::Cache::get`):
//!
//! ```text
//! <cache>/models--owner--name/blobs/<etag>            the bytes
//! <cache>/models--owner--name/snapshots/<commit>/<f>  link to the blob
//! <cache>/models--owner--name/refs/<revision>         the commit
//! ```

use std::path::{Path, PathBuf};

use hf_hub::{Repo, RepoType};

use super::error::{FetchError, Result};

/// One hf-hub cache folder.
#[derive(Debug, Clone)]
pub struct HubCache {
    root: PathBuf,
}

impl HubCache {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Where hf-hub (and so the model loaders) look by default: `$HF_HOME/hub`,
    /// else `~/.cache/huggingface/hub`.
    pub fn default_root() -> Option<PathBuf> {
        if std::env::var_os("HF_HOME").is_some() {
            return Some(hf_hub::Cache::from_env().path().clone());
        }
        std::env::home_dir().map(|h| h.join(".cache").join("huggingface").join("hub"))
    }

    /// `<cache>/models--owner--name`.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root
            .join(Repo::new(repo.to_string(), RepoType::Model).folder_name())
    }

    /// The commit `refs/<revision>` names, if any.
    pub fn read_ref(&self, repo: &str, revision: &str) -> Option<String> {
        let path = self.repo_dir(repo).join("refs").join(revision);
        let commit = std::fs::read_to_string(path).ok()?;
        let commit = commit.trim();
        is_commit_id(commit).then(|| commit.to_string())
    }

    /// The folder whose [`sae_steer_files::FolderLock`] a download into this
    /// repository holds: under `<cache>/.locks/`, where the Python hub
    /// library keeps its locks too, so the repository folder itself holds
    /// only what hf-hub expects.
    pub fn lock_dir(&self, repo: &str) -> PathBuf {
        self.root
            .join(".locks")
            .join(Repo::new(repo.to_string(), RepoType::Model).folder_name())
    }

    pub fn snapshot_path(&self, repo: &str, commit: &str, file: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("snapshots")
            .join(commit)
            .join(file)
    }

    /// Where a download of `file` is written before it is verified.
    pub fn incoming_path(&self, repo: &str, revision: &str, file: &str) -> PathBuf {
        let flat: String = format!("{revision}-{file}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.repo_dir(repo)
            .join("blobs")
            .join(format!("incoming-{flat}"))
    }

    /// Moves a verified download into `blobs/<blob>` and links
    /// `snapshots/<commit>/<file>` to it. Returns the snapshot path.
    pub fn install(
        &self,
        repo: &str,
        commit: &str,
        file: &str,
        downloaded: &Path,
        blob: &str,
    ) -> Result<PathBuf> {
        let blob_path = self.repo_dir(repo).join("blobs").join(blob);
        super::download::rename_durably(downloaded, &blob_path)?;
        let pointer = self.snapshot_path(repo, commit, file);
        let parent = pointer.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
        if std::fs::symlink_metadata(&pointer).is_ok() {
            std::fs::remove_file(&pointer).map_err(|e| FetchError::io(&pointer, e))?;
        }
        link_or_move(&blob_path, &pointer, file)?;
        sae_steer_files::sync_dir(parent).map_err(|e| FetchError::io(parent, e))?;
        Ok(pointer)
    }

    /// Points `refs/<revision>` at `commit` (what hf-hub writes after a
    /// download: the bare commit, no newline), atomically.
    pub fn set_ref(&self, repo: &str, revision: &str, commit: &str) -> Result<()> {
        let path = self.repo_dir(repo).join("refs").join(revision);
        super::lock::write_atomic(&path, commit.trim().as_bytes())
    }

    /// Removes a snapshot entry and the blob it links to (after a failed check).
    pub fn remove(&self, repo: &str, pointer: &Path) -> Result<()> {
        let repo_dir =
            std::fs::canonicalize(self.repo_dir(repo)).unwrap_or_else(|_| self.repo_dir(repo));
        if let Ok(target) = std::fs::canonicalize(pointer)
            && target.starts_with(&repo_dir)
        {
            super::download::remove_if_exists(&target)?;
        }
        super::download::remove_if_exists(pointer)
    }
}

/// Relative symlink, as hf-hub makes them (the cache folder can move); where
/// links are unavailable the blob itself moves to the snapshot path.
fn link_or_move(blob: &Path, pointer: &Path, file: &str) -> Result<()> {
    #[cfg(unix)]
    {
        // snapshots/<commit>/<file>: one `..` per folder of `file`, plus two.
        let depth = Path::new(file).components().count() + 1;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(blob.file_name().unwrap_or_default());
        std::os::unix::fs::symlink(&target, pointer).map_err(|e| FetchError::io(pointer, e))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        std::fs::rename(blob, pointer).map_err(|e| FetchError::io(pointer, e))
    }
}

/// Whether `s` can be a commit id: what names `snapshots/<commit>/`, so it
/// must be one plain path component (git's are 40 hex digits).
pub fn is_commit_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A file name for the blob: the server's ETag (what hf-hub uses: the
/// SHA-256 for LFS files, the git blob id otherwise) when it is a plain hex
/// string, else our SHA-256.
pub fn blob_name(etag: Option<&str>, sha256: &str) -> String {
    match etag {
        Some(e) if !e.is_empty() && e.len() <= 128 && e.bytes().all(|b| b.is_ascii_hexdigit()) => {
            e.to_string()
        }
        _ => sha256.to_string(),
    }
}

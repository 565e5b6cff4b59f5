//! `cargo xtask fetch`: downloads what `data-manifests/*.toml` describe
//! (ADE20K, DINOv2, the published SAE), verifies sizes and SHA-256 hashes,
//! unpacks archives and places Hugging Face files in the hf-hub cache.
//!
//! Hub files go through the same HTTP code as everything else (plain
//! `https://huggingface.co/<repo>/resolve/<rev>/<file>` URLs) and are then
//! laid out exactly as hf-hub lays them out, so the model loaders find them
//! offline; one code path gives resume, hash checks, the lock file and
//! offline tests for all downloads.
//!
//! Every file ends up pinned by a SHA-256: the manifest's, else the one
//! `lock.toml` recorded when the file was first fetched (trust on first use,
//! announced on the terminal; commit the lock), and every later fetch is
//! checked against it. What a server may do is bounded in [`download`]
//! (redirect policy, size limits) and what an archive may do in [`archive`].

mod archive;
mod download;
mod error;
mod hub;
mod lock;
mod manifest;
#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result as AnyResult};

use archive::{Marker, check_layout, unpack_limit, unpack_zip};
use download::{
    Claim, DEFAULT_UNSIZED_LIMIT, Downloader, Expected, remove_if_exists, rename_durably,
    verify_file,
};
pub use error::FetchError;
use error::Result;
use hub::HubCache;
use lock::{LockFile, LockedFile, LockedRepo};
use manifest::{Archive, HubRepo, LOCK_FILE, Manifests, SourceManifest, UrlFile};

/// Command-line flags.
#[derive(clap::Args)]
pub struct Args {
    /// Fetch only these items (manifest names: ade20k, dinov2, sae); repeat
    /// the flag or separate with commas.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Folder for datasets and plain downloads [default: data/ at the
    /// repository root].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// hf-hub cache for hub files [default: $HF_HOME/hub, else
    /// ~/.cache/huggingface/hub, where the model loaders look].
    #[arg(long)]
    hf_cache: Option<PathBuf>,
    /// Manifest folder [default: data-manifests/ at the repository root].
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// No network: check and unpack what is on disk, and say what to
    /// download by hand for the rest. `HF_HUB_OFFLINE=1` does this for hub
    /// files only.
    #[arg(long)]
    offline: bool,
    /// Re-hash files that are already present instead of checking sizes only.
    #[arg(long)]
    verify: bool,
    /// Keep downloaded archives after unpacking them.
    #[arg(long)]
    keep_archives: bool,
    /// Refuse every file whose SHA-256 neither its manifest nor lock.toml
    /// pins, instead of recording it on first use (for CI and reproductions
    /// from a committed lock).
    #[arg(long)]
    locked: bool,
    /// Also fetch alternative forms (the torch-hub DINOv2 checkpoint).
    #[arg(long)]
    alternatives: bool,
}

/// Everything a fetch needs; tests build one pointing at a loopback server.
#[derive(Debug, Clone)]
pub struct Options {
    pub manifests_dir: PathBuf,
    pub data_dir: PathBuf,
    pub hf_cache: PathBuf,
    /// `https://huggingface.co`, or `HF_ENDPOINT`.
    pub hf_endpoint: String,
    pub only: Vec<String>,
    pub offline: bool,
    /// Offline for hub files only (`HF_HUB_OFFLINE`).
    pub hub_offline: bool,
    pub verify: bool,
    pub keep_archives: bool,
    /// No trust on first use: a file without a pinned SHA-256 is an error.
    pub locked: bool,
    pub alternatives: bool,
    pub progress: bool,
    pub attempts: u32,
    pub retry_delay: Duration,
    /// The most bytes accepted for a file whose size no manifest or lock
    /// entry states ([`Downloader::unsized_limit`]).
    pub unsized_limit: u64,
}

/// Present files smaller than this are re-hashed on every run, not only
/// compared by size (`config.json` costs nothing to hash; a swapped one would
/// otherwise go unnoticed without `--verify`).
const ALWAYS_REHASH_BELOW: u64 = 16 << 20;

/// What happened to one file or dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Already in place and checked (size, or hash with `--verify`); no request.
    Present,
    /// Found on disk without a record (a file placed by hand, an existing
    /// hf-hub cache): hashed, checked and recorded; no request.
    Adopted,
    /// Downloaded, verified (and unpacked).
    Downloaded,
    /// An alternative that was not asked for.
    NotRequested,
}

/// One line of the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Manifest name (`ade20k`, ...).
    pub item: String,
    /// The file, repository file or dataset folder.
    pub what: String,
    pub outcome: Outcome,
    pub path: PathBuf,
}

pub fn run(args: Args) -> AnyResult<()> {
    let root = crate::root();
    let hf_cache = match args.hf_cache {
        Some(dir) => dir,
        None => HubCache::default_root().context(
            "cannot find the home folder for the hf-hub cache: set HF_HOME or pass --hf-cache",
        )?,
    };
    let options = Options {
        manifests_dir: args
            .manifests
            .unwrap_or_else(|| root.join("data-manifests")),
        data_dir: args.data_dir.unwrap_or_else(|| root.join("data")),
        hf_cache,
        hf_endpoint: std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "https://huggingface.co".into()),
        only: args.only,
        offline: args.offline,
        hub_offline: std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0"),
        verify: args.verify,
        keep_archives: args.keep_archives,
        locked: args.locked,
        alternatives: args.alternatives,
        progress: true,
        attempts: 5,
        retry_delay: Duration::from_secs(2),
        unsized_limit: DEFAULT_UNSIZED_LIMIT,
    };
    let manifests = Manifests::load(&options.manifests_dir)?;
    if let Some(table) = &manifests.manual_features {
        println!(
            "manual-features.toml: {} class -> latent picks for {} (layer {})",
            table.features.len(),
            table.sae,
            table.layer
        );
    }
    // One item at a time, so that a failure (say, no route to one host)
    // does not keep the others from being fetched.
    let selected: Vec<String> = if options.only.is_empty() {
        manifests.names().into_iter().map(String::from).collect()
    } else {
        options.only.clone()
    };
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for name in selected {
        let one = Options {
            only: vec![name.clone()],
            ..options.clone()
        };
        match fetch(&one) {
            Ok(r) => reports.extend(r),
            Err(e) => {
                eprintln!("xtask fetch {name}: {}\n", sae_steer_files::ErrorChain(&e));
                failed.push(name);
            }
        }
    }
    for r in &reports {
        let how = match r.outcome {
            Outcome::Present => "present",
            Outcome::Adopted => "found on disk, verified",
            Outcome::Downloaded => "downloaded, verified",
            Outcome::NotRequested => "skipped (pass --alternatives)",
        };
        println!("{:8} {:50} {how:30} {}", r.item, r.what, r.path.display());
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "not fetched: {} (see the messages above)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Fetches every selected manifest item; stops at the first error (what was
/// already fetched stays, and the lock file keeps what was learned).
pub fn fetch(options: &Options) -> Result<Vec<Report>> {
    let manifests = Manifests::load(&options.manifests_dir)?;
    let names = manifests.names();
    if let Some(unknown) = options.only.iter().find(|n| !names.contains(&n.as_str())) {
        return Err(FetchError::Manifest {
            path: options.manifests_dir.clone(),
            message: format!(
                "--only {unknown}: no such manifest; known: {}",
                names.join(", ")
            ),
        });
    }
    // Partial downloads, staging folders and the lock file are shared by
    // name: a second fetch into the same data folder waits its turn rather
    // than writing into the same `.part` file (the kernel frees the lock if
    // this process is killed).
    let _data_lock = sae_steer_files::FolderLock::acquire(&options.data_dir)
        .map_err(|e| FetchError::io(&options.data_dir, e))?;
    let mut downloader = Downloader::new(options.progress);
    downloader.attempts = options.attempts;
    downloader.retry_delay = options.retry_delay;
    downloader.unsized_limit = options.unsized_limit;
    let mut fetcher = Fetcher {
        options,
        downloader,
        lock: LockFile::load(&options.manifests_dir.join(LOCK_FILE))?,
        reports: Vec::new(),
    };
    for (path, manifest) in &manifests.sources {
        if options.only.is_empty() || options.only.contains(&manifest.name) {
            fetcher.item(path, manifest)?;
        }
    }
    Ok(fetcher.reports)
}

struct Fetcher<'a> {
    options: &'a Options,
    downloader: Downloader,
    lock: LockFile,
    reports: Vec<Report>,
}

impl Fetcher<'_> {
    fn item(&mut self, path: &Path, manifest: &SourceManifest) -> Result<()> {
        let source = path.display().to_string();
        for a in &manifest.archives {
            let (outcome, dir) = self.archive(&source, &manifest.name, a)?;
            self.report(&manifest.name, a.root.clone(), outcome, dir);
        }
        for h in &manifest.hub {
            self.hub_repo(&source, &manifest.name, h)?;
        }
        for u in &manifest.urls {
            let dest = self.options.data_dir.join(&u.dest);
            let outcome = if u.alternative && !self.options.alternatives {
                Outcome::NotRequested
            } else {
                self.url_file(&source, &manifest.name, u, &dest)?
            };
            self.report(&manifest.name, u.dest.clone(), outcome, dest);
        }
        Ok(())
    }

    fn report(&mut self, item: &str, what: String, outcome: Outcome, path: PathBuf) {
        self.reports.push(Report {
            item: item.to_string(),
            what,
            outcome,
            path,
        });
    }

    /// The size and hash a file must have: from the manifest, else from the
    /// lock; both present and different is an error (the manifest was edited
    /// without updating the lock).
    fn expected(
        &self,
        source: &str,
        key: &str,
        size: Option<u64>,
        sha256: Option<&str>,
        locked: Option<&LockedFile>,
    ) -> Result<Expected> {
        let lock_name = self.lock.path.display().to_string();
        let conflict = |what: &str, m: String, l: String| FetchError::Manifest {
            path: self.lock.path.clone(),
            message: format!(
                "{key}: {source} says {what} {m} but the lock says {l}; delete the lock entry if the manifest is right"
            ),
        };
        let size = match (size, locked.map(|l| l.size)) {
            (Some(m), Some(l)) if m != l => {
                return Err(conflict("size", m.to_string(), l.to_string()));
            }
            (Some(m), _) => Some(Claim::new(m, source)),
            (None, Some(l)) => Some(Claim::new(l, lock_name.clone())),
            (None, None) => None,
        };
        let sha256 = match (sha256, locked.map(|l| l.sha256.as_str())) {
            (Some(m), Some(l)) if m != l => {
                return Err(conflict("sha256", m.to_string(), l.to_string()));
            }
            (Some(m), _) => Some(Claim::new(m.to_string(), source)),
            (None, Some(l)) => Some(Claim::new(l.to_string(), lock_name)),
            (None, None) if self.options.locked => {
                return Err(FetchError::Unpinned {
                    what: key.to_string(),
                    lock: self.lock.path.clone(),
                });
            }
            (None, None) => None,
        };
        Ok(Expected {
            size,
            sha256,
            sha256_header: None,
        })
    }

    /// Records a file whose size or hash the manifest does not state.
    fn remember_url(
        &mut self,
        url: &str,
        manifest_size: Option<u64>,
        manifest_sha: Option<&str>,
        size: u64,
        sha256: &str,
    ) -> Result<()> {
        if manifest_size.is_some() && manifest_sha.is_some() {
            return Ok(());
        }
        let entry = LockedFile {
            size,
            sha256: sha256.to_string(),
        };
        if self.lock.lock.url.get(url) != Some(&entry) {
            if manifest_sha.is_none() && !self.lock.lock.url.contains_key(url) {
                announce_first_use(url, &entry, &self.lock.path);
            }
            self.lock.lock.url.insert(url.to_string(), entry);
            self.lock.save()?;
        }
        Ok(())
    }

    fn archive(&mut self, source: &str, item: &str, a: &Archive) -> Result<(Outcome, PathBuf)> {
        let data = &self.options.data_dir;
        let root = data.join(&a.root);
        let expected = self.expected(
            source,
            &a.url,
            a.size,
            a.sha256.as_deref(),
            self.lock.lock.url.get(&a.url),
        )?;
        let zip = data.join("downloads").join(&a.file);
        if root.exists() {
            let marker = Marker::read(&root)?;
            let layout = check_layout(&root, &a.layout);
            return match (marker, layout) {
                (_, Err(e)) => Err(FetchError::Layout {
                    dir: root.clone(),
                    problem: format!(
                        "{e}. It was not unpacked completely by `cargo xtask fetch` or was changed since: \
                         move it away and rerun"
                    ),
                }),
                (Some(m), Ok(())) => {
                    if let Some(want) = expected.sha256.as_ref().filter(|w| w.value != m.sha256) {
                        return Err(FetchError::Layout {
                            dir: root.clone(),
                            problem: format!(
                                "unpacked from an archive with SHA-256 {}, but {} expects {}: move it away and rerun",
                                m.sha256, want.by, want.value
                            ),
                        });
                    }
                    self.remember_url(&a.url, a.size, a.sha256.as_deref(), m.size, &m.sha256)?;
                    Ok((Outcome::Present, root))
                }
                (None, Ok(())) => {
                    eprintln!(
                        "{}: not unpacked by `cargo xtask fetch` (no {}); its layout matches {source}, using it as is",
                        root.display(),
                        archive::MARKER_FILE
                    );
                    Ok((Outcome::Present, root))
                }
            };
        }
        let manual = archive_manual(a, &zip, &root, item);
        let (outcome, size, sha256) = if zip.exists() {
            match verify_file(
                &zip,
                &zip.display().to_string(),
                &expected,
                self.options.progress,
            ) {
                Ok((size, sha)) => (Outcome::Adopted, size, sha),
                Err(e) => {
                    set_aside(&zip)?;
                    return Err(e);
                }
            }
        } else if self.options.offline {
            return Err(FetchError::Offline {
                what: a.url.clone(),
                manual,
            });
        } else {
            let got = self.downloader.fetch(&a.url, &zip, &expected, &manual)?;
            (Outcome::Downloaded, got.size, got.sha256)
        };
        // Unpack beside the target and move into place only after the layout
        // check: a half-unpacked dataset never sits at the final name.
        let staging = data.join(format!(".unpack-{}", a.root.replace('/', "_")));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| FetchError::io(&staging, e))?;
        }
        let unpacked = unpack_zip(&zip, &staging, unpack_limit(size), self.options.progress)
            .and_then(|()| {
                let inner = staging.join(&a.root);
                check_layout(&inner, &a.layout)?;
                Marker {
                    url: a.url.clone(),
                    size,
                    sha256: sha256.clone(),
                }
                .write(&inner)?;
                if let Some(parent) = root.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
                }
                rename_durably(&inner, &root)
            });
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| FetchError::io(&staging, e))?;
        }
        unpacked?;
        self.remember_url(&a.url, a.size, a.sha256.as_deref(), size, &sha256)?;
        if !self.options.keep_archives {
            remove_if_exists(&zip)?;
        }
        Ok((outcome, root))
    }

    fn url_file(&mut self, source: &str, item: &str, u: &UrlFile, dest: &Path) -> Result<Outcome> {
        let expected = self.expected(
            source,
            &u.url,
            u.size,
            u.sha256.as_deref(),
            self.lock.lock.url.get(&u.url),
        )?;
        let (outcome, size, sha256) = if dest.exists() {
            let known = expected.sha256.is_some() && !self.options.verify;
            if known && trusted_by_size(dest, &expected)? {
                return Ok(Outcome::Present);
            }
            match verify_file(
                dest,
                &dest.display().to_string(),
                &expected,
                self.options.progress,
            ) {
                Ok((size, sha)) if known => (Outcome::Present, size, sha),
                Ok((size, sha)) => (Outcome::Adopted, size, sha),
                Err(e) => {
                    set_aside(dest)?;
                    return Err(e);
                }
            }
        } else if self.options.offline {
            return Err(FetchError::Offline {
                what: u.url.clone(),
                manual: format!(
                    "Download {} by hand, save it as {} and rerun `cargo xtask fetch --only {item}{}` to check it.",
                    u.url,
                    dest.display(),
                    if u.alternative { " --alternatives" } else { "" }
                ),
            });
        } else {
            let manual = format!(
                "Without network: download {} elsewhere and save it as {}; the next fetch checks it.",
                u.url,
                dest.display()
            );
            let got = self.downloader.fetch(&u.url, dest, &expected, &manual)?;
            (Outcome::Downloaded, got.size, got.sha256)
        };
        self.remember_url(&u.url, u.size, u.sha256.as_deref(), size, &sha256)?;
        Ok(outcome)
    }

    fn hub_repo(&mut self, source: &str, item: &str, h: &HubRepo) -> Result<()> {
        let cache = HubCache::new(self.options.hf_cache.clone());
        let locked = self.lock.lock.hub.get(&h.repo).cloned();
        if let Some(l) = &locked
            && l.revision != h.revision
        {
            return Err(FetchError::Manifest {
                path: self.lock.path.clone(),
                message: format!(
                    "pins {} at revision {:?}, but {source} asks for {:?}: delete the lock entry to pin the new revision",
                    h.repo, l.revision, h.revision
                ),
            });
        }
        let mut files = locked.as_ref().map(|l| l.files.clone()).unwrap_or_default();
        let mut commit = locked.as_ref().map(|l| l.commit.clone());
        if commit.is_none() {
            // Nothing pinned yet: a complete copy already in the cache (from
            // an earlier hf-hub download) is adopted rather than downloaded.
            commit = cache.read_ref(&h.repo, &h.revision).filter(|c| {
                h.files
                    .iter()
                    .all(|f| cache.snapshot_path(&h.repo, c, &f.name).exists())
            });
        }
        let offline = self.options.offline || self.options.hub_offline;
        // Taken before the first download into the cache (two fetches would
        // share the `incoming-*` names), not for a cache that is only read.
        let mut cache_lock = None;
        for f in &h.files {
            let key = format!("{}/{}", h.repo, f.name);
            let mut expected = self.expected(
                source,
                &key,
                f.size,
                f.sha256.as_deref(),
                files.get(&f.name),
            )?;
            expected.sha256_header = Some("x-linked-etag");
            let on_disk = commit
                .as_ref()
                .map(|c| cache.snapshot_path(&h.repo, c, &f.name))
                .filter(|p| p.exists());
            if let Some(pointer) = on_disk {
                let known = files.contains_key(&f.name);
                if expected.sha256.is_none()
                    && let Some(name) = std::fs::canonicalize(&pointer)
                        .ok()
                        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .filter(|n| manifest::is_sha256_hex(n))
                {
                    // hf-hub names LFS blobs by their SHA-256.
                    expected.sha256 = Some(Claim::new(name, "the hf-hub blob name"));
                }
                let outcome =
                    if known && !self.options.verify && trusted_by_size(&pointer, &expected)? {
                        Outcome::Present
                    } else {
                        match verify_file(&pointer, &key, &expected, self.options.progress) {
                            Ok((size, sha256)) => {
                                files.insert(f.name.clone(), LockedFile { size, sha256 });
                                if known {
                                    Outcome::Present
                                } else {
                                    Outcome::Adopted
                                }
                            }
                            Err(e) => {
                                cache.remove(&h.repo, &pointer)?;
                                return Err(e);
                            }
                        }
                    };
                self.report(item, key, outcome, pointer);
                continue;
            }
            let manual = hub_manual(h, &cache);
            if offline {
                return Err(FetchError::Offline { what: key, manual });
            }
            if cache_lock.is_none() {
                let dir = cache.lock_dir(&h.repo);
                cache_lock = Some(
                    sae_steer_files::FolderLock::acquire(&dir)
                        .map_err(|e| FetchError::io(&dir, e))?,
                );
            }
            let revision = commit.clone().unwrap_or_else(|| h.revision.clone());
            let url = format!(
                "{}/{}/resolve/{}/{}",
                self.options.hf_endpoint.trim_end_matches('/'),
                h.repo,
                revision,
                f.name
            );
            let incoming = cache.incoming_path(&h.repo, &revision, &f.name);
            let got = self.downloader.fetch(&url, &incoming, &expected, &manual)?;
            let info = got.info.clone().unwrap_or_default();
            let served = match (&commit, info.repo_commit.as_deref()) {
                (Some(pinned), Some(c)) if pinned != c => {
                    Err(format!("serves commit {c}, but {pinned} was asked for"))
                }
                (Some(pinned), _) => Ok(pinned.clone()),
                (None, Some(c)) if hub::is_commit_id(c) => Ok(c.to_string()),
                (None, _) => Err(
                    "no usable X-Repo-Commit header (is HF_ENDPOINT a Hugging Face hub?)"
                        .to_string(),
                ),
            };
            let served = match served {
                Ok(c) => c,
                Err(message) => {
                    remove_if_exists(&got.path)?;
                    return Err(FetchError::BadResponse { url, message });
                }
            };
            let blob = hub::blob_name(
                info.linked_etag.as_deref().or(info.etag.as_deref()),
                &got.sha256,
            );
            let pointer = cache.install(&h.repo, &served, &f.name, &got.path, &blob)?;
            if f.sha256.is_none() && !files.contains_key(&f.name) {
                announce_first_use(
                    &key,
                    &LockedFile {
                        size: got.size,
                        sha256: got.sha256.clone(),
                    },
                    &self.lock.path,
                );
            }
            files.insert(
                f.name.clone(),
                LockedFile {
                    size: got.size,
                    sha256: got.sha256.clone(),
                },
            );
            commit = Some(served);
            self.report(item, key, Outcome::Downloaded, pointer);
        }
        let Some(commit) = commit else {
            return Ok(());
        };
        if cache.read_ref(&h.repo, &h.revision).as_deref() != Some(commit.as_str()) {
            if let Some(old) = cache.read_ref(&h.repo, &h.revision) {
                eprintln!(
                    "{}: refs/{} pointed at {old}; now at the pinned {commit}",
                    cache.repo_dir(&h.repo).display(),
                    h.revision
                );
            }
            cache.set_ref(&h.repo, &h.revision, &commit)?;
        }
        let entry = LockedRepo {
            revision: h.revision.clone(),
            commit,
            files,
        };
        if locked.as_ref() != Some(&entry) {
            self.lock.lock.hub.insert(h.repo.clone(), entry);
            self.lock.save()?;
        }
        Ok(())
    }
}

/// Whether a present file with a known hash may skip re-hashing: it has the
/// expected size and is big enough that hashing it costs real time (small
/// files, `config.json` among them, are always re-hashed).
fn trusted_by_size(path: &Path, expected: &Expected) -> Result<bool> {
    let len = std::fs::metadata(path)
        .map_err(|e| FetchError::io(path, e))?
        .len();
    Ok(len >= ALWAYS_REHASH_BELOW && expected.size.as_ref().is_none_or(|s| s.value == len))
}

/// Says that a file nothing pinned was just recorded in the lock: from now on
/// it is checked against that hash, and the lock should be committed.
fn announce_first_use(what: &str, entry: &LockedFile, lock: &Path) {
    eprintln!(
        "{what}: no pinned SHA-256; recorded {} ({} bytes) in {} on first use. \
         Later fetches are checked against it: commit that file",
        entry.sha256,
        entry.size,
        lock.display()
    );
}

/// Moves a file that failed its check away from its final name.
fn set_aside(path: &Path) -> Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".rejected");
    let aside = path.with_file_name(name);
    rename_durably(path, &aside)?;
    eprintln!("moved the rejected file to {}", aside.display());
    Ok(())
}

fn archive_manual(a: &Archive, zip: &Path, root: &Path, item: &str) -> String {
    let mut facts = Vec::new();
    if let Some(size) = a.size {
        facts.push(format!("{size} bytes"));
    }
    if let Some(sha) = &a.sha256 {
        facts.push(format!("SHA-256 {sha}"));
    }
    let facts = if facts.is_empty() {
        String::new()
    } else {
        format!(" ({})", facts.join(", "))
    };
    format!(
        "To fetch it by hand: download {}{facts} with a browser, curl or wget, save it as {} and rerun \
         `cargo xtask fetch --only {item}` to check and unpack it (or unpack it yourself so that {} holds {}).",
        a.url,
        zip.display(),
        root.display(),
        a.layout.files.first().map_or("its files", String::as_str)
    )
}

fn hub_manual(h: &HubRepo, cache: &HubCache) -> String {
    let names: Vec<&str> = h.files.iter().map(|f| f.name.as_str()).collect();
    let local = if names.len() == 1 {
        "pass the file's path instead of the hub id"
    } else {
        "put them in one folder and pass its path instead of the hub id"
    };
    format!(
        "To fetch it by hand: download {} from https://huggingface.co/{}/tree/{} and {local}, \
         or copy a hf-hub cache holding them (`huggingface-cli download {}` fills one) to {}.",
        names.join(", "),
        h.repo,
        h.revision,
        h.repo,
        cache.repo_dir(&h.repo).display()
    )
}

//! Unpacking a zip without letting any entry escape the target folder or
//! fill the disk, and checking an unpacked dataset against its manifest's
//! layout.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::error::{FetchError, Result};
use super::manifest::Layout;

/// Written into an unpacked dataset after its layout was checked: the quick
/// proof, on the next run, that it came from a verified archive.
pub const MARKER_FILE: &str = ".sae-steer-fetch.toml";

/// Contents of [`MARKER_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    pub url: String,
    pub size: u64,
    pub sha256: String,
}

impl Marker {
    /// `Ok(None)` when there is no marker.
    pub fn read(root: &Path) -> Result<Option<Self>> {
        let path = root.join(MARKER_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|e| FetchError::Manifest {
                    path,
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FetchError::io(path, e)),
        }
    }

    pub fn write(&self, root: &Path) -> Result<()> {
        let path = root.join(MARKER_FILE);
        let text = toml::to_string(self).map_err(|e| FetchError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        super::lock::write_atomic(&path, text.as_bytes())
    }
}

/// How many times its own size an archive may unpack to. Datasets of
/// images barely compress (ADE20K unpacks to about the size of its zip), so
/// this is generous for real data, while a decompression bomb (deflate
/// reaches about 1000:1) is stopped long before the disk fills.
pub const MAX_EXPANSION: u64 = 16;

/// Added to the bound, so a tiny archive of text files is not refused.
const EXPANSION_ALLOWANCE: u64 = 1 << 20;

/// The most bytes an archive of `archive_size` bytes may unpack to.
pub fn unpack_limit(archive_size: u64) -> u64 {
    archive_size
        .saturating_mul(MAX_EXPANSION)
        .saturating_add(EXPANSION_ALLOWANCE)
}

/// Unpacks `archive` into `target` (created), writing at most `limit` bytes
/// ([`unpack_limit`]). Every entry is checked before anything is written:
/// absolute paths, `..`, backslashes, links, a path used twice (or as both a
/// file and a folder) and declared sizes that add up past `limit` are
/// refused. While unpacking, an entry that inflates past its declared size
/// is refused at the first byte too many, and one that falls short of it is
/// refused too. The caller unpacks into a staging folder and deletes it on
/// error, so a hostile archive leaves nothing behind. Files and folders are
/// fsynced: the caller's rename into place publishes complete data only.
pub fn unpack_zip(archive: &Path, target: &Path, limit: u64, progress: bool) -> Result<()> {
    let zip_error = |e: zip::result::ZipError| FetchError::Zip {
        archive: archive.to_path_buf(),
        message: e.to_string(),
    };
    let file = File::open(archive).map_err(|e| FetchError::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(zip_error)?;
    let mut plan: Vec<Planned> = Vec::with_capacity(zip.len());
    let mut files = HashSet::new();
    let mut dirs = HashSet::new();
    let mut declared_total = 0u64;
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(zip_error)?;
        let name = entry.name().to_string();
        let unsafe_entry = |reason: String| FetchError::UnsafeZipEntry {
            archive: archive.to_path_buf(),
            entry: name.clone(),
            reason,
        };
        if entry.is_symlink() {
            return Err(unsafe_entry("symbolic links are not unpacked".into()));
        }
        let relative = safe_relative_path(&name)
            .ok_or_else(|| unsafe_entry("its path leaves the target folder".into()))?;
        let is_dir = entry.is_dir();
        let size = entry.size();
        for ancestor in relative.ancestors().skip(1) {
            if !ancestor.as_os_str().is_empty() {
                dirs.insert(ancestor.to_path_buf());
            }
        }
        if is_dir {
            dirs.insert(relative.clone());
        } else {
            if !files.insert(relative.clone()) {
                return Err(unsafe_entry(
                    "another entry has the same path (one would overwrite the other)".into(),
                ));
            }
            declared_total = declared_total
                .checked_add(size)
                .filter(|&t| t <= limit)
                .ok_or_else(|| {
                    unsafe_entry(format!(
                        "the entries declare more than {limit} bytes unpacked, {MAX_EXPANSION} times \
                         the archive's size (a decompression bomb?)"
                    ))
                })?;
        }
        plan.push(Planned {
            index: i,
            relative,
            is_dir,
            size,
        });
    }
    if let Some(clash) = plan
        .iter()
        .find(|p| !p.is_dir && dirs.contains(&p.relative))
    {
        return Err(FetchError::UnsafeZipEntry {
            archive: archive.to_path_buf(),
            entry: clash.relative.display().to_string(),
            reason: "it is both a file and a folder in this archive".into(),
        });
    }
    std::fs::create_dir_all(target).map_err(|e| FetchError::io(target, e))?;
    let bar = if progress {
        ProgressBar::new(plan.len() as u64).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} files ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        )
    } else {
        ProgressBar::hidden()
    };
    bar.set_message("unpacking");
    for p in &plan {
        let out = target.join(&p.relative);
        if p.is_dir {
            std::fs::create_dir_all(&out).map_err(|e| FetchError::io(&out, e))?;
        } else {
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
            }
            let entry = zip.by_index(p.index).map_err(zip_error)?;
            // `create_new`: the plan has no duplicates, so an existing file
            // here would be a bug; never write through one.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out)
                .map_err(|e| FetchError::io(&out, e))?;
            let copied = std::io::copy(&mut entry.take(p.size.saturating_add(1)), &mut file)
                .map_err(|e| FetchError::Zip {
                    archive: archive.to_path_buf(),
                    message: format!("entry {}: {e}", p.relative.display()),
                })?;
            if copied != p.size {
                return Err(FetchError::UnsafeZipEntry {
                    archive: archive.to_path_buf(),
                    entry: p.relative.display().to_string(),
                    reason: if copied > p.size {
                        format!(
                            "it inflates past the {} bytes it declares (cut off there)",
                            p.size
                        )
                    } else {
                        format!("it holds {copied} bytes but declares {}", p.size)
                    },
                });
            }
            file.sync_all().map_err(|e| FetchError::io(&out, e))?;
        }
        bar.inc(1);
    }
    // The new entries of every folder, so the rename into place publishes them.
    for dir in std::iter::once(target.to_path_buf()).chain(dirs.iter().map(|d| target.join(d))) {
        sae_steer_files::sync_dir(&dir).map_err(|e| FetchError::io(&dir, e))?;
    }
    bar.finish_and_clear();
    Ok(())
}

/// One entry to unpack, checked.
struct Planned {
    index: usize,
    relative: PathBuf,
    is_dir: bool,
    /// Declared uncompressed size.
    size: u64,
}

/// The entry name as a path made only of normal components, or None.
fn safe_relative_path(name: &str) -> Option<PathBuf> {
    // A backslash is a separator on Windows: `..\x` would escape there.
    if name.contains('\\') || name.contains('\0') {
        return None;
    }
    let trimmed = name.trim_end_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    let path = Path::new(trimmed);
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            // `a/./b` is harmless; everything else (root, `..`, prefixes) is not.
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Checks that `root` holds what `layout` lists.
pub fn check_layout(root: &Path, layout: &Layout) -> Result<()> {
    let problem = |problem: String| FetchError::Layout {
        dir: root.to_path_buf(),
        problem,
    };
    for f in &layout.files {
        match std::fs::metadata(root.join(f)) {
            Ok(m) if m.is_file() && m.len() > 0 => {}
            Ok(_) => return Err(problem(format!("{f} is empty or not a file"))),
            Err(_) => return Err(problem(format!("{f} is missing"))),
        }
    }
    for d in &layout.dirs {
        let dir = root.join(&d.path);
        let entries = std::fs::read_dir(&dir)
            .map_err(|_| problem(format!("folder {} is missing", d.path)))?;
        let mut count = 0usize;
        for entry in entries {
            let entry = entry.map_err(|e| FetchError::io(&dir, e))?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == d.extension.as_str())
                && entry.file_type().is_ok_and(|t| t.is_file())
            {
                count += 1;
            }
        }
        if count != d.count {
            return Err(problem(format!(
                "{} holds {count} .{} files, expected {}",
                d.path, d.extension, d.count
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn entry_names_that_escape_are_refused() {
        assert_eq!(
            safe_relative_path("a/b.txt"),
            Some(PathBuf::from("a/b.txt"))
        );
        assert_eq!(safe_relative_path("a/./b/"), Some(PathBuf::from("a/b")));
        for bad in [
            "../x",
            "a/../../x",
            "a/../x",
            "/etc/passwd",
            "..\\x",
            "",
            "/",
            ".",
        ] {
            assert_eq!(safe_relative_path(bad), None, "{bad:?}");
        }
    }
}

//! Sharded builds: `N` processes (possibly on `N` machines sharing a file
//! system, e.g. a Slurm job array) each cache one part of the image list into
//! the same folder, and the folder then reads as one cache.
//!
//! Part `I` of `N` covers a contiguous run of dataset positions that starts
//! and ends on a shard boundary ([`part_range`]), so its shard files keep the
//! numbers an unsharded build gives them, and its batches are the same
//! images in the same order: the cache holds the same rows, bit for bit.
//! Each part keeps its own manifest, `part-000I-of-000N.json`, under its own
//! lock (`.lock-part-000I-of-000N`), while all parts share the folder's
//! `.lock` (an unsharded build of the same folder takes it exclusively and is
//! refused). The part that completes last writes the merged `manifest.json`;
//! two parts finishing together write the same bytes, atomically, so the
//! race is harmless. A reader meeting parts without `manifest.json` refuses,
//! naming the part that is missing, incomplete or built with other settings.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{CacheError, CacheManifest, MANIFEST_FILE};

/// Which part of a sharded cache a manifest describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// 1-based, as in `--shard I/N`.
    pub index: usize,
    pub count: usize,
    /// Dataset positions `start..end` of the image list.
    pub start: usize,
    pub end: usize,
}

impl PartInfo {
    /// Part `index` of `count` of `images` images in shards of
    /// `shard_images`; `None` unless `1 <= index <= count`.
    pub fn new(index: usize, count: usize, images: usize, shard_images: usize) -> Option<Self> {
        if index == 0 || index > count || shard_images == 0 {
            return None;
        }
        let (start, end) = part_range(images, shard_images, index, count);
        Some(Self {
            index,
            count,
            start,
            end,
        })
    }

    /// `part-000I-of-000N.json`.
    pub fn file_name(&self) -> String {
        format!("part-{:04}-of-{:04}.json", self.index, self.count)
    }

    /// The part's own lock file.
    pub fn lock_name(&self) -> String {
        format!(".lock-part-{:04}-of-{:04}", self.index, self.count)
    }

    /// Shard numbers this part may write: `first..end`.
    pub fn shard_numbers(&self, shard_images: usize) -> std::ops::Range<usize> {
        self.start / shard_images..self.end.div_ceil(shard_images)
    }
}

/// Dataset positions of part `index` (1-based) of `count`: the parts split
/// the list's shards as evenly as whole shards allow, so every boundary is a
/// multiple of `shard_images` (the last part ends at `images`). With more
/// parts than shards, some parts are empty.
pub fn part_range(
    images: usize,
    shard_images: usize,
    index: usize,
    count: usize,
) -> (usize, usize) {
    let shards = images.div_ceil(shard_images);
    let boundary = |i: usize| ((shards * i / count) * shard_images).min(images);
    (boundary(index - 1), boundary(index))
}

/// `(index, count)` of a part manifest's file name, `1 <= index <= count`.
pub fn parse_part_file_name(name: &str) -> Option<(usize, usize)> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".json")?;
    let (i, n) = rest.split_once("-of-")?;
    let digits = |s: &str| s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(i) || !digits(n) {
        return None;
    }
    let (i, n) = (i.parse().ok()?, n.parse().ok()?);
    // `part-0000-of-0000.json` names no part (and would leave nothing to merge).
    (1..=n).contains(&i).then_some((i, n))
}

/// Every part manifest in `dir`, sorted by (count, index).
pub(crate) fn list_parts(dir: &Path) -> Result<Vec<(usize, usize, PathBuf)>, CacheError> {
    let mut parts = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(parts),
        Err(e) => return Err(CacheError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| CacheError::io(dir, e))?;
        if let Some((i, n)) = entry.file_name().to_str().and_then(parse_part_file_name) {
            parts.push((n, i, entry.path()));
        }
    }
    parts.sort();
    Ok(parts.into_iter().map(|(n, i, p)| (i, n, p)).collect())
}

/// The cache of `dir` as a reader sees it: `manifest.json` (refused if part
/// manifests of another split lie beside it), or, for a sharded build whose
/// merged manifest is not written yet, the parts merged in memory once they
/// are all complete; otherwise an error naming what is missing.
pub(crate) fn read_whole(dir: &Path) -> Result<CacheManifest, CacheError> {
    let parts = list_parts(dir)?;
    if dir.join(MANIFEST_FILE).exists() || parts.is_empty() {
        let manifest = CacheManifest::read(dir)?;
        if let Some((i, n, path)) = parts.iter().find(|(_, n, _)| *n != manifest.parts) {
            return Err(stray(dir, &manifest, *i, *n, path));
        }
        return Ok(manifest);
    }
    merge(dir, &parts)
}

fn stray(dir: &Path, manifest: &CacheManifest, i: usize, n: usize, path: &Path) -> CacheError {
    CacheError::Parts {
        dir: dir.to_path_buf(),
        message: format!(
            "{} (part {i} of {n}) does not belong to the cache in {MANIFEST_FILE}, {}; \
             remove it or rebuild the folder",
            path.display(),
            if manifest.parts == 0 {
                "which one process built".to_string()
            } else {
                format!("which {} parts built", manifest.parts)
            }
        ),
    }
}

/// Checks the part manifests of `dir` against each other and merges them
/// once every part `1..=N` of one `N` is there, complete and built with the
/// same settings; otherwise a [`CacheError::Parts`] naming the part.
pub(crate) fn merge(
    dir: &Path,
    parts: &[(usize, usize, PathBuf)],
) -> Result<CacheManifest, CacheError> {
    let problem = |message: String| CacheError::Parts {
        dir: dir.to_path_buf(),
        message,
    };
    let Some(&(_, count, _)) = parts.first() else {
        return Err(problem("no part manifests".into()));
    };
    if let Some((i, n, path)) = parts.iter().find(|(_, n, _)| *n != count) {
        return Err(problem(format!(
            "{} is part {i} of {n}, but {} is part of a {count}-part build: \
             parts of two different splits of the image list share the folder",
            path.display(),
            parts[0].2.display()
        )));
    }
    let mut manifests: Vec<CacheManifest> = Vec::with_capacity(count);
    for index in 1..=count {
        let Some((_, _, path)) = parts.iter().find(|(i, _, _)| *i == index) else {
            return Err(problem(format!(
                "part {index} of {count} is missing (build it with the same settings and \
                 `CacheSpec::part` {index}/{count})"
            )));
        };
        // Checked on reading: the part's range is its index's (validate).
        let m = CacheManifest::read_file(path)?;
        let info = m
            .part
            .ok_or_else(|| problem(format!("{} is not a part manifest", path.display())))?;
        if info.index != index || info.count != count {
            return Err(problem(format!(
                "{} says it is part {} of {}",
                path.display(),
                info.index,
                info.count
            )));
        }
        if let Some(first) = manifests.first() {
            let differences = first.differences(&m);
            if !differences.is_empty() {
                return Err(problem(format!(
                    "part {index} of {count} was built with other settings than part 1 ({})",
                    differences.join("; ")
                )));
            }
        }
        if !m.complete {
            return Err(problem(format!(
                "part {index} of {count} is incomplete ({} of images {}..{} done); \
                 build or resume it (`CacheSpec::part` {index}/{count})",
                m.next_image - info.start,
                info.start,
                info.end
            )));
        }
        manifests.push(m);
    }
    let mut merged = manifests[0].clone();
    merged.part = None;
    merged.parts = count;
    merged.shards = manifests.iter().flat_map(|m| m.shards.clone()).collect();
    merged.skipped = manifests.iter().flat_map(|m| m.skipped.clone()).collect();
    merged.next_image = merged.images.count;
    merged.complete = true;
    merged
        .validate()
        .map_err(|e| problem(format!("the merged parts are inconsistent: {e}")))?;
    Ok(merged)
}

/// Whether the folder reads as one complete cache once `manifest` (the
/// build's own, just written or found complete) is done: for a part, when
/// every part is complete, which writes the merged `manifest.json`.
pub(crate) fn whole_cache_complete(
    dir: &Path,
    manifest: &CacheManifest,
) -> Result<bool, CacheError> {
    match manifest.part {
        None => Ok(manifest.complete),
        Some(_) if manifest.complete => merge_if_complete(dir),
        Some(_) => Ok(false),
    }
}

/// Writes `manifest.json` once every part is complete; true if it did (or
/// it was already there).
fn merge_if_complete(dir: &Path) -> Result<bool, CacheError> {
    let parts = list_parts(dir)?;
    match merge(dir, &parts) {
        Ok(merged) => {
            merged.write(dir)?;
            Ok(true)
        }
        Err(CacheError::Parts { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_list_on_shard_boundaries() {
        for (images, shard, count) in [(1000, 256, 3), (30, 8, 3), (5, 8, 3), (512, 256, 2)] {
            let mut next = 0;
            for i in 1..=count {
                let (start, end) = part_range(images, shard, i, count);
                assert_eq!(start, next, "{images} {shard} {count}");
                assert!(start.is_multiple_of(shard) || start == images);
                assert!(end >= start);
                next = end;
            }
            assert_eq!(next, images);
        }
        assert_eq!(part_range(1000, 256, 1, 3), (0, 256));
        assert_eq!(part_range(1000, 256, 3, 3), (512, 1000));
    }

    #[test]
    fn part_file_names_round_trip() {
        let p = PartInfo::new(2, 3, 30, 8).unwrap();
        assert_eq!(p.file_name(), "part-0002-of-0003.json");
        assert_eq!(parse_part_file_name(&p.file_name()), Some((2, 3)));
        assert_eq!(parse_part_file_name("part-2-of-3.json"), None);
        assert_eq!(parse_part_file_name("manifest.json"), None);
        assert_eq!(parse_part_file_name("part-0000-of-0000.json"), None);
        assert_eq!(parse_part_file_name("part-0004-of-0003.json"), None);
        assert!(PartInfo::new(0, 3, 30, 8).is_none());
        assert!(PartInfo::new(4, 3, 30, 8).is_none());
    }
}

//! Ordered lists of image files: any dataset's images (each with its label
//! map, when the dataset has them) and plain image folders.

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

/// File extensions read as images (lower case).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"];

/// One image and, for a labelled dataset, its label map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageItem {
    /// The image file (JPEG for ADE20K).
    pub image: PathBuf,
    /// Its label map: a PNG of class indices, one per pixel, the image's size
    /// (an ADE20K annotation; see [`crate::read_label_map`]); `None` for
    /// unlabelled folders.
    pub label: Option<PathBuf>,
}

/// An ordered list of images. The position in `items` is the image's index
/// everywhere else (caches, reports, the web app): `ADE_val_00000001` is
/// validation index 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageList {
    /// Folder the items' paths are relative to in [`ImageList::fingerprint`].
    pub root: PathBuf,
    /// The images, in dataset order.
    pub items: Vec<ImageItem>,
}

impl ImageList {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the list holds no image.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// SHA-256 (hex) over the images' paths relative to `root`, in order, one
    /// per line with `/` separators. It identifies the list independently of
    /// where the dataset lives, and changes when images are added, removed,
    /// renamed or reordered. File contents are not read.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for item in &self.items {
            hasher.update(relative_slash_path(&item.image, &self.root).as_bytes());
            hasher.update(b"\n");
        }
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The first `n` images (all of them when there are fewer).
    pub fn take(mut self, n: usize) -> Self {
        self.items.truncate(n);
        self
    }
}

/// `path` relative to `root` with `/` separators; the whole path when it is
/// not under `root`.
fn relative_slash_path(path: &Path, root: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<String> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::RootDir => Some(String::new()),
            _ => None,
        })
        .collect();
    parts.join("/")
}

/// Images under `root`, without labels: an ImageNet-style tree
/// (`<class>/<image>`, any depth) or a flat folder. Sorted by relative path,
/// folder by folder, which is the order torchvision's `ImageFolder` gives for
/// ImageNet. Hidden files and non-image files are skipped.
pub fn image_folder(root: impl AsRef<Path>) -> Result<ImageList> {
    let root = root.as_ref().to_path_buf();
    if !root.is_dir() {
        return Err(DataError::missing(
            &root,
            "expected a folder of images (flat, or one sub-folder per class)",
        ));
    }
    let mut images = Vec::new();
    walk_images(&root, &mut images)?;
    if images.is_empty() {
        return Err(DataError::NoImages {
            path: root,
            expected: format!(
                "expected image files ({}) in it or in its sub-folders",
                IMAGE_EXTENSIONS.join(", ")
            ),
        });
    }
    Ok(ImageList {
        root,
        items: images
            .into_iter()
            .map(|image| ImageItem { image, label: None })
            .collect(),
    })
}

/// Depth-first, entries sorted by name at each level, so the result is sorted
/// component-wise by relative path.
fn walk_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for path in sorted_entries(dir)? {
        if path.is_dir() {
            walk_images(&path, out)?;
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Non-hidden entries of `dir` (files and folders), sorted by file name.
pub fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        // Hidden files include our own half-written `.name.tmp-PID` files.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        paths.push(entry.path());
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(paths)
}

/// Whether `path` has an image extension ([`IMAGE_EXTENSIONS`], any case).
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// Image files directly in `dir` (not in its sub-folders), sorted by name.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(sorted_entries(dir)?
        .into_iter()
        .filter(|p| is_image(p) && p.is_file())
        .collect())
}

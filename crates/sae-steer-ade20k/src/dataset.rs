//! The ADE20K SceneParsing layout (`ADEChallengeData2016`) and plain image
//! folders, as ordered lists of image files.

use std::collections::HashSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::classes::ClassNames;
use crate::error::{Ade20kError, Result};
use crate::labels::NUM_CLASSES;

/// The folder the official zip unpacks to.
pub const ADE20K_DIR: &str = "ADEChallengeData2016";
/// Class table file at the dataset root.
pub const OBJECT_INFO_FILE: &str = "objectInfo150.txt";

/// File extensions read as images (lower case).
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"];

/// A split of ADE20K.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// `training`: 20,210 images in the real dataset.
    Training,
    /// `validation`: 2,000 images; the probe and quantify evaluate here.
    Validation,
}

impl Split {
    /// Folder name under `images/` and `annotations/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Split::Training => "training",
            Split::Validation => "validation",
        }
    }

    /// File name prefix of the split's images, e.g. `ADE_val_` in
    /// `ADE_val_00000001.jpg`.
    pub fn file_prefix(self) -> &'static str {
        match self {
            Split::Training => "ADE_train_",
            Split::Validation => "ADE_val_",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir_name())
    }
}

impl FromStr for Split {
    type Err = Ade20kError;

    /// Accepts `train`, `training`, `val`, `validation` (any case).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" | "training" => Ok(Split::Training),
            "val" | "validation" => Ok(Split::Validation),
            _ => Err(Ade20kError::Split(s.to_string())),
        }
    }
}

/// One image and, for a labelled dataset, its label map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageItem {
    /// The image file (JPEG for ADE20K).
    pub image: PathBuf,
    /// Its label map (ADE20K annotation PNG); `None` for unlabelled folders.
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

/// An opened ADE20K root: `objectInfo150.txt`, `images/{training,validation}`,
/// `annotations/{training,validation}`.
#[derive(Debug, Clone)]
pub struct Ade20k {
    root: PathBuf,
    classes: ClassNames,
}

impl Ade20k {
    /// Opens the dataset at `root` (the `ADEChallengeData2016` folder, or the
    /// folder that contains it) and reads its class table. Checks the layout
    /// up front so a wrong path fails here, naming what is missing.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let mut root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(Ade20kError::missing(
                &root,
                format!(
                    "expected the ADE20K root ({ADE20K_DIR}/ with {OBJECT_INFO_FILE}, images/, annotations/)"
                ),
            ));
        }
        if !root.join(OBJECT_INFO_FILE).exists() && root.join(ADE20K_DIR).is_dir() {
            root = root.join(ADE20K_DIR);
        }
        let info = root.join(OBJECT_INFO_FILE);
        if !info.is_file() {
            return Err(Ade20kError::missing(
                &info,
                format!(
                    "expected the class table of the ADE20K root {} (tab-separated Idx Ratio Train Val Name)",
                    root.display()
                ),
            ));
        }
        let classes = ClassNames::read(&info)?;
        if classes.len() != NUM_CLASSES {
            return Err(Ade20kError::ClassFile {
                path: info,
                line: 0,
                message: format!(
                    "expected {NUM_CLASSES} classes (ADE20K SceneParsing), found {}",
                    classes.len()
                ),
            });
        }
        for dir in ["images", "annotations"] {
            let path = root.join(dir);
            if !path.is_dir() {
                return Err(Ade20kError::missing(
                    &path,
                    format!(
                        "expected folder `{dir}/` with training/ and validation/ in the ADE20K root {}",
                        root.display()
                    ),
                ));
            }
        }
        Ok(Self { root, classes })
    }

    /// The images of a split, sorted by file name, each with its annotation
    /// (`annotations/<split>/<stem>.png`). Fails if the split's folders are
    /// missing or empty, or if any image lacks its annotation.
    pub fn split(&self, split: Split) -> Result<ImageList> {
        let images_dir = self.root.join("images").join(split.dir_name());
        let labels_dir = self.root.join("annotations").join(split.dir_name());
        for (dir, what) in [
            (&images_dir, "images (.jpg)"),
            (&labels_dir, "label maps (.png)"),
        ] {
            if !dir.is_dir() {
                return Err(Ade20kError::missing(
                    dir,
                    format!("expected the {split} split's {what} here"),
                ));
            }
        }
        let images = list_files(&images_dir)?;
        if images.is_empty() {
            return Err(Ade20kError::NoImages {
                path: images_dir,
                expected: format!("expected the {split} split's .jpg files"),
            });
        }
        let labels: HashSet<PathBuf> = sorted_entries(&labels_dir)?.into_iter().collect();
        let mut items = Vec::with_capacity(images.len());
        for image in images {
            let stem = image.file_stem().unwrap_or_default();
            let mut label = labels_dir.join(stem);
            label.set_extension("png");
            if !labels.contains(&label) {
                return Err(Ade20kError::MissingAnnotation {
                    image,
                    expected: label,
                });
            }
            items.push(ImageItem {
                image,
                label: Some(label),
            });
        }
        Ok(ImageList {
            root: self.root.clone(),
            items,
        })
    }

    /// The class table read from the dataset's `objectInfo150.txt`.
    pub fn classes(&self) -> &ClassNames {
        &self.classes
    }

    /// The `ADEChallengeData2016` folder actually opened.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Images under `root`, without labels: an ImageNet-style tree
/// (`<class>/<image>`, any depth) or a flat folder. Sorted by relative path,
/// folder by folder, which is the order torchvision's `ImageFolder` gives for
/// ImageNet. Hidden files and non-image files are skipped.
pub fn image_folder(root: impl AsRef<Path>) -> Result<ImageList> {
    let root = root.as_ref().to_path_buf();
    if !root.is_dir() {
        return Err(Ade20kError::missing(
            &root,
            "expected a folder of images (flat, or one sub-folder per class)",
        ));
    }
    let mut images = Vec::new();
    walk_images(&root, &mut images)?;
    if images.is_empty() {
        return Err(Ade20kError::NoImages {
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

/// Non-hidden entries of `dir`, sorted by file name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = std::fs::read_dir(dir).map_err(|e| Ade20kError::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| Ade20kError::io(dir, e))?;
        // Hidden files include our own half-written `.name.tmp-PID` files.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        paths.push(entry.path());
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(paths)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// Image files directly in `dir`, sorted by name.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(sorted_entries(dir)?
        .into_iter()
        .filter(|p| is_image(p) && p.is_file())
        .collect())
}

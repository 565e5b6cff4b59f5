//! The ADE20K SceneParsing layout (`ADEChallengeData2016`) as ordered lists
//! of images with their annotations.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sae_steer_data::{ImageItem, ImageList, image_files, sorted_entries};

use crate::classes::{ClassNames, NUM_CLASSES};
use crate::error::{Ade20kError, Result};

/// The folder the official zip unpacks to.
pub const ADE20K_DIR: &str = "ADEChallengeData2016";
/// Class table file at the dataset root.
pub const OBJECT_INFO_FILE: &str = "objectInfo150.txt";

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
        let images = image_files(&images_dir)?;
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

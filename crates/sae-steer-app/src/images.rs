//! The images the app shows: validation examples by index, uploads, and the
//! reference images of the feature statistics' exemplars.

use std::collections::VecDeque;
use std::fmt;
use std::io::Cursor;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use image::{ImageFormat, ImageReader, Limits, RgbImage};
use sae_steer_ade20k::{ClassNames, ImageList, read_label_map, resize_crop_labels};
use sae_steer_vit::{PixelValues, Preprocess, open_image};

use crate::error::{AppError, Result};

/// Which image a request is about: an example by its index in the example
/// list, or an upload by the number the server gave it.
///
/// Written `12` and `u3` in URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKey {
    Example(usize),
    Upload(u64),
}

impl fmt::Display for ImageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Example(i) => write!(f, "{i}"),
            Self::Upload(n) => write!(f, "u{n}"),
        }
    }
}

impl FromStr for ImageKey {
    type Err = AppError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            AppError::BadRequest(format!(
                "`{s}` is not an image id (an example index such as 12, or an upload id such as u3)"
            ))
        };
        match s.strip_prefix('u') {
            Some(n) => n.parse().map(Self::Upload).map_err(|_| bad()),
            None => s.parse().map(Self::Example).map_err(|_| bad()),
        }
    }
}

/// How large an upload may be. Both limits are checked before the image is
/// decoded: the byte size first, then the dimensions from the file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Largest file accepted, in bytes.
    pub max_bytes: usize,
    /// Largest `width * height` accepted.
    pub max_pixels: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_bytes: 16 << 20,
            max_pixels: 40_000_000,
        }
    }
}

/// An image as the page shows it: the ViT's view (resized and cropped),
/// with its true labels when it has an annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct ShownImage {
    /// The crop the ViT sees, `crop x crop` RGB.
    pub rgb: Arc<RgbImage>,
    /// `crop * crop` pixel labels, row-major (examples only).
    pub labels: Option<Arc<Vec<u8>>>,
    /// File stem (`ADE_val_00001873`) or `upload 3`.
    pub name: String,
}

/// Decoded images kept so that showing an image and running the model on it
/// decode it once.
const RECENT: usize = 32;
/// Uploads kept; the oldest is forgotten first.
const UPLOADS_KEPT: usize = 64;

/// The reference set the exemplar image ids of the feature statistics index.
#[derive(Debug, Clone)]
pub struct ReferenceSet {
    /// Which images, e.g. `ADE20K validation`.
    pub name: String,
    pub list: ImageList,
}

/// Validation examples, uploads and reference images; shared by the HTTP
/// handlers and the model worker.
#[derive(Debug)]
pub struct ImageStore {
    examples: ImageList,
    classes: ClassNames,
    preprocess: Preprocess,
    reference: Option<ReferenceSet>,
    limits: UploadLimits,
    recent: Mutex<VecDeque<(ImageKey, ShownImage)>>,
    uploads: Mutex<Uploads>,
}

#[derive(Debug, Default)]
struct Uploads {
    next: u64,
    kept: VecDeque<(u64, ShownImage)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind
    // (a list of images), which stays consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ImageStore {
    /// A store over `examples` (usually the ADE20K validation split).
    pub fn new(examples: ImageList, classes: ClassNames, preprocess: Preprocess) -> Self {
        Self {
            examples,
            classes,
            preprocess,
            reference: None,
            limits: UploadLimits::default(),
            recent: Mutex::new(VecDeque::new()),
            uploads: Mutex::new(Uploads::default()),
        }
    }

    /// Serves the exemplar images of the feature statistics from `reference`
    /// (exemplar ids are positions in its list).
    pub fn with_reference(mut self, reference: Option<ReferenceSet>) -> Self {
        self.reference = reference;
        self
    }

    pub fn with_limits(mut self, limits: UploadLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> UploadLimits {
        self.limits
    }

    pub fn classes(&self) -> &ClassNames {
        &self.classes
    }

    pub fn preprocess(&self) -> Preprocess {
        self.preprocess
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// The examples' list.
    pub fn examples(&self) -> &ImageList {
        &self.examples
    }

    /// The file stem of an example (`ADE_val_00000001`), without reading it.
    pub fn example_name(&self, index: usize) -> Option<String> {
        self.examples.items.get(index).map(|item| {
            item.image
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("example {index}"))
        })
    }

    /// The exemplars' reference set, when its images are at hand.
    pub fn reference(&self) -> Option<&ReferenceSet> {
        self.reference.as_ref()
    }

    /// An image with its labels, decoded on first use.
    pub fn get(&self, key: ImageKey) -> Result<ShownImage> {
        if let Some((_, hit)) = lock(&self.recent).iter().find(|(k, _)| *k == key) {
            return Ok(hit.clone());
        }
        let shown = match key {
            ImageKey::Example(index) => self.load_example(index)?,
            ImageKey::Upload(n) => lock(&self.uploads)
                .kept
                .iter()
                .find(|(id, _)| *id == n)
                .map(|(_, s)| s.clone())
                .ok_or_else(|| {
                    AppError::NotFound(format!(
                        "no upload u{n} (the server keeps the last {UPLOADS_KEPT} uploads; upload it again)"
                    ))
                })?,
        };
        let mut recent = lock(&self.recent);
        if !recent.iter().any(|(k, _)| *k == key) {
            recent.push_back((key, shown.clone()));
            if recent.len() > RECENT {
                recent.pop_front();
            }
        }
        Ok(shown)
    }

    /// The ViT input of an image.
    pub fn pixels(&self, key: ImageKey) -> Result<PixelValues> {
        Ok(self.preprocess.normalize(&self.get(key)?.rgb))
    }

    fn load_example(&self, index: usize) -> Result<ShownImage> {
        let item = self.examples.items.get(index).ok_or_else(|| {
            AppError::NotFound(format!(
                "no example {index}: there are {} (indices 0..={})",
                self.examples.len(),
                self.examples.len().saturating_sub(1)
            ))
        })?;
        let image = open_image(&item.image)?;
        let rgb = self.preprocess.resize_crop(&image);
        let labels = match &item.label {
            None => None,
            Some(path) => {
                let map = read_label_map(path)?;
                if (map.width, map.height) != (image.width(), image.height()) {
                    return Err(AppError::Internal(format!(
                        "{} is {}x{} but its image {} is {}x{}",
                        path.display(),
                        map.width,
                        map.height,
                        item.image.display(),
                        image.width(),
                        image.height()
                    )));
                }
                Some(Arc::new(resize_crop_labels(&map, &self.preprocess)))
            }
        };
        let name = self.example_name(index).unwrap_or_default();
        Ok(ShownImage {
            rgb: Arc::new(rgb),
            labels,
            name,
        })
    }

    /// Checks, decodes and keeps an uploaded JPEG or PNG; returns its key.
    ///
    /// The byte size is checked first, then the format is sniffed and the
    /// dimensions read from the header, and only an image within
    /// [`UploadLimits`] is decoded (with the decoder's own allocation limit
    /// set as well).
    pub fn upload(&self, bytes: &[u8]) -> Result<(ImageKey, ShownImage)> {
        let limits = self.limits;
        if bytes.len() > limits.max_bytes {
            return Err(AppError::TooLarge(format!(
                "the upload is {} bytes; the limit is {} bytes",
                bytes.len(),
                limits.max_bytes
            )));
        }
        if bytes.is_empty() {
            return Err(AppError::BadRequest("the upload is empty".into()));
        }
        let reader = || -> Result<ImageReader<Cursor<&[u8]>>> {
            let reader = ImageReader::new(Cursor::new(bytes))
                .with_guessed_format()
                .map_err(|e| AppError::BadRequest(format!("cannot read the upload: {e}")))?;
            match reader.format() {
                Some(ImageFormat::Jpeg | ImageFormat::Png) => Ok(reader),
                Some(other) => Err(AppError::Unsupported(format!(
                    "the upload is {other:?}; only JPEG and PNG images are accepted"
                ))),
                None => Err(AppError::Unsupported(
                    "the upload is not a JPEG or PNG image".into(),
                )),
            }
        };
        let (width, height) = reader()?.into_dimensions().map_err(|e| {
            AppError::BadRequest(format!("the upload's image header is unreadable: {e}"))
        })?;
        let pixels = u64::from(width) * u64::from(height);
        if pixels > limits.max_pixels {
            return Err(AppError::TooLarge(format!(
                "the upload is {width}x{height} = {pixels} pixels; the limit is {}",
                limits.max_pixels
            )));
        }
        if pixels == 0 {
            return Err(AppError::BadRequest("the upload has no pixels".into()));
        }
        let mut reader = reader()?;
        let mut decoder_limits = Limits::default();
        decoder_limits.max_image_width = Some(width);
        decoder_limits.max_image_height = Some(height);
        // RGBA16 is the widest layout a JPEG or PNG decodes to, plus slack
        // for the decoder's own buffers.
        decoder_limits.max_alloc = Some(pixels * 8 + (64 << 20));
        reader.limits(decoder_limits);
        let image = reader
            .decode()
            .map_err(|e| AppError::BadRequest(format!("cannot decode the upload: {e}")))?;
        let rgb = Arc::new(self.preprocess.resize_crop(&image));
        let mut uploads = lock(&self.uploads);
        uploads.next += 1;
        let n = uploads.next;
        let shown = ShownImage {
            rgb,
            labels: None,
            name: format!("upload {n}"),
        };
        uploads.kept.push_back((n, shown.clone()));
        if uploads.kept.len() > UPLOADS_KEPT {
            uploads.kept.pop_front();
        }
        Ok((ImageKey::Upload(n), shown))
    }

    /// A reference image (an exemplar), resized and cropped like the examples.
    pub fn reference_image(&self, id: usize) -> Result<RgbImage> {
        let reference = self.reference.as_ref().ok_or_else(|| {
            AppError::NotFound(
                "exemplar images are not available: the feature statistics' reference set is \
                 not the dataset this server has"
                    .into(),
            )
        })?;
        let item = reference.list.items.get(id).ok_or_else(|| {
            AppError::NotFound(format!(
                "no reference image {id}: {} has {} images",
                reference.name,
                reference.list.len()
            ))
        })?;
        Ok(self.preprocess.resize_crop(&open_image(&item.image)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_keys_round_trip() {
        for key in [
            ImageKey::Example(0),
            ImageKey::Example(1872),
            ImageKey::Upload(3),
        ] {
            assert_eq!(key.to_string().parse::<ImageKey>().unwrap(), key);
        }
        for bad in ["", "u", "-1", "x3", "u-2", "1.5", "../etc"] {
            assert!(
                matches!(bad.parse::<ImageKey>(), Err(AppError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}

//! The images the app shows: validation examples by index, uploads, and the
//! reference images of the feature statistics' exemplars.

use std::collections::VecDeque;
use std::fmt;
use std::io::Cursor;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use image::{ImageError, ImageFormat, ImageReader, RgbImage};
use sae_steer_ade20k::ClassNames;
use sae_steer_data::{ImageList, read_label_map, resize_crop_labels};
use sae_steer_vit::{
    DecodeError, DecodeErrorKind, ImageLimits, PixelValues, Preprocess, decode_image, open_image,
};

use crate::error::{AppError, Result};

/// Which image a request is about: an example by its index in the example
/// list, or an upload by the random number the server gave it.
///
/// Written `12` and `u3f0c9a7e1b2d4c58` (16 hex digits) in URLs. Upload ids
/// are random, not counted, so a page that can reach the server (the Host
/// check stops DNS rebinding, but defence in depth) cannot guess another
/// user's uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKey {
    Example(usize),
    Upload(u64),
}

impl fmt::Display for ImageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Example(i) => write!(f, "{i}"),
            Self::Upload(n) => write!(f, "u{n:016x}"),
        }
    }
}

impl FromStr for ImageKey {
    type Err = AppError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            AppError::BadRequest(format!(
                "`{s}` is not an image id (an example index such as 12, or an upload id such as u3f0c9a7e1b2d4c58)"
            ))
        };
        match s.strip_prefix('u') {
            // from_str_radix alone would take a leading `+`.
            Some(n)
                if !n.is_empty() && n.len() <= 16 && n.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                u64::from_str_radix(n, 16)
                    .map(Self::Upload)
                    .map_err(|_| bad())
            }
            Some(_) => Err(bad()),
            None => s.parse().map(Self::Example).map_err(|_| bad()),
        }
    }
}

/// How large an upload may be. All but `max_alloc` are checked before the
/// image is decoded: the byte size first, then, from the file header, each
/// side, the aspect ratio and the pixel count; the decoder then runs with
/// `max_alloc` as its allocation budget ([`sae_steer_vit::decode_image`]).
///
/// The sides and the aspect ratio bound what the preprocessing allocates
/// after the decode: its resize to 256x256 first scales the rows, into
/// `width * 256` 16-byte pixels, so a 40,000,000 x 1 strip that passes any
/// pixel count would ask for 163 GB; with `max_side` 8,192 it is 32 MiB.
///
/// Peak memory of one upload is therefore at most `max_bytes` (the body) +
/// `max_alloc` (the decoded image) + `3 * max_pixels` (its 8-bit RGB copy) +
/// `max_side * 256 * 16` (the resize): [`UploadLimits::peak_bytes`], 418 MiB
/// with the defaults. The server bounds how many run at once
/// ([`crate::ServerLimits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Largest file accepted, in bytes.
    pub max_bytes: usize,
    /// Largest `width * height` accepted.
    pub max_pixels: u64,
    /// Largest width, and largest height.
    pub max_side: u32,
    /// Largest ratio of the longer side to the shorter one.
    pub max_aspect: u32,
    /// Bytes the decoder may allocate, its output included: a 16-bit RGBA
    /// image of `max_pixels` (8 bytes a pixel) is refused, 8-bit RGB(A) and
    /// 16-bit RGB of that size pass.
    pub max_alloc: u64,
}

impl Default for UploadLimits {
    /// 16 MiB, 40 megapixels, 8,192 px a side, 32:1, 256 MiB decoded.
    fn default() -> Self {
        Self {
            max_bytes: 16 << 20,
            max_pixels: 40_000_000,
            max_side: 8192,
            max_aspect: 32,
            max_alloc: 256 << 20,
        }
    }
}

impl UploadLimits {
    /// The same bounds for the shared decoder.
    pub fn image_limits(&self) -> ImageLimits {
        ImageLimits {
            max_bytes: self.max_bytes as u64,
            max_side: self.max_side,
            max_aspect: self.max_aspect,
            max_pixels: self.max_pixels,
            max_alloc: self.max_alloc,
        }
    }

    /// Most bytes one upload can make the server hold at once (see the type's
    /// documentation); saturates rather than overflows.
    pub fn peak_bytes(&self) -> u64 {
        (self.max_bytes as u64)
            .saturating_add(self.max_alloc)
            .saturating_add(self.max_pixels.saturating_mul(3))
            .saturating_add(u64::from(self.max_side).saturating_mul(256 * 16))
    }

    /// Refuses an image by its sides, aspect ratio and pixel count (413),
    /// from the dimensions its header declares: the shared decoder's rule
    /// with this app's limits.
    fn check_dimensions(&self, width: u32, height: u32) -> Result<()> {
        self.image_limits()
            .check_dimensions(width, height)
            .map_err(|e| upload_error("the upload is refused", e))
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
    /// Uploads so far, for their names (`upload 3`); not their ids.
    count: u64,
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
                        "no upload {key} (the server keeps the last {UPLOADS_KEPT} uploads; upload it again)"
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
    /// The byte size is checked first, then the format is sniffed from the
    /// content (JPEG and PNG only: 415 otherwise) and the dimensions read from
    /// the header, and only an image within [`UploadLimits`] is decoded (413
    /// otherwise), by the shared bounded decoder, which also refuses a
    /// truncated or corrupt file (422) rather than filling in what is missing.
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
        // The shared decoder takes WebP as well; the app keeps to the two
        // formats the page offers, one parser fewer facing the network.
        let format = match image::guess_format(bytes) {
            Ok(format @ (ImageFormat::Jpeg | ImageFormat::Png)) => format,
            Ok(other) => {
                return Err(AppError::Unsupported(format!(
                    "the upload is {other:?}; only JPEG and PNG images are accepted"
                )));
            }
            Err(_) => {
                return Err(AppError::Unsupported(
                    "the upload is not a JPEG or PNG image".into(),
                ));
            }
        };
        // The header alone, so that an image is refused for its declared
        // size whatever follows it (even a file cut short).
        let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
            .into_dimensions()
            .map_err(|e| match e {
                // The decoder's own bound on what a header may declare
                // (PNG's width times height in memory, say).
                ImageError::Limits(e) => AppError::TooLarge(format!(
                    "the upload's header declares too large an image: {e}"
                )),
                ImageError::Unsupported(e) => {
                    AppError::Unsupported(format!("the upload is an unsupported image: {e}"))
                }
                e => AppError::Corrupt(format!("the upload's image header is unreadable: {e}")),
            })?;
        limits.check_dimensions(width, height)?;
        let image = decode_image(bytes, &limits.image_limits())
            .map_err(|e| upload_error("cannot decode the upload", e))?;
        let rgb = Arc::new(self.preprocess.resize_crop(&image));
        drop(image);
        let mut uploads = lock(&self.uploads);
        uploads.count += 1;
        let mut id = rand::random::<u64>();
        while uploads.kept.iter().any(|(kept, _)| *kept == id) {
            id = rand::random::<u64>();
        }
        let shown = ShownImage {
            rgb,
            labels: None,
            name: format!("upload {}", uploads.count),
        };
        uploads.kept.push_back((id, shown.clone()));
        if uploads.kept.len() > UPLOADS_KEPT {
            uploads.kept.pop_front();
        }
        Ok((ImageKey::Upload(id), shown))
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

/// The answer to a refusal of the shared decoder: 413, 415 or 422.
fn upload_error(context: &str, e: DecodeError) -> AppError {
    let message = format!("{context}: {e}");
    match e.kind {
        DecodeErrorKind::TooLarge => AppError::TooLarge(message),
        DecodeErrorKind::Unsupported => AppError::Unsupported(message),
        DecodeErrorKind::Corrupt => AppError::Corrupt(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_aspect_and_pixels_are_checked_from_the_header_size() {
        let limits = UploadLimits::default();
        assert_eq!(limits.peak_bytes(), 438_767_104);
        for (w, h) in [(8192, 256), (256, 8192), (8000, 5000), (1, 1), (32, 1)] {
            assert!(limits.check_dimensions(w, h).is_ok(), "{w}x{h}");
        }
        for (w, h) in [
            (8193, 1000),
            (1000, 8193),
            (8192, 255),
            (33, 1),
            (40_000_000, 1),
            (8192, 8192),
        ] {
            assert!(
                matches!(limits.check_dimensions(w, h), Err(AppError::TooLarge(_))),
                "{w}x{h}"
            );
        }
        assert!(matches!(
            limits.check_dimensions(0, 10),
            Err(AppError::Corrupt(_))
        ));
    }

    #[test]
    fn image_keys_round_trip() {
        for key in [
            ImageKey::Example(0),
            ImageKey::Example(1872),
            ImageKey::Upload(3),
            ImageKey::Upload(u64::MAX),
        ] {
            assert_eq!(key.to_string().parse::<ImageKey>().unwrap(), key);
        }
        assert_eq!(ImageKey::Upload(0xab).to_string(), "u00000000000000ab");
        for bad in [
            "",
            "u",
            "-1",
            "x3",
            "u-2",
            "u+2",
            "ug",
            "u00000000000000000",
            "1.5",
            "../etc",
        ] {
            assert!(
                matches!(bad.parse::<ImageKey>(), Err(AppError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}

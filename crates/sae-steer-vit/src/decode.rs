//! One bounded image decoder for every image the toolkit reads: dataset
//! photos, annotation PNGs and uploads to the steering app.
//!
//! An image file is hostile input: a few kilobytes can declare a picture of
//! billions of pixels, or one so thin (40,000,000 x 1) that it passes a pixel
//! count and the later resize to 256x256 asks for `width * 256 * 16` bytes.
//! [`decode_image`] therefore refuses by size *before* it decodes, from the
//! header alone: the file's bytes, each side, the aspect ratio and the pixel
//! count, and hands the decoder an allocation budget as well. With both sides
//! and the aspect ratio bounded, every intermediate of the preprocessing
//! (RGB conversion, the separable resize) is bounded too.
//!
//! It also refuses *incomplete* files. The JPEG decoder fills whatever is
//! missing after a cut silently (a truncated dataset would then change results
//! without a word), so a JPEG must reach its end-of-image marker, as PIL
//! requires ("image file is truncated"); the PNG decoder refuses a cut itself.
//! Bytes after the end marker are accepted, as PIL accepts them.

use std::fmt;
use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader};

/// Bounds an image must meet before it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Size of the encoded file.
    pub max_bytes: u64,
    /// Width and height, each.
    pub max_side: u32,
    /// Longer side over shorter side (a 40,000,000 x 1 strip is refused by
    /// this even where its pixel count is small).
    pub max_aspect: u32,
    /// Width times height.
    pub max_pixels: u64,
    /// Bytes the decoder may allocate, its output buffer included.
    pub max_alloc: u64,
}

impl Default for ImageLimits {
    /// Limits for datasets: generous, so no real photo or annotation is
    /// refused (ADE20K's largest images are a few thousand pixels a side; a
    /// 100-megapixel camera frame still passes), but bounded, so one damaged or
    /// hostile file cannot take the process down: at most 256 MiB of file,
    /// 16,384 px a side, an aspect ratio of 64, 100 megapixels and 1 GiB
    /// allocated by the decoder (100 MP of 16-bit RGBA is 800 MB). The
    /// preprocessing's resize to 256 rows then costs at most
    /// `16,384 * 256 * 16` bytes = 64 MiB.
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            max_side: 16_384,
            max_aspect: 64,
            max_pixels: 100_000_000,
            max_alloc: 1 << 30,
        }
    }
}

/// Why an image was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// Over one of the [`ImageLimits`] (HTTP 413 for an upload).
    TooLarge,
    /// Not a format we decode (HTTP 415/422).
    Unsupported,
    /// Damaged, truncated or self-contradictory (HTTP 422).
    Corrupt,
}

/// An image that could not be decoded; `message` says what was wrong and
/// what was expected, without naming a path (callers add it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub kind: DecodeErrorKind,
    pub message: String,
}

impl DecodeError {
    fn new(kind: DecodeErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

/// Formats we decode: those of datasets and image folders. The `image` crate
/// knows more (EXR, HDR, TGA, ...), but each is one more parser facing
/// hostile bytes, and none is used here. For each of these a truncated file
/// is an error: JPEG by [`check_complete`], the others by their decoders
/// (the decode tests hold them to that).
const FORMATS: [ImageFormat; 5] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

/// The formats of [`FORMATS`], for messages.
const EXPECTED: &str = "expected JPEG, PNG, WebP, BMP or TIFF";

/// Decodes an encoded image within `limits`: checks the byte size, sniffs the
/// format from the content, reads the dimensions from the header and refuses
/// by side, aspect ratio and pixel count before anything is decoded, decodes
/// with the allocation budget, and refuses truncated JPEG and PNG files.
pub fn decode_image(bytes: &[u8], limits: &ImageLimits) -> Result<DynamicImage, DecodeError> {
    use DecodeErrorKind::*;
    let len = bytes.len() as u64;
    if len > limits.max_bytes {
        return Err(DecodeError::new(
            TooLarge,
            format!(
                "the file has {len} bytes, more than the {} allowed",
                limits.max_bytes
            ),
        ));
    }
    let format = image::guess_format(bytes).map_err(|_| {
        DecodeError::new(
            Unsupported,
            format!("not an image format we know ({EXPECTED})"),
        )
    })?;
    if !FORMATS.contains(&format) {
        return Err(DecodeError::new(
            Unsupported,
            format!(
                "{} images are not supported ({EXPECTED})",
                format_name(format)
            ),
        ));
    }
    // The completeness check is a scan of marker lengths, cheap next to a
    // decode, and a truncated file is refused for what it is rather than for
    // whatever the decoder trips over at the cut.
    check_complete(format, bytes)?;

    let reader = |sides: Option<u32>| {
        let mut l = image::Limits::default();
        l.max_image_width = sides;
        l.max_image_height = sides;
        l.max_alloc = Some(limits.max_alloc);
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        reader.limits(l);
        reader
    };

    // Header only: dimensions and the output size, before any pixel is
    // decoded. The decoder's side limits stay off for this read, so a refusal
    // can say what the image declares; they are on for the decode itself.
    let header = reader(None)
        .into_decoder()
        .map_err(|e| from_image_error(format, e))?;
    let (width, height) = header.dimensions();
    let output_bytes = header.total_bytes();
    drop(header);
    check_dimensions(width, height, limits)?;
    if output_bytes > limits.max_alloc {
        return Err(DecodeError::new(
            TooLarge,
            format!(
                "decoding the {width}x{height} image needs {output_bytes} bytes, more than the {} allowed",
                limits.max_alloc
            ),
        ));
    }

    reader(Some(limits.max_side))
        .decode()
        .map_err(|e| from_image_error(format, e))
}

impl ImageLimits {
    /// Refuses a declared size by each side, aspect ratio and pixel count
    /// (and a side of 0 pixels), as [`decode_image`] does before decoding;
    /// for readers that decode by other means (label PNGs read by palette
    /// index).
    pub fn check_dimensions(&self, width: u32, height: u32) -> Result<(), DecodeError> {
        check_dimensions(width, height, self)
    }
}

/// Refuses by each side, aspect ratio and pixel count.
fn check_dimensions(width: u32, height: u32, limits: &ImageLimits) -> Result<(), DecodeError> {
    use DecodeErrorKind::*;
    if width == 0 || height == 0 {
        return Err(DecodeError::new(
            Corrupt,
            format!(
                "the image declares {width}x{height} pixels: an image has at least one pixel a side"
            ),
        ));
    }
    if width > limits.max_side || height > limits.max_side {
        return Err(DecodeError::new(
            TooLarge,
            format!(
                "the image is {width}x{height} pixels: each side must be at most {}",
                limits.max_side
            ),
        ));
    }
    let (long, short) = (width.max(height) as u64, width.min(height) as u64);
    if long > short * limits.max_aspect as u64 {
        return Err(DecodeError::new(
            TooLarge,
            format!(
                "the image is {width}x{height} pixels: the longer side may be at most {} times the shorter",
                limits.max_aspect
            ),
        ));
    }
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(DecodeError::new(
            TooLarge,
            format!(
                "the image is {width}x{height} = {pixels} pixels, more than the {} allowed",
                limits.max_pixels
            ),
        ));
    }
    Ok(())
}

fn from_image_error(format: ImageFormat, e: ImageError) -> DecodeError {
    use DecodeErrorKind::*;
    let name = format_name(format);
    match e {
        ImageError::Limits(e) => DecodeError::new(
            TooLarge,
            format!("the {name} image is over the decoder's limits: {e}"),
        ),
        ImageError::Unsupported(e) => {
            DecodeError::new(Unsupported, format!("unsupported {name} image: {e}"))
        }
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::new(Corrupt, format!("truncated {name}: the file ends early"))
        }
        e => DecodeError::new(Corrupt, format!("corrupt {name} image: {e}")),
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        other => other.extensions_str().first().copied().unwrap_or("unknown"),
    }
}

/// Refuses a JPEG file that ends before its end-of-image marker.
///
/// PNG needs no such check: its decoder reads up to `IEND` and reports a cut
/// anywhere before it as an unexpected end of file (the decode tests hold it
/// to that), as do the WebP, BMP and TIFF decoders.
fn check_complete(format: ImageFormat, bytes: &[u8]) -> Result<(), DecodeError> {
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(DecodeError::new(
            DecodeErrorKind::Corrupt,
            "truncated JPEG: no end-of-image marker",
        ));
    }
    Ok(())
}

/// Whether a JPEG reaches its end-of-image marker (`FF D9`).
///
/// Walks the marker segments by their lengths, so an `FF D9` inside a segment
/// (the end of an EXIF thumbnail in APP1, a comment) does not count; inside
/// entropy-coded data after a start-of-scan, `FF 00` (a stuffed byte) and
/// `FF D0`..`FF D7` (restart markers) are data, any other marker ends the
/// scan. A segment whose length runs past the end of the file is a cut too.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    const SOI: u8 = 0xD8;
    const EOI: u8 = 0xD9;
    if bytes.len() < 2 || bytes[0] != 0xFF || bytes[1] != SOI {
        return false;
    }
    let mut at = 2;
    while at < bytes.len() {
        if bytes[at] != 0xFF {
            // Entropy-coded data of a scan (or garbage between segments, which
            // decoders skip too).
            at += 1;
            continue;
        }
        // Fill bytes: any number of FF before a marker code.
        let mut code_at = at + 1;
        while code_at < bytes.len() && bytes[code_at] == 0xFF {
            code_at += 1;
        }
        let Some(&code) = bytes.get(code_at) else {
            return false;
        };
        match code {
            EOI => return true,
            // Stuffed zero or restart marker: data of the scan. TEM and a
            // stray SOI carry no length.
            0x00 | 0xD0..=0xD7 | 0x01 | SOI => at = code_at + 1,
            _ => {
                // A segment with a two-byte big-endian length that counts itself.
                let Some(len) = bytes
                    .get(code_at + 1..code_at + 3)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
                else {
                    return false;
                };
                if len < 2 {
                    return false;
                }
                let end = code_at + 1 + len;
                if end > bytes.len() {
                    return false;
                }
                // After a SOS header its entropy-coded data follows, which
                // the byte loop above walks.
                at = end;
            }
        }
    }
    false
}

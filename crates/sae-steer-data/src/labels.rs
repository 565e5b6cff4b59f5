//! Label maps: integer class maps read from PNGs (ADE20K's annotations and
//! any segmentation dataset stored the same way), the reference's
//! nearest-neighbour resize and crop, per-patch labels, and whole
//! preprocessed samples.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use png::{BitDepth, ColorType, Transformations};
use sae_steer_vit::{ImageLimits, PixelValues, Preprocess, open_image};

use crate::error::{DataError, Result};
use crate::images::ImageItem;

/// The largest label a label map (and an activation cache) may hold: labels
/// are 0 (other) ..= 150, the range of ADE20K SceneParsing's 150 classes.
/// The cache format stores them as bytes and refuses anything larger, so a
/// label never indexes past a class table.
pub const MAX_LABEL: usize = 150;

/// A decoded label map, row-major, one label per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    pub width: u32,
    pub height: u32,
    /// `width * height` labels in 0..=150, row-major.
    pub data: Vec<u8>,
}

/// Reads an annotation PNG: 8-bit (or 16-bit, or 1/2/4-bit) grayscale, where
/// the gray value is the label, or a palette PNG, read by palette *index*
/// (never by colour). RGB, gray+alpha and RGBA label images are errors, as is
/// any label above 150 (a 16-bit 256 is not read as 0), a truncated file, and
/// one over [`ImageLimits::default`] (checked from the file length and the
/// header before anything is allocated).
///
/// The `png` crate is used directly because the `image` crate expands palette
/// images to RGB, losing the indices.
pub fn read_label_map(path: &Path) -> Result<LabelMap> {
    let format_err = |message: String| DataError::LabelFormat {
        path: path.to_path_buf(),
        message,
    };
    let limits = ImageLimits::default();
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    if len > limits.max_bytes {
        return Err(format_err(format!(
            "the file has {len} bytes, more than the {} allowed",
            limits.max_bytes
        )));
    }
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(Transformations::IDENTITY);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format_err(format!("not a readable PNG ({e})")))?;
    let (color, depth) = (reader.info().color_type, reader.info().bit_depth);
    if !matches!(color, ColorType::Grayscale | ColorType::Indexed) {
        return Err(format_err(format!(
            "is {color:?}; expected an 8-bit grayscale (or palette) PNG whose values are the labels 0..=150"
        )));
    }
    let (width, height) = reader.info().size();
    limits
        .check_dimensions(width, height)
        .map_err(|e| format_err(e.message))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| format_err("image too large".into()))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| {
        format_err(match e {
            png::DecodingError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                "truncated PNG: the file ends early".to_string()
            }
            e => format!("corrupt PNG data ({e})"),
        })
    })?;
    let (width, height) = (frame.width, frame.height);
    let data = unpack_rows(
        &buf,
        width as usize,
        height as usize,
        frame.line_size,
        depth,
    )
    .map_err(|(value, pos)| DataError::LabelValue {
        path: path.to_path_buf(),
        value,
        x: (pos % width as usize) as u32,
        y: (pos / width as usize) as u32,
    })?;
    Ok(LabelMap {
        width,
        height,
        data,
    })
}

/// One label per pixel from PNG rows of one channel at any bit depth
/// (sub-byte samples are packed most significant bits first, rows padded to
/// whole bytes; 16-bit samples are big-endian), or the first value above
/// [`MAX_LABEL`] and its pixel position.
fn unpack_rows(
    buf: &[u8],
    width: usize,
    height: usize,
    line: usize,
    depth: BitDepth,
) -> std::result::Result<Vec<u8>, (u32, usize)> {
    let mut out = Vec::with_capacity(width * height);
    for row in buf.chunks(line).take(height) {
        let y = out.len();
        let mut push = |x: usize, v: u32| {
            if v as usize > MAX_LABEL {
                return Err((v, y + x));
            }
            out.push(v as u8);
            Ok(())
        };
        match depth {
            BitDepth::Eight => {
                for (x, &v) in row[..width].iter().enumerate() {
                    push(x, u32::from(v))?;
                }
            }
            BitDepth::Sixteen => {
                for (x, b) in row.chunks_exact(2).take(width).enumerate() {
                    push(x, u32::from(u16::from_be_bytes([b[0], b[1]])))?;
                }
            }
            BitDepth::One | BitDepth::Two | BitDepth::Four => {
                let bits = depth as usize;
                let per_byte = 8 / bits;
                let mask = (1u32 << bits) - 1;
                for x in 0..width {
                    let byte = u32::from(row[x / per_byte]);
                    let shift = 8 - bits * (x % per_byte + 1);
                    push(x, (byte >> shift) & mask)?;
                }
            }
        }
    }
    Ok(out)
}

/// Source index of output pixel `i` under PIL's `NEAREST` resize (pixel
/// centres: floor((i + 0.5) * in / out)), in exact integer arithmetic.
fn nearest_source(i: usize, input: usize, output: usize) -> usize {
    ((2 * i + 1) * input / (2 * output)).min(input - 1)
}

/// The image pipeline applied to a label map: nearest-neighbour resize (PIL
/// `NEAREST`, torch's "nearest-exact") to the size the image is resized to
/// (`resize x resize`, or the shorter side to `resize`), then the same center
/// `crop x crop`. Returns `crop * crop` labels, row-major.
///
/// # Panics
/// If the map is empty or the crop is larger than the resized map.
pub fn resize_crop_labels(map: &LabelMap, pre: &Preprocess) -> Vec<u8> {
    let crop = pre.crop as usize;
    let (w, h) = (map.width as usize, map.height as usize);
    let resized = pre.resized_size(map.width, map.height);
    let (rw, rh) = (resized.0 as usize, resized.1 as usize);
    let (ox, oy) = pre.crop_offset(resized);
    let (ox, oy) = (ox as usize, oy as usize);
    let xs: Vec<usize> = (ox..ox + crop).map(|x| nearest_source(x, w, rw)).collect();
    let mut out = Vec::with_capacity(crop * crop);
    for y in oy..oy + crop {
        let row = &map.data[nearest_source(y, h, rh) * w..][..w];
        out.extend(xs.iter().map(|&x| row[x]));
    }
    out
}

/// Per-patch labels of a `side x side` label image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchLabels {
    /// Most frequent label of each patch, patches row-major.
    pub labels: Vec<u8>,
    /// How many of the patch's pixels carry that label (0..=196 for 14x14;
    /// saturates at 255 for patches larger than 15x15, e.g. 256 for 16x16).
    pub purity: Vec<u8>,
}

/// Labels each `patch x patch` block of a `side x side` label image (row-major)
/// with its most frequent label; ties go to the smallest label, as
/// `torch.mode` does. Pixels past the last whole patch are ignored.
///
/// # Panics
/// If `pixels` holds fewer than `side * side` values, or `patch` is 0.
pub fn patch_labels(pixels: &[u8], side: usize, patch: usize) -> PatchLabels {
    assert!(patch > 0, "patch size must be positive");
    assert!(
        pixels.len() >= side * side,
        "expected {side}x{side} labels, got {}",
        pixels.len()
    );
    let n = side / patch;
    let mut labels = Vec::with_capacity(n * n);
    let mut purity = Vec::with_capacity(n * n);
    let mut counts = [0u32; 256];
    for py in 0..n {
        for px in 0..n {
            counts.fill(0);
            for y in py * patch..(py + 1) * patch {
                for &v in &pixels[y * side + px * patch..][..patch] {
                    counts[v as usize] += 1;
                }
            }
            // Strictly greater keeps the first (smallest) label among ties.
            let (mut best, mut best_count) = (0usize, 0u32);
            for (label, &c) in counts.iter().enumerate() {
                if c > best_count {
                    (best, best_count) = (label, c);
                }
            }
            labels.push(best as u8);
            purity.push(best_count.min(255) as u8);
        }
    }
    PatchLabels { labels, purity }
}

/// One decoded, preprocessed image with its pixel labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The ViT input (`[3, crop, crop]`, normalised).
    pub pixels: PixelValues,
    /// `crop * crop` pixel labels, row-major, when the item has a label map.
    pub labels: Option<Vec<u8>>,
}

/// Decodes and preprocesses one item exactly as the reference does: image
/// resized to `resize`² and center-cropped, labels resized nearest to the
/// same grid and cropped the same way. Fails naming the file for a corrupt
/// image or label map, and naming both sizes when they differ.
pub fn load_sample(item: &ImageItem, pre: &Preprocess) -> Result<Sample> {
    let image = open_image(&item.image)?;
    let pixels = pre.apply(&image);
    let labels = match &item.label {
        None => None,
        Some(path) => {
            let map = read_label_map(path)?;
            if (map.width, map.height) != (image.width(), image.height()) {
                return Err(DataError::SizeMismatch {
                    image: item.image.clone(),
                    label: path.clone(),
                    image_width: image.width(),
                    image_height: image.height(),
                    label_width: map.width,
                    label_height: map.height,
                });
            }
            Some(resize_crop_labels(&map, pre))
        }
    };
    Ok(Sample { pixels, labels })
}

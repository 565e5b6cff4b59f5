//! Class colours, coloured label maps, legends and PNG encoding.
//!
//! The palette is fixed (the same colour for a class in every image, in the
//! page and in the figures): label 0 ("other", unlabelled) is black, and
//! labels 1..=150 walk the hue circle by the golden angle, so neighbouring
//! labels get far-apart hues, with three saturation/value levels cycling to
//! separate labels whose hues come close.

use std::io::Cursor;

use base64::Engine as _;
use image::{ImageEncoder, RgbImage, codecs::png::PngEncoder};
use sae_steer_ade20k::ClassNames;
use serde::Serialize;

use crate::error::{AppError, Result};

/// The colour of a label.
pub fn class_color(class: u8) -> [u8; 3] {
    if class == 0 {
        return [0, 0, 0];
    }
    let i = f32::from(class);
    let hue = (i * 0.618_034).fract() * 6.0;
    let (s, v) = match class % 3 {
        0 => (0.55, 0.95),
        1 => (0.85, 0.85),
        _ => (0.70, 0.65),
    };
    hsv_to_rgb(hue, s, v)
}

/// `#rrggbb` of a label's colour.
pub fn class_hex(class: u8) -> String {
    let [r, g, b] = class_color(class);
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn hsv_to_rgb(h6: f32, s: f32, v: f32) -> [u8; 3] {
    let c = v * s;
    let x = c * (1.0 - ((h6 % 2.0) - 1.0).abs());
    let (r, g, b) = match h6 as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    let to8 = |u: f32| ((u + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    [to8(r), to8(g), to8(b)]
}

/// A `side x side` row-major label map drawn in class colours, each label
/// a `scale x scale` block (16 patch labels at scale 14 cover a 224 crop).
pub fn colorize(labels: &[u8], side: usize, scale: usize) -> RgbImage {
    let out = (side * scale) as u32;
    RgbImage::from_fn(out, out, |x, y| {
        let (col, row) = (x as usize / scale, y as usize / scale);
        image::Rgb(class_color(
            labels.get(row * side + col).copied().unwrap_or(0),
        ))
    })
}

/// One class of a legend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LegendEntry {
    pub class: u8,
    pub name: String,
    /// `#rrggbb`
    pub color: String,
    /// Share of the map's cells with this label, 0..=1.
    pub share: f32,
}

/// The classes present in a label map, most frequent first (ties: lower label first).
pub fn legend(labels: &[u8], classes: &ClassNames) -> Vec<LegendEntry> {
    let mut counts = [0usize; 256];
    for &l in labels {
        counts[l as usize] += 1;
    }
    let total = labels.len().max(1) as f32;
    let mut present: Vec<(u8, usize)> = (0..=255u8)
        .map(|c| (c, counts[c as usize]))
        .filter(|&(_, n)| n > 0)
        .collect();
    present.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    present
        .into_iter()
        .map(|(class, n)| LegendEntry {
            class,
            name: classes.name(class as usize).to_string(),
            color: class_hex(class),
            share: n as f32 / total,
        })
        .collect()
}

/// PNG bytes of an RGB image.
pub fn png_bytes(image: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    PngEncoder::new(&mut out)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| AppError::Internal(format!("cannot encode a PNG: {e}")))?;
    Ok(out.into_inner())
}

/// A `data:image/png;base64,...` URL of an RGB image, for `<img src>`.
pub fn png_data_url(image: &RgbImage) -> Result<String> {
    let png = png_bytes(image)?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_is_fixed_and_distinct() {
        assert_eq!(class_color(0), [0, 0, 0]);
        let colors: std::collections::HashSet<[u8; 3]> = (0..=150u8).map(class_color).collect();
        assert_eq!(colors.len(), 151, "every label has its own colour");
        assert_eq!(class_hex(0), "#000000");
        // Neighbouring labels differ clearly (not two shades of one hue).
        for c in 1..150u8 {
            let (a, b) = (class_color(c), class_color(c + 1));
            let dist: i32 = (0..3).map(|i| (a[i] as i32 - b[i] as i32).abs()).sum();
            assert!(dist > 60, "labels {c} and {} too close: {a:?} {b:?}", c + 1);
        }
    }

    #[test]
    fn colorize_scales_blocks_and_legend_counts() {
        let labels = [1u8, 2, 2, 0];
        let img = colorize(&labels, 2, 3);
        assert_eq!(img.dimensions(), (6, 6));
        assert_eq!(img.get_pixel(0, 0).0, class_color(1));
        assert_eq!(img.get_pixel(5, 0).0, class_color(2));
        assert_eq!(img.get_pixel(2, 3).0, class_color(2));
        assert_eq!(img.get_pixel(3, 5).0, class_color(0));
        let names = ClassNames::ade20k_default();
        let legend = legend(&labels, &names);
        assert_eq!(legend.len(), 3);
        assert_eq!((legend[0].class, legend[0].share), (2, 0.5));
        assert_eq!(legend[0].name, "building");
        assert_eq!(legend[1].class, 0);
        assert_eq!(legend[1].name, "other");
        assert!(
            png_data_url(&img)
                .unwrap()
                .starts_with("data:image/png;base64,iVBOR")
        );
    }
}

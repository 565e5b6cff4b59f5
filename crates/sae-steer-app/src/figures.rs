//! Static steering figures: image | true labels | prediction | prediction
//! after the edit, with a legend of the classes shown.
//!
//! Text is drawn by plotters' ab_glyph backend with an embedded DejaVu Sans
//! (no system font library).

use std::path::Path;
use std::sync::OnceLock;

use image::RgbImage;
use plotters::prelude::*;
use plotters::style::FontStyle;
use sae_steer_ade20k::ClassNames;

use crate::error::{AppError, Result};
use crate::palette::{class_color, colorize, png_bytes};

const FONT_FAMILY: &str = "sae-steer-app-sans";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans-Latin1.ttf");

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(AppError::Internal(
            "the embedded DejaVu Sans font did not load".into(),
        ))
    }
}

/// One steering figure's content.
#[derive(Debug, Clone)]
pub struct Panel<'a> {
    /// The crop the ViT saw, `crop x crop`.
    pub image: &'a RgbImage,
    /// `crop * crop` pixel labels; `None` draws an empty tile.
    pub truth: Option<&'a [u8]>,
    /// `grid * grid` patch labels without the edit.
    pub prediction: &'a [u8],
    /// `grid * grid` patch labels after the edit.
    pub edited: &'a [u8],
    pub grid: usize,
    /// Above the four tiles.
    pub titles: [String; 4],
    /// One line above everything (what was edited).
    pub caption: String,
}

const MARGIN: i32 = 12;
const CAPTION: i32 = 24;
const TITLE: i32 = 22;
const LEGEND_COLUMNS: i32 = 5;
const LEGEND_ROW: i32 = 18;

/// Draws the figure.
pub fn render_panel(panel: &Panel<'_>, classes: &ClassNames) -> Result<RgbImage> {
    register_font()?;
    let crop = panel.image.width() as i32;
    let grid = panel.grid.max(1);
    let scale = (crop as usize / grid).max(1);
    let mut tiles = vec![panel.image.clone()];
    tiles.push(match panel.truth {
        Some(labels) => colorize(labels, crop as usize, 1),
        None => RgbImage::from_pixel(crop as u32, crop as u32, image::Rgb([235, 235, 235])),
    });
    tiles.push(colorize(panel.prediction, grid, scale));
    tiles.push(colorize(panel.edited, grid, scale));

    // Classes of the three maps, most common first.
    let mut counts = [0u64; 256];
    for &l in panel.truth.unwrap_or(&[]) {
        counts[l as usize] += 1;
    }
    let patch_weight = (scale * scale) as u64;
    for &l in panel.prediction.iter().chain(panel.edited) {
        counts[l as usize] += patch_weight;
    }
    let mut present: Vec<u8> = (0..=255u8).filter(|&c| counts[c as usize] > 0).collect();
    present.sort_by(|a, b| counts[*b as usize].cmp(&counts[*a as usize]).then(a.cmp(b)));

    let width = 4 * crop + 5 * MARGIN;
    let legend_rows = (present.len() as i32 + LEGEND_COLUMNS - 1) / LEGEND_COLUMNS;
    let tiles_top = MARGIN + CAPTION + TITLE;
    let legend_top = tiles_top + crop + MARGIN;
    let height = legend_top + legend_rows * LEGEND_ROW + MARGIN;
    let mut canvas = RgbImage::from_pixel(width as u32, height as u32, image::Rgb([255, 255, 255]));
    for (k, tile) in tiles.iter().enumerate() {
        let x = MARGIN + k as i32 * (crop + MARGIN);
        image::imageops::replace(&mut canvas, tile, i64::from(x), i64::from(tiles_top));
    }

    let mut buffer = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width as u32, height as u32))
            .into_drawing_area();
        let draw = || -> std::result::Result<(), String> {
            let caption = (FONT_FAMILY, 16).into_font().color(&BLACK);
            root.draw(&Text::new(panel.caption.clone(), (MARGIN, MARGIN), caption))
                .map_err(|e| e.to_string())?;
            let title = (FONT_FAMILY, 14).into_font().color(&BLACK);
            for (k, text) in panel.titles.iter().enumerate() {
                let x = MARGIN + k as i32 * (crop + MARGIN);
                root.draw(&Text::new(
                    text.clone(),
                    (x, MARGIN + CAPTION),
                    title.clone(),
                ))
                .map_err(|e| e.to_string())?;
            }
            let column = (width - 2 * MARGIN) / LEGEND_COLUMNS;
            let label = (FONT_FAMILY, 13).into_font().color(&BLACK);
            for (k, &class) in present.iter().enumerate() {
                let (row, col) = (k as i32 / LEGEND_COLUMNS, k as i32 % LEGEND_COLUMNS);
                let (x, y) = (MARGIN + col * column, legend_top + row * LEGEND_ROW);
                let [r, g, b] = class_color(class);
                root.draw(&Rectangle::new(
                    [(x, y + 2), (x + 12, y + 14)],
                    RGBColor(r, g, b).filled(),
                ))
                .map_err(|e| e.to_string())?;
                root.draw(&Rectangle::new(
                    [(x, y + 2), (x + 12, y + 14)],
                    BLACK.stroke_width(1),
                ))
                .map_err(|e| e.to_string())?;
                let name = format!("{} {}", class, classes.name(class as usize));
                root.draw(&Text::new(name, (x + 18, y + 1), label.clone()))
                    .map_err(|e| e.to_string())?;
            }
            root.present().map_err(|e| e.to_string())
        };
        draw().map_err(|e| AppError::Internal(format!("cannot draw the figure: {e}")))?;
    }
    RgbImage::from_raw(width as u32, height as u32, buffer)
        .ok_or_else(|| AppError::Internal("figure buffer has the wrong size".into()))
}

/// Writes an image as PNG, atomically.
pub fn save_png(path: &Path, image: &RgbImage) -> Result<()> {
    let png = png_bytes(image)?;
    // The ViT crate's error names the path; the I/O error is its source.
    Ok(sae_steer_vit::write_atomic(path, &png)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_has_four_tiles_a_legend_and_text() {
        let image = RgbImage::from_pixel(224, 224, image::Rgb([10, 200, 30]));
        let truth = vec![3u8; 224 * 224];
        let prediction = vec![3u8; 256];
        let mut edited = prediction.clone();
        edited[..128].fill(21);
        let classes = ClassNames::ade20k_default();
        let panel = Panel {
            image: &image,
            truth: Some(&truth),
            prediction: &prediction,
            edited: &edited,
            grid: 16,
            titles: [
                "image".into(),
                "true".into(),
                "pred".into(),
                "edited".into(),
            ],
            caption: "latent 7 at -6".into(),
        };
        let fig = render_panel(&panel, &classes).unwrap();
        let width = 4 * 224 + 5 * MARGIN;
        assert_eq!(fig.width() as i32, width);
        let top = (MARGIN + CAPTION + TITLE) as u32;
        // Tiles in place: the image, the true labels, the edit's top half.
        assert_eq!(fig.get_pixel(MARGIN as u32 + 5, top + 5).0, [10, 200, 30]);
        let x_truth = (2 * MARGIN + 224) as u32;
        assert_eq!(fig.get_pixel(x_truth + 5, top + 5).0, class_color(3));
        let x_edit = (4 * MARGIN + 3 * 224) as u32;
        assert_eq!(fig.get_pixel(x_edit + 5, top + 5).0, class_color(21));
        assert_eq!(fig.get_pixel(x_edit + 5, top + 200).0, class_color(3));
        // Two legend rows' worth of classes fit in one row here (3 and 21).
        assert_eq!(
            fig.height() as i32,
            top as i32 + 224 + MARGIN + LEGEND_ROW + MARGIN
        );
        // Text was drawn: the caption strip is not blank.
        let dark = (0..width as u32)
            .flat_map(|x| (MARGIN as u32..(MARGIN + CAPTION) as u32).map(move |y| (x, y)))
            .filter(|&(x, y)| fig.get_pixel(x, y).0[0] < 128)
            .count();
        assert!(dark > 20, "caption text missing ({dark} dark pixels)");
    }
}

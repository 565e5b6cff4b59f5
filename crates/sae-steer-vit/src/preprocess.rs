//! Image preprocessing. The default is the reference's pipeline for
//! DINOv2, done as PIL and torchvision do it: RGB, resize to exactly
//! 256x256 (bilinear with antialias, aspect ratio not kept, rounded to 8
//! bits), center crop 224x224, scale to [0, 1], normalise with the ImageNet
//! mean and std. The other families bring their own (from a
//! `preprocessor_config.json`, or their processor's defaults): CLIP resizes
//! the shortest edge to 224 with bicubic and crops, SigLIP and DINOv3 resize
//! to 224x224 and do not crop.

use std::io::Read;
use std::path::Path;

use burn::prelude::*;
use image::{DynamicImage, RgbImage, imageops::FilterType};
use serde::{Deserialize, Serialize};

use crate::config::{Family, VitConfig};
use crate::decode::{ImageLimits, decode_image};
use crate::error::{Result, VitError};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// OpenAI CLIP's normalisation, with the digits its processor config has.
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];
/// SigLIP's (transformers' `IMAGENET_STANDARD_*`): [-1, 1].
const HALF: [f32; 3] = [0.5, 0.5, 0.5];

/// How the image is brought to `resize` before the crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeRule {
    /// To exactly `resize x resize`; the aspect ratio is not kept.
    #[default]
    Square,
    /// The shorter side to `resize`, the longer in proportion (truncated,
    /// as transformers' `get_resize_output_image_size` does).
    ShortestEdge,
}

/// The interpolation of the resize (antialiased when shrinking, as PIL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resample {
    #[default]
    Bilinear,
    Bicubic,
}

/// An image pipeline: resize, center crop, scale to [0, 1], normalise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// The target of the resize (256 for the reference).
    pub resize: u32,
    /// Side of the square center crop (224); equal to `resize` for a
    /// pipeline without a crop.
    pub crop: u32,
    #[serde(default)]
    pub rule: ResizeRule,
    #[serde(default)]
    pub resample: Resample,
    #[serde(default = "imagenet_mean")]
    pub mean: [f32; 3],
    #[serde(default = "imagenet_std")]
    pub std: [f32; 3],
}

fn imagenet_mean() -> [f32; 3] {
    IMAGENET_MEAN
}
fn imagenet_std() -> [f32; 3] {
    IMAGENET_STD
}

impl Default for Preprocess {
    /// The reference's pipeline for DINOv2.
    fn default() -> Self {
        Self {
            resize: 256,
            crop: 224,
            rule: ResizeRule::Square,
            resample: Resample::Bilinear,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }
}

/// A normalised image, `[3, height, width]` row-major, ready for the ViT.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelValues {
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl PixelValues {
    /// [1, 3, H, W]
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 4> {
        Tensor::from_data(
            TensorData::new(self.data.clone(), [1, 3, self.height, self.width]),
            device,
        )
    }

    /// Stacks same-sized images into one batch: [b, 3, H, W].
    ///
    /// # Panics
    /// If the images differ in size (the preprocessing makes them equal).
    pub fn batch<B: Backend>(images: &[PixelValues], device: &B::Device) -> Tensor<B, 4> {
        let (h, w) = images.first().map_or((0, 0), |p| (p.height, p.width));
        assert!(
            images.iter().all(|p| p.height == h && p.width == w),
            "images of one batch must share a size"
        );
        let data: Vec<f32> = images.iter().flat_map(|p| p.data.iter().copied()).collect();
        Tensor::from_data(TensorData::new(data, [images.len(), 3, h, w]), device)
    }
}

impl Preprocess {
    /// A family's processor defaults (transformers' image processors), at
    /// the model's native size; DINOv2 gets the reference's pipeline.
    pub fn for_family(config: &VitConfig) -> Self {
        let side = config.image_size as u32;
        match config.family {
            Family::Dinov2 => Self::default(),
            Family::Clip => Self {
                resize: side,
                crop: side,
                rule: ResizeRule::ShortestEdge,
                resample: Resample::Bicubic,
                mean: CLIP_MEAN,
                std: CLIP_STD,
            },
            Family::Siglip => Self {
                resize: side,
                crop: side,
                rule: ResizeRule::Square,
                resample: Resample::Bicubic,
                mean: HALF,
                std: HALF,
            },
            Family::Dinov3 => Self {
                resize: side,
                crop: side,
                rule: ResizeRule::Square,
                resample: Resample::Bilinear,
                mean: IMAGENET_MEAN,
                std: IMAGENET_STD,
            },
        }
    }

    /// Reads a Hugging Face `preprocessor_config.json` (`size` as
    /// `shortest_edge` or `height`/`width`, `crop_size`, `do_center_crop`,
    /// `resample` 2 or 3, `image_mean`, `image_std`); the family's
    /// defaults fill what it leaves out.
    pub fn from_hf_json(path: impl AsRef<Path>, config: &VitConfig) -> Result<Self> {
        let path = path.as_ref();
        let text = crate::config::read_small_text(path)?;
        Self::from_hf_str(&text, config).map_err(|message| VitError::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses the text of a `preprocessor_config.json` (see [`Self::from_hf_json`]).
    pub fn from_hf_str(text: &str, config: &VitConfig) -> std::result::Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut p = Self::for_family(config);
        let side = |v: &serde_json::Value, key: &str| -> std::result::Result<Option<u32>, String> {
            match v.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(x) => x
                    .as_u64()
                    .filter(|&n| (1..=8192).contains(&n))
                    .map(|n| Some(n as u32))
                    .ok_or_else(|| format!("`{key}` {x} is not a size in 1..=8192")),
            }
        };
        if v.get("do_resize").and_then(|x| x.as_bool()) == Some(false) {
            return Err("do_resize false (images of any size) is not supported".into());
        }
        match v.get("size") {
            Some(size @ serde_json::Value::Object(_)) => {
                if let Some(s) = side(size, "shortest_edge")? {
                    (p.rule, p.resize) = (ResizeRule::ShortestEdge, s);
                } else {
                    match (side(size, "height")?, side(size, "width")?) {
                        (Some(h), Some(w)) if h == w => {
                            (p.rule, p.resize) = (ResizeRule::Square, h)
                        }
                        (Some(h), Some(w)) => {
                            return Err(format!("a non-square resize ({h}x{w}) is not supported"));
                        }
                        _ => {
                            return Err(
                                "`size` has neither shortest_edge nor height and width".into()
                            );
                        }
                    }
                }
            }
            Some(serde_json::Value::Number(n)) => {
                let s = n
                    .as_u64()
                    .filter(|&n| (1..=8192).contains(&n))
                    .ok_or("`size` is not a size in 1..=8192")?;
                (p.rule, p.resize) = (ResizeRule::ShortestEdge, s as u32);
            }
            Some(other) => return Err(format!("`size` {other} is not understood")),
            None => {}
        }
        let do_crop = v
            .get("do_center_crop")
            .and_then(|x| x.as_bool())
            .unwrap_or(false);
        p.crop = if do_crop {
            match v.get("crop_size") {
                Some(c @ serde_json::Value::Object(_)) => {
                    match (side(c, "height")?, side(c, "width")?) {
                        (Some(h), Some(w)) if h == w => h,
                        _ => return Err("`crop_size` must be square".into()),
                    }
                }
                Some(serde_json::Value::Number(n)) => {
                    n.as_u64()
                        .filter(|&n| (1..=8192).contains(&n))
                        .ok_or("bad `crop_size`")? as u32
                }
                _ => p.resize,
            }
        } else {
            p.resize
        };
        if p.crop > p.resize {
            return Err(format!(
                "crop {} is larger than the resize {}",
                p.crop, p.resize
            ));
        }
        match v.get("resample").and_then(|x| x.as_u64()) {
            None => {}
            Some(2) => p.resample = Resample::Bilinear,
            Some(3) => p.resample = Resample::Bicubic,
            Some(other) => {
                return Err(format!(
                    "resample {other} is not supported (2 bilinear, 3 bicubic)"
                ));
            }
        }
        let triple = |key: &str, default: [f32; 3]| -> std::result::Result<[f32; 3], String> {
            match v.get(key) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(x) => {
                    let t: [f32; 3] =
                        serde_json::from_value(x.clone()).map_err(|e| format!("`{key}`: {e}"))?;
                    Ok(t)
                }
            }
        };
        p.mean = triple("image_mean", p.mean)?;
        p.std = triple("image_std", p.std)?;
        if p.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || p.mean.iter().any(|m| !m.is_finite())
        {
            return Err(format!(
                "image_mean {:?} / image_std {:?} are not finite, positive stds",
                p.mean, p.std
            ));
        }
        if v.get("do_rescale").and_then(|x| x.as_bool()) == Some(false) {
            return Err("do_rescale false is not supported".into());
        }
        Ok(p)
    }

    /// The size (width, height) an image of `width x height` is resized to.
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        match self.rule {
            ResizeRule::Square => (self.resize, self.resize),
            ResizeRule::ShortestEdge => {
                let (w, h) = (width.max(1) as u64, height.max(1) as u64);
                let s = self.resize as u64;
                // Truncated like transformers, never below the crop.
                if w <= h {
                    (self.resize, ((s * h / w) as u32).max(self.resize))
                } else {
                    (((s * w / h) as u32).max(self.resize), self.resize)
                }
            }
        }
    }

    /// Top-left corner (x, y) of the center crop in a resized image.
    pub fn crop_offset(&self, resized: (u32, u32)) -> (u32, u32) {
        (
            resized.0.saturating_sub(self.crop) / 2,
            resized.1.saturating_sub(self.crop) / 2,
        )
    }

    /// Resizes and crops to the 8-bit RGB image the ViT sees (before scaling).
    pub fn resize_crop(&self, image: &DynamicImage) -> RgbImage {
        let rgb = image.to_rgb8();
        let (w, h) = self.resized_size(rgb.width(), rgb.height());
        let filter = match self.resample {
            Resample::Bilinear => FilterType::Triangle,
            // image's Catmull-Rom is PIL's bicubic kernel (a = -0.5),
            // widened when shrinking as PIL does.
            Resample::Bicubic => FilterType::CatmullRom,
        };
        let resized = image::imageops::resize(&rgb, w, h, filter);
        let (x, y) = self.crop_offset((w, h));
        image::imageops::crop_imm(&resized, x, y, self.crop, self.crop).to_image()
    }

    /// Normalises an 8-bit RGB image to pixel values.
    pub fn normalize(&self, rgb: &RgbImage) -> PixelValues {
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let mut data = vec![0f32; 3 * h * w];
        for (x, y, px) in rgb.enumerate_pixels() {
            for c in 0..3 {
                let v = px.0[c] as f32 / 255.0;
                data[c * h * w + y as usize * w + x as usize] = (v - self.mean[c]) / self.std[c];
            }
        }
        PixelValues {
            height: h,
            width: w,
            data,
        }
    }

    pub fn apply(&self, image: &DynamicImage) -> PixelValues {
        self.normalize(&self.resize_crop(image))
    }

    /// Opens an image file ([`open_image`]) and applies the pipeline.
    pub fn apply_path(&self, path: impl AsRef<Path>) -> Result<PixelValues> {
        Ok(self.apply(&open_image(path)?))
    }
}

/// Reads and decodes an image file within [`ImageLimits::default`] (gray,
/// RGBA, 16-bit and CMYK JPEGs all become RGB on conversion), naming the file
/// when it is too large, truncated, corrupt or not an image.
pub fn open_image(path: impl AsRef<Path>) -> Result<DynamicImage> {
    let path = path.as_ref();
    let limits = ImageLimits::default();
    let image_error = |message: String| VitError::Image {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| VitError::io(path, e))?;
    // The length before the read, so a huge file is refused without reading it.
    let len = file.metadata().map_err(|e| VitError::io(path, e))?.len();
    if len > limits.max_bytes {
        return Err(image_error(format!(
            "the file has {len} bytes, more than the {} allowed",
            limits.max_bytes
        )));
    }
    // `take` bounds the read even if the file grows meanwhile.
    let mut bytes = Vec::with_capacity(len as usize);
    (&mut file)
        .take(limits.max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| VitError::io(path, e))?;
    decode_image(&bytes, &limits).map_err(|e| image_error(e.message))
}

/// Opens and preprocesses an image file with the reference pipeline for
/// DINOv2 ([`Preprocess::default`]; other models: [`crate::Vit::preprocess`]).
pub fn preprocess_path(path: impl AsRef<Path>) -> Result<PixelValues> {
    Preprocess::default().apply_path(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processor configs that cannot be followed are refused with the
    /// reason, never turned into a zero, huge or non-finite pipeline.
    #[test]
    fn bad_processor_configs_are_refused_with_the_reason() {
        let clip = VitConfig {
            family: Family::Clip,
            patch_size: 16,
            image_size: 224,
            ..VitConfig::vit_b14_reg()
        };
        for (text, needle) in [
            ("not json", "expected"),
            (r#"{"size": {"shortest_edge": 0}}"#, "not a size"),
            (r#"{"size": {"shortest_edge": 1000000}}"#, "not a size"),
            (r#"{"size": {"height": 224, "width": 320}}"#, "non-square"),
            (r#"{"size": "big"}"#, "not understood"),
            (r#"{"size": {}}"#, "neither"),
            (
                r#"{"size": 224, "do_center_crop": true, "crop_size": 300}"#,
                "larger than the resize",
            ),
            (
                r#"{"do_center_crop": true, "crop_size": {"height": 2, "width": 3}}"#,
                "square",
            ),
            (r#"{"resample": 7}"#, "resample 7"),
            (r#"{"image_std": [0.5, 0.0, 0.5]}"#, "positive"),
            (r#"{"image_mean": [0.5, 0.5]}"#, "image_mean"),
            (r#"{"do_resize": false}"#, "do_resize"),
            (r#"{"do_rescale": false}"#, "do_rescale"),
        ] {
            let err = Preprocess::from_hf_str(text, &clip).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
        // The family's defaults fill what a config leaves out.
        assert_eq!(
            Preprocess::from_hf_str("{}", &clip).unwrap(),
            Preprocess::for_family(&clip)
        );
    }
}

//! Image preprocessing, as the reference does it with PIL and torchvision:
//! RGB, resize to exactly 256x256 (bilinear with antialias, aspect ratio not
//! kept, rounded to 8 bits), center crop 224x224, scale to [0, 1], normalise
//! with the ImageNet mean and std.

use std::io::Read;
use std::path::Path;

use burn::prelude::*;
use image::{DynamicImage, RgbImage, imageops::FilterType};

use crate::decode::{ImageLimits, decode_image};
use crate::error::{Result, VitError};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Resize and crop sizes of the reference pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preprocess {
    /// Side of the square the image is resized to (256).
    pub resize: u32,
    /// Side of the center crop (224).
    pub crop: u32,
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            resize: 256,
            crop: 224,
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
    /// Resizes and crops to the 8-bit RGB image the ViT sees (before scaling).
    pub fn resize_crop(&self, image: &DynamicImage) -> RgbImage {
        let rgb = image.to_rgb8();
        let resized = image::imageops::resize(&rgb, self.resize, self.resize, FilterType::Triangle);
        let off = (self.resize - self.crop) / 2;
        image::imageops::crop_imm(&resized, off, off, self.crop, self.crop).to_image()
    }

    /// Normalises an 8-bit RGB image to pixel values.
    pub fn normalize(&self, rgb: &RgbImage) -> PixelValues {
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let mut data = vec![0f32; 3 * h * w];
        for (x, y, px) in rgb.enumerate_pixels() {
            for c in 0..3 {
                let v = px.0[c] as f32 / 255.0;
                data[c * h * w + y as usize * w + x as usize] =
                    (v - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
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

/// Opens and preprocesses an image file with the reference pipeline.
pub fn preprocess_path(path: impl AsRef<Path>) -> Result<PixelValues> {
    Ok(Preprocess::default().apply(&open_image(path)?))
}

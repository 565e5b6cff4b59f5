//! Label maps and samples against PIL / torch (fixture from
//! scripts/make_label_fixture.py) and the error cases users hit.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, Rgb, RgbImage};
use sae_steer_data::{
    DataError, ImageItem, LabelMap, load_sample, patch_labels, read_label_map, resize_crop_labels,
};
use sae_steer_vit::Preprocess;
use safetensors::SafeTensors;

fn fixtures() -> PathBuf {
    sae_steer_testkit::fixtures_dir()
}

fn reference() -> Vec<u8> {
    std::fs::read(fixtures().join("ade20k/labels.safetensors")).expect("fixture present")
}

fn tensor<'a>(st: &'a SafeTensors<'a>, name: &str, shape: &[usize]) -> &'a [u8] {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.shape(), shape, "{name}");
    t.data()
}

const NAMES: [(&str, u32, u32); 4] = [
    ("odd_500x375", 500, 375),
    ("odd_683x512", 683, 512),
    ("wide_1200x200", 1200, 200),
    ("small_150x100", 150, 100),
];

#[test]
fn resize_crop_and_patch_labels_match_pil_and_torch_mode() {
    let bytes = reference();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let pre = Preprocess::default();
    for (name, w, h) in NAMES {
        let map = read_label_map(&fixtures().join(format!("ade20k/labels/{name}.png"))).unwrap();
        assert_eq!((map.width, map.height), (w, h), "{name}");
        let resized = resize_crop_labels(&map, &pre);
        let expected = tensor(&st, &format!("{name}.resized"), &[224, 224]);
        let wrong = resized.iter().zip(expected).filter(|(a, b)| a != b).count();
        assert_eq!(wrong, 0, "{name}: {wrong} pixels differ from PIL NEAREST");

        let patches = patch_labels(&resized, 224, 14);
        assert_eq!(
            patches.labels,
            tensor(&st, &format!("{name}.patch_labels"), &[16, 16]),
            "{name} labels"
        );
        assert_eq!(
            patches.purity,
            tensor(&st, &format!("{name}.patch_purity"), &[16, 16]),
            "{name} purity"
        );
    }
}

#[test]
fn patch_label_ties_go_to_the_smallest_label_like_torch_mode() {
    let bytes = reference();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let pixels = tensor(&st, "ties.pixels", &[224, 224]);
    let patches = patch_labels(pixels, 224, 14);
    let expected = tensor(&st, "ties.patch_labels", &[16, 16]);
    assert_eq!(patches.labels, expected);
    assert_eq!(patches.purity, tensor(&st, "ties.patch_purity", &[16, 16]));
    // The fixture really has ties: every 4th patch is split 98/98.
    assert_eq!(patches.purity[0], 98);
}

#[test]
fn patch_labels_hand_checked() {
    // 28x28 image, 2x2 patches of 14: patch 0 split 98/98 between 7 and 3,
    // patch 1 all 5, patch 2 mostly 9 with one 0, patch 3 half 0 half 150.
    let side = 28;
    let mut px = vec![0u8; side * side];
    for y in 0..side {
        for x in 0..side {
            px[y * side + x] = match (y / 14, x / 14) {
                (0, 0) => {
                    if (y * 14 + x) % 2 == 0 {
                        7
                    } else {
                        3
                    }
                }
                (0, 1) => 5,
                (1, 0) => {
                    if (y, x) == (14, 0) {
                        0
                    } else {
                        9
                    }
                }
                _ => {
                    if x < 21 {
                        0
                    } else {
                        150
                    }
                }
            };
        }
    }
    let p = patch_labels(&px, side, 14);
    assert_eq!(p.labels, vec![3, 5, 9, 0]);
    assert_eq!(p.purity, vec![98, 196, 195, 98]);
}

#[test]
fn nearest_resize_samples_pixel_centres() {
    // 512 -> 256 takes odd source pixels (floor((i + 0.5) * 2) = 2i + 1);
    // plain "nearest" (floor(i * 2)) would take even ones.
    let (w, h) = (512u32, 512u32);
    let data: Vec<u8> = (0..h).flat_map(|_| (0..w).map(|x| (x % 2) as u8)).collect();
    let map = LabelMap {
        width: w,
        height: h,
        data,
    };
    let out = resize_crop_labels(&map, &Preprocess::default());
    assert_eq!(out.len(), 224 * 224);
    assert!(out.iter().all(|&v| v == 1));

    // 256x256 in: the crop is the identity window 16..240.
    let data: Vec<u8> = (0..256u32 * 256)
        .map(|i| ((i / 256 + i % 256) % 151) as u8)
        .collect();
    let map = LabelMap {
        width: 256,
        height: 256,
        data: data.clone(),
    };
    let out = resize_crop_labels(&map, &Preprocess::default());
    assert_eq!(out[0], data[16 * 256 + 16]);
    assert_eq!(out[224 * 224 - 1], data[239 * 256 + 239]);
    assert_eq!(out[5 * 224 + 100], data[21 * 256 + 116]);
}

fn write_png(
    path: &Path,
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    palette: Option<Vec<u8>>,
    data: &[u8],
) {
    let file = BufWriter::new(File::create(path).unwrap());
    let mut enc = png::Encoder::new(file, w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    if let Some(p) = palette {
        enc.set_palette(p);
    }
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(data).unwrap();
}

#[test]
fn palette_png_is_read_by_index_not_colour() {
    let dir = tempfile::tempdir().unwrap();
    // Palette colours unrelated to the indices: index i is drawn (255-i, i, 7).
    let palette: Vec<u8> = (0..=150u8).flat_map(|i| [255 - i, i, 7]).collect();
    let (w, h) = (13u32, 5u32);
    let data: Vec<u8> = (0..w * h).map(|i| (i * 7 % 151) as u8).collect();
    let path = dir.path().join("pal8.png");
    write_png(
        &path,
        w,
        h,
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        Some(palette.clone()),
        &data,
    );
    let map = read_label_map(&path).unwrap();
    assert_eq!((map.width, map.height), (w, h));
    assert_eq!(map.data, data);

    // 4-bit palette, odd width: two indices per byte, rows padded.
    let (w, h) = (5u32, 3u32);
    let idx: Vec<u8> = (0..w * h).map(|i| (i % 16) as u8).collect();
    let mut packed = Vec::new();
    for row in idx.chunks(w as usize) {
        for pair in row.chunks(2) {
            packed.push(pair[0] << 4 | pair.get(1).copied().unwrap_or(0));
        }
    }
    let path = dir.path().join("pal4.png");
    write_png(
        &path,
        w,
        h,
        png::ColorType::Indexed,
        png::BitDepth::Four,
        Some(palette[..48].to_vec()),
        &packed,
    );
    assert_eq!(read_label_map(&path).unwrap().data, idx);
}

#[test]
fn sixteen_bit_gray_labels_are_read_as_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g16.png");
    let vals: [u16; 4] = [0, 1, 149, 150];
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
    write_png(
        &path,
        2,
        2,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        None,
        &bytes,
    );
    assert_eq!(read_label_map(&path).unwrap().data, vec![0, 1, 149, 150]);
}

#[test]
fn rgb_label_image_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgb_label.png");
    RgbImage::from_pixel(4, 4, Rgb([3, 3, 3]))
        .save(&path)
        .unwrap();
    let err = read_label_map(&path).unwrap_err();
    assert!(matches!(err, DataError::LabelFormat { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("rgb_label.png") && msg.contains("Rgb"),
        "{msg}"
    );
}

#[test]
fn label_above_150_is_an_error_naming_file_value_and_pixel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad_value.png");
    let mut img = GrayImage::from_pixel(6, 4, Luma([150]));
    img.put_pixel(5, 2, Luma([200]));
    img.save(&path).unwrap();
    let err = read_label_map(&path).unwrap_err();
    match &err {
        DataError::LabelValue { value, x, y, .. } => assert_eq!((*value, *x, *y), (200, 5, 2)),
        other => panic!("expected LabelValue, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("bad_value.png") && msg.contains("200"),
        "{msg}"
    );
}

#[test]
fn a_label_file_that_is_not_a_png_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not_png.png");
    std::fs::write(&path, b"\xFF\xD8\xFF\xE0 definitely a jpeg").unwrap();
    let err = read_label_map(&path).unwrap_err();
    assert!(err.to_string().contains("not_png.png"), "{err}");
    let missing = dir.path().join("absent.png");
    let err = read_label_map(&missing).unwrap_err();
    assert!(err.to_string().contains("absent.png"), "{err}");
}

/// Writes `image` and a gray label map of the same size holding `label(x, y)`.
fn sample_pair(
    dir: &Path,
    stem: &str,
    image: image::DynamicImage,
    label: impl Fn(u32, u32) -> u8,
) -> ImageItem {
    let img_path = dir.join(format!("{stem}.jpg"));
    image.save(&img_path).unwrap();
    let (w, h) = (image.width(), image.height());
    let lbl_path = dir.join(format!("{stem}.png"));
    GrayImage::from_fn(w, h, |x, y| Luma([label(x, y)]))
        .save(&lbl_path)
        .unwrap();
    ImageItem {
        image: img_path,
        label: Some(lbl_path),
    }
}

#[test]
fn load_sample_matches_the_fixture_labels_and_image_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let (name, w, h) = NAMES[0];
    let label = fixtures().join(format!("ade20k/labels/{name}.png"));
    let img_path = dir.path().join("photo.jpg");
    image::open(fixtures().join("vit/photo.jpg"))
        .unwrap()
        .resize_exact(w, h, image::imageops::FilterType::Triangle)
        .to_rgb8()
        .save(&img_path)
        .unwrap();
    let item = ImageItem {
        image: img_path.clone(),
        label: Some(label),
    };
    let pre = Preprocess::default();
    let sample = load_sample(&item, &pre).unwrap();
    let bytes = reference();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        sample.labels.as_deref(),
        Some(tensor(&st, &format!("{name}.resized"), &[224, 224]))
    );
    assert_eq!((sample.pixels.height, sample.pixels.width), (224, 224));
    assert_eq!(
        sample.pixels,
        sae_steer_vit::preprocess_path(&img_path).unwrap()
    );

    let unlabelled = load_sample(
        &ImageItem {
            image: img_path,
            label: None,
        },
        &pre,
    )
    .unwrap();
    assert_eq!(unlabelled.labels, None);
}

#[test]
fn annotation_size_mismatch_names_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let img_path = dir.path().join("a.jpg");
    RgbImage::from_pixel(40, 30, Rgb([10, 200, 30]))
        .save(&img_path)
        .unwrap();
    let lbl_path = dir.path().join("a.png");
    GrayImage::from_pixel(30, 40, Luma([4]))
        .save(&lbl_path)
        .unwrap();
    let err = load_sample(
        &ImageItem {
            image: img_path,
            label: Some(lbl_path),
        },
        &Preprocess::default(),
    )
    .unwrap_err();
    assert!(matches!(err, DataError::SizeMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("40x30") && msg.contains("30x40"), "{msg}");
    assert!(msg.contains("a.jpg") && msg.contains("a.png"), "{msg}");
}

#[test]
fn corrupt_jpeg_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jpg");
    RgbImage::from_fn(64, 48, |x, y| Rgb([x as u8 * 4, y as u8 * 5, 90]))
        .save(&good)
        .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    // A JPEG header followed by garbage, and an empty file.
    let mut broken = bytes[..20].to_vec();
    broken.extend(std::iter::repeat_n(0x5A, 200));
    for (name, data) in [("broken.jpg", broken), ("empty.jpg", Vec::new())] {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        let err = load_sample(
            &ImageItem {
                image: path,
                label: None,
            },
            &Preprocess::default(),
        )
        .unwrap_err();
        assert!(matches!(err, DataError::Image(_)), "{err:?}");
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn grayscale_cmyk_and_small_images_load_with_labels() {
    let dir = tempfile::tempdir().unwrap();
    let pre = Preprocess::default();

    // Grayscale JPEG: the three channels are equal before normalisation.
    let gray = sample_pair(
        dir.path(),
        "gray",
        image::DynamicImage::ImageLuma8(GrayImage::from_fn(300, 200, |x, _| Luma([x as u8]))),
        |x, _| if x < 150 { 3 } else { 12 },
    );
    let s = load_sample(&gray, &pre).unwrap();
    let n = 224 * 224;
    let mean = [0.485f32, 0.456, 0.406];
    let std = [0.229f32, 0.224, 0.225];
    for i in (0..n).step_by(997) {
        let r = s.pixels.data[i] * std[0] + mean[0];
        let g = s.pixels.data[n + i] * std[1] + mean[1];
        let b = s.pixels.data[2 * n + i] * std[2] + mean[2];
        assert!((r - g).abs() < 1e-5 && (g - b).abs() < 1e-5, "pixel {i}");
    }
    let labels = s.labels.unwrap();
    // Left half 3, right half 12: resized 256 columns split at 128, crop 16..240.
    assert_eq!(labels[0], 3);
    assert_eq!(labels[111], 3);
    assert_eq!(labels[112], 12);
    assert_eq!(labels[223], 12);

    // CMYK JPEG (a real one, Adobe APP14): decodes to RGB.
    let cmyk = fixtures().join("vit/cmyk.jpg");
    let (w, h) = image::image_dimensions(&cmyk).unwrap();
    let lbl = dir.path().join("cmyk.png");
    GrayImage::from_pixel(w, h, Luma([66])).save(&lbl).unwrap();
    let s = load_sample(
        &ImageItem {
            image: cmyk,
            label: Some(lbl),
        },
        &pre,
    )
    .unwrap();
    assert_eq!(s.pixels.data.len(), 3 * n);
    assert!(s.pixels.data.iter().all(|v| v.is_finite()));
    assert!(s.labels.unwrap().iter().all(|&l| l == 66));

    // Smaller than the crop: upsampled to 256, labels still 224 x 224.
    let small = sample_pair(
        dir.path(),
        "small",
        image::DynamicImage::ImageRgb8(RgbImage::from_pixel(50, 20, Rgb([200, 10, 10]))),
        |x, y| (x + y) as u8,
    );
    let s = load_sample(&small, &pre).unwrap();
    assert_eq!(s.pixels.data.len(), 3 * n);
    let labels = s.labels.unwrap();
    assert_eq!(labels.len(), n);
    // Output pixel (x 0, y 0) of the crop is resized (16, 16): source
    // floor(16.5 * 50 / 256) = 3, floor(16.5 * 20 / 256) = 1.
    assert_eq!(labels[0], 4);
}

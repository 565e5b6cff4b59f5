//! Numerical parity with Hugging Face transformers on random-weight DINOv2s
//! (fixtures made by `scripts/make_vit_fixture.py`).

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::prelude::*;
use sae_steer_vit::{
    HostTensor, PixelValues, Preprocess, SafetensorsFile, TensorSource, Vit, open_image,
};

type B = NdArray<f32>;

fn fixtures() -> PathBuf {
    sae_steer_testkit::fixture("vit")
}

fn expected(name: &str) -> HostTensor {
    SafetensorsFile::open(fixtures().join("expected.safetensors"))
        .and_then(|f| f.read(name))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn pixels<E: Backend>(name: &str) -> Tensor<E, 4> {
    if name == "pixel_values_wide" {
        // The photo's top 168 rows: 12 x 16 patches.
        return pixels::<E>("pixel_values").slice([0..1, 0..3, 0..168, 0..224]);
    }
    let t = expected(name);
    let [c, h, w] = t.shape[..] else {
        panic!("{name} is not [3, H, W]")
    };
    Tensor::from_data(TensorData::new(t.data, [1, c, h, w]), &Default::default())
}

fn host<E: Backend, const D: usize>(t: Tensor<E, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// The tolerance: |ours - ref| <= 1e-4 * max(1, |ref|), elementwise.
fn assert_close(what: &str, ours: &[f32], reference: &HostTensor) {
    assert_eq!(ours.len(), reference.data.len(), "{what}: length");
    let mut worst = 0f32;
    for (a, b) in ours.iter().zip(&reference.data) {
        let err = (a - b).abs() / b.abs().max(1.0);
        worst = worst.max(err);
    }
    assert!(worst <= 1e-4, "{what}: worst relative error {worst:e}");
}

fn load_reg<E: Backend>() -> Vit<E> {
    Vit::load(
        fixtures().join("reg").to_str().unwrap(),
        &Default::default(),
    )
    .unwrap()
}

fn check_reg_model<E: Backend>(vit: &Vit<E>) {
    assert_eq!(vit.depth(), 3);
    let (last, taps) = vit
        .forward_taps(pixels("pixel_values"), 2, &[0, 1, 2])
        .unwrap();
    assert_eq!(last.dims(), [1, 261, 128]);
    for (i, t) in taps {
        assert_close(
            &format!("layer.{i}"),
            &host(t),
            &expected(&format!("reg.layer.{i}")),
        );
    }
    let tokens = vit.split_tokens(vit.final_norm(last));
    assert_close(
        "x_norm_patchtokens",
        &host(tokens.patches),
        &expected("reg.x_norm_patchtokens"),
    );
    assert_close(
        "x_norm_clstoken",
        &host(tokens.cls.expect("DINOv2 has a CLS token")),
        &expected("reg.x_norm_clstoken"),
    );
    // 12 x 16 patches: the position embeddings are resampled per axis.
    let wide = vit.forward(pixels("pixel_values_wide")).unwrap();
    assert_eq!(wide.dims(), [1, 1 + 4 + 192, 128]);
    assert_close("wide", &host(wide), &expected("reg.wide.last_hidden_state"));
}

#[test]
fn hugging_face_folder_matches_transformers_at_every_layer() {
    check_reg_model(&load_reg::<B>());
}

/// The default CPU backend runs the block's glue through fused kernels
/// (crates/sae-steer-vit/src/kernels.rs): the same parity, every layer.
#[cfg(feature = "flex")]
#[test]
fn flex_with_fused_kernels_matches_transformers_at_every_layer() {
    use burn::backend::Flex;
    check_reg_model(&load_reg::<Flex>());
    check_plain_model(
        &Vit::<Flex>::load(
            fixtures().join("plain").to_str().unwrap(),
            &Default::default(),
        )
        .unwrap(),
    );
    check_batch_agrees(&load_reg::<Flex>());
}

#[test]
fn torch_hub_checkpoint_matches_transformers_at_every_layer() {
    let vit = Vit::<B>::load(
        fixtures().join("reg_hub.pth").to_str().unwrap(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(
        vit.config(),
        load_reg::<B>().config(),
        "geometry inferred from the .pth"
    );
    check_reg_model(&vit);
}

#[test]
fn model_without_registers_uses_plain_bicubic() {
    let vit = Vit::<B>::load(
        fixtures().join("plain").to_str().unwrap(),
        &Default::default(),
    )
    .unwrap();
    check_plain_model(&vit);
}

fn check_plain_model<E: Backend>(vit: &Vit<E>) {
    assert_eq!(vit.config().num_register_tokens, 0);
    let (last, taps) = vit
        .forward_taps(pixels("pixel_values"), 1, &[0, 1])
        .unwrap();
    for (i, t) in taps {
        assert_close(
            &format!("plain layer.{i}"),
            &host(t),
            &expected(&format!("plain.layer.{i}")),
        );
    }
    assert_close(
        "plain last",
        &host(vit.final_norm(last)),
        &expected("plain.last_hidden_state"),
    );
    let wide = vit.forward(pixels("pixel_values_wide")).unwrap();
    assert_close(
        "plain wide",
        &host(wide),
        &expected("plain.wide.last_hidden_state"),
    );
}

#[test]
fn split_forward_is_exactly_the_full_forward() {
    let vit = load_reg::<B>();
    let px = pixels::<B>("pixel_values");
    let full = host(vit.forward(px.clone()).unwrap());
    for layer in 0..vit.depth() {
        let mid = vit.forward_until(px.clone(), layer).unwrap();
        let rest = host(vit.forward_from(layer, mid).unwrap());
        assert_eq!(rest, full, "split at layer {layer}");
    }
    assert!(
        vit.forward_until(px.clone(), 3).is_err(),
        "layer past the last block"
    );
    assert!(vit.forward_from(7, vit.embed(px).unwrap()).is_err());
}

#[test]
fn batched_inference_equals_one_image_at_a_time() {
    check_batch_agrees(&load_reg::<B>());
}

fn check_batch_agrees<E: Backend>(vit: &Vit<E>) {
    let a = pixels::<E>("pixel_values");
    let b = a.clone().flip([3]) * 0.7;
    let both = host(
        vit.forward(Tensor::cat(vec![a.clone(), b.clone()], 0))
            .unwrap(),
    );
    let one = [host(vit.forward(a).unwrap()), host(vit.forward(b).unwrap())].concat();
    let worst = both
        .iter()
        .zip(&one)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "batch vs single: {worst}");
}

/// Shares of values within one 8-bit step of the reference, and exactly equal.
fn agreement(file: &str, reference: &str) -> (f64, f64) {
    let ours = Preprocess::default().apply(&open_image(fixtures().join(file)).unwrap());
    let reference = expected(reference);
    assert_eq!((ours.height, ours.width), (224, 224));
    let std = sae_steer_vit::IMAGENET_STD;
    let plane = 224 * 224;
    let (mut within, mut exact) = (0, 0);
    for (i, (a, b)) in ours.data.iter().zip(&reference.data).enumerate() {
        // Back to 8-bit steps of the channel's scale.
        let steps = ((a - b) * std[i / plane] * 255.0).abs();
        within += (steps <= 1.01) as usize;
        exact += (steps < 0.01) as usize;
    }
    let n = ours.data.len() as f64;
    (within as f64 / n, exact as f64 / n)
}

#[test]
fn preprocessing_matches_pil_within_one_8bit_step() {
    // Same decoded pixels (PNG): only resize, crop and normalise differ.
    let (within, exact) = agreement("photo.png", "pixel_values");
    assert!(within >= 0.999, "within one step: {within:.4}");
    assert!(exact >= 0.7, "exact: {exact:.4}");
    // JPEG: zune-jpeg and PIL's libjpeg-turbo upsample chroma differently,
    // which costs about 1% more (measured: 98.9% within one step).
    let (within, _) = agreement("photo.jpg", "pixel_values_jpeg");
    assert!(within >= 0.985, "JPEG within one step: {within:.4}");
}

#[test]
fn cmyk_jpeg_becomes_the_same_rgb_as_pil() {
    let (within, _) = agreement("cmyk.jpg", "pixel_values_cmyk");
    eprintln!("CMYK within one step: {within:.4}");
    assert!(
        within >= 0.95,
        "CMYK JPEG within one step of PIL: {within:.4}"
    );
}

#[test]
fn odd_images_become_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let gray = image::GrayImage::from_fn(300, 180, |x, y| image::Luma([((x + y) % 256) as u8]));
    let gray_path = dir.path().join("gray.png");
    gray.save(&gray_path).unwrap();
    let rgba = image::RgbaImage::from_fn(100, 500, |x, _| image::Rgba([x as u8, 10, 200, 7]));
    let rgba_path = dir.path().join("rgba.png");
    rgba.save(&rgba_path).unwrap();
    let deep = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(64, 64, |x, _| {
        image::Rgb([x as u16 * 1000, 0, 65535])
    });
    let deep_path = dir.path().join("deep.png");
    deep.save(&deep_path).unwrap();
    for p in [&gray_path, &rgba_path, &deep_path] {
        let px: PixelValues = sae_steer_vit::preprocess_path(p).unwrap();
        assert_eq!(
            (px.height, px.width, px.data.len()),
            (224, 224, 3 * 224 * 224),
            "{}",
            p.display()
        );
    }
    // A gray image gives three equal channels.
    let px = sae_steer_vit::preprocess_path(&gray_path).unwrap();
    let unnorm = |c: usize, i: usize| {
        px.data[c * 224 * 224 + i] * sae_steer_vit::IMAGENET_STD[c]
            + sae_steer_vit::IMAGENET_MEAN[c]
    };
    assert!((unnorm(0, 999) - unnorm(2, 999)).abs() < 1e-5);
}

// Random weights are the `random` feature (benchmarks, scale runs), which
// the workspace build turns on through the program.
#[cfg(feature = "random")]
#[test]
fn a_random_model_written_as_a_folder_loads_back_as_itself() {
    let config =
        sae_steer_vit::VitConfig::from_hf_json(fixtures().join("reg/config.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    sae_steer_vit::write_random_hf_folder(&config, 7, dir.path()).unwrap();
    let device = Default::default();
    let loaded = Vit::<B>::from_hf_folder(dir.path(), &device).unwrap();
    assert_eq!(loaded.config(), &config, "config.json round trip");
    let random = Vit::<B>::random(config.clone(), 7, &device).unwrap();
    let x = pixels("pixel_values");
    let (a, b) = (
        loaded.forward(x.clone()).unwrap().into_data(),
        random.forward(x).unwrap().into_data(),
    );
    assert_eq!(a, b, "the same weights, bit for bit");

    // The torch-hub no-register geometry has no Hugging Face spelling.
    let mut hub = config;
    hub.pos_embed_resample.offset = 0.1;
    assert!(hub.to_hf_json().is_none());
    assert!(sae_steer_vit::write_random_hf_folder(&hub, 7, &dir.path().join("hub")).is_err());
}

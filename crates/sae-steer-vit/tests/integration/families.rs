//! Numerical parity with transformers on random-weight CLIP, SigLIP and
//! DINOv3 vision towers at the published base models' geometry (224 px,
//! 16 px patches; fixtures made by `scripts/make_backbone_fixtures.py`).

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::prelude::*;
use sae_steer_vit::{
    Family, HostTensor, Preprocess, Resample, ResizeRule, SafetensorsFile, TensorSource, Vit,
    open_image,
};

type B = NdArray<f32>;

/// One fixture folder: the model, its processor config and what transformers computed.
struct Case {
    name: &'static str,
    family: Family,
    /// CLS + registers.
    prefix: usize,
}

const CASES: [Case; 3] = [
    Case {
        name: "clip",
        family: Family::Clip,
        prefix: 1,
    },
    Case {
        name: "siglip",
        family: Family::Siglip,
        prefix: 0,
    },
    Case {
        name: "dinov3",
        family: Family::Dinov3,
        prefix: 5,
    },
];

fn folder(name: &str) -> PathBuf {
    sae_steer_testkit::fixture("vit").join(name)
}

fn expected(case: &str, name: &str) -> HostTensor {
    SafetensorsFile::open(folder(case).join("expected.safetensors"))
        .and_then(|f| f.read(name))
        .unwrap_or_else(|e| panic!("fixture {case}/{name}: {e}"))
}

/// [1, 3, H, W]; `rows` cuts the photo's top rows (the "wide" input).
fn pixels<E: Backend>(case: &str, rows: usize) -> Tensor<E, 4> {
    let t = expected(case, "pixel_values");
    let [c, h, w] = t.shape[..] else {
        panic!("pixel_values is not [3, H, W]")
    };
    Tensor::<E, 4>::from_data(TensorData::new(t.data, [1, c, h, w]), &Default::default()).slice([
        0..1,
        0..c,
        0..rows.min(h),
        0..w,
    ])
}

fn host<E: Backend, const D: usize>(t: Tensor<E, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// The tolerance: |ours - ref| <= 1e-4 * max(1, |ref|), elementwise.
fn assert_close(what: &str, ours: &[f32], reference: &HostTensor) {
    assert_eq!(ours.len(), reference.data.len(), "{what}: length");
    let worst = ours
        .iter()
        .zip(&reference.data)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0f32, f32::max);
    assert!(worst <= 1e-4, "{what}: worst relative error {worst:e}");
}

fn load<E: Backend>(case: &Case) -> Vit<E> {
    Vit::load(folder(case.name).to_str().unwrap(), &Default::default())
        .unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

fn check_model<E: Backend>(case: &Case) {
    let vit = load::<E>(case);
    let c = vit.config();
    assert_eq!(c.family, case.family, "{}", case.name);
    assert_eq!(c.prefix_tokens(), case.prefix, "{}", case.name);
    assert_eq!((c.patch_size, c.native_grid()), (16, 14), "{}", case.name);
    let tokens = case.prefix + 14 * 14;

    let (last, taps) = vit
        .forward_taps(pixels(case.name, 224), 1, &[0, 1])
        .unwrap();
    assert_eq!(last.dims(), [1, tokens, 64]);
    for (i, t) in taps {
        assert_close(
            &format!("{} layer.{i}", case.name),
            &host(t),
            &expected(case.name, &format!("layer.{i}")),
        );
    }
    // last_hidden_state as transformers returns it: CLIP's is the last
    // block's output, SigLIP's and DINOv3's go through the final LayerNorm.
    assert_close(
        &format!("{} last_hidden_state", case.name),
        &host(vit.final_norm(last)),
        &expected(case.name, "last_hidden_state"),
    );
    // 10 x 14 patches: CLIP and SigLIP resample their position embeddings
    // (bicubic, `interpolate_pos_encoding`), DINOv3 recomputes its rotations.
    let wide = vit.forward(pixels(case.name, 160)).unwrap();
    assert_eq!(wide.dims(), [1, case.prefix + 10 * 14, 64]);
    assert_close(
        &format!("{} wide", case.name),
        &host(wide),
        &expected(case.name, "wide.last_hidden_state"),
    );

    // The split the steering pipeline uses is exact for every family.
    let px = pixels::<E>(case.name, 224);
    let full = host(vit.forward(px.clone()).unwrap());
    let mid = vit.forward_until(px, 0).unwrap();
    assert_eq!(
        host(vit.forward_from(0, mid).unwrap()),
        full,
        "{}",
        case.name
    );
}

#[test]
fn clip_siglip_and_dinov3_match_transformers_at_every_layer() {
    for case in &CASES {
        check_model::<B>(case);
    }
}

#[cfg(feature = "flex")]
#[test]
fn clip_siglip_and_dinov3_match_transformers_on_flex() {
    for case in &CASES {
        check_model::<burn::backend::Flex>(case);
    }
}

#[test]
fn each_family_reads_its_processor_config() {
    let p = |name: &str| load::<B>(CASES.iter().find(|c| c.name == name).unwrap()).preprocess();
    let clip = p("clip");
    assert_eq!(
        (clip.rule, clip.resize, clip.crop, clip.resample),
        (ResizeRule::ShortestEdge, 224, 224, Resample::Bicubic)
    );
    assert_eq!(clip.mean, sae_steer_vit::CLIP_MEAN);
    let siglip = p("siglip");
    assert_eq!(
        (siglip.rule, siglip.resize, siglip.crop, siglip.resample),
        (ResizeRule::Square, 224, 224, Resample::Bicubic)
    );
    assert_eq!((siglip.mean, siglip.std), ([0.5; 3], [0.5; 3]));
    let dinov3 = p("dinov3");
    assert_eq!(
        (dinov3.rule, dinov3.resize, dinov3.crop, dinov3.resample),
        (ResizeRule::Square, 224, 224, Resample::Bilinear)
    );
    assert_eq!(dinov3.std, sae_steer_vit::IMAGENET_STD);
    // A DINOv2 folder keeps the reference's pipeline (256 square, crop 224).
    let dinov2 = Vit::<B>::load(
        sae_steer_testkit::fixture("vit")
            .join("reg")
            .to_str()
            .unwrap(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(dinov2.preprocess(), Preprocess::default());
}

/// Share of values within one 8-bit step of the processor's output.
fn within_one_step(pre: &Preprocess, case: &str) -> f64 {
    let photo = open_image(sae_steer_testkit::fixture("vit").join("photo.png")).unwrap();
    let ours = pre.apply(&photo);
    let reference = expected(case, "pixel_values");
    assert_eq!((ours.height, ours.width), (224, 224), "{case}");
    let plane = 224 * 224;
    let within = ours
        .data
        .iter()
        .zip(&reference.data)
        .enumerate()
        .filter(|(i, (a, b))| ((*a - *b) * pre.std[i / plane] * 255.0).abs() <= 1.01)
        .count();
    within as f64 / ours.data.len() as f64
}

#[test]
fn preprocessing_matches_each_processor() {
    for case in &CASES {
        let pre = load::<B>(case).preprocess();
        let share = within_one_step(&pre, case.name);
        eprintln!(
            "{}: {:.4} within one 8-bit step of the processor",
            case.name, share
        );
        // Measured: every value within one step for all three.
        assert!(
            share >= 0.999,
            "{}: {share:.4} within one 8-bit step",
            case.name
        );
    }
}

/// `openai/clip-vit-base-patch16` and `google/siglip2-base-patch16-224` are
/// published as the multimodal `CLIPModel` / `SiglipModel`: a `clip` /
/// `siglip` config with a `vision_config`, the tower under `vision_model.`
/// beside a text tower. Such a folder (made from the fixtures) loads the
/// vision tower and computes exactly what the vision model alone does.
#[test]
fn multimodal_checkpoints_load_their_vision_tower() {
    for (case, model_type) in [("clip", "clip"), ("siglip", "siglip")] {
        let dir = tempfile::tempdir().unwrap();
        let src = SafetensorsFile::open(folder(case).join("model.safetensors")).unwrap();
        let mut tensors: Vec<(String, HostTensor)> = src
            .names()
            .into_iter()
            .map(|n| {
                let t = src.read(&n).unwrap();
                (format!("vision_model.{n}"), t)
            })
            .collect();
        // A text tower the loader must leave alone.
        tensors.push((
            "text_model.embeddings.token_embedding.weight".into(),
            HostTensor::new(vec![4, 64], vec![0.5; 256]),
        ));
        sae_steer_vit::write_safetensors(dir.path().join("model.safetensors"), &tensors, None)
            .unwrap();
        let vision: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(folder(case).join("config.json")).unwrap(),
        )
        .unwrap();
        let config = serde_json::json!({
            "model_type": model_type,
            "text_config": {"hidden_size": 64},
            "vision_config": vision,
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        std::fs::copy(
            folder(case).join("preprocessor_config.json"),
            dir.path().join("preprocessor_config.json"),
        )
        .unwrap();
        let device = Default::default();
        let multimodal = Vit::<B>::load(dir.path().to_str().unwrap(), &device).unwrap();
        let alone = load::<B>(CASES.iter().find(|c| c.name == case).unwrap());
        assert_eq!(multimodal.config(), alone.config(), "{case}");
        assert_eq!(multimodal.preprocess(), alone.preprocess(), "{case}");
        let px = pixels::<B>(case, 224);
        assert_eq!(
            host(multimodal.forward(px.clone()).unwrap()),
            host(alone.forward(px).unwrap()),
            "{case}"
        );
    }
}

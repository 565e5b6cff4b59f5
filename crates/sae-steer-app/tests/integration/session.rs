//! The model side without HTTP: caching, the edit path against the literal
//! encode/decode path, and the slider unit without statistics.

use crate::common;

use std::sync::Arc;

use burn::tensor::Tensor;
use common::*;
use sae_steer_app::toy::ToyOptions;
use sae_steer_app::{ImageKey, Session, SliderEdit, UnitSource};
use sae_steer_sae::Edit;

#[test]
fn moving_a_slider_reuses_the_cached_layer() {
    let dir = tempfile::tempdir().unwrap();
    let toy = toy(&dir.path().join("ade"), &ToyOptions::default());
    let mut session = Session::new(toy.steering, Arc::new(toy.store), 2);
    let (a, b, c) = (
        ImageKey::Example(0),
        ImageKey::Example(1),
        ImageKey::Example(2),
    );
    let (original, grid) = session.prediction(a).unwrap();
    assert_eq!((original.len(), grid), (256, 16));
    assert_eq!(session.encodes(), 1);
    for slider in [-10.0, -2.0, 0.0, 4.5, 10.0] {
        let (steered, _) = session
            .steer(a, &[SliderEdit { latent: 0, slider }])
            .unwrap();
        assert_eq!(steered.original, original);
    }
    session.latents(a, &[1, 2, 3], 5, &[]).unwrap();
    assert_eq!(
        session.encodes(),
        1,
        "slider moves and latent lists reuse the image"
    );
    session.prediction(b).unwrap();
    session.prediction(a).unwrap();
    assert_eq!(session.encodes(), 2, "two images fit in a cache of 2");
    session.prediction(c).unwrap(); // evicts b, the least recently used
    session.prediction(a).unwrap();
    assert_eq!(session.encodes(), 3);
    session.prediction(b).unwrap();
    assert_eq!(session.encodes(), 4);
}

/// The app's prediction after an edit equals the literal path: the whole
/// ViT up to the layer, the full encode/decode edit of reference facts section 6
/// (`Edit::apply_full`) on the patch tokens, the rest of the ViT, the probe.
#[test]
fn steering_matches_the_literal_encode_decode_path() {
    let dir = tempfile::tempdir().unwrap();
    let toy = toy(&dir.path().join("ade"), &ToyOptions::default());
    let store = Arc::new(toy.store);
    let pixels = store.pixels(ImageKey::Example(4)).unwrap();
    let mut session = Session::new(toy.steering, store, 2);
    let key = ImageKey::Example(4);
    let report = session.latents(key, &[], 3, &[]).unwrap();
    let latent = report.latents[0].latent;
    let max_obs = report.latents[0].max_obs.unwrap();
    let (steered, _) = session
        .steer(
            key,
            &[
                SliderEdit {
                    latent,
                    slider: -6.0,
                },
                SliderEdit {
                    latent: 2,
                    slider: 3.0,
                },
            ],
        )
        .unwrap();
    assert_eq!(steered.edits.len(), 2);
    assert_eq!(steered.edits[0].value, -6.0 * max_obs);
    assert!(
        steered.changed() > 0,
        "a -6 x max_obs edit on every patch changes something"
    );

    let s = session.steering();
    let unit2 = steered.edits[1].unit;
    let vit = s.vit();
    let device = *vit.device();
    let tokens = vit
        .forward_until(pixels.to_tensor::<B>(&device), s.layer())
        .unwrap();
    let [_, t, d] = tokens.dims();
    let prefix = 1 + vit.config().num_register_tokens;
    let patches = tokens
        .clone()
        .slice([0..1, prefix..t, 0..d])
        .reshape([t - prefix, d]);
    let edit = Edit::new().set(latent, -6.0 * max_obs).set(2, 3.0 * unit2);
    let edited = edit.apply_full(s.sae(), patches).unwrap();
    let tokens = Tensor::cat(
        vec![
            tokens.slice([0..1, 0..prefix, 0..d]),
            edited.reshape([1, t - prefix, d]),
        ],
        1,
    );
    let normed = vit.forward_from(s.layer(), tokens).unwrap();
    let out = normed
        .slice([0..1, prefix..t, 0..d])
        .reshape([t - prefix, d]);
    let expected: Vec<u8> = s
        .probe()
        .logits(out)
        .argmax(1)
        .into_data()
        .iter::<i64>()
        .map(|c| c as u8)
        .collect();
    let differ = expected
        .iter()
        .zip(&steered.labels)
        .filter(|(a, b)| a != b)
        .count();
    // The rank-1 form and the literal path agree to float rounding; an
    // argmax tie could flip one patch at most.
    assert!(differ <= 1, "{differ} patches differ from the literal path");
}

#[test]
fn without_statistics_the_unit_is_the_image_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ToyOptions {
        stats: false,
        ..ToyOptions::default()
    };
    let toy = toy(&dir.path().join("ade"), &opts);
    assert!(toy.store.reference().is_none());
    let mut session = Session::new(toy.steering, Arc::new(toy.store), 2);
    let key = ImageKey::Example(0);
    let report = session.latents(key, &[], 64, &[]).unwrap();
    assert_eq!(
        report.hidden_frequent, 0,
        "nothing is hidden without statistics"
    );
    assert!(
        report.latents.iter().any(|l| l.latent % 4 == 3),
        "dense latents are listed without statistics"
    );
    let info = &report.latents[0];
    assert_eq!(info.frequency, None);
    assert_eq!(info.max_obs, None);
    assert!(info.exemplars.is_empty());
    let image_max = info.image_patches.iter().cloned().fold(0.0, f32::max);
    assert_eq!(info.unit.source, UnitSource::Image);
    assert_eq!(info.unit.unit, image_max);
    let (steered, _) = session
        .steer(
            key,
            &[SliderEdit {
                latent: info.latent,
                slider: 2.0,
            }],
        )
        .unwrap();
    assert_eq!(steered.edits[0].unit_source, UnitSource::Image);
    assert_eq!(steered.edits[0].value, 2.0 * image_max);
    // A latent silent on this image gets unit 1.
    let silent = (0..1024)
        .find(|&j| {
            let r = session.latents(key, &[], 0, &[j]).unwrap();
            r.latents[0].image_patches.iter().all(|&v| v <= 0.0)
        })
        .expect("a rare latent that does not fire on image 0");
    let (steered, _) = session
        .steer(
            key,
            &[SliderEdit {
                latent: silent,
                slider: 1.5,
            }],
        )
        .unwrap();
    let e = steered.edits[0];
    assert_eq!(
        (e.unit_source, e.unit, e.value),
        (UnitSource::Default, 1.0, 1.5)
    );
}

/// The start-up estimate of the SAE normalization (used when a saev file
/// has none) equals the toy's, which was computed on the same images in a
/// single pass; the estimate batches 8 images at a time.
#[test]
fn normalization_estimate_batches_like_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ToyOptions {
        images: 10,
        d_sae: 64,
        stats: false,
        ..ToyOptions::default()
    };
    let toy = toy(&dir.path().join("ade"), &opts);
    let s = &toy.steering;
    let estimate = sae_steer::pipeline::estimate_normalization_on_images(
        s.vit(),
        s.layer(),
        toy.store.examples(),
        &toy.store.preprocess(),
    )
    .unwrap();
    let weights = s.sae().to_weights();
    let norm = weights.norm.expect("the toy SAE is normalized");
    assert_eq!(estimate.mean.len(), norm.mean.len());
    let worst = estimate
        .mean
        .iter()
        .zip(&norm.mean)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-4, "mean differs by {worst}");
    assert!(
        (estimate.scalar - norm.scalar).abs() < 1e-4 * norm.scalar,
        "{} vs {}",
        estimate.scalar,
        norm.scalar
    );
}

/// A patch-16 model without registers (the random CLIP of the parity
/// fixtures): the app's grid, labels and edits follow its 14 x 14 patches.
#[test]
fn a_patch_16_clip_model_steers_on_its_own_grid() {
    let dir = tempfile::tempdir().unwrap();
    let clip = sae_steer_testkit::fixture("vit/clip");
    let vit = sae_steer_vit::Vit::<B>::load(&clip.to_string_lossy(), &Default::default()).unwrap();
    let opts = ToyOptions {
        layer: 0,
        d_sae: 64,
        ..ToyOptions::default()
    };
    let toy = sae_steer_app::toy::build(vit, &dir.path().join("ade"), &opts).unwrap();
    let mut session = Session::new(toy.steering, Arc::new(toy.store), 2);
    let key = ImageKey::Example(0);
    let (original, grid) = session.prediction(key).unwrap();
    assert_eq!((original.len(), grid), (196, 14));
    let (steered, grid) = session
        .steer(
            key,
            &[SliderEdit {
                latent: 3,
                slider: 10.0,
            }],
        )
        .unwrap();
    assert_eq!((steered.labels.len(), grid), (196, 14));
    assert_eq!(steered.original, original);
    // Patches are numbered on that grid: the last one is 195.
    let report = session.latents(key, &[0, 13, 195], 4, &[]).unwrap();
    assert!(!report.latents.is_empty());
}

//! The cached strategy of quantify against the reference's full forward, on a
//! synthetic ADE20K with the small random-weight ViT (hidden 128, 3 blocks;
//! SAE layer 1): re-running only what follows the SAE's layer from cached
//! float32 activations must predict what the whole network predicts from
//! pixels, the rank-1 edit what the full-width SAE edit does, and stacking
//! classes in one batch what each class alone does.

use std::collections::BTreeMap;

use burn::backend::NdArray;
use sae_steer::NoProgress;
use sae_steer::ade20k::synth::{SynthOptions, synthesize};
use sae_steer::ade20k::{Ade20k, Split};
use sae_steer::pipeline::{LazyVit, ensure_cache, sae_layer_cache_spec};
use sae_steer::probe::ProbeWeights;
use sae_steer::quantify::{OUTPUTS, Quantify, QuantifyInputs, QuantifyOptions};
use sae_steer::sae::stats::StatsInfo;
use sae_steer::sae::{Activation, EncodeRule, SaeConfig};
use sae_steer::vit::HostTensor;
use sae_steer::{
    Edit, FeatureStats, Labels, Normalization, PixelValues, Probe, Sae, SaeWeights, Steerer, Vit,
    preprocess_path,
};

type B = NdArray<f32>;

const LAYER: usize = 1;
const D_SAE: usize = 64;

fn vit() -> Vit<B> {
    Vit::<B>::from_hf_folder(&sae_steer_testkit::test_vit_dir(), &Default::default()).unwrap()
}

/// Uniform values in [-scale, scale) from a fixed LCG.
fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    sae_steer_testkit::noise(n, seed, scale)
}

fn random_sae(d: usize) -> Sae<B> {
    let weights = SaeWeights {
        config: SaeConfig {
            d_model: d,
            d_sae: D_SAE,
            activation: Activation::Relu,
            encode: EncodeRule::CentreOnDecoderBias,
            vit: None,
            layer: Some(LAYER),
        },
        w_enc: HostTensor::new(vec![d, D_SAE], noise(d * D_SAE, 1, 0.2)),
        b_enc: HostTensor::new(vec![D_SAE], noise(D_SAE, 2, 0.1)),
        w_dec: HostTensor::new(vec![D_SAE, d], noise(D_SAE * d, 3, 0.2)),
        b_dec: HostTensor::new(vec![d], noise(d, 4, 0.1)),
        threshold: None,
        // A non-trivial normalization, so both edit forms must undo it.
        norm: Some(Normalization {
            mean: noise(d, 5, 0.5),
            scalar: 1.7,
        }),
    };
    Sae::from_weights(weights, &Default::default())
}

#[test]
fn cached_rank1_passes_predict_what_the_full_forward_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SynthOptions {
        train: 1,
        val: 4,
        seed: 9,
        min_side: 160,
        max_side: 320,
        classes: vec![8, 21, 23, 66],
        ..SynthOptions::default()
    };
    let report = synthesize(&dir.path().join("ade"), &opts, &NoProgress).unwrap();
    let ade = Ade20k::open(&report.root).unwrap();
    let val_list = ade.split(Split::Validation).unwrap();
    let spec = sae_layer_cache_spec("fixture/reg", LAYER);
    let (cache, _) = ensure_cache(
        &dir.path().join("val"),
        &val_list,
        &spec,
        &mut LazyVit::from(vit()),
    )
    .unwrap();

    let vit = vit();
    let d = vit.config().hidden_size;
    let sae = random_sae(d);
    let device = Default::default();
    let probe = ProbeWeights {
        in_features: d,
        out_features: OUTPUTS,
        weight: noise(OUTPUTS * d, 6, 1.0),
        bias: noise(OUTPUTS, 7, 0.1),
    };
    let probe = Probe::<B>::new(&probe, &device).unwrap();
    let steerer = Steerer::new(vit, sae, probe, LAYER).unwrap();
    let stats = FeatureStats::new(D_SAE, 1, 256, StatsInfo::default()).unwrap();
    let manual = BTreeMap::new();
    let run = Quantify::new(
        QuantifyInputs {
            steerer: &steerer,
            stats: &stats,
            cache: &cache,
            selection: None,
            manual: &manual,
        },
        QuantifyOptions {
            layer: LAYER,
            ..QuantifyOptions::default()
        },
    )
    .unwrap();
    let rows = [1usize, 3];
    let per = rows.len() * 256;

    // A zero vector edit is no edit: the cached path reproduces the
    // unedited predictions of those rows.
    let none = Edit::new().shift(vec![0.0; d], 0.0);
    let same = run.predict_edited(&rows, &[none]).unwrap();
    let original: Vec<u8> = rows
        .iter()
        .flat_map(|&r| run.original()[r * 256..(r + 1) * 256].to_vec())
        .collect();
    assert_eq!(same, original);

    // Edits strong enough to move many patches, so agreement below is not
    // the trivial agreement of two unedited runs.
    let steers = [
        Edit::new().set(5, 400.0),
        Edit::new().set(17, -400.0),
        Edit::new().shift(noise(d, 8, 1.0), 300.0),
    ];
    let stacked = run.predict_edited(&rows, &steers).unwrap();
    assert_eq!(stacked.len(), steers.len() * per);
    for (k, steer) in steers.iter().enumerate() {
        let alone = run
            .predict_edited(&rows, std::slice::from_ref(steer))
            .unwrap();
        assert_eq!(
            &stacked[k * per..(k + 1) * per],
            alone.as_slice(),
            "steer {k}"
        );
    }
    let changed = stacked[..per]
        .iter()
        .zip(&original)
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        changed > per / 10,
        "the latent edit changed only {changed} of {per} patches"
    );

    let pixels: Vec<PixelValues> = rows
        .iter()
        .map(|&r| preprocess_path(&val_list.items[r].image).unwrap())
        .collect();
    let pixels = PixelValues::batch::<B>(&pixels, &device);
    // The reference's way: the whole ViT from pixels, and the edit through
    // the full-width SAE encode/decode.
    let agree = |a: &[u8], b: &[u8]| {
        a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
    };
    let tokens = steerer.tokens(pixels).unwrap();
    let unedited = steerer.segment(tokens.clone(), Labels::Classes).unwrap();
    assert_eq!(unedited, original);
    let full = steerer.steer_tokens_full(tokens, &steers[0]).unwrap();
    let full = steerer.segment(full, Labels::Classes).unwrap();
    // The two edit forms differ by float rounding only.
    let agreement = agree(&full, &stacked[..per]);
    assert!(agreement > 0.99, "{agreement}");

    // Unknown rows and empty steer lists are refused before any work.
    assert!(run.predict_edited(&[4], &steers).is_err());
    assert!(run.predict_edited(&rows, &[]).is_err());
}

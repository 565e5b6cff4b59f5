//! What a downstream user writes against `use sae_steer::...`, run for real
//! on the fixtures: (a) load DINOv2 and an SAE with its normalization, (b)
//! steer one latent on an image's patches and get the segmentation, (c)
//! feature statistics over an image folder. Each is a handful of lines; the
//! rest of this file only makes the files those lines read.

use std::path::Path;

use sae_steer::NoProgress;
use sae_steer::ade20k::synth::{SynthOptions, synthesize};
use sae_steer::backend::Cpu;
use sae_steer::data::cache::LabelKind;
use sae_steer::data::image_folder;
use sae_steer::pipeline::{
    LazyVit, ensure_cache, estimate_normalization_on_images, feature_stats, sae_layer_cache_spec,
};
use sae_steer::probe::ProbeWeights;
use sae_steer::sae::stats::StatsInfo;
use sae_steer::sae::{Activation, EncodeRule, SaeConfig};
use sae_steer::vit::HostTensor;
use sae_steer::{
    Edit, NormalizationSource, Preprocess, Probe, Sae, SaeWeights, Steerer, Vit, preprocess_path,
};
use sae_steer_testkit::{noise, test_vit_dir};

const LAYER: usize = 1;
const D: usize = 128; // the fixture ViT's width
const D_SAE: usize = 64;

/// A saev-like SAE file: no normalization inside.
fn write_sae(path: &Path) {
    SaeWeights {
        config: SaeConfig {
            d_model: D,
            d_sae: D_SAE,
            activation: Activation::Relu,
            encode: EncodeRule::CentreOnDecoderBias,
            vit: None,
            layer: Some(LAYER),
        },
        w_enc: HostTensor::new(vec![D, D_SAE], noise(D * D_SAE, 1, 0.3)),
        b_enc: HostTensor::new(vec![D_SAE], noise(D_SAE, 2, 0.1)),
        w_dec: HostTensor::new(vec![D_SAE, D], noise(D_SAE * D, 3, 0.3)),
        b_dec: HostTensor::new(vec![D], vec![0.0; D]),
        threshold: None,
        norm: None,
    }
    .save(path)
    .unwrap();
}

#[test]
fn a_downstream_user_loads_steers_segments_and_computes_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let ade = synthesize(
        &dir.path().join("ade"),
        &SynthOptions {
            train: 0,
            val: 6,
            seed: 4,
            ..SynthOptions::default()
        },
        &NoProgress,
    )
    .unwrap();
    let photos = ade.root.join("images/validation");
    let sae_file = dir.path().join("sae.safetensors");
    write_sae(&sae_file);
    let vit_spec = test_vit_dir().to_string_lossy().into_owned();
    let device = Default::default();

    // (a) DINOv2 and an SAE whose file carries no normalization: it must be
    // resolved, here by an estimate on a few images.
    let vit = Vit::<Cpu>::load(&vit_spec, &device).unwrap();
    let file = Sae::<Cpu>::load(&sae_file, &device).unwrap();
    assert!(!file.has_normalization());
    let images = image_folder(&photos).unwrap();
    let norm =
        estimate_normalization_on_images(&vit, LAYER, &images, &Preprocess::default()).unwrap();
    let (sae, source) = file
        .resolve(NormalizationSource::Estimated {
            images: images.len(),
            norm,
        })
        .unwrap();
    assert!(matches!(
        source,
        NormalizationSource::Estimated { images: 6, .. }
    ));

    // (b) Steer one latent on the patches of an image and segment it.
    let probe = Probe::<Cpu>::new(&ProbeWeights::kaiming_uniform(D, 151, 7), &device).unwrap();
    let steerer = Steerer::new(vit, sae, probe, LAYER).unwrap();
    let image = preprocess_path(&images.items[0].image).unwrap();
    let before = steerer.steer_and_segment(&image, &Edit::new()).unwrap();
    let after = steerer
        .steer_and_segment(&image, &Edit::new().set(3, 400.0))
        .unwrap();
    assert_eq!(before.len(), 256, "one label per patch of the 16 x 16 grid");
    assert_eq!(after.len(), 256);
    assert_ne!(before, after, "a strong edit changes some patch's label");

    // Only patches are edited: CLS and the registers pass unchanged.
    let tokens = steerer.tokens(image.to_tensor(&device)).unwrap();
    let steered = steerer
        .steer_tokens(tokens.clone(), &Edit::new().set(3, 400.0))
        .unwrap();
    let p = steerer.prefix();
    let head = |t: sae_steer::burn::tensor::Tensor<Cpu, 3>| t.slice([0..1, 0..p, 0..D]).into_data();
    assert_eq!(head(tokens.clone()), head(steered.clone()));
    assert_ne!(tokens.into_data(), steered.into_data());

    // (c) Feature statistics over an image folder.
    let mut spec = sae_layer_cache_spec(&vit_spec, LAYER);
    spec.labels = LabelKind::None;
    let mut vit = LazyVit::<Cpu>::new(&vit_spec, &device);
    let (cache, _) = ensure_cache(&dir.path().join("cache"), &images, &spec, &mut vit).unwrap();
    let stats = feature_stats(
        steerer.sae(),
        &cache,
        &format!("layer{LAYER}"),
        256,
        None,
        StatsInfo::default(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(stats.n_images(), Some(6));
    assert_eq!(stats.d_sae(), D_SAE);
}

//! The feature-statistics pipeline on a synthetic ADE20K with the small
//! random-weight ViT (hidden 128, 3 blocks; SAE layer 1): an interrupted run
//! resumes to exactly what an uninterrupted run gives, a complete file is
//! left alone, a file from another run is refused, and the SAE's input
//! normalization comes from the file, the checkpoint or an estimate.

use std::path::Path;
use std::sync::Arc;

use burn::backend::NdArray;
use sae_steer::ade20k::synth::{SynthOptions, synthesize};
use sae_steer::ade20k::{Ade20k, Split};
use sae_steer::data::cache::ActivationCache;
use sae_steer::pipeline::{
    LazyVit, STATS_BATCH, StatsOptions, ensure_cache, feature_stats, feature_stats_file,
    resolve_normalization, sae_layer_cache_spec,
};
use sae_steer::sae::stats::{DEFAULT_TOP_K, StatsInfo};
use sae_steer::sae::train::SplitMix64;
use sae_steer::sae::{Activation, EncodeRule, SaeConfig};
use sae_steer::vit::HostTensor;
use sae_steer::{FeatureStats, Normalization, Sae, SaeWeights, Vit};
use sae_steer::{NoProgress, NormalizationSource, SharedProgress};
use sae_steer_testkit::RecordingProgress;

type B = NdArray<f32>;

const LAYER: usize = 1;
const TAP: &str = "layer1";
const IMAGES: usize = 40;
const PATCHES: usize = 256;

fn cache(root: &Path) -> ActivationCache {
    let opts = SynthOptions {
        train: IMAGES,
        val: 1,
        seed: 11,
        min_side: 160,
        max_side: 320,
        ..SynthOptions::default()
    };
    let report = synthesize(&root.join("ade"), &opts, &NoProgress).unwrap();
    let ade = Ade20k::open(&report.root).unwrap();
    let spec = sae_layer_cache_spec("fixture/reg", LAYER);
    let dir = sae_steer_testkit::test_vit_dir();
    ensure_cache(
        &root.join("cache"),
        &ade.split(Split::Training).unwrap(),
        &spec,
        &mut LazyVit::from(Vit::<B>::from_hf_folder(&dir, &Default::default()).unwrap()),
    )
    .unwrap()
    .0
}

/// A random ReLU SAE over the ViT's 128-wide activations, without input
/// normalization (like a saev file).
fn random_sae(d_sae: usize) -> Sae<B> {
    random_relu_sae(128, d_sae, LAYER, 3, (0.2, 1.0))
}

/// A random `d -> d_sae` ReLU SAE without input normalization; `scales`:
/// the ranges of the weights and of the encoder biases.
fn random_relu_sae(d: usize, d_sae: usize, layer: usize, seed: u64, scales: (f32, f32)) -> Sae<B> {
    let mut rng = SplitMix64::new(seed);
    let mut draw = |len: usize, scale: f32| -> Vec<f32> {
        (0..len).map(|_| rng.uniform(-scale, scale)).collect()
    };
    let weights = SaeWeights {
        config: SaeConfig {
            d_model: d,
            d_sae,
            activation: Activation::Relu,
            encode: EncodeRule::Plain,
            vit: None,
            layer: Some(layer),
        },
        w_enc: HostTensor::new(vec![d, d_sae], draw(d * d_sae, scales.0)),
        b_enc: HostTensor::new(vec![d_sae], draw(d_sae, scales.1)),
        w_dec: HostTensor::new(vec![d_sae, d], draw(d_sae * d, scales.0)),
        b_dec: HostTensor::new(vec![d], vec![0.0; d]),
        threshold: None,
        norm: None,
    };
    Sae::from_weights(weights, &Default::default())
}

fn options(info: StatsInfo, max_images: Option<usize>) -> StatsOptions {
    StatsOptions {
        n_patches: PATCHES,
        max_images,
        top_k: DEFAULT_TOP_K,
        info,
        save_every: sae_steer::pipeline::STATS_SAVE_INTERVAL,
        progress: Default::default(),
    }
}

#[test]
fn interrupted_statistics_resume_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path());
    assert_eq!(cache.len(), IMAGES);
    let (sae, source) = resolve_normalization(random_sae(48), None, Some((&cache, TAP, PATCHES)))
        .expect("an estimate on the cache");
    let info = StatsInfo {
        sae: "random.safetensors".into(),
        reference: "synthetic ADE20K training".into(),
        fingerprint: cache.manifest().images.fingerprint.clone(),
        normalization: source.to_string(),
    };
    let recorder = Arc::new(RecordingProgress::new());
    let whole = feature_stats(&sae, &cache, TAP, PATCHES, None, info.clone(), &*recorder).unwrap();
    assert_eq!(whole.n_images(), Some(IMAGES as u64));
    // One phase over every image, its advances adding up to them.
    let phases = recorder.phases();
    assert_eq!(phases.len(), 1, "{phases:?}");
    assert_eq!(
        (phases[0].what.as_str(), phases[0].total, phases[0].done),
        ("feature statistics", IMAGES as u64, 0)
    );
    assert!(phases[0].is_complete(), "{phases:?}");
    // The SAE must exercise the statistics: some latents fire, some do not.
    assert!(whole.frequencies().iter().any(|&f| f > 0.0));
    assert!(whole.top_images(0).len() + whole.top_images(1).len() > 0);

    // A run that stopped after two batches (a crash can only happen between
    // batches: the file is written atomically after one).
    let path = dir.path().join("out/stats.safetensors");
    let first = feature_stats_file(
        &sae,
        &cache,
        TAP,
        options(info.clone(), Some(2 * STATS_BATCH)),
        &path,
    )
    .unwrap();
    assert_eq!(first.resumed_from, None);
    assert_eq!(first.added, 2 * STATS_BATCH as u64);
    assert!(!first.was_complete());
    assert_ne!(first.stats, whole);

    recorder.clear();
    let mut resume = options(info.clone(), None);
    resume.progress = SharedProgress::from(recorder.clone());
    let resumed = feature_stats_file(&sae, &cache, TAP, resume.clone(), &path).unwrap();
    assert_eq!(resumed.resumed_from, Some(2 * STATS_BATCH as u64));
    assert_eq!(resumed.added, (IMAGES - 2 * STATS_BATCH) as u64);
    // The resumed phase starts at the images the file held; its advances
    // are the images this run added.
    let phases = recorder.phases();
    assert_eq!(phases.len(), 1, "{phases:?}");
    assert_eq!(
        (phases[0].total, phases[0].done, phases[0].advanced),
        (IMAGES as u64, 2 * STATS_BATCH as u64, resumed.added)
    );
    assert!(phases[0].is_complete(), "{phases:?}");
    assert_eq!(resumed.stats, whole, "resumed statistics differ");
    let saved = sae_steer::FeatureStats::load(&path).unwrap();
    assert_eq!(saved, whole, "the file holds the final statistics");

    // Complete: nothing is computed and the file is not rewritten.
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    recorder.clear();
    let again = feature_stats_file(&sae, &cache, TAP, resume, &path).unwrap();
    assert!(again.was_complete());
    assert!(
        recorder.events().is_empty(),
        "a complete file has nothing to report"
    );
    assert_eq!(again.stats, whole);
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        modified
    );

    // Another SAE, other units, or fewer images than the file holds: refused.
    let other_sae = StatsInfo {
        sae: "other.safetensors".into(),
        ..info.clone()
    };
    let err = feature_stats_file(&sae, &cache, TAP, options(other_sae, None), &path).unwrap_err();
    assert!(
        err.to_string()
            .contains("SAE: file has `random.safetensors`"),
        "{err}"
    );
    let other_units = StatsInfo {
        normalization: "checkpoint".into(),
        ..info.clone()
    };
    let err = feature_stats_file(&sae, &cache, TAP, options(other_units, None), &path).unwrap_err();
    assert!(err.to_string().contains("normalization"), "{err}");
    let err =
        feature_stats_file(&sae, &cache, TAP, options(info.clone(), Some(8)), &path).unwrap_err();
    assert!(err.to_string().contains("cannot shrink"), "{err}");
    let mut fewer = options(info, None);
    fewer.top_k = 4;
    let err = feature_stats_file(&sae, &cache, TAP, fewer, &path).unwrap_err();
    assert!(err.to_string().contains("top-k"), "{err}");
}

#[test]
fn normalization_comes_from_the_file_the_checkpoint_or_an_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path());

    // No normalization anywhere and nothing to estimate on: an error.
    let err = resolve_normalization(random_sae(8), None, None).unwrap_err();
    assert!(err.to_string().contains("no input normalization"), "{err}");

    let (estimated, source) =
        resolve_normalization(random_sae(8), None, Some((&cache, TAP, PATCHES))).unwrap();
    let NormalizationSource::Estimated { images, norm } = &source else {
        panic!("expected an estimate, got {source:?}");
    };
    assert_eq!(*images, IMAGES);
    assert_eq!(estimated.norm.as_ref().map(|n| n.scalar), Some(norm.scalar));
    assert!(norm.scalar > 0.0 && norm.mean.iter().any(|&m| m != 0.0));
    assert_eq!(
        source.to_string(),
        format!("estimated on {IMAGES} images (scalar {})", norm.scalar)
    );
    // The estimate is deterministic: a rerun records the same units.
    let (_, again) =
        resolve_normalization(random_sae(8), None, Some((&cache, TAP, PATCHES))).unwrap();
    assert_eq!(again, source);

    // A file wins over the checkpoint's own, which wins over an estimate.
    let file = dir.path().join("norm.safetensors");
    let given = Normalization {
        mean: vec![0.5; 128],
        scalar: 2.0,
    };
    given.save(&file).unwrap();
    let with_own = estimated;
    let (sae, source) =
        resolve_normalization(with_own.clone(), Some(&file), Some((&cache, TAP, PATCHES))).unwrap();
    assert_eq!(source, NormalizationSource::File(file.clone()));
    assert_eq!(sae.scalar(), 2.0);
    let (sae, source) = resolve_normalization(with_own, None, None).unwrap();
    assert_eq!(source, NormalizationSource::Checkpoint);
    assert_eq!(source.to_string(), "checkpoint");
    assert_eq!(sae.scalar(), norm.scalar);
}

#[test]
fn statistics_read_saev_activation_shards_as_saev_wrote_them() {
    use sae_steer::pipeline::feature_stats_shards_file;
    use sae_steer::sae::train::ActivationShards;
    use sae_steer::vit::{SafetensorsFile, TensorSource};

    let fixture = sae_steer_testkit::fixture("sae/saev_shards");
    // A random ReLU SAE over the fixture's 8-wide activations.
    let sae = random_relu_sae(8, 24, 5, 5, (0.5, 0.2));
    // Layer 5's patches (after the CLS token) of the 7 examples, 4 patches each.
    let shards = ActivationShards::open_saev(fixture.join("v2"), 5)
        .unwrap()
        .with_tokens(std::slice::from_ref(&(1..5)))
        .unwrap();
    let info = StatsInfo {
        sae: "small".into(),
        reference: "saev fixture".into(),
        fingerprint: "saev".into(),
        normalization: "none".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.safetensors");
    let run = feature_stats_shards_file(
        &sae,
        &shards,
        StatsOptions {
            n_patches: 4,
            ..options(info.clone(), None)
        },
        &path,
    )
    .unwrap();
    assert_eq!(run.stats.n_images(), Some(7));

    // The same statistics from the activations the fixture script wrote.
    let acts = SafetensorsFile::open(fixture.join("expected.safetensors"))
        .unwrap()
        .read("acts")
        .unwrap(); // [7, 2 layers, 5 tokens, 8]
    let mut patches = Vec::new();
    for i in 0..7 {
        let start = (i * 2 + 1) * 5 * 8 + 8;
        patches.extend_from_slice(&acts.data[start..start + 4 * 8]);
    }
    let x = burn::tensor::Tensor::<B, 3>::from_data(
        burn::tensor::TensorData::new(patches, [7, 4, 8]),
        &Default::default(),
    );
    let mut direct = FeatureStats::new(24, DEFAULT_TOP_K, 4, info).unwrap();
    direct
        .update(&sae, x, &(0..7).collect::<Vec<u32>>())
        .unwrap();
    assert_eq!(run.stats.max_values(), direct.max_values());
    assert_eq!(run.stats.frequencies(), direct.frequencies());
}

//! A synthetic ADE20K split through the activation cache of
//! `sae-steer-data`: the cache stores the patch labels of its annotations.
//! (The cache itself is tested in `sae-steer-data`.)

use std::path::PathBuf;

use burn::backend::NdArray;
use sae_steer_ade20k::synth::{SynthOptions, synthesize};
use sae_steer_ade20k::{Ade20k, NUM_CLASSES, Split};
use sae_steer_data::cache::{ActivationCache, CacheSpec, LabelKind, TapRequest, build_cache};
use sae_steer_data::{load_sample, patch_labels};
use sae_steer_files::NoProgress;
use sae_steer_vit::{Preprocess, Vit};

type B = NdArray<f32>;

#[test]
fn a_cache_of_a_split_holds_its_annotations_patch_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = SynthOptions {
        train: 0,
        val: 3,
        seed: 3,
        min_side: 48,
        max_side: 160,
        ..SynthOptions::default()
    };
    let report = synthesize(&tmp.path().join("ade"), &opts, &NoProgress).unwrap();
    let images = Ade20k::open(&report.root)
        .unwrap()
        .split(Split::Validation)
        .unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vit/reg");
    let vit = Vit::<B>::from_hf_folder(&dir, &Default::default()).unwrap();
    let tap: TapRequest = "layer0:f16".parse().unwrap();
    let mut spec = CacheSpec::new("fixture/reg", vec![tap]);
    spec.labels = LabelKind::Pixel;
    spec.shard_images = 2;
    spec.workers = 2;
    let out = tmp.path().join("cache");
    assert!(build_cache(&vit, &images, &out, &spec).unwrap().complete);

    let cache = ActivationCache::open(&out).unwrap();
    assert_eq!(cache.len(), 3);
    let pre = Preprocess::default();
    for (row, item) in images.items.iter().enumerate() {
        let pixels = load_sample(item, &pre).unwrap().labels.unwrap();
        let want = patch_labels(&pixels, 224, 14);
        assert_eq!(cache.patch_labels(row).unwrap(), &want.labels[..]);
        assert_eq!(cache.patch_purity(row).unwrap(), &want.purity[..]);
        assert_eq!(cache.pixel_labels(row).unwrap(), &pixels[..]);
        assert!(want.labels.iter().all(|&l| l as usize <= NUM_CLASSES));
    }
}

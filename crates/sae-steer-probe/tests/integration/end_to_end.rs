//! A synthetic ADE20K, the random-weight test ViT, caches built on demand,
//! a small sweep, validation and reports: the whole pipeline of the
//! train_probe and validate examples.

use burn::backend::NdArray;
use sae_steer_ade20k::synth::{SynthOptions, synthesize};
use sae_steer_ade20k::{Ade20k, Split};
use sae_steer_data::ActivationCache;
use sae_steer_files::NoProgress;
use sae_steer_metrics::BestProbe;
use sae_steer_probe::activations::{PROBE_TAP, cache_is_ready, probe_cache_spec};
use sae_steer_probe::checkpoint::ProbeCheckpoint;
use sae_steer_probe::data::CachePatches;
use sae_steer_probe::{
    ProbeWeights, SweepConfig, TrainOptions, ValidateOptions, read_probes, train_sweep,
    validate_probes, write_reports,
};

type B = NdArray<f32>;

fn test_vit() -> String {
    sae_steer_testkit::test_vit_dir()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn synthetic_ade20k_probes_beat_chance() {
    let tmp = tempfile::tempdir().unwrap();
    let synth = SynthOptions {
        train: 48,
        val: 12,
        seed: 1,
        min_side: 120,
        max_side: 260,
        classes: vec![3, 7, 12, 21, 40, 90],
        min_shapes: 1,
        max_shapes: 3,
        ..SynthOptions::default()
    };
    let root = synthesize(&tmp.path().join("ade20k"), &synth, &NoProgress)
        .unwrap()
        .root;
    let ade = Ade20k::open(&root).unwrap();
    let device = Default::default();

    let train_images = ade.split(Split::Training).unwrap();
    let train_dir = tmp.path().join("cache-training");
    let spec = probe_cache_spec(&test_vit(), false);
    assert!(!cache_is_ready(&train_dir, &train_images, &spec));
    let vit = sae_steer_vit::Vit::<B>::load(&test_vit(), &device).unwrap();
    let built = sae_steer_data::build_cache(&vit, &train_images, &train_dir, &spec).unwrap();
    assert_eq!(built.total_rows, 48);
    let train_cache = ActivationCache::open(&train_dir).unwrap();
    assert!(cache_is_ready(&train_dir, &train_images, &spec));

    let sweep = SweepConfig {
        learning_rate: vec![1e-2, 1e-3],
        weight_decay: vec![1e-3],
        n_epochs: 25,
        batch_size: 16,
        eval_every: 10,
        seed: 0,
    };
    let ckpt = tmp.path().join("checkpoints");
    let opts = TrainOptions {
        ckpt_root: ckpt.clone(),
        log_file: Some(tmp.path().join("logs/train.log")),
        ..TrainOptions::default()
    };
    let data = CachePatches::new(&train_cache, PROBE_TAP).unwrap();
    let report = train_sweep::<B, _>(&sweep, &data, &opts, &device).unwrap();
    assert_eq!(report.steps, 25 * 3);
    let log = std::fs::read_to_string(tmp.path().join("logs/train.log")).unwrap();
    assert!(
        log.contains("epoch: 24, step: 75, mean train loss"),
        "{log}"
    );

    let val_images = ade.split(Split::Validation).unwrap();
    let spec = probe_cache_spec(&test_vit(), true);
    let val_dir = tmp.path().join("cache-validation");
    sae_steer_data::build_cache(&vit, &val_images, &val_dir, &spec).unwrap();
    let val_cache = ActivationCache::open(&val_dir).unwrap();

    let mut probes = read_probes(&ckpt).unwrap();
    // An untrained probe is the chance baseline.
    let first = &probes[0];
    probes.push(ProbeCheckpoint {
        weights: ProbeWeights::kaiming_uniform(first.weights.in_features, 151, 5),
        learning_rate: Some(1.0),
        weight_decay: Some(1.0),
        ..first.clone()
    });
    let vopts = ValidateOptions {
        batch_images: 5,
        threads: 2,
        ..ValidateOptions::default()
    };
    let scores = validate_probes::<B>(&probes, &val_cache, &vopts, &device).unwrap();
    let miou: Vec<f64> = scores.iter().map(|s| s.mean_iou().unwrap_or(0.0)).collect();
    let acc: Vec<f64> = scores
        .iter()
        .map(|s| s.pixel_accuracy().unwrap_or(0.0))
        .collect();
    eprintln!("mIoU {miou:?}, acc {acc:?}");
    assert_eq!(scores[0].pixels(), 12 * 224 * 224);
    let best = miou[..2].iter().copied().fold(0.0, f64::max);
    assert!(best > 0.35, "trained mIoU {best}");
    assert!(
        best > 4.0 * miou[2],
        "trained {best} vs untrained {}",
        miou[2]
    );

    let dump = tmp.path().join("logs");
    let reports = write_reports(&dump, &probes[..2], &scores[..2], ade.classes()).unwrap();
    let csv = std::fs::read_to_string(&reports.results_csv).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(
        header.starts_with("learning_rate,weight_decay,acc,mean_iou,wall,"),
        "{header}"
    );
    // Full objectInfo150 names, as the reference's columns.
    assert!(header.contains("\"building, edifice\""), "{header}");
    assert!(header.ends_with(",flag"), "{header}");
    assert_eq!(csv.lines().count(), 3);
    assert!(reports.plot.is_file());
    let best_json = BestProbe::read(reports.best_json.unwrap()).unwrap();
    assert!((best_json.mean_iou - best).abs() < 1e-12);
    assert!(best_json.checkpoint.ends_with(if miou[0] >= miou[1] {
        "lr_0_001__wd_0_001"
    } else {
        "lr_0_01__wd_0_001"
    }));
}

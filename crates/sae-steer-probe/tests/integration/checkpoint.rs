//! Probe files: the reference's folders (written by its own `dump` with real
//! torch.save), ours, and Python's float repr for folder names.

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use sae_steer_probe::checkpoint::{
    CheckpointFormat, CheckpointMeta, Probe, ProbeCheckpoint, latest_file, read_probes, read_state,
    write_state,
};
use sae_steer_probe::config::ProbeHparams;
use sae_steer_probe::naming::{checkpoint_dir_name, python_float_repr};
use sae_steer_probe::sweep::{AdamMoments, ProbeState, ProbeWeights};
use sae_steer_vit::{SafetensorsFile, TensorSource};

type B = NdArray<f32>;

fn fixture(rel: &str) -> PathBuf {
    sae_steer_testkit::fixture("probe").join(rel)
}

#[test]
fn python_float_repr_matches_python() {
    let rows: Vec<(String, String)> =
        serde_json::from_str(&std::fs::read_to_string(fixture("float_repr.json")).unwrap())
            .unwrap();
    assert!(rows.len() > 400);
    for (bits, want) in rows {
        let x = f64::from_bits(u64::from_str_radix(&bits, 16).unwrap());
        assert_eq!(python_float_repr(x), want, "bits {bits}");
    }
    assert_eq!(checkpoint_dir_name(3e-4, 1e-5), "lr_0_0003__wd_1e-05");
    assert_eq!(checkpoint_dir_name(1e-2, 1e-3), "lr_0_01__wd_0_001");
}

#[test]
fn reads_reference_probe_folders() {
    let expected = SafetensorsFile::open(fixture("reference/expected.safetensors")).unwrap();
    let x = expected.read("x").unwrap();
    let device = Default::default();
    let probes = read_probes(fixture("reference")).unwrap();
    let names: Vec<String> = probes.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["lr_0_001__wd_0_1", "lr_3e-05__wd_1e-05"]);
    assert_eq!(probes[0].step, Some(100), "the latest of steps 20 and 100");
    assert_eq!(probes[0].format, CheckpointFormat::Reference);
    assert_eq!(
        (probes[0].learning_rate, probes[0].weight_decay),
        (Some(1e-3), Some(1e-1))
    );
    assert_eq!(
        (probes[1].learning_rate, probes[1].weight_decay),
        (Some(3e-5), Some(1e-5))
    );
    for p in &probes {
        let probe = Probe::<B>::load(p.dir(), &device).unwrap();
        assert_eq!((probe.d_in(), probe.n_classes()), (8, 5));
        let logits = probe
            .logits(Tensor::from_data(
                TensorData::new(x.data.clone(), x.shape.clone()),
                &device,
            ))
            .into_data()
            .into_vec::<f32>()
            .unwrap();
        let want = expected.read(&format!("logits.{}", p.name())).unwrap().data;
        for (g, w) in logits.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{}: {g} vs torch {w}", p.name());
        }
    }
    // A file path means that file, not the folder's latest.
    let first =
        ProbeCheckpoint::read(fixture("reference/lr_0_001__wd_0_1/model_step20.pt")).unwrap();
    assert_eq!(first.step, Some(20));
    assert_ne!(first.weights, probes[0].weights);
}

#[test]
fn reference_file_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture("reference/lr_0_001__wd_0_1/model_step20.pt")).unwrap();

    let cut = dir.path().join("model_step1.pt");
    std::fs::write(&cut, &good[..good.len() - 300]).unwrap();
    let err = ProbeCheckpoint::read(&cut).unwrap_err().to_string();
    assert!(
        err.contains("model_step1.pt") && err.contains("truncated"),
        "{err}"
    );

    let headless = dir.path().join("model_step2.pt");
    let line_end = good.iter().position(|&b| b == b'\n').unwrap();
    std::fs::write(&headless, &good[line_end + 1..]).unwrap();
    let err = ProbeCheckpoint::read(&headless).unwrap_err().to_string();
    assert!(
        err.contains("model_step2.pt") && err.contains("not JSON"),
        "{err}"
    );

    let wrong = dir.path().join("model_step3.pt");
    let mut bytes = b"{\"in_features\": 9, \"out_features\": 5}\n".to_vec();
    bytes.extend_from_slice(&good[line_end + 1..]);
    std::fs::write(&wrong, bytes).unwrap();
    let err = ProbeCheckpoint::read(&wrong).unwrap_err().to_string();
    assert!(err.contains("weight") && err.contains("[5, 9]"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = ProbeCheckpoint::read(empty.path()).unwrap_err().to_string();
    assert!(err.contains("no probe checkpoint"), "{err}");
    let err = read_probes(empty.path()).unwrap_err().to_string();
    assert!(err.contains("cfg.json"), "{err}");
}

#[test]
fn our_format_round_trips_and_wins_ties() {
    let dir = tempfile::tempdir().unwrap();
    let hparams = ProbeHparams {
        learning_rate: 3e-4,
        weight_decay: 1e-5,
        seed: 9,
    };
    let weights = ProbeWeights::kaiming_uniform(8, 5, 1);
    let state = ProbeState {
        hparams,
        moments: AdamMoments {
            exp_avg_weight: (0..40).map(|i| i as f32).collect(),
            exp_avg_sq_weight: (0..40).map(|i| i as f32 * 0.5).collect(),
            exp_avg_bias: vec![1.0; 5],
            exp_avg_sq_bias: vec![2.0; 5],
        },
        weights,
    };
    let meta = CheckpointMeta {
        hparams,
        step: 100,
        epoch: 4,
        run: serde_json::json!({"data": "x"}),
    };
    let file = write_state(dir.path(), &state, &meta).unwrap();
    assert_eq!(file.file_name().unwrap(), "model_step100.safetensors");
    let (back, back_meta) = read_state(&file).unwrap();
    assert_eq!(back, state);
    assert_eq!(back_meta, meta);

    // Same step in both formats: ours is the latest.
    std::fs::copy(
        fixture("reference/lr_0_001__wd_0_1/model_step100.pt"),
        dir.path().join("model_step100.pt"),
    )
    .unwrap();
    std::fs::copy(
        fixture("reference/lr_0_001__wd_0_1/model_step20.pt"),
        dir.path().join("model_step20.pt"),
    )
    .unwrap();
    assert_eq!(latest_file(dir.path()).unwrap().0, file);
    let probe = ProbeCheckpoint::read(dir.path()).unwrap();
    assert_eq!(probe.format, CheckpointFormat::SaeSteer);
    assert_eq!(probe.learning_rate, Some(3e-4));
}

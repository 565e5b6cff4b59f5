//! Training sweeps end to end on synthetic patches: convergence, resume,
//! checkpoint layout.

use std::path::Path;
use std::sync::Arc;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sae_steer_probe::checkpoint::{ProbeCheckpoint, checkpoint_files, read_probes};
use sae_steer_probe::config::SweepConfig;
use sae_steer_probe::data::InMemoryPatches;
use sae_steer_probe::sweep::ProbeSet;
use sae_steer_probe::train::{TrainOptions, train_sweep};
use sae_steer_testkit::RecordingProgress;

type B = NdArray<f32>;

const D: usize = 16;
const C: usize = 6;
const PATCHES: usize = 8;

/// Patches around one mean per class, with noise well below the spacing:
/// linearly separable up to a few outliers.
fn separable(images: usize, seed: u64) -> InMemoryPatches {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut means = StdRng::seed_from_u64(99);
    let means: Vec<f32> = (0..C * D).map(|_| means.random_range(-2.0..2.0)).collect();
    let mut x = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..images * PATCHES {
        let class = rng.random_range(0..C);
        labels.push(class as u8);
        for i in 0..D {
            x.push(means[class * D + i] + rng.random_range(-0.5..0.5));
        }
    }
    InMemoryPatches::new(x, labels, PATCHES, D, format!("separable-{seed}")).unwrap()
}

fn options(root: &Path) -> TrainOptions {
    TrainOptions {
        ckpt_root: root.to_path_buf(),
        n_classes: C,
        chunk_patches: 50,
        save_every: 1,
        ..Default::default()
    }
}

fn sweep(n_epochs: usize) -> SweepConfig {
    SweepConfig {
        learning_rate: vec![1e-2, 1e-4],
        weight_decay: vec![1e-3, 1e-1],
        n_epochs,
        batch_size: 12,
        eval_every: 2,
        seed: 3,
    }
}

fn accuracy(set: &ProbeSet<B>, data: &InMemoryPatches) -> Vec<f64> {
    let n = data.labels.len();
    let x = Tensor::<B, 2>::from_data(TensorData::new(data.x.clone(), [n, D]), &Default::default());
    let pred = set
        .logits(x)
        .argmax(2)
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .unwrap();
    let p = set.n_probes();
    (0..p)
        .map(|probe| {
            (0..n)
                .filter(|&i| pred[i * p + probe] == i64::from(data.labels[i]))
                .count() as f64
                / n as f64
        })
        .collect()
}

#[test]
fn converges_on_separable_classes() {
    let dir = tempfile::tempdir().unwrap();
    let train = separable(64, 1);
    let test = separable(32, 2);
    let cfg = sweep(20);
    let recorder = Arc::new(RecordingProgress::new());
    let opts = TrainOptions {
        progress: recorder.clone().into(),
        ..options(dir.path())
    };
    let report = train_sweep::<B, _>(&cfg, &train, &opts, &Default::default()).unwrap();
    assert_eq!(report.epochs_run, 20);
    assert_eq!(report.steps, 20 * 6); // 64 images, 12 per step
    assert!(report.resident);
    // One phase of every step, and the log's lines as notes (one per epoch
    // after the line saying where the data lives).
    let phases = recorder.phases();
    assert_eq!(phases.len(), 1, "{phases:?}");
    assert_eq!(
        (
            phases[0].what.as_str(),
            phases[0].unit.as_str(),
            phases[0].total
        ),
        ("training probes", "steps", 120)
    );
    assert!(phases[0].is_complete(), "{phases:?}");
    let notes = recorder.notes();
    assert_eq!(notes.len(), 1 + 20, "{notes:?}");
    assert!(notes[1].starts_with("epoch: 0, step: 6,"), "{notes:?}");

    let probes = read_probes(dir.path()).unwrap();
    assert_eq!(probes.len(), 4);
    let weights: Vec<_> = probes.iter().map(|p| &p.weights).collect();
    let set = ProbeSet::<B>::new(&weights, &Default::default()).unwrap();
    let acc = accuracy(&set, &test);
    for (p, a) in probes.iter().zip(&acc) {
        eprintln!("{} step {:?}: held-out accuracy {a:.3}", p.name(), p.step);
    }
    // Sorted folder names: lr_0_0001__wd_0_001, lr_0_0001__wd_0_1, lr_0_01__wd_0_001, lr_0_01__wd_0_1.
    assert_eq!(probes[2].name(), "lr_0_01__wd_0_001");
    assert!(acc[2] > 0.97 && acc[3] > 0.97, "{acc:?}");
    // lr 1e-4 moves the weights ~1e-4 a step: 120 steps barely leave the start.
    assert!(acc[0] < acc[2], "{acc:?}");
    assert_eq!(probes[2].learning_rate, Some(1e-2));
    assert_eq!(probes[2].weight_decay, Some(1e-3));
    assert_eq!(probes[2].step, Some(120));
}

fn final_weights(root: &Path) -> Vec<Vec<f32>> {
    read_probes(root)
        .unwrap()
        .into_iter()
        .map(|p| [p.weights.weight, p.weights.bias].concat())
        .collect()
}

#[test]
fn resume_equals_uninterrupted() {
    let data = separable(40, 5);
    let cfg = sweep(6);
    for resident in [true, false] {
        let whole = tempfile::tempdir().unwrap();
        let mut opts = options(whole.path());
        opts.resident_bytes = if resident { u64::MAX } else { 0 };
        let r = train_sweep::<B, _>(&cfg, &data, &opts, &Default::default()).unwrap();
        assert_eq!(r.resident, resident);

        let parts = tempfile::tempdir().unwrap();
        let mut opts = options(parts.path());
        opts.resident_bytes = if resident { u64::MAX } else { 0 };
        let mut starts = Vec::new();
        for k in [2, 1, 10] {
            opts.max_epochs = Some(k);
            let r = train_sweep::<B, _>(&cfg, &data, &opts, &Default::default()).unwrap();
            starts.push(r.start_epoch);
        }
        assert_eq!(starts, [0, 2, 3]);
        assert_eq!(
            final_weights(whole.path()),
            final_weights(parts.path()),
            "resident {resident}"
        );

        // A finished run has nothing left to do.
        let r = train_sweep::<B, _>(&cfg, &data, &opts, &Default::default()).unwrap();
        assert_eq!((r.start_epoch, r.epochs_run), (6, 0));
    }
}

#[test]
fn keeps_evaluation_checkpoints_and_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let data = separable(24, 7); // 2 steps an epoch
    let mut opts = options(dir.path());
    opts.max_epochs = Some(4);
    train_sweep::<B, _>(&sweep(7), &data, &opts, &Default::default()).unwrap();
    let probe = dir.path().join("lr_0_01__wd_0_1");
    let steps = |p: &Path| -> Vec<u64> {
        let mut s: Vec<u64> = checkpoint_files(p)
            .unwrap()
            .into_iter()
            .filter_map(|f| f.1)
            .collect();
        s.sort();
        s
    };
    // Epochs 0 and 2 are kept (eval_every 2); epoch 3 is the newest.
    assert_eq!(steps(&probe), [2, 6, 8]);
    opts.max_epochs = None;
    train_sweep::<B, _>(&sweep(7), &data, &opts, &Default::default()).unwrap();
    // Epochs 0, 2, 4, 6 (the last).
    assert_eq!(steps(&probe), [2, 6, 10, 14]);
    assert_eq!(ProbeCheckpoint::read(&probe).unwrap().step, Some(14));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(probe.join("cfg.json")).unwrap()).unwrap();
    assert_eq!(cfg["learning_rate"], 0.01);
    assert_eq!(cfg["weight_decay"], 0.1);
    assert_eq!(cfg["n_epochs"], 7);
}

#[test]
fn refuses_to_resume_on_other_data_or_labels_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.max_epochs = Some(1);
    train_sweep::<B, _>(&sweep(3), &separable(24, 7), &opts, &Default::default()).unwrap();
    let err = train_sweep::<B, _>(&sweep(3), &separable(24, 8), &opts, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot resume") && err.contains("separable-7"),
        "{err}"
    );
    // The way out in the library's terms, not a command-line flag.
    assert!(
        err.contains("TrainOptions::ckpt_root") && !err.contains("--"),
        "{err}"
    );

    let mut bad = separable(4, 1);
    bad.labels[13] = C as u8;
    let err = train_sweep::<B, _>(
        &sweep(1),
        &bad,
        &options(tempfile::tempdir().unwrap().path()),
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("image 1 has patch label 6"), "{err}");
}

/// Every file under `root` (probe folders one level deep) with its bytes,
/// leaving out the folder lock (it records the holder's pid).
fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root).unwrap().flatten() {
        if !dir.path().is_dir() {
            assert_eq!(dir.file_name(), ".lock", "{:?}", dir.path());
            continue;
        }
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = format!(
                "{}/{}",
                dir.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            );
            out.push((name, std::fs::read(f.path()).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn a_rerun_after_a_crash_removes_its_leftovers_and_ends_like_an_uninterrupted_run() {
    let data = separable(24, 7); // 2 steps an epoch
    let cfg = sweep(7);
    let whole = tempfile::tempdir().unwrap();
    train_sweep::<B, _>(&cfg, &data, &options(whole.path()), &Default::default()).unwrap();

    let crashed = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut opts = options(crashed.path());
    opts.log_file = Some(logs.path().join("train.log"));
    opts.max_epochs = Some(4);
    train_sweep::<B, _>(&cfg, &data, &opts, &Default::default()).unwrap();
    // What a kill -9 can leave: a temporary of a checkpoint being written,
    // the previous rolling checkpoint (killed after the save, before the
    // pruning), and half a log line.
    let probe = crashed.path().join("lr_0_01__wd_0_1");
    std::fs::write(
        probe.join(".model_step10.safetensors.tmp-999999-0"),
        b"half",
    )
    .unwrap();
    std::fs::copy(
        probe.join("model_step8.safetensors"),
        probe.join("model_step4.safetensors"),
    )
    .unwrap();
    let log = logs.path().join("train.log");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str("epoch: 4, ste");
    std::fs::write(&log, &text).unwrap();

    // While another process holds the folder, a second sweep is refused.
    let lock = sae_steer_files::FolderLock::acquire(crashed.path()).unwrap();
    opts.max_epochs = None;
    let err = train_sweep::<B, _>(&cfg, &data, &opts, &Default::default()).unwrap_err();
    // The folder in the message, the lock's holder in its cause.
    let cause = std::error::Error::source(&err).map(|c| c.to_string());
    assert!(
        cause
            .as_deref()
            .is_some_and(|c| c.contains("in use by another process")),
        "{err}: {cause:?}"
    );
    drop(lock);

    let r = train_sweep::<B, _>(&cfg, &data, &opts, &Default::default()).unwrap();
    assert_eq!(r.start_epoch, 4);
    let (want, have) = (files(whole.path()), files(crashed.path()));
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&have), names(&want));
    for ((name, a), (_, b)) in want.iter().zip(&have) {
        assert!(a == b, "{name} differs from an uninterrupted run's");
    }
    // The cut line was ended before the resumed run's lines.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("epoch: 4, ste\nresuming"), "{text}");
}

//! Bounded fuzzing of the probe checkpoint readers: the reference's `.pt`
//! (JSON line + torch.save) and our safetensors, mutated from valid files.

use std::time::Duration;

use sae_steer_probe::ProbeCheckpoint;
use sae_steer_testkit::{fixture, fuzz};

#[test]
fn fuzz_probe_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = vec![
        std::fs::read(fixture("probe/reference/lr_0_001__wd_0_1/model_step20.pt")).unwrap(),
        std::fs::read(fixture(
            "probe/reference/lr_3e-05__wd_1e-05/model_step8000.pt",
        ))
        .unwrap(),
    ];
    let path = dir.path().join("model_step7.pt");
    let report = fuzz(
        "probe .pt",
        &seeds,
        31,
        10_000,
        Duration::from_secs(12),
        |bytes| {
            std::fs::write(&path, bytes).unwrap();
            match ProbeCheckpoint::read(&path) {
                Ok(p) => {
                    let w = &p.weights;
                    assert_eq!(w.weight.len(), w.in_features * w.out_features);
                    assert_eq!(w.bias.len(), w.out_features);
                    true
                }
                Err(_) => false,
            }
        },
    );
    assert!(report.inputs >= 500, "{report:?}");
    assert!(report.accepted > 0, "{report:?}");
}

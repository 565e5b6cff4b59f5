//! Bounded fuzzing of the SAE file parsers (saev `sae.pt`, our safetensors
//! checkpoints, saev `visuals` tensors): mutated bytes of valid files, a
//! fixed seed, input count and time budget. A panic fails the test.

use std::time::Duration;

use sae_steer_sae::{FeatureStats, SaeWeights, StatsInfo};
use sae_steer_testkit::{fixture, fuzz};

const BUDGET: Duration = Duration::from_secs(12);

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn fuzz_sae_checkpoints() {
    // saev files of every header form, and one of our safetensors files.
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.safetensors");
    sae_steer_sae::saev::read(fixture("sae/schema5_topk.pt"))
        .unwrap()
        .save(&ours)
        .unwrap();
    let seeds = vec![
        read("sae/pre_schema.pt"),
        read("sae/schema1.pt"),
        read("sae/schema5_topk.pt"),
        read("sae/schema5_batchtopk.pt"),
        read("hostile/checkpoints/deflated_ok.pt"),
        std::fs::read(&ours).unwrap(),
    ];
    let path = dir.path().join("sae.pt");
    let report = fuzz("sae checkpoint", &seeds, 21, 10_000, BUDGET, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        match SaeWeights::load(&path) {
            Ok(w) => {
                let (d, s) = (w.config.d_model, w.config.d_sae);
                assert_eq!(w.w_enc.data.len(), d * s);
                assert_eq!(w.w_dec.data.len(), s * d);
                true
            }
            Err(_) => false,
        }
    });
    assert!(report.inputs >= 500, "{report:?}");
    assert!(report.accepted > 0, "{report:?}");
}

#[test]
fn fuzz_saev_visuals() {
    const FILES: [&str; 4] = [
        "top_values.pt",
        "top_img_i.pt",
        "sparsity.pt",
        "mean_values.pt",
    ];
    let seeds: Vec<Vec<u8>> = FILES
        .iter()
        .map(|f| read(&format!("sae/stats_saev/{f}")))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for f in FILES {
        std::fs::copy(fixture(&format!("sae/stats_saev/{f}")), dir.path().join(f)).unwrap();
    }
    let mut index = 0;
    let report = fuzz("saev visuals", &seeds, 22, 6_000, BUDGET, |bytes| {
        // Input i mutates seed i % 4: that file is replaced, the others stay valid.
        let file = FILES[index % FILES.len()];
        index += 1;
        std::fs::write(dir.path().join(file), bytes).unwrap();
        let accepted = FeatureStats::load_saev(dir.path(), StatsInfo::default()).is_ok();
        std::fs::copy(
            fixture(&format!("sae/stats_saev/{file}")),
            dir.path().join(file),
        )
        .unwrap();
        accepted
    });
    assert!(report.inputs >= 300, "{report:?}");
}

//! The probe part of the hostile checkpoint corpus
//! (`tests/fixtures/hostile/checkpoints`, made by
//! `scripts/make_hostile_checkpoints.py`).

use std::path::PathBuf;

use sae_steer_probe::ProbeCheckpoint;
use sae_steer_probe::checkpoint::{latest_file, step_of};
use sae_steer_testkit::{fixture, hostile};

fn case(name: &str) -> PathBuf {
    hostile(&format!("checkpoints/{name}"))
}

#[test]
fn a_step_number_of_u64_max_is_the_latest_without_overflow() {
    let dir = case("probe_step_overflow");
    let probe = ProbeCheckpoint::read(&dir).unwrap();
    assert_eq!(probe.step, Some(u64::MAX));
    assert!(probe.file.ends_with("model_step18446744073709551615.pt"));
    assert_eq!(probe.weights.out_features, 5);
    // A step too large for u64 is no step at all: the latest is then step 20.
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(dir.join("model_step20.pt")).unwrap();
    let huge = tmp.path().join("model_step99999999999999999999999.pt");
    std::fs::write(&huge, &bytes).unwrap();
    std::fs::write(tmp.path().join("model_step20.pt"), &bytes).unwrap();
    assert_eq!(step_of(&huge), None);
    let (latest, step) = latest_file(tmp.path()).unwrap();
    assert_eq!(step, Some(20));
    assert!(latest.ends_with("model_step20.pt"));
}

#[test]
fn a_reference_probe_whose_pickle_lies_is_an_error() {
    let err = ProbeCheckpoint::read(case("probe_lying_shape")).expect_err("must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("model_step1.pt")
            && msg.contains("weight")
            && msg.contains("larger than its storage"),
        "{msg}"
    );
}

#[test]
fn a_reference_probe_without_its_header_line_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(fixture("probe/reference/lr_0_001__wd_0_1/model_step20.pt")).unwrap();
    let start = full.iter().position(|&b| b == b'\n').unwrap() + 1;
    // The archive alone (its bytes hold no early newline), and a line over the bound.
    let path = dir.path().join("model_step3.pt");
    std::fs::write(&path, &full[start..start + 30]).unwrap();
    let msg = ProbeCheckpoint::read(&path).err().unwrap().to_string();
    assert!(
        msg.contains("model_step3.pt") && msg.contains("JSON line"),
        "{msg}"
    );
    let mut long = vec![b'{'; 100_000];
    long.extend(&full);
    std::fs::write(&path, &long).unwrap();
    let msg = ProbeCheckpoint::read(&path).err().unwrap().to_string();
    assert!(msg.contains("within the first 65536 bytes"), "{msg}");
}

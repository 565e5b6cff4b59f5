//! `cargo xtask reproduce --demo --quick` end to end with the example
//! programs of this build: every artifact exists and parses, and a rerun
//! redoes only what is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>/examples`, next to this test's own `deps` folder.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    profile_dir.join("examples")
}

/// `cargo test --workspace` has built the examples already; a lone
/// `cargo test -p xtask` builds them here. (Reproduce names any program
/// still missing.)
fn ensure_programs(dir: &Path) {
    let quantify = dir.join(format!("quantify{}", std::env::consts::EXE_SUFFIX));
    if !quantify.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .args(["build", "-p", "sae-steer-examples", "--examples"])
            .status()
            .unwrap();
        assert!(status.success(), "building the examples failed");
    }
}

fn reproduce(out: &Path, bins: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["reproduce", "--demo", "--quick", "--out"])
        .arg(out)
        .arg("--bin-dir")
        .arg(bins)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "reproduce failed:\n{log}");
    log
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Header and rows of a CSV file; every row as wide as the header.
fn csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    for row in &rows {
        assert_eq!(row.len(), header.len(), "{}: {row:?}", path.display());
    }
    (header, rows)
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n"))
}

#[test]
fn demo_writes_every_artifact_and_resumes() {
    let bins = examples_dir();
    ensure_programs(&bins);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let log = reproduce(&out, &bins);
    assert!(!log.contains("up to date"), "{log}");

    // Probe sweep and validation.
    let (header, rows) = csv(&out.join("validate/results.csv"));
    assert_eq!(
        &header[..4],
        ["learning_rate", "weight_decay", "acc", "mean_iou"]
    );
    assert_eq!(rows.len(), 3, "three probes");
    let best: serde_json::Value =
        serde_json::from_str(&read(&out.join("validate/best.json"))).unwrap();
    let miou = best["mean_iou"].as_f64().unwrap();
    assert!(miou > 0.2 && miou <= 1.0, "the probe learns: mIoU {miou}");
    assert!(is_png(&out.join("validate/hparam-sweeps.png")));

    // Quantify: the three methods a fresh SAE allows, over the demo classes.
    let (header, rows) = csv(&out.join("quantify/results.csv"));
    assert_eq!(
        &header[..5],
        [
            "method",
            "target_change",
            "target_std",
            "other_change",
            "other_std"
        ]
    );
    let methods: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(methods, ["random-vector", "random-latent", "auto"]);
    for row in &rows {
        for v in &row[1..5] {
            let v: f64 = v.parse().unwrap_or_else(|_| panic!("{row:?}"));
            assert!((0.0..=100.0).contains(&v), "{row:?}");
        }
    }
    for file in ["per_class.csv", "changes.csv", "selection.csv"] {
        let (_, rows) = csv(&out.join("quantify").join(file));
        assert!(!rows.is_empty(), "{file} is empty");
    }
    assert!(out.join("stats/feature-stats.safetensors").is_file());
    assert!(out.join("stats/normalization.safetensors").is_file());

    // Figures and the report that shows them.
    let figures = read(&out.join("figures/index.txt"));
    assert!(!figures.trim().is_empty());
    for name in figures.lines() {
        assert!(is_png(&out.join("figures").join(name)), "{name}");
    }
    let report = read(&out.join("report.md"));
    for needle in [
        "## Linear probe",
        "| method |",
        "| auto |",
        "figures/steer-",
        "## Stages",
    ] {
        assert!(
            report.contains(needle),
            "`{needle}` not in report.md:\n{report}"
        );
    }

    // A rerun skips every stage; a lost output reruns its stage only.
    std::fs::remove_file(out.join("figures/index.txt")).unwrap();
    let log = reproduce(&out, &bins);
    for stage in [
        "data",
        "cache-training",
        "cache-validation",
        "train-probe",
        "validate",
        "train-sae",
        "stats",
        "quantify",
    ] {
        assert!(
            log.contains(&format!("reproduce: {stage} is up to date")),
            "{stage}:\n{log}"
        );
    }
    assert!(log.contains("reproduce: figures: "), "{log}");
    assert!(out.join("figures/index.txt").is_file());
}

#[test]
fn a_full_cpu_run_states_its_cost_and_waits_for_consent() {
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["reproduce", "--device", "cpu", "--out"])
        .arg(tmp.path().join("run"))
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains("days") && log.contains("--yes"), "{log}");
    // Nothing was started: no output folder, no download.
    assert!(!tmp.path().join("run").exists());
    assert!(!tmp.path().join("data").exists());
}

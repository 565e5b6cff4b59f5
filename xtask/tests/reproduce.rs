//! `cargo xtask reproduce --demo --quick` end to end with the `sae-steer`
//! program of this build: every artifact exists and parses, and a rerun
//! redoes only what is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>`, above this test's own `deps` folder, where the
/// `sae-steer` program of this build is.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// The `sae-steer` program in `dir`.
fn program(dir: &Path) -> PathBuf {
    dir.join(format!("sae-steer{}", std::env::consts::EXE_SUFFIX))
}

/// `cargo test --workspace` may have built the program already; otherwise
/// it is built here. (Reproduce says so when it is still missing.)
fn ensure_programs(dir: &Path) {
    if !program(dir).is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .args(["build", "-p", "sae-steer-cli", "--bin", "sae-steer"])
            .status()
            .unwrap();
        assert!(status.success(), "building the sae-steer program failed");
    }
}

fn reproduce(out: &Path, bins: &Path) -> String {
    reproduce_with(out, bins, &[])
}

fn reproduce_with(out: &Path, bins: &Path, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["reproduce", "--demo", "--quick", "--out"])
        .arg(out)
        .arg("--bin-dir")
        .arg(bins)
        .args(extra)
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
    let bins = profile_dir();
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
    // The reference's columns first (pooled fractions, std over all 150
    // classes), then ours (percent, over the classes with patches).
    let (header, rows) = csv(&out.join("quantify/results.csv"));
    assert_eq!(
        header,
        [
            "method",
            "target_change",
            "target_std",
            "other_change",
            "other_std",
            "target_change_macro_pct",
            "target_std_macro_pct",
            "other_change_macro_pct",
            "other_std_macro_pct",
            "target_pooled_pct",
            "other_pooled_pct",
            "n_classes_macro",
            "n_classes_all"
        ]
    );
    let methods: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(methods, ["random-vector", "random-latent", "auto"]);
    let number = |row: &Vec<String>, i: usize| -> f64 {
        row[i]
            .parse()
            .unwrap_or_else(|_| panic!("column {i}: {row:?}"))
    };
    for row in &rows {
        for i in 1..5 {
            assert!((0.0..=1.0).contains(&number(row, i)), "{row:?}");
        }
        for i in 5..11 {
            assert!((0.0..=100.0).contains(&number(row, i)), "{row:?}");
        }
        assert_eq!(&row[12], "150", "{row:?}");
        // The target rate pooled over the classes with patches is the
        // reference's pooled fraction in percent.
        assert!(
            (number(row, 9) - 100.0 * number(row, 1)).abs() < 1e-9,
            "{row:?}"
        );
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

    // An input rewritten under the same name (the statistics file, as a
    // retrained SAE would be) reruns the stages that read it, only those.
    let stats = out.join("stats/feature-stats.safetensors");
    std::fs::write(&stats, std::fs::read(&stats).unwrap()).unwrap();
    let log = reproduce(&out, &bins);
    assert!(log.contains("reproduce: stats is up to date"), "{log}");
    assert!(log.contains("reproduce: quantify: "), "{log}");
    assert!(log.contains("reproduce: figures: "), "{log}");

    sharded_caches_give_the_one_process_results(&out, &bins);
}

/// A stage's recorded command with some flags' values replaced (and flags
/// added), ready to run from `bins`.
fn stage_command(out: &Path, bins: &Path, stage: &str, set: &[(&str, String)]) -> Command {
    let record: serde_json::Value =
        serde_json::from_str(&read(&out.join(format!("stages/{stage}.json")))).unwrap();
    let words: Vec<String> = record["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    let mut args = words[1..].to_vec();
    for (flag, value) in set {
        match args.iter().position(|a| a == flag) {
            Some(i) => args[i + 1] = value.clone(),
            None => args.extend([flag.to_string(), value.clone()]),
        }
    }
    let mut cmd = Command::new(program(bins));
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .arg(words[0].replace('_', "-"))
        .args(args);
    cmd
}

fn succeed(mut cmd: Command) {
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "{cmd:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `cache --shard I/3` in three processes at once into one folder, then
/// validation and quantify on it: the same result files, byte for byte, as
/// with the cache built by one process.
fn sharded_caches_give_the_one_process_results(out: &Path, bins: &Path) {
    let tap_dir = |root: &str| out.join(root).join("validation-layer1");
    for root in ["caches-one", "caches-three"] {
        std::fs::create_dir_all(out.join(root)).unwrap();
        // Feature selection reads the training split's cache.
        std::os::unix::fs::symlink(
            out.join("caches/training-layer1"),
            out.join(root).join("training-layer1"),
        )
        .unwrap();
    }
    // Shards of 4 of the 12 validation images, so each part has one.
    let cache = |root: &str, shard: Option<&str>| {
        let mut set = vec![
            ("--out", tap_dir(root).display().to_string()),
            ("--shard-images", "4".to_string()),
        ];
        if let Some(s) = shard {
            set.push(("--shard", s.to_string()));
        }
        stage_command(out, bins, "cache-validation", &set)
    };
    succeed(cache("caches-one", None));
    std::thread::scope(|scope| {
        for part in ["1/3", "2/3", "3/3"] {
            let cmd = cache("caches-three", Some(part));
            scope.spawn(move || succeed(cmd));
        }
    });
    let merged: serde_json::Value =
        serde_json::from_str(&read(&tap_dir("caches-three").join("manifest.json"))).unwrap();
    assert_eq!(merged["parts"], 3);
    for root in ["caches-one", "caches-three"] {
        let tag = root.trim_start_matches("caches-");
        succeed(stage_command(
            out,
            bins,
            "validate",
            &[
                ("--cache", tap_dir(root).display().to_string()),
                (
                    "--dump-to",
                    out.join(format!("validate-{tag}")).display().to_string(),
                ),
            ],
        ));
        succeed(stage_command(
            out,
            bins,
            "quantify",
            &[
                ("--cache-dir", out.join(root).display().to_string()),
                (
                    "--out",
                    out.join(format!("quantify-{tag}")).display().to_string(),
                ),
            ],
        ));
    }
    for file in [
        "validate-{}/results.csv",
        "quantify-{}/results.csv",
        "quantify-{}/per_class.csv",
        "quantify-{}/changes.csv",
        "quantify-{}/selection.csv",
    ] {
        let one = std::fs::read(out.join(file.replace("{}", "one"))).unwrap();
        let three = std::fs::read(out.join(file.replace("{}", "three"))).unwrap();
        assert!(
            one == three,
            "{file} differs between one process and three parts"
        );
    }
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

#[test]
fn a_scale_run_records_every_stage_in_scale_json() {
    let bins = profile_dir();
    ensure_programs(&bins);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("scale");
    // The smallest run (20 + 4 images at the real geometry); one probe epoch
    // instead of 400 keeps it short, and the report says so.
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "reproduce",
            "--scale",
            "0.0001",
            "--probe-epochs",
            "1",
            "--out",
        ])
        .arg(&out)
        .arg("--bin-dir")
        .arg(&bins)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "reproduce --scale failed:\n{log}");

    let scale: serde_json::Value = serde_json::from_str(&read(&out.join("scale.json"))).unwrap();
    assert_eq!(scale["fraction"], 0.0001);
    assert_eq!(scale["device"], "cpu");
    assert_eq!(scale["train_images"], 20);
    assert_eq!(scale["val_images"], 4);
    let stages = scale["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "data",
            "vit",
            "cache-training",
            "cache-validation",
            "train-probe",
            "validate",
            "train-sae",
            "stats",
            "quantify",
            "figures"
        ]
    );
    for s in stages {
        for key in ["wall_s", "cpu_s", "peak_rss_mib", "items_per_s"] {
            let v = s[key].as_f64().unwrap_or_else(|| panic!("{key}: {s}"));
            assert!(v > 0.0, "{key} of {s}");
        }
        assert!(s["items"].as_u64().unwrap() > 0, "{s}");
        assert!(s["peak_gpu_mib"].is_null(), "no GPU here: {s}");
    }
    let stage = |name: &str| stages.iter().find(|s| s["name"] == name).unwrap();
    // The random ViT-B/14 is 346 MB of weights; caches hold 0.8 MB an image.
    assert!(stage("vit")["bytes_written"].as_u64().unwrap() > 300_000_000);
    assert!(stage("cache-training")["bytes_written"].as_u64().unwrap() > 20 * 800_000);
    assert_eq!(stage("cache-training")["items"], 20);
    assert_eq!(stage("train-probe")["items"], 20 * 256);
    assert_eq!(stage("train-probe")["unit"], "patch-epochs");
    // Passes x the 4 validation images; each class present has up to four
    // methods' passes.
    let image_passes = stage("quantify")["items"].as_u64().unwrap();
    assert!(
        image_passes % 4 == 0 && image_passes / 4 >= 4,
        "{image_passes}"
    );

    let report = read(&out.join("report.md"));
    for needle in [
        "sae-steer scale report",
        "fewer epochs than the real job's 400",
        "| cache-training |",
        "## At full size",
    ] {
        assert!(
            report.contains(needle),
            "`{needle}` not in report.md:\n{report}"
        );
    }
}

/// The demo's stages on a patch-16 model without registers: the random
/// CLIP vision tower of the parity fixtures (a 14 x 14 grid at 224 px, one
/// CLS token). Labels, the probe, validation upsampling, the SAE on the
/// patch tokens, statistics and quantify all follow the model's geometry.
#[test]
fn the_demo_runs_on_a_patch_16_clip_model() {
    let bins = profile_dir();
    ensure_programs(&bins);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo-clip");
    let clip = sae_steer_testkit::fixture("vit/clip");
    reproduce_with(&out, &bins, &["--vit", clip.to_str().unwrap()]);

    let manifest: serde_json::Value =
        serde_json::from_str(&read(&out.join("caches/training-layer1/manifest.json"))).unwrap();
    assert_eq!(manifest["model_config"]["family"], "clip");
    assert_eq!(manifest["model_config"]["patch_size"], 16);
    // CLS + 14 x 14 patches per image, as CLIP's processor crops 224 px.
    let tap = &manifest["taps"][0];
    assert_eq!(tap["n_tokens"], 1 + 14 * 14, "{tap}");
    assert_eq!(tap["dim"], 64, "{tap}");
    let (_, rows) = csv(&out.join("validate/results.csv"));
    assert_eq!(rows.len(), 3, "three probes");
    let best: serde_json::Value =
        serde_json::from_str(&read(&out.join("validate/best.json"))).unwrap();
    let miou = best["mean_iou"].as_f64().unwrap();
    assert!(miou > 0.0 && miou <= 1.0, "mIoU {miou}");
    let (_, rows) = csv(&out.join("quantify/results.csv"));
    let methods: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(methods, ["random-vector", "random-latent", "auto"]);
    // The SAE read CLIP's 196 patch tokens of width 64.
    let training: serde_json::Value =
        serde_json::from_str(&read(&out.join("stages/train-sae.json"))).unwrap();
    let command = training.to_string();
    assert!(command.contains("patches"), "{command}");
    let report = read(&out.join("report.md"));
    assert!(report.contains("vit/clip"), "{report}");
    assert!(report.contains("| auto |"), "{report}");
}

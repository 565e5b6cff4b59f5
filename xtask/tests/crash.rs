//! Crash test: `kill -9` at random moments during each long job of the
//! pipeline (cache building, probe training, SAE training, feature
//! statistics, quantify); rerunning the same command until it completes must
//! end with outputs equal, byte for byte, to those of an uninterrupted run.
//!
//! It drives the real example programs of this build as child processes, on
//! a few dozen synthetic images and the small random-weight test ViT. Per
//! stage: one uninterrupted run, whose outputs are moved aside; then the same
//! command at the same paths (so outputs that record paths agree), killed
//! with SIGKILL after a random delay drawn (seeded) from the uninterrupted
//! run's measured duration, again and again; then rerun to completion; then
//! every output file is compared with the moved-aside one.
//!
//! Not compared, because they legitimately differ between runs:
//! - `.lock`, the folder lock of a job's output folder: it records the
//!   holder's pid;
//! - the probe sweep's `train.log`: a log of what each call did (a resumed
//!   call logs that it resumed); it is never read back.
//!
//! Each kill lands after the job's fixed cost (a rerun with nothing left to
//! do, measured) plus a uniform share of the uninterrupted run's work. A
//! chain of runs starts from nothing and is killed until a run completes
//! before its kill; chains repeat until `CRASH_KILLS` (default 4) kills have
//! landed in the stage, every chain's outputs compared. `CRASH_SEED` (default
//! 14) seeds the delays; the test prints both, the kills survived per stage
//! and the time each took.
//!
//! This lives in xtask, which links no burn, so a second test binary here
//! costs seconds to build; and xtask already runs the example programs as
//! `cargo xtask reproduce` does (their paths, `--bin-dir`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The small random-weight DINOv2 of the tests (3 blocks, 4 registers).
const VIT: &str = "tests/fixtures/vit/reg";
const LAYER: &str = "1";
const CLASSES: &str = "wall,floor,sky,tree,grass,person,car,painting";

/// `target/<profile>/examples`, next to this test's own `deps` folder.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    profile_dir.join("examples")
}

fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A lone `cargo test -p xtask` builds the programs here.
fn ensure_programs(dir: &Path) {
    let all = [
        "synth_ade20k",
        "cache",
        "train_probe",
        "train_sae",
        "stats",
        "quantify",
    ];
    if all.iter().any(|p| {
        !dir.join(format!("{p}{}", std::env::consts::EXE_SUFFIX))
            .is_file()
    }) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(checkout())
            .args(["build", "-p", "sae-steer-examples", "--examples"])
            .status()
            .unwrap();
        assert!(status.success(), "building the examples failed");
    }
}

/// SplitMix64: the delays' seeded generator (xtask has no `rand`).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: expected a whole number")),
        Err(_) => default,
    }
}

/// One job of the pipeline: a program, its arguments, and the paths (under
/// the work folder) it writes.
struct Job {
    name: &'static str,
    program: &'static str,
    args: Vec<String>,
    outputs: Vec<&'static str>,
}

/// What happened to a job's runs.
struct Outcome {
    name: &'static str,
    /// Kills that landed while the job was running.
    kills: usize,
    /// Of those, kills after which some output file existed: the next run
    /// had partial work to resume from or to clean up.
    partial: usize,
    /// Runs from nothing to complete outputs, each killed as often as it
    /// took for a run to complete before its kill.
    chains: usize,
    /// The uninterrupted run's duration, and that of a rerun with nothing
    /// left to do.
    clean: Duration,
    fixed: Duration,
    /// Everything the stage took (clean run, killed runs, final run, compare).
    total: Duration,
    files: usize,
}

struct Harness {
    bins: PathBuf,
    work: PathBuf,
    golden: PathBuf,
    rng: Rng,
    kills: usize,
}

impl Harness {
    fn command(&self, job: &Job) -> Command {
        let mut cmd = Command::new(self.bins.join(format!(
            "{}{}",
            job.program,
            std::env::consts::EXE_SUFFIX
        )));
        cmd.args(&job.args)
            .current_dir(checkout())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `job` to completion; panics with its output if it fails.
    fn run(&self, job: &Job, what: &str) -> Duration {
        let started = Instant::now();
        let out = self.command(job).output().unwrap();
        assert!(
            out.status.success(),
            "{} ({what}) failed: {}\nstdout:\n{}\nstderr:\n{}",
            job.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    }

    /// Starts `job` and SIGKILLs it after `delay`; returns whether the kill
    /// landed (false: the run had completed by then, successfully).
    fn run_and_kill(&self, job: &Job, delay: Duration) -> bool {
        // Output goes to files, not pipes: a killed child must not block on a
        // full pipe nobody reads, and a run that fails by itself shows why.
        let log = self.work.join(format!("{}.killed-run.log", job.name));
        let file = std::fs::File::create(&log).unwrap();
        let mut child = self
            .command(job)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + delay;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "{}: a resumed run failed by itself ({status}):\n{}",
                    job.name,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
        }
        // Command::kill is SIGKILL on unix: no destructor, no flush runs.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        // It may have exited in the instant between the poll and the kill.
        status.code().is_none() || {
            assert!(status.success(), "{}: exited with {status}", job.name);
            false
        }
    }

    fn crash(&mut self, job: &Job) -> Outcome {
        let started = Instant::now();
        for out in &job.outputs {
            remove(&self.work.join(out));
        }
        let clean = self.run(job, "uninterrupted");
        // Rerunning a finished job does nothing (and must change nothing:
        // the reference is taken after it). Its duration is the job's fixed
        // cost: process start, loading, checks.
        let fixed = self.run(job, "rerun of a finished job");
        // The reference outputs move aside; the killed runs write to the same
        // paths, so files that record a path agree.
        let golden = self.golden.join(job.name);
        for out in &job.outputs {
            let to = golden.join(out);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::rename(self.work.join(out), &to).unwrap();
        }
        let want: Vec<_> = job.outputs.iter().map(|o| tree(&golden.join(o))).collect();
        // The kill lands after the fixed cost plus a uniform share of the
        // uninterrupted run's work.
        let work = clean.saturating_sub(fixed);
        let (mut kills, mut partial, mut chains, mut files) = (0, 0, 0, 0);
        // A chain starts from nothing and is killed until a run completes
        // before its kill (a resumed run has less left to do); chains repeat
        // until the kills wanted have landed.
        while kills < self.kills && chains < 2 * self.kills {
            chains += 1;
            for out in &job.outputs {
                remove(&self.work.join(out));
            }
            let mut in_chain = 0;
            while in_chain < 2 * self.kills {
                let delay = fixed.mul_f64(self.rng.uniform(0.5, 1.0))
                    + work.mul_f64(self.rng.uniform(0.0, 1.0));
                if !self.run_and_kill(job, delay) {
                    break;
                }
                in_chain += 1;
                if job
                    .outputs
                    .iter()
                    .any(|o| !tree(&self.work.join(o)).is_empty())
                {
                    partial += 1;
                }
            }
            kills += in_chain;
            self.run(job, "resumed to completion");
            files = 0;
            for (out, want) in job.outputs.iter().zip(&want) {
                let have = tree(&self.work.join(out));
                let names = |t: &BTreeMap<PathBuf, Vec<u8>>| t.keys().cloned().collect::<Vec<_>>();
                assert_eq!(
                    names(&have),
                    names(want),
                    "{}: {out} holds other files after {in_chain} kills than after an \
                     uninterrupted run",
                    job.name
                );
                for (path, bytes) in want {
                    assert!(
                        have[path] == *bytes,
                        "{}: {out}/{} differs after {in_chain} kills ({} vs {} bytes \
                         uninterrupted)",
                        job.name,
                        path.display(),
                        have[path].len(),
                        bytes.len()
                    );
                }
                files += want.len();
            }
        }
        Outcome {
            name: job.name,
            kills,
            partial,
            chains,
            clean,
            fixed,
            total: started.elapsed(),
            files,
        }
    }
}

/// Every compared file under `root` (a file or a folder), by relative path.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        if !path.exists() {
            continue;
        }
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy();
        if name == ".lock" || name == "train.log" {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        out.insert(rel, std::fs::read(&path).unwrap());
    }
    out
}

fn remove(path: &Path) {
    if path.is_dir() {
        std::fs::remove_dir_all(path).unwrap();
    } else if path.exists() {
        std::fs::remove_file(path).unwrap();
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The one SAE file (not optimizer state) in the SAE training folder.
fn sae_file(dir: &Path) -> String {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.ends_with(".safetensors") && !n.ends_with(".optim.safetensors")
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].to_string_lossy().into_owned()
}

/// The first probe folder of the sweep.
fn probe_dir(root: &Path) -> String {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs[0].to_string_lossy().into_owned()
}

#[test]
fn killed_jobs_resume_to_the_uninterrupted_outputs() {
    let bins = examples_dir();
    ensure_programs(&bins);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let p = |rel: &str| work.join(rel).to_string_lossy().into_owned();
    let seed = env_number("CRASH_SEED", 14);
    let kills = env_number("CRASH_KILLS", 4) as usize;
    let mut h = Harness {
        bins,
        work: work.clone(),
        golden: tmp.path().join("golden"),
        rng: Rng(seed),
        kills,
    };
    let vit = checkout().join(VIT).to_string_lossy().into_owned();
    let started = Instant::now();

    // Inputs no stage under test writes: the dataset and the validation cache.
    let ade = p("data/ade20k");
    let setup = [
        Job {
            name: "data",
            program: "synth_ade20k",
            args: args(&[
                "--out",
                &ade,
                "--train",
                "32",
                "--val",
                "8",
                "--classes",
                CLASSES,
                "--max-side",
                "160",
            ]),
            outputs: vec![],
        },
        Job {
            name: "cache-validation",
            program: "cache",
            args: args(&[
                "--vit",
                &vit,
                "--ade20k",
                &ade,
                "--split",
                "validation",
                "--taps",
                "layer1:f32:all,final_norm:f32",
                "--labels",
                "pixel",
                "--out",
                &p("caches/validation-layer1"),
                "--batch",
                "4",
            ]),
            outputs: vec![],
        },
    ];
    for job in &setup {
        h.run(job, "setup");
    }

    let mut outcomes = Vec::new();
    outcomes.push(h.crash(&Job {
        name: "cache",
        program: "cache",
        args: args(&[
            "--vit",
            &vit,
            "--ade20k",
            &ade,
            "--split",
            "training",
            "--taps",
            "layer1:f32:all,final_norm:f16",
            "--labels",
            "patch",
            "--out",
            &p("caches/training-layer1"),
            "--batch",
            "4",
            "--shard-images",
            "4",
        ]),
        outputs: vec!["caches/training-layer1"],
    }));
    outcomes.push(h.crash(&Job {
        name: "train_probe",
        program: "train_probe",
        args: args(&[
            "--vit",
            &vit,
            "--ade20k",
            &ade,
            "--cache",
            &p("caches/training-layer1"),
            "--ckpt-path",
            &p("probes"),
            "--log-to",
            &p("logs"),
            "--learning-rate",
            "3e-3,1e-2",
            "--weight-decay",
            "1e-3",
            "--n-epochs",
            "24",
            "--eval-every",
            "8",
            "--save-every",
            "2",
            "--batch-size",
            "8",
        ]),
        outputs: vec!["probes"],
    }));
    outcomes.push(h.crash(&Job {
        name: "train_sae",
        program: "train_sae",
        args: args(&[
            "--data",
            &p("caches/training-layer1"),
            "--tensor",
            "layer1",
            "--tokens",
            "5..261",
            "--d-sae",
            "256",
            "--lr",
            "3e-3",
            "--l1",
            "3e-2",
            "--batch",
            "512",
            "--tokens-total",
            "61440",
            "--warmup",
            "10",
            "--init-samples",
            "4096",
            "--dead-tokens",
            "20000",
            "--log-every",
            "4",
            "--checkpoint-every",
            "10",
            "--vit",
            &vit,
            "--layer",
            LAYER,
            "--out",
            &p("sae"),
        ]),
        outputs: vec!["sae"],
    }));
    let sae = sae_file(&work.join("sae"));
    outcomes.push(h.crash(&Job {
        name: "stats",
        program: "stats",
        args: args(&[
            "--sae",
            &sae,
            "--vit",
            &vit,
            "--layer",
            LAYER,
            "--ade20k",
            &ade,
            "--split",
            "training",
            "--cache-dir",
            &p("caches"),
            "--save-norm",
            &p("stats/normalization.safetensors"),
            "--out",
            &p("stats/feature-stats.safetensors"),
            "--save-every",
            "0",
        ]),
        outputs: vec!["stats"],
    }));
    let probe = probe_dir(&work.join("probes"));
    outcomes.push(h.crash(&Job {
        name: "quantify",
        program: "quantify",
        args: args(&[
            "--sae-ckpt",
            &sae,
            "--seg-ckpt",
            &probe,
            "--ade20k",
            &ade,
            "--vit",
            &vit,
            "--layer",
            LAYER,
            "--stats",
            &p("stats/feature-stats.safetensors"),
            "--sae-norm",
            &p("stats/normalization.safetensors"),
            "--cache-dir",
            &p("caches"),
            // `auto` first: its passes carry floats (F1) that a resumed run
            // reads back from passes.jsonl, so most kills land after some.
            "--methods",
            "auto,random-vector,random-latent",
            "--classes",
            CLASSES,
            "--max-frequency",
            "0.5",
            "--classes-per-batch",
            "1",
            "--out",
            &p("quantify"),
        ]),
        outputs: vec!["quantify"],
    }));

    eprintln!("crash test (seed {seed}, at least {kills} kills per stage):");
    for o in &outcomes {
        eprintln!(
            "  {:<12} {} kills survived ({} with partial outputs) in {} chains; {} files equal; \
             uninterrupted run {:.2} s (finished rerun {:.2} s), stage {:.1} s",
            o.name,
            o.kills,
            o.partial,
            o.chains,
            o.files,
            o.clean.as_secs_f64(),
            o.fixed.as_secs_f64(),
            o.total.as_secs_f64()
        );
    }
    eprintln!("  total {:.1} s", started.elapsed().as_secs_f64());
    for o in &outcomes {
        assert!(
            o.kills >= kills,
            "{}: {} of {kills} kills landed while it ran in {} chains",
            o.name,
            o.kills,
            o.chains
        );
    }
}

//! The long jobs that drive the `sae-steer` programs, without linking the
//! ML crates: [`fetch`] (ADE20K, DINOv2 and the published SAE, pinned by
//! `data-manifests/`) and [`reproduce`] (the preprint's chain of stages,
//! each run as a `sae-steer` subcommand in its own measured process, with
//! [`scale`] for the full-size cost runs).
//!
//! Both the `sae-steer` binary (`sae-steer fetch`, `sae-steer reproduce`)
//! and `cargo xtask` (which must build in seconds, so links no burn) call
//! them; they read the checkout's `data-manifests/` and demo fixtures, so
//! they run from inside a checkout.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

pub mod fetch;
pub mod reproduce;
pub mod scale;

/// The checkout the jobs read and write in: the nearest folder holding the
/// workspace's `Cargo.toml` and `data-manifests/`, from where cargo says the
/// running package is (`cargo xtask`, `cargo run`), else from the current
/// folder up, else the current folder.
pub fn root() -> PathBuf {
    let is_root =
        |dir: &Path| dir.join("Cargo.toml").is_file() && dir.join("data-manifests").is_dir();
    let from_cargo = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let here = std::env::current_dir().ok();
    for start in from_cargo.iter().chain(here.iter()) {
        if let Some(dir) = start.ancestors().find(|d| is_root(d)) {
            return dir.to_path_buf();
        }
    }
    here.unwrap_or_default()
}

/// Where cargo puts builds: `CARGO_TARGET_DIR`, or `target/` of the checkout.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// `cargo` (the one running us, if any), in the checkout.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs `cmd`, failing with its command line when it fails.
pub fn status(mut cmd: Command) -> Result<()> {
    eprintln!("> {cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// The name of the program the stages run.
pub const PROGRAM: &str = "sae-steer";

/// Where the `sae-steer` program the stages run comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Programs {
    /// The release build of the checkout (`cargo build --release -p
    /// sae-steer-cli`, made once, on first need): `cargo xtask reproduce`.
    Build,
    /// This `sae-steer` executable (`sae-steer reproduce`).
    Binary(PathBuf),
}

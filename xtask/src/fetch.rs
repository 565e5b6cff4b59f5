//! `cargo xtask fetch`: data download (being built).

use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    bail!("not built yet")
}

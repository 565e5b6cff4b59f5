//! The `sae-steer` command-line program: one subcommand per step of the
//! preprint's experiments (`cache`, `train-probe`, `validate`, `train-sae`,
//! `stats`, `quantify`, `serve`, `figures`, `fetch`, `reproduce`, ...).
//!
//! The programs are generic over burn's backend; compiled in one library,
//! they share one copy of the monomorphised models and backend instead of
//! each program generating its own, which made every example cost about a
//! minute of a debug build. `cargo run --example NAME` (the examples crate)
//! and `cargo xtask reproduce` are thin entry points onto the same code.

pub mod cli;
pub mod commands;

pub use cli::{peak_rss_mib, report};

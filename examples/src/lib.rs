//! The example programs' code, one module per program.
//!
//! Each `examples/<name>.rs` is a `main` that calls `<name>::main` here. The
//! programs are generic over burn's backend; compiled in one library, they
//! share one copy of the monomorphised models and backend instead of each
//! program generating its own, which made every example cost about a minute of
//! a debug build.

pub mod cli;

pub mod activations;
pub mod bench_cache;
pub mod bench_probe;
pub mod bench_quantify;
pub mod bench_sae;
pub mod bench_vit;
pub mod cache;
pub mod figures;
#[cfg(feature = "ndarray")]
pub mod load_check;
pub mod manipulate;
pub mod quantify;
pub mod random_vit;
pub mod stats;
pub mod synth_ade20k;
#[cfg(feature = "ndarray")]
pub mod toy_files;
pub mod train_probe;
pub mod train_sae;
pub mod validate;

pub use cli::{peak_rss_mib, report};

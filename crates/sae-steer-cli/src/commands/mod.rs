//! One module per program. Each has `Args` (its command line), `run_args`
//! (the `sae-steer` subcommand) and `main` (the `cargo run --example`
//! entry point, parsing the process's own arguments).

pub mod activations;
pub mod bench_cache;
pub mod bench_probe;
pub mod bench_quantify;
pub mod bench_sae;
pub mod bench_vit;
pub mod cache;
pub mod export_sae;
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

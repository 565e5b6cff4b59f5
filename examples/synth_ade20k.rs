//! Writes a synthetic dataset in the real ADE20K layout, for tests and for
//! trying the pipeline without the 923 MB download:
//!
//! ```text
//! cargo run --release --example synth_ade20k -- --out data/synth-ade20k --train 200 --val 50
//! ```
//!
//! (or `cargo xtask synth-ade20k ...`). Rerunning with the same options is a
//! no-op; other options rewrite the folder. A folder this program did not
//! write is never touched.

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::synth_ade20k::main()
}

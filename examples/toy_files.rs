//! Writes the toy steering setup (synthetic ADE20K, random SAE with feature
//! statistics, random probe) as files, so that the `manipulate` and
//! `figures` examples can be tried without any download:
//!
//! ```text
//! cargo run --example toy_files -- --out target/toy-app
//! ```
//!
//! then run the command it prints. The test ViT is a random-weight
//! Hugging Face folder (hidden 128, 3 blocks), so the SAE reads layer 1 and
//! nothing means anything: it is for trying the page, not for results.

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::toy_files::main()
}

//! The example programs: each `examples/<name>.rs` is a thin entry point
//! onto the `sae-steer` program's code (`sae_steer_cli::commands`), kept so
//! that `cargo run --example quantify -- ...` works as the reference's
//! users and our docs expect.

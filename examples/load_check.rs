//! Load check of the steering server (a benchmark, not a test): latency of
//! slider requests (`POST /api/images/{id}/steer`) over loopback with
//! concurrent clients, on the toy setup.
//!
//! ```text
//! cargo run --release --example load_check -- \
//!   [--geometry small|vit-b] [--clients 8] [--requests 25]
//! ```
//!
//! `small`: the random test ViT (hidden 128, 3 blocks, SAE at layer 1,
//! 1,024 latents). `vit-b`: ViT-B/14-reg geometry with random weights, SAE
//! at layer 10 with 24,576 latents (the published SAE's size). Every image
//! is run up to the layer once before timing, so slider requests hit the
//! cache, as they do when a user drags a slider.

fn main() -> Result<(), String> {
    sae_steer_cli::commands::load_check::main()
}

//! Throughput of activation caching against the bare ViT forward pass on the
//! same images, and read throughput of the cache it wrote.
//!
//! ```text
//! cargo run --release --example bench_cache -- [--images 64] [--batch 16] [--device cpu|cuda]
//! ```
//!
//! ViT-B/14-reg geometry with random weights (no download) on a synthetic
//! ADE20K whose images have ADE20K-like sizes (JPEG, long side 384..683 px).
//! "bare" = the forward pass and read-back of layer 10 and the final norm
//! (the default taps) with every image already decoded and preprocessed in
//! memory, timed before and after the cache run; the cache run adds decoding,
//! labels and shard writing, overlapped with the model. `model_idle` is the
//! share of the cache run the model spent waiting for images or the writer. Reads are measured on the
//! freshly written (so page-cached) shards.

fn main() -> std::process::ExitCode {
    sae_steer_cli::cli::tune_allocator();
    sae_steer_cli::commands::bench_cache::main()
}

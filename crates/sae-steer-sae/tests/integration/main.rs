//! One test binary per crate. Each separate binary generated its own copy of
//! burn's backend and the models (about 50 s of a debug build apiece), which
//! was most of CI's build time and disk.

mod common;
mod edit;
mod errors;
mod format;
mod fuzz;
mod hostile;
mod hub;
mod parity;
mod parity_topk;
mod saelens;
mod stats;
mod train;

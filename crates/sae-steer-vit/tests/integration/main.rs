//! One test binary per crate. Each separate binary generated its own copy of
//! burn's backend and the models (about 50 s of a debug build apiece), which
//! was most of CI's build time and disk.

mod decode;
mod errors;
mod families;
mod fuzz;
mod hostile;
mod parity;

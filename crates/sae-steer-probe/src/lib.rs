//! placeholder: filled in by the probe work

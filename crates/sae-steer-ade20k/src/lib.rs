//! placeholder: filled in by the ade20k work

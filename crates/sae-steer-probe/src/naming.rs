//! Checkpoint folder names, spelled exactly as the reference spells them.
//!
//! saev names a probe's folder `f"lr_{lr}__wd_{wd}".replace(".", "_")`, so
//! the name depends on Python's float `repr`.

pub use sae_steer_metrics::python_float_repr;

/// The reference's folder name for a probe: `lr_0_001__wd_0_1`, `lr_3e-05__wd_1e-05`.
pub fn checkpoint_dir_name(learning_rate: f64, weight_decay: f64) -> String {
    format!(
        "lr_{}__wd_{}",
        python_float_repr(learning_rate),
        python_float_repr(weight_decay)
    )
    .replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        assert_eq!(checkpoint_dir_name(1e-3, 1e-1), "lr_0_001__wd_0_1");
        assert_eq!(checkpoint_dir_name(3e-5, 1e-5), "lr_3e-05__wd_1e-05");
        assert_eq!(checkpoint_dir_name(1e-4, 1e-3), "lr_0_0001__wd_0_001");
        assert_eq!(python_float_repr(100.0), "100.0");
        assert_eq!(python_float_repr(1e16), "1e+16");
        assert_eq!(python_float_repr(-0.0), "-0.0");
        assert_eq!(python_float_repr(1.5e-7), "1.5e-07");
        assert_eq!(python_float_repr(1e100), "1e+100");
    }
}

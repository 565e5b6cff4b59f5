//! Checkpoint folder names, spelled exactly as the reference spells them.
//!
//! saev names a probe's folder `f"lr_{lr}__wd_{wd}".replace(".", "_")`, so
//! the name depends on Python's float `repr`: the shortest decimal string that
//! reads back as the same double, in positional notation when the decimal
//! exponent is in `-4..16` and in scientific notation (two-digit exponent at
//! least, explicit sign) otherwise.

/// Python's `repr(x)` for a float (`1e-05`, `0.001`, `100.0`, `1e+16`).
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x == 0.0 {
        return format!("{sign}0.0");
    }
    // Rust's `{:e}` without a precision prints the shortest round-trip digits,
    // the same digit string Python's repr is built from.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let n = digits.len() as i32;

    if !(-4..16).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{fraction}e{exp_sign}{:02}", exponent.abs());
    }
    // Positional: the decimal point sits after `exponent + 1` digits.
    let point = exponent + 1;
    let body = if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point >= n {
        format!("{digits}{}.0", "0".repeat((point - n) as usize))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{body}")
}

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

//! Steering edits: identities, masks, and the rank-1 form against the full path.

use crate::common;

use burn::tensor::{Distribution, Tensor};
use common::*;
use sae_steer_sae::{Edit, EditOp, slider_value};

fn random_x(n: usize, d: usize, scale: f64) -> Tensor<B, 2> {
    Tensor::random(
        [n, d],
        Distribution::Normal(0.0, scale),
        &Default::default(),
    )
}

#[test]
fn empty_edit_returns_the_input() {
    for (name, normalized) in [
        ("pre_schema", false),
        ("schema1", true),
        ("schema5_topk", false),
    ] {
        let sae = load_sae(name, normalized);
        let x = tensor(&expected(name).x);
        let edit = Edit::new();
        assert!(edit.is_empty());
        assert_eq!(
            host(edit.apply_full(&sae, x.clone()).unwrap()),
            host(x.clone())
        );
        assert_eq!(host(edit.apply(&sae, x.clone()).unwrap()), host(x.clone()));
        // An edit on no rows is empty too.
        let none = Edit::new().set(3, 10.0).on_rows(vec![false; 8]);
        assert!(none.is_empty());
        assert_eq!(host(none.apply(&sae, x.clone()).unwrap()), host(x));
    }
}

#[test]
fn identity_ops_change_nothing_beyond_rounding() {
    // Scale(1) and Add(0) go through the whole computation, not a shortcut:
    // the error term must restore x.
    let sae = load_sae("schema1", true);
    let x = tensor(&expected("schema1").x);
    let edit = Edit::new().scale(2, 1.0).add(7, 0.0);
    assert!(!edit.is_empty());
    let out = host(edit.apply_full(&sae, x.clone()).unwrap());
    assert_close_rowwise("full", &out, &host(x.clone()), &host(x.clone()), 1e-5);
    assert_eq!(host(edit.apply(&sae, x.clone()).unwrap()), host(x));
}

#[test]
fn rank1_form_matches_full_path_for_all_ops_masks_and_activations() {
    for (name, normalized) in [
        ("pre_schema", false),
        ("schema1", true),
        ("schema2_relu", false),
        ("schema5_topk", false),
    ] {
        let sae = load_sae(name, normalized);
        let n = 12;
        let x = random_x(n, sae.d_model(), 3.0);
        let mask: Vec<bool> = (0..n).map(|i| i % 3 != 0).collect();
        let edits = [
            Edit::new().set(5, 3.5),
            Edit::new().set(0, -2.0).scale(9, 0.0).add(17, 1.25),
            // Same latent twice: ops compose in order, (f * 3) + 1.
            Edit::new().scale(4, 3.0).add(4, 1.0).set(30, 0.0),
            Edit::new().set(5, 3.5).add(11, -0.5).on_rows(mask.clone()),
            Edit::new().op(sae.d_sae() - 1, EditOp::slider(-2.0, 4.0)),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let full = host(edit.apply_full(&sae, x.clone()).unwrap());
            let rank1 = host(edit.apply(&sae, x.clone()).unwrap());
            assert_close_rowwise(
                &format!("{name} edit {i}"),
                &rank1,
                &full,
                &host(x.clone()),
                1e-5,
            );
        }
    }
}

#[test]
fn masked_rows_pass_through_unchanged() {
    let sae = load_sae("pre_schema", false);
    let x = random_x(6, 16, 2.0);
    let mask = vec![true, false, true, false, false, true];
    let out = host(
        Edit::new()
            .set(5, 8.0)
            .on_rows(mask.clone())
            .apply(&sae, x.clone())
            .unwrap(),
    );
    let xin = host(x);
    for (r, keep) in mask.iter().enumerate() {
        let (a, b) = (
            &out.data[r * 16..(r + 1) * 16],
            &xin.data[r * 16..(r + 1) * 16],
        );
        if *keep {
            assert_ne!(a, b, "row {r} should change");
        } else {
            assert_eq!(a, b, "row {r} should not change");
        }
    }
}

#[test]
fn set_edit_moves_the_latent_to_its_value() {
    // For a ReLU SAE, setting f_j adds (v - f_j) W_dec[j] in normalized units;
    // re-encoding need not return exactly v, but the change of x must be
    // parallel to W_dec[j] with the right length.
    let sae = load_sae("schema1", true);
    let x = tensor(&expected("schema1").x);
    let (j, v) = (5, 3.5);
    let f = host(sae.encode(sae.normalize(x.clone())));
    let out = host(Edit::new().set(j, v).apply(&sae, x.clone()).unwrap());
    let w_dec = host(sae.w_dec.clone());
    let xin = host(x);
    let d = sae.d_model();
    let s = sae.d_sae();
    for r in 0..8 {
        let coeff = (v - f.data[r * s + j]) * sae.scalar();
        for c in 0..d {
            let want = xin.data[r * d + c] + coeff * w_dec.data[j * d + c];
            let got = out.data[r * d + c];
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "[{r},{c}] {got} vs {want}"
            );
        }
    }
}

#[test]
fn slider_scales_max_observed_activation() {
    assert_eq!(slider_value(-2.0, 1.5), -3.0);
    assert_eq!(EditOp::slider(10.0, 0.25), EditOp::Set(2.5));
    assert_eq!(EditOp::Scale(2.0).apply_value(3.0), 6.0);
    assert_eq!(EditOp::Add(-1.0).apply_value(3.0), 2.0);
}

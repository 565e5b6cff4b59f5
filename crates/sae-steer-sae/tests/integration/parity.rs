//! The Rust SAE against torch on saev-format fixtures (scripts/make_sae_fixture.py).

use crate::common;

use common::*;
use sae_steer_sae::{Activation, Edit, EncodeRule, read_saev_header};

const TOL: f32 = 1e-5;

/// encode, decode and a steering edit (full and rank-1 form) match torch.
fn check_parity(name: &str, normalized: bool) {
    let sae = load_sae(name, normalized);
    let exp = expected(name);
    let x = tensor(&exp.x);
    let f = sae.encode(sae.normalize(x.clone()));
    assert_close(&format!("{name} f_x"), &host(f.clone()), &exp.f_x, TOL);
    assert_close(
        &format!("{name} x_hat"),
        &host(sae.decode(f)),
        &exp.x_hat,
        TOL,
    );
    let edit = Edit::new().set(exp.latent, exp.value);
    let rank1 = edit.apply(&sae, x.clone()).unwrap();
    assert_close(
        &format!("{name} steered (rank-1)"),
        &host(rank1),
        &exp.steered,
        TOL,
    );
    // The full path cancels terms as large as the row's inputs (the clamp
    // fixture has a 3e5 outlier), so its f32 error is relative to those.
    let full = edit.apply_full(&sae, x).unwrap();
    assert_close_rowwise(
        &format!("{name} steered (full)"),
        &host(full),
        &exp.steered,
        &exp.x,
        TOL,
    );
}

#[test]
fn pre_schema_relu_matches_torch() {
    check_parity("pre_schema", false);
}

#[test]
fn schema1_with_normalization_matches_torch() {
    check_parity("schema1", true);
}

#[test]
fn schema2_relu_matches_torch() {
    check_parity("schema2_relu", false);
}

#[test]
fn schema5_topk_matches_torch() {
    check_parity("schema5_topk", false);
}

#[test]
fn headers_give_geometry_activation_and_encode_rule() {
    let cases = [
        (
            "pre_schema",
            None,
            16,
            64,
            Activation::Relu,
            EncodeRule::CentreOnDecoderBias,
        ),
        (
            "schema1",
            Some(1),
            24,
            96,
            Activation::Relu,
            EncodeRule::CentreOnDecoderBias,
        ),
        (
            "schema2_relu",
            Some(2),
            16,
            128,
            Activation::Relu,
            EncodeRule::Plain,
        ),
        (
            "schema5_topk",
            Some(5),
            32,
            96,
            Activation::Topk { k: 8 },
            EncodeRule::Plain,
        ),
    ];
    for (name, schema, d, s, act, rule) in cases {
        let h = read_saev_header(fixture(&format!("{name}.pt"))).unwrap();
        assert_eq!(h.schema, schema, "{name}");
        assert_eq!((h.config.d_model, h.config.d_sae), (d, s), "{name}");
        assert_eq!(h.config.activation, act, "{name}");
        assert_eq!(h.config.encode, rule, "{name}");
    }
}

#[test]
fn topk_keeps_k_latents_per_row() {
    let sae = load_sae("schema5_topk", false);
    let f = host(sae.encode(tensor(&expected("schema5_topk").x)));
    for row in f.data.chunks(sae.d_sae()) {
        assert_eq!(row.iter().filter(|v| **v != 0.0).count(), 8);
    }
}

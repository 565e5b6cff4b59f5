//! TopK and BatchTopK checkpoints (schema 1 "format 1A" and schema 5 with a
//! threshold) against torch (scripts/make_sae_fixture.py).

use crate::common;

use common::*;
use sae_steer_sae::{Activation, Edit, EncodeRule, read_saev_header};

const TOL: f32 = 1e-5;

fn check_parity(name: &str) {
    let sae = load_sae(name, false);
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
    assert_close(
        &format!("{name} steered (rank-1)"),
        &host(edit.apply(&sae, x.clone()).unwrap()),
        &exp.steered,
        TOL,
    );
    assert_close_rowwise(
        &format!("{name} steered (full)"),
        &host(edit.apply_full(&sae, x).unwrap()),
        &exp.steered,
        &exp.x,
        TOL,
    );
}

#[test]
fn schema1_topk_matches_torch() {
    check_parity("schema1_topk");
}

#[test]
fn schema1_batchtopk_matches_torch() {
    check_parity("schema1_batchtopk");
}

#[test]
fn schema5_batchtopk_with_threshold_matches_torch() {
    check_parity("schema5_batchtopk");
}

#[test]
fn headers_give_activation_and_encode_rule() {
    let cases = [
        (
            "schema1_topk",
            Activation::Topk { k: 6 },
            EncodeRule::CentreOnDecoderBias,
        ),
        (
            "schema1_batchtopk",
            Activation::JumpRelu { threshold: 0.0 },
            EncodeRule::CentreOnDecoderBias,
        ),
        (
            "schema5_batchtopk",
            Activation::JumpRelu { threshold: 0.35 },
            EncodeRule::Plain,
        ),
    ];
    for (name, act, rule) in cases {
        let h = read_saev_header(fixture(&format!("{name}.pt"))).unwrap();
        assert_eq!(
            (h.config.d_model, h.config.d_sae),
            (16, if name.starts_with("schema1") { 96 } else { 64 }),
            "{name}"
        );
        assert_eq!(h.config.encode, rule, "{name}");
        // The threshold lives in the state dict: the full load fills it in.
        let sae = load_sae(name, false);
        assert_eq!(sae.config.activation, act, "{name}");
    }
}

#[test]
fn schema1_topk_keeps_k_latents_and_batchtopk_threshold_zeroes_small_ones() {
    let sae = load_sae("schema1_topk", false);
    let f = host(sae.encode(tensor(&expected("schema1_topk").x)));
    for row in f.data.chunks(sae.d_sae()) {
        assert_eq!(row.iter().filter(|v| **v != 0.0).count(), 6);
    }
    let sae = load_sae("schema5_batchtopk", false);
    let f = host(sae.encode(tensor(&expected("schema5_batchtopk").x)));
    assert!(f.data.iter().all(|v| *v == 0.0 || *v > 0.35));
    assert!(f.data.iter().any(|v| *v > 0.35));
}

//! SAELens checkpoints: folders saved by SAELens itself read back to what
//! SAELens computes (fixtures by `scripts/make_saelens_fixture.py`), and ours
//! exported in that format compute what they computed before.

use sae_steer_sae::{
    Activation, EncodeRule, Normalization, NormalizationSource, Sae, SaeError, SaeWeights, saelens,
};
use sae_steer_vit::{HostTensor, SafetensorsFile, TensorSource};

use crate::common::{B, assert_close, fixture, host, load_sae, tensor};

fn expected(name: &str) -> HostTensor {
    SafetensorsFile::open(fixture("saelens/expected.safetensors"))
        .and_then(|f| f.read(name))
        .unwrap()
}

fn load(dir: &std::path::Path) -> Sae<B> {
    Sae::<B>::load(dir, &Default::default())
        .unwrap()
        .resolve(NormalizationSource::None)
        .unwrap()
        .0
}

#[test]
fn saelens_folders_compute_what_saelens_computes() {
    let x = tensor(&expected("x"));
    for (name, reference) in [
        ("standard", "standard"),
        ("topk", "topk"),
        ("jumprelu", "jumprelu"),
        // A pre-6.0 cfg.json of the standard SAE.
        ("legacy", "standard"),
    ] {
        let sae = load(&fixture(&format!("saelens/{name}")));
        let f = sae.encode(x.clone());
        assert_close(
            &format!("{name} feature_acts"),
            &host(f.clone()),
            &expected(&format!("{reference}.feature_acts")),
            1e-5,
        );
        assert_close(
            &format!("{name} sae_out"),
            &host(sae.decode(f)),
            &expected(&format!("{reference}.sae_out")),
            1e-5,
        );
    }
    // Any file of the folder names it too.
    let w = SaeWeights::load(fixture("saelens/topk/cfg.json")).unwrap();
    assert_eq!(w.config.activation, Activation::TopkRelu { k: 5 });
    assert_eq!(w.config.encode, EncodeRule::Plain);
    assert_eq!(
        w.config.vit.as_deref(),
        Some("facebook/dinov2-with-registers-base")
    );
    let w = SaeWeights::load(fixture("saelens/jumprelu/sae_weights.safetensors")).unwrap();
    assert_eq!(w.config.encode, EncodeRule::CentreOnDecoderBias);
    assert_eq!(
        w.threshold.as_ref().map(|t| t.shape.clone()),
        Some(vec![48])
    );
}

/// Encodes and reconstructs `x` in model units.
fn model_units(sae: &Sae<B>, x: &HostTensor) -> (HostTensor, HostTensor) {
    let f = sae.encode(sae.normalize(tensor(x)));
    let x_hat = sae.denormalize(sae.decode(f.clone()));
    (host(f), host(x_hat))
}

#[test]
fn exported_saes_compute_what_they_computed_with_the_normalization_folded_in() {
    let dir = tempfile::tempdir().unwrap();
    // saev files of both encoder rules and each activation, under a
    // non-trivial normalization.
    for name in [
        "schema1",
        "schema2_relu",
        "schema5_topk",
        "schema5_batchtopk",
    ] {
        let raw = load_sae(name, false);
        let d = raw.d_model();
        let norm = Normalization {
            mean: (0..d).map(|i| 0.1 * i as f32 - 0.5).collect(),
            scalar: 1.7,
        };
        let ours = raw.with_normalization(Some(&norm)).unwrap();
        // saev clamps activations to +-1e5 before normalising, which SAELens
        // cannot express: the fixture's outlier rows (there to test the
        // clamp) are left out.
        let all = crate::common::expected(name).x;
        let rows: Vec<f32> = all
            .data
            .chunks(d)
            .filter(|r| r.iter().all(|v| v.abs() <= 1e5))
            .flatten()
            .copied()
            .collect();
        assert!(rows.len() >= 4 * d, "{name}: the fixture keeps most rows");
        let x = HostTensor::new(vec![rows.len() / d, d], rows);

        let out = dir.path().join(name);
        saelens::write(&ours.to_weights(), &out, None, Some("layer.10")).unwrap();
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("cfg.json")).unwrap()).unwrap();
        assert_eq!(cfg["normalize_activations"], "none", "{name}");
        assert_eq!(cfg["metadata"]["hook_name"], "layer.10", "{name}");
        let exported = load(&out);
        assert!(
            exported.norm.is_none(),
            "{name}: SAELens SAEs read raw activations"
        );
        let (f0, x0) = model_units(&ours, &x);
        let (f1, x1) = model_units(&exported, &x);
        assert_close(&format!("{name} latents"), &f1, &f0, 1e-4);
        assert_close(&format!("{name} reconstruction"), &x1, &x0, 1e-4);
    }
}

#[test]
fn unsupported_or_inconsistent_saelens_folders_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |cfg: serde_json::Value| {
        let d = tempfile::tempdir_in(dir.path()).unwrap().keep();
        std::fs::copy(
            fixture("saelens/standard/sae_weights.safetensors"),
            d.join("sae_weights.safetensors"),
        )
        .unwrap();
        std::fs::write(d.join("cfg.json"), cfg.to_string()).unwrap();
        d
    };
    let base = || -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(fixture("saelens/standard/cfg.json")).unwrap(),
        )
        .unwrap()
    };
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            {
                let mut c = base();
                c["architecture"] = "gated".into();
                c
            },
            "architecture `gated`",
        ),
        (
            {
                let mut c = base();
                c["d_sae"] = 49.into();
                c
            },
            "W_enc",
        ),
        (
            {
                let mut c = base();
                c["normalize_activations"] = "layer_norm".into();
                c
            },
            "normalize_activations",
        ),
        (
            {
                let mut c = base();
                c["d_sae"] = u64::MAX.into();
                c
            },
            "too large",
        ),
        (
            {
                let mut c = base();
                c["architecture"] = "topk".into();
                c
            },
            "without `k`",
        ),
        (
            {
                let mut c = base();
                c["architecture"] = "jumprelu".into();
                c
            },
            "threshold",
        ),
    ];
    for (cfg, needle) in cases {
        let d = copy(cfg);
        let err = SaeWeights::load(&d).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(needle), "expected `{needle}` in: {text}");
        assert!(
            matches!(
                err,
                SaeError::Format { .. } | SaeError::Shape { .. } | SaeError::MissingTensor { .. }
            ),
            "{err:?}"
        );
    }
}

//! Our safetensors checkpoint format: lossless round trip and saev conversion.

use crate::common;

use common::*;
use sae_steer_sae::{Activation, FORMAT_TAG, Normalization, Sae, SaeWeights, convert_saev, saev};
use sae_steer_vit::SafetensorsFile;

#[test]
fn round_trip_is_lossless_for_every_activation() {
    let dir = tempfile::tempdir().unwrap();
    for (name, activation) in [
        ("pre_schema", Activation::Relu),
        ("schema5_topk", Activation::Topk { k: 8 }),
        (
            "schema2_relu",
            Activation::JumpRelu {
                threshold: 0.123_456_79,
            },
        ),
    ] {
        let mut w = saev::read(fixture(&format!("{name}.pt"))).unwrap();
        w.config.activation = activation;
        w.config.vit = Some("dinov2_vitb14_reg".into());
        w.config.layer = Some(10);
        w.norm = Some(Normalization {
            mean: (0..w.config.d_model)
                .map(|i| i as f32 * 0.1 - 0.7)
                .collect(),
            scalar: 1.0 / 3.0,
        });
        let path = dir.path().join(format!("{name}.safetensors"));
        w.save(&path).unwrap();
        assert_eq!(SaeWeights::load(&path).unwrap(), w, "{name}");
        // Without normalization too: the norm tensors must be optional.
        w.norm = None;
        w.save(&path).unwrap();
        assert_eq!(SaeWeights::load(&path).unwrap(), w, "{name} without norm");
    }
}

#[test]
fn conversion_keeps_weights_config_and_normalization() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub/sae.safetensors");
    let norm_path = fixture("norm.safetensors");
    let converted = convert_saev(
        fixture("schema1.pt"),
        Some(&norm_path),
        Some("dinov2_vitb14_reg".into()),
        Some(10),
        &out,
    )
    .unwrap();
    let loaded = SaeWeights::load(&out).unwrap();
    assert_eq!(loaded, converted);
    let original = saev::read(fixture("schema1.pt")).unwrap();
    assert_eq!(loaded.w_enc, original.w_enc);
    assert_eq!(loaded.w_dec, original.w_dec);
    assert_eq!(loaded.config.encode, original.config.encode);
    assert_eq!(loaded.config.layer, Some(10));
    assert_eq!(
        loaded.norm,
        Some(Normalization::load(&norm_path, 24).unwrap())
    );
    // The config is readable JSON in the safetensors metadata.
    let file = SafetensorsFile::open(&out).unwrap();
    let meta = file.metadata().unwrap();
    assert_eq!(meta["format"], FORMAT_TAG);
    let config: serde_json::Value = serde_json::from_str(&meta["config"]).unwrap();
    assert_eq!(config["encode"], "centre_on_decoder_bias");
    assert_eq!(config["activation"]["kind"], "relu");
    // No temporary file is left beside the output.
    let names: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn converted_sae_computes_like_the_saev_file_with_its_norm() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sae.safetensors");
    let norm_path = fixture("norm.safetensors");
    convert_saev(fixture("schema1.pt"), Some(&norm_path), None, None, &out).unwrap();
    let (sae, source) = Sae::<B>::load(&out, &Default::default())
        .unwrap()
        .resolve(sae_steer_sae::NormalizationSource::Checkpoint)
        .unwrap();
    assert_eq!(source, sae_steer_sae::NormalizationSource::Checkpoint);
    let exp = expected("schema1");
    let f = sae.encode(sae.normalize(tensor(&exp.x)));
    assert_close("f_x", &host(f), &exp.f_x, 1e-5);
}

#[test]
fn device_round_trip_returns_the_same_weights() {
    let mut w = saev::read(fixture("schema5_topk.pt")).unwrap();
    w.norm = Some(Normalization {
        mean: vec![0.5; 32],
        scalar: 2.0,
    });
    let sae = Sae::<B>::from_weights(w.clone(), &Default::default());
    assert_eq!(sae.to_weights(), w);
}

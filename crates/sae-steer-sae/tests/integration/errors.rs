//! Broken inputs give errors that name the file and the problem, never panics.

use crate::common;

use std::path::{Path, PathBuf};

use common::*;
use sae_steer_sae::saev;
use sae_steer_sae::{Edit, Normalization, Sae, SaeError, SaeWeights};

/// The fixture's bytes after its header line.
fn archive_of(name: &str) -> Vec<u8> {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let start = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    bytes[start..].to_vec()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn with_header(header: &str, archive: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{header}\n").into_bytes();
    bytes.extend_from_slice(archive);
    bytes
}

fn message(err: SaeError) -> String {
    err.to_string()
}

#[test]
fn bad_header_json_is_a_header_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.pt",
        &with_header("{\"d_vit\": 16,", &archive_of("pre_schema.pt")),
    );
    let err = saev::read(&path).unwrap_err();
    assert!(matches!(err, SaeError::Header { .. }), "{err:?}");
    let msg = message(err);
    assert!(msg.contains("bad.pt") && msg.contains("not JSON"), "{msg}");
    // A header without any size.
    let path = write(
        dir.path(),
        "nosize.pt",
        &with_header("{\"seed\": 0}", &archive_of("pre_schema.pt")),
    );
    let msg = message(saev::read(&path).unwrap_err());
    assert!(
        msg.contains("d_model") && msg.contains("nosize.pt"),
        "{msg}"
    );
    // No newline at all (e.g. a random binary file).
    let path = write(dir.path(), "noline.pt", b"{\"d_vit\": 16");
    assert!(matches!(
        saev::read(&path).unwrap_err(),
        SaeError::Header { .. }
    ));
}

#[test]
fn unknown_schema_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"schema": 6, "cfg": {"d_model": 16, "d_sae": 64}}"#;
    let path = write(
        dir.path(),
        "future.pt",
        &with_header(header, &archive_of("pre_schema.pt")),
    );
    let err = saev::read(&path).unwrap_err();
    assert!(
        matches!(err, SaeError::UnknownSchema { schema: 6, .. }),
        "{err:?}"
    );
    assert!(message(err).contains("future.pt"));
}

#[test]
fn unknown_activation_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"schema": 3, "cfg": {"d_model": 16, "d_sae": 64, "activation": {"cls": "Gelu", "params": {}}}}"#;
    let path = write(
        dir.path(),
        "gelu.pt",
        &with_header(header, &archive_of("pre_schema.pt")),
    );
    let msg = message(saev::read(&path).unwrap_err());
    assert!(msg.contains("Gelu") && msg.contains("gelu.pt"), "{msg}");
}

#[test]
fn missing_tensor_is_named() {
    let err = saev::read(fixture("missing_w_dec.pt")).unwrap_err();
    assert!(
        matches!(&err, SaeError::MissingTensor { name, .. } if name == "W_dec"),
        "{err:?}"
    );
    assert!(message(err).contains("missing_w_dec.pt"));
}

#[test]
fn header_tensor_shape_disagreement_names_both() {
    let dir = tempfile::tempdir().unwrap();
    // The archive holds d = 16, s = 64; the header claims s = 128.
    let header = r#"{"d_vit": 16, "exp_factor": 8, "sparsity_coeff": 0.0004}"#;
    let path = write(
        dir.path(),
        "wide.pt",
        &with_header(header, &archive_of("pre_schema.pt")),
    );
    let err = saev::read(&path).unwrap_err();
    let msg = message(err);
    assert!(
        msg.contains("W_enc") && msg.contains("[16, 64]") && msg.contains("[16, 128]"),
        "{msg}"
    );
    assert!(msg.contains("wide.pt") && msg.contains("header"), "{msg}");
}

#[test]
fn truncated_archive_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(fixture("schema1.pt")).unwrap();
    for keep in [full.len() / 2, full.len() - 10, 400] {
        let path = write(dir.path(), "cut.pt", &full[..keep]);
        match saev::read(&path) {
            Err(err) => {
                let msg = message(err);
                assert!(msg.contains("cut.pt") && msg.contains("truncated"), "{msg}");
            }
            Ok(_) => panic!("a file cut to {keep} of {} bytes loaded", full.len()),
        }
    }
}

#[test]
fn bad_own_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A safetensors file without our metadata (the normalization file).
    let err = SaeWeights::load(fixture("norm.safetensors")).unwrap_err();
    assert!(matches!(err, SaeError::Format { .. }), "{err:?}");
    // A config that disagrees with the tensors.
    let mut w = saev::read(fixture("pre_schema.pt")).unwrap();
    w.config.d_sae = 65;
    let path = dir.path().join("bad.safetensors");
    w.save(&path).unwrap();
    let msg = message(SaeWeights::load(&path).unwrap_err());
    assert!(msg.contains("[16, 65]") && msg.contains("config"), "{msg}");
    // Not a file at all.
    assert!(matches!(
        SaeWeights::load(dir.path().join("absent")).unwrap_err(),
        SaeError::Io { .. }
    ));
}

#[test]
fn normalization_file_must_match_the_sae() {
    let err = Normalization::load(fixture("norm.safetensors"), 16).unwrap_err();
    assert!(message(err).contains("mean"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zero.safetensors");
    Normalization {
        mean: vec![0.0; 4],
        scalar: 0.0,
    }
    .save(&path)
    .unwrap();
    assert!(message(Normalization::load(&path, 4).unwrap_err()).contains("scalar"));
}

#[test]
fn invalid_edits_and_inputs_are_errors() {
    let (sae, _) = Sae::<B>::load(fixture("pre_schema.pt"), &Default::default())
        .unwrap()
        .resolve(sae_steer_sae::NormalizationSource::None)
        .unwrap();
    let x = tensor(&expected("pre_schema").x); // [8, 16]
    let err = Edit::new().set(64, 1.0).apply(&sae, x.clone()).unwrap_err();
    assert!(message(err).contains("latent 64"));
    let err = Edit::new()
        .set(1, 1.0)
        .on_rows(vec![true; 3])
        .apply_full(&sae, x)
        .unwrap_err();
    assert!(message(err).contains("3 entries"));
    let wrong = tensor(&expected("schema1").x); // [8, 24]
    assert!(matches!(
        Edit::new().apply(&sae, wrong).unwrap_err(),
        SaeError::Input(_)
    ));
}

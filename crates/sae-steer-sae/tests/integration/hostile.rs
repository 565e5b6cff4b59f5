//! The SAE part of the hostile checkpoint corpus
//! (`tests/fixtures/hostile/checkpoints`, made by
//! `scripts/make_hostile_checkpoints.py`), loaded through the public API:
//! each case is an error naming the file and the problem, never a panic.

use std::path::PathBuf;

use sae_steer_sae::{FeatureStats, Normalization, SaeError, SaeWeights, StatsInfo, saev};
use sae_steer_testkit::hostile;
use sae_steer_vit::{SafetensorsFile, TensorSource};

fn case(name: &str) -> PathBuf {
    hostile(&format!("checkpoints/{name}"))
}

/// The error of loading a `sae.pt`, checked to name the file.
fn load_error(name: &str) -> String {
    let err = SaeWeights::load(case(name)).expect_err("must be refused");
    let msg = err.to_string();
    assert!(msg.contains(name), "the message must name the file: {msg}");
    msg
}

#[test]
fn sae_files_whose_storages_are_smaller_than_their_shapes_are_refused() {
    for (file, expected) in [
        ("lying_shape.pt", "larger than its storage"),
        ("lying_storage_numel.pt", "the storage is short"),
        ("short_storage.pt", "the storage is short"),
    ] {
        let msg = load_error(file);
        assert!(msg.contains("W_enc") && msg.contains(expected), "{msg}");
    }
    let msg = load_error("missing_storage.pt");
    assert!(
        msg.contains("W_dec") && msg.contains("not in the archive"),
        "{msg}"
    );
}

#[test]
fn sae_zip_bombs_and_hostile_pickles_are_refused() {
    for (file, expected) in [
        ("zip_bomb_stored.pt", "past the end of the file"),
        ("zip_bomb_deflated.pt", "more than deflate can expand to"),
        ("pickle_long_string.pt", "past the end of the pickle"),
        ("pickle_nested.pt", "nested deeper"),
        ("pickle_bad_opcode.pt", "opcode 0xfe"),
    ] {
        let msg = load_error(file);
        assert!(msg.contains(expected), "{msg}");
    }
}

#[test]
fn bad_header_lines_are_header_errors() {
    let err = saev::read(case("header_not_json.pt")).unwrap_err();
    assert!(matches!(err, SaeError::Header { .. }), "{err:?}");
    assert!(err.to_string().contains("header_not_json.pt"));
    let err = saev::read(case("header_no_newline.pt")).unwrap_err();
    assert!(matches!(err, SaeError::Header { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("header_no_newline.pt") && msg.contains("newline"),
        "{msg}"
    );
    // A header line longer than the 1 MiB bound is refused without reading
    // the rest of the file into memory.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge_header.pt");
    let mut bytes = b"{\"schema\": 5, \"pad\": \"".to_vec();
    bytes.resize(3 << 20, b'x');
    bytes.extend(b"\"}\n");
    bytes.extend(std::fs::read(case("valid.pt")).unwrap());
    std::fs::write(&path, bytes).unwrap();
    let msg = saev::read(&path).unwrap_err().to_string();
    assert!(
        msg.contains("huge_header.pt") && msg.contains("within the first 1048576 bytes"),
        "{msg}"
    );
}

#[test]
fn unusual_but_valid_sae_archives_load_exactly() {
    let valid = saev::read(case("valid.pt")).unwrap();
    let deflated = saev::read(case("deflated_ok.pt")).unwrap();
    assert_eq!(valid, deflated);
    // A transposed W_dec view and b_enc at a storage offset.
    let strided = saev::read(case("strided_ok.pt")).unwrap();
    let expected = SafetensorsFile::open(case("strided_ok.expected.safetensors")).unwrap();
    assert_eq!(strided.w_dec, expected.read("W_dec").unwrap());
    assert_eq!(strided.b_enc, expected.read("b_enc").unwrap());
    assert_ne!(strided.w_dec.data[..16], strided.w_enc.data[..16]);
}

#[test]
fn saev_visuals_with_a_short_storage_are_an_error() {
    let err = FeatureStats::load_saev(case("visuals_short_storage"), StatsInfo::default())
        .expect_err("must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("top_values.pt") && msg.contains("the storage is short"),
        "{msg}"
    );
}

#[test]
fn normalization_files_whose_header_lies_are_errors() {
    for file in [
        "st_header_len_huge.safetensors",
        "st_shape_lie.safetensors",
        "st_offsets_past_end.safetensors",
        "st_shape_overflow.safetensors",
    ] {
        let msg = Normalization::load(case(file), 16)
            .expect_err("must be refused")
            .to_string();
        assert!(msg.contains(file), "{msg}");
        // Told apart from a saev file by its first byte, then refused as safetensors.
        let msg = SaeWeights::load(case(file)).err().unwrap().to_string();
        assert!(msg.contains(file) && msg.contains("safetensors"), "{msg}");
    }
}

//! The checkpoint part of the hostile-input corpus
//! (`tests/fixtures/hostile/checkpoints`, made by
//! `scripts/make_hostile_checkpoints.py`): every case is an error that names
//! the file and the problem, never a panic or a huge allocation.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use sae_steer_testkit::hostile;
use sae_steer_vit::{SafetensorsFile, TensorSource, TorchFile, Vit, VitConfig, VitError};

type B = NdArray<f32>;

fn case(name: &str) -> PathBuf {
    hostile(&format!("checkpoints/{name}"))
}

fn load(path: &Path) -> Result<Vit<B>, VitError> {
    Vit::<B>::load(path.to_str().unwrap(), &Default::default())
}

/// The error of opening a torch archive, checked to name the file.
fn torch_error(name: &str) -> String {
    let err = TorchFile::open(case(name)).err().expect("must be refused");
    let msg = err.to_string();
    assert!(msg.contains(name), "the message must name the file: {msg}");
    msg
}

#[test]
fn archives_whose_storage_is_smaller_than_their_shapes_are_refused() {
    let msg = torch_error("lying_shape.pt");
    assert!(
        msg.contains("W_enc")
            && msg.contains("[32, 64]")
            && msg.contains("larger than its storage"),
        "{msg}"
    );
    let msg = torch_error("lying_storage_numel.pt");
    assert!(msg.contains("W_enc") && msg.contains("short"), "{msg}");
    let msg = torch_error("short_storage.pt");
    assert!(
        msg.contains("W_enc") && msg.contains("4096 bytes") && msg.contains("holds 2048 bytes"),
        "{msg}"
    );
    // burn-store returned zeros for a storage missing from the archive.
    let msg = torch_error("missing_storage.pt");
    assert!(
        msg.contains("W_dec") && msg.contains("not in the archive"),
        "{msg}"
    );
}

#[test]
fn zip_entries_declaring_huge_sizes_are_refused_before_allocation() {
    let msg = torch_error("zip_bomb_stored.pt");
    assert!(
        msg.contains("4294967280") && msg.contains("past the end"),
        "{msg}"
    );
    let msg = torch_error("zip_bomb_deflated.pt");
    assert!(msg.contains("deflate") && msg.contains("zip bomb"), "{msg}");
}

#[test]
fn hostile_pickle_programs_are_errors() {
    let msg = torch_error("pickle_long_string.pt");
    assert!(msg.contains("past the end of the pickle"), "{msg}");
    let msg = torch_error("pickle_nested.pt");
    assert!(msg.contains("nested deeper than 256"), "{msg}");
    let msg = torch_error("pickle_bad_opcode.pt");
    assert!(msg.contains("opcode 0xfe"), "{msg}");
}

#[test]
fn unusual_but_valid_archives_read_exactly() {
    // Every entry deflated: the same tensors as the stored original.
    let stored = TorchFile::open(case("valid.pt")).unwrap();
    let deflated = TorchFile::open(case("deflated_ok.pt")).unwrap();
    let mut names = stored.names();
    names.sort();
    assert_eq!(names, ["W_dec", "W_enc", "b_dec", "b_enc"]);
    for name in &names {
        assert_eq!(
            stored.read(name).unwrap(),
            deflated.read(name).unwrap(),
            "{name}"
        );
    }
    // A transposed view and a slice at a storage offset: torch's values,
    // not the storage read as if it were contiguous.
    let strided = TorchFile::open(case("strided_ok.pt")).unwrap();
    let expected = SafetensorsFile::open(case("strided_ok.expected.safetensors")).unwrap();
    for name in &names {
        assert_eq!(
            strided.read(name).unwrap(),
            expected.read(name).unwrap(),
            "{name}"
        );
    }
    let w_enc = strided.read("W_enc").unwrap();
    let w_dec = strided.read("W_dec").unwrap();
    assert_eq!(w_dec.shape, [64, 16]);
    assert_eq!(w_dec.data[16], w_enc.data[1], "W_dec = W_enc^T");
}

#[test]
fn hub_checkpoints_with_wrong_tensor_ranks_are_refused() {
    for (file, tensor, rank) in [
        ("hub_patch_embed_1d.pth", "patch_embed.proj.weight", "4-D"),
        ("hub_cls_token_0d.pth", "cls_token", "3-D"),
        ("hub_register_tokens_0d.pth", "register_tokens", "3-D"),
    ] {
        let err = load(&case(file)).err().expect("must be refused");
        assert!(
            matches!(err, VitError::Unsupported { .. }),
            "{file}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(file) && msg.contains(tensor) && msg.contains(rank),
            "{msg}"
        );
    }
    // A position embedding without rows (its `len - 1` underflowed).
    let msg = load(&case("hub_pos_embed_empty.pth"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("hub_pos_embed_empty.pth") && msg.contains("square ViT"),
        "{msg}"
    );
}

#[test]
fn configs_with_zero_or_huge_sizes_are_refused() {
    for (dir, expected) in [
        ("config_zero_patch", "patch_size must be positive"),
        ("config_zero_heads", "num_attention_heads 0"),
        (
            "config_heads_not_dividing",
            "not divisible by num_attention_heads 3",
        ),
        ("config_huge_mlp_ratio", "positive MLP width"),
        ("config_negative_mlp_ratio", "mlp_ratio -4 with"),
        ("config_huge_layers", "num_hidden_layers 1000000000000000"),
        ("config_huge_image", "too large to address"),
    ] {
        // Only config.json is there: the config must be refused before any
        // weights are looked for (or, for the layers, allocated for).
        let err = Vit::<B>::from_hf_folder(&case(dir), &Default::default())
            .err()
            .expect("must be refused");
        assert!(matches!(err, VitError::Config { .. }), "{dir}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(dir) && msg.contains("config.json") && msg.contains(expected),
            "{msg}"
        );
    }
}

#[test]
fn a_huge_config_json_is_not_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let mut text = b"{\"model_type\": \"dinov2\", ".to_vec();
    text.resize(3 << 20, b' ');
    std::fs::write(&path, &text).unwrap();
    let msg = VitConfig::from_hf_json(&path).unwrap_err().to_string();
    assert!(
        msg.contains("config.json") && msg.contains("larger than"),
        "{msg}"
    );
}

#[test]
fn safetensors_files_whose_header_lies_are_refused() {
    for (file, expected) in [
        (
            "st_header_len_huge.safetensors",
            "4611686018427387904 bytes of JSON",
        ),
        ("st_shape_lie.safetensors", "do not match its shape"),
        ("st_offsets_past_end.safetensors", "truncated"),
        ("st_shape_overflow.safetensors", "do not match its shape"),
    ] {
        let err = SafetensorsFile::open(case(file))
            .err()
            .expect("must be refused");
        assert!(matches!(err, VitError::Format { .. }), "{file}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(file) && msg.contains(expected), "{msg}");
    }
    // The same through the model loader: a folder whose weights lie.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        sae_steer_testkit::fixture("vit/reg/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        case("st_shape_lie.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let msg = load(dir.path()).err().unwrap().to_string();
    assert!(msg.contains("model.safetensors"), "{msg}");
}

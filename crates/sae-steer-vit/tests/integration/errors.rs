//! Bad input is an error that names the file and the problem, never a panic.

use std::path::PathBuf;

use burn::backend::NdArray;
use sae_steer_vit::{Vit, VitError};

type B = NdArray<f32>;

fn fixtures() -> PathBuf {
    sae_steer_testkit::fixture("vit")
}

fn copy_folder(to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("reg").join(f), to.join(f)).unwrap();
    }
}

fn load(dir: &std::path::Path) -> Result<Vit<B>, VitError> {
    Vit::<B>::from_hf_folder(dir, &Default::default())
}

#[test]
fn truncated_safetensors_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    copy_folder(dir.path());
    let st = dir.path().join("model.safetensors");
    let len = std::fs::metadata(&st).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&st)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = load(dir.path()).err().expect("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
    // A file cut inside its header is an error too.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&st)
        .unwrap()
        .set_len(20)
        .unwrap();
    assert!(matches!(load(dir.path()), Err(VitError::Format { .. })));
}

#[test]
fn wrong_hidden_size_names_tensor_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    copy_folder(dir.path());
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"hidden_size\": 128", "\"hidden_size\": 192");
    std::fs::write(&cfg, text).unwrap();
    match load(dir.path()) {
        Err(VitError::ShapeMismatch {
            name,
            expected,
            found,
            ..
        }) => {
            assert_eq!(name, "embeddings.cls_token");
            assert_eq!(expected, vec![1, 1, 192]);
            assert_eq!(found, vec![1, 1, 128]);
        }
        other => panic!("expected a shape mismatch, got {:?}", other.err()),
    }
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    copy_folder(dir.path());
    let cfg = dir.path().join("config.json");
    // Claim a fourth block the weights do not have.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"num_hidden_layers\": 3", "\"num_hidden_layers\": 4");
    std::fs::write(&cfg, text).unwrap();
    let err = load(dir.path()).err().expect("must fail");
    assert!(
        matches!(&err, VitError::MissingTensor { name, .. } if name.starts_with("encoder.layer.3.")),
        "{err}"
    );
    assert!(err.to_string().contains("model.safetensors"));
}

#[test]
fn bad_config_and_unknown_models_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_folder(dir.path());
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("dinov2_with_registers", "vit")).unwrap();
    let err = load(dir.path()).err().unwrap().to_string();
    assert!(
        err.contains("config.json") && err.contains("model_type `vit`"),
        "{err}"
    );
    std::fs::write(
        &cfg,
        text.replace("\"use_swiglu_ffn\": false", "\"use_swiglu_ffn\": true"),
    )
    .unwrap();
    assert!(
        load(dir.path())
            .err()
            .unwrap()
            .to_string()
            .contains("SwiGLU")
    );
    std::fs::write(&cfg, "{ not json").unwrap();
    assert!(matches!(load(dir.path()), Err(VitError::Config { .. })));
}

#[test]
fn non_image_and_corrupt_image_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.jpg");
    std::fs::write(&text, "these are not pixels").unwrap();
    let err = sae_steer_vit::preprocess_path(&text)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("notes.jpg"), "{err}");
    // A real JPEG cut in half.
    let jpeg = std::fs::read(fixtures().join("photo.jpg")).unwrap();
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &jpeg[..jpeg.len() / 3]).unwrap();
    match sae_steer_vit::preprocess_path(&cut) {
        Err(VitError::Image { path, .. }) => assert_eq!(path, cut),
        // Some decoders fill a truncated scan with gray; they must not panic.
        Ok(px) => assert_eq!(px.data.len(), 3 * 224 * 224),
        Err(e) => panic!("unexpected error kind: {e}"),
    }
    let missing = sae_steer_vit::preprocess_path(dir.path().join("nope.png"))
        .err()
        .unwrap()
        .to_string();
    assert!(missing.contains("nope.png"), "{missing}");
}

#[test]
fn torch_checkpoint_that_is_not_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("model.pth");
    std::fs::write(&bogus, b"PK\x03\x04 garbage").unwrap();
    let err = Vit::<B>::load(bogus.to_str().unwrap(), &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.pth"), "{err}");
}

#[test]
fn hub_id_resolves_from_the_local_cache_and_explains_when_offline() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--acme--tiny-dinov2");
    let snap = repo.join("snapshots").join("0123abcd");
    copy_folder(&snap);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abcd").unwrap();
    let vit =
        Vit::<B>::from_hub_id("acme/tiny-dinov2", Some(cache.path()), &Default::default()).unwrap();
    assert_eq!(vit.config().num_register_tokens, 4);

    let err =
        sae_steer_vit::load::hub_files("acme/absent", &["config.json"], Some(cache.path()), true)
            .err()
            .unwrap()
            .to_string();
    assert!(
        err.contains("acme/absent") && err.contains("download config.json"),
        "{err}"
    );
    assert!(err.contains("models--acme--absent"), "{err}");
}

#[test]
fn source_strings_are_classified() {
    use sae_steer_vit::load::VitSource;
    assert_eq!(
        VitSource::parse("facebook/dinov2-with-registers-base").unwrap(),
        VitSource::HubId("facebook/dinov2-with-registers-base".into())
    );
    assert!(matches!(
        VitSource::parse(fixtures().join("reg").to_str().unwrap()),
        Ok(VitSource::HfFolder(_))
    ));
    assert!(matches!(
        VitSource::parse(fixtures().join("reg_hub.pth").to_str().unwrap()),
        Ok(VitSource::TorchHub(_))
    ));
    assert!(VitSource::parse("/no/such/dir/at/all").is_err());
}

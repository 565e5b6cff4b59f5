//! SAEs given as hub ids, resolved through a local hf-hub cache (never the network).

use crate::common;

use std::path::Path;

use common::*;
use sae_steer_sae::{SaeSource, SaeWeights};

/// An hf-hub cache in `root` holding `acme/tiny-sae` at revision `0123abcd`
/// with `sae.pt` and `layer10/sae.pt`.
fn cache_with_tiny_sae(root: &Path) {
    let repo = root.join("models--acme--tiny-sae");
    let snap = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(snap.join("layer10")).unwrap();
    std::fs::copy(fixture("schema1.pt"), snap.join("sae.pt")).unwrap();
    std::fs::copy(
        fixture("pre_schema.pt"),
        snap.join("layer10").join("sae.pt"),
    )
    .unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abcd").unwrap();
}

#[test]
fn strings_are_classified() {
    let file = fixture("schema1.pt");
    assert_eq!(
        SaeSource::parse(file.to_str().unwrap()).unwrap(),
        SaeSource::File(file.clone())
    );
    assert_eq!(
        SaeSource::parse("osunlp/SAE_DINOv2_24K_ViT-B-14_IN1K").unwrap(),
        SaeSource::Hub {
            repo: "osunlp/SAE_DINOv2_24K_ViT-B-14_IN1K".into(),
            file: "sae.pt".into()
        }
    );
    assert_eq!(
        SaeSource::parse("acme/tiny-sae:layer10/sae.pt").unwrap(),
        SaeSource::Hub {
            repo: "acme/tiny-sae".into(),
            file: "layer10/sae.pt".into()
        }
    );
    for bad in [
        "/no/such/file/sae.pt",
        "justaname",
        "acme/tiny:../../etc/passwd",
        "acme/tiny:",
        "acme/ti ny",
    ] {
        let err = SaeSource::parse(bad).unwrap_err().to_string();
        assert!(err.contains(bad), "{bad}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let err = SaeSource::parse(dir.path().to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("folder"), "{err}");
}

#[test]
fn hub_ids_resolve_from_the_local_cache() {
    let cache = tempfile::tempdir().unwrap();
    cache_with_tiny_sae(cache.path());

    let path = SaeSource::parse("acme/tiny-sae")
        .unwrap()
        .resolve(Some(cache.path()), true)
        .unwrap();
    assert!(path.ends_with("snapshots/0123abcd/sae.pt"), "{path:?}");
    assert_eq!(
        SaeWeights::load(&path).unwrap(),
        SaeWeights::load(fixture("schema1.pt")).unwrap()
    );

    let path = SaeSource::parse("acme/tiny-sae:layer10/sae.pt")
        .unwrap()
        .resolve(Some(cache.path()), true)
        .unwrap();
    assert_eq!(
        SaeWeights::load(&path).unwrap(),
        SaeWeights::load(fixture("pre_schema.pt")).unwrap()
    );
    // A file spec needs no cache at all.
    let file = fixture("schema1.pt");
    let sae = sae_steer_sae::Sae::<B>::load(file.to_str().unwrap(), &Default::default()).unwrap();
    assert_eq!(sae.config().d_sae, 96);
    // saev files carry no normalization: taking "the checkpoint's" is refused,
    // saying what to do instead.
    assert!(!sae.has_normalization());
    let err = sae
        .resolve(sae_steer_sae::NormalizationSource::Checkpoint)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no input normalization"), "{err}");
    assert!(err.contains("choose none explicitly"), "{err}");
}

#[test]
fn offline_miss_names_the_file_url_and_cache_path() {
    let cache = tempfile::tempdir().unwrap();
    cache_with_tiny_sae(cache.path());
    for (spec, file, folder) in [
        ("acme/absent", "sae.pt", "models--acme--absent"),
        // The repository is cached, the file is not.
        (
            "acme/tiny-sae:layer11/sae.pt",
            "layer11/sae.pt",
            "models--acme--tiny-sae",
        ),
    ] {
        let repo = spec.split(':').next().unwrap();
        let err = SaeSource::parse(spec)
            .unwrap()
            .resolve(Some(cache.path()), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "https://huggingface.co/{repo}/resolve/main/{file}"
            )),
            "{err}"
        );
        assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
        assert!(
            err.contains(&cache.path().join(folder).display().to_string()),
            "{err}"
        );
    }
}

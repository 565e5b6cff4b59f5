//! Fetch tests against a loopback HTTP server: no network.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use super::test_server::{Route, Server};
use super::*;

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// A zip of `(name, contents)`; names ending in `/` are folders. Every other
/// file is deflated, so both methods are exercised.
fn make_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (i, (name, data)) in entries.iter().enumerate() {
        let method = if i % 2 == 0 {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let opts = SimpleFileOptions::default().compression_method(method);
        if name.ends_with('/') {
            w.add_directory(*name, opts).expect("add dir");
        } else {
            w.start_file(*name, opts).expect("start file");
            w.write_all(data).expect("write");
        }
    }
    w.finish().expect("finish zip").into_inner()
}

/// 40 kB that deflate cannot shrink (xorshift).
fn noise() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..40_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// A small dataset in the ADE20K shape, big enough (random-ish bytes that do
/// not compress) that a cut after a few KB really is mid-file.
fn dataset_zip() -> Vec<u8> {
    let zip = make_zip(&[
        ("DS/", b""),
        (
            "DS/objectInfo150.txt",
            b"Idx\tRatio\tTrain\tVal\tName\n1\t0.1\t1\t1\twall\n",
        ),
        ("DS/images/training/a.jpg", &noise()),
        ("DS/images/training/b.jpg", b"jpeg b"),
        ("DS/images/validation/c.jpg", b"jpeg c"),
        ("DS/annotations/training/a.png", b"png a"),
        ("DS/annotations/training/b.png", b"png b"),
        ("DS/annotations/validation/c.png", b"png c"),
    ]);
    assert!(
        zip.len() > 40_000,
        "the cut tests need a zip longer than the cut"
    );
    zip
}

const LAYOUT: &str = r#"
[archive.layout]
files = ["objectInfo150.txt"]
dirs = [
    { path = "images/training", extension = "jpg", count = 2 },
    { path = "images/validation", extension = "jpg", count = 1 },
    { path = "annotations/training", extension = "png", count = 2 },
    { path = "annotations/validation", extension = "png", count = 1 },
]
"#;

/// Temporary manifest, data and hf-hub folders, and a server.
struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    server: Server,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Nested, so that an entry escaping the data folder still lands
        // inside the temporary folder, where the test can see it.
        let root = tmp.path().join("a").join("b");
        std::fs::create_dir_all(root.join("manifests")).expect("mkdir");
        Self {
            root,
            _tmp: tmp,
            server: Server::start(),
        }
    }

    fn manifest(&self, file: &str, text: &str) {
        std::fs::write(self.root.join("manifests").join(file), text).expect("write manifest");
    }

    /// An archive manifest for `/ds.zip` with optional size and hash.
    fn archive_manifest(&self, size: Option<usize>, sha256: Option<&str>) {
        let mut text = format!(
            "name = \"ds\"\ndescription = \"test\"\n[[archive]]\nurl = \"{}\"\nfile = \"ds.zip\"\nroot = \"DS\"\n",
            self.server.url("/ds.zip")
        );
        if let Some(s) = size {
            text.push_str(&format!("size = {s}\n"));
        }
        if let Some(h) = sha256 {
            text.push_str(&format!("sha256 = \"{h}\"\n"));
        }
        text.push_str(LAYOUT);
        self.manifest("ds.toml", &text);
    }

    fn options(&self) -> Options {
        Options {
            manifests_dir: self.root.join("manifests"),
            data_dir: self.root.join("data"),
            hf_cache: self.root.join("hf"),
            hf_endpoint: self.server.base.clone(),
            only: Vec::new(),
            offline: false,
            hub_offline: false,
            verify: false,
            keep_archives: false,
            locked: false,
            alternatives: false,
            progress: false,
            attempts: 1,
            retry_delay: Duration::from_millis(1),
            unsized_limit: download::DEFAULT_UNSIZED_LIMIT,
        }
    }

    fn data(&self, rel: &str) -> PathBuf {
        self.root.join("data").join(rel)
    }

    fn lock(&self) -> lock::Lock {
        let text = std::fs::read_to_string(self.root.join("manifests").join("lock.toml"))
            .expect("lock.toml");
        toml::from_str(&text).expect("lock parses")
    }
}

fn outcomes(reports: &[Report]) -> Vec<Outcome> {
    reports.iter().map(|r| r.outcome).collect()
}

fn assert_unpacked(env: &Env) {
    assert_eq!(
        std::fs::read(env.data("DS/images/training/a.jpg")).expect("a.jpg"),
        noise()
    );
    assert_eq!(
        std::fs::read(env.data("DS/annotations/validation/c.png")).expect("c.png"),
        b"png c"
    );
    assert!(env.data("DS").join(archive::MARKER_FILE).is_file());
    // Neither the staging folder nor a partial download stays behind.
    let leftovers: Vec<_> = std::fs::read_dir(env.data(""))
        .expect("data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".unpack"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!env.data("downloads/ds.zip.part").exists());
}

#[test]
fn archive_is_downloaded_verified_unpacked_and_then_skipped_without_a_request() {
    let env = Env::new();
    let zip = dataset_zip();
    env.server.route("/ds.zip", Route::file(&zip));
    env.archive_manifest(Some(zip.len()), Some(&sha256_hex(&zip)));

    let reports = fetch(&env.options()).expect("first fetch");
    assert_eq!(outcomes(&reports), [Outcome::Downloaded]);
    assert_unpacked(&env);
    assert!(
        !env.data("downloads/ds.zip").exists(),
        "archive removed after unpacking"
    );
    let requests = env.server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].range, None);
    // Size and hash were known: nothing to lock.
    assert!(!env.root.join("manifests/lock.toml").exists());

    let again = fetch(&env.options()).expect("second fetch");
    assert_eq!(outcomes(&again), [Outcome::Present]);
    assert_eq!(
        env.server.requests().len(),
        1,
        "the second run made a request"
    );
}

#[test]
fn a_cut_connection_is_resumed_with_a_range_request_in_the_same_run() {
    let env = Env::new();
    let zip = dataset_zip();
    let cut = 5_000;
    env.server.route(
        "/ds.zip",
        Route::File {
            body: zip.clone(),
            headers: Vec::new(),
            cut_after: Some(cut),
        },
    );
    env.archive_manifest(Some(zip.len()), Some(&sha256_hex(&zip)));
    let mut options = env.options();
    options.attempts = 3;

    let reports = fetch(&options).expect("fetch with one retry");
    assert_eq!(outcomes(&reports), [Outcome::Downloaded]);
    let requests = env.server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].range, None);
    assert_eq!(
        requests[1].range.as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    assert_unpacked(&env);
}

#[test]
fn an_interrupted_download_keeps_its_part_file_and_the_next_run_resumes_it() {
    let env = Env::new();
    let zip = dataset_zip();
    let cut = 7_000;
    env.server.route(
        "/ds.zip",
        Route::File {
            body: zip.clone(),
            headers: Vec::new(),
            cut_after: Some(cut),
        },
    );
    // No hash known in advance: the lock records it once the dataset is in place.
    env.archive_manifest(Some(zip.len()), None);

    let err = fetch(&env.options()).expect_err("one attempt only");
    assert!(
        matches!(err, FetchError::Interrupted { have, .. } if have == cut as u64),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(env.data("downloads/ds.zip.part"))
            .expect("part kept")
            .len(),
        cut as u64
    );
    assert!(!env.data("downloads/ds.zip").exists());
    assert!(!env.data("DS").exists());

    let reports = fetch(&env.options()).expect("second run");
    assert_eq!(outcomes(&reports), [Outcome::Downloaded]);
    let requests = env.server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].range.as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    assert_unpacked(&env);
    let url = env.server.url("/ds.zip");
    let locked = &env.lock().url[&url];
    assert_eq!(locked.sha256, sha256_hex(&zip));
    assert_eq!(locked.size, zip.len() as u64);
}

#[test]
fn a_stale_part_file_that_fails_the_hash_is_discarded_and_fetched_again_from_the_start() {
    let env = Env::new();
    let zip = dataset_zip();
    env.server.route("/ds.zip", Route::file(&zip));
    env.archive_manifest(Some(zip.len()), Some(&sha256_hex(&zip)));
    // Left over from an older version of the file.
    std::fs::create_dir_all(env.data("downloads")).expect("mkdir");
    std::fs::write(env.data("downloads/ds.zip.part"), vec![0u8; 1_000]).expect("stale part");

    let reports = fetch(&env.options()).expect("recovers");
    assert_eq!(outcomes(&reports), [Outcome::Downloaded]);
    let ranges: Vec<Option<String>> = env.server.requests().into_iter().map(|r| r.range).collect();
    assert_eq!(ranges, [Some("bytes=1000-".to_string()), None]);
    assert_unpacked(&env);
}

#[test]
fn a_hash_mismatch_is_refused_and_nothing_is_kept() {
    let env = Env::new();
    let zip = dataset_zip();
    env.server.route("/ds.zip", Route::file(&zip));
    env.archive_manifest(Some(zip.len()), Some(&sha256_hex(b"another file")));

    let err = fetch(&env.options()).expect_err("wrong hash");
    match &err {
        FetchError::HashMismatch {
            expected,
            actual,
            expected_by,
            ..
        } => {
            assert_eq!(expected, &sha256_hex(b"another file"));
            assert_eq!(actual, &sha256_hex(&zip));
            assert!(expected_by.ends_with("ds.toml"), "{expected_by}");
        }
        other => panic!("expected a hash mismatch, got {other}"),
    }
    assert!(!env.data("downloads/ds.zip").exists());
    assert!(!env.data("downloads/ds.zip.part").exists());
    assert!(!env.data("DS").exists());
}

#[test]
fn a_size_mismatch_is_refused_before_the_body_is_read() {
    let env = Env::new();
    let zip = dataset_zip();
    env.server.route("/ds.zip", Route::file(&zip));
    env.archive_manifest(Some(zip.len() + 1), Some(&sha256_hex(&zip)));

    let err = fetch(&env.options()).expect_err("wrong size");
    assert!(
        matches!(err, FetchError::SizeMismatch { expected, actual, .. }
            if expected == zip.len() as u64 + 1 && actual == zip.len() as u64),
        "{err}"
    );
    assert!(!env.data("downloads/ds.zip").exists());
    assert!(!env.data("downloads/ds.zip.part").exists());
    assert!(!env.data("DS").exists());
}

#[test]
fn the_lock_records_an_unknown_hash_and_refuses_a_changed_file_later() {
    let env = Env::new();
    let first = b"weights version 1".to_vec();
    env.server.route("/w.pth", Route::file(&first));
    env.manifest(
        "w.toml",
        &format!(
            "name = \"w\"\ndescription = \"test\"\n[[url]]\nurl = \"{}\"\ndest = \"w/w.pth\"\n",
            env.server.url("/w.pth")
        ),
    );
    let reports = fetch(&env.options()).expect("first download");
    assert_eq!(outcomes(&reports), [Outcome::Downloaded]);
    let url = env.server.url("/w.pth");
    let locked = env.lock().url[&url].clone();
    assert_eq!(locked.sha256, sha256_hex(&first));
    assert_eq!(locked.size, first.len() as u64);
    // Present and recorded: no request, no hashing needed.
    assert_eq!(
        outcomes(&fetch(&env.options()).expect("again")),
        [Outcome::Present]
    );
    assert_eq!(env.server.requests().len(), 1);

    // Upstream changes the file (same length), the local copy is gone.
    let second = b"weights version 2".to_vec();
    env.server.route("/w.pth", Route::file(&second));
    std::fs::remove_file(env.data("w/w.pth")).expect("rm");
    let err = fetch(&env.options()).expect_err("changed upstream");
    match &err {
        FetchError::HashMismatch {
            expected,
            expected_by,
            ..
        } => {
            assert_eq!(expected, &sha256_hex(&first));
            assert!(expected_by.ends_with("lock.toml"), "{expected_by}");
        }
        other => panic!("expected a hash mismatch, got {other}"),
    }
    assert!(!env.data("w/w.pth").exists());
    assert!(!env.data("w/w.pth.part").exists());
    assert_eq!(
        env.lock().url[&url],
        locked,
        "the lock keeps the first hash"
    );

    // A file placed by hand is checked against the lock too, and set aside.
    std::fs::write(env.data("w/w.pth"), &second).expect("write");
    let mut options = env.options();
    options.verify = true;
    assert!(matches!(
        fetch(&options),
        Err(FetchError::HashMismatch { .. })
    ));
    assert!(!env.data("w/w.pth").exists());
    assert!(env.data("w/w.pth.rejected").exists());
}

#[test]
fn the_manifest_and_the_lock_must_agree() {
    let env = Env::new();
    let zip = dataset_zip();
    env.server.route("/ds.zip", Route::file(&zip));
    env.archive_manifest(Some(zip.len()), Some(&sha256_hex(&zip)));
    let url = env.server.url("/ds.zip");
    std::fs::write(
        env.root.join("manifests/lock.toml"),
        format!(
            "[url.\"{url}\"]\nsize = {}\nsha256 = \"{}\"\n",
            zip.len(),
            sha256_hex(b"x")
        ),
    )
    .expect("write lock");
    let err = fetch(&env.options()).expect_err("conflict");
    assert!(
        matches!(&err, FetchError::Manifest { path, .. } if path.ends_with("lock.toml")),
        "{err}"
    );
    assert!(env.server.requests().is_empty());
}

#[test]
fn zip_entries_that_leave_the_target_are_refused_and_nothing_is_unpacked() {
    for evil in [
        "DS/../../evil.txt",
        "../evil.txt",
        "/tmp/sae-steer-evil.txt",
    ] {
        let env = Env::new();
        let zip = make_zip(&[("DS/objectInfo150.txt", b"ok"), (evil, b"gotcha")]);
        env.server.route("/ds.zip", Route::file(&zip));
        env.archive_manifest(Some(zip.len()), Some(&sha256_hex(&zip)));
        let err = fetch(&env.options()).expect_err("unsafe archive");
        assert!(
            matches!(err, FetchError::UnsafeZipEntry { ref entry, .. } if entry == evil),
            "{err}"
        );
        for dir in [
            env.root.clone(),
            env.root.join("data"),
            env.root.parent().expect("a").to_path_buf(),
        ] {
            assert!(!dir.join("evil.txt").exists(), "{evil}: {}", dir.display());
        }
        assert!(!Path::new("/tmp/sae-steer-evil.txt").exists());
        assert!(!env.data("DS").exists());
        assert!(!env.data(".unpack-DS").exists());
    }
}

#[test]
fn a_symlink_entry_is_refused() {
    let env = Env::new();
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    w.add_symlink("DS/link", "/etc/passwd", SimpleFileOptions::default())
        .expect("symlink");
    let zip = w.finish().expect("finish").into_inner();
    env.server.route("/ds.zip", Route::file(&zip));
    env.archive_manifest(None, None);
    let err = fetch(&env.options()).expect_err("link");
    assert!(matches!(err, FetchError::UnsafeZipEntry { .. }), "{err}");
    assert!(!env.data("DS").exists());
}

#[test]
fn a_dataset_with_the_wrong_counts_is_not_put_in_place() {
    let env = Env::new();
    let zip = make_zip(&[
        ("DS/objectInfo150.txt", b"ok"),
        ("DS/images/training/a.jpg", b"a"),
        ("DS/images/validation/c.jpg", b"c"),
        ("DS/annotations/training/a.png", b"a"),
        ("DS/annotations/validation/c.png", b"c"),
    ]);
    env.server.route("/ds.zip", Route::file(&zip));
    env.archive_manifest(Some(zip.len()), Some(&sha256_hex(&zip)));
    let err = fetch(&env.options()).expect_err("one training image short");
    match &err {
        FetchError::Layout { problem, .. } => {
            assert!(
                problem.contains("images/training holds 1 .jpg files, expected 2"),
                "{problem}"
            )
        }
        other => panic!("expected a layout error, got {other}"),
    }
    assert!(!env.data("DS").exists());
    assert!(!env.data(".unpack-DS").exists());
}

#[test]
fn offline_says_what_to_download_and_where_then_uses_a_file_placed_by_hand() {
    let env = Env::new();
    let zip = dataset_zip();
    env.archive_manifest(Some(zip.len()), Some(&sha256_hex(&zip)));
    let mut options = env.options();
    options.offline = true;
    let err = fetch(&options).expect_err("offline, nothing on disk");
    let message = err.to_string();
    assert!(message.contains(&env.server.url("/ds.zip")), "{message}");
    assert!(
        message.contains(&env.data("downloads/ds.zip").display().to_string()),
        "{message}"
    );
    assert!(message.contains(&sha256_hex(&zip)), "{message}");

    std::fs::create_dir_all(env.data("downloads")).expect("mkdir");
    std::fs::write(env.data("downloads/ds.zip"), &zip).expect("place by hand");
    let reports = fetch(&options).expect("verify and unpack the placed file");
    assert_eq!(outcomes(&reports), [Outcome::Adopted]);
    assert_unpacked(&env);
    assert!(env.server.requests().is_empty());
}

#[test]
fn an_unreachable_server_gives_the_manual_steps() {
    let env = Env::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/ds.zip");
    env.manifest(
        "ds.toml",
        &format!("name = \"ds\"\ndescription = \"t\"\n[[archive]]\nurl = \"{url}\"\nfile = \"ds.zip\"\nroot = \"DS\"\n{LAYOUT}"),
    );
    let err = fetch(&env.options()).expect_err("connection refused");
    assert!(matches!(err, FetchError::Network { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&url) && message.contains("save it as"),
        "{message}"
    );
}

/// A hub repository the way huggingface.co serves it: a small file answered
/// directly with its git ETag, an LFS file redirected to a CDN with its
/// SHA-256 in `X-Linked-Etag`, and the commit in `X-Repo-Commit`.
fn serve_hub(server: &Server, commit: &str, config: &[u8], weights: &[u8]) {
    for rev in ["main", commit] {
        server.route(
            &format!("/acme/vit/resolve/{rev}/config.json"),
            Route::File {
                body: config.to_vec(),
                headers: vec![
                    ("X-Repo-Commit".into(), commit.into()),
                    ("ETag".into(), "\"0123abcd\"".into()),
                ],
                cut_after: None,
            },
        );
        server.route(
            &format!("/acme/vit/resolve/{rev}/model.safetensors"),
            Route::Redirect {
                location: "/cdn/blob-1?sig=x".into(),
                headers: vec![
                    ("X-Repo-Commit".into(), commit.into()),
                    (
                        "X-Linked-Etag".into(),
                        format!("\"{}\"", sha256_hex(weights)),
                    ),
                ],
            },
        );
    }
    server.route("/cdn/blob-1?sig=x", Route::file(weights));
}

const HUB_MANIFEST: &str = r#"
name = "vit"
description = "test"
[[hub]]
repo = "acme/vit"
revision = "main"
files = [{ name = "config.json" }, { name = "model.safetensors" }]
"#;

#[test]
fn hub_files_land_in_the_hf_hub_cache_and_the_commit_is_pinned() {
    let env = Env::new();
    let commit = "c0ffee0000000000000000000000000000000001";
    let config = br#"{"model_type": "dinov2"}"#.to_vec();
    let weights: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    serve_hub(&env.server, commit, &config, &weights);
    env.manifest("vit.toml", HUB_MANIFEST);

    let reports = fetch(&env.options()).expect("hub fetch");
    assert_eq!(
        outcomes(&reports),
        [Outcome::Downloaded, Outcome::Downloaded]
    );
    // hf-hub itself (what the model loaders use) finds both files.
    let cache = hf_hub::Cache::new(env.root.join("hf")).model("acme/vit".into());
    let found_config = cache
        .get("config.json")
        .expect("config.json in the hf-hub cache");
    let found_weights = cache
        .get("model.safetensors")
        .expect("weights in the hf-hub cache");
    assert_eq!(std::fs::read(found_config).expect("read"), config);
    assert_eq!(std::fs::read(&found_weights).expect("read"), weights);
    assert!(found_weights.ends_with(format!("snapshots/{commit}/model.safetensors")));
    let blob = env
        .root
        .join("hf/models--acme--vit/blobs")
        .join(sha256_hex(&weights));
    assert!(
        blob.is_file(),
        "LFS blob named by its SHA-256, as hf-hub does"
    );
    // After the first file the commit is known: the second is fetched by commit.
    let paths: Vec<String> = env.server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/acme/vit/resolve/main/config.json".to_string(),
            format!("/acme/vit/resolve/{commit}/model.safetensors"),
            "/cdn/blob-1?sig=x".to_string(),
        ]
    );
    let locked = env.lock().hub["acme/vit"].clone();
    assert_eq!(locked.commit, commit);
    assert_eq!(locked.revision, "main");
    assert_eq!(
        locked.files["model.safetensors"].sha256,
        sha256_hex(&weights)
    );
    assert_eq!(locked.files["config.json"].sha256, sha256_hex(&config));

    // Idempotent: no request.
    let again = fetch(&env.options()).expect("again");
    assert_eq!(outcomes(&again), [Outcome::Present, Outcome::Present]);
    assert_eq!(env.server.requests().len(), 3);

    // A fresh machine with the committed lock downloads the pinned commit.
    std::fs::remove_dir_all(env.root.join("hf")).expect("rm cache");
    fetch(&env.options()).expect("pinned fetch");
    let pinned: Vec<String> = env.server.requests()[3..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(pinned[0], format!("/acme/vit/resolve/{commit}/config.json"));
    assert_eq!(
        pinned[1],
        format!("/acme/vit/resolve/{commit}/model.safetensors")
    );
}

#[test]
fn an_existing_hf_hub_cache_is_adopted_without_a_request() {
    let env = Env::new();
    let commit = "c0ffee0000000000000000000000000000000002";
    let config = b"{}".to_vec();
    let weights = b"weights".to_vec();
    serve_hub(&env.server, commit, &config, &weights);
    env.manifest("vit.toml", HUB_MANIFEST);
    fetch(&env.options()).expect("populate the cache");
    std::fs::remove_file(env.root.join("manifests/lock.toml")).expect("forget the lock");
    let before = env.server.requests().len();

    let reports = fetch(&env.options()).expect("adopt");
    assert_eq!(outcomes(&reports), [Outcome::Adopted, Outcome::Adopted]);
    assert_eq!(env.server.requests().len(), before);
    assert_eq!(env.lock().hub["acme/vit"].commit, commit);
}

#[test]
fn a_hub_file_whose_announced_hash_differs_from_the_lock_is_refused() {
    let env = Env::new();
    let commit = "c0ffee0000000000000000000000000000000003";
    serve_hub(&env.server, commit, b"{}", b"new weights");
    env.manifest("vit.toml", HUB_MANIFEST);
    std::fs::write(
        env.root.join("manifests/lock.toml"),
        format!(
            "[hub.\"acme/vit\"]\nrevision = \"main\"\ncommit = \"{commit}\"\n\
             [hub.\"acme/vit\".files.\"model.safetensors\"]\nsize = 11\nsha256 = \"{}\"\n",
            sha256_hex(b"old weights")
        ),
    )
    .expect("lock");
    let err = fetch(&env.options()).expect_err("hash announced by X-Linked-Etag differs");
    match &err {
        FetchError::HashMismatch {
            actual,
            expected_by,
            ..
        } => {
            assert_eq!(actual, &sha256_hex(b"new weights"));
            assert!(expected_by.ends_with("lock.toml"), "{expected_by}");
        }
        other => panic!("expected a hash mismatch, got {other}"),
    }
    // The body was never fetched and nothing is in the snapshot.
    assert!(
        !env.server
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/cdn/"))
    );
    let cache = hf_hub::Cache::new(env.root.join("hf")).model("acme/vit".into());
    assert!(cache.get("model.safetensors").is_none());
}

#[test]
fn hub_offline_names_the_files_and_the_cache_folder() {
    let env = Env::new();
    env.manifest("vit.toml", HUB_MANIFEST);
    let mut options = env.options();
    options.hub_offline = true;
    let message = fetch(&options).expect_err("offline").to_string();
    assert!(
        message.contains("config.json, model.safetensors"),
        "{message}"
    );
    assert!(message.contains("models--acme--vit"), "{message}");
    assert!(env.server.requests().is_empty());
}

#[test]
fn only_selects_manifests_by_name_and_rejects_unknown_names() {
    let env = Env::new();
    env.manifest("vit.toml", HUB_MANIFEST);
    let zip = dataset_zip();
    env.server.route("/ds.zip", Route::file(&zip));
    env.archive_manifest(Some(zip.len()), Some(&sha256_hex(&zip)));
    let mut options = env.options();
    options.only = vec!["ds".into()];
    let reports = fetch(&options).expect("only ds");
    assert!(reports.iter().all(|r| r.item == "ds"));
    options.only = vec!["nope".into()];
    let message = fetch(&options).expect_err("unknown").to_string();
    assert!(message.contains("known: ds, vit"), "{message}");
}

#[test]
fn alternatives_are_fetched_only_on_request() {
    let env = Env::new();
    env.server.route("/alt.pth", Route::file(b"alt"));
    env.manifest(
        "alt.toml",
        &format!(
            "name = \"alt\"\ndescription = \"t\"\n[[url]]\nurl = \"{}\"\ndest = \"alt.pth\"\nalternative = true\n",
            env.server.url("/alt.pth")
        ),
    );
    assert_eq!(
        outcomes(&fetch(&env.options()).expect("skip")),
        [Outcome::NotRequested]
    );
    assert!(env.server.requests().is_empty());
    let mut options = env.options();
    options.alternatives = true;
    assert_eq!(
        outcomes(&fetch(&options).expect("fetch")),
        [Outcome::Downloaded]
    );
    assert_eq!(std::fs::read(env.data("alt.pth")).expect("read"), b"alt");
}

#[test]
fn the_project_manifests_parse_and_hold_the_spec_facts() {
    let dir = crate::root().join("data-manifests");
    let m = Manifests::load(&dir).expect("data-manifests/ parse");
    assert_eq!(m.names(), ["ade20k", "dinov2", "sae"]);
    let ade = &m.sources[0].1.archives[0];
    assert_eq!(
        ade.url,
        "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
    );
    assert_eq!(ade.size, Some(967_382_037));
    assert_eq!(
        ade.sha256.as_deref(),
        Some("7ff1be44964418441f542a7cc1e1a650e7dc0fc275f5d23252bc9bbdbc977b29")
    );
    assert_eq!(ade.root, "ADEChallengeData2016");
    let counts: Vec<(&str, usize)> = ade
        .layout
        .dirs
        .iter()
        .map(|d| (d.path.as_str(), d.count))
        .collect();
    assert_eq!(
        counts,
        [
            ("images/training", 20_210),
            ("images/validation", 2_000),
            ("annotations/training", 20_210),
            ("annotations/validation", 2_000)
        ]
    );
    assert_eq!(
        ade.layout.files,
        ["objectInfo150.txt", "sceneCategories.txt"]
    );
    let dino = &m.sources[1].1;
    assert_eq!(dino.hub[0].repo, "facebook/dinov2-with-registers-base");
    let names: Vec<&str> = dino.hub[0].files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["config.json", "model.safetensors"]);
    assert!(
        dino.urls[0]
            .url
            .ends_with("dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth")
    );
    assert!(dino.urls[0].alternative);
    let sae = &m.sources[2].1;
    assert_eq!(sae.hub[0].repo, "osunlp/SAE_DINOv2_24K_ViT-B-14_IN1K");
    assert_eq!(sae.hub[0].files[0].name, "sae.pt");

    let table = m.manual_features.expect("manual-features.toml");
    assert_eq!(table.layer, 10);
    assert_eq!(table.d_sae, 24_576);
    let picks: Vec<(u16, u32, usize, f32)> = table
        .features
        .iter()
        .map(|f| {
            let ex = f.example.expect("guided example");
            (f.class, f.latent, ex.image, ex.slider)
        })
        .collect();
    assert_eq!(
        picks,
        [
            (21, 7235, 1872, -6.0),
            (23, 16446, 1633, -5.0),
            (66, 5876, 1099, -2.0),
            (8, 18834, 1117, -2.0)
        ]
    );
    // The lock, when present, parses.
    lock::LockFile::load(&dir.join("lock.toml")).expect("lock.toml");
}

#[test]
fn invalid_manifests_are_rejected_with_the_reason() {
    let base = "name = \"x\"\ndescription = \"t\"\n";
    let archive = "[[archive]]\nurl = \"https://h/x.zip\"\nfile = \"x.zip\"\nroot = \"X\"\n";
    let cases = [
        (
            format!("{base}{archive}[archive.layout]\nfiles = [\"../escape\"]\n"),
            "without '..'",
        ),
        (
            format!("{base}{archive}[archive.layout]\nbogus = 1\n"),
            "unknown field",
        ),
        (
            format!("{base}{archive}sha256 = \"ABC\"\n[archive.layout]\n"),
            "64 lower-case hex",
        ),
        (
            format!("{base}[[url]]\nurl = \"ftp://h/x\"\ndest = \"x\"\n"),
            "scheme ftp",
        ),
        (
            format!("{base}[[hub]]\nrepo = \"noslash\"\nfiles = [{{ name = \"a\" }}]\n"),
            "owner/name",
        ),
        (base.to_string(), "nothing to fetch"),
    ];
    for (text, want) in cases {
        let err = manifest::SourceManifest::parse(&text).expect_err(&text);
        assert!(err.contains(want), "{text}\n-> {err}");
    }
    let manual = "sae = \"s\"\nlayer = 10\nd_sae = 100\n";
    for (rows, want) in [
        (
            "[[feature]]\nclass = 151\nname = \"x\"\nlatent = 1\n",
            "1..=150",
        ),
        (
            "[[feature]]\nclass = 3\nname = \"x\"\nlatent = 100\n",
            "not below d_sae",
        ),
        (
            "[[feature]]\nclass = 3\nname = \"x\"\nlatent = 1\n[[feature]]\nclass = 3\nname = \"y\"\nlatent = 2\n",
            "twice",
        ),
        (
            "[[feature]]\nclass = 3\nname = \"x\"\nlatent = 1\nexample = { image = 1, slider = 11.0 }\n",
            "[-10, 10]",
        ),
    ] {
        let err = manifest::ManualFeatures::parse(&format!("{manual}{rows}")).expect_err(rows);
        assert!(err.contains(want), "{rows}\n-> {err}");
    }
}

/// A `[[url]]` manifest for `/w.bin` saved as `w/w.bin`, with an optional
/// size and hash.
fn url_manifest(env: &Env, size: Option<usize>, sha256: Option<&str>) {
    let mut text = format!(
        "name = \"w\"\ndescription = \"test\"\n[[url]]\nurl = \"{}\"\ndest = \"w/w.bin\"\n",
        env.server.url("/w.bin")
    );
    if let Some(s) = size {
        text.push_str(&format!("size = {s}\n"));
    }
    if let Some(h) = sha256 {
        text.push_str(&format!("sha256 = \"{h}\"\n"));
    }
    env.manifest("w.toml", &text);
}

/// No file of the download, whole or partial, is left in `w/`.
fn assert_nothing_kept(env: &Env) {
    for name in ["w/w.bin", "w/w.bin.part"] {
        assert!(!env.data(name).exists(), "{name} was kept");
    }
}

#[test]
fn a_redirect_to_another_scheme_is_refused_before_it_is_requested() {
    for target in ["ftp://127.0.0.1:21/w.bin", "file:///etc/passwd", "data:,x"] {
        let env = Env::new();
        env.server.route("/w.bin", Route::redirect(target));
        url_manifest(&env, None, None);
        let err = fetch(&env.options()).expect_err(target);
        match &err {
            FetchError::RefusedUrl { url, reason } => {
                assert!(url.starts_with(target), "{url}");
                assert!(url.contains("redirected from"), "{url}");
                assert!(
                    reason.contains("scheme") || reason.contains("not an absolute"),
                    "{reason}"
                );
            }
            other => panic!("{target}: expected a refused URL, got {other}"),
        }
        assert_eq!(env.server.requests().len(), 1, "{target}");
        assert_nothing_kept(&env);
    }
}

#[test]
fn a_redirect_from_loopback_to_clear_text_elsewhere_is_refused_for_an_unpinned_file() {
    // Clear text to a host that is not loopback, for a file nothing pins:
    // refused before any DNS lookup (the https -> http downgrade has its own
    // test against the https test server below).
    let env = Env::new();
    env.server.route(
        "/w.bin",
        Route::redirect("http://mirror.example.invalid/w.bin"),
    );
    url_manifest(&env, Some(3), None);
    let err = fetch(&env.options()).expect_err("clear text elsewhere");
    match &err {
        FetchError::RefusedUrl { url, reason } => {
            assert!(
                url.starts_with("http://mirror.example.invalid/w.bin"),
                "{url}"
            );
            assert!(
                reason.contains("plain http to mirror.example.invalid"),
                "{reason}"
            );
        }
        other => panic!("expected a refused URL, got {other}"),
    }
    assert_nothing_kept(&env);
}

#[test]
fn a_manifest_asking_for_clear_text_without_a_pinned_hash_is_refused() {
    let base = "name = \"x\"\ndescription = \"t\"\n[[url]]\ndest = \"x\"\n";
    let err = manifest::SourceManifest::parse(&format!("{base}url = \"http://cdn.example/x\"\n"))
        .expect_err("unpinned http");
    assert!(err.contains("plain http to cdn.example"), "{err}");
    let pinned = format!(
        "{base}url = \"http://cdn.example/x\"\nsha256 = \"{}\"\n",
        sha256_hex(b"x")
    );
    manifest::SourceManifest::parse(&pinned).expect("pinned http is allowed");
    manifest::SourceManifest::parse(&format!("{base}url = \"https://cdn.example/x\"\n"))
        .expect("https");
    // The hub's names become URL paths and cache paths.
    let hub = "name = \"x\"\ndescription = \"t\"\n[[hub]]\nrepo = \"a/b\"\n";
    for (rest, want) in [
        (
            "revision = \"/etc\"\nfiles = [{ name = \"c\" }]\n",
            "bad revision",
        ),
        (
            "revision = \"a b\"\nfiles = [{ name = \"c\" }]\n",
            "bad revision",
        ),
        ("files = [{ name = \"c?x=1\" }]\n", "use letters"),
        ("files = [{ name = \"c#x\" }]\n", "use letters"),
    ] {
        let err = manifest::SourceManifest::parse(&format!("{hub}{rest}")).expect_err(rest);
        assert!(err.contains(want), "{rest} -> {err}");
    }
}

#[test]
fn a_redirect_loop_ends_after_the_bounded_number_of_hops() {
    let env = Env::new();
    env.server.route("/w.bin", Route::redirect("/w.bin"));
    url_manifest(&env, None, None);
    let err = fetch(&env.options()).expect_err("loop");
    assert!(
        matches!(&err, FetchError::BadResponse { message, .. }
            if message.contains(&format!("more than {} redirects", download::MAX_REDIRECTS))),
        "{err}"
    );
    assert_eq!(env.server.requests().len(), download::MAX_REDIRECTS + 1);
}

#[test]
fn a_body_longer_than_the_manifest_size_is_cut_off_and_refused() {
    let env = Env::new();
    let size = 10_000;
    // No Content-Length: the body ends when the connection closes, so only
    // the manifest's size bounds it. The server sends a hundred times more.
    let body = vec![7u8; size * 100];
    env.server.route("/w.bin", Route::raw("200 OK", &[], &body));
    url_manifest(&env, Some(size), None);
    let err = fetch(&env.options()).expect_err("too long");
    match &err {
        FetchError::TooLong {
            limit, limit_by, ..
        } => {
            assert_eq!(*limit, size as u64);
            assert!(limit_by.ends_with("w.toml"), "{limit_by}");
        }
        other => panic!("expected a too-long refusal, got {other}"),
    }
    assert_nothing_kept(&env);
    assert!(!env.root.join("manifests/lock.toml").exists());
}

#[test]
fn a_body_longer_than_the_locked_size_is_refused_too() {
    let env = Env::new();
    let first = b"version one".to_vec();
    env.server.route("/w.bin", Route::file(&first));
    url_manifest(&env, None, None);
    fetch(&env.options()).expect("first fetch locks the size");
    std::fs::remove_file(env.data("w/w.bin")).expect("rm");
    env.server
        .route("/w.bin", Route::raw("200 OK", &[], &[b'x'; 5_000]));
    let err = fetch(&env.options()).expect_err("longer than the lock says");
    assert!(
        matches!(&err, FetchError::TooLong { limit, limit_by, .. }
            if *limit == first.len() as u64 && limit_by.ends_with("lock.toml")),
        "{err}"
    );
    assert_nothing_kept(&env);
}

#[test]
fn without_a_known_size_the_unsized_limit_bounds_the_body_and_the_announced_length() {
    let env = Env::new();
    url_manifest(&env, None, None);
    let mut options = env.options();
    options.unsized_limit = 1_000;
    // Close-delimited body past the limit.
    env.server
        .route("/w.bin", Route::raw("200 OK", &[], &[1u8; 50_000]));
    let err = fetch(&options).expect_err("past the unsized limit");
    assert!(
        matches!(&err, FetchError::TooLong { limit: 1_000, .. }),
        "{err}"
    );
    assert_nothing_kept(&env);
    // A Content-Length past it is refused before the body is read.
    env.server.route(
        "/w.bin",
        Route::raw("200 OK", &[("Content-Length", "50000")], &[1u8; 50_000]),
    );
    let err = fetch(&options).expect_err("announced past the limit");
    assert!(
        matches!(&err, FetchError::BadResponse { message, .. } if message.contains("announces 50000 bytes")),
        "{err}"
    );
    assert_nothing_kept(&env);
    // Within the limit, the server's own length is the bound.
    env.server.route("/w.bin", Route::file(&[2u8; 900]));
    assert_eq!(
        outcomes(&fetch(&options).expect("within the limit")),
        [Outcome::Downloaded]
    );
}

#[test]
fn a_wrong_or_malformed_content_length_is_handled() {
    for bad in ["abc", "-1", "1e3", "99999999999999999999999", ""] {
        let env = Env::new();
        env.server.route(
            "/w.bin",
            Route::raw("200 OK", &[("Content-Length", bad)], b"hello"),
        );
        url_manifest(&env, None, None);
        let err = fetch(&env.options()).expect_err(bad);
        assert!(
            matches!(&err, FetchError::BadResponse { message, .. } if message.contains("not a byte count")),
            "{bad:?}: {err}"
        );
        assert_nothing_kept(&env);
    }
    // Longer than the body: the connection closes early, which is an
    // interruption (the part is kept for a resume), never a complete file.
    let env = Env::new();
    env.server.route(
        "/w.bin",
        Route::raw("200 OK", &[("Content-Length", "5000")], &[3u8; 1000]),
    );
    url_manifest(&env, None, None);
    let err = fetch(&env.options()).expect_err("short body");
    assert!(
        matches!(&err, FetchError::Interrupted { have: 1000, .. }),
        "{err}"
    );
    assert!(!env.data("w/w.bin").exists());
    // Shorter than the manifest's size: refused before the body.
    let env = Env::new();
    env.server.route(
        "/w.bin",
        Route::raw("200 OK", &[("Content-Length", "10")], &[3u8; 1000]),
    );
    url_manifest(&env, Some(1000), None);
    let err = fetch(&env.options()).expect_err("short declared length");
    assert!(
        matches!(
            &err,
            FetchError::SizeMismatch {
                expected: 1000,
                actual: 10,
                ..
            }
        ),
        "{err}"
    );
    assert_nothing_kept(&env);
}

#[test]
fn a_resume_answered_from_another_offset_is_refused_and_nothing_is_appended() {
    let zip = dataset_zip();
    let have = 4_000;
    let cases = [
        // From the start, although bytes=4000- was asked for.
        format!("bytes 0-{}/{}", zip.len() - 1, zip.len()),
        // From a later offset.
        format!("bytes 5000-{}/{}", zip.len() - 1, zip.len()),
        // The right start but not to the end of the file.
        format!("bytes {have}-{}/{}", zip.len() - 2, zip.len()),
        "garbage".to_string(),
    ];
    for range in cases {
        let env = Env::new();
        std::fs::create_dir_all(env.data("downloads")).expect("mkdir");
        std::fs::write(env.data("downloads/ds.zip.part"), &zip[..have]).expect("part");
        env.server.route(
            "/ds.zip",
            Route::raw("206 Partial Content", &[("Content-Range", &range)], &zip),
        );
        env.archive_manifest(Some(zip.len()), Some(&sha256_hex(&zip)));
        let err = fetch(&env.options()).expect_err(&range);
        assert!(
            matches!(&err, FetchError::BadResponse { message, .. }
                if message.contains(&format!("asked for bytes={have}-")) && message.contains("refused")),
            "{range}: {err}"
        );
        assert_eq!(
            std::fs::read(env.data("downloads/ds.zip.part")).expect("part kept"),
            &zip[..have],
            "{range}: the partial file changed"
        );
        assert!(!env.data("downloads/ds.zip").exists());
        assert!(!env.data("DS").exists());
    }
    // A 206 whose Content-Length disagrees with its own range.
    let env = Env::new();
    std::fs::create_dir_all(env.data("downloads")).expect("mkdir");
    std::fs::write(env.data("downloads/ds.zip.part"), &zip[..have]).expect("part");
    let range = format!("bytes {have}-{}/{}", zip.len() - 1, zip.len());
    env.server.route(
        "/ds.zip",
        Route::raw(
            "206 Partial Content",
            &[("Content-Range", &range), ("Content-Length", "7")],
            &zip[have..],
        ),
    );
    env.archive_manifest(Some(zip.len()), Some(&sha256_hex(&zip)));
    let err = fetch(&env.options()).expect_err("inconsistent 206");
    assert!(
        matches!(&err, FetchError::BadResponse { message, .. } if message.contains("Content-Length says 7")),
        "{err}"
    );
}

#[test]
fn config_json_is_locked_on_first_fetch_and_a_changed_one_is_refused_later() {
    let env = Env::new();
    let commit = "c0ffee0000000000000000000000000000000004";
    let config = br#"{"model_type": "dinov2", "patch_size": 14}"#.to_vec();
    let weights = b"weights".to_vec();
    serve_hub(&env.server, commit, &config, &weights);
    // Nothing in the manifest pins config.json (HUB_MANIFEST has no hashes).
    env.manifest("vit.toml", HUB_MANIFEST);
    fetch(&env.options()).expect("first fetch");
    let locked = env.lock().hub["acme/vit"].files["config.json"].clone();
    assert_eq!(locked.sha256, sha256_hex(&config));
    assert_eq!(locked.size, config.len() as u64);

    // Changed on disk, same length: found without --verify (small files are
    // always re-hashed), refused, removed from the cache.
    let cache = hf_hub::Cache::new(env.root.join("hf")).model("acme/vit".into());
    let on_disk = cache.get("config.json").expect("cached");
    let tampered = br#"{"model_type": "dinov2", "patch_size": 0}"#;
    assert_eq!(tampered.len() + 1, config.len());
    let mut tampered = tampered.to_vec();
    tampered.push(b' ');
    std::fs::write(&on_disk, &tampered).expect("tamper");
    let err = fetch(&env.options()).expect_err("changed on disk");
    match &err {
        FetchError::HashMismatch {
            what,
            expected,
            actual,
            expected_by,
        } => {
            assert!(what.ends_with("acme/vit/config.json"), "{what}");
            assert_eq!(expected, &sha256_hex(&config));
            assert_eq!(actual, &sha256_hex(&tampered));
            assert!(expected_by.ends_with("lock.toml"), "{expected_by}");
        }
        other => panic!("expected a hash mismatch, got {other}"),
    }
    assert!(cache.get("config.json").is_none(), "the bad file stayed");

    // Changed upstream: the download is refused against the lock.
    serve_hub(&env.server, commit, &tampered, &weights);
    let before = env.server.requests().len();
    let err = fetch(&env.options()).expect_err("changed upstream");
    match &err {
        FetchError::HashMismatch {
            expected,
            actual,
            expected_by,
            ..
        } => {
            assert_eq!(expected, &sha256_hex(&config));
            assert_eq!(actual, &sha256_hex(&tampered));
            assert!(expected_by.ends_with("lock.toml"), "{expected_by}");
        }
        other => panic!("expected a hash mismatch, got {other}"),
    }
    let paths: Vec<String> = env.server.requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(paths, [format!("/acme/vit/resolve/{commit}/config.json")]);
    assert!(cache.get("config.json").is_none());
    assert_eq!(
        env.lock().hub["acme/vit"].files["config.json"],
        locked,
        "the lock keeps the first hash"
    );
    // No incoming or partial file is left in the cache.
    let blobs: Vec<String> = std::fs::read_dir(env.root.join("hf/models--acme--vit/blobs"))
        .expect("blobs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        blobs.iter().all(|b| !b.starts_with("incoming")),
        "{blobs:?}"
    );
}

/// Rewrites the uncompressed size of the first entry in the central
/// directory (the size a reader trusts) to `size`.
fn patch_declared_size(zip: &mut [u8], size: u32) {
    let at = zip
        .windows(4)
        .position(|w| w == b"PK\x01\x02")
        .expect("central directory");
    zip[at + 24..at + 28].copy_from_slice(&size.to_le_bytes());
}

/// Serves `zip` as `/ds.zip` and expects the fetch to refuse the entry
/// `entry` with a reason containing `reason`, leaving nothing unpacked.
fn assert_zip_refused(zip: &[u8], entry: &str, reason: &str) {
    let env = Env::new();
    env.server.route("/ds.zip", Route::file(zip));
    env.archive_manifest(Some(zip.len()), Some(&sha256_hex(zip)));
    let err = fetch(&env.options()).expect_err(reason);
    match &err {
        FetchError::UnsafeZipEntry {
            entry: e,
            reason: r,
            ..
        } => {
            assert_eq!(e, entry, "{err}");
            assert!(r.contains(reason), "{err}");
        }
        other => panic!("expected an unsafe entry ({reason}), got {other}"),
    }
    assert!(!env.data("DS").exists());
    assert!(!env.data(".unpack-DS").exists());
}

#[test]
fn a_zip_bomb_is_refused_by_its_declared_size_before_anything_is_written() {
    // 16 MiB of zeros deflate to about 16 kB: a thousand times the archive.
    let zeros = vec![0u8; 16 << 20];
    // First, so that make_zip deflates it.
    let zip = make_zip(&[("DS/bomb.bin", &zeros), ("DS/objectInfo150.txt", b"ok")]);
    assert!(zip.len() < 100_000, "{}", zip.len());
    assert!(archive::unpack_limit(zip.len() as u64) < zeros.len() as u64);
    assert_zip_refused(&zip, "DS/bomb.bin", "decompression bomb");
}

#[test]
fn a_zip_entry_that_inflates_past_its_declared_size_is_cut_off_and_refused() {
    // Deflated first entry (make_zip deflates even positions): 1 MiB of
    // zeros that claims to be 100 bytes.
    let zeros = vec![0u8; 1 << 20];
    let mut zip = make_zip(&[("DS/bomb.bin", &zeros), ("DS/objectInfo150.txt", b"ok")]);
    patch_declared_size(&mut zip, 100);
    assert_zip_refused(&zip, "DS/bomb.bin", "inflates past the 100 bytes");
    // And one that falls short of what it declares.
    let mut zip = make_zip(&[("DS/short.bin", b"abc"), ("DS/objectInfo150.txt", b"ok")]);
    patch_declared_size(&mut zip, 1_000);
    let env = Env::new();
    env.server.route("/ds.zip", Route::file(&zip));
    env.archive_manifest(Some(zip.len()), Some(&sha256_hex(&zip)));
    let err = fetch(&env.options()).expect_err("short entry");
    assert!(
        matches!(
            &err,
            FetchError::UnsafeZipEntry { .. } | FetchError::Zip { .. }
        ),
        "{err}"
    );
    assert!(!env.data("DS").exists());
    assert!(!env.data(".unpack-DS").exists());
}

#[test]
fn zip_entries_with_the_same_path_are_refused() {
    // The same file twice once `.` segments are dropped.
    let zip = make_zip(&[("DS/a.txt", b"one"), ("DS/./a.txt", b"two")]);
    assert_zip_refused(&zip, "DS/./a.txt", "same path");
    // A file that is also a folder of another entry.
    let zip = make_zip(&[("DS/x", b"file"), ("DS/x/y", b"inside")]);
    assert_zip_refused(&zip, "DS/x", "both a file and a folder");
}

/// A lock file of every kind of entry (made-up URLs, sizes and hashes), the
/// seed of the lock fuzzer.
const LOCK_SAMPLE: &str = r#"
# Written by `cargo xtask fetch`.

[url."https://example.org/weights/w.pth"]
size = 346379917
sha256 = "0000000000000000000000000000000000000000000000000000000000000001"

[hub."acme/vit"]
revision = "main"
commit = "c0ffee0000000000000000000000000000000001"

[hub."acme/vit".files."config.json"]
size = 611
sha256 = "1111111111111111111111111111111111111111111111111111111111111111"

[hub."acme/vit".files."model.safetensors"]
size = 346342744
sha256 = "2222222222222222222222222222222222222222222222222222222222222222"
"#;

/// Inputs per format: about a second each in the test profile, and the
/// budget caps a slower build.
const FUZZ_INPUTS: usize = 100_000;

#[test]
fn fuzz_manifest_and_lock_parsers_never_panic() {
    let dir = crate::root().join("data-manifests");
    let read = |name: &str| std::fs::read(dir.join(name)).expect(name);
    let sources = vec![read("ade20k.toml"), read("dinov2.toml"), read("sae.toml")];
    let parse_text =
        |bytes: &[u8], parse: &dyn Fn(&str) -> bool| std::str::from_utf8(bytes).is_ok_and(parse);
    let budget = Duration::from_secs(10);
    let report = sae_steer_testkit::fuzz(
        "fetch manifest TOML",
        &sources,
        14,
        FUZZ_INPUTS,
        budget,
        |b| parse_text(b, &|t| manifest::SourceManifest::parse(t).is_ok()),
    );
    assert!(report.inputs >= 1_000, "{report:?}");
    assert!(report.accepted < report.inputs, "{report:?}");
    let manual = vec![read("manual-features.toml")];
    let report = sae_steer_testkit::fuzz(
        "fetch manual-features TOML",
        &manual,
        14,
        FUZZ_INPUTS,
        budget,
        |b| parse_text(b, &|t| manifest::ManualFeatures::parse(t).is_ok()),
    );
    assert!(report.inputs >= 1_000, "{report:?}");
    let locks = vec![LOCK_SAMPLE.as_bytes().to_vec()];
    lock::Lock::parse(LOCK_SAMPLE).expect("the sample parses");
    let report = sae_steer_testkit::fuzz("fetch lock TOML", &locks, 14, FUZZ_INPUTS, budget, |b| {
        parse_text(b, &|t| lock::Lock::parse(t).is_ok())
    });
    assert!(report.inputs >= 1_000, "{report:?}");
    assert!(report.accepted < report.inputs, "{report:?}");
}

#[test]
fn fuzz_zip_unpacking_never_panics_and_stays_in_its_folder() {
    let seeds = vec![
        make_zip(&[
            ("DS/", b""),
            ("DS/objectInfo150.txt", b"Idx\tName\n1\twall\n"),
            ("DS/images/a.jpg", &[0u8; 300]),
            ("DS/images/b.jpg", b"jpeg b"),
        ]),
        make_zip(&[("DS/x/y/z.txt", &[b'z'; 2_000]), ("DS/x/w.txt", b"w")]),
    ];
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("in.zip");
    let target = tmp.path().join("box").join("out");
    let report = sae_steer_testkit::fuzz(
        "fetch zip unpacking",
        &seeds,
        14,
        // Each input is unpacked to disk with its fsyncs: slower than the
        // text parsers, so fewer inputs and a shorter budget.
        2_000,
        Duration::from_secs(8),
        |bytes| {
            std::fs::write(&archive, bytes).expect("write input");
            let limit = archive::unpack_limit(bytes.len() as u64);
            let ok = archive::unpack_zip(&archive, &target, limit, false).is_ok();
            // Whatever was accepted or half-written stays inside `out/`.
            let outside: Vec<_> = std::fs::read_dir(tmp.path().join("box"))
                .map(|d| {
                    d.map(|e| e.expect("entry").file_name())
                        .filter(|n| n != "out")
                        .collect()
                })
                .unwrap_or_default();
            assert!(outside.is_empty(), "{outside:?}");
            if target.exists() {
                std::fs::remove_dir_all(&target).expect("clean");
            }
            ok
        },
    );
    assert!(report.inputs >= 500, "{report:?}");
    assert!(report.accepted < report.inputs, "{report:?}");
}

#[test]
fn locked_refuses_first_use_and_accepts_what_the_lock_pins() {
    let env = Env::new();
    env.server.route("/w.bin", Route::file(b"payload"));
    url_manifest(&env, None, None);
    let mut locked = env.options();
    locked.locked = true;
    let err = fetch(&locked).expect_err("nothing pins it");
    assert!(
        matches!(&err, FetchError::Unpinned { what, lock }
            if what == &env.server.url("/w.bin") && lock.ends_with("lock.toml")),
        "{err}"
    );
    assert!(env.server.requests().is_empty(), "requested anyway");
    // Recorded by a normal fetch, then accepted under --locked.
    fetch(&env.options()).expect("first use");
    std::fs::remove_file(env.data("w/w.bin")).expect("rm");
    assert_eq!(
        outcomes(&fetch(&locked).expect("pinned by the lock")),
        [Outcome::Downloaded]
    );
    // Hub files too: nothing pins config.json before the first fetch.
    env.manifest("vit.toml", HUB_MANIFEST);
    serve_hub(
        &env.server,
        "c0ffee0000000000000000000000000000000005",
        b"{}",
        b"w",
    );
    locked.only = vec!["vit".into()];
    let err = fetch(&locked).expect_err("hub file unpinned");
    assert!(
        matches!(&err, FetchError::Unpinned { what, .. } if what == "acme/vit/config.json"),
        "{err}"
    );
}

#[test]
fn an_https_download_is_served_over_https_and_redirects_within_https() {
    // The control for the downgrade test below: the https wiring works.
    let env = Env::new();
    let tls = Server::start_tls();
    let body = b"over tls".to_vec();
    tls.route("/w.bin", Route::redirect("/cdn/w.bin"));
    tls.route("/cdn/w.bin", Route::file(&body));
    env.manifest(
        "w.toml",
        &format!(
            "name = \"w\"\ndescription = \"t\"\n[[url]]\nurl = \"{}\"\ndest = \"w/w.bin\"\n",
            tls.url("/w.bin")
        ),
    );
    assert!(tls.base.starts_with("https://127.0.0.1:"));
    assert_eq!(
        outcomes(&fetch(&env.options()).expect("https fetch")),
        [Outcome::Downloaded]
    );
    assert_eq!(std::fs::read(env.data("w/w.bin")).expect("read"), body);
    assert_eq!(tls.requests().len(), 2);
}

#[test]
fn an_https_to_http_redirect_is_refused_even_for_a_pinned_file_on_loopback() {
    let env = Env::new();
    let tls = Server::start_tls();
    let body = b"clear text".to_vec();
    // The plain server would serve the right bytes: the hop is refused for
    // what it is (a downgrade), not for what it would deliver.
    env.server.route("/w.bin", Route::file(&body));
    tls.route("/w.bin", Route::redirect(&env.server.url("/w.bin")));
    env.manifest(
        "w.toml",
        &format!(
            "name = \"w\"\ndescription = \"t\"\n[[url]]\nurl = \"{}\"\ndest = \"w/w.bin\"\nsize = {}\nsha256 = \"{}\"\n",
            tls.url("/w.bin"),
            body.len(),
            sha256_hex(&body)
        ),
    );
    let err = fetch(&env.options()).expect_err("downgrade");
    match &err {
        FetchError::RefusedUrl { url, reason } => {
            assert!(url.starts_with(&env.server.url("/w.bin")), "{url}");
            assert!(url.contains(&tls.url("/w.bin")), "{url}");
            assert!(
                reason.contains("never continues over plain http"),
                "{reason}"
            );
        }
        other => panic!("expected a refused downgrade, got {other}"),
    }
    assert_eq!(tls.requests().len(), 1);
    assert!(
        env.server.requests().is_empty(),
        "the http hop was requested"
    );
    assert!(!env.data("w/w.bin").exists());
    // A hub endpoint on https is held to the same rule.
    let mut options = env.options();
    options.hf_endpoint = tls.base.clone();
    options.only = vec!["vit".into()];
    env.manifest("vit.toml", HUB_MANIFEST);
    tls.route(
        "/acme/vit/resolve/main/config.json",
        Route::redirect(&env.server.url("/config.json")),
    );
    let err = fetch(&options).expect_err("hub downgrade");
    assert!(
        matches!(&err, FetchError::RefusedUrl { reason, .. } if reason.contains("never continues over plain http")),
        "{err}"
    );
    assert!(env.server.requests().is_empty());
}

/// The files of `tests/fixtures/hostile/fetch/<sub>` (made by
/// `scripts/make_hostile_archives.py`), sorted.
fn hostile_cases(sub: &str) -> Vec<PathBuf> {
    let dir = sae_steer_testkit::hostile(&format!("fetch/{sub}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: empty", dir.display());
    files
}

#[test]
fn the_hostile_fetch_corpus_is_refused_with_errors_naming_the_file() {
    let mut cases = 0;
    for zip in hostile_cases("zip") {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("box").join("out");
        let size = std::fs::metadata(&zip).expect("size").len();
        let err = archive::unpack_zip(&zip, &target, archive::unpack_limit(size), false)
            .expect_err(&zip.display().to_string());
        let message = err.to_string();
        assert!(
            message.contains(&zip.display().to_string()),
            "{}: {message}",
            zip.display()
        );
        let outside: Vec<_> = std::fs::read_dir(tmp.path().join("box"))
            .map(|d| d.map(|e| e.expect("entry").file_name()).collect())
            .unwrap_or_default();
        assert!(
            outside.iter().all(|n| n == "out"),
            "{}: {outside:?}",
            zip.display()
        );
        assert!(!Path::new("/tmp/sae-steer-evil.txt").exists());
        println!("{}: {message}", zip.file_name().expect("name").display());
        cases += 1;
    }
    for manifest in hostile_cases("manifest") {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::copy(&manifest, tmp.path().join("x.toml")).expect("copy");
        let err = Manifests::load(tmp.path()).expect_err(&manifest.display().to_string());
        let message = err.to_string();
        assert!(
            message.contains("x.toml"),
            "{}: {message}",
            manifest.display()
        );
        println!(
            "{}: {message}",
            manifest.file_name().expect("name").display()
        );
        cases += 1;
    }
    for lock in hostile_cases("lock") {
        let err = lock::LockFile::load(&lock).expect_err(&lock.display().to_string());
        let message = err.to_string();
        assert!(
            message.contains(&lock.display().to_string()),
            "{}: {message}",
            lock.display()
        );
        println!("{}: {message}", lock.file_name().expect("name").display());
        cases += 1;
    }
    println!("hostile fetch corpus: {cases} cases refused");
    assert!(cases >= 30, "{cases}");
}

//! The hostile corpus (`tests/fixtures/hostile/{labels,cache}`, made by
//! `scripts/make_hostile_images.py`) and bounded fuzzing of the label reader,
//! the manifest parser and the shard reader: every bad input is an error
//! naming the file and the problem, never a panic or a huge allocation.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sae_steer_data::cache::{ActivationCache, CacheError, CacheManifest};
use sae_steer_data::{DataError, read_label_map};
use sae_steer_testkit::{fuzz, fuzz_png, hostile};

fn label(name: &str) -> PathBuf {
    hostile(&format!("labels/{name}"))
}

fn label_value_error(name: &str) -> (u32, u32, u32, String) {
    match read_label_map(&label(name)) {
        Err(e @ DataError::LabelValue { .. }) => {
            let msg = e.to_string();
            let DataError::LabelValue { value, x, y, path } = e else {
                unreachable!()
            };
            assert_eq!(path, label(name));
            (value, x, y, msg)
        }
        other => panic!("{name}: expected a label value error, got {other:?}"),
    }
}

#[test]
fn label_values_above_150_name_file_value_and_pixel() {
    for (name, expected) in [
        ("value_255.png", (255, 7, 5)),
        ("value_151.png", (151, 31, 23)),
        // 16-bit: 256 must not wrap to 0.
        ("gray16_value_256.png", (256, 3, 2)),
        // A palette image is read by index.
        ("palette_index_200.png", (200, 1, 1)),
    ] {
        let (value, x, y, msg) = label_value_error(name);
        assert_eq!((value, x, y), expected, "{name}");
        assert!(
            msg.contains(name) && msg.contains(&value.to_string()) && msg.contains("0..=150"),
            "{msg}"
        );
    }
}

#[test]
fn label_format_errors_name_the_file() {
    for (name, expected) in [
        ("rgb.png", "Rgb"),
        ("truncated.png", "truncated PNG"),
        // 400 MP declared in 48 KB: refused from the header.
        ("bomb_20000x20000.png", "at most 16384"),
    ] {
        let start = Instant::now();
        match read_label_map(&label(name)) {
            Err(e @ DataError::LabelFormat { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(name) && msg.contains(expected), "{msg}");
            }
            other => panic!("{name}: expected a label format error, got {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(1), "{name}");
    }
}

#[test]
fn valid_labels_read_the_same_at_8_and_16_bits() {
    let eight = read_label_map(&label("valid.png")).unwrap();
    assert_eq!((eight.width, eight.height), (32, 24));
    assert_eq!(eight.data[8 * 32 + 8], 5); // (x / 8) + (y / 8) * 4
    // A 16-bit gray label map is read by value, as PIL and numpy read it.
    assert_eq!(read_label_map(&label("gray16.png")).unwrap(), eight);
}

fn cache_dir(name: &str) -> PathBuf {
    hostile(&format!("cache/{name}"))
}

#[test]
fn the_valid_fixture_cache_opens() {
    let cache = ActivationCache::open(cache_dir("valid")).unwrap();
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.patch_labels(1).unwrap(), [1, 2, 3, 4]);
    assert_eq!(cache.image_index(2), 2);
    let mut x = Vec::new();
    cache.read_images("layer1", &[2], &mut x).unwrap();
    assert_eq!(x.len(), 40);
    assert_eq!(x[0], 80.0 / 7.0);
}

#[test]
fn hostile_manifests_are_clear_errors() {
    let cases = [
        ("zero_patch_size", "patch_size must be positive"),
        ("zero_crop", "crop 0"),
        ("zero_dim", "tokens of width 0"),
        ("zero_shard_size", "shard size 0"),
        (
            "shard_outside",
            "`../valid/shard-00000.safetensors`, expected `shard-00000",
        ),
        ("shard_absolute", "`/etc/passwd`, expected `shard-00000"),
        ("rows_overflow", "18446744073709551615 rows"),
        ("size_overflow", "overflow"),
        ("too_many_images", "1099511627776 images"),
        ("not_json", "EOF"),
    ];
    for (name, expected) in cases {
        let err = ActivationCache::open(cache_dir(name)).err().unwrap();
        assert!(matches!(err, CacheError::Manifest { .. }), "{name}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{name}/manifest.json")) && msg.contains(expected),
            "{name}: {msg}"
        );
    }
}

#[test]
fn hostile_shards_are_clear_errors_naming_the_shard() {
    let cases = [
        // The manifest says 2 rows, the file's header 3.
        (
            "rows_mismatch",
            "is F32 [3, 5, 8], the manifest says F32 [2, 5, 8]",
        ),
        ("label_255", "patch label 255 in row 1, position 1"),
        ("image_index_out_of_range", "row 2 is image 7"),
        ("truncated_shard", "manifest records"),
    ];
    for (name, expected) in cases {
        let err = ActivationCache::open(cache_dir(name)).err().unwrap();
        assert!(matches!(err, CacheError::Shard { .. }), "{name}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{name}/shard-00000.safetensors")) && msg.contains(expected),
            "{name}: {msg}"
        );
    }
}

/// A copy of a fixture cache folder in a temporary directory.
fn copy_cache(name: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(cache_dir(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The label PNG reader on mutated annotations (8-bit gray, 16-bit gray,
/// palette).
#[test]
fn fuzz_label_png() {
    let seeds: Vec<Vec<u8>> = ["valid.png", "gray16.png", "palette_index_200.png"]
        .iter()
        .map(|n| std::fs::read(label(n)).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("label.png");
    let report = fuzz_png(
        "label png",
        &seeds,
        150,
        20_000,
        Duration::from_secs(15),
        |input| {
            std::fs::write(&path, input).unwrap();
            match read_label_map(&path) {
                Ok(map) => {
                    assert_eq!(map.data.len(), (map.width * map.height) as usize);
                    assert!(map.data.iter().all(|&v| v <= 150));
                    true
                }
                Err(e) => {
                    assert!(e.to_string().contains("label.png"), "{e}");
                    false
                }
            }
        },
    );
    assert!(report.inputs >= 500, "{report:?}");
}

/// The manifest parser on mutated JSON (digits, lengths, truncation).
#[test]
fn fuzz_manifest_json() {
    let valid = std::fs::read(cache_dir("valid").join("manifest.json")).unwrap();
    let report = fuzz(
        "cache manifest",
        &[valid],
        151,
        100_000,
        Duration::from_secs(15),
        |b| {
            let Ok(text) = std::str::from_utf8(b) else {
                return false;
            };
            match CacheManifest::parse(text) {
                // Whatever parses is self-consistent: these cannot panic.
                Ok(m) => {
                    let _ = (m.rows(), m.patches_per_image());
                    m.taps.iter().all(|t| t.row_bytes() > 0)
                }
                Err(_) => false,
            }
        },
    );
    assert!(report.inputs >= 1000, "{report:?}");
}

/// The shard reader on mutated safetensors files, read in full when they open.
#[test]
fn fuzz_cache_shard() {
    let dir = tempfile::tempdir().unwrap();
    copy_cache("valid", dir.path());
    // No recorded size, so a shard of another length gets past the size
    // check to the header and tensor checks.
    let manifest_path = dir.path().join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).unwrap();
    let mut manifest = CacheManifest::parse(&text).unwrap();
    manifest.shards[0].bytes = 0;
    manifest.write(dir.path()).unwrap();
    let shard = dir.path().join("shard-00000.safetensors");
    let seed = std::fs::read(&shard).unwrap();
    let report = fuzz(
        "cache shard",
        &[seed],
        152,
        20_000,
        Duration::from_secs(15),
        |b| {
            std::fs::write(&shard, b).unwrap();
            match ActivationCache::open(dir.path()) {
                Ok(cache) => {
                    let mut x = Vec::new();
                    let rows: Vec<usize> = (0..cache.len()).collect();
                    cache.read_images("layer1", &rows, &mut x).unwrap();
                    for r in rows {
                        assert!(cache.patch_labels(r).unwrap().iter().all(|&v| v <= 150));
                        assert!(cache.image_index(r) < 3);
                    }
                    true
                }
                Err(e) => {
                    assert!(e.to_string().contains("shard-00000.safetensors"), "{e}");
                    false
                }
            }
        },
    );
    assert!(report.inputs >= 500, "{report:?}");
}

//! The synthetic dataset: real layout, readable by the dataset code,
//! deterministic, idempotent, and never written over a foreign folder.

use std::collections::BTreeMap;
use std::path::Path;

use sae_steer_ade20k::synth::{SYNTH_MARKER, SynthOptions, synthesize};
use sae_steer_ade20k::{Ade20k, Ade20kError, NUM_CLASSES, OBJECT_INFO_150, Split};
use sae_steer_data::{load_sample, read_label_map};
use sae_steer_files::NoProgress;
use sae_steer_vit::Preprocess;

fn small(train: usize, val: usize, seed: u64) -> SynthOptions {
    SynthOptions {
        train,
        val,
        seed,
        min_side: 40,
        max_side: 300,
        ..SynthOptions::default()
    }
}

/// Every file under `root`, relative path -> bytes.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn writes_the_real_layout_that_the_dataset_code_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth");
    let opts = small(12, 5, 7);
    let report = synthesize(&out, &opts, &NoProgress).unwrap();
    assert_eq!((report.train, report.val), (12, 5));
    assert!(!report.up_to_date);
    assert_eq!(report.files_written, 2 * 17 + 3);

    for f in [
        "images/training/ADE_train_00000001.jpg",
        "images/training/ADE_train_00000012.jpg",
        "annotations/training/ADE_train_00000012.png",
        "images/validation/ADE_val_00000005.jpg",
        "annotations/validation/ADE_val_00000001.png",
        "sceneCategories.txt",
        SYNTH_MARKER,
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("objectInfo150.txt")).unwrap(),
        OBJECT_INFO_150
    );
    let scenes = std::fs::read_to_string(out.join("sceneCategories.txt")).unwrap();
    assert_eq!(scenes.lines().count(), 17);
    assert!(scenes.starts_with("ADE_train_00000001 "), "{scenes}");

    let ade = Ade20k::open(&out).unwrap();
    let train = ade.split(Split::Training).unwrap();
    let val = ade.split(Split::Validation).unwrap();
    assert_eq!((train.len(), val.len()), (12, 5));

    let pre = Preprocess::default();
    let mut sizes = Vec::new();
    let mut pixels = vec![0u64; NUM_CLASSES + 1];
    for item in train.items.iter().chain(&val.items) {
        let (w, h) = image::image_dimensions(&item.image).unwrap();
        let map = read_label_map(item.label.as_ref().unwrap()).unwrap();
        assert_eq!((map.width, map.height), (w, h));
        for &l in &map.data {
            pixels[l as usize] += 1;
        }
        let s = load_sample(item, &pre).unwrap();
        assert_eq!(s.labels.unwrap().len(), 224 * 224);
        sizes.push((w, h));
    }
    assert_eq!(pixels, report.class_pixels, "report counts every pixel");
    assert!(pixels[0] > 0, "some unlabelled pixels");
    let classes = pixels[1..].iter().filter(|&&n| n > 0).count();
    assert!(classes >= 20, "only {classes} classes in 17 scenes");
    assert!(sizes.iter().any(|&(w, h)| w.max(h) < 224), "{sizes:?}");
    assert!(sizes.iter().any(|&(w, h)| w >= 2 * h), "{sizes:?}");
    assert!(sizes.iter().any(|&(w, h)| h > w), "{sizes:?}");
    let distinct: std::collections::HashSet<_> = sizes.iter().collect();
    assert!(distinct.len() >= 10, "{sizes:?}");
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let c = dir.path().join("c");
    synthesize(&a, &small(6, 3, 42), &NoProgress).unwrap();
    synthesize(&b, &small(6, 3, 42), &NoProgress).unwrap();
    synthesize(&c, &small(6, 3, 43), &NoProgress).unwrap();
    let (sa, sb, sc) = (snapshot(&a), snapshot(&b), snapshot(&c));
    assert_eq!(sa.len(), 2 * 9 + 3);
    assert!(sa == sb, "same seed gave different files");
    let img = "images/training/ADE_train_00000001.jpg";
    assert_ne!(sa[img], sc[img]);
    assert_ne!(sa[SYNTH_MARKER], sc[SYNTH_MARKER]);
}

#[test]
fn rerun_is_a_no_op_and_shrinking_removes_stale_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let first = synthesize(&out, &small(8, 4, 1), &NoProgress).unwrap();
    let before = snapshot(&out);
    let again = synthesize(&out, &small(8, 4, 1), &NoProgress).unwrap();
    assert!(again.up_to_date);
    assert_eq!(again.files_written, 0);
    assert_eq!(again.class_pixels, first.class_pixels);
    assert!(snapshot(&out) == before);

    // A deleted file makes the dataset incomplete: rewritten, same bytes.
    std::fs::remove_file(out.join("annotations/validation/ADE_val_00000002.png")).unwrap();
    let repaired = synthesize(&out, &small(8, 4, 1), &NoProgress).unwrap();
    assert!(!repaired.up_to_date);
    assert!(snapshot(&out) == before);

    // Fewer images: the extra ones go, the rest is what a fresh run writes.
    let shrunk = synthesize(&out, &small(5, 2, 1), &NoProgress).unwrap();
    assert_eq!(shrunk.files_removed, 2 * (3 + 2));
    let ade = Ade20k::open(&out).unwrap();
    assert_eq!(ade.split(Split::Training).unwrap().len(), 5);
    assert_eq!(ade.split(Split::Validation).unwrap().len(), 2);
    let fresh = dir.path().join("fresh");
    synthesize(&fresh, &small(5, 2, 1), &NoProgress).unwrap();
    assert!(snapshot(&out) == snapshot(&fresh));
}

#[test]
fn refuses_to_write_over_a_folder_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("ADEChallengeData2016");
    std::fs::create_dir_all(real.join("images")).unwrap();
    std::fs::write(real.join("objectInfo150.txt"), OBJECT_INFO_150).unwrap();
    let err = synthesize(&real, &small(2, 1, 0), &NoProgress).unwrap_err();
    assert!(matches!(err, Ade20kError::Synth { .. }), "{err:?}");
    assert!(err.to_string().contains(SYNTH_MARKER), "{err}");
    assert!(!real.join(SYNTH_MARKER).exists());

    // An empty folder is fine.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    synthesize(&empty, &small(1, 1, 0), &NoProgress).unwrap();
}

#[test]
fn bad_options_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    for (opts, needle) in [
        (
            SynthOptions {
                classes: vec![3, 151],
                ..small(1, 1, 0)
            },
            "151",
        ),
        (
            SynthOptions {
                min_side: 300,
                max_side: 200,
                ..small(1, 1, 0)
            },
            "max_side",
        ),
        (
            SynthOptions {
                jpeg_quality: 0,
                ..small(1, 1, 0)
            },
            "quality",
        ),
    ] {
        let err = synthesize(&out, &opts, &NoProgress).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert!(!out.exists());
}

#[test]
fn restricted_classes_are_the_only_labels() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("few");
    let opts = SynthOptions {
        classes: vec![8, 21, 23, 66],
        ..small(6, 2, 5)
    };
    let report = synthesize(&out, &opts, &NoProgress).unwrap();
    for (label, &n) in report.class_pixels.iter().enumerate() {
        if ![0, 8, 21, 23, 66].contains(&label) {
            assert_eq!(n, 0, "label {label}");
        }
    }
    assert!([8, 21, 23, 66].iter().all(|&c| report.class_pixels[c] > 0));
}

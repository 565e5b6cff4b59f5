//! ADE20K layout and class table: ordering and the errors a wrong path or an
//! incomplete download produce.

use std::path::Path;

use image::{GrayImage, Luma, Rgb, RgbImage};
use sae_steer_ade20k::{Ade20k, Ade20kError, ClassNames, NUM_CLASSES, OBJECT_INFO_150, Split};
use sae_steer_data::ImageList;

fn touch_image(path: &Path, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(w, h, Rgb([1, 2, 3]))
        .save(path)
        .unwrap();
}

fn touch_label(path: &Path, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    GrayImage::from_pixel(w, h, Luma([1])).save(path).unwrap();
}

/// A miniature ADE20K with the given training and validation stems.
fn fake_ade(root: &Path, train: &[&str], val: &[&str]) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("objectInfo150.txt"), OBJECT_INFO_150).unwrap();
    for (split, stems) in [("training", train), ("validation", val)] {
        std::fs::create_dir_all(root.join("images").join(split)).unwrap();
        std::fs::create_dir_all(root.join("annotations").join(split)).unwrap();
        for stem in stems {
            touch_image(&root.join(format!("images/{split}/{stem}.jpg")), 8, 6);
            touch_label(&root.join(format!("annotations/{split}/{stem}.png")), 8, 6);
        }
    }
}

fn names(items: &ImageList) -> Vec<String> {
    items
        .items
        .iter()
        .map(|i| i.image.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn splits_are_sorted_by_file_name_with_their_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ADEChallengeData2016");
    fake_ade(
        &root,
        &[
            "ADE_train_00000002",
            "ADE_train_00000010",
            "ADE_train_00000001",
        ],
        &["ADE_val_00000002", "ADE_val_00000001"],
    );
    // Not images, hidden leftovers: ignored.
    std::fs::write(root.join("images/validation/notes.txt"), "x").unwrap();
    std::fs::write(
        root.join("images/validation/.ADE_val_00000003.jpg.tmp-1"),
        "x",
    )
    .unwrap();

    let ade = Ade20k::open(&root).unwrap();
    assert_eq!(ade.root(), root);
    assert_eq!(ade.classes().len(), NUM_CLASSES);
    let train = ade.split(Split::Training).unwrap();
    assert_eq!(
        names(&train),
        [
            "ADE_train_00000001.jpg",
            "ADE_train_00000002.jpg",
            "ADE_train_00000010.jpg"
        ]
    );
    let val = ade.split(Split::Validation).unwrap();
    assert_eq!(
        names(&val),
        ["ADE_val_00000001.jpg", "ADE_val_00000002.jpg"]
    );
    assert_eq!(
        val.items[0].label.as_deref(),
        Some(
            root.join("annotations/validation/ADE_val_00000001.png")
                .as_path()
        )
    );
    assert_eq!(val.root, root);

    // The parent of ADEChallengeData2016 works too.
    let from_parent = Ade20k::open(dir.path()).unwrap();
    assert_eq!(from_parent.root(), root);
    assert_eq!(from_parent.split(Split::Validation).unwrap(), val);

    let first = val.clone().take(1);
    assert_eq!(first.len(), 1);
    assert_eq!(first.items[0], val.items[0]);
    assert_eq!(val.clone().take(99), val);
}

#[test]
fn fingerprint_depends_on_names_and_order_not_location() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let stems = ["ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003"];
    fake_ade(a.path(), &[], &stems);
    fake_ade(b.path(), &[], &stems);
    let la = Ade20k::open(a.path())
        .unwrap()
        .split(Split::Validation)
        .unwrap();
    let lb = Ade20k::open(b.path())
        .unwrap()
        .split(Split::Validation)
        .unwrap();
    let fp = la.fingerprint();
    assert_eq!(fp.len(), 64);
    assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(fp, lb.fingerprint(), "same names in another folder");

    let mut reordered = la.clone();
    reordered.items.swap(0, 1);
    assert_ne!(reordered.fingerprint(), fp, "order");
    assert_ne!(la.clone().take(2).fingerprint(), fp, "fewer images");

    let c = tempfile::tempdir().unwrap();
    fake_ade(
        c.path(),
        &[],
        &["ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000004"],
    );
    let lc = Ade20k::open(c.path())
        .unwrap()
        .split(Split::Validation)
        .unwrap();
    assert_ne!(lc.fingerprint(), fp, "a renamed image");

    // The training split of the same names differs (the path includes the split).
    let d = tempfile::tempdir().unwrap();
    fake_ade(d.path(), &stems, &["ADE_val_00000001"]);
    let ld = Ade20k::open(d.path())
        .unwrap()
        .split(Split::Training)
        .unwrap();
    assert_ne!(ld.fingerprint(), fp);
}

#[test]
fn missing_root_and_layout_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = Ade20k::open(dir.path().join("nowhere")).unwrap_err();
    assert!(matches!(err, Ade20kError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("nowhere"), "{err}");

    // No objectInfo150.txt.
    let root = dir.path().join("ade");
    fake_ade(&root, &["ADE_train_00000001"], &["ADE_val_00000001"]);
    std::fs::remove_file(root.join("objectInfo150.txt")).unwrap();
    let err = Ade20k::open(&root).unwrap_err();
    assert!(err.to_string().contains("objectInfo150.txt"), "{err}");

    // No annotations/ at all.
    std::fs::write(root.join("objectInfo150.txt"), OBJECT_INFO_150).unwrap();
    std::fs::rename(root.join("annotations"), root.join("annotations_moved")).unwrap();
    let err = Ade20k::open(&root).unwrap_err();
    assert!(err.to_string().contains("annotations"), "{err}");
    std::fs::rename(root.join("annotations_moved"), root.join("annotations")).unwrap();

    // A split folder missing.
    std::fs::remove_dir_all(root.join("images/validation")).unwrap();
    let ade = Ade20k::open(&root).unwrap();
    assert!(ade.split(Split::Training).is_ok());
    let err = ade.split(Split::Validation).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("validation") && msg.contains("images"),
        "{msg}"
    );

    // An empty split.
    std::fs::create_dir_all(root.join("images/validation")).unwrap();
    let err = ade.split(Split::Validation).unwrap_err();
    assert!(matches!(err, Ade20kError::NoImages { .. }), "{err:?}");

    // A class table that is not 150 rows.
    let short: String = OBJECT_INFO_150
        .lines()
        .take(11)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(root.join("objectInfo150.txt"), short).unwrap();
    let err = Ade20k::open(&root).unwrap_err();
    assert!(err.to_string().contains("150"), "{err}");
}

#[test]
fn image_without_annotation_is_named() {
    let dir = tempfile::tempdir().unwrap();
    fake_ade(dir.path(), &[], &["ADE_val_00000001", "ADE_val_00000002"]);
    std::fs::remove_file(
        dir.path()
            .join("annotations/validation/ADE_val_00000002.png"),
    )
    .unwrap();
    let err = Ade20k::open(dir.path())
        .unwrap()
        .split(Split::Validation)
        .unwrap_err();
    match &err {
        Ade20kError::MissingAnnotation { image, expected } => {
            assert!(image.ends_with("images/validation/ADE_val_00000002.jpg"));
            assert!(expected.ends_with("annotations/validation/ADE_val_00000002.png"));
        }
        other => panic!("expected MissingAnnotation, got {other:?}"),
    }
    assert!(err.to_string().contains("ADE_val_00000002.jpg"), "{err}");
}

#[test]
fn class_table_is_the_real_one() {
    let c = ClassNames::ade20k_default();
    assert_eq!(c.len(), 150);
    assert_eq!(c.name(0), "other");
    assert_eq!(c.name(1), "wall");
    // The four classes of the reference demo (reference facts section 8).
    assert_eq!(c.name(8), "bed"); // "bed " in the file
    assert_eq!(c.name(21), "car");
    assert_eq!(c.name(23), "painting");
    assert_eq!(c.name(66), "toilet");
    assert_eq!(c.name(150), "flag");
    assert_eq!(c.name(151), "unknown");
    assert_eq!(c.full_name(9), "windowpane, window");
    assert_eq!(c.full_name(21), "car, auto, automobile, machine, motorcar");
    let wall = c.info(1).unwrap();
    assert_eq!(
        (wall.ratio, wall.train_images, wall.val_images),
        (0.1576, 11664, 1172)
    );
    let water = c.info(22).unwrap(); // "22 \t" in the file
    assert_eq!(
        (water.name.as_str(), water.train_images, water.val_images),
        ("water", 709, 75)
    );
    let val_total: u32 = c.classes().iter().map(|i| i.val_images).sum();
    assert_eq!(val_total, 17_651, "sum of the Val column of the real file");
    assert_eq!(c.find("automobile"), Some(21));
    assert_eq!(c.find("Car"), Some(21));
    assert_eq!(c.find("screen"), Some(131));
    assert_eq!(c.find("66"), Some(66));
    assert_eq!(c.find("other"), Some(0));
    assert_eq!(c.find("151"), None);
    assert_eq!(c.find("unicorn"), None);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objectInfo150.txt");
    std::fs::write(&path, OBJECT_INFO_150).unwrap();
    assert_eq!(ClassNames::read(&path).unwrap(), c);
}

#[test]
fn malformed_class_table_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objectInfo150.txt");
    std::fs::write(
        &path,
        "Idx\tRatio\tTrain\tVal\tName\n1\t0.1\t1\t1\twall\n3\t0.1\t1\t1\tsky\n",
    )
    .unwrap();
    let msg = ClassNames::read(&path).unwrap_err().to_string();
    assert!(
        msg.contains("objectInfo150.txt") && msg.contains("line 3"),
        "{msg}"
    );
    std::fs::write(&path, "1 0.1 1 1 wall\n").unwrap();
    let msg = ClassNames::read(&path).unwrap_err().to_string();
    assert!(msg.contains("tab-separated"), "{msg}");
}

#[test]
fn split_names_parse() {
    for (s, split) in [
        ("train", Split::Training),
        ("training", Split::Training),
        ("val", Split::Validation),
        ("Validation", Split::Validation),
    ] {
        assert_eq!(s.parse::<Split>().unwrap(), split);
    }
    assert_eq!(Split::Validation.to_string(), "validation");
    let err = "test".parse::<Split>().unwrap_err();
    assert!(err.to_string().contains("`test`"), "{err}");
}

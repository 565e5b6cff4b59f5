//! Image folders: ordering, what is skipped, and the errors of an empty or
//! missing folder.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use sae_steer_data::{DataError, ImageList, image_folder};

fn touch_image(path: &Path, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(w, h, Rgb([1, 2, 3]))
        .save(path)
        .unwrap();
}

fn rel(list: &ImageList) -> Vec<PathBuf> {
    list.items
        .iter()
        .map(|i| {
            assert!(i.label.is_none());
            i.image.strip_prefix(&list.root).unwrap().to_path_buf()
        })
        .collect()
}

#[test]
fn image_folder_reads_class_dirs_and_flat_folders() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("imagenet");
    for p in ["n02/b.JPEG", "n01/z.jpg", "n01/a.png", "n10/deep/c.jpg"] {
        touch_image(&tree.join(p), 4, 4);
    }
    std::fs::write(tree.join("n01/readme.txt"), "x").unwrap();
    std::fs::write(tree.join("n01/.hidden.jpg"), "x").unwrap();
    let list = image_folder(&tree).unwrap();
    let expected: Vec<PathBuf> = ["n01/a.png", "n01/z.jpg", "n02/b.JPEG", "n10/deep/c.jpg"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(rel(&list), expected);

    let flat = dir.path().join("flat");
    for p in ["img10.jpg", "img02.jpg", "img1.webp"] {
        let path = flat.join(p);
        std::fs::create_dir_all(&flat).unwrap();
        std::fs::write(path, b"not decoded by listing").unwrap();
    }
    let list = image_folder(&flat).unwrap();
    let expected: Vec<PathBuf> = ["img02.jpg", "img1.webp", "img10.jpg"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(rel(&list), expected);

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = image_folder(&empty).unwrap_err();
    assert!(matches!(err, DataError::NoImages { .. }), "{err:?}");
    let err = image_folder(dir.path().join("absent")).unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
}

#[test]
fn fingerprints_hash_relative_paths_in_order() {
    let list = |root: &str, names: &[&str]| ImageList {
        root: PathBuf::from(root),
        items: names
            .iter()
            .map(|n| sae_steer_data::ImageItem {
                image: Path::new(root).join(n),
                label: None,
            })
            .collect(),
    };
    let fp = list("/data/a", &["x/1.jpg", "x/2.jpg"]).fingerprint();
    assert_eq!(fp.len(), 64);
    assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        fp,
        list("/elsewhere", &["x/1.jpg", "x/2.jpg"]).fingerprint(),
        "the root is not hashed"
    );
    assert_ne!(fp, list("/data/a", &["x/2.jpg", "x/1.jpg"]).fingerprint());
    assert_ne!(fp, list("/data/a", &["x/1.jpg"]).fingerprint());
    assert_eq!(
        list("/data/a", &["x/1.jpg", "x/2.jpg"]).take(1),
        list("/data/a", &["x/1.jpg"])
    );
}

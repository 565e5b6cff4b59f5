//! The bounded image decoder on the hostile corpus
//! (`tests/fixtures/hostile/images`, made by `scripts/make_hostile_images.py`):
//! size attacks are refused from the header, truncated files are refused,
//! colour oddities decode to the same RGB as the plain `image` crate does.

use std::time::{Duration, Instant};

use image::DynamicImage;
use sae_steer_testkit::{fixture, fuzz, fuzz_png, hostile};
use sae_steer_vit::{DecodeErrorKind, ImageLimits, VitError, decode_image, open_image};

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(hostile(&format!("images/{name}"))).unwrap()
}

fn refused(name: &str) -> (DecodeErrorKind, String) {
    let e = decode_image(&bytes(name), &ImageLimits::default())
        .err()
        .unwrap_or_else(|| panic!("{name} must be refused"));
    (e.kind, e.message)
}

/// The same image through the `image` crate without our checks (the path
/// `open_image` took before).
fn plain(data: &[u8]) -> DynamicImage {
    image::load_from_memory(data).unwrap()
}

#[test]
fn size_attacks_are_refused_from_the_header() {
    let cases = [
        // The 4,937-byte PNG that aborted the server in the resize.
        ("strip_40000000x1.png", "40000000x1"),
        ("wide_1000000x40.png", "1000000x40"),
        ("aspect_16000x100.png", "times the shorter"),
        ("bomb_20000x20000.png", "at most 16384"),
        ("bomb_12000x12000.png", "144000000 pixels"),
        ("huge_65000x65000.jpg", "65000x65000"),
        ("aspect_60000x8.jpg", "60000x8"),
    ];
    for (name, expected) in cases {
        let start = Instant::now();
        let (kind, message) = refused(name);
        assert_eq!(kind, DecodeErrorKind::TooLarge, "{name}: {message}");
        assert!(message.contains(expected), "{name}: {message}");
        // Refused before any pixel is decoded (a 144 MP decode takes seconds).
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{name} was decoded"
        );
    }
    // The strip is refused by its aspect ratio even where sides are allowed:
    // its pixel count (40 M) passes the default pixel bound.
    let wide = ImageLimits {
        max_side: u32::MAX,
        ..ImageLimits::default()
    };
    let e = decode_image(&bytes("strip_40000000x1.png"), &wide).unwrap_err();
    assert!(e.message.contains("times the shorter"), "{e}");
}

#[test]
fn each_limit_is_enforced() {
    let photo = std::fs::read(fixture("vit/photo.jpg")).unwrap(); // 451x300
    let ok = decode_image(&photo, &ImageLimits::default()).unwrap();
    assert_eq!((ok.width(), ok.height()), (451, 300));
    let with = |limits: ImageLimits| decode_image(&photo, &limits).unwrap_err();
    let d = ImageLimits::default();
    let e = with(ImageLimits {
        max_bytes: 1000,
        ..d
    });
    assert_eq!(e.kind, DecodeErrorKind::TooLarge);
    assert!(e.message.contains("38702 bytes"), "{e}");
    let e = with(ImageLimits { max_side: 450, ..d });
    assert!(
        e.message.contains("451x300") && e.message.contains("at most 450"),
        "{e}"
    );
    let e = with(ImageLimits { max_aspect: 1, ..d });
    assert!(e.message.contains("1 times the shorter"), "{e}");
    let e = with(ImageLimits {
        max_pixels: 451 * 300 - 1,
        ..d
    });
    assert!(e.message.contains("135300 pixels"), "{e}");
    // The output buffer alone is 451 * 300 * 3 bytes.
    let e = with(ImageLimits {
        max_alloc: 451 * 300 * 3 - 1,
        ..d
    });
    assert_eq!(e.kind, DecodeErrorKind::TooLarge);
    assert!(e.message.contains("405900 bytes"), "{e}");
}

#[test]
fn truncated_jpegs_are_refused() {
    for name in [
        // A third of the photo: the decoder alone fills the rest with grey.
        "truncated_third.jpg",
        // Only the end-of-image marker missing.
        "no_eoi.jpg",
        // Cut after a complete EXIF thumbnail whose own FF D9 must not count.
        "exif_thumb_truncated.jpg",
    ] {
        let data = bytes(name);
        assert!(
            image::load_from_memory(&data).is_ok() || name == "exif_thumb_truncated.jpg",
            "{name}: the image crate alone accepts it (the reason for the check)"
        );
        let (kind, message) = refused(name);
        assert_eq!(kind, DecodeErrorKind::Corrupt, "{name}");
        assert_eq!(message, "truncated JPEG: no end-of-image marker", "{name}");
    }
}

#[test]
fn a_complete_jpeg_with_trailing_bytes_or_a_thumbnail_decodes() {
    // PIL accepts bytes after the end-of-image marker; so do we, and the
    // pixels are the photo's.
    let photo = plain(&std::fs::read(fixture("vit/photo.jpg")).unwrap());
    for name in ["trailing_garbage.jpg", "exif_thumb.jpg"] {
        let image = decode_image(&bytes(name), &ImageLimits::default()).unwrap();
        assert_eq!(image.to_rgb8(), photo.to_rgb8(), "{name}");
    }
}

#[test]
fn truncated_pngs_are_refused() {
    // The PNG decoder refuses a cut anywhere before IEND by itself: these
    // hold it to that, since `decode_image` adds no PNG check of its own.
    let photo = std::fs::read(fixture("vit/photo.png")).unwrap();
    let iend = photo.windows(4).rposition(|w| w == b"IEND").unwrap();
    let cuts = [
        ("half of photo.png", photo[..photo.len() / 2].to_vec()),
        (
            "photo.png inside its last IDAT",
            photo[..iend - 30].to_vec(),
        ),
        ("photo.png without IEND", photo[..iend - 4].to_vec()),
        ("truncated_half.png", bytes("truncated_half.png")),
    ];
    for (name, data) in cuts {
        let e = decode_image(&data, &ImageLimits::default()).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::Corrupt, "{name}: {e}");
        assert!(e.message.contains("truncated PNG"), "{name}: {e}");
    }
}

#[test]
fn truncated_webp_bmp_and_tiff_are_refused() {
    // Like PNG, these decoders notice a cut by themselves.
    for name in [
        "truncated_lossy.webp",
        "truncated_lossless.webp",
        "truncated_half.bmp",
        "truncated_half.tif",
    ] {
        let (kind, message) = refused(name);
        assert_eq!(kind, DecodeErrorKind::Corrupt, "{name}: {message}");
    }
    let (_, message) = refused("truncated_half.bmp");
    assert_eq!(message, "truncated BMP: the file ends early");
}

#[test]
fn colour_oddities_decode_as_before() {
    for (name, width, height) in [
        ("cmyk.jpg", 64, 48),
        ("gray.jpg", 64, 48),
        ("progressive.jpg", 64, 48),
        ("rgb16.png", 64, 48),
        ("gray16.png", 64, 48),
        ("gray_alpha.png", 64, 48),
        ("palette.png", 64, 48),
        ("rgba.png", 64, 48),
        ("lossy.webp", 64, 48),
        ("lossless.webp", 64, 48),
        ("bitmap.bmp", 64, 48),
        ("lzw.tif", 64, 48),
    ] {
        let data = bytes(name);
        let ours =
            decode_image(&data, &ImageLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((ours.width(), ours.height()), (width, height), "{name}");
        assert_eq!(ours.color(), plain(&data).color(), "{name}");
        assert_eq!(ours.to_rgb8(), plain(&data).to_rgb8(), "{name}");
    }
    // The CMYK fixture the parity test uses, too.
    let cmyk = std::fs::read(fixture("vit/cmyk.jpg")).unwrap();
    let ours = decode_image(&cmyk, &ImageLimits::default()).unwrap();
    assert_eq!(ours.to_rgb8(), plain(&cmyk).to_rgb8());
    // 16-bit stays 16-bit until the RGB conversion.
    let rgb16 = decode_image(&bytes("rgb16.png"), &ImageLimits::default()).unwrap();
    assert_eq!(rgb16.color(), image::ColorType::Rgb16);
}

#[test]
fn palette_oddities_are_errors_or_defined_pixels() {
    // No PLTE chunk for a palette image: an error.
    let (kind, message) = refused("palette_missing_plte.png");
    assert_eq!(kind, DecodeErrorKind::Corrupt);
    assert!(
        message.contains("PNG") && message.to_lowercase().contains("palette"),
        "{message}"
    );
    // Indices past a 4-colour palette decode to black, as in libpng and PIL,
    // rather than reading past the palette.
    let image = decode_image(
        &bytes("palette_index_out_of_range.png"),
        &ImageLimits::default(),
    )
    .unwrap()
    .to_rgb8();
    // Pixel (x, y) has index (7x + y) % 256: (0, 0) is 0 = red, (1, 0) is 7.
    assert_eq!(image.get_pixel(0, 0).0, [255, 0, 0]);
    assert_eq!(image.get_pixel(0, 3).0, [255, 255, 255]);
    assert_eq!(image.get_pixel(1, 0).0, [0, 0, 0]);
}

#[test]
fn zero_sized_unknown_and_unsupported_are_refused() {
    for name in ["zero_width.png", "zero_height.jpg"] {
        let (kind, message) = refused(name);
        assert_eq!(kind, DecodeErrorKind::Corrupt, "{name}: {message}");
    }
    let (kind, message) = refused("not_an_image.jpg");
    assert_eq!(kind, DecodeErrorKind::Unsupported);
    assert!(
        message.contains("expected JPEG, PNG, WebP, BMP or TIFF"),
        "{message}"
    );
    let (kind, message) = refused("picture.gif");
    assert_eq!(kind, DecodeErrorKind::Unsupported);
    assert!(
        message.starts_with("gif images are not supported"),
        "{message}"
    );
    let e = decode_image(&[], &ImageLimits::default()).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::Unsupported);
}

#[test]
fn open_image_names_the_file_and_the_problem() {
    let path = hostile("images/truncated_third.jpg");
    match open_image(&path) {
        Err(VitError::Image { path: p, message }) => {
            assert_eq!(p, path);
            assert_eq!(message, "truncated JPEG: no end-of-image marker");
        }
        other => panic!("expected an image error, got {other:?}"),
    }
    let msg = open_image(hostile("images/strip_40000000x1.png"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("strip_40000000x1.png") && msg.contains("40000000x1"),
        "{msg}"
    );
    // The photo still opens to what the image crate reads.
    let photo = fixture("vit/photo.jpg");
    assert_eq!(
        open_image(&photo).unwrap().to_rgb8(),
        image::open(&photo).unwrap().to_rgb8()
    );
}

#[test]
fn open_image_refuses_a_huge_file_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.jpg");
    // A sparse file: 300 MiB declared, nothing on disk.
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(300 << 20).unwrap();
    let start = Instant::now();
    let msg = open_image(&path).unwrap_err().to_string();
    assert!(
        msg.contains("huge.jpg") && msg.contains("314572800 bytes"),
        "{msg}"
    );
    assert!(start.elapsed() < Duration::from_secs(1));
}

/// Mutated JPEGs: a photo (baseline, 451x300) and a small progressive one.
#[test]
fn fuzz_decode_jpeg() {
    let seeds = vec![
        std::fs::read(fixture("vit/photo.jpg")).unwrap(),
        bytes("progressive.jpg"),
        bytes("cmyk.jpg"),
    ];
    let report = fuzz(
        "decode_image jpeg",
        &seeds,
        14,
        20_000,
        Duration::from_secs(15),
        |b| decode_image(b, &ImageLimits::default()).is_ok(),
    );
    assert!(report.inputs >= 300, "{report:?}");
    assert!(report.accepted < report.inputs, "{report:?}");
}

/// Mutated PNGs: the photo and small 16-bit, palette, gray+alpha ones.
#[test]
fn fuzz_decode_png() {
    let seeds = vec![
        std::fs::read(fixture("vit/photo.png")).unwrap(),
        bytes("rgb16.png"),
        bytes("palette.png"),
        bytes("gray_alpha.png"),
        bytes("rgba.png"),
    ];
    let report = fuzz_png(
        "decode_image png",
        &seeds,
        14,
        20_000,
        Duration::from_secs(15),
        |input| decode_image(input, &ImageLimits::default()).is_ok(),
    );
    assert!(report.inputs >= 300, "{report:?}");
    assert!(report.accepted < report.inputs, "{report:?}");
}

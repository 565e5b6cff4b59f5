//! The activation cache against direct forward passes of the small
//! random-weight ViT fixture (hidden 128, 3 blocks, 4 registers) on small
//! generated images with label maps.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::NdArray;
use burn::prelude::*;
use half::f16;
use image::codecs::jpeg::JpegEncoder;
use image::{GrayImage, Luma};
use sae_steer_data::cache::{
    ActivationCache, CacheDtype, CacheError, CacheManifest, CacheSpec, LabelKind, TapRequest,
    TapTokens, build_cache, build_cache_until,
};
use sae_steer_data::{ImageItem, ImageList, MAX_LABEL, image_folder, load_sample, patch_labels};
use sae_steer_files::SharedProgress;
use sae_steer_testkit::RecordingProgress;
use sae_steer_vit::{Preprocess, Vit};

type B = NdArray<f32>;

const MODEL_ID: &str = "fixture/reg";

fn vit() -> Vit<B> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vit/reg");
    Vit::<B>::from_hf_folder(&dir, &Default::default()).unwrap()
}

/// SplitMix64, so the generated images never change.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` labelled images under `root/data`: `images/img_NNNNN.jpg` (48 to
/// 160 pixels a side, noisy colour blocks) and `labels/img_NNNNN.png` (8-bit
/// gray, one label in 0..=150 per block of the image).
fn dataset(root: &Path, n: usize) -> ImageList {
    let root = root.join("data");
    for dir in ["images", "labels"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let mut state = 3;
    let items = (0..n)
        .map(|i| {
            let mut side = || 48 + (next(&mut state) % 113) as u32;
            let (w, h) = (side(), side());
            // A 4 x 4 grid of blocks, each its own label and colour.
            let blocks: Vec<(u8, [u8; 3])> = (0..16)
                .map(|_| {
                    let v = next(&mut state);
                    let label = (v % (MAX_LABEL as u64 + 1)) as u8;
                    (label, [(v >> 8) as u8, (v >> 16) as u8, (v >> 24) as u8])
                })
                .collect();
            let block = |x: u32, y: u32| &blocks[(y * 4 / h * 4 + x * 4 / w) as usize];
            let mut rgb = Vec::with_capacity((w * h * 3) as usize);
            for y in 0..h {
                for x in 0..w {
                    let noise = (next(&mut state) % 32) as u8;
                    rgb.extend(block(x, y).1.map(|c| c.saturating_add(noise)));
                }
            }
            let image = root.join(format!("images/img_{i:05}.jpg"));
            let mut jpeg = Vec::new();
            JpegEncoder::new_with_quality(&mut jpeg, 90)
                .encode(&rgb, w, h, image::ExtendedColorType::Rgb8)
                .unwrap();
            std::fs::write(&image, jpeg).unwrap();
            let label = root.join(format!("labels/img_{i:05}.png"));
            GrayImage::from_fn(w, h, |x, y| Luma([block(x, y).0]))
                .save(&label)
                .unwrap();
            ImageItem {
                image,
                label: Some(label),
            }
        })
        .collect();
    ImageList { root, items }
}

fn spec(taps: &str, labels: LabelKind, shard_images: usize, batch: usize) -> CacheSpec {
    let mut spec = CacheSpec::new(
        MODEL_ID,
        taps.split(',').map(|t| t.parse().unwrap()).collect(),
    );
    spec.labels = labels;
    spec.shard_images = shard_images;
    spec.batch = batch;
    spec.workers = 3;
    spec
}

fn host(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

/// Direct forward passes in the builder's batches: (layer 1 all tokens,
/// final-norm patches), both flattened per image.
fn direct(vit: &Vit<B>, images: &ImageList, batch: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let pre = Preprocess::default();
    let (mut layer1, mut normed) = (Vec::new(), Vec::new());
    for chunk in images.items.chunks(batch) {
        let pixels: Vec<_> = chunk
            .iter()
            .map(|item| load_sample(item, &pre).unwrap().pixels)
            .collect();
        let x = sae_steer_vit::PixelValues::batch::<B>(&pixels, &Default::default());
        let l1 = vit.forward_until(x.clone(), 1).unwrap();
        let patches = vit.split_tokens(vit.forward(x).unwrap()).patches;
        for (out, t) in [(&mut layer1, l1), (&mut normed, patches)] {
            let per = t.dims()[1] * t.dims()[2];
            out.extend(host(t).chunks(per).map(<[f32]>::to_vec));
        }
    }
    (layer1, normed)
}

fn shard_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("shard-"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

#[test]
fn cached_taps_and_labels_equal_direct_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 10);
    let vit = vit();
    let dir = tmp.path().join("cache");
    // 6 images per shard, batches of 3: shards [0..6) [6..10), batches aligned
    // with the direct pass below.
    let spec = spec("layer1:f32,final_norm:f16", LabelKind::Pixel, 6, 3);
    let report = build_cache(&vit, &images, &dir, &spec).unwrap();
    assert!(report.complete);
    assert_eq!(
        (
            report.rows_written,
            report.shards_written,
            report.total_rows
        ),
        (10, 2, 10)
    );

    let cache = ActivationCache::open(&dir).unwrap();
    assert!(cache.is_complete());
    assert_eq!(cache.len(), 10);
    let l1 = cache.tap("layer1").unwrap();
    assert_eq!((l1.n_tokens, l1.dim, l1.layer), (1 + 4 + 256, 128, Some(1)));
    let fnorm = cache.tap("final_norm").unwrap();
    assert_eq!((fnorm.n_tokens, fnorm.dtype), (256, CacheDtype::F16));
    assert_eq!(cache.manifest().shards[1].first_image, 6);

    let (want_l1, want_norm) = direct(&vit, &images, 3);
    let rows: Vec<usize> = (0..10).collect();
    let mut got = Vec::new();
    cache.read_images("layer1", &rows, &mut got).unwrap();
    let per = 261 * 128;
    for (r, want) in want_l1.iter().enumerate() {
        // f32 taps are the forward pass, bit for bit.
        let got_bits: Vec<u32> = got[r * per..(r + 1) * per]
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
        assert!(got_bits == want_bits, "layer1 of image {r} differs");
    }
    cache.read_images("final_norm", &rows, &mut got).unwrap();
    let per = 256 * 128;
    for (r, want) in want_norm.iter().enumerate() {
        // f16 taps are the forward pass rounded to nearest f16, exactly.
        for (i, (&g, &w)) in got[r * per..(r + 1) * per].iter().zip(want).enumerate() {
            assert_eq!(
                g,
                f16::from_f32(w).to_f32(),
                "final_norm image {r} value {i}"
            );
        }
    }

    let pre = Preprocess::default();
    for (row, item) in images.items.iter().enumerate() {
        assert_eq!(cache.image_index(row), row);
        let pixels = load_sample(item, &pre).unwrap().labels.unwrap();
        let want = patch_labels(&pixels, 224, 14);
        assert_eq!(cache.patch_labels(row).unwrap(), &want.labels[..]);
        assert_eq!(cache.patch_purity(row).unwrap(), &want.purity[..]);
        assert_eq!(cache.pixel_labels(row).unwrap(), &pixels[..]);
    }
    // Labels are not all one class, or the comparison above proves little.
    let first = cache.patch_labels(0).unwrap();
    assert!(first.iter().any(|&l| l != first[0]));
}

#[test]
fn read_images_follows_the_requested_order() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 7);
    let dir = tmp.path().join("cache");
    build_cache(
        &vit(),
        &images,
        &dir,
        &spec("layer0:f16", LabelKind::None, 3, 2),
    )
    .unwrap();
    let cache = ActivationCache::open(&dir).unwrap();
    let mut all = Vec::new();
    cache
        .read_images("layer0", &(0..7).collect::<Vec<_>>(), &mut all)
        .unwrap();
    let per = 261 * 128;
    let order = [5, 0, 6, 2, 2, 3];
    let mut got = vec![f32::NAN; 9 * per]; // replaced by read_images
    cache.read_images("layer0", &order, &mut got).unwrap();
    assert_eq!(got.len(), order.len() * per);
    for (i, &r) in order.iter().enumerate() {
        assert_eq!(got[i * per..(i + 1) * per], all[r * per..(r + 1) * per]);
    }
    assert!(matches!(
        cache.read_images("layer0", &[7], &mut got),
        Err(CacheError::Row { row: 7, len: 7 })
    ));
    let err = cache.read_images("layer9", &[0], &mut got).unwrap_err();
    assert!(err.to_string().contains("layer0"), "{err}");
    let err = cache.patch_labels(0).unwrap_err();
    assert!(matches!(err, CacheError::NoLabels { .. }), "{err}");
}

#[test]
fn interrupted_runs_resume_to_identical_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 11);
    let vit = vit();
    let spec = spec("layer2:f32,final_norm:f16", LabelKind::Patch, 3, 2);
    let whole = tmp.path().join("whole");
    build_cache(&vit, &images, &whole, &spec).unwrap();
    let reference = shard_bytes(&whole);
    assert_eq!(reference.len(), 4);
    let reference_manifest = CacheManifest::read(&whole).unwrap();

    // Killed after two shards, with a half-written third shard and a shard
    // that was renamed before the crash but never recorded.
    let dir = tmp.path().join("resumed");
    let report = build_cache_until(&vit, &images, &dir, &spec, Some(2)).unwrap();
    assert!(!report.complete);
    assert_eq!(report.shards_written, 2);
    std::fs::write(dir.join(".shard-00002.safetensors.tmp"), b"half a shard").unwrap();
    std::fs::write(dir.join("shard-00003.safetensors"), b"never recorded").unwrap();
    let partial = ActivationCache::open(&dir).unwrap();
    assert!(!partial.is_complete());
    assert_eq!(partial.len(), 6);
    // Only the shards the manifest lists, not the unrecorded one.
    assert_eq!(
        partial.shard_files(),
        [
            dir.join("shard-00000.safetensors"),
            dir.join("shard-00001.safetensors")
        ]
    );
    drop(partial);

    let report = build_cache(&vit, &images, &dir, &spec).unwrap();
    assert_eq!(report.resumed_from, 6);
    assert_eq!((report.rows_written, report.total_rows), (5, 11));
    assert!(report.complete);
    assert_eq!(shard_bytes(&dir), reference);
    assert!(!dir.join(".shard-00002.safetensors.tmp").exists());
    assert_eq!(CacheManifest::read(&dir).unwrap(), reference_manifest);

    // A crash between a shard's rename and the manifest update: the manifest
    // does not list the last shard.
    let mut manifest = CacheManifest::read(&dir).unwrap();
    let last = manifest.shards.pop().unwrap();
    manifest.next_image = last.first_image;
    manifest.complete = false;
    manifest.write(&dir).unwrap();
    std::fs::write(dir.join(&last.file), b"garbage").unwrap();
    let report = build_cache(&vit, &images, &dir, &spec).unwrap();
    assert_eq!((report.resumed_from, report.rows_written), (9, 2));
    assert_eq!(shard_bytes(&dir), reference);

    // A complete cache is left alone.
    let report = build_cache(&vit, &images, &dir, &spec).unwrap();
    assert_eq!((report.rows_written, report.images_processed), (0, 0));
    assert!(report.complete);
}

#[test]
fn caches_made_differently_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 4);
    let vit = vit();
    let base = spec("layer1:f16", LabelKind::Patch, 2, 2);
    let dir = tmp.path().join("cache");
    build_cache_until(&vit, &images, &dir, &base, Some(1)).unwrap();

    let refused = |spec: &CacheSpec, images: &ImageList, what: &str| {
        let err = build_cache(&vit, images, &dir, spec).unwrap_err();
        assert!(matches!(err, CacheError::Mismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(what), "`{what}` not in: {msg}");
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
    };
    let mut other = base.clone();
    other.model_id = "facebook/dinov2-with-registers-base".into();
    refused(&other, &images, "model: cache has `fixture/reg`");
    refused(&spec("layer1:f32", LabelKind::Patch, 2, 2), &images, "taps");
    refused(
        &spec("layer1:f16,final_norm", LabelKind::Patch, 2, 2),
        &images,
        "taps",
    );
    refused(
        &spec("layer1:f16", LabelKind::Pixel, 2, 2),
        &images,
        "labels",
    );
    let mut other = base.clone();
    other.preprocess = Some(Preprocess {
        resize: 240,
        crop: 224,
        ..Preprocess::default()
    });
    refused(&other, &images, "preprocessing");
    refused(&base, &images.clone().take(3), "image list");
    // Another geometry under the same id (e.g. a re-exported checkpoint).
    let saved = CacheManifest::read(&dir).unwrap();
    let mut tampered = saved.clone();
    tampered.model_config.num_register_tokens = 0;
    // Consistent with itself (a manifest whose taps contradict its config is
    // refused as invalid before any comparison).
    for tap in &mut tampered.taps {
        if tap.tokens == TapTokens::All {
            tap.n_tokens -= 4;
        }
    }
    tampered.write(&dir).unwrap();
    let err = build_cache(&vit, &images, &dir, &base).unwrap_err();
    assert!(err.to_string().contains("model config"), "{err}");
    saved.write(&dir).unwrap();

    // The refusals changed nothing: the same request still resumes.
    let report = build_cache(&vit, &images, &dir, &base).unwrap();
    assert_eq!((report.resumed_from, report.total_rows), (2, 4));
}

#[test]
fn a_complete_cache_serves_every_request_it_covers() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 3);
    let dir = tmp.path().join("cache");
    let built = spec("layer1:f32,final_norm:f16", LabelKind::Pixel, 2, 2);
    build_cache_until(&vit(), &images, &dir, &built, Some(1)).unwrap();
    let partial = ActivationCache::open(&dir).unwrap();
    assert!(
        !partial.serves(&images, &built),
        "an incomplete cache serves nothing"
    );
    build_cache(&vit(), &images, &dir, &built).unwrap();
    let cache = ActivationCache::open(&dir).unwrap();

    assert!(cache.serves(&images, &built));
    // Subsets of the taps, less precision, poorer labels: one pass feeds all.
    for (taps, labels) in [
        ("layer1:f32", LabelKind::Patch),
        ("final_norm:f16", LabelKind::None),
        ("layer1:f16,final_norm:f16", LabelKind::Pixel),
    ] {
        assert!(
            cache.serves(&images, &spec(taps, labels, 7, 1)),
            "{taps} {labels}"
        );
    }
    // Anything it lacks, or made from other inputs, is not served.
    for (taps, labels) in [
        ("layer2:f32", LabelKind::Patch),
        ("final_norm:f32", LabelKind::Patch),
        ("layer1:patches:f32", LabelKind::Patch),
    ] {
        assert!(
            !cache.serves(&images, &spec(taps, labels, 2, 2)),
            "{taps} {labels}"
        );
    }
    let mut other = spec("layer1:f32", LabelKind::Patch, 2, 2);
    other.model_id = "another/model".into();
    assert!(!cache.serves(&images, &other));
    other = spec("layer1:f32", LabelKind::Patch, 2, 2);
    other.preprocess = Some(Preprocess {
        resize: 240,
        crop: 224,
        ..Preprocess::default()
    });
    assert!(!cache.serves(&images, &other));
    assert!(!cache.serves(&images.clone().take(2), &built));
}

#[test]
fn corrupt_images_fail_or_are_skipped_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 6);
    let bad = images.items[3].image.clone();
    // A JPEG signature followed by garbage: recognised as JPEG, undecodable.
    std::fs::write(&bad, [0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let vit = vit();
    let mut spec = spec("layer0:f32", LabelKind::Patch, 2, 2);

    let err = build_cache(&vit, &images, &tmp.path().join("strict"), &spec).unwrap_err();
    assert!(
        matches!(err, CacheError::BadImage { index: 3, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(&bad.display().to_string()),
        "{err}"
    );
    // A library message names no command-line flag; it says skipping exists.
    assert!(err.to_string().contains("skips bad images"), "{err}");
    assert!(!err.to_string().contains("--"), "{err}");
    // Why the image failed is the cause, printed once by the chain.
    let cause = std::error::Error::source(&err).expect("the decoder's error");
    let chain = sae_steer_files::ErrorChain(&err).to_string();
    assert!(chain.contains(&bad.display().to_string()), "{chain}");
    assert_eq!(chain.matches(&cause.to_string()).count(), 1, "{chain}");
    // The shard before the bad image was completed and is kept for a resume.
    let strict = CacheManifest::read(&tmp.path().join("strict")).unwrap();
    assert_eq!((strict.next_image, strict.rows()), (2, 2));

    spec.skip_bad = true;
    let dir = tmp.path().join("lenient");
    let report = build_cache(&vit, &images, &dir, &spec).unwrap();
    assert!(report.complete);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].index, 3);
    let cache = ActivationCache::open(&dir).unwrap();
    assert_eq!(cache.len(), 5);
    let indices: Vec<usize> = (0..5).map(|r| cache.image_index(r)).collect();
    assert_eq!(indices, [0, 1, 2, 4, 5]);
    let skipped = &cache.manifest().skipped;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].index, 3);
    assert_eq!(skipped[0].path, bad.display().to_string());
    assert!(!skipped[0].error.is_empty());
    // Shards hold 2 rows each; the skipped image shifts the third shard.
    let firsts: Vec<usize> = cache
        .manifest()
        .shards
        .iter()
        .map(|s| s.first_image)
        .collect();
    assert_eq!(firsts, [0, 2, 5]);
}

#[test]
fn a_bad_last_image_still_completes_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 3);
    std::fs::write(&images.items[2].image, b"not an image at all").unwrap();
    let mut spec = spec("layer0:f16", LabelKind::None, 2, 2);
    spec.skip_bad = true;
    let dir = tmp.path().join("cache");
    let report = build_cache(&vit(), &images, &dir, &spec).unwrap();
    assert!(report.complete);
    let manifest = CacheManifest::read(&dir).unwrap();
    assert_eq!((manifest.next_image, manifest.rows()), (3, 2));
    assert_eq!(manifest.skipped[0].index, 2);
}

fn sorted_rows(rows: impl Iterator<Item = Vec<f32>>) -> Vec<Vec<u32>> {
    let mut v: Vec<Vec<u32>> = rows
        .map(|r| r.iter().map(|x| x.to_bits()).collect())
        .collect();
    v.sort();
    v
}

#[test]
fn patch_batches_cover_each_token_once_per_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 5);
    let dir = tmp.path().join("cache");
    build_cache(
        &vit(),
        &images,
        &dir,
        &spec("layer1:f16", LabelKind::None, 2, 2),
    )
    .unwrap();
    let cache = ActivationCache::open(&dir).unwrap();
    let dim = 128;
    let tokens = 5..261; // the patches
    let mut all = Vec::new();
    cache
        .read_images("layer1", &(0..5).collect::<Vec<_>>(), &mut all)
        .unwrap();
    let want = sorted_rows(
        all.chunks(dim)
            .enumerate()
            .filter(|(i, _)| tokens.contains(&(i % 261)))
            .map(|(_, row)| row.to_vec()),
    );
    assert_eq!(want.len(), 5 * 256);

    let epoch = |seed: u64, window: usize| -> Vec<Vec<f32>> {
        let batches = cache
            .patch_batches_windowed("layer1", tokens.clone(), 300, seed, window)
            .unwrap();
        assert_eq!(batches.len(), (5 * 256usize).div_ceil(300));
        let batches: Vec<Vec<f32>> = batches.map(Result::unwrap).collect();
        assert!(
            batches[..batches.len() - 1]
                .iter()
                .all(|b| b.len() == 300 * dim)
        );
        assert_eq!(batches.last().unwrap().len(), (5 * 256 % 300) * dim);
        batches.concat().chunks(dim).map(<[f32]>::to_vec).collect()
    };
    for window in [1, 2, 4] {
        let rows = epoch(7, window);
        assert_eq!(sorted_rows(rows.into_iter()), want, "window {window}");
    }
    // Deterministic per seed, different across seeds, and shuffled.
    let a = epoch(1, 4);
    assert_eq!(a, epoch(1, 4));
    assert_ne!(a, epoch(2, 4));
    let in_order: Vec<Vec<f32>> = all
        .chunks(dim)
        .enumerate()
        .filter(|(i, _)| tokens.contains(&(i % 261)))
        .map(|(_, r)| r.to_vec())
        .collect();
    assert_ne!(a, in_order);

    // Reusing one buffer gives the same batches, with stale content gone.
    let mut batches = cache
        .patch_batches_windowed("layer1", tokens.clone(), 300, 1, 4)
        .unwrap();
    let mut buf = vec![f32::NAN; 1000 * dim];
    let mut reused = Vec::new();
    while batches.next_into(&mut buf).unwrap() > 0 {
        reused.extend_from_slice(&buf);
    }
    assert!(buf.is_empty());
    assert_eq!(
        reused.chunks(dim).map(<[f32]>::to_vec).collect::<Vec<_>>(),
        a
    );

    // The CLS token alone.
    let cls: Vec<f32> = cache
        .patch_batches("layer1", 0..1, 64, 0)
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .concat();
    let want_cls = sorted_rows((0..5).map(|r| all[r * 261 * dim..][..dim].to_vec()));
    assert_eq!(sorted_rows(cls.chunks(dim).map(<[f32]>::to_vec)), want_cls);

    assert!(matches!(
        cache.patch_batches("layer1", 200..262, 8, 0),
        Err(CacheError::Tokens { n_tokens: 261, .. })
    ));
}

#[test]
fn damaged_shards_are_reported_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 4);
    let dir = tmp.path().join("cache");
    build_cache(
        &vit(),
        &images,
        &dir,
        &spec("layer0:f32", LabelKind::Patch, 2, 2),
    )
    .unwrap();
    let shard = dir.join("shard-00001.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);

    let err = ActivationCache::open(&dir).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, CacheError::Shard { .. }), "{msg}");
    assert!(
        msg.contains("shard-00001.safetensors") && msg.contains("truncated"),
        "{msg}"
    );

    // Without a recorded size, the header still gives the truncation away.
    let mut manifest = CacheManifest::read(&dir).unwrap();
    for s in &mut manifest.shards {
        s.bytes = 0;
    }
    manifest.write(&dir).unwrap();
    let msg = ActivationCache::open(&dir).err().unwrap().to_string();
    assert!(
        msg.contains("shard-00001.safetensors") && msg.contains("truncated"),
        "{msg}"
    );

    // Resuming over a damaged shard refuses too, rather than building on it.
    let err = build_cache(
        &vit(),
        &images,
        &dir,
        &spec("layer0:f32", LabelKind::Patch, 2, 2),
    );
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("shard-00001.safetensors")
    );

    std::fs::write(dir.join("manifest.json"), b"{\"format\": ").unwrap();
    let msg = ActivationCache::open(&dir).err().unwrap().to_string();
    assert!(msg.contains("manifest.json"), "{msg}");
}

#[test]
fn requests_are_checked_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 2);
    let vit = vit();
    let dir = tmp.path().join("cache");
    let err = build_cache(&vit, &images, &dir, &spec("layer3", LabelKind::None, 2, 2));
    assert!(err.unwrap_err().to_string().contains("3 blocks"));
    let err = build_cache(
        &vit,
        &images,
        &dir,
        &spec("layer1,layer1:f16", LabelKind::None, 2, 2),
    );
    assert!(err.unwrap_err().to_string().contains("twice"));
    let unlabelled = image_folder(images.root.join("images")).unwrap();
    let err = build_cache(
        &vit,
        &unlabelled,
        &dir,
        &spec("layer1", LabelKind::Patch, 2, 2),
    );
    assert!(matches!(err, Err(CacheError::MissingLabel { .. })));
    assert!(!dir.join("manifest.json").exists());

    for bad in ["layer", "layerx:f16", "final_norm:f8", "block3"] {
        assert!(bad.parse::<TapRequest>().is_err(), "{bad}");
    }
    let t: TapRequest = "layer10:patches:f16".parse().unwrap();
    assert_eq!(t, {
        let mut t = TapRequest::layer(10, CacheDtype::F16);
        t.tokens = TapTokens::Patches;
        t
    });
    assert_eq!(
        "final_norm".parse::<TapRequest>().unwrap(),
        TapRequest::final_norm(CacheDtype::F32)
    );
}

#[test]
fn a_second_builder_on_a_locked_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 4);
    let vit = vit();
    let spec = spec("layer1:f32", LabelKind::Patch, 2, 2);
    let dir = tmp.path().join("cache");
    // Another builder holds the folder (a lock taken through its own file
    // handle conflicts exactly as another process's would).
    let holder = sae_steer_files::FolderLock::acquire(&dir).unwrap();
    let err = build_cache(&vit, &images, &dir, &spec).unwrap_err();
    assert!(matches!(err, CacheError::Locked { .. }), "{err}");
    // The message names the folder; its cause, the lock's error, names the
    // holder, and the chain shows both.
    let pid = format!("pid {}", std::process::id());
    let cause = std::error::Error::source(&err)
        .expect("the lock's error")
        .to_string();
    assert!(cause.contains(&pid), "{cause}");
    let msg = sae_steer_files::ErrorChain(&err).to_string();
    assert!(
        msg.contains(&dir.display().to_string()) && msg.matches(&pid).count() == 1,
        "{msg}"
    );
    // Refused before anything was written.
    assert!(!dir.join("manifest.json").exists());
    drop(holder);
    let report = build_cache(&vit, &images, &dir, &spec).unwrap();
    assert!(report.complete);

    // Two builders started together on one folder: one builds, the other is
    // refused or finds the finished cache; the cache is whole either way.
    let reference = shard_bytes(&dir);
    let both = tmp.path().join("both");
    let results: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| build_cache(&vit, &images, &both, &spec)))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert!(results.iter().any(|r| r.is_ok()));
    for r in &results {
        assert!(
            matches!(r, Ok(_) | Err(CacheError::Locked { .. })),
            "{:?}",
            r.as_ref().err()
        );
    }
    let report = build_cache(&vit, &images, &both, &spec).unwrap();
    assert!(report.complete);
    assert_eq!(shard_bytes(&both), reference);
}

#[test]
fn leftovers_of_a_dead_process_are_removed_on_resume_only_under_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 5);
    let vit = vit();
    let spec = spec("layer0:f16", LabelKind::Patch, 2, 2);
    let whole = tmp.path().join("whole");
    build_cache(&vit, &images, &whole, &spec).unwrap();
    let dir = tmp.path().join("cache");
    build_cache_until(&vit, &images, &dir, &spec, Some(1)).unwrap();
    // Temporaries of a process killed mid-write (the names
    // sae_steer_files::AtomicFile gives them: pid and counter).
    let stale = [
        ".shard-00001.safetensors.tmp-4194301-0",
        ".manifest.json.tmp-4194301-1",
    ];
    for name in stale {
        assert!(sae_steer_files::is_temp_name(name));
        std::fs::write(dir.join(name), b"half written").unwrap();
    }
    // While another process holds the folder, its temporaries may be live:
    // nothing is removed.
    let holder = sae_steer_files::FolderLock::acquire(&dir).unwrap();
    assert!(build_cache(&vit, &images, &dir, &spec).is_err());
    assert!(stale.iter().all(|n| dir.join(n).exists()));
    drop(holder);
    let report = build_cache(&vit, &images, &dir, &spec).unwrap();
    assert_eq!(report.resumed_from, 2);
    assert!(report.complete);
    assert!(stale.iter().all(|n| !dir.join(n).exists()));
    assert_eq!(shard_bytes(&dir), shard_bytes(&whole));
    // Nothing but the cache's own files is left.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".lock",
            "manifest.json",
            "shard-00000.safetensors",
            "shard-00001.safetensors",
            "shard-00002.safetensors"
        ]
    );
}

#[test]
fn a_truncated_jpeg_in_a_dataset_stops_the_run_or_is_skipped_and_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 5);
    let bad = images.items[2].image.clone();
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 3]).unwrap();
    // The image crate alone decodes it (filling the rest): the silent change
    // this guards against.
    assert!(image::load_from_memory(&bytes[..bytes.len() / 3]).is_ok());
    let vit = vit();
    let mut spec = spec("layer0:f32", LabelKind::Patch, 2, 2);

    let err = build_cache(&vit, &images, &tmp.path().join("strict"), &spec).unwrap_err();
    assert!(
        matches!(err, CacheError::BadImage { index: 2, .. }),
        "{err}"
    );
    // The file in the message, the decoder's words in its cause.
    let mut msg = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        msg += &format!(": {c}");
        cause = c.source();
    }
    assert!(
        msg.contains(&bad.display().to_string()) && msg.contains("truncated JPEG"),
        "{msg}"
    );

    spec.skip_bad = true;
    let dir = tmp.path().join("lenient");
    let report = build_cache(&vit, &images, &dir, &spec).unwrap();
    assert!(report.complete);
    assert_eq!(report.skipped.len(), 1);
    let skipped = &report.skipped[0];
    assert_eq!(
        (skipped.index, &skipped.path),
        (2, &bad.display().to_string())
    );
    assert!(
        skipped.error.contains("truncated JPEG"),
        "{}",
        skipped.error
    );
    let cache = ActivationCache::open(&dir).unwrap();
    assert_eq!(cache.manifest().skipped, report.skipped);
    let indices: Vec<usize> = (0..cache.len()).map(|r| cache.image_index(r)).collect();
    assert_eq!(indices, [0, 1, 3, 4]);
}

#[test]
fn a_pixel_label_above_150_in_a_shard_names_the_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 2);
    let dir = tmp.path().join("cache");
    build_cache(
        &vit(),
        &images,
        &dir,
        &spec("layer0:f16", LabelKind::Pixel, 2, 2),
    )
    .unwrap();
    // Overwrite one pixel label in place (the file keeps its size).
    let shard = dir.join("shard-00000.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    let (header, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let start = 8 + header + meta.info("pixel_labels").unwrap().data_offsets.0;
    bytes[start + 224 * 224 + 10] = 200;
    std::fs::write(&shard, &bytes).unwrap();
    let cache = ActivationCache::open(&dir).unwrap();
    assert!(cache.pixel_labels(0).is_ok());
    let err = cache.pixel_labels(1).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CacheError::Shard { .. }), "{msg}");
    assert!(
        msg.contains("shard-00000.safetensors")
            && msg.contains("pixel label 200 in row 1, position 10"),
        "{msg}"
    );
}

/// Every tap's values of every row, and the image of each row, in order.
fn all_rows(cache: &ActivationCache) -> (Vec<usize>, Vec<Vec<f32>>) {
    let rows: Vec<usize> = (0..cache.len()).collect();
    let images = rows.iter().map(|&r| cache.image_index(r)).collect();
    let mut taps = Vec::new();
    for tap in cache.taps() {
        let mut x = Vec::new();
        cache.read_images(&tap.name, &rows, &mut x).unwrap();
        taps.push(x);
    }
    (images, taps)
}

#[test]
fn parts_built_at_once_read_as_the_one_process_cache() {
    let root = tempfile::tempdir().unwrap();
    let images = dataset(root.path(), 30);
    let vit = vit();
    let spec = spec("layer1:f32:all,final_norm:f16", LabelKind::Pixel, 8, 4);
    let whole = root.path().join("whole");
    build_cache(&vit, &images, &whole, &spec).unwrap();

    // Three parts at once (each its own lock; all share the folder's), as
    // separate processes of a job array would.
    let sharded = root.path().join("sharded");
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=3)
            .map(|i| {
                let mut spec = spec.clone();
                spec.part = Some((i, 3));
                let (vit, images, dir) = (&vit, &images, &sharded);
                s.spawn(move || build_cache(vit, images, dir, &spec).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(reports.iter().all(|r| r.complete));
    assert!(reports.iter().any(|r| r.cache_complete), "{reports:?}");
    let (a, b) = (
        ActivationCache::open(&whole).unwrap(),
        ActivationCache::open(&sharded).unwrap(),
    );
    assert_eq!(b.manifest().parts, 3);
    assert_eq!(all_rows(&a), all_rows(&b));
    for r in 0..a.len() {
        assert_eq!(a.pixel_labels(r).unwrap(), b.pixel_labels(r).unwrap());
    }
    // The same shard files, byte for byte: the parts number and fill them
    // as the one process does.
    assert_eq!(shard_bytes(&whole), shard_bytes(&sharded));
    // A part rerun on the merged folder has nothing to do.
    let mut again = spec.clone();
    again.part = Some((2, 3));
    let report = build_cache(&vit, &images, &sharded, &again).unwrap();
    assert!(report.complete && report.cache_complete && report.images_processed == 0);
}

#[test]
fn missing_duplicated_or_mismatched_parts_are_refused_by_name() {
    let root = tempfile::tempdir().unwrap();
    let images = dataset(root.path(), 20);
    let vit = vit();
    let base = spec("final_norm:f32", LabelKind::None, 4, 4);
    let part = |i: usize, n: usize| {
        let mut s = base.clone();
        s.part = Some((i, n));
        s
    };
    let dir = root.path().join("c");
    build_cache(&vit, &images, &dir, &part(1, 3)).unwrap();
    build_cache(&vit, &images, &dir, &part(3, 3)).unwrap();
    let err = ActivationCache::open(&dir).err().unwrap().to_string();
    assert!(err.contains("part 2 of 3 is missing"), "{err}");
    // It says how to build the part in the library's terms, not a flag's.
    assert!(
        err.contains("`CacheSpec::part` 2/3") && !err.contains("--"),
        "{err}"
    );
    // A file that only looks like a part names none, and is no part.
    std::fs::write(dir.join("part-0000-of-0000.json"), b"{").unwrap();
    let err = ActivationCache::open(&dir).err().unwrap().to_string();
    assert!(err.contains("part 2 of 3 is missing"), "{err}");
    // A part manifest that lies about its range is refused, naming the file.
    let first = dir.join("part-0001-of-0003.json");
    let honest = std::fs::read_to_string(&first).unwrap();
    let mut lying: serde_json::Value = serde_json::from_str(&honest).unwrap();
    lying["part"]["end"] = 8.into();
    std::fs::write(&first, lying.to_string()).unwrap();
    let err = ActivationCache::open(&dir).err().unwrap().to_string();
    assert!(
        err.contains("part-0001-of-0003.json") && err.contains("covers images 0..8"),
        "{err}"
    );
    std::fs::write(&first, honest).unwrap();

    // A part of another split of the list is refused at build time.
    let err = build_cache(&vit, &images, &dir, &part(2, 4))
        .unwrap_err()
        .to_string();
    assert!(err.contains("part 1 of 3"), "{err}");
    // So is a part built with other settings, and a whole-list build.
    let mut other = part(2, 3);
    other.taps = vec!["final_norm:f16".parse().unwrap()];
    let err = build_cache(&vit, &images, &dir, &other)
        .unwrap_err()
        .to_string();
    assert!(err.contains("other settings"), "{err}");
    let err = build_cache(&vit, &images, &dir, &base)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sharded build") && !err.contains("--"),
        "{err}"
    );

    // A stray part file of another split, dropped beside the parts.
    let stray = dir.join("part-0001-of-0002.json");
    std::fs::copy(dir.join("part-0001-of-0003.json"), &stray).unwrap();
    let err = ActivationCache::open(&dir).err().unwrap().to_string();
    assert!(err.contains("part-0001-of-0002.json"), "{err}");
    std::fs::remove_file(&stray).unwrap();

    build_cache(&vit, &images, &dir, &part(2, 3)).unwrap();
    let cache = ActivationCache::open(&dir).unwrap();
    assert_eq!(cache.len(), 20);
    // Once merged, a part file of another split makes the folder ambiguous.
    std::fs::copy(dir.join("part-0001-of-0003.json"), &stray).unwrap();
    let err = ActivationCache::open(&dir).err().unwrap().to_string();
    assert!(err.contains("does not belong"), "{err}");
}

#[test]
fn the_build_reports_every_image_it_consumes() {
    let tmp = tempfile::tempdir().unwrap();
    let images = dataset(tmp.path(), 7);
    std::fs::write(&images.items[4].image, b"not an image at all").unwrap();
    let vit = vit();
    let recorder = Arc::new(RecordingProgress::new());
    let mut spec = spec("layer0:f16", LabelKind::None, 2, 2);
    spec.skip_bad = true;
    spec.progress = SharedProgress::from(recorder.clone());
    let dir = tmp.path().join("cache");

    // Killed after its first shard: one phase over the whole list, from 0,
    // closed although the run stopped early.
    build_cache_until(&vit, &images, &dir, &spec, Some(1)).unwrap();
    let phases = recorder.phases();
    assert_eq!(phases.len(), 1, "{phases:?}");
    let first = &phases[0];
    assert_eq!(
        (
            first.what.as_str(),
            first.unit.as_str(),
            first.total,
            first.done
        ),
        ("caching", "images", 7, 0)
    );
    assert!(first.finished);
    // It consumed at least the shard it wrote (more may have been in flight).
    assert!((2..=7).contains(&first.advanced), "{first:?}");

    // The resumed run counts from where the first one's shard ended, and its
    // advances (the skipped image included) add up to the rest of the list.
    recorder.clear();
    let report = build_cache(&vit, &images, &dir, &spec).unwrap();
    assert!(report.complete);
    assert_eq!(report.resumed_from, 2);
    let phases = recorder.phases();
    assert_eq!(phases.len(), 1, "{phases:?}");
    let resumed = &phases[0];
    assert_eq!((resumed.total, resumed.done), (7, 2));
    assert!(resumed.is_complete(), "{resumed:?}");
    assert_eq!(resumed.advanced, report.images_processed as u64);
    assert_eq!(report.images_processed, 5);
    // The skipped image is a note, not a line drawn across a bar.
    let notes = recorder.notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].starts_with("skipping image 4 ("), "{notes:?}");

    // A complete cache has nothing to report.
    recorder.clear();
    build_cache(&vit, &images, &dir, &spec).unwrap();
    assert!(recorder.events().is_empty());
}

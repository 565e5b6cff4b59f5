//! Upsampling, argmax and IoU against PyTorch (fixture made by
//! scripts/make_metrics_fixture.py), plus hand-built confusion cases.

use std::collections::HashMap;
use std::path::PathBuf;

use sae_steer_metrics::{
    BilinearUpsampler, SegmentationScores, upsample_argmax, upsample_bilinear,
};
use safetensors::{Dtype, SafeTensors};

const CLASSES: usize = 151;
const CASES: [&str; 3] = ["random", "ties", "sparse"];

struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    fn load() -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/metrics/segmentation.safetensors");
        Self {
            bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    fn raw(&self, name: &str, dtype: Dtype) -> Vec<u8> {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), dtype, "{name}");
        t.data().to_vec()
    }

    fn f32(&self, name: &str) -> Vec<f32> {
        let raw = self.raw(name, Dtype::F32);
        raw.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn f16(&self, name: &str) -> Vec<f32> {
        let raw = self.raw(name, Dtype::F16);
        raw.chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()
    }

    fn f64(&self, name: &str) -> Vec<f64> {
        let raw = self.raw(name, Dtype::F64);
        raw.chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn i64(&self, name: &str) -> Vec<i64> {
        let raw = self.raw(name, Dtype::I64);
        raw.chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn u8(&self, name: &str) -> Vec<u8> {
        self.raw(name, Dtype::U8)
    }

    fn sizes(&self) -> HashMap<String, serde_json::Value> {
        let (_, meta) = SafeTensors::read_metadata(&self.bytes).unwrap();
        let text = &meta.metadata().as_ref().unwrap()["sizes"];
        serde_json::from_str(text).unwrap()
    }
}

#[test]
fn plain_upsampling_matches_torch() {
    let fx = Fixture::load();
    let sizes = fx.sizes();
    for name in ["small", "grid", "down"] {
        let s: Vec<usize> = sizes[&format!("up_{name}")]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let (c, h, w, oh, ow) = (s[0], s[1], s[2], s[3], s[4]);
        let input = fx.f32(&format!("up_{name}.input"));
        let expected = fx.f32(&format!("up_{name}.output"));
        let mut out = vec![0f32; oh * ow * c];
        upsample_bilinear(&input, c, h, w, oh, ow, &mut out).unwrap();
        let max_err = out
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("up_{name}: max |rust - torch| = {max_err:e}");
        assert!(max_err < 4e-6, "{name}: max |rust - torch| = {max_err}");
    }
}

#[test]
fn fused_argmax_matches_torch_argmax() {
    let fx = Fixture::load();
    let up = BilinearUpsampler::new(16, 16, 224, 224).unwrap();
    for case in CASES {
        let logits = fx.f16(&format!("{case}.logits"));
        let expected = fx.u8(&format!("{case}.pred"));
        let mut pred = vec![0u8; 224 * 224];
        up.argmax(&logits, CLASSES, &mut pred).unwrap();

        let mut values = vec![0f32; 224 * 224 * CLASSES];
        up.upsample(&logits, CLASSES, &mut values).unwrap();
        let mut mismatches = 0;
        for (p, (&ours, &theirs)) in pred.iter().zip(&expected).enumerate() {
            if ours != theirs {
                // Only a near-tie may go another way (torch's kernel may fuse
                // multiply-adds); never a clear winner.
                let v = &values[p * CLASSES..(p + 1) * CLASSES];
                let gap = (v[ours as usize] - v[theirs as usize]).abs();
                assert!(
                    gap < 1e-5,
                    "{case}: pixel {p}: ours {ours}, torch {theirs}, gap {gap}"
                );
                mismatches += 1;
            }
        }
        eprintln!(
            "{case}: {mismatches} of {} pixels differ from torch (near ties)",
            pred.len()
        );
        assert!(mismatches <= 2, "{case}: {mismatches} near-tie mismatches");
        if case == "ties" {
            // Tied classes have identical corner values, hence bit-identical
            // upsampled values: the first class must win, exactly as torch.
            assert_eq!(
                mismatches, 0,
                "ties: first-occurrence rule differs from torch.argmax"
            );
        }
        // The one-call form gives the same result as the reused upsampler.
        let mut again = vec![0u8; 224 * 224];
        upsample_argmax(&logits, CLASSES, 16, 16, 224, 224, &mut again).unwrap();
        assert_eq!(again, pred);
    }
}

#[test]
fn fused_argmax_equals_argmax_of_upsampled_values() {
    let fx = Fixture::load();
    let logits = fx.f16("random.logits");
    let up = BilinearUpsampler::new(16, 16, 37, 61).unwrap();
    let mut values = vec![0f32; 37 * 61 * CLASSES];
    up.upsample(&logits, CLASSES, &mut values).unwrap();
    let mut pred = vec![0u8; 37 * 61];
    up.argmax(&logits, CLASSES, &mut pred).unwrap();
    for (p, &c) in pred.iter().enumerate() {
        let v = &values[p * CLASSES..(p + 1) * CLASSES];
        let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let first = v.iter().position(|&x| x == max).unwrap();
        assert_eq!(c as usize, first, "pixel {p}");
    }
}

#[test]
fn scores_match_reference_iou() {
    let fx = Fixture::load();
    let mut scores = SegmentationScores::new(CLASSES);
    for case in CASES {
        scores
            .add(
                &fx.u8(&format!("{case}.pred")),
                &fx.u8(&format!("{case}.labels")),
            )
            .unwrap();
    }
    let inter = fx.i64("intersection");
    let union = fx.i64("union");
    let iou = fx.f64("iou");
    for c in 1..CLASSES {
        assert_eq!(
            scores.intersection(c) as i64,
            inter[c - 1],
            "class {c} intersection"
        );
        assert_eq!(scores.union(c) as i64, union[c - 1], "class {c} union");
        match scores.iou(c) {
            Some(v) => assert!(
                (v - iou[c - 1]).abs() < 1e-12,
                "class {c}: {v} vs {}",
                iou[c - 1]
            ),
            None => assert!(
                iou[c - 1].is_nan(),
                "class {c}: torch has IoU {}",
                iou[c - 1]
            ),
        }
    }
    assert_eq!(scores.empty_classes(), (141..=150).collect::<Vec<_>>());
    let present: Vec<f64> = iou.iter().copied().filter(|v| !v.is_nan()).collect();
    let expected_miou = present.iter().sum::<f64>() / present.len() as f64;
    assert!((scores.mean_iou().unwrap() - expected_miou).abs() < 1e-12);
    assert!((scores.pixel_accuracy().unwrap() - fx.f64("acc")[0]).abs() < 1e-9);
    assert_eq!(scores.pixels(), 3 * 224 * 224);
}

#[test]
fn perfect_prediction_scores_one() {
    let truth: Vec<u8> = (0..100).map(|i| (i % 4) as u8).collect();
    let mut scores = SegmentationScores::new(6);
    scores.add(&truth, &truth).unwrap();
    assert_eq!(scores.iou(1), Some(1.0));
    assert_eq!(scores.iou(3), Some(1.0));
    assert_eq!(scores.mean_iou(), Some(1.0));
    assert_eq!(scores.pixel_accuracy(), Some(100.0));
    assert_eq!(scores.empty_classes(), vec![4, 5]);
}

#[test]
fn label_zero_pixels_count_in_union_only() {
    let mut scores = SegmentationScores::new(3);
    // Every pixel is unlabelled; class 1 is predicted on two of them.
    scores.add(&[1, 1, 0, 0], &[0, 0, 0, 0]).unwrap();
    assert_eq!(scores.intersection(1), 0);
    assert_eq!(scores.union(1), 2);
    assert_eq!(scores.iou(1), Some(0.0));
    assert_eq!(scores.iou(2), None);
    assert_eq!(scores.mean_iou(), Some(0.0));
    // Predicting 0 on 0 is a correct pixel.
    assert_eq!(scores.pixel_accuracy(), Some(50.0));
    // Class 0 itself is never scored.
    assert_eq!(scores.iou(0), None);
    assert_eq!(scores.union(0), 0);

    // A labelled pixel predicted as 0 adds to the label's union.
    let mut scores = SegmentationScores::new(3);
    scores.add(&[0, 2], &[2, 2]).unwrap();
    assert_eq!((scores.intersection(2), scores.union(2)), (1, 2));
}

#[test]
fn nothing_scored_yet() {
    let scores = SegmentationScores::new(151);
    assert_eq!(scores.mean_iou(), None);
    assert_eq!(scores.pixel_accuracy(), None);
    assert_eq!(scores.empty_classes().len(), 150);
    assert_eq!(scores.ious().len(), 150);
}

#[test]
fn merge_equals_adding_everything_to_one() {
    let a_pred = [1u8, 2, 2, 0, 3];
    let a_true = [1u8, 2, 0, 0, 1];
    let b_pred = [3u8, 3, 1];
    let b_true = [3u8, 2, 1];
    let mut one = SegmentationScores::new(4);
    one.add(&a_pred, &a_true).unwrap();
    one.add(&b_pred, &b_true).unwrap();
    let mut a = SegmentationScores::new(4);
    a.add(&a_pred, &a_true).unwrap();
    let mut b = SegmentationScores::new(4);
    b.add(&b_pred, &b_true).unwrap();
    a.merge(&b).unwrap();
    assert_eq!(a, one);
    assert!(a.merge(&SegmentationScores::new(5)).is_err());
}

#[test]
fn bad_input_is_an_error_and_changes_nothing() {
    let mut scores = SegmentationScores::new(3);
    scores.add(&[1, 2], &[1, 1]).unwrap();
    let before = scores.clone();
    let err = scores.add(&[1, 3], &[1, 1]).unwrap_err().to_string();
    assert!(
        err.contains("class 3") && err.contains("position 1"),
        "{err}"
    );
    assert!(scores.add(&[1, 1], &[1, 9]).is_err());
    assert!(scores.add(&[1], &[1, 1]).is_err());
    assert_eq!(scores, before);
}

/// Throughput of the fused upsample + argmax on the probe's real shape; run
/// with `cargo test --release -p sae-steer-metrics --test integration -- segmentation --ignored --nocapture`.
#[test]
#[ignore]
fn argmax_throughput() {
    let fx = Fixture::load();
    let logits = fx.f16("random.logits");
    let up = BilinearUpsampler::new(16, 16, 224, 224).unwrap();
    let mut pred = vec![0u8; 224 * 224];
    let n = 50;
    let start = std::time::Instant::now();
    for _ in 0..n {
        up.argmax(&logits, CLASSES, &mut pred).unwrap();
    }
    let per_image = start.elapsed().as_secs_f64() / n as f64;
    eprintln!(
        "upsample 151x16x16 -> 224x224 + argmax: {:.2} ms per image",
        per_image * 1e3
    );
}

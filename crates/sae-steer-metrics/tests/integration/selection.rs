//! F1 feature selection against a brute-force implementation on random
//! activations with ties, values equal to thresholds and excluded latents.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sae_steer_metrics::{F1Selector, FeatureChoice};

const D: usize = 16;
const CLASSES: usize = 5;
/// Includes values equal to the thresholds (which must not fire) and zeros.
const VALUES: [f32; 8] = [0.0, 0.0, 0.0, 0.1, 0.3, 0.5, 1.0, 2.0];

struct Data {
    activations: Vec<f32>,
    labels: Vec<u8>,
}

fn random_data(rng: &mut StdRng, n: usize) -> Data {
    let mut activations = vec![0f32; n * D];
    let labels: Vec<u8> = (0..n)
        .map(|_| rng.random_range(0..CLASSES as u8 - 1))
        .collect();
    for (i, row) in activations.chunks_exact_mut(D).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            // Latent 2j+... biased toward class j % CLASSES so some are good detectors.
            let boost = labels[i] as usize == j % CLASSES && rng.random_bool(0.6);
            *v = if boost {
                1.0
            } else {
                VALUES[rng.random_range(0..VALUES.len())]
            };
        }
        // Latents 13 and 14 are copies of 12 and 3: exact F1 ties.
        row[13] = row[12];
        row[14] = row[3];
    }
    Data {
        activations,
        labels,
    }
}

/// Straight from the definition, over all (threshold, latent) pairs, in f64.
fn brute_force(
    data: &Data,
    thresholds: &[f32],
    excluded: &[bool],
    class: usize,
) -> Vec<FeatureChoice> {
    let n = data.labels.len();
    let positives = data.labels.iter().filter(|&&l| l as usize == class).count() as u64;
    let mut per_latent = Vec::new();
    for (j, _) in excluded.iter().enumerate().filter(|(_, skip)| !**skip) {
        let mut best: Option<FeatureChoice> = None;
        for &t in thresholds {
            let mut tp = 0u64;
            let mut fires = 0u64;
            for i in 0..n {
                if data.activations[i * D + j] > t {
                    fires += 1;
                    tp += u64::from(data.labels[i] as usize == class);
                }
            }
            let f1 = 2.0 * tp as f64 / (fires + positives) as f64;
            if tp > 0 && best.is_none_or(|b| f1 > b.f1) {
                best = Some(FeatureChoice {
                    class,
                    latent: j,
                    threshold: t,
                    f1,
                    true_positives: tp,
                    fires,
                    positives,
                });
            }
        }
        per_latent.extend(best);
    }
    // Stable sort: equal F1 keeps the lower latent first.
    per_latent.sort_by(|a, b| b.f1.partial_cmp(&a.f1).unwrap());
    per_latent
}

#[test]
fn selection_matches_brute_force() {
    let mut rng = StdRng::seed_from_u64(11);
    let thresholds = F1Selector::DEFAULT_THRESHOLDS;
    for round in 0..10 {
        let data = random_data(&mut rng, 400);
        let mut excluded = vec![false; D];
        excluded[round % D] = true;
        excluded[5] = true;
        let mut sel = F1Selector::new(D, CLASSES, &thresholds, Some(&excluded)).unwrap();
        // Dense batches of uneven size.
        sel.add_dense(&data.activations[..150 * D], &data.labels[..150])
            .unwrap();
        sel.add_dense(&data.activations[150 * D..], &data.labels[150..])
            .unwrap();
        assert_eq!(sel.patches(), 400);

        for class in 0..CLASSES {
            let expected = brute_force(&data, &thresholds, &excluded, class);
            assert_eq!(sel.top_k(class, D), expected, "round {round} class {class}");
            assert_eq!(
                sel.top_k(class, 3),
                expected.iter().copied().take(3).collect::<Vec<_>>()
            );
            assert_eq!(sel.best(class), expected.first().copied());
        }
        // The last label never occurs: nothing to select.
        assert_eq!(sel.best(CLASSES - 1), None);
        assert_eq!(sel.best_per_class().len(), CLASSES);
        assert!(
            sel.best_per_class()
                .iter()
                .flatten()
                .all(|c| !excluded[c.latent])
        );
    }
}

#[test]
fn ties_go_to_lower_latent_then_lower_threshold() {
    // Latents 0 and 1 are identical perfect detectors of class 1; each fires
    // with value 2.0, so every threshold below 2 gives F1 = 1.
    let mut sel = F1Selector::new(2, 2, &[1.0, 0.0, 0.1], None).unwrap();
    sel.add_dense(&[2.0, 2.0, 0.0, 0.0, 2.0, 2.0], &[1, 0, 1])
        .unwrap();
    assert_eq!(sel.thresholds(), &[0.0, 0.1, 1.0]);
    let best = sel.best(1).unwrap();
    assert_eq!((best.latent, best.threshold, best.f1), (0, 0.0, 1.0));
    let top = sel.top_k(1, 5);
    assert_eq!(top.iter().map(|c| c.latent).collect::<Vec<_>>(), [0, 1]);
}

#[test]
fn sparse_input_equals_dense_input() {
    let mut rng = StdRng::seed_from_u64(3);
    let data = random_data(&mut rng, 200);
    let thresholds = [0.0, 0.25, 1.0];
    let mut dense = F1Selector::new(D, CLASSES, &thresholds, None).unwrap();
    dense.add_dense(&data.activations, &data.labels).unwrap();
    let mut sparse = F1Selector::new(D, CLASSES, &thresholds, None).unwrap();
    for (row, &label) in data.activations.chunks_exact(D).zip(&data.labels) {
        let (latents, values): (Vec<u32>, Vec<f32>) = row
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(j, &v)| (j as u32, v))
            .unzip();
        sparse.add_sparse(label, &latents, &values).unwrap();
    }
    for class in 0..CLASSES {
        assert_eq!(sparse.top_k(class, D), dense.top_k(class, D));
    }
    for t in 0..3 {
        for j in 0..D {
            assert_eq!(sparse.f1(t, j, 0), dense.f1(t, j, 0));
        }
    }
}

#[test]
fn merge_equals_one_pass() {
    let mut rng = StdRng::seed_from_u64(5);
    let data = random_data(&mut rng, 300);
    let t = F1Selector::DEFAULT_THRESHOLDS;
    let mut one = F1Selector::new(D, CLASSES, &t, None).unwrap();
    one.add_dense(&data.activations, &data.labels).unwrap();
    let mut a = F1Selector::new(D, CLASSES, &t, None).unwrap();
    a.add_dense(&data.activations[..100 * D], &data.labels[..100])
        .unwrap();
    let mut b = F1Selector::new(D, CLASSES, &t, None).unwrap();
    b.add_dense(&data.activations[100 * D..], &data.labels[100..])
        .unwrap();
    a.merge(&b).unwrap();
    for class in 0..CLASSES {
        assert_eq!(a.top_k(class, D), one.top_k(class, D));
    }
    let other = F1Selector::new(D, CLASSES, &[0.0], None).unwrap();
    assert!(a.merge(&other).is_err());
}

#[test]
fn bad_arguments_are_errors() {
    assert!(F1Selector::new(4, 2, &[-0.1], None).is_err());
    assert!(F1Selector::new(4, 2, &[f32::NAN], None).is_err());
    assert!(F1Selector::new(4, 2, &[], None).is_err());
    assert!(F1Selector::new(4, 2, &[0.0], Some(&[false; 3])).is_err());
    let mut sel = F1Selector::new(4, 2, &[0.0], None).unwrap();
    assert!(sel.add_dense(&[0.0; 7], &[0, 1]).is_err());
    assert!(sel.add_dense(&[0.0; 8], &[0, 2]).is_err());
    assert!(sel.add_sparse(0, &[4], &[1.0]).is_err());
    assert!(sel.add_sparse(0, &[1, 2], &[1.0]).is_err());
    assert_eq!(sel.patches(), 0);
    assert_eq!(sel.positives(0), 0);
}

/// Throughput on the published SAE's width with ~1% of latents firing; run
/// with `cargo test --release -p sae-steer-metrics --test integration -- selection --ignored --nocapture`.
#[test]
#[ignore]
fn selection_throughput() {
    let d = 24_576;
    let n = 1024;
    let mut rng = StdRng::seed_from_u64(1);
    let mut activations = vec![0f32; n * d];
    for v in activations.iter_mut() {
        if rng.random_bool(0.01) {
            *v = rng.random_range(0.0..3.0);
        }
    }
    let labels: Vec<u8> = (0..n).map(|_| rng.random_range(0..151)).collect();
    let mut sel = F1Selector::new(d, 151, &F1Selector::DEFAULT_THRESHOLDS, None).unwrap();
    let start = std::time::Instant::now();
    for _ in 0..5 {
        sel.add_dense(&activations, &labels).unwrap();
    }
    let per_patch = start.elapsed().as_secs_f64() / (5 * n) as f64;
    let start = std::time::Instant::now();
    let best = sel.best_per_class();
    eprintln!(
        "add_dense: {:.1} us per patch of {d} latents; best_per_class: {:.0} ms ({} classes chosen)",
        per_patch * 1e6,
        start.elapsed().as_secs_f64() * 1e3,
        best.iter().flatten().count()
    );
}

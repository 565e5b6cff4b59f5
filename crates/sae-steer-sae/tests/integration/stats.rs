//! Feature statistics: against a brute-force computation, through a file and a
//! resume, and against saev's own `visuals` output (scripts/make_sae_fixture.py).

use crate::common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use sae_steer_sae::{
    Activation, EncodeRule, FeatureStats, NO_IMAGE, Normalization, Sae, SaeConfig, SaeError,
    SaeWeights, StatsInfo,
};
use sae_steer_vit::{HostTensor, SafetensorsFile, TensorSource};

/// A deterministic stream of roughly standard-normal numbers.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f32 {
        // Sum of uniforms (Irwin-Hall): close enough to normal for test data.
        (0..4)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (self.0 >> 40) as f32 / (1u64 << 24) as f32
            })
            .sum::<f32>()
            * 1.7
            - 3.4
    }

    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

const D: usize = 8;
const S: usize = 24;
const N_PATCHES: usize = 5;

/// A small ReLU SAE with a normalization; latent 0 never fires, latent 1 always.
fn random_sae() -> Sae<B> {
    random_sae_with(Activation::Relu)
}

fn random_sae_with(activation: Activation) -> Sae<B> {
    let mut noise = Noise(7);
    let mut b_enc = noise.vec(S, 0.3);
    b_enc[0] = -100.0;
    b_enc[1] = 100.0;
    let weights = SaeWeights {
        config: SaeConfig {
            d_model: D,
            d_sae: S,
            activation,
            encode: EncodeRule::CentreOnDecoderBias,
            vit: None,
            layer: None,
        },
        w_enc: HostTensor::new(vec![D, S], noise.vec(D * S, 0.5)),
        b_enc: HostTensor::new(vec![S], b_enc),
        w_dec: HostTensor::new(vec![S, D], noise.vec(S * D, 0.3)),
        b_dec: HostTensor::new(vec![D], noise.vec(D, 0.2)),
        threshold: None,
        norm: Some(Normalization {
            mean: noise.vec(D, 1.0),
            scalar: 1.7,
        }),
    };
    Sae::from_weights(weights, &Default::default())
}

fn images_tensor(data: &[f32], b: usize) -> Tensor<B, 3> {
    Tensor::from_data(
        TensorData::new(data.to_vec(), [b, N_PATCHES, D]),
        &Default::default(),
    )
}

/// Runs the statistics over `x` ([n_images * N_PATCHES * D]) in the given batches.
fn accumulate(stats: &mut FeatureStats, sae: &Sae<B>, x: &[f32], ids: &[u32], batches: &[usize]) {
    let per_image = N_PATCHES * D;
    let mut start = 0;
    for &b in batches {
        stats
            .update(
                sae,
                images_tensor(&x[start * per_image..(start + b) * per_image], b),
                &ids[start..start + b],
            )
            .unwrap();
        start += b;
    }
}

fn info() -> StatsInfo {
    StatsInfo {
        sae: "random.safetensors".into(),
        reference: "17 noise images".into(),
        fingerprint: "abc123".into(),
        normalization: "checkpoint".into(),
    }
}

struct Data {
    x: Vec<f32>,
    ids: Vec<u32>,
}

fn data(n_images: usize) -> Data {
    let mut noise = Noise(99);
    Data {
        x: noise.vec(n_images * N_PATCHES * D, 2.0),
        // Ids are not positions: the statistics must keep the ids given.
        ids: (0..n_images as u32).map(|i| 1000 + 7 * i).collect(),
    }
}

const BATCHES: [usize; 5] = [3, 1, 5, 2, 6];

#[test]
fn statistics_match_a_brute_force_computation() {
    let sae = random_sae();
    let n_images: usize = BATCHES.iter().sum();
    let Data { x, ids } = data(n_images);
    let k = 4;
    let mut stats = FeatureStats::new(S, k, N_PATCHES, info()).unwrap();
    accumulate(&mut stats, &sae, &x, &ids, &BATCHES);
    assert_eq!(stats.n_images(), Some(n_images as u64));

    // Every patch at once, then the statistics by plain loops.
    let all = images_tensor(&x, n_images).reshape([n_images * N_PATCHES, D]);
    let f = host(sae.encode(sae.normalize(all))).data; // [images * patches, S]
    let at = |img: usize, p: usize, j: usize| f[(img * N_PATCHES + p) * S + j];
    let total = (n_images * N_PATCHES) as f32;
    let mut some_full_list = false;
    for j in 0..S {
        let values: Vec<f32> = (0..n_images)
            .flat_map(|i| (0..N_PATCHES).map(move |p| (i, p)))
            .map(|(i, p)| at(i, p, j))
            .collect();
        let active: Vec<f32> = values.iter().copied().filter(|v| *v > 0.0).collect();
        let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!(
            (stats.max_obs(j) - max).abs() <= 1e-6 * max.abs().max(1.0),
            "max {j}"
        );
        assert_eq!(
            stats.frequency(j),
            active.len() as f32 / total,
            "frequency {j}"
        );
        let mean = if active.is_empty() {
            0.0
        } else {
            active.iter().map(|v| f64::from(*v)).sum::<f64>() as f32 / active.len() as f32
        };
        assert!(
            (stats.mean_active(j) - mean).abs() <= 1e-5 * mean.abs().max(1.0),
            "mean {j}: {} vs {mean}",
            stats.mean_active(j)
        );

        let mut by_max: Vec<(usize, f32)> = (0..n_images)
            .map(|i| {
                let m = (0..N_PATCHES)
                    .map(|p| at(i, p, j))
                    .fold(f32::NEG_INFINITY, f32::max);
                (i, m)
            })
            .filter(|(_, m)| *m > 0.0)
            .collect();
        by_max.sort_by(|a, b| b.1.total_cmp(&a.1));
        by_max.truncate(k);
        let top = stats.top_images(j);
        assert_eq!(
            top.iter().map(|e| e.image).collect::<Vec<_>>(),
            by_max.iter().map(|(i, _)| ids[*i]).collect::<Vec<_>>(),
            "top images of latent {j}"
        );
        some_full_list |= top.len() == k;
        for (e, (i, m)) in top.iter().zip(&by_max) {
            assert!((e.value - m).abs() <= 1e-6 * m.max(1.0), "value {j}");
            for (p, v) in e.patch_values().iter().enumerate() {
                let want = at(*i, p, j);
                // f16 keeps 11 significant bits.
                assert!(
                    (v - want).abs() <= 1e-3 * want.abs().max(0.1),
                    "patch {j}/{p}"
                );
            }
        }
    }
    assert!(some_full_list, "the test data never fills a top-k list");

    // The latents forced to extremes.
    assert_eq!(stats.max_obs(0), 0.0);
    assert_eq!(stats.frequency(0), 0.0);
    assert_eq!(stats.mean_active(0), 0.0);
    assert!(stats.top_images(0).is_empty());
    assert!(!stats.is_frequent(0));
    assert_eq!(stats.frequency(1), 1.0);
    assert!(stats.is_frequent(1));
    assert_eq!(stats.top_images(1).len(), k);
}

#[test]
fn topk_statistics_count_only_positive_values() {
    // A small k keeps negative pre-activations on many rows (saev's TopK has
    // no ReLU): they are neither "active" nor part of the mean.
    let mut sae = random_sae_with(Activation::Topk { k: 3 });
    sae.b_enc = sae.b_enc.clone().sub_scalar(3.0);
    let Data { x, ids } = data(6);
    let mut stats = FeatureStats::new(S, 2, N_PATCHES, info()).unwrap();
    accumulate(&mut stats, &sae, &x, &ids, &[4, 2]);
    let all = images_tensor(&x, 6).reshape([6 * N_PATCHES, D]);
    let f = host(sae.encode(sae.normalize(all))).data;
    let mut saw_negative = false;
    for j in 0..S {
        let column: Vec<f32> = f.iter().skip(j).step_by(S).copied().collect();
        saw_negative |= column.iter().any(|v| *v < 0.0);
        let active: Vec<f32> = column.iter().copied().filter(|v| *v > 0.0).collect();
        assert_eq!(
            stats.frequency(j),
            active.len() as f32 / column.len() as f32
        );
        let mean = if active.is_empty() {
            0.0
        } else {
            active.iter().sum::<f32>() / active.len() as f32
        };
        assert!(
            (stats.mean_active(j) - mean).abs() <= 1e-5 * mean.max(1.0),
            "{j}"
        );
    }
    assert!(
        saw_negative,
        "the test data should hold negative TopK values"
    );
}

#[test]
fn batching_does_not_change_the_result() {
    let sae = random_sae();
    let Data { x, ids } = data(17);
    let mut a = FeatureStats::new(S, 3, N_PATCHES, info()).unwrap();
    accumulate(&mut a, &sae, &x, &ids, &BATCHES);
    let mut b = FeatureStats::new(S, 3, N_PATCHES, info()).unwrap();
    accumulate(&mut b, &sae, &x, &ids, &[1; 17]);
    assert_eq!(a.frequencies(), b.frequencies());
    assert_eq!(a.max_values(), b.max_values());
    for j in 0..S {
        let ids_a: Vec<u32> = a.top_images(j).iter().map(|e| e.image).collect();
        let ids_b: Vec<u32> = b.top_images(j).iter().map(|e| e.image).collect();
        assert_eq!(ids_a, ids_b, "latent {j}");
    }
}

#[test]
fn save_load_round_trip_and_resume_equal_one_pass() {
    let sae = random_sae();
    let Data { x, ids } = data(17);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.safetensors");

    let mut one_pass = FeatureStats::new(S, 4, N_PATCHES, info()).unwrap();
    accumulate(&mut one_pass, &sae, &x, &ids, &BATCHES);

    let mut first = FeatureStats::new(S, 4, N_PATCHES, info()).unwrap();
    accumulate(&mut first, &sae, &x, &ids, &BATCHES[..2]);
    first.save(&path).unwrap();
    let mut resumed = FeatureStats::load(&path).unwrap();
    assert_eq!(resumed, first);
    assert!(resumed.can_update());
    let done: usize = BATCHES[..2].iter().sum();
    let per_image = N_PATCHES * D;
    accumulate(
        &mut resumed,
        &sae,
        &x[done * per_image..],
        &ids[done..],
        &BATCHES[2..],
    );
    assert_eq!(resumed, one_pass);

    one_pass.save(&path).unwrap();
    assert_eq!(FeatureStats::load(&path).unwrap(), one_pass);
    // Written through a temporary name: nothing else is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // The documented layout, readable by any safetensors reader.
    let file = SafetensorsFile::open(&path).unwrap();
    let meta = file.metadata().unwrap();
    assert_eq!(meta["format"], "sae-steer-stats/1");
    assert_eq!(meta["n_images"], "17");
    assert_eq!(meta["n_patches"], "5");
    assert_eq!(meta["top_k"], "4");
    assert_eq!(meta["fingerprint"], "abc123");
    assert_eq!(meta["normalization"], "checkpoint");
    assert_eq!(file.shape("max").unwrap(), [S]);
    assert_eq!(file.shape("top_images").unwrap(), [S, 4]);
    assert_eq!(file.shape("top_patches").unwrap(), [S, 4, N_PATCHES]);
    // f16 patches widen to what the struct holds.
    let patches = file.read("top_patches").unwrap();
    let top = one_pass.top_images(2);
    assert_eq!(
        &patches.data[2 * 4 * N_PATCHES..2 * 4 * N_PATCHES + N_PATCHES],
        &top[0].patch_values()[..]
    );
}

#[test]
fn reads_saev_visuals_output_and_agrees_with_our_statistics() {
    let saev = FeatureStats::load_saev(fixture("stats_saev"), StatsInfo::default()).unwrap();
    assert_eq!((saev.d_sae(), saev.k(), saev.n_patches()), (64, 5, 6));
    assert_eq!(saev.n_images(), None);
    assert!(!saev.can_update());

    // Our statistics on the same activations with the same SAE and normalization.
    let (sae, _) = Sae::<B>::load(fixture("stats_sae.pt"), &Default::default())
        .unwrap()
        .resolve(sae_steer_sae::NormalizationSource::File(fixture(
            "stats_norm.safetensors",
        )))
        .unwrap();
    let x = SafetensorsFile::open(fixture("stats_input.safetensors"))
        .unwrap()
        .read("x")
        .unwrap();
    let [n_images, n, d] = x.shape[..] else {
        panic!("x shape {:?}", x.shape)
    };
    let mut ours = FeatureStats::new(64, 5, n, StatsInfo::default()).unwrap();
    let ids: Vec<u32> = (0..n_images as u32).collect();
    // Batches of 3 images where saev used 4: the result must not care.
    for start in (0..n_images).step_by(3) {
        let b = 3.min(n_images - start);
        let t = Tensor::<B, 3>::from_data(
            TensorData::new(
                x.data[start * n * d..(start + b) * n * d].to_vec(),
                [b, n, d],
            ),
            &Default::default(),
        );
        ours.update(&sae, t, &ids[start..start + b]).unwrap();
    }

    let mut had_repeats = false;
    for j in 0..64 {
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
        assert!(close(saev.max_obs(j), ours.max_obs(j)), "max {j}");
        assert!(close(saev.frequency(j), ours.frequency(j)), "frequency {j}");
        assert!(
            close(saev.mean_active(j), ours.mean_active(j)),
            "mean {j}: {} vs {}",
            saev.mean_active(j),
            ours.mean_active(j)
        );
        // saev's list may repeat an image and so hold fewer distinct ones:
        // after dropping repeats it is a prefix of ours.
        let theirs = saev.top_images(j);
        let mine = ours.top_images(j);
        had_repeats |= !theirs.is_empty() && theirs.len() < mine.len();
        assert!(theirs.len() <= mine.len(), "latent {j}");
        for (t, m) in theirs.iter().zip(&mine) {
            assert_eq!(t.image, m.image, "latent {j}");
            assert!(close(t.value, m.value), "latent {j} value");
            assert_eq!(t.patches, m.patches, "latent {j} patches");
        }
        if ours.max_obs(j) > 0.0 {
            assert!(
                !theirs.is_empty(),
                "latent {j} fires but saev lists nothing"
            );
        }
    }
    assert!(
        had_repeats,
        "the fixture should exercise saev's repeated images"
    );
    // Latent 0 never fires: saev's NaN mean and all-zero slots become 0 and empty.
    assert_eq!(saev.mean_active(0), 0.0);
    assert!(saev.top_images(0).is_empty());
    assert_eq!(saev.max_obs(0), 0.0);
    assert!(saev.is_frequent(1));
}

#[test]
fn bad_inputs_and_files_are_named_errors() {
    let sae = random_sae();
    let mut stats = FeatureStats::new(S, 2, N_PATCHES, info()).unwrap();
    let x = images_tensor(&data(2).x, 2);
    let msg = |e: SaeError| e.to_string();

    let e = msg(stats.update(&sae, x.clone(), &[1]).unwrap_err());
    assert!(e.contains("1 image ids for a batch of 2"), "{e}");
    let e = msg(stats.update(&sae, x.clone(), &[1, NO_IMAGE]).unwrap_err());
    assert!(e.contains("reserved"), "{e}");
    let wrong_patches = Tensor::<B, 3>::zeros([1, N_PATCHES + 1, D], &Default::default());
    let e = msg(stats.update(&sae, wrong_patches, &[1]).unwrap_err());
    assert!(e.contains("6 patches"), "{e}");
    let wrong_width = Tensor::<B, 3>::zeros([1, N_PATCHES, D + 1], &Default::default());
    let e = msg(stats.update(&sae, wrong_width, &[1]).unwrap_err());
    assert!(e.contains("width 9"), "{e}");
    let mut other = FeatureStats::new(S + 1, 2, N_PATCHES, info()).unwrap();
    let e = msg(other.update(&sae, x.clone(), &[1, 2]).unwrap_err());
    assert!(e.contains("24 latents"), "{e}");
    assert!(FeatureStats::new(S, 0, N_PATCHES, info()).is_err());
    // Failed updates changed nothing.
    assert_eq!(stats.n_images(), Some(0));

    let mut saev = FeatureStats::load_saev(fixture("stats_saev"), StatsInfo::default()).unwrap();
    let e = msg(saev.update(&sae, x, &[1, 2]).unwrap_err());
    assert!(e.contains("saev"), "{e}");

    // Missing saev folder / files name the file.
    let dir = tempfile::tempdir().unwrap();
    let e = msg(FeatureStats::load_saev(dir.path(), StatsInfo::default()).unwrap_err());
    assert!(e.contains("top_values.pt"), "{e}");
    // A state dict (an SAE checkpoint) is not a bare tensor.
    std::fs::copy(fixture("missing_w_dec.pt"), dir.path().join("x.pt")).unwrap();
    let zip_only = dir.path().join("top_values.pt");
    let bytes = std::fs::read(dir.path().join("x.pt")).unwrap();
    let newline = bytes.iter().position(|b| *b == b'\n').unwrap();
    std::fs::write(&zip_only, &bytes[newline + 1..]).unwrap();
    let e = msg(FeatureStats::load_saev(dir.path(), StatsInfo::default()).unwrap_err());
    assert!(
        e.contains("top_values.pt") && e.contains("not a single tensor"),
        "{e}"
    );

    // Our loader refuses other safetensors files, naming the file.
    let e = msg(FeatureStats::load(fixture("norm.safetensors")).unwrap_err());
    assert!(
        e.contains("norm.safetensors") && e.contains("format"),
        "{e}"
    );
    let truncated = dir.path().join("cut.safetensors");
    let mut good = FeatureStats::new(S, 2, N_PATCHES, info()).unwrap();
    accumulate(&mut good, &sae, &data(3).x, &[1, 2, 3], &[3]);
    good.save(&truncated).unwrap();
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    let e = msg(FeatureStats::load(&truncated).unwrap_err());
    assert!(e.contains("cut.safetensors"), "{e}");
}

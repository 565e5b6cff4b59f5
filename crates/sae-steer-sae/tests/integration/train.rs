//! SAE training: recovery of a known sparse dictionary, the pieces of the
//! saev recipe, gradients against autodiff, resume, sweeps, the shard reader.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Int, Tensor, TensorData};
use sae_steer_sae::train::{
    self, NormalizationPlan, RunOptions, SaeParams, SaeSpec, SplitMix64, TrainConfig, Trainer,
    TrainingData, objective_gradients, remove_parallel_grad, warmup,
};
use sae_steer_sae::{Activation, EncodeRule, Sae, SaeError, SaeWeights};
use sae_steer_testkit::RecordingProgress;
use sae_steer_vit::{SafetensorsFile, TensorSource};

type B = NdArray<f32>;
type AD = Autodiff<NdArray<f32>>;

/// `m` random unit directions in `d` dimensions.
fn dictionary(d: usize, m: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64::new(seed);
    (0..m)
        .map(|_| {
            let v: Vec<f32> = (0..d).map(|_| rng.normal()).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect()
        })
        .collect()
}

/// `n` rows, each a sum of `active` distinct dictionary atoms with
/// coefficients in [0.5, 1.5) plus N(0, noise^2) noise, offset by a constant
/// vector (so normalisation has a mean to remove).
fn sparse_rows(dict: &[Vec<f32>], n: usize, active: usize, noise: f32, seed: u64) -> Vec<f32> {
    let d = dict[0].len();
    let mut rng = SplitMix64::new(seed);
    let mut rows = Vec::with_capacity(n * d);
    for _ in 0..n {
        let mut row: Vec<f32> = (0..d)
            .map(|i| 3.0 + 0.1 * i as f32 + noise * rng.normal())
            .collect();
        let mut chosen = Vec::new();
        while chosen.len() < active {
            let j = rng.below(dict.len());
            if !chosen.contains(&j) {
                chosen.push(j);
            }
        }
        for j in chosen {
            let c = rng.uniform(0.5, 1.5);
            for (r, a) in row.iter_mut().zip(&dict[j]) {
                *r += c * a;
            }
        }
        rows.extend(row);
    }
    rows
}

/// A fixed data set read in batches, each pass in a seed-given order.
#[derive(Clone)]
struct Rows {
    data: Vec<f32>,
    d: usize,
}

impl Rows {
    fn n(&self) -> usize {
        self.data.len() / self.d
    }

    fn pass(
        &self,
        seed: u64,
        batch: usize,
    ) -> impl Iterator<Item = Result<Vec<f32>, Infallible>> + use<> {
        let mut order: Vec<usize> = (0..self.n()).collect();
        SplitMix64::new(seed).shuffle(&mut order);
        let (data, d) = (self.data.clone(), self.d);
        let batches: Vec<Vec<f32>> = order
            .chunks(batch)
            .map(|c| {
                c.iter()
                    .flat_map(|&r| data[r * d..(r + 1) * d].to_vec())
                    .collect()
            })
            .collect();
        batches.into_iter().map(Ok)
    }

    fn source(&self) -> impl FnMut(u64, usize) -> Result<Pass, Infallible> + use<> {
        let rows = self.clone();
        move |seed, batch| Ok(rows.pass(seed, batch).collect::<Vec<_>>().into_iter())
    }
}

type Pass = std::vec::IntoIter<Result<Vec<f32>, Infallible>>;

fn base_config(d: usize, saes: Vec<SaeSpec>) -> TrainConfig {
    let mut c = TrainConfig::saev(d, saes);
    c.batch_size = 256;
    c.total_tokens = 256 * 40;
    c.lr_warmup_steps = 10;
    c.init_samples = 4096;
    c.dead_tokens = 256 * 50;
    c.log_every = 10;
    c.checkpoint_every = 20;
    c
}

fn named(mut s: SaeSpec, name: &str, seed: u64) -> SaeSpec {
    s.name = name.into();
    s.seed = seed;
    s
}

/// Share of true atoms whose best-matching decoder row has cosine > 0.9.
fn recovered(dict: &[Vec<f32>], w: &SaeWeights) -> f64 {
    let d = w.config.d_model;
    let rows: Vec<&[f32]> = w.w_dec.data.chunks(d).collect();
    let hits = dict
        .iter()
        .filter(|atom| {
            rows.iter()
                .map(|r| {
                    let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
                    r.iter().zip(atom.iter()).map(|(a, b)| a * b).sum::<f32>() / n
                })
                .fold(f32::MIN, f32::max)
                > 0.9
        })
        .count();
    hits as f64 / dict.len() as f64
}

/// Normalised MSE of a saved SAE on `rows`, through the inference path.
fn held_out_nmse(path: &Path, rows: &Rows) -> f64 {
    prefix_nmse(path, rows, usize::MAX)
}

/// [`held_out_nmse`] of the reconstruction from the first `m` latents only.
fn prefix_nmse(path: &Path, rows: &Rows, m: usize) -> f64 {
    let device = Default::default();
    let (sae, _) = Sae::<B>::load(path, &device)
        .unwrap()
        .resolve(sae_steer_sae::NormalizationSource::Checkpoint)
        .unwrap();
    let x = Tensor::<B, 2>::from_data(
        TensorData::new(rows.data.clone(), [rows.n(), rows.d]),
        &device,
    );
    let x_n = sae.normalize(x);
    let f = sae.encode(x_n.clone());
    let [n, s] = f.dims();
    let f = if m < s {
        f.slice([0..n, 0..m])
            .pad((0, s - m, 0, 0), burn::tensor::ops::PadMode::Constant(0.0))
    } else {
        f
    };
    let x_hat = sae.decode(f);
    let sse: f32 = (x_hat - x_n.clone()).square().sum().into_scalar();
    let sst: f32 = (x_n.clone() - x_n.mean_dim(0)).square().sum().into_scalar();
    f64::from(sse / sst)
}

/// 64 true unit directions in 32 dimensions, 3 active per row: SAEs of
/// width 128 trained on 16,384 such rows for 2000 steps of 256.
struct DictionaryRun {
    dict: Vec<Vec<f32>>,
    test_rows: Rows,
    config: TrainConfig,
    report: train::TrainReport,
    _dir: tempfile::TempDir,
}

impl DictionaryRun {
    fn train(saes: Vec<SaeSpec>, options: &RunOptions) -> Self {
        let (d, m) = (32, 64);
        let dict = dictionary(d, m, 1);
        let train_rows = Rows {
            data: sparse_rows(&dict, 16_384, 3, 0.01, 2),
            d,
        };
        let test_rows = Rows {
            data: sparse_rows(&dict, 2048, 3, 0.01, 3),
            d,
        };
        let mut config = base_config(d, saes);
        config.total_tokens = 256 * 2000;
        config.lr_warmup_steps = 100;
        config.log_every = 500;
        config.checkpoint_every = 10_000;
        let dir = tempfile::tempdir().unwrap();
        let mut data = train_rows.source();
        let report =
            train::train::<B>(&config, &mut data, dir.path(), &Default::default(), options)
                .unwrap();
        Self {
            dict,
            test_rows,
            config,
            report,
            _dir: dir,
        }
    }
}

#[test]
fn recovers_a_sparse_dictionary() {
    // ReLU + L1 and TopK (k = 3) trained in one sweep must both find them.
    let d = 32;
    let relu = named(SaeSpec::relu(128, 3e-3, 2e-2), "relu", 7);
    let topk = named(SaeSpec::topk(d, 128, 3, 3e-3), "topk", 8);
    let recorder = Arc::new(RecordingProgress::new());
    let run = DictionaryRun::train(
        vec![relu, topk],
        &RunOptions {
            progress: recorder.clone().into(),
        },
    );
    let (dict, test_rows, config, report) = (&run.dict, &run.test_rows, &run.config, &run.report);
    assert_eq!(report.steps, 2000);
    // One phase of every step; with two SAEs, a line per SAE at each of the
    // four logging steps, then where the run ended.
    let phases = recorder.phases();
    assert_eq!(phases.len(), 1, "{phases:?}");
    assert_eq!(
        (phases[0].what.as_str(), phases[0].total, phases[0].done),
        ("training SAEs", 2000, 0)
    );
    assert!(phases[0].is_complete(), "{phases:?}");
    let notes = recorder.notes();
    assert_eq!(notes.len(), 4 * 2 + 1, "{notes:?}");
    assert!(notes[8].starts_with("trained 2000 steps"), "{notes:?}");
    for (spec, path) in config.saes.iter().zip(&report.checkpoints) {
        let w = SaeWeights::load(path).unwrap();
        let share = recovered(dict, &w);
        let nmse = held_out_nmse(path, test_rows);
        let m = report.metrics.iter().find(|m| m.sae == spec.name).unwrap();
        eprintln!(
            "{}: recovered {share:.3}, held-out nmse {nmse:.4}, L0 {:.2}, train nmse {:.4}",
            spec.name, m.l0, m.nmse
        );
        assert!(
            share >= 0.8,
            "{}: only {share} of the atoms recovered",
            spec.name
        );
        assert!(nmse < 0.1, "{}: held-out normalised MSE {nmse}", spec.name);
        assert!(
            m.nmse < 0.1,
            "{}: training normalised MSE {}",
            spec.name,
            m.nmse
        );
    }
    let topk = report.metrics.iter().find(|m| m.sae == "topk").unwrap();
    assert!(
        (topk.l0 - 3.0).abs() < 1e-6,
        "TopK keeps exactly k latents: {}",
        topk.l0
    );
    // The ReLU SAE must actually be sparse: far fewer than its 128 latents.
    let relu = report.metrics.iter().find(|m| m.sae == "relu").unwrap();
    assert!(relu.l0 < 32.0, "ReLU L0 {}", relu.l0);
}

#[test]
fn batch_topk_and_matryoshka_recover_a_sparse_dictionary() {
    // BatchTopK (k = 3 on average) alone and with the Matryoshka objective
    // (saev's 10 prefixes).
    let d = 32;
    let batch = named(SaeSpec::batch_topk(d, 128, 3, 3e-3), "batchtopk", 9);
    let matryoshka = named(
        SaeSpec::batch_topk(d, 128, 3, 3e-3).with_matryoshka(10),
        "matryoshka",
        10,
    );
    let run = DictionaryRun::train(vec![batch, matryoshka], &RunOptions::default());
    let (dict, test_rows, config, report) = (&run.dict, &run.test_rows, &run.config, &run.report);
    let mut first16: Vec<f64> = Vec::new();
    for (spec, path) in config.saes.iter().zip(&report.checkpoints) {
        let w = SaeWeights::load(path).unwrap();
        // Used as saev uses a BatchTopK SAE: a JumpReLU at the running threshold.
        let Activation::JumpRelu { threshold } = w.config.activation else {
            panic!("{}: saved as {:?}", spec.name, w.config.activation)
        };
        assert!(threshold > 0.0, "{}: threshold {threshold}", spec.name);
        let share = recovered(dict, &w);
        let nmse = held_out_nmse(path, test_rows);
        let prefix = prefix_nmse(path, test_rows, 16);
        first16.push(prefix);
        let metrics = report.metrics.iter().find(|r| r.sae == spec.name).unwrap();
        eprintln!(
            "{}: recovered {share:.3}, held-out nmse {nmse:.4} (JumpReLU at {threshold:.4}), \
             from the first 16 latents {prefix:.4}, train L0 {:.2}",
            spec.name, metrics.l0
        );
        // k per row on average over each batch.
        assert!(
            (metrics.l0 - 3.0).abs() < 0.05,
            "{}: L0 {}",
            spec.name,
            metrics.l0
        );
        // Matryoshka spends latents on the coarse features its short prefixes
        // need (this dictionary has no hierarchy to offer), so at k = 3 it
        // recovers fewer atoms (measured 0.78-0.80) and reconstructs less
        // well at full width.
        let (min_share, max_nmse) = if spec.matryoshka_prefixes > 1 {
            (0.7, 0.2)
        } else {
            (0.8, 0.1)
        };
        assert!(
            share >= min_share,
            "{}: only {share} of the atoms recovered",
            spec.name
        );
        assert!(
            nmse < max_nmse,
            "{}: held-out normalised MSE {nmse}",
            spec.name
        );
    }
    // What Matryoshka is for: its first latents reconstruct on their own.
    let [plain, matryoshka] = first16[..] else {
        panic!("two SAEs")
    };
    assert!(
        matryoshka < 0.8 * plain,
        "first 16 latents: Matryoshka nmse {matryoshka} vs plain {plain}"
    );
}

fn random_vec(len: usize, scale: f32, rng: &mut SplitMix64) -> Vec<f32> {
    (0..len).map(|_| scale * rng.normal()).collect()
}

fn ad_tensor<const D: usize>(data: &[f32], shape: [usize; D]) -> Tensor<AD, D> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), &Default::default()).require_grad()
}

fn host_of<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

/// `|a - b| <= tol * max|b|` over the whole tensor.
fn assert_grad_close(what: &str, ours: &[f32], reference: &[f32]) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        assert!(
            (a - b).abs() <= 2e-5 * scale,
            "{what}[{i}]: ours {a}, autodiff {b} (scale {scale})"
        );
    }
}

/// The objective written with burn's autodiff, independently of the crate's
/// hand-written backward pass; returns the loss and the four gradients.
#[allow(clippy::too_many_arguments)]
fn autodiff_reference(
    spec: &SaeSpec,
    l1: f64,
    x: &[f32],
    (n, d, s): (usize, usize, usize),
    w_enc: &[f32],
    b_enc: &[f32],
    w_dec: &[f32],
    b_dec: &[f32],
    dead: &[i64],
    ends: &[usize],
) -> (f32, [Vec<f32>; 4]) {
    let device = Default::default();
    let x = Tensor::<AD, 2>::from_data(TensorData::new(x.to_vec(), [n, d]), &device);
    let (we, be, wd, bd) = (
        ad_tensor(w_enc, [d, s]),
        ad_tensor(b_enc, [s]),
        ad_tensor(w_dec, [s, d]),
        ad_tensor(b_dec, [d]),
    );
    let xc = match spec.encode {
        EncodeRule::CentreOnDecoderBias => x.clone() - bd.clone().unsqueeze_dim(0),
        EncodeRule::Plain => x.clone(),
    };
    let h = xc.matmul(we.clone()) + be.clone().unsqueeze_dim(0);
    let topk_mask = |h: &Tensor<AD, 2>, k: usize| {
        let v = h.clone().detach();
        let [rows, cols] = v.dims();
        let kth = if k >= cols {
            v.clone().min_dim(1)
        } else {
            v.clone().sort_descending(1).narrow(1, k - 1, 1)
        };
        v.greater_equal(kth.expand([rows, cols]))
    };
    let f = match spec.activation {
        Activation::Relu => burn::tensor::activation::relu(h.clone()),
        // BatchTopK: the k n largest of the flattened batch.
        Activation::Topk { k } if spec.batch_topk => {
            let flat = h.clone().reshape([1, n * s]);
            let keep = topk_mask(&flat, k * n).reshape([n, s]);
            h.clone().mask_fill(keep.bool_not(), 0.0)
        }
        Activation::Topk { k } => h.clone().mask_fill(topk_mask(&h, k).bool_not(), 0.0),
        Activation::JumpRelu { .. } | Activation::TopkRelu { .. } => unreachable!(),
    };
    let x_hat = f.clone().matmul(wd.clone()) + bd.clone().unsqueeze_dim(0);
    let nd = (n * d) as f64;
    // Matryoshka: the mean over prefixes of the MSE from the first `end` latents.
    let mse = if ends.len() > 1 {
        ends.iter()
            .map(|&end| {
                let part = f
                    .clone()
                    .slice([0..n, 0..end])
                    .matmul(wd.clone().slice([0..end, 0..d]))
                    + bd.clone().unsqueeze_dim(0);
                (part - x.clone()).square().sum().div_scalar(nd)
            })
            .reduce(|a, b| a + b)
            .unwrap()
            .div_scalar(ends.len() as f64)
    } else {
        (x_hat.clone() - x.clone()).square().sum().div_scalar(nd)
    };
    let mut loss = mse + f.abs().sum().div_scalar(n as f64).mul_scalar(l1);
    if !dead.is_empty() {
        let idx =
            Tensor::<AD, 1, Int>::from_data(TensorData::new(dead.to_vec(), [dead.len()]), &device);
        let h_dead = h.select(1, idx.clone());
        let f_aux = h_dead
            .clone()
            .mask_fill(topk_mask(&h_dead, spec.aux_k).bool_not(), 0.0);
        let e_aux = f_aux.matmul(wd.clone().select(0, idx));
        let target = x - x_hat.detach();
        let aux = (e_aux - target).square().sum().div_scalar(nd);
        loss = loss + aux.mul_scalar(spec.aux_coeff);
    }
    let value: f32 = loss.clone().into_scalar();
    let grads = loss.backward();
    let g = |t: Vec<f32>| t;
    (
        value,
        [
            g(we.grad(&grads).unwrap().into_data().into_vec().unwrap()),
            g(be.grad(&grads).unwrap().into_data().into_vec().unwrap()),
            g(wd.grad(&grads).unwrap().into_data().into_vec().unwrap()),
            g(bd.grad(&grads).unwrap().into_data().into_vec().unwrap()),
        ],
    )
}

#[test]
fn hand_written_gradients_match_autodiff() {
    let (n, d, s) = (16, 6, 12);
    let mut rng = SplitMix64::new(11);
    let x = random_vec(n * d, 1.0, &mut rng);
    let w_enc = random_vec(d * s, 0.5, &mut rng);
    let b_enc = random_vec(s, 0.1, &mut rng);
    let mut w_dec = random_vec(s * d, 1.0, &mut rng);
    for row in w_dec.chunks_mut(d) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let b_dec = random_vec(d, 0.2, &mut rng);

    let mut topk = SaeSpec::topk(d, s, 3, 1e-3);
    topk.aux_k = 2;
    topk.aux_coeff = 0.5;
    let mut batch = topk.clone();
    batch.batch_topk = true;
    let matryoshka = SaeSpec::relu(s, 1e-3, 0.0).with_matryoshka(3);
    let cases = [
        (SaeSpec::relu(s, 1e-3, 0.0), EncodeRule::Plain, 0.1, vec![]),
        (batch.clone(), EncodeRule::Plain, 0.0, vec![1i64, 4, 7, 9]),
        (
            batch.clone().with_matryoshka(4),
            EncodeRule::CentreOnDecoderBias,
            0.0,
            vec![2i64, 3],
        ),
        (matryoshka, EncodeRule::CentreOnDecoderBias, 0.05, vec![]),
        (
            SaeSpec::relu(s, 1e-3, 0.0),
            EncodeRule::CentreOnDecoderBias,
            0.05,
            vec![],
        ),
        (topk.clone(), EncodeRule::Plain, 0.0, vec![1i64, 4, 7, 9]),
        (
            topk.clone(),
            EncodeRule::CentreOnDecoderBias,
            0.01,
            vec![0i64, 5, 6, 10, 11],
        ),
        // Fewer dead latents than aux_k: AuxK uses all of them.
        (topk.clone(), EncodeRule::Plain, 0.0, vec![3i64]),
        // Every latent dead (the path without gather/scatter).
        (topk, EncodeRule::Plain, 0.0, (0..s as i64).collect()),
    ];
    let device = Default::default();
    for (mut spec, encode, l1, dead) in cases {
        spec.encode = encode;
        // Fixed prefix ends for the Matryoshka cases (the trainer draws them).
        let ends: Vec<usize> = match spec.matryoshka_prefixes {
            0 | 1 => vec![],
            3 => vec![2, 7, s],
            _ => vec![1, 4, 9, s],
        };
        let what = format!(
            "{:?} batch {} ends {ends:?} {encode:?} l1 {l1} dead {dead:?}",
            spec.activation, spec.batch_topk
        );
        let params = SaeParams::<B> {
            w_enc: Tensor::from_data(TensorData::new(w_enc.clone(), [d, s]), &device),
            b_enc: Tensor::from_data(TensorData::new(b_enc.clone(), [s]), &device),
            w_dec: Tensor::from_data(TensorData::new(w_dec.clone(), [s, d]), &device),
            b_dec: Tensor::from_data(TensorData::new(b_dec.clone(), [d]), &device),
        };
        let xt = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [n, d]), &device);
        let idx = (!dead.is_empty()).then(|| {
            Tensor::<B, 1, Int>::from_data(TensorData::new(dead.clone(), [dead.len()]), &device)
        });
        let out = objective_gradients(&params, &spec, l1, xt, idx, &ends);
        let (loss, reference) = autodiff_reference(
            &spec,
            l1,
            &x,
            (n, d, s),
            &w_enc,
            &b_enc,
            &w_dec,
            &b_dec,
            &dead,
            &ends,
        );
        let stats = host_of(out.stats);
        assert!(
            (stats[0] - loss).abs() <= 1e-5 * loss.abs().max(1.0),
            "{what}: loss {} vs {loss}",
            stats[0]
        );
        if dead.is_empty() {
            assert_eq!(stats[3], 0.0, "{what}: no AuxK term without dead latents");
        } else {
            assert!(stats[3] > 0.0, "{what}: AuxK term missing");
        }
        let ours = [
            host_of(out.grads.w_enc),
            host_of(out.grads.b_enc),
            host_of(out.grads.w_dec),
            host_of(out.grads.b_dec),
        ];
        for ((name, a), b) in ["W_enc", "b_enc", "W_dec", "b_dec"]
            .iter()
            .zip(&ours)
            .zip(&reference)
        {
            assert_grad_close(&format!("{what} d{name}"), a, b);
        }
    }
}

#[test]
fn parallel_gradient_removal_leaves_gradients_orthogonal_to_decoder_rows() {
    let (s, d) = (40, 24);
    let mut rng = SplitMix64::new(5);
    let device = Default::default();
    let w = train::normalize_rows(Tensor::<B, 2>::from_data(
        TensorData::new(random_vec(s * d, 1.0, &mut rng), [s, d]),
        &device,
    ));
    let g = Tensor::<B, 2>::from_data(
        TensorData::new(random_vec(s * d, 1.0, &mut rng), [s, d]),
        &device,
    );
    let before = host_of((g.clone() * w.clone()).sum_dim(1));
    assert!(
        before.iter().any(|v| v.abs() > 0.1),
        "the test gradient must have parallel parts"
    );
    let out = remove_parallel_grad(g.clone(), &w);
    for (i, dot) in host_of((out.clone() * w.clone()).sum_dim(1))
        .iter()
        .enumerate()
    {
        assert!(
            dot.abs() < 1e-5,
            "row {i}: component {dot} along its decoder row remains"
        );
    }
    // Only the parallel part went: g - out is a multiple of each row.
    let removed = host_of(g - out);
    let w_host = host_of(w);
    for (r, (rem, row)) in removed.chunks(d).zip(w_host.chunks(d)).enumerate() {
        let c = before[r];
        for (a, b) in rem.iter().zip(row) {
            assert!(
                (a - c * b).abs() < 1e-5,
                "row {r}: removed more than the parallel part"
            );
        }
    }
}

#[test]
fn warmup_is_linear_from_zero_like_saev() {
    let lr = 4e-4;
    assert_eq!(warmup(0, 500, lr), 0.0);
    assert!((warmup(1, 500, lr) - 8e-7).abs() < 1e-15);
    assert!((warmup(250, 500, lr) - 2e-4).abs() < 1e-15);
    assert!((warmup(499, 500, lr) - lr * 499.0 / 500.0).abs() < 1e-15);
    assert_eq!(warmup(500, 500, lr), lr);
    assert_eq!(warmup(100_000, 500, lr), lr);
    assert_eq!(warmup(0, 0, lr), lr);

    // The trainer applies it step by step.
    let d = 8;
    let mut config = base_config(d, vec![named(SaeSpec::relu(16, 1e-2, 1e-3), "a", 0)]);
    config.lr_warmup_steps = 4;
    config.l1_warmup_steps = 2;
    let mut trainer = Trainer::<B>::new(config, None, &[0.0; 8], &Default::default()).unwrap();
    let rows = random_vec(32 * d, 1.0, &mut SplitMix64::new(1));
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push((trainer.lr(0), trainer.l1_coeff(0)));
        trainer.step(&rows).unwrap();
    }
    let expect = [
        (0.0, 0.0),
        (2.5e-3, 5e-4),
        (5e-3, 1e-3),
        (7.5e-3, 1e-3),
        (1e-2, 1e-3),
        (1e-2, 1e-3),
    ];
    for (i, ((a, b), (ea, eb))) in seen.iter().zip(expect).enumerate() {
        assert!(
            (a - ea).abs() < 1e-12 && (b - eb).abs() < 1e-12,
            "step {i}: lr {a}, l1 {b}"
        );
    }
}

#[test]
fn decoder_rows_have_unit_norm_after_every_step_and_lr_zero_moves_nothing() {
    let d = 16;
    let dict = dictionary(d, 20, 4);
    let rows = sparse_rows(&dict, 64 * 8, 2, 0.05, 5);
    let specs = vec![
        named(SaeSpec::relu(48, 1e-2, 1e-3), "relu", 1),
        named(SaeSpec::topk(d, 48, 4, 1e-2), "topk", 2),
    ];
    let mut config = base_config(d, specs);
    config.lr_warmup_steps = 3;
    let mut trainer = Trainer::<B>::new(config, None, &[0.0; 16], &Default::default()).unwrap();
    let initial = trainer.weights();
    for (step, batch) in rows.chunks(64 * d).enumerate() {
        trainer.step(batch).unwrap();
        for w in trainer.weights() {
            for (r, row) in w.w_dec.data.chunks(d).enumerate() {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                assert!(
                    (norm - 1.0).abs() < 1e-5,
                    "step {step}: row {r} has norm {norm}"
                );
            }
        }
        if step == 0 {
            // saev's warmup starts at lr 0: the first step only fills Adam's moments.
            for (now, before) in trainer.weights().iter().zip(&initial) {
                for (a, b) in [
                    (&now.w_enc, &before.w_enc),
                    (&now.b_enc, &before.b_enc),
                    (&now.w_dec, &before.w_dec),
                    (&now.b_dec, &before.b_dec),
                ] {
                    let diff = a
                        .data
                        .iter()
                        .zip(&b.data)
                        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                    // Renormalising unit rows may move the last bit, nothing more.
                    assert!(diff < 1e-6, "a step at lr 0 moved a weight by {diff}");
                }
            }
        }
    }
    assert_ne!(trainer.weights(), initial, "training changed nothing");
}

fn small_run_config(d: usize) -> TrainConfig {
    let specs = vec![
        named(SaeSpec::relu(24, 1e-2, 1e-2), "relu", 3),
        // Wide enough that some latents stay silent for two batches.
        named(SaeSpec::topk(d, 96, 2, 1e-2), "topk", 4),
    ];
    let mut config = base_config(d, specs);
    config.total_tokens = 256 * 14;
    config.lr_warmup_steps = 3;
    config.log_every = 3;
    config.checkpoint_every = 5;
    config.init_samples = 600;
    // Small enough that AuxK is active within the run.
    config.dead_tokens = 256 * 2;
    config.data_seed = 99;
    config
}

/// 1100 rows: 4 full batches of 256 and a short one per pass.
fn small_rows(d: usize) -> Rows {
    let dict = dictionary(d, 16, 21);
    Rows {
        data: sparse_rows(&dict, 1100, 2, 0.05, 22),
        d,
    }
}

fn all_weights(dir: &Path, config: &TrainConfig) -> Vec<SaeWeights> {
    config
        .saes
        .iter()
        .map(|s| SaeWeights::load(dir.join(format!("{}.safetensors", s.name))).unwrap())
        .collect()
}

/// Trains `config` into `dir` on data that fails at the 12th training batch
/// (step 9 with [`small_run_config`]), after the checkpoint at step 5: the
/// state of a run killed there, plus the metrics rows of steps 6 to 9.
fn interrupted_run(config: &TrainConfig, rows: &Rows, dir: &Path) {
    let mut calls = 0;
    let served = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let failing_rows = rows.clone();
    let counter = served.clone();
    let mut failing = move |seed: u64, batch: usize| {
        calls += 1;
        // The first two passes estimate the normalization.
        let counted = calls > 2;
        let counter = counter.clone();
        let batches: Vec<Result<Vec<f32>, std::io::Error>> = failing_rows
            .pass(seed, batch)
            .map(|b| b.map_err(|e| match e {}))
            .collect();
        Ok::<_, std::io::Error>(batches.into_iter().map(move |b| {
            if counted {
                counter.set(counter.get() + 1);
                if counter.get() == 12 {
                    return Err(std::io::Error::other("disk unplugged"));
                }
            }
            b
        }))
    };
    let err = train::train::<B>(
        config,
        &mut failing,
        dir,
        &Default::default(),
        &RunOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("disk unplugged"), "{err}");
}

/// A copy of a training folder (flat files and one level of state folders).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_torn_last_metrics_row_is_dropped_on_resume() {
    let d = 12;
    let rows = small_rows(d);
    let config = small_run_config(d);
    let device = Default::default();
    let opts = RunOptions::default();
    let straight = tempfile::tempdir().unwrap();
    train::train::<B>(&config, &mut rows.source(), straight.path(), &device, &opts).unwrap();
    let want = std::fs::read(straight.path().join("metrics.csv")).unwrap();

    let broken = tempfile::tempdir().unwrap();
    interrupted_run(&config, &rows, broken.path());
    let written = std::fs::read_to_string(broken.path().join("metrics.csv")).unwrap();
    let last_row = written.lines().last().unwrap().to_string();
    assert!(last_row.starts_with("9,"), "{last_row}");
    // What a kill -9 in the middle of an append leaves behind.
    let mut cut_in_char = format!("{written}12,3072,\u{e9}").into_bytes();
    cut_in_char.pop();
    let tears: Vec<(&str, Vec<u8>)> = vec![
        (
            "a row cut inside a number, no newline",
            format!("{written}{}", &last_row[..last_row.len() - 3]).into_bytes(),
        ),
        (
            "the last row written cut short",
            written.as_bytes()[..written.len() - 4].to_vec(),
        ),
        (
            "a row cut after a comma",
            format!("{written}12,3072,").into_bytes(),
        ),
        (
            "a row with too few fields and its newline",
            format!("{written}12,3072,relu\n").into_bytes(),
        ),
        ("a row cut inside a UTF-8 character", cut_in_char),
        ("the header cut short", b"step,tokens,sa".to_vec()),
        ("an empty file", Vec::new()),
    ];
    for (what, text) in tears {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(broken.path(), dir.path());
        std::fs::write(dir.path().join("metrics.csv"), &text).unwrap();
        let resumed = train::train::<B>(&config, &mut rows.source(), dir.path(), &device, &opts)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(resumed.resumed_from, Some(5), "{what}");
        let have = std::fs::read(dir.path().join("metrics.csv")).unwrap();
        if what == "the header cut short" || what == "an empty file" {
            // Nothing before the state survived: the file restarts at step 6.
            let text = String::from_utf8(have).unwrap();
            assert!(text.starts_with("step,tokens,sae,"), "{what}: {text}");
            assert!(
                text.lines().nth(1).unwrap().starts_with("6,"),
                "{what}: {text}"
            );
        } else {
            assert!(
                have == want,
                "{what}: the resumed metrics.csv differs from an uninterrupted run's"
            );
        }
    }

    // A damaged row before the last one is not a crash's doing: an error
    // naming the file and the line, and the file is left as it was.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(broken.path(), dir.path());
    let mut lines: Vec<&str> = written.lines().collect();
    lines[2] = "3,768,relu,oops";
    let damaged = lines.join("\n") + "\n";
    std::fs::write(dir.path().join("metrics.csv"), &damaged).unwrap();
    let err =
        train::train::<B>(&config, &mut rows.source(), dir.path(), &device, &opts).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("metrics.csv") && msg.contains("line 3"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap(),
        damaged
    );
}

#[test]
fn a_resumed_run_removes_what_a_crash_left_and_a_second_run_is_refused() {
    let d = 12;
    let rows = small_rows(d);
    let config = small_run_config(d);
    let device = Default::default();
    let opts = RunOptions::default();
    let straight = tempfile::tempdir().unwrap();
    train::train::<B>(&config, &mut rows.source(), straight.path(), &device, &opts).unwrap();

    let broken = tempfile::tempdir().unwrap();
    interrupted_run(&config, &rows, broken.path());
    let state_dir = std::fs::read_dir(broken.path())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("state-"))
        .unwrap()
        .path();
    // A kill -9 mid-write leaves temporaries; one during a checkpoint, a
    // newer state folder the state file does not point at yet.
    std::fs::write(
        broken.path().join(".relu.safetensors.tmp-999999-0"),
        b"half",
    )
    .unwrap();
    std::fs::write(
        state_dir.join(".topk.optim.safetensors.tmp-999999-1"),
        b"half",
    )
    .unwrap();
    std::fs::create_dir(broken.path().join("state-000000010")).unwrap();
    std::fs::write(
        broken.path().join("state-000000010/relu.safetensors"),
        b"half",
    )
    .unwrap();

    // While another process trains there, a second run is refused.
    let lock = sae_steer_files::FolderLock::acquire(broken.path()).unwrap();
    let err =
        train::train::<B>(&config, &mut rows.source(), broken.path(), &device, &opts).unwrap_err();
    // The folder in the message, the lock's holder in its cause.
    let cause = std::error::Error::source(&err).map(|c| c.to_string());
    assert!(
        cause
            .as_deref()
            .is_some_and(|c| c.contains("in use by another process")),
        "{err}: {cause:?}"
    );
    drop(lock);

    train::train::<B>(&config, &mut rows.source(), broken.path(), &device, &opts).unwrap();
    let names = |dir: &Path| {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(broken.path()), names(straight.path()));
    for name in names(straight.path()) {
        let (a, b) = (straight.path().join(&name), broken.path().join(&name));
        if a.is_dir() {
            assert_eq!(names(&a), names(&b), "{name}");
            for inner in names(&a) {
                assert!(
                    std::fs::read(a.join(&inner)).unwrap()
                        == std::fs::read(b.join(&inner)).unwrap(),
                    "{name}/{inner} differs from an uninterrupted run's"
                );
            }
        } else if name != sae_steer_files::LOCK_FILE {
            assert!(
                std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
                "{name} differs from an uninterrupted run's"
            );
        }
    }
}

#[test]
fn a_state_file_pointing_elsewhere_is_refused_and_deletes_nothing() {
    let d = 12;
    let rows = small_rows(d);
    let config = small_run_config(d);
    let device = Default::default();
    let opts = RunOptions::default();
    let out = tempfile::tempdir().unwrap();
    interrupted_run(&config, &rows, out.path());
    let state_path = out.path().join("train-state.json");
    let original = std::fs::read_to_string(&state_path).unwrap();
    let state: serde_json::Value = serde_json::from_str(&original).unwrap();
    let dir = state["state_dir"].as_str().unwrap().to_string();
    for crafted in [format!("./{dir}"), format!("{dir}/"), "/tmp".to_string()] {
        let mut state = state.clone();
        state["state_dir"] = serde_json::Value::String(crafted.clone());
        std::fs::write(&state_path, state.to_string()).unwrap();
        let err = train::train::<B>(&config, &mut rows.source(), out.path(), &device, &opts)
            .err()
            .unwrap_or_else(|| panic!("state_dir {crafted:?} accepted"));
        assert!(err.to_string().contains("not a state folder name"), "{err}");
        assert!(out.path().join(&dir).is_dir(), "{crafted:?} deleted {dir}");
    }
    // The genuine state still resumes.
    std::fs::write(&state_path, original).unwrap();
    train::train::<B>(&config, &mut rows.source(), out.path(), &device, &opts).unwrap();
}

#[test]
fn an_interrupted_run_resumes_to_the_same_result() {
    let d = 12;
    let rows = small_rows(d);
    let config = small_run_config(d);
    let device = Default::default();
    let opts = RunOptions::default();

    let straight = tempfile::tempdir().unwrap();
    let report =
        train::train::<B>(&config, &mut rows.source(), straight.path(), &device, &opts).unwrap();
    assert_eq!((report.steps, report.tokens_seen), (14, 14 * 256));
    assert_eq!(report.resumed_from, None);
    assert!(
        report.short_batches >= 3,
        "each pass ends in a short batch, skipped"
    );

    // Same run, but the data fails at the 12th training batch (step 9 of the
    // third pass), after the checkpoint at step 5.
    let broken = tempfile::tempdir().unwrap();
    interrupted_run(&config, &rows, broken.path());
    let csv_before = std::fs::read_to_string(broken.path().join("metrics.csv")).unwrap();
    assert!(
        csv_before.lines().any(|l| l.starts_with("9,")),
        "a row after the checkpoint was written"
    );

    let resumed =
        train::train::<B>(&config, &mut rows.source(), broken.path(), &device, &opts).unwrap();
    assert_eq!(resumed.resumed_from, Some(5));
    assert_eq!(resumed.steps, 14);
    assert_eq!(
        all_weights(broken.path(), &config),
        all_weights(straight.path(), &config),
        "resumed weights differ from an uninterrupted run"
    );
    assert_eq!(
        std::fs::read_to_string(broken.path().join("metrics.csv")).unwrap(),
        std::fs::read_to_string(straight.path().join("metrics.csv")).unwrap(),
        "metrics of the lost steps must be replaced, not duplicated"
    );
    let states: Vec<_> = std::fs::read_dir(broken.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("state-"))
        .collect();
    assert_eq!(states.len(), 1, "older states are removed");

    // Rerunning a finished run does nothing; asking for more tokens continues it.
    let again =
        train::train::<B>(&config, &mut rows.source(), straight.path(), &device, &opts).unwrap();
    assert_eq!((again.resumed_from, again.steps), (Some(14), 14));
    let mut longer = config.clone();
    longer.total_tokens = 256 * 16;
    let more =
        train::train::<B>(&longer, &mut rows.source(), straight.path(), &device, &opts).unwrap();
    assert_eq!((more.resumed_from, more.steps), (Some(14), 16));

    // Other settings in the same directory are refused, naming what differs.
    let mut other = config.clone();
    other.saes[0].lr = 5e-3;
    let err =
        train::train::<B>(&other, &mut rows.source(), straight.path(), &device, &opts).unwrap_err();
    assert!(
        matches!(err, SaeError::Resume { .. }) && err.to_string().contains("saes"),
        "{err}"
    );
}

#[test]
fn a_sweep_in_one_pass_equals_each_sae_trained_alone() {
    let d = 12;
    let rows = small_rows(d);
    let config = small_run_config(d);
    let device = Default::default();
    let opts = RunOptions::default();
    let sweep = tempfile::tempdir().unwrap();
    train::train::<B>(&config, &mut rows.source(), sweep.path(), &device, &opts).unwrap();
    let together = all_weights(sweep.path(), &config);
    for (i, spec) in config.saes.iter().enumerate() {
        let mut alone = config.clone();
        alone.saes = vec![spec.clone()];
        let dir = tempfile::tempdir().unwrap();
        train::train::<B>(&alone, &mut rows.source(), dir.path(), &device, &opts).unwrap();
        assert_eq!(
            all_weights(dir.path(), &alone)[0],
            together[i],
            "{} differs",
            spec.name
        );
    }
}

#[test]
fn checkpoints_carry_training_metadata_and_metrics_are_logged() {
    let d = 12;
    let rows = small_rows(d);
    let mut config = small_run_config(d);
    config.vit = Some("dinov2_vitb14_reg".into());
    config.layer = Some(10);
    let dir = tempfile::tempdir().unwrap();
    let report = train::train::<B>(
        &config,
        &mut rows.source(),
        dir.path(),
        &Default::default(),
        &RunOptions::default(),
    )
    .unwrap();
    let norm = report
        .normalization
        .clone()
        .expect("normalization is estimated by default");
    for (spec, path) in config.saes.iter().zip(&report.checkpoints) {
        let w = SaeWeights::load(path).unwrap();
        assert_eq!(w.config.encode, EncodeRule::Plain);
        assert_eq!(w.config.activation, spec.activation);
        assert_eq!((w.config.d_model, w.config.d_sae), (d, spec.d_sae));
        assert_eq!(w.config.vit.as_deref(), Some("dinov2_vitb14_reg"));
        assert_eq!(w.config.layer, Some(10));
        assert_eq!(w.norm.as_ref(), Some(&norm));
        let file = SafetensorsFile::open(path).unwrap();
        let training: serde_json::Value =
            serde_json::from_str(&file.metadata().unwrap()["training"]).unwrap();
        assert_eq!(training["step"], 14);
        assert_eq!(training["tokens_seen"], 14 * 256);
        assert_eq!(training["finished"], true);
        assert_eq!(training["spec"]["lr"], spec.lr);
        assert_eq!(training["batch_size"], 256);
        assert_eq!(training["metrics"]["sae"], spec.name.as_str());
    }
    // Rows at steps 3, 6, 9, 12 and the final 14, for both SAEs.
    let mut reader = csv::Reader::from_path(dir.path().join("metrics.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    for col in ["step", "sae", "loss", "nmse", "l0", "dead", "dense"] {
        assert!(headers.iter().any(|h| h == col), "no `{col}` column");
    }
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let steps: Vec<&str> = rows.iter().map(|r| &r[0]).collect();
    assert_eq!(
        steps,
        ["3", "3", "6", "6", "9", "9", "12", "12", "14", "14"]
    );
    // dead_tokens is two batches: AuxK had dead latents to work with.
    let aux_col = headers.iter().position(|h| h == "aux").unwrap();
    let dead_col = headers.iter().position(|h| h == "dead").unwrap();
    assert!(
        rows.iter().any(|r| &r[2] == "topk"
            && r[aux_col].parse::<f64>().unwrap() > 0.0
            && r[dead_col] != *"0"),
        "no interval with dead latents and an AuxK loss: {rows:?}"
    );
}

#[test]
fn normalization_is_estimated_on_a_sample_as_saev_does() {
    let d = 5;
    let mut rng = SplitMix64::new(8);
    let data: Vec<f32> = (0..3000 * d)
        .map(|i| 10.0 * (i % d) as f32 + 2.0 * rng.normal())
        .collect();
    let rows = Rows {
        data: data.clone(),
        d,
    };
    let mut source = rows.source();
    let (norm, b_dec) = train::estimate_start(
        &mut source,
        1,
        100,
        d,
        1_000_000,
        &NormalizationPlan::Estimate,
    )
    .unwrap();
    let norm = norm.unwrap();
    let n = 3000.0;
    for (c, b) in b_dec.iter().enumerate() {
        let mean: f64 = data
            .iter()
            .skip(c)
            .step_by(d)
            .map(|&v| f64::from(v))
            .sum::<f64>()
            / n;
        assert!((f64::from(norm.mean[c]) - mean).abs() < 1e-4, "mean[{c}]");
        assert!(
            b.abs() < 1e-5,
            "b_dec starts at the (normalised) data mean, 0"
        );
    }
    let scalar: f64 = data
        .chunks(d)
        .map(|r| {
            r.iter()
                .zip(&norm.mean)
                .map(|(v, m)| f64::from(v - m).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .sum::<f64>()
        / n
        / (d as f64).sqrt();
    assert!(
        (f64::from(norm.scalar) - scalar).abs() < 1e-4 * scalar,
        "{} vs {scalar}",
        norm.scalar
    );

    // Without normalization, b_dec is the raw mean of the first rows of the sample.
    let (none, b_dec) =
        train::estimate_start(&mut source, 1, 100, d, 500, &NormalizationPlan::Off).unwrap();
    assert!(none.is_none());
    assert!((b_dec[3] - 30.0).abs() < 0.5, "{}", b_dec[3]);
}

#[test]
fn bad_settings_are_refused_with_the_reason() {
    let d = 8;
    let bad = |edit: &dyn Fn(&mut TrainConfig)| {
        let mut c = base_config(d, vec![named(SaeSpec::relu(16, 1e-3, 1e-3), "a", 0)]);
        edit(&mut c);
        c.validate().unwrap_err().to_string()
    };
    assert!(bad(&|c| c.saes.push(c.saes[0].clone())).contains("two SAEs are named `a`"));
    assert!(bad(&|c| c.saes[0].activation = Activation::Topk { k: 0 }).contains("k = 0"));
    assert!(
        bad(&|c| c.saes[0].activation = Activation::JumpRelu { threshold: 0.1 })
            .contains("JumpReLU")
    );
    assert!(bad(&|c| c.saes[0].name = "../x".into()).contains("name"));
    assert!(bad(&|c| c.saes[0].lr = 0.0).contains("lr must be positive"));
    assert!(bad(&|c| c.batch_size = 0).contains("batch_size"));
    assert!(bad(&|c| c.saes.clear()).contains("no SAE"));

    // Batches wider than the batch size are an error, not silently cut.
    let rows = small_rows(d);
    let mut config = base_config(d, vec![named(SaeSpec::relu(16, 1e-3, 1e-3), "a", 0)]);
    config.init_samples = 64;
    let mut wide = |seed: u64, _batch: usize| Ok::<_, Infallible>(rows.pass(seed, 300));
    let dir = tempfile::tempdir().unwrap();
    let err = train::train::<B>(
        &config,
        &mut wide,
        dir.path(),
        &Default::default(),
        &RunOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("more than the batch size"),
        "{err}"
    );
}

/// Writes `[items, tokens, d]` with row value `id * 4 + c` where id =
/// (file * 10 + item) * tokens + token: exact in f16, and each row names itself.
fn write_shard(path: &Path, file: usize, items: usize, tokens: usize, d: usize, f16: bool) {
    let mut values = Vec::new();
    for item in 0..items {
        for t in 0..tokens {
            let id = (file * 10 + item) * tokens + t;
            for c in 0..d {
                values.push((id * 4 + c) as f32);
            }
        }
    }
    let (dtype, bytes): (safetensors::Dtype, Vec<u8>) = if f16 {
        (
            safetensors::Dtype::F16,
            values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        )
    } else {
        (
            safetensors::Dtype::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    };
    let index: Vec<u8> = (0..items as u32).flat_map(|i| i.to_le_bytes()).collect();
    let views = vec![
        (
            "layer10".to_string(),
            safetensors::tensor::TensorView::new(dtype, vec![items, tokens, d], &bytes).unwrap(),
        ),
        (
            "image_index".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::U32, vec![items], &index)
                .unwrap(),
        ),
    ];
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Row ids of a batch (`value / 4` of its first column).
fn ids(batch: &[f32], d: usize) -> Vec<usize> {
    batch
        .chunks(d)
        .map(|r| {
            for (c, v) in r.iter().enumerate() {
                assert_eq!(*v as usize % 4, c, "row values were mixed up");
            }
            r[0] as usize / 4
        })
        .collect()
}

fn shard_files(dir: &Path) -> Vec<PathBuf> {
    let (tokens, d) = (5, 4);
    (0..3)
        .map(|f| {
            let p = dir.join(format!("shard-{f:05}.safetensors"));
            write_shard(&p, f, [10, 7, 4][f], tokens, d, f == 1);
            p
        })
        .collect()
}

#[test]
fn safetensors_shards_yield_every_selected_row_once_in_a_seeded_order() {
    let tmp = tempfile::tempdir().unwrap();
    let files = shard_files(tmp.path());
    let mut shards = train::ActivationShards::open(&files, "layer10")
        .unwrap()
        .with_tokens(&train::parse_ranges("0..1,3..5").unwrap())
        .unwrap();
    shards.chunk_rows = 6; // 2 items per chunk
    shards.window_rows = 14; // a few chunks per window
    let (d, tokens) = (4, 5);
    assert_eq!(shards.dim(), d);
    assert_eq!(shards.rows(), 21 * 3);

    let pass = |seed: u64| -> Vec<Vec<f32>> { shards.epoch(seed, 8).map(Result::unwrap).collect() };
    let a = pass(1);
    assert_eq!(a.len(), 8, "63 rows: 7 batches of 8 and one of 7");
    assert!(a[..7].iter().all(|b| b.len() == 8 * d) && a[7].len() == 7 * d);
    let mut seen: Vec<usize> = a.iter().flat_map(|b| ids(b, d)).collect();
    let in_order = seen.clone();
    seen.sort_unstable();
    let mut expected = Vec::new();
    for (file, items) in [10, 7, 4].into_iter().enumerate() {
        for item in 0..items {
            for t in [0, 3, 4] {
                expected.push((file * 10 + item) * tokens + t);
            }
        }
    }
    expected.sort_unstable();
    assert_eq!(
        seen, expected,
        "every selected row exactly once, f16 and f32 files alike"
    );
    assert_ne!(in_order, expected, "rows are shuffled");
    assert_eq!(pass(1), a, "the same seed gives the same pass");
    assert_ne!(pass(2), a, "another seed gives another order");

    // Resuming inside a pass skips exactly the batches already taken,
    // including across windows.
    for skip in [0, 1, 2, 5, 7, 8, 20] {
        let tail: Vec<Vec<f32>> = shards.epoch_from(1, 8, skip).map(Result::unwrap).collect();
        assert_eq!(
            tail,
            a[(skip as usize).min(a.len())..].to_vec(),
            "skip {skip}"
        );
    }

    // As a TrainingData source.
    let mut source = shards.clone();
    let via_trait: Vec<Vec<f32>> = TrainingData::epoch_from(&mut source, 1, 8, 3)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(via_trait, a[3..].to_vec());
}

#[test]
fn safetensors_shards_report_bad_inputs_by_file() {
    let tmp = tempfile::tempdir().unwrap();
    let files = shard_files(tmp.path());
    let err = train::ActivationShards::open(&files, "layer11").unwrap_err();
    assert!(
        matches!(&err, SaeError::MissingTensor { name, .. } if name == "layer11"),
        "{err}"
    );
    assert!(err.to_string().contains("shard-00000"), "{err}");

    let odd = tmp.path().join("odd.safetensors");
    write_shard(&odd, 0, 2, 5, 3, false);
    let err =
        train::ActivationShards::open(&[files[0].clone(), odd.clone()], "layer10").unwrap_err();
    assert!(
        err.to_string().contains("odd.safetensors") && err.to_string().contains("agree"),
        "{err}"
    );

    let err = train::ActivationShards::open(&files, "image_index").unwrap_err();
    assert!(err.to_string().contains("U32"), "{err}");

    let shards = train::ActivationShards::open(&files, "layer10").unwrap();
    let err = shards.clone().with_tokens(&[0..6, 6..7]).unwrap_err();
    assert!(err.to_string().contains("past the 5 tokens"), "{err}");
    let err = shards.with_tokens(&[0..3, 2..4]).unwrap_err();
    assert!(err.to_string().contains("overlap"), "{err}");
    assert!(train::parse_ranges("5..2").is_err());
    assert_eq!(train::parse_ranges("0,5..261").unwrap(), vec![0..1, 5..261]);

    let truncated = tmp.path().join("cut.safetensors");
    let bytes = std::fs::read(&files[0]).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 50]).unwrap();
    let err = train::ActivationShards::open(&[truncated], "layer10").unwrap_err();
    assert!(err.to_string().contains("cut.safetensors"), "{err}");
}

#[test]
fn activation_caches_open_as_the_shards_their_manifest_lists() {
    // Three images, tap `layer1` of 5 tokens of width 8, one shard.
    let valid = sae_steer_testkit::hostile("cache/valid");
    let shards = train::ActivationShards::open_cache(&valid, "layer1").unwrap();
    assert_eq!(
        shards.files(),
        [valid.join("shard-00000.safetensors").as_path()]
    );
    assert_eq!((shards.rows(), shards.dim()), (15, 8));
    // A tap the cache lacks is refused, naming the ones it has.
    let err = train::ActivationShards::open_cache(&valid, "layer10")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`layer10`") && err.contains("layer1"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let err = train::ActivationShards::open_cache(tmp.path().join("nowhere"), "layer1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("manifest.json"), "{err}");
    // Shard names that leave the folder are refused, naming the entry.
    for (name, outside) in [
        ("shard_outside", "../valid/shard-00000.safetensors"),
        ("shard_absolute", "/etc/passwd"),
    ] {
        let dir = sae_steer_testkit::hostile(&format!("cache/{name}"));
        let err = train::ActivationShards::open_cache(&dir, "layer1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("manifest.json") && err.contains(outside),
            "{err}"
        );
    }
    // A cache whose build has not completed a shard yet has nothing to train on.
    let mut manifest = sae_steer_data::cache::CacheManifest::read(&valid).unwrap();
    manifest.shards.clear();
    manifest.next_image = 0;
    manifest.complete = false;
    manifest.write(tmp.path()).unwrap();
    let err = train::ActivationShards::open_cache(tmp.path(), "layer1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no completed shard"), "{err}");
}

#[test]
fn kth_largest_agrees_between_the_host_selection_and_burns_topk() {
    let (n, s) = (37, 300);
    let mut rng = SplitMix64::new(12);
    let mut values = random_vec(n * s, 1.0, &mut rng);
    // Ties at the k-th value must not matter.
    values[5] = values[6];
    let host =
        Tensor::<B, 2>::from_data(TensorData::new(values.clone(), [n, s]), &Default::default());
    for k in [1, 2, 17, 299, 300, 500] {
        let ours = host_of(train::kth_largest(host.clone(), k));
        // What the non-host branch computes (burn's topk), where defined.
        let topk = (k < s).then(|| host_of(host.clone().topk(k, 1).min_dim(1)));
        let naive: Vec<f32> = values
            .chunks(s)
            .map(|r| {
                let mut r = r.to_vec();
                r.sort_by(|a, b| b.total_cmp(a));
                r[k.min(s) - 1]
            })
            .collect();
        assert_eq!(ours, naive, "host selection, k = {k}");
        if let Some(topk) = topk {
            assert_eq!(topk, naive, "burn topk, k = {k}");
        }
    }
}

#[test]
fn adam_matches_pytorch_step_for_step() {
    // torch.optim.Adam(betas=(0.9, 0.999), eps=1e-8), lr set per step as
    // saev's warmup does (the first step at lr 0); values from torch 2.15.
    let device = Default::default();
    let t = |v: [f32; 4]| Tensor::<B, 1>::from_data(TensorData::from(v), &device);
    let grads = [
        [0.1, -0.2, 3.0, 0.0],
        [0.3, 0.1, -1.0, 1e-6],
        [-0.5, 0.2, 0.5, -2.0],
    ];
    let lrs = [0.0, 1e-2, 2e-2];
    let expected = [
        [0.5, -1.0, 2.0, 0.0],
        [0.490_822_2, -0.997_336_6, 1.995_997_8, -0.007_337_624],
        [0.494_040_5, -1.002_790_6, 1.987_889_3, 0.005_438_640_2],
    ];
    let (mut p, mut m, mut v) = (t([0.5, -1.0, 2.0, 0.0]), t([0.0; 4]), t([0.0; 4]));
    let cfg = train::AdamConfig::default();
    for (i, (g, lr)) in grads.iter().zip(lrs).enumerate() {
        (p, m, v) = train::adam_update(p, t(*g), m, v, i as u64 + 1, lr, &cfg);
        let got = host_of(p.clone());
        for (a, b) in got.iter().zip(expected[i]) {
            assert!(
                (a - b).abs() < 2e-6,
                "step {i}: {got:?} vs {:?}",
                expected[i]
            );
        }
    }
    let (m, v) = (host_of(m), host_of(v));
    for (a, b) in m.iter().zip([-0.0149, 0.0128, 0.203, -0.199_999_9]) {
        assert!((a - b).abs() < 1e-6, "first moment {m:?}");
    }
    for (a, b) in v
        .iter()
        .zip([3.498_900_3e-4, 8.991_004e-5, 0.010_231_008, 0.004])
    {
        assert!((a - b).abs() < 1e-8, "second moment {v:?}");
    }
}

fn saev_shards(name: &str) -> PathBuf {
    sae_steer_testkit::fixture("sae/saev_shards").join(name)
}

/// All rows of one pass, sorted (a pass is shuffled).
fn sorted_rows(shards: &train::ActivationShards, d: usize) -> Vec<Vec<f32>> {
    let mut rows: Vec<Vec<f32>> = shards
        .epoch(3, 5)
        .flat_map(|b| b.unwrap())
        .collect::<Vec<f32>>()
        .chunks(d)
        .map(<[f32]>::to_vec)
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

#[test]
fn saev_activation_shards_read_as_saev_reads_them() {
    let expected = SafetensorsFile::open(saev_shards("expected.safetensors")).unwrap();
    let reference = expected.read("layer5.patches").unwrap();
    let mut want: Vec<Vec<f32>> = reference.data.chunks(8).map(<[f32]>::to_vec).collect();
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // saev's own writer (no shards.json) and the current protocol's layout.
    for dump in ["v0", "v2"] {
        let info = train::SaevShardInfo::read(&saev_shards(dump)).unwrap();
        assert_eq!(
            (
                info.layers.clone(),
                info.patches,
                info.cls_token,
                info.d_model,
                info.examples
            ),
            (vec![3, 5], 4, true, 8, 7),
            "{dump}"
        );
        assert_eq!(info.examples_per_shard, 3, "{dump}");
        let patches = train::ActivationShards::open_saev(saev_shards(dump), 5)
            .unwrap()
            .with_tokens(std::slice::from_ref(&(1..5)))
            .unwrap();
        assert_eq!(patches.rows(), 28, "{dump}");
        assert_eq!(sorted_rows(&patches, 8), want, "{dump}: layer 5 patches");
        // The CLS rows of layer 3: token 0 of each example.
        let acts = expected.read("acts").unwrap(); // [7, 2, 5, 8]
        let mut cls: Vec<Vec<f32>> = (0..7)
            .map(|i| acts.data[i * 80..i * 80 + 8].to_vec())
            .collect();
        cls.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let first = train::ActivationShards::open_saev(saev_shards(dump), 3)
            .unwrap()
            .with_tokens(std::slice::from_ref(&(0..1)))
            .unwrap();
        assert_eq!(sorted_rows(&first, 8), cls, "{dump}: layer 3 CLS");
    }
    let labels = train::read_saev_labels(saev_shards("v2")).unwrap().unwrap();
    let want: Vec<u8> = expected
        .read("labels")
        .unwrap()
        .data
        .iter()
        .map(|&v| v as u8)
        .collect();
    assert_eq!(labels, want);
    assert!(
        train::read_saev_labels(saev_shards("v0"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn bad_saev_shards_are_refused_with_the_reason() {
    let err = train::ActivationShards::open_saev(saev_shards("v2"), 7).unwrap_err();
    assert!(err.to_string().contains("layer 7 is not in"), "{err}");
    let copy = |edit: &dyn Fn(&Path)| {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(saev_shards("v2")).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
        edit(dir.path());
        dir
    };
    // A truncated shard is caught before it is mapped.
    let dir = copy(&|d| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join("acts000001.bin"))
            .unwrap();
        f.set_len(100).unwrap();
    });
    let err = train::ActivationShards::open_saev(dir.path(), 5).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    // shards.json disagreeing with metadata.json.
    let dir = copy(&|d| {
        std::fs::write(
            d.join("shards.json"),
            r#"[{"name": "acts000000.bin", "n_examples": 3}]"#,
        )
        .unwrap();
    });
    let err = train::ActivationShards::open_saev(dir.path(), 5).unwrap_err();
    assert!(err.to_string().contains("metadata.json says 7"), "{err}");
    // A shard name that leaves the folder.
    let dir = copy(&|d| {
        std::fs::write(
            d.join("shards.json"),
            r#"[{"name": "../acts000000.bin", "n_examples": 7}]"#,
        )
        .unwrap();
    });
    let err = train::ActivationShards::open_saev(dir.path(), 5).unwrap_err();
    assert!(err.to_string().contains("acts*.bin"), "{err}");
    // Lying sizes: a huge width or patch count is refused before any size
    // is computed from it, and one that fits the arithmetic is caught by the
    // file sizes; nothing is allocated or mapped for either.
    for (key, value) in [
        ("d_model", serde_json::json!(u64::MAX / 2)),
        ("content_tokens_per_example", serde_json::json!(u64::MAX)),
        ("d_model", serde_json::json!(1u64 << 40)),
        ("n_examples", serde_json::json!(u64::MAX)),
    ] {
        let dir = copy(&|d| {
            let path = d.join("metadata.json");
            let mut meta: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            meta[key] = value.clone();
            std::fs::write(&path, meta.to_string()).unwrap();
        });
        let err = train::ActivationShards::open_saev(dir.path(), 5).unwrap_err();
        assert!(
            matches!(err, SaeError::Format { .. } | SaeError::Data(_)),
            "{key} = {value}: {err}"
        );
    }
    // A wrong-sized labels file.
    let dir = copy(&|d| std::fs::write(d.join("labels.bin"), [0u8; 5]).unwrap());
    let err = train::read_saev_labels(dir.path()).unwrap_err();
    assert!(err.to_string().contains("7 examples x 4 patches"), "{err}");
}

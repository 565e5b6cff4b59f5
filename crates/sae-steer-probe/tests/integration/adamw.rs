//! The batched sweep against PyTorch running saev's training loop
//! (scripts/make_probe_fixture.py: 3 probes, d 8, C 5, 6 steps).

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use sae_steer_probe::config::ProbeHparams;
use sae_steer_probe::sweep::{AdamMoments, ProbeState, ProbeSweep, ProbeWeights};
use sae_steer_vit::{SafetensorsFile, TensorSource};

type B = NdArray<f32>;

fn fixture() -> PathBuf {
    sae_steer_testkit::fixture("probe/adamw.safetensors")
}

/// int64 labels, which `TensorSource` (floats only) does not read.
fn labels(path: &PathBuf, name: &str) -> Vec<i64> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn per_probe(data: &[f32], p: usize) -> Vec<Vec<f32>> {
    data.chunks(data.len() / p).map(<[f32]>::to_vec).collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs torch {w}");
    }
}

#[test]
fn matches_torch_adamw_and_cross_entropy() {
    let path = fixture();
    let file = SafetensorsFile::open(&path).unwrap();
    let meta = file.metadata().unwrap().clone();
    let lrs: Vec<f64> = serde_json::from_str(&meta["lrs"]).unwrap();
    let wds: Vec<f64> = serde_json::from_str(&meta["wds"]).unwrap();
    let steps: usize = meta["steps"].parse().unwrap();
    let p = lrs.len();
    let w0 = file.read("init.weight").unwrap();
    let [_, c, d] = w0.shape[..] else { panic!() };
    let b0 = file.read("init.bias").unwrap();
    let states: Vec<ProbeState> = (0..p)
        .map(|i| ProbeState {
            hparams: ProbeHparams {
                learning_rate: lrs[i],
                weight_decay: wds[i],
                seed: i as u64,
            },
            weights: ProbeWeights {
                in_features: d,
                out_features: c,
                weight: per_probe(&w0.data, p)[i].clone(),
                bias: per_probe(&b0.data, p)[i].clone(),
            },
            moments: AdamMoments {
                exp_avg_weight: vec![0.0; c * d],
                exp_avg_sq_weight: vec![0.0; c * d],
                exp_avg_bias: vec![0.0; c],
                exp_avg_sq_bias: vec![0.0; c],
            },
        })
        .collect();
    let device = Default::default();
    let mut sweep = ProbeSweep::<B>::from_states(&states, 0, &device).unwrap();

    for t in 1..=steps {
        let x = file.read(&format!("step{t}.x")).unwrap();
        let n = x.shape[0];
        let y = labels(&path, &format!("step{t}.labels"));
        let x = Tensor::<B, 2>::from_data(TensorData::new(x.data, [n, d]), &device);
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [n]), &device);

        // Chunks of 5 patches: the accumulated gradient is the whole batch's.
        let grads = sweep.gradients(x.clone(), y.clone(), 5);
        let want_gw = per_probe(&file.read(&format!("step{t}.grad_weight")).unwrap().data, p);
        let want_gb = per_probe(&file.read(&format!("step{t}.grad_bias")).unwrap().data, p);
        for (i, g) in grads.per_probe().iter().enumerate() {
            assert_close(
                &format!("step {t} probe {i} dW"),
                &g.weight,
                &want_gw[i],
                1e-6,
            );
            assert_close(
                &format!("step {t} probe {i} db"),
                &g.bias,
                &want_gb[i],
                1e-6,
            );
        }

        let stats = sweep.train_step(x, y, 7);
        let want_loss = file.read(&format!("step{t}.probe_loss")).unwrap().data;
        let got_loss: Vec<f32> = stats.loss.iter().map(|&l| l as f32).collect();
        assert_close(&format!("step {t} loss"), &got_loss, &want_loss, 1e-5);
        let joint = file.read(&format!("step{t}.loss")).unwrap().data[0];
        let mean = stats.loss.iter().sum::<f64>() / p as f64;
        assert!(
            (mean as f32 - joint).abs() < 1e-5,
            "joint loss {mean} vs {joint}"
        );

        let want_w = per_probe(&file.read(&format!("step{t}.weight")).unwrap().data, p);
        let want_b = per_probe(&file.read(&format!("step{t}.bias")).unwrap().data, p);
        for (i, s) in sweep.states().iter().enumerate() {
            assert_close(
                &format!("step {t} probe {i} weight"),
                &s.weights.weight,
                &want_w[i],
                1e-5,
            );
            assert_close(
                &format!("step {t} probe {i} bias"),
                &s.weights.bias,
                &want_b[i],
                1e-5,
            );
        }
        assert_eq!(sweep.step(), t as u64);
    }
}

/// The fixture is strong enough to notice a missing weight decay: the same
/// steps with probe 0's decay set to zero end far outside the tolerance.
#[test]
fn fixture_notices_missing_weight_decay() {
    let path = fixture();
    let file = SafetensorsFile::open(&path).unwrap();
    let meta = file.metadata().unwrap().clone();
    let lrs: Vec<f64> = serde_json::from_str(&meta["lrs"]).unwrap();
    let steps: usize = meta["steps"].parse().unwrap();
    let p = lrs.len();
    let w0 = file.read("init.weight").unwrap();
    let b0 = file.read("init.bias").unwrap();
    let [_, c, d] = w0.shape[..] else { panic!() };
    let state = ProbeState {
        hparams: ProbeHparams {
            learning_rate: lrs[0],
            weight_decay: 0.0,
            seed: 0,
        },
        weights: ProbeWeights {
            in_features: d,
            out_features: c,
            weight: per_probe(&w0.data, p)[0].clone(),
            bias: per_probe(&b0.data, p)[0].clone(),
        },
        moments: AdamMoments {
            exp_avg_weight: vec![0.0; c * d],
            exp_avg_sq_weight: vec![0.0; c * d],
            exp_avg_bias: vec![0.0; c],
            exp_avg_sq_bias: vec![0.0; c],
        },
    };
    let device = Default::default();
    // A step no run can reach (a crafted checkpoint) is refused, not
    // overflowed by the next step.
    let Err(err) = ProbeSweep::<B>::from_states(std::slice::from_ref(&state), u64::MAX, &device)
    else {
        panic!("step u64::MAX accepted");
    };
    assert!(
        err.to_string().contains("cannot come from training"),
        "{err}"
    );
    let mut sweep = ProbeSweep::<B>::from_states(&[state], 0, &device).unwrap();
    for t in 1..=steps {
        let x = file.read(&format!("step{t}.x")).unwrap();
        let n = x.shape[0];
        let y = labels(&path, &format!("step{t}.labels"));
        sweep.train_step(
            Tensor::from_data(TensorData::new(x.data, [n, d]), &device),
            Tensor::from_data(TensorData::new(y, [n]), &device),
            n,
        );
    }
    let want = per_probe(&file.read(&format!("step{steps}.weight")).unwrap().data, p);
    let got = &sweep.states()[0].weights.weight;
    let gap = got
        .iter()
        .zip(&want[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(gap > 1e-4, "without decay the weights differ by only {gap}");
}

#![allow(dead_code)]

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use sae_steer_vit::{HostTensor, SafetensorsFile, TensorSource};

pub type B = NdArray<f32>;

pub fn fixture(name: &str) -> PathBuf {
    sae_steer_testkit::fixture("sae").join(name)
}

/// The torch reference computations for one fixture SAE.
pub struct Expected {
    pub x: HostTensor,
    pub f_x: HostTensor,
    pub x_hat: HostTensor,
    pub steered: HostTensor,
    pub latent: usize,
    pub value: f32,
}

pub fn expected(name: &str) -> Expected {
    let file = SafetensorsFile::open(fixture(&format!("{name}.expected.safetensors"))).unwrap();
    let meta = file.metadata().unwrap().clone();
    Expected {
        x: file.read("x").unwrap(),
        f_x: file.read("f_x").unwrap(),
        x_hat: file.read("x_hat").unwrap(),
        steered: file.read("steered").unwrap(),
        latent: meta["latent"].parse().unwrap(),
        value: meta["value"].parse().unwrap(),
    }
}

pub fn tensor(t: &HostTensor) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(t.data.clone(), t.shape.clone()),
        &Default::default(),
    )
}

pub fn host(t: Tensor<B, 2>) -> HostTensor {
    let shape = t.dims().to_vec();
    HostTensor::new(shape, t.into_data().into_vec::<f32>().unwrap())
}

/// Element-wise `|a - b| <= tol * max(|b|, 1)`: relative for ordinary values,
/// absolute near zero (where relative error is meaningless).
pub fn assert_close(what: &str, actual: &HostTensor, expected: &HostTensor, tol: f32) {
    assert_eq!(actual.shape, expected.shape, "{what}: shape");
    let mut worst = (0.0f32, 0usize);
    for (i, (a, b)) in actual.data.iter().zip(&expected.data).enumerate() {
        let err = (a - b).abs() / b.abs().max(1.0);
        if err.is_nan() || err > worst.0 {
            worst = (err, i);
        }
    }
    assert!(
        worst.0 <= tol,
        "{what}: element {} is {} vs {} (scaled error {})",
        worst.1,
        actual.data[worst.1],
        expected.data[worst.1],
        worst.0
    );
}

/// Like [`assert_close`] but scaled by the largest magnitude in each row of
/// `scale_rows` (`[n, d]`): for results computed by cancelling terms of that
/// size, such as `err + decode(f') - x_n`, f32 rounding is relative to them.
pub fn assert_close_rowwise(
    what: &str,
    actual: &HostTensor,
    expected: &HostTensor,
    scale_rows: &HostTensor,
    tol: f32,
) {
    assert_eq!(actual.shape, expected.shape, "{what}: shape");
    let d = expected.shape[1];
    for (r, ((a, b), s)) in actual
        .data
        .chunks(d)
        .zip(expected.data.chunks(d))
        .zip(scale_rows.data.chunks(scale_rows.shape[1]))
        .enumerate()
    {
        let scale = s.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (c, (a, b)) in a.iter().zip(b).enumerate() {
            let err = (a - b).abs() / scale.max(b.abs());
            assert!(
                err <= tol,
                "{what}: [{r}, {c}] is {a} vs {b} (error {err} of row scale {scale})"
            );
        }
    }
}

/// A fixture SAE, optionally with the fixture's input normalization.
pub fn load_sae(name: &str, normalized: bool) -> sae_steer_sae::Sae<B> {
    use sae_steer_sae::NormalizationSource;
    let sae =
        sae_steer_sae::Sae::<B>::load(fixture(&format!("{name}.pt")), &Default::default()).unwrap();
    let with = if normalized {
        NormalizationSource::File(fixture("norm.safetensors"))
    } else {
        NormalizationSource::None
    };
    sae.resolve(with).unwrap().0
}

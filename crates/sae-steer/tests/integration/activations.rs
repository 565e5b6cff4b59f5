//! The `activations` file format against the transformers fixture.

use std::path::PathBuf;

use sae_steer::backend::Cpu;
use sae_steer::vit::{SafetensorsFile, TensorSource, write_safetensors};
use sae_steer::{PixelValues, Vit, layer_activations};

fn fixtures() -> PathBuf {
    sae_steer_testkit::fixture("vit")
}

#[test]
fn writes_every_layer_and_the_normed_tokens() {
    let expected = SafetensorsFile::open(fixtures().join("expected.safetensors")).unwrap();
    let px = expected.read("pixel_values").unwrap();
    let pixels = PixelValues {
        height: 224,
        width: 224,
        data: px.data,
    };
    let vit = Vit::<Cpu>::load(
        fixtures().join("reg").to_str().unwrap(),
        &Default::default(),
    )
    .unwrap();
    let tensors = layer_activations(&vit, &pixels).unwrap();
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "pixel_values",
            "layer.0",
            "layer.1",
            "layer.2",
            "last_hidden_state",
            "x_norm_patchtokens",
            "x_norm_clstoken"
        ]
    );

    // Through the file, as other tools read it.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("act.safetensors");
    write_safetensors(&out, &tensors, None).unwrap();
    let file = SafetensorsFile::open(&out).unwrap();
    assert_eq!(file.shape("pixel_values").unwrap(), [3, 224, 224]);
    assert_eq!(file.shape("layer.1").unwrap(), [261, 128]);
    assert_eq!(file.shape("last_hidden_state").unwrap(), [261, 128]);
    assert_eq!(file.shape("x_norm_patchtokens").unwrap(), [256, 128]);
    assert_eq!(file.shape("x_norm_clstoken").unwrap(), [128]);
    for (ours, reference) in [
        ("layer.0", "reg.layer.0"),
        ("layer.2", "reg.layer.2"),
        ("x_norm_patchtokens", "reg.x_norm_patchtokens"),
        ("x_norm_clstoken", "reg.x_norm_clstoken"),
    ] {
        let a = file.read(ours).unwrap();
        let b = expected.read(reference).unwrap();
        let worst = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "{ours}: {worst:e}");
    }
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

mod with_sae {
    use super::*;
    use sae_steer::burn::tensor::{Tensor, TensorData};
    use sae_steer::sae::{Activation, EncodeRule, SaeConfig};
    use sae_steer::{Edit, Error, HostTensor, Normalization, Sae, SaeTap, SaeWeights};
    use sae_steer::{layer_activations_with_sae, sae_outputs};

    const D: usize = 128; // the fixture ViT's width
    const S: usize = 64;

    fn noise(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        sae_steer_testkit::noise(n, seed, scale)
    }

    fn sae(d: usize, norm: bool) -> Sae<Cpu> {
        let weights = SaeWeights {
            config: SaeConfig {
                d_model: d,
                d_sae: S,
                activation: Activation::Relu,
                encode: EncodeRule::CentreOnDecoderBias,
                vit: None,
                layer: None,
            },
            w_enc: HostTensor::new(vec![d, S], noise(1, d * S, 0.2)),
            b_enc: HostTensor::new(vec![S], noise(2, S, 0.1)),
            w_dec: HostTensor::new(vec![S, d], noise(3, S * d, 0.2)),
            b_dec: HostTensor::new(vec![d], noise(4, d, 0.1)),
            threshold: None,
            norm: norm.then(|| Normalization {
                mean: noise(5, d, 0.5),
                scalar: 3.0,
            }),
        };
        Sae::from_weights(weights, &Default::default())
    }

    fn setup() -> (Vit<Cpu>, PixelValues) {
        let expected = SafetensorsFile::open(fixtures().join("expected.safetensors")).unwrap();
        let pixels = PixelValues {
            height: 224,
            width: 224,
            data: expected.read("pixel_values").unwrap().data,
        };
        let vit = Vit::<Cpu>::load(
            fixtures().join("reg").to_str().unwrap(),
            &Default::default(),
        )
        .unwrap();
        (vit, pixels)
    }

    fn get<'a>(tensors: &'a [(String, HostTensor)], name: &str) -> &'a HostTensor {
        &tensors.iter().find(|(n, _)| n == name).unwrap().1
    }

    fn device(t: &HostTensor) -> Tensor<Cpu, 2> {
        Tensor::from_data(
            TensorData::new(t.data.clone(), t.shape.clone()),
            &Default::default(),
        )
    }

    fn max_diff(a: &HostTensor, b: &HostTensor) -> f32 {
        assert_eq!(a.shape, b.shape);
        a.data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0.0, f32::max)
    }

    #[test]
    fn sae_outputs_are_those_of_layer_l_patch_tokens() {
        let (vit, pixels) = setup();
        let sae = sae(D, true);
        let tap = SaeTap {
            sae: &sae,
            layer: 1,
            steer: Some((5, 2.5)),
        };
        let tensors = layer_activations_with_sae(&vit, &pixels, &tap).unwrap();
        let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            &names[..6],
            [
                "pixel_values",
                "layer.0",
                "layer.1",
                "layer.2",
                "last_hidden_state",
                "x_norm_patchtokens"
            ]
        );
        assert_eq!(&names[7..], ["sae.f_x", "sae.x_hat", "sae.steered"]);

        // Layer 1's patch tokens: after CLS and the 4 registers.
        let layer1 = get(&tensors, "layer.1");
        let patches = HostTensor::new(vec![256, D], layer1.data[5 * D..].to_vec());
        let x = device(&patches);
        let f = sae.encode(sae.normalize(x.clone()));
        let f_x = get(&tensors, "sae.f_x");
        assert_eq!(f_x.shape, [256, S]);
        assert!(max_diff(f_x, &sae_steer::to_host(f.clone())) <= 1e-6);
        assert!(f_x.data.iter().any(|v| *v > 0.0) && f_x.data.contains(&0.0));
        let x_hat = get(&tensors, "sae.x_hat");
        assert!(max_diff(x_hat, &sae_steer::to_host(sae.decode(f))) <= 1e-6);
        // The steered patches against the literal encode/edit/decode path.
        let steered = get(&tensors, "sae.steered");
        let full = Edit::new().set(5, 2.5).apply_full(&sae, x).unwrap();
        assert!(max_diff(steered, &sae_steer::to_host(full)) <= 1e-4);
        assert!(
            max_diff(steered, &patches) > 1e-2,
            "the edit changed nothing"
        );

        // Another layer gives other codes: the tap reads the layer it is told.
        let tap2 = SaeTap {
            layer: 2,
            steer: None,
            ..tap
        };
        let tensors2 = layer_activations_with_sae(&vit, &pixels, &tap2).unwrap();
        assert!(max_diff(get(&tensors2, "sae.f_x"), f_x) > 1e-3);
        assert!(tensors2.iter().all(|(n, _)| n != "sae.steered"));

        // Through the file, with the documented shapes.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("act.safetensors");
        write_safetensors(&out, &tensors, None).unwrap();
        let file = SafetensorsFile::open(&out).unwrap();
        assert_eq!(file.shape("sae.f_x").unwrap(), [256, S]);
        assert_eq!(file.shape("sae.x_hat").unwrap(), [256, D]);
        assert_eq!(file.shape("sae.steered").unwrap(), [256, D]);
    }

    #[test]
    fn steering_a_latent_to_its_own_value_is_the_identity() {
        let sae = sae(D, false);
        let x = device(&HostTensor::new(vec![4, D], noise(9, 4 * D, 3.0)));
        let out = sae_outputs(&sae, x.clone(), Some((0, 0.0))).unwrap();
        let f = sae_steer::to_host(sae.encode(x.clone()));
        assert_eq!(get(&out, "sae.f_x"), &f);
        // With the error term kept, steering a latent to its own value is the identity.
        let same: Vec<f32> = (0..4).map(|r| f.data[r * S + 3]).collect();
        for (row, v) in same.iter().enumerate() {
            let one = x.clone().narrow(0, row, 1);
            let out = sae_outputs(&sae, one.clone(), Some((3, *v))).unwrap();
            assert!(max_diff(get(&out, "sae.steered"), &sae_steer::to_host(one)) <= 1e-5);
        }
    }

    #[test]
    fn bad_taps_are_errors_before_any_work() {
        let (vit, pixels) = setup();
        let good = sae(D, false);
        let narrow = sae(64, false);
        let cases: [(SaeTap<'_, Cpu>, &str); 4] = [
            (
                SaeTap {
                    sae: &good,
                    layer: 3,
                    steer: None,
                },
                "layer 3 does not exist: the ViT has 3 blocks (0 to 2)",
            ),
            (
                SaeTap {
                    sae: &narrow,
                    layer: 1,
                    steer: None,
                },
                "the SAE reads 64-wide activations, but the ViT's are 128 wide",
            ),
            (
                SaeTap {
                    sae: &good,
                    layer: 1,
                    steer: Some((S, 1.0)),
                },
                "latent 64 does not exist: the SAE has 64 latents (0 to 63)",
            ),
            (
                SaeTap {
                    sae: &good,
                    layer: 1,
                    steer: Some((0, f32::NAN)),
                },
                "not a finite number",
            ),
        ];
        for (tap, message) in cases {
            let err = layer_activations_with_sae(&vit, &pixels, &tap).unwrap_err();
            assert!(err.to_string().contains(message), "{err}");
            assert!(!matches!(err, Error::Vit(_) | Error::Sae(_)));
        }
    }
}

//! The `activations` file format against the transformers fixture.

use std::path::PathBuf;

use sae_steer::backend::Cpu;
use sae_steer::vit::{SafetensorsFile, TensorSource, write_safetensors};
use sae_steer::{Dinov2, PixelValues, layer_activations};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vit")
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
    let vit = Dinov2::<Cpu>::load(
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

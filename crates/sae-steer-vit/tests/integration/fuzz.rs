//! Bounded fuzzing of the parsers of this crate: mutated bytes of valid
//! files (fixed seed, fixed input count, a wall-clock budget that fits CI).
//! A panic fails the test with the input's index; errors are fine.

use std::io::{Cursor, Read, Write};
use std::time::Duration;

use sae_steer_testkit::{fixture, fuzz, hostile};
use sae_steer_vit::{SafetensorsFile, TensorSource, TorchFile, VitConfig, hf_tensor_shapes};

const BUDGET: Duration = Duration::from_secs(12);

fn read(path: std::path::PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Opens a torch archive, reads every tensor and infers a hub geometry:
/// everything a loader does with a file. Accepted when all of it works.
fn load_torch(path: &std::path::Path) -> bool {
    let Ok(file) = TorchFile::open(path) else {
        return false;
    };
    let _ = sae_steer_vit::infer_from_hub(&file);
    let mut ok = true;
    for name in file.names() {
        match file.read(&name) {
            Ok(t) => assert_eq!(t.data.len(), t.shape.iter().product::<usize>()),
            Err(_) => ok = false,
        }
    }
    ok
}

#[test]
fn fuzz_torch_archives() {
    let seeds = vec![
        read(hostile("checkpoints/valid.pt")),
        read(hostile("checkpoints/deflated_ok.pt")),
        read(hostile("checkpoints/strided_ok.pt")),
        read(hostile("checkpoints/hub_register_tokens_0d.pth")),
        read(fixture("sae/stats_saev/top_img_i.pt")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.pth");
    let report = fuzz("torch archive", &seeds, 14, 15_000, BUDGET, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        load_torch(&path)
    });
    assert!(report.inputs >= 500, "{report:?}");
    assert!(report.accepted > 0, "some mutations only touch tensor data");
}

/// The entries of a stored zip, to rebuild it around a mutated pickle.
fn zip_entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    // The zip reader skips a prepended header line by itself.
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().to_string(), data)
        })
        .collect()
}

#[test]
fn fuzz_torch_pickles() {
    // Mutating whole archives rarely hits the few hundred pickle bytes:
    // here only `data.pkl` is mutated, inside an otherwise valid archive.
    let mut archives = Vec::new();
    for path in [
        hostile("checkpoints/valid.pt"),
        hostile("checkpoints/strided_ok.pt"),
        fixture("sae/stats_saev/top_values.pt"),
        fixture("probe/reference/lr_0_001__wd_0_1/model_step20.pt"),
    ] {
        archives.push(zip_entries(&read(path)));
    }
    let pickles: Vec<Vec<u8>> = archives
        .iter()
        .map(|entries| {
            let (_, pkl) = entries
                .iter()
                .find(|(n, _)| n.ends_with("data.pkl"))
                .unwrap();
            pkl.clone()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sae.pt");
    let mut index = 0;
    let report = fuzz("torch pickle", &pickles, 15, 15_000, BUDGET, |pickle| {
        // The fuzzer mutates seed `i % n` for input i.
        let entries = &archives[index % archives.len()];
        index += 1;
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in entries {
            out.start_file(name.as_str(), options).unwrap();
            let data = if name.ends_with("data.pkl") {
                pickle
            } else {
                data
            };
            out.write_all(data).unwrap();
        }
        let bytes = out.finish().unwrap().into_inner();
        std::fs::write(&path, bytes).unwrap();
        load_torch(&path)
    });
    assert!(report.inputs >= 500, "{report:?}");
}

#[test]
fn fuzz_safetensors() {
    let seeds = vec![
        read(fixture("sae/norm.safetensors")),
        read(fixture("sae/stats_norm.safetensors")),
        read(hostile("checkpoints/strided_ok.expected.safetensors")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let report = fuzz("safetensors", &seeds, 16, 10_000, BUDGET, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let Ok(file) = SafetensorsFile::open(&path) else {
            return false;
        };
        let mut ok = true;
        for name in file.names() {
            match file.read(&name) {
                Ok(t) => assert_eq!(t.data.len(), t.shape.iter().product::<usize>()),
                Err(_) => ok = false,
            }
        }
        ok
    });
    assert!(report.inputs >= 500, "{report:?}");
}

#[test]
fn fuzz_config_json() {
    let seeds = vec![
        read(fixture("vit/reg/config.json")),
        read(fixture("vit/plain/config.json")),
    ];
    let report = fuzz("config.json", &seeds, 17, 100_000, BUDGET, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        match VitConfig::from_hf_str(&text) {
            Ok(cfg) => {
                // Everything derived from an accepted config must be computable.
                let shapes = hf_tensor_shapes(&cfg);
                assert!(!shapes.is_empty());
                assert!(cfg.head_dim() > 0 && cfg.native_grid() > 0);
                true
            }
            Err(_) => false,
        }
    });
    assert!(report.inputs >= 1_000, "{report:?}");
    assert!(report.accepted > 0, "{report:?}");
}

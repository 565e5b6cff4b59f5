//! The JSON API over loopback, against the toy setup (random test ViT with
//! the SAE at layer 1, toy SAE with statistics, random probe, 6 synthetic
//! ADE20K validation images).

use crate::common;

use std::io::{Read, Write};
use std::sync::OnceLock;

use common::*;
use sae_steer::NoProgress;
use sae_steer_ade20k::{Ade20k, Split};
use sae_steer_app::palette::class_color;
use sae_steer_app::toy::ToyOptions;
use sae_steer_data::{read_label_map, resize_crop_labels};
use sae_steer_vit::Preprocess;
use serde_json::{Value, json};

const IMAGES: usize = 6;

/// One server for all tests of this file (they run in parallel against it).
fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        TestServer::start(ToyOptions {
            images: IMAGES,
            ..ToyOptions::default()
        })
    })
}

fn all_latents(id: &str) -> Value {
    let a = post_json(
        &server().url(&format!("/api/images/{id}/latents")),
        &json!({ "patches": [], "top": 8 }),
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    a.json()
}

#[test]
fn info_describes_the_setup() {
    let a = get(&server().url("/api/info"));
    assert_eq!(a.status, 200);
    let info = a.json();
    assert_eq!(info["examples"], IMAGES);
    assert_eq!(info["layer"], 1);
    assert_eq!(info["d_sae"], 1024);
    assert_eq!(info["grid"], 16);
    assert_eq!(info["slider_max"], 10.0);
    assert!(info["stats"]["reference"].as_str().unwrap().contains("toy"));
    assert!(info["exemplar_images"].is_string());
    let guided = info["guided"].as_array().unwrap();
    assert_eq!(guided.len(), 4);
    assert_eq!(
        guided[0],
        json!({"name": "car", "index": 1872, "latent": 7235, "slider": -6.0})
    );
}

#[test]
fn page_and_assets_are_served_with_a_strict_policy() {
    let page = get(&server().url("/"));
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"));
    let html = String::from_utf8(page.body.clone()).unwrap();
    assert!(html.contains("<script src=\"/app.js\""));
    let csp = page.header("content-security-policy").expect("CSP header");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let js = get(&server().url("/app.js"));
    assert_eq!(js.status, 200);
    assert!(js.content_type.contains("javascript"));
    assert!(String::from_utf8(js.body).unwrap().contains("/api/images/"));
    assert!(
        get(&server().url("/style.css"))
            .content_type
            .starts_with("text/css")
    );
}

/// Raw request line, so that nothing normalises the path on the way.
fn raw_get(path: &str) -> (u16, String) {
    let addr = server().handle.addr();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    (status_code(&text), text)
}

#[test]
fn nothing_on_disk_is_reachable() {
    for path in [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/Cargo.toml",
        "/assets/app.js",
        "/src/lib.rs",
        "/api/../Cargo.toml",
        "/api/examples/0/../../../../etc/passwd",
    ] {
        let (status, text) = raw_get(path);
        assert!(
            status == 404 || status == 400,
            "{path}: status {status}\n{text}"
        );
        assert!(!text.contains("root:"), "{path} leaked a file");
        assert!(!text.contains("[package]"), "{path} leaked a file");
    }
    let a = get(&server().url("/nope"));
    assert_eq!(a.status, 404);
    assert!(a.error().contains("/nope"));
}

#[test]
fn examples_are_listed_by_index() {
    let a = get(&server().url("/api/examples"));
    assert_eq!(a.status, 200);
    let list = a.json();
    assert_eq!(list["total"], IMAGES);
    let names: Vec<&str> = list["examples"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            assert_eq!(e["index"], i);
            e["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(names.len(), IMAGES);
    assert_eq!(names[0], "ADE_val_00000001");
    assert_eq!(names[5], "ADE_val_00000006");
    let page = get(&server().url("/api/examples?start=4&count=10")).json();
    assert_eq!(page["start"], 4);
    assert_eq!(page["examples"].as_array().unwrap().len(), 2);
    assert_eq!(page["examples"][0]["index"], 4);
    let past = get(&server().url("/api/examples?start=100")).json();
    assert_eq!(past["examples"].as_array().unwrap().len(), 0);
    let bad = get(&server().url("/api/examples?start=-3"));
    assert_eq!(bad.status, 400);
    assert!(bad.error().contains("bad query"));
}

#[test]
fn examples_come_with_true_labels_in_the_palette() {
    let a = get(&server().url("/api/examples/2"));
    assert_eq!(a.status, 200);
    let ex = a.json();
    assert_eq!(ex["id"], "2");
    assert_eq!(ex["index"], 2);
    assert_eq!(ex["name"], "ADE_val_00000003");
    let image = data_url_image(ex["image"].as_str().unwrap());
    assert_eq!(image.dimensions(), (224, 224));
    let labels = data_url_image(ex["labels"].as_str().unwrap());
    assert_eq!(labels.dimensions(), (224, 224));

    // The label image is the reference's resize + crop of the annotation,
    // drawn in the fixed palette.
    let root = server_dataset_root();
    let ade = Ade20k::open(&root).unwrap();
    let item = &ade.split(Split::Validation).unwrap().items[2];
    let map = read_label_map(item.label.as_ref().unwrap()).unwrap();
    let expected = resize_crop_labels(&map, &Preprocess::default());
    for (i, &l) in expected.iter().enumerate() {
        let (x, y) = ((i % 224) as u32, (i / 224) as u32);
        assert_eq!(labels.get_pixel(x, y).0, class_color(l), "pixel ({x}, {y})");
    }
    let legend = ex["legend"].as_array().unwrap();
    assert!(!legend.is_empty());
    let total: f64 = legend.iter().map(|e| e["share"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-4, "{total}");
    for e in legend {
        let c = e["class"].as_u64().unwrap() as u8;
        let [r, g, b] = class_color(c);
        assert_eq!(e["color"], format!("#{r:02x}{g:02x}{b:02x}"));
        assert!(expected.contains(&c));
    }
}

/// A copy of the shared server's dataset: synthetic datasets are
/// deterministic, so the same options give the same files.
fn server_dataset_root() -> std::path::PathBuf {
    static ROOT: OnceLock<(tempfile::TempDir, std::path::PathBuf)> = OnceLock::new();
    let (_, root) = ROOT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let opts = sae_steer_ade20k::synth::SynthOptions {
            train: 1,
            val: IMAGES,
            seed: 0,
            min_side: 96,
            max_side: 320,
            ..Default::default()
        };
        let report =
            sae_steer_ade20k::synth::synthesize(&dir.path().join("ade20k"), &opts, &NoProgress)
                .unwrap();
        (dir, report.root)
    });
    root.clone()
}

#[test]
fn bad_indices_and_ids_are_json_errors() {
    let a = get(&server().url(&format!("/api/examples/{IMAGES}")));
    assert_eq!(a.status, 404);
    assert!(
        a.error().contains(&format!("no example {IMAGES}")),
        "{}",
        a.error()
    );
    let a = get(&server().url("/api/examples/-1"));
    assert_eq!(a.status, 400);
    assert!(a.error().contains("-1"));
    let a = get(&server().url("/api/examples/99999999999999999999999"));
    assert_eq!(a.status, 400);
    let a = get(&server().url("/api/images/x7/prediction"));
    assert_eq!(a.status, 400);
    let a = get(&server().url("/api/images/u999/prediction"));
    assert_eq!(a.status, 404);
    assert!(
        a.error().contains("no upload u0000000000000999"),
        "{}",
        a.error()
    );
    let a = get(&server().url(&format!("/api/images/{IMAGES}/prediction")));
    assert_eq!(a.status, 404);
    let a = get(&server().url("/api/upload"));
    assert_eq!(a.status, 405);
    assert!(a.error().contains("/api/upload"));
}

#[test]
fn undecodable_path_segments_are_json_errors() {
    // `%FF` is not UTF-8: axum's own rejection would be plain text.
    for path in [
        "/api/examples/%FF",
        "/api/images/%FF/prediction",
        "/api/reference/%FF",
    ] {
        let (status, text) = raw_get(path);
        assert_eq!(status, 400, "{path}\n{text}");
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{path}\n{text}"
        );
        let body: Value = serde_json::from_str(body.trim())
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        assert!(
            body["error"].as_str().unwrap_or("").contains("bad path"),
            "{path}: {body}"
        );
    }
    for (path, body) in [
        ("/api/images/%FF/latents", json!({})),
        ("/api/images/%FF/steer", json!({ "edits": {} })),
    ] {
        let a = post_json(&server().url(path), &body);
        assert_eq!(a.status, 400, "{path}");
        assert!(a.error().contains("bad path"), "{path}: {}", a.error());
    }
}

#[test]
fn prediction_is_a_patch_map_drawn_in_blocks() {
    let a = get(&server().url("/api/images/1/prediction"));
    assert_eq!(a.status, 200);
    let p = a.json();
    assert_eq!(p["id"], "1");
    assert_eq!(p["grid"], 16);
    let labels = patches(&p);
    assert_eq!(labels.len(), 256);
    assert!(labels.iter().all(|&l| l <= 150));
    let image = data_url_image(p["image"].as_str().unwrap());
    assert_eq!(image.dimensions(), (224, 224));
    for (i, &l) in labels.iter().enumerate() {
        let (x, y) = ((i % 16) as u32 * 14 + 7, (i / 16) as u32 * 14 + 7);
        assert_eq!(image.get_pixel(x, y).0, class_color(l), "patch {i}");
    }
    let legend_classes: Vec<u64> = p["legend"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["class"].as_u64().unwrap())
        .collect();
    let mut present: Vec<u64> = labels.iter().map(|&l| l as u64).collect();
    present.sort();
    present.dedup();
    let mut sorted = legend_classes.clone();
    sorted.sort();
    assert_eq!(sorted, present);
    // Asking twice gives the same answer (cached state, deterministic model).
    assert_eq!(
        patches(&get(&server().url("/api/images/1/prediction")).json()),
        labels
    );
}

#[test]
fn latents_of_patches_sum_their_activations_and_hide_frequent_ones() {
    let report = all_latents("0");
    assert_eq!(report["exemplar_images"], true);
    assert_eq!(report["patches"].as_array().unwrap().len(), 256);
    let latents = report["latents"].as_array().unwrap();
    assert_eq!(latents.len(), 8);
    assert!(
        report["hidden_frequent"].as_u64().unwrap() > 0,
        "dense latents are hidden"
    );
    let mut previous = f64::INFINITY;
    for l in latents {
        let j = l["latent"].as_u64().unwrap();
        assert_ne!(j % 4, 3, "latent {j} is one of the toy's dense latents");
        assert_eq!(l["frequent"], false);
        assert!(l["frequency"].as_f64().unwrap() < 1e-2);
        let activation = l["activation"].as_f64().unwrap();
        assert!(
            activation > 0.0 && activation <= previous,
            "sorted by activation"
        );
        previous = activation;
        let on_image: Vec<f64> = l["image_patches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(on_image.len(), 256);
        let sum: f64 = on_image.iter().sum();
        assert!(
            (sum - activation).abs() <= 1e-3 * activation.max(1.0),
            "{sum} vs {activation}"
        );
        let max_obs = l["max_obs"].as_f64().unwrap();
        assert_eq!(l["source"], "stats");
        assert_eq!(l["unit"].as_f64().unwrap(), max_obs);
        let exemplars = l["exemplars"].as_array().unwrap();
        assert!(!exemplars.is_empty() && exemplars.len() <= 4);
        // The image itself is a reference image, so the latent's maximum on
        // it is at most max_obs.
        let image_max = on_image.iter().cloned().fold(0.0, f64::max);
        assert!(
            image_max <= max_obs * 1.001 + 1e-6,
            "{image_max} > {max_obs}"
        );
        for e in exemplars {
            let values: Vec<f64> = e["patches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(values.len(), 256);
            let top = values.iter().cloned().fold(f64::MIN, f64::max);
            let value = e["value"].as_f64().unwrap();
            assert!(
                (top - value).abs() <= 1e-2 * value.abs().max(1.0),
                "f16 patches vs value"
            );
            assert!(value <= max_obs * 1.001 + 1e-6);
            assert!(e["image"].as_u64().unwrap() < IMAGES as u64);
        }
    }

    // The two patches where the top latent fires most: it is listed for
    // them, with the sum over just those two.
    let top = &latents[0];
    let on_image: Vec<f64> = top["image_patches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mut order: Vec<usize> = (0..256).collect();
    order.sort_by(|&a, &b| on_image[b].total_cmp(&on_image[a]));
    let chosen = [order[0], order[1], order[1]];
    let a = post_json(
        &server().url("/api/images/0/latents"),
        &json!({ "patches": chosen, "top": 64 }),
    );
    assert_eq!(a.status, 200);
    let r = a.json();
    let mut expected_patches = vec![order[0], order[1]];
    expected_patches.sort();
    assert_eq!(
        r["patches"],
        json!(expected_patches),
        "sorted, repeats dropped"
    );
    let again = r["latents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["latent"] == top["latent"])
        .expect("the top latent fires on its own strongest patches");
    let expected = on_image[order[0]] + on_image[order[1]];
    let got = again["activation"].as_f64().unwrap();
    assert!(
        (got - expected).abs() <= 1e-3 * expected.max(1.0),
        "{got} vs {expected}"
    );
}

#[test]
fn included_latents_are_shown_even_when_frequent() {
    let a = post_json(
        &server().url("/api/images/0/latents"),
        &json!({ "patches": [0, 1, 2], "top": 0, "include": [3, 8] }),
    );
    assert_eq!(a.status, 200);
    let latents = a.json()["latents"].as_array().unwrap().clone();
    let ids: Vec<u64> = latents
        .iter()
        .map(|l| l["latent"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [3, 8]);
    assert_eq!(
        latents[0]["frequent"], true,
        "latent 3 is dense in the toy SAE"
    );
    assert!(latents[0]["frequency"].as_f64().unwrap() > 0.3);

    for (body, needle) in [
        (json!({ "include": [5000] }), "latent 5000 does not exist"),
        (json!({ "patches": [256] }), "patch 256 does not exist"),
        (json!({ "top": 65 }), "at most 64"),
        (json!({ "patches": "all" }), "bad request body"),
        (json!({ "patches": [], "colour": 1 }), "unknown field"),
    ] {
        let a = post_json(&server().url("/api/images/0/latents"), &body);
        assert!((400..500).contains(&a.status), "{body}: {}", a.status);
        assert!(a.error().contains(needle), "{body}: {}", a.error());
    }
}

#[test]
fn a_strong_edit_changes_the_segmentation() {
    let report = all_latents("3");
    let top = &report["latents"][0];
    let j = top["latent"].as_u64().unwrap();
    let max_obs = top["max_obs"].as_f64().unwrap();
    let original = patches(&get(&server().url("/api/images/3/prediction")).json());

    let none = post_json(
        &server().url("/api/images/3/steer"),
        &json!({ "edits": {} }),
    );
    assert_eq!(none.status, 200);
    let none = none.json();
    assert_eq!(
        patches(&none),
        original,
        "no edits: the unedited prediction"
    );
    assert_eq!(none["changed"], 0);

    let a = post_json(
        &server().url("/api/images/3/steer"),
        &json!({ "edits": { j.to_string(): 10 } }),
    );
    assert_eq!(a.status, 200);
    let steered = a.json();
    let labels = patches(&steered);
    let changed = labels.iter().zip(&original).filter(|(a, b)| a != b).count();
    assert!(
        changed > 0,
        "setting latent {j} to 10 x max_obs everywhere changed nothing"
    );
    assert_eq!(steered["changed"], changed);
    let edit = &steered["edits"][0];
    assert_eq!(edit["latent"], j);
    assert_eq!(edit["unit_source"], "stats");
    let value = edit["value"].as_f64().unwrap();
    assert!(
        (value - 10.0 * max_obs).abs() <= 1e-4 * value.abs(),
        "{value} vs 10 x {max_obs}"
    );
    let image = data_url_image(steered["image"].as_str().unwrap());
    for (i, &l) in labels.iter().enumerate() {
        let (x, y) = ((i % 16) as u32 * 14 + 3, (i / 16) as u32 * 14 + 3);
        assert_eq!(image.get_pixel(x, y).0, class_color(l));
    }
    // The original is still what the image predicts afterwards.
    assert_eq!(
        patches(&get(&server().url("/api/images/3/prediction")).json()),
        original
    );
}

#[test]
fn bad_edits_are_rejected() {
    let url = server().url("/api/images/0/steer");
    for (body, needle) in [
        (
            json!({ "edits": { "5000": 1 } }),
            "latent 5000 does not exist",
        ),
        (json!({ "edits": { "2": 10.5 } }), "outside [-10, 10]"),
        (json!({ "edits": { "2": -11 } }), "outside [-10, 10]"),
        (json!({ "edits": { "two": 1 } }), "`two` is not a latent id"),
        (json!({ "edits": [1, 2] }), "bad request body"),
    ] {
        let a = post_json(&url, &body);
        assert_eq!(
            a.status,
            if needle == "bad request body" {
                422
            } else {
                400
            },
            "{body}"
        );
        assert!(a.error().contains(needle), "{body}: {}", a.error());
    }
    let a = post_bytes(&url, "application/json", b"{not json");
    assert_eq!(a.status, 400);
    assert!(a.error().contains("bad request body"));
    let a = post_bytes(&url, "text/plain", b"{}");
    assert_eq!(a.status, 415);
    assert!(
        a.error().contains("Content-Type") || a.error().contains("content type"),
        "{}",
        a.error()
    );
}

fn png_of(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    sae_steer_app::palette::png_bytes(&img).unwrap()
}

#[test]
fn uploads_are_checked_before_decoding() {
    let url = server().url("/api/upload");
    // Over the byte limit.
    let big = vec![0u8; LIMITS.max_bytes + 1];
    let a = post_bytes(&url, "image/png", &big);
    assert_eq!(a.status, 413);
    assert!(a.error().contains("limit"), "{}", a.error());
    // Too many pixels, in a file small enough: a one-colour 2000 x 1000
    // PNG, cut in half so that decoding it would fail. It is refused for its
    // header's dimensions, so the limit was checked before any decoding.
    let solid = image::RgbImage::from_pixel(2000, 1000, image::Rgb([40, 90, 200]));
    let huge = sae_steer_app::palette::png_bytes(&solid).unwrap();
    assert!(huge.len() < LIMITS.max_bytes);
    let a = post_bytes(&url, "image/png", &huge[..huge.len() / 2]);
    assert_eq!(a.status, 413, "{}", String::from_utf8_lossy(&a.body));
    assert!(a.error().contains("2000x1000"), "{}", a.error());
    // Not an image.
    let a = post_bytes(&url, "image/png", b"hello, this is text and not a picture");
    assert_eq!(a.status, 415);
    assert!(a.error().contains("not a JPEG or PNG"), "{}", a.error());
    // A format we do not take.
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&[1, 0, 1, 0, 0, 0, 0]);
    let a = post_bytes(&url, "image/gif", &gif);
    assert_eq!(a.status, 415);
    // Empty and truncated: a cut file is refused, not filled in.
    assert_eq!(post_bytes(&url, "image/png", b"").status, 400);
    let ok = png_of(300, 200);
    let a = post_bytes(&url, "image/png", &ok[..ok.len() / 2]);
    assert_eq!(a.status, 422, "{}", String::from_utf8_lossy(&a.body));
    assert!(a.error().contains("truncated"), "{}", a.error());
}

#[test]
fn an_uploaded_image_can_be_steered() {
    let a = post_bytes(&server().url("/api/upload"), "image/png", &png_of(320, 240));
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let up = a.json();
    let id = up["id"].as_str().unwrap().to_string();
    // A random 64-bit id, not a count.
    assert!(id.starts_with('u') && id.len() == 17, "{id}");
    assert!(up["labels"].is_null());
    assert_eq!(
        data_url_image(up["image"].as_str().unwrap()).dimensions(),
        (224, 224)
    );
    let p = get(&server().url(&format!("/api/images/{id}/prediction")));
    assert_eq!(p.status, 200);
    assert_eq!(patches(&p.json()).len(), 256);
    let report = all_latents(&id);
    let j = report["latents"][0]["latent"].as_u64().unwrap();
    let s = post_json(
        &server().url(&format!("/api/images/{id}/steer")),
        &json!({ "edits": { j.to_string(): -3 } }),
    );
    assert_eq!(s.status, 200);
}

#[test]
fn exemplar_images_are_served_from_the_reference_set() {
    let a = get(&server().url("/api/reference/1"));
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type, "image/png");
    let img = image::load_from_memory(&a.body).unwrap();
    assert_eq!((img.width(), img.height()), (224, 224));
    let a = get(&server().url(&format!("/api/reference/{IMAGES}")));
    assert_eq!(a.status, 404);
    assert!(a.error().contains("no reference image"));
    assert_eq!(get(&server().url("/api/reference/abc")).status, 400);
}

#[test]
fn eight_concurrent_clients_are_all_served() {
    let report = all_latents("4");
    let j = report["latents"][0]["latent"].as_u64().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|k| {
            let steer_url = server().url("/api/images/4/steer");
            let pred_url = server().url(&format!("/api/images/{}/prediction", k % IMAGES));
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                for round in 0..3 {
                    let slider = -10.0 + 0.8 * (k * 3 + round) as f64;
                    let a = post_json(&steer_url, &json!({ "edits": { j.to_string(): slider } }));
                    statuses.push(a.status);
                    statuses.push(get(&pred_url).status);
                }
                statuses
            })
        })
        .collect();
    for t in threads {
        let statuses = t.join().expect("client thread");
        assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    }
}

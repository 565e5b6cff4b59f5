//! The `load_check` program; its usage is documented in `examples/load_check.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use sae_steer::backend::Cpu;
use sae_steer::{Vit, VitConfig};
use sae_steer_app::toy::{ToyOptions, build};
use sae_steer_app::{ServeOptions, Session, serve};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
pub struct Args {
    /// small or vit-b.
    #[arg(long, default_value = "small")]
    geometry: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Slider requests per client.
    #[arg(long, default_value_t = 25)]
    requests: usize,
}

type B = Cpu;

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(600))
        .build()
}

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Result<Value, String> {
    agent
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .map_err(|e| format!("{url}: {e}"))?
        .into_string()
        .map_err(|e| format!("{url}: {e}"))
        .and_then(|text| serde_json::from_str(&text).map_err(|e| format!("{url}: {e}")))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at]
}

/// Runs `clients` threads of `requests` slider requests; client `k` steers
/// image `image_of(k)` with latent `latents[image]`.
fn scenario(
    base: &str,
    clients: usize,
    requests: usize,
    latents: &[u64],
    image_of: impl Fn(usize) -> usize,
) -> Result<(Vec<f64>, f64), String> {
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|k| {
            let image = image_of(k);
            let url = format!("{base}/api/images/{image}/steer");
            let latent = latents[image];
            std::thread::spawn(move || -> Result<Vec<f64>, String> {
                let agent = agent();
                (0..requests)
                    .map(|r| {
                        let slider = ((k * 7 + r * 3) % 21) as f64 - 10.0;
                        let t = Instant::now();
                        post(
                            &agent,
                            &url,
                            &json!({ "edits": { latent.to_string(): slider } }),
                        )?;
                        Ok(t.elapsed().as_secs_f64() * 1e3)
                    })
                    .collect()
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().map_err(|_| "a client panicked".to_string())??);
    }
    let wall = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok((all, wall))
}

pub fn main() -> Result<(), String> {
    let args = Args::parse();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data = dir.path().join("ade20k");
    let geometry = args.geometry.clone();
    let images = args.clients.max(1);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let device = Default::default();
        let (vit, opts) = match geometry.as_str() {
            "vit-b" => (
                Vit::<B>::random(VitConfig::vit_b14_reg(), 0, &device),
                ToyOptions {
                    layer: 10,
                    d_sae: 24_576,
                    images,
                    ..ToyOptions::default()
                },
            ),
            _ => (
                Vit::<B>::load(
                    concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/vit/reg"),
                    &device,
                ),
                ToyOptions {
                    images,
                    ..ToyOptions::default()
                },
            ),
        };
        let built = vit
            .map_err(crate::cli::error_text)
            .and_then(|vit| build(vit, &data, &opts).map_err(crate::cli::error_text));
        let toy = match built {
            Ok(toy) => toy,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let session = Session::new(toy.steering, Arc::new(toy.store), 16);
        let options = ServeOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            queue: 256,
            ..ServeOptions::default()
        };
        let sent = tx.clone();
        if let Err(e) = serve(session, options, move |h| {
            let _ = sent.send(Ok(h));
        }) {
            let _ = tx.send(Err(crate::cli::error_text(e)));
        }
    });
    let handle = rx.recv().map_err(|e| e.to_string())??;
    let base = handle.url();
    let agent = agent();

    // Every image once to the layer (timed: the cost of a new image), and
    // its top latent.
    let mut encode_ms = Vec::new();
    let mut latents = Vec::new();
    for i in 0..images {
        let t = Instant::now();
        agent
            .get(&format!("{base}/api/images/{i}/prediction"))
            .call()
            .map_err(|e| e.to_string())?;
        encode_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let report = post(
            &agent,
            &format!("{base}/api/images/{i}/latents"),
            &json!({ "patches": [], "top": 1 }),
        )?;
        latents.push(report["latents"][0]["latent"].as_u64().unwrap_or(0));
    }
    encode_ms.sort_by(f64::total_cmp);
    println!(
        "geometry {}: first prediction of an image (ViT to the layer + rest): p50 {:.1} ms",
        args.geometry,
        percentile(&encode_ms, 0.5)
    );
    println!("| clients | images | requests | p50 ms | p99 ms | max ms | requests/s |");
    println!("|--------:|-------:|---------:|-------:|-------:|-------:|-----------:|");
    let runs: [(usize, bool); 3] = [(1, false), (args.clients, false), (args.clients, true)];
    for (clients, own_image) in runs {
        let (lat, wall) = scenario(&base, clients, args.requests, &latents, |k| {
            if own_image { k % images } else { 0 }
        })?;
        println!(
            "| {clients} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            if own_image { "one each" } else { "same" },
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(0.0),
            lat.len() as f64 / wall
        );
    }
    handle.shutdown();
    Ok(())
}

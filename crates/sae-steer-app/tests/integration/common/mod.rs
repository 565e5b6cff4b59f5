//! The small setup the app's tests run against: the random-weight test ViT
//! (hidden 128, 3 blocks, SAE at layer 1), the toy SAE, statistics and
//! probe, and a synthetic ADE20K, served over loopback.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use burn::backend::NdArray;
use sae_steer_app::toy::{self, Toy, ToyOptions};
use sae_steer_app::{ServeOptions, ServerHandle, ServerLimits, Session, UploadLimits, serve};
use sae_steer_vit::Vit;
use serde_json::Value;

pub type B = NdArray<f32>;

pub fn vit_fixture() -> PathBuf {
    sae_steer_testkit::test_vit_dir()
}

/// The toy setup on the CPU, data written under `dir`.
pub fn toy(dir: &std::path::Path, opts: &ToyOptions) -> Toy<B> {
    let device = Default::default();
    let vit = Vit::<B>::load(&vit_fixture().to_string_lossy(), &device).expect("test ViT");
    toy::build(vit, dir, opts).expect("toy setup")
}

/// Upload limits small enough to test cheaply.
pub const LIMITS: UploadLimits = UploadLimits {
    max_bytes: 256 * 1024,
    max_pixels: 1_000_000,
    max_side: 8192,
    max_aspect: 32,
    max_alloc: 64 << 20,
};

/// A toy server on a free loopback port, stopped when dropped.
pub struct TestServer {
    pub handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// With the small [`LIMITS`] and the default server limits.
    pub fn start(opts: ToyOptions) -> Self {
        Self::start_with(opts, LIMITS, ServerLimits::default())
    }

    /// With the given upload and server limits.
    pub fn start_with(opts: ToyOptions, uploads: UploadLimits, limits: ServerLimits) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("ade20k");
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let toy = toy(&data, &opts);
            let store = Arc::new(toy.store.with_limits(uploads));
            let session = Session::new(toy.steering, store, 4);
            let options = ServeOptions {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                dataset: "toy ADE20K validation".into(),
                limits,
                ..ServeOptions::default()
            };
            serve(session, options, |handle| {
                let _ = tx.send(handle);
            })
            .expect("server runs");
        });
        let handle = rx
            .recv_timeout(Duration::from_secs(300))
            .expect("the test server started");
        Self {
            handle,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Where the server's dataset lives (no answer may name it).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.url())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An HTTP answer: status, content type, body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` of a JSON error body (fails if the body is not one).
    pub fn error(&self) -> String {
        let v = self.json();
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no `error` in {v}"))
            .to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> Answer {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = response.status();
    let content_type = response.content_type().to_string();
    let headers = response
        .headers_names()
        .into_iter()
        .filter_map(|n| response.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut body).expect("body");
    Answer {
        status,
        content_type,
        headers,
        body,
    }
}

pub fn get(url: &str) -> Answer {
    answer(agent().get(url).call())
}

pub fn post_json(url: &str, body: &Value) -> Answer {
    answer(
        agent()
            .post(url)
            .set("Content-Type", "application/json")
            .send_bytes(body.to_string().as_bytes()),
    )
}

pub fn post_bytes(url: &str, content_type: &str, body: &[u8]) -> Answer {
    answer(
        agent()
            .post(url)
            .set("Content-Type", content_type)
            .send_bytes(body),
    )
}

/// Decodes a `data:image/png;base64,...` URL.
pub fn data_url_image(url: &str) -> image::RgbImage {
    use base64::Engine as _;
    let b64 = url
        .strip_prefix("data:image/png;base64,")
        .unwrap_or_else(|| panic!("not a PNG data URL: {}", &url[..url.len().min(40)]));
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    image::load_from_memory(&png).expect("PNG").to_rgb8()
}

/// Patch labels of a JSON answer.
pub fn patches(v: &Value) -> Vec<u8> {
    v["patches"]
        .as_array()
        .unwrap_or_else(|| panic!("no patches in {v}"))
        .iter()
        .map(|x| x.as_u64().expect("label") as u8)
        .collect()
}

/// The status code of a raw HTTP/1.1 answer (`HTTP/1.1 413 ...`), 0 when
/// there is none (the server closed the connection without answering).
pub fn status_code(raw_answer: &str) -> u16 {
    raw_answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

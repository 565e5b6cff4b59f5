//! The server under load, measured: 500 idle connections and 20 parallel
//! maximum-size uploads (16 MiB files of 40 megapixels, the default
//! [`UploadLimits`]) open at once, while 8 clients steer (each sends its
//! next request [`THINK`] after the last answer). Every steering
//! request must get a 200 within [`STEER_DEADLINE`], and the server's peak
//! memory must stay under the bound the limits imply (see
//! [`memory_bound`]).
//!
//! The server runs in a child process (this test binary again, running only
//! [`load_server_process`]), so that its memory is its own: the other tests
//! of this binary run in parallel threads of this process. Figures (steering
//! latency p50/max, peak RSS, upload outcomes) are printed.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use sae_steer_app::toy::ToyOptions;
use sae_steer_app::{ServerLimits, UploadLimits};
use sae_steer_testkit::crc32;
use serde_json::json;

/// Set in the child's environment: run the server.
const CHILD: &str = "SAE_STEER_LOAD_SERVER";
const IDLE: usize = 500;
const UPLOADS: usize = 20;
const STEERING: usize = 8;
/// Longest a steering request may take under the load.
const STEER_DEADLINE: Duration = Duration::from_secs(20);
const IMAGES: usize = 4;
/// Pause of a steering client between its requests.
const THINK: Duration = Duration::from_millis(100);

fn load_limits() -> ServerLimits {
    ServerLimits {
        // The idle connections must outlive the test.
        header_timeout: Duration::from_secs(120),
        ..ServerLimits::default()
    }
}

/// Most memory the server may hold over its idle baseline: the upload
/// bodies in memory, the decodes running, and 96 MiB for connections,
/// buffers and the allocator's slack.
fn memory_bound(uploads: &UploadLimits, limits: &ServerLimits) -> u64 {
    limits.max_uploads as u64 * uploads.max_bytes as u64
        + limits.max_decodes as u64 * uploads.peak_bytes()
        + (96 << 20)
}

/// The server of [`steering_stays_responsive_under_load`], in its own
/// process; does nothing when run otherwise.
#[test]
#[ignore = "the server process of load::steering_stays_responsive_under_load, which starts it"]
fn load_server_process() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let server = TestServer::start_with(
        ToyOptions {
            images: IMAGES,
            ..ToyOptions::default()
        },
        UploadLimits::default(),
        load_limits(),
    );
    println!("LOAD_SERVER {}", server.handle.addr());
    std::io::stdout().flush().unwrap();
    // Serves until the parent closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// The child process, killed (by its own handle) when dropped.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start() -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "load::load_server_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the server process starts");
        // libtest prints the test's name, then (on the same line) its output.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Drains its stdout to the end, so it never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((_, addr)) = line.split_once("LOAD_SERVER ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(300))
            .expect("the server process printed its address")
            .parse()
            .unwrap();
        Self { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A `kB` figure of /proc/PID/status, in bytes.
    fn status_bytes(&self, field: &str) -> u64 {
        proc_status(self.child.id(), field)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The soft limit on open files (this process's and the child's).
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

/// A valid PNG of the largest size the default limits take: 8000 x 5000
/// RGB (40 MP, 120 MB decoded), padded to exactly `max_bytes` with a
/// private ancillary chunk, which decoders skip.
fn maximum_upload(limits: &UploadLimits) -> Vec<u8> {
    let (width, height) = (8000u32, 5000u32);
    assert_eq!(u64::from(width) * u64::from(height), limits.max_pixels);
    let mut png = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Balanced);
        // Unfiltered rows: the cost of the decode is its memory, which is
        // what is measured, not the unfiltering.
        encoder.set_filter(png::Filter::NoFilter);
        let mut writer = encoder.write_header().unwrap();
        let row = vec![0x80u8; width as usize * 3];
        let mut stream = writer.stream_writer().unwrap();
        for _ in 0..height {
            stream.write_all(&row).unwrap();
        }
        stream.finish().unwrap();
        writer.finish().unwrap();
    }
    // Before IEND: `teSt` is ancillary, private, safe to copy.
    let iend = png.split_off(png.len() - 12);
    assert!(
        png.len() < limits.max_bytes / 2,
        "{} bytes before padding",
        png.len()
    );
    let pad = limits.max_bytes - png.len() - iend.len() - 12;
    let mut chunk = b"teSt".to_vec();
    chunk.extend(std::iter::repeat_n(0x5A, pad));
    png.extend_from_slice(&(pad as u32).to_be_bytes());
    png.extend_from_slice(&chunk);
    png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    png.extend_from_slice(&iend);
    assert_eq!(png.len(), limits.max_bytes);
    png
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn steering_stays_responsive_under_load() {
    let uploads_limits = UploadLimits::default();
    let limits = load_limits();
    // Each idle connection is a descriptor here and one in the server.
    let files = open_files_limit();
    let idle_count = IDLE.min(files.saturating_sub(200));
    if idle_count < IDLE {
        println!(
            "load: the open-files limit is {files}; {idle_count} idle connections instead of {IDLE}"
        );
    }
    let body = Arc::new(maximum_upload(&uploads_limits));
    let server = ServerProcess::start();
    assert_eq!(get(&server.url("/api/info")).status, 200);
    // Warm the model and the example cache, as a user would have.
    for i in 0..IMAGES {
        let a = post_json(
            &server.url(&format!("/api/images/{i}/steer")),
            &json!({ "edits": { "5": 2.0 } }),
        );
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    }
    let baseline = server.status_bytes("VmRSS");

    let idle: Vec<TcpStream> = (0..idle_count)
        .map(|_| TcpStream::connect(server.addr).expect("an idle connection"))
        .collect();

    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (peak.clone(), done.clone(), server.child.id());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(proc_status(pid, "VmRSS"), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let start = Barrier::new(UPLOADS + STEERING);
    let start = Arc::new(start);
    let uploading = Arc::new(AtomicU64::new(UPLOADS as u64));
    let uploaders: Vec<_> = (0..UPLOADS)
        .map(|_| {
            let (url, body, start, uploading) = (
                server.url("/api/upload"),
                body.clone(),
                start.clone(),
                uploading.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                let t = Instant::now();
                let a = post_bytes(&url, "image/png", &body);
                uploading.fetch_sub(1, Ordering::SeqCst);
                (a.status, t.elapsed())
            })
        })
        .collect();
    let steerers: Vec<_> = (0..STEERING)
        .map(|k| {
            let (url, start, uploading) = (
                server.url(&format!("/api/images/{}/steer", k % IMAGES)),
                start.clone(),
                uploading.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                let mut latencies = Vec::new();
                let mut round = 0;
                // While the uploads run, and at least 3 requests each.
                while uploading.load(Ordering::SeqCst) > 0 || round < 3 {
                    let slider = -10.0 + (k * 7 + round) as f64 % 20.0;
                    let t = Instant::now();
                    let a = post_json(&url, &json!({ "edits": { "7": slider } }));
                    let took = t.elapsed();
                    assert_eq!(a.status, 200, "steering client {k}: {}", a.error());
                    assert!(
                        took <= STEER_DEADLINE,
                        "steering client {k}: {took:?} for one request under load"
                    );
                    latencies.push(took);
                    round += 1;
                    // A user dragging a slider: the page sends the next
                    // value once the last answer is in, at a human pace.
                    std::thread::sleep(THINK);
                }
                latencies
            })
        })
        .collect();

    let t0 = Instant::now();
    let mut latencies: Vec<Duration> = steerers
        .into_iter()
        .flat_map(|t| t.join().expect("steering client"))
        .collect();
    let outcomes: Vec<(u16, Duration)> = uploaders
        .into_iter()
        .map(|t| t.join().expect("upload client"))
        .collect();
    let elapsed = t0.elapsed();
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();

    // The idle connections are all still open, and the server still answers.
    let mut still_open = 0;
    for mut c in idle {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        if matches!(c.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            still_open += 1;
        }
    }
    assert_eq!(get(&server.url("/api/info")).status, 200);
    let hwm = server.status_bytes("VmHWM");
    let peak = peak.load(Ordering::SeqCst);

    latencies.sort();
    let ok = outcomes.iter().filter(|(s, _)| *s == 200).count();
    let busy = outcomes.iter().filter(|(s, _)| *s == 503).count();
    let slowest_upload = outcomes.iter().map(|(_, t)| *t).max().unwrap();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let bound = memory_bound(&uploads_limits, &limits);
    println!(
        "load: {idle_count} idle connections ({still_open} still open after), {UPLOADS} uploads of \
         {} bytes (40 MP): {ok} answered 200, {busy} 503, slowest {slowest_upload:.2?}; \
         {STEERING} steering clients: {} requests, p50 {:.0?}, max {:.0?}; \
         server RSS: {:.0} MiB idle, {:.0} MiB peak under load (VmHWM {:.0} MiB), \
         bound {:.0} MiB over idle; {elapsed:.1?} in all",
        body.len(),
        latencies.len(),
        percentile(&latencies, 0.5),
        latencies.last().unwrap(),
        mib(baseline),
        mib(peak),
        mib(hwm),
        mib(bound),
    );
    for (status, _) in &outcomes {
        assert!(*status == 200 || *status == 503, "an upload got {status}");
    }
    assert!(ok > 0, "no upload got through");
    assert_eq!(still_open, idle_count, "idle connections were dropped");
    assert!(
        peak.max(hwm) <= baseline + bound,
        "the server's RSS reached {:.0} MiB, over {:.0} MiB idle + {:.0} MiB",
        mib(peak.max(hwm)),
        mib(baseline),
        mib(bound)
    );
}

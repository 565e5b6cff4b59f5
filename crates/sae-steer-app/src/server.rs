//! The HTTP side: the embedded page and a JSON API over a [`Session`].
//!
//! The model work runs on one worker thread (the thread that calls
//! [`serve`], which owns the models, so no backend type has to cross
//! threads); handlers hand it jobs over a bounded channel and await the
//! reply, so the async executor never blocks on a model. Image decoding and
//! PNG encoding run on tokio's blocking pool.
//!
//! API (every error is a 4xx/5xx with a JSON body `{"error": "..."}`):
//!
//! | request | answer |
//! |---|---|
//! | `GET /api/info` | dataset size, layer, SAE width, statistics, guided examples, limits |
//! | `GET /api/examples?start=0&count=100` | `{total, start, examples: [{index, name}]}` |
//! | `GET /api/examples/{index}` | `{id, index, name, image, labels, legend}` (PNG data URLs) |
//! | `POST /api/upload` (body: JPEG or PNG bytes) | `{id: "u1", name, image, labels: null, legend: []}` |
//! | `GET /api/images/{id}/prediction` | `{id, grid, patches, image, legend}` |
//! | `POST /api/images/{id}/latents` `{patches, top?, include?}` | top latents of the patches with exemplars |
//! | `POST /api/images/{id}/steer` `{edits: {"7235": -6}}` | prediction after the edits, `changed` patches |
//! | `GET /api/reference/{image}` | an exemplar image (PNG), when the statistics' reference set is at hand |
//!
//! Defences (the server listens on loopback, but every page the user's
//! browser opens can send it requests):
//!
//! - **Host check**: only requests whose `Host` is `localhost`, `127.0.0.1`,
//!   the bound address (`[::1]` when bound there), or one of
//!   [`ServeOptions::hosts`] are answered, with any port (an SSH tunnel
//!   changes it); others get 421. A DNS-rebinding page (its own name
//!   pointing at 127.0.0.1) sends its own name and is refused. When bound to
//!   all interfaces (`0.0.0.0`, `::`), any IP literal is taken: a literal
//!   cannot be rebound.
//! - **Origin check**: a `POST` whose `Origin` is not one of those hosts
//!   (over `http://`) gets 403.
//! - **No simple cross-site uploads**: `POST /api/upload` needs
//!   `Content-Type: image/png` or `image/jpeg` (415 otherwise), which a form
//!   or a `no-cors` fetch cannot send without a CORS preflight, which the
//!   server does not grant; the JSON calls need `application/json`.
//! - **Bounded images**: [`UploadLimits`](crate::UploadLimits) (bytes, sides,
//!   aspect ratio and pixels from the header before decoding, then the
//!   decoder's allocation budget); 413 over them, 415 for other formats, 422
//!   for truncated or damaged files.
//! - **Bounded server**: [`ServerLimits`]: open connections, the time to send
//!   a request head (also how long an idle connection is kept) and a body
//!   (408, then the connection is closed), uploads received and decoded at
//!   once (503 after a wait).
//! - **No local paths in answers**: a 500's message (a dataset file that
//!   fails to read names its path) goes to the server's stderr; the client
//!   gets a generic one.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use burn::tensor::backend::Backend;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sae_steer::ErrorChain;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

use crate::assets;
use crate::error::{AppError, Result};
use crate::images::{ImageKey, ImageStore, ShownImage};
use crate::palette::{colorize, legend, png_bytes, png_data_url};
use crate::session::{Session, Steered};
use crate::steering::{LatentReport, MAX_LATENTS, SLIDER_MAX, SliderEdit};

/// One of the preprint's steering examples (reference facts section 9).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuidedExample {
    pub name: &'static str,
    /// ADE20K validation index.
    pub index: usize,
    pub latent: usize,
    pub slider: f32,
}

/// Car, painting, toilet and bed, as in the reference demo.
pub const GUIDED_EXAMPLES: [GuidedExample; 4] = [
    GuidedExample {
        name: "car",
        index: 1872,
        latent: 7235,
        slider: -6.0,
    },
    GuidedExample {
        name: "painting",
        index: 1633,
        latent: 16446,
        slider: -5.0,
    },
    GuidedExample {
        name: "toilet",
        index: 1099,
        latent: 5876,
        slider: -2.0,
    },
    GuidedExample {
        name: "bed",
        index: 1117,
        latent: 18834,
        slider: -2.0,
    },
];

/// Latents listed when a request does not say how many.
pub const DEFAULT_TOP: usize = 8;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen; loopback by default. Port 0 picks a free port.
    pub addr: SocketAddr,
    /// Jobs waiting for the model worker before new ones get a 503.
    pub queue: usize,
    /// What the examples are, e.g. `ADE20K validation`.
    pub dataset: String,
    /// Notes shown on the page (e.g. that the SAE normalization was estimated).
    pub notes: Vec<String>,
    /// Host names answered besides `localhost` and the IP addresses (see the
    /// module documentation), e.g. the machine's name when it listens on all
    /// interfaces. Compared without case and port.
    pub hosts: Vec<String>,
    /// What clients can make the server hold.
    pub limits: ServerLimits,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            queue: 64,
            dataset: "ADE20K validation".into(),
            notes: Vec::new(),
            hosts: Vec::new(),
            limits: ServerLimits::default(),
        }
    }
}

/// Bounds on what clients can make the server hold: connections, time, and
/// the uploads in memory. With the defaults and the default
/// [`UploadLimits`](crate::UploadLimits), uploads hold at most
/// `max_uploads * max_bytes` (128 MiB) of bodies plus, for each of the
/// `max_decodes` decodes, 402 MiB more (see
/// [`UploadLimits::peak_bytes`](crate::UploadLimits::peak_bytes)): under
/// 1 GiB in all. Measured (the `load` integration test): 20 parallel
/// maximum-size uploads and 500 idle connections peak at about 800 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once; further ones wait in the kernel's accept
    /// queue until one closes.
    pub max_connections: usize,
    /// Time a client has to send a request's head (request line and
    /// headers), counted from the connection's start or the end of the last
    /// answer: a slowloris client, or a connection left idle, is closed
    /// after it.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body; then it gets a 408 and
    /// the connection is closed.
    pub body_timeout: Duration,
    /// Uploads received or decoded at once (each holds its body, up to
    /// `max_bytes`, until it is decoded).
    pub max_uploads: usize,
    /// Uploads decoded at once (each may allocate up to the decode budget).
    pub max_decodes: usize,
    /// How long an upload waits for one of those slots before a 503.
    pub upload_wait: Duration,
}

impl Default for ServerLimits {
    /// 1,024 connections, 10 s for a head, 30 s for a body, 8 uploads in
    /// memory, 2 decoding, 30 s of waiting for a slot.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_uploads: 8,
            max_decodes: 2,
            upload_wait: Duration::from_secs(30),
        }
    }
}

/// Largest body of a request other than an upload (the JSON calls: a
/// latents request lists at most 4,096 patches).
const JSON_BODY_MAX: usize = 1 << 20;

/// Work for the model worker, each with the channel its answer goes back on.
enum Job {
    Prediction {
        key: ImageKey,
        reply: oneshot::Sender<Result<(Vec<u8>, usize)>>,
    },
    Latents {
        key: ImageKey,
        patches: Vec<usize>,
        top: usize,
        include: Vec<usize>,
        reply: oneshot::Sender<Result<LatentReport>>,
    },
    Steer {
        key: ImageKey,
        edits: Vec<SliderEdit>,
        reply: oneshot::Sender<Result<(Steered, usize)>>,
    },
}

/// A running server: its address, and a way to stop it.
#[derive(Clone)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stop_http: Arc<Mutex<Option<watch::Sender<bool>>>>,
}

impl ServerHandle {
    /// The address it listens on (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests and ends [`serve`] (within a fraction of a second).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(tx) = self
            .stop_http
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = tx.send(true);
        }
    }
}

#[derive(Clone)]
struct AppState {
    jobs: SyncSender<Job>,
    store: Arc<ImageStore>,
    info: Arc<Value>,
    exemplar_images: bool,
    limits: ServerLimits,
    /// Uploads whose body is being received or decoded.
    uploads: Arc<Semaphore>,
    /// Uploads being decoded.
    decodes: Arc<Semaphore>,
}

/// Serves the app until [`ServerHandle::shutdown`] is called.
///
/// Binds `opts.addr`, calls `on_ready` with the handle, then runs the model
/// worker on the calling thread while a tokio runtime serves HTTP.
pub fn serve<B: Backend>(
    mut session: Session<B>,
    opts: ServeOptions,
    on_ready: impl FnOnce(ServerHandle),
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sae-steer-http")
        .enable_all()
        .build()
        .map_err(|error| AppError::Bind {
            addr: opts.addr,
            error,
        })?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(opts.addr))
        .map_err(|error| AppError::Bind {
            addr: opts.addr,
            error,
        })?;
    let addr = listener.local_addr().map_err(|error| AppError::Bind {
        addr: opts.addr,
        error,
    })?;

    let (jobs, queue) = sync_channel(opts.queue.max(1));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let handle = ServerHandle {
        addr,
        stop: Arc::new(AtomicBool::new(false)),
        stop_http: Arc::new(Mutex::new(Some(stop_tx))),
    };
    let store = session.store().clone();
    let limits = opts.limits;
    let state = AppState {
        jobs,
        exemplar_images: store.reference().is_some(),
        info: Arc::new(info_json(&session, &opts)),
        store,
        limits,
        uploads: Arc::new(Semaphore::new(limits.max_uploads.max(1))),
        decodes: Arc::new(Semaphore::new(limits.max_decodes.max(1))),
    };
    let hosts = HostPolicy::new(addr, &opts.hosts);
    let app = router(state, hosts);
    runtime.spawn(async move {
        accept_loop(listener, app, limits, &mut stop_rx).await;
    });
    on_ready(handle.clone());
    run_worker(&mut session, &queue, &handle.stop);
    handle.shutdown();
    runtime.shutdown_timeout(Duration::from_millis(500));
    Ok(())
}

/// Accepts connections (at most `limits.max_connections` open at once) and
/// serves each over HTTP/1.1 with the head timeout, until `stop` turns true.
///
/// axum's own `serve` has no head timeout, which hyper's connection builder
/// has (with a timer), so the loop is written here.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServerLimits,
    stop: &mut watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut last_accept_error = None;
    loop {
        // A slot first: past the limit, connections wait in the kernel's
        // queue instead of costing a task and buffers here.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = stopped(stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: try again shortly rather than spin,
                    // and say so once a minute, not ten times a second.
                    if last_accept_error.is_none_or(|t: std::time::Instant| t.elapsed() > Duration::from_secs(60)) {
                        eprintln!("cannot accept a connection (retrying): {e}");
                        last_accept_error = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _slot: OwnedSemaphorePermit = slot;
            let mut connection = std::pin::pin!(connection);
            // Errors here are the client's doing (a timeout, a reset, a
            // malformed head): hyper has answered what it could.
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

/// Returns once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send: drop it here.
    let _ = stop.wait_for(|s| *s).await;
}

/// Answers jobs until the stop flag is set.
fn run_worker<B: Backend>(session: &mut Session<B>, queue: &Receiver<Job>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let job = match queue.recv_timeout(Duration::from_millis(50)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match job {
            Job::Prediction { key, reply } => {
                let _ = reply.send(guard(|| session.prediction(key)));
            }
            Job::Latents {
                key,
                patches,
                top,
                include,
                reply,
            } => {
                let _ = reply.send(guard(|| session.latents(key, &patches, top, &include)));
            }
            Job::Steer { key, edits, reply } => {
                let _ = reply.send(guard(|| session.steer(key, &edits)));
            }
        }
    }
}

/// Turns a panic inside the models (a bug) into a 500 for this request
/// instead of a dead server.
fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(AppError::Internal(format!("the model failed: {message}")))
    })
}

fn info_json<B: Backend>(session: &Session<B>, opts: &ServeOptions) -> Value {
    let steering = session.steering();
    let store = session.store();
    let config = steering.vit().config();
    let pre = store.preprocess();
    let stats = steering.stats().map(|s| {
        json!({
            "reference": s.info.reference,
            "normalization": s.info.normalization,
            "n_images": s.n_images(),
            "exemplars": s.k(),
        })
    });
    json!({
        "dataset": opts.dataset,
        "examples": store.len(),
        "layer": steering.layer(),
        "d_sae": steering.d_sae(),
        "crop": pre.crop,
        "patch_size": config.patch_size,
        "grid": pre.crop as usize / config.patch_size,
        "stats": stats,
        "exemplar_images": store.reference().map(|r| r.name.clone()),
        "slider_max": SLIDER_MAX,
        "guided": GUIDED_EXAMPLES,
        "limits": {
            "max_bytes": store.limits().max_bytes,
            "max_pixels": store.limits().max_pixels,
            "max_side": store.limits().max_side,
            "max_aspect": store.limits().max_aspect,
        },
        "notes": opts.notes,
    })
}

fn router(state: AppState, hosts: HostPolicy) -> Router {
    let body_timeout = state.limits.body_timeout;
    Router::new()
        .route(
            "/",
            get(|| async { asset(assets::INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { asset(assets::APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { asset(assets::STYLE_CSS, "text/css; charset=utf-8") }),
        )
        .route("/api/info", get(info))
        .route("/api/examples", get(examples))
        .route("/api/examples/{index}", get(example))
        .route("/api/images/{id}/prediction", get(prediction))
        .route("/api/images/{id}/latents", post(latents))
        .route("/api/images/{id}/steer", post(steer))
        .route("/api/reference/{image}", get(reference))
        // The routes above get their (small) bodies read in full, within the
        // body timeout, before their handler; the upload, added after, reads
        // its own once it has an upload slot.
        .route_layer(middleware::from_fn_with_state(body_timeout, buffer_body))
        .route("/api/upload", post(upload))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(Arc::new(hosts), check_host))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

/// Which `Host` (and `Origin`) values the server answers; see the module
/// documentation.
#[derive(Debug, Clone)]
struct HostPolicy {
    bound: IpAddr,
    /// Lower-case extra names.
    names: Vec<String>,
}

impl HostPolicy {
    fn new(addr: SocketAddr, names: &[String]) -> Self {
        Self {
            bound: addr.ip(),
            names: names
                .iter()
                .map(|n| n.trim().to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether `host` (a `Host` value: a name or IP literal, with an optional
    /// port) is one this server answers.
    fn allows(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        if name == "localhost" || self.names.contains(&name) {
            return true;
        }
        let Ok(ip) = name.parse::<IpAddr>() else {
            return false;
        };
        let v6_bound = matches!(self.bound, IpAddr::V6(_));
        ip == IpAddr::V4(Ipv4Addr::LOCALHOST)
            || ip == self.bound
            || (v6_bound && ip == IpAddr::V6(Ipv6Addr::LOCALHOST))
            || (self.bound.is_unspecified() && ip.is_ipv4() != v6_bound)
    }

    /// Whether an `Origin` value is a page of this server.
    fn allows_origin(&self, origin: &str) -> bool {
        origin
            .strip_prefix("http://")
            .is_some_and(|host| !host.contains('/') && self.allows(host))
    }
}

/// The name part of a `Host` value, lower case (an IPv6 literal without its
/// brackets), if the value is well formed: `name`, `name:port`, `[v6]` or
/// `[v6]:port`.
fn host_name(host: &str) -> Option<String> {
    let port_ok = |port: &str| {
        port.is_empty()
            || (port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok())
    };
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest.split_once(']')?;
            inside.parse::<Ipv6Addr>().ok()?;
            let port = match after {
                "" => "",
                _ => after.strip_prefix(':')?,
            };
            (inside, port)
        }
        None => match host.split_once(':') {
            Some((name, port)) => (name, port),
            None => (host, ""),
        },
    };
    (!name.is_empty() && port_ok(port)).then(|| name.to_ascii_lowercase())
}

/// Refuses requests for other hosts (421) and state-changing requests from
/// other origins (403).
async fn check_host(
    State(hosts): State<Arc<HostPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or(""));
    // An absolute-form request line names its host too; both must pass.
    let authority = request.uri().authority().map(|a| a.as_str());
    let misdirected = match (host, authority) {
        (None, None) => Some("the request names no Host".to_string()),
        (host, authority) => host
            .into_iter()
            .chain(authority)
            .find(|h| !hosts.allows(h))
            .map(|h| {
                format!(
                    "this server answers only to localhost, 127.0.0.1 and the address it listens on, \
                     not to Host `{}`",
                    h.chars().take(100).collect::<String>()
                )
            }),
    };
    if let Some(message) = misdirected {
        return ApiError::new(StatusCode::MISDIRECTED_REQUEST, message).into_response();
    }
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe
        && let Some(origin) = request.headers().get(header::ORIGIN)
        && !origin.to_str().is_ok_and(|o| hosts.allows_origin(o))
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "requests from other sites are refused (the Origin is not this server)",
        )
        .into_response();
    }
    next.run(request).await
}

/// Reads a body of at most `limit` bytes within `timeout`.
async fn read_body(
    body: Body,
    limit: usize,
    size_hint: usize,
    timeout: Duration,
) -> ApiResult<Bytes> {
    let read = async {
        let mut body = Limited::new(body, limit);
        let mut bytes = Vec::with_capacity(size_hint.min(limit));
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        bytes.extend_from_slice(&data);
                    }
                }
                Err(e) if e.is::<LengthLimitError>() => {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the request body is larger than the limit of {limit} bytes"),
                    ));
                }
                Err(e) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the request body: {e}"),
                    )
                    .closing());
                }
            }
        }
        Ok(Bytes::from(bytes))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs_f64()
            ),
        )
        .closing()),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Reads the body of a JSON call (or of a GET) in full, within the body
/// timeout, so that a client sending it slowly cannot hold a handler.
async fn buffer_body(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if content_length(&parts.headers).is_some_and(|n| n > JSON_BODY_MAX as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {JSON_BODY_MAX} bytes"),
        )
        .into_response();
    }
    let hint = content_length(&parts.headers).unwrap_or(0) as usize;
    match read_body(body, JSON_BODY_MAX, hint, timeout).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => e.into_response(),
    }
}

/// The page loads only its own script and style; images are data URLs or
/// our own endpoints.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// An error answered as `{"error": "..."}`.
struct ApiError {
    status: StatusCode,
    message: String,
    /// Ends the connection after the answer: the client stalled or broke
    /// its body. (Over a limit, hyper drains what has arrived and closes if
    /// more is pending, which lets a client read the 413.)
    close: bool,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            close: false,
        }
    }

    fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            // A dataset file that fails to read, a model failure: the message
            // names files of this machine, which are no business of a page.
            // The whole chain: "cannot access x.png: No such file ...".
            eprintln!("sae-steer-app: a request failed: {}", ErrorChain(&e));
            return Self::new(
                status,
                "internal server error (the details are in the server's log)",
            );
        }
        Self::new(status, ErrorChain(&e).to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such page or API call: {}", uri.path()),
    )
}

async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take this method", uri.path()),
    )
}

/// Runs host work (decoding, PNG encoding) on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(move || guard(f)).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(AppError::Internal(format!("a worker task failed: {e}")).into()),
    }
}

/// Hands a job to the model worker and waits for the answer.
async fn ask<T>(
    state: &AppState,
    job: impl FnOnce(oneshot::Sender<Result<T>>) -> Job,
) -> ApiResult<T> {
    let (reply, answer) = oneshot::channel();
    match state.jobs.try_send(job(reply)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Err(AppError::Busy(
                "the model is busy with other requests; try again in a moment".into(),
            )
            .into());
        }
        Err(TrySendError::Disconnected(_)) => {
            return Err(AppError::Internal("the model worker has stopped".into()).into());
        }
    }
    match answer.await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(AppError::Internal("the model worker dropped the request".into()).into()),
    }
}

fn parse_key(id: &str) -> ApiResult<ImageKey> {
    Ok(id.parse::<ImageKey>()?)
}

/// A path segment, or the JSON error axum's own (plain-text) rejection
/// would otherwise answer, e.g. for `%FF`, which is not UTF-8.
fn path_param(param: std::result::Result<Path<String>, PathRejection>) -> ApiResult<String> {
    param.map(|Path(p)| p).map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            format!("bad path: {}", rejection.body_text()),
        )
    })
}

fn json_body<T>(body: std::result::Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    body.map(|Json(v)| v).map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            format!("bad request body: {}", rejection.body_text()),
        )
    })
}

async fn info(State(state): State<AppState>) -> Json<Value> {
    Json((*state.info).clone())
}

/// An image with its true labels as the page shows it.
fn shown_json(key: ImageKey, shown: &ShownImage, store: &ImageStore) -> Result<Value> {
    let crop = shown.rgb.width() as usize;
    let (labels, legend) = match &shown.labels {
        Some(labels) => (
            Some(png_data_url(&colorize(labels, crop, 1))?),
            legend(labels, store.classes()),
        ),
        None => (None, Vec::new()),
    };
    Ok(json!({
        "id": key.to_string(),
        "index": match key { ImageKey::Example(i) => Some(i), ImageKey::Upload(_) => None },
        "name": shown.name,
        "image": png_data_url(&shown.rgb)?,
        "labels": labels,
        "legend": legend,
    }))
}

/// Most examples one list request returns.
const LIST_MAX: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    start: Option<usize>,
    count: Option<usize>,
}

async fn examples(
    State(state): State<AppState>,
    query: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            format!("bad query: {}", rejection.body_text()),
        )
    })?;
    let total = state.store.len();
    let start = query.start.unwrap_or(0).min(total);
    let count = query.count.unwrap_or(100).min(LIST_MAX);
    let end = start.saturating_add(count).min(total);
    let examples: Vec<Value> = (start..end)
        .map(|i| json!({ "index": i, "name": state.store.example_name(i) }))
        .collect();
    Ok(Json(
        json!({ "total": total, "start": start, "examples": examples }),
    ))
}

async fn example(
    State(state): State<AppState>,
    index: std::result::Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let index = path_param(index)?;
    let index: usize = index.parse().map_err(|_| {
        AppError::BadRequest(format!("`{index}` is not an example index (0, 1, 2, ...)"))
    })?;
    let store = state.store.clone();
    let key = ImageKey::Example(index);
    let value = blocking(move || shown_json(key, &store.get(key)?, &store)).await?;
    Ok(Json(value))
}

/// Content types an upload may be sent with. Both need a CORS preflight
/// from another site (a form or a `no-cors` fetch can only send
/// `text/plain`, `multipart/form-data` and `application/x-www-form-urlencoded`),
/// which this server never grants.
const UPLOAD_TYPES: [&str; 2] = ["image/png", "image/jpeg"];

/// Waits up to `wait` for a slot of `slots`; a 503 after that.
async fn take_slot(
    slots: &Arc<Semaphore>,
    wait: Duration,
    busy: &str,
) -> ApiResult<OwnedSemaphorePermit> {
    match tokio::time::timeout(wait, slots.clone().acquire_owned()).await {
        Ok(Ok(slot)) => Ok(slot),
        Ok(Err(_)) => Err(AppError::Internal("the upload slots are closed".into()).into()),
        Err(_) => Err(AppError::Busy(format!("{busy}; try again in a moment")).into()),
    }
}

/// Reads and drops up to `cap` bytes of a refused request's body, for at
/// most `timeout`, on a task of its own (no memory is kept).
///
/// Closing a connection with unread bytes resets it, and a client still
/// sending (most do not wait for an early answer) then sees a broken pipe
/// instead of the 413 or 415; reading on a little, as servers' "lingering
/// close" does, lets it read the answer. A body longer than `cap` is cut off.
fn discard(body: Body, cap: u64, timeout: Duration) {
    tokio::spawn(async move {
        let drain = async {
            let mut body = body;
            let mut seen = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    seen += data.len() as u64;
                }
                if seen > cap {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(timeout, drain).await;
    });
}

/// Order: the content type (415), the declared length (413), an upload slot
/// (bounds the bodies in memory; 503 after a wait), the body within the
/// body timeout (408), a decode slot, then the checks and the decode on the
/// blocking pool (413/415/422). The slots travel with the decode, so a
/// client that goes away does not free them while the decode still runs.
async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let max = state.store.limits().max_bytes;
    let limits = state.limits;
    if !UPLOAD_TYPES.contains(&essence.as_str()) {
        discard(body, max as u64, limits.body_timeout);
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "an upload is sent with Content-Type image/png or image/jpeg, not `{}`",
                content_type.chars().take(100).collect::<String>()
            ),
        ));
    }
    let declared = content_length(&headers);
    if declared.is_some_and(|n| n > max as u64) {
        discard(body, max as u64, limits.body_timeout);
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the upload is larger than the limit of {max} bytes"),
        ));
    }
    let upload_slot = take_slot(
        &state.uploads,
        limits.upload_wait,
        "the server is busy receiving other uploads",
    )
    .await?;
    let bytes = read_body(
        body,
        max,
        declared.unwrap_or(0) as usize,
        limits.body_timeout,
    )
    .await
    .map_err(|e| {
        if e.status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                e.status,
                format!("the upload is larger than the limit of {max} bytes"),
            )
            .closing()
        } else {
            e
        }
    })?;
    let decode_slot = take_slot(
        &state.decodes,
        limits.upload_wait,
        "the server is busy decoding other uploads",
    )
    .await?;
    let store = state.store.clone();
    let value = blocking(move || {
        let _slots = (upload_slot, decode_slot);
        let (key, shown) = store.upload(&bytes)?;
        drop(bytes);
        shown_json(key, &shown, &store)
    })
    .await?;
    Ok(Json(value))
}

/// A patch-label map as the page shows it.
fn labels_json(store: &ImageStore, labels: &[u8], grid: usize) -> Result<Value> {
    let scale = (store.preprocess().crop as usize / grid.max(1)).max(1);
    Ok(json!({
        "grid": grid,
        "patches": labels,
        "image": png_data_url(&colorize(labels, grid, scale))?,
        "legend": legend(labels, store.classes()),
    }))
}

async fn prediction(
    State(state): State<AppState>,
    id: std::result::Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let key = parse_key(&path_param(id)?)?;
    let (labels, grid) = ask(&state, |reply| Job::Prediction { key, reply }).await?;
    let store = state.store.clone();
    let mut value = blocking(move || labels_json(&store, &labels, grid)).await?;
    value["id"] = json!(key.to_string());
    Ok(Json(value))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatentsRequest {
    /// Selected patches (row-major indices); empty or absent: all patches.
    #[serde(default)]
    patches: Vec<usize>,
    /// How many top latents (default [`DEFAULT_TOP`]).
    top: Option<usize>,
    /// Latents to describe whatever their activation.
    #[serde(default)]
    include: Vec<usize>,
}

async fn latents(
    State(state): State<AppState>,
    id: std::result::Result<Path<String>, PathRejection>,
    body: std::result::Result<Json<LatentsRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let key = parse_key(&path_param(id)?)?;
    let request = json_body(body)?;
    if request.patches.len() > 4096 {
        return Err(AppError::BadRequest("too many patches listed".into()).into());
    }
    let report = ask(&state, |reply| Job::Latents {
        key,
        patches: request.patches,
        top: request.top.unwrap_or(DEFAULT_TOP),
        include: request.include,
        reply,
    })
    .await?;
    let mut value = serde_json::to_value(&report)
        .map_err(|e| AppError::Internal(format!("cannot serialise the latents: {e}")))?;
    value["id"] = json!(key.to_string());
    value["exemplar_images"] = json!(state.exemplar_images);
    Ok(Json(value))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SteerRequest {
    /// `{latent: slider}`, as the reference's backend takes it.
    #[serde(default)]
    edits: BTreeMap<String, f32>,
}

async fn steer(
    State(state): State<AppState>,
    id: std::result::Result<Path<String>, PathRejection>,
    body: std::result::Result<Json<SteerRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let key = parse_key(&path_param(id)?)?;
    let request = json_body(body)?;
    if request.edits.len() > MAX_LATENTS {
        return Err(AppError::BadRequest(format!(
            "{} edits; at most {MAX_LATENTS} latents can be edited at once",
            request.edits.len()
        ))
        .into());
    }
    let edits = request
        .edits
        .iter()
        .map(|(latent, &slider)| {
            latent
                .trim()
                .parse::<usize>()
                .map(|latent| SliderEdit { latent, slider })
                .map_err(|_| {
                    ApiError::from(AppError::BadRequest(format!(
                        "`{latent}` is not a latent id (0, 1, 2, ...)"
                    )))
                })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let (steered, grid) = ask(&state, |reply| Job::Steer { key, edits, reply }).await?;
    let store = state.store.clone();
    let changed = steered.changed();
    let labels = steered.labels;
    let mut value = blocking(move || labels_json(&store, &labels, grid)).await?;
    value["id"] = json!(key.to_string());
    value["changed"] = json!(changed);
    value["edits"] = json!(steered.edits);
    Ok(Json(value))
}

async fn reference(
    State(state): State<AppState>,
    image: std::result::Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let image = path_param(image)?;
    let id: usize = image
        .trim_end_matches(".png")
        .parse()
        .map_err(|_| AppError::BadRequest(format!("`{image}` is not a reference image id")))?;
    let store = state.store.clone();
    let png = blocking(move || png_bytes(&store.reference_image(id)?)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            // Reference images never change while the server runs.
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        Body::from(png),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(addr: &str, names: &[&str]) -> HostPolicy {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        HostPolicy::new(addr.parse().unwrap(), &names)
    }

    #[test]
    fn host_values_are_split_into_name_and_port() {
        assert_eq!(host_name("LocalHost:8000").as_deref(), Some("localhost"));
        assert_eq!(host_name("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_name("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(host_name("[::1]").as_deref(), Some("::1"));
        // An empty port is allowed by RFC 3986.
        assert_eq!(host_name("localhost:").as_deref(), Some("localhost"));
        for bad in [
            "",
            ":80",
            "localhost:65536",
            "localhost:8000:1",
            "localhost:x",
            "[::1",
            "[::1]x",
            "[example.com]",
            "::1",
        ] {
            assert_eq!(host_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn loopback_binds_answer_loopback_names_only() {
        let p = policy("127.0.0.1:8000", &[]);
        for ok in ["localhost", "localhost:1", "127.0.0.1:8000", "127.0.0.1"] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "attacker.example",
            "localhost.attacker.example",
            "127.0.0.2",
            "[::1]",
            "0.0.0.0",
            "192.168.1.2",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
        let v6 = policy("[::1]:8000", &[]);
        assert!(v6.allows("[::1]:8000") && v6.allows("localhost") && v6.allows("127.0.0.1"));
        assert!(!v6.allows("[::2]"));
    }

    #[test]
    fn all_interface_binds_answer_ip_literals_and_listed_names() {
        let p = policy("0.0.0.0:8000", &["Workstation"]);
        assert!(p.allows("192.168.1.2:8000"));
        assert!(p.allows("workstation:8000"));
        assert!(
            !p.allows("[fe80::1]"),
            "an IPv4 socket is not reached over IPv6"
        );
        assert!(!p.allows("attacker.example"));
        let v6 = policy("[::]:8000", &[]);
        assert!(v6.allows("[fe80::1]:8000") && v6.allows("[::1]"));
    }

    #[test]
    fn origins_must_be_this_server_over_http() {
        let p = policy("127.0.0.1:8000", &[]);
        assert!(p.allows_origin("http://127.0.0.1:8000"));
        assert!(p.allows_origin("http://localhost:8000"));
        for bad in [
            "null",
            "https://127.0.0.1:8000",
            "http://attacker.example",
            "http://127.0.0.1:8000/",
            "127.0.0.1:8000",
        ] {
            assert!(!p.allows_origin(bad), "{bad}");
        }
    }
}

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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, middleware};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

use crate::assets;
use crate::error::{AppError, Result};
use crate::images::{ImageKey, ImageStore, ShownImage};
use crate::palette::{colorize, legend, png_bytes, png_data_url};
use crate::session::{Session, Steered};
use crate::steering::{LatentReport, MAX_LATENTS, SLIDER_MAX, SliderEdit};

/// One of the preprint's steering examples (SPEC section 9).
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
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            queue: 64,
            dataset: "ADE20K validation".into(),
            notes: Vec::new(),
        }
    }
}

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
    let state = AppState {
        jobs,
        exemplar_images: store.reference().is_some(),
        info: Arc::new(info_json(&session, &opts)),
        store,
    };
    let app = router(state);
    runtime.spawn(async move {
        let stopped = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            eprintln!("the HTTP server stopped: {e}");
        }
    });
    on_ready(handle.clone());
    run_worker(&mut session, &queue, &handle.stop);
    handle.shutdown();
    runtime.shutdown_timeout(Duration::from_millis(500));
    Ok(())
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
        },
        "notes": opts.notes,
    })
}

fn router(state: AppState) -> Router {
    let max_upload = state.store.limits().max_bytes;
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
        .route(
            "/api/upload",
            post(upload).layer(DefaultBodyLimit::max(max_upload)),
        )
        .route("/api/images/{id}/prediction", get(prediction))
        .route("/api/images/{id}/latents", post(latents))
        .route("/api/images/{id}/steer", post(steer))
        .route("/api/reference/{image}", get(reference))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::map_response(security_headers))
        .with_state(state)
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
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        Self {
            status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

async fn not_found(uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("no such page or API call: {}", uri.path()),
    }
}

async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("{} does not take this method", uri.path()),
    }
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
    param.map(|Path(p)| p).map_err(|rejection| ApiError {
        status: rejection.status(),
        message: format!("bad path: {}", rejection.body_text()),
    })
}

fn json_body<T>(body: std::result::Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    body.map(|Json(v)| v).map_err(|rejection| ApiError {
        status: rejection.status(),
        message: format!("bad request body: {}", rejection.body_text()),
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
    let Query(query) = query.map_err(|rejection| ApiError {
        status: rejection.status(),
        message: format!("bad query: {}", rejection.body_text()),
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

async fn upload(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let max = state.store.limits().max_bytes;
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        ApiError {
            status,
            message: if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("the upload is larger than the limit of {max} bytes")
            } else {
                format!("cannot read the upload: {}", rejection.body_text())
            },
        }
    })?;
    let store = state.store.clone();
    let value = blocking(move || {
        let (key, shown) = store.upload(&bytes)?;
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

//! A minimal HTTP/1.1 server on 127.0.0.1 for the fetch tests: serves bytes
//! with `Range` support, redirects and error statuses, can cut a connection
//! after N body bytes (once), answers exactly as told (a lying server: wrong
//! or missing Content-Length, a Content-Range that ignores the request), and
//! logs every request. [`Server::start_tls`] speaks https with a test
//! certificate for 127.0.0.1 (`testdata/`), which test builds of the
//! downloader trust ([`client_tls`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The test CA, and the 127.0.0.1 certificate it signed with its key
/// (`testdata/make_test_cert.sh`). Trusted by test builds only.
const TEST_CA: &[u8] = include_bytes!("testdata/ca.der");
const TEST_LEAF: &[u8] = include_bytes!("testdata/leaf.der");
const TEST_LEAF_KEY: &[u8] = include_bytes!("testdata/leaf.key.der");

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client TLS configuration of test builds: the test CA is the only
/// root, so an https request can reach nothing but [`Server::start_tls`].
pub fn client_tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(TEST_CA.to_vec()))
            .expect("the test CA parses");
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }))
}

fn server_tls() -> Arc<rustls::ServerConfig> {
    let chain = vec![
        CertificateDer::from(TEST_LEAF.to_vec()),
        CertificateDer::from(TEST_CA.to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(TEST_LEAF_KEY.to_vec()));
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("the test certificate and key match"),
    )
}
use std::thread::JoinHandle;

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
}

/// What a path answers.
#[derive(Debug, Clone)]
pub enum Route {
    File {
        body: Vec<u8>,
        headers: Vec<(String, String)>,
        /// Send only this many body bytes, then close (first request only).
        cut_after: Option<usize>,
    },
    Redirect {
        location: String,
        headers: Vec<(String, String)>,
    },
    /// This status line, these headers and this body, whatever was asked:
    /// no `Content-Length` is added (the body then ends when the connection
    /// closes) and `Range` is ignored.
    Raw {
        status: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

impl Route {
    pub fn file(body: &[u8]) -> Self {
        Self::File {
            body: body.to_vec(),
            headers: Vec::new(),
            cut_after: None,
        }
    }

    /// A [`Route::Raw`] answer.
    pub fn raw(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Self {
        Self::Raw {
            status: status.to_string(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }

    pub fn redirect(location: &str) -> Self {
        Self::Redirect {
            location: location.to_string(),
            headers: Vec::new(),
        }
    }
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    log: Vec<Request>,
}

pub struct Server {
    pub base: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Plain http on 127.0.0.1.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// https on 127.0.0.1, with the test certificate.
    pub fn start_tls() -> Self {
        Self::start_with(Some(server_tls()))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    // One connection at a time is all the client uses.
                    let Ok(mut tcp) = stream else { continue };
                    match &tls {
                        None => {
                            let _ = serve(&mut tcp, &state);
                        }
                        Some(config) => {
                            let Ok(conn) = rustls::ServerConnection::new(Arc::clone(config)) else {
                                continue;
                            };
                            let mut tls =
                                rustls::StreamOwned::new(conn, tcp.try_clone().expect("clone"));
                            if serve(&mut tls, &state).is_ok() {
                                tls.conn.send_close_notify();
                                let _ = tls.flush();
                            }
                        }
                    }
                    let _ = tcp.shutdown(std::net::Shutdown::Both);
                }
            })
        };
        Self {
            base: format!("{scheme}://{addr}"),
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn route(&self, path: &str, route: Route) {
        self.state
            .lock()
            .expect("state")
            .routes
            .insert(path.to_string(), route);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().expect("state").log.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread sees the flag.
        let addr = self.base.split_once("://").map_or("", |(_, a)| a);
        let _ = TcpStream::connect(addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request on `stream`; the caller closes the connection.
fn serve<S: Read + Write>(stream: &mut S, state: &Mutex<State>) -> std::io::Result<()> {
    let (path, range) = {
        // GET requests have no body: nothing the reader buffers is lost.
        let mut reader = BufReader::new(&mut *stream);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let mut range = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.trim().eq_ignore_ascii_case("range")
            {
                range = Some(value.trim().to_string());
            }
        }
        (path, range)
    };
    let route = {
        let mut s = state.lock().expect("state");
        s.log.push(Request {
            path: path.clone(),
            range: range.clone(),
        });
        let route = s.routes.get(&path).cloned();
        // The cut happens once: later requests get the whole answer.
        if let Some(Route::File { cut_after, .. }) = s.routes.get_mut(&path) {
            *cut_after = None;
        }
        route
    };
    let out = stream;
    match route {
        None => respond(out, "404 Not Found", &[], b"", None),
        Some(Route::Raw {
            status,
            headers,
            body,
        }) => {
            let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
            for (name, value) in &headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            out.write_all(head.as_bytes())?;
            // The client may stop reading early (a body past its limit);
            // a reset connection then is expected, not an error here.
            let _ = out.write_all(&body);
            let _ = out.flush();
            Ok(())
        }
        Some(Route::Redirect { location, headers }) => {
            let mut h = headers;
            h.push(("Location".into(), location));
            respond(out, "302 Found", &h, b"", None)
        }
        Some(Route::File {
            body,
            headers,
            cut_after,
        }) => {
            let len = body.len();
            let start = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok());
            match start {
                Some(s) if s >= len => {
                    let h = vec![("Content-Range".to_string(), format!("bytes */{len}"))];
                    respond(out, "416 Range Not Satisfiable", &h, b"", None)
                }
                Some(s) => {
                    let mut h = headers;
                    h.push((
                        "Content-Range".into(),
                        format!("bytes {s}-{}/{len}", len - 1),
                    ));
                    respond(out, "206 Partial Content", &h, &body[s..], cut_after)
                }
                None => respond(out, "200 OK", &headers, &body, cut_after),
            }
        }
    }
}

fn respond(
    out: &mut impl Write,
    status: &str,
    headers: &[(String, String)],
    body: &[u8],
    cut_after: Option<usize>,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    let sent = cut_after.map_or(body.len(), |n| n.min(body.len()));
    out.write_all(&body[..sent])?;
    out.flush()
}

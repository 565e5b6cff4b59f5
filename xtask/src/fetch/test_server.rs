//! A minimal HTTP/1.1 server on 127.0.0.1 for the fetch tests: serves bytes
//! with `Range` support, redirects and error statuses, can cut a connection
//! after N body bytes (once), answers exactly as told (a lying server: wrong
//! or missing Content-Length, a Content-Range that ignores the request), and
//! logs every request.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        // One connection at a time is all the client uses.
                        let _ = serve(stream, &state);
                    }
                }
            })
        };
        Self {
            base: format!("http://{addr}"),
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
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
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
    let mut out = stream;
    match route {
        None => respond(&mut out, "404 Not Found", &[], b"", None),
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
            out.shutdown(std::net::Shutdown::Both)
        }
        Some(Route::Redirect { location, headers }) => {
            let mut h = headers;
            h.push(("Location".into(), location));
            respond(&mut out, "302 Found", &h, b"", None)
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
                    respond(&mut out, "416 Range Not Satisfiable", &h, b"", None)
                }
                Some(s) => {
                    let mut h = headers;
                    h.push((
                        "Content-Range".into(),
                        format!("bytes {s}-{}/{len}", len - 1),
                    ));
                    respond(&mut out, "206 Partial Content", &h, &body[s..], cut_after)
                }
                None => respond(&mut out, "200 OK", &headers, &body, cut_after),
            }
        }
    }
}

fn respond(
    out: &mut TcpStream,
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
    out.flush()?;
    out.shutdown(std::net::Shutdown::Both)
}

//! One HTTP download: into `<dest>.part`, resumed with a `Range` request after
//! a broken connection (in this run or a later one), checked against the
//! expected size and SHA-256, and only then renamed to `<dest>`.
//!
//! What a server (or anyone between it and us) can make this code do is
//! bounded:
//! - **Where it goes.** Redirects are followed by hand, at most
//!   [`MAX_REDIRECTS`] of them, and every URL (the first and each hop) must
//!   pass [`check_url`]: `https`, or plain `http` only before any `https` hop
//!   and only to a loopback host or for a file whose SHA-256 is pinned before
//!   the request. An `https` download therefore never continues over `http`
//!   (nor to `ftp:`, `file:`, ...), and nothing unpinned travels in clear text
//!   over a network.
//! - **How much it writes.** The body is read through a limit: the size the
//!   manifest or the lock states, else the server's own `Content-Length` /
//!   `Content-Range`, else [`Downloader::unsized_limit`]. One byte past the
//!   limit stops the download, which is refused and its partial file deleted:
//!   a longer answer is never written in full. Header values are parsed
//!   (checked, as `u64`) and compared, never used to size an allocation.
//! - **What it resumes.** A `206` answer must start at the offset asked for
//!   and agree with its own `Content-Length`; anything else is refused rather
//!   than appended to the partial file.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::error::{FetchError, Result};
use super::manifest::is_sha256_hex;

/// A value together with who stated it, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim<T> {
    pub value: T,
    pub by: String,
}

impl<T> Claim<T> {
    pub fn new(value: T, by: impl Into<String>) -> Self {
        Self {
            value,
            by: by.into(),
        }
    }
}

/// What the finished file must be.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub size: Option<Claim<u64>>,
    pub sha256: Option<Claim<String>>,
    /// A response header (on the redirect chain, before the body) that carries
    /// the file's SHA-256: Hugging Face's `X-Linked-Etag` for LFS files.
    /// Checked before the body is read; adopted when nothing else is known.
    pub sha256_header: Option<&'static str>,
}

/// Headers of the responses before redirects are followed: where Hugging
/// Face puts the commit and the LFS hash. Each field holds the first value
/// seen along the redirect chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseInfo {
    pub repo_commit: Option<String>,
    pub linked_etag: Option<String>,
    pub etag: Option<String>,
}

impl ResponseInfo {
    fn from_response(r: &ureq::Response) -> Self {
        let clean = |v: &str| {
            v.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string()
        };
        Self {
            repo_commit: r.header("x-repo-commit").map(|v| v.trim().to_string()),
            linked_etag: r.header("x-linked-etag").map(clean),
            etag: r.header("etag").map(clean),
        }
    }

    fn fill_from(&mut self, later: Self) {
        self.repo_commit = self.repo_commit.take().or(later.repo_commit);
        self.linked_etag = self.linked_etag.take().or(later.linked_etag);
        self.etag = self.etag.take().or(later.etag);
    }

    fn header(&self, name: &str) -> Option<&str> {
        match name.to_ascii_lowercase().as_str() {
            "x-repo-commit" => self.repo_commit.as_deref(),
            "x-linked-etag" => self.linked_etag.as_deref(),
            "etag" => self.etag.as_deref(),
            _ => None,
        }
    }
}

/// A verified file at its final name.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// Headers of the last request (None when the `.part`
    /// file was already complete and no request was made).
    pub info: Option<ResponseInfo>,
}

/// Blocking HTTP client with retries and progress bars.
#[derive(Debug, Clone)]
pub struct Downloader {
    agent: ureq::Agent,
    /// Requests per download before giving up (the `.part` file stays).
    pub attempts: u32,
    /// Wait before retry `i` is `i * retry_delay`.
    pub retry_delay: Duration,
    pub progress: bool,
    /// The most bytes accepted for a file whose size neither the manifest nor
    /// the lock states: it caps what the server's own `Content-Length` may
    /// announce and what a response without one may send.
    pub unsized_limit: u64,
}

/// Redirects followed per request before giving up.
pub const MAX_REDIRECTS: usize = 10;

/// Default [`Downloader::unsized_limit`]: well above every file the manifests
/// name (the largest, ADE20K, is under 1 GB and pinned), far below a full disk.
pub const DEFAULT_UNSIZED_LIMIT: u64 = 16 << 30;

impl Downloader {
    pub fn new(progress: bool) -> Self {
        let builder = ureq::AgentBuilder::new()
            .try_proxy_from_env(true)
            // Redirects are followed by hand: Hugging Face puts the commit
            // and the hash on the first (302) response only, and every hop
            // must pass `check_url` before it is requested.
            .redirects(0)
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(60))
            .user_agent(concat!("sae-steer-xtask/", env!("CARGO_PKG_VERSION")));
        // Test builds trust the loopback https test server's CA, and only it.
        #[cfg(test)]
        let builder = builder.tls_config(super::test_server::client_tls());
        let agent = builder.build();
        Self {
            agent,
            attempts: 5,
            retry_delay: Duration::from_secs(2),
            progress,
            unsized_limit: DEFAULT_UNSIZED_LIMIT,
        }
    }

    /// Downloads `url` to `dest` (through `<dest>.part`), resuming a partial
    /// file, and verifies it. On a size or hash mismatch nothing is left at
    /// `dest` and the partial file is deleted; a mismatch after a resumed
    /// download is retried once from scratch, since the old part may have
    /// come from an older version of the file. `manual` is appended to
    /// network errors: how to get the file by hand.
    pub fn fetch(
        &self,
        url: &str,
        dest: &Path,
        expected: &Expected,
        manual: &str,
    ) -> Result<Fetched> {
        // Pinned before any byte comes from the network: what the server
        // announces later (its hash header) does not make clear text safe.
        let pinned = expected.sha256.is_some();
        check_url(url, false, pinned).map_err(|reason| FetchError::RefusedUrl {
            url: url.to_string(),
            reason,
        })?;
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| FetchError::io(dir, e))?;
        }
        let part = part_path(dest);
        let mut from_scratch = false;
        loop {
            let got = self.fetch_part(url, &part, expected, pinned, manual)?;
            match verify_file(&part, url, &got.expected, self.progress) {
                Ok((size, sha256)) => {
                    rename_durably(&part, dest)?;
                    return Ok(Fetched {
                        path: dest.to_path_buf(),
                        size,
                        sha256,
                        info: got.info,
                    });
                }
                Err(e) => {
                    remove_if_exists(&part)?;
                    if got.resumed && !from_scratch {
                        eprintln!(
                            "{e}\nthe partial file may be stale: downloading {url} again from the start"
                        );
                        from_scratch = true;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Brings `part` to the full length of the remote file.
    fn fetch_part(
        &self,
        url: &str,
        part: &Path,
        expected: &Expected,
        pinned: bool,
        manual: &str,
    ) -> Result<PartDone> {
        let mut expected = expected.clone();
        let mut resumed = false;
        let mut info = None;
        let mut last_error = String::new();
        let bad = |message: String| FetchError::BadResponse {
            url: url.to_string(),
            message,
        };
        for attempt in 0..self.attempts.max(1) {
            if attempt > 0 {
                std::thread::sleep(self.retry_delay * attempt);
            }
            let mut start = file_len(part)?;
            if let Some(size) = &expected.size {
                if start == size.value {
                    // A previous run got every byte but stopped before the check.
                    return Ok(PartDone {
                        expected,
                        info,
                        resumed: true,
                    });
                }
                if start > size.value {
                    remove_if_exists(part)?;
                    start = 0;
                }
            }
            let answer = match self.get(url, start, &mut expected, pinned) {
                Ok(a) => a,
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Unreachable(message)) if start == 0 && attempt == 0 => {
                    return Err(FetchError::Network {
                        url: url.to_string(),
                        message,
                        manual: manual.to_string(),
                    });
                }
                Err(Failure::Unreachable(message) | Failure::Transient(message)) => {
                    eprintln!(
                        "{url}: {message} (attempt {} of {})",
                        attempt + 1,
                        self.attempts
                    );
                    last_error = message;
                    continue;
                }
            };
            let status = answer.response.status();
            // Read for the answers whose body is the file; an error page's
            // odd header is no reason to hide its status.
            let length = || declared_length(&answer.response).map_err(bad);
            // (offset of the body, the file's total size as the answer states it, which header)
            let (offset, stated, header) = match status {
                200 => (0, length()?, "Content-Length"),
                206 => {
                    let header = answer.response.header("content-range");
                    let range = parse_content_range(header)
                        .filter(|r| r.first == start && r.is_consistent());
                    let Some(range) = range else {
                        // Appending bytes from another offset would corrupt the
                        // partial file; a server that answers so cannot resume.
                        return Err(bad(format!(
                            "asked for bytes={start}- and got Content-Range {header:?}: refused, \
                             nothing appended; the partial file {} is kept (delete it to download from the start)",
                            part.display()
                        )));
                    };
                    if let Some(n) = length()?
                        && n != range.len()
                    {
                        return Err(bad(format!(
                            "Content-Range {header:?} spans {} bytes but Content-Length says {n}: refused",
                            range.len()
                        )));
                    }
                    (range.first, range.total, "Content-Range")
                }
                416 => {
                    // The partial file is longer than the remote one: it
                    // belongs to another version.
                    remove_if_exists(part)?;
                    last_error = "range not satisfiable; discarded the partial file".into();
                    continue;
                }
                408 | 429 | 500..=599 => {
                    last_error = format!("HTTP {status}");
                    eprintln!(
                        "{url}: HTTP {status} (attempt {} of {})",
                        attempt + 1,
                        self.attempts
                    );
                    continue;
                }
                _ => {
                    return Err(FetchError::Http {
                        url: url.to_string(),
                        status,
                        manual: manual.to_string(),
                    });
                }
            };
            // The most bytes the file may have, and who says so.
            let limit = match (&expected.size, stated) {
                (Some(size), Some(total)) if size.value != total => {
                    return Err(FetchError::SizeMismatch {
                        what: format!("{url} (as its {header} states)"),
                        expected: size.value,
                        actual: total,
                        expected_by: size.by.clone(),
                    });
                }
                (Some(size), _) => Limit::exact(size.value, &size.by),
                (None, Some(total)) if total > self.unsized_limit => {
                    return Err(bad(format!(
                        "its {header} announces {total} bytes, more than the {} accepted for a file \
                         whose size no manifest or lock entry states: refused before the body",
                        self.unsized_limit
                    )));
                }
                (None, Some(total)) => Limit::exact(total, &format!("the server's {header}")),
                (None, None) => Limit {
                    bytes: self.unsized_limit,
                    exact: false,
                    by: "the limit for a file whose size nothing states".into(),
                },
            };
            resumed |= offset > 0;
            info = Some(answer.info.clone());
            let copied = self.stream_body(answer.response, part, offset, &limit, url);
            let have = file_len(part)?;
            match copied {
                Ok(()) if !limit.exact || have == limit.bytes => {
                    return Ok(PartDone {
                        expected,
                        info,
                        resumed,
                    });
                }
                Ok(()) => last_error = format!("connection closed after {have} bytes"),
                Err(Streamed::TooLong) => {
                    remove_if_exists(part)?;
                    return Err(FetchError::TooLong {
                        url: url.to_string(),
                        limit: limit.bytes,
                        limit_by: limit.by,
                    });
                }
                Err(Streamed::Broken(e)) => last_error = e,
            }
            eprintln!(
                "{url}: {last_error} (attempt {} of {})",
                attempt + 1,
                self.attempts
            );
        }
        let have = file_len(part)?;
        if have == 0 {
            return Err(FetchError::Network {
                url: url.to_string(),
                message: last_error,
                manual: manual.to_string(),
            });
        }
        Err(FetchError::Interrupted {
            url: url.to_string(),
            part: part.to_path_buf(),
            have,
            total: expected
                .size
                .map(|s| s.value.to_string())
                .unwrap_or_else(|| "?".into()),
            message: last_error,
        })
    }

    /// GET with an optional `Range`, following redirects by hand. Each hop
    /// passes [`check_url`] before it is requested, and the hash header is
    /// checked on each response before its redirect is followed, so a file
    /// that is known to be wrong is never requested.
    fn get(
        &self,
        url: &str,
        start: u64,
        expected: &mut Expected,
        pinned: bool,
    ) -> Result<Answer, Failure> {
        let mut current = url.to_string();
        let mut info = ResponseInfo::default();
        let mut after_https = false;
        for _ in 0..=MAX_REDIRECTS {
            after_https |= is_https(&current);
            let mut request = self.agent.get(&current).set("Accept-Encoding", "identity");
            if start > 0 {
                request = request.set("Range", &format!("bytes={start}-"));
            }
            let response = match request.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(ureq::Error::Transport(t)) => {
                    // Not `t.to_string()`: it repeats the URL the error already names.
                    let message = match t.message() {
                        Some(m) => format!("{}: {m}", t.kind()),
                        None => t.kind().to_string(),
                    };
                    return Err(match t.kind() {
                        ureq::ErrorKind::Dns
                        | ureq::ErrorKind::ConnectionFailed
                        | ureq::ErrorKind::ProxyConnect => Failure::Unreachable(message),
                        ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => {
                            Failure::Fatal(FetchError::BadResponse {
                                url: current,
                                message,
                            })
                        }
                        _ => Failure::Transient(message),
                    });
                }
            };
            // A hop may lack what a later one carries (a rename redirect
            // before the resolve redirect): keep the first value of each.
            info.fill_from(ResponseInfo::from_response(&response));
            check_announced_hash(url, &info, expected).map_err(Failure::Fatal)?;
            if (300..400).contains(&response.status())
                && let Some(location) = response.header("location")
            {
                let next = join_location(&current, location).ok_or_else(|| {
                    Failure::Fatal(FetchError::BadResponse {
                        url: current.clone(),
                        message: format!("cannot follow redirect to {location:?}"),
                    })
                })?;
                check_url(&next, after_https, pinned).map_err(|reason| {
                    Failure::Fatal(FetchError::RefusedUrl {
                        url: format!("{next} (redirected from {current})"),
                        reason,
                    })
                })?;
                current = next;
                continue;
            }
            return Ok(Answer { response, info });
        }
        Err(Failure::Fatal(FetchError::BadResponse {
            url: url.to_string(),
            message: format!("more than {MAX_REDIRECTS} redirects"),
        }))
    }

    /// Appends the body to `part` (truncating it first when `offset` is 0),
    /// never past `limit`: the byte after it ends the download as
    /// [`Streamed::TooLong`] and is not written.
    fn stream_body(
        &self,
        response: ureq::Response,
        part: &Path,
        offset: u64,
        limit: &Limit,
        url: &str,
    ) -> Result<(), Streamed> {
        let broken = |e: std::io::Error| Streamed::Broken(format!("{}: {e}", part.display()));
        let file = if offset == 0 {
            File::create(part)
        } else {
            OpenOptions::new().append(true).open(part)
        }
        .map_err(broken)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let bar = self.bar(limit.exact.then_some(limit.bytes), &short_name(url));
        bar.set_position(offset);
        // Room left for the body; one byte more is read to see whether the
        // server sends more than that, and is never written.
        let room = limit.bytes.saturating_sub(offset);
        let mut reader = response.into_reader().take(room.saturating_add(1));
        let mut written = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        let result = loop {
            match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    let keep = usize::try_from(room - written).map_or(n, |left| n.min(left));
                    if let Err(e) = out.write_all(&buf[..keep]) {
                        break Err(broken(e));
                    }
                    written += keep as u64;
                    bar.inc(keep as u64);
                    if keep < n {
                        break Err(Streamed::TooLong);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(Streamed::Broken(e.to_string())),
            }
        };
        // Whatever arrived is kept, so the next attempt resumes after it.
        let flushed = out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all());
        bar.finish_and_clear();
        result.and(flushed.map_err(broken))
    }

    fn bar(&self, total: Option<u64>, label: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(label.to_string());
        bar
    }
}

/// Compares the hash a server announces (see [`Expected::sha256_header`])
/// with the expected one, or adopts it when none is known.
fn check_announced_hash(url: &str, info: &ResponseInfo, expected: &mut Expected) -> Result<()> {
    let Some(header) = expected.sha256_header else {
        return Ok(());
    };
    let Some(server) = info.header(header).filter(|h| is_sha256_hex(h)) else {
        return Ok(());
    };
    match &expected.sha256 {
        Some(known) if known.value != server => Err(FetchError::HashMismatch {
            what: format!("{url} (as announced by the server's {header})"),
            expected: known.value.clone(),
            actual: server.to_string(),
            expected_by: known.by.clone(),
        }),
        Some(_) => Ok(()),
        None => {
            expected.sha256 = Some(Claim::new(
                server.to_string(),
                format!("the server's {header}"),
            ));
            Ok(())
        }
    }
}

struct Answer {
    response: ureq::Response,
    info: ResponseInfo,
}

/// The most bytes a download may have.
struct Limit {
    bytes: u64,
    /// The file has exactly `bytes` (a stated size), rather than at most.
    exact: bool,
    /// Who set it, for the error message.
    by: String,
}

impl Limit {
    fn exact(bytes: u64, by: &str) -> Self {
        Self {
            bytes,
            exact: true,
            by: by.to_string(),
        }
    }
}

/// Why a body stopped before its end.
enum Streamed {
    /// A broken connection or a write error: worth resuming.
    Broken(String),
    /// More bytes than the limit: refused.
    TooLong,
}

enum Failure {
    /// The host cannot be reached at all: probably offline.
    Unreachable(String),
    /// Worth another try.
    Transient(String),
    Fatal(FetchError),
}

struct PartDone {
    /// With what the server announced (its hash header) added.
    expected: Expected,
    info: Option<ResponseInfo>,
    resumed: bool,
}

/// `<dest>.part`.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// Checks `path` against `expected` (size first: it is free) and returns its
/// size and SHA-256.
pub fn verify_file(
    path: &Path,
    what: &str,
    expected: &Expected,
    progress: bool,
) -> Result<(u64, String)> {
    let size = std::fs::metadata(path)
        .map_err(|e| FetchError::io(path, e))?
        .len();
    if let Some(want) = &expected.size
        && want.value != size
    {
        return Err(FetchError::SizeMismatch {
            what: what.to_string(),
            expected: want.value,
            actual: size,
            expected_by: want.by.clone(),
        });
    }
    let sha256 = sha256_file(path, progress)?;
    if let Some(want) = &expected.sha256
        && want.value != sha256
    {
        return Err(FetchError::HashMismatch {
            what: what.to_string(),
            expected: want.value.clone(),
            actual: sha256,
            expected_by: want.by.clone(),
        });
    }
    Ok((size, sha256))
}

/// Lower-case hex SHA-256 of a file, with a progress bar for big files.
pub fn sha256_file(path: &Path, progress: bool) -> Result<String> {
    let mut file = File::open(path).map_err(|e| FetchError::io(path, e))?;
    let len = file.metadata().map_err(|e| FetchError::io(path, e))?.len();
    let bar = if progress && len > 64 << 20 {
        ProgressBar::new(len).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        )
    } else {
        ProgressBar::hidden()
    };
    bar.set_message(format!("checking {}", short_name(&path.to_string_lossy())));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FetchError::io(path, e)),
        };
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(format!("{:x}", hasher.finalize()))
}

fn file_len(path: &Path) -> Result<u64> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(FetchError::io(path, e)),
    }
}

pub fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FetchError::io(path, e)),
    }
}

/// Renames `from` to `to` and fsyncs the folder, so the new name survives a
/// power cut (the file itself was fsynced when written).
pub fn rename_durably(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| FetchError::io(to, e))?;
    let dir = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sae_steer_files::sync_dir(dir).map_err(|e| FetchError::io(dir, e))
}

/// The `Content-Length` header as a number; a header that is present but
/// not a plain decimal `u64` is an error (the HTTP client would read such a
/// body to the end of the connection, unbounded).
fn declared_length(r: &ureq::Response) -> Result<Option<u64>, String> {
    let Some(value) = r.header("content-length") else {
        return Ok(None);
    };
    let digits = value.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("Content-Length {value:?} is not a byte count"));
    }
    digits
        .parse()
        .map(Some)
        .map_err(|_| format!("Content-Length {value:?} is not a byte count"))
}

/// A `Content-Range: bytes FIRST-LAST/TOTAL` header (TOTAL may be `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ContentRange {
    first: u64,
    last: u64,
    total: Option<u64>,
}

impl ContentRange {
    /// Bytes in the range.
    fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// An answer to an open-ended `bytes=N-` request: it runs to the last
    /// byte of the file.
    fn is_consistent(&self) -> bool {
        self.total
            .is_none_or(|t| t.checked_sub(1) == Some(self.last))
    }
}

fn parse_content_range(value: Option<&str>) -> Option<ContentRange> {
    let rest = value?.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let total = match total.trim() {
        "*" => None,
        t => Some(number(t)?),
    };
    let (first, last) = (number(first)?, number(last)?);
    // `last + 1` must be a byte count: `0-18446744073709551615` would make the
    // range's length overflow.
    (first <= last && last < u64::MAX).then_some(ContentRange { first, last, total })
}

/// Whether a URL may be requested: the one rule for the first URL and every
/// redirect hop (see the module documentation). `after_https`: an earlier
/// hop of this request was `https`. `pinned`: the file's SHA-256 was known
/// (manifest or lock) before the request, so a tampered body is refused
/// whatever the transport. The error says why, for the message.
pub fn check_url(url: &str, after_https: bool, pinned: bool) -> Result<(), String> {
    let Some((scheme, host)) = scheme_and_host(url) else {
        return Err(
            "not an absolute http(s) URL this client reads unambiguously (user info, \
             backslashes, spaces and control characters are refused)"
                .into(),
        );
    };
    match scheme.as_str() {
        "https" => Ok(()),
        "http" if after_https => {
            Err("an https download never continues over plain http (a downgrade redirect)".into())
        }
        "http" if pinned || is_loopback_host(&host) => Ok(()),
        "http" => Err(format!(
            "plain http to {host} for a file whose SHA-256 nothing pins: use https, \
             or pin its sha256 in the manifest"
        )),
        other => Err(format!(
            "scheme {other}: only https (and pinned http) is fetched"
        )),
    }
}

fn is_https(url: &str) -> bool {
    scheme_and_host(url).is_some_and(|(scheme, _)| scheme == "https")
}

/// Lower-case scheme and host of an absolute URL. None for what the HTTP
/// client might read differently than this function: user info (`a@b`),
/// backslashes (a path separator to WHATWG parsers), whitespace, controls.
fn scheme_and_host(url: &str) -> Option<(String, String)> {
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _port)| host),
    };
    (!host.is_empty()).then(|| (scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

/// `localhost` or a loopback address: a server on this machine (the tests'
/// server, a local mirror), with no network between it and us.
fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Resolves a `Location` header: absolute (any scheme: [`check_url`] judges
/// it), scheme-relative or path-absolute.
fn join_location(base: &str, location: &str) -> Option<String> {
    let scheme_len = location.find(':').filter(|&i| {
        i > 0
            && location.as_bytes()[0].is_ascii_alphabetic()
            && location[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    });
    if scheme_len.is_some() {
        return Some(location.to_string());
    }
    let scheme_end = base.find("://")? + 3;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{}{rest}", &base[..scheme_end]));
    }
    if location.starts_with('/') {
        let host_end = base[scheme_end..]
            .find('/')
            .map_or(base.len(), |i| scheme_end + i);
        return Some(format!("{}{location}", &base[..host_end]));
    }
    None
}

/// The last path segment of a URL or path, for progress bars.
fn short_name(url: &str) -> String {
    let trimmed = url.split(['?', '#']).next().unwrap_or(url);
    trimmed
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(trimmed)
        .to_string()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn content_range_and_location_parsing() {
        let range = |first, last, total| Some(ContentRange { first, last, total });
        assert_eq!(
            parse_content_range(Some("bytes 10-99/100")),
            range(10, 99, Some(100))
        );
        assert!(range(10, 99, Some(100)).unwrap().is_consistent());
        assert!(!range(10, 98, Some(100)).unwrap().is_consistent());
        assert_eq!(range(10, 99, None).unwrap().len(), 90);
        assert_eq!(
            parse_content_range(Some("bytes 10-99/*")),
            range(10, 99, None)
        );
        for bad in [
            "items 1-2/3",
            "bytes 5-4/10",
            "bytes -1-4/10",
            "bytes +1-4/10",
            "bytes 1-4/18446744073709551616",
            "bytes 0-18446744073709551615/*",
            "bytes 1-/10",
        ] {
            assert_eq!(parse_content_range(Some(bad)), None, "{bad}");
        }
        assert_eq!(
            join_location("http://127.0.0.1:80/a/b?x=1", "/c/d").as_deref(),
            Some("http://127.0.0.1:80/c/d")
        );
        assert_eq!(
            join_location("https://huggingface.co/x", "https://cdn.example/y").as_deref(),
            Some("https://cdn.example/y")
        );
        assert_eq!(
            join_location("https://huggingface.co/x", "//cdn.example/y").as_deref(),
            Some("https://cdn.example/y")
        );
        assert_eq!(join_location("https://h/x", "relative"), None);
        assert_eq!(
            join_location("https://h/x", "ftp://h/y").as_deref(),
            Some("ftp://h/y")
        );
        assert_eq!(
            part_path(Path::new("/d/a.zip")),
            PathBuf::from("/d/a.zip.part")
        );
        assert_eq!(short_name("https://h/p/file.zip?sig=1"), "file.zip");
    }

    #[test]
    fn the_redirect_policy_never_downgrades_and_keeps_clear_text_local_or_pinned() {
        let ok = |url, after_https, pinned| check_url(url, after_https, pinned).is_ok();
        // https anywhere, first or after a redirect.
        assert!(ok("https://huggingface.co/a/resolve/main/x", false, false));
        assert!(ok("https://cdn-lfs.hf.co/x?sig=1", true, false));
        // The downgrade: never, not even to loopback or for a pinned file.
        for url in ["http://cdn.example/x", "http://127.0.0.1:8000/x"] {
            let err = check_url(url, true, true).unwrap_err();
            assert!(err.contains("never continues over plain http"), "{err}");
        }
        // Plain http before any https hop: loopback, or a pinned hash.
        assert!(ok("http://127.0.0.1:8000/x", false, false));
        assert!(ok("http://localhost/x", false, false));
        assert!(ok("http://[::1]:80/x", false, false));
        assert!(ok("http://data.csail.mit.edu/ADE.zip", false, true));
        let err = check_url("http://data.csail.mit.edu/ADE.zip", false, false).unwrap_err();
        assert!(err.contains("data.csail.mit.edu"), "{err}");
        // Other schemes, and URLs a WHATWG parser could read another way.
        for url in [
            "ftp://127.0.0.1/x",
            "file:///etc/passwd",
            "data:text/plain,x",
            "http://127.0.0.1@evil.example/x",
            "http://evil.example\\@127.0.0.1/x",
            "http://127.0.0.1 /x",
            "http://127.0.0.1./x",
            "http:///x",
            "/relative",
        ] {
            assert!(!ok(url, false, false), "{url}");
        }
        assert!(ok("HTTPS://Example.COM/x", true, false));
        assert!(ok("http://LOCALHOST:1/x", false, false));
    }
}

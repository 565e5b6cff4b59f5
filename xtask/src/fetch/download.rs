//! One HTTP download: into `<dest>.part`, resumed with a `Range` request after
//! a broken connection (in this run or a later one), checked against the
//! expected size and SHA-256, and only then renamed to `<dest>`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
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
}

impl Downloader {
    pub fn new(progress: bool) -> Self {
        let agent = ureq::AgentBuilder::new()
            .try_proxy_from_env(true)
            // Redirects are followed by hand: Hugging Face puts the commit
            // and the hash on the first (302) response only.
            .redirects(0)
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(60))
            .user_agent(concat!("sae-steer-xtask/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent,
            attempts: 5,
            retry_delay: Duration::from_secs(2),
            progress,
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
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| FetchError::io(dir, e))?;
        }
        let part = part_path(dest);
        let mut from_scratch = false;
        loop {
            let got = self.fetch_part(url, &part, expected, manual)?;
            match verify_file(&part, url, &got.expected, self.progress) {
                Ok((size, sha256)) => {
                    std::fs::rename(&part, dest).map_err(|e| FetchError::io(dest, e))?;
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
        manual: &str,
    ) -> Result<PartDone> {
        let mut expected = expected.clone();
        let mut resumed = false;
        let mut info = None;
        let mut last_error = String::new();
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
            let answer = match self.get(url, start, &mut expected) {
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
            let (offset, total) = match status {
                200 => (0, content_length(&answer.response)),
                206 => match parse_content_range(answer.response.header("content-range")) {
                    Some((first, total)) if first == start => (first, total),
                    _ => {
                        // Not the range we asked for: start over without one.
                        remove_if_exists(part)?;
                        last_error = format!(
                            "answered Range bytes={start}- with Content-Range {:?}",
                            answer.response.header("content-range")
                        );
                        continue;
                    }
                },
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
            if let (Some(size), Some(total)) = (&expected.size, total)
                && size.value != total
            {
                return Err(FetchError::SizeMismatch {
                    what: url.to_string(),
                    expected: size.value,
                    actual: total,
                    expected_by: size.by.clone(),
                });
            }
            resumed |= offset > 0;
            info = Some(answer.info.clone());
            let copied = self.stream_body(answer.response, part, offset, total, url);
            let have = file_len(part)?;
            match copied {
                Ok(()) if total.is_none_or(|t| have == t) => {
                    return Ok(PartDone {
                        expected,
                        info,
                        resumed,
                    });
                }
                Ok(()) => last_error = format!("connection closed after {have} bytes"),
                Err(e) => last_error = e,
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

    /// GET with an optional `Range`, following redirects by hand. The hash
    /// header is checked on each response before its redirect is
    /// followed, so a file that is known to be wrong is never requested.
    fn get(&self, url: &str, start: u64, expected: &mut Expected) -> Result<Answer, Failure> {
        let mut current = url.to_string();
        let mut info = ResponseInfo::default();
        for _ in 0..10 {
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
                current = join_location(&current, location).ok_or_else(|| {
                    Failure::Fatal(FetchError::BadResponse {
                        url: current.clone(),
                        message: format!("cannot follow redirect to {location:?}"),
                    })
                })?;
                continue;
            }
            return Ok(Answer { response, info });
        }
        Err(Failure::Fatal(FetchError::BadResponse {
            url: url.to_string(),
            message: "more than 10 redirects".into(),
        }))
    }

    /// Appends the body to `part` (truncating it first when `offset` is 0).
    /// The error is a message: the caller retries with a `Range`.
    fn stream_body(
        &self,
        response: ureq::Response,
        part: &Path,
        offset: u64,
        total: Option<u64>,
        url: &str,
    ) -> Result<(), String> {
        let file = if offset == 0 {
            File::create(part)
        } else {
            OpenOptions::new().append(true).open(part)
        }
        .map_err(|e| format!("{}: {e}", part.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let bar = self.bar(total, &short_name(url));
        bar.set_position(offset);
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let result = loop {
            match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if let Err(e) = out.write_all(&buf[..n]) {
                        break Err(format!("{}: {e}", part.display()));
                    }
                    bar.inc(n as u64);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e.to_string()),
            }
        };
        // Whatever arrived is kept, so the next attempt resumes after it.
        let flushed = out
            .into_inner()
            .map_err(|e| e.to_string())
            .and_then(|f| f.sync_all().map_err(|e| e.to_string()));
        bar.finish_and_clear();
        result.and(flushed.map_err(|e| format!("{}: {e}", part.display())))
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

fn content_length(r: &ureq::Response) -> Option<u64> {
    r.header("content-length")
        .and_then(|v| v.trim().parse().ok())
}

/// `bytes FIRST-LAST/TOTAL` -> (FIRST, TOTAL); TOTAL may be `*`.
fn parse_content_range(value: Option<&str>) -> Option<(u64, Option<u64>)> {
    let rest = value?.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, _last) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, total))
}

/// Resolves a `Location` header: absolute, scheme-relative or path-absolute.
fn join_location(base: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
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
        assert_eq!(
            parse_content_range(Some("bytes 10-99/100")),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range(Some("bytes 10-99/*")), Some((10, None)));
        assert_eq!(parse_content_range(Some("items 1-2/3")), None);
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
            part_path(Path::new("/d/a.zip")),
            PathBuf::from("/d/a.zip.part")
        );
        assert_eq!(short_name("https://h/p/file.zip?sig=1"), "file.zip");
    }
}

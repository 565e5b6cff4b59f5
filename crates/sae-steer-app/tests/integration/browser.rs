//! The page in a real browser: headless Chromium driven through
//! chromedriver (WebDriver) against the toy server. Loads the page, clicks
//! patches, moves a slider with the keyboard, and checks that the edited
//! segmentation changed and that the browser logged no error.
//!
//! Skips (passing, with a notice) when `chromedriver` or Chromium is not
//! installed, except where `CI` or `SAE_STEER_REQUIRE_BROWSER` is set (to
//! anything but `0`/`false`): there a missing browser fails the test, so a
//! broken install cannot pass unnoticed. CI installs them (Debian packages
//! `chromium`, `chromium-driver`).

use crate::common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator, key::Key};
use sae_steer_app::toy::ToyOptions;
use serde_json::{Value, json};

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The Chromium binary itself (Debian's /usr/bin/chromium is a shell wrapper).
fn chromium() -> Option<PathBuf> {
    let real = Path::new("/usr/lib/chromium/chromium");
    if real.is_file() {
        return Some(real.to_path_buf());
    }
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .find_map(|n| on_path(n))
}

/// Whether a missing browser is a failure rather than a skip.
fn browser_required() -> bool {
    ["SAE_STEER_REQUIRE_BROWSER", "CI"].iter().any(|name| {
        std::env::var(name)
            .map(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
            .unwrap_or(false)
    })
}

/// chromedriver, killed (by its own process handle) when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// chromedriver's log endpoint (not part of W3C WebDriver, but chromedriver
/// serves it): the browser console since the last call.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

#[test]
fn page_steers_in_a_real_browser() {
    let (Some(driver), Some(chrome)) = (on_path("chromedriver"), chromium()) else {
        assert!(
            !browser_required(),
            "chromedriver or chromium not found, and CI / SAE_STEER_REQUIRE_BROWSER asks for \
             the browser test (Debian: apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "SKIPPED page_steers_in_a_real_browser: chromedriver or chromium not found \
             (Debian: apt-get install chromium chromium-driver)"
        );
        return;
    };
    let server = TestServer::start(ToyOptions::default());
    let port = free_port();
    let _driver = Driver(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "chromedriver did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = tempfile::tempdir().unwrap();
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chrome,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1800",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        },
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    let caps = caps.as_object().cloned().unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = server.handle.url();
    let outcome = runtime.block_on(async move {
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .map_err(|e| format!("cannot start a browser session: {e}"))?;
        let result = scenario(&client, &url).await;
        let _ = client.close().await;
        result
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// Polls a JavaScript expression until it is true.
async fn wait_for(client: &Client, expr: &str, what: &str) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let v = client
            .execute(&format!("return Boolean({expr});"), vec![])
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        if v == Value::Bool(true) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            let status = client
                .execute(
                    "return document.getElementById('status').textContent;",
                    vec![],
                )
                .await
                .unwrap_or_default();
            return Err(format!("timed out waiting for {what}; status: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn js(client: &Client, expr: &str) -> Result<Value, String> {
    client
        .execute(&format!("return {expr};"), vec![])
        .await
        .map_err(|e| format!("{expr}: {e}"))
}

const READY: &str =
    "document.body.dataset.state === 'ready' && !document.body.classList.contains('busy')";

async fn scenario(client: &Client, url: &str) -> Result<(), String> {
    client.goto(url).await.map_err(|e| e.to_string())?;
    wait_for(
        client,
        &format!("{READY} && document.querySelectorAll('#cards .card').length > 0"),
        "the first example with its latents",
    )
    .await?;
    let grid = js(client, "document.querySelectorAll('#grid .cell').length").await?;
    if grid != json!(256) {
        return Err(format!("expected 256 patch cells, found {grid}"));
    }
    let predicted = js(client, "document.getElementById('pred').src").await?;
    if !predicted
        .as_str()
        .unwrap_or("")
        .starts_with("data:image/png")
    {
        return Err("no prediction image".into());
    }

    // Select two patches with real clicks.
    for patch in [119, 120] {
        client
            .find(Locator::Css(&format!("#grid .cell[data-patch='{patch}']")))
            .await
            .map_err(|e| format!("patch {patch}: {e}"))?
            .click()
            .await
            .map_err(|e| format!("click patch {patch}: {e}"))?;
    }
    wait_for(
        client,
        &format!(
            "{READY} && document.getElementById('latent-note').textContent.includes('2 selected patches')"
        ),
        "latents of the two selected patches",
    )
    .await?;
    let pressed = js(
        client,
        "document.querySelectorAll('#grid .cell.selected').length",
    )
    .await?;
    if pressed != json!(2) {
        return Err(format!("expected 2 selected cells, found {pressed}"));
    }
    let cards = js(client, "document.querySelectorAll('#cards .card').length").await?;
    if cards.as_u64().unwrap_or(0) == 0 {
        return Err("no latent card for the selected patches".into());
    }

    // Move the first card's slider to the end with the keyboard.
    let slider = client
        .find(Locator::Css("#cards .card .slider"))
        .await
        .map_err(|e| format!("slider: {e}"))?;
    slider
        .click()
        .await
        .map_err(|e| format!("focus slider: {e}"))?;
    slider
        .send_keys(&char::from(Key::End).to_string())
        .await
        .map_err(|e| format!("move slider: {e}"))?;
    wait_for(
        client,
        &format!("{READY} && document.getElementById('edited').dataset.changed !== undefined && document.querySelector('#cards .card .slider-value').textContent === '10'"),
        "the edited segmentation",
    )
    .await?;
    let edited = js(client, "document.getElementById('edited').src").await?;
    let changed = js(
        client,
        "Number(document.getElementById('edited').dataset.changed)",
    )
    .await?;
    if edited == predicted || changed.as_u64().unwrap_or(0) == 0 {
        return Err(format!(
            "the segmentation did not change after moving the slider to 10 (changed = {changed})"
        ));
    }
    let caption = js(client, "document.getElementById('changed').textContent").await?;
    if !caption.as_str().unwrap_or("").contains("patches changed") {
        return Err(format!("no change count shown: {caption}"));
    }

    // A guided example whose image this toy dataset lacks says so.
    client
        .find(Locator::Css("#guided button"))
        .await
        .map_err(|e| format!("guided button: {e}"))?
        .click()
        .await
        .map_err(|e| format!("click guided: {e}"))?;
    wait_for(
        client,
        "document.body.dataset.state === 'error' && document.getElementById('status').textContent.includes('1872')",
        "the guided example's message",
    )
    .await?;

    let log = client
        .issue_cmd(BrowserLog)
        .await
        .map_err(|e| format!("cannot read the browser log: {e}"))?;
    let errors: Vec<&Value> = log
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["level"] == "SEVERE" || e["level"] == "ERROR")
                .collect()
        })
        .unwrap_or_default();
    if !errors.is_empty() {
        return Err(format!("the browser console has errors: {errors:?}"));
    }
    Ok(())
}

//! Headless Chromium driven through chromedriver's WebDriver protocol (W3C
//! JSON over HTTP on a loopback port), with just the commands the inbox's
//! browser tests use. Every wait has a deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// How long any wait for the page lasts before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where the browser and its driver are, or why the tests cannot run.
fn programs() -> Result<(PathBuf, PathBuf), String> {
    let find = |variable: &str, candidates: &[&str]| -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(variable) {
            return Some(PathBuf::from(path));
        }
        candidates
            .iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
    };
    let driver = find(
        "TOOLGATE_CHROMEDRIVER",
        &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
    );
    let chromium = find(
        "TOOLGATE_CHROMIUM",
        &["/usr/bin/chromium", "/usr/lib/chromium/chromium"],
    );
    match (driver, chromium) {
        (Some(driver), Some(chromium)) => Ok((driver, chromium)),
        _ => Err(
            "the inbox's browser tests need Chromium and chromedriver: `apt-get install \
                  chromium chromium-driver` (scripts/test does it), or name them with \
                  TOOLGATE_CHROMIUM and TOOLGATE_CHROMEDRIVER"
                .to_owned(),
        ),
    }
}

/// Whether the browser tests are to be skipped (said explicitly, never
/// assumed from a missing browser: a missing browser fails them).
pub fn skipped() -> bool {
    if std::env::var_os("TOOLGATE_SKIP_BROWSER_TESTS").is_some() {
        eprintln!("TOOLGATE_SKIP_BROWSER_TESTS is set: the browser test did not run");
        return true;
    }
    false
}

/// Where screenshots go: `inbox-screenshots` in the target directory.
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("inbox-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A new headless Chromium with a fresh profile, `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let (driver_path, chromium) = programs().unwrap_or_else(|why| panic!("{why}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg("--log-level=SEVERE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_path.display()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .build()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            http,
            _profile: profile,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = browser
                .http
                .get(browser.url("/status"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--force-color-profile=srgb".to_owned(),
            "--lang=en-US".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let created = browser
            .command(
                reqwest::Method::POST,
                "/session",
                Some(json!({
                    "capabilities": {"alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": {
                            "binary": chromium.to_string_lossy(),
                            "args": args,
                        },
                        "timeouts": {"pageLoad": 20_000, "script": 10_000, "implicit": 0},
                    }}
                })),
            )
            .await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        browser.viewport(width, height, false).await;
        browser
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_command(method.clone(), path, body).await {
            Ok(value) => value,
            Err(error) => panic!("WebDriver {method} {path}: {error}"),
        }
    }

    async fn try_command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| json!(e.to_string()))?;
        let ok = response.status().is_success();
        let value: Value = response.json().await.map_err(|e| json!(e.to_string()))?;
        if ok {
            Ok(value["value"].clone())
        } else {
            Err(value["value"].clone())
        }
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Sets the page's size as a phone (`mobile`) or a desktop would.
    pub async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
    }

    async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            &self.at("/goog/cdp/execute"),
            Some(json!({"cmd": cmd, "params": params})),
        )
        .await
    }

    pub async fn goto(&self, url: &str) {
        self.command(
            reqwest::Method::POST,
            &self.at("/url"),
            Some(json!({ "url": url })),
        )
        .await;
    }

    pub async fn current_url(&self) -> String {
        self.command(reqwest::Method::GET, &self.at("/url"), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn title(&self) -> String {
        self.command(reqwest::Method::GET, &self.at("/title"), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Runs `script` (a function body) in the page with `args`.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            &self.at("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Presses a key (a WebDriver key code: `\u{E004}` Tab, `\u{E007}`
    /// Enter) where the focus is.
    pub async fn key(&self, key: &str) {
        self.command(
            reqwest::Method::POST,
            &self.at("/actions"),
            Some(
                json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                    {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}
                ]}]}),
            ),
        )
        .await;
    }

    async fn try_find(&self, css: &str) -> Option<Element<'_>> {
        let found = self
            .try_command(
                reqwest::Method::POST,
                &self.at("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .ok()?;
        Some(Element {
            browser: self,
            id: found[ELEMENT].as_str()?.to_owned(),
        })
    }

    /// The first element that matches `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element<'_> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(element) = self.try_find(css).await {
                return element;
            }
            if Instant::now() > deadline {
                let body = self
                    .js(
                        "return document.body ? document.body.innerText : '';",
                        json!([]),
                    )
                    .await;
                panic!("no element {css} within {WAIT:?}; the page says: {body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `script` returns true.
    pub async fn wait_for(&self, what: &str, script: &str, args: Value) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.js(script, args.clone()).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let body = self
                    .js(
                        "return document.body ? document.body.innerText : '';",
                        json!([]),
                    )
                    .await;
                panic!("{what}: not within {WAIT:?}; the page says: {body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the whole page (beyond the viewport) as `name`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let size = self
            .js(
                "return [document.documentElement.clientWidth, \
                 Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)];",
                json!([]),
            )
            .await;
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
                }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Synchronously, even while a failed test unwinds: end the session
        // (chromedriver closes Chromium), then the driver.
        if !self.session.is_empty()
            && let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n",
                self.session, self.port
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    fn at(&self, rest: &str) -> String {
        self.browser.at(&format!("/element/{}{rest}", self.id))
    }

    pub async fn click(&self) {
        self.browser
            .command(reqwest::Method::POST, &self.at("/click"), Some(json!({})))
            .await;
    }

    pub async fn clear(&self) {
        self.browser
            .command(reqwest::Method::POST, &self.at("/clear"), Some(json!({})))
            .await;
    }

    /// Types `text` into the element, as a person would.
    pub async fn type_text(&self, text: &str) {
        self.browser
            .command(
                reqwest::Method::POST,
                &self.at("/value"),
                Some(json!({ "text": text })),
            )
            .await;
    }

    /// The text as rendered (what a person can see).
    pub async fn text(&self) -> String {
        self.browser
            .command(reqwest::Method::GET, &self.at("/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

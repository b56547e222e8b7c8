//! A minimal W3C WebDriver client for the browser tests: just the handful of
//! commands they use, spoken as HTTP/1.1 over a loopback TCP connection to a
//! driver this module starts: `chromedriver` for Chromium, `geckodriver` for
//! Firefox. (A full client crate would bring in a large dependency tree for a
//! few JSON requests.)

use std::net::TcpListener as StdTcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// The W3C key under which an element reference is returned.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Longest any single WebDriver command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// The size of every page's window.
const WINDOW: (u32, u32) = (1100, 760);

/// Firefox's preferences for the call tests, set in each fresh profile.
const FIREFOX_PREFS: [(&str, bool); 5] = [
    // A fake camera and microphone (a test pattern and a tone)...
    ("media.navigator.streams.fake", true),
    // ...handed out without asking.
    ("media.navigator.permission.disabled", true),
    // The fake devices count as permitted. Without this, Firefox gathers no
    // ICE candidates in the loopback-only network namespace (it gathers
    // every host candidate only for a page with camera permission, else
    // only the default route's, and the namespace has no default route).
    ("media.navigator.permission.fake", true),
    // ICE may use the loopback interface (the only one in the namespace).
    ("media.peerconnection.ice.loopback", true),
    // Host candidates carry their address, not an mDNS name that nothing
    // in the namespace resolves.
    ("media.peerconnection.ice.obfuscate_host_addresses", false),
];

/// Which browser a test drives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Browser {
    Chromium,
    Firefox,
}

impl Browser {
    /// Its name in logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Browser::Chromium => "Chromium",
            Browser::Firefox => "Firefox",
        }
    }

    /// The browser's binary.
    pub fn binary(self) -> PathBuf {
        match self {
            Browser::Chromium => chromium_path(),
            Browser::Firefox => firefox_path(),
        }
    }

    /// Its WebDriver's binary.
    pub fn driver(self) -> PathBuf {
        match self {
            Browser::Chromium => chromedriver_path(),
            Browser::Firefox => geckodriver_path(),
        }
    }

    /// The variables that override [`Browser::binary`] and [`Browser::driver`].
    pub fn path_vars(self) -> [&'static str; 2] {
        match self {
            Browser::Chromium => ["QUICMATCH_CHROMIUM", "QUICMATCH_CHROMEDRIVER"],
            Browser::Firefox => ["QUICMATCH_FIREFOX", "QUICMATCH_GECKODRIVER"],
        }
    }
}

/// Chromium's binary: `QUICMATCH_CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("QUICMATCH_CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), Into::into)
}

/// chromedriver's binary: `QUICMATCH_CHROMEDRIVER`, else `/usr/bin/chromedriver`.
pub fn chromedriver_path() -> PathBuf {
    std::env::var_os("QUICMATCH_CHROMEDRIVER")
        .map_or_else(|| "/usr/bin/chromedriver".into(), Into::into)
}

/// Firefox's binary: `QUICMATCH_FIREFOX`, else Debian's `/usr/bin/firefox-esr`.
pub fn firefox_path() -> PathBuf {
    std::env::var_os("QUICMATCH_FIREFOX").map_or_else(|| "/usr/bin/firefox-esr".into(), Into::into)
}

/// geckodriver's binary: `QUICMATCH_GECKODRIVER`, else `geckodriver` on the
/// `PATH`, else where `cargo install geckodriver` puts it
/// (`$CARGO_HOME/bin`, by default `~/.cargo/bin`). Debian has no package.
pub fn geckodriver_path() -> PathBuf {
    if let Some(path) = std::env::var_os("QUICMATCH_GECKODRIVER") {
        return path.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    std::env::split_paths(&path)
        .chain(cargo_home.map(|home| home.join("bin")))
        .map(|dir| dir.join("geckodriver"))
        .find(|exe| exe.is_file())
        .unwrap_or_else(|| "geckodriver".into())
}

/// One running driver (chromedriver or geckodriver) on a loopback port,
/// killed on drop together with every browser it started.
struct DriverProcess {
    child: Child,
    port: u16,
}

impl DriverProcess {
    /// Starts `browser`'s driver on a free loopback port and waits until it
    /// is ready.
    async fn start(browser: Browser) -> Result<DriverProcess> {
        let exe = browser.driver();
        let port = StdTcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = Command::new(&exe);
        match browser {
            Browser::Chromium => {
                command.arg(format!("--port={port}"));
            }
            Browser::Firefox => {
                // The WebDriver BiDi port defaults to 9222 for every
                // geckodriver; 0 lets several run at once.
                command
                    .args(["--port", &port.to_string(), "--websocket-port", "0"])
                    // Headless Firefox takes its window size from these.
                    .env("MOZ_HEADLESS_WIDTH", WINDOW.0.to_string())
                    .env("MOZ_HEADLESS_HEIGHT", WINDOW.1.to_string());
            }
        }
        let child = command
            // Its own process group, which the browsers it starts join: one
            // kill on drop ends them all, even if their sessions were never closed.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(match browser {
                Browser::Chromium => Stdio::inherit(),
                // geckodriver relays Firefox's whole console to stderr.
                Browser::Firefox => Stdio::null(),
            })
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let process = DriverProcess { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match request(port, "GET", "/status", None).await {
                Ok(status) if status["ready"] == true => return Ok(process),
                _ if Instant::now() > deadline => {
                    bail!("{} did not become ready in 20 s", exe.display())
                }
                _ => sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let killed = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        if !killed.is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// What opens browser pages: for Chromium one running `chromedriver`, which
/// serves every page's session; for Firefox nothing yet, since a
/// `geckodriver` serves one session only: each page starts its own.
pub struct Driver {
    browser: Browser,
    shared: Option<DriverProcess>,
}

impl Driver {
    /// Starts chromedriver (see [`Driver::start_browser`]).
    pub async fn start() -> Result<Driver> {
        Driver::start_browser(Browser::Chromium).await
    }

    /// Gets ready to open `browser` pages: checks that the browser and its
    /// driver are there and, for Chromium, starts chromedriver on a free
    /// loopback port and waits until it is ready.
    pub async fn start_browser(browser: Browser) -> Result<Driver> {
        let [browser_var, driver_var] = browser.path_vars();
        let (exe, driver) = (browser.binary(), browser.driver());
        if !exe.is_file() || !driver.is_file() {
            bail!(
                "{} or {} is missing (set {browser_var} / {driver_var} to use others); \
                 see docs/browser.md",
                exe.display(),
                driver.display()
            );
        }
        let shared = match browser {
            Browser::Chromium => Some(DriverProcess::start(browser).await?),
            Browser::Firefox => None,
        };
        Ok(Driver { browser, shared })
    }

    /// Opens a new headless browser with its own fresh profile in `profile_dir`.
    pub async fn new_page(&self, name: &str, profile_dir: &Path) -> Result<Page> {
        std::fs::create_dir_all(profile_dir)?;
        let timeouts = json!({ "script": 60_000, "pageLoad": 30_000, "implicit": 0 });
        let caps = match self.browser {
            Browser::Chromium => {
                let args = [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--use-fake-device-for-media-stream",
                    "--use-fake-ui-for-media-stream",
                    "--allow-loopback-in-peer-connection",
                    &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                    &format!("--user-data-dir={}", profile_dir.display()),
                ];
                json!({
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": chromium_path(), "args": args },
                    "timeouts": timeouts,
                })
            }
            Browser::Firefox => {
                let prefs: serde_json::Map<String, Value> = FIREFOX_PREFS
                    .iter()
                    .map(|&(key, on)| (key.to_owned(), Value::Bool(on)))
                    .collect();
                let profile = profile_dir.to_str().context("profile path is not UTF-8")?;
                json!({
                    "browserName": "firefox",
                    "moz:firefoxOptions": {
                        "binary": firefox_path(),
                        // geckodriver writes `prefs` into this profile's user.js.
                        "args": ["-headless", "-profile", profile],
                        "prefs": prefs,
                    },
                    "timeouts": timeouts,
                })
            }
        };
        let caps = json!({ "capabilities": { "alwaysMatch": caps } });
        let own = match self.shared {
            Some(_) => None,
            None => Some(DriverProcess::start(self.browser).await?),
        };
        let port = self
            .shared
            .as_ref()
            .or(own.as_ref())
            .map(|p| p.port)
            .expect("a driver process");
        let value = request(port, "POST", "/session", Some(&caps))
            .await
            .with_context(|| format!("creating a {} session", self.browser.name()))?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId in {value}"))?
            .to_owned();
        Ok(Page {
            name: name.to_owned(),
            browser: self.browser,
            port,
            id,
            _driver: own,
        })
    }
}

/// One browser (a WebDriver session) showing one page.
pub struct Page {
    /// A short label for logs and file names.
    pub name: String,
    browser: Browser,
    port: u16,
    id: String,
    /// The page's own driver (geckodriver), stopped when the page is gone.
    _driver: Option<DriverProcess>,
}

impl Page {
    async fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let path = format!("/session/{}{path}", self.id);
        request(self.port, method, &path, body)
            .await
            .with_context(|| format!("{}: {method} {path}", self.name))
    }

    /// Loads `url` and waits for it.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", Some(&json!({ "url": url })))
            .await?;
        Ok(())
    }

    /// Runs `source` in every document this page loads from now on, before
    /// any of the document's own scripts (Chromium's DevTools
    /// `Page.addScriptToEvaluateOnNewDocument`, through chromedriver), e.g. to
    /// take an API away from the page. Chromium only: classic WebDriver has
    /// no such command, so for Firefox this is an error.
    pub async fn add_init_script(&self, source: &str) -> Result<()> {
        if self.browser != Browser::Chromium {
            bail!(
                "{}: add_init_script needs Chromium's DevTools bridge; {} has none",
                self.name,
                self.browser.name()
            );
        }
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(&json!({
                "cmd": "Page.addScriptToEvaluateOnNewDocument",
                "params": { "source": source },
            })),
        )
        .await?;
        Ok(())
    }

    /// Runs `script` as a function body (`arguments` are `args`) and returns
    /// its result; a returned promise is awaited.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Evaluates one JS expression.
    pub async fn eval(&self, expr: &str) -> Result<Value> {
        self.execute(&format!("return ({expr});"), vec![]).await
    }

    /// Polls `expr` until it is truthy, failing after `limit`.
    pub async fn wait_for(&self, what: &str, expr: &str, limit: Duration) -> Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.eval(expr).await?;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return Ok(value);
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: timed out after {limit:?} waiting for {what}",
                    self.name
                );
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    async fn element(&self, css: &str) -> Result<String> {
        let found = self
            .cmd(
                "POST",
                "/element",
                Some(&json!({ "using": "css selector", "value": css })),
            )
            .await?;
        found[ELEMENT_KEY]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("{}: no element {css} ({found})", self.name))
    }

    /// Clicks the element matching `css`, as a user would (a trusted event).
    pub async fn click(&self, css: &str) -> Result<()> {
        let id = self.element(css).await?;
        self.cmd("POST", &format!("/element/{id}/click"), Some(&json!({})))
            .await?;
        Ok(())
    }

    /// Types `text` into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let id = self.element(css).await?;
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(&json!({ "text": text })),
        )
        .await?;
        Ok(())
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        let b64 = self.cmd("GET", "/screenshot", None).await?;
        let b64 = b64
            .as_str()
            .ok_or_else(|| anyhow!("screenshot is not a string"))?;
        Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
    }

    /// What the page logged (`window.__log`), one line per entry.
    pub async fn page_log(&self) -> String {
        match self.eval("window.__log ?? ['(no window.__log)']").await {
            Ok(Value::Array(lines)) => lines
                .iter()
                .map(|l| format!("  [{}] {}", self.name, l.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("\n"),
            Ok(other) => format!("  [{}] unexpected log value {other}", self.name),
            Err(e) => format!("  [{}] could not read the log: {e:#}", self.name),
        }
    }

    /// Ends the browser session (and so the browser).
    pub async fn close(self) {
        let _ = self.cmd("DELETE", "", None).await;
    }
}

/// One WebDriver command: a JSON request, the `value` of the JSON answer.
async fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        // chromedriver keeps the connection open whatever we ask, so read
        // until the response is complete rather than until the stream ends.
        let mut raw = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(done) = parse_response(&raw)? {
                return anyhow::Ok(done);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed mid-response");
            }
            raw.extend_from_slice(&chunk[..n]);
        }
    };
    let (status, body) = timeout(COMMAND_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no answer in {COMMAND_TIMEOUT:?}"))??;
    let mut json: Value = serde_json::from_slice(&body)
        .with_context(|| format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))?;
    let value = json["value"].take();
    if status != 200 {
        bail!(
            "HTTP {status}: {} {}",
            value["error"].as_str().unwrap_or("error"),
            value["message"].as_str().unwrap_or_default()
        );
    }
    Ok(value)
}

/// The status and body of an HTTP/1.1 response, once `raw` holds all of it
/// (`Content-Length` or chunked), else `None`.
fn parse_response(raw: &[u8]) -> Result<Option<(u16, Vec<u8>)>> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&raw[..split])?;
    let body = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_ascii_lowercase())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return Ok(dechunk(body)?.map(|b| (status, b)));
    }
    let len: usize = header("content-length")
        .ok_or_else(|| anyhow!("response without a length"))?
        .parse()?;
    Ok((body.len() >= len).then(|| (status, body[..len].to_vec())))
}

/// Undoes chunked transfer encoding; `None` until the last chunk has arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&rest[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

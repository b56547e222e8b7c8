//! A minimal W3C WebDriver client for the browser tests: just the handful of
//! commands they use, spoken as HTTP/1.1 over a loopback TCP connection to a
//! `chromedriver` this module starts. (A full client crate would bring in a
//! large dependency tree for a few JSON requests.)

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

/// Chromium's binary: `QUICMATCH_CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("QUICMATCH_CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), Into::into)
}

/// chromedriver's binary: `QUICMATCH_CHROMEDRIVER`, else `/usr/bin/chromedriver`.
pub fn chromedriver_path() -> PathBuf {
    std::env::var_os("QUICMATCH_CHROMEDRIVER")
        .map_or_else(|| "/usr/bin/chromedriver".into(), Into::into)
}

/// A running `chromedriver`, killed on drop.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    /// Starts chromedriver on a free loopback port and waits until it is ready.
    pub async fn start() -> Result<Driver> {
        let exe = chromedriver_path();
        if !exe.exists() || !chromium_path().exists() {
            bail!(
                "{} or {} is missing: install Debian's `chromium` and `chromium-driver` \
                 (or set QUICMATCH_CHROMIUM / QUICMATCH_CHROMEDRIVER); see docs/browser.md",
                chromium_path().display(),
                exe.display()
            );
        }
        let port = StdTcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(&exe)
            .arg(format!("--port={port}"))
            // Its own process group, which the browsers it starts join: one
            // kill on drop ends them all, even if their sessions were never closed.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let driver = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match request(port, "GET", "/status", None).await {
                Ok(status) if status["ready"] == true => return Ok(driver),
                _ if Instant::now() > deadline => {
                    bail!("chromedriver did not become ready in 20 s")
                }
                _ => sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Opens a new headless Chromium with its own fresh profile in `profile_dir`.
    pub async fn new_page(&self, name: &str, profile_dir: &Path) -> Result<Page> {
        std::fs::create_dir_all(profile_dir)?;
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
            "--window-size=1100,760",
            &format!("--user-data-dir={}", profile_dir.display()),
        ];
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium_path(),
                        "args": args,
                    },
                    "timeouts": { "script": 60_000, "pageLoad": 30_000, "implicit": 0 },
                }
            }
        });
        let value = request(self.port, "POST", "/session", Some(&caps))
            .await
            .context("creating a browser session")?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId in {value}"))?
            .to_owned();
        Ok(Page {
            name: name.to_owned(),
            port: self.port,
            id,
        })
    }
}

impl Drop for Driver {
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

/// One browser (a WebDriver session) showing one page.
pub struct Page {
    /// A short label for logs and file names.
    pub name: String,
    port: u16,
    id: String,
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
    /// take an API away from the page.
    pub async fn add_init_script(&self, source: &str) -> Result<()> {
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

//! Real-browser tests: headless Chromium, driven through WebDriver, uses the
//! product's own page (`web/`) against a real server.
//!
//! - `js_codec_matches_golden_vectors`: the browser's codec (`/quicmatch.js`)
//!   against `tests/golden/vectors.json`.
//! - `js_session_logic_against_a_scripted_server`: `QuicmatchSession` against
//!   a fake WebTransport that plays the server's part (relay filtering, chat
//!   ack/resend/dedupe, chat before `Matched`, the reconnect policy).
//! - `video_call_chat_and_next`: three people with fake cameras; two are matched,
//!   see each other's video and chat both ways; one presses Next and the other is
//!   matched with the third, and video flows again.
//!
//! The call test runs inside a loopback-only network namespace when it can (see
//! [`run_in_loopback_netns`]). Needs Debian's `chromium` and `chromium-driver`:
//! every test starts with [`browser_ready`], which installs them when they are
//! missing and it can (root, apt-get), and otherwise skips the test with one
//! `SKIPPED` line on stderr, or fails it when `CI` or
//! `QUICMATCH_REQUIRE_BROWSER` is set (see `browser/setup.rs`). docs/browser.md
//! says how to run this elsewhere. On failure each page's log (`window.__log`)
//! is printed and a screenshot saved in `target/browser-failures/`.

#[path = "browser/setup.rs"]
mod setup;
#[path = "browser/webdriver.rs"]
mod webdriver;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use quicmatch::config::Config;
use quicmatch::server::Server;
use serde_json::Value;
use setup::browser_ready;
use tokio::time::{Instant, timeout};
use webdriver::{Driver, Page};

/// Bound on a whole test, far above what it normally takes.
const TEST_LIMIT: Duration = Duration::from_secs(150);
/// Bound on one step that waits for the network or the browser.
const STEP: Duration = Duration::from_secs(30);

const GOLDEN_HARNESS: &str = include_str!("browser/golden_harness.js");
const SESSION_HARNESS: &str = include_str!("browser/session_harness.js");
const VECTORS: &str = include_str!("golden/vectors.json");

/// `unshare` options for the call test: own network and PID namespaces.
const UNSHARE: [&str; 4] = ["--net", "--pid", "--fork", "--mount-proc"];

/// Set in the re-executed child that runs inside the network namespace.
const NETNS_ENV: &str = "QUICMATCH_IN_NETNS";

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

/// A fresh, empty Chromium profile directory, removed on drop.
struct ProfileDir(PathBuf);

impl ProfileDir {
    fn new(label: &str) -> ProfileDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "chromium-profile-{}-{}-{label}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        ProfileDir(dir)
    }
}

impl Drop for ProfileDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a test's async body (made by `make`) on a two-worker runtime, from a
/// thread with a roomy stack: these scenario futures are large in debug
/// builds, too large for a test thread's default stack.
fn run_async<F: Future<Output = ()>>(make: impl FnOnce() -> F + Send) {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .stack_size(16 << 20)
            .spawn_scoped(scope, move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(Box::pin(make()));
            })
            .expect("test thread");
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    });
}

async fn start_server() -> Result<Server> {
    let config = Config::parse_from([
        "quicmatch",
        "--bind",
        "::1",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
    ]);
    Server::start(config).await
}

/// Runs `scenario` (which uses `pages`), bounded by [`TEST_LIMIT`]; on failure
/// prints each page's log and saves its screenshot, then fails the test.
async fn run_pages(test: &str, pages: &[Page], scenario: impl Future<Output = Result<()>>) {
    let outcome = match timeout(TEST_LIMIT, scenario).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!("the test took over {TEST_LIMIT:?}")),
    };
    let Err(err) = outcome else { return };
    let dir = target_dir().join("browser-failures");
    let _ = std::fs::create_dir_all(&dir);
    // A browser that hangs must not hang the report.
    const REPORT_LIMIT: Duration = Duration::from_secs(10);
    for page in pages {
        let log = timeout(REPORT_LIMIT, page.page_log())
            .await
            .unwrap_or_else(|_| "  (the page did not answer)".into());
        eprintln!("--- what page {} logged:\n{log}", page.name);
        match timeout(REPORT_LIMIT, page.screenshot())
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the page did not answer")))
        {
            Ok(png) => {
                let path = dir.join(format!("{test}-{}.png", page.name));
                if std::fs::write(&path, png).is_ok() {
                    eprintln!("--- screenshot of page {}: {}", page.name, path.display());
                }
            }
            Err(e) => eprintln!("--- no screenshot of page {}: {e:#}", page.name),
        }
    }
    panic!("{test} failed: {err:#}");
}

// ---------------------------------------------------------------------------
// The JS codec against the golden vectors

/// Serves only the web files (no signaling server) on `[::1]` and runs
/// `scenario` in one browser page showing them (`http://localhost:PORT/`).
fn on_static_page(test: &str, scenario: impl AsyncFnOnce(&Page) -> Result<()> + Send) {
    run_async(move || async move {
        let listener = tokio::net::TcpListener::bind("[::1]:0")
            .await
            .expect("bind [::1]");
        let url = format!(
            "http://localhost:{}/",
            listener.local_addr().unwrap().port()
        );
        let app: axum::Router = quicmatch::web_assets::router();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        // Declared before the driver, so removed after its browser is gone.
        let dir = ProfileDir::new(test);
        let driver = Driver::start().await.expect("chromedriver");
        let pages = [driver.new_page("page", &dir.0).await.expect("browser")];
        run_pages(test, &pages, async {
            pages[0].goto(&url).await?;
            scenario(&pages[0]).await
        })
        .await;
        let [page] = pages;
        page.close().await;
        drop(driver);
        drop(dir);
        server.abort();
    });
}

/// The values of the golden vectors of one section, or nothing.
fn section_len(vectors: &Value, key: &str) -> u64 {
    vectors[key].as_array().map_or(0, Vec::len) as u64
}

/// Turns a harness's `{checks, failures}` answer into a test result.
fn harness_result(what: &str, result: &Value, count_key: &str) -> Result<u64> {
    let failures = result["failures"]
        .as_array()
        .with_context(|| format!("{what}: no failures list in {result}"))?;
    ensure!(
        failures.is_empty(),
        "{what}: {} failures:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|f| format!("  {}", f.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(result[count_key].as_u64().unwrap_or(0))
}

#[test]
fn js_codec_matches_golden_vectors() {
    if !browser_ready() {
        return;
    }
    let vectors: Value = serde_json::from_str(VECTORS).expect("vectors.json");
    on_static_page("js_codec_matches_golden_vectors", async |page| {
        let script = format!(
            "const golden = arguments[0];\n\
             return import('/quicmatch.js').then((m) => ({GOLDEN_HARNESS})(m, golden));"
        );
        let result = page.execute(&script, vec![vectors.clone()]).await?;
        let checked = harness_result("the JS codec vs the golden vectors", &result, "checked")?;
        let expected = ["valid", "decode_only", "invalid", "bad_frame_headers"]
            .iter()
            .map(|k| section_len(&vectors, k))
            .sum::<u64>();
        // Every vector was looked at (plus the frame-splitting check).
        ensure!(
            checked == expected + 1,
            "checked {checked} of {expected} vectors"
        );
        eprintln!("JS codec: {checked} golden checks passed in Chromium");
        Ok(())
    });
}

#[test]
fn js_session_logic_against_a_scripted_server() {
    if !browser_ready() {
        return;
    }
    on_static_page("js_session_logic_against_a_scripted_server", async |page| {
        let script = format!("return import('/quicmatch.js').then((m) => ({SESSION_HARNESS})(m));");
        let result = page.execute(&script, vec![]).await?;
        let checks = harness_result("QuicmatchSession", &result, "checks")?;
        ensure!(checks >= 50, "only {checks} session checks ran");
        eprintln!("JS session: {checks} checks passed in Chromium");
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// Three people, two calls

/// Runs the test `test` again inside a new network namespace that has only a
/// loopback interface, so that ICE sees loopback candidates only (the host's
/// other interfaces produce candidates that can stall or slow the call).
///
/// Returns true when it did so (the child passed; this process has nothing
/// left to do) and false when this process should run the test itself: it is
/// already the child, or namespaces are not available here (not root, no
/// `unshare`), in which case it says so.
fn run_in_loopback_netns(test: &str) -> bool {
    if std::env::var_os(NETNS_ENV).is_some() {
        return false;
    }
    let probe = Command::new("unshare")
        .args(UNSHARE)
        .arg("true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!(
            "note: cannot create a network namespace (needs root and `unshare`); running {test} \
             in this one, where non-loopback ICE candidates may slow or break the call"
        );
        return false;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let status = Command::new("unshare")
        // A new PID namespace too: when the test process (its init) ends, the
        // kernel ends every browser it started, however it ended.
        .args(UNSHARE)
        .args(["sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, "1")
        .status()
        .expect("running unshare");
    assert!(
        status.success(),
        "{test} failed inside the loopback network namespace ({status}); its output is above"
    );
    true
}

/// Fills in the join form and presses Start, as a person would.
async fn join(page: &Page, name: &str, age: u8, gender: &str) -> Result<()> {
    page.wait_for("the app", "!!window.quicmatchApp", STEP)
        .await?;
    page.type_into("#name", name).await?;
    page.type_into("#age", &age.to_string()).await?;
    page.click(&format!("#gender option[value={gender}]"))
        .await?;
    page.click("#join").await
}

/// Sends a chat line through the chat box.
async fn say(page: &Page, text: &str) -> Result<()> {
    page.type_into("#chat-input", text).await?;
    page.click("#chat-send").await
}

/// Waits until the page's chat log shows `text`.
async fn wait_chat(page: &Page, text: &str) -> Result<()> {
    let expr = format!(
        "document.getElementById('chat-log').textContent.includes({})",
        serde_json::to_string(text)?
    );
    page.wait_for(&format!("chat line {text:?}"), &expr, STEP)
        .await
        .map(drop)
}

/// Waits until the page is matched with `partner` and its call is connected.
async fn wait_connected(page: &Page, partner: &str) -> Result<()> {
    let expr = format!(
        "(() => {{ const a = window.quicmatchApp; return a.state === 'matched' \
         && a.match?.partner.name === {} && a.pc?.connectionState === 'connected'; }})()",
        serde_json::to_string(partner)?
    );
    page.wait_for(&format!("a connected call with {partner}"), &expr, STEP)
        .await
        .map(drop)
}

/// Waits until the remote `<video>` has a picture and keeps decoding frames.
async fn wait_video(page: &Page) -> Result<()> {
    const FRAMES: &str = "(() => { const v = document.getElementById('remote-video'); \
         return v.videoWidth > 0 ? v.getVideoPlaybackQuality().totalVideoFrames : 0; })()";
    let first = page
        .wait_for("remote video frames", FRAMES, STEP)
        .await?
        .as_u64()
        .unwrap_or(0);
    // Still flowing: the decoded-frame count keeps going up.
    let expr = format!("{FRAMES} > {}", first + 5);
    page.wait_for("more remote video frames", &expr, STEP)
        .await
        .map(drop)
}

async fn app_state(page: &Page) -> Result<String> {
    Ok(page
        .eval("window.quicmatchApp.state")
        .await?
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// The page's measurements (see `timings` in web/app.js).
async fn timings(page: &Page) -> Result<Value> {
    page.eval("window.quicmatchApp.timings").await
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("?".into(), |x| format!("{x:.0} ms"))
}

#[test]
fn video_call_chat_and_next() {
    const TEST: &str = "video_call_chat_and_next";
    // Before the namespace: this process installs the browser if need be (the
    // child, without a network, only looks).
    if !browser_ready() {
        return;
    }
    if run_in_loopback_netns(TEST) {
        return;
    }
    let started = std::time::Instant::now();
    run_async(|| async {
        let server = start_server().await.expect("server starts");
        let base = format!("http://localhost:{}/", server.http_addr().port());
        // Declared before the driver, so removed after its browsers are gone.
        let dirs = ["alice", "bob", "carl"].map(|name| (name, ProfileDir::new(name)));
        let driver = Driver::start().await.expect("chromedriver");
        let (a, b, c) = tokio::join!(
            driver.new_page(dirs[0].0, &dirs[0].1.0),
            driver.new_page(dirs[1].0, &dirs[1].1.0),
            driver.new_page(dirs[2].0, &dirs[2].1.0),
        );
        let pages = [
            a.expect("browser"),
            b.expect("browser"),
            c.expect("browser"),
        ];

        run_pages(TEST, &pages, async {
            let [alice, bob, carl] = &pages;
            for page in &pages {
                page.goto(&base).await?;
            }

            // The server matches opposite genders first come, first served, and
            // never with the immediately previous partner: Bob and Carl wait,
            // Alice gets Bob (the longest waiting); after Bob's Next, Alice can
            // only get Carl.
            join(bob, "Bob", 30, "Male").await?;
            bob.wait_for("Bob waiting", "window.quicmatchApp.state === 'waiting'", STEP)
                .await?;
            join(carl, "Carl", 33, "Male").await?;
            carl.wait_for("Carl waiting", "window.quicmatchApp.state === 'waiting'", STEP)
                .await?;
            let status = carl.eval("document.getElementById('status').textContent").await?;
            ensure!(
                status.as_str().unwrap_or_default().contains("number 2"),
                "Carl's status should say he is second in the queue, says {status}"
            );
            join(alice, "Alice", 28, "Female").await?;

            wait_connected(alice, "Bob").await?;
            wait_connected(bob, "Alice").await?;
            wait_video(alice).await?;
            wait_video(bob).await?;
            ensure!(app_state(carl).await? == "waiting", "Carl should still be waiting");

            say(alice, "Hello from Alice, café?").await?;
            wait_chat(bob, "Hello from Alice, café?").await?;
            say(bob, "Hi Alice, Bob here").await?;
            wait_chat(alice, "Hi Alice, Bob here").await?;
            // Alice's line is acknowledged (delivered), not just sent.
            alice
                .wait_for(
                    "Alice's chat line acknowledged",
                    "document.querySelector('#chat-log .mine.delivered') !== null",
                    STEP,
                )
                .await?;
            let first_call = [timings(alice).await?, timings(bob).await?];

            // The README's picture: refreshed in docs/ on request, so an
            // ordinary run leaves the work tree clean.
            let png = alice.screenshot().await?;
            let shot = match std::env::var_os("QUICMATCH_UPDATE_SCREENSHOT") {
                Some(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshot.png"),
                None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshot.png"),
            };
            std::fs::write(&shot, png).with_context(|| format!("saving {}", shot.display()))?;
            eprintln!("screenshot of two matched pages: {}", shot.display());

            // Bob presses Next: Alice sees him leave and gets Carl.
            let next_at = Instant::now();
            bob.click("#next").await?;
            wait_chat(alice, "Bob left.").await?;
            wait_connected(alice, "Carl").await?;
            wait_connected(carl, "Alice").await?;
            let next_to_connected = next_at.elapsed();
            wait_video(alice).await?;
            wait_video(carl).await?;
            let bob_state = app_state(bob).await?;
            ensure!(bob_state == "waiting", "Bob should be waiting, is {bob_state}");
            let bob_pc = bob.eval("window.quicmatchApp.pc === null").await?;
            ensure!(bob_pc == Value::Bool(true), "Bob's call should be torn down");

            say(carl, "Carl says hello").await?;
            wait_chat(alice, "Carl says hello").await?;

            let second_call = [timings(alice).await?, timings(carl).await?];
            for (who, t) in [("Alice", &first_call[0]), ("Bob", &first_call[1])] {
                let c = &t["connects"][0];
                eprintln!(
                    "timing: {who}: join → session open {}, → call connected {} (match → connected {})",
                    ms(&t["opens"][0]),
                    ms(&c["fromJoinMs"]),
                    ms(&c["fromMatchMs"])
                );
            }
            for (who, t) in [("Alice", &first_call[0]), ("Bob", &first_call[1])] {
                let rtts = t["chatRttMs"].as_array().cloned().unwrap_or_default();
                let rtts: Vec<String> = rtts.iter().map(ms).collect();
                eprintln!("timing: {who}: chat send → ack round trip {}", rtts.join(", "));
            }
            let alice_second = second_call[0]["connects"]
                .as_array()
                .and_then(|c| c.last().cloned())
                .unwrap_or_default();
            eprintln!(
                "timing: Alice: second match → call connected {}; Next pressed → both connected {} ms \
                 (seen by the test driver, polling included)",
                ms(&alice_second["fromMatchMs"]),
                next_to_connected.as_millis()
            );
            let carl_c = &second_call[1]["connects"][0];
            eprintln!(
                "timing: Carl: join → call connected {} (waited in the queue meanwhile)",
                ms(&carl_c["fromJoinMs"])
            );
            Ok(())
        })
        .await;

        for page in pages {
            page.close().await;
        }
        drop(driver);
        drop(dirs);
        server.shutdown().await;
    });
    eprintln!("{TEST} passed in {:.1} s", started.elapsed().as_secs_f64());
}

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
//!   matched with the third, and video flows again. All over WebTransport.
//! - `video_call_chat_and_next_without_webtransport`: the same with
//!   `WebTransport` taken away from the pages, so the module falls back to the
//!   WebSocket and that carries the calls and the chat.
//! - `video_call_in_firefox`: the same call scenario in three headless
//!   Firefox ESR pages (through geckodriver), over WebTransport. Needs
//!   `firefox-esr` and `geckodriver`: `setup::ready(Browser::Firefox)`.
//! - `websocket_page_calls_webtransport_page`: a page whose session is forced
//!   onto the WebSocket and a page on WebTransport are matched, exchange
//!   offer, answer and ICE, connect a data channel and chat.
//! - `webtransport_not_ready_falls_back_to_websocket`: WebTransport pointed at a
//!   port that never answers; the session falls back to the WebSocket after
//!   `webTransportTimeoutMs`, says so, and does not wait again on a reconnect.
//! - `page_*`: the page itself (driven through `browser/page.rs`): camera
//!   denied, missing or busy (notices that stay, Retry), a browser with
//!   neither carrier (told at load), text contrast in both themes, and Leave
//!   (focus, camera released) and a call that cannot be set up (the page
//!   moves on by itself).
//!
//! The call tests run inside a loopback-only network namespace when they can (see
//! [`run_in_loopback_netns`]). Needs Debian's `chromium` and `chromium-driver`:
//! every test starts with [`browser_ready`], which installs them when they are
//! missing and it can (root, apt-get), and otherwise skips the test with one
//! `SKIPPED` line on stderr, or fails it when `CI` or
//! `QUICMATCH_REQUIRE_BROWSER` is set (see `browser/setup.rs`). docs/browser.md
//! says how to run this elsewhere. On failure each page's log (`window.__log`)
//! is printed and a screenshot saved in `target/browser-failures/`.

#[path = "browser/page.rs"]
mod page;
#[path = "common/required.rs"]
mod required;
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
use page::{
    Carrier, NO_WEBTRANSPORT, STEP, app_state, debug_url, ensure_carrier, join, ms, say, timings,
    wait_chat, wait_connected, wait_ready, wait_state, wait_video,
};
use quicmatch::config::Config;
use quicmatch::server::Server;
use serde_json::Value;
use setup::browser_ready;
use tokio::time::{Instant, timeout};
use webdriver::{Browser, Driver, Page};

/// Bound on a whole test, far above what it normally takes.
const TEST_LIMIT: Duration = Duration::from_secs(150);

const GOLDEN_HARNESS: &str = include_str!("browser/golden_harness.js");
const SESSION_HARNESS: &str = include_str!("browser/session_harness.js");
const PEER_HARNESS: &str = include_str!("browser/peer_harness.js");
const FALLBACK_HARNESS: &str = include_str!("browser/fallback_harness.js");
const CONTRAST_HARNESS: &str = include_str!("browser/contrast_harness.js");
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
            "browser-profile-{}-{}-{label}",
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

/// Serves the web files and the routes of `extra` (no signaling server) on
/// `[::1]`; returns the page's URL (`http://localhost:PORT/`) and the task.
async fn serve_web_files(
    extra: axum::Router,
) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("[::1]:0")
        .await
        .expect("bind [::1]");
    let url = format!(
        "http://localhost:{}/",
        listener.local_addr().unwrap().port()
    );
    let app: axum::Router = quicmatch::web_assets::router().merge(extra);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    (url, server)
}

/// Serves only the web files (no signaling server) on `[::1]` and runs
/// `scenario` in one browser page showing them (`http://localhost:PORT/`).
fn on_static_page(test: &str, scenario: impl AsyncFnOnce(&Page) -> Result<()> + Send) {
    run_async(move || async move {
        let (url, server) = serve_web_files(axum::Router::new()).await;
        // Declared before the driver, so removed after its browser is gone.
        let dir = ProfileDir::new(test);
        let driver = Driver::start().await.expect("chromedriver");
        let pages = [driver.new_page("page", &dir.0).await.expect("browser")];
        run_pages(test, &pages, async {
            pages[0].goto(&debug_url(&url)).await?;
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
        ensure!(checks >= 230, "only {checks} session checks ran");
        eprintln!("JS session: {checks} checks passed in Chromium");
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// Three people, two calls

/// Makes the call tests (three or two browsers with live video or data
/// channels each) take turns, across test threads and test processes: run
/// together on a small machine they starve each other of CPU. Held by the
/// process that runs the test (the namespace child's parent holds it for the
/// child), until dropped; `None` in the child, or if the lock file cannot be
/// opened.
fn one_call_at_a_time() -> Option<std::fs::File> {
    if std::env::var_os(NETNS_ENV).is_some() {
        return None;
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::create_dir_all(tmp);
    setup::lock(&tmp.join("browser-calls.lock"))
}

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

/// A call test: one page of `browser` per name in `names`, against one real
/// server, in a loopback-only network namespace, one call test at a time.
/// `scenario` gets the page URL's base (`http://localhost:PORT/`) and the
/// pages (not yet loaded); on failure each page's log and screenshot are kept.
fn call_test<const N: usize>(
    test: &str,
    browser: Browser,
    names: [&str; N],
    scenario: impl AsyncFnOnce(&str, &[Page; N]) -> Result<()> + Send,
) {
    // Before the namespace: this process installs the browser if need be (the
    // child, without a network, only looks).
    if !setup::ready(browser) {
        return;
    }
    let _turn = one_call_at_a_time();
    if run_in_loopback_netns(test) {
        return;
    }
    let started = std::time::Instant::now();
    run_async(move || async move {
        let server = start_server().await.expect("server starts");
        let base = format!("http://localhost:{}/", server.http_addr().port());
        // Declared before the driver, so removed after its browsers are gone.
        let dirs = names.map(|name| (name, ProfileDir::new(name)));
        let driver = Driver::start_browser(browser).await.expect("WebDriver");
        let opened = futures_util::future::join_all(
            dirs.iter().map(|(name, dir)| driver.new_page(name, &dir.0)),
        )
        .await;
        let opened: Vec<Page> = opened.into_iter().map(|p| p.expect("browser")).collect();
        let Ok(pages) = <[Page; N]>::try_from(opened) else {
            panic!("{test}: not {N} pages");
        };
        run_pages(test, &pages, scenario(&base, &pages)).await;
        for page in pages {
            page.close().await;
        }
        drop(driver);
        drop(dirs);
        server.shutdown().await;
    });
    eprintln!("{test} passed in {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn video_call_chat_and_next() {
    video_call(
        "video_call_chat_and_next",
        Browser::Chromium,
        Carrier::WebTransport,
    );
}

#[test]
fn video_call_chat_and_next_without_webtransport() {
    video_call(
        "video_call_chat_and_next_without_webtransport",
        Browser::Chromium,
        Carrier::WebSocket,
    );
}

#[test]
fn video_call_in_firefox() {
    video_call(
        "video_call_in_firefox",
        Browser::Firefox,
        Carrier::WebTransport,
    );
}

/// The call test: three people, two calls, chat, Next, in three `browser`
/// pages; they signal over `carrier` (for the WebSocket, the pages have no
/// `WebTransport` at all, which only Chromium can arrange).
fn video_call(test: &'static str, browser: Browser, carrier: Carrier) {
    let label = match (browser, carrier) {
        (Browser::Chromium, Carrier::WebTransport) => "",
        (Browser::Chromium, Carrier::WebSocket) => " (WebSocket)",
        (Browser::Firefox, Carrier::WebTransport) => " (Firefox)",
        (Browser::Firefox, Carrier::WebSocket) => " (Firefox, WebSocket)",
    };
    call_test(
        test,
        browser,
        ["alice", "bob", "carl"],
        async |base, pages| {
            let [alice, bob, carl] = pages;
            for page in pages {
                if carrier == Carrier::WebSocket {
                    page.add_init_script(NO_WEBTRANSPORT).await?;
                }
                page.goto(&debug_url(base)).await?;
                if carrier == Carrier::WebSocket {
                    let wt = page.eval("typeof WebTransport").await?;
                    ensure!(wt == "undefined", "WebTransport is still there ({wt})");
                }
            }

            // The server matches opposite genders first come, first served, and
            // never with the immediately previous partner: Bob and Carl wait,
            // Alice gets Bob (the longest waiting); after Bob's Next, Alice can
            // only get Carl.
            join(bob, "Bob", 30, "Male").await?;
            wait_state(bob, "waiting").await?;
            join(carl, "Carl", 33, "Male").await?;
            wait_state(carl, "waiting").await?;
            let status = carl
                .eval("document.getElementById('status').textContent")
                .await?;
            ensure!(
                status.as_str().unwrap_or_default().contains("number 2"),
                "Carl's status should say he is second in the queue, says {status}"
            );
            join(alice, "Alice", 28, "Female").await?;

            wait_connected(alice, "Bob").await?;
            wait_connected(bob, "Alice").await?;
            wait_video(alice).await?;
            wait_video(bob).await?;
            ensure!(
                app_state(carl).await? == "waiting",
                "Carl should still be waiting"
            );
            for page in pages {
                ensure_carrier(page, carrier).await?;
            }

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
            if carrier == Carrier::WebTransport && browser == Browser::Chromium {
                let png = alice.screenshot().await?;
                let shot = match std::env::var_os("QUICMATCH_UPDATE_SCREENSHOT") {
                    Some(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshot.png"),
                    None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshot.png"),
                };
                std::fs::write(&shot, png).with_context(|| format!("saving {}", shot.display()))?;
                eprintln!("screenshot of two matched pages: {}", shot.display());
            }

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
            ensure!(
                bob_state == "waiting",
                "Bob should be waiting, is {bob_state}"
            );
            let bob_pc = bob.eval("window.quicmatchApp.pc === null").await?;
            ensure!(
                bob_pc == Value::Bool(true),
                "Bob's call should be torn down"
            );

            say(carl, "Carl says hello").await?;
            wait_chat(alice, "Carl says hello").await?;
            for page in pages {
                ensure_carrier(page, carrier).await?;
            }

            let second_call = [timings(alice).await?, timings(carl).await?];
            for (who, t) in [("Alice", &first_call[0]), ("Bob", &first_call[1])] {
                let c = &t["connects"][0];
                eprintln!(
                    "timing{label}: {who}: join → session open {}, → call connected {} (match → connected {})",
                    ms(&t["opens"][0]),
                    ms(&c["fromJoinMs"]),
                    ms(&c["fromMatchMs"])
                );
            }
            for (who, t) in [("Alice", &first_call[0]), ("Bob", &first_call[1])] {
                let rtts = t["chatRttMs"].as_array().cloned().unwrap_or_default();
                let rtts: Vec<String> = rtts.iter().map(ms).collect();
                eprintln!(
                    "timing{label}: {who}: chat send → ack round trip {}",
                    rtts.join(", ")
                );
            }
            let alice_second = second_call[0]["connects"]
                .as_array()
                .and_then(|c| c.last().cloned())
                .unwrap_or_default();
            eprintln!(
                "timing{label}: Alice: second match → call connected {}; Next pressed → both connected {} ms \
                 (seen by the test driver, polling included)",
                ms(&alice_second["fromMatchMs"]),
                next_to_connected.as_millis()
            );
            let carl_c = &second_call[1]["connects"][0];
            eprintln!(
                "timing{label}: Carl: join → call connected {} (waited in the queue meanwhile)",
                ms(&carl_c["fromJoinMs"])
            );
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// The WebSocket fallback

/// Starts one side of a call in `page` (see `browser/peer_harness.js`): a
/// session on `transport`, joined as `name`, which chats `chat` once matched.
async fn start_peer(
    page: &Page,
    transport: &str,
    name: &str,
    gender: &str,
    chat: &str,
) -> Result<()> {
    let script =
        format!("return import('/quicmatch.js').then((m) => ({PEER_HARNESS})(m, arguments[0]));");
    let opts =
        serde_json::json!({ "transport": transport, "name": name, "gender": gender, "chat": chat });
    page.execute(&script, vec![opts]).await.map(drop)
}

#[test]
fn websocket_page_calls_webtransport_page() {
    const TEST: &str = "websocket_page_calls_webtransport_page";
    call_test(
        TEST,
        Browser::Chromium,
        ["wes", "tia"],
        async |base, pages| {
            let [wes, tia] = pages;
            for page in pages {
                page.goto(&debug_url(base)).await?;
            }
            // Wes (WebSocket) waits, so he is the initiator: his offer goes
            // out over the WebSocket, Tia's answer comes back to it.
            start_peer(
                wes,
                "websocket",
                "Wes",
                "Male",
                "hi from the WebSocket side",
            )
            .await?;
            wes.wait_for("Wes waiting", "window.peer.state === 'waiting'", STEP)
                .await?;
            start_peer(
                tia,
                "webtransport",
                "Tia",
                "Female",
                "hi from the WebTransport side",
            )
            .await?;
            for (page, heard) in [
                (wes, "hi from the WebTransport side"),
                (tia, "hi from the WebSocket side"),
            ] {
                page.wait_for(
                    "a connected call",
                    "window.peer.pcState === 'connected'",
                    STEP,
                )
                .await?;
                page.wait_for(
                    "a message on the data channel",
                    "window.peer.channelMessages.length > 0",
                    STEP,
                )
                .await?;
                let expr = format!(
                    "window.peer.chats.includes({})",
                    serde_json::to_string(heard)?
                );
                page.wait_for(&format!("chat {heard:?}"), &expr, STEP)
                    .await?;
                page.wait_for(
                    "our chat acknowledged",
                    "window.peer.acked.length > 0",
                    STEP,
                )
                .await?;
            }
            let w = wes.eval("window.peer").await?;
            let t = tia.eval("window.peer").await?;
            ensure!(
                w["transports"] == serde_json::json!(["websocket"]),
                "Wes: {w}"
            );
            ensure!(
                t["transports"] == serde_json::json!(["webtransport"]),
                "Tia: {t}"
            );
            ensure!(
                w["partner"] == "Tia" && t["partner"] == "Wes",
                "partners: {w} / {t}"
            );
            ensure!(
                w["initiator"] == true && w["sentOffer"] == true && w["gotAnswer"] == true,
                "Wes should have sent the offer and got the answer: {w}"
            );
            ensure!(
                t["gotOffer"] == true && t["sentAnswer"] == true,
                "Tia should have got the offer and answered: {t}"
            );
            ensure!(
                w["iceReceived"].as_u64() > Some(0) && t["iceReceived"].as_u64() > Some(0),
                "ICE both ways: {w} / {t}"
            );
            ensure!(
                w["channelMessages"] == serde_json::json!(["Tia on the data channel"])
                    && t["channelMessages"] == serde_json::json!(["Wes on the data channel"]),
                "data channel: {w} / {t}"
            );
            ensure!(
                w["errors"] == serde_json::json!([]) && t["errors"] == serde_json::json!([]),
                "errors: {w} / {t}"
            );
            Ok(())
        },
    );
}

#[test]
fn webtransport_not_ready_falls_back_to_websocket() {
    const TEST: &str = "webtransport_not_ready_falls_back_to_websocket";
    /// The session's `webTransportTimeoutMs` (not the default, to see it is used).
    const TIMEOUT_MS: u64 = 1500;
    if !browser_ready() {
        return;
    }
    let started = std::time::Instant::now();
    run_async(|| async {
        let server = start_server().await.expect("server starts");
        let websocket = format!("ws://localhost:{}/signal", server.http_addr().port());
        // A UDP port that takes packets and never answers: a QUIC handshake
        // to it never completes, so WebTransport is never ready.
        let blackhole = std::net::UdpSocket::bind("[::1]:0").expect("bind a UDP port on [::1]");
        let never_ready = format!(
            "https://localhost:{}/signal",
            blackhole.local_addr().unwrap().port()
        );
        // The page's own origin (the web files, no server) sends WebTransport
        // there and names no WebSocket: the session gets that as `websocketUrl`.
        let info = serde_json::json!({ "url": never_ready, "serverCertificateHashes": [] });
        let api = axum::Router::new().route(
            "/api/webtransport",
            axum::routing::get(move || {
                let info = info.clone();
                async move { axum::Json(info) }
            }),
        );
        let (page_url, web) = serve_web_files(api).await;
        let dir = ProfileDir::new(TEST);
        let driver = Driver::start().await.expect("chromedriver");
        let pages = [driver.new_page("page", &dir.0).await.expect("browser")];

        run_pages(TEST, &pages, async {
            let page = &pages[0];
            page.goto(&debug_url(&page_url)).await?;
            let script = format!(
                "return import('/quicmatch.js').then((m) => ({FALLBACK_HARNESS})(m, arguments[0], arguments[1]));"
            );
            let r = page
                .execute(&script, vec![Value::from(websocket.as_str()), Value::from(TIMEOUT_MS)])
                .await?;
            eprintln!("fallback: {r}");
            ensure!(
                r["webTransports"] == serde_json::json!([never_ready]),
                "exactly one WebTransport attempt, to {never_ready}: {r}"
            );
            let first_ms = r["firstOpenMs"].as_f64().unwrap_or(0.0);
            ensure!(
                first_ms >= TIMEOUT_MS as f64,
                "the first connection should wait {TIMEOUT_MS} ms for WebTransport, took {first_ms:.0} ms"
            );
            ensure!(r["firstTransport"] == "websocket", "first connection: {r}");
            ensure!(r["socketProtocol"] == "quicmatch.v1", "subprotocol: {r}");
            let transport_events: Vec<&Value> = r["events"]
                .as_array()
                .map(|e| e.iter().filter(|e| e["type"] == "transport").collect())
                .unwrap_or_default();
            ensure!(transport_events.len() == 2, "two transport events: {r}");
            let reason = |e: &Value| e["reason"].as_str().unwrap_or_default().to_owned();
            ensure!(
                transport_events[0]["transport"] == "websocket"
                    && transport_events[0]["fallback"] == true
                    && reason(transport_events[0]).contains(&format!("not ready within {TIMEOUT_MS} ms")),
                "the first transport event should say the WebSocket replaced WebTransport: {}",
                transport_events[0]
            );
            // The reconnect: straight to the WebSocket, no second wait.
            ensure!(
                transport_events[1]["transport"] == "websocket"
                    && reason(transport_events[1]).contains("earlier on this page"),
                "the reconnect's transport event: {}",
                transport_events[1]
            );
            let reopen_ms = r["reopenMs"].as_f64().unwrap_or(f64::MAX);
            ensure!(
                reopen_ms < TIMEOUT_MS as f64,
                "the reconnect took {reopen_ms:.0} ms: it waited for WebTransport again"
            );
            ensure!(r["webSockets"] == 2 && r["transport"] == "websocket", "{r}");
            eprintln!(
                "timing: fallback: join → open over the WebSocket {first_ms:.0} ms (timeout {TIMEOUT_MS} ms); \
                 cut → open again {reopen_ms:.0} ms"
            );
            Ok(())
        })
        .await;

        let [page] = pages;
        page.close().await;
        drop(driver);
        drop(dir);
        drop(blackhole);
        web.abort();
        server.shutdown().await;
    });
    eprintln!("{TEST} passed in {:.1} s", started.elapsed().as_secs_f64());
}

/// Run in a page on another origin: imports the module from the server's
/// versioned path (`arguments[0]` is the server's sidecar URL) and joins
/// once over each transport; resolves to what each answered.
const CROSS_ORIGIN_JOIN: &str = "const base = arguments[0];
return import(new URL('/quicmatch.v1.js', base).href).then(async (m) => {
  const out = { origin: location.origin };
  for (const transport of ['websocket', 'webtransport']) {
    const s = new m.QuicmatchSession({ base, transport });
    try {
      const answer = await s.join({ name: 'Far', age: 30, gender: 'Female' }, { timeoutMs: 10000 });
      out[transport] = { type: answer.type, used: s.transport };
    } catch (e) {
      out[transport] = { error: `${e.code ?? ''} ${e.message ?? e}` };
    } finally {
      s.close();
    }
  }
  return out;
});";

/// A page on another origin (another port) imports `/quicmatch.v1.js` from
/// the server, which only CORS allows for a module script, finds the server
/// through `base`, and joins over the WebSocket and over WebTransport.
#[test]
fn a_page_on_another_origin_imports_the_versioned_module() {
    if !browser_ready() {
        return;
    }
    on_server_page(
        "a_page_on_another_origin_imports_the_versioned_module",
        "",
        async |page, _server, base| {
            let blank = axum::Router::new().route(
                "/elsewhere",
                axum::routing::get(|| async {
                    axum::response::Html("<!doctype html><title>elsewhere</title>")
                }),
            );
            let (other, web) = serve_web_files(blank).await;
            let result = async {
                page.goto(&format!("{other}elsewhere")).await?;
                page.execute(CROSS_ORIGIN_JOIN, vec![Value::String(base.to_owned())])
                    .await
            }
            .await;
            web.abort();
            let result = result?;
            let server_origin = base.trim_end_matches('/');
            ensure!(
                result["origin"]
                    .as_str()
                    .is_some_and(|o| o != server_origin),
                "the page is not on another origin: {result}"
            );
            for transport in ["websocket", "webtransport"] {
                let got = &result[transport];
                ensure!(
                    got["type"] == "waiting" && got["used"] == transport,
                    "joining over {transport} from another origin: {got}"
                );
            }
            eprintln!(
                "another origin ({}) imported the module and joined over both transports",
                result["origin"]
            );
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// The page: camera problems, feature detection, Leave, a failed call

/// Runs `scenario` in one page of the product, served by a real server, with
/// `init` run in every document before the page's own scripts; the page is
/// loaded by the scenario (from the base URL it is given).
fn on_server_page(
    test: &str,
    init: &str,
    scenario: impl AsyncFnOnce(&Page, &Server, &str) -> Result<()> + Send,
) {
    run_async(move || async move {
        let server = start_server().await.expect("server starts");
        let base = format!("http://localhost:{}/", server.http_addr().port());
        let dir = ProfileDir::new(test);
        let driver = Driver::start().await.expect("chromedriver");
        let pages = [driver.new_page("page", &dir.0).await.expect("browser")];
        run_pages(test, &pages, async {
            pages[0].add_init_script(init).await?;
            scenario(&pages[0], &server, &base).await
        })
        .await;
        let [page] = pages;
        page.close().await;
        drop(driver);
        drop(dir);
        server.shutdown().await;
    });
}

/// Run before the page's scripts: `getUserMedia` fails with the DOMException
/// named by `window.cameraFailure` (set by the test; `NotFoundError` at
/// first), or opens the fake camera when that is null.
const FAILING_CAMERA: &str = "(() => {
  const md = navigator.mediaDevices;
  const real = md.getUserMedia.bind(md);
  window.cameraFailure = window.cameraFailure ?? 'NotFoundError';
  md.getUserMedia = (c) => window.cameraFailure
    ? Promise.reject(new DOMException('camera test', window.cameraFailure))
    : real(c);
})();";

/// Evaluates to the notice's text while it is shown, else null.
const NOTICE: &str = "document.getElementById('notice').hidden ? null : document.getElementById('notice-text').textContent";

/// The notice's text, if it is shown.
async fn notice(page: &Page) -> Result<Option<String>> {
    let v = page.eval(NOTICE).await?;
    Ok(v.as_str().map(str::to_owned))
}

/// Whether the element matching `css` is rendered (not hidden by itself or an ancestor).
async fn shown(page: &Page, css: &str) -> Result<bool> {
    let expr = format!(
        "(() => {{ const e = document.querySelector({}); return !!e && e.getClientRects().length > 0; }})()",
        serde_json::to_string(css)?
    );
    Ok(page.eval(&expr).await? == Value::Bool(true))
}

#[test]
fn page_camera_denied_notice_stays_and_offers_retry() {
    const TEST: &str = "page_camera_denied_notice_stays_and_offers_retry";
    if !browser_ready() {
        return;
    }
    let init = format!("window.cameraFailure = 'NotAllowedError';\n{FAILING_CAMERA}");
    on_server_page(TEST, &init, async |page, server, base| {
        page.goto(&debug_url(base)).await?;
        join(page, "Dee", 27, "Female").await?;
        let text = page.wait_for("the camera notice", NOTICE, STEP).await?;
        let text = text.as_str().unwrap_or_default().to_owned();
        ensure!(
            text.contains("denied"),
            "the notice should say the camera was denied: {text:?}"
        );
        // It stays: nothing wipes it a moment later.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let later = notice(page).await?;
        ensure!(
            later.as_deref() == Some(text.as_str()),
            "after 1.2 s the notice is {later:?}, was {text:?}"
        );
        ensure!(shown(page, "#retry").await?, "no Retry button is shown");
        // Still at the form; no session made, none reached the server.
        ensure!(app_state(page).await? == "start", "the page left the form");
        ensure!(shown(page, "#join-form").await?, "the form is not shown");
        let session = page.eval("window.quicmatchApp.session === null").await?;
        ensure!(session == Value::Bool(true), "a session was made");
        ensure!(
            server.stats().active_users == 0,
            "a session reached the server: {:?}",
            server.stats()
        );
        let focus = page.eval("document.activeElement?.id ?? null").await?;
        ensure!(focus == "retry", "focus should be on Retry, is on {focus}");
        Ok(())
    });
}

#[test]
fn page_camera_missing_and_busy_say_different_things_and_retry_joins() {
    const TEST: &str = "page_camera_missing_and_busy_say_different_things_and_retry_joins";
    if !browser_ready() {
        return;
    }
    on_server_page(TEST, FAILING_CAMERA, async |page, server, base| {
        page.goto(&debug_url(base)).await?;
        join(page, "Eve", 29, "Female").await?;
        let missing = page.wait_for("the camera notice", NOTICE, STEP).await?;
        let missing = missing.as_str().unwrap_or_default().to_owned();
        ensure!(
            missing.contains("No camera"),
            "a missing camera: {missing:?}"
        );
        page.eval("window.cameraFailure = 'NotReadableError'")
            .await?;
        page.click("#retry").await?;
        let expr = format!(
            "(() => {{ const t = {NOTICE}; return t !== null && t !== {} ? t : null; }})()",
            serde_json::to_string(&missing)?
        );
        let busy = page.wait_for("another camera notice", &expr, STEP).await?;
        let busy = busy.as_str().unwrap_or_default().to_owned();
        ensure!(busy.contains("in use"), "a busy camera: {busy:?}");
        ensure!(
            server.stats().active_users == 0,
            "a session reached the server"
        );
        // The camera works again: Retry joins.
        page.eval("window.cameraFailure = null").await?;
        page.click("#retry").await?;
        wait_state(page, "waiting").await?;
        ensure!(
            notice(page).await?.is_none(),
            "the camera notice is still shown"
        );
        ensure!(server.stats().female_queue == 1, "{:?}", server.stats());
        eprintln!("camera notices: missing {missing:?}; busy {busy:?}");
        Ok(())
    });
}

#[test]
fn page_unsupported_browser_is_told_on_load() {
    const TEST: &str = "page_unsupported_browser_is_told_on_load";
    if !browser_ready() {
        return;
    }
    let init = "delete window.WebTransport; delete window.WebSocket;";
    on_server_page(TEST, init, async |page, _server, base| {
        // Without `?debug` the page has no test hooks.
        page.goto(base).await?;
        wait_ready(page).await?;
        let hooks = page
            .eval("[typeof window.quicmatchApp, typeof window.__log]")
            .await?;
        ensure!(
            hooks == serde_json::json!(["undefined", "undefined"]),
            "test hooks without ?debug: {hooks}"
        );
        page.goto(&debug_url(base)).await?;
        let gone = page
            .eval("typeof WebTransport + ' ' + typeof WebSocket")
            .await?;
        ensure!(gone == "undefined undefined", "still there: {gone}");
        wait_ready(page).await?;
        // Shown at load, before anything was pressed.
        let text = notice(page).await?.unwrap_or_default();
        ensure!(
            text.contains("WebTransport") && text.contains("WebSocket"),
            "the notice should say what is missing: {text:?}"
        );
        let disabled = page
            .eval("document.getElementById('join').disabled")
            .await?;
        ensure!(disabled == Value::Bool(true), "Start is not disabled");
        Ok(())
    });
}

/// Every text of the page, with the notice, the call view and chat lines of
/// every kind shown, meets WCAG AA (4.5:1) in the light and the dark theme.
#[test]
fn page_text_contrast_meets_wcag_aa_in_both_themes() {
    if !browser_ready() {
        return;
    }
    on_static_page(
        "page_text_contrast_meets_wcag_aa_in_both_themes",
        async |page| {
            wait_ready(page).await?;
            let script = format!("return ({CONTRAST_HARNESS})();");
            let result = page.execute(&script, vec![]).await?;
            let checked = harness_result("text contrast", &result, "checked")?;
            ensure!(
                checked >= 40,
                "only {checked} texts were measured: {result}"
            );
            eprintln!(
                "contrast: {checked} texts measured; lowest ratio {:.2}:1 (light), {:.2}:1 (dark)",
                result["worst"]["light"].as_f64().unwrap_or(0.0),
                result["worst"]["dark"].as_f64().unwrap_or(0.0)
            );
            Ok(())
        },
    );
}

/// Run before the page's scripts: every `setRemoteDescription` fails, as with
/// an offer this browser cannot take.
const BROKEN_REMOTE_DESCRIPTION: &str = "RTCPeerConnection.prototype.setRemoteDescription = \
    function () { return Promise.reject(new DOMException('call test', 'InvalidAccessError')); };";

/// Ann and Ben are matched and connected; Ann presses Leave: she is back at
/// the form with the focus in it and her camera released, and Ben sees her
/// leave. Then Cat, whose browser cannot take the offer, is matched with Ben:
/// her page says so and moves on (Next), and Ben sees her leave too.
#[test]
fn page_leave_releases_the_camera_and_a_failed_call_moves_on() {
    const TEST: &str = "page_leave_releases_the_camera_and_a_failed_call_moves_on";
    call_test(
        TEST,
        Browser::Chromium,
        ["ann", "ben", "cat"],
        async |base, pages| {
            let [ann, ben, cat] = pages;
            cat.add_init_script(BROKEN_REMOTE_DESCRIPTION).await?;
            for page in pages {
                page.goto(&debug_url(base)).await?;
            }
            // Ben waits, so he makes the offers.
            join(ben, "Ben", 31, "Male").await?;
            wait_state(ben, "waiting").await?;
            join(ann, "Ann", 30, "Female").await?;
            wait_connected(ann, "Ben").await?;
            wait_connected(ben, "Ann").await?;
            let tracks = ann
                .eval("window.quicmatchApp.tracks.map((t) => t.readyState)")
                .await?;
            ensure!(
                tracks == serde_json::json!(["live", "live"]),
                "Ann's camera and microphone should be live: {tracks}"
            );

            ann.click("#leave").await?;
            wait_state(ann, "start").await?;
            ensure!(shown(ann, "#join-form").await?, "Ann's form is not shown");
            let focus = ann
                .eval("document.activeElement?.closest('#join-form') ? document.activeElement.id : null")
                .await?;
            ensure!(!focus.is_null(), "Ann's focus is not in the form");
            let tracks = ann
                .eval("window.quicmatchApp.tracks.map((t) => t.readyState)")
                .await?;
            ensure!(
                tracks == serde_json::json!(["ended", "ended"]),
                "Ann's camera and microphone should be released: {tracks}"
            );
            let pc = ann.eval("window.quicmatchApp.pc === null").await?;
            ensure!(pc == Value::Bool(true), "Ann's call is not torn down");
            wait_chat(ben, "Ann left.").await?;
            wait_state(ben, "waiting").await?;
            let ben_pc = ben.eval("window.quicmatchApp.pc === null").await?;
            ensure!(ben_pc == Value::Bool(true), "Ben's call is not torn down");

            // Cat's browser refuses Ben's offer: her page gives up on the
            // call at once and looks for someone else.
            let joined_at = Instant::now();
            join(cat, "Cat", 26, "Female").await?;
            wait_chat(cat, "could not be set up").await?;
            let gave_up = joined_at.elapsed();
            wait_state(cat, "waiting").await?;
            let text = notice(cat).await?.unwrap_or_default();
            ensure!(
                text.contains("could not be set up"),
                "Cat's notice: {text:?}"
            );
            wait_chat(ben, "Cat left.").await?;
            wait_state(ben, "waiting").await?;
            eprintln!(
                "a call that cannot be set up: Cat joined → gave up {} ms",
                gave_up.as_millis()
            );
            Ok(())
        },
    );
}

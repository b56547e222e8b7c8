//! Driving the product's own page (`web/index.html`, `web/app.js`) as a
//! person would, and reading what it shows. Browser-neutral: the same
//! helpers drive Chromium and Firefox through [`Page`].
//!
//! The page tells its state in the DOM (`data-state` and `data-call` on
//! `<main>`, the partner's name in `#partner`). Its debug hook,
//! `window.quicmatchApp` (timings, the session, the camera's tracks), and its
//! log, `window.__log`, exist only when the URL has `?debug`: load pages with
//! [`debug_url`].

use anyhow::{Result, ensure};
use serde_json::Value;
use std::time::Duration;

use super::webdriver::Page;

/// Bound on one step that waits for the network or the browser.
pub const STEP: Duration = Duration::from_secs(30);

/// Run in every document of a page before its own scripts: a browser
/// without WebTransport (as Safari before 26, or a policy that turns it off).
pub const NO_WEBTRANSPORT: &str = "delete window.WebTransport;";

/// The page at `base` (e.g. `http://localhost:5000/`) with its debug hook
/// and log turned on.
pub fn debug_url(base: &str) -> String {
    format!("{base}?debug")
}

/// The JS expression of a string, quoted and escaped.
fn js(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// Waits until the app has loaded and shows its join form.
pub async fn wait_ready(page: &Page) -> Result<()> {
    page.wait_for(
        "the app",
        "document.querySelector('main')?.dataset.state === 'start'",
        STEP,
    )
    .await
    .map(drop)
}

/// Fills in the join form and presses Start, as a person would.
pub async fn join(page: &Page, name: &str, age: u8, gender: &str) -> Result<()> {
    wait_ready(page).await?;
    page.type_into("#name", name).await?;
    page.type_into("#age", &age.to_string()).await?;
    page.click(&format!("#gender option[value={gender}]"))
        .await?;
    page.click("#join").await
}

/// Sends a chat line through the chat box.
pub async fn say(page: &Page, text: &str) -> Result<()> {
    page.type_into("#chat-input", text).await?;
    page.click("#chat-send").await
}

/// Waits until the page's chat log shows `text`.
pub async fn wait_chat(page: &Page, text: &str) -> Result<()> {
    let expr = format!(
        "document.getElementById('chat-log').textContent.includes({})",
        js(text)
    );
    page.wait_for(&format!("chat line {text:?}"), &expr, STEP)
        .await
        .map(drop)
}

/// The page's state, as `data-state` on `<main>` says: `start` (the form),
/// `connecting`, `reconnecting`, `waiting`, `matched` or `closed`.
pub async fn app_state(page: &Page) -> Result<String> {
    Ok(page
        .eval("document.querySelector('main')?.dataset.state ?? null")
        .await?
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Waits until the page's state (see [`app_state`]) is `state`.
pub async fn wait_state(page: &Page, state: &str) -> Result<()> {
    let expr = format!(
        "document.querySelector('main')?.dataset.state === {}",
        js(state)
    );
    page.wait_for(&format!("state {state}"), &expr, STEP)
        .await
        .map(drop)
}

/// Waits until the page is matched with `partner` and its call is connected.
pub async fn wait_connected(page: &Page, partner: &str) -> Result<()> {
    let expr = format!(
        "(() => {{ const m = document.querySelector('main'); \
         return m.dataset.state === 'matched' && m.dataset.call === 'connected' \
         && document.querySelector('#partner [data-var=name]')?.textContent === {}; }})()",
        js(partner)
    );
    page.wait_for(&format!("a connected call with {partner}"), &expr, STEP)
        .await
        .map(drop)
}

/// Waits until the remote `<video>` has a picture and keeps playing it.
///
/// "Playing" is a count of frames that goes up: Chromium's
/// `getVideoPlaybackQuality().totalVideoFrames`, or Firefox's
/// `mozPresentedFrames` (Firefox keeps `totalVideoFrames` at 0 for a
/// `MediaStream`). Where neither counts, the playback clock (`currentTime`)
/// must advance by half a second.
pub async fn wait_video(page: &Page) -> Result<()> {
    const PROGRESS: &str = "(() => { const v = document.getElementById('remote-video'); \
         if (!(v.videoWidth > 0) || v.readyState < 2) return null; \
         const q = v.getVideoPlaybackQuality?.(); \
         const frames = Math.max(q?.totalVideoFrames ?? 0, v.mozPresentedFrames ?? 0, v.mozPaintedFrames ?? 0); \
         return { frames, time: v.currentTime }; })()";
    let first = page.wait_for("a remote picture", PROGRESS, STEP).await?;
    let frames = first["frames"].as_u64().unwrap_or(0);
    let time = first["time"].as_f64().unwrap_or(0.0);
    let expr = format!(
        "(() => {{ const p = {PROGRESS}; if (!p) return false; \
         return {frames} > 0 ? p.frames > {frames} + 5 : p.frames > 5 || p.time > {time} + 0.5; }})()"
    );
    page.wait_for("the remote video playing on", &expr, STEP)
        .await
        .map(drop)
}

/// The page's measurements (`timings` in web/app.js; needs [`debug_url`]).
pub async fn timings(page: &Page) -> Result<Value> {
    page.eval("window.quicmatchApp.timings").await
}

/// A number of milliseconds, as "123 ms" (or "?").
pub fn ms(v: &Value) -> String {
    v.as_f64().map_or("?".into(), |x| format!("{x:.0} ms"))
}

/// Which carrier a test's pages signal over.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Carrier {
    WebTransport,
    WebSocket,
}

impl Carrier {
    /// As `QuicmatchSession.transport` names it.
    pub fn name(self) -> &'static str {
        match self {
            Carrier::WebTransport => "webtransport",
            Carrier::WebSocket => "websocket",
        }
    }
}

/// Checks that the app's session signals over `carrier` (needs [`debug_url`]).
pub async fn ensure_carrier(page: &Page, carrier: Carrier) -> Result<()> {
    let used = page
        .eval("window.quicmatchApp.session?.transport ?? null")
        .await?;
    ensure!(
        used == carrier.name(),
        "{} signals over {used}, not {}",
        page.name,
        carrier.name()
    );
    Ok(())
}

//! The operators' live dashboard (`GET /dashboard`) in headless Chromium,
//! against a real server with real native clients: it must show, in one
//! look, the sessions, the queues, the matches and the relay time that the
//! server's own metrics hold. With `QUICMATCH_SCREENSHOT=path.png` the
//! test also saves the page's screenshot there (the README's picture).
//!
//! Like tests/browser.rs it needs Debian's `chromium` and `chromium-driver`
//! (installed, skipped or failed as `browser/setup.rs` says).

mod common;
#[path = "common/required.rs"]
mod required;
#[path = "browser/setup.rs"]
mod setup;
// Shared with tests/browser.rs, which uses more of it.
#[allow(dead_code)]
#[path = "browser/webdriver.rs"]
mod webdriver;

use std::time::Duration;

use common::*;
use quicmatch::protocol::{ClientMsg, Gender, ServerMsg};
use setup::browser_ready;
use webdriver::Driver;

/// Read by `browser/setup.rs`: set only in the browser tests' re-executed
/// network-namespace child, which this file never makes.
const NETNS_ENV: &str = "QUICMATCH_IN_NETNS";

/// Bound on each wait for the page.
const PAGE_STEP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_sessions_queues_matches_and_relay_time() {
    if !browser_ready() {
        return;
    }
    let server = start_server(&[]).await;
    // Three people: Ann and Bob matched, exchanging offers; Cy waiting.
    let (mut ann, mut bob, id) = matched_pair(&server).await;
    for i in 0..20 {
        send(
            &mut ann,
            ClientMsg::Offer {
                match_id: id,
                sdp: format!("offer {i}"),
            },
        )
        .await;
        assert!(matches!(next_msg(&mut bob).await, ServerMsg::Offer { .. }));
    }
    let mut cy = connect(&server).await;
    join(&mut cy, "Cy", Gender::Male).await;

    let profile = std::env::temp_dir().join(format!("quicmatch-dashboard-{}", std::process::id()));
    let driver = Driver::start().await.expect("chromedriver");
    let page = driver.new_page("dashboard", &profile).await.expect("page");
    let url = format!("http://127.0.0.1:{}/dashboard", server.http_addr().port());
    page.goto(&url).await.expect("open the dashboard");
    page.wait_for(
        "the dashboard's data",
        "document.body.dataset.ready === '1'",
        PAGE_STEP,
    )
    .await
    .expect("dashboard ready");
    let text = |id: &'static str| {
        let page = &page;
        async move {
            page.eval(&format!("document.getElementById('{id}').textContent"))
                .await
                .expect("read the page")
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    assert_eq!(text("now-sessions").await, "3");
    assert_eq!(text("now-waiting").await, "1 / 0");
    // Twenty relays were written, each within a second.
    let relay = text("now-relay").await;
    assert!(
        relay.ends_with(" ms") && !relay.starts_with('–'),
        "relay: {relay}"
    );
    // Every chart drew its lines.
    for chart in ["sessions", "queues"] {
        let points = page
            .eval(&format!(
                "Number(document.getElementById('chart-{chart}').dataset.points)"
            ))
            .await
            .expect("read the chart");
        assert!(
            points.as_f64().is_some_and(|n| n >= 1.0),
            "{chart}: {points}"
        );
    }
    let status = text("status").await;
    assert!(status.starts_with("one server"), "status: {status}");

    // A session ending shows on the next refresh.
    drop(cy);
    wait_counts(&server, (2, 1, 0, 0)).await;
    page.execute("window.dispatchEvent(new Event('resize'))", vec![])
        .await
        .expect("refresh");
    page.wait_for(
        "the new session count",
        "document.getElementById('now-sessions').textContent === '2'",
        PAGE_STEP,
    )
    .await
    .expect("sessions updated");

    if let Some(path) = std::env::var_os("QUICMATCH_SCREENSHOT") {
        let png = page.screenshot().await.expect("screenshot");
        std::fs::write(&path, png).expect("write the screenshot");
    }
    page.close().await;
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile);
    server.shutdown().await;
}

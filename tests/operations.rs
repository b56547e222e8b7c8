//! What operators rely on: certificates reloaded from their files (on change
//! and on SIGHUP) without dropping sessions, `/health` saying "draining"
//! while the server shuts down, and JSON logs that follow one session.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::process::spawn_server;
use common::*;
use quicmatch::client::Client;
use quicmatch::protocol::{ClientMsg, Gender, ServerMsg};
use serde_json::Value;
use sha2::Digest;
use tokio::time::Instant;

/// A certificate a native client can pin by hash (ECDSA P-256, valid for a
/// day), as PEM chain and key, with its SHA-256.
fn pinnable_certificate() -> (String, String, [u8; 32]) {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(1);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let hash = sha2::Sha256::digest(cert.der()).into();
    (cert.pem(), key.serialize_pem(), hash)
}

/// A directory of this test's own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("quicmatch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a fresh certificate into `dir`'s cert.pem and key.pem as a
/// renewal tool does (each file replaced whole, by rename); returns its hash.
fn write_certificate(dir: &Path) -> [u8; 32] {
    let (cert, key, hash) = pinnable_certificate();
    for (name, pem) in [("key.pem", key), ("cert.pem", cert)] {
        let tmp = dir.join(format!("{name}.new"));
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    hash
}

/// Connects to `url` pinning `hash`, retrying (bounded) until the server
/// serves that certificate.
async fn connect_once_served(url: &str, hash: [u8; 32]) -> Client {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match try_connect(url, hash).await {
            Ok(client) => return client,
            Err(error) => assert!(
                Instant::now() < deadline,
                "the new certificate was never served: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_are_reloaded_when_they_change() {
    let dir = TempDir::new("cert-watch");
    let old = write_certificate(&dir.0);
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    let server = start_server(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--cert-watch-secs",
        "1",
    ])
    .await;
    let mut ann = try_connect(&url(&server), old)
        .await
        .expect("old certificate");
    join(&mut ann, "Ann", Gender::Female).await;

    // The files are renewed: new sessions get the new certificate, the open
    // one goes on and is matched with a newcomer.
    let new = write_certificate(&dir.0);
    let mut bob = connect_once_served(&url(&server), new).await;
    assert!(
        try_connect(&url(&server), old).await.is_err(),
        "the old certificate is no longer served"
    );
    let id = match_id(&join(&mut bob, "Bob", Gender::Male).await);
    assert_eq!(match_id(&next_msg(&mut ann).await), id);

    // A half-written renewal is not loaded: the current certificate stays.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut cal = try_connect(&url(&server), new)
        .await
        .expect("still the new certificate");
    ping(&mut cal, 1).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_files() {
    let dir = TempDir::new("cert-sighup");
    let old = write_certificate(&dir.0);
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    // No watching: only the signal reloads.
    let node = spawn_server(
        &["--cert", cert, "--key", key, "--cert-watch-secs", "0"],
        &[],
    )
    .await;
    assert_eq!(
        node.hash, None,
        "a certificate from files has no hash to pin"
    );
    let mut ann = try_connect(&node.url, old).await.expect("old certificate");
    let new = write_certificate(&dir.0);
    assert!(
        try_connect(&node.url, new).await.is_err(),
        "not reloaded before the signal"
    );
    node.signal(libc::SIGHUP);
    let mut bob = connect_once_served(&node.url, new).await;
    ping(&mut ann, 1).await;
    ping(&mut bob, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_draining_while_shutting_down() {
    let server = start_server(&["--drain-secs", "2"]).await;
    let http = server.http_addr();
    assert_eq!(http_get(http, "localhost", "/health").await.status, 200);
    let mut ann = connect(&server).await;
    join(&mut ann, "Ann", Gender::Female).await;

    let (session_url, hash) = (url(&server), server.certificate_hash().unwrap());
    let shutdown = tokio::spawn(server.shutdown());
    let deadline = Instant::now() + STEP;
    let health = loop {
        let health = http_get(http, "localhost", "/health").await;
        if health.status != 200 {
            break health;
        }
        assert!(Instant::now() < deadline, "/health never said draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(health.status, 503);
    let body = health.json();
    assert_eq!(body["status"], "draining");
    for key in [
        "activeUsers",
        "activeMatches",
        "maleQueue",
        "femaleQueue",
        "timestamp",
    ] {
        assert!(body.get(key).is_some(), "{key} kept: {body}");
    }
    // While draining, open sessions are still served; a newcomer is told
    // the server is shutting down (or not let in at all).
    ping(&mut ann, 1).await;
    if let Ok(mut late) = try_connect(&session_url, hash).await {
        let (_, closing, _) = until_closed(&mut late).await;
        assert_eq!(closing.map(|(code, _)| code), Some(3));
    }
    // Then the sessions are closed with code 3.
    expect_closed_with(&mut ann, 3, |_| true).await;
    tokio::time::timeout(STEP * 2, shutdown)
        .await
        .expect("shutdown in time")
        .expect("shutdown task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_follow_a_session_and_its_matches_without_personal_data() {
    let node = spawn_server(
        &["--self-signed", "--log-format", "json"],
        &[("RUST_LOG", "quicmatch=debug")],
    )
    .await;
    let hash = node.hash.expect("self-signed");
    let mut ann = try_connect(&node.url, hash).await.expect("connect");
    let mut bob = try_connect(&node.url, hash).await.expect("connect");
    join(&mut ann, "Annabelle", Gender::Female).await;
    let id = match_id(&join(&mut bob, "Bobbington", Gender::Male).await);
    assert_eq!(match_id(&next_msg(&mut ann).await), id);
    send(&mut ann, ClientMsg::Stop).await;
    assert_eq!(
        next_msg(&mut bob).await,
        ServerMsg::PartnerDisconnected { match_id: id }
    );

    // Every line is a JSON object; the match is logged twice, once in each
    // person's session span, with the match id.
    let deadline = Instant::now() + STEP;
    let sessions_in_match = loop {
        let lines: Vec<Value> = node
            .log_lines()
            .iter()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
            .collect();
        let sessions: Vec<u64> = lines
            .iter()
            .filter(|l| l["fields"]["message"] == "matched" && l["fields"]["match_id"] == id)
            .filter_map(|l| {
                l["span"]["name"]
                    .eq("session")
                    .then(|| l["span"]["id"].as_u64())?
            })
            .collect();
        if sessions.len() == 2 || Instant::now() >= deadline {
            // Nothing personal at info level: no names, no client address.
            for line in lines.iter().filter(|l| l["level"] == "INFO") {
                let text = line.to_string();
                assert!(
                    !text.contains("Annabelle") && !text.contains("Bobbington"),
                    "a name at info level: {text}"
                );
            }
            break sessions;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(sessions_in_match.len(), 2, "both sessions logged the match");
    // The end of the match (after Ann's Stop) names the match, inside a
    // session span that carries only the session's own fields.
    let deadline = Instant::now() + STEP;
    loop {
        let ended: Vec<Value> = node
            .log_lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|l| l["fields"]["message"] == "match ended" && l["fields"]["match_id"] == id)
            .collect();
        if let Some(line) = ended.first() {
            assert_eq!(line["span"]["name"], "session", "{line}");
            assert!(
                sessions_in_match.contains(&line["span"]["id"].as_u64().unwrap_or(0)),
                "{line}"
            );
            assert!(line["span"].get("match_id").is_none(), "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "no line says the match ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(sessions_in_match[0], sessions_in_match[1]);
}

/// Ann is matched twice (Bob, then Carl); the text log line that ends her
/// second match shows her session span with each field once: a span whose
/// fields grew with every match would cost memory and log width per "next".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_span_does_not_grow_with_its_matches() {
    let node = spawn_server(
        &["--self-signed"],
        &[("RUST_LOG", "quicmatch=debug"), ("NO_COLOR", "1")],
    )
    .await;
    let hash = node.hash.expect("self-signed");
    let mut ann = try_connect(&node.url, hash).await.expect("connect");
    let mut bob = try_connect(&node.url, hash).await.expect("connect");
    let mut carl = try_connect(&node.url, hash).await.expect("connect");
    join(&mut ann, "Ann", Gender::Female).await;
    let first = match_id(&join(&mut bob, "Bob", Gender::Male).await);
    assert_eq!(match_id(&next_msg(&mut ann).await), first);
    // Ann moves on; Bob waits again (never re-matched with Ann), then Carl
    // joins and is matched with Ann.
    send(&mut ann, ClientMsg::Stop).await;
    assert_eq!(
        next_msg(&mut bob).await,
        ServerMsg::PartnerDisconnected { match_id: first }
    );
    let second = match_id(&join(&mut carl, "Carl", Gender::Male).await);
    assert_ne!(second, first);
    let mut seen = 0;
    while seen < 5 {
        if let ServerMsg::Matched { match_id, .. } = next_msg(&mut ann).await {
            assert_eq!(match_id, second);
            break;
        }
        seen += 1;
    }
    assert!(seen < 5, "Ann was not matched with Carl");
    send(&mut ann, ClientMsg::Stop).await;

    let ended = format!("match ended match_id={second}");
    let deadline = Instant::now() + STEP;
    let line = loop {
        // Ann's span is the one that logged both matches.
        let lines = node.log_lines();
        let spans_of = |text: &str| -> Vec<String> {
            lines
                .iter()
                .filter(|l| l.contains(text))
                .filter_map(|l| span_fields(l).map(str::to_owned))
                .collect()
        };
        let in_second = spans_of(&format!("matched match_id={second}"));
        let ann_span = spans_of(&format!("matched match_id={first}"))
            .into_iter()
            .find(|span| in_second.contains(span));
        if let Some(ann_span) = ann_span
            && let Some(line) = lines
                .iter()
                .find(|l| l.contains(&ended) && span_fields(l) == Some(ann_span.as_str()))
        {
            break line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "Ann's second match did not end in the log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let fields = span_fields(&line).expect("a session span");
    let mut keys: Vec<&str> = fields
        .split(' ')
        .filter_map(|field| field.split_once('=').map(|(key, _)| key))
        .collect();
    let count = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), count, "a field repeated in the span: {line}");
    assert!(!fields.contains("match_id"), "{line}");
}

/// What a text log line's `session{...}` span holds, if it has one.
fn span_fields(line: &str) -> Option<&str> {
    let start = line.find("session{")? + "session{".len();
    let end = start + line.get(start..)?.find('}')?;
    line.get(start..end)
}

/// The value of the sample `series` (name and labels, as written) on a
/// Prometheus text page, if present.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_sessions_do() {
    // A process of its own: the metrics recorder is process-wide.
    let node = spawn_server(&["--self-signed"], &[]).await;
    let hash = node.hash.expect("self-signed");
    let mut ann = try_connect(&node.url, hash).await.expect("connect");
    let mut bob = try_connect(&node.url, hash).await.expect("connect");
    // A relay before any match is answered NotMatched.
    send(
        &mut ann,
        ClientMsg::Offer {
            match_id: 1,
            sdp: "early".into(),
        },
    )
    .await;
    expect_error(&mut ann, quicmatch::protocol::ErrorCode::NotMatched).await;
    join(&mut ann, "Ann", Gender::Female).await;
    let id = match_id(&join(&mut bob, "Bob", Gender::Male).await);
    assert_eq!(match_id(&next_msg(&mut ann).await), id);
    for sdp in ["one", "two"] {
        send(
            &mut ann,
            ClientMsg::Offer {
                match_id: id,
                sdp: sdp.into(),
            },
        )
        .await;
        assert!(matches!(next_msg(&mut bob).await, ServerMsg::Offer { .. }));
    }
    ann.chat(id, "hello").expect("chat");
    assert_eq!(next_chat(&mut bob).await.2, "hello");
    ping(&mut bob, 1).await;

    let response = http_get(node.http, "localhost", "/metrics").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        response.header("content-type")
    );
    let page = String::from_utf8(response.body).expect("UTF-8");
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&page, series), Some(value), "{series} in:\n{page}");
    };
    expect("quicmatch_sessions", 2.0);
    expect("quicmatch_matched_sessions", 2.0);
    expect("quicmatch_waiting{gender=\"female\"}", 0.0);
    expect("quicmatch_handshakes_total{outcome=\"accepted\"}", 2.0);
    expect("quicmatch_requests_total{kind=\"join\"}", 2.0);
    expect("quicmatch_matches_total", 1.0);
    expect("quicmatch_relayed_frames_total{kind=\"offer\"}", 2.0);
    expect("quicmatch_chat_datagrams_total{kind=\"chat\"}", 1.0);
    expect("quicmatch_errors_total{code=\"not_matched\"}", 1.0);
    // Codes not seen yet are there, at zero.
    expect("quicmatch_errors_total{code=\"too_large\"}", 0.0);
    expect("quicmatch_handshakes_total{outcome=\"at_capacity\"}", 0.0);
    expect("quicmatch_relay_seconds_count", 2.0);
    expect("quicmatch_match_wait_seconds_count", 2.0);
    expect("quicmatch_session_setup_seconds_count", 2.0);
    // Buckets fine enough for a relay through an idle server.
    assert!(
        page.contains("quicmatch_relay_seconds_bucket{le=\"0.00001\"}"),
        "10 µs bucket in:\n{page}"
    );
    assert!(sample(&page, "process_resident_memory_bytes").is_some_and(|rss| rss > 1e6));
    assert!(sample(&page, "process_open_fds").is_some_and(|fds| fds > 0.0));
    assert!(page.contains("# HELP quicmatch_relay_seconds"));
    // No label ever names a person or an address.
    assert!(!page.contains("Ann") && !page.contains("127.0.0.1"));

    // Closes are counted by code once the sessions are gone.
    ann.close().await;
    bob.close().await;
    let deadline = Instant::now() + STEP;
    loop {
        let page = String::from_utf8(http_get(node.http, "localhost", "/metrics").await.body)
            .expect("UTF-8");
        if sample(&page, "quicmatch_closes_total{code=\"normal\"}") == Some(2.0) {
            assert_eq!(sample(&page, "quicmatch_sessions"), Some(0.0));
            break;
        }
        assert!(Instant::now() < deadline, "closes never counted:\n{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

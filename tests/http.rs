//! PROTOCOL.md section 6, the HTTP sidecar: the exact JSON of `/health`,
//! `/api/stats` and `/api/webtransport`, over IPv4 and IPv6, with figures
//! that match the registry, and a WebTransport session opened exactly as a
//! page would from `/api/webtransport`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use base64::Engine;
use clap::Parser;
use common::*;
use quicmatch::client::{Client, Verification};
use quicmatch::config::Config;
use quicmatch::protocol::{ClientMsg, Gender};
use quicmatch::server::Server;
use serde_json::{Value, json};
use time::macros::format_description;

/// The Host header a browser sends for `addr`.
fn host_header(addr: SocketAddr) -> String {
    addr.to_string()
}

/// GETs `path` from `addr` and returns its JSON after checking the status
/// and the content type.
async fn get_json(addr: SocketAddr, host: &str, path: &str) -> Value {
    let response = http_get(addr, host, path).await;
    assert_eq!(response.status, 200, "{path}: {response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{path}: {content_type}"
    );
    response.json()
}

/// The keys of a JSON object.
fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn now_stamp() -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::now_utc().format(format).unwrap()
}

/// In a pool, takes out the node-local figures that `/health` and
/// `/api/stats` add under `"node"`, checking they are there.
fn without_node(mut value: Value, pooled: bool) -> Value {
    let node = value.as_object_mut().unwrap().remove("node");
    assert_eq!(node.is_some_and(|n| n.is_object()), pooled, "{value}");
    value
}

/// Checks `/health` and `/api/stats` on every sidecar address against the
/// expected (users, matches, male queue, female queue); in a pool these are
/// the whole pool's, with the node's own figures beside them.
async fn check_counts(server: &Server, expected: (usize, usize, usize, usize)) {
    let (users, matches, male, female) = expected;
    let pooled = server.hub().cluster().is_some();
    for &addr in server.http_addrs() {
        let host = host_header(addr);
        let before = now_stamp();
        let health = without_node(get_json(addr, &host, "/health").await, pooled);
        let after = now_stamp();
        assert_eq!(
            keys(&health),
            BTreeSet::from([
                "status",
                "activeUsers",
                "activeMatches",
                "maleQueue",
                "femaleQueue",
                "timestamp"
            ])
        );
        let timestamp = health["timestamp"]
            .as_str()
            .expect("timestamp is a string")
            .to_owned();
        let mut rest = health.clone();
        rest.as_object_mut().unwrap().remove("timestamp");
        assert_eq!(
            rest,
            json!({
                "status": "ok",
                "activeUsers": users,
                "activeMatches": matches,
                "maleQueue": male,
                "femaleQueue": female,
            })
        );
        // RFC 3339 UTC with milliseconds; in this fixed-width form text order
        // is time order, so "now" lies between two readings of the clock.
        assert_eq!(
            timestamp.len(),
            "2024-01-01T00:00:00.000Z".len(),
            "{timestamp}"
        );
        for (i, c) in timestamp.chars().enumerate() {
            let ok = match i {
                4 | 7 => c == '-',
                10 => c == 'T',
                13 | 16 => c == ':',
                19 => c == '.',
                23 => c == 'Z',
                _ => c.is_ascii_digit(),
            };
            assert!(ok, "timestamp {timestamp}");
        }
        assert!(
            before <= timestamp && timestamp <= after,
            "{before} <= {timestamp} <= {after}"
        );

        let stats = without_node(get_json(addr, &host, "/api/stats").await, pooled);
        assert_eq!(
            stats,
            json!({
                "totalUsers": users,
                "activeMatches": matches,
                "queues": { "male": male, "female": female },
            })
        );
    }
}

protocol_test! {
    async fn health_and_stats_report_the_registry() {
        let server = start_server(&[]).await;
        check_counts(&server, (0, 0, 0, 0)).await;

        let (ann, bob, _) = matched_pair(&server).await;
        let idle = connect(&server).await;
        let mut men = Vec::new();
        for name in ["Cy", "Dan"] {
            let mut man = connect(&server).await;
            join(&mut man, name, Gender::Male).await;
            men.push(man);
        }
        assert_counts(&server, (5, 1, 2, 0)).await;
        check_counts(&server, (5, 1, 2, 0)).await;

        // The men leave (one by Leave, one by going away); a woman waits.
        send(&mut men[0], ClientMsg::Leave).await;
        ping(&mut men[0], 1).await;
        drop(men.pop());
        let mut eve = connect(&server).await;
        join(&mut eve, "Eve", Gender::Female).await;
        wait_counts(&server, (5, 1, 0, 1)).await;
        check_counts(&server, (5, 1, 0, 1)).await;

        drop((ann, bob, idle, men, eve));
        wait_counts(&server, (0, 0, 0, 0)).await;
        check_counts(&server, (0, 0, 0, 0)).await;
        server.shutdown().await;
    }
}

/// The expected `serverCertificateHashes` of `server`.
fn hashes_json(server: &Server) -> Value {
    let hash = server.certificate_hash().expect("self-signed");
    json!([{ "algorithm": "sha-256", "value": base64::engine::general_purpose::STANDARD.encode(hash) }])
}

protocol_test! {
    async fn webtransport_endpoint_gives_the_url_and_the_pinnable_hash() {
        let server = start_server(&[]).await;
        let quic_port = server.quic_addr().port();
        for &addr in server.http_addrs() {
            // The Host header decides the host; the port is always the UDP one.
            let cases = [
                (host_header(addr), addr.ip().to_string()),
                ("localhost:8080".to_owned(), "localhost".to_owned()),
                ("chat.example.org".to_owned(), "chat.example.org".to_owned()),
                ("[::1]".to_owned(), "[::1]".to_owned()),
            ];
            for (host, expected_host) in cases {
                let expected_host = if expected_host.contains(':') && !expected_host.starts_with('[') {
                    format!("[{expected_host}]")
                } else {
                    expected_host
                };
                let body = get_json(addr, &host, "/api/webtransport").await;
                assert_eq!(
                    body,
                    json!({
                        "url": format!("https://{expected_host}:{quic_port}/signal"),
                        "serverCertificateHashes": hashes_json(&server),
                        // The WebSocket fallback on this sidecar, as reached.
                        "websocket": format!("ws://{host}/signal"),
                    }),
                    "Host: {host}"
                );
            }
        }
        server.shutdown().await;
    }
}

protocol_test! {
    /// Behind NAT or a port mapping the operator names the public URL, and
    /// `/api/webtransport` gives it whatever the `Host` header says.
    async fn webtransport_endpoint_gives_the_public_url_when_set() {
        let public = "https://chat.example.org:443/signal";
        let server = start_server(&["--public-url", public]).await;
        let addr = server.http_addr();
        let body = get_json(addr, &host_header(addr), "/api/webtransport").await;
        assert_eq!(
            body,
            json!({
                "url": public,
                "serverCertificateHashes": hashes_json(&server),
                "websocket": format!("ws://{}/signal", host_header(addr)),
            })
        );
        server.shutdown().await;
    }
}

/// Opens a session as a page does: URL and hash from `/api/webtransport`.
async fn connect_like_a_page(http: SocketAddr) -> Client {
    let body = get_json(http, &host_header(http), "/api/webtransport").await;
    let url = body["url"].as_str().expect("url");
    let value = body["serverCertificateHashes"][0]["value"]
        .as_str()
        .expect("hash value");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .expect("base64");
    let hash: [u8; 32] = bytes.try_into().expect("a SHA-256 hash is 32 bytes");
    try_connect(url, hash)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

protocol_test! {
    async fn a_page_connects_with_what_the_sidecar_says_over_ipv4_and_ipv6() {
        let server = start_server(&[]).await;
        let [v4, v6] = server.http_addrs() else {
            panic!("two sidecar addresses")
        };
        assert!(v4.is_ipv4() && v6.is_ipv6());
        let mut ann = connect_like_a_page(*v4).await;
        let mut bob = connect_like_a_page(*v6).await;
        join(&mut ann, "Ann", Gender::Female).await;
        let id = match_id(&join(&mut bob, "Bob", Gender::Male).await);
        assert_eq!(match_id(&next_msg(&mut ann).await), id);
        assert_counts(&server, (2, 1, 0, 0)).await;
        check_counts(&server, (2, 1, 0, 0)).await;

        // After a renewal the sidecar gives the new hash, and it works.
        server.renew_certificate().await.unwrap();
        for &addr in server.http_addrs() {
            let body = get_json(addr, &host_header(addr), "/api/webtransport").await;
            assert_eq!(body["serverCertificateHashes"], hashes_json(&server));
            let mut page = connect_like_a_page(addr).await;
            ping(&mut page, 1).await;
        }
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_sidecar_listens_on_the_same_port_number() {
    // A port free for both UDP and TCP, released just before the server
    // takes it; should someone else take it in between, try another.
    for _ in 0..5 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        let Ok(tcp) = std::net::TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        drop((udp, tcp));
        let argv = [
            "quicmatch",
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ];
        let Ok(server) = Server::start(Config::parse_from(argv)).await else {
            continue;
        };
        assert_eq!(server.quic_addr().port(), port);
        assert_eq!(server.http_addr().port(), port);
        let body = get_json(
            server.http_addr(),
            &format!("localhost:{port}"),
            "/api/webtransport",
        )
        .await;
        assert_eq!(body["url"], format!("https://localhost:{port}/signal"));
        let mut client = connect_like_a_page(server.http_addr()).await;
        ping(&mut client, 1).await;
        server.shutdown().await;
        return;
    }
    panic!("no free port found");
}

protocol_test! {
    async fn a_certificate_from_files_has_no_hash_to_pin() {
        // One directory per topology: both variants of this test run at once.
        let dir = std::env::temp_dir().join(format!(
            "quicmatch-http-test-{}-{:?}",
            std::process::id(),
            Topology::current()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let server = start_server(&[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
        .await;
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(server.certificate_hash(), None);
        assert!(server.renew_certificate().await.is_err());
        let addr = server.http_addr();
        let body = get_json(addr, &host_header(addr), "/api/webtransport").await;
        assert_eq!(
            body,
            json!({
                "url": format!("https://127.0.0.1:{}/signal", server.quic_addr().port()),
                "serverCertificateHashes": [],
                "websocket": format!("ws://{}/signal", host_header(addr)),
            })
        );
        // The session itself works (this test's certificate is trusted by no one,
        // so the client skips verification).
        let mut client = tokio::time::timeout(
            STEP,
            Client::connect(&url(&server), Verification::InsecureSkipVerification),
        )
        .await
        .expect("connect in time")
        .expect("connect");
        ping(&mut client, 1).await;
        server.shutdown().await;
    }
}

/// A `host` for [`http_get`] that sends `extra` header lines after the
/// `Host` line (`http_get` writes its `host` verbatim into the request).
fn host_with(addr: SocketAddr, extra: &[(&str, &str)]) -> String {
    extra.iter().fold(host_header(addr), |host, (name, value)| {
        format!("{host}\r\n{name}: {value}")
    })
}

/// A page on another origin imports the browser module (PROTOCOL.md does
/// not cover it; docs/browser.md does): at `/quicmatch.v1.js`, cacheable,
/// and at the unversioned `/quicmatch.js`, revalidated every time; both the
/// same bytes, both readable cross-origin, as is the `/api/webtransport` the
/// module then fetches. `/quicmatch.v1.d.ts` gives its types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_is_served_versioned_cacheable_and_cross_origin() {
    let server = start_server(&[]).await;
    let addr = server.http_addr();
    let page = [("Origin", "https://page.example")];
    let js = include_bytes!("../web/quicmatch.js").as_slice();
    let types = include_bytes!("../web/quicmatch.d.ts").as_slice();
    for (path, body, content_type, cache) in [
        (
            "/quicmatch.v1.js",
            js,
            "text/javascript; charset=utf-8",
            "public, max-age=3600",
        ),
        (
            "/quicmatch.v1.d.ts",
            types,
            "application/typescript; charset=utf-8",
            "public, max-age=3600",
        ),
        (
            "/quicmatch.js",
            js,
            "text/javascript; charset=utf-8",
            "no-cache",
        ),
    ] {
        let response = http_get(addr, &host_with(addr, &page), path).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.body, body, "{path}: the file's bytes");
        assert_eq!(
            response.header("content-type"),
            Some(content_type),
            "{path}"
        );
        assert_eq!(response.header("cache-control"), Some(cache), "{path}");
        assert_eq!(
            response.header("access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
        assert_eq!(
            response.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        let etag = response.header("etag").expect("an ETag").to_owned();
        assert!(etag.len() == 34 && etag.starts_with('"'), "{path}: {etag}");

        // Revalidation: the ETag (strong, weak, in a list, or `*`) gives an
        // empty 304 that keeps the cross-origin and cache headers; any other
        // tag gives the file.
        for tag in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"0123\", {etag}"),
            "*".to_owned(),
        ] {
            let extra = [page[0], ("If-None-Match", tag.as_str())];
            let response = http_get(addr, &host_with(addr, &extra), path).await;
            assert_eq!(response.status, 304, "{path}, If-None-Match: {tag}");
            assert!(response.body.is_empty(), "{path}");
            assert_eq!(response.header("etag"), Some(etag.as_str()), "{path}");
            assert_eq!(response.header("cache-control"), Some(cache), "{path}");
            assert_eq!(
                response.header("access-control-allow-origin"),
                Some("*"),
                "{path}: 304"
            );
        }
        let extra = [("If-None-Match", "\"0123\"")];
        let response = http_get(addr, &host_with(addr, &extra), path).await;
        assert_eq!(response.status, 200, "{path}, a stale ETag");
        assert_eq!(response.body, body, "{path}");
    }

    // Runtimes that import by URL find the types from the module.
    let response = http_get(addr, &host_header(addr), "/quicmatch.v1.js").await;
    assert_eq!(
        response.header("x-typescript-types"),
        Some("/quicmatch.v1.d.ts")
    );
    // The web app's other files stay same-origin.
    let response = http_get(addr, &host_with(addr, &page), "/app.js").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("access-control-allow-origin"), None);
    // What the module fetches first, from the page's other origin.
    let response = http_get(addr, &host_with(addr, &page), "/api/webtransport").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    // Other versions are not served.
    for path in [
        "/quicmatch.v2.js",
        "/quicmatch.v1.js.map",
        "/quicmatch.d.ts",
    ] {
        let response = http_get(addr, &host_header(addr), path).await;
        assert_eq!(response.status, 404, "{path}");
    }
    server.shutdown().await;
}

//! The HTTP sidecar's front door: what one client may hold of it. A head
//! trickled in (slowloris) or never finished, an idle kept-alive
//! connection, a body sent slowly or too large, too many requests or
//! connections at once, a connection kept busy for ever: each is bounded,
//! and `/health` still answers once it is over.
//!
//! Most tests serve the real sidecar router (with a real, empty hub)
//! through [`quicmatch::http::serve_router`] with short limits, and add a
//! route of their own where they need one that is slow or reads a body
//! (the sidecar's own routes answer at once and read no body). One test
//! holds the real server, with its default limits, to the slowloris bound.
//! Every wait is bounded in time and every loop in count.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use common::{STEP, http_get, start_server};
use quicmatch::http::{self, CLOSE_GRACE, SidecarLimits, SidecarState};
use quicmatch::hub::Hub;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Slack on top of a bound before a test calls it missed: the machine is
/// small and shared.
const SLACK: Duration = Duration::from_secs(2);

/// Limits short enough for tests: each test lengthens the ones it does not
/// exercise so that they cannot interfere.
fn short_limits() -> SidecarLimits {
    SidecarLimits {
        header_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        max_body_bytes: 1024,
        max_head_bytes: 32 * 1024,
        max_requests: 4,
        max_connections: 64,
        max_connection_age: Duration::from_secs(60),
    }
}

/// A sidecar on 127.0.0.1: the real router over an empty hub, plus `extra`
/// routes, served within `limits` until dropped.
struct Sidecar {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

async fn sidecar(limits: SidecarLimits, extra: Router) -> Sidecar {
    let hub = Arc::new(Hub::new(18, 100, Default::default(), None, 10));
    let state = SidecarState::new(
        hub,
        Arc::default(),
        5000,
        quicmatch::metrics::install(),
        quicmatch::history::Recorder::default(),
        None,
    )
    .with_limits(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local address");
    let stop = CancellationToken::new();
    let router = http::router(state).merge(extra);
    let task = tokio::spawn(http::serve_router(listener, router, limits, stop.clone()));
    Sidecar { addr, stop, task }
}

async fn open(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Writes `bytes`; `false` if the server has closed the connection.
async fn write(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    stream.write_all(bytes).await.is_ok()
}

/// A kept-alive `GET path`.
fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

/// Reads one response (head and `Content-Length` body) off a kept-alive
/// connection; its status, or `None` if the connection ended first.
async fn read_response(stream: &mut TcpStream) -> Option<u16> {
    let read = async {
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let status = head.get(9..12)?.parse().ok()?;
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(Some(0), |v| v.trim().parse().ok())?;
                if raw.len() >= end + 4 + length {
                    return Some(status);
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(STEP, read)
        .await
        .expect("a response, or the end, in time")
}

/// How long until the server closes `stream` (end of stream or reset),
/// reading and discarding whatever it sends first (hyper's 408, say);
/// `None` if still open after `bound`.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let until_closed = async {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(bound, until_closed)
        .await
        .ok()
        .map(|()| start.elapsed())
}

/// `GET /health` on a fresh connection answers 200, retried (at most 20
/// times over 2 s) while the server is still freeing what a test held.
async fn health_answers(addr: SocketAddr) {
    let mut last = None;
    for _ in 0..20 {
        let mut stream = open(addr).await;
        if write(&mut stream, get_request("/health").as_bytes()).await {
            last = read_response(&mut stream).await;
            if last == Some(200) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/health never answered 200 (last: {last:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_server_cuts_off_a_trickled_request_head() {
    let server = start_server(&[]).await;
    let addr = server.http_addr();
    let bound = SidecarLimits::default().header_timeout;
    let mut stream = open(addr).await;
    let start = Instant::now();
    assert!(write(&mut stream, b"GET /health HTTP/1.1\r\nHost: localhost\r\n").await);
    // A header line every half second: each arrives well within any idle
    // timeout, but the head is never finished.
    let (mut reader, mut writer) = stream.split();
    let trickle = async {
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if writer
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let closed = async {
        let mut chunk = [0u8; 1024];
        while let Ok(n) = reader.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
        start.elapsed()
    };
    let took = tokio::select! {
        took = tokio::time::timeout(bound + SLACK + SLACK, closed) => took,
        () = trickle => panic!("the head was trickled for 20 s and never cut off"),
    }
    .expect("the server closes a trickled head within its header timeout");
    assert!(
        took >= bound - Duration::from_secs(1),
        "closed after {took:?}: before the header timeout ({bound:?}), so for another reason"
    );
    // The server itself is fine.
    assert_eq!(http_get(addr, "localhost", "/health").await.status, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed() {
    let limits = short_limits();
    let sidecar = sidecar(limits, Router::new()).await;
    let mut stream = open(sidecar.addr).await;
    assert!(write(&mut stream, get_request("/health").as_bytes()).await);
    assert_eq!(read_response(&mut stream).await, Some(200));
    // Kept alive, then silent: closed once the next head is overdue.
    let took = closed_within(&mut stream, limits.header_timeout + SLACK)
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(took >= limits.header_timeout / 2, "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_is_answered_408() {
    let limits = short_limits();
    // A route that reads its body, as none of the sidecar's own does.
    let upload = Router::new().route(
        "/upload",
        post(|body: axum::body::Bytes| async move { body.len().to_string() }),
    );
    let sidecar = sidecar(limits, upload).await;
    let mut stream = open(sidecar.addr).await;
    let start = Instant::now();
    let head = "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n";
    assert!(write(&mut stream, head.as_bytes()).await);
    assert!(write(&mut stream, b"ten bytes.").await);
    // The other 90 never come.
    assert_eq!(read_response(&mut stream).await, Some(408));
    let took = start.elapsed();
    assert!(
        took <= limits.request_timeout + SLACK,
        "answered after {took:?}"
    );
    assert!(closed_within(&mut stream, SLACK).await.is_some());

    // The sidecar's own routes read no body: one that is announced and not
    // sent does not hold them up.
    let mut stream = open(sidecar.addr).await;
    let head = "GET /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n";
    assert!(write(&mut stream, head.as_bytes()).await);
    let start = Instant::now();
    assert_eq!(read_response(&mut stream).await, Some(200));
    assert!(start.elapsed() < limits.request_timeout);
    health_answers(sidecar.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_server_refuses_large_bodies_and_heads() {
    let server = start_server(&[]).await;
    let addr = server.http_addr();

    // A body far over the bound is refused on its Content-Length alone.
    let mut stream = open(addr).await;
    let head = "GET /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n";
    assert!(write(&mut stream, head.as_bytes()).await);
    assert_eq!(read_response(&mut stream).await, Some(413));

    // A 40 KiB head is refused; hyper alone would take ten times that.
    let mut stream = open(addr).await;
    let filler = "x".repeat(1000);
    let mut head = String::from("GET /health HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..40 {
        head.push_str(&format!("X-Filler-{i}: {filler}\r\n"));
    }
    head.push_str("\r\n");
    // The server may close before it has read all of it.
    let _ = stream.write_all(head.as_bytes()).await;
    assert_eq!(read_response(&mut stream).await, Some(431));

    assert_eq!(http_get(addr, "localhost", "/health").await.status, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_limit_are_shed_with_503() {
    let limits = SidecarLimits {
        request_timeout: Duration::from_secs(30),
        header_timeout: Duration::from_secs(30),
        ..short_limits()
    };
    // A route that holds its request until the test lets it go.
    let entered = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = {
        let (entered, gate) = (entered.clone(), gate.clone());
        Router::new().route(
            "/slow",
            get(move || async move {
                entered.fetch_add(1, Ordering::SeqCst);
                let _ = gate.acquire().await.map(|permit| permit.forget());
                "done"
            }),
        )
    };
    let sidecar = sidecar(limits, slow).await;
    let extra = 3;
    let mut requests = Vec::new();
    for _ in 0..limits.max_requests + extra {
        let mut stream = open(sidecar.addr).await;
        assert!(write(&mut stream, get_request("/slow").as_bytes()).await);
        requests.push(tokio::spawn(async move {
            let status = read_response(&mut stream).await;
            (status, stream)
        }));
    }
    // The first few are in the handler; the extra are answered 503 at
    // once, not queued.
    let deadline = Instant::now() + STEP;
    while entered.load(Ordering::SeqCst) < limits.max_requests {
        assert!(Instant::now() < deadline, "the slow requests never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + STEP;
    while requests.iter().filter(|r| r.is_finished()).count() < extra {
        let entered = entered.load(Ordering::SeqCst);
        assert!(
            entered <= limits.max_requests,
            "{entered} requests handled at once"
        );
        assert!(
            Instant::now() < deadline,
            "requests over the limit were not turned away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut held = Vec::new();
    let mut shed = 0;
    for request in requests {
        if request.is_finished() {
            let (status, _) = request.await.expect("request task");
            assert_eq!(status, Some(503));
            shed += 1;
        } else {
            held.push(request);
        }
    }
    assert_eq!(shed, extra);
    assert_eq!(entered.load(Ordering::SeqCst), limits.max_requests);
    // `/health` counts as a request too: while full, it says busy.
    let mut stream = open(sidecar.addr).await;
    assert!(write(&mut stream, get_request("/health").as_bytes()).await);
    assert_eq!(read_response(&mut stream).await, Some(503));

    // Once the slow ones are let go, they are answered and there is room.
    gate.add_permits(limits.max_requests);
    for request in held {
        let (status, _) = tokio::time::timeout(STEP, request)
            .await
            .expect("answered in time")
            .expect("request task");
        assert_eq!(status, Some(200));
    }
    health_answers(sidecar.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_on_arrival() {
    let limits = SidecarLimits {
        header_timeout: Duration::from_secs(30),
        max_connections: 4,
        ..short_limits()
    };
    let sidecar = sidecar(limits, Router::new()).await;
    // Every place taken by a connection the server has answered and keeps.
    let mut kept = Vec::new();
    for _ in 0..limits.max_connections {
        let mut stream = open(sidecar.addr).await;
        assert!(write(&mut stream, get_request("/health").as_bytes()).await);
        assert_eq!(read_response(&mut stream).await, Some(200));
        kept.push(stream);
    }
    // One more is closed at once, unanswered.
    let mut extra = open(sidecar.addr).await;
    let _ = extra.write_all(get_request("/health").as_bytes()).await;
    assert_eq!(read_response(&mut extra).await, None);
    // A place freed is a place for a newcomer.
    drop(kept.pop());
    health_answers(sidecar.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_kept_busy_is_closed_at_its_age_limit() {
    let limits = SidecarLimits {
        header_timeout: Duration::from_secs(30),
        max_connection_age: Duration::from_secs(1),
        ..short_limits()
    };
    let sidecar = sidecar(limits, Router::new()).await;
    let mut stream = open(sidecar.addr).await;
    let start = Instant::now();
    // A request every 100 ms, never idle: only its age can end it.
    let mut answered = 0;
    for _ in 0..50 {
        if !write(&mut stream, get_request("/health").as_bytes()).await {
            break;
        }
        match read_response(&mut stream).await {
            Some(status) => assert_eq!(status, 200),
            None => break,
        }
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = start.elapsed();
    assert!(answered > 0);
    assert!(
        took < limits.max_connection_age + CLOSE_GRACE + SLACK,
        "still open after {took:?} and {answered} requests"
    );
    assert!(took >= limits.max_connection_age, "closed after {took:?}");
    health_answers(sidecar.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_stops_promptly_with_connections_open() {
    let limits = SidecarLimits {
        header_timeout: Duration::from_secs(30),
        ..short_limits()
    };
    let mut sidecar = sidecar(limits, Router::new()).await;
    // One connection mid-head, one kept alive and idle.
    let mut partial = open(sidecar.addr).await;
    assert!(write(&mut partial, b"GET /health HTTP/1.1\r\n").await);
    let mut idle = open(sidecar.addr).await;
    assert!(write(&mut idle, get_request("/health").as_bytes()).await);
    assert_eq!(read_response(&mut idle).await, Some(200));

    sidecar.stop.cancel();
    tokio::time::timeout(CLOSE_GRACE + SLACK, &mut sidecar.task)
        .await
        .expect("serving stops within its grace")
        .expect("serving task");
    assert!(closed_within(&mut idle, SLACK).await.is_some());
    assert!(closed_within(&mut partial, SLACK).await.is_some());
    assert!(
        TcpStream::connect(sidecar.addr).await.is_err(),
        "no longer listening"
    );
}

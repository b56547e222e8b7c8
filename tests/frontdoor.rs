//! The front door (docs/security.md): what a connection attempt may cost
//! before it is a session. Handshake floods get stateless Retries past the
//! soft limit and refusals past the hard one, reflection-prone source ports
//! get no answer, one source gets only its share of sessions (429 past it),
//! and the memory budget caps sessions (Closing code 4). Each against the
//! real server, over loopback, with real QUIC Initials and the native client.

mod common;

#[path = "../src/bin/quicmatch-load/initials.rs"]
#[allow(dead_code)]
mod initials;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::process::{NodeProcess, spawn_server};
use common::*;
use quicmatch::client::{Client, Verification};
use quicmatch::protocol::{Gender, ServerMsg};
use tokio::net::UdpSocket;

/// Loopback is not trusted, so the limits apply to the test's own traffic,
/// and the per-source limits are out of the way unless a test sets them.
const UNTRUSTED: [&str; 8] = [
    "--trusted-net",
    "none",
    "--source-sessions",
    "1000",
    "--source-rate",
    "1000",
    "--source-burst",
    "1000",
];

/// The server's QUIC address.
fn quic_addr(node: &NodeProcess) -> SocketAddr {
    let authority = node
        .url
        .trim_start_matches("https://")
        .trim_end_matches("/signal");
    authority.parse().expect("socket address in the URL")
}

/// `quicmatch_handshakes_total{outcome=…}` on the server's /metrics.
async fn handshakes(node: &NodeProcess, outcome: &str) -> u64 {
    let page = http_get(node.http, "127.0.0.1", "/metrics").await;
    let text = String::from_utf8_lossy(&page.body).into_owned();
    let prefix = format!("quicmatch_handshakes_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// Sends `count` real Initials from `socket`, reading what comes back
/// meanwhile and for `wait` after the last: (datagrams, of which Retry
/// packets).
async fn flood(
    socket: UdpSocket,
    server: SocketAddr,
    count: usize,
    wait: Duration,
) -> (usize, usize) {
    let socket = std::sync::Arc::new(socket);
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn({
        let socket = socket.clone();
        async move {
            let (mut datagrams, mut retries) = (0, 0);
            let mut buf = [0u8; 2048];
            let mut sent = std::pin::pin!(sent_rx);
            let mut deadline = None;
            loop {
                let until = deadline.unwrap_or_else(|| tokio::time::Instant::now() + STEP);
                tokio::select! {
                    _ = &mut sent, if deadline.is_none() => {
                        deadline = Some(tokio::time::Instant::now() + wait);
                    }
                    received = tokio::time::timeout_at(until, socket.recv(&mut buf)) => match received {
                        Ok(Ok(len)) => {
                            datagrams += 1;
                            // A QUIC v1 long header whose type bits are 0b11: Retry.
                            if len > 0 && buf[0] & 0xf0 == 0xf0 {
                                retries += 1;
                            }
                        }
                        _ => break,
                    },
                }
            }
            (datagrams, retries)
        }
    });
    let mut initials = initials::Initials::new(server).expect("an Initial maker");
    for _ in 0..count {
        let initial = initials.next().expect("an Initial");
        socket.send_to(initial, server).await.expect("send");
    }
    let _ = sent_tx.send(());
    reader.await.expect("reader")
}

/// Waits (bounded) until the server has counted at least `at_least`
/// handshakes with `outcome`.
async fn wait_handshakes(node: &NodeProcess, outcome: &str, at_least: u64) {
    let deadline = Instant::now() + STEP;
    loop {
        let counted = handshakes(node, outcome).await;
        if counted >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{counted} handshakes {outcome}, not {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A native client joins `node` and is told it waits; how long that took.
async fn newcomer_waits(node: &NodeProcess) -> Duration {
    let started = Instant::now();
    let hash = node.hash.expect("self-signed");
    let mut client = tokio::time::timeout(
        STEP,
        Client::connect(&node.url, Verification::CertificateHashes(vec![hash])),
    )
    .await
    .expect("connect in time")
    .expect("the newcomer connects");
    let answer = join(&mut client, "newcomer", Gender::Female).await;
    assert!(matches!(answer, ServerMsg::Waiting { .. }), "{answer:?}");
    started.elapsed()
}

async fn loopback_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind")
}

#[tokio::test]
async fn a_handshake_flood_past_the_soft_limit_gets_stateless_retries_and_newcomers_still_get_in() {
    let mut args = vec![
        "--self-signed",
        "--handshake-soft-limit",
        "4",
        "--handshake-limit",
        "1000",
    ];
    args.extend(UNTRUSTED);
    let node = spawn_server(&args, &[]).await;
    let socket = loopback_socket().await;
    let (answered, retries) = flood(socket, quic_addr(&node), 200, Duration::from_secs(1)).await;
    // The first four hold handshakes (which never complete); every later
    // Initial is answered with one stateless Retry and nothing is kept.
    wait_handshakes(&node, "retried", 196).await;
    assert!(retries > 0, "no Retry packet came back");
    assert!(answered >= retries);
    // A real client is sent a Retry too, proves its address and gets in.
    let took = newcomer_waits(&node).await;
    assert!(took < STEP, "{took:?}");
    assert_eq!(handshakes(&node, "accepted").await, 1);
}

#[tokio::test]
async fn past_the_hard_limit_connections_are_refused_until_stalled_handshakes_time_out() {
    let mut args = vec![
        "--self-signed",
        "--handshake-soft-limit",
        "8",
        "--handshake-limit",
        "8",
        "--handshake-timeout-secs",
        "1",
    ];
    args.extend(UNTRUSTED);
    let node = spawn_server(&args, &[]).await;
    let socket = loopback_socket().await;
    flood(socket, quic_addr(&node), 100, Duration::from_millis(100)).await;
    // Eight hold handshakes; the rest are refused, while those are in
    // flight (one second at most).
    wait_handshakes(&node, "refused", 50).await;
    assert_eq!(handshakes(&node, "retried").await, 0);
    // The eight stalled handshakes are dropped after the timeout, and the
    // door opens again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while handshakes(&node, "failed").await < 8 {
        assert!(
            Instant::now() < deadline,
            "stalled handshakes never timed out"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    newcomer_waits(&node).await;
}

#[tokio::test]
async fn initials_from_a_reflection_prone_source_port_get_no_answer() {
    // The default list (DNS, NTP, …) needs privileged ports to test; the
    // same rule is tested here with an ordinary port put on the list.
    let ignored = loopback_socket().await;
    let port = ignored.local_addr().expect("addr").port().to_string();
    let mut args = vec!["--self-signed", "--ignored-source-port", &port];
    args.extend(UNTRUSTED);
    let node = spawn_server(&args, &[]).await;
    let server = quic_addr(&node);
    let (answered, _) = flood(ignored, server, 5, Duration::from_millis(500)).await;
    assert_eq!(answered, 0, "the server answered an ignored source port");
    wait_handshakes(&node, "ignored", 5).await;
    let other = loopback_socket().await;
    let (answered, _) = flood(other, server, 1, Duration::from_millis(500)).await;
    assert!(answered > 0, "an ordinary source port got no answer");
}

/// Whether a native client gets a session at `node`.
async fn gets_in(node: &NodeProcess) -> Option<Client> {
    let hash = node.hash.expect("self-signed");
    tokio::time::timeout(
        STEP,
        Client::connect(&node.url, Verification::CertificateHashes(vec![hash])),
    )
    .await
    .expect("an answer in time")
    .ok()
}

#[tokio::test]
async fn one_source_holds_only_its_share_of_sessions_and_gets_429_past_it() {
    let node = spawn_server(
        &[
            "--self-signed",
            "--trusted-net",
            "none",
            "--source-sessions",
            "2",
        ],
        &[],
    )
    .await;
    let first = gets_in(&node).await.expect("first");
    let _second = gets_in(&node).await.expect("second");
    assert!(
        gets_in(&node).await.is_none(),
        "a third session from one source"
    );
    wait_handshakes(&node, "source_sessions", 1).await;
    wait_handshakes(&node, "accepted", 2).await;
    // A place comes back when a session ends.
    drop(first);
    let deadline = Instant::now() + STEP;
    while gets_in(&node).await.is_none() {
        assert!(Instant::now() < deadline, "the place never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_source_opens_sessions_only_at_its_rate() {
    let node = spawn_server(
        &[
            "--self-signed",
            "--trusted-net",
            "none",
            "--source-burst",
            "3",
            "--source-rate",
            "0.2",
        ],
        &[],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(gets_in(&node).await.expect("within the burst"));
    }
    // Closing sessions does not give the rate back.
    held.clear();
    assert!(
        gets_in(&node).await.is_none(),
        "a fourth session within a second"
    );
    wait_handshakes(&node, "source_rate", 1).await;
}

#[tokio::test]
async fn loopback_is_trusted_by_default() {
    let node = spawn_server(
        &[
            "--self-signed",
            "--source-sessions",
            "1",
            "--source-burst",
            "1",
        ],
        &[],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            gets_in(&node)
                .await
                .expect("a trusted source is not limited"),
        );
    }
    wait_handshakes(&node, "accepted", 4).await;
}

#[tokio::test]
async fn a_memory_budget_caps_sessions_and_the_next_is_told_code_4() {
    // 32 MiB for the process and 16 × 232 KiB for handshakes leave room
    // for 3 sessions of 1,392 KiB at worst.
    let node = spawn_server(
        &[
            "--self-signed",
            "--memory-budget",
            "40MiB",
            "--handshake-limit",
            "16",
        ],
        &[],
    )
    .await;
    assert!(
        node.log_lines()
            .iter()
            .any(|line| line.contains("at most 3 sessions")),
        "{:#?}",
        node.log_lines()
    );
    let hash = node.hash.expect("self-signed");
    let mut held = Vec::new();
    for _ in 0..5 {
        let client = try_connect(&node.url, hash)
            .await
            .expect("within the budget");
        held.push(client);
    }
    let mut fourth = try_connect(&node.url, hash)
        .await
        .expect("the handshake completes");
    let (_, closing, _) = until_closed(&mut fourth).await;
    assert_eq!(closing.map(|(code, _)| code), Some(4));
    wait_handshakes(&node, "at_capacity", 1).await;
    assert_eq!(handshakes(&node, "accepted").await, 3);
}

//! Shared helpers of the integration tests: a real server on loopback and
//! real native clients.
#![allow(dead_code)]

use std::time::Duration;

use clap::Parser;
use quicmatch::client::{Client, Event, Verification};
use quicmatch::config::Config;
use quicmatch::protocol::{ClientMsg, ErrorCode, Gender, Profile, ServerMsg};
use quicmatch::server::Server;

/// How long any single expected event may take before a test fails.
pub const STEP: Duration = Duration::from_secs(5);

/// Starts a server on 127.0.0.1 and [::1], ephemeral ports, plus `args`.
pub async fn start_server(args: &[&str]) -> Server {
    let mut argv = vec!["quicmatch", "--bind", "127.0.0.1,::1", "--port", "0"];
    argv.extend_from_slice(args);
    Server::start(Config::parse_from(argv)).await.expect("server starts")
}

/// The session URL of `server` on 127.0.0.1.
pub fn url(server: &Server) -> String {
    format!("https://127.0.0.1:{}/signal", server.quic_addr().port())
}

/// A client connected to `server`, pinning its certificate hash.
pub async fn connect(server: &Server) -> Client {
    let hash = server.certificate_hash().expect("self-signed");
    tokio::time::timeout(STEP, Client::connect(&url(server), Verification::CertificateHashes(vec![hash])))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// A profile with sensible defaults.
pub fn profile(name: &str, gender: Gender) -> Profile {
    Profile {
        name: name.into(),
        age: 25,
        gender,
    }
}

/// The next event, failing the test after [`STEP`].
pub async fn next_event(client: &mut Client) -> Event {
    tokio::time::timeout(STEP, client.next_event())
        .await
        .expect("event in time")
        .expect("session still open")
}

/// The next signaling message, skipping chat events.
pub async fn next_msg(client: &mut Client) -> ServerMsg {
    loop {
        if let Event::Message(msg) = next_event(client).await {
            return msg;
        }
    }
}

/// Sends `msg`, failing the test on error.
pub async fn send(client: &mut Client, msg: ClientMsg) {
    client.send(&msg).await.expect("send");
}

/// Joins and returns the first answer.
pub async fn join(client: &mut Client, name: &str, gender: Gender) -> ServerMsg {
    send(client, ClientMsg::Join(profile(name, gender))).await;
    next_msg(client).await
}

/// The match id of a `Matched` message.
pub fn match_id(msg: &ServerMsg) -> u64 {
    match msg {
        ServerMsg::Matched { match_id, .. } => *match_id,
        other => panic!("expected Matched, got {other:?}"),
    }
}

/// Two clients of opposite gender, matched; returns them with the match id.
pub async fn matched_pair(server: &Server) -> (Client, Client, u64) {
    let mut a = connect(server).await;
    let mut b = connect(server).await;
    assert!(matches!(join(&mut a, "Ann", Gender::Female).await, ServerMsg::Waiting { .. }));
    let id = match_id(&join(&mut b, "Bob", Gender::Male).await);
    assert_eq!(match_id(&next_msg(&mut a).await), id);
    (a, b, id)
}

/// Asserts the next message is an `Error` with `code`.
pub async fn expect_error(client: &mut Client, code: ErrorCode) {
    match next_msg(client).await {
        ServerMsg::Error { code: got, .. } => assert_eq!(got, code),
        other => panic!("expected Error {code:?}, got {other:?}"),
    }
}

/// Round-trips a ping, proving every earlier frame was handled.
pub async fn ping(client: &mut Client, nonce: u64) {
    send(client, ClientMsg::Ping { nonce }).await;
    assert_eq!(next_msg(client).await, ServerMsg::Pong { nonce });
}

/// Waits (bounded) until the server's counts satisfy `pred`.
pub async fn wait_stats(server: &Server, pred: impl Fn(quicmatch::registry::Stats) -> bool) {
    let deadline = tokio::time::Instant::now() + STEP * 2;
    while !pred(server.stats()) {
        assert!(tokio::time::Instant::now() < deadline, "stats never reached: {:?}", server.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

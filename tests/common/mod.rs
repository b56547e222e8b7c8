//! Shared helpers of the integration tests: a real server on loopback and
//! real native clients.
#![allow(dead_code)]

pub mod process;
pub mod redis;
pub mod websocket;

use std::time::Duration;

use clap::Parser;
use quicmatch::client::{Client, Event, Verification};
use quicmatch::config::Config;
use quicmatch::protocol::{ClientMsg, ErrorCode, Gender, Profile, ServerMsg};
use quicmatch::server::Server;

/// How long any single expected event may take before a test fails.
pub const STEP: Duration = Duration::from_secs(5);

/// Where a protocol test runs: one process, or two nodes sharing a matching
/// pool on a real Redis with clients connected to each in turn, so that the
/// pool is held to the same contract as one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    OneNode,
    TwoNodePool,
}

tokio::task_local! {
    static TOPOLOGY: Topology;
}

impl Topology {
    /// Runs `test` with every [`start_server`] inside it using this topology.
    pub async fn run<F: std::future::Future<Output = ()>>(self, test: F) {
        TOPOLOGY.scope(self, test).await
    }

    /// The topology of the running test (one node outside [`Topology::run`]).
    pub fn current() -> Topology {
        TOPOLOGY.try_with(|t| *t).unwrap_or(Topology::OneNode)
    }
}

/// Defines a protocol test twice, as `NAME::one_node` and
/// `NAME::two_node_pool` (see [`Topology`]).
#[macro_export]
macro_rules! protocol_test {
    ($(#[$meta:meta])* async fn $name:ident() $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_node() {
                $crate::common::Topology::OneNode.run(async move $body).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_node_pool() {
                $crate::common::Topology::TwoNodePool.run(async move $body).await
            }
        }
    };
}

/// The server a test talks to: one process, or (in a two-node pool) the
/// first node, with the second node and the Redis beside it. It derefs to
/// the first node, so addresses, the sidecar and stats (of the whole pool)
/// are read as from one server; [`connect`] and [`RawSession::connect`]
/// alternate between the nodes.
pub struct TestServer {
    first: Server,
    second: Option<Server>,
    redis: Option<redis::RedisServer>,
    turn: std::sync::atomic::AtomicUsize,
}

impl std::ops::Deref for TestServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.first
    }
}

impl TestServer {
    /// The node the next client connects to, each in turn.
    pub fn next_node(&self) -> &Server {
        let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &self.second {
            Some(second) if turn % 2 == 1 => second,
            _ => &self.first,
        }
    }

    /// Every node's certificate hash: a client pins them all, whichever
    /// node it lands on.
    pub fn hashes(&self) -> Vec<[u8; 32]> {
        std::iter::once(&self.first)
            .chain(&self.second)
            .filter_map(Server::certificate_hash)
            .collect()
    }

    /// Shuts every node down, then stops the Redis.
    pub async fn shutdown(self) {
        if let Some(second) = self.second {
            second.shutdown().await;
        }
        self.first.shutdown().await;
        drop(self.redis);
    }
}

/// Starts a server on 127.0.0.1 and [::1], ephemeral ports, plus `args`; in
/// a [`Topology::TwoNodePool`] test, two such nodes on a Redis of their own.
pub async fn start_server(args: &[&str]) -> TestServer {
    let redis = match Topology::current() {
        Topology::OneNode => None,
        Topology::TwoNodePool => Some(redis::RedisServer::start()),
    };
    let node = || async {
        let mut argv = vec![
            "quicmatch",
            "--bind",
            "127.0.0.1,::1",
            "--port",
            "0",
            "--self-signed",
        ];
        argv.extend_from_slice(args);
        let redis_url = redis.as_ref().map(redis::RedisServer::url);
        if let Some(url) = &redis_url {
            argv.extend_from_slice(&["--redis", url]);
        }
        Server::start(Config::parse_from(argv))
            .await
            .expect("server starts")
    };
    let first = node().await;
    let second = match redis {
        Some(_) => Some(node().await),
        None => None,
    };
    TestServer {
        first,
        second,
        redis,
        turn: Default::default(),
    }
}

/// The session URL of `server` on 127.0.0.1.
pub fn url(server: &Server) -> String {
    format!("https://127.0.0.1:{}/signal", server.quic_addr().port())
}

/// A client connected to `server` (to its nodes in turn), pinning the
/// certificate hashes.
pub async fn connect(server: &TestServer) -> Client {
    let node = server.next_node();
    tokio::time::timeout(
        STEP,
        Client::connect(&url(node), Verification::CertificateHashes(server.hashes())),
    )
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
pub async fn matched_pair(server: &TestServer) -> (Client, Client, u64) {
    let mut a = connect(server).await;
    let mut b = connect(server).await;
    assert!(matches!(
        join(&mut a, "Ann", Gender::Female).await,
        ServerMsg::Waiting { .. }
    ));
    let id = match_id(&join(&mut b, "Bob", Gender::Male).await);
    assert_eq!(match_id(&next_msg(&mut a).await), id);
    (a, b, id)
}

/// `stopper` presses Next on match `id`: the partner is told, and both wait
/// again, neither offered to the other.
pub async fn stop_and_both_wait(stopper: &mut Client, partner: &mut Client, id: u64) {
    send(stopper, ClientMsg::Stop).await;
    expect_left_to_wait(partner, id).await;
    assert_eq!(
        next_msg(stopper).await,
        ServerMsg::Waiting { queue_position: 1 }
    );
}

/// Asserts `client`'s partner in match `id` has left: it is told, and waits
/// again at the front of the queue.
pub async fn expect_left_to_wait(client: &mut Client, id: u64) {
    assert_eq!(
        next_msg(client).await,
        ServerMsg::PartnerDisconnected { match_id: id }
    );
    assert_eq!(
        next_msg(client).await,
        ServerMsg::Waiting { queue_position: 1 }
    );
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
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never reached: {:?}",
            server.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------
// Helpers of the protocol test suite (tests/join.rs, relay.rs, chat.rs,
// lifecycle.rs, closing.rs, badframes.rs, http.rs).

/// The session URL of `server` on [::1] (its second bind address).
pub fn url_v6(server: &Server) -> String {
    format!("https://[::1]:{}/signal", server.quic_addrs()[1].port())
}

/// Connects to `url` pinning `hash`; the error is returned, not asserted, so
/// tests can check that a connection fails. Bounded by [`STEP`].
pub async fn try_connect(
    url: &str,
    hash: [u8; 32],
) -> Result<Client, quicmatch::client::ClientError> {
    tokio::time::timeout(
        STEP,
        Client::connect(url, Verification::CertificateHashes(vec![hash])),
    )
    .await
    .expect("connect attempt ends in time")
}

/// A signaling frame around arbitrary payload bytes: the 4-byte big-endian
/// length, then the bytes.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Sends `datagram`, encoded, as a raw datagram (no resends, no ack tracking).
pub fn send_datagram(client: &Client, datagram: &quicmatch::protocol::Datagram) {
    client
        .send_datagram_raw(&quicmatch::codec::encode(datagram))
        .expect("send datagram");
}

/// Reads events until the session ends; returns the events before
/// [`Event::Closed`] and that event's `closing` and `code`.
pub async fn until_closed(client: &mut Client) -> (Vec<Event>, Option<(u32, String)>, Option<u64>) {
    let mut before = Vec::new();
    loop {
        match next_event(client).await {
            Event::Closed { closing, code } => return (before, closing, code),
            other => before.push(other),
        }
    }
}

/// Asserts the session ends with a `Closing { code }` frame as its last
/// message and then the QUIC close with the same application code; the
/// messages before it must satisfy `allowed`. Returns the reason.
pub async fn expect_closed_with(
    client: &mut Client,
    code: u32,
    mut allowed: impl FnMut(&Event) -> bool,
) -> String {
    let (before, closing, quic_code) = until_closed(client).await;
    let (last, earlier) = before
        .split_last()
        .expect("a Closing frame before the close");
    let Event::Message(ServerMsg::Closing { code: got, reason }) = last else {
        panic!("expected Closing {code} as the last message, got {last:?}");
    };
    assert_eq!(*got, code, "Closing code");
    assert!(
        !reason.is_empty() && reason.len() <= 200,
        "reason {reason:?}"
    );
    assert_eq!(
        closing,
        Some((code, reason.clone())),
        "client recorded the Closing frame"
    );
    assert_eq!(
        quic_code,
        Some(u64::from(code)),
        "QUIC application close code"
    );
    for event in earlier {
        assert!(allowed(event), "unexpected event before Closing: {event:?}");
    }
    reason.clone()
}

/// Reads messages until `Pong { nonce }`, returning those before it. Proves
/// that everything the server queued before handling the ping has arrived.
pub async fn until_pong(client: &mut Client, nonce: u64) -> Vec<ServerMsg> {
    let mut before = Vec::new();
    loop {
        match next_msg(client).await {
            ServerMsg::Pong { nonce: n } if n == nonce => return before,
            other => before.push(other),
        }
    }
}

/// Reads events until `Pong { nonce }`, returning the events before it
/// (chat events included).
pub async fn events_until_pong(client: &mut Client, nonce: u64) -> Vec<Event> {
    let mut before = Vec::new();
    loop {
        match next_event(client).await {
            Event::Message(ServerMsg::Pong { nonce: n }) if n == nonce => return before,
            other => before.push(other),
        }
    }
}

/// Pings and asserts that nothing at all (no message, no chat) was pending
/// before the `Pong`.
pub async fn assert_quiet(client: &mut Client, nonce: u64) {
    send(client, ClientMsg::Ping { nonce }).await;
    let before = events_until_pong(client, nonce).await;
    assert!(
        before.is_empty(),
        "expected nothing before the Pong, got {before:?}"
    );
}

/// The next chat event, skipping acknowledgements.
pub async fn next_chat(client: &mut Client) -> (u64, u32, String) {
    loop {
        match next_event(client).await {
            Event::Chat {
                match_id,
                seq,
                text,
            } => return (match_id, seq, text),
            Event::ChatAcked { .. } => {}
            other => panic!("expected a chat, got {other:?}"),
        }
    }
}

/// The registry's counts, as a tuple (users, matches, male queue, female queue).
pub fn counts(server: &Server) -> (usize, usize, usize, usize) {
    let s = server.stats();
    (
        s.active_users,
        s.active_matches,
        s.male_queue,
        s.female_queue,
    )
}

/// Waits (bounded) until the counts are exactly `expected`
/// (users, matches, male queue, female queue).
pub async fn wait_counts(server: &Server, expected: (usize, usize, usize, usize)) {
    wait_stats(server, |s| {
        (
            s.active_users,
            s.active_matches,
            s.male_queue,
            s.female_queue,
        ) == expected
    })
    .await;
}

/// A session driven by hand with `wtransport`, for what the native client
/// hides: exact datagram bytes, and a client that never reads its stream.
pub struct RawSession {
    pub connection: wtransport::Connection,
    pub send: wtransport::SendStream,
    pub recv: wtransport::RecvStream,
    decoder: quicmatch::codec::FrameDecoder,
    _endpoint: wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
}

/// A `wtransport` client endpoint that pins every node's certificate, with
/// the QUIC transport settings `transport` if given.
pub fn raw_endpoint(
    server: &TestServer,
    transport: Option<wtransport::config::QuicTransportConfig>,
) -> wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client> {
    let mut config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes(
            server
                .hashes()
                .into_iter()
                .map(wtransport::tls::Sha256Digest::new),
        )
        .build();
    if let Some(transport) = transport {
        config
            .quic_config_mut()
            .transport_config(std::sync::Arc::new(transport));
    }
    wtransport::Endpoint::client(config).expect("client endpoint")
}

impl RawSession {
    /// Opens a session and its signaling stream on `server` (127.0.0.1; its
    /// nodes in turn),
    /// with the QUIC transport settings `transport` if given.
    pub async fn connect(
        server: &TestServer,
        transport: Option<wtransport::config::QuicTransportConfig>,
    ) -> RawSession {
        let node = server.next_node();
        let endpoint = raw_endpoint(server, transport);
        let (connection, send, recv) = tokio::time::timeout(STEP, async {
            let connection = endpoint.connect(url(node)).await.expect("connect");
            let (send, recv) = connection
                .open_bi()
                .await
                .expect("open stream")
                .await
                .expect("stream opened");
            (connection, send, recv)
        })
        .await
        .expect("raw connect in time");
        RawSession {
            connection,
            send,
            recv,
            decoder: Default::default(),
            _endpoint: endpoint,
        }
    }

    /// Sends one message on the signaling stream.
    pub async fn send_msg(&mut self, msg: &ClientMsg) {
        self.send
            .write_all(&quicmatch::codec::encode_frame(msg))
            .await
            .expect("write");
    }

    /// The next message on the signaling stream, failing after [`STEP`].
    pub async fn next_msg(&mut self) -> ServerMsg {
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(STEP, async {
            loop {
                if let Some(frame) = self.decoder.next_frame().expect("valid frame length") {
                    let payload = quicmatch::codec::frame_payload(&frame);
                    return quicmatch::codec::decode::<ServerMsg>(payload)
                        .expect("decodable frame");
                }
                let n = self
                    .recv
                    .read_buf(self.decoder.buffer())
                    .await
                    .expect("read");
                assert!(n > 0, "signaling stream ended");
            }
        })
        .await
        .expect("message in time")
    }

    /// Reads at most `max` bytes of the signaling stream (whatever has
    /// arrived, waiting for some), keeping them for [`RawSession::next_msg`]:
    /// a client that reads slowly.
    pub async fn read_some(&mut self, max: usize) -> usize {
        let mut chunk = vec![0u8; max];
        let n = tokio::time::timeout(STEP, self.recv.read(&mut chunk))
            .await
            .expect("bytes in time")
            .expect("read")
            .expect("stream open");
        self.decoder.buffer().extend_from_slice(&chunk[..n]);
        n
    }

    /// The next datagram's exact bytes, failing after [`STEP`].
    pub async fn next_datagram(&self) -> bytes::Bytes {
        tokio::time::timeout(STEP, self.connection.receive_datagram())
            .await
            .expect("datagram in time")
            .expect("session open")
            .payload()
    }
}

/// A response of the HTTP sidecar.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// A minimal HTTP/1.1 `GET path` to `addr` with the given `Host` header,
/// over a plain TCP stream (the sidecar closes it after the response).
pub async fn http_get(addr: std::net::SocketAddr, host: &str, path: &str) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let raw = tokio::time::timeout(STEP, async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("TCP connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read response");
        raw
    })
    .await
    .expect("HTTP response in time");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = std::str::from_utf8(&raw[..split]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("header line");
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&data[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Asserts the counts are `expected` (users, matches, male queue, female
/// queue): at once on one node; in a pool, once the first node's view of
/// the pool (renewed every heartbeat) has caught up.
pub async fn assert_counts(server: &TestServer, expected: (usize, usize, usize, usize)) {
    if server.second.is_some() {
        wait_counts(server, expected).await;
    } else {
        assert_eq!(counts(server), expected);
    }
}

//! `quicmatch-load`: a load generator for a running quicmatch server.
//!
//! It opens `2 × --pairs` WebTransport sessions over loopback (spread over
//! `--connectors` UDP sockets), joins them half women, half men, and then runs
//! one scenario:
//!
//! - `connect`: time until every session is connected and matched.
//! - `relay`: every initiator sends `--messages` offers of `--payload-bytes`,
//!   one at a time (the next once its partner has received the last), all
//!   pairs at once; one-way latency from timestamps carried in the sdp.
//! - `chat`: the same with chat datagrams; the receiver acknowledges each, as
//!   a real client does. Datagrams may be lost: losses are counted, not failed.
//! - `churn`: every match is ended at once by its initiator (`Stop`) and both
//!   are re-matched, again and again for `--duration-secs`; matches counted.
//!
//! Every message carries its pair, match and sequence number, so a message
//! delivered to the wrong session, twice or out of order counts as misrouted;
//! every `Matched` is checked against its partner's. It prints one JSON line
//! to stdout (latency percentiles, rates, the server's CPU time per message or
//! match and memory per session when `--server-pid` is given, kernel UDP
//! drops, losses) and exits 1 if any relay message was lost, any message
//! misrouted, any error answered or any phase timed out; 2 if it could not
//! run at all.
//!
//! Each session paces its frames to `--frame-rate` and its datagrams to
//! `--datagram-rate` per second (by default the rates the protocol promises
//! are never limited), so that a server with default limits is measured
//! rather than rate-limited; `0` sends as fast as possible.
//!
//! It uses a small client of its own on top of `wtransport` rather than
//! [`quicmatch::client::Client`]: one task per pair or session, no timers
//! per session and configurable socket buffers keep the generator's own cost
//! low, which matters when it shares the machine with the server.
//!
//! It only ever talks to loopback addresses.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use base64::Engine;
use clap::{Parser, ValueEnum};
use quicmatch::codec::{self, FrameDecoder, encode_frame};
use quicmatch::protocol::{
    ClientMsg, Datagram, Gender, MAX_CHAT_LEN, MAX_SDP_LEN, Profile, ServerMsg,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Barrier, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use wtransport::endpoint::endpoint_side;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, SendStream, VarInt};

/// What the generator does once every session is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Only connect and match.
    Connect,
    /// Offers from every initiator to its partner.
    Relay,
    /// Chat datagrams from every initiator to its partner.
    Chat,
    /// Stop and re-match, over and over.
    Churn,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Connect => "connect",
            Scenario::Relay => "relay",
            Scenario::Chat => "chat",
            Scenario::Churn => "churn",
        }
    }
}

/// Load generator for a quicmatch server (loopback only).
#[derive(Debug, Clone, Parser)]
#[command(name = "quicmatch-load", version, about)]
struct Args {
    /// Session URL of the server.
    #[arg(long, default_value = "https://127.0.0.1:5000/signal")]
    url: String,

    /// Base64 SHA-256 of the server's certificate; fetched from --http's /api/webtransport when absent.
    #[arg(long)]
    cert_hash: Option<String>,

    /// Base URL of the server's HTTP sidecar (for the certificate hash and the session count).
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    http: String,

    /// Accept any certificate instead of pinning its hash.
    #[arg(long)]
    insecure: bool,

    /// Pairs: 2 × pairs sessions, half women, half men.
    #[arg(long, default_value_t = 100)]
    pairs: u32,

    /// Messages each initiator sends (relay, chat).
    #[arg(long, default_value_t = 100)]
    messages: u32,

    /// What to do once matched.
    #[arg(long, value_enum, default_value_t = Scenario::Relay)]
    scenario: Scenario,

    /// How long churn runs, in seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,

    /// Process id of the server, to sample its CPU time and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,

    /// UDP sockets (client endpoints) the sessions are spread over.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    connectors: u32,

    /// Kernel receive and send buffer of each generator socket, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    udp_buffer_bytes: usize,

    /// Bytes of sdp in each relayed offer.
    #[arg(long, default_value_t = 2048)]
    payload_bytes: usize,

    /// Bytes of text in each chat datagram (at most 1000).
    #[arg(long, default_value_t = 100)]
    chat_bytes: usize,

    /// Frames each session sends per second at most; 0: as fast as possible.
    #[arg(long, default_value_t = 50)]
    frame_rate: u32,

    /// Datagrams each session sends per second at most; 0: as fast as possible.
    #[arg(long, default_value_t = 20)]
    datagram_rate: u32,

    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    connect_concurrency: u32,

    /// Longest any phase (connect, join, the scenario, teardown) may take, in seconds.
    #[arg(long, default_value_t = 120)]
    phase_timeout_secs: u64,

    /// Longest a relayed offer may take to arrive before it counts as lost, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    message_timeout_ms: u64,

    /// How long the sender waits for a chat before sending the next, in milliseconds.
    #[arg(long, default_value_t = 500)]
    chat_timeout_ms: u64,

    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

/// Live counts, shared by every task and the progress line.
#[derive(Debug, Default)]
struct Counters {
    connected: AtomicU64,
    matched: AtomicU64,
    delivered: AtomicU64,
    lost: AtomicU64,
    late: AtomicU64,
    misrouted: AtomicU64,
    errors: AtomicU64,
    matches: AtomicU64,
    acks: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Failure descriptions; the first few are kept for the report.
#[derive(Debug, Default)]
struct Failures {
    kept: Mutex<Vec<String>>,
    total: AtomicU64,
}

const KEPT_FAILURES: usize = 20;

impl Failures {
    fn push(&self, what: String) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEPT_FAILURES {
            kept.push(what);
        }
    }
}

/// What every task shares.
struct Shared {
    args: Args,
    counters: Counters,
    failures: Failures,
    /// The clock that the timestamps in messages count from.
    epoch: Instant,
    phase: Mutex<&'static str>,
}

impl Shared {
    fn since_epoch_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn fail(&self, what: String) {
        self.failures.push(what);
    }

    fn error(&self, what: String) {
        Counters::add(&self.counters.errors, 1);
        self.fail(what);
    }

    fn misrouted(&self, what: String) {
        Counters::add(&self.counters.misrouted, 1);
        self.fail(what);
    }

    fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    }
}

/// Spaces sends at least `1.02 / rate` seconds apart, so that no second ever
/// holds more than `rate` of them.
#[derive(Debug)]
struct Pacer {
    interval: Option<Duration>,
    next: Instant,
}

impl Pacer {
    fn new(rate: u32) -> Pacer {
        Pacer {
            interval: (rate > 0).then(|| Duration::from_secs_f64(1.02 / f64::from(rate))),
            next: Instant::now(),
        }
    }

    /// Holds the next send back until `at` (to stagger senders).
    fn not_before(&mut self, at: Instant) {
        self.next = self.next.max(at);
    }

    /// Waits until the next send is allowed and books it.
    async fn ready(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        let at = self.next.max(now);
        if at > now {
            sleep_until(at).await;
        }
        self.next = at + interval;
    }
}

/// One session of the generator's own minimal client.
struct Session {
    /// Generator-wide number: its name is `s{index}`, even ones are women.
    index: u32,
    connection: Connection,
    send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
    frames: Pacer,
}

fn gender_of(index: u32) -> Gender {
    if index.is_multiple_of(2) {
        Gender::Female
    } else {
        Gender::Male
    }
}

fn name_of(index: u32) -> String {
    format!("s{index}")
}

fn index_of(name: &str) -> Option<u32> {
    name.strip_prefix('s')?.parse().ok()
}

impl Session {
    /// Sends a frame once the pacer allows.
    async fn send(&mut self, msg: &ClientMsg) -> anyhow::Result<()> {
        self.frames.ready().await;
        self.send_now(msg).await
    }

    /// Sends a frame without pacing (the caller has waited for the pacer).
    async fn send_now(&mut self, msg: &ClientMsg) -> anyhow::Result<()> {
        self.send
            .write_all(&encode_frame(msg))
            .await
            .with_context(|| format!("session {}: write", self.index))
    }

    /// The next frame from the server; `Closing` and a closed stream are errors.
    async fn next_msg(&mut self) -> anyhow::Result<ServerMsg> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    let msg = codec::decode::<ServerMsg>(codec::frame_payload(&frame))
                        .with_context(|| format!("session {}: undecodable frame", self.index))?;
                    if let ServerMsg::Closing { code, reason } = msg {
                        bail!(
                            "session {}: server closed it with code {code}: {reason}",
                            self.index
                        );
                    }
                    return Ok(msg);
                }
                Ok(None) => {}
                Err(bad) => bail!("session {}: {bad}", self.index),
            }
            let n = self
                .recv
                .read_buf(self.decoder.buffer())
                .await
                .with_context(|| format!("session {}: read", self.index))?;
            ensure!(
                n > 0,
                "session {}: the server finished the stream",
                self.index
            );
        }
    }

    /// Sends `Ping { nonce }` and reads up to its `Pong`, handing every other
    /// message to `other`: afterwards every frame the server queued for this
    /// session before it read the ping has been seen.
    async fn ping(&mut self, nonce: u64, mut other: impl FnMut(ServerMsg)) -> anyhow::Result<()> {
        self.send(&ClientMsg::Ping { nonce }).await?;
        loop {
            match self.next_msg().await? {
                ServerMsg::Pong { nonce: got } if got == nonce => return Ok(()),
                msg => other(msg),
            }
        }
    }

    fn close(&self) {
        self.connection
            .close(VarInt::from_u32(0), b"load test done");
    }
}

/// A session's match, as its `Matched` told it.
#[derive(Debug, Clone, Copy)]
struct MatchInfo {
    match_id: u64,
    partner: u32,
    initiator: bool,
}

/// One entry of a churning session's match log.
#[derive(Debug, Clone, Copy)]
struct MatchRecord {
    match_id: u64,
    me: u32,
    partner: u32,
    initiator: bool,
}

/// Samples of the server process and the machine.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at: Option<Instant>,
    server_cpu_ticks: Option<u64>,
    self_cpu_ticks: Option<u64>,
    server_rss_kib: Option<u64>,
    udp: Option<UdpCounters>,
}

#[derive(Debug, Clone, Copy, Default)]
struct UdpCounters {
    in_datagrams: u64,
    rcvbuf_errors: u64,
    sndbuf_errors: u64,
    in_errors: u64,
}

fn sample(pid: Option<u32>) -> Sample {
    Sample {
        at: Some(Instant::now()),
        server_cpu_ticks: pid.and_then(|pid| cpu_ticks(&format!("/proc/{pid}/stat"))),
        self_cpu_ticks: cpu_ticks("/proc/self/stat"),
        server_rss_kib: pid.and_then(rss_kib),
        udp: udp_counters(),
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name, from field 3 (state) on.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The kernel's UDP error counters (for this network namespace).
fn udp_counters() -> Option<UdpCounters> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let get = |name: &str| -> u64 {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(UdpCounters {
        in_datagrams: get("InDatagrams"),
        rcvbuf_errors: get("RcvbufErrors"),
        sndbuf_errors: get("SndbufErrors"),
        in_errors: get("InErrors"),
    })
}

/// Datagrams the kernel dropped on the UDP sockets bound to any of `ports`
/// (the `drops` column of /proc/net/udp and udp6).
fn socket_drops(ports: &[u16]) -> Option<u64> {
    let mut total = None;
    for path in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(table) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields
                .get(1)
                .and_then(|local| local.rsplit(':').next())
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if port.is_some_and(|port| ports.contains(&port))
                && let Some(drops) = fields.last().and_then(|d| d.parse::<u64>().ok())
            {
                *total.get_or_insert(0) += drops;
            }
        }
    }
    total
}

/// Clock ticks per second of /proc's CPU times.
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// CPU time between two samples, in microseconds.
fn cpu_us(from: Option<u64>, to: Option<u64>, ticks: u64) -> Option<u64> {
    Some(to?.saturating_sub(from?) * 1_000_000 / ticks)
}

/// The figures of one phase: wall time and CPU time of the server and of the generator.
#[derive(Debug, Clone, Copy)]
struct Phase {
    secs: f64,
    /// UDP datagrams received on this machine (both sides: server and generator).
    udp_in: Option<u64>,
    server_cpu_us: Option<u64>,
    self_cpu_us: Option<u64>,
}

fn phase(from: &Sample, to: &Sample, ticks: u64) -> Phase {
    let secs = match (from.at, to.at) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    Phase {
        secs,
        udp_in: match (from.udp, to.udp) {
            (Some(a), Some(b)) => Some(b.in_datagrams.saturating_sub(a.in_datagrams)),
            _ => None,
        },
        server_cpu_us: cpu_us(from.server_cpu_ticks, to.server_cpu_ticks, ticks),
        self_cpu_us: cpu_us(from.self_cpu_ticks, to.self_cpu_ticks, ticks),
    }
}

fn per(total: Option<u64>, count: u64) -> Value {
    match total {
        Some(total) if count > 0 => json!(round2(total as f64 / count as f64)),
        _ => Value::Null,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn rate(count: u64, secs: f64) -> Value {
    if secs > 0.0 {
        json!(round2(count as f64 / secs))
    } else {
        Value::Null
    }
}

fn phase_json(p: &Phase) -> Value {
    json!({
        "ms": round2(p.secs * 1000.0),
        "udp_datagrams": p.udp_in,
        "server_cpu_us": p.server_cpu_us,
        "generator_cpu_us": p.self_cpu_us,
    })
}

/// Nearest-rank percentiles of latencies (ns), in µs.
fn latency_json(latencies: &mut [u64]) -> Value {
    if latencies.is_empty() {
        return Value::Null;
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        let rank = (q * latencies.len() as f64).ceil() as usize;
        let ns = latencies[rank.clamp(1, latencies.len()) - 1];
        round2(ns as f64 / 1000.0)
    };
    json!({
        "count": latencies.len(),
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "max_us": at(1.0),
    })
}

// ---------------------------------------------------------------------------
// Addresses, certificate, HTTP sidecar.

/// `host:port` of an `https://` or `http://` URL.
fn authority(url: &str, scheme: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix(scheme)
        .with_context(|| format!("{url} does not start with {scheme}"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    ensure!(!authority.is_empty(), "{url} has no host");
    Ok(authority.to_owned())
}

/// Resolves `host:port` and insists on loopback addresses only.
fn loopback_addr(authority: &str) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .collect();
    ensure!(!addrs.is_empty(), "{authority} resolves to nothing");
    ensure!(
        addrs.iter().all(|a| a.ip().is_loopback()),
        "{authority} is not a loopback address; this generator only loads servers on this machine"
    );
    Ok(addrs[0])
}

/// A raw HTTP/1.1 GET of `path` from the sidecar; the body of a 200.
async fn http_get(base: &str, path: &str) -> anyhow::Result<String> {
    let host = authority(base, "http://")?;
    let addr = loopback_addr(&host)?;
    let step = Duration::from_secs(5);
    let mut stream = timeout(step, tokio::net::TcpStream::connect(addr))
        .await
        .context("connecting to the sidecar timed out")?
        .with_context(|| format!("connecting to {addr}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    timeout(step, stream.read_to_end(&mut raw))
        .await
        .context("the sidecar's answer timed out")??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of HTTP headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    ensure!(status == "200", "GET {path}: HTTP status {status}");
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    String::from_utf8(body).context("body is not UTF-8")
}

/// Decodes a chunked HTTP body.
fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(body.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// The certificate hash from `--cert-hash`, or from the sidecar.
async fn certificate_hash(args: &Args) -> anyhow::Result<[u8; 32]> {
    let text = match &args.cert_hash {
        Some(hash) => hash.clone(),
        None => {
            let body = http_get(&args.http, "/api/webtransport")
                .await
                .context("fetching /api/webtransport (give --cert-hash or --insecure instead)")?;
            let json: Value =
                serde_json::from_str(&body).context("/api/webtransport is not JSON")?;
            json["serverCertificateHashes"][0]["value"]
                .as_str()
                .context(
                    "/api/webtransport lists no certificate hash (not self-signed? use --insecure)",
                )?
                .to_owned()
        }
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .context("the certificate hash is not base64")?;
    bytes
        .try_into()
        .map_err(|_| anyhow!("the certificate hash is not 32 bytes"))
}

/// Sessions the server reports as connected, if its sidecar answers.
async fn server_sessions(args: &Args) -> Option<u64> {
    let body = http_get(&args.http, "/api/stats").await.ok()?;
    serde_json::from_str::<Value>(&body).ok()?["totalUsers"].as_u64()
}

/// One client endpoint on its own loopback UDP socket.
fn endpoint(
    args: &Args,
    server: SocketAddr,
    hash: Option<[u8; 32]>,
) -> anyhow::Result<Endpoint<endpoint_side::Client>> {
    let ip = match server.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    let socket = quicmatch::transport::bind_udp(ip, 0, args.udp_buffer_bytes)?;
    let builder = ClientConfig::builder().with_bind_socket(socket);
    let builder = match hash {
        Some(hash) => builder.with_server_certificate_hashes([Sha256Digest::new(hash)]),
        None => builder.with_no_cert_validation(),
    };
    let config = builder
        .max_idle_timeout(Some(Duration::from_secs(30)))
        .map_err(|_| anyhow!("idle timeout"))?
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .build();
    Ok(Endpoint::client(config)?)
}

/// Whether the kernel granted the socket buffers asked for (checked on a probe socket).
fn udp_buffer_granted(args: &Args) -> Option<usize> {
    let socket =
        quicmatch::transport::bind_udp(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, args.udp_buffer_bytes)
            .ok()?;
    // Linux reports twice what it grants.
    socket2::SockRef::from(&socket)
        .recv_buffer_size()
        .ok()
        .map(|n| n / 2)
}

// ---------------------------------------------------------------------------
// Phases.

/// Connects session `index` and proves the server has admitted it (ping).
async fn connect_one(
    endpoint: Arc<Endpoint<endpoint_side::Client>>,
    url: Arc<str>,
    index: u32,
    shared: &Shared,
) -> anyhow::Result<Session> {
    let connection = endpoint
        .connect(&*url)
        .await
        .with_context(|| format!("session {index}: connect"))?;
    let (send, recv) = connection
        .open_bi()
        .await
        .with_context(|| format!("session {index}: open stream"))?
        .await
        .with_context(|| format!("session {index}: open stream"))?;
    let mut session = Session {
        index,
        connection,
        send,
        recv,
        decoder: FrameDecoder::default(),
        frames: Pacer::new(shared.args.frame_rate),
    };
    // Unpaced, so that the Join after it is not held back.
    let nonce = u64::from(index);
    session.send_now(&ClientMsg::Ping { nonce }).await?;
    loop {
        match session.next_msg().await? {
            ServerMsg::Pong { nonce: got } if got == nonce => return Ok(session),
            other => shared.error(format!(
                "session {index}: unexpected {other:?} before joining"
            )),
        }
    }
}

/// Joins and waits for `Matched`.
async fn join_one(session: &mut Session) -> anyhow::Result<MatchInfo> {
    let index = session.index;
    let gender = gender_of(index);
    session
        .send(&ClientMsg::Join(Profile {
            name: name_of(index),
            age: 30,
            gender,
        }))
        .await?;
    loop {
        match session.next_msg().await? {
            ServerMsg::Waiting { .. } => {}
            ServerMsg::Matched {
                match_id,
                partner,
                initiator,
                ..
            } => {
                let partner_index = index_of(&partner.name).with_context(|| {
                    format!(
                        "session {index}: partner name {:?} is not ours",
                        partner.name
                    )
                })?;
                ensure!(
                    partner.gender != gender && gender_of(partner_index) == partner.gender,
                    "session {index}: matched with {} of the wrong gender",
                    partner.name
                );
                return Ok(MatchInfo {
                    match_id,
                    partner: partner_index,
                    initiator,
                });
            }
            other => bail!("session {index}: expected Matched, got {other:?}"),
        }
    }
}

/// Waits for every task of `set`, at most until `deadline`; the rest are
/// aborted and reported.
async fn collect<T: 'static>(
    set: &mut JoinSet<T>,
    deadline: Instant,
    shared: &Shared,
    what: &str,
) -> Vec<T> {
    let mut out = Vec::with_capacity(set.len());
    loop {
        match timeout_at(deadline, set.join_next()).await {
            Ok(Some(Ok(value))) => out.push(value),
            Ok(Some(Err(error))) => shared.error(format!("{what}: task failed: {error}")),
            Ok(None) => return out,
            Err(_) => {
                let left = set.len();
                shared.fail(format!("{what} timed out with {left} tasks unfinished"));
                set.abort_all();
                return out;
            }
        }
    }
}

/// The sdp or chat text of message `seq` of pair `pair`, padded to `len`.
fn payload(pair: usize, seq: u32, match_id: u64, sent_ns: u64, len: usize) -> String {
    let mut text = format!("p={pair} s={seq} m={match_id} t={sent_ns} ");
    if text.len() < len {
        text.extend(std::iter::repeat_n('a', len - text.len()));
    }
    text
}

/// What a payload says about itself.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    pair: usize,
    seq: u32,
    match_id: u64,
    sent_ns: u64,
}

fn parse_payload(text: &str) -> Option<Stamp> {
    let mut fields = text.split(' ');
    let mut field = |key: &str| fields.next()?.strip_prefix(key).map(str::to_owned);
    Some(Stamp {
        pair: field("p=")?.parse().ok()?,
        seq: field("s=")?.parse().ok()?,
        match_id: field("m=")?.parse().ok()?,
        sent_ns: field("t=")?.parse().ok()?,
    })
}

/// A matched pair the scenario runs on.
struct Pair {
    id: usize,
    match_id: u64,
    initiator: Session,
    responder: Session,
}

/// What a pair task hands back.
struct PairOutcome {
    sessions: [Session; 2],
    latencies: Vec<u64>,
}

/// Staggered start of pair `id` within one pacing interval, so that pairs
/// do not send in lockstep.
fn stagger(start: Instant, id: usize, pairs: usize, rate: u32) -> Instant {
    if rate == 0 || pairs == 0 {
        return start;
    }
    let interval = 1.0 / f64::from(rate);
    start + Duration::from_secs_f64(interval * id as f64 / pairs as f64)
}

/// Relay scenario for one pair: offers one at a time, each checked on arrival.
async fn relay_pair(mut pair: Pair, shared: Arc<Shared>, start: Instant) -> PairOutcome {
    let args = &shared.args;
    let (id, match_id, total) = (pair.id, pair.match_id, args.messages);
    let mut latencies = Vec::with_capacity(total as usize);
    pair.initiator
        .frames
        .not_before(stagger(start, id, args.pairs as usize, args.frame_rate));
    let wait = Duration::from_millis(args.message_timeout_ms);
    let mut failed = None;
    'messages: for seq in 0..total {
        // Pace first: the timestamp is taken when the offer really leaves.
        pair.initiator.frames.ready().await;
        let sdp = payload(
            id,
            seq,
            match_id,
            shared.since_epoch_ns(),
            args.payload_bytes,
        );
        if let Err(error) = pair
            .initiator
            .send_now(&ClientMsg::Offer { match_id, sdp })
            .await
        {
            failed = Some((seq, format!("{error:#}")));
            break;
        }
        let deadline = Instant::now() + wait;
        loop {
            let msg = match timeout_at(deadline, pair.responder.next_msg()).await {
                Ok(Ok(msg)) => msg,
                Ok(Err(error)) => {
                    failed = Some((seq, format!("{error:#}")));
                    break 'messages;
                }
                Err(_) => {
                    failed = Some((seq, format!("offer {seq} not delivered within {wait:?}")));
                    break 'messages;
                }
            };
            let got_ns = shared.since_epoch_ns();
            match msg {
                ServerMsg::Offer { match_id: m, sdp } => {
                    match parse_payload(&sdp) {
                        Some(stamp)
                            if stamp.pair == id
                                && stamp.seq == seq
                                && stamp.match_id == match_id
                                && m == match_id
                                && sdp.len() >= args.payload_bytes =>
                        {
                            latencies.push(got_ns.saturating_sub(stamp.sent_ns));
                            Counters::add(&shared.counters.delivered, 1);
                            break;
                        }
                        other => shared.misrouted(format!(
                            "pair {id}: expected offer {seq} of match {match_id}, got {other:?} (match {m})"
                        )),
                    }
                }
                ServerMsg::Error { code, message } => {
                    shared.error(format!("pair {id} responder: Error {code:?}: {message}"))
                }
                other => shared.error(format!("pair {id} responder: unexpected {other:?}")),
            }
        }
    }
    if let Some((seq, why)) = failed {
        let lost = u64::from(total - seq);
        Counters::add(&shared.counters.lost, lost);
        shared.fail(format!(
            "pair {id}: {lost} offers lost from offer {seq}: {why}"
        ));
    }
    finish_pair(pair, shared, latencies).await
}

/// Pings both sessions of a pair: any frame still on the way to them (an
/// extra offer, an error) is counted before the pair is done.
async fn finish_pair(mut pair: Pair, shared: Arc<Shared>, latencies: Vec<u64>) -> PairOutcome {
    let id = pair.id;
    let wait = Duration::from_millis(shared.args.message_timeout_ms);
    for (role, session) in [
        ("initiator", &mut pair.initiator),
        ("responder", &mut pair.responder),
    ] {
        let nonce = (1 << 40) | u64::from(session.index);
        let checked = timeout(
            wait,
            session.ping(nonce, |msg| match msg {
                ServerMsg::Offer { .. } => {
                    shared.misrouted(format!("pair {id} {role}: an extra offer"))
                }
                ServerMsg::Error { code, message } => {
                    shared.error(format!("pair {id} {role}: Error {code:?}: {message}"))
                }
                other => shared.error(format!("pair {id} {role}: unexpected {other:?}")),
            }),
        )
        .await;
        match checked {
            Ok(Ok(())) => {}
            Ok(Err(error)) => shared.error(format!("pair {id} {role}: final ping: {error:#}")),
            Err(_) => shared.error(format!("pair {id} {role}: final ping timed out")),
        }
    }
    PairOutcome {
        sessions: [pair.initiator, pair.responder],
        latencies,
    }
}

/// Chat scenario for one pair: datagrams one at a time, each waited for at
/// most `--chat-timeout-ms`; the receiver acknowledges each.
async fn chat_pair(pair: Pair, shared: Arc<Shared>, start: Instant) -> PairOutcome {
    let args = &shared.args;
    let (id, match_id, total) = (pair.id, pair.match_id, args.messages);
    let mut latencies = Vec::with_capacity(total as usize);
    let mut received = vec![false; total as usize];
    let mut received_count = 0u32;
    let mut pacer = Pacer::new(args.datagram_rate);
    pacer.not_before(stagger(start, id, args.pairs as usize, args.datagram_rate));
    let wait = Duration::from_millis(args.chat_timeout_ms);
    let mut broken = None;
    let mut last_sent = 0u32;
    let mut send_seq = 0u32;
    let mut deadline = Instant::now();
    // Sends message `send_seq` whenever the previous one has arrived or timed
    // out; after the last, waits once more for stragglers.
    loop {
        let waiting_for = send_seq.checked_sub(1);
        let done_waiting = match waiting_for {
            None => true,
            Some(seq) => received[seq as usize] || Instant::now() >= deadline,
        };
        if done_waiting {
            if send_seq == total {
                break;
            }
            pacer.ready().await;
            let text = payload(
                id,
                send_seq,
                match_id,
                shared.since_epoch_ns(),
                args.chat_bytes,
            );
            let bytes = codec::encode(&Datagram::Chat {
                match_id,
                seq: send_seq,
                text,
            });
            if let Err(error) = pair.initiator.connection.send_datagram(bytes) {
                broken = Some(format!("send datagram: {error}"));
                break;
            }
            last_sent = send_seq;
            send_seq += 1;
            deadline = Instant::now() + wait;
            continue;
        }
        tokio::select! {
            datagram = pair.responder.connection.receive_datagram() => {
                let datagram = match datagram {
                    Ok(d) => d,
                    Err(error) => { broken = Some(format!("responder: {error}")); break; }
                };
                let got_ns = shared.since_epoch_ns();
                match codec::decode::<Datagram>(&datagram.payload()) {
                    Ok(Datagram::Chat { match_id: m, seq, text }) => {
                        // Acknowledge as a real client does.
                        let _ = pair.responder.connection.send_datagram(codec::encode(&Datagram::ChatAck { match_id: m, seq }));
                        match parse_payload(&text) {
                            Some(stamp) if stamp.pair == id && stamp.match_id == match_id && m == match_id && stamp.seq == seq && seq <= last_sent => {
                                if received[seq as usize] {
                                    shared.misrouted(format!("pair {id}: chat {seq} delivered twice"));
                                } else {
                                    received[seq as usize] = true;
                                    received_count += 1;
                                    latencies.push(got_ns.saturating_sub(stamp.sent_ns));
                                    Counters::add(&shared.counters.delivered, 1);
                                    if seq < last_sent {
                                        Counters::add(&shared.counters.late, 1);
                                    }
                                }
                            }
                            other => shared.misrouted(format!("pair {id}: chat {other:?} (match {m}, seq {seq}) is not ours")),
                        }
                    }
                    Ok(other) => shared.misrouted(format!("pair {id} responder: unexpected datagram {other:?}")),
                    Err(error) => shared.error(format!("pair {id} responder: bad datagram: {error}")),
                }
            }
            datagram = pair.initiator.connection.receive_datagram() => {
                let datagram = match datagram {
                    Ok(d) => d,
                    Err(error) => { broken = Some(format!("initiator: {error}")); break; }
                };
                match codec::decode::<Datagram>(&datagram.payload()) {
                    Ok(Datagram::ChatAck { match_id: m, seq }) if m == match_id && seq <= last_sent => {
                        Counters::add(&shared.counters.acks, 1);
                    }
                    Ok(other) => shared.misrouted(format!("pair {id} initiator: unexpected datagram {other:?}")),
                    Err(error) => shared.error(format!("pair {id} initiator: bad datagram: {error}")),
                }
            }
            _ = sleep_until(deadline) => {}
        }
    }
    // Stragglers: wait up to one more timeout for chats still on the way.
    if broken.is_none() && received_count < total {
        let deadline = Instant::now() + wait;
        while received_count < total {
            let Ok(datagram) =
                timeout_at(deadline, pair.responder.connection.receive_datagram()).await
            else {
                break;
            };
            let Ok(datagram) = datagram else { break };
            let got_ns = shared.since_epoch_ns();
            if let Ok(Datagram::Chat {
                match_id: m,
                seq,
                text,
            }) = codec::decode::<Datagram>(&datagram.payload())
            {
                let _ = pair
                    .responder
                    .connection
                    .send_datagram(codec::encode(&Datagram::ChatAck { match_id: m, seq }));
                match parse_payload(&text) {
                    Some(stamp)
                        if stamp.pair == id && m == match_id && stamp.seq == seq && seq < total =>
                    {
                        if !received[seq as usize] {
                            received[seq as usize] = true;
                            received_count += 1;
                            latencies.push(got_ns.saturating_sub(stamp.sent_ns));
                            Counters::add(&shared.counters.delivered, 1);
                            Counters::add(&shared.counters.late, 1);
                        }
                    }
                    other => shared.misrouted(format!("pair {id}: chat {other:?} is not ours")),
                }
            }
        }
    }
    let lost = u64::from(total - received_count);
    Counters::add(&shared.counters.lost, lost);
    if let Some(why) = broken {
        shared.error(format!(
            "pair {id}: chat broken off after {send_seq} sends: {why}"
        ));
    }
    finish_pair(pair, shared, latencies).await
}

/// What a churning session hands back.
struct ChurnOutcome {
    session: Session,
    log: Vec<MatchRecord>,
}

/// A churning session's view of its own state.
struct ChurnState {
    index: u32,
    current: Option<(u64, u32)>,
    log: Vec<MatchRecord>,
    want_stop: bool,
    counting: bool,
}

impl ChurnState {
    /// Takes one server message; `stopping` once the churn is over.
    fn on_msg(&mut self, msg: ServerMsg, stopping: bool, shared: &Shared) {
        let index = self.index;
        match msg {
            ServerMsg::Matched {
                match_id,
                partner,
                initiator,
                ..
            } => {
                let Some(partner_index) = index_of(&partner.name) else {
                    return shared.misrouted(format!(
                        "session {index}: partner {:?} is not ours",
                        partner.name
                    ));
                };
                if let Some((old, _)) = self.current {
                    shared.misrouted(format!(
                        "session {index}: Matched {match_id} while still in match {old}"
                    ));
                }
                if gender_of(partner_index) == gender_of(index) {
                    shared.misrouted(format!(
                        "session {index}: matched with same-gender {partner_index}"
                    ));
                }
                if self
                    .log
                    .last()
                    .is_some_and(|last| last.partner == partner_index)
                {
                    shared.misrouted(format!(
                        "session {index}: re-matched with its previous partner {partner_index}"
                    ));
                }
                self.log.push(MatchRecord {
                    match_id,
                    me: index,
                    partner: partner_index,
                    initiator,
                });
                self.current = Some((match_id, partner_index));
                if initiator && self.counting {
                    Counters::add(&shared.counters.matches, 1);
                }
                self.want_stop = initiator && !stopping;
            }
            ServerMsg::PartnerDisconnected { match_id } => {
                if self.current.map(|c| c.0) != Some(match_id) {
                    shared.misrouted(format!(
                        "session {index}: PartnerDisconnected {match_id}, but its match is {:?}",
                        self.current
                    ));
                }
                self.current = None;
            }
            ServerMsg::Waiting { .. } => {
                if let Some((old, _)) = self.current {
                    shared.misrouted(format!("session {index}: Waiting while in match {old}"));
                }
            }
            ServerMsg::Error { code, message } => {
                shared.error(format!("session {index}: Error {code:?}: {message}"))
            }
            other => shared.error(format!("session {index}: unexpected {other:?}")),
        }
    }
}

/// Churn scenario for one session: the initiator of each of its matches
/// stops it at once; until `stop` is cancelled. Then two rounds of pings
/// separated by a barrier make sure every message of every match has arrived.
async fn churn_session(
    mut session: Session,
    first: MatchInfo,
    stop: CancellationToken,
    barrier: Arc<Barrier>,
    shared: Arc<Shared>,
) -> ChurnOutcome {
    let index = session.index;
    let mut state = ChurnState {
        index,
        current: Some((first.match_id, first.partner)),
        log: vec![MatchRecord {
            match_id: first.match_id,
            me: index,
            partner: first.partner,
            initiator: first.initiator,
        }],
        want_stop: first.initiator,
        counting: true,
    };
    let limit = Duration::from_secs(shared.args.duration_secs + shared.args.phase_timeout_secs);
    let churn = async {
        loop {
            if state.want_stop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    _ = session.frames.ready() => {}
                }
                session.send_now(&ClientMsg::Stop).await?;
                state.want_stop = false;
                state.current = None;
            }
            let msg = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                msg = session.next_msg() => msg?,
            };
            state.on_msg(msg, false, &shared);
        }
        // Every Stop this session sent has now been handled by the server.
        session
            .ping(1 << 41, |msg| state.on_msg(msg, true, &shared))
            .await
    };
    let first_round = timeout(limit, churn).await;
    match &first_round {
        Ok(Ok(())) => {}
        Ok(Err(error)) => shared.error(format!("session {index}: churn: {error:#}")),
        Err(_) => shared.error(format!("session {index}: churn did not finish in time")),
    }
    barrier.wait().await;
    state.counting = false;
    if matches!(first_round, Ok(Ok(()))) {
        // Every Stop of every session has been handled: whatever they caused
        // is queued ahead of this pong.
        let second = timeout(
            limit,
            session.ping(1 << 42, |msg| state.on_msg(msg, true, &shared)),
        )
        .await;
        match second {
            Ok(Ok(())) => {}
            Ok(Err(error)) => shared.error(format!("session {index}: final ping: {error:#}")),
            Err(_) => shared.error(format!("session {index}: final ping timed out")),
        }
    }
    ChurnOutcome {
        session,
        log: state.log,
    }
}

/// Checks that both sides of every match saw the same match.
fn check_match_logs(logs: &[MatchRecord], shared: &Shared) -> u64 {
    let mut by_match: HashMap<u64, Vec<&MatchRecord>> = HashMap::with_capacity(logs.len() / 2 + 1);
    for record in logs {
        by_match.entry(record.match_id).or_default().push(record);
    }
    for (match_id, sides) in &by_match {
        let ok = match sides.as_slice() {
            [a, b] => a.partner == b.me && b.partner == a.me && a.initiator != b.initiator,
            _ => false,
        };
        if !ok {
            shared.misrouted(format!("match {match_id} seen inconsistently: {sides:?}"));
        }
    }
    by_match.len() as u64
}

// ---------------------------------------------------------------------------
// The run.

/// Everything the report needs, filled as the run goes.
#[derive(Default)]
struct Figures {
    idle: Sample,
    connected: Option<Phase>,
    joined: Option<Phase>,
    scenario: Option<Phase>,
    rss_connected: Option<u64>,
    rss_after: Option<u64>,
    sessions: u64,
    latencies: Vec<u64>,
    matches_checked: Option<u64>,
    end: Sample,
    sessions_left_after: Option<u64>,
    server_socket_drops: Option<u64>,
    generator_socket_drops: Option<u64>,
}

async fn run(args: Args) -> anyhow::Result<(Value, bool)> {
    ensure!(args.pairs >= 1, "--pairs must be at least 1");
    ensure!(
        (64..=MAX_SDP_LEN).contains(&args.payload_bytes),
        "--payload-bytes must be from 64 to {MAX_SDP_LEN}"
    );
    ensure!(
        (64..=MAX_CHAT_LEN).contains(&args.chat_bytes),
        "--chat-bytes must be from 64 to {MAX_CHAT_LEN}"
    );
    let server = loopback_addr(&authority(&args.url, "https://")?)?;
    authority(&args.http, "http://").and_then(|a| loopback_addr(&a))?;
    let hash = if args.insecure {
        None
    } else {
        Some(certificate_hash(&args).await?)
    };
    let ticks = clock_ticks();
    if let Some(granted) = udp_buffer_granted(&args)
        && granted < args.udp_buffer_bytes
    {
        eprintln!(
            "quicmatch-load: warning: the kernel granted {granted} of {} socket buffer bytes; raise net.core.rmem_max/wmem_max",
            args.udp_buffer_bytes
        );
    }
    let endpoints: Vec<Arc<Endpoint<endpoint_side::Client>>> = (0..args.connectors)
        .map(|_| endpoint(&args, server, hash).map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    let sessions_before = server_sessions(&args).await;
    let own_ports: Vec<u16> = endpoints
        .iter()
        .filter_map(|e| e.local_addr().ok().map(|a| a.port()))
        .collect();
    let drops_before = (socket_drops(&[server.port()]), socket_drops(&own_ports));

    let shared = Arc::new(Shared {
        args: args.clone(),
        counters: Counters::default(),
        failures: Failures::default(),
        epoch: Instant::now(),
        phase: Mutex::new("connect"),
    });
    let progress = (!args.quiet).then(|| tokio::spawn(progress(shared.clone())));
    let phase_limit = Duration::from_secs(args.phase_timeout_secs);
    let total = args.pairs * 2;
    let mut figures = Figures {
        sessions: u64::from(total),
        ..Figures::default()
    };
    let pid = args.server_pid;

    // Connect.
    figures.idle = sample(pid);
    let url: Arc<str> = Arc::from(args.url.as_str());
    let permits = Arc::new(Semaphore::new(args.connect_concurrency as usize));
    let mut set = JoinSet::new();
    for index in 0..total {
        let endpoint = endpoints[(index % args.connectors) as usize].clone();
        let (url, permits, shared) = (url.clone(), permits.clone(), shared.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.ok();
            let result = connect_one(endpoint, url, index, &shared).await;
            if result.is_ok() {
                Counters::add(&shared.counters.connected, 1);
            }
            result
        });
    }
    let mut sessions: Vec<Session> = Vec::with_capacity(total as usize);
    for result in collect(
        &mut set,
        Instant::now() + phase_limit,
        &shared,
        "connect phase",
    )
    .await
    {
        match result {
            Ok(session) => sessions.push(session),
            Err(error) => shared.error(format!("{error:#}")),
        }
    }
    let connected = sample(pid);
    figures.connected = Some(phase(&figures.idle, &connected, ticks));

    // Join, only when everyone is connected: otherwise someone is unmatched.
    let mut matched: Vec<(Session, MatchInfo)> = Vec::with_capacity(sessions.len());
    if sessions.len() == total as usize {
        shared.set_phase("join");
        let mut set = JoinSet::new();
        for mut session in sessions.drain(..) {
            let shared = shared.clone();
            set.spawn(async move {
                let result = join_one(&mut session).await;
                if result.is_ok() {
                    Counters::add(&shared.counters.matched, 1);
                }
                (session, result)
            });
        }
        for (session, result) in collect(
            &mut set,
            Instant::now() + phase_limit,
            &shared,
            "join phase",
        )
        .await
        {
            match result {
                Ok(info) => matched.push((session, info)),
                Err(error) => {
                    shared.error(format!("{error:#}"));
                    sessions.push(session);
                }
            }
        }
        let joined = sample(pid);
        figures.joined = Some(phase(&connected, &joined, ticks));
        figures.rss_connected = joined.server_rss_kib;
    } else {
        shared.fail(format!(
            "only {} of {total} sessions connected",
            sessions.len()
        ));
    }

    // Check every match against its partner's, then form the pairs.
    matched.sort_by_key(|(s, _)| s.index);
    let mut slots: Vec<Option<(Session, MatchInfo)>> = (0..total).map(|_| None).collect();
    for (session, info) in matched {
        let index = session.index as usize;
        slots[index] = Some((session, info));
    }
    let mut pairs: Vec<Pair> = Vec::with_capacity(args.pairs as usize);
    let mut firsts: Vec<(Session, MatchInfo)> = Vec::new();
    for index in 0..total as usize {
        let Some((_, info)) = &slots[index] else {
            continue;
        };
        let info = *info;
        if !info.initiator {
            continue;
        }
        let partner = info.partner as usize;
        let consistent = matches!(
            slots.get(partner),
            Some(Some((_, theirs))) if theirs.partner as usize == index && theirs.match_id == info.match_id && !theirs.initiator
        );
        if !consistent {
            shared.misrouted(format!(
                "session {index}: match {} is not mirrored by its partner {partner}",
                info.match_id
            ));
            continue;
        }
        let (Some((initiator, a)), Some((responder, b))) =
            (slots[index].take(), slots[partner].take())
        else {
            continue;
        };
        if args.scenario == Scenario::Churn {
            firsts.push((initiator, a));
            firsts.push((responder, b));
        } else {
            pairs.push(Pair {
                id: pairs.len(),
                match_id: info.match_id,
                initiator,
                responder,
            });
        }
    }
    for (session, info) in slots.into_iter().flatten() {
        shared.misrouted(format!(
            "session {}: match {} has no consistent partner",
            session.index, info.match_id
        ));
        sessions.push(session);
    }
    let healthy = Counters::get(&shared.counters.misrouted) == 0
        && shared.failures.total.load(Ordering::Relaxed) == 0;

    // The scenario.
    let started = sample(pid);
    let scenario_start = Instant::now();
    match args.scenario {
        Scenario::Connect => {}
        Scenario::Relay | Scenario::Chat if healthy => {
            shared.set_phase(args.scenario.name());
            let mut set = JoinSet::new();
            for pair in pairs.drain(..) {
                let shared = shared.clone();
                if args.scenario == Scenario::Relay {
                    set.spawn(relay_pair(pair, shared, scenario_start));
                } else {
                    set.spawn(chat_pair(pair, shared, scenario_start));
                }
            }
            for outcome in
                collect(&mut set, Instant::now() + phase_limit, &shared, "scenario").await
            {
                figures.latencies.extend(outcome.latencies);
                sessions.extend(outcome.sessions);
            }
            figures.scenario = Some(phase(&started, &sample(pid), ticks));
        }
        Scenario::Churn if healthy => {
            shared.set_phase("churn");
            if args.pairs < 2 {
                eprintln!(
                    "quicmatch-load: churn with one pair cannot re-match (never the previous partner)"
                );
            }
            let stop = CancellationToken::new();
            let barrier = Arc::new(Barrier::new(firsts.len() + 1));
            let mut set = JoinSet::new();
            for (session, info) in firsts.drain(..) {
                set.spawn(churn_session(
                    session,
                    info,
                    stop.clone(),
                    barrier.clone(),
                    shared.clone(),
                ));
            }
            tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
            stop.cancel();
            // Every session has pinged after its last Stop: the churn is over.
            if timeout(phase_limit, barrier.wait()).await.is_err() {
                shared.fail("churn: sessions never finished".into());
            }
            figures.scenario = Some(phase(&started, &sample(pid), ticks));
            let mut logs = Vec::new();
            for outcome in collect(
                &mut set,
                Instant::now() + phase_limit,
                &shared,
                "churn drain",
            )
            .await
            {
                logs.extend(outcome.log);
                sessions.push(outcome.session);
            }
            figures.matches_checked = Some(check_match_logs(&logs, &shared));
        }
        _ => {
            shared.fail("scenario skipped: the set-up already failed".into());
            for pair in pairs.drain(..) {
                sessions.push(pair.initiator);
                sessions.push(pair.responder);
            }
            for (session, _) in firsts.drain(..) {
                sessions.push(session);
            }
        }
    }

    // Teardown: close everything, wait until the server has let go.
    shared.set_phase("teardown");
    for pair in pairs.drain(..) {
        sessions.push(pair.initiator);
        sessions.push(pair.responder);
    }
    for (session, _) in firsts.drain(..) {
        sessions.push(session);
    }
    for session in &sessions {
        session.close();
    }
    drop(sessions);
    let deadline = Instant::now() + Duration::from_secs(3);
    for endpoint in &endpoints {
        let _ = timeout_at(deadline, endpoint.wait_idle()).await;
    }
    if let Some(before) = sessions_before {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut interval = tokio::time::interval(Duration::from_millis(50));
        loop {
            interval.tick().await;
            let now = server_sessions(&args).await;
            figures.sessions_left_after = now.map(|n| n.saturating_sub(before));
            if now.is_none_or(|n| n <= before) || Instant::now() >= deadline {
                break;
            }
        }
    }
    figures.end = sample(pid);
    let delta = |before: Option<u64>, after: Option<u64>| Some(after?.saturating_sub(before?));
    figures.server_socket_drops = delta(drops_before.0, socket_drops(&[server.port()]));
    figures.generator_socket_drops = delta(drops_before.1, socket_drops(&own_ports));
    figures.rss_after = figures.end.server_rss_kib;
    if let Some(progress) = progress {
        progress.abort();
    }
    Ok(report(&shared, &mut figures))
}

/// Builds the JSON line; the bool says whether the run passed.
fn report(shared: &Shared, f: &mut Figures) -> (Value, bool) {
    let args = &shared.args;
    let c = &shared.counters;
    let delivered = Counters::get(&c.delivered);
    let lost = Counters::get(&c.lost);
    let misrouted = Counters::get(&c.misrouted);
    let errors = Counters::get(&c.errors);
    let matches = Counters::get(&c.matches);
    let failures_total = shared.failures.total.load(Ordering::Relaxed);
    let connected = Counters::get(&c.connected);
    let matched = Counters::get(&c.matched);
    let drops = match (f.idle.udp, f.end.udp) {
        (Some(a), Some(b)) => json!({
            "server_socket": f.server_socket_drops,
            "generator_sockets": f.generator_socket_drops,
            "rcvbuf_errors": b.rcvbuf_errors.saturating_sub(a.rcvbuf_errors),
            "sndbuf_errors": b.sndbuf_errors.saturating_sub(a.sndbuf_errors),
            "in_errors": b.in_errors.saturating_sub(a.in_errors),
        }),
        _ => Value::Null,
    };
    let connect = f.connected;
    let join = f.joined;
    let setup_secs = connect.map(|p| p.secs).unwrap_or(0.0) + join.map(|p| p.secs).unwrap_or(0.0);
    let scenario_secs = f.scenario.map(|p| p.secs).unwrap_or(0.0);
    let scenario_cpu = f.scenario.and_then(|p| p.server_cpu_us);
    let idle_rss = f.idle.server_rss_kib;
    let per_session_kib = match (idle_rss, f.rss_connected) {
        (Some(idle), Some(conn)) if f.sessions > 0 => {
            json!(round2(conn.saturating_sub(idle) as f64 / f.sessions as f64))
        }
        _ => Value::Null,
    };
    // Chat datagrams may be lost by design; relay messages may not.
    let loss_fails = args.scenario != Scenario::Chat && lost > 0;
    let ok = failures_total == 0 && misrouted == 0 && errors == 0 && !loss_fails;
    // UDP datagrams (both directions, both sides) per message or match: what
    // QUIC costs beyond the bytes.
    let scenario_udp = f.scenario.and_then(|p| p.udp_in);
    let datagrams_per_event = match args.scenario {
        Scenario::Relay | Scenario::Chat => per(scenario_udp, delivered),
        Scenario::Churn => per(scenario_udp, matches),
        Scenario::Connect => per(join.and_then(|p| p.udp_in), matched / 2),
    };
    let (messages_per_sec, cpu_per_message) = match args.scenario {
        Scenario::Relay | Scenario::Chat => {
            (rate(delivered, scenario_secs), per(scenario_cpu, delivered))
        }
        _ => (Value::Null, Value::Null),
    };
    let (matches_per_sec, cpu_per_match) = match args.scenario {
        Scenario::Churn => (rate(matches, scenario_secs), per(scenario_cpu, matches)),
        _ => (
            rate(matched / 2, join.map(|p| p.secs).unwrap_or(0.0)),
            per(join.and_then(|p| p.server_cpu_us), matched / 2),
        ),
    };
    let failures = shared
        .failures
        .kept
        .lock()
        .map(|k| k.clone())
        .unwrap_or_default();
    let value = json!({
        "scenario": args.scenario.name(),
        "ok": ok,
        "pairs": args.pairs,
        "sessions": f.sessions,
        "messages_per_pair": matches!(args.scenario, Scenario::Relay | Scenario::Chat).then_some(args.messages),
        "payload_bytes": match args.scenario { Scenario::Relay => Some(args.payload_bytes), Scenario::Chat => Some(args.chat_bytes), _ => None },
        "connectors": args.connectors,
        "frame_rate": args.frame_rate,
        "datagram_rate": args.datagram_rate,
        "connected": connected,
        "matched": matched,
        "connect": connect.as_ref().map(phase_json),
        "join": join.as_ref().map(phase_json),
        "scenario_phase": f.scenario.as_ref().map(phase_json),
        "connected_and_matched_ms": round2(setup_secs * 1000.0),
        "server_cpu_us_per_session_connect": per(connect.and_then(|p| p.server_cpu_us), connected),
        "latency": latency_json(&mut f.latencies),
        "messages": delivered,
        "messages_per_sec": messages_per_sec,
        "server_cpu_us_per_message": cpu_per_message,
        "matches": if args.scenario == Scenario::Churn { matches } else { matched / 2 },
        "matches_per_sec": matches_per_sec,
        "server_cpu_us_per_match": cpu_per_match,
        "matches_checked": f.matches_checked,
        "server_rss_kib": {
            "idle": idle_rss,
            "connected": f.rss_connected,
            "after_leave": f.rss_after,
            "per_session": per_session_kib,
        },
        "server_sessions_left_after": f.sessions_left_after,
        "udp_drops": drops,
        "udp_datagrams_per_event": datagrams_per_event,
        "lost": lost,
        "late": Counters::get(&c.late),
        "chat_acks": (args.scenario == Scenario::Chat).then(|| Counters::get(&c.acks)),
        "misrouted": misrouted,
        "errors": errors,
        "failures_total": failures_total,
        "failures": failures,
    });
    (value, ok)
}

/// Prints a progress line on stderr every two seconds.
async fn progress(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(Duration::from_secs(2));
    interval.tick().await;
    loop {
        interval.tick().await;
        let c = &shared.counters;
        let phase = *shared.phase.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!(
            "quicmatch-load: [{:.0}s] {phase}: connected {}, matched {}, delivered {}, matches {}, lost {}, misrouted {}, errors {}",
            shared.epoch.elapsed().as_secs_f64(),
            Counters::get(&c.connected),
            Counters::get(&c.matched),
            Counters::get(&c.delivered),
            Counters::get(&c.matches),
            Counters::get(&c.lost),
            Counters::get(&c.misrouted),
            Counters::get(&c.errors),
        );
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("quicmatch-load: {error}");
            return ExitCode::from(2);
        }
    };
    let scenario = args.scenario.name();
    match runtime.block_on(run(args)) {
        Ok((report, ok)) => {
            println!("{report}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("quicmatch-load: {error:#}");
            println!(
                "{}",
                json!({ "scenario": scenario, "ok": false, "error": format!("{error:#}") })
            );
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_pads() {
        let text = payload(12, 34, 56, 789, 200);
        assert_eq!(text.len(), 200);
        assert_eq!(
            parse_payload(&text),
            Some(Stamp {
                pair: 12,
                seq: 34,
                match_id: 56,
                sent_ns: 789
            })
        );
        assert_eq!(parse_payload("p=1 s=x m=1 t=1 "), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let j = latency_json(&mut v);
        assert_eq!(j["p50_us"], 50.0);
        assert_eq!(j["p99_us"], 99.0);
        assert_eq!(j["max_us"], 100.0);
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
    }

    #[test]
    fn only_loopback_is_accepted() {
        assert!(loopback_addr("127.0.0.1:5000").is_ok());
        assert!(loopback_addr("[::1]:5000").is_ok());
        assert!(loopback_addr("192.0.2.1:5000").is_err());
        assert_eq!(
            authority("https://127.0.0.1:5000/signal", "https://").unwrap(),
            "127.0.0.1:5000"
        );
    }

    #[test]
    fn proc_self_is_readable() {
        assert!(cpu_ticks("/proc/self/stat").is_some());
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }
}

//! Server configuration: command-line flags, each with an environment fallback.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::protocol::DEFAULT_MIN_AGE;

/// Source ports whose packets are never answered: services that reply to
/// a single UDP packet, so a packet "from" them is likely spoofed, to make
/// the server send its answer at them (s2n-quic's list).
pub const DEFAULT_IGNORED_SOURCE_PORTS: &str = "0,17,19,53,111,123,137,138,161,389,500";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the span's fields (session id, match id).
    Json,
}

/// Everything an operator can set; `quicmatch --help` explains each.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "quicmatch",
    version,
    about = "WebTransport signaling server for random one-to-one video chat"
)]
pub struct Config {
    /// UDP port of the WebTransport endpoint (and, unless --http-port is given, the TCP port of the HTTP sidecar). 0 picks a free port.
    #[arg(long, env = "PORT", default_value_t = 5000)]
    pub port: u16,

    /// TCP port of the HTTP sidecar (/health, /api/stats, /api/webtransport, the web app). Defaults to --port.
    #[arg(long, env = "HTTP_PORT")]
    pub http_port: Option<u16>,

    /// Addresses to listen on, repeatable or comma-separated. `::` listens on every IPv4 and IPv6 address.
    #[arg(long, env = "BIND", value_delimiter = ',', default_value = "::")]
    pub bind: Vec<IpAddr>,

    /// PEM certificate chain. Without it (and without certs/cert.pem), a self-signed certificate is made and rotated.
    #[arg(long, env = "CERT", requires = "key")]
    pub cert: Option<PathBuf>,

    /// PEM private key of --cert.
    #[arg(long, env = "KEY", requires = "cert")]
    pub key: Option<PathBuf>,

    /// How often to check --cert and --key for changes (a renewal by certbot, say) and reload them, in seconds; 0: only on SIGHUP. Sessions already open keep their certificate.
    #[arg(long, env = "CERT_WATCH_SECS", default_value_t = 5)]
    pub cert_watch_secs: u64,

    /// Ignore certs/cert.pem and certs/key.pem: without --cert, always make a self-signed certificate.
    #[arg(long, env = "SELF_SIGNED")]
    pub self_signed: bool,

    /// Host names and addresses the self-signed certificate is valid for, besides localhost, 127.0.0.1 and ::1.
    #[arg(long = "cert-name", env = "CERT_NAMES", value_delimiter = ',')]
    pub cert_names: Vec<String>,

    /// Youngest age a profile may give.
    #[arg(long, env = "MIN_AGE", default_value_t = DEFAULT_MIN_AGE, value_parser = clap::value_parser!(u8).range(1..=120))]
    pub min_age: u8,

    /// Most sessions at once; a session over it is closed with code 4.
    #[arg(long, env = "MAX_SESSIONS", default_value_t = 20_000)]
    pub max_sessions: usize,

    /// Signaling frames a session may send per second (burst the same). At least 50, as the protocol promises.
    #[arg(long, env = "FRAME_RATE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(50..))]
    pub frame_rate: u32,

    /// Chat datagrams a session may send per second (burst the same). At least 20, as the protocol promises.
    #[arg(long, env = "DATAGRAM_RATE", default_value_t = 40, value_parser = clap::value_parser!(u32).range(20..))]
    pub datagram_rate: u32,

    /// Bytes a session's outbound queue may hold; a session that does not read its stream past this is closed (code 2).
    #[arg(long, env = "OUTBOUND_QUEUE_BYTES", default_value_t = 256 * 1024, value_parser = clap::value_parser!(u64).range(2 * 65_540..=1 << 30))]
    pub outbound_queue_bytes: u64,

    /// Seconds of silence after which a session is considered lost.
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..=600))]
    pub idle_timeout_secs: u64,

    /// Seconds between the server's keep-alive packets, which keep an idle browser tab connected.
    #[arg(long, env = "KEEP_ALIVE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub keep_alive_secs: u64,

    /// Runtime worker threads; 1 runs everything on one thread, which costs the least CPU per message. Defaults to one per core.
    #[arg(long, env = "THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// Log lines as `text` (for people) or `json` (one object per line, for log pipelines). Which lines: RUST_LOG (default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// On SIGTERM, how long /health answers "draining" (HTTP 503) before sessions are closed, so that a load balancer stops sending people here first, in seconds; 0 closes them at once.
    #[arg(long, env = "DRAIN_SECS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub drain_secs: u64,

    /// Kernel UDP receive and send buffer size in bytes (raise net.core.rmem_max / wmem_max to allow large values, or run with CAP_NET_ADMIN, which sets them past those limits).
    #[arg(long, env = "UDP_BUFFER_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub udp_buffer_bytes: usize,

    /// STUN server URLs handed to matched clients, repeatable or comma-separated (e.g. stun:stun.example.org:3478).
    #[arg(long = "stun", env = "STUN_URLS", value_delimiter = ',')]
    pub stun_urls: Vec<String>,

    /// TURN server URLs, repeatable or comma-separated; credentials are minted per match from --turn-secret.
    #[arg(
        long = "turn",
        env = "TURN_URLS",
        value_delimiter = ',',
        requires = "turn_secret"
    )]
    pub turn_urls: Vec<String>,

    /// Shared secret of the TURN server (coturn's static-auth-secret with use-auth-secret).
    #[arg(long, env = "TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,

    /// Lifetime of minted TURN credentials, in seconds.
    #[arg(long, env = "TURN_TTL_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(60..=30 * 86_400))]
    pub turn_ttl_secs: u64,

    /// Label after the expiry in minted TURN usernames (`expiry:label`).
    #[arg(long, env = "TURN_LABEL", default_value = "quicmatch")]
    pub turn_label: String,

    /// Origins (`scheme://host[:port]`) whose pages may open sessions, repeatable or comma-separated; `*` allows any. Default: pages on a loopback host or on one of this server's names (--cert-name, the host of --public-url). Requests without an Origin (native clients) are not affected.
    #[arg(
        long = "allowed-origin",
        env = "ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Require a join token signed with this HS256 secret (at least 32 bytes) in the session URL (`/signal?token=…`); with --jwt-public-key, either may sign.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Require a join token signed with the private half of this PEM public key (ES256 on P-256, or EdDSA on Ed25519).
    #[arg(long, env = "JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// QUIC handshakes in flight past which a client whose address is not yet proven is first sent a stateless Retry (one more round trip; a spoofed or never-answering source then costs nothing). At most --handshake-limit.
    #[arg(long, env = "HANDSHAKE_SOFT_LIMIT", default_value_t = 64)]
    pub handshake_soft_limit: usize,

    /// QUIC handshakes in flight past which new connections are refused (from any source).
    #[arg(long, env = "HANDSHAKE_LIMIT", default_value_t = 256)]
    pub handshake_limit: usize,

    /// Seconds from a connection's first packet to its signaling stream (QUIC handshake, HTTP/3 SETTINGS, CONNECT, stream); past it the attempt is dropped.
    #[arg(long, env = "HANDSHAKE_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub handshake_timeout_secs: u64,

    /// UDP source ports whose packets are never answered (reflection-prone services: a packet "from" them is likely spoofed), comma-separated.
    #[arg(
        long = "ignored-source-port",
        env = "IGNORED_SOURCE_PORTS",
        value_delimiter = ',',
        default_value = DEFAULT_IGNORED_SOURCE_PORTS
    )]
    pub ignored_source_ports: Vec<u16>,

    /// Networks exempt from the Retry and the per-source limits (CIDR or address, comma-separated; `none` trusts no one): only networks whose addresses cannot be spoofed from outside. The hard handshake limit, the session cap and the memory ceiling still apply.
    #[arg(
        long = "trusted-net",
        env = "TRUSTED_NETS",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub trusted_nets: Vec<crate::frontdoor::TrustedNet>,

    /// Sessions one source (an IPv4 address, or an IPv6 /64) may hold at once; more are answered 429. Raise it for users behind a shared (carrier-grade) NAT.
    #[arg(long, env = "SOURCE_SESSIONS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub source_sessions: u32,

    /// New sessions a second one source may open, on average; faster ones are answered 429.
    #[arg(long, env = "SOURCE_RATE", default_value_t = 8.0, value_parser = positive_rate)]
    pub source_rate: f64,

    /// New sessions one source may open at once after a quiet while (the rate's burst).
    #[arg(long, env = "SOURCE_BURST", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub source_burst: u32,

    /// Memory the server may use (e.g. `2GiB`): the session cap is lowered so that every session's worst case fits, and new sessions are refused (Closing code 4) while the resident memory is over it. Without it, the worst case at --max-sessions is logged at start.
    #[arg(long, env = "MEMORY_BUDGET", value_parser = crate::frontdoor::budget::parse_bytes)]
    pub memory_budget: Option<u64>,

    /// Join a matching pool shared by several nodes through Redis (`redis://[user:password@]host:port[/db]`, or `rediss://` for TLS). With --redis-cluster, one or more seed nodes of a Redis Cluster, repeatable or comma-separated. Without it, this process is the whole pool.
    #[arg(
        long = "redis",
        env = "REDIS_URL",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub redis_urls: Vec<String>,

    /// The --redis URLs are seed nodes of a Redis Cluster (the pool's keys share one hash tag, so they live on one shard).
    #[arg(long, env = "REDIS_CLUSTER")]
    pub redis_cluster: bool,

    /// Name of the pool in Redis; every key carries it as its hash tag (`{quicmatch}:…`), so one Redis can hold several pools.
    #[arg(long, env = "REDIS_POOL", default_value = "quicmatch", value_parser = pool_name)]
    pub redis_pool: String,

    /// The URL browsers open a session on this node with (`https://host:port/signal`): what /api/webtransport answers (behind NAT or a port mapping, say), and in a pool what this node announces so that any node's /api/webtransport can send people here.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
}

/// A rate: a finite number above zero.
fn positive_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err("a number above 0".into()),
    }
}

/// A pool name: what may stand inside a hash tag and a channel name.
fn pool_name(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if valid {
        Ok(value.to_owned())
    } else {
        Err("1 to 64 letters, digits, '-', '_' or '.'".into())
    }
}

impl Config {
    /// How long a silent session lives.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// Interval of the server's keep-alive packets.
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_secs)
    }
}

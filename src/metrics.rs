//! Prometheus metrics, served as text on the sidecar's `GET /metrics`.
//!
//! Call sites use the `metrics` facade; `metrics-exporter-prometheus` keeps
//! the values and renders them. Labels are few and fixed (message kinds,
//! protocol codes, handshake outcomes, Redis operations): never a session, a
//! name or an address. Gauges of the current state (sessions, queues, the
//! process's CPU and memory) are set when the page is scraped, from the hub
//! and `/proc`, so they cost nothing in between.
//!
//! The hot paths (relays, chat) use handles made once ([`hot`]) instead of
//! looking a metric up by name at every message.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::hub::Hub;
use crate::protocol::{CloseCode, ErrorCode};

/// Histogram buckets of every `_seconds` metric: from 10 µs (a relay through
/// an idle server) to 5 minutes (a long wait for a match).
const BUCKETS: [f64; 22] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static HOT: OnceLock<Hot> = OnceLock::new();

/// Handles of the metrics counted on every relayed or chat message.
pub struct Hot {
    /// Relayed `Offer`, `Answer` and `Ice` frames.
    pub relayed: [Counter; 3],
    /// Forwarded `Chat` and `ChatAck` datagrams.
    pub chat: [Counter; 2],
    /// Time from a relay entering its partner's queue to being written.
    pub relay_seconds: Histogram,
}

/// The installed metrics' hot-path handles, once [`install`] has run.
pub fn hot() -> Option<&'static Hot> {
    HOT.get()
}

/// Installs the process-wide recorder (once; several servers in one process
/// share it) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            // Only fails for an empty bucket list.
            let builder = builder
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // If another recorder was installed first, this page stays empty
            // rather than failing the server.
            if metrics::set_global_recorder(recorder).is_ok() {
                describe();
                zero_counters();
                let _ = HOT.set(Hot {
                    relayed: ["offer", "answer", "ice"]
                        .map(|kind| counter!("quicmatch_relayed_frames_total", "kind" => kind)),
                    chat: ["chat", "ack"]
                        .map(|kind| counter!("quicmatch_chat_datagrams_total", "kind" => kind)),
                    relay_seconds: histogram!("quicmatch_relay_seconds"),
                });
            }
            handle
        })
        .clone()
}

/// Creates every counter of a fixed label set at zero, so that a page shows
/// "none yet" as 0 rather than nothing, and `rate()` sees the first event.
fn zero_counters() {
    const HANDSHAKES: [&str; 13] = [
        "accepted",
        "at_capacity",
        "over_memory",
        "shutting_down",
        "not_found",
        "forbidden",
        "source_sessions",
        "source_rate",
        "no_stream",
        "failed",
        "retried",
        "refused",
        "ignored",
    ];
    for outcome in HANDSHAKES {
        counter!("quicmatch_handshakes_total", "outcome" => outcome).absolute(0);
    }
    for kind in ["join", "stop", "leave"] {
        counter!("quicmatch_requests_total", "kind" => kind).absolute(0);
    }
    counter!("quicmatch_matches_total").absolute(0);
    for code in ErrorCode::ALL {
        counter!("quicmatch_errors_total", "code" => code.label()).absolute(0);
    }
    for code in CloseCode::ALL {
        counter!("quicmatch_closes_total", "code" => code.label()).absolute(0);
    }
    for kind in ["frame", "datagram"] {
        counter!("quicmatch_rate_limited_total", "kind" => kind).absolute(0);
    }
}

fn describe() {
    describe_gauge!("quicmatch_sessions", "Sessions connected to this node.");
    describe_gauge!(
        "quicmatch_waiting",
        "This node's sessions waiting for a match, by gender."
    );
    describe_gauge!(
        "quicmatch_matched_sessions",
        "This node's sessions in a match."
    );
    describe_gauge!("quicmatch_draining", "1 while the server is shutting down.");
    describe_gauge!(
        "quicmatch_pool_sessions",
        "Sessions of the whole shared pool (as of the last heartbeat)."
    );
    describe_gauge!(
        "quicmatch_pool_matches",
        "Matches in the whole shared pool."
    );
    describe_gauge!(
        "quicmatch_pool_waiting",
        "Sessions waiting in the shared pool's queues, by gender."
    );
    describe_gauge!("quicmatch_pool_nodes", "Live nodes in the shared pool.");
    describe_gauge!(
        "quicmatch_redis_up",
        "1 if this node's last heartbeat reached Redis."
    );
    describe_counter!(
        "quicmatch_handshakes_total",
        "Incoming connections by outcome: accepted; at_capacity, over_memory (Closing code 4); shutting_down; not_found; forbidden (origin or join token, 403); source_sessions, source_rate (per-source limits, 429); no_stream; failed (handshake error or timeout); and on the first packet: retried (stateless Retry), refused (handshake limit), ignored (reflection-prone source port)."
    );
    describe_gauge!(
        "quicmatch_handshakes_in_flight",
        "Connections between their first packet and their signaling stream, counted against --handshake-soft-limit and --handshake-limit."
    );
    describe_counter!(
        "quicmatch_requests_total",
        "Join, Stop and Leave requests, by kind (join, stop, leave)."
    );
    describe_counter!(
        "quicmatch_matches_total",
        "Matches made (counted once, on the initiator's node)."
    );
    describe_counter!(
        "quicmatch_relayed_frames_total",
        "Frames relayed to a partner, by kind (offer, answer, ice)."
    );
    describe_counter!(
        "quicmatch_chat_datagrams_total",
        "Datagrams forwarded to a partner, by kind (chat, ack)."
    );
    describe_counter!(
        "quicmatch_errors_total",
        "Error frames sent, by code (bad_frame, invalid_profile, not_joined, already_joined, not_matched, too_large, rate_limited, server_busy)."
    );
    describe_counter!(
        "quicmatch_closes_total",
        "Sessions closed, by code (normal, protocol_violation, abuse, shutting_down, at_capacity)."
    );
    describe_counter!(
        "quicmatch_rate_limited_total",
        "Messages dropped by the rate limits, by kind (frame, datagram)."
    );
    describe_counter!(
        "quicmatch_redis_errors_total",
        "Failed calls of the shared pool's script, by operation."
    );
    describe_histogram!(
        "quicmatch_session_setup_seconds",
        Unit::Seconds,
        "From a session's first packet to its admission."
    );
    describe_histogram!(
        "quicmatch_match_wait_seconds",
        Unit::Seconds,
        "From Join (or the end of a match) to Matched."
    );
    describe_histogram!(
        "quicmatch_relay_seconds",
        Unit::Seconds,
        "From a relayed frame entering its partner's queue to being written to the partner's stream."
    );
    describe_histogram!(
        "quicmatch_redis_call_seconds",
        Unit::Seconds,
        "Calls of the shared pool's script, by operation."
    );
    describe_counter!(
        "process_cpu_seconds_total",
        Unit::Seconds,
        "User and system CPU time of the process."
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident set size of the process."
    );
    describe_gauge!("process_open_fds", "Open file descriptors of the process.");
    describe_gauge!("process_threads", "Threads of the process.");
}

/// The page: current gauges set from `hub` and `/proc`, then every metric.
pub fn render(handle: &PrometheusHandle, hub: &Hub) -> String {
    let own = hub.node_stats();
    gauge!("quicmatch_sessions").set(own.active_users as f64);
    // One process counts matches; a node of a pool, its sessions in one.
    let matched = match hub.cluster() {
        Some(_) => own.active_matches,
        None => own.active_matches * 2,
    };
    gauge!("quicmatch_matched_sessions").set(matched as f64);
    gauge!("quicmatch_waiting", "gender" => "male").set(own.male_queue as f64);
    gauge!("quicmatch_waiting", "gender" => "female").set(own.female_queue as f64);
    gauge!("quicmatch_draining").set(f64::from(u8::from(hub.is_draining())));
    if hub.cluster().is_some() {
        let view = hub.pool_view();
        gauge!("quicmatch_pool_sessions").set(view.pool.active_users as f64);
        gauge!("quicmatch_pool_matches").set(view.pool.active_matches as f64);
        gauge!("quicmatch_pool_waiting", "gender" => "male").set(view.pool.male_queue as f64);
        gauge!("quicmatch_pool_waiting", "gender" => "female").set(view.pool.female_queue as f64);
        gauge!("quicmatch_pool_nodes").set(view.nodes.len() as f64);
        gauge!("quicmatch_redis_up").set(f64::from(u8::from(view.reachable)));
    }
    process_figures();
    handle.run_upkeep();
    handle.render()
}

/// CPU time, RSS, open descriptors and threads of this process, from `/proc`.
fn process_figures() {
    let ticks = 100.0; // USER_HZ: 100 on every Linux platform Rust targets.
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(rest) = stat.rfind(')').and_then(|at| stat.get(at + 1..))
    {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        if let (Some(utime), Some(stime)) = (field(11), field(12)) {
            counter!("process_cpu_seconds_total").absolute(((utime + stime) / ticks) as u64);
        }
        if let Some(threads) = field(17) {
            gauge!("process_threads").set(threads);
        }
    }
    if let Some(bytes) = crate::frontdoor::budget::resident_bytes() {
        gauge!("process_resident_memory_bytes").set(bytes as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge!("process_open_fds").set(fds.count() as f64);
    }
}

/// An incoming session's outcome.
pub fn handshake(outcome: &'static str) {
    counter!("quicmatch_handshakes_total", "outcome" => outcome).increment(1);
}

/// A session was admitted `took` after its first packet.
pub fn session_set_up(took: Duration) {
    histogram!("quicmatch_session_setup_seconds").record(took.as_secs_f64());
}

/// A `Join`, `Stop` or `Leave`.
pub fn request(kind: &'static str) {
    counter!("quicmatch_requests_total", "kind" => kind).increment(1);
}

/// A match was made; its initiator had waited `waited`, if known.
pub fn matched(waited: Option<Duration>) {
    if let Some(waited) = waited {
        histogram!("quicmatch_match_wait_seconds").record(waited.as_secs_f64());
    }
}

/// A match was made (counted once per match).
pub fn match_made() {
    counter!("quicmatch_matches_total").increment(1);
}

/// An `Error` frame with `code` was sent.
pub fn error_sent(code: ErrorCode) {
    counter!("quicmatch_errors_total", "code" => code.label()).increment(1);
}

/// A session was closed with `code`.
pub fn closed(code: CloseCode) {
    counter!("quicmatch_closes_total", "code" => code.label()).increment(1);
}

/// A frame or datagram was dropped by a rate limit.
pub fn rate_limited(kind: &'static str) {
    counter!("quicmatch_rate_limited_total", "kind" => kind).increment(1);
}

/// A call of the pool's script (`op`) took `took`, and failed or not.
pub fn redis_call(op: &str, took: Duration, failed: bool) {
    let op = redis_op_label(op);
    histogram!("quicmatch_redis_call_seconds", "op" => op).record(took.as_secs_f64());
    if failed {
        counter!("quicmatch_redis_errors_total", "op" => op).increment(1);
    }
}

/// The script's operations, as fixed label values.
fn redis_op_label(op: &str) -> &'static str {
    const OPS: [&str; 11] = [
        "join",
        "stop",
        "leave",
        "disconnect",
        "heartbeat",
        "forget",
        "restore",
        "states",
        "depart",
        "retire",
        "other",
    ];
    OPS.iter()
        .find(|&&known| known == op)
        .copied()
        .unwrap_or("other")
}

//! The raw figures of a run, gathered phase by phase for the report.

use crate::procfs::{Sample, cpu_us};

/// The figures of one phase: wall time and CPU time of the server and of the generator.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// Wall time, in seconds.
    pub secs: f64,
    /// UDP datagrams received on this machine (both sides: server and generator).
    pub udp_in: Option<u64>,
    /// The server's CPU time, in microseconds.
    pub server_cpu_us: Option<u64>,
    /// The generator's CPU time, in microseconds.
    pub self_cpu_us: Option<u64>,
}

impl Phase {
    /// The phase between samples `from` and `to`; `ticks` is the clock
    /// ticks per second of their CPU times.
    pub fn between(from: &Sample, to: &Sample, ticks: u64) -> Phase {
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
}

/// Everything the report needs, filled as the run goes.
#[derive(Default)]
pub struct Figures {
    /// Before the first session connected.
    pub idle: Sample,
    /// Connecting every session.
    pub connected: Option<Phase>,
    /// Joining and matching every session.
    pub joined: Option<Phase>,
    /// The scenario itself.
    pub scenario: Option<Phase>,
    /// The server's RSS with every session connected and matched, in KiB.
    pub rss_connected: Option<u64>,
    /// The server's RSS after every session left, in KiB.
    pub rss_after: Option<u64>,
    /// Sessions the run opens.
    pub sessions: u64,
    /// One-way latencies of delivered messages, in ns.
    pub latencies: Vec<u64>,
    /// Pairs whose two sessions are on different nodes (relay, chat).
    pub cross_node_pairs: u64,
    /// The latencies of those pairs' messages, in ns.
    pub cross_node_latencies: Vec<u64>,
    /// Distinct matches whose two sides were checked against each other (churn).
    pub matches_checked: Option<u64>,
    /// After teardown.
    pub end: Sample,
    /// Sessions the server still counted after teardown, beyond those it
    /// had before the run.
    pub sessions_left_after: Option<u64>,
    /// Datagrams the kernel dropped on the server's socket during the run.
    pub server_socket_drops: Option<u64>,
    /// Datagrams the kernel dropped on the generator's sockets during the run.
    pub generator_socket_drops: Option<u64>,
    /// What `--flood-initials` measured.
    pub flood: Option<serde_json::Value>,
}

//! The JSON line a run prints: rates, latency percentiles, CPU time per
//! message or match, memory per session, drops and losses, and whether the
//! run passed.

use serde_json::{Value, json};

use crate::args::Scenario;
use crate::figures::{Figures, Phase};
use crate::shared::{Counters, Shared};

/// Builds the JSON line; the bool says whether the run passed.
pub fn report(shared: &Shared, f: &mut Figures) -> (Value, bool) {
    let args = &shared.args;
    let c = &shared.counters;
    let delivered = Counters::get(&c.delivered);
    let lost = Counters::get(&c.lost);
    let misrouted = Counters::get(&c.misrouted);
    let errors = Counters::get(&c.errors);
    let matches = Counters::get(&c.matches);
    let failures_total = shared.failures.total();
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
    // The generator's own CPU beside the server's: a generator that costs
    // more than the server measures itself.
    let scenario_self_cpu = f.scenario.and_then(|p| p.self_cpu_us);
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
    let (messages_per_sec, cpu_per_message, self_cpu_per_message) =
        if args.scenario.sends_messages() {
            (
                rate(delivered, scenario_secs),
                per(scenario_cpu, delivered),
                per(scenario_self_cpu, delivered),
            )
        } else {
            (Value::Null, Value::Null, Value::Null)
        };
    let (matches_per_sec, cpu_per_match, self_cpu_per_match) = match args.scenario {
        Scenario::Churn => (
            rate(matches, scenario_secs),
            per(scenario_cpu, matches),
            per(scenario_self_cpu, matches),
        ),
        _ => (
            rate(matched / 2, join.map(|p| p.secs).unwrap_or(0.0)),
            per(join.and_then(|p| p.server_cpu_us), matched / 2),
            per(join.and_then(|p| p.self_cpu_us), matched / 2),
        ),
    };
    let value = json!({
        "scenario": args.scenario.name(),
        "ok": ok,
        "pairs": args.pairs,
        "sessions": f.sessions,
        "messages_per_pair": args.scenario.sends_messages().then_some(args.messages),
        "payload_bytes": match args.scenario { Scenario::Relay => Some(args.payload_bytes), Scenario::Chat => Some(args.chat_bytes), _ => None },
        "connectors": args.connectors,
        "tls_resumption": !args.no_resumption,
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
        "nodes": args.url.len(),
        "cross_node_pairs": (args.url.len() > 1 && args.scenario.sends_messages()).then_some(f.cross_node_pairs),
        "latency_cross_node": if args.url.len() > 1 { latency_json(&mut f.cross_node_latencies) } else { Value::Null },
        "messages": delivered,
        "messages_per_sec": messages_per_sec,
        "server_cpu_us_per_message": cpu_per_message,
        "matches": if args.scenario == Scenario::Churn { matches } else { matched / 2 },
        "matches_per_sec": matches_per_sec,
        "server_cpu_us_per_match": cpu_per_match,
        // The generator's own CPU for the same events, beside the server's.
        "generator_cpu_us": {
            "per_session_connect": per(connect.and_then(|p| p.self_cpu_us), connected),
            "per_message": self_cpu_per_message,
            "per_match": self_cpu_per_match,
        },
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
        "failures": shared.failures.kept(),
        "flood": f.flood,
    });
    (value, ok)
}

/// `total / count` to two decimals, or null when either is unknown or zero.
fn per(total: Option<u64>, count: u64) -> Value {
    match total {
        Some(total) if count > 0 => json!(round2(total as f64 / count as f64)),
        _ => Value::Null,
    }
}

/// Rounds to two decimals, to keep the JSON short.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `count` per second over `secs`, or null for an empty phase.
fn rate(count: u64, secs: f64) -> Value {
    if secs > 0.0 {
        json!(round2(count as f64 / secs))
    } else {
        Value::Null
    }
}

/// One phase's wall time, datagrams and CPU times.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let j = latency_json(&mut v);
        assert_eq!(j["p50_us"], 50.0);
        assert_eq!(j["p99_us"], 99.0);
        assert_eq!(j["max_us"], 100.0);
    }
}

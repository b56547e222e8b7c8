//! One run from start to report: set-up, the scenario, teardown, and the
//! measurements taken between them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

use crate::args::{Args, Scenario};
use crate::chat::chat_pair;
use crate::churn::churn;
use crate::figures::{Figures, Phase};
use crate::loopback::{
    ClientEndpoint, Target, authority, endpoint, loopback_addr, warn_if_buffers_capped,
};
use crate::procfs::{Sample, clock_ticks, sample, socket_drops};
use crate::progress::progress;
use crate::relay::relay_pair;
use crate::report::report;
use crate::session::Session;
use crate::setup::{Paired, connect_all, join_all, pair_up};
use crate::shared::{Counters, Shared};
use crate::sidecar::{certificate_hashes, server_sessions};
use crate::tasks::collect;

/// Runs the generator as `args` say; the JSON report and whether it passed,
/// or why it could not run at all.
pub async fn run(args: Args) -> anyhow::Result<(Value, bool)> {
    args.validate()?;
    let targets: Vec<Target> = args
        .url
        .iter()
        .map(|url| Target::new(url))
        .collect::<anyhow::Result<_>>()?;
    let servers: Vec<_> = targets.iter().map(|target| target.addr).collect();
    let server = servers[0];
    anyhow::ensure!(
        servers.iter().all(|s| s.is_ipv4() == server.is_ipv4()),
        "every --url must be of one address family"
    );
    for http in &args.http {
        authority(http, "http://").and_then(|a| loopback_addr(&a))?;
    }
    let server_ports: Vec<u16> = servers.iter().map(|s| s.port()).collect();
    let hashes = if args.insecure {
        None
    } else {
        Some(certificate_hashes(&args).await?)
    };
    let ticks = clock_ticks();
    warn_if_buffers_capped(&args);
    let endpoints: Vec<Arc<ClientEndpoint>> = (0..args.connectors)
        .map(|_| endpoint(&args, server, hashes.as_deref()).map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    let sessions_before = server_sessions(&args).await;
    let own_ports: Vec<u16> = endpoints
        .iter()
        .filter_map(|e| e.local_addr().ok().map(|a| a.port()))
        .collect();
    let drops_before = (socket_drops(&server_ports), socket_drops(&own_ports));

    let shared = Arc::new(Shared::new(args.clone()));
    let progress = (!args.quiet).then(|| tokio::spawn(progress(shared.clone())));
    let total = args.sessions();
    let mut figures = Figures {
        sessions: u64::from(total),
        ..Figures::default()
    };
    let pid = &args.server_pid[..];

    // Connect.
    figures.idle = sample(pid);
    let mut sessions = connect_all(&endpoints, &targets, &shared).await;
    let connected = sample(pid);
    figures.connected = Some(Phase::between(&figures.idle, &connected, ticks));

    // Join, only when everyone is connected: otherwise someone is unmatched.
    let mut matched = Vec::new();
    if sessions.len() == total as usize {
        shared.set_phase("join");
        let failed;
        (matched, failed) = join_all(std::mem::take(&mut sessions), &shared).await;
        sessions = failed;
        let joined = sample(pid);
        figures.joined = Some(Phase::between(&connected, &joined, ticks));
        figures.rss_connected = joined.server_rss_kib;
    } else {
        shared.fail(format!(
            "only {} of {total} sessions connected",
            sessions.len()
        ));
    }
    let mut paired = pair_up(matched, args.scenario, &shared);
    sessions.append(&mut paired.unpaired);

    // The scenario.
    let healthy = Counters::get(&shared.counters.misrouted) == 0 && shared.failures.total() == 0;
    let flood = (args.flood_initials > 0 && healthy)
        .then(|| tokio::spawn(crate::flood::flood(shared.clone(), hashes.clone())));
    let started = sample(pid);
    if args.scenario != Scenario::Connect {
        if healthy {
            shared.set_phase(args.scenario.name());
            let end = run_scenario(&mut paired, &mut sessions, &mut figures, &shared).await;
            figures.scenario = Some(Phase::between(&started, &end, ticks));
        } else {
            shared.fail("scenario skipped: the set-up already failed".into());
        }
    }

    if let Some(flood) = flood {
        match flood.await {
            Ok(Ok(mut flooded)) => {
                let value = flooded.json();
                if let Some(failures) = value["newcomer_failures"].as_array()
                    && !failures.is_empty()
                {
                    shared.fail(format!(
                        "{} newcomers failed during the flood",
                        failures.len()
                    ));
                }
                figures.flood = Some(value);
            }
            Ok(Err(error)) => shared.fail(format!("flood: {error:#}")),
            Err(error) => shared.fail(format!("flood: {error}")),
        }
    }

    // Teardown: close everything, wait until the server has let go.
    shared.set_phase("teardown");
    sessions.extend((paired.pairs.drain(..)).flat_map(|pair| [pair.initiator, pair.responder]));
    sessions.extend(paired.firsts.drain(..).map(|(session, _)| session));
    teardown(sessions, &endpoints, sessions_before, &args, &mut figures).await;
    let delta = |before: Option<u64>, after: Option<u64>| Some(after?.saturating_sub(before?));
    figures.server_socket_drops = delta(drops_before.0, socket_drops(&server_ports));
    figures.generator_socket_drops = delta(drops_before.1, socket_drops(&own_ports));
    if let Some(progress) = progress {
        progress.abort();
    }
    Ok(report(&shared, &mut figures))
}

/// Runs the relay, chat or churn scenario on the pairs or sessions of
/// `paired`, which it takes; their sessions end up in `sessions`, their
/// latencies and checked matches in `figures`. Returns the sample that
/// ends the scenario's phase.
async fn run_scenario(
    paired: &mut Paired,
    sessions: &mut Vec<Session>,
    figures: &mut Figures,
    shared: &Arc<Shared>,
) -> Sample {
    let args = &shared.args;
    if args.scenario == Scenario::Churn {
        let result = churn(std::mem::take(&mut paired.firsts), shared).await;
        sessions.extend(result.sessions);
        figures.matches_checked = Some(result.matches_checked);
        return result.end;
    }
    let start = Instant::now();
    let mut set = JoinSet::new();
    for pair in paired.pairs.drain(..) {
        let shared = shared.clone();
        if args.scenario == Scenario::Relay {
            set.spawn(relay_pair(pair, shared, start));
        } else {
            set.spawn(chat_pair(pair, shared, start));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.phase_timeout_secs);
    for outcome in collect(&mut set, deadline, shared, "scenario").await {
        if outcome.cross_node {
            figures.cross_node_pairs += 1;
            figures.cross_node_latencies.extend(&outcome.latencies);
        }
        figures.latencies.extend(outcome.latencies);
        sessions.extend(outcome.sessions);
    }
    sample(&args.server_pid)
}

/// Closes every session, waits (briefly) until the endpoints are idle and
/// (up to 10 s) until the server counts no more sessions than the
/// `sessions_before` it had before the run, then takes the final sample.
async fn teardown(
    sessions: Vec<Session>,
    endpoints: &[Arc<ClientEndpoint>],
    sessions_before: Option<u64>,
    args: &Args,
    figures: &mut Figures,
) {
    for session in &sessions {
        session.close();
    }
    drop(sessions);
    let deadline = Instant::now() + Duration::from_secs(3);
    for endpoint in endpoints {
        let _ = timeout_at(deadline, endpoint.wait_idle()).await;
    }
    if let Some(before) = sessions_before {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut interval = tokio::time::interval(Duration::from_millis(50));
        loop {
            interval.tick().await;
            let now = server_sessions(args).await;
            figures.sessions_left_after = now.map(|n| n.saturating_sub(before));
            if now.is_none_or(|n| n <= before) || Instant::now() >= deadline {
                break;
            }
        }
    }
    figures.end = sample(&args.server_pid);
    figures.rss_after = figures.end.server_rss_kib;
}

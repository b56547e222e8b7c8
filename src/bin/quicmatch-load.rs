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
//! It uses a small client of its own rather than
//! [`quicmatch::client::Client`]: sessions on the thin WebTransport client
//! over quinn ([`quicmatch::webtransport::ClientSession`]), one task per
//! pair or session, no timers per session, configurable socket buffers, and
//! a certificate trusted by its pinned hash without verifying the
//! handshake's signature ([`pinned`]) keep the generator's own cost at or
//! below the server's, which matters when it shares the machine with it.
//!
//! It only ever talks to loopback addresses.
//!
//! Layout (the modules live in `src/bin/quicmatch-load/`):
//! - [`args`]: the command line; [`run`]: one run from start to report.
//! - [`setup`]: connect, join and pair every session; [`session`]: the
//!   minimal client session; [`pacer`]: per-session pacing.
//! - [`relay`], [`chat`], [`churn`]: the scenarios; [`pair`]: what relay
//!   and chat share (stamped payloads, the final check).
//! - [`flood`] (`--flood-initials`): a handshake flood of real
//!   [`initials`] beside the scenario, timing newcomers meanwhile.
//! - [`procfs`]: CPU, memory and UDP counters from /proc; [`figures`] and
//!   [`report`]: the JSON line; [`progress`]: the line on stderr.
//! - [`loopback`]: address checks and UDP endpoints; [`pinned`]: how the
//!   server's certificate is trusted; [`sidecar`]: the
//!   server's HTTP API; [`shared`]: counters and failures; [`tasks`]:
//!   waiting for a phase's tasks.

#[path = "quicmatch-load/args.rs"]
mod args;
#[path = "quicmatch-load/chat.rs"]
mod chat;
#[path = "quicmatch-load/churn.rs"]
mod churn;
#[path = "quicmatch-load/figures.rs"]
mod figures;
#[path = "quicmatch-load/flood.rs"]
mod flood;
#[path = "quicmatch-load/initials.rs"]
mod initials;
#[path = "quicmatch-load/loopback.rs"]
mod loopback;
#[path = "quicmatch-load/pacer.rs"]
mod pacer;
#[path = "quicmatch-load/pair.rs"]
mod pair;
#[path = "quicmatch-load/pinned.rs"]
mod pinned;
#[path = "quicmatch-load/procfs.rs"]
mod procfs;
#[path = "quicmatch-load/progress.rs"]
mod progress;
#[path = "quicmatch-load/relay.rs"]
mod relay;
#[path = "quicmatch-load/report.rs"]
mod report;
#[path = "quicmatch-load/run.rs"]
mod run;
#[path = "quicmatch-load/session.rs"]
mod session;
#[path = "quicmatch-load/setup.rs"]
mod setup;
#[path = "quicmatch-load/shared.rs"]
mod shared;
#[path = "quicmatch-load/sidecar.rs"]
mod sidecar;
#[path = "quicmatch-load/tasks.rs"]
mod tasks;

use std::process::ExitCode;

use clap::Parser;
use serde_json::json;

/// Runs the generator and prints its report: exit 0 if the run passed, 1 if
/// it failed, 2 if it could not run at all.
fn main() -> ExitCode {
    let args = args::Args::parse();
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
    match runtime.block_on(run::run(args)) {
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

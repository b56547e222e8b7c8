//! Memory of WebSocket sessions: opens N sessions on the fallback
//! (`ws://HOST:PORT/signal`, PROTOCOL section 7), joins them half of each
//! gender until every one is matched, and reports how much the server's
//! resident memory grew per session (read from `/proc/PID/status`, so the
//! server must run on this machine). With OFFERS, each woman then relays
//! that many 3 KB offers to her partner, back to back, and the server's CPU
//! per offer (from `/proc/PID/stat`) and its memory after them are
//! reported; the server's `--frame-rate` must allow OFFERS at once.
//!
//! ```sh
//! target/release/quicmatch --bind 127.0.0.1 --port 4433 --http-port 4434 --frame-rate 100000 &
//! cargo run --release --example websocket_sessions -- 127.0.0.1:4434 $! 2000 [OFFERS]
//! ```
//!
//! The client side holds two file descriptors per session in all: raise
//! `ulimit -n` for large N. docs/performance.md §15 has the figures.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use quicmatch::codec;
use quicmatch::protocol::{ClientMsg, Gender, Profile, ServerMsg};
use quicmatch::websocket::FRAME_TAG;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// The load generator's reader of /proc; this example takes the server's
/// figures from it, not the UDP counters.
#[allow(dead_code)]
#[path = "../src/bin/quicmatch-load/procfs.rs"]
mod procfs;

/// The server's resident memory, in KiB.
fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    procfs::sample(&[pid])
        .server_rss_kib
        .context("the server's /proc/PID/status is unreadable")
}

/// The server's CPU time (user and system) so far, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    procfs::sample(&[pid])
        .server_cpu_ticks
        .context("the server's /proc/PID/stat is unreadable")
}

/// The next `0x00` unit's message on `socket`, within 30 s.
async fn next_msg(socket: &mut Socket) -> anyhow::Result<ServerMsg> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .context("nothing in 30 s")?;
        let Some(Ok(message)) = message else {
            bail!("the session ended");
        };
        if let Message::Binary(unit) = message
            && let Some((&FRAME_TAG, payload)) = unit.split_first()
        {
            return Ok(codec::decode::<ServerMsg>(payload)?);
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `msg` as a `0x00` unit.
fn unit(msg: &ClientMsg) -> Message {
    let mut unit = vec![FRAME_TAG];
    unit.extend_from_slice(&codec::encode(msg));
    Message::Binary(Bytes::from(unit))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (sidecar, pid, sessions, offers) = match args.as_slice() {
        [sidecar, pid, sessions] => (sidecar, pid, sessions, "0"),
        [sidecar, pid, sessions, offers] => (sidecar, pid, sessions, offers.as_str()),
        _ => bail!("usage: websocket_sessions HOST:HTTP_PORT SERVER_PID SESSIONS [OFFERS]"),
    };
    let offers: usize = offers.parse().context("OFFERS")?;
    let pid: u32 = pid.parse().context("SERVER_PID")?;
    let sessions: usize = sessions.parse().context("SESSIONS")?;
    let before = resident_kib(pid)?;

    let mut sockets = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{sidecar}/signal"))
            .await
            .with_context(|| format!("session {i}"))?;
        let gender = if i % 2 == 0 {
            Gender::Female
        } else {
            Gender::Male
        };
        let join = ClientMsg::Join(Profile {
            name: format!("p{i}"),
            age: 30,
            gender,
        });
        socket.send(unit(&join)).await?;
        sockets.push(socket);
    }
    let mut matches = Vec::with_capacity(sessions);
    for (i, socket) in sockets.iter_mut().enumerate() {
        loop {
            let msg = next_msg(socket)
                .await
                .with_context(|| format!("session {i} before its match"))?;
            if let ServerMsg::Matched { match_id, .. } = msg {
                matches.push(match_id);
                break;
            }
        }
    }
    // Let the server settle (queues drained, buffers given back).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = resident_kib(pid)?;
    println!(
        "{sessions} WebSocket sessions matched: server RSS {before} -> {after} KiB, {:.2} KiB per session",
        after.saturating_sub(before) as f64 / sessions as f64
    );
    if offers > 0 {
        relay(pid, before, sockets, &matches, offers).await?;
    }
    Ok(())
}

/// Each woman (even sessions) sends `offers` offers to her partner, one
/// task a session; reports the server's CPU per offer, and its RSS growth
/// over `before` per session once they have all arrived.
async fn relay(
    pid: u32,
    before: u64,
    sockets: Vec<Socket>,
    matches: &[u64],
    offers: usize,
) -> anyhow::Result<()> {
    let sdp = "a".repeat(3000);
    let started = cpu_ticks(pid)?;
    let clock = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (mut socket, &match_id)) in sockets.into_iter().zip(matches).enumerate() {
        let offer = unit(&ClientMsg::Offer {
            match_id,
            sdp: sdp.clone(),
        });
        tasks.spawn(async move {
            if i % 2 == 0 {
                for _ in 0..offers {
                    socket.send(offer.clone()).await?;
                }
            } else {
                let mut got = 0;
                while got < offers {
                    if let ServerMsg::Offer { .. } = next_msg(&mut socket).await? {
                        got += 1;
                    }
                }
            }
            anyhow::Ok(socket)
        });
    }
    let mut kept = Vec::new();
    while let Some(done) = tasks.join_next().await {
        kept.push(done??);
    }
    let relayed = offers * matches.len() / 2;
    let cpu = procfs::cpu_us(Some(started), Some(cpu_ticks(pid)?), procfs::clock_ticks())
        .unwrap_or_default();
    println!(
        "{relayed} offers of 3 KB relayed in {:.2} s: server CPU {:.1} µs per offer",
        clock.elapsed().as_secs_f64(),
        cpu as f64 / relayed as f64
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = resident_kib(pid)?;
    println!(
        "after the offers: server RSS {after} KiB, {:.2} KiB per session",
        after.saturating_sub(before) as f64 / kept.len() as f64
    );
    Ok(())
}

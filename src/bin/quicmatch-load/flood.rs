//! `--flood-initials N`: a handshake flood beside the scenario. From one UDP
//! socket it sends `N` real QUIC Initials ([`Initials`]) spread over
//! `--flood-secs`, never answering what comes back, as an attacker who
//! never completes a handshake would; meanwhile it reads the server's
//! resident memory and, once a second, opens a real session from the same
//! address family (a newcomer arriving during the flood), timing it from
//! the first packet to `Waiting`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quicmatch::protocol::{ClientMsg, Gender, Profile, ServerMsg};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until, timeout};

use crate::initials::Initials;
use crate::loopback::{Target, authority, endpoint, loopback_addr};
use crate::procfs::sample;
use crate::session::Session;
use crate::shared::Shared;

/// How long a newcomer may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the flood measured.
#[derive(Debug, Default)]
pub struct FloodFigures {
    initials: u64,
    secs: f64,
    rss_start_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
    /// Newcomers' times to `Waiting`, in µs.
    probes_us: Vec<u64>,
    probe_failures: Vec<String>,
}

impl FloodFigures {
    /// The report's `flood` object.
    pub fn json(&mut self) -> Value {
        self.probes_us.sort_unstable();
        let growth = match (self.rss_start_kib, self.rss_peak_kib) {
            (Some(start), Some(peak)) => Some(peak.saturating_sub(start)),
            _ => None,
        };
        json!({
            "initials": self.initials,
            "ms": (self.secs * 1000.0).round(),
            "server_rss_growth_kib": growth,
            "newcomers": self.probes_us.len(),
            "newcomer_p50_us": self.probes_us.get(self.probes_us.len() / 2),
            "newcomer_max_us": self.probes_us.last(),
            "newcomer_failures": self.probe_failures,
        })
    }
}

/// Floods as `--flood-*` say while `shared`'s run goes on; `hashes` pin the
/// newcomers' certificate.
pub async fn flood(
    shared: Arc<Shared>,
    hashes: Option<Vec<[u8; 32]>>,
) -> anyhow::Result<FloodFigures> {
    let args = &shared.args;
    let url = args
        .flood_url
        .clone()
        .unwrap_or_else(|| args.url[0].clone());
    let server = loopback_addr(&authority(&url, "https://")?)?;
    let local = if server.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let socket = UdpSocket::bind(local).await.context("flood socket")?;
    let mut initials = Initials::new(server)?;
    let count = args.flood_initials;
    let secs = u64::from(args.flood_secs.max(1));
    let gap = Duration::from_secs(secs) / count.max(1);
    let pid = args.server_pid.first().copied();
    let rss = || pid.and_then(|pid| sample(&[pid]).server_rss_kib);
    let mut figures = FloodFigures {
        rss_start_kib: rss(),
        ..FloodFigures::default()
    };
    figures.rss_peak_kib = figures.rss_start_kib;
    let probes = tokio::spawn(newcomers(
        shared.clone(),
        url.clone(),
        hashes,
        Duration::from_secs(secs),
    ));
    let start = Instant::now();
    let mut next_sample = start;
    let mut drain = [0u8; 2048];
    for sent in 0..count {
        let payload = initials.next()?;
        socket
            .send_to(payload, server)
            .await
            .context("sending an Initial")?;
        figures.initials += 1;
        // Whatever comes back is read and thrown away, so that the socket's
        // buffer never fills; it is never answered.
        while socket.try_recv(&mut drain).is_ok() {}
        if Instant::now() >= next_sample {
            figures.rss_peak_kib = figures.rss_peak_kib.max(rss());
            next_sample += Duration::from_millis(200);
        }
        sleep_until(start + gap * (sent + 1)).await;
    }
    figures.secs = start.elapsed().as_secs_f64();
    figures.rss_peak_kib = figures.rss_peak_kib.max(rss());
    match probes.await {
        Ok((times, failures)) => {
            figures.probes_us = times;
            figures.probe_failures = failures;
        }
        Err(error) => figures.probe_failures.push(error.to_string()),
    }
    Ok(figures)
}

/// Opens a session once a second for `during`, each on its own endpoint,
/// and times it to `Waiting`; the times (µs) and the failures.
async fn newcomers(
    shared: Arc<Shared>,
    url: String,
    hashes: Option<Vec<[u8; 32]>>,
    during: Duration,
) -> (Vec<u64>, Vec<String>) {
    let (mut times, mut failures) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let mut at = start + Duration::from_millis(500);
    let mut index = u32::MAX / 2;
    while at < start + during {
        sleep_until(at).await;
        at += Duration::from_secs(1);
        index += 1;
        let began = Instant::now();
        match timeout(
            PROBE_TIMEOUT,
            newcomer(&shared, &url, hashes.as_deref(), index),
        )
        .await
        {
            Ok(Ok(())) => times.push(began.elapsed().as_micros() as u64),
            Ok(Err(error)) => failures.push(format!("{error:#}")),
            Err(_) => failures.push(format!("no Waiting within {PROBE_TIMEOUT:?}")),
        }
    }
    (times, failures)
}

/// One newcomer: connect, join, `Waiting`, leave.
async fn newcomer(
    shared: &Shared,
    url: &str,
    hashes: Option<&[[u8; 32]]>,
    index: u32,
) -> anyhow::Result<()> {
    let target = Target::new(url)?;
    let endpoint = endpoint(&shared.args, target.addr, hashes)?;
    let mut session = Session::open(&endpoint, &target, index, 0).await?;
    session
        .send_now(&ClientMsg::Join(Profile {
            name: "newcomer".into(),
            age: 30,
            gender: Gender::Female,
        }))
        .await?;
    loop {
        match session.next_msg().await? {
            ServerMsg::Waiting { .. } => break,
            ServerMsg::Matched { .. } => break,
            _ => {}
        }
    }
    session.close();
    Ok(())
}

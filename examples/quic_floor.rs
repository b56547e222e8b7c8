//! The floor under any WebTransport server on this stack: what a QUIC +
//! TLS 1.3 session set-up costs on quinn, rustls and tokio alone, with
//! quicmatch's transport and TLS settings (`transport::transport_config`,
//! `tls::server_tls_config`, the same self-signed ECDSA P-256 certificate,
//! ALPN `h3`) and the vendored quinn, and nothing above QUIC: no HTTP/3
//! SETTINGS, no CONNECT, no WebTransport, no matching. Each session opens
//! one bidirectional stream, sends 9 bytes and reads 6 back (the size of a
//! `Hello` and its `Welcome`), and stays open until every session is up.
//!
//! `serve` runs the server; `connect` runs the sessions against it and
//! prints the server's CPU time and memory per session (read from /proc,
//! the same way `quicmatch-load` does) and the UDP datagrams per session,
//! so the set-up figures of `quicmatch`, `thin_floor` and this floor can be
//! set side by side (docs/performance.md §17).
//!
//! ```sh
//! cargo build --release --example quic_floor
//! target/release/examples/quic_floor serve --port 5700 &
//! target/release/examples/quic_floor connect --port 5700 --sessions 10000 \
//!     --cert-hash HASH --server-pid $!
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine;
use clap::{Parser, Subcommand};
use quicmatch::{transport, webtransport};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use wtransport::quinn;
use wtransport::tls::Sha256Digest;
use wtransport::tls::client::{ServerHashVerification, build_default_tls_config};
use wtransport::tls::rustls::RootCertStore;
use wtransport::tls::rustls::client::Resumption;

#[path = "common/loopback_server.rs"]
mod loopback_server;

/// The load generator's readers of /proc, shared rather than copied.
#[allow(dead_code)]
#[path = "../src/bin/quicmatch-load/procfs.rs"]
mod procfs;

/// What a session's client sends on its stream (a `Hello`'s size).
const REQUEST_LEN: usize = 9;
/// What the server answers (a `Welcome`'s size).
const REPLY_LEN: usize = 6;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "QUIC + TLS set-up alone on quinn, with quicmatch's settings")]
struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Serve sessions on 127.0.0.1 until killed.
    Serve {
        /// UDP port.
        #[arg(long, default_value_t = 5700)]
        port: u16,
        /// Kernel buffer size of the UDP socket, in bytes.
        #[arg(long, default_value_t = 32 * 1024 * 1024)]
        udp_buffer_bytes: usize,
    },
    /// Open sessions against a `serve` on 127.0.0.1 and report its cost.
    Connect {
        /// The server's UDP port.
        #[arg(long, default_value_t = 5700)]
        port: u16,
        /// Base64 SHA-256 of the server's certificate, as `serve` prints it.
        #[arg(long)]
        cert_hash: String,
        /// Process id of the server, for its CPU time and memory.
        #[arg(long)]
        server_pid: u32,
        /// Sessions to open (and hold open until all are up).
        #[arg(long, default_value_t = 10_000)]
        sessions: u32,
        /// Handshakes in flight at once (`quicmatch-load`'s default).
        #[arg(long, default_value_t = 256)]
        connect_concurrency: usize,
        /// Client UDP sockets the sessions are spread over.
        #[arg(long, default_value_t = 4)]
        connectors: usize,
        /// Kernel buffer size of each client socket, in bytes.
        #[arg(long, default_value_t = 32 * 1024 * 1024)]
        udp_buffer_bytes: usize,
        /// Every session a full TLS handshake (by default they resume with
        /// the server's tickets, as `quicmatch-load`'s do).
        #[arg(long)]
        no_resumption: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.role {
        Role::Serve {
            port,
            udp_buffer_bytes,
        } => runtime.block_on(serve(port, udp_buffer_bytes)),
        Role::Connect {
            port,
            cert_hash,
            server_pid,
            sessions,
            connect_concurrency,
            connectors,
            udp_buffer_bytes,
            no_resumption,
        } => {
            let hash = base64::engine::general_purpose::STANDARD
                .decode(cert_hash.trim())
                .context("--cert-hash is not base64")?;
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| anyhow::anyhow!("--cert-hash is not a SHA-256"))?;
            let plan = Plan {
                server: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                hash,
                server_pid,
                sessions,
                connect_concurrency: connect_concurrency.max(1),
                connectors: connectors.max(1),
                udp_buffer_bytes,
                resumption: !no_resumption,
            };
            runtime.block_on(connect(plan))
        }
    }
}

/// Serves sessions: each answers its first stream's 9 bytes with 6 and then
/// waits for the client to close.
async fn serve(port: u16, udp_buffer_bytes: usize) -> anyhow::Result<()> {
    let (endpoint, hash) = loopback_server::endpoint(port, udp_buffer_bytes, |_| {})?;
    println!(
        "QUIC floor server on {}, certificate hash {hash}",
        endpoint.local_addr()?
    );
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            if let Err(error) = answer(incoming).await {
                eprintln!("quic_floor: session ended: {error}");
            }
        });
    }
    Ok(())
}

/// One server session.
async fn answer(incoming: quinn::Incoming) -> anyhow::Result<()> {
    let connection = incoming.await?;
    let (mut send, mut recv) = connection.accept_bi().await?;
    let mut request = [0u8; REQUEST_LEN];
    recv.read_exact(&mut request).await?;
    send.write_all(&[0u8; REPLY_LEN]).await?;
    connection.closed().await;
    Ok(())
}

/// What `connect` runs.
struct Plan {
    server: SocketAddr,
    hash: [u8; 32],
    server_pid: u32,
    sessions: u32,
    connect_concurrency: usize,
    connectors: usize,
    udp_buffer_bytes: usize,
    resumption: bool,
}

/// Opens every session, holds them, samples the server, then closes them.
async fn connect(plan: Plan) -> anyhow::Result<()> {
    let mut tls = build_default_tls_config(
        Arc::new(RootCertStore::empty()),
        Some(Arc::new(ServerHashVerification::new([Sha256Digest::new(
            plan.hash,
        )]))),
    );
    if !plan.resumption {
        tls.resumption = Resumption::disabled();
    }
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_custom_tls(tls);
    let config = transport::client_config(config);
    let endpoints = (0..plan.connectors)
        .map(|_| {
            let socket =
                transport::bind_udp(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, plan.udp_buffer_bytes)?;
            Ok(webtransport::client_endpoint(socket, &config)?)
        })
        .collect::<anyhow::Result<Vec<quinn::Endpoint>>>()?;

    let ticks = procfs::clock_ticks();
    let before = procfs::sample(&[plan.server_pid]);
    let started = std::time::Instant::now();
    let permits = Arc::new(Semaphore::new(plan.connect_concurrency));
    let mut tasks = JoinSet::new();
    for index in 0..plan.sessions {
        let permit = permits.clone().acquire_owned().await?;
        let endpoint = endpoints
            .get(index as usize % endpoints.len())
            .context("no endpoint")?
            .clone();
        let server = plan.server;
        tasks.spawn(async move {
            let session = open(&endpoint, server).await;
            drop(permit);
            session
        });
    }
    let mut connections = Vec::with_capacity(plan.sessions as usize);
    while let Some(joined) = tasks.join_next().await {
        connections.push(joined??);
    }
    let elapsed = started.elapsed();
    let after = procfs::sample(&[plan.server_pid]);

    let sessions = u64::from(plan.sessions.max(1));
    let server_us = procfs::cpu_us(before.server_cpu_ticks, after.server_cpu_ticks, ticks);
    let client_us = procfs::cpu_us(before.self_cpu_ticks, after.self_cpu_ticks, ticks);
    let rss = before.server_rss_kib.zip(after.server_rss_kib);
    let udp = before.udp.zip(after.udp);
    let Some((server_us, client_us)) = server_us.zip(client_us) else {
        bail!("could not read the CPU times from /proc");
    };
    println!(
        "{} sessions ({}) in {:.2} s; server CPU per set-up {} µs, client {} µs",
        plan.sessions,
        if plan.resumption {
            "resumed"
        } else {
            "full handshakes"
        },
        elapsed.as_secs_f64(),
        server_us / sessions,
        client_us / sessions
    );
    if let Some((from, to)) = rss {
        println!(
            "server RSS {} MiB, {:.2} KiB per session",
            to / 1024,
            to.saturating_sub(from) as f64 / sessions as f64
        );
    }
    if let Some((from, to)) = udp {
        println!(
            "UDP datagrams per set-up {:.2}, receive-buffer drops {}",
            to.in_datagrams.saturating_sub(from.in_datagrams) as f64 / sessions as f64,
            to.rcvbuf_errors.saturating_sub(from.rcvbuf_errors)
        );
    }
    for connection in &connections {
        connection.close(0u32.into(), b"done");
    }
    for endpoint in &endpoints {
        endpoint.wait_idle().await;
    }
    Ok(())
}

/// One client session: handshake, 9 bytes out, 6 back.
async fn open(endpoint: &quinn::Endpoint, server: SocketAddr) -> anyhow::Result<quinn::Connection> {
    let connection = endpoint.connect(server, "localhost")?.await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(&[0u8; REQUEST_LEN]).await?;
    let mut reply = [0u8; REPLY_LEN];
    recv.read_exact(&mut reply).await?;
    Ok(connection)
}

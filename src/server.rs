//! The server: WebTransport endpoints (one per bind address: quinn, with
//! [`crate::webtransport`] on each connection), the HTTP sidecar,
//! certificate renewal and graceful shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use wtransport::config::QuicTransportConfig;
use wtransport::quinn::{self, VarInt};

use crate::certs::{Certificates, ServerEndpoint};
use crate::cluster::heartbeat::Announcement;
use crate::cluster::{Cluster, Target};
use crate::config::Config;
use crate::frontdoor::{Arrival, FrontDoor};
use crate::http::{self, SidecarState};
use crate::hub::Hub;
use crate::ice::IceServers;
use crate::protocol::{CloseCode, SIGNAL_PATH};
use crate::registry::Stats;
use crate::session::{self, Limits};
use crate::tls::{self, CertSource, TlsIdentity};
use crate::transport;
use crate::websocket::WebSocketSessions;
use crate::webtransport;

/// Connection attempts quinn may hold before the accept loop decides them.
const INCOMING_QUEUE: usize = 4096;
/// Bytes one undecided attempt may buffer (its Initial and any early data).
const INCOMING_BUFFER: u64 = 16 * 1024;
/// How long shutdown waits for sessions to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The certificate hashes browsers may pin, shared with the sidecar.
pub type PinnedHashes = Arc<RwLock<Vec<[u8; 32]>>>;

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    quic_addrs: Vec<SocketAddr>,
    http_addrs: Vec<SocketAddr>,
    hub: Arc<Hub>,
    hashes: PinnedHashes,
    shutdown: CancellationToken,
    /// Stops the sidecar, which answers "draining" until the very end.
    sidecar_stop: CancellationToken,
    /// How long /health says "draining" before sessions are closed.
    drain: Duration,
    sessions: TaskTracker,
    tasks: Vec<JoinHandle<()>>,
    endpoints: Vec<ServerEndpoint>,
    certificates: Arc<Certificates>,
}

impl Server {
    /// Binds every listener and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        anyhow::ensure!(!config.bind.is_empty(), "no bind address");
        anyhow::ensure!(
            config.keep_alive() < config.idle_timeout(),
            "the keep-alive interval must be shorter than the idle timeout"
        );
        let source = CertSource::from_config(&config);
        let identity = tls::load(&source).await?;
        let (idle_timeout, keep_alive) = (config.idle_timeout(), config.keep_alive());
        let hashes: PinnedHashes =
            Arc::new(RwLock::new(identity.pinned_hash.into_iter().collect()));
        anyhow::ensure!(
            !config.redis_cluster || !config.redis_urls.is_empty(),
            "--redis-cluster needs the cluster's seed nodes in --redis"
        );
        let cluster = match config.redis_urls.as_slice() {
            [] => None,
            urls => Some(Cluster::new(
                &Target {
                    urls,
                    cluster: config.redis_cluster,
                },
                &config.redis_pool,
            )?),
        };
        let door = Arc::new(FrontDoor::from_config(&config)?);
        log_ceiling(&door, config.max_sessions);
        let hub = Arc::new(Hub::new(
            config.min_age,
            door.ceiling().session_cap(),
            IceServers::from_config(&config),
            cluster.clone(),
            config.datagram_rate,
        ));
        let limits = Limits {
            frame_rate: config.frame_rate,
            datagram_rate: config.datagram_rate,
            outbound_queue_bytes: usize::try_from(config.outbound_queue_bytes)
                .unwrap_or(usize::MAX),
        };
        let shutdown = CancellationToken::new();
        // Stops whatever was started if a later step fails.
        let started = shutdown.clone().drop_guard();
        let sidecar_stop = CancellationToken::new();
        let sidecar_started = sidecar_stop.clone().drop_guard();
        let sessions = TaskTracker::new();
        let mut tasks = Vec::new();

        // WebTransport endpoints; with port 0 the first picks the port for all.
        let mut endpoints = Vec::new();
        let mut quic_addrs = Vec::new();
        let mut port = config.port;
        for &ip in &config.bind {
            let socket = transport::bind_udp(ip, port, config.udp_buffer_bytes)?;
            let transport = transport::transport_config(idle_timeout, keep_alive)?;
            let endpoint = webtransport::endpoint(socket, endpoint_config(&identity, transport)?)?;
            let addr = endpoint.local_addr()?;
            port = addr.port();
            quic_addrs.push(addr);
            endpoints.push(endpoint);
        }
        let quic_port = port;

        // HTTP sidecar, on the same port number unless told otherwise.
        let mut http_addrs = Vec::new();
        let mut http_port =
            config
                .http_port
                .unwrap_or(if config.port == 0 { 0 } else { quic_port });
        let metrics = crate::metrics::install();
        let history = crate::history::Recorder::default();
        tasks.push(tokio::spawn(history.clone().run(
            metrics.clone(),
            hub.clone(),
            shutdown.clone(),
        )));
        let state = SidecarState::new(
            hub.clone(),
            hashes.clone(),
            quic_port,
            metrics,
            history,
            config.public_url.clone(),
        )
        .with_websocket(Arc::new(WebSocketSessions {
            hub: hub.clone(),
            door: door.clone(),
            limits,
            tracker: sessions.clone(),
            keep_alive,
            idle_timeout,
        }));
        for &ip in &config.bind {
            let listener = transport::bind_tcp(ip, http_port)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let addr = listener.local_addr()?;
            http_port = addr.port();
            http_addrs.push(addr);
            tasks.push(tokio::spawn(http::serve(
                listener,
                state.clone(),
                sidecar_stop.clone(),
            )));
        }

        if let Some(cluster) = &cluster {
            let (hashes, url) = (hashes.clone(), config.public_url.clone());
            let announce = move || Announcement {
                url: url.clone(),
                hashes: hashes
                    .read()
                    .map(|h| h.iter().map(|h| http::base64(h)).collect())
                    .unwrap_or_default(),
                open: true,
                ..Announcement::default()
            };
            let (first_beat, registered) = tokio::sync::oneshot::channel();
            tasks.push(tokio::spawn(hub.clone().run_pool(
                announce,
                first_beat,
                shutdown.clone(),
            )));
            // Serve already registered: each heartbeat call is bounded.
            if registered.await != Ok(true) {
                warn!("the matching pool is not reachable yet; serving degraded until it is");
            }
            info!(node = %cluster.node(), pool = %config.redis_pool, "node of a shared matching pool");
        }
        if door.admission().requires_token() {
            info!("sessions need a join token");
        }
        tasks.push(tokio::spawn(door.clone().watch_memory(shutdown.clone())));
        for endpoint in &endpoints {
            tasks.push(tokio::spawn(accept_loop(
                endpoint.clone(),
                hub.clone(),
                limits,
                door.clone(),
                sessions.clone(),
                shutdown.clone(),
            )));
        }
        let certificates = Certificates::new(
            source,
            endpoints.clone(),
            Box::new(move || transport::transport_config(idle_timeout, keep_alive)),
            hashes.clone(),
        );
        let watch =
            (config.cert_watch_secs > 0).then(|| Duration::from_secs(config.cert_watch_secs));
        tasks.push(tokio::spawn(certificates.clone().run(
            identity.renew_in,
            watch,
            shutdown.clone(),
        )));

        for addr in &quic_addrs {
            info!(
                "WebTransport on https://{}{SIGNAL_PATH}",
                display_host(*addr)
            );
        }
        for addr in &http_addrs {
            info!("HTTP sidecar on http://{}/", display_host(*addr));
        }
        match identity.pinned_hash {
            Some(hash) => info!(
                "self-signed certificate, sha-256 {}",
                crate::http::base64(&hash)
            ),
            None => info!("certificate from files"),
        }
        started.disarm();
        sidecar_started.disarm();
        Ok(Server {
            sidecar_stop,
            drain: Duration::from_secs(config.drain_secs),
            quic_addrs,
            http_addrs,
            hub,
            hashes,
            shutdown,
            sessions,
            tasks,
            endpoints,
            certificates,
        })
    }

    /// The first WebTransport (UDP) address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addrs[0]
    }

    /// Every WebTransport (UDP) address, one per bind address.
    pub fn quic_addrs(&self) -> &[SocketAddr] {
        &self.quic_addrs
    }

    /// The first HTTP sidecar (TCP) address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addrs[0]
    }

    /// Every HTTP sidecar (TCP) address.
    pub fn http_addrs(&self) -> &[SocketAddr] {
        &self.http_addrs
    }

    /// The SHA-256 of the self-signed certificate now served, if self-signed.
    pub fn certificate_hash(&self) -> Option<[u8; 32]> {
        self.hashes.read().ok().and_then(|h| h.first().copied())
    }

    /// Replaces the self-signed certificate now (it is also renewed on a
    /// timer); an error for a certificate loaded from files.
    pub async fn renew_certificate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.certificates.is_self_signed(),
            "the certificate is not self-signed"
        );
        self.certificates.reload().await.map(drop)
    }

    /// Loads the certificate again (SIGHUP): the files, read anew, or a
    /// fresh self-signed certificate. New sessions get it; open ones go on.
    pub async fn reload_certificate(&self) -> anyhow::Result<()> {
        self.certificates.reload().await.map(drop)
    }

    /// The most sessions connected at once since the last call (or the
    /// start), for deciding when memory is worth giving back.
    pub fn take_session_peak(&self) -> usize {
        self.hub.take_session_peak()
    }

    /// The pool's counts (the whole pool's, in a shared pool).
    pub fn stats(&self) -> Stats {
        self.hub.stats()
    }

    /// Stops accepting, closes every session with code 3 (after its
    /// `Closing` frame), and returns within a few seconds.
    pub async fn shutdown(self) {
        // Admit no one, so any heartbeat from here on announces the node
        // closed; then out of discovery, so no one is sent here any more.
        let peers = self.hub.begin_shutdown();
        self.hub.depart_pool().await;
        if !self.drain.is_zero() {
            info!(
                seconds = self.drain.as_secs(),
                "draining: /health answers 503 before sessions are closed"
            );
            tokio::time::sleep(self.drain).await;
        }
        self.shutdown.cancel();
        for peer in peers {
            peer.request_close(CloseCode::ShuttingDown, "server shutting down");
        }
        self.sessions.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.sessions.wait())
            .await
            .is_err()
        {
            warn!("sessions still open after the shutdown grace period");
        }
        for endpoint in &self.endpoints {
            endpoint.close(
                VarInt::from_u32(CloseCode::ShuttingDown.code()),
                b"server shutting down",
            );
        }
        for endpoint in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
        self.hub.retire_from_pool().await;
        self.sidecar_stop.cancel();
        for task in self.tasks {
            task.abort();
        }
    }

    /// The hub, for figures beyond [`Server::stats`].
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

fn display_host(addr: SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() => format!("localhost:{}", addr.port()),
        _ => addr.to_string(),
    }
}

/// The endpoints' configuration for `identity` with `transport`.
pub(crate) fn endpoint_config(
    identity: &TlsIdentity,
    transport: QuicTransportConfig,
) -> anyhow::Result<quinn::ServerConfig> {
    let tls = tls::server_tls_config(&identity.identity)?;
    let mut config = webtransport::server_config(tls, transport)?;
    // Every connection attempt is decided on its first packet (see
    // `accept_loop`), so few wait undecided; what they may buffer meanwhile
    // (early data) stays small.
    config
        .migration(false)
        .max_incoming(INCOMING_QUEUE)
        .incoming_buffer_size(INCOMING_BUFFER)
        .incoming_buffer_size_total(INCOMING_QUEUE as u64 * INCOMING_BUFFER / 16);
    Ok(config)
}

/// Accepts sessions until shutdown; each connection's first packet is
/// decided by the front door at once, and a handshake it lets through runs
/// in its own task.
async fn accept_loop(
    endpoint: ServerEndpoint,
    hub: Arc<Hub>,
    limits: Limits,
    door: Arc<FrontDoor>,
    sessions: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let incoming = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
        };
        let remote = incoming.remote_address();
        let arrival = door.arrive(remote, incoming.remote_address_validated());
        if !matches!(arrival, Arrival::Proceed(_)) {
            debug!(%remote, answer = arrival.label(), "connection attempt not let through");
            crate::metrics::handshake(arrival.label());
        }
        match arrival {
            Arrival::Proceed(slot) => {
                sessions.spawn(session::serve(incoming, slot, hub.clone(), limits));
            }
            // The front door asks for a retry only of an unvalidated
            // address, so this cannot fail; if it did, the attempt is dropped.
            Arrival::Retry => {
                if let Err(error) = incoming.retry() {
                    error.into_incoming().ignore();
                }
            }
            Arrival::Refuse => incoming.refuse(),
            Arrival::Ignore => incoming.ignore(),
        }
    }
}

/// Says at start what the sessions may cost at worst.
fn log_ceiling(door: &FrontDoor, max_sessions: usize) {
    let ceiling = door.ceiling();
    let (cap, per_session) = (ceiling.session_cap(), ceiling.per_session());
    let worst_mib = ceiling.sessions_worst_case() >> 20;
    match ceiling.budget() {
        Some(budget) => info!(
            budget_mib = budget >> 20,
            sessions = cap,
            per_session_kib = per_session >> 10,
            "memory budget: at most {cap} sessions of up to {} KiB each ({worst_mib} MiB)",
            per_session >> 10
        ),
        None => info!(
            sessions = max_sessions,
            per_session_kib = per_session >> 10,
            "no --memory-budget: {max_sessions} sessions may take up to {worst_mib} MiB at worst"
        ),
    }
    if cap < max_sessions {
        warn!(
            max_sessions,
            cap, "--memory-budget holds fewer sessions than --max-sessions; the cap is lowered"
        );
    }
}

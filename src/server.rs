//! The server: WebTransport endpoints (one per bind address), the HTTP
//! sidecar, certificate renewal and graceful shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use wtransport::config::QuicTransportConfig;
use wtransport::config::ServerConfigBuilder;
use wtransport::config::states::WantsIdentity;
use wtransport::endpoint::endpoint_side;
use wtransport::{Endpoint, ServerConfig};

use crate::cluster::heartbeat::Announcement;
use crate::cluster::{Cluster, Target};
use crate::config::Config;
use crate::http::{self, SidecarState};
use crate::hub::Hub;
use crate::ice::IceServers;
use crate::protocol::{CloseCode, SIGNAL_PATH};
use crate::registry::Stats;
use crate::session::{self, Limits};
use crate::tls::{self, CertSource, TlsIdentity};
use crate::transport;

/// How long shutdown waits for sessions to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

type ServerEndpoint = Endpoint<endpoint_side::Server>;

/// The certificate hashes browsers may pin, shared with the sidecar.
pub type PinnedHashes = Arc<RwLock<Vec<[u8; 32]>>>;

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    quic_addrs: Vec<SocketAddr>,
    http_addrs: Vec<SocketAddr>,
    hub: Arc<Hub>,
    hashes: PinnedHashes,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    tasks: Vec<JoinHandle<()>>,
    endpoints: Vec<Arc<ServerEndpoint>>,
    renewal: Option<Arc<Renewal>>,
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
        let hub = Arc::new(Hub::new(
            config.min_age,
            config.max_sessions,
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
        let sessions = TaskTracker::new();
        let mut tasks = Vec::new();

        // WebTransport endpoints; with port 0 the first picks the port for all.
        let mut endpoints = Vec::new();
        let mut quic_addrs = Vec::new();
        let mut port = config.port;
        for &ip in &config.bind {
            let socket = transport::bind_udp(ip, port, config.udp_buffer_bytes)?;
            let builder = ServerConfig::builder().with_bind_socket(socket);
            let transport = transport::transport_config(idle_timeout, keep_alive)?;
            let server_config = tls_config(builder, &identity, transport)?;
            let endpoint = Arc::new(Endpoint::server(server_config)?);
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
        let state = SidecarState::new(hub.clone(), hashes.clone(), quic_port);
        for &ip in &config.bind {
            let listener = transport::bind_tcp(ip, http_port)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let addr = listener.local_addr()?;
            http_port = addr.port();
            http_addrs.push(addr);
            tasks.push(tokio::spawn(http::serve(
                listener,
                state.clone(),
                shutdown.clone(),
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
        for endpoint in &endpoints {
            tasks.push(tokio::spawn(accept_loop(
                endpoint.clone(),
                hub.clone(),
                limits,
                sessions.clone(),
                shutdown.clone(),
            )));
        }
        let renewal = match (identity.renew_in, &source) {
            (Some(renew_in), CertSource::SelfSigned { names }) => {
                let renewal = Arc::new(Renewal {
                    busy: std::sync::Mutex::new(()),
                    names: names.clone(),
                    endpoints: endpoints.clone(),
                    idle_timeout,
                    keep_alive,
                    hashes: hashes.clone(),
                });
                tasks.push(tokio::spawn(
                    renewal.clone().run(renew_in, shutdown.clone()),
                ));
                Some(renewal)
            }
            _ => None,
        };

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
        Ok(Server {
            quic_addrs,
            http_addrs,
            hub,
            hashes,
            shutdown,
            sessions,
            tasks,
            endpoints,
            renewal,
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
    pub fn renew_certificate(&self) -> anyhow::Result<()> {
        let renewal = self
            .renewal
            .as_ref()
            .context("the certificate is not self-signed")?;
        renewal.renew().map(drop)
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
                wtransport::VarInt::from_u32(CloseCode::ShuttingDown.code()),
                b"server shutting down",
            );
        }
        for endpoint in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
        self.hub.retire_from_pool().await;
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

fn tls_config(
    builder: ServerConfigBuilder<WantsIdentity>,
    identity: &TlsIdentity,
    transport: QuicTransportConfig,
) -> anyhow::Result<ServerConfig> {
    let tls = tls::server_tls_config(&identity.identity)?;
    Ok(builder
        .with_custom_tls_and_transport(tls, transport)
        .allow_migration(false)
        .build())
}

/// Accepts sessions until shutdown; each runs in its own task.
async fn accept_loop(
    endpoint: Arc<ServerEndpoint>,
    hub: Arc<Hub>,
    limits: Limits,
    sessions: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let incoming = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            incoming = endpoint.accept() => incoming,
        };
        sessions.spawn(session::serve(incoming, hub.clone(), limits));
    }
}

/// Makes and installs new self-signed certificates.
struct Renewal {
    /// One renewal at a time, so the published hash is the installed one.
    busy: std::sync::Mutex<()>,
    names: Vec<String>,
    endpoints: Vec<Arc<ServerEndpoint>>,
    idle_timeout: Duration,
    keep_alive: Duration,
    hashes: PinnedHashes,
}

impl Renewal {
    /// Installs a fresh certificate on every endpoint; returns when to renew next.
    fn renew(&self) -> anyhow::Result<Duration> {
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let identity = tls::self_signed(&self.names, tls::SELF_SIGNED_VALIDITY)?;
        for endpoint in &self.endpoints {
            // Without a rebind, the bind part of the configuration is ignored.
            let builder = ServerConfig::builder().with_bind_default(0);
            let transport = transport::transport_config(self.idle_timeout, self.keep_alive)?;
            let config = tls_config(builder, &identity, transport)?;
            endpoint
                .reload_config(config, false)
                .context("reloading TLS")?;
        }
        if let (Some(hash), Ok(mut pinned)) = (identity.pinned_hash, self.hashes.write()) {
            *pinned = vec![hash];
        }
        info!("self-signed certificate renewed");
        Ok(identity.renew_in.unwrap_or(Duration::from_secs(3600)))
    }

    /// Renews before each certificate expires, until shutdown; sessions
    /// already open keep theirs.
    async fn run(self: Arc<Self>, mut renew_in: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(renew_in) => {}
            }
            renew_in = self.renew().unwrap_or_else(|error| {
                warn!(%error, "certificate renewal failed; retrying in a minute");
                Duration::from_secs(60)
            });
        }
    }
}

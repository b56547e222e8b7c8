//! Keeps the endpoints' certificate current while the server runs, without
//! dropping a session: a self-signed certificate is renewed before it
//! expires; one from files (a real certificate, renewed by certbot or the
//! like) is reloaded when the files change and on request (SIGHUP). Sessions
//! already open keep the certificate they were made with; new sessions get
//! the new one.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wtransport::config::QuicTransportConfig;

use crate::server::PinnedHashes;
use crate::tls::{self, CertSource, TlsIdentity};

/// After a failed renewal of a self-signed certificate, the next attempt.
const RETRY_RENEWAL: Duration = Duration::from_secs(60);

/// One server endpoint (a cheap handle: clones share it).
pub type ServerEndpoint = wtransport::quinn::Endpoint;

/// Makes the QUIC transport configuration for a (re)loaded endpoint.
pub type TransportFactory = Box<dyn Fn() -> anyhow::Result<QuicTransportConfig> + Send + Sync>;

/// The certificate every endpoint serves, and how to replace it.
pub struct Certificates {
    /// One replacement at a time, so the published hash is the installed one.
    busy: tokio::sync::Mutex<()>,
    source: CertSource,
    endpoints: Vec<ServerEndpoint>,
    transport: TransportFactory,
    hashes: PinnedHashes,
    /// The files as last loaded (or last found unloadable), to notice a change.
    seen: Mutex<Option<Fingerprint>>,
}

/// What identifies the contents of the certificate and key files without
/// reading them: size and modification time (symbolic links followed, as
/// certbot's `live/` links are).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint([(u64, Option<SystemTime>); 2]);

impl Fingerprint {
    fn of(cert: &Path, key: &Path) -> Option<Fingerprint> {
        let one = |path: &Path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.len(), meta.modified().ok()))
        };
        Some(Fingerprint([one(cert)?, one(key)?]))
    }
}

impl Certificates {
    /// The certificate from `source`, served by `endpoints` with the
    /// transport `transport` makes; `hashes` is what the sidecar publishes.
    pub fn new(
        source: CertSource,
        endpoints: Vec<ServerEndpoint>,
        transport: TransportFactory,
        hashes: PinnedHashes,
    ) -> Arc<Certificates> {
        let seen = match &source {
            CertSource::Files { cert, key } => Fingerprint::of(cert, key),
            CertSource::SelfSigned { .. } => None,
        };
        Arc::new(Certificates {
            busy: tokio::sync::Mutex::new(()),
            source,
            endpoints,
            transport,
            hashes,
            seen: Mutex::new(seen),
        })
    }

    /// Whether the certificate is self-signed (renewed here) rather than
    /// loaded from files.
    pub fn is_self_signed(&self) -> bool {
        matches!(self.source, CertSource::SelfSigned { .. })
    }

    /// Replaces the certificate now: a fresh self-signed one, or the files
    /// read again. Returns when a self-signed one is due for renewal.
    pub async fn reload(&self) -> anyhow::Result<Option<Duration>> {
        let _busy = self.busy.lock().await;
        if let CertSource::Files { cert, key } = &self.source {
            // Taken before reading, so a change during the read is seen next time.
            *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Fingerprint::of(cert, key);
        }
        let identity = match &self.source {
            CertSource::SelfSigned { names } => tls::self_signed(names, tls::SELF_SIGNED_VALIDITY)?,
            CertSource::Files { .. } => tls::load(&self.source).await?,
        };
        self.install(&identity)?;
        match identity.pinned_hash {
            Some(_) => info!("self-signed certificate renewed"),
            None => info!("certificate reloaded from its files"),
        }
        Ok(identity.renew_in)
    }

    /// Puts `identity` on every endpoint and publishes its hash.
    fn install(&self, identity: &TlsIdentity) -> anyhow::Result<()> {
        for endpoint in &self.endpoints {
            let config = crate::server::endpoint_config(identity, (self.transport)()?)
                .context("reloading TLS")?;
            endpoint.set_server_config(Some(config));
        }
        if let Ok(mut pinned) = self.hashes.write() {
            *pinned = identity.pinned_hash.into_iter().collect();
        }
        Ok(())
    }

    /// Whether the files changed since they were last loaded.
    fn files_changed(&self) -> bool {
        let CertSource::Files { cert, key } = &self.source else {
            return false;
        };
        let now = Fingerprint::of(cert, key);
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        now.is_some() && *seen != now
    }

    /// Until `shutdown`: renews a self-signed certificate `renew_in` from
    /// now and then before each expiry; or checks the files every `watch`
    /// (`None`: only on request) and reloads them when they change.
    pub async fn run(
        self: Arc<Self>,
        renew_in: Option<Duration>,
        watch: Option<Duration>,
        shutdown: CancellationToken,
    ) {
        let mut wait = match (&self.source, renew_in, watch) {
            (CertSource::SelfSigned { .. }, Some(renew_in), _) => renew_in,
            (CertSource::Files { .. }, _, Some(watch)) => watch,
            _ => return,
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if self.is_self_signed() {
                wait = match self.reload().await {
                    Ok(next) => next.unwrap_or(RETRY_RENEWAL),
                    Err(error) => {
                        warn!(%error, "certificate renewal failed; retrying in a minute");
                        RETRY_RENEWAL
                    }
                };
            } else if self.files_changed()
                && let Err(error) = self.reload().await
            {
                // A half-written file, usually: the next change is tried again.
                warn!(%error, "the certificate files changed but could not be loaded; keeping the current certificate");
            }
        }
    }
}

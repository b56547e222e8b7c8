//! Loopback only: the checks that keep the generator on this machine, and
//! the client endpoints (UDP sockets with large buffers) its sessions use.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use anyhow::{Context, ensure};
use wtransport::ClientConfig;
use wtransport::quinn;
use wtransport::tls::client::build_default_tls_config;
use wtransport::tls::rustls::RootCertStore;
use wtransport::tls::rustls::client::Resumption;

use crate::args::Args;
use crate::pinned::PinnedCertificate;

/// A client endpoint: one UDP socket that many sessions share.
pub type ClientEndpoint = quinn::Endpoint;

/// A server to open sessions at: its `https://` URL and the loopback
/// address it names, resolved once.
#[derive(Debug, Clone)]
pub struct Target {
    /// The session URL, sent in the CONNECT request.
    pub url: Arc<str>,
    /// Where the connection goes.
    pub addr: SocketAddr,
}

impl Target {
    /// `url`, which must name a loopback address.
    pub fn new(url: &str) -> anyhow::Result<Target> {
        Ok(Target {
            url: Arc::from(url),
            addr: loopback_addr(&authority(url, "https://")?)?,
        })
    }
}

/// `host:port` of an `https://` or `http://` URL.
pub fn authority(url: &str, scheme: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix(scheme)
        .with_context(|| format!("{url} does not start with {scheme}"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    ensure!(!authority.is_empty(), "{url} has no host");
    Ok(authority.to_owned())
}

/// Resolves `host:port` and insists on loopback addresses only.
pub fn loopback_addr(authority: &str) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .collect();
    ensure!(!addrs.is_empty(), "{authority} resolves to nothing");
    ensure!(
        addrs.iter().all(|a| a.ip().is_loopback()),
        "{authority} is not a loopback address; this generator only loads servers on this machine"
    );
    Ok(addrs[0])
}

/// One client endpoint on its own loopback UDP socket (of `server`'s
/// address family), with `--udp-buffer-bytes` buffers; it pins `hashes`, or
/// accepts any certificate when there are none (`--insecure`), without
/// verifying the handshake's signature ([`PinnedCertificate`]); its
/// sessions resume with the server's tickets unless `--no-resumption`. A plain
/// quinn endpoint: sessions run on the thin client of
/// [`quicmatch::webtransport::ClientSession`]; wtransport's builder only
/// makes the QUIC and TLS settings (the native client's).
///
/// Not [`quicmatch::client::Connector`]: that binds a default socket, and
/// the generator needs large buffers to keep thousands of sessions on few
/// sockets from dropping datagrams.
pub fn endpoint(
    args: &Args,
    server: SocketAddr,
    hashes: Option<&[[u8; 32]]>,
) -> anyhow::Result<ClientEndpoint> {
    let ip = match server.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    let socket = quicmatch::transport::bind_udp(ip, 0, args.udp_buffer_bytes)?;
    let mut tls = build_default_tls_config(
        Arc::new(RootCertStore::empty()),
        Some(PinnedCertificate::new(hashes)),
    );
    if args.no_resumption {
        tls.resumption = Resumption::disabled();
    }
    let builder = ClientConfig::builder()
        .with_bind_default()
        .with_custom_tls(tls);
    let config = quicmatch::transport::client_config(builder);
    Ok(quicmatch::webtransport::client_endpoint(socket, &config)?)
}

/// Warns on stderr when the kernel grants smaller socket buffers than
/// `--udp-buffer-bytes` asks for (checked on a probe socket): the figures
/// would then measure drops in the generator's own sockets.
pub fn warn_if_buffers_capped(args: &Args) {
    if let Some(granted) = udp_buffer_granted(args)
        && granted < args.udp_buffer_bytes
    {
        eprintln!(
            "quicmatch-load: warning: the kernel granted {granted} of {} socket buffer bytes; raise net.core.rmem_max/wmem_max",
            args.udp_buffer_bytes
        );
    }
}

/// The receive buffer the kernel grants a socket that asks for `--udp-buffer-bytes`.
fn udp_buffer_granted(args: &Args) -> Option<usize> {
    let socket =
        quicmatch::transport::bind_udp(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, args.udp_buffer_bytes)
            .ok()?;
    // Linux reports twice what it grants.
    socket2::SockRef::from(&socket)
        .recv_buffer_size()
        .ok()
        .map(|n| n / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_accepted() {
        assert!(loopback_addr("127.0.0.1:5000").is_ok());
        assert!(loopback_addr("[::1]:5000").is_ok());
        assert!(loopback_addr("192.0.2.1:5000").is_err());
        assert_eq!(
            authority("https://127.0.0.1:5000/signal", "https://").unwrap(),
            "127.0.0.1:5000"
        );
    }
}

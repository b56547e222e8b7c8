//! Loopback only: the checks that keep the generator on this machine, and
//! the client endpoints (UDP sockets with large buffers) its sessions use.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use anyhow::{Context, ensure};
use wtransport::endpoint::endpoint_side;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Endpoint};

use crate::args::Args;

/// A client endpoint: one UDP socket that many sessions share.
pub type ClientEndpoint = Endpoint<endpoint_side::Client>;

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
/// accepts any certificate when there are none (`--insecure`).
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
    let builder = ClientConfig::builder().with_bind_socket(socket);
    let builder = match hashes {
        Some(hashes) => {
            builder.with_server_certificate_hashes(hashes.iter().map(|&h| Sha256Digest::new(h)))
        }
        None => builder.with_no_cert_validation(),
    };
    Ok(Endpoint::client(quicmatch::transport::client_config(
        builder,
    ))?)
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

//! The server side shared by the floor examples on quinn (`thin_floor`,
//! `quic_floor`): a quinn endpoint on 127.0.0.1 with quicmatch's TLS
//! (a fresh self-signed certificate, ALPN `h3`) and transport settings,
//! no migration.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use base64::Engine;
use quicmatch::{tls, transport, webtransport};
use wtransport::quinn;

/// A server endpoint on 127.0.0.1:`port` with `udp_buffer_bytes` socket
/// buffers and quicmatch's transport settings as `tune` leaves them, and
/// the base64 SHA-256 of its certificate (for clients to pin).
pub fn endpoint(
    port: u16,
    udp_buffer_bytes: usize,
    tune: impl FnOnce(&mut quinn::TransportConfig),
) -> anyhow::Result<(quinn::Endpoint, String)> {
    let identity = tls::self_signed(&[], tls::SELF_SIGNED_VALIDITY)?;
    let hash = identity
        .pinned_hash
        .map(|hash| base64::engine::general_purpose::STANDARD.encode(hash))
        .unwrap_or_default();
    let socket = transport::bind_udp(IpAddr::V4(Ipv4Addr::LOCALHOST), port, udp_buffer_bytes)?;
    let mut transport_config =
        transport::transport_config(Duration::from_secs(30), Duration::from_secs(10))?;
    tune(&mut transport_config);
    let mut config = webtransport::server_config(
        tls::server_tls_config(&identity.identity)?,
        transport_config,
    )?;
    config.migration(false);
    Ok((webtransport::endpoint(socket, config)?, hash))
}

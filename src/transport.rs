//! QUIC transport settings for many small signaling sessions, and the UDP
//! sockets under them.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::warn;
use wtransport::ClientConfig;
use wtransport::config::states::WantsTransportConfigClient;
use wtransport::config::{ClientConfigBuilder, QuicTransportConfig};
use wtransport::quinn::{IdleTimeout, VarInt};

use crate::codec::FRAME_HEADER_LEN;
use crate::protocol::MAX_FRAME_LEN;

/// One whole frame on the wire: its length prefix and the largest payload.
const FRAME_ON_WIRE: u32 = (MAX_FRAME_LEN + FRAME_HEADER_LEN) as u32;
/// What a client may have in flight towards the server on the signaling
/// stream: two whole frames.
pub const STREAM_RECEIVE_WINDOW: u32 = 2 * FRAME_ON_WIRE;
/// What a client may have in flight towards the server on all streams.
pub const RECEIVE_WINDOW: u32 = 3 * FRAME_ON_WIRE;
/// What the server keeps sent but unacknowledged for one client.
pub const SEND_WINDOW: u64 = 4 * FRAME_ON_WIRE as u64;
/// Datagrams received and not yet read, and queued and not yet sent.
pub const DATAGRAM_BUFFER: usize = 64 * 1024;

/// Transport parameters sized for one signaling stream per session rather
/// than quinn's bulk-transfer defaults: small windows and buffers keep a slow
/// or hostile client's cost bounded (see [`crate::frontdoor::budget`]).
pub fn transport_config(
    idle_timeout: Duration,
    keep_alive: Duration,
) -> anyhow::Result<QuicTransportConfig> {
    let mut config = QuicTransportConfig::default();
    // HTTP/3 needs the CONNECT stream plus the signaling stream; a few more
    // may be opened (and are refused) without stalling the session.
    config.max_concurrent_bidi_streams(VarInt::from_u32(4));
    // HTTP/3 control and QPACK streams, with room to spare.
    config.max_concurrent_uni_streams(VarInt::from_u32(8));
    config.stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW));
    config.receive_window(VarInt::from_u32(RECEIVE_WINDOW));
    config.send_window(SEND_WINDOW);
    config.datagram_receive_buffer_size(Some(DATAGRAM_BUFFER));
    config.datagram_send_buffer_size(DATAGRAM_BUFFER);
    config.max_idle_timeout(Some(
        IdleTimeout::try_from(idle_timeout).context("idle timeout")?,
    ));
    config.keep_alive_interval(Some(keep_alive));
    // Packets stay at QUIC's 1,200-byte floor: probing for a larger path
    // MTU cost five datagrams and ~4 % of the CPU of every session's
    // set-up, and 1.2 KiB of state per session (docs/performance.md §11),
    // to shave packets off bulk transfers a signaling session never makes.
    // The largest chat datagram (PROTOCOL 4.4: 1,000 bytes of text) still
    // fits one packet with room to spare.
    config.mtu_discovery_config(None);
    Ok(config)
}

/// How long this crate's clients wait on a silent server.
const CLIENT_IDLE_TIMEOUT_MS: u32 = 30_000;
/// How often this crate's clients prove they are alive when idle.
const CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Finishes the configuration of one of this crate's clients (the native
/// client, the load generator): a 30 s idle timeout, a keep-alive every
/// 10 s, and no path MTU discovery. The server sends 1,200-byte packets
/// whatever the path (see [`transport_config`]), and a client's signaling
/// fits them too; with quinn's default, each client sent four padded
/// probes (up to 1,452 bytes) right after its handshake, each answered
/// with an ACK: eight of a session's ~21 set-up datagrams, for nothing
/// (docs/performance.md §13).
pub fn client_config(builder: ClientConfigBuilder<WantsTransportConfigClient>) -> ClientConfig {
    let mut config = builder.build();
    let mut transport = QuicTransportConfig::default();
    transport.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
        CLIENT_IDLE_TIMEOUT_MS,
    ))));
    transport.keep_alive_interval(Some(CLIENT_KEEP_ALIVE));
    transport.mtu_discovery_config(None);
    config
        .quic_config_mut()
        .transport_config(std::sync::Arc::new(transport));
    config
}

/// Binds a UDP socket at `ip:port` with `buffer` bytes of kernel buffers. An
/// unspecified IPv6 address (`::`) also takes IPv4; a specific one only IPv6.
pub fn bind_udp(ip: IpAddr, port: u16, buffer: usize) -> anyhow::Result<UdpSocket> {
    let addr = SocketAddr::new(ip, port);
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if ip.is_ipv6() {
        socket.set_only_v6(!ip.is_unspecified())?;
    }
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    if let Ok(got) = socket.recv_buffer_size() {
        // Linux doubles what it grants (the rest is its bookkeeping) and
        // reports the doubled size.
        let usable = if cfg!(target_os = "linux") {
            got / 2
        } else {
            got
        };
        if usable < buffer {
            warn!(
                requested = buffer,
                granted = usable,
                "UDP receive buffer capped by the kernel; raise net.core.rmem_max for busy servers"
            );
        }
    }
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding UDP {addr}"))?;
    Ok(socket.into())
}

/// Binds a TCP listener at `ip:port`, dual-stack for `::`.
pub fn bind_tcp(ip: IpAddr, port: u16) -> anyhow::Result<std::net::TcpListener> {
    let addr = SocketAddr::new(ip, port);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if ip.is_ipv6() {
        socket.set_only_v6(!ip.is_unspecified())?;
    }
    socket.set_reuse_address(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding TCP {addr}"))?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

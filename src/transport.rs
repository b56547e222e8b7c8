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

/// Binds a UDP socket at `ip:port` with `buffer` bytes of kernel buffers,
/// past the kernel's limits when the process holds `CAP_NET_ADMIN`. An
/// unspecified IPv6 address (`::`) also takes IPv4; a specific one only IPv6.
pub fn bind_udp(ip: IpAddr, port: u16, buffer: usize) -> anyhow::Result<UdpSocket> {
    let addr = SocketAddr::new(ip, port);
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if ip.is_ipv6() {
        socket.set_only_v6(!ip.is_unspecified())?;
    }
    size_udp_buffers(&socket, buffer);
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding UDP {addr}"))?;
    Ok(socket.into())
}

/// Asks for `buffer` bytes of receive and send buffer on `socket`. Linux
/// grants at most `net.core.rmem_max` and `wmem_max` (about 208 KiB on a
/// stock kernel, which a busy server overflows); when it grants less and
/// the process has `CAP_NET_ADMIN` (root, or a service or container given
/// it), the buffers are set past those limits with `SO_RCVBUFFORCE` and
/// `SO_SNDBUFFORCE`, as other QUIC servers do. A receive buffer still
/// smaller than asked is logged as a warning (docs/deploy.md §2).
fn size_udp_buffers(socket: &Socket, buffer: usize) {
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    #[cfg(target_os = "linux")]
    {
        let capped =
            |granted: std::io::Result<usize>| granted.is_ok_and(|got| usable(got) < buffer);
        let mut forced = false;
        if capped(socket.recv_buffer_size()) {
            forced |= force_buffer(socket, libc::SO_RCVBUFFORCE, buffer).is_ok();
        }
        if capped(socket.send_buffer_size()) {
            forced |= force_buffer(socket, libc::SO_SNDBUFFORCE, buffer).is_ok();
        }
        if forced {
            tracing::info!(
                bytes = buffer,
                "UDP buffers set past net.core.rmem_max/wmem_max (CAP_NET_ADMIN)"
            );
        }
    }
    if let Ok(got) = socket.recv_buffer_size()
        && usable(got) < buffer
    {
        warn!(
            requested = buffer,
            granted = usable(got),
            "UDP receive buffer capped by the kernel; raise net.core.rmem_max (or give the server CAP_NET_ADMIN) for busy servers"
        );
    }
}

/// What a buffer size the kernel reports leaves for data: Linux doubles
/// what it grants (the rest is its bookkeeping) and reports the doubled size.
fn usable(reported: usize) -> usize {
    if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    }
}

/// Sets a socket buffer to `bytes` whatever the kernel's `*mem_max` limit,
/// with `option` `SO_RCVBUFFORCE` or `SO_SNDBUFFORCE`; fails with EPERM
/// without `CAP_NET_ADMIN`.
#[cfg(target_os = "linux")]
fn force_buffer(socket: &Socket, option: libc::c_int, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is the open socket's, and the option value is
    // a c_int passed with its own size, as setsockopt(2) requires.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// A number from a file of /proc/sys.
    fn sysctl(path: &str) -> usize {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.trim().parse().unwrap_or(0)
    }

    /// Whether this process holds CAP_NET_ADMIN (bit 12 of its effective
    /// capabilities).
    fn has_net_admin() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << 12) != 0)
    }

    #[test]
    fn udp_buffers_go_past_the_kernel_limits_with_cap_net_admin() {
        let rmem_max = sysctl("/proc/sys/net/core/rmem_max");
        let wmem_max = sysctl("/proc/sys/net/core/wmem_max");
        assert!(rmem_max > 0 && wmem_max > 0, "no net.core limits to read");
        // More than either limit lets a plain SO_RCVBUF/SO_SNDBUF have.
        let asked = rmem_max.max(wmem_max) + (1 << 20);
        if asked > (i32::MAX / 2) as usize {
            eprintln!("net.core limits too large to go past; nothing to check");
            return;
        }
        let socket = bind_udp(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, asked).expect("bind");
        let socket = socket2::SockRef::from(&socket);
        let received = usable(socket.recv_buffer_size().expect("SO_RCVBUF"));
        let sent = usable(socket.send_buffer_size().expect("SO_SNDBUF"));
        if has_net_admin() {
            assert_eq!(received, asked, "receive buffer not forced past rmem_max");
            assert_eq!(sent, asked, "send buffer not forced past wmem_max");
        } else {
            assert_eq!(received, rmem_max, "receive buffer not capped at rmem_max");
            assert_eq!(sent, wmem_max, "send buffer not capped at wmem_max");
        }
    }
}

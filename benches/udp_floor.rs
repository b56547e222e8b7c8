//! What the kernel alone charges to move QUIC-sized datagrams over loopback,
//! through the very calls quinn makes (quinn-udp: `sendmsg` with GSO,
//! `recvmmsg` with GRO). Both ends run on the benchmark's thread, so one
//! iteration is all the CPU the kernel spends on that traffic. No transport
//! over kernel UDP sockets can relay a message for less: this is the floor
//! under the load generator's `server_cpu_us_per_message`
//! (`docs/performance.md` §7).
//!
//! Run with `cargo bench --bench udp_floor`.

use std::io::IoSliceMut;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wtransport::quinn::udp::{RecvMeta, Transmit, UdpSocketState};

/// The largest QUIC packet quinn sends by default (its MTU discovery bound).
const QUIC_PACKET: usize = 1452;
/// A packet holding little more than an ACK frame.
const ACK_PACKET: usize = 50;

/// Longest a benchmark waits for a datagram on loopback.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);

/// A sender and a receiver socket on 127.0.0.1, set up as quinn sets its own.
struct Pair {
    tx: UdpSocket,
    tx_state: UdpSocketState,
    rx: UdpSocket,
    rx_state: UdpSocketState,
    buf: Vec<u8>,
}

impl Pair {
    fn new() -> Pair {
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind sender");
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind receiver");
        // A lost datagram fails the run instead of hanging it.
        rx.set_read_timeout(Some(RECV_TIMEOUT))
            .expect("receive timeout");
        let tx_state = UdpSocketState::new((&tx).into()).expect("sender state");
        let rx_state = UdpSocketState::new((&rx).into()).expect("receiver state");
        Pair {
            tx,
            tx_state,
            rx,
            rx_state,
            buf: vec![0; 64 * 1024],
        }
    }

    /// Sends `segments` packets of `size` bytes in one call (GSO when more
    /// than one, as quinn does), then receives until all have arrived.
    fn round(&mut self, contents: &[u8], size: usize) {
        let transmit = Transmit {
            destination: self.rx.local_addr().expect("receiver address"),
            ecn: None,
            contents,
            segment_size: (contents.len() > size).then_some(size),
            src_ip: None,
        };
        self.tx_state
            .send((&self.tx).into(), &transmit)
            .expect("send");
        let mut got = 0;
        while got < contents.len() {
            let mut meta = [RecvMeta::default()];
            let mut bufs = [IoSliceMut::new(&mut self.buf)];
            let n = self
                .rx_state
                .recv((&self.rx).into(), &mut bufs, &mut meta)
                .expect("receive");
            got += meta.iter().take(n).map(|m| m.len).sum::<usize>();
        }
    }
}

fn loopback(c: &mut Criterion) {
    let mut pair = Pair::new();
    assert!(
        pair.tx_state.max_gso_segments() >= 2,
        "this kernel has no UDP GSO; the 2-packet case would measure something else"
    );
    let mut group = c.benchmark_group("udp_floor");
    for (name, segments, size) in [
        ("ack_50b", 1, ACK_PACKET),
        ("packet_1452b", 1, QUIC_PACKET),
        // A 2 KB offer is two full packets: one GSO send, one or two receives.
        ("offer_2x1452b_gso", 2, QUIC_PACKET),
    ] {
        let contents = vec![0x5a; segments * size];
        group.throughput(Throughput::Elements(segments as u64));
        group.bench_function(name, |b| b.iter(|| pair.round(&contents, size)));
    }
    group.finish();
}

/// Pins the calling thread to one CPU (Linux); false if that failed.
fn pin_to(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, and the set outlives the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// A round trip of a small datagram to an echo thread that sleeps in
/// `recv` between messages, as a server's and a client's threads do when a
/// message comes after a pause: two wake-ups of a blocked thread, on the same
/// CPU or across CPUs. A relayed message needs at least two such wake-ups
/// (the server's, then the receiver's) on top of the work it costs.
fn wake_ups(c: &mut Criterion) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut group = c.benchmark_group("udp_wake");
    for (name, echo_cpu) in [("same_cpu_round_trip", 0), ("cross_cpu_round_trip", 1)] {
        if echo_cpu >= cpus {
            continue;
        }
        let echo = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind echo");
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind client");
        client
            .connect(echo.local_addr().expect("echo address"))
            .expect("connect");
        client
            .set_read_timeout(Some(RECV_TIMEOUT))
            .expect("receive timeout");
        let echo_thread = std::thread::spawn(move || {
            pin_to(echo_cpu);
            let mut buf = [0u8; 64];
            // An empty datagram ends the thread.
            while let Ok((n, from)) = echo.recv_from(&mut buf) {
                if n == 0 || echo.send_to(&buf[..n], from).is_err() {
                    break;
                }
            }
        });
        let pinned = pin_to(0);
        let mut buf = [0u8; 64];
        group.bench_function(name, |b| {
            b.iter(|| {
                client.send(&[1; ACK_PACKET]).expect("send");
                client.recv(&mut buf).expect("receive")
            })
        });
        let _ = client.send(&[]);
        let _ = echo_thread.join();
        assert!(pinned, "could not pin the benchmark thread");
    }
    group.finish();
}

criterion_group!(benches, loopback, wake_ups);
criterion_main!(benches);

//! What the kernel alone charges to move QUIC-sized datagrams over loopback,
//! through the very calls quinn makes (quinn-udp: `sendmsg` with GSO,
//! `recvmmsg` with GRO). Both ends run on the benchmark's thread, so one
//! iteration is all the CPU the kernel spends on that traffic: the part of
//! the load generator's `server_cpu_us_per_message` that no QUIC stack on
//! kernel sockets avoids, short of packing several messages into one packet
//! or one call (`docs/performance.md` §7).
//!
//! Run with `cargo bench --bench udp_floor`.

use std::io::{ErrorKind, IoSliceMut};
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
        let tx_state = UdpSocketState::new((&tx).into()).expect("sender state");
        let rx_state = UdpSocketState::new((&rx).into()).expect("receiver state");
        // quinn-udp makes sockets non-blocking; block instead (a datagram
        // the kernel delivers a little late is waited for), with a timeout
        // so that a lost one fails the run instead of hanging it.
        for socket in [&tx, &rx] {
            socket.set_nonblocking(false).expect("blocking socket");
        }
        rx.set_read_timeout(Some(RECV_TIMEOUT))
            .expect("receive timeout");
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
            .try_send((&self.tx).into(), &transmit)
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

/// The CPUs this process may run on (Linux), in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set for the kernel to fill,
    // and CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
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
    let cpus = allowed_cpus();
    let Some(&home) = cpus.first() else {
        eprintln!("udp_wake: cannot read this thread's CPUs; skipped");
        return;
    };
    let mut group = c.benchmark_group("udp_wake");
    for (name, echo_cpu) in [
        ("same_cpu_round_trip", Some(home)),
        ("cross_cpu_round_trip", cpus.get(1).copied()),
    ] {
        let Some(echo_cpu) = echo_cpu else {
            eprintln!("udp_wake: one CPU only; {name} skipped");
            continue;
        };
        let echo = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind echo");
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind client");
        client
            .connect(echo.local_addr().expect("echo address"))
            .expect("connect");
        client
            .set_read_timeout(Some(RECV_TIMEOUT))
            .expect("receive timeout");
        // The echo thread wakes up now and then to see whether it is done.
        echo.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("echo timeout");
        let done = Arc::new(AtomicBool::new(false));
        let (pinned_tx, pinned_rx) = std::sync::mpsc::channel();
        let echo_thread = std::thread::spawn({
            let done = done.clone();
            move || {
                let _ = pinned_tx.send(pin_to(echo_cpu));
                let mut buf = [0u8; 64];
                while !done.load(Ordering::Relaxed) {
                    match echo.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let _ = echo.send_to(buf.get(..n).unwrap_or_default(), from);
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
            }
        });
        let pinned = pin_to(home) && pinned_rx.recv().unwrap_or(false);
        if pinned {
            let mut buf = [0u8; 64];
            group.bench_function(name, |b| {
                b.iter(|| {
                    client.send(&[1; ACK_PACKET]).expect("send");
                    client.recv(&mut buf).expect("receive")
                })
            });
        } else {
            eprintln!(
                "udp_wake: could not pin threads to CPUs {home} and {echo_cpu}; {name} skipped"
            );
        }
        done.store(true, Ordering::Relaxed);
        let _ = echo_thread.join();
    }
    group.finish();
}

criterion_group!(benches, loopback, wake_ups);
criterion_main!(benches);

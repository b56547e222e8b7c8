//! `examples/floor_server.rs` on the thin WebTransport layer
//! (`quicmatch::webtransport`, directly on quinn) instead of wtransport's
//! server: the same command line, the same protocol subset (`Ping` → `Pong`,
//! `Join` → `Matched` with the longest-waiting session of the other gender,
//! relays written straight into the partner's stream, chat datagrams
//! forwarded as they are), the same TLS and transport settings. What
//! differs is only the layer under it: per session, one task of ours (the
//! handshake, then the signaling stream, datagrams, refusals and the
//! HTTP/3 control streams in one `select!`) beside quinn's connection
//! driver, and no channels. `scripts/load-smoke.sh` runs it with
//! `SERVER=thin`.
//!
//! ```sh
//! cargo run --release --example thin_floor -- --port 5601
//! target/release/quicmatch-load --url https://127.0.0.1:5601/signal \
//!     --cert-hash HASH --scenario relay --pairs 1000 --server-pid PID
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use clap::Parser;
use quicmatch::codec::{self, FrameDecoder, encode_frame, server_relay_frame};
use quicmatch::protocol::{ClientMsg, Gender, Profile, ServerMsg};
use quicmatch::webtransport::{self, Datagrams, Event};
use tokio::io::AsyncReadExt;
use wtransport::quinn;

#[path = "common/loopback_server.rs"]
mod loopback_server;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "The bare-stack signaling relay on the thin WebTransport layer")]
struct Args {
    /// UDP port (127.0.0.1 only).
    #[arg(long, default_value_t = 5601)]
    port: u16,
    /// Kernel buffer size of the UDP socket, in bytes.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    udp_buffer_bytes: usize,
    /// Experiments with quinn's per-connection memory (none by default: the
    /// transport settings are `transport::transport_config`'s).
    #[command(flatten)]
    tuning: Tuning,
}

/// Transport settings to try on top of quicmatch's.
#[derive(Debug, clap::Args)]
struct Tuning {
    /// Turn PMTU discovery off (the MTU stays at `--initial-mtu`).
    #[arg(long)]
    no_mtu_discovery: bool,
    /// quinn's initial MTU (default 1200).
    #[arg(long)]
    initial_mtu: Option<u16>,
    /// Turn UDP segmentation offload (GSO batches of up to 10 packets) off.
    #[arg(long)]
    no_gso: bool,
    /// Peer-initiated bidirectional streams allowed at once (quicmatch: 4).
    #[arg(long)]
    max_bidi: Option<u32>,
    /// Peer-initiated unidirectional streams allowed at once (quicmatch: 8).
    #[arg(long)]
    max_uni: Option<u32>,
    /// Datagram receive buffer, bytes (quicmatch: 65536).
    #[arg(long)]
    datagram_receive_buffer: Option<usize>,
    /// Datagram send buffer, bytes (quicmatch: 65536).
    #[arg(long)]
    datagram_send_buffer: Option<usize>,
    /// Crypto (handshake) buffer per connection, bytes (quinn: 16384).
    #[arg(long)]
    crypto_buffer: Option<usize>,
}

impl Tuning {
    fn apply(&self, config: &mut quinn::TransportConfig) {
        if self.no_mtu_discovery {
            config.mtu_discovery_config(None);
        }
        if let Some(mtu) = self.initial_mtu {
            config.initial_mtu(mtu);
        }
        if self.no_gso {
            config.enable_segmentation_offload(false);
        }
        if let Some(n) = self.max_bidi {
            config.max_concurrent_bidi_streams(quinn::VarInt::from_u32(n));
        }
        if let Some(n) = self.max_uni {
            config.max_concurrent_uni_streams(quinn::VarInt::from_u32(n));
        }
        if let Some(n) = self.datagram_receive_buffer {
            config.datagram_receive_buffer_size(Some(n));
        }
        if let Some(n) = self.datagram_send_buffer {
            config.datagram_send_buffer_size(n);
        }
        if let Some(n) = self.crypto_buffer {
            config.crypto_buffer_size(n);
        }
    }
}

/// One session as its partner sees it: where to write relays and datagrams.
struct Slot {
    /// The session's datagram sender.
    datagrams: Datagrams,
    /// The signaling stream's sending half, shared by every task that writes.
    send: tokio::sync::Mutex<quinn::SendStream>,
    /// The current partner, if matched and still there.
    partner: Mutex<Weak<Slot>>,
}

impl Slot {
    /// The partner, while matched and still connected.
    fn current_partner(&self) -> Option<Arc<Slot>> {
        self.partner
            .lock()
            .ok()
            .and_then(|partner| partner.upgrade())
    }
}

/// Sessions waiting for a partner of one gender, oldest first.
type Queue = VecDeque<(Weak<Slot>, Profile)>;

/// The waiting sessions, by gender, and the match counter.
#[derive(Default)]
struct Pool {
    /// Waiting sessions: men at 0, women at 1.
    waiting: Mutex<[Queue; 2]>,
    /// The last match id handed out.
    next_match: AtomicU64,
}

/// Runs the floor server on a multi-threaded runtime, as quicmatch runs by default.
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // `RUST_LOG=quicmatch::webtransport=debug` shows the layer's steps.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// Binds 127.0.0.1, prints the session URL and certificate hash (which
/// `scripts/load-smoke.sh` reads), and serves sessions until killed.
async fn run(args: Args) -> anyhow::Result<()> {
    let (endpoint, hash) = loopback_server::endpoint(args.port, args.udp_buffer_bytes, |config| {
        args.tuning.apply(config)
    })?;
    println!(
        "thin floor server on https://{}/signal, certificate hash {hash}",
        endpoint.local_addr()?
    );
    let pool = Arc::new(Pool::default());
    while let Some(incoming) = endpoint.accept().await {
        let pool = pool.clone();
        let task = async move {
            if let Err(error) = serve(incoming, pool).await {
                tracing::debug!(%error, "session ended");
            }
        };
        if std::env::var_os("THIN_FLOOR_TASK_SIZE").is_some() {
            eprintln!(
                "session task future: {} bytes",
                std::mem::size_of_val(&task)
            );
        }
        tokio::spawn(task);
    }
    Ok(())
}

/// Serves one session until it ends; any error just ends it. The one task
/// of ours for the connection: handshake, then the signaling stream and the
/// session's other events in one loop. The set-up runs boxed, so its
/// futures' state is freed once the session is open instead of sizing the
/// task for the session's whole life.
async fn serve(incoming: quinn::Incoming, pool: Arc<Pool>) -> anyhow::Result<()> {
    let (mut session, send, mut recv) = Box::pin(open(incoming)).await?;
    let slot = Arc::new(Slot {
        datagrams: session.datagrams(),
        send: tokio::sync::Mutex::new(send),
        partner: Mutex::new(Weak::new()),
    });
    let mut decoder = FrameDecoder::default();
    if std::env::var_os("THIN_FLOOR_TASK_SIZE").is_some() {
        eprintln!(
            "futures: session.next() {} bytes, handle() {} bytes, read_buf {} bytes",
            std::mem::size_of_val(&session.next()),
            std::mem::size_of_val(&handle(&slot, &pool, ClientMsg::Leave, &[])),
            std::mem::size_of_val(&recv.read_buf(decoder.buffer())),
        );
    }
    loop {
        while let Some(frame) = decoder.next_frame()? {
            tracing::trace!(len = frame.len(), "frame");
            let msg: ClientMsg = codec::decode(codec::frame_payload(&frame))?;
            tracing::trace!(?msg, "message");
            handle(&slot, &pool, msg, &frame).await?;
        }
        tokio::select! {
            read = recv.read_buf(decoder.buffer()) => {
                tracing::trace!(?read, "read");
                if read? == 0 {
                    return Ok(());
                }
            }
            event = session.next() => match event {
                // Chat datagrams go to the partner as they are.
                Event::Datagram(datagram) => {
                    if let Some(partner) = slot.current_partner() {
                        let _ = partner.datagrams.send(&datagram);
                    }
                }
                Event::Stream(..) => {}
                Event::Closed(closed) => {
                    tracing::debug!(%closed, "session closed");
                    return Ok(());
                }
            },
        }
    }
}

/// The set-up: QUIC handshake, HTTP/3 and CONNECT (within 10 s), 200, and
/// the signaling stream.
async fn open(
    incoming: quinn::Incoming,
) -> anyhow::Result<(webtransport::Session, quinn::SendStream, quinn::RecvStream)> {
    let request =
        tokio::time::timeout(Duration::from_secs(10), webtransport::handshake(incoming)).await??;
    tracing::debug!(path = request.path(), origin = ?request.origin(), headers = ?request.headers(), "request");
    let mut session = request.accept().await?;
    let (send, recv) = session.accept_stream().await?;
    tracing::debug!("signaling stream");
    Ok((session, send, recv))
}

/// Answers one client message. A failure to reach the partner is the
/// partner's problem and does not end this session.
async fn handle(slot: &Arc<Slot>, pool: &Pool, msg: ClientMsg, frame: &[u8]) -> anyhow::Result<()> {
    match msg {
        ClientMsg::Ping { nonce } => write(slot, &encode_frame(&ServerMsg::Pong { nonce })).await,
        ClientMsg::Join(profile) => {
            join(slot, pool, profile).await;
            Ok(())
        }
        ClientMsg::Offer { .. } | ClientMsg::Answer { .. } | ClientMsg::Ice { .. } => {
            let partner = slot.current_partner();
            if let (Some(partner), Some(relayed)) = (partner, server_relay_frame(&msg, frame)) {
                let _ = write(&partner, &relayed).await;
            }
            Ok(())
        }
        ClientMsg::Stop | ClientMsg::Leave => anyhow::bail!("the floor server does not re-match"),
    }
}

/// Matches `slot` with the longest-waiting live session of the other
/// gender, which becomes the initiator (as in quicmatch), or queues it.
/// Sends no `Waiting`: a joiner's `Matched` may be written by its partner's
/// task at any moment, and nothing may follow it out of order.
async fn join(slot: &Arc<Slot>, pool: &Pool, profile: Profile) {
    let index = |gender| usize::from(gender == Gender::Female);
    let found = {
        let Ok(mut waiting) = pool.waiting.lock() else {
            return;
        };
        let mut found = None;
        if let Some(queue) = waiting.get_mut(index(profile.gender.opposite())) {
            while let Some((waiter, waiter_profile)) = queue.pop_front() {
                if let Some(waiter) = waiter.upgrade() {
                    found = Some((waiter, waiter_profile));
                    break;
                }
            }
        }
        if found.is_none()
            && let Some(queue) = waiting.get_mut(index(profile.gender))
        {
            queue.push_back((Arc::downgrade(slot), profile.clone()));
        }
        found
    };
    let Some((waiter, waiter_profile)) = found else {
        return;
    };
    let match_id = pool.next_match.fetch_add(1, Ordering::Relaxed) + 1;
    for (one, other, other_profile, initiator) in [
        (&waiter, slot, profile, true),
        (slot, &waiter, waiter_profile, false),
    ] {
        if let Ok(mut partner) = one.partner.lock() {
            *partner = Arc::downgrade(other);
        }
        let matched = ServerMsg::Matched {
            match_id,
            partner: other_profile,
            initiator,
            ice_servers: Vec::new(),
        };
        let _ = write(one, &encode_frame(&matched)).await;
    }
}

/// Writes a whole frame to a session's signaling stream.
async fn write(slot: &Slot, frame: &[u8]) -> anyhow::Result<()> {
    let written = slot.send.lock().await.write_all(frame).await;
    tracing::trace!(len = frame.len(), ?written, "write");
    written?;
    Ok(())
}

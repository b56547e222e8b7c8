//! One WebTransport session: the handshake, the signaling stream's reader and
//! writer, and the datagram path. The rules live in the registry and the
//! peer, and what the client sends is judged by [`input`], whatever carries
//! it; this is the thin async layer that moves bytes between them.

pub mod input;
pub mod outbound;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{Instrument, debug};
use wtransport::quinn::{Connection, Incoming, RecvStream, SendStream, VarInt};

use crate::codec::{FrameDecoder, encode_frame};
use crate::frontdoor::{FrontDoor, HandshakeSlot, Pass, Refused, SourceSeat};
use crate::hub::{Hub, NotAdmitted};
use crate::metrics;
use crate::peer::{Link, OutboundReader, Peer};
use crate::protocol::{CloseCode, MAX_CLOSE_REASON_LEN, ServerMsg};
use crate::webtransport::{self, Event, Session};
use input::Input;
use outbound::{Drain, Unit};

/// How long the final `Closing` frame may take to be acknowledged.
pub(crate) const CLOSING_GRACE: Duration = Duration::from_secs(1);
/// Most frames, and bytes, taken off the queue for one write.
const MAX_BATCH: usize = 64;
pub(crate) const MAX_BATCH_BYTES: usize = 64 * 1024;
/// Read buffer kept by an idle session; larger buffers are given back.
const IDLE_READ_BUFFER: usize = 4 * 1024;

/// Per-session limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Frames a second.
    pub frame_rate: u32,
    /// Datagrams a second.
    pub datagram_rate: u32,
    /// Bytes the outbound queue may hold.
    pub outbound_queue_bytes: usize,
}

/// Serves one incoming session to its end, if the front door lets it in;
/// never panics on client input. `slot` is its place among the handshakes in
/// flight, given back once the signaling stream is open.
/// Everything it logs is inside a `session` span carrying its id, and its
/// writer logs each match it enters and leaves with the match id, so one
/// person's story can be followed by the session id and a pair's by the
/// match id (at debug level; nothing personal at info). The span's fields
/// are set once each: a span is formatted on every line, and tracing's
/// text formatter keeps every value recorded on it, so a field recorded per
/// match would grow the span (and each line) with every match.
pub async fn serve(incoming: Incoming, slot: HandshakeSlot, hub: Arc<Hub>, limits: Limits) {
    let span = tracing::info_span!(
        "session",
        id = tracing::field::Empty,
        sub = tracing::field::Empty
    );
    let served = serve_inner(incoming, slot, hub, limits)
        .instrument(span)
        .await;
    if let Err(error) = served {
        debug!(%error, "session ended");
    }
}

/// Runs the handshake up to the signaling stream, within the front door's
/// timeout: the QUIC handshake, HTTP/3's SETTINGS and the CONNECT request
/// ([`webtransport::handshake`]), the front door's decision on it, then the
/// session and its signaling stream, with the session's seat in its
/// source's share; `None` if it was refused or timed out (and counted).
async fn handshake(
    incoming: Incoming,
    slot: HandshakeSlot,
) -> Option<(Session, SendStream, RecvStream, SourceSeat)> {
    let door = slot.door().clone();
    let deadline = Instant::now() + door.handshake_timeout();
    let set_up = webtransport::handshake(incoming);
    let request = match timeout_at(deadline, set_up).await {
        Ok(Ok(request)) => request,
        Ok(Err(error)) => {
            debug!(%error, "handshake failed");
            metrics::handshake("failed");
            return None;
        }
        Err(_) => {
            debug!("handshake timed out");
            metrics::handshake("failed");
            return None;
        }
    };
    let remote = request.remote_address().ip();
    let seat = match door.admit(request.path(), request.origin(), remote) {
        Ok(Pass { subject, seat }) => {
            if let Some(subject) = subject {
                tracing::Span::current().record("sub", subject);
            }
            seat
        }
        Err(refused) => {
            let answer = async {
                match refused {
                    Refused::NotFound => request.not_found().await,
                    Refused::Forbidden => request.forbidden().await,
                    Refused::TooMany(_) => request.too_many_requests().await,
                }
            };
            let _ = timeout_at(deadline, answer).await;
            return None;
        }
    };
    let mut session = match timeout_at(deadline, request.accept()).await {
        Ok(Ok(session)) => session,
        _ => {
            metrics::handshake("failed");
            return None;
        }
    };
    match timeout_at(deadline, session.accept_stream()).await {
        Ok(Ok((send, recv))) => Some((session, send, recv, seat)),
        _ => {
            metrics::handshake("no_stream");
            // Closed explicitly: a half-open session would otherwise keep
            // the connection (and its keep-alives) going.
            session.close(CloseCode::ProtocolViolation.code(), b"no signaling stream");
            None
        }
    }
}

async fn serve_inner(
    incoming: Incoming,
    slot: HandshakeSlot,
    hub: Arc<Hub>,
    limits: Limits,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let door = slot.door().clone();
    let Some((mut session, mut send, recv, _seat)) = handshake(incoming, slot).await else {
        return Ok(());
    };
    let connection = session.connection().clone();

    let link = Link::WebTransport(session.datagrams());
    let (peer, outbound) = match enter(&door, &hub, link, limits) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            close_with_closing(&mut send, &connection, refusal.code, refusal.reason).await;
            return Ok(());
        }
    };
    metrics::handshake("accepted");
    metrics::session_set_up(started.elapsed());
    tracing::Span::current().record("id", peer.id());
    debug!(remote = %connection.remote_address(), "session open");
    // The reader and the writer are two futures of this one task (a task
    // and its bookkeeping less per session), polled together: while the
    // reader waits for a partner's queue to make room, this session's own
    // queue still drains, so two sessions relaying to each other never wait
    // on each other.
    let reader = async {
        let _leave = Admitted {
            hub: &hub,
            peer: &peer,
        };
        read_loop(&peer, &mut session, &hub, recv, limits).await;
    };
    tokio::join!(reader, write_loop(&peer, connection, send, outbound));
    debug!("session closed");
    Ok(())
}

/// Why a session that reached the hub was not let in, told in `Closing`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    /// The close code.
    pub code: CloseCode,
    /// The reason.
    pub reason: &'static str,
}

/// Lets a session that passed the front door into the hub, unless the
/// memory ceiling, the session cap or a shutdown keeps it out (counted).
pub(crate) fn enter(
    door: &FrontDoor,
    hub: &Hub,
    link: Link,
    limits: Limits,
) -> Result<(Arc<Peer>, OutboundReader), Refusal> {
    const AT_CAPACITY: &str = "server at capacity";
    let admitted = if door.ceiling().is_over() {
        Err((CloseCode::AtCapacity, AT_CAPACITY, "over_memory"))
    } else {
        hub.connect(|id| Peer::new(id, link, limits.outbound_queue_bytes))
            .map_err(|refused| match refused {
                NotAdmitted::AtCapacity => (CloseCode::AtCapacity, AT_CAPACITY, "at_capacity"),
                NotAdmitted::ShuttingDown => (
                    CloseCode::ShuttingDown,
                    "server shutting down",
                    "shutting_down",
                ),
            })
    };
    admitted.map_err(|(code, reason, label)| {
        metrics::handshake(label);
        metrics::closed(code);
        Refusal { code, reason }
    })
}

/// Takes an admitted session out of the registry however its reader ends
/// (even by a panic), and lets its writer close the connection.
pub(crate) struct Admitted<'a> {
    /// The hub it was admitted to.
    pub hub: &'a Hub,
    /// The session.
    pub peer: &'a Arc<Peer>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.hub.disconnect(self.peer.id());
        // A no-op when a close was already requested; otherwise the client
        // went away (or finished its stream) and there is nothing to say.
        self.peer.request_close(CloseCode::Normal, "session ended");
    }
}

/// Reads frames and datagrams until the client goes away or a close is
/// requested. The session's own events come from [`Session::next`], which
/// also refuses every stream after the signaling stream and keeps reading
/// HTTP/3's control streams.
async fn read_loop(
    peer: &Arc<Peer>,
    session: &mut Session,
    hub: &Hub,
    mut recv: RecvStream,
    limits: Limits,
) {
    let mut decoder = FrameDecoder::default();
    let mut input = Input::new(limits);
    // Made once: a fresh wait future per wake-up would register (and
    // unregister) a waiter each time.
    let closing = peer.close_requested();
    tokio::pin!(closing);
    loop {
        while !peer.is_closing() {
            match decoder.next_frame() {
                Ok(Some(frame)) => input.frame(peer, hub, frame).await,
                Ok(None) => break,
                Err(bad) => {
                    debug!(%bad, "unskippable frame length");
                    peer.request_close(CloseCode::ProtocolViolation, "invalid frame length");
                    return;
                }
            }
        }
        decoder.shrink_if_empty(IDLE_READ_BUFFER);
        tokio::select! {
            biased;
            _ = &mut closing => return,
            read = recv.read_buf(decoder.buffer()) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            event = session.next() => match event {
                Event::Datagram(datagram) => input.datagram(peer, datagram),
                Event::Closed(closed) => {
                    debug!(%closed, "session ended by the connection");
                    return;
                }
                // Only the first stream is handed over, as the signaling
                // stream; the layer refuses every later one itself.
                Event::Stream(..) => {}
            },
        }
    }
}

/// Writes the outbound queue to the signaling stream in batches; on a close
/// request, sends `Closing` and closes the session.
async fn write_loop(
    peer: &Arc<Peer>,
    connection: Connection,
    mut send: SendStream,
    mut outbound: OutboundReader,
) {
    let mut drain = Drain::default();
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_bytes = 0;
    // Each frame's length as queued, to tell afterwards whether a failed
    // write stopped inside a frame (kept across batches: no allocation each).
    let mut lengths: Vec<usize> = Vec::new();
    let mut cut_short = false;
    let closing = peer.close_requested();
    tokio::pin!(closing);
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut closing => break,
            item = outbound.recv() => item,
        };
        let mut next = Some(first);
        while let Some(item) = next.take().or_else(|| outbound.try_recv()) {
            // A WebTransport session's datagrams never pass the queue.
            let Some(Unit::Frame(frame)) = drain.take(peer, item) else {
                continue;
            };
            batch_bytes += frame.len();
            batch.push(frame);
            if batch.len() >= MAX_BATCH || batch_bytes >= MAX_BATCH_BYTES {
                break;
            }
        }
        lengths.clear();
        lengths.extend(batch.iter().map(Bytes::len));
        let result = {
            let mut write = std::pin::pin!(send.write_all_chunks(&mut batch));
            tokio::select! {
                biased;
                result = &mut write => (result.is_ok(), false),
                // A close lets a write in progress finish, briefly, so that the
                // Closing frame can follow it on a frame boundary.
                _ = &mut closing => match timeout(CLOSING_GRACE / 2, &mut write).await {
                    Ok(result) => (result.is_ok(), true),
                    Err(_) => (false, true),
                },
            }
        };
        let (written, closed) = result;
        if closed && written {
            break;
        }
        if !written {
            // quinn empties written chunks and shortens a partly written one.
            cut_short = batch
                .iter()
                .zip(&lengths)
                .any(|(chunk, &len)| !chunk.is_empty() && chunk.len() != len);
            break;
        }
        drain.written();
        batch.clear();
        batch_bytes = 0;
    }
    let (code, reason) = peer.close_reason();
    debug!(code = code.code(), reason, "closing");
    metrics::closed(code);
    if cut_short {
        // A frame was cut short, so no Closing frame could be parsed after
        // it: the stream is reset. quinn sends no CONNECTION_CLOSE while the
        // congestion window is full (quinn-rs/quinn#2785), and a stalled
        // peer's often is, so the close waits a moment for in-flight data to
        // be acknowledged (or for the peer to close first).
        let _ = send.reset(VarInt::from_u32(code.code()));
        let _ = timeout(CLOSING_GRACE, connection.closed()).await;
        connection.close(VarInt::from_u32(code.code()), reason.as_bytes());
    } else {
        close_with_closing(&mut send, &connection, code, reason).await;
    }
}

/// Sends `Closing`, waits (briefly) for it to be acknowledged, then closes.
async fn close_with_closing(
    send: &mut SendStream,
    connection: &Connection,
    code: CloseCode,
    reason: &str,
) {
    debug_assert!(reason.len() <= MAX_CLOSE_REASON_LEN);
    if code != CloseCode::Normal {
        let frame = encode_frame(&ServerMsg::Closing {
            code: code.code(),
            reason: reason.to_owned(),
        });
        let deadline = Instant::now() + CLOSING_GRACE;
        let _ = timeout_at(deadline, async {
            if send.write_all(&frame).await.is_ok() && send.finish().is_ok() {
                // Acknowledged (or stopped by the client).
                let _ = send.stopped().await;
            }
        })
        .await;
    }
    connection.close(VarInt::from_u32(code.code()), reason.as_bytes());
}

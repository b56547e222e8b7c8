//! One WebTransport session: the handshake, the signaling stream's reader and
//! writer, and the datagram path. The rules live in the registry and the
//! peer; this is the thin async layer that moves bytes between them.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{Instrument, debug};
use wtransport::endpoint::IncomingSession;
use wtransport::{Connection, RecvStream, SendStream, VarInt};

use crate::admission::Decision;
use crate::codec::{self, DecodeError, FrameDecoder, encode_frame};
use crate::frontdoor::{HandshakeSlot, SourceSeat};
use crate::hub::{Hub, NotAdmitted};
use crate::metrics;
use crate::peer::{Outbound, Peer, Routing};
use crate::protocol::{
    ClientMsg, CloseCode, Datagram, ErrorCode, MAX_CHAT_LEN, MAX_CLOSE_REASON_LEN,
    MAX_ICE_FIELD_LEN, MAX_SDP_LEN, ServerMsg,
};
use crate::ratelimit::{FloodGuard, Kind, Verdict};
use crate::registry::RefusedError;

/// How long the final `Closing` frame may take to be acknowledged.
const CLOSING_GRACE: Duration = Duration::from_secs(1);
/// Stream error code used to refuse extra streams.
const REFUSED_STREAM: u32 = 0x10;
/// Most frames, and bytes, taken off the queue for one write.
const MAX_BATCH: usize = 64;
pub(crate) const MAX_BATCH_BYTES: usize = 64 * 1024;
/// The first byte of a `Datagram::ChatAck` (its variant index).
const CHAT_ACK_TAG: u8 = 1;
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
/// Everything it logs is inside a `session` span carrying its id and its
/// current match id, and its writer logs each match it enters, so one
/// person's story can be followed (at debug level; nothing personal at info).
pub async fn serve(incoming: IncomingSession, slot: HandshakeSlot, hub: Arc<Hub>, limits: Limits) {
    let span = tracing::info_span!(
        "session",
        id = tracing::field::Empty,
        match_id = tracing::field::Empty,
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
/// timeout: the connection, the stream, and the session's seat in its
/// source's share; `None` if it was refused or timed out (and counted).
async fn handshake(
    incoming: IncomingSession,
    slot: HandshakeSlot,
) -> Option<(Connection, SendStream, RecvStream, SourceSeat)> {
    let door = slot.door().clone();
    let deadline = Instant::now() + door.handshake_timeout();
    let request = match timeout_at(deadline, incoming).await {
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
    let seat = match door.admission().check(request.path(), request.origin()) {
        Decision::Admit { subject } => {
            if let Some(subject) = subject {
                tracing::Span::current().record("sub", subject);
            }
            door.seat(request.remote_address().ip())
        }
        Decision::NotFound => {
            let _ = timeout_at(deadline, request.not_found()).await;
            metrics::handshake("not_found");
            return None;
        }
        Decision::Forbidden(why) => {
            debug!(why, origin = request.origin(), "session refused");
            let _ = timeout_at(deadline, request.forbidden()).await;
            metrics::handshake("forbidden");
            return None;
        }
    };
    let seat = match seat {
        Ok(seat) => seat,
        Err(over) => {
            debug!(limit = over.label(), remote = %request.remote_address(), "too many sessions from one source");
            let _ = timeout_at(deadline, request.too_many_requests()).await;
            metrics::handshake(over.label());
            return None;
        }
    };
    let connection = match timeout_at(deadline, request.accept()).await {
        Ok(Ok(connection)) => connection,
        _ => {
            metrics::handshake("failed");
            return None;
        }
    };
    match timeout_at(deadline, connection.accept_bi()).await {
        Ok(Ok((send, recv))) => Some((connection, send, recv, seat)),
        _ => {
            metrics::handshake("no_stream");
            // Closed explicitly: a half-open stream would otherwise keep the
            // connection (and its keep-alives) going.
            connection.close(
                VarInt::from_u32(CloseCode::ProtocolViolation.code()),
                b"no signaling stream",
            );
            None
        }
    }
}

async fn serve_inner(
    incoming: IncomingSession,
    slot: HandshakeSlot,
    hub: Arc<Hub>,
    limits: Limits,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let door = slot.door().clone();
    let Some((connection, mut send, recv, _seat)) = handshake(incoming, slot).await else {
        return Ok(());
    };
    tokio::spawn(refuse_extra_streams(connection.clone()));

    const AT_CAPACITY: &str = "server at capacity";
    let admitted = if door.ceiling().is_over() {
        Err((CloseCode::AtCapacity, AT_CAPACITY, "over_memory"))
    } else {
        hub.connect(|id| Peer::new(id, connection.clone(), limits.outbound_queue_bytes))
            .map_err(|refused| match refused {
                NotAdmitted::AtCapacity => (CloseCode::AtCapacity, AT_CAPACITY, "at_capacity"),
                NotAdmitted::ShuttingDown => (
                    CloseCode::ShuttingDown,
                    "server shutting down",
                    "shutting_down",
                ),
            })
    };
    let (peer, outbound) = match admitted {
        Ok(admitted) => admitted,
        Err((code, reason, label)) => {
            metrics::handshake(label);
            metrics::closed(code);
            close_with_closing(&mut send, &connection, code, reason).await;
            return Ok(());
        }
    };
    metrics::handshake("accepted");
    metrics::session_set_up(started.elapsed());
    tracing::Span::current().record("id", peer.id());
    debug!(remote = %connection.remote_address(), "session open");
    let writer = tokio::spawn(write_loop(peer.clone(), send, outbound).in_current_span());
    {
        let _leave = Admitted {
            hub: &hub,
            peer: &peer,
        };
        read_loop(&peer, &hub, recv, limits).await;
    }
    let _ = writer.await;
    debug!("session closed");
    Ok(())
}

/// Takes an admitted session out of the registry however its reader ends
/// (even by a panic), and lets its writer close the connection.
struct Admitted<'a> {
    hub: &'a Hub,
    peer: &'a Arc<Peer>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.hub.disconnect(self.peer.id());
        // A no-op when a close was already requested; otherwise the client
        // went away (or finished its stream) and there is nothing to say.
        self.peer.request_close(CloseCode::Normal, "session ended");
    }
}

/// Refuses every stream after the signaling stream, without disturbing it.
async fn refuse_extra_streams(connection: Connection) {
    let code = VarInt::from_u32(REFUSED_STREAM);
    loop {
        tokio::select! {
            bi = connection.accept_bi() => match bi {
                Ok((mut send, recv)) => {
                    recv.stop(code);
                    let _ = send.reset(code);
                }
                Err(_) => return,
            },
            uni = connection.accept_uni() => match uni {
                Ok(recv) => recv.stop(code),
                Err(_) => return,
            },
        }
    }
}

/// Reads frames and datagrams until the client goes away or a close is
/// requested.
async fn read_loop(peer: &Arc<Peer>, hub: &Hub, mut recv: RecvStream, limits: Limits) {
    let connection = peer.connection().clone();
    let mut decoder = FrameDecoder::default();
    let mut guard = FloodGuard::new(
        limits.frame_rate,
        limits.datagram_rate,
        std::time::Instant::now(),
    );
    // Made once: a fresh wait future per wake-up would register (and
    // unregister) a waiter each time.
    let closing = peer.close_requested();
    tokio::pin!(closing);
    loop {
        while !peer.is_closing() {
            match decoder.next_frame() {
                Ok(Some(frame)) => match guard.check(Kind::Frame, std::time::Instant::now()) {
                    Verdict::Allow => handle_frame(peer, hub, frame).await,
                    verdict => on_limited(peer, verdict, "frame"),
                },
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
            datagram = connection.receive_datagram() => match datagram {
                Ok(datagram) => {
                    let payload = datagram.payload();
                    // Acks the protocol obliges the session to send, for
                    // chats delivered to it, do not count against its rate.
                    let owed_ack = payload.first() == Some(&CHAT_ACK_TAG) && peer.take_owed_ack();
                    let verdict = match owed_ack {
                        true => Verdict::Allow,
                        false => guard.check(Kind::Datagram, std::time::Instant::now()),
                    };
                    match verdict {
                        Verdict::Allow => handle_datagram(peer, payload, limits.datagram_rate),
                        verdict => on_limited(peer, verdict, "datagram"),
                    }
                }
                Err(_) => return,
            },
        }
    }
}

/// A `kind` (frame or datagram) over its rate: dropped, or the session closed.
fn on_limited(peer: &Peer, verdict: Verdict, kind: &'static str) {
    if let Verdict::Drop { .. } = verdict {
        metrics::rate_limited(kind);
    }
    match verdict {
        Verdict::Allow | Verdict::Drop { notify: false } => {}
        Verdict::Drop { notify: true } => reply_error(
            peer,
            ErrorCode::RateLimited,
            "rate limit exceeded; message dropped",
        ),
        Verdict::Close => peer.request_close(CloseCode::Abuse, "too many messages"),
    }
}

fn reply(peer: &Peer, msg: &ServerMsg) {
    peer.push(Outbound::Frame(encode_frame(msg)));
}

fn reply_error(peer: &Peer, code: ErrorCode, message: &str) {
    metrics::error_sent(code);
    reply(
        peer,
        &ServerMsg::Error {
            code,
            message: message.to_owned(),
        },
    );
}

fn refused(peer: &Peer, error: RefusedError) {
    let code = match error {
        RefusedError::InvalidProfile(_) => ErrorCode::InvalidProfile,
        RefusedError::NotJoined => ErrorCode::NotJoined,
        RefusedError::AlreadyJoined => ErrorCode::AlreadyJoined,
        RefusedError::Unavailable => ErrorCode::ServerBusy,
    };
    reply_error(peer, code, &error.to_string());
}

async fn handle_frame(peer: &Arc<Peer>, hub: &Hub, frame: BytesMut) {
    let msg = match codec::decode::<ClientMsg>(codec::frame_payload(&frame)) {
        Ok(msg) => msg,
        Err(error) => return bad_input(peer, &error),
    };
    let result = match &msg {
        ClientMsg::Join(profile) => {
            metrics::request("join");
            peer.start_waiting();
            hub.join(peer.id(), profile.clone()).await
        }
        ClientMsg::Stop => {
            metrics::request("stop");
            peer.start_waiting();
            hub.stop(peer.id()).await
        }
        ClientMsg::Leave => {
            metrics::request("leave");
            peer.stop_waiting();
            hub.leave(peer.id()).await;
            Ok(())
        }
        ClientMsg::Ping { nonce } => {
            reply(peer, &ServerMsg::Pong { nonce: *nonce });
            Ok(())
        }
        ClientMsg::Offer { match_id, .. }
        | ClientMsg::Answer { match_id, .. }
        | ClientMsg::Ice { match_id, .. } => {
            match over_limit(&msg) {
                Some(why) => reply_error(peer, ErrorCode::TooLarge, why),
                None => relay(peer, &msg, *match_id, &frame).await,
            }
            Ok(())
        }
    };
    if let Err(error) = result {
        refused(peer, error);
    }
}

fn bad_input(peer: &Peer, error: &DecodeError) {
    debug!(%error, "bad frame");
    reply_error(peer, ErrorCode::BadFrame, &error.to_string());
}

/// Which limit of section 4.3 a relay message breaks, if any.
fn over_limit(msg: &ClientMsg) -> Option<&'static str> {
    let over = |s: &str| s.len() > MAX_ICE_FIELD_LEN;
    match msg {
        ClientMsg::Offer { sdp, .. } | ClientMsg::Answer { sdp, .. } if sdp.len() > MAX_SDP_LEN => {
            Some("sdp is over 32768 bytes")
        }
        ClientMsg::Ice { candidate: c, .. }
            if over(&c.candidate)
                || c.sdp_mid.as_deref().is_some_and(over)
                || c.username_fragment.as_deref().is_some_and(over) =>
        {
            Some("an ICE candidate field is over 1024 bytes")
        }
        _ => None,
    }
}

/// Forwards a validated relay message (`msg`, decoded from `frame`) to the
/// partner.
async fn relay(peer: &Peer, msg: &ClientMsg, match_id: u64, frame: &[u8]) {
    match peer.route(match_id) {
        Routing::Deliver(partner) => {
            if let Some(relayed) = codec::server_relay_frame(msg, frame) {
                if let Some(hot) = metrics::hot() {
                    let kind = match msg {
                        ClientMsg::Offer { .. } => 0,
                        ClientMsg::Answer { .. } => 1,
                        _ => 2,
                    };
                    hot.relayed[kind].increment(1);
                }
                partner.relay(peer, match_id, relayed).await;
            }
        }
        Routing::Stale => {}
        Routing::NotMatched => reply_error(peer, ErrorCode::NotMatched, "not matched"),
    }
}

/// Forwards a valid chat datagram to the partner, unchanged; a delivered
/// chat earns the partner the ack it owes (up to `ack_cap` outstanding).
fn handle_datagram(peer: &Peer, payload: Bytes, ack_cap: u32) {
    let datagram = match codec::decode::<Datagram>(&payload) {
        Ok(datagram) => datagram,
        Err(error) => return bad_input(peer, &error),
    };
    if let Datagram::Chat { text, .. } = &datagram {
        if text.is_empty() {
            return reply_error(peer, ErrorCode::BadFrame, "chat text is empty");
        }
        if text.len() > MAX_CHAT_LEN {
            return reply_error(peer, ErrorCode::TooLarge, "chat text is over 1000 bytes");
        }
    }
    match peer.route(datagram.match_id()) {
        Routing::Deliver(partner) => {
            let is_chat = matches!(datagram, Datagram::Chat { .. });
            if let Some(hot) = metrics::hot() {
                hot.chat[usize::from(!is_chat)].increment(1);
            }
            partner.send_datagram(payload, is_chat, ack_cap)
        }
        Routing::Stale => {}
        Routing::NotMatched => reply_error(peer, ErrorCode::NotMatched, "not matched"),
    }
}

/// Writes the outbound queue to the signaling stream in batches; on a close
/// request, sends `Closing` and closes the session.
async fn write_loop(
    peer: Arc<Peer>,
    mut send: SendStream,
    mut outbound: mpsc::UnboundedReceiver<Outbound>,
) {
    let mut current_match: Option<u64> = None;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_bytes = 0;
    // Each frame's length as queued, to tell afterwards whether a failed
    // write stopped inside a frame (kept across batches: no allocation each).
    let mut lengths: Vec<usize> = Vec::new();
    let mut cut_short = false;
    // When each relay of the batch was queued, for the relay-time metric.
    let mut relay_times: Vec<std::time::Instant> = Vec::new();
    let closing = peer.close_requested();
    tokio::pin!(closing);
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut closing => break,
            item = outbound.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        let mut next = Some(first);
        while let Some(item) = next.take().or_else(|| outbound.try_recv().ok()) {
            peer.dequeued(&item);
            let frame = match item {
                Outbound::Frame(frame) => frame,
                // Relays of an ended match are dropped here, in order.
                Outbound::Relay {
                    match_id,
                    frame,
                    at,
                    ..
                } if current_match == Some(match_id) => {
                    relay_times.push(at);
                    frame
                }
                Outbound::Relay { .. } => continue,
                Outbound::MatchChanged(id) => {
                    match id {
                        Some(match_id) => {
                            // From here on, every line of this session names its match.
                            tracing::Span::current().record("match_id", match_id);
                            debug!(match_id, "matched");
                            metrics::matched(peer.take_wait());
                        }
                        None => debug!(match_id = current_match, "match ended"),
                    }
                    current_match = id;
                    continue;
                }
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
            let mut write = std::pin::pin!(send.quic_stream_mut().write_all_chunks(&mut batch));
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
        if let Some(hot) = metrics::hot() {
            let written = std::time::Instant::now();
            for at in relay_times.drain(..) {
                hot.relay_seconds
                    .record(written.saturating_duration_since(at).as_secs_f64());
            }
        }
        relay_times.clear();
        batch.clear();
        batch_bytes = 0;
    }
    let (code, reason) = peer.close_reason();
    debug!(code = code.code(), reason, "closing");
    metrics::closed(code);
    let connection = peer.connection().clone();
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
            send.write_all(&frame).await?;
            send.finish().await
        })
        .await;
    }
    connection.close(VarInt::from_u32(code.code()), reason.as_bytes());
}

//! One WebTransport session: the handshake, the signaling stream's reader and
//! writer, and the datagram path. The rules live in the registry and the
//! peer; this is the thin async layer that moves bytes between them.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::debug;
use wtransport::endpoint::IncomingSession;
use wtransport::{Connection, RecvStream, SendStream, VarInt};

use crate::codec::{self, DecodeError, FrameDecoder, client_relay_to_server_frame, encode_frame};
use crate::hub::Hub;
use crate::peer::{Outbound, Peer, Routing};
use crate::protocol::{
    ClientMsg, CloseCode, Datagram, ErrorCode, IceCandidate, MAX_CHAT_LEN, MAX_ICE_FIELD_LEN,
    MAX_SDP_LEN, SIGNAL_PATH, ServerMsg,
};
use crate::ratelimit::{FloodGuard, Kind, Verdict};
use crate::registry::RefusedError;

/// How long a client has from its first packet to an accepted session.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an accepted session has to open its signaling stream.
const FIRST_STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the final `Closing` frame may take to be acknowledged.
const CLOSING_GRACE: Duration = Duration::from_secs(1);
/// Stream error code used to refuse extra streams.
const REFUSED_STREAM: u32 = 0x10;
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

/// Serves one incoming session to its end; never panics on client input.
pub async fn serve(incoming: IncomingSession, hub: Arc<Hub>, limits: Limits) {
    if let Err(error) = serve_inner(incoming, hub, limits).await {
        debug!(%error, "session ended");
    }
}

async fn serve_inner(
    incoming: IncomingSession,
    hub: Arc<Hub>,
    limits: Limits,
) -> anyhow::Result<()> {
    let request = timeout(HANDSHAKE_TIMEOUT, incoming).await??;
    if request.path() != SIGNAL_PATH {
        request.not_found().await;
        return Ok(());
    }
    let connection = timeout(HANDSHAKE_TIMEOUT, request.accept()).await??;
    let (mut send, recv) = timeout(FIRST_STREAM_TIMEOUT, connection.accept_bi()).await??;
    tokio::spawn(refuse_extra_streams(connection.clone()));

    let admitted = hub.connect(|id| Peer::new(id, connection.clone(), limits.outbound_queue_bytes));
    let Ok((peer, outbound)) = admitted else {
        close_with_closing(
            &mut send,
            &connection,
            CloseCode::AtCapacity,
            "server at capacity",
        )
        .await;
        return Ok(());
    };
    debug!(session = peer.id(), remote = %connection.remote_address(), "session open");
    let writer = tokio::spawn(write_loop(peer.clone(), send, outbound));
    read_loop(&peer, &hub, recv, limits).await;
    hub.disconnect(peer.id());
    if !peer.is_closing() {
        // The client went away (or finished its stream): nothing more to say.
        peer.request_close(CloseCode::Normal, "session ended");
    }
    let _ = writer.await;
    debug!(session = peer.id(), "session closed");
    Ok(())
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
    loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => match guard.check(Kind::Frame, std::time::Instant::now()) {
                    Verdict::Allow => handle_frame(peer, hub, frame),
                    verdict => on_limited(peer, verdict),
                },
                Ok(None) => break,
                Err(bad) => {
                    debug!(session = peer.id(), %bad, "unskippable frame length");
                    peer.request_close(CloseCode::ProtocolViolation, "invalid frame length");
                    return;
                }
            }
        }
        decoder.shrink_if_empty(IDLE_READ_BUFFER);
        tokio::select! {
            biased;
            _ = peer.close_requested() => return,
            read = recv.read_buf(decoder.buffer()) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            datagram = connection.receive_datagram() => match datagram {
                Ok(datagram) => match guard.check(Kind::Datagram, std::time::Instant::now()) {
                    Verdict::Allow => handle_datagram(peer, datagram.payload()),
                    verdict => on_limited(peer, verdict),
                },
                Err(_) => return,
            },
        }
    }
}

fn on_limited(peer: &Peer, verdict: Verdict) {
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
    };
    reply_error(peer, code, &error.to_string());
}

fn handle_frame(peer: &Arc<Peer>, hub: &Hub, frame: BytesMut) {
    let msg = match codec::decode::<ClientMsg>(codec::frame_payload(&frame)) {
        Ok(msg) => msg,
        Err(error) => return bad_input(peer, &error),
    };
    let result = match msg {
        ClientMsg::Join(profile) => hub.join(peer.id(), profile),
        ClientMsg::Stop => hub.stop(peer.id()),
        ClientMsg::Leave => {
            hub.leave(peer.id());
            Ok(())
        }
        ClientMsg::Ping { nonce } => {
            reply(peer, &ServerMsg::Pong { nonce });
            Ok(())
        }
        ClientMsg::Offer { match_id, ref sdp } | ClientMsg::Answer { match_id, ref sdp } => {
            if sdp.len() > MAX_SDP_LEN {
                reply_error(peer, ErrorCode::TooLarge, "sdp is over 32768 bytes");
            } else {
                relay(peer, &msg, match_id, frame);
            }
            Ok(())
        }
        ClientMsg::Ice {
            match_id,
            ref candidate,
        } => {
            if ice_too_large(candidate) {
                reply_error(
                    peer,
                    ErrorCode::TooLarge,
                    "an ICE candidate field is over 1024 bytes",
                );
            } else {
                relay(peer, &msg, match_id, frame);
            }
            Ok(())
        }
    };
    if let Err(error) = result {
        refused(peer, error);
    }
}

fn bad_input(peer: &Peer, error: &DecodeError) {
    debug!(session = peer.id(), %error, "bad frame");
    reply_error(peer, ErrorCode::BadFrame, &error.to_string());
}

fn ice_too_large(candidate: &IceCandidate) -> bool {
    let over = |s: &str| s.len() > MAX_ICE_FIELD_LEN;
    over(&candidate.candidate)
        || candidate.sdp_mid.as_deref().is_some_and(over)
        || candidate.username_fragment.as_deref().is_some_and(over)
}

/// Forwards a validated relay frame (`msg`, decoded) to the partner,
/// rewritten in place.
fn relay(peer: &Peer, msg: &ClientMsg, match_id: u64, frame: BytesMut) {
    match peer.route(match_id) {
        Routing::Deliver(partner) => partner.push(Outbound::Relay {
            match_id,
            frame: client_relay_to_server_frame(one_byte_variant_frame(msg, frame)),
        }),
        Routing::Stale => {}
        Routing::NotMatched => reply_error(peer, ErrorCode::NotMatched, "not matched"),
    }
}

/// The relay frame with its variant index in the usual single byte, as the
/// in-place rewrite needs: bincode also accepts the longer varint forms
/// (`FB 01 00` for 1), and such a frame is re-encoded from its message.
fn one_byte_variant_frame(msg: &ClientMsg, frame: BytesMut) -> BytesMut {
    match codec::frame_payload(&frame).first() {
        Some(1..=3) => frame,
        _ => BytesMut::from(&encode_frame(msg)[..]),
    }
}

/// Forwards a valid chat datagram to the partner, unchanged.
fn handle_datagram(peer: &Peer, payload: Bytes) {
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
        // A datagram the partner's path cannot carry is lost, as datagrams may be.
        Routing::Deliver(partner) => {
            let _ = partner.connection().send_datagram(payload);
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
    let mut interrupted = false;
    'run: loop {
        let first = tokio::select! {
            biased;
            _ = peer.close_requested() => break 'run,
            item = outbound.recv() => match item {
                Some(item) => item,
                None => break 'run,
            },
        };
        let mut next = Some(first);
        while let Some(item) = next.take().or_else(|| outbound.try_recv().ok()) {
            match item {
                Outbound::Frame(frame) => batch.push(frame),
                Outbound::Relay { match_id, frame } if current_match == Some(match_id) => {
                    batch.push(frame)
                }
                Outbound::Relay { frame, .. } => peer.written(frame.len()),
                Outbound::MatchChanged(id) => current_match = id,
            }
            if batch.len() >= 64 {
                break;
            }
        }
        let len: usize = batch.iter().map(Bytes::len).sum();
        let write = send.quic_stream_mut().write_all_chunks(&mut batch);
        // The write first: a close only interrupts a write that is stalled,
        // not one that can complete (and be followed by `Closing`) at once.
        let result = tokio::select! {
            biased;
            result = write => result.map_err(|_| ()),
            _ = peer.close_requested() => { interrupted = true; Err(()) }
        };
        batch.clear();
        peer.written(len);
        if result.is_err() {
            break 'run;
        }
    }
    let (code, reason) = peer.close_reason();
    let connection = peer.connection().clone();
    if interrupted {
        // A frame was cut short: a Closing frame after it could not be
        // parsed, so the stream is abandoned. The close waits a moment for
        // the peer to acknowledge what is in flight: quinn sends no
        // CONNECTION_CLOSE while the congestion window is full
        // (quinn-rs/quinn#2785), and a stalled peer's often is.
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

//! The WebSocket fallback (PROTOCOL section 7), for browsers without
//! WebTransport and networks that block UDP: `GET /signal` on the sidecar,
//! upgraded to a WebSocket, one tagged unit per binary message (`0x00` and a
//! frame's payload, `0x01` and a datagram).
//!
//! A WebSocket session is a session like any other: the same front door
//! (origin, join token, per-source limits, memory ceiling, session cap), the
//! same pool, the same [`Input`] judging what the client sends and the same
//! queue carrying what it is sent. Only the carrier differs: frames and
//! datagrams share one ordered stream, and the close is a WebSocket close
//! with status `4000 + code` after the `Closing` unit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug};

use crate::codec::{FRAME_HEADER_LEN, encode_frame};
use crate::frontdoor::{FrontDoor, Pass, Refused, SourceSeat};
use crate::hub::Hub;
use crate::metrics;
use crate::peer::{Link, OutboundReader, Peer};
use crate::protocol::{CloseCode, MAX_FRAME_LEN, ServerMsg};
use crate::session::input::Input;
use crate::session::outbound::{Drain, Unit};
use crate::session::{self, Admitted, CLOSING_GRACE, Limits};

/// The subprotocol the server selects when the client offers it.
pub const SUBPROTOCOL: &str = "quicmatch.v1";
/// The tag of a unit carrying a frame's payload.
pub const FRAME_TAG: u8 = 0x00;
/// The tag of a unit carrying a datagram.
pub const DATAGRAM_TAG: u8 = 0x01;
/// WebSocket close statuses are `4000 + ` the session close code.
pub const CLOSE_STATUS_BASE: u16 = 4000;
/// Units taken off the queue for one flush.
const MAX_BATCH: usize = 64;
/// What the socket reads at a time: a short message fits in one read, a
/// browser's offer in two or three.
const READ_BUFFER: usize = 4 * 1024;

/// What WebSocket sessions need from the server.
pub struct WebSocketSessions {
    /// The pool.
    pub hub: Arc<Hub>,
    /// Admission, per-source limits, the memory ceiling.
    pub door: Arc<FrontDoor>,
    /// Rates and the queue's size.
    pub limits: Limits,
    /// Shutdown waits for these sessions as for the others.
    pub tracker: TaskTracker,
    /// How often the server pings an otherwise quiet client.
    pub keep_alive: Duration,
    /// How long a client may stay silent (not even a pong) before its
    /// session ends.
    pub idle_timeout: Duration,
}

/// `GET /signal`: admission, then the upgrade, then the session.
pub async fn upgrade(
    sessions: Arc<WebSocketSessions>,
    remote: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let Pass { subject, seat } = match sessions.door.admit(path, origin, remote.ip()) {
        Ok(pass) => pass,
        Err(refused) => {
            let status = match refused {
                Refused::NotFound => StatusCode::NOT_FOUND,
                Refused::Forbidden => StatusCode::FORBIDDEN,
                Refused::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            };
            return status.into_response();
        }
    };
    let tracker = sessions.tracker.clone();
    ws.protocols([SUBPROTOCOL])
        // A tag and the largest frame; longer messages close the session.
        .max_message_size(1 + MAX_FRAME_LEN)
        .max_frame_size(1 + MAX_FRAME_LEN)
        // A page of read buffer, not tungstenite's 128 KiB (allocated and
        // zeroed for every session: 138 KiB of RSS per session against 13
        // KiB, docs/performance.md §15); a longer frame is read into room
        // reserved for its length.
        .read_buffer_size(READ_BUFFER)
        // Writes are batched by the session; the socket buffers little.
        .write_buffer_size(0)
        .max_write_buffer_size(4 * (1 + MAX_FRAME_LEN))
        .on_upgrade(move |socket| {
            let span = tracing::info_span!(
                "session",
                id = tracing::field::Empty,
                sub = subject,
                transport = "websocket"
            );
            tracker.track_future(serve(socket, seat, sessions).instrument(span))
        })
}

/// Serves one upgraded WebSocket session to its end.
async fn serve(socket: WebSocket, _seat: SourceSeat, sessions: Arc<WebSocketSessions>) {
    let started = Instant::now();
    let (mut sink, stream) = socket.split();
    let hub = &sessions.hub;
    let (peer, outbound) =
        match session::enter(&sessions.door, hub, Link::websocket(), sessions.limits) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                close(&mut sink, refusal.code, refusal.reason).await;
                drain_until_closed(stream).await;
                return;
            }
        };
    metrics::handshake("accepted");
    metrics::session_set_up(started.elapsed());
    tracing::Span::current().record("id", peer.id());
    debug!("WebSocket session open");
    // Reader and writer are two futures of this one task (a task of its
    // own for the writer cost a spawn and its memory per session); each
    // runs while the other waits, as the relay's flow control needs.
    let write = write_loop(&peer, sink, outbound, sessions.keep_alive);
    let read = async {
        let _leave = Admitted { hub, peer: &peer };
        read_loop(&peer, hub, stream, sessions.limits, sessions.idle_timeout).await
    };
    let ((), stream) = tokio::join!(write, read);
    drain_until_closed(stream).await;
    debug!("WebSocket session closed");
}

/// After the server's close: reads (and drops) what the client still sends
/// until its own close, briefly. Closing a socket with unread data would
/// reset the connection, and the client would lose `Closing` and the close
/// status still on their way to it.
async fn drain_until_closed(mut stream: SplitStream<WebSocket>) {
    let _ = timeout(CLOSING_GRACE, async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Reads units until the client goes, falls silent or a close is
/// requested; gives the stream back for the closing handshake.
async fn read_loop(
    peer: &Arc<Peer>,
    hub: &Hub,
    mut stream: SplitStream<WebSocket>,
    limits: Limits,
    idle_timeout: Duration,
) -> SplitStream<WebSocket> {
    let mut input = Input::new(limits);
    let closing = peer.close_requested();
    tokio::pin!(closing);
    while !peer.is_closing() {
        let message = tokio::select! {
            biased;
            _ = &mut closing => return stream,
            message = timeout(idle_timeout, stream.next()) => message,
        };
        let message = match message {
            Ok(Some(Ok(message))) => message,
            // Silent past the idle timeout, gone, or closed.
            Err(_) | Ok(None) => return stream,
            Ok(Some(Err(error))) => {
                // A message over the largest unit, or not a WebSocket: like
                // a frame length that cannot be skipped.
                debug!(%error, "WebSocket read failed");
                peer.request_close(CloseCode::ProtocolViolation, "invalid WebSocket message");
                return stream;
            }
        };
        match message {
            Message::Binary(unit) => match unit.first() {
                Some(&FRAME_TAG) if unit.len() > 1 => {
                    input.frame(peer, hub, frame_of(&unit[1..])).await;
                }
                // Copied, as a frame is: a slice would keep the socket's
                // whole read buffer alive while it waits in a queue.
                Some(&DATAGRAM_TAG) if unit.len() > 1 => {
                    input.datagram(peer, Bytes::copy_from_slice(&unit[1..]));
                }
                Some(&FRAME_TAG | &DATAGRAM_TAG) => input.bad_frame(peer, "empty unit"),
                Some(_) => input.bad_frame(peer, "unknown unit tag"),
                None => input.bad_frame(peer, "empty message"),
            },
            Message::Text(_) => input.bad_frame(peer, "text message"),
            Message::Close(_) => return stream,
            // Pongs (and pings, answered by the socket itself) only show
            // the client is alive.
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    stream
}

/// A frame (length prefix and payload) around a unit's payload, as the
/// WebTransport reader would have read it.
fn frame_of(payload: &[u8]) -> BytesMut {
    let mut frame = BytesMut::with_capacity(FRAME_HEADER_LEN + payload.len());
    // At most MAX_FRAME_LEN: the socket refuses longer messages.
    frame.put_u32(payload.len() as u32);
    frame.put_slice(payload);
    frame
}

/// One queued unit as a WebSocket message.
fn message_of(unit: Unit) -> Message {
    let (tag, payload) = match unit {
        Unit::Frame(frame) => (FRAME_TAG, frame.slice(FRAME_HEADER_LEN.min(frame.len())..)),
        Unit::Datagram(payload) => (DATAGRAM_TAG, payload),
    };
    let mut message = BytesMut::with_capacity(1 + payload.len());
    message.put_u8(tag);
    message.put_slice(&payload);
    Message::Binary(message.freeze())
}

/// Writes the queue to the socket in batches, pings a quiet client, and on
/// a close request sends `Closing` and closes the socket.
async fn write_loop(
    peer: &Arc<Peer>,
    mut sink: SplitSink<WebSocket, Message>,
    mut outbound: OutboundReader,
    keep_alive: Duration,
) {
    let mut drain = Drain::default();
    let mut batch: Vec<Message> = Vec::with_capacity(MAX_BATCH);
    let mut ping = tokio::time::interval_at(Instant::now() + keep_alive, keep_alive);
    let closing = peer.close_requested();
    tokio::pin!(closing);
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut closing => break,
            item = outbound.recv() => Some(item),
            _ = ping.tick() => {
                batch.push(Message::Ping(Bytes::new()));
                None
            }
        };
        let mut next = first;
        while let Some(item) = next.take().or_else(|| outbound.try_recv()) {
            if let Some(unit) = drain.take(peer, item) {
                batch.push(message_of(unit));
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
        }
        let sent = batch.len() as u64;
        let write = async {
            for message in batch.drain(..) {
                sink.feed(message).await?;
            }
            sink.flush().await
        };
        tokio::pin!(write);
        let written = tokio::select! {
            biased;
            written = &mut write => written.is_ok(),
            // A close lets a write in progress finish, briefly.
            _ = &mut closing => timeout(CLOSING_GRACE / 2, &mut write).await.is_ok_and(|w| w.is_ok()),
        };
        if !written {
            // Cut short: nothing can follow it, not even `Closing`.
            let (code, _) = peer.close_reason();
            metrics::closed(code);
            return;
        }
        peer.note_written(sent);
        drain.written();
        ping.reset();
    }
    let (code, reason) = peer.close_reason();
    metrics::closed(code);
    close(&mut sink, code, reason).await;
}

/// The most a WebSocket close frame's reason may hold (RFC 6455 §5.5: a
/// control frame's payload is at most 125 bytes, two of them the status).
const MAX_CLOSE_FRAME_REASON: usize = 123;

/// `reason`, cut at a character boundary to fit a close frame (the
/// `Closing` unit carries it whole).
fn close_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_CLOSE_FRAME_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Sends `Closing` (unless the close is normal), then closes the socket
/// with status `4000 + code`, within [`CLOSING_GRACE`].
async fn close(sink: &mut SplitSink<WebSocket, Message>, code: CloseCode, reason: &'static str) {
    debug!(code = code.code(), reason, "closing");
    let deadline = Instant::now() + CLOSING_GRACE;
    let _ = timeout_at(deadline, async {
        if code != CloseCode::Normal {
            let closing = encode_frame(&ServerMsg::Closing {
                code: code.code(),
                reason: reason.to_owned(),
            });
            sink.feed(message_of(Unit::Frame(closing))).await?;
        }
        let status = CLOSE_STATUS_BASE + code.code() as u16;
        sink.send(Message::Close(Some(CloseFrame {
            code: status,
            reason: close_reason(reason).into(),
        })))
        .await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_close_frame() {
        assert_eq!(close_reason("server at capacity"), "server at capacity");
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_FRAME_REASON);
        assert_eq!(cut.len(), 122);
    }

    #[test]
    fn units_carry_a_tag_and_the_payload_without_the_length_prefix() {
        let frame = encode_frame(&ServerMsg::Pong { nonce: 3 });
        let Message::Binary(unit) = message_of(Unit::Frame(frame.clone())) else {
            panic!("binary");
        };
        assert_eq!(unit[0], FRAME_TAG);
        assert_eq!(&unit[1..], &frame[FRAME_HEADER_LEN..]);
        assert_eq!(frame_of(&unit[1..]), frame);
        let Message::Binary(unit) = message_of(Unit::Datagram(Bytes::from_static(b"xy"))) else {
            panic!("binary");
        };
        assert_eq!(&unit[..], &[DATAGRAM_TAG, b'x', b'y']);
    }
}

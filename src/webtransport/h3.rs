//! The HTTP/3 control plane of one connection, as a poll-driven state
//! machine that the connection's own task drives: the peer's control stream
//! (its SETTINGS, then frames that are ignored), its QPACK streams (drained:
//! we advertise a dynamic table of 0), the CONNECT stream (its HEADERS, then
//! capsules), and the first bytes of every other stream (which session it
//! belongs to). No task and no channel of its own: every piece of state is
//! here, so the futures that poll it can be dropped and re-created at will.

use std::sync::LazyLock;
use std::task::{Context, Poll, ready};

use wtransport::quinn::{self, ReadError, RecvStream, SendStream, VarInt};
use wtransport_proto::bytes::BufferWriter;
use wtransport_proto::error::ErrorCode;
use wtransport_proto::headers::Headers;
use wtransport_proto::ids::SessionId;
use wtransport_proto::settings::Settings;
use wtransport_proto::stream_header::StreamHeader;

use super::gate::Gate;
use super::wire::{
    self, BI_WEBTRANSPORT, ConnectEvent, ConnectStream, ControlStream, FrameBuffer, RawFrame,
    UniKind,
};

/// What refused WebTransport streams are stopped and reset with
/// (docs/protocol.md: a client's extra streams are refused with `0x10`).
pub const REFUSED_STREAM: u32 = 0x10;

/// The bytes of our control stream: its type and our SETTINGS, the same
/// ones wtransport 0.7 sends (so every client that works with it works
/// here): no QPACK dynamic table, extended CONNECT, WebTransport (the
/// draft-02 `ENABLE_WEBTRANSPORT` and the later `WEBTRANSPORT_MAX_SESSIONS`
/// = 1), HTTP/3 datagrams.
pub(super) static LOCAL_CONTROL: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let settings = Settings::builder()
        .qpack_max_table_capacity(wtransport_proto::varint::VarInt::from_u32(0))
        .qpack_blocked_streams(wtransport_proto::varint::VarInt::from_u32(0))
        .enable_connect_protocol()
        .enable_webtransport()
        .enable_h3_datagrams()
        .webtransport_max_sessions(wtransport_proto::varint::VarInt::from_u32(1))
        .build();
    let header = StreamHeader::new_control();
    let frame = settings.generate_frame();
    let mut bytes = vec![0; header.write_size() + frame.write_size()];
    let mut writer = BufferWriter::new(&mut bytes);
    header.write_to_buffer(&mut writer).expect("sized");
    frame.write_to_buffer(&mut writer).expect("sized");
    bytes
});

/// Why the control plane ended the connection.
#[derive(Debug)]
pub(super) enum Stop {
    /// The connection is gone.
    Lost(quinn::ConnectionError),
    /// The peer broke HTTP/3: close the connection with this code.
    Protocol(ErrorCode),
}

impl From<quinn::WriteError> for Stop {
    /// A write error on a critical stream.
    fn from(error: quinn::WriteError) -> Stop {
        match error {
            quinn::WriteError::ConnectionLost(lost) => Stop::Lost(lost),
            _ => Stop::Protocol(ErrorCode::ClosedCriticalStream),
        }
    }
}

impl From<ReadError> for Stop {
    /// A read error on a critical stream.
    fn from(error: ReadError) -> Stop {
        match error {
            ReadError::ConnectionLost(lost) => Stop::Lost(lost),
            _ => Stop::Protocol(ErrorCode::ClosedCriticalStream),
        }
    }
}

/// What the control plane has to tell its driver.
#[derive(Debug)]
pub(super) enum Event {
    /// The peer's SETTINGS arrived (parsed, so well-formed; not kept).
    Settings,
    /// The CONNECT stream's request headers arrived.
    Request(Headers),
    /// The peer closed the session (CLOSE_WEBTRANSPORT_SESSION, or FIN on
    /// the CONNECT stream: code 0, no reason).
    Closed {
        /// The application's code.
        code: u32,
        /// Its reason.
        reason: String,
    },
    /// A WebTransport bidirectional stream of `session`, its header read.
    Bi {
        /// Our half.
        send: SendStream,
        /// Theirs, positioned at the first byte of the application's data.
        recv: RecvStream,
        /// The session it names.
        session: SessionId,
    },
}

impl From<ConnectEvent> for Event {
    fn from(event: ConnectEvent) -> Event {
        match event {
            ConnectEvent::Request(headers) => Event::Request(headers),
            ConnectEvent::Closed { code, reason } => Event::Closed { code, reason },
        }
    }
}

/// An HTTP/3 error code as a QUIC one.
pub(super) fn code(code: ErrorCode) -> VarInt {
    // Every HTTP/3 code is a varint; the fallback is never taken.
    VarInt::from_u64(code.to_code().into_inner()).unwrap_or(VarInt::MAX)
}

/// Stops and resets a peer's bidirectional stream with `code`.
pub(super) fn refuse_bi(send: &mut SendStream, recv: &mut RecvStream, code: VarInt) {
    let _ = recv.stop(code);
    let _ = send.reset(code);
}

/// A QUIC varint read byte-exactly from a stream (nothing past it is
/// consumed, so the application gets the stream at its first byte).
#[derive(Debug, Default)]
pub(super) struct VarintReader {
    bytes: [u8; 8],
    have: usize,
}

impl VarintReader {
    /// `Ok(None)` when the stream ended before the varint was whole.
    pub(super) fn poll(
        &mut self,
        stream: &mut RecvStream,
        cx: &mut Context,
    ) -> Poll<Result<Option<u64>, ReadError>> {
        loop {
            let need = match self.bytes.first() {
                Some(&first) if self.have > 0 => wire::varint_len(first),
                _ => 1,
            };
            let Some(range) = self.bytes.get_mut(self.have..need) else {
                return Poll::Ready(Ok(None));
            };
            if range.is_empty() {
                return Poll::Ready(Ok(self.raw().and_then(wire::varint)));
            }
            let read = ready!(stream.poll_read(cx, range))?;
            if read == 0 {
                // Finished mid-header (or before it): nothing to hand over.
                return Poll::Ready(Ok(None));
            }
            self.have += read;
        }
    }

    /// The bytes read so far (to give back to a frame parser).
    fn raw(&self) -> Option<&[u8]> {
        self.bytes.get(..self.have)
    }
}

/// HTTP/3 frames read from a stream we own for good (over-reading is fine).
#[derive(Debug, Default)]
pub(super) struct FrameReader {
    frames: FrameBuffer,
}

impl FrameReader {
    /// The next whole frame; `Ok(None)` at the stream's end.
    pub(super) fn poll(
        &mut self,
        stream: &mut RecvStream,
        cx: &mut Context,
    ) -> Poll<Result<Option<RawFrame>, Stop>> {
        loop {
            if let Some(frame) = self.frames.take().map_err(Stop::Protocol)? {
                return Poll::Ready(Ok(Some(frame)));
            }
            let mut chunk = [0u8; 512];
            let read = ready!(stream.poll_read(cx, &mut chunk))?;
            if read == 0 {
                return Poll::Ready(Ok(None));
            }
            self.frames.extend(chunk.get(..read).unwrap_or_default());
        }
    }
}

/// A peer-initiated unidirectional stream.
#[derive(Debug)]
struct Uni {
    stream: RecvStream,
    role: UniRole,
}

#[derive(Debug)]
enum UniRole {
    /// Its type not read yet.
    Unknown(VarintReader),
    /// The peer's control stream.
    Control {
        frames: FrameReader,
        control: ControlStream,
    },
    /// A QPACK stream: read and discarded.
    Qpack,
}

/// A peer-initiated bidirectional stream whose first varint is being read.
#[derive(Debug)]
struct Bi {
    send: SendStream,
    recv: RecvStream,
    kind: VarintReader,
    session: VarintReader,
}

/// The CONNECT stream's receiving half.
#[derive(Debug)]
struct Connect {
    recv: RecvStream,
    frames: FrameReader,
    stream: ConnectStream,
}

/// The control plane of one connection.
#[derive(Debug)]
pub(super) struct H3 {
    /// Our control stream, kept open for the connection's life (dropping
    /// it would finish it: a critical stream closed).
    _control: SendStream,
    uni: Vec<Uni>,
    bi: Vec<Bi>,
    connect: Option<Connect>,
    /// The CONNECT stream's sending half, until the caller takes it.
    connect_send: Option<SendStream>,
    /// Skips polling the streams above on wake-ups that were not theirs.
    gate: Gate,
}

impl H3 {
    /// Opens our control stream and sends our SETTINGS.
    pub(super) async fn open(connection: &quinn::Connection) -> Result<H3, Stop> {
        let mut control = connection.open_uni().await.map_err(Stop::Lost)?;
        control.write_all(&LOCAL_CONTROL).await?;
        Ok(H3 {
            _control: control,
            uni: Vec::new(),
            bi: Vec::new(),
            connect: None,
            connect_send: None,
            gate: Gate::default(),
        })
    }

    /// A new unidirectional stream from the peer.
    pub(super) fn add_uni(&mut self, stream: RecvStream) {
        self.uni.push(Uni {
            stream,
            role: UniRole::Unknown(VarintReader::default()),
        });
        self.gate.open();
    }

    /// A new bidirectional stream from the peer.
    pub(super) fn add_bi(&mut self, send: SendStream, recv: RecvStream) {
        self.bi.push(Bi {
            send,
            recv,
            kind: VarintReader::default(),
            session: VarintReader::default(),
        });
        self.gate.open();
    }

    /// The CONNECT stream's sending half (once).
    pub(super) fn take_connect_send(&mut self) -> Option<SendStream> {
        self.connect_send.take()
    }

    /// The CONNECT stream's id, once there is one.
    pub(super) fn connect_id(&self) -> Option<quinn::StreamId> {
        self.connect.as_ref().map(|connect| connect.recv.id())
    }

    /// Reads every stream it holds until one has something to say, or all
    /// wait (then each has registered the gate's waker, which wakes the
    /// task). Returns at once when none of them woke it since.
    pub(super) fn poll(&mut self, cx: &mut Context) -> Poll<Result<Event, Stop>> {
        if !self.gate.pass(cx) {
            return Poll::Pending;
        }
        let waker = self.gate.waker();
        let polled = self.poll_streams(&mut Context::from_waker(&waker));
        if polled.is_ready() {
            // It stopped at the first stream with news; the others have not
            // been polled since their last wake-up.
            self.gate.open();
        }
        polled
    }

    fn poll_streams(&mut self, cx: &mut Context) -> Poll<Result<Event, Stop>> {
        let mut i = 0;
        while let Some(uni) = self.uni.get_mut(i) {
            match poll_uni(uni, cx) {
                Poll::Pending => i += 1,
                Poll::Ready(UniStep::Drop) => {
                    self.uni.swap_remove(i);
                }
                Poll::Ready(UniStep::Event(event)) => return Poll::Ready(event),
            }
        }
        let mut i = 0;
        while let Some(bi) = self.bi.get_mut(i) {
            let step = poll_bi(bi, cx);
            if step.is_pending() {
                i += 1;
                continue;
            }
            let mut bi = self.bi.swap_remove(i);
            match step {
                Poll::Pending | Poll::Ready(BiStep::Drop) => {}
                Poll::Ready(BiStep::WebTransport(session)) => {
                    return Poll::Ready(Ok(Event::Bi {
                        send: bi.send,
                        recv: bi.recv,
                        session,
                    }));
                }
                Poll::Ready(BiStep::Request) if self.connect.is_some() => {
                    // One session per connection (WEBTRANSPORT_MAX_SESSIONS = 1).
                    refuse_bi(&mut bi.send, &mut bi.recv, code(ErrorCode::RequestRejected));
                }
                Poll::Ready(BiStep::Request) => {
                    let mut frames = FrameReader::default();
                    frames.frames.extend(bi.kind.raw().unwrap_or_default());
                    self.connect = Some(Connect {
                        recv: bi.recv,
                        frames,
                        stream: ConnectStream::default(),
                    });
                    self.connect_send = Some(bi.send);
                }
            }
        }
        if let Some(connect) = &mut self.connect {
            return poll_connect(connect, cx);
        }
        Poll::Pending
    }
}

enum UniStep {
    Drop,
    Event(Result<Event, Stop>),
}

fn poll_uni(uni: &mut Uni, cx: &mut Context) -> Poll<UniStep> {
    loop {
        match &mut uni.role {
            UniRole::Unknown(kind) => {
                let kind = match ready!(kind.poll(&mut uni.stream, cx)) {
                    Ok(Some(kind)) => kind,
                    Ok(None) => return Poll::Ready(UniStep::Drop),
                    Err(ReadError::ConnectionLost(lost)) => {
                        return Poll::Ready(UniStep::Event(Err(Stop::Lost(lost))));
                    }
                    Err(_) => return Poll::Ready(UniStep::Drop),
                };
                tracing::debug!(stream = %uni.stream.id(), kind, "uni stream");
                uni.role = match UniKind::of(kind) {
                    UniKind::Control => UniRole::Control {
                        frames: FrameReader::default(),
                        control: ControlStream::default(),
                    },
                    UniKind::Qpack => UniRole::Qpack,
                    UniKind::WebTransport => {
                        let _ = uni.stream.stop(VarInt::from_u32(REFUSED_STREAM));
                        return Poll::Ready(UniStep::Drop);
                    }
                    UniKind::Other => {
                        // Reserved or unknown types: not read (RFC 9114 §6.2).
                        let _ = uni.stream.stop(code(ErrorCode::StreamCreation));
                        return Poll::Ready(UniStep::Drop);
                    }
                };
            }
            UniRole::Control { frames, control } => {
                let frame = match ready!(frames.poll(&mut uni.stream, cx)) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => {
                        return Poll::Ready(UniStep::Event(Err(Stop::Protocol(
                            ErrorCode::ClosedCriticalStream,
                        ))));
                    }
                    Err(stop) => return Poll::Ready(UniStep::Event(Err(stop))),
                };
                tracing::debug!(kind = frame.0, len = frame.1.len(), "control frame");
                match control.frame(frame) {
                    Ok(Some(_)) => return Poll::Ready(UniStep::Event(Ok(Event::Settings))),
                    Ok(None) => {}
                    Err(error) => return Poll::Ready(UniStep::Event(Err(Stop::Protocol(error)))),
                }
            }
            UniRole::Qpack => {
                let mut sink = [0u8; 64];
                match ready!(uni.stream.poll_read(cx, &mut sink)) {
                    Ok(0) => {
                        return Poll::Ready(UniStep::Event(Err(Stop::Protocol(
                            ErrorCode::ClosedCriticalStream,
                        ))));
                    }
                    Ok(_) => {}
                    Err(error) => return Poll::Ready(UniStep::Event(Err(error.into()))),
                }
            }
        }
    }
}

enum BiStep {
    Drop,
    /// A WebTransport stream of this session.
    WebTransport(SessionId),
    /// An HTTP/3 request (its first varint is a frame type).
    Request,
}

fn poll_bi(bi: &mut Bi, cx: &mut Context) -> Poll<BiStep> {
    let kind = match ready!(bi.kind.poll(&mut bi.recv, cx)) {
        Ok(Some(kind)) => kind,
        _ => return Poll::Ready(BiStep::Drop),
    };
    tracing::debug!(stream = %bi.recv.id(), kind, "bi stream");
    if kind != BI_WEBTRANSPORT {
        return Poll::Ready(BiStep::Request);
    }
    let id = match ready!(bi.session.poll(&mut bi.recv, cx)) {
        Ok(Some(id)) => id,
        _ => return Poll::Ready(BiStep::Drop),
    };
    match wire::session_id(id) {
        Some(session) => Poll::Ready(BiStep::WebTransport(session)),
        None => {
            refuse_bi(&mut bi.send, &mut bi.recv, code(ErrorCode::Id));
            Poll::Ready(BiStep::Drop)
        }
    }
}

fn poll_connect(connect: &mut Connect, cx: &mut Context) -> Poll<Result<Event, Stop>> {
    loop {
        let event = match ready!(connect.frames.poll(&mut connect.recv, cx)) {
            Ok(Some(frame)) => {
                tracing::debug!(kind = frame.0, len = frame.1.len(), "CONNECT stream frame");
                connect.stream.frame(frame)
            }
            Ok(None) => connect.stream.finished().map(Some),
            Err(stop) => return Poll::Ready(Err(stop)),
        };
        match event {
            Ok(Some(event)) => return Poll::Ready(Ok(event.into())),
            Ok(None) => {}
            Err(error) => return Poll::Ready(Err(Stop::Protocol(error))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtransport_proto::settings::SettingId::*;

    #[test]
    fn local_control_stream_is_type_0_then_settings() {
        let bytes = &*LOCAL_CONTROL;
        assert_eq!(bytes[0], 0x00, "control stream type");
        let mut frames = FrameBuffer::default();
        frames.extend(&bytes[1..]);
        let frame = frames.take().unwrap().expect("a whole frame");
        let settings = ControlStream::default()
            .frame(frame)
            .unwrap()
            .expect("SETTINGS");
        let value = |id| settings.get(id).map(|v| v.into_inner());
        assert_eq!(value(QPackMaxTableCapacity), Some(0));
        assert_eq!(value(EnableConnectProtocol), Some(1));
        assert_eq!(value(EnableWebTransport), Some(1));
        assert_eq!(value(H3Datagram), Some(1));
        assert_eq!(value(WebTransportMaxSessions), Some(1));
        assert!(frames.is_empty());
    }
}

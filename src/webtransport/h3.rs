//! The HTTP/3 control plane of one connection, as a poll-driven state
//! machine that the connection's own task drives: the peer's control stream
//! (its SETTINGS, then frames that are ignored), its QPACK streams (drained:
//! we advertise a dynamic table of 0), the CONNECT stream (its HEADERS, then
//! capsules), and the first bytes of every other stream (which session it
//! belongs to). No task and no channel of its own: every piece of state is
//! here, so the futures that poll it can be dropped and re-created at will.

use std::borrow::Cow;
use std::sync::LazyLock;
use std::task::{Context, Poll, ready};

use wtransport::quinn::{self, ReadError, RecvStream, SendStream, VarInt};
use wtransport_proto::bytes::{BufferReader, BufferWriter, BytesReader};
use wtransport_proto::capsule::{Capsule, CapsuleKind, capsules::CloseWebTransportSession};
use wtransport_proto::error::ErrorCode;
use wtransport_proto::frame::Frame;
use wtransport_proto::headers::Headers;
use wtransport_proto::ids::SessionId;
use wtransport_proto::settings::Settings;
use wtransport_proto::stream_header::StreamHeader;

/// HTTP/3 frame types this layer looks at (RFC 9114 §7.2).
const FRAME_DATA: u64 = 0x00;
const FRAME_HEADERS: u64 = 0x01;
const FRAME_SETTINGS: u64 = 0x04;
/// Unidirectional stream types (RFC 9114 §6.2, RFC 9204 §4.2, WebTransport).
const UNI_CONTROL: u64 = 0x00;
const UNI_QPACK_ENCODER: u64 = 0x02;
const UNI_QPACK_DECODER: u64 = 0x03;
const UNI_WEBTRANSPORT: u64 = 0x54;
/// The first varint of a WebTransport bidirectional stream.
pub(super) const BI_WEBTRANSPORT: u64 = 0x41;
/// Largest frame payload buffered (SETTINGS, HEADERS, a capsule); larger
/// ones are an `H3_EXCESSIVE_LOAD` connection error. wtransport-proto's own
/// limit is 4,096; browsers send far less.
const MAX_FRAME: usize = 16 * 1024;

/// What refused WebTransport streams are stopped and reset with, as
/// quicmatch does on wtransport (`session::REFUSED_STREAM`).
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
    /// The peer's SETTINGS arrived.
    Settings(Settings),
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

/// A QUIC varint read byte-exactly from a stream (nothing past it is
/// consumed, so the application gets the stream at its first byte).
#[derive(Debug, Default)]
struct VarintReader {
    bytes: [u8; 8],
    have: u8,
}

impl VarintReader {
    /// `Ok(None)` when the stream ended before the varint's first byte.
    fn poll(
        &mut self,
        stream: &mut RecvStream,
        cx: &mut Context,
    ) -> Poll<Result<Option<u64>, ReadError>> {
        loop {
            let need = if self.have == 0 {
                1
            } else {
                1usize << (self.bytes[0] >> 6)
            };
            if usize::from(self.have) == need {
                let mut reader = BufferReader::new(&self.bytes[..need]);
                let value = reader.get_varint().expect("a whole varint");
                return Poll::Ready(Ok(Some(value.into_inner())));
            }
            let range = usize::from(self.have)..need;
            let read = ready!(stream.poll_read(cx, &mut self.bytes[range]))?;
            if read == 0 {
                // Finished mid-header (or before it): nothing to hand over.
                return Poll::Ready(Ok(None));
            }
            self.have += read as u8;
        }
    }

    /// The bytes read so far (to give back to a frame parser).
    fn raw(&self) -> &[u8] {
        &self.bytes[..usize::from(self.have)]
    }
}

/// HTTP/3 frames read from a stream we own for good (over-reading is fine).
#[derive(Debug, Default)]
struct FrameReader {
    buf: Vec<u8>,
}

/// One whole frame: its type and payload.
type RawFrame = (u64, Vec<u8>);

impl FrameReader {
    /// The next whole frame; `Ok(None)` at the stream's end.
    fn poll(
        &mut self,
        stream: &mut RecvStream,
        cx: &mut Context,
    ) -> Poll<Result<Option<RawFrame>, FrameError>> {
        loop {
            if let Some(frame) = self.take()? {
                return Poll::Ready(Ok(Some(frame)));
            }
            let mut chunk = [0u8; 512];
            let read = ready!(stream.poll_read(cx, &mut chunk)).map_err(FrameError::Read)?;
            if read == 0 {
                return Poll::Ready(Ok(None));
            }
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }

    /// Takes a whole frame off the buffer, if there is one.
    fn take(&mut self) -> Result<Option<RawFrame>, FrameError> {
        let mut reader = BufferReader::new(&self.buf);
        let (Some(kind), Some(len)) = (reader.get_varint(), reader.get_varint()) else {
            return Ok(None);
        };
        let len = len.into_inner() as usize;
        if len > MAX_FRAME {
            return Err(FrameError::Protocol(ErrorCode::ExcessiveLoad));
        }
        let Some(payload) = reader.get_bytes(len) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        let used = reader.offset();
        self.buf.drain(..used);
        if self.buf.is_empty() {
            // Don't keep a grown buffer around between frames.
            self.buf = Vec::new();
        }
        Ok(Some((kind.into_inner(), payload)))
    }
}

/// A frame could not be read.
#[derive(Debug)]
enum FrameError {
    Read(ReadError),
    Protocol(ErrorCode),
}

impl From<FrameError> for Stop {
    fn from(error: FrameError) -> Stop {
        match error {
            FrameError::Read(read) => read.into(),
            FrameError::Protocol(code) => Stop::Protocol(code),
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
    Control { frames: FrameReader, settings: bool },
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
    /// The request's HEADERS have been read.
    requested: bool,
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
}

impl H3 {
    /// Opens our control stream and sends our SETTINGS.
    pub(super) async fn open(connection: &quinn::Connection) -> Result<H3, Stop> {
        let mut control = connection.open_uni().await.map_err(Stop::Lost)?;
        control
            .write_all(&LOCAL_CONTROL)
            .await
            .map_err(|error| match error {
                quinn::WriteError::ConnectionLost(lost) => Stop::Lost(lost),
                _ => Stop::Protocol(ErrorCode::ClosedCriticalStream),
            })?;
        Ok(H3 {
            _control: control,
            uni: Vec::new(),
            bi: Vec::new(),
            connect: None,
            connect_send: None,
        })
    }

    /// A new unidirectional stream from the peer.
    pub(super) fn add_uni(&mut self, stream: RecvStream) {
        self.uni.push(Uni {
            stream,
            role: UniRole::Unknown(VarintReader::default()),
        });
    }

    /// A new bidirectional stream from the peer.
    pub(super) fn add_bi(&mut self, send: SendStream, recv: RecvStream) {
        self.bi.push(Bi {
            send,
            recv,
            kind: VarintReader::default(),
            session: VarintReader::default(),
        });
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
    /// wait (then each has registered the task's waker).
    pub(super) fn poll(&mut self, cx: &mut Context) -> Poll<Result<Event, Stop>> {
        let mut i = 0;
        while i < self.uni.len() {
            match poll_uni(&mut self.uni[i], cx) {
                Poll::Pending => i += 1,
                Poll::Ready(UniStep::Drop) => {
                    self.uni.swap_remove(i);
                }
                Poll::Ready(UniStep::Event(event)) => return Poll::Ready(event),
            }
        }
        let mut i = 0;
        while i < self.bi.len() {
            match poll_bi(&mut self.bi[i], cx) {
                Poll::Pending => i += 1,
                Poll::Ready(BiStep::Drop) => {
                    self.bi.swap_remove(i);
                }
                Poll::Ready(BiStep::WebTransport(session)) => {
                    let Bi { send, recv, .. } = self.bi.swap_remove(i);
                    return Poll::Ready(Ok(Event::Bi {
                        send,
                        recv,
                        session,
                    }));
                }
                Poll::Ready(BiStep::Request) => {
                    let mut bi = self.bi.swap_remove(i);
                    if self.connect.is_some() {
                        // One session per connection (WEBTRANSPORT_MAX_SESSIONS = 1).
                        let code = ErrorCode::RequestRejected.to_code().into_inner();
                        let code = VarInt::from_u64(code).expect("an H3 code");
                        let _ = bi.recv.stop(code);
                        let _ = bi.send.reset(code);
                        continue;
                    }
                    let mut frames = FrameReader::default();
                    frames.buf.extend_from_slice(bi.kind.raw());
                    self.connect = Some(Connect {
                        recv: bi.recv,
                        frames,
                        requested: false,
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
                uni.role = match kind {
                    UNI_CONTROL => UniRole::Control {
                        frames: FrameReader::default(),
                        settings: false,
                    },
                    UNI_QPACK_ENCODER | UNI_QPACK_DECODER => UniRole::Qpack,
                    UNI_WEBTRANSPORT => {
                        let _ = uni.stream.stop(VarInt::from_u32(REFUSED_STREAM));
                        return Poll::Ready(UniStep::Drop);
                    }
                    _ => {
                        // Reserved or unknown types: not read (RFC 9114 §6.2).
                        let code = ErrorCode::StreamCreation.to_code().into_inner();
                        let _ = uni.stream.stop(VarInt::from_u64(code).expect("an H3 code"));
                        return Poll::Ready(UniStep::Drop);
                    }
                };
            }
            UniRole::Control { frames, settings } => {
                let frame = match ready!(frames.poll(&mut uni.stream, cx)) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => {
                        return Poll::Ready(UniStep::Event(Err(Stop::Protocol(
                            ErrorCode::ClosedCriticalStream,
                        ))));
                    }
                    Err(error) => return Poll::Ready(UniStep::Event(Err(error.into()))),
                };
                tracing::debug!(kind = frame.0, len = frame.1.len(), "control frame");
                match (frame.0, *settings) {
                    (FRAME_SETTINGS, false) => {
                        *settings = true;
                        let frame = Frame::new_settings(Cow::Owned(frame.1));
                        return Poll::Ready(UniStep::Event(
                            Settings::with_frame(&frame)
                                .map(Event::Settings)
                                .map_err(Stop::Protocol),
                        ));
                    }
                    (_, false) => {
                        return Poll::Ready(UniStep::Event(Err(Stop::Protocol(
                            ErrorCode::MissingSettings,
                        ))));
                    }
                    (FRAME_SETTINGS | FRAME_DATA | FRAME_HEADERS, true) => {
                        return Poll::Ready(UniStep::Event(Err(Stop::Protocol(
                            ErrorCode::FrameUnexpected,
                        ))));
                    }
                    // GOAWAY, PRIORITY_UPDATE, reserved types: ignored.
                    _ => {}
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
    let session = wtransport_proto::varint::VarInt::try_from_u64(id)
        .ok()
        .map(wtransport_proto::ids::StreamId::new)
        .and_then(|stream| SessionId::try_from_session_stream(stream).ok());
    match session {
        Some(session) => Poll::Ready(BiStep::WebTransport(session)),
        None => {
            let code = ErrorCode::Id.to_code().into_inner();
            let code = VarInt::from_u64(code).expect("an H3 code");
            let _ = bi.recv.stop(code);
            let _ = bi.send.reset(code);
            Poll::Ready(BiStep::Drop)
        }
    }
}

fn poll_connect(connect: &mut Connect, cx: &mut Context) -> Poll<Result<Event, Stop>> {
    loop {
        let frame = match ready!(connect.frames.poll(&mut connect.recv, cx)) {
            Ok(Some(frame)) => frame,
            Ok(None) if connect.requested => {
                // A clean FIN is CLOSE_WEBTRANSPORT_SESSION(0, "").
                return Poll::Ready(Ok(Event::Closed {
                    code: 0,
                    reason: String::new(),
                }));
            }
            Ok(None) => return Poll::Ready(Err(Stop::Protocol(ErrorCode::Message))),
            Err(error) => return Poll::Ready(Err(error.into())),
        };
        tracing::debug!(kind = frame.0, len = frame.1.len(), "CONNECT stream frame");
        match (frame.0, connect.requested) {
            (FRAME_HEADERS, false) => {
                connect.requested = true;
                let frame = Frame::new_headers(Cow::Owned(frame.1));
                return Poll::Ready(
                    Headers::with_frame(&frame)
                        .map(Event::Request)
                        .map_err(Stop::Protocol),
                );
            }
            (FRAME_DATA, false) => {
                return Poll::Ready(Err(Stop::Protocol(ErrorCode::FrameUnexpected)));
            }
            (FRAME_DATA, true) => {
                let frame = Frame::new_data(Cow::Owned(frame.1));
                let Some(capsule) = Capsule::with_frame(&frame) else {
                    continue;
                };
                if !matches!(capsule.kind(), CapsuleKind::CloseWebTransportSession) {
                    continue;
                }
                return Poll::Ready(
                    CloseWebTransportSession::with_capsule(&capsule)
                        .map(|close| Event::Closed {
                            code: close.error_code().into_inner() as u32,
                            reason: close.reason().to_owned(),
                        })
                        .map_err(Stop::Protocol),
                );
            }
            // Trailers, reserved types: ignored.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_control_stream_is_type_0_then_settings() {
        let bytes = &*LOCAL_CONTROL;
        assert_eq!(bytes[0], 0x00, "control stream type");
        let mut frames = FrameReader::default();
        frames.buf.extend_from_slice(&bytes[1..]);
        let (kind, payload) = frames.take().unwrap().expect("a whole frame");
        assert_eq!(kind, FRAME_SETTINGS);
        let settings = Settings::with_frame(&Frame::new_settings(Cow::Owned(payload))).unwrap();
        use wtransport_proto::settings::SettingId::*;
        assert_eq!(
            settings.get(QPackMaxTableCapacity).map(|v| v.into_inner()),
            Some(0)
        );
        assert_eq!(
            settings.get(EnableConnectProtocol).map(|v| v.into_inner()),
            Some(1)
        );
        assert_eq!(
            settings.get(EnableWebTransport).map(|v| v.into_inner()),
            Some(1)
        );
        assert_eq!(settings.get(H3Datagram).map(|v| v.into_inner()), Some(1));
        assert_eq!(
            settings
                .get(WebTransportMaxSessions)
                .map(|v| v.into_inner()),
            Some(1)
        );
        assert!(frames.buf.is_empty());
    }

    #[test]
    fn frames_split_anywhere_are_reassembled() {
        let mut whole = Vec::new();
        whole.extend_from_slice(&[0x21, 0x02, 0xaa, 0xbb]); // a reserved frame
        whole.extend_from_slice(&[0x04, 0x00]); // empty SETTINGS
        for split in 0..whole.len() {
            let mut frames = FrameReader::default();
            frames.buf.extend_from_slice(&whole[..split]);
            let mut got = Vec::new();
            while let Some(frame) = frames.take().unwrap() {
                got.push(frame);
            }
            frames.buf.extend_from_slice(&whole[split..]);
            while let Some(frame) = frames.take().unwrap() {
                got.push(frame);
            }
            assert_eq!(
                got,
                vec![(0x21, vec![0xaa, 0xbb]), (0x04, vec![])],
                "split at {split}"
            );
        }
    }
}

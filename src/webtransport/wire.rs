//! What a WebTransport server reads from its peer, parsed without I/O: the
//! HTTP/3 frames of the control and CONNECT streams, the types that open
//! the peer's streams, and the prefix of every datagram. Everything here is
//! untrusted input and never panics; the layer's `h3` module feeds it from
//! quinn's streams, and the `webtransport_input` fuzz target feeds it
//! anything.

use std::borrow::Cow;

use wtransport_proto::bytes::{BufferReader, BytesReader};
use wtransport_proto::capsule::{Capsule, CapsuleKind, capsules::CloseWebTransportSession};
use wtransport_proto::error::ErrorCode;
use wtransport_proto::frame::Frame;
use wtransport_proto::headers::Headers;
use wtransport_proto::ids::{QStreamId, SessionId, StreamId};
use wtransport_proto::session::SessionRequest;
use wtransport_proto::settings::Settings;
use wtransport_proto::varint::VarInt;

/// HTTP/3 frame types this layer looks at (RFC 9114 §7.2).
const FRAME_DATA: u64 = 0x00;
const FRAME_HEADERS: u64 = 0x01;
const FRAME_SETTINGS: u64 = 0x04;
/// The first varint of a WebTransport bidirectional stream.
pub const BI_WEBTRANSPORT: u64 = 0x41;
/// Largest frame payload buffered (SETTINGS, HEADERS, a capsule); larger
/// ones are an `H3_EXCESSIVE_LOAD` connection error. wtransport-proto's own
/// limit is 4,096; browsers send far less.
pub const MAX_FRAME: usize = 16 * 1024;

/// The length of a QUIC varint, from its first byte (RFC 9000 §16).
pub fn varint_len(first: u8) -> usize {
    1 << (first >> 6)
}

/// A whole varint's value, if `bytes` is exactly one.
pub fn varint(bytes: &[u8]) -> Option<u64> {
    let mut reader = BufferReader::new(bytes);
    let value = reader.get_varint()?;
    (reader.offset() == bytes.len()).then(|| value.into_inner())
}

/// One whole frame: its type and payload.
pub type RawFrame = (u64, Vec<u8>);

/// Whole HTTP/3 frames out of a stream's bytes, however they were split.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
}

impl FrameBuffer {
    /// Bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes a whole frame off the buffer, if there is one; a frame longer
    /// than [`MAX_FRAME`] is `H3_EXCESSIVE_LOAD`.
    pub fn take(&mut self) -> Result<Option<RawFrame>, ErrorCode> {
        let mut reader = BufferReader::new(&self.buf);
        let (Some(kind), Some(len)) = (reader.get_varint(), reader.get_varint()) else {
            return Ok(None);
        };
        let len = usize::try_from(len.into_inner()).unwrap_or(usize::MAX);
        if len > MAX_FRAME {
            return Err(ErrorCode::ExcessiveLoad);
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

    /// Whether bytes of an unfinished frame are waiting.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// What opens a peer's unidirectional stream (RFC 9114 §6.2, RFC 9204
/// §4.2, WebTransport).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniKind {
    /// The peer's control stream.
    Control,
    /// A QPACK encoder or decoder stream: read and discarded (we advertise
    /// a dynamic table of 0).
    Qpack,
    /// A WebTransport unidirectional stream: refused.
    WebTransport,
    /// Reserved or unknown: not read.
    Other,
}

impl UniKind {
    /// The kind of stream type `kind`.
    pub fn of(kind: u64) -> UniKind {
        match kind {
            0x00 => UniKind::Control,
            0x02 | 0x03 => UniKind::Qpack,
            0x54 => UniKind::WebTransport,
            _ => UniKind::Other,
        }
    }
}

/// The peer's control stream after its type: SETTINGS first, then frames
/// this layer ignores.
#[derive(Debug, Default)]
pub struct ControlStream {
    settings: bool,
}

impl ControlStream {
    /// One frame: the peer's SETTINGS (the first frame must be), nothing
    /// (GOAWAY, PRIORITY_UPDATE, reserved types), or a connection error.
    pub fn frame(&mut self, (kind, payload): RawFrame) -> Result<Option<Settings>, ErrorCode> {
        match (kind, self.settings) {
            (FRAME_SETTINGS, false) => {
                self.settings = true;
                Settings::with_frame(&Frame::new_settings(Cow::Owned(payload))).map(Some)
            }
            (_, false) => Err(ErrorCode::MissingSettings),
            (FRAME_SETTINGS | FRAME_DATA | FRAME_HEADERS, true) => Err(ErrorCode::FrameUnexpected),
            _ => Ok(None),
        }
    }
}

/// What the CONNECT stream says.
#[derive(Debug)]
pub enum ConnectEvent {
    /// The request's headers.
    Request(Headers),
    /// The peer closed the session (CLOSE_WEBTRANSPORT_SESSION, or FIN:
    /// code 0, no reason).
    Closed {
        /// The application's code.
        code: u32,
        /// Its reason.
        reason: String,
    },
}

/// The CONNECT stream: HEADERS, then DATA frames carrying capsules.
#[derive(Debug, Default)]
pub struct ConnectStream {
    requested: bool,
}

impl ConnectStream {
    /// One frame: the request, the session's close, nothing (other
    /// capsules, trailers, reserved types), or a connection error.
    pub fn frame(&mut self, (kind, payload): RawFrame) -> Result<Option<ConnectEvent>, ErrorCode> {
        match (kind, self.requested) {
            (FRAME_HEADERS, false) => {
                self.requested = true;
                header_block(payload).map(|headers| Some(ConnectEvent::Request(headers)))
            }
            (FRAME_DATA, false) => Err(ErrorCode::FrameUnexpected),
            (FRAME_DATA, true) => {
                let frame = Frame::new_data(Cow::Owned(payload));
                let Some(capsule) = Capsule::with_frame(&frame) else {
                    return Ok(None);
                };
                if !matches!(capsule.kind(), CapsuleKind::CloseWebTransportSession) {
                    return Ok(None);
                }
                CloseWebTransportSession::with_capsule(&capsule).map(|close| {
                    Some(ConnectEvent::Closed {
                        code: u32::try_from(close.error_code().into_inner()).unwrap_or(u32::MAX),
                        reason: close.reason().to_owned(),
                    })
                })
            }
            _ => Ok(None),
        }
    }

    /// The stream ended: a clean FIN after the request closes the session;
    /// before it, the request is incomplete.
    pub fn finished(&self) -> Result<ConnectEvent, ErrorCode> {
        if self.requested {
            Ok(ConnectEvent::Closed {
                code: 0,
                reason: String::new(),
            })
        } else {
            Err(ErrorCode::Message)
        }
    }
}

/// A HEADERS frame's field section, decoded with QPACK's static table.
fn header_block(payload: Vec<u8>) -> Result<Headers, ErrorCode> {
    if !qpack_integers_fit(&payload) {
        return Err(ErrorCode::Decompression);
    }
    Headers::with_frame(&Frame::new_headers(Cow::Owned(payload)))
}

/// What a client reads on its CONNECT stream before the session is up:
/// the `:status` of the server's response (the first HEADERS frame),
/// nothing for frame types to skip, or a connection error (DATA first, a
/// bad field section, no status).
pub fn response_status((kind, payload): RawFrame) -> Result<Option<u16>, ErrorCode> {
    match kind {
        FRAME_HEADERS => header_block(payload)?
            .get(":status")
            .and_then(|status| status.parse().ok())
            .map(Some)
            .ok_or(ErrorCode::Message),
        FRAME_DATA => Err(ErrorCode::FrameUnexpected),
        _ => Ok(None),
    }
}

/// Whether every QPACK prefix integer of a header block fits in 63 bits,
/// walking the block the way wtransport-proto 0.7.2's decoder reads it (the
/// static table only). Its decoder shifts a longer integer's continuation
/// bytes past 64 bits, which panics where overflow is checked (found by
/// the `webtransport_input` fuzz target); no real header needs such an
/// integer, so a block with one is refused before it is decoded. What the
/// decoder refuses by itself (dynamic-table references, a block cut short)
/// ends the walk.
fn qpack_integers_fit(block: &[u8]) -> bool {
    !matches!(walk_qpack(block), Err(Walk::Overlong))
}

/// Why a walk over a header block stopped early.
#[derive(Debug)]
enum Walk {
    /// An integer longer than 63 bits.
    Overlong,
    /// The block ended inside a field line.
    Ended,
}

fn walk_qpack(block: &[u8]) -> Result<(), Walk> {
    let mut block = QpackReader(block);
    // Required insert count and base.
    block.integer(8)?;
    block.integer(7)?;
    while let Some(&first) = block.0.first() {
        if first & 0x80 != 0 {
            // Indexed field line; the dynamic table is refused.
            if first & 0x40 == 0 {
                return Ok(());
            }
            block.integer(6)?;
        } else if first & 0x40 != 0 {
            // Literal with a name reference; the dynamic table is refused.
            if first & 0x10 == 0 {
                return Ok(());
            }
            block.integer(4)?;
            block.string(7)?;
        } else if first & 0x20 != 0 {
            // Literal with a literal name.
            block.string(3)?;
            block.string(7)?;
        } else {
            // Post-base forms: the dynamic table, refused.
            return Ok(());
        }
    }
    Ok(())
}

/// QPACK prefix integers and strings read off a header block.
struct QpackReader<'a>(&'a [u8]);

impl QpackReader<'_> {
    fn byte(&mut self) -> Result<u8, Walk> {
        let (&first, rest) = self.0.split_first().ok_or(Walk::Ended)?;
        self.0 = rest;
        Ok(first)
    }

    /// An integer with an `n`-bit prefix (RFC 7541 §5.1).
    fn integer(&mut self, n: u32) -> Result<u64, Walk> {
        let mask = (1u16 << n) - 1;
        let mut value = u64::from(u16::from(self.byte()?) & mask);
        if value < u64::from(mask) {
            return Ok(value);
        }
        let mut shift = 0u32;
        loop {
            let byte = self.byte()?;
            if shift >= 63 {
                return Err(Walk::Overlong);
            }
            value = value.saturating_add(u64::from(byte & 0x7f) << shift);
            shift += 7;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
    }

    /// A string: its length with an `n`-bit prefix, then that many bytes.
    fn string(&mut self, n: u32) -> Result<(), Walk> {
        let len = usize::try_from(self.integer(n)?).map_err(|_| Walk::Overlong)?;
        self.0 = self.0.get(len..).ok_or(Walk::Ended)?;
        Ok(())
    }
}

/// The session a WebTransport stream (or the CONNECT stream) names: the id
/// of a client-initiated bidirectional stream, or `None`.
pub fn session_id(id: u64) -> Option<SessionId> {
    let id = VarInt::try_from_u64(id).ok()?;
    SessionId::try_from_session_stream(StreamId::new(id)).ok()
}

/// Where a datagram's payload starts, if its prefix (a quarter stream id)
/// names `session`; anything else is dropped.
pub fn datagram_offset(datagram: &[u8], session: SessionId) -> Option<usize> {
    let mut reader = BufferReader::new(datagram);
    let id = reader.get_varint()?;
    (id == QStreamId::from_session_id(session).into_varint()).then(|| reader.offset())
}

/// The WebTransport request in a CONNECT stream's headers (`:method`
/// CONNECT, `:protocol` webtransport, `:scheme`, `:authority`, `:path`),
/// or `H3_MESSAGE_ERROR`.
pub fn session_request(headers: Headers) -> Result<SessionRequest, ErrorCode> {
    SessionRequest::try_from(headers).map_err(|_| ErrorCode::Message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_are_reassembled() {
        let mut whole = Vec::new();
        whole.extend_from_slice(&[0x21, 0x02, 0xaa, 0xbb]); // a reserved frame
        whole.extend_from_slice(&[0x04, 0x00]); // empty SETTINGS
        for split in 0..whole.len() {
            let mut frames = FrameBuffer::default();
            frames.extend(&whole[..split]);
            let mut got = Vec::new();
            while let Some(frame) = frames.take().unwrap() {
                got.push(frame);
            }
            frames.extend(&whole[split..]);
            while let Some(frame) = frames.take().unwrap() {
                got.push(frame);
            }
            assert_eq!(
                got,
                vec![(0x21, vec![0xaa, 0xbb]), (0x04, vec![])],
                "split at {split}"
            );
            assert!(frames.is_empty());
        }
    }

    #[test]
    fn an_oversized_frame_is_excessive_load() {
        let mut frames = FrameBuffer::default();
        // Type 0x21, length 16,385 (a 4-byte varint), no payload yet.
        frames.extend(&[0x21, 0x80, 0x00, 0x40, 0x01]);
        assert!(matches!(frames.take(), Err(ErrorCode::ExcessiveLoad)));
        let mut frames = FrameBuffer::default();
        // The largest varint length.
        frames.extend(&[0x21, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(frames.take(), Err(ErrorCode::ExcessiveLoad)));
    }

    #[test]
    fn the_control_stream_starts_with_settings_and_has_one() {
        let mut control = ControlStream::default();
        assert!(matches!(
            control.frame((0x07, vec![0x00])),
            Err(ErrorCode::MissingSettings)
        ));
        let mut control = ControlStream::default();
        assert!(control.frame((FRAME_SETTINGS, vec![])).unwrap().is_some());
        // GOAWAY and a reserved type are ignored.
        assert!(control.frame((0x07, vec![0x00])).unwrap().is_none());
        assert!(control.frame((0x21, vec![])).unwrap().is_none());
        for kind in [FRAME_SETTINGS, FRAME_DATA, FRAME_HEADERS] {
            assert!(matches!(
                control.frame((kind, vec![])),
                Err(ErrorCode::FrameUnexpected)
            ));
        }
    }

    #[test]
    fn the_connect_stream_needs_headers_first_and_closes_on_fin() {
        let connect = ConnectStream::default();
        assert!(matches!(connect.finished(), Err(ErrorCode::Message)));
        let mut connect = ConnectStream::default();
        assert!(matches!(
            connect.frame((FRAME_DATA, vec![])),
            Err(ErrorCode::FrameUnexpected)
        ));
        let mut connect = ConnectStream { requested: true };
        // A capsule of an unknown type is ignored.
        assert!(
            connect
                .frame((FRAME_DATA, vec![0x29, 0x00]))
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            connect.finished(),
            Ok(ConnectEvent::Closed { code: 0, .. })
        ));
    }

    #[test]
    fn a_close_capsule_gives_its_code_and_reason() {
        // CLOSE_WEBTRANSPORT_SESSION (0x2843): code 4242, reason "bye".
        let mut payload = vec![0x68, 0x43, 0x07];
        payload.extend_from_slice(&4242u32.to_be_bytes());
        payload.extend_from_slice(b"bye");
        let mut connect = ConnectStream { requested: true };
        match connect.frame((FRAME_DATA, payload)).unwrap() {
            Some(ConnectEvent::Closed { code, reason }) => {
                assert_eq!((code, reason.as_str()), (4242, "bye"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_overlong_qpack_integer_is_refused_before_decoding() {
        let mut request = SessionRequest::new("https://localhost:4433/signal").unwrap();
        request.insert("origin", "http://localhost").unwrap();
        let frame = request.headers().generate_frame();
        let payload = frame.payload().to_vec();
        assert!(qpack_integers_fit(&payload));
        let mut connect = ConnectStream::default();
        assert!(matches!(
            connect.frame((FRAME_HEADERS, payload)),
            Ok(Some(ConnectEvent::Request(_)))
        ));
        // Prefix integers, then a literal name whose length runs on for 11
        // continuation bytes: the decoder's shift would pass 64 bits.
        let mut block = vec![0x00, 0x00, 0x27];
        block.extend_from_slice(&[0xff; 10]);
        block.push(0x01);
        assert!(!qpack_integers_fit(&block));
        let mut connect = ConnectStream::default();
        assert!(matches!(
            connect.frame((FRAME_HEADERS, block)),
            Err(ErrorCode::Decompression)
        ));
        // Nine continuation bytes still fit; a block cut short is the
        // decoder's to refuse.
        let mut block = vec![0x00, 0x00, 0x27];
        block.extend_from_slice(&[0x81; 8]);
        block.push(0x01);
        assert!(qpack_integers_fit(&block));
        assert!(qpack_integers_fit(&[0x00, 0x00, 0x27, 0xff]));
        assert!(qpack_integers_fit(&[]));
    }

    #[test]
    fn stream_types_and_session_ids() {
        assert_eq!(UniKind::of(0x00), UniKind::Control);
        assert_eq!(UniKind::of(0x02), UniKind::Qpack);
        assert_eq!(UniKind::of(0x03), UniKind::Qpack);
        assert_eq!(UniKind::of(0x54), UniKind::WebTransport);
        assert_eq!(UniKind::of(0x21), UniKind::Other);
        // Client-initiated bidirectional streams: 0, 4, 8, ...
        assert!(session_id(0).is_some());
        assert!(session_id(4).is_some());
        assert!(session_id(1).is_none());
        assert!(session_id(2).is_none());
        assert!(session_id(u64::MAX).is_none());
        assert_eq!(varint_len(0x00), 1);
        assert_eq!(varint_len(0x40), 2);
        assert_eq!(varint_len(0x80), 4);
        assert_eq!(varint_len(0xc0), 8);
        assert_eq!(varint(&[0x40, 0x41]), Some(0x41));
        assert_eq!(varint(&[0x40]), None);
        assert_eq!(varint(&[0x41, 0x00, 0x00]), None);
    }

    #[test]
    fn datagrams_of_another_session_are_dropped() {
        let session = session_id(4).unwrap();
        // The quarter stream id of stream 4 is 1.
        assert_eq!(datagram_offset(&[0x01, b'h', b'i'], session), Some(1));
        assert_eq!(datagram_offset(&[0x40, 0x01, b'h'], session), Some(2));
        assert_eq!(datagram_offset(&[0x02, b'h'], session), None);
        assert_eq!(datagram_offset(&[], session), None);
        assert_eq!(datagram_offset(&[0x40], session), None);
    }

    #[test]
    fn a_client_reads_the_status_of_the_response() {
        use wtransport_proto::session::SessionResponse;
        let frame = |response: SessionResponse| {
            let frame = response.headers().generate_frame();
            (FRAME_HEADERS, frame.payload().to_vec())
        };
        assert_eq!(response_status(frame(SessionResponse::ok())), Ok(Some(200)));
        assert_eq!(
            response_status(frame(SessionResponse::too_many_requests())),
            Ok(Some(429))
        );
        // Reserved frame types before the response are skipped.
        assert_eq!(response_status((0x21, vec![1, 2])), Ok(None));
        assert_eq!(
            response_status((FRAME_DATA, vec![])),
            Err(ErrorCode::FrameUnexpected)
        );
        // A field section without a status, and one that does not decode.
        let request = SessionRequest::new("https://localhost/").unwrap();
        let headers = request.headers().generate_frame().payload().to_vec();
        assert_eq!(
            response_status((FRAME_HEADERS, headers)),
            Err(ErrorCode::Message)
        );
        assert_eq!(
            response_status((FRAME_HEADERS, vec![0xff; 12])),
            Err(ErrorCode::Decompression)
        );
    }
}

//! An open WebTransport session: the first bidirectional stream, datagrams,
//! refusals, the end.

use bytes::Bytes;
use wtransport::quinn::{self, VarInt};
use wtransport_proto::bytes::{BufferWriter, BytesWriter};
use wtransport_proto::error::ErrorCode;
use wtransport_proto::ids::{QStreamId, SessionId};

use super::h3::{self, H3};
use super::wire;
use super::{Step, fail, refuse, step};

/// What [`Session::next`] has to say.
#[derive(Debug)]
pub enum Event {
    /// The session's first bidirectional stream (once), positioned at the
    /// application's first byte.
    Stream(quinn::SendStream, quinn::RecvStream),
    /// A datagram's payload (its prefix stripped).
    Datagram(Bytes),
    /// The session is over; nothing more will come.
    Closed(Closed),
}

/// How a session ended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Closed {
    /// The peer closed it (CLOSE_WEBTRANSPORT_SESSION, or FIN on the
    /// CONNECT stream: code 0); the connection was then closed with
    /// `H3_NO_ERROR`, as wtransport does.
    #[error("closed by the peer: {code} {reason:?}")]
    Peer {
        /// The peer's code.
        code: u32,
        /// The peer's reason.
        reason: String,
    },
    /// The connection is gone (closed by either side, timed out).
    #[error("connection lost: {0}")]
    Lost(quinn::ConnectionError),
    /// The peer broke HTTP/3; the connection was closed with this code.
    #[error("HTTP/3 error {0:#x}")]
    Protocol(u64),
}

/// A datagram's prefix: the session's quarter stream id, as a varint.
#[derive(Debug, Clone, Copy)]
struct Prefix {
    bytes: [u8; 8],
    len: u8,
}

impl Prefix {
    fn of(session: SessionId) -> Prefix {
        let mut bytes = [0; 8];
        let varint = QStreamId::from_session_id(session).into_varint();
        let mut writer = BufferWriter::new(&mut bytes);
        writer.put_varint(varint).expect("8 bytes hold a varint");
        let len = writer.offset() as u8;
        Prefix { bytes, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Sends a session's datagrams; cheap to clone (a connection handle and
/// the prefix), for whoever else writes to the session.
#[derive(Debug, Clone)]
pub struct Datagrams {
    connection: quinn::Connection,
    prefix: Prefix,
}

impl Datagrams {
    /// The datagrams of `session` on `connection`.
    pub(super) fn new(connection: quinn::Connection, session: SessionId) -> Datagrams {
        Datagrams {
            connection,
            prefix: Prefix::of(session),
        }
    }

    /// Sends `payload` as one datagram of the session.
    pub fn send(&self, payload: &[u8]) -> Result<(), quinn::SendDatagramError> {
        let prefix = self.prefix.as_slice();
        let mut datagram = Vec::with_capacity(prefix.len() + payload.len());
        datagram.extend_from_slice(prefix);
        datagram.extend_from_slice(payload);
        self.connection.send_datagram(datagram.into())
    }

    /// The connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }
}

/// An accepted WebTransport session. Its owner polls [`Session::next`]
/// (alone or in a `select!` beside its own reads: it is cancel-safe) for as
/// long as it wants the session; while nobody polls it, further streams and
/// HTTP/3 control frames wait in quinn's flow-control windows.
#[derive(Debug)]
pub struct Session {
    connection: quinn::Connection,
    h3: H3,
    /// The CONNECT stream's sending half, open while the session is.
    _connect: quinn::SendStream,
    session_id: SessionId,
    datagrams: Datagrams,
    /// The first stream was handed over.
    streamed: bool,
    /// The session is over.
    closed: Option<Closed>,
}

impl Session {
    pub(super) fn new(
        connection: quinn::Connection,
        h3: H3,
        connect: quinn::SendStream,
        session_id: SessionId,
    ) -> Session {
        Session {
            datagrams: Datagrams::new(connection.clone(), session_id),
            connection,
            h3,
            _connect: connect,
            session_id,
            streamed: false,
            closed: None,
        }
    }

    /// The QUIC connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// A sender of this session's datagrams.
    pub fn datagrams(&self) -> Datagrams {
        self.datagrams.clone()
    }

    /// Sends `payload` as one datagram of the session.
    pub fn send_datagram(&self, payload: &[u8]) -> Result<(), quinn::SendDatagramError> {
        self.datagrams.send(payload)
    }

    /// Closes the session: a QUIC `CONNECTION_CLOSE` with the application's
    /// `code` and `reason`, exactly as `wtransport::Connection::close`.
    pub fn close(&self, code: u32, reason: &[u8]) {
        self.connection.close(VarInt::from_u32(code), reason);
    }

    /// Waits for the session's first bidirectional stream. Datagrams that
    /// come first stay in quinn's receive buffer for [`Session::next`].
    pub async fn accept_stream(
        &mut self,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), Closed> {
        loop {
            match self.next_of(false).await {
                Event::Stream(send, recv) => return Ok((send, recv)),
                Event::Closed(closed) => return Err(closed),
                // Not read while waiting for the stream: never comes.
                Event::Datagram(_) => {}
            }
        }
    }

    /// The next stream, datagram or the end. Cancel-safe.
    pub async fn next(&mut self) -> Event {
        self.next_of(true).await
    }

    /// The next stream, datagram (if `datagrams`) or the end.
    async fn next_of(&mut self, datagrams: bool) -> Event {
        loop {
            if let Some(closed) = &self.closed {
                return Event::Closed(closed.clone());
            }
            match step(&self.connection, &mut self.h3, datagrams).await {
                Step::Datagram(Ok(datagram)) => {
                    tracing::trace!(len = datagram.len(), "datagram");
                    // A prefix that is not a quarter stream id is an
                    // `H3_DATAGRAM_ERROR` (RFC 9297 §2.1) in principle; it
                    // is dropped, as is one of another session.
                    if let Some(offset) = wire::datagram_offset(&datagram, self.session_id) {
                        return Event::Datagram(datagram.slice(offset..));
                    }
                }
                Step::H3(Ok(h3::Event::Bi {
                    mut send,
                    recv,
                    session,
                })) => {
                    tracing::debug!(stream = %recv.id(), ?session, ours = ?self.session_id, "WebTransport stream");
                    if session == self.session_id && !self.streamed {
                        self.streamed = true;
                        return Event::Stream(send, recv);
                    }
                    refuse(&mut send, recv);
                }
                Step::H3(Ok(h3::Event::Closed { code, reason })) => {
                    self.connection.close(h3::code(ErrorCode::NoError), b"");
                    self.closed = Some(Closed::Peer { code, reason });
                }
                // A second SETTINGS or request is caught in `h3`; these are
                // ignored here.
                Step::H3(Ok(h3::Event::Settings | h3::Event::Request(_))) => {}
                Step::H3(Err(stop)) => {
                    self.closed = Some(match fail(&self.connection, stop) {
                        super::Error::Lost(lost) => Closed::Lost(lost),
                        super::Error::Protocol(code) => Closed::Protocol(code),
                        super::Error::Closed => Closed::Protocol(0),
                    });
                }
                Step::Uni(Ok(stream)) => self.h3.add_uni(stream),
                Step::Bi(Ok((send, recv))) => self.h3.add_bi(send, recv),
                Step::Uni(Err(lost)) | Step::Bi(Err(lost)) | Step::Datagram(Err(lost)) => {
                    self.closed = Some(Closed::Lost(lost));
                }
            }
        }
    }
}

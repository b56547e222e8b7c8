//! A thin server side of WebTransport over HTTP/3, directly on quinn
//! (prototype; issue 12's memory goal).
//!
//! wtransport 0.7 gives every connection a worker task, three bounded
//! channels and a task per incoming stream; this layer gives it none of its
//! own. The caller's one task per connection drives everything: it calls
//! [`handshake`] (our control stream and SETTINGS out, the peer's control
//! stream, SETTINGS and QPACK streams in, the CONNECT request), decides on
//! the [`Request`] (origin, path, headers → 200, or 403 / 404 / 429), and
//! then polls [`Session::next`] beside its own reads: that yields the first
//! WebTransport bidirectional stream (the signaling stream, as plain
//! `quinn` streams), datagrams with their quarter-stream-id prefix stripped,
//! and the session's end, and meanwhile refuses every further stream
//! (STOP_SENDING / RESET_STREAM with [`REFUSED_STREAM`], as quicmatch does
//! on wtransport) and keeps reading the HTTP/3 control streams. The caller
//! owns the `quinn::Connection` and the streams; there are no channels.
//!
//! On the wire it does what wtransport 0.7.2's server does (so every client
//! that works with it works here): the same SETTINGS (QPACK dynamic table
//! 0, extended CONNECT, `ENABLE_WEBTRANSPORT` and `WEBTRANSPORT_MAX_SESSIONS`
//! = 1, `H3_DATAGRAM`), a response of `:status` only, a session close as a
//! QUIC `CONNECTION_CLOSE` with the application's code and reason
//! ([`Session::close`], what `wtransport::Connection::close` does), and a
//! peer's CLOSE_WEBTRANSPORT_SESSION capsule (or FIN on the CONNECT stream)
//! answered by closing the connection with `H3_NO_ERROR`. Codecs (frames,
//! SETTINGS, QPACK with the static table, capsules, datagram prefix) are
//! wtransport-proto's.
//!
//! Not done (prototype): a second session on one connection (refused with
//! `H3_REQUEST_REJECTED`), WebTransport unidirectional streams (refused),
//! GOAWAY on shutdown, validation of the peer's SETTINGS (wtransport does
//! none either).

mod h3;
mod session;

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;

use wtransport::quinn::{self, VarInt};
use wtransport::tls::rustls;
use wtransport_proto::error::ErrorCode;
use wtransport_proto::ids::SessionId;
use wtransport_proto::session::{SessionRequest, SessionResponse};
use wtransport_proto::settings::Settings;

pub use h3::REFUSED_STREAM;
pub use session::{Closed, Datagrams, Event, Session};

use h3::{H3, Stop};

/// A quinn server endpoint on `socket` with quicmatch's TLS and transport
/// settings (the same quinn configuration wtransport builds from them).
pub fn endpoint(
    socket: std::net::UdpSocket,
    tls: rustls::ServerConfig,
    transport: quinn::TransportConfig,
    migration: bool,
) -> anyhow::Result<quinn::Endpoint> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    config.migration(migration);
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    Ok(endpoint)
}

/// Why a handshake or session ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The QUIC connection failed or was closed.
    #[error("connection lost: {0}")]
    Lost(#[from] quinn::ConnectionError),
    /// The peer broke HTTP/3; the connection was closed with this code.
    #[error("HTTP/3 error {0:#x}")]
    Protocol(u64),
    /// The peer closed the session before it was set up.
    #[error("closed by the peer")]
    Closed,
}

/// Ends the connection for a control-plane stop, and says why.
fn fail(connection: &quinn::Connection, stop: Stop) -> Error {
    match stop {
        Stop::Lost(lost) => Error::Lost(lost),
        Stop::Protocol(code) => {
            let code = code.to_code().into_inner();
            connection.close(VarInt::from_u64(code).expect("an H3 code"), b"");
            Error::Protocol(code)
        }
    }
}

/// One step of a connection's task: what woke it.
enum Step {
    H3(Result<h3::Event, Stop>),
    Uni(Result<quinn::RecvStream, quinn::ConnectionError>),
    Bi(Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>),
    Datagram(Result<bytes::Bytes, quinn::ConnectionError>),
}

/// Waits for the next thing on the connection. Cancel-safe: every piece
/// of state is in `h3`, and quinn's accept and datagram futures take
/// nothing until they complete.
async fn step(connection: &quinn::Connection, h3: &mut H3, datagrams: bool) -> Step {
    tokio::select! {
        biased;
        event = poll_fn(|cx| h3.poll(cx)) => Step::H3(event),
        datagram = connection.read_datagram(), if datagrams => Step::Datagram(datagram),
        uni = connection.accept_uni() => Step::Uni(uni),
        bi = connection.accept_bi() => Step::Bi(bi),
    }
}

/// Sets up HTTP/3 on an established QUIC connection and reads the
/// WebTransport CONNECT request: both SETTINGS exchanged, the request's
/// headers read. Bound it with a timeout: a peer that sends nothing makes
/// it wait.
pub async fn handshake(connection: quinn::Connection) -> Result<Request, Error> {
    let mut h3 = H3::open(&connection)
        .await
        .map_err(|stop| fail(&connection, stop))?;
    let mut settings = None;
    let mut headers = None;
    while settings.is_none() || headers.is_none() {
        match step(&connection, &mut h3, false).await {
            Step::H3(Ok(h3::Event::Settings(got))) => settings = Some(got),
            Step::H3(Ok(h3::Event::Request(got))) => headers = Some(got),
            Step::H3(Ok(h3::Event::Closed { .. })) => return Err(Error::Closed),
            Step::H3(Ok(h3::Event::Bi { mut send, recv, .. })) => {
                // No session yet for it to belong to.
                refuse(&mut send, recv);
            }
            Step::H3(Err(stop)) => return Err(fail(&connection, stop)),
            Step::Uni(Ok(stream)) => h3.add_uni(stream),
            Step::Bi(Ok((send, recv))) => h3.add_bi(send, recv),
            Step::Uni(Err(lost)) | Step::Bi(Err(lost)) | Step::Datagram(Err(lost)) => {
                return Err(Error::Lost(lost));
            }
            Step::Datagram(Ok(_)) => {}
        }
    }
    let (Some(settings), Some(headers)) = (settings, headers) else {
        unreachable!("the loop ends with both");
    };
    let request = match SessionRequest::try_from(headers) {
        Ok(request) => request,
        Err(_) => return Err(fail(&connection, Stop::Protocol(ErrorCode::Message))),
    };
    let connect_id = h3
        .connect_id()
        .expect("a request came on the CONNECT stream");
    let session_id =
        wtransport_proto::varint::VarInt::try_from_u64(VarInt::from(connect_id).into_inner())
            .ok()
            .map(wtransport_proto::ids::StreamId::new)
            .and_then(|stream| SessionId::try_from_session_stream(stream).ok())
            .ok_or_else(|| fail(&connection, Stop::Protocol(ErrorCode::Id)))?;
    let send = h3
        .take_connect_send()
        .expect("the CONNECT stream's sending half");
    Ok(Request {
        connection,
        h3,
        send,
        request,
        settings,
        session_id,
    })
}

/// Stops and resets a stream this layer does not take.
fn refuse(send: &mut quinn::SendStream, mut recv: quinn::RecvStream) {
    let code = VarInt::from_u32(REFUSED_STREAM);
    let _ = recv.stop(code);
    let _ = send.reset(code);
}

/// A WebTransport session request, waiting for the caller's answer.
#[derive(Debug)]
pub struct Request {
    connection: quinn::Connection,
    h3: H3,
    /// The CONNECT stream's sending half: the response goes there, and it
    /// stays open for the session's life.
    send: quinn::SendStream,
    request: SessionRequest,
    settings: Settings,
    session_id: SessionId,
}

impl Request {
    /// The QUIC connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// The peer's UDP address.
    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    /// `:authority`.
    pub fn authority(&self) -> &str {
        self.request.authority()
    }

    /// `:path` (with the query).
    pub fn path(&self) -> &str {
        self.request.path()
    }

    /// `origin`, if sent.
    pub fn origin(&self) -> Option<&str> {
        self.request.origin()
    }

    /// Every header field.
    pub fn headers(&self) -> &HashMap<String, String> {
        self.request.headers().as_ref()
    }

    /// The peer's SETTINGS.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Answers 200: the session is open.
    pub async fn accept(mut self) -> Result<Session, Error> {
        self.respond(SessionResponse::ok()).await?;
        Ok(Session::new(
            self.connection,
            self.h3,
            self.send,
            self.session_id,
        ))
    }

    /// Answers `403 Forbidden`.
    pub async fn forbidden(self) {
        self.reject(SessionResponse::forbidden()).await;
    }

    /// Answers `404 Not Found`.
    pub async fn not_found(self) {
        self.reject(SessionResponse::not_found()).await;
    }

    /// Answers `429 Too Many Requests`.
    pub async fn too_many_requests(self) {
        self.reject(SessionResponse::too_many_requests()).await;
    }

    /// Answers with `response`, finishes the CONNECT stream and waits (a
    /// caller's timeout bounds it) until the peer has it; the connection
    /// closes when the caller drops its last handle, as with wtransport.
    async fn reject(mut self, response: SessionResponse) {
        if self.respond(response).await.is_ok() && self.send.finish().is_ok() {
            let _ = self.send.stopped().await;
        }
    }

    /// Writes the response's HEADERS frame on the CONNECT stream.
    async fn respond(&mut self, response: SessionResponse) -> Result<(), Error> {
        let frame = response.headers().generate_frame();
        let mut bytes = vec![0; frame.write_size()];
        let mut writer = wtransport_proto::bytes::BufferWriter::new(&mut bytes);
        frame.write_to_buffer(&mut writer).expect("sized");
        match self.send.write_all(&bytes).await {
            Ok(()) => Ok(()),
            Err(quinn::WriteError::ConnectionLost(lost)) => Err(Error::Lost(lost)),
            Err(_) => Err(fail(
                &self.connection,
                Stop::Protocol(ErrorCode::ClosedCriticalStream),
            )),
        }
    }
}

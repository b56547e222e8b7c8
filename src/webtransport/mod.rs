//! The server side of WebTransport over HTTP/3, directly on quinn: what
//! the WebTransport endpoints run on every connection.
//!
//! Why not a WebTransport library's server: wtransport 0.7 gives every
//! connection a worker task, three bounded channels and a task per incoming
//! stream, about 28 KiB a session (docs/performance.md §11); this layer
//! gives it none of its own. The session's task drives everything: it
//! calls [`handshake`] (our control stream and SETTINGS out, the peer's
//! control stream, SETTINGS and QPACK streams in, the CONNECT request),
//! decides on the [`Request`] (origin, path, headers → 200, or 403 / 404 /
//! 429), waits for the signaling stream ([`Session::accept_stream`]) and
//! then polls [`Session::next`] beside its own reads: datagrams with their
//! quarter-stream-id prefix stripped, and the session's end. Meanwhile it
//! refuses every further stream (STOP_SENDING / RESET_STREAM with
//! [`REFUSED_STREAM`]) and keeps reading the HTTP/3 control streams. The
//! caller owns the `quinn::Connection` and the streams; there are no
//! channels.
//!
//! The layer is a sans-I/O parser ([`wire`]: frames, SETTINGS, the request,
//! capsules, stream types, datagram prefixes; fuzzed as
//! `webtransport_input`) under a poll-driven reader of quinn's streams
//! (`h3`). Codecs (frames, SETTINGS, QPACK with the static table,
//! capsules) are wtransport-proto's.
//!
//! On the wire it does what wtransport 0.7.2's server does, so every client
//! that works with one works with the other (browsers, wtransport's client
//! and so the native client, this layer's own client and so the load
//! generator): the same SETTINGS
//! (QPACK dynamic table 0, extended CONNECT, `ENABLE_WEBTRANSPORT` and
//! `WEBTRANSPORT_MAX_SESSIONS` = 1, `H3_DATAGRAM`), a response of
//! `:status` only, a session close as a QUIC `CONNECTION_CLOSE` with the
//! application's code and reason ([`Session::close`]), and a peer's
//! CLOSE_WEBTRANSPORT_SESSION capsule (or FIN on the CONNECT stream)
//! answered by closing the connection with `H3_NO_ERROR`. What quicmatch
//! does not need is refused rather than implemented: a second session on
//! one connection (`H3_REQUEST_REJECTED`), WebTransport unidirectional
//! streams, and streams opened before the session is accepted. The peer's
//! SETTINGS are parsed but not checked (a client that cannot do
//! WebTransport never sends the CONNECT). Shutdown closes connections with
//! `Closing` and the application's code rather than a GOAWAY.
//!
//! [`ClientSession`] is the same layer's client side, for clients that
//! hold many sessions (the load generator): no task or channel per
//! session either.

mod client;
mod gate;
mod h3;
mod session;
pub mod wire;

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;

use wtransport::quinn::{self, VarInt};
use wtransport::tls::rustls;
use wtransport_proto::error::ErrorCode;
use wtransport_proto::ids::SessionId;
use wtransport_proto::session::{SessionRequest, SessionResponse};

pub use client::{ClientError, ClientSession, client_endpoint};
pub use h3::REFUSED_STREAM;
pub use session::{Closed, Datagrams, Event, Session};

use h3::{H3, Stop};

/// The quinn server configuration for `tls` (its ALPN must offer `h3`)
/// and `transport`; the caller adds its own endpoint policy (migration,
/// limits on undecided connection attempts).
pub fn server_config(
    tls: rustls::ServerConfig,
    transport: quinn::TransportConfig,
) -> anyhow::Result<quinn::ServerConfig> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A quinn server endpoint on `socket` serving `config`.
pub fn endpoint(
    socket: std::net::UdpSocket,
    config: quinn::ServerConfig,
) -> anyhow::Result<quinn::Endpoint> {
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
        Stop::Protocol(error) => {
            let code = h3::code(error);
            connection.close(code, b"");
            Error::Protocol(code.into_inner())
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

/// Accepts a connection attempt, sets up HTTP/3 on it and reads the
/// WebTransport CONNECT request: the QUIC handshake completed, both
/// SETTINGS exchanged, the request's headers read. Bound it with a
/// timeout: a peer that sends nothing makes it wait.
///
/// The control stream opens once the handshake is complete. Opening it
/// before (0.5-RTT, which would put the SETTINGS in the datagram of the
/// server's first flight) broke Chromium 156: a page's second session
/// never became ready (docs/performance.md §13).
pub async fn handshake(incoming: quinn::Incoming) -> Result<Request, Error> {
    let connection = incoming.await?;
    let mut h3 = H3::open(&connection)
        .await
        .map_err(|stop| fail(&connection, stop))?;
    // The peer's SETTINGS must come, but nothing in them is used (see the
    // module's doc).
    let mut settings = false;
    let mut headers = None;
    let headers = loop {
        if settings && let Some(headers) = headers.take() {
            break headers;
        }
        match step(&connection, &mut h3, false).await {
            Step::H3(Ok(h3::Event::Settings)) => settings = true,
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
    };
    let request =
        wire::session_request(headers).map_err(|error| fail(&connection, Stop::Protocol(error)))?;
    // The request came on the CONNECT stream, whose id names the session.
    let session_id = h3
        .connect_id()
        .and_then(|id| wire::session_id(VarInt::from(id).into_inner()))
        .ok_or_else(|| fail(&connection, Stop::Protocol(ErrorCode::Id)))?;
    let send = h3
        .take_connect_send()
        .ok_or_else(|| fail(&connection, Stop::Protocol(ErrorCode::ClosedCriticalStream)))?;
    Ok(Request {
        connection,
        h3,
        send,
        request,
        session_id,
    })
}

/// Stops and resets a stream this layer does not take.
fn refuse(send: &mut quinn::SendStream, mut recv: quinn::RecvStream) {
    h3::refuse_bi(send, &mut recv, VarInt::from_u32(REFUSED_STREAM));
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

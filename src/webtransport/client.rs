//! The client side of the layer: a WebTransport session on a quinn
//! connection with no task, channel or driver of its own, for clients that
//! run thousands of sessions from one process (the load generator), where
//! wtransport's client spends a worker task and channels per connection.
//!
//! On the wire it does what wtransport 0.7's client does: our control
//! stream with the same SETTINGS as the server's, the extended CONNECT
//! request sent once the server's SETTINGS have arrived (the WebTransport
//! draft requires the client to wait for them), `:status` 200 awaited;
//! then bidirectional streams that start with their WebTransport header,
//! and datagrams with the session's quarter-stream-id prefix. The server's
//! unidirectional streams and the CONNECT stream are held open, unread
//! after the handshake, for the life of the session: closing any of them
//! would end it.

use std::future::poll_fn;
use std::net::SocketAddr;

use bytes::Bytes;
use wtransport::quinn::{self, RecvStream, SendStream, VarInt};
use wtransport_proto::bytes::{BufferWriter, BytesWriter};
use wtransport_proto::error::ErrorCode;
use wtransport_proto::ids::SessionId;
use wtransport_proto::session::SessionRequest;
use wtransport_proto::settings::SettingId;

use super::h3::{FrameReader, LOCAL_CONTROL, Stop, VarintReader, code};
use super::session::Datagrams;
use super::wire::{self, BI_WEBTRANSPORT, ControlStream, RawFrame, UniKind};

/// Why a session could not be opened, or a stream of it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Not an `https://` URL.
    #[error("not a WebTransport URL: {0}")]
    Url(String),
    /// The connection attempt could not start.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC connection failed or was closed.
    #[error("connection lost: {0}")]
    Lost(#[from] quinn::ConnectionError),
    /// The server broke HTTP/3; the connection was closed with this code.
    #[error("HTTP/3 error {0:#x}")]
    Protocol(u64),
    /// The server's SETTINGS do not offer WebTransport.
    #[error("the server does not offer WebTransport")]
    NoWebTransport,
    /// The server answered the CONNECT request with another status.
    #[error("the server answered {0}")]
    Refused(u16),
}

/// A quinn client endpoint on `socket`, with the QUIC and TLS settings of
/// `config` (made with wtransport's builder, which knows certificate
/// pinning and the ALPN; its bind address is not used).
pub fn client_endpoint(
    socket: std::net::UdpSocket,
    config: &wtransport::ClientConfig,
) -> std::io::Result<quinn::Endpoint> {
    let mut endpoint = quinn::Endpoint::new(
        config.quic_endpoint_config().clone(),
        None,
        socket,
        std::sync::Arc::new(quinn::TokioRuntime),
    )?;
    endpoint.set_default_client_config(config.quic_config().clone());
    Ok(endpoint)
}

/// An open WebTransport session, as its client holds it.
#[derive(Debug)]
pub struct ClientSession {
    datagrams: Datagrams,
    session: SessionId,
    /// Our control stream.
    _control: SendStream,
    /// The server's unidirectional streams (its control stream, and QPACK
    /// streams if it opens them).
    _server_streams: Vec<RecvStream>,
    /// The CONNECT stream: finishing it would close the session.
    _connect: (SendStream, RecvStream),
}

impl ClientSession {
    /// Opens a session at `url` on a new connection from `endpoint` to
    /// `server` (the address `url` names, resolved by the caller). Bound it
    /// with a timeout: a server that answers nothing makes it wait.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        server: SocketAddr,
        url: &str,
    ) -> Result<ClientSession, ClientError> {
        let request = SessionRequest::new(url).map_err(|_| ClientError::Url(url.to_owned()))?;
        let connection = endpoint
            .connect(server, server_name(request.authority()))?
            .await?;
        let result = Self::handshake(&connection, &request).await;
        if let Err(ClientError::Protocol(error)) = &result {
            connection.close(VarInt::from_u64(*error).unwrap_or(VarInt::MAX), b"");
        }
        result
    }

    async fn handshake(
        connection: &quinn::Connection,
        request: &SessionRequest,
    ) -> Result<ClientSession, ClientError> {
        let mut control = connection.open_uni().await?;
        control
            .write_all(&LOCAL_CONTROL)
            .await
            .map_err(Stop::from)?;
        let server_streams = server_settings(connection).await?;

        let (mut send, mut recv) = connection.open_bi().await?;
        let frame = request.headers().generate_frame();
        let mut bytes = vec![0; frame.write_size()];
        frame
            .write_to_buffer(&mut BufferWriter::new(&mut bytes))
            .expect("sized");
        send.write_all(&bytes).await.map_err(Stop::from)?;
        let status = response_status(&mut recv).await?;
        if status != 200 {
            connection.close(code(ErrorCode::NoError), b"");
            return Err(ClientError::Refused(status));
        }
        let session = wire::session_id(VarInt::from(send.id()).into_inner())
            .ok_or(protocol(ErrorCode::Id))?;
        Ok(ClientSession {
            datagrams: Datagrams::new(connection.clone(), session),
            session,
            _control: control,
            _server_streams: server_streams,
            _connect: (send, recv),
        })
    }

    /// The QUIC connection.
    pub fn connection(&self) -> &quinn::Connection {
        self.datagrams.connection()
    }

    /// Opens a bidirectional stream of the session; its header goes out
    /// with the first bytes written to it.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), ClientError> {
        let (mut send, recv) = self.connection().open_bi().await?;
        let mut header = [0u8; 16];
        let mut writer = BufferWriter::new(&mut header);
        let kind = wtransport_proto::varint::VarInt::from_u32(BI_WEBTRANSPORT as u32);
        writer
            .put_varint(kind)
            .and_then(|()| writer.put_varint(self.session.into_varint()))
            .expect("16 bytes hold two varints");
        let len = writer.offset();
        send.write_all(header.get(..len).unwrap_or_default())
            .await
            .map_err(Stop::from)?;
        Ok((send, recv))
    }

    /// Sends `payload` as one datagram of the session.
    pub fn send_datagram(&self, payload: &[u8]) -> Result<(), quinn::SendDatagramError> {
        self.datagrams.send(payload)
    }

    /// The next datagram of the session, its prefix stripped (datagrams of
    /// no session of ours are dropped).
    pub async fn read_datagram(&self) -> Result<Bytes, quinn::ConnectionError> {
        loop {
            let datagram = self.connection().read_datagram().await?;
            if let Some(offset) = wire::datagram_offset(&datagram, self.session) {
                return Ok(datagram.slice(offset..));
            }
        }
    }

    /// Closes the session (and its connection) with the application's
    /// `code` and `reason`, as wtransport's client does.
    pub fn close(&self, code: u32, reason: &[u8]) {
        self.connection().close(VarInt::from_u32(code), reason);
    }
}

/// The TLS server name for an authority: its host, without the port or
/// an IPv6 literal's brackets.
fn server_name(authority: &str) -> &str {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => host,
        _ => authority,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

fn protocol(error: ErrorCode) -> ClientError {
    ClientError::Protocol(code(error).into_inner())
}

impl From<Stop> for ClientError {
    /// A stream the session cannot do without failed.
    fn from(stop: Stop) -> ClientError {
        match stop {
            Stop::Lost(lost) => ClientError::Lost(lost),
            Stop::Protocol(error) => protocol(error),
        }
    }
}

/// The next whole frame of `stream`; a finished stream is a closed
/// critical stream.
async fn next_frame(
    stream: &mut RecvStream,
    frames: &mut FrameReader,
) -> Result<RawFrame, ClientError> {
    poll_fn(|cx| frames.poll(stream, cx))
        .await?
        .ok_or(protocol(ErrorCode::ClosedCriticalStream))
}

/// Accepts the server's unidirectional streams until its control stream's
/// SETTINGS have arrived; they must offer WebTransport. Returns the
/// streams, to be held open.
async fn server_settings(connection: &quinn::Connection) -> Result<Vec<RecvStream>, ClientError> {
    let mut streams = Vec::new();
    loop {
        let mut stream = connection.accept_uni().await?;
        let kind = stream_type(&mut stream).await?;
        if matches!(UniKind::of(kind), UniKind::Control) {
            let mut frames = FrameReader::default();
            let mut control = ControlStream::default();
            let settings = loop {
                let frame = next_frame(&mut stream, &mut frames).await?;
                if let Some(settings) = control.frame(frame).map_err(protocol)? {
                    break settings;
                }
            };
            // Either the draft-02 setting or a session limit above 0.
            let offered = |id| settings.get(id).map_or(0, |value| value.into_inner());
            if offered(SettingId::EnableWebTransport) != 1
                && offered(SettingId::WebTransportMaxSessions) == 0
            {
                connection.close(code(ErrorCode::NoError), b"");
                return Err(ClientError::NoWebTransport);
            }
            streams.push(stream);
            return Ok(streams);
        }
        // QPACK streams are held open (closing them is an error); other
        // types are not read (RFC 9114 §6.2).
        if matches!(UniKind::of(kind), UniKind::Qpack) {
            streams.push(stream);
        } else {
            let _ = stream.stop(code(ErrorCode::StreamCreation));
        }
    }
}

/// A unidirectional stream's type: its first varint, read byte-exactly.
async fn stream_type(stream: &mut RecvStream) -> Result<u64, ClientError> {
    let mut kind = VarintReader::default();
    poll_fn(|cx| kind.poll(stream, cx))
        .await
        .map_err(Stop::from)?
        .ok_or(protocol(ErrorCode::StreamCreation))
}

/// The status the server answers the CONNECT request with.
async fn response_status(stream: &mut RecvStream) -> Result<u16, ClientError> {
    let mut frames = FrameReader::default();
    loop {
        let frame = next_frame(stream, &mut frames).await?;
        if let Some(status) = wire::response_status(frame).map_err(protocol)? {
            return Ok(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_drop_the_port_and_brackets() {
        assert_eq!(server_name("127.0.0.1:4433"), "127.0.0.1");
        assert_eq!(server_name("[::1]:4433"), "::1");
        assert_eq!(server_name("[::1]"), "::1");
        assert_eq!(server_name("localhost"), "localhost");
    }
}

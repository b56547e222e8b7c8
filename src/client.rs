//! A native async client for quicmatch servers, for Rust apps, tools and
//! load tests.
//!
//! It speaks the protocol for you: frames on the signaling stream, chat in
//! datagrams with acknowledgements, resends of unacknowledged chat and
//! suppression of repeated chat, as PROTOCOL.md section 4.4 describes.
//!
//! ```no_run
//! use quicmatch::client::{Client, Event, Verification};
//! use quicmatch::protocol::{ClientMsg, Gender, Profile, ServerMsg};
//!
//! # async fn run(hash: [u8; 32]) -> anyhow::Result<()> {
//! let mut client =
//!     Client::connect("https://localhost:5000/signal", Verification::CertificateHashes(vec![hash]))
//!         .await?;
//! client
//!     .send(&ClientMsg::Join(Profile { name: "Ann".into(), age: 30, gender: Gender::Female }))
//!     .await?;
//! while let Some(event) = client.next_event().await {
//!     match event {
//!         Event::Message(ServerMsg::Matched { match_id, partner, .. }) => {
//!             println!("matched with {}", partner.name);
//!             client.chat(match_id, "hello!")?;
//!         }
//!         Event::Chat { text, .. } => println!("partner: {text}"),
//!         Event::Closed { .. } => break,
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wtransport::endpoint::endpoint_side;
use wtransport::error::ConnectionError;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, SendStream, VarInt};

use crate::codec::{self, FrameDecoder, encode_frame};
use crate::protocol::{ClientMsg, CloseCode, Datagram, MAX_CHAT_LEN, ServerMsg};

/// Where and how to open a session, as a server's `/api/webtransport` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The session URL, `https://host:port/signal`.
    pub url: String,
    /// Certificate hashes to pin (empty for a CA-issued certificate).
    pub certificate_hashes: Vec<[u8; 32]>,
}

impl Discovery {
    /// The verification this discovery calls for: pinning when the server
    /// lists hashes, the system's roots otherwise.
    pub fn verification(&self) -> Verification {
        if self.certificate_hashes.is_empty() {
            Verification::SystemRoots
        } else {
            Verification::CertificateHashes(self.certificate_hashes.clone())
        }
    }
}

/// `url` with a join token in its query (`/signal?token=…`), for a server
/// that requires one (`--jwt-secret`, `--jwt-public-key`). Tokens expire:
/// fetch a fresh one from the site's backend for every connection.
pub fn with_token(url: &str, token: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}token={token}")
}

/// Asks a server's HTTP sidecar (`http_base`, e.g. `http://localhost:5000`)
/// for its session URL and certificate hashes, as a browser page does.
pub async fn discover(http_base: &str) -> anyhow::Result<Discovery> {
    use anyhow::Context;
    use base64::Engine;
    use http_body_util::{BodyExt, Empty};

    let uri: hyper::Uri =
        format!("{}/api/webtransport", http_base.trim_end_matches('/')).parse()?;
    let authority = uri.authority().context("URL has no host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(uri.path())
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{} answered {}",
        uri,
        response.status()
    );
    let body = response.into_body().collect().await?.to_bytes();
    connection.abort();

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        url: String,
        server_certificate_hashes: Vec<Hash>,
    }
    #[derive(serde::Deserialize)]
    struct Hash {
        algorithm: String,
        value: String,
    }
    let answer: Answer = serde_json::from_slice(&body).context("parsing /api/webtransport")?;
    let mut certificate_hashes = Vec::new();
    for hash in answer.server_certificate_hashes {
        anyhow::ensure!(
            hash.algorithm == "sha-256",
            "unknown hash algorithm {}",
            hash.algorithm
        );
        let bytes = base64::engine::general_purpose::STANDARD.decode(&hash.value)?;
        certificate_hashes.push(<[u8; 32]>::try_from(bytes.as_slice()).context("hash length")?);
    }
    Ok(Discovery {
        url: answer.url,
        certificate_hashes,
    })
}

/// How the client checks the server's certificate.
#[derive(Debug, Clone)]
pub enum Verification {
    /// Accept only a certificate with one of these SHA-256 hashes (of its
    /// DER), as browsers' `serverCertificateHashes` do; for the server's
    /// self-signed certificates (see `/api/webtransport`).
    CertificateHashes(Vec<[u8; 32]>),
    /// Validate against the system's root certificates.
    SystemRoots,
    /// Accept any certificate. Development only: anyone on the path can
    /// impersonate the server.
    InsecureSkipVerification,
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting or opening the session failed.
    #[error("connect: {0}")]
    Connect(#[from] wtransport::error::ConnectingError),
    /// The session is gone.
    #[error("connection: {0}")]
    Connection(#[from] ConnectionError),
    /// Writing to the signaling stream failed.
    #[error("write: {0}")]
    Write(#[from] wtransport::error::StreamWriteError),
    /// A datagram could not be sent.
    #[error("datagram: {0}")]
    Datagram(#[from] wtransport::error::SendDatagramError),
    /// Chat text must be 1 to 1,000 bytes.
    #[error("chat text must be 1 to {MAX_CHAT_LEN} bytes")]
    ChatLength,
    /// The signaling stream could not be opened.
    #[error("open stream: {0}")]
    OpenStream(#[from] wtransport::error::StreamOpeningError),
    /// Opening the local UDP socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Something the server (or the partner, through it) said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A frame on the signaling stream.
    Message(ServerMsg),
    /// A chat from the partner, shown once however often it was resent.
    Chat {
        /// The match it belongs to.
        match_id: u64,
        /// The sender's sequence number.
        seq: u32,
        /// The text.
        text: String,
    },
    /// The partner acknowledged one of our chats.
    ChatAcked {
        /// The match it belongs to.
        match_id: u64,
        /// The acknowledged sequence number.
        seq: u32,
    },
    /// One of our chats was never acknowledged, after every resend.
    ChatLost {
        /// The match it belonged to.
        match_id: u64,
        /// Its sequence number.
        seq: u32,
    },
    /// A datagram that did not decode arrived (the server never sends one).
    BadDatagram(Bytes),
    /// The session is over; no more events follow.
    Closed {
        /// The `Closing` frame the server sent first, if any: its code says
        /// whether to reconnect (3: soon, 4: after a back-off, 1 or 2: not).
        closing: Option<(u32, String)>,
        /// The application close code of the QUIC connection, if it was closed by the server.
        code: Option<u64>,
    },
}

/// Chat reliability settings.
#[derive(Debug, Clone, Copy)]
pub struct ChatOptions {
    /// Resend an unacknowledged chat after this long.
    pub resend_after: Duration,
    /// Give up after this many sends in all.
    pub max_sends: u32,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            resend_after: Duration::from_millis(300),
            max_sends: 5,
        }
    }
}

/// Opens sessions from one local UDP socket; many clients may share it.
pub struct Connector {
    endpoint: Endpoint<endpoint_side::Client>,
    chat: ChatOptions,
}

impl Connector {
    /// A connector that checks certificates as `verification` says.
    pub fn new(verification: Verification) -> Result<Connector, ClientError> {
        let builder = ClientConfig::builder().with_bind_default();
        let builder = match verification {
            Verification::CertificateHashes(hashes) => {
                builder.with_server_certificate_hashes(hashes.into_iter().map(Sha256Digest::new))
            }
            Verification::SystemRoots => builder.with_native_certs(),
            Verification::InsecureSkipVerification => builder.with_no_cert_validation(),
        };
        Ok(Connector {
            endpoint: Endpoint::client(crate::transport::client_config(builder))?,
            chat: ChatOptions::default(),
        })
    }

    /// Uses these chat reliability settings for sessions opened from now on.
    pub fn with_chat_options(mut self, chat: ChatOptions) -> Connector {
        self.chat = chat;
        self
    }

    /// Opens a session at `url` (`https://host:port/signal`) and its
    /// signaling stream.
    pub async fn connect(&self, url: &str) -> Result<Client, ClientError> {
        let connection = self.endpoint.connect(url).await?;
        let (send, recv) = connection.open_bi().await?.await?;
        Ok(Client::start(connection, send, recv, self.chat))
    }
}

#[derive(Debug, Default)]
struct ChatState {
    next_seq: u32,
    /// Our unacknowledged chats: seq → (match, datagram, sends so far, last send).
    unacked: HashMap<u32, (u64, Bytes, u32, Instant)>,
    /// (match, seq) of chats received, to show each once.
    seen: HashSet<(u64, u32)>,
}

/// Most received chats remembered for de-duplication.
const MAX_SEEN: usize = 16_384;

/// One session with a quicmatch server.
pub struct Client {
    connection: Connection,
    send: SendStream,
    events: mpsc::UnboundedReceiver<Event>,
    chat: Arc<Mutex<ChatState>>,
    driver: JoinHandle<()>,
    _endpoint: Option<Endpoint<endpoint_side::Client>>,
}

impl Client {
    /// Connects from a socket of its own; see [`Connector`] to share one.
    pub async fn connect(url: &str, verification: Verification) -> Result<Client, ClientError> {
        let connector = Connector::new(verification)?;
        let mut client = connector.connect(url).await?;
        client._endpoint = Some(connector.endpoint);
        Ok(client)
    }

    fn start(
        connection: Connection,
        send: SendStream,
        recv: RecvStream,
        options: ChatOptions,
    ) -> Client {
        let (tx, events) = mpsc::unbounded_channel();
        let chat = Arc::new(Mutex::new(ChatState::default()));
        let driver = tokio::spawn(drive(connection.clone(), recv, chat.clone(), tx, options));
        Client {
            connection,
            send,
            events,
            chat,
            driver,
            _endpoint: None,
        }
    }

    /// Sends one message on the signaling stream.
    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError> {
        self.send.write_all(&encode_frame(msg)).await?;
        Ok(())
    }

    /// Writes raw bytes to the signaling stream (for testing servers).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.send.write_all(bytes).await?;
        Ok(())
    }

    /// Sends a raw datagram (for testing servers).
    pub fn send_datagram_raw(&self, bytes: &[u8]) -> Result<(), ClientError> {
        self.connection.send_datagram(bytes)?;
        Ok(())
    }

    /// Sends a chat to the partner of match `match_id`; it is resent until
    /// acknowledged (or given up, with [`Event::ChatLost`]). Returns its seq.
    pub fn chat(&self, match_id: u64, text: &str) -> Result<u32, ClientError> {
        if text.is_empty() || text.len() > MAX_CHAT_LEN {
            return Err(ClientError::ChatLength);
        }
        let mut chat = self.chat.lock().unwrap_or_else(|e| e.into_inner());
        let seq = chat.next_seq;
        chat.next_seq = chat.next_seq.wrapping_add(1);
        let datagram = codec::encode(&Datagram::Chat {
            match_id,
            seq,
            text: text.to_owned(),
        });
        self.connection.send_datagram(&datagram)?;
        chat.unacked
            .insert(seq, (match_id, datagram, 1, Instant::now()));
        Ok(seq)
    }

    /// The next event, or `None` once [`Event::Closed`] has been taken.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Largest datagram the path carries now, if datagrams are supported.
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.connection.max_datagram_size()
    }

    /// The underlying WebTransport connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Closes the session with code 0, as a client should. A client with a
    /// socket of its own ([`Client::connect`]) waits (briefly) until the
    /// server has been told; one made by a [`Connector`] returns at once.
    pub async fn close(self) {
        self.connection
            .close(VarInt::from_u32(CloseCode::Normal.code()), b"bye");
        if let Some(endpoint) = &self._endpoint {
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Reads frames and datagrams, acknowledges and de-duplicates chat, resends
/// unacknowledged chat.
async fn drive(
    connection: Connection,
    mut recv: RecvStream,
    chat: Arc<Mutex<ChatState>>,
    events: mpsc::UnboundedSender<Event>,
    options: ChatOptions,
) {
    let mut decoder = FrameDecoder::default();
    let mut closing = None;
    let period = (options.resend_after / 2).max(Duration::from_millis(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stream_open = true;
    loop {
        tokio::select! {
            read = recv.read_buf(decoder.buffer()), if stream_open => {
                if !matches!(read, Ok(n) if n > 0) {
                    stream_open = false;
                }
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => {
                            let Ok(msg) = codec::decode::<ServerMsg>(codec::frame_payload(&frame)) else {
                                continue;
                            };
                            if let ServerMsg::Closing { code, reason } = &msg {
                                closing = Some((*code, reason.clone()));
                            }
                            let _ = events.send(Event::Message(msg));
                        }
                        Ok(None) => break,
                        Err(_) => { stream_open = false; break; }
                    }
                }
            }
            datagram = connection.receive_datagram() => match datagram {
                Ok(datagram) => on_datagram(&connection, &chat, &events, datagram.payload()),
                Err(_) => break,
            },
            _ = tick.tick() => resend(&connection, &chat, &events, options),
        }
    }
    let code = match connection.closed().await {
        ConnectionError::ApplicationClosed(close) => Some(close.code().into_inner()),
        _ => None,
    };
    let _ = events.send(Event::Closed { closing, code });
}

fn on_datagram(
    connection: &Connection,
    chat: &Mutex<ChatState>,
    events: &mpsc::UnboundedSender<Event>,
    payload: Bytes,
) {
    let mut state = chat.lock().unwrap_or_else(|e| e.into_inner());
    match codec::decode::<Datagram>(&payload) {
        Ok(Datagram::Chat {
            match_id,
            seq,
            text,
        }) => {
            let _ = connection.send_datagram(codec::encode(&Datagram::ChatAck { match_id, seq }));
            if state.seen.len() >= MAX_SEEN {
                state.seen.clear();
            }
            if state.seen.insert((match_id, seq)) {
                let _ = events.send(Event::Chat {
                    match_id,
                    seq,
                    text,
                });
            }
        }
        Ok(Datagram::ChatAck { match_id, seq }) => {
            if state.unacked.remove(&seq).is_some() {
                let _ = events.send(Event::ChatAcked { match_id, seq });
            }
        }
        Err(_) => {
            let _ = events.send(Event::BadDatagram(payload));
        }
    }
}

fn resend(
    connection: &Connection,
    chat: &Mutex<ChatState>,
    events: &mpsc::UnboundedSender<Event>,
    options: ChatOptions,
) {
    let mut state = chat.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    state
        .unacked
        .retain(|&seq, (match_id, datagram, sends, last)| {
            if now.duration_since(*last) < options.resend_after {
                return true;
            }
            if *sends >= options.max_sends {
                let _ = events.send(Event::ChatLost {
                    match_id: *match_id,
                    seq,
                });
                return false;
            }
            let _ = connection.send_datagram(&datagram[..]);
            *sends += 1;
            *last = now;
            true
        });
}

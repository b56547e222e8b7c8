//! A plain WebSocket client of the fallback (PROTOCOL section 7), written
//! from the protocol: one tagged unit per binary message.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use quicmatch::codec;
use quicmatch::protocol::{ClientMsg, Datagram, ServerMsg};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::STEP;

/// What the server sent.
#[derive(Debug, PartialEq)]
pub enum Unit {
    /// A `0x00` unit.
    Msg(ServerMsg),
    /// A `0x01` unit.
    Datagram(Datagram),
    /// The close: its status and reason.
    Closed(u16, String),
}

/// One WebSocket session.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server selected, if any.
    pub protocol: Option<String>,
}

/// How to open one.
#[derive(Default, Clone)]
pub struct WsOptions<'a> {
    /// Offer the `quicmatch.v1` subprotocol.
    pub subprotocol: bool,
    /// Send this `Origin`.
    pub origin: Option<&'a str>,
    /// The URL's query, e.g. `token=…`.
    pub query: Option<&'a str>,
}

impl WsClient {
    /// Opens a session on the sidecar at `http`; the HTTP status if refused.
    pub async fn connect(http: SocketAddr, options: WsOptions<'_>) -> Result<WsClient, u16> {
        let mut url = format!("ws://{http}/signal");
        if let Some(query) = options.query {
            url = format!("{url}?{query}");
        }
        let mut request = url.into_client_request().expect("request");
        if options.subprotocol {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("quicmatch.v1"),
            );
        }
        if let Some(origin) = options.origin {
            request
                .headers_mut()
                .insert("origin", HeaderValue::from_str(origin).expect("origin"));
        }
        let connected = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(request))
            .await
            .expect("an answer in time");
        match connected {
            Ok((socket, response)) => Ok(WsClient {
                socket,
                protocol: response
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|p| p.to_str().ok())
                    .map(str::to_owned),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(error) => panic!("WebSocket connect failed: {error}"),
        }
    }

    /// Opens a session with default options, or fails the test.
    pub async fn open(http: SocketAddr) -> WsClient {
        WsClient::connect(http, WsOptions::default())
            .await
            .expect("WebSocket session")
    }

    /// Sends a raw WebSocket message.
    pub async fn send_raw(&mut self, message: Message) {
        self.socket.send(message).await.expect("send");
    }

    /// Sends a tagged unit: `tag`, then `payload`.
    pub async fn send_unit(&mut self, tag: u8, payload: &[u8]) {
        let mut unit = vec![tag];
        unit.extend_from_slice(payload);
        self.send_raw(Message::Binary(Bytes::from(unit))).await;
    }

    /// Sends a `ClientMsg` as a `0x00` unit.
    pub async fn send(&mut self, msg: &ClientMsg) {
        self.send_unit(0x00, &codec::encode(msg)).await;
    }

    /// Sends a datagram as a `0x01` unit.
    pub async fn send_datagram(&mut self, datagram: &Datagram) {
        self.send_unit(0x01, &codec::encode(datagram)).await;
    }

    /// The next unit (pings and pongs skipped), within [`STEP`].
    pub async fn next(&mut self) -> Unit {
        loop {
            let message = tokio::time::timeout(STEP, self.socket.next())
                .await
                .expect("a unit in time");
            match message {
                Some(Ok(Message::Binary(unit))) => {
                    let (tag, payload) = unit.split_first().expect("a tagged unit");
                    return match tag {
                        0x00 => Unit::Msg(codec::decode(payload).expect("a ServerMsg")),
                        0x01 => Unit::Datagram(codec::decode(payload).expect("a Datagram")),
                        other => panic!("unknown tag {other}"),
                    };
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((u16::from(CloseCode::Status), String::new()));
                    return Unit::Closed(code, reason);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
                Some(Err(error)) => panic!("WebSocket error: {error}"),
                None => panic!("the WebSocket ended without a close"),
            }
        }
    }

    /// The next frame unit, or fails the test.
    pub async fn next_msg(&mut self) -> ServerMsg {
        match self.next().await {
            Unit::Msg(msg) => msg,
            other => panic!("expected a frame unit, got {other:?}"),
        }
    }

    /// Units until the close: those before it, and the close.
    pub async fn until_closed(&mut self) -> (Vec<Unit>, (u16, String)) {
        let mut before = Vec::new();
        for _ in 0..10_000 {
            match self.next().await {
                Unit::Closed(code, reason) => return (before, (code, reason)),
                unit => before.push(unit),
            }
        }
        panic!("no close after 10,000 units");
    }

    /// Closes the session normally.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

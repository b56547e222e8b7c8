//! quicmatch: a WebTransport signaling server for random one-to-one video chat.
//!
//! People say who they are, get matched with a stranger of the opposite
//! gender, and their browsers set up a peer-to-peer WebRTC call; the server
//! carries only signaling (offer, answer, ICE candidates) on one WebTransport
//! stream and text chat in datagrams. The wire contract is `docs/protocol.md`.
//!
//! Layout, from the wire inwards:
//! - [`protocol`]: the message types and limits; [`codec`]: their bytes.
//! - [`registry`]: the matching state machine (sans I/O).
//! - [`hub`]: the matching pool plus the sessions' [`peer`] handles, under one lock;
//!   [`cluster`]: the pool shared by several nodes through Redis.
//! - [`session`]: one task per session; [`ratelimit`]: its flood guard;
//!   [`admission`]: who may open one (origins, join tokens);
//!   [`frontdoor`]: what an attempt may cost before it is one (handshake
//!   limits, per-source limits, the memory ceiling).
//! - [`server`]: endpoints, accept loops, shutdown; [`transport`], [`tls`];
//!   [`certs`]: certificate renewal and reload.
//! - [`http`]: the sidecar, which also carries [`websocket`] sessions (the
//!   fallback for browsers and networks without WebTransport); [`metrics`]: its Prometheus page; [`history`]:
//!   the dashboard's last hour; [`config`]:
//!   flags and environment; [`ice`]: STUN/TURN.
//! - [`client`]: a native Rust client.
//! - [`webtransport`]: the server side of WebTransport over HTTP/3,
//!   directly on quinn, which the server's endpoints run on every
//!   connection.
#![warn(missing_docs)]

pub mod admission;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod frontdoor;
pub mod history;
pub mod http;
pub mod hub;
pub mod ice;
pub mod metrics;
pub mod peer;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod server;
pub mod session;
pub mod tls;
pub mod transport;
pub mod web_assets;
pub mod websocket;
pub mod webtransport;

//! quicmatch: a WebTransport signaling server for random one-to-one video chat.
pub mod codec;
pub mod protocol;
pub mod registry;

//! What a session's client sends, whatever carries it: frames and datagrams
//! are checked against the session's rates and the protocol's limits, then
//! turned into pool requests, replies and relays. The WebTransport session
//! and the WebSocket session both feed this; neither has rules of its own.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::debug;

use crate::codec::{self, DecodeError, encode_frame};
use crate::hub::Hub;
use crate::metrics;
use crate::peer::{Outbound, Peer, Routing};
use crate::protocol::{
    ClientMsg, CloseCode, Datagram, ErrorCode, MAX_CHAT_LEN, MAX_ICE_FIELD_LEN, MAX_SDP_LEN,
    ServerMsg,
};
use crate::ratelimit::{FloodGuard, Kind, Verdict};
use crate::registry::RefusedError;

use super::Limits;

/// The first byte of a `Datagram::ChatAck` (its variant index).
const CHAT_ACK_TAG: u8 = 1;

/// One session's input side: its flood guard and limits.
pub struct Input {
    guard: FloodGuard,
    datagram_rate: u32,
}

impl Input {
    /// Input under `limits`, rates counted from now.
    pub fn new(limits: Limits) -> Input {
        Input {
            guard: FloodGuard::new(
                limits.frame_rate,
                limits.datagram_rate,
                std::time::Instant::now(),
            ),
            datagram_rate: limits.datagram_rate,
        }
    }

    /// A whole frame (length prefix and payload) from the client.
    pub async fn frame(&mut self, peer: &Arc<Peer>, hub: &Hub, frame: BytesMut) {
        match self.guard.check(Kind::Frame, std::time::Instant::now()) {
            Verdict::Allow => handle_frame(peer, hub, frame).await,
            verdict => on_limited(peer, verdict, "frame"),
        }
    }

    /// Something that counts as a frame but is not one (over a WebSocket: a
    /// text message, an empty one, an unknown tag): `Error BadFrame`.
    pub fn bad_frame(&mut self, peer: &Peer, why: &'static str) {
        match self.guard.check(Kind::Frame, std::time::Instant::now()) {
            Verdict::Allow => {
                debug!(why, "bad frame");
                reply_error(peer, ErrorCode::BadFrame, why);
            }
            verdict => on_limited(peer, verdict, "frame"),
        }
    }

    /// A datagram's payload from the client.
    pub fn datagram(&mut self, peer: &Peer, payload: Bytes) {
        // Acks the protocol obliges the session to send, for chats
        // delivered to it, do not count against its rate.
        let owed_ack = payload.first() == Some(&CHAT_ACK_TAG) && peer.take_owed_ack();
        let verdict = match owed_ack {
            true => Verdict::Allow,
            false => self.guard.check(Kind::Datagram, std::time::Instant::now()),
        };
        match verdict {
            Verdict::Allow => handle_datagram(peer, payload, self.datagram_rate),
            verdict => on_limited(peer, verdict, "datagram"),
        }
    }
}

/// A `kind` (frame or datagram) over its rate: dropped, or the session closed.
fn on_limited(peer: &Peer, verdict: Verdict, kind: &'static str) {
    if let Verdict::Drop { .. } = verdict {
        metrics::rate_limited(kind);
    }
    match verdict {
        Verdict::Allow | Verdict::Drop { notify: false } => {}
        Verdict::Drop { notify: true } => reply_error(
            peer,
            ErrorCode::RateLimited,
            "rate limit exceeded; message dropped",
        ),
        Verdict::Close => peer.request_close(CloseCode::Abuse, "too many messages"),
    }
}

/// Queues a frame of the server's own for the session.
pub fn reply(peer: &Peer, msg: &ServerMsg) {
    peer.push(Outbound::Frame(encode_frame(msg)));
}

fn reply_error(peer: &Peer, code: ErrorCode, message: &str) {
    metrics::error_sent(code);
    reply(
        peer,
        &ServerMsg::Error {
            code,
            message: message.to_owned(),
        },
    );
}

fn refused(peer: &Peer, error: RefusedError) {
    let code = match error {
        RefusedError::InvalidProfile(_) => ErrorCode::InvalidProfile,
        RefusedError::NotJoined => ErrorCode::NotJoined,
        RefusedError::AlreadyJoined => ErrorCode::AlreadyJoined,
        RefusedError::Unavailable => ErrorCode::ServerBusy,
    };
    reply_error(peer, code, &error.to_string());
}

async fn handle_frame(peer: &Arc<Peer>, hub: &Hub, frame: BytesMut) {
    let msg = match codec::decode::<ClientMsg>(codec::frame_payload(&frame)) {
        Ok(msg) => msg,
        Err(error) => return bad_input(peer, &error),
    };
    let result = match &msg {
        ClientMsg::Join(profile) => {
            metrics::request("join");
            peer.start_waiting();
            hub.join(peer.id(), profile.clone()).await
        }
        ClientMsg::Stop => {
            metrics::request("stop");
            peer.start_waiting();
            hub.stop(peer.id()).await
        }
        ClientMsg::Leave => {
            metrics::request("leave");
            peer.stop_waiting();
            hub.leave(peer.id()).await;
            Ok(())
        }
        ClientMsg::Ping { nonce } => {
            reply(peer, &ServerMsg::Pong { nonce: *nonce });
            Ok(())
        }
        ClientMsg::Offer { match_id, .. }
        | ClientMsg::Answer { match_id, .. }
        | ClientMsg::Ice { match_id, .. } => {
            match over_limit(&msg) {
                Some(why) => reply_error(peer, ErrorCode::TooLarge, why),
                None => relay(peer, &msg, *match_id, &frame).await,
            }
            Ok(())
        }
    };
    if let Err(error) = result {
        refused(peer, error);
    }
}

fn bad_input(peer: &Peer, error: &DecodeError) {
    debug!(%error, "bad frame");
    reply_error(peer, ErrorCode::BadFrame, &error.to_string());
}

/// Which limit of section 4.3 a relay message breaks, if any.
fn over_limit(msg: &ClientMsg) -> Option<&'static str> {
    let over = |s: &str| s.len() > MAX_ICE_FIELD_LEN;
    match msg {
        ClientMsg::Offer { sdp, .. } | ClientMsg::Answer { sdp, .. } if sdp.len() > MAX_SDP_LEN => {
            Some("sdp is over 32768 bytes")
        }
        ClientMsg::Ice { candidate: c, .. }
            if over(&c.candidate)
                || c.sdp_mid.as_deref().is_some_and(over)
                || c.username_fragment.as_deref().is_some_and(over) =>
        {
            Some("an ICE candidate field is over 1024 bytes")
        }
        _ => None,
    }
}

/// Forwards a validated relay message (`msg`, decoded from `frame`) to the
/// partner.
async fn relay(peer: &Peer, msg: &ClientMsg, match_id: u64, frame: &[u8]) {
    match peer.route(match_id) {
        Routing::Deliver(partner) => {
            if let Some(relayed) = codec::server_relay_frame(msg, frame) {
                if let Some(hot) = metrics::hot() {
                    let kind = match msg {
                        ClientMsg::Offer { .. } => 0,
                        ClientMsg::Answer { .. } => 1,
                        _ => 2,
                    };
                    hot.relayed[kind].increment(1);
                }
                partner.relay(peer, match_id, relayed).await;
            }
        }
        Routing::Stale => {}
        Routing::NotMatched => reply_error(peer, ErrorCode::NotMatched, "not matched"),
    }
}

/// Forwards a valid chat datagram to the partner, unchanged; a delivered
/// chat earns the partner the ack it owes (up to `ack_cap` outstanding).
fn handle_datagram(peer: &Peer, payload: Bytes, ack_cap: u32) {
    let datagram = match codec::decode::<Datagram>(&payload) {
        Ok(datagram) => datagram,
        Err(error) => return bad_input(peer, &error),
    };
    if let Datagram::Chat { text, .. } = &datagram {
        if text.is_empty() {
            return reply_error(peer, ErrorCode::BadFrame, "chat text is empty");
        }
        if text.len() > MAX_CHAT_LEN {
            return reply_error(peer, ErrorCode::TooLarge, "chat text is over 1000 bytes");
        }
    }
    match peer.route(datagram.match_id()) {
        Routing::Deliver(partner) => {
            let is_chat = matches!(datagram, Datagram::Chat { .. });
            if let Some(hot) = metrics::hot() {
                hot.chat[usize::from(!is_chat)].increment(1);
            }
            partner.send_datagram(payload, is_chat, ack_cap)
        }
        Routing::Stale => {}
        Routing::NotMatched => reply_error(peer, ErrorCode::NotMatched, "not matched"),
    }
}

//! The messages of the quicmatch signaling protocol, version 1, and its limits.
//!
//! These types *are* the wire contract (`docs/protocol.md`): their field order and
//! variant order define the bytes, so never reorder them. Encoding lives in
//! [`crate::codec`].

use serde::{Deserialize, Serialize};

/// Largest signaling frame payload a peer may send, in bytes.
pub const MAX_FRAME_LEN: usize = 65_536;
/// Largest `sdp` in an `Offer` or `Answer`, in bytes.
pub const MAX_SDP_LEN: usize = 32_768;
/// Largest `candidate`, `sdp_mid` or `username_fragment` of an ICE candidate, in bytes.
pub const MAX_ICE_FIELD_LEN: usize = 1_024;
/// Largest chat `text`, in bytes (it must also be non-empty).
pub const MAX_CHAT_LEN: usize = 1_000;
/// Longest profile name, in characters after trimming.
pub const MAX_NAME_CHARS: usize = 32;
/// Oldest accepted age.
pub const MAX_AGE: u8 = 120;
/// Default youngest accepted age.
pub const DEFAULT_MIN_AGE: u8 = 18;
/// Longest `reason` of a `Closing` message, in bytes.
pub const MAX_CLOSE_REASON_LEN: usize = 200;
/// The URL path of the WebTransport session.
pub const SIGNAL_PATH: &str = "/signal";

/// Which queue a person waits in; matches are always between opposite genders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Gender {
    /// Waits in the male queue, is matched with someone from the female queue.
    Male,
    /// Waits in the female queue, is matched with someone from the male queue.
    Female,
}

impl Gender {
    /// The gender a session of this gender is matched with.
    pub fn opposite(self) -> Gender {
        match self {
            Gender::Male => Gender::Female,
            Gender::Female => Gender::Male,
        }
    }
}

/// Who a person says they are; the only thing their partner learns about them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Display name, 1 to 32 characters after trimming, no control characters.
    pub name: String,
    /// Age in years, from the configured minimum to 120.
    pub age: u8,
    /// Decides the queue and who the person is matched with.
    pub gender: Gender,
}

/// One ICE candidate, mirroring the browser's `RTCIceCandidateInit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    /// The candidate line; empty means end-of-candidates.
    pub candidate: String,
    /// Media stream identification tag.
    pub sdp_mid: Option<String>,
    /// Index of the m-line the candidate belongs to.
    pub sdp_m_line_index: Option<u16>,
    /// ICE username fragment.
    pub username_fragment: Option<String>,
}

/// A STUN or TURN server, mirroring the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs of the server.
    pub urls: Vec<String>,
    /// TURN username (for TURN REST credentials: `expiry:label`).
    pub username: Option<String>,
    /// TURN credential.
    pub credential: Option<String>,
}

/// Why the server refused or dropped a client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// A frame or datagram did not decode.
    BadFrame,
    /// `Join` with a profile that breaks the profile rules.
    InvalidProfile,
    /// The message needs a `Join` first.
    NotJoined,
    /// `Join` while already waiting or matched.
    AlreadyJoined,
    /// Relay or chat while not matched.
    NotMatched,
    /// A field is over its limit.
    TooLarge,
    /// Too many messages; this one was dropped.
    RateLimited,
    /// The server is at capacity or shutting down.
    ServerBusy,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::BadFrame,
        ErrorCode::InvalidProfile,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::NotMatched,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::ServerBusy,
    ];

    /// The code's name, as a metrics label.
    pub fn label(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::InvalidProfile => "invalid_profile",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::NotMatched => "not_matched",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ServerBusy => "server_busy",
        }
    }
}

/// Messages a client sends on the signaling stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// Enter the matching queue with this profile.
    Join(Profile),
    /// WebRTC offer for the current match's partner.
    Offer {
        /// The match the offer belongs to.
        match_id: u64,
        /// Session description.
        sdp: String,
    },
    /// WebRTC answer for the current match's partner.
    Answer {
        /// The match the answer belongs to.
        match_id: u64,
        /// Session description.
        sdp: String,
    },
    /// ICE candidate for the current match's partner.
    Ice {
        /// The match the candidate belongs to.
        match_id: u64,
        /// The candidate.
        candidate: IceCandidate,
    },
    /// End the current match (if any) and find someone new.
    Stop,
    /// End any match, leave the queue, become idle.
    Leave,
    /// Liveness check; answered with `Pong` of the same nonce.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
}

/// Messages the server sends on the signaling stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// The session is queued at this 1-based position.
    Waiting {
        /// 1-based position in the session's gender queue.
        queue_position: u32,
    },
    /// The session has been paired with a partner.
    Matched {
        /// Identifies this match in every later relay and chat message.
        match_id: u64,
        /// The partner's profile, name trimmed.
        partner: Profile,
        /// True for exactly one of the two: that one creates the WebRTC offer.
        initiator: bool,
        /// STUN/TURN servers to use for this call (possibly none).
        ice_servers: Vec<IceServer>,
    },
    /// The partner's WebRTC offer.
    Offer {
        /// The match the offer belongs to.
        match_id: u64,
        /// Session description.
        sdp: String,
    },
    /// The partner's WebRTC answer.
    Answer {
        /// The match the answer belongs to.
        match_id: u64,
        /// Session description.
        sdp: String,
    },
    /// One of the partner's ICE candidates.
    Ice {
        /// The match the candidate belongs to.
        match_id: u64,
        /// The candidate.
        candidate: IceCandidate,
    },
    /// The partner stopped, left or vanished; this match is over.
    PartnerDisconnected {
        /// The match that ended.
        match_id: u64,
    },
    /// A client message was refused or dropped.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// Answer to `Ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// The last frame before the server closes the session with the same code.
    Closing {
        /// The session close code (see [`CloseCode`]).
        code: u32,
        /// A short English phrase.
        reason: String,
    },
}

/// Chat messages, one per WebTransport datagram, in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Datagram {
    /// A line of text for the partner.
    Chat {
        /// The match the chat belongs to.
        match_id: u64,
        /// Sender-chosen sequence number; a resend keeps it.
        seq: u32,
        /// 1 to 1,000 bytes of UTF-8.
        text: String,
    },
    /// Acknowledges the `Chat` of the same `seq`.
    ChatAck {
        /// The match the acknowledged chat belongs to.
        match_id: u64,
        /// The acknowledged chat's sequence number.
        seq: u32,
    },
}

/// Application close codes of a session, as carried by `Closing` and the QUIC close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CloseCode {
    /// Normal close (what a client uses).
    Normal = 0,
    /// The peer broke the protocol (e.g. an impossible frame length); do not reconnect.
    ProtocolViolation = 1,
    /// The peer flooded or stalled; do not reconnect.
    Abuse = 2,
    /// The server is shutting down; reconnect soon.
    ShuttingDown = 3,
    /// The server is full; back off before reconnecting.
    AtCapacity = 4,
}

impl CloseCode {
    /// Every code.
    pub const ALL: [CloseCode; 5] = [
        CloseCode::Normal,
        CloseCode::ProtocolViolation,
        CloseCode::Abuse,
        CloseCode::ShuttingDown,
        CloseCode::AtCapacity,
    ];

    /// The numeric code on the wire.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The code's name, as a metrics label.
    pub fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::ProtocolViolation => "protocol_violation",
            CloseCode::Abuse => "abuse",
            CloseCode::ShuttingDown => "shutting_down",
            CloseCode::AtCapacity => "at_capacity",
        }
    }

    /// The code for a number, if it is one of the five defined codes.
    pub fn from_code(code: u32) -> Option<CloseCode> {
        Some(match code {
            0 => CloseCode::Normal,
            1 => CloseCode::ProtocolViolation,
            2 => CloseCode::Abuse,
            3 => CloseCode::ShuttingDown,
            4 => CloseCode::AtCapacity,
            _ => return None,
        })
    }
}

impl ClientMsg {
    /// What the partner receives for this relay message (`Offer`, `Answer`
    /// or `Ice`): the `ServerMsg` of the same name and content. `None` for
    /// messages that are not relayed.
    pub fn into_relayed(self) -> Option<ServerMsg> {
        Some(match self {
            ClientMsg::Offer { match_id, sdp } => ServerMsg::Offer { match_id, sdp },
            ClientMsg::Answer { match_id, sdp } => ServerMsg::Answer { match_id, sdp },
            ClientMsg::Ice {
                match_id,
                candidate,
            } => ServerMsg::Ice {
                match_id,
                candidate,
            },
            _ => return None,
        })
    }
}

impl Datagram {
    /// The match the datagram belongs to.
    pub fn match_id(&self) -> u64 {
        match self {
            Datagram::Chat { match_id, .. } | Datagram::ChatAck { match_id, .. } => *match_id,
        }
    }
}

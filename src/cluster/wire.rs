//! The units nodes of a pool send each other through their Redis inboxes,
//! and their bytes. Sans I/O.
//!
//! A message on a node's inbox channel holds one or more units, each as
//! `<length>:<unit>` (the length in decimal bytes). A unit is a letter, then
//! space-separated fields; the last field of `M`, `R` and `G` is raw bytes and
//! runs to the unit's end. The matching script (`pool.lua`) writes `W`, `M`,
//! `D` and `L`; nodes write `R`, `G`, `C` and `X` to each other.

use bytes::{BufMut, Bytes, BytesMut};

use crate::registry::SessionId;

/// One unit addressed to a session of the receiving node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// The session waits at `position` in its queue.
    Waiting {
        /// The receiving node's session.
        session: SessionId,
        /// 1-based queue position.
        position: u32,
    },
    /// The session was matched with `partner` (a pool member, `node:session`).
    Matched {
        /// The receiving node's session.
        session: SessionId,
        /// The partner's pool member name.
        partner: String,
        /// The fresh match id.
        match_id: u64,
        /// Whether the session creates the WebRTC offer.
        initiator: bool,
        /// The partner's profile, as the codec encodes it.
        profile: Bytes,
    },
    /// The session's partner left match `match_id`.
    PartnerDisconnected {
        /// The receiving node's session.
        session: SessionId,
        /// The match that ended.
        match_id: u64,
    },
    /// The session itself ended match `match_id`.
    MatchLeft {
        /// The receiving node's session.
        session: SessionId,
        /// The match that ended.
        match_id: u64,
    },
    /// A signaling frame from the session's partner, already encoded as the
    /// server's frame.
    Relay {
        /// The receiving node's session.
        session: SessionId,
        /// The match the frame belongs to.
        match_id: u64,
        /// The frame to write.
        frame: Bytes,
    },
    /// A chat datagram from the session's partner, unchanged.
    Datagram {
        /// The receiving node's session.
        session: SessionId,
        /// The match the datagram belongs to.
        match_id: u64,
        /// The datagram's bytes.
        payload: Bytes,
    },
    /// The partner's node wrote `bytes` of this session's relays out: it may
    /// send that much more.
    Credit {
        /// The receiving node's session (the sender of the relays).
        session: SessionId,
        /// The match the credit belongs to.
        match_id: u64,
        /// Bytes returned to the window.
        bytes: usize,
    },
    /// The session's relays found its partner not reading for too long: the
    /// session is to be closed as not reading.
    Stalled {
        /// The receiving node's session (the one not reading).
        session: SessionId,
        /// The match whose relays stalled.
        match_id: u64,
    },
}

/// The unit could not be read; the message it came in is dropped from there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed inbox unit")]
pub struct Malformed;

impl Unit {
    /// Appends this unit, framed, to `out`.
    pub fn write(&self, out: &mut BytesMut) {
        let (head, tail): (String, &[u8]) = match self {
            Unit::Waiting { session, position } => (format!("W {session} {position}"), &[]),
            Unit::Matched {
                session,
                partner,
                match_id,
                initiator,
                profile,
            } => (
                format!("M {session} {partner} {match_id} {} ", u8::from(*initiator)),
                profile,
            ),
            Unit::PartnerDisconnected { session, match_id } => {
                (format!("D {session} {match_id}"), &[])
            }
            Unit::MatchLeft { session, match_id } => (format!("L {session} {match_id}"), &[]),
            Unit::Relay {
                session,
                match_id,
                frame,
            } => (format!("R {session} {match_id} "), frame),
            Unit::Datagram {
                session,
                match_id,
                payload,
            } => (format!("G {session} {match_id} "), payload),
            Unit::Credit {
                session,
                match_id,
                bytes,
            } => (format!("C {session} {match_id} {bytes}"), &[]),
            Unit::Stalled { session, match_id } => (format!("X {session} {match_id}"), &[]),
        };
        let len = head.len() + tail.len();
        out.put_slice(len.to_string().as_bytes());
        out.put_u8(b':');
        out.put_slice(head.as_bytes());
        out.put_slice(tail);
    }

    /// The unit's target session on the receiving node.
    pub fn session(&self) -> SessionId {
        match self {
            Unit::Waiting { session, .. }
            | Unit::Matched { session, .. }
            | Unit::PartnerDisconnected { session, .. }
            | Unit::MatchLeft { session, .. }
            | Unit::Relay { session, .. }
            | Unit::Datagram { session, .. }
            | Unit::Credit { session, .. }
            | Unit::Stalled { session, .. } => *session,
        }
    }

    /// Reads one unit's body (without its length prefix).
    fn parse(body: &Bytes) -> Result<Unit, Malformed> {
        let mut fields = Fields { body, at: 0 };
        let kind = fields.word()?;
        let session = fields.number()?;
        let unit = match kind {
            b"W" => Unit::Waiting {
                session,
                position: u32::try_from(fields.number()?).map_err(|_| Malformed)?,
            },
            b"M" => {
                let partner = std::str::from_utf8(fields.word()?).map_err(|_| Malformed)?;
                Unit::Matched {
                    session,
                    partner: partner.to_owned(),
                    match_id: fields.number()?,
                    initiator: fields.number()? == 1,
                    profile: fields.rest(),
                }
            }
            b"D" => Unit::PartnerDisconnected {
                session,
                match_id: fields.number()?,
            },
            b"L" => Unit::MatchLeft {
                session,
                match_id: fields.number()?,
            },
            b"R" => Unit::Relay {
                session,
                match_id: fields.number()?,
                frame: fields.rest(),
            },
            b"G" => Unit::Datagram {
                session,
                match_id: fields.number()?,
                payload: fields.rest(),
            },
            b"C" => Unit::Credit {
                session,
                match_id: fields.number()?,
                bytes: usize::try_from(fields.number()?).map_err(|_| Malformed)?,
            },
            b"X" => Unit::Stalled {
                session,
                match_id: fields.number()?,
            },
            _ => return Err(Malformed),
        };
        Ok(unit)
    }
}

/// Splits an inbox message into its units; stops at the first malformed one.
pub fn read_units(message: &Bytes) -> (Vec<Unit>, Option<Malformed>) {
    let mut units = Vec::new();
    let mut at = 0;
    while at < message.len() {
        let Some(colon) = message[at..].iter().position(|&b| b == b':') else {
            return (units, Some(Malformed));
        };
        let len = std::str::from_utf8(&message[at..at + colon])
            .ok()
            .and_then(|s| s.parse::<usize>().ok());
        let start = at + colon + 1;
        let Some(end) = len.and_then(|len| start.checked_add(len)) else {
            return (units, Some(Malformed));
        };
        if end > message.len() {
            return (units, Some(Malformed));
        }
        match Unit::parse(&message.slice(start..end)) {
            Ok(unit) => units.push(unit),
            Err(bad) => return (units, Some(bad)),
        }
        at = end;
    }
    (units, None)
}

/// A cursor over a unit's space-separated fields.
struct Fields<'a> {
    body: &'a Bytes,
    at: usize,
}

impl<'a> Fields<'a> {
    fn word(&mut self) -> Result<&'a [u8], Malformed> {
        let rest = self.body.get(self.at..).ok_or(Malformed)?;
        let len = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        if len == 0 {
            return Err(Malformed);
        }
        self.at += len + 1;
        Ok(&rest[..len])
    }

    fn number(&mut self) -> Result<u64, Malformed> {
        let word = self.word()?;
        std::str::from_utf8(word)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(Malformed)
    }

    fn rest(&mut self) -> Bytes {
        let start = self.at.min(self.body.len());
        self.at = self.body.len();
        self.body.slice(start..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(units: &[Unit]) {
        let mut out = BytesMut::new();
        for unit in units {
            unit.write(&mut out);
        }
        let (read, error) = read_units(&out.freeze());
        assert_eq!(error, None);
        assert_eq!(read, units);
    }

    #[test]
    fn every_unit_round_trips() {
        round_trip(&[
            Unit::Waiting {
                session: 7,
                position: 3,
            },
            Unit::Matched {
                session: 7,
                partner: "00ff:9".into(),
                match_id: 42,
                initiator: true,
                profile: Bytes::from_static(b"\x00 :\n binary"),
            },
            Unit::PartnerDisconnected {
                session: 1,
                match_id: 2,
            },
            Unit::MatchLeft {
                session: 1,
                match_id: 2,
            },
            Unit::Relay {
                session: 5,
                match_id: 6,
                frame: Bytes::from_static(b"12:  x"),
            },
            Unit::Datagram {
                session: 5,
                match_id: 6,
                payload: Bytes::new(),
            },
            Unit::Credit {
                session: 3,
                match_id: 4,
                bytes: 65_536,
            },
            Unit::Stalled {
                session: 3,
                match_id: 4,
            },
        ]);
    }

    #[test]
    fn reads_what_the_script_writes() {
        // pool.lua builds units with `#unit .. ':' .. unit`.
        let message = Bytes::from_static(b"5:W 1 220:M 2 ab:1 9 0 \x01\x02D 3 4");
        let (units, error) = read_units(&message);
        assert_eq!(error, None);
        assert_eq!(
            units[0],
            Unit::Waiting {
                session: 1,
                position: 2
            }
        );
        assert_eq!(
            units[1],
            Unit::Matched {
                session: 2,
                partner: "ab:1".into(),
                match_id: 9,
                initiator: false,
                profile: Bytes::from_static(b"\x01\x02D 3 4")
            }
        );
    }

    #[test]
    fn malformed_input_is_refused_not_panicked_on() {
        for bad in [
            &b"9:W 1"[..],
            b"x:W 1 2",
            b"3:Q 1",
            b"4:W  1",
            b"99999999999999999999999:W",
            b"5:W 1 x",
            b":",
            b"1:W",
        ] {
            let (_, error) = read_units(&Bytes::copy_from_slice(bad));
            assert_eq!(error, Some(Malformed), "{bad:?}");
        }
    }
}

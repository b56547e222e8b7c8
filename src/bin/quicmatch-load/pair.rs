//! A matched pair, as the relay and chat scenarios drive it: the stamped
//! payloads its initiator sends, and the final check that nothing more
//! arrives afterwards.

use std::sync::Arc;
use std::time::Duration;

use quicmatch::protocol::ServerMsg;

use crate::session::Session;
use crate::shared::Shared;

/// A matched pair the scenario runs on.
pub struct Pair {
    /// Its number, from 0, carried in every payload.
    pub id: usize,
    /// The match the server made of it.
    pub match_id: u64,
    /// Whether its sessions are on different nodes of a pool.
    pub cross_node: bool,
    /// The session that sends.
    pub initiator: Session,
    /// The session that receives.
    pub responder: Session,
}

/// What a pair task hands back.
pub struct PairOutcome {
    /// Initiator and responder, to close at teardown.
    pub sessions: [Session; 2],
    /// One-way latencies of the messages delivered, in ns.
    pub latencies: Vec<u64>,
    /// Whether the pair's sessions are on different nodes.
    pub cross_node: bool,
}

/// The sdp or chat text of message `seq` of pair `pair`, padded to `len`:
/// it carries everything needed to check where it went and when it left.
pub fn payload(pair: usize, seq: u32, match_id: u64, sent_ns: u64, len: usize) -> String {
    let mut text = format!("p={pair} s={seq} m={match_id} t={sent_ns} ");
    if text.len() < len {
        text.extend(std::iter::repeat_n('a', len - text.len()));
    }
    text
}

/// What a payload says about itself.
#[derive(Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The pair that sent it.
    pub pair: usize,
    /// Its sequence number within the pair.
    pub seq: u32,
    /// The match it was sent in.
    pub match_id: u64,
    /// When it was sent, in ns since the run's epoch.
    pub sent_ns: u64,
}

/// Reads the stamp at the start of a [`payload`]; `None` if it has none.
pub fn parse_payload(text: &str) -> Option<Stamp> {
    let mut fields = text.split(' ');
    let mut field = |key: &str| fields.next()?.strip_prefix(key).map(str::to_owned);
    Some(Stamp {
        pair: field("p=")?.parse().ok()?,
        seq: field("s=")?.parse().ok()?,
        match_id: field("m=")?.parse().ok()?,
        sent_ns: field("t=")?.parse().ok()?,
    })
}

/// Pings both sessions of a pair: any frame still on the way to them (an
/// extra offer, an error) is counted before the pair is done.
pub async fn finish_pair(mut pair: Pair, shared: Arc<Shared>, latencies: Vec<u64>) -> PairOutcome {
    let id = pair.id;
    let wait = Duration::from_millis(shared.args.message_timeout_ms);
    for (role, session) in [
        ("initiator", &mut pair.initiator),
        ("responder", &mut pair.responder),
    ] {
        let nonce = (1 << 40) | u64::from(session.index);
        let who = format!("pair {id} {role}");
        session
            .final_ping(nonce, wait, &who, &shared, |msg| match msg {
                ServerMsg::Offer { .. } => shared.misrouted(format!("{who}: an extra offer")),
                ServerMsg::Error { code, message } => {
                    shared.error(format!("{who}: Error {code:?}: {message}"))
                }
                other => shared.error(format!("{who}: unexpected {other:?}")),
            })
            .await;
    }
    PairOutcome {
        sessions: [pair.initiator, pair.responder],
        latencies,
        cross_node: pair.cross_node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_pads() {
        let text = payload(12, 34, 56, 789, 200);
        assert_eq!(text.len(), 200);
        assert_eq!(
            parse_payload(&text),
            Some(Stamp {
                pair: 12,
                seq: 34,
                match_id: 56,
                sent_ns: 789
            })
        );
        assert_eq!(parse_payload("p=1 s=x m=1 t=1 "), None);
    }
}

//! The chat scenario: every initiator sends chat datagrams to its partner,
//! one at a time, and the partner acknowledges each as a real client does.
//! Datagrams may be lost: a chat not there in time is given up on (and
//! counted as lost unless it turns up later), never resent.

use std::sync::Arc;
use std::time::Duration;

use quicmatch::codec;
use quicmatch::protocol::Datagram;
use quicmatch::webtransport::ClientSession;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::pacer::{Pacer, stagger};
use crate::pair::{Pair, PairOutcome, finish_pair, parse_payload, payload};
use crate::shared::{Counters, Shared};

/// Chat scenario for one pair: datagrams one at a time, each waited for at
/// most `--chat-timeout-ms`; the receiver acknowledges each.
pub async fn chat_pair(pair: Pair, shared: Arc<Shared>, start: Instant) -> PairOutcome {
    let args = &shared.args;
    let (id, match_id, total) = (pair.id, pair.match_id, args.messages);
    let (initiator, responder) = (&pair.initiator.connection, &pair.responder.connection);
    let mut inbox = Inbox::new(id, match_id, total);
    let mut pacer = Pacer::new(args.datagram_rate);
    pacer.not_before(stagger(start, id, args.pairs as usize, args.datagram_rate));
    let wait = Duration::from_millis(args.chat_timeout_ms);
    let mut broken = None;
    let mut last_sent = 0u32;
    let mut send_seq = 0u32;
    let mut deadline = Instant::now();
    // Sends message `send_seq` whenever the previous one has arrived or timed
    // out; after the last, waits once more for stragglers.
    loop {
        let done_waiting = match send_seq.checked_sub(1) {
            None => true,
            Some(seq) => inbox.has(seq) || Instant::now() >= deadline,
        };
        if done_waiting {
            if send_seq == total {
                break;
            }
            pacer.ready().await;
            let text = payload(
                id,
                send_seq,
                match_id,
                shared.since_epoch_ns(),
                args.chat_bytes,
            );
            let bytes = codec::encode(&Datagram::Chat {
                match_id,
                seq: send_seq,
                text,
            });
            if let Err(error) = initiator.send_datagram(&bytes) {
                broken = Some(format!("send datagram: {error}"));
                break;
            }
            last_sent = send_seq;
            send_seq += 1;
            deadline = Instant::now() + wait;
            continue;
        }
        tokio::select! {
            datagram = responder.read_datagram() => match datagram {
                Ok(d) => inbox.on_datagram(&d, responder, last_sent, false, &shared),
                Err(error) => { broken = Some(format!("responder: {error}")); break; }
            },
            datagram = initiator.read_datagram() => match datagram {
                Ok(d) => on_ack(&d, id, match_id, last_sent, &shared),
                Err(error) => { broken = Some(format!("initiator: {error}")); break; }
            },
            _ = sleep_until(deadline) => {}
        }
    }
    // Stragglers: wait up to one more timeout for chats still on the way.
    if broken.is_none() && inbox.count < total {
        let deadline = Instant::now() + wait;
        while inbox.count < total {
            let Ok(Ok(datagram)) = timeout_at(deadline, responder.read_datagram()).await else {
                break;
            };
            inbox.on_datagram(&datagram, responder, last_sent, true, &shared);
        }
    }
    let lost = u64::from(total - inbox.count);
    Counters::add(&shared.counters.lost, lost);
    if let Some(why) = broken {
        shared.error(format!(
            "pair {id}: chat broken off after {send_seq} sends: {why}"
        ));
    }
    finish_pair(pair, shared, inbox.latencies).await
}

/// The responder's side of a chat pair: which chats arrived, and how long
/// each took.
struct Inbox {
    /// The pair's number.
    id: usize,
    /// The pair's match.
    match_id: u64,
    /// Whether chat `seq` has arrived, by `seq`.
    received: Vec<bool>,
    /// How many chats have arrived.
    count: u32,
    /// One-way latencies of the chats that arrived, in ns.
    latencies: Vec<u64>,
}

impl Inbox {
    /// An empty inbox for `total` chats of pair `id` in match `match_id`.
    fn new(id: usize, match_id: u64, total: u32) -> Inbox {
        Inbox {
            id,
            match_id,
            received: vec![false; total as usize],
            count: 0,
            latencies: Vec::with_capacity(total as usize),
        }
    }

    /// Whether chat `seq` has arrived.
    fn has(&self, seq: u32) -> bool {
        self.received[seq as usize]
    }

    /// Takes one datagram that reached the responder: acknowledges a chat
    /// (on `responder`) as a real client does, and records it if it is this
    /// pair's chat `seq <= last_sent`, arrived once. It is late if the sender
    /// had stopped waiting for it: `seq < last_sent`, or any once `straggler`
    /// (the sender has sent its last and waits only for stragglers).
    fn on_datagram(
        &mut self,
        payload: &[u8],
        responder: &ClientSession,
        last_sent: u32,
        straggler: bool,
        shared: &Shared,
    ) {
        let (id, match_id) = (self.id, self.match_id);
        let got_ns = shared.since_epoch_ns();
        let (m, seq, text) = match codec::decode::<Datagram>(payload) {
            Ok(Datagram::Chat {
                match_id: m,
                seq,
                text,
            }) => (m, seq, text),
            Ok(other) => {
                return shared.misrouted(format!(
                    "pair {id} responder: unexpected datagram {other:?}"
                ));
            }
            Err(error) => {
                return shared.error(format!("pair {id} responder: bad datagram: {error}"));
            }
        };
        let _ = responder.send_datagram(&codec::encode(&Datagram::ChatAck { match_id: m, seq }));
        match parse_payload(&text) {
            Some(stamp)
                if stamp.pair == id
                    && stamp.match_id == match_id
                    && m == match_id
                    && stamp.seq == seq
                    && seq <= last_sent =>
            {
                if self.received[seq as usize] {
                    return shared.misrouted(format!("pair {id}: chat {seq} delivered twice"));
                }
                self.received[seq as usize] = true;
                self.count += 1;
                self.latencies.push(got_ns.saturating_sub(stamp.sent_ns));
                Counters::add(&shared.counters.delivered, 1);
                if straggler || seq < last_sent {
                    Counters::add(&shared.counters.late, 1);
                }
            }
            other => shared.misrouted(format!(
                "pair {id}: chat {other:?} (match {m}, seq {seq}) is not ours"
            )),
        }
    }
}

/// Takes one datagram that reached the initiator of pair `id`: it must
/// acknowledge one of the chats sent so far.
fn on_ack(payload: &[u8], id: usize, match_id: u64, last_sent: u32, shared: &Shared) {
    match codec::decode::<Datagram>(payload) {
        Ok(Datagram::ChatAck { match_id: m, seq }) if m == match_id && seq <= last_sent => {
            Counters::add(&shared.counters.acks, 1);
        }
        Ok(other) => shared.misrouted(format!(
            "pair {id} initiator: unexpected datagram {other:?}"
        )),
        Err(error) => shared.error(format!("pair {id} initiator: bad datagram: {error}")),
    }
}

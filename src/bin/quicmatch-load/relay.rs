//! The relay scenario: every initiator sends offers to its partner, one at a
//! time, and each is checked and timed on arrival. Relayed frames must never
//! be lost.

use std::sync::Arc;
use std::time::Duration;

use quicmatch::protocol::{ClientMsg, ServerMsg};
use tokio::time::{Instant, timeout_at};

use crate::pacer::stagger;
use crate::pair::{Pair, PairOutcome, finish_pair, parse_payload, payload};
use crate::shared::{Counters, Shared};

/// Relay scenario for one pair: offers one at a time, each checked on arrival.
pub async fn relay_pair(mut pair: Pair, shared: Arc<Shared>, start: Instant) -> PairOutcome {
    let args = &shared.args;
    let (id, match_id, total) = (pair.id, pair.match_id, args.messages);
    let mut latencies = Vec::with_capacity(total as usize);
    pair.initiator
        .frames
        .not_before(stagger(start, id, args.pairs as usize, args.frame_rate));
    let wait = Duration::from_millis(args.message_timeout_ms);
    let mut failed = None;
    'messages: for seq in 0..total {
        // Pace first: the timestamp is taken when the offer really leaves.
        pair.initiator.frames.ready().await;
        let sdp = payload(
            id,
            seq,
            match_id,
            shared.since_epoch_ns(),
            args.payload_bytes,
        );
        if let Err(error) = pair
            .initiator
            .send_now(&ClientMsg::Offer { match_id, sdp })
            .await
        {
            failed = Some((seq, format!("{error:#}")));
            break;
        }
        let deadline = Instant::now() + wait;
        loop {
            let msg = match timeout_at(deadline, pair.responder.next_msg()).await {
                Ok(Ok(msg)) => msg,
                Ok(Err(error)) => {
                    failed = Some((seq, format!("{error:#}")));
                    break 'messages;
                }
                Err(_) => {
                    failed = Some((seq, format!("offer {seq} not delivered within {wait:?}")));
                    break 'messages;
                }
            };
            let got_ns = shared.since_epoch_ns();
            match msg {
                ServerMsg::Offer { match_id: m, sdp } => {
                    match parse_payload(&sdp) {
                        Some(stamp)
                            if stamp.pair == id
                                && stamp.seq == seq
                                && stamp.match_id == match_id
                                && m == match_id
                                && sdp.len() >= args.payload_bytes =>
                        {
                            latencies.push(got_ns.saturating_sub(stamp.sent_ns));
                            Counters::add(&shared.counters.delivered, 1);
                            break;
                        }
                        other => shared.misrouted(format!(
                            "pair {id}: expected offer {seq} of match {match_id}, got {other:?} (match {m})"
                        )),
                    }
                }
                ServerMsg::Error { code, message } => {
                    shared.error(format!("pair {id} responder: Error {code:?}: {message}"))
                }
                other => shared.error(format!("pair {id} responder: unexpected {other:?}")),
            }
        }
    }
    if let Some((seq, why)) = failed {
        let lost = u64::from(total - seq);
        Counters::add(&shared.counters.lost, lost);
        shared.fail(format!(
            "pair {id}: {lost} offers lost from offer {seq}: {why}"
        ));
    }
    finish_pair(pair, shared, latencies).await
}

//! What a session's writer takes off its queue, whatever carries it: the
//! bookkeeping both writers share (relays of an ended match dropped, match
//! changes logged and timed, relay times recorded once written).

use bytes::Bytes;
use tracing::debug;

use crate::metrics;
use crate::peer::{Outbound, Peer};

/// One unit to write.
pub enum Unit {
    /// A whole frame (length prefix and payload).
    Frame(Bytes),
    /// A datagram (queued only for a WebSocket session).
    Datagram(Bytes),
}

/// A writer's view of its queue.
#[derive(Default)]
pub struct Drain {
    /// The match whose relays are current.
    current_match: Option<u64>,
    /// When each relay taken since the last write was queued.
    relay_times: Vec<std::time::Instant>,
}

impl Drain {
    /// Takes `item` (just received from the queue) and says what to write,
    /// if anything.
    pub fn take(&mut self, peer: &Peer, item: Outbound) -> Option<Unit> {
        peer.dequeued(&item);
        match item {
            Outbound::Frame(frame) => Some(Unit::Frame(frame)),
            // Relays of an ended match are dropped here, in order.
            Outbound::Relay {
                match_id,
                frame,
                at,
                ..
            } if self.current_match == Some(match_id) => {
                self.relay_times.push(at);
                Some(Unit::Frame(frame))
            }
            Outbound::Relay { .. } => None,
            Outbound::Datagram(payload) => Some(Unit::Datagram(payload)),
            Outbound::MatchChanged(id) => {
                match id {
                    Some(match_id) => {
                        // Named in the line, not recorded on the session span
                        // (whose fields are set once: see `session::serve`).
                        debug!(match_id, "matched");
                        metrics::matched(peer.take_wait());
                    }
                    None => debug!(match_id = self.current_match, "match ended"),
                }
                self.current_match = id;
                None
            }
        }
    }

    /// What was taken has been written: the relays' times are recorded.
    pub fn written(&mut self) {
        if let Some(hot) = metrics::hot() {
            let written = std::time::Instant::now();
            for at in self.relay_times.drain(..) {
                hot.relay_seconds
                    .record(written.saturating_duration_since(at).as_secs_f64());
            }
        }
        self.relay_times.clear();
    }
}

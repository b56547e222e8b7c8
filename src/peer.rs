//! The handle through which anything reaches a session: its bounded outbound
//! queue, its datagram channel, its current route and its close signal.
//!
//! Relaying takes only the sender's own route lock and pushes to the partner's
//! queue: there is no global lock on the per-message path.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::protocol::CloseCode;
use crate::registry::SessionId;

/// One item of a session's outbound queue, written in order by its writer.
#[derive(Debug)]
pub enum Outbound {
    /// An encoded frame to write as is.
    Frame(Bytes),
    /// A relayed frame, written only while `match_id` is the session's
    /// current match (a late relay of an ended match is dropped).
    Relay {
        /// The match the frame belongs to.
        match_id: u64,
        /// The encoded frame.
        frame: Bytes,
    },
    /// From here on, relays of this match (or of none) are current.
    MatchChanged(Option<u64>),
}

/// What a queued item is charged beyond its bytes (channel slot, `Bytes`
/// header), so that many tiny items cannot outgrow the byte limits.
pub const ITEM_OVERHEAD: usize = 64;

/// The partner's queue had no room for a relay, and made none in time: the
/// partner is not reading its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayStalled;

/// Where a matched session's relays go.
#[derive(Debug, Clone)]
pub struct Route {
    /// The current match.
    pub match_id: u64,
    /// The partner (weak: a route never keeps an ended session alive).
    pub partner: Weak<Peer>,
}

/// What the session's own reader needs to judge a relay or chat message.
#[derive(Debug, Default)]
struct RouteSlot {
    current: Option<Route>,
    /// The match that ended last, whose late messages are dropped silently.
    last_ended: Option<u64>,
}

/// How a relay or chat message with some `match_id` is to be treated.
#[derive(Debug)]
pub enum Routing {
    /// Deliver to this partner.
    Deliver(Arc<Peer>),
    /// A late message of an ended match: drop silently.
    Stale,
    /// The session is not matched: answer `Error NotMatched`.
    NotMatched,
}

/// The shared half of a session.
///
/// Its outbound queue has two budgets. Frames the server itself sends count
/// against `queue_limit`: overflowing it means the session is not reading.
/// Relayed frames count against half of that, separately, and a full relay
/// budget pushes back on the *sender*, who waits for room: a partner that
/// floods a session only slows itself down, and only a session that makes no
/// room at all for a while is judged not to be reading.
#[derive(Debug)]
pub struct Peer {
    id: SessionId,
    connection: wtransport::Connection,
    outbound: mpsc::UnboundedSender<Outbound>,
    queued_bytes: AtomicUsize,
    relay_bytes: AtomicUsize,
    /// Woken whenever the writer takes relays off the queue.
    relay_room: Notify,
    queue_limit: usize,
    /// `ChatAck`s this session owes for chats delivered to it; acks within
    /// it are not charged to its datagram rate.
    ack_credit: AtomicU32,
    route: Mutex<RouteSlot>,
    close: OnceLock<(CloseCode, &'static str)>,
    closing: CancellationToken,
}

impl Peer {
    /// A peer for session `id`, and the receiving end of its outbound queue.
    pub fn new(
        id: SessionId,
        connection: wtransport::Connection,
        queue_limit: usize,
    ) -> (Arc<Peer>, mpsc::UnboundedReceiver<Outbound>) {
        let (outbound, rx) = mpsc::unbounded_channel();
        let peer = Peer {
            id,
            connection,
            outbound,
            queued_bytes: AtomicUsize::new(0),
            relay_bytes: AtomicUsize::new(0),
            relay_room: Notify::new(),
            queue_limit,
            ack_credit: AtomicU32::new(0),
            route: Mutex::new(RouteSlot::default()),
            close: OnceLock::new(),
            closing: CancellationToken::new(),
        };
        (Arc::new(peer), rx)
    }

    /// The session's registry id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The session's WebTransport connection.
    pub fn connection(&self) -> &wtransport::Connection {
        &self.connection
    }

    /// The budget `item` is charged to: its counter, its cost and its limit.
    fn budget(&self, item: &Outbound) -> (&AtomicUsize, usize, usize) {
        match item {
            Outbound::Frame(frame) => (
                &self.queued_bytes,
                frame.len() + ITEM_OVERHEAD,
                self.queue_limit,
            ),
            Outbound::Relay { frame, .. } => (
                &self.relay_bytes,
                frame.len() + ITEM_OVERHEAD,
                self.queue_limit / 2,
            ),
            Outbound::MatchChanged(_) => (&self.queued_bytes, ITEM_OVERHEAD, self.queue_limit),
        }
    }

    /// Queues `item` if its budget has room; gives it back if not.
    fn try_enqueue(&self, item: Outbound) -> Result<(), Outbound> {
        let (counter, cost, limit) = self.budget(&item);
        if counter.fetch_add(cost, Ordering::Relaxed) + cost > limit {
            counter.fetch_sub(cost, Ordering::Relaxed);
            return Err(item);
        }
        if self.outbound.send(item).is_err() {
            // The writer is gone; the session is ending anyway.
            counter.fetch_sub(cost, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Queues a frame or route change of the server's own for the session's
    /// writer. A session whose queue is over its byte limit is not reading:
    /// it is closed (code 2) instead.
    pub fn push(&self, item: Outbound) {
        if self.try_enqueue(item).is_err() {
            self.request_close(CloseCode::Abuse, "not reading the signaling stream");
        }
    }

    /// Queues a frame relayed from the partner of match `match_id` if the
    /// relay budget has room; gives the item back if it has not (then see
    /// [`Peer::push_relay_when_room`]).
    pub fn try_push_relay(&self, match_id: u64, frame: Bytes) -> Result<(), Outbound> {
        self.try_enqueue(Outbound::Relay { match_id, frame })
    }

    /// Queues a relay that found the budget full, once the writer makes room;
    /// gives up at `deadline` if it makes none by then.
    pub async fn push_relay_when_room(
        &self,
        mut item: Outbound,
        deadline: Instant,
    ) -> Result<(), RelayStalled> {
        loop {
            let room = self.relay_room.notified();
            tokio::pin!(room);
            // Registered before the check, so no wake-up is missed.
            room.as_mut().enable();
            match self.try_enqueue(item) {
                Ok(()) => return Ok(()),
                Err(back) => item = back,
            }
            if self.is_closing() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(RelayStalled);
            }
        }
    }

    /// The writer has taken `item` off the queue (written or dropped it).
    pub fn dequeued(&self, item: &Outbound) {
        let (counter, cost, _) = self.budget(item);
        counter.fetch_sub(cost, Ordering::Relaxed);
        if matches!(item, Outbound::Relay { .. }) {
            self.relay_room.notify_waiters();
        }
    }

    /// A chat was delivered to this session: it may answer it with a
    /// `ChatAck` free of its datagram rate (credit capped at `cap`).
    pub fn owe_ack(&self, cap: u32) {
        let _ = self
            .ack_credit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                (c < cap).then_some(c + 1)
            });
    }

    /// Spends one owed ack, if any.
    pub fn take_owed_ack(&self) -> bool {
        self.ack_credit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1))
            .is_ok()
    }

    /// Sets or clears the session's route (called with the registry's events).
    pub fn set_route(&self, route: Option<Route>) {
        let mut slot = self.route.lock().unwrap_or_else(|e| e.into_inner());
        if route.is_none() {
            slot.last_ended = slot
                .current
                .as_ref()
                .map(|r| r.match_id)
                .or(slot.last_ended);
        }
        slot.current = route;
    }

    /// Decides where a relay or chat message for `match_id` goes.
    pub fn route(&self, match_id: u64) -> Routing {
        let slot = self.route.lock().unwrap_or_else(|e| e.into_inner());
        match &slot.current {
            Some(route) if route.match_id == match_id => match route.partner.upgrade() {
                Some(partner) => Routing::Deliver(partner),
                None => Routing::Stale,
            },
            Some(_) => Routing::Stale,
            None if slot.last_ended == Some(match_id) => Routing::Stale,
            None => Routing::NotMatched,
        }
    }

    /// Asks the session to close with `code`: its writer sends `Closing`, waits
    /// briefly for it to be acknowledged, then closes. The first request wins.
    pub fn request_close(&self, code: CloseCode, reason: &'static str) {
        if self.close.set((code, reason)).is_ok() {
            self.closing.cancel();
        }
    }

    /// Resolves once a close has been requested.
    pub async fn close_requested(&self) -> (CloseCode, &'static str) {
        self.closing.cancelled().await;
        self.close_reason()
    }

    /// The requested close, or a normal close when none was requested.
    pub fn close_reason(&self) -> (CloseCode, &'static str) {
        self.close
            .get()
            .copied()
            .unwrap_or((CloseCode::Normal, "closed"))
    }

    /// Whether a close has been requested.
    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }
}

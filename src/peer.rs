//! The handle through which anything reaches a session: its bounded outbound
//! queue, its datagram channel, its current route and its close signal.
//!
//! Relaying takes only the sender's own route lock and pushes to the partner's
//! queue: there is no global lock on the per-message path. A partner on
//! another node of a pool is reached through that node's inbox instead
//! ([`RemotePartner`]); the session's own code does not tell the two apart.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::RemotePartner;
use crate::protocol::CloseCode;
use crate::registry::SessionId;

mod queue;
use queue::OutboundQueue;

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
        /// Whether it came from a partner on another node, whose window
        /// gets the bytes back once written.
        remote: bool,
        /// When it was queued (for the relay-time metric).
        at: std::time::Instant,
    },
    /// From here on, relays of this match (or of none) are current.
    MatchChanged(Option<u64>),
    /// A datagram for a WebSocket session, which carries datagrams in order
    /// with its frames (a WebTransport session's go straight out).
    Datagram(Bytes),
}

/// The writer's end of a session's outbound queue. Dropped (however the
/// writer ends), it closes the queue: nothing more is queued, and budgets
/// are not charged for what no one will write.
#[derive(Debug)]
pub struct OutboundReader {
    peer: Arc<Peer>,
}

impl OutboundReader {
    /// The next item, once one is queued (cancel safe).
    pub async fn recv(&mut self) -> Outbound {
        self.peer.outbound.pop().await
    }

    /// The next item, if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        self.peer.outbound.try_pop()
    }
}

impl Drop for OutboundReader {
    fn drop(&mut self) {
        self.peer.outbound.close();
    }
}

/// How a session's client is reached.
#[derive(Debug)]
pub enum Link {
    /// A WebTransport session: its writer puts frames on the signaling
    /// stream; datagrams go straight out.
    WebTransport(crate::webtransport::Datagrams),
    /// A WebSocket session (PROTOCOL section 7): frames and datagrams both go
    /// through the queue, in order.
    WebSocket {
        /// Messages its writer has sent: grows while its client reads.
        written: AtomicU64,
    },
}

impl Link {
    /// A WebSocket link that has sent nothing yet.
    pub fn websocket() -> Link {
        Link::WebSocket {
            written: AtomicU64::new(0),
        }
    }
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
    /// The partner.
    pub partner: PartnerLink,
}

/// How a route reaches the partner.
#[derive(Debug, Clone)]
pub enum PartnerLink {
    /// On this node (weak: a route never keeps an ended session alive).
    Local(Weak<Peer>),
    /// On another node of the pool.
    Remote(Arc<RemotePartner>),
}

/// A partner a relay or chat message is delivered to.
#[derive(Debug)]
pub enum Partner {
    /// On this node: its queue and connection directly.
    Local(Arc<Peer>),
    /// On another node: through that node's inbox.
    Remote(Arc<RemotePartner>),
}

/// How long a full partner queue may make no room before the partner is
/// judged not to be reading.
pub const RELAY_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Partner {
    /// Forwards `frame` (a relay of match `match_id`, already encoded as the
    /// server's frame) from `sender`. While the partner has no room the
    /// sender waits (and reads nothing more). A partner whose connection
    /// sends no stream data for [`RELAY_STALL_TIMEOUT`] (its client reads
    /// nothing, so flow control lets nothing out) is not reading and is
    /// closed; one that reads, however slowly, only slows the sender.
    pub async fn relay(&self, sender: &Peer, match_id: u64, frame: Bytes) {
        let partner = match self {
            Partner::Local(partner) => partner,
            Partner::Remote(remote) => return remote.relay(sender, frame).await,
        };
        // The usual case costs no timer and no waiter.
        let Err(mut full) = partner.try_push_relay(match_id, frame) else {
            return;
        };
        loop {
            // Registered before the check, so no change is missed: a wait
            // ends as soon as the match does, or the partner goes.
            let route_changed = sender.route_changed.notified();
            tokio::pin!(route_changed);
            route_changed.as_mut().enable();
            if !matches!(sender.route(match_id), Routing::Deliver(_)) {
                return;
            }
            let sent_before = partner.stream_frames_sent();
            let deadline = Instant::now() + RELAY_STALL_TIMEOUT;
            let pushed = tokio::select! {
                biased;
                _ = sender.close_requested() => return,
                _ = partner.close_requested() => return,
                _ = &mut route_changed => return,
                pushed = partner.push_relay_when_room(full, deadline) => pushed,
            };
            match pushed {
                Ok(()) => return,
                // Slow but reading: the sender (a flooder, say) waits on;
                // only it is slowed down.
                Err((_, item)) if partner.stream_frames_sent() > sent_before => full = item,
                Err(_) => {
                    partner.request_close(CloseCode::Abuse, "not reading the signaling stream");
                    return;
                }
            }
        }
    }

    /// Forwards a chat datagram unchanged; a datagram the partner's path
    /// cannot carry is lost, as datagrams may be. A delivered chat earns the
    /// partner the ack it owes (up to `ack_cap` outstanding).
    pub fn send_datagram(&self, payload: Bytes, is_chat: bool, ack_cap: u32) {
        match self {
            Partner::Local(partner) => partner.deliver_datagram(payload, is_chat, ack_cap),
            Partner::Remote(remote) => remote.send_datagram(payload),
        }
    }
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
    Deliver(Partner),
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
    link: Link,
    outbound: OutboundQueue,
    queued_bytes: AtomicUsize,
    relay_bytes: AtomicUsize,
    /// Woken whenever the writer takes relays off the queue.
    relay_room: Notify,
    /// Woken when this session's route changes (its match begins or ends).
    route_changed: Notify,
    queue_limit: usize,
    /// Bytes of remote relays written since credit was last returned.
    remote_written: AtomicUsize,
    /// `ChatAck`s this session owes for chats delivered to it; acks within
    /// it are not charged to its datagram rate.
    ack_credit: AtomicU32,
    /// Since when it waits for a match (ns after [`since_start`]'s origin;
    /// 0: not waiting), for the match-wait metric.
    waiting_since: AtomicU64,
    route: Mutex<RouteSlot>,
    close: OnceLock<(CloseCode, &'static str)>,
    closing: CancellationToken,
}

impl Peer {
    /// A peer for session `id` reached through `link`, and the reading
    /// end of its outbound queue, for its writer.
    pub fn new(id: SessionId, link: Link, queue_limit: usize) -> (Arc<Peer>, OutboundReader) {
        let peer = Arc::new(Peer {
            id,
            link,
            outbound: OutboundQueue::default(),
            queued_bytes: AtomicUsize::new(0),
            relay_bytes: AtomicUsize::new(0),
            relay_room: Notify::new(),
            route_changed: Notify::new(),
            queue_limit,
            remote_written: AtomicUsize::new(0),
            ack_credit: AtomicU32::new(0),
            waiting_since: AtomicU64::new(0),
            route: Mutex::new(RouteSlot::default()),
            close: OnceLock::new(),
            closing: CancellationToken::new(),
        });
        let reader = OutboundReader { peer: peer.clone() };
        (peer, reader)
    }

    /// The session starts waiting for a match (Join, Stop, or its partner
    /// left).
    pub fn start_waiting(&self) {
        self.waiting_since
            .store(since_start().max(1), Ordering::Relaxed);
    }

    /// The session no longer waits (Leave).
    pub fn stop_waiting(&self) {
        self.waiting_since.store(0, Ordering::Relaxed);
    }

    /// The session was matched: how long it waited, if it was waiting.
    pub fn take_wait(&self) -> Option<std::time::Duration> {
        match self.waiting_since.swap(0, Ordering::Relaxed) {
            0 => None,
            since => Some(std::time::Duration::from_nanos(
                since_start().saturating_sub(since),
            )),
        }
    }

    /// The session's registry id.
    pub fn id(&self) -> SessionId {
        self.id
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
            Outbound::Datagram(payload) => (
                &self.queued_bytes,
                payload.len() + ITEM_OVERHEAD,
                self.queue_limit,
            ),
        }
    }

    /// Queues `item` if its budget has room; gives it back if not.
    fn try_enqueue(&self, item: Outbound) -> Result<(), Outbound> {
        let (counter, cost, limit) = self.budget(&item);
        if counter.fetch_add(cost, Ordering::Relaxed) + cost > limit {
            counter.fetch_sub(cost, Ordering::Relaxed);
            return Err(item);
        }
        if self.outbound.push(item).is_err() {
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

    /// Whether relays wait in this session's queue, unwritten: with a
    /// partner out of credit, the sign that this session is not reading.
    pub fn has_unwritten_relays(&self) -> bool {
        self.relay_bytes.load(Ordering::Relaxed) > 0
    }

    /// The bytes a partner may have in flight towards this session: its
    /// relay budget, which is also a remote partner's window.
    pub fn relay_window(&self) -> usize {
        self.queue_limit / 2
    }

    /// Queues a frame relayed from the partner of match `match_id` if the
    /// relay budget has room; gives the item back if it has not (then see
    /// [`Peer::push_relay_when_room`]).
    pub fn try_push_relay(&self, match_id: u64, frame: Bytes) -> Result<(), Outbound> {
        self.try_enqueue(Outbound::Relay {
            match_id,
            frame,
            remote: false,
            at: std::time::Instant::now(),
        })
    }

    /// Queues a frame relayed from a partner on another node. Its window
    /// (see [`Peer::relay_window`]) already bounds what it sends, so the
    /// frame is queued even when a previous match's late relays still hold
    /// part of the budget: at most twice the budget is ever queued.
    pub fn push_remote_relay(&self, match_id: u64, frame: Bytes) {
        let item = Outbound::Relay {
            match_id,
            frame,
            remote: true,
            at: std::time::Instant::now(),
        };
        let (counter, cost, _) = self.budget(&item);
        counter.fetch_add(cost, Ordering::Relaxed);
        if self.outbound.push(item).is_err() {
            counter.fetch_sub(cost, Ordering::Relaxed);
        }
    }

    /// Queues a relay that found the budget full, once the writer makes room;
    /// gives up at `deadline` if it makes none by then.
    pub async fn push_relay_when_room(
        &self,
        mut item: Outbound,
        deadline: Instant,
    ) -> Result<(), (RelayStalled, Outbound)> {
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
                return Err((RelayStalled, item));
            }
        }
    }

    /// STREAM frames this session's connection has sent so far (messages,
    /// over a WebSocket): while its client reads, however slowly, flow
    /// control lets more out and this grows; a client that reads nothing
    /// keeps it still.
    pub fn stream_frames_sent(&self) -> u64 {
        match &self.link {
            Link::WebTransport(datagrams) => datagrams.connection().stats().frame_tx.stream,
            Link::WebSocket { written } => written.load(Ordering::Relaxed),
        }
    }

    /// A WebSocket session's writer has sent `messages` more.
    pub fn note_written(&self, messages: u64) {
        if let Link::WebSocket { written } = &self.link {
            written.fetch_add(messages, Ordering::Relaxed);
        }
    }

    /// The writer has taken `item` off the queue (written or dropped it).
    pub fn dequeued(&self, item: &Outbound) {
        let (counter, cost, _) = self.budget(item);
        counter.fetch_sub(cost, Ordering::Relaxed);
        match item {
            Outbound::Relay {
                remote: true,
                match_id,
                ..
            } => self.return_credit(*match_id, cost),
            Outbound::Relay { .. } => self.relay_room.notify_waiters(),
            _ => {}
        }
    }

    /// Gives a remote partner its window back in quarters, so that a pair
    /// that exchanges a few kilobytes of signaling costs no credit messages.
    fn return_credit(&self, match_id: u64, cost: usize) {
        let quarter = self.relay_window() / 4;
        // Counted under the route's lock, and only for the current match: a
        // late relay of an ended match earns the new partner no credit.
        let slot = self.route.lock().unwrap_or_else(|e| e.into_inner());
        let Some(Route {
            match_id: current,
            partner: PartnerLink::Remote(remote),
        }) = &slot.current
        else {
            return;
        };
        if *current != match_id {
            return;
        }
        let written = self.remote_written.fetch_add(cost, Ordering::Relaxed) + cost;
        if written >= quarter {
            self.remote_written.fetch_sub(written, Ordering::Relaxed);
            remote.return_credit(written);
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

    /// Sends a datagram from the partner to this session's client. Over a
    /// WebSocket it is queued, and dropped if the queue is full (as a
    /// datagram may be lost).
    pub fn deliver_datagram(&self, payload: Bytes, is_chat: bool, ack_cap: u32) {
        let sent = match &self.link {
            Link::WebTransport(datagrams) => datagrams.send(&payload).is_ok(),
            Link::WebSocket { .. } => self.try_enqueue(Outbound::Datagram(payload)).is_ok(),
        };
        if sent && is_chat {
            self.owe_ack(ack_cap);
        }
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
        if let Some(Route {
            partner: PartnerLink::Remote(ended),
            ..
        }) = &slot.current
        {
            // A relay waiting for the ended match's credit gives up.
            ended.end();
        }
        slot.current = route;
        self.remote_written.store(0, Ordering::Relaxed);
        drop(slot);
        self.route_changed.notify_waiters();
    }

    /// Decides where a relay or chat message for `match_id` goes.
    pub fn route(&self, match_id: u64) -> Routing {
        let slot = self.route.lock().unwrap_or_else(|e| e.into_inner());
        match &slot.current {
            Some(route) if route.match_id == match_id => match &route.partner {
                PartnerLink::Local(partner) => match partner.upgrade() {
                    Some(partner) => Routing::Deliver(Partner::Local(partner)),
                    None => Routing::Stale,
                },
                PartnerLink::Remote(remote) => Routing::Deliver(Partner::Remote(remote.clone())),
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

    /// The remote partner of the current match `match_id`, if it is one.
    pub fn remote_partner(&self, match_id: u64) -> Option<Arc<RemotePartner>> {
        let slot = self.route.lock().unwrap_or_else(|e| e.into_inner());
        match &slot.current {
            Some(Route {
                match_id: current,
                partner: PartnerLink::Remote(remote),
            }) if *current == match_id => Some(remote.clone()),
            _ => None,
        }
    }

    /// Whether a close has been requested.
    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }
}

/// Nanoseconds since the first call in this process.
fn since_start() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

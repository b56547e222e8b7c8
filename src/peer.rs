//! The handle through which anything reaches a session: its bounded outbound
//! queue, its datagram channel, its current route and its close signal.
//!
//! Relaying takes only the sender's own route lock and pushes to the partner's
//! queue: there is no global lock on the per-message path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use tokio::sync::mpsc;
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

impl Outbound {
    fn len(&self) -> usize {
        match self {
            Outbound::Frame(frame) | Outbound::Relay { frame, .. } => frame.len(),
            Outbound::MatchChanged(_) => 0,
        }
    }
}

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
#[derive(Debug)]
pub struct Peer {
    id: SessionId,
    connection: wtransport::Connection,
    outbound: mpsc::UnboundedSender<Outbound>,
    queued_bytes: AtomicUsize,
    queue_limit: usize,
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
            queue_limit,
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

    /// Queues an item for the session's writer. A session whose queue is over
    /// its byte limit is not reading: it is closed (code 2) instead.
    pub fn push(&self, item: Outbound) {
        let len = item.len();
        let queued = self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.queue_limit {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.request_close(CloseCode::Abuse, "not reading the signaling stream");
            return;
        }
        if self.outbound.send(item).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        }
    }

    /// The writer has written `len` bytes taken from the queue.
    pub fn written(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    /// Bytes waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
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

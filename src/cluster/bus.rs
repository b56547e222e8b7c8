//! Delivery to sessions on other nodes: units go into one bounded queue, and
//! one task publishes them to the target nodes' inboxes, several units per
//! message and several messages per round trip.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use tokio::sync::{Semaphore, mpsc};
use tracing::warn;

use super::connection::Connection;
use super::wire::Unit;

/// Units the queue holds; a sender waits (relays) or drops (datagrams,
/// which may be lost) when it is full.
const QUEUE_UNITS: usize = 8192;
/// Most units taken off the queue for one round trip.
const BATCH_UNITS: usize = 256;

/// Most credit units kept for the next round trip while Redis is away.
const RETRY_CREDITS: usize = 65_536;

/// The bus is gone (the node is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusClosed;

/// Credit to give back to a sender's window if its relay cannot be
/// published: the relay never arrives, so no credit would ever return for it.
#[derive(Debug)]
pub struct Refund {
    /// The sender's window.
    pub window: Arc<Semaphore>,
    /// What the relay took from it.
    pub permits: usize,
}

/// One unit on its way to `node`.
#[derive(Debug)]
struct Outgoing {
    node: Arc<str>,
    unit: Unit,
    refund: Option<Refund>,
}

/// The sending half, shared by every session of the node.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: mpsc::Sender<Outgoing>,
    /// Whether the last round trip reached Redis.
    healthy: Arc<AtomicBool>,
}

impl Bus {
    /// Starts the publishing task on `conn`, for inbox channels under `tag`.
    pub(super) fn start(conn: Connection, tag: String) -> Bus {
        let (tx, rx) = mpsc::channel(QUEUE_UNITS);
        let healthy = Arc::new(AtomicBool::new(true));
        tokio::spawn(publish(rx, conn, tag, healthy.clone()));
        Bus { tx, healthy }
    }

    /// Whether the last round trip reached Redis: while it does not, no
    /// credit can come back, and its absence says nothing of the partner.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Queues `unit` for `node`, waiting for room: order is kept per sender.
    /// `refund` is given back if the unit cannot be published.
    pub async fn send(
        &self,
        node: Arc<str>,
        unit: Unit,
        refund: Option<Refund>,
    ) -> Result<(), BusClosed> {
        let outgoing = Outgoing { node, unit, refund };
        self.tx.send(outgoing).await.map_err(|_| BusClosed)
    }

    /// Queues `unit` for `node` if there is room; drops it if not.
    pub fn try_send(&self, node: Arc<str>, unit: Unit) -> bool {
        let outgoing = Outgoing {
            node,
            unit,
            refund: None,
        };
        self.tx.try_send(outgoing).is_ok()
    }
}

/// Publishes batches until every sender is gone. When a round trip fails
/// (Redis away), relays give their senders' credit back, credit units are
/// tried again with the next batch, and the rest (events, which the pool
/// holds anyway; datagrams, which may be lost) is dropped.
async fn publish(
    mut rx: mpsc::Receiver<Outgoing>,
    mut conn: Connection,
    tag: String,
    healthy: Arc<AtomicBool>,
) {
    // Units lost because Redis could not be reached, for the log.
    let mut lost: u64 = 0;
    let mut batch: Vec<Outgoing> = Vec::with_capacity(BATCH_UNITS);
    let mut retry: Vec<Outgoing> = Vec::new();
    // One message per target node, in the order the nodes first appear.
    let mut messages: Vec<(Arc<str>, BytesMut)> = Vec::new();
    while rx.recv_many(&mut batch, BATCH_UNITS).await > 0 {
        // Credits held back from a failed round trip go first.
        batch.splice(0..0, retry.drain(..));
        for outgoing in &batch {
            let at = match messages.iter().position(|(n, _)| *n == outgoing.node) {
                Some(at) => at,
                None => {
                    messages.push((outgoing.node.clone(), BytesMut::new()));
                    messages.len() - 1
                }
            };
            outgoing.unit.write(&mut messages[at].1);
        }
        let mut pipe = redis::pipe();
        for (node, message) in messages.drain(..) {
            pipe.publish(format!("{tag}:inbox:{node}"), message.as_ref())
                .ignore();
        }
        let result = pipe.query_async::<()>(&mut conn).await;
        healthy.store(result.is_ok(), Ordering::Relaxed);
        if let Err(error) = result {
            let before = lost;
            for outgoing in batch.drain(..) {
                if let Some(refund) = &outgoing.refund {
                    refund.window.add_permits(refund.permits);
                }
                match outgoing.unit {
                    Unit::Credit { .. } if retry.len() < RETRY_CREDITS => retry.push(outgoing),
                    _ => lost += 1,
                }
            }
            if before == 0 || lost / 1000 != before / 1000 {
                warn!(%error, lost, "units for other nodes lost");
            }
        }
        batch.clear();
    }
}

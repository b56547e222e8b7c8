//! Delivery to sessions on other nodes: units go into one bounded queue, and
//! one task publishes them to the target nodes' inboxes, several units per
//! message and several messages per round trip.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::mpsc;
use tracing::warn;

use super::connection::Connection;
use super::wire::Unit;

/// Units the queue holds; a sender waits (relays) or drops (datagrams,
/// which may be lost) when it is full.
const QUEUE_UNITS: usize = 8192;
/// Most units taken off the queue for one round trip.
const BATCH_UNITS: usize = 256;

/// The bus is gone (the node is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusClosed;

/// The sending half, shared by every session of the node.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: mpsc::Sender<(Arc<str>, Unit)>,
}

impl Bus {
    /// Starts the publishing task on `conn`, for inbox channels under `tag`.
    pub(super) fn start(conn: Connection, tag: String) -> Bus {
        let (tx, rx) = mpsc::channel(QUEUE_UNITS);
        tokio::spawn(publish(rx, conn, tag));
        Bus { tx }
    }

    /// Queues `unit` for `node`, waiting for room: order is kept per sender.
    pub async fn send(&self, node: Arc<str>, unit: Unit) -> Result<(), BusClosed> {
        self.tx.send((node, unit)).await.map_err(|_| BusClosed)
    }

    /// Queues `unit` for `node` if there is room; drops it if not.
    pub fn try_send(&self, node: Arc<str>, unit: Unit) -> bool {
        self.tx.try_send((node, unit)).is_ok()
    }
}

async fn publish(mut rx: mpsc::Receiver<(Arc<str>, Unit)>, mut conn: Connection, tag: String) {
    // Units lost because Redis could not be reached, for the log.
    let mut lost: u64 = 0;
    let mut batch = Vec::with_capacity(BATCH_UNITS);
    // One message per target node, in the order the nodes first appear.
    let mut messages: Vec<(Arc<str>, BytesMut)> = Vec::new();
    while rx.recv_many(&mut batch, BATCH_UNITS).await > 0 {
        let units = batch.len() as u64;
        for (node, unit) in batch.drain(..) {
            let at = match messages.iter().position(|(n, _)| *n == node) {
                Some(at) => at,
                None => {
                    messages.push((node, BytesMut::new()));
                    messages.len() - 1
                }
            };
            unit.write(&mut messages[at].1);
        }
        let mut pipe = redis::pipe();
        for (node, message) in messages.drain(..) {
            pipe.publish(format!("{tag}:inbox:{node}"), message.as_ref())
                .ignore();
        }
        if let Err(error) = pipe.query_async::<()>(&mut conn).await {
            let before = lost;
            lost += units;
            if before == 0 || (before + units) / 1000 != before / 1000 {
                warn!(%error, lost = before + units, "units for other nodes lost");
            }
        }
    }
}

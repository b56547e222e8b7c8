//! A session's outbound queue: what the server and partners queue for the
//! session's writer, in order.
//!
//! A plain `VecDeque` behind the session's own lock (never a global one) and
//! a [`Notify`] for the one writer. Unlike a channel it allocates nothing
//! until something is queued and keeps little once drained, which matters
//! at tens of thousands of mostly idle sessions: tokio's unbounded channel
//! allocated a block of 32 items (over 2 KiB) for every session up front.
//! The budgets that bound it are the [`Peer`](super::Peer)'s.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use super::Outbound;

/// Capacity a drained queue keeps (enough for a relay burst's usual depth);
/// above it the storage is given back.
const KEEP: usize = 8;

/// The queue itself, owned by the session's [`Peer`](super::Peer).
#[derive(Debug, Default)]
pub(super) struct OutboundQueue {
    items: Mutex<VecDeque<Outbound>>,
    /// Woken when an item is queued (a permit is kept if the writer is busy).
    ready: Notify,
    /// Set when the writer is gone: nothing more is queued.
    closed: AtomicBool,
}

impl OutboundQueue {
    /// Queues `item`; gives it back when the writer is gone.
    pub(super) fn push(&self, item: Outbound) -> Result<(), Outbound> {
        if self.closed.load(Ordering::Acquire) {
            return Err(item);
        }
        self.lock().push_back(item);
        self.ready.notify_one();
        Ok(())
    }

    /// The next item, if one is queued.
    pub(super) fn try_pop(&self) -> Option<Outbound> {
        let mut items = self.lock();
        let item = items.pop_front();
        if items.is_empty() && items.capacity() > KEEP {
            items.shrink_to(KEEP);
        }
        item
    }

    /// The next item, once one is queued. Cancel safe: an item is taken only
    /// when the future completes.
    pub(super) async fn pop(&self) -> Outbound {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            // Registered before looking, so a push in between still wakes it.
            notified.as_mut().enable();
            if let Some(item) = self.try_pop() {
                return item;
            }
            notified.await;
        }
    }

    /// The writer is gone: drops what is queued and refuses what comes.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let dropped = std::mem::take(&mut *self.lock());
        drop(dropped);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Outbound>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;
    use std::time::Duration;

    fn frame(n: u8) -> Outbound {
        Outbound::Frame(Bytes::from(vec![n]))
    }

    fn byte(item: Outbound) -> u8 {
        match item {
            Outbound::Frame(b) => b[0],
            other => panic!("not a frame: {other:?}"),
        }
    }

    #[test]
    fn keeps_order_and_gives_back_storage() {
        let queue = OutboundQueue::default();
        for n in 0..100 {
            queue.push(frame(n)).unwrap();
        }
        for n in 0..100 {
            assert_eq!(queue.try_pop().map(byte), Some(n));
        }
        assert!(queue.try_pop().is_none());
        assert!(queue.lock().capacity() <= KEEP);
    }

    #[test]
    fn refuses_and_drops_once_closed() {
        let queue = OutboundQueue::default();
        queue.push(frame(1)).unwrap();
        queue.close();
        assert!(queue.try_pop().is_none());
        assert!(queue.push(frame(2)).is_err());
    }

    #[tokio::test]
    async fn pop_wakes_for_a_later_push_and_loses_nothing_when_cancelled() {
        let queue = Arc::new(OutboundQueue::default());
        // Cancelled while empty: nothing is taken.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), queue.pop())
                .await
                .is_err()
        );
        let pusher = {
            let queue = queue.clone();
            tokio::spawn(async move {
                for n in 0..50 {
                    queue.push(frame(n)).unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        for n in 0..50 {
            let item = tokio::time::timeout(Duration::from_secs(5), queue.pop())
                .await
                .expect("an item within 5 s");
            assert_eq!(byte(item), n);
        }
        pusher.await.unwrap();
    }
}

//! This node's inbox: one Redis subscription, whatever the number of
//! sessions. It re-subscribes with back-off when Redis goes away, and then
//! says so, since what was published meanwhile is lost and the node must
//! read its sessions' state back from the pool.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Cluster;

/// First and longest wait before subscribing again.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// What the inbox hands to the node.
pub trait InboxHandler: Send + Sync {
    /// One inbox message (one or more units).
    fn message(&self, message: Bytes);
    /// Subscribed again after a gap: messages may have been lost.
    fn resubscribed(&self);
}

/// Reads the inbox of `cluster`'s node until `shutdown`.
pub async fn run(
    cluster: Arc<Cluster>,
    handler: Arc<dyn InboxHandler>,
    shutdown: CancellationToken,
) {
    let channel = cluster.inbox(&cluster.node);
    let mut backoff = BACKOFF.0;
    let mut first = true;
    // On a Redis Cluster, each failure moves the subscription to the next seed.
    let mut attempt = 0usize;
    loop {
        let client = &cluster.subscribers[attempt % cluster.subscribers.len()];
        attempt = attempt.wrapping_add(1);
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = shutdown.cancelled() => return,
            pubsub = tokio::time::timeout(super::CALL_TIMEOUT, subscribed) => pubsub,
        };
        let mut pubsub = match pubsub {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => {
                warn!(%error, "inbox subscription failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF.1);
                continue;
            }
            Err(_) => continue,
        };
        backoff = BACKOFF.0;
        if !std::mem::take(&mut first) {
            info!("inbox subscribed again");
            handler.resubscribed();
        }
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                message = messages.next() => message,
            };
            match message {
                Some(message) => {
                    handler.message(Bytes::copy_from_slice(message.get_payload_bytes()))
                }
                None => break,
            }
        }
        warn!("inbox subscription lost");
    }
}

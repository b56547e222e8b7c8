//! This node's inbox: one Redis subscription, whatever the number of
//! sessions. It re-subscribes with back-off when Redis goes away, and says
//! when it is subscribed and when not: what is published meanwhile is lost,
//! so the node must read its sessions' state back from the pool, and should
//! not join sessions to the pool until it can hear the answer.

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
    /// Subscribed; `after_gap` when it had been subscribed before, so
    /// messages may have been lost.
    fn subscribed(&self, after_gap: bool);
    /// The subscription was lost.
    fn unsubscribed(&self);
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
        let after_gap = !std::mem::take(&mut first);
        if after_gap {
            info!("inbox subscribed again");
        }
        handler.subscribed(after_gap);
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
        handler.unsubscribed();
    }
}

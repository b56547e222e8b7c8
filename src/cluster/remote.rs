//! A partner on another node, as a session's route sees it.
//!
//! Relays to it are bounded by a window of credit, the size of the
//! partner's relay budget: each relay spends its cost, and the partner's
//! node gives the bytes back (in quarters of the window) once its writer has
//! written them. A sender whose partner stops reading runs out of credit and
//! waits, as it would for a partner on its own node; a flood slows only the
//! flooder, and the bus never holds more than a window per pair.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::bus::{Bus, Refund};
use super::wire::Unit;
use crate::peer::{ITEM_OVERHEAD, Peer, RELAY_STALL_TIMEOUT};
use crate::registry::SessionId;

/// The far end of a match whose partner lives on another node.
#[derive(Debug)]
pub struct RemotePartner {
    node: Arc<str>,
    session: SessionId,
    match_id: u64,
    bus: Bus,
    window: Arc<Semaphore>,
    size: usize,
}

impl RemotePartner {
    /// The partner `session` on `node`, in match `match_id`, with a window
    /// of `window` bytes.
    pub fn new(
        node: Arc<str>,
        session: SessionId,
        match_id: u64,
        bus: Bus,
        window: usize,
    ) -> RemotePartner {
        RemotePartner {
            node,
            session,
            match_id,
            bus,
            window: Arc::new(Semaphore::new(window)),
            size: window,
        }
    }

    /// Sends a relay once the window has room for it, however long that
    /// takes: every [`RELAY_STALL_TIMEOUT`] without credit, the partner's
    /// node is told ([`Unit::Stalled`]); it closes a partner that reads
    /// nothing (the match then ends, and this wait with it), and gives the
    /// whole window back if the credit was lost on the way. A partner that
    /// reads slowly only slows this sender. While Redis is away no credit
    /// can come back and the frame would be lost anyway: it is dropped and
    /// no one is blamed.
    pub async fn relay(&self, sender: &Peer, frame: Bytes) {
        let cost = u32::try_from(frame.len() + ITEM_OVERHEAD).unwrap_or(u32::MAX);
        loop {
            let credit = tokio::select! {
                biased;
                _ = sender.close_requested() => return,
                credit = tokio::time::timeout(RELAY_STALL_TIMEOUT, self.window.acquire_many(cost)) => credit,
            };
            match credit {
                Ok(Ok(permit)) => {
                    permit.forget();
                    let unit = Unit::Relay {
                        session: self.session,
                        match_id: self.match_id,
                        frame,
                    };
                    // A relay that cannot be published gives its credit back.
                    let refund = Refund {
                        window: self.window.clone(),
                        permits: cost as usize,
                    };
                    let _ = self.bus.send(self.node.clone(), unit, Some(refund)).await;
                    return;
                }
                // The match ended.
                Ok(Err(_closed)) => return,
                Err(_elapsed) if !self.bus.is_healthy() => return,
                Err(_elapsed) => {
                    let unit = Unit::Stalled {
                        session: self.session,
                        match_id: self.match_id,
                    };
                    if self.bus.send(self.node.clone(), unit, None).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The match is over: a relay still waiting for credit gives up.
    pub fn end(&self) {
        self.window.close();
    }

    /// Sends a chat datagram, or drops it when the bus is full.
    pub fn send_datagram(&self, payload: Bytes) {
        self.bus.try_send(
            self.node.clone(),
            Unit::Datagram {
                session: self.session,
                match_id: self.match_id,
                payload,
            },
        );
    }

    /// The partner's node wrote `bytes` of our relays: they may be sent again.
    pub fn credit(&self, bytes: usize) {
        // Never above the window, whatever another node claims.
        let room = self.size.saturating_sub(self.window.available_permits());
        self.window.add_permits(bytes.min(room));
    }

    /// This side wrote `bytes` of the partner's relays: the partner's window
    /// gets them back.
    pub fn return_credit(&self, bytes: usize) {
        let unit = Unit::Credit {
            session: self.session,
            match_id: self.match_id,
            bytes,
        };
        let bus = self.bus.clone();
        let node = self.node.clone();
        // Rare (a quarter window at a time) and must not be lost to a full
        // queue, so it waits for room on its own.
        tokio::spawn(async move { bus.send(node, unit, None).await });
    }
}

//! The hub joins the matching pool (who is matched with whom) to the
//! sessions' peers (how to reach them). The pool is this process's own
//! [`Registry`], or a pool shared by several nodes through Redis
//! ([`crate::cluster`]); sessions call the same methods either way.
//!
//! Pool operations and the delivery of their events happen under one lock,
//! so every session sees its events in the order the pool made them; relays
//! between sessions of this node never take this lock.
//!
//! Readers of the counts (the sidecar's `/health`, `/api/stats` and
//! `/metrics`) never take it either: whoever changes the counts publishes
//! them as they release the lock, and [`Hub::stats`] and
//! [`Hub::node_stats`] read that copy. A slow or stuck pool operation then
//! cannot hold up health checks, and a flood of health checks cannot slow
//! matching.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_utils::atomic::AtomicCell;

use crate::cluster::Cluster;
use crate::codec::encode_frame;
use crate::ice::IceServers;
use crate::peer::{Outbound, PartnerLink, Peer, Route};
use crate::protocol::{IceServer, Profile, ServerMsg};
use crate::registry::{
    AtCapacity, Event, RefusedError, Registry, SessionId, Stats, validate_profile,
};

mod pooled;
pub use pooled::PoolView;

struct State {
    /// The matching itself with no shared pool; with one, only ids,
    /// capacity and the session count.
    registry: Registry,
    peers: HashMap<SessionId, Arc<Peer>>,
    /// With a shared pool: where each session of this node stands in it.
    side: pooled::Side,
    /// The counts as last published to [`Hub::counts`].
    published: Stats,
}

impl State {
    /// This node's counts, in O(1): the registry's own, or (with a shared
    /// pool) the seats' running tally.
    fn counts(&self, pooled: bool) -> Stats {
        if pooled {
            Stats {
                active_users: self.peers.len(),
                ..self.side.counts()
            }
        } else {
            self.registry.stats()
        }
    }
}

/// The hub's state, locked. On release it publishes the node's counts if
/// they changed, still under the lock, so that anyone who sees an operation
/// done also sees its counts; every change of state goes through one of
/// these, so none can forget to.
struct Locked<'a> {
    hub: &'a Hub,
    state: MutexGuard<'a, State>,
}

impl Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let pooled = self.hub.cluster.is_some();
        let counts = self.state.counts(pooled);
        if counts != self.state.published {
            self.state.published = counts;
            self.hub.counts.store(counts);
        }
    }
}

/// Why a session was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    /// The server holds as many sessions as it may.
    AtCapacity,
    /// The server is shutting down.
    ShuttingDown,
}

/// What the hub tells sessions, whichever pool decided it.
#[derive(Debug)]
enum Notice {
    Waiting {
        session: SessionId,
        queue_position: u32,
    },
    Matched {
        session: SessionId,
        partner: PartnerLink,
        match_id: u64,
        initiator: bool,
        partner_profile: Profile,
    },
    PartnerDisconnected {
        session: SessionId,
        match_id: u64,
    },
    MatchLeft {
        session: SessionId,
    },
}

/// The matching pool of this server and the sessions in it.
pub struct Hub {
    state: Mutex<State>,
    ice: IceServers,
    min_age: u8,
    /// The shared pool, when this node is one of several.
    cluster: Option<Arc<Cluster>>,
    /// Chats a session may owe acks for (its datagram rate).
    ack_cap: u32,
    view: Mutex<PoolView>,
    /// The inbox missed messages: sessions' states are to be read back.
    inbox_gap: std::sync::atomic::AtomicBool,
    /// Whether the inbox is subscribed: what the pool publishes while it is
    /// not is lost, so pending joins wait for it.
    inbox_live: tokio::sync::watch::Sender<bool>,
    /// Shutting down: no session is admitted; `/health` reads it without
    /// the lock.
    draining: std::sync::atomic::AtomicBool,
    /// This node's counts, published under the lock at each change (see
    /// [`Locked`]) and read without it. `AtomicCell` keeps the four figures
    /// one consistent snapshot without a lock of its own (a sequence lock
    /// for readers).
    counts: AtomicCell<Stats>,
}

impl Hub {
    /// An empty hub; with `cluster`, a node of that shared pool. `ack_cap`
    /// bounds the chat acks a session may owe (its datagram rate).
    pub fn new(
        min_age: u8,
        max_sessions: usize,
        ice: IceServers,
        cluster: Option<Arc<Cluster>>,
        ack_cap: u32,
    ) -> Self {
        Hub {
            state: Mutex::new(State {
                registry: Registry::new(min_age, max_sessions),
                peers: HashMap::new(),
                side: pooled::Side::default(),
                published: Stats::default(),
            }),
            ice,
            min_age,
            cluster,
            ack_cap,
            view: Mutex::new(PoolView::default()),
            inbox_gap: std::sync::atomic::AtomicBool::new(false),
            inbox_live: tokio::sync::watch::Sender::new(false),
            draining: std::sync::atomic::AtomicBool::new(false),
            counts: AtomicCell::new(Stats::default()),
        }
    }

    /// The shared pool this node belongs to, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    fn lock(&self) -> Locked<'_> {
        Locked {
            hub: self,
            state: self.state.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Holds the hub's lock until the returned guard is dropped: for tests
    /// that prove a reader does not need it.
    #[cfg(test)]
    pub(crate) fn hold_lock_for_test(&self) -> impl Sized + '_ {
        self.lock()
    }

    /// Admits a session, building its peer with the id the registry gives.
    /// `make_peer` may return something of its own alongside (the queue's
    /// receiving end).
    pub fn connect<F, T>(&self, make_peer: F) -> Result<(Arc<Peer>, T), NotAdmitted>
    where
        F: FnOnce(SessionId) -> (Arc<Peer>, T),
    {
        let mut state = self.lock();
        if self.is_draining() {
            return Err(NotAdmitted::ShuttingDown);
        }
        let id = state
            .registry
            .connect()
            .map_err(|AtCapacity| NotAdmitted::AtCapacity)?;
        let (peer, extra) = make_peer(id);
        state.peers.insert(id, peer.clone());
        Ok((peer, extra))
    }

    /// `Join`. The profile is checked before the lock is taken, so a long
    /// name costs only its sender's time.
    pub async fn join(&self, id: SessionId, profile: Profile) -> Result<(), RefusedError> {
        let checked = validate_profile(profile, self.min_age);
        if let Some(cluster) = &self.cluster {
            return self.pool_join(cluster, id, checked).await;
        }
        let mut state = self.lock();
        let events = state.registry.join_checked(id, checked)?;
        self.deliver_events(&state, events);
        Ok(())
    }

    /// `Stop`.
    pub async fn stop(&self, id: SessionId) -> Result<(), RefusedError> {
        if let Some(cluster) = &self.cluster {
            return self.pool_stop(cluster, id).await;
        }
        let mut state = self.lock();
        let events = state.registry.stop(id)?;
        self.deliver_events(&state, events);
        Ok(())
    }

    /// `Leave`.
    pub async fn leave(&self, id: SessionId) {
        if let Some(cluster) = &self.cluster {
            return self.pool_leave(cluster, id).await;
        }
        let mut state = self.lock();
        let events = state.registry.leave(id);
        self.deliver_events(&state, events);
    }

    /// The session has ended: it leaves and its peer is forgotten.
    pub fn disconnect(&self, id: SessionId) {
        let mut state = self.lock();
        let events = state.registry.disconnect(id);
        if let Some(peer) = state.peers.remove(&id) {
            peer.set_route(None);
        }
        match &self.cluster {
            Some(cluster) => self.pool_disconnect(cluster, &mut state, id),
            None => self.deliver_events(&state, events),
        }
    }

    /// Whether the server is shutting down (admitting no one).
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The most sessions connected at once since the last call.
    pub fn take_session_peak(&self) -> usize {
        self.lock().registry.take_peak()
    }

    /// Counts for the HTTP sidecar: of the whole pool (as of its last
    /// heartbeat, with a shared pool). Never takes the hub's lock.
    pub fn stats(&self) -> Stats {
        match &self.cluster {
            Some(_) => self.pool_view().pool,
            None => self.node_stats(),
        }
    }

    /// Counts of this node's own sessions, as published by the last change
    /// to them, under the lock. Never takes the hub's lock.
    pub fn node_stats(&self) -> Stats {
        self.counts.load()
    }

    /// Admits no session from now on and returns every connected one, so
    /// that each can be told the server is shutting down.
    pub fn begin_shutdown(&self) -> Vec<Arc<Peer>> {
        let state = self.lock();
        // Set under the lock, so no session is admitted after this.
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        state.peers.values().cloned().collect()
    }

    /// Turns the local registry's events into notices and delivers them.
    fn deliver_events(&self, state: &State, events: Vec<Event>) {
        let notices = events
            .into_iter()
            .filter_map(|event| {
                Some(match event {
                    Event::Waiting {
                        session,
                        queue_position,
                    } => Notice::Waiting {
                        session,
                        queue_position,
                    },
                    Event::Matched {
                        session,
                        partner,
                        match_id,
                        initiator,
                        partner_profile,
                    } => Notice::Matched {
                        session,
                        partner: PartnerLink::Local(Arc::downgrade(state.peers.get(&partner)?)),
                        match_id,
                        initiator,
                        partner_profile,
                    },
                    Event::PartnerDisconnected { session, match_id } => {
                        Notice::PartnerDisconnected { session, match_id }
                    }
                    Event::MatchLeft { session, .. } => Notice::MatchLeft { session },
                })
            })
            .collect();
        self.deliver(state, notices);
    }

    /// Turns notices into routes and queued frames.
    ///
    /// `Matched` frames go out only after every route and queue marker of the
    /// batch is in place: a client can relay only after it has read its
    /// `Matched`, so its first relay always finds both routes set and the
    /// partner's queue already expecting the new match.
    fn deliver(&self, state: &State, notices: Vec<Notice>) {
        let mut matched_frames = Vec::new();
        // Both sides of a match get the same freshly minted ICE servers.
        let mut minted: Option<(u64, Vec<IceServer>)> = None;
        for notice in notices {
            match notice {
                Notice::Waiting {
                    session,
                    queue_position,
                } => {
                    if let Some(peer) = state.peers.get(&session) {
                        peer.push(Outbound::Frame(encode_frame(&ServerMsg::Waiting {
                            queue_position,
                        })));
                    }
                }
                Notice::Matched {
                    session,
                    partner,
                    match_id,
                    initiator,
                    partner_profile,
                } => {
                    let Some(peer) = state.peers.get(&session) else {
                        continue;
                    };
                    if initiator {
                        // Once per match, on the initiator's node.
                        crate::metrics::match_made();
                    }
                    let ice_servers = match &minted {
                        Some((id, servers)) if *id == match_id => servers.clone(),
                        _ => {
                            let servers = self.ice.for_match(unix_now());
                            minted = Some((match_id, servers.clone()));
                            servers
                        }
                    };
                    peer.push(Outbound::MatchChanged(Some(match_id)));
                    peer.set_route(Some(Route { match_id, partner }));
                    let frame = encode_frame(&ServerMsg::Matched {
                        match_id,
                        partner: partner_profile,
                        initiator,
                        ice_servers,
                    });
                    matched_frames.push((peer, frame));
                }
                Notice::PartnerDisconnected { session, match_id } => {
                    if let Some(peer) = state.peers.get(&session) {
                        peer.start_waiting();
                        peer.set_route(None);
                        peer.push(Outbound::MatchChanged(None));
                        peer.push(Outbound::Frame(encode_frame(
                            &ServerMsg::PartnerDisconnected { match_id },
                        )));
                    }
                }
                Notice::MatchLeft { session } => {
                    if let Some(peer) = state.peers.get(&session) {
                        peer.set_route(None);
                        peer.push(Outbound::MatchChanged(None));
                    }
                }
            }
        }
        for (peer, frame) in matched_frames {
            peer.push(Outbound::Frame(frame));
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// The sidecar's figures are read without the hub's lock: a pool
    /// operation stuck under it cannot hold up `/health`.
    #[test]
    fn counts_are_read_while_the_lock_is_held() {
        let hub = Arc::new(Hub::new(18, 10, IceServers::default(), None, 10));
        let held = hub.hold_lock_for_test();
        let (tx, rx) = mpsc::channel();
        let reader = hub.clone();
        std::thread::spawn(move || {
            let _ = tx.send((reader.stats(), reader.node_stats()));
        });
        let read = rx.recv_timeout(Duration::from_secs(2));
        drop(held);
        let (stats, node) = read.expect("counts read while the hub's lock is held");
        assert_eq!(stats, Stats::default());
        assert_eq!(node, Stats::default());
    }
}

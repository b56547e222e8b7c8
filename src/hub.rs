//! The hub joins the registry (who is matched with whom) to the sessions'
//! peers (how to reach them). Registry operations and the delivery of their
//! events happen under one lock, so every session sees its events in the
//! order the registry made them; relays never take this lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::codec::encode_frame;
use crate::ice::IceServers;
use crate::peer::{Outbound, Peer, Route};
use crate::protocol::{IceServer, Profile, ServerMsg};
use crate::registry::{
    AtCapacity, Event, RefusedError, Registry, SessionId, Stats, validate_profile,
};

struct State {
    registry: Registry,
    peers: HashMap<SessionId, Arc<Peer>>,
    shutting_down: bool,
}

/// Why a session was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    /// The server holds as many sessions as it may.
    AtCapacity,
    /// The server is shutting down.
    ShuttingDown,
}

/// The matching pool of this server and the sessions in it.
pub struct Hub {
    state: Mutex<State>,
    ice: IceServers,
    min_age: u8,
}

impl Hub {
    /// An empty hub.
    pub fn new(min_age: u8, max_sessions: usize, ice: IceServers) -> Self {
        Hub {
            state: Mutex::new(State {
                registry: Registry::new(min_age, max_sessions),
                peers: HashMap::new(),
                shutting_down: false,
            }),
            ice,
            min_age,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a session, building its peer with the id the registry gives.
    /// `make_peer` may return something of its own alongside (the queue's
    /// receiving end).
    pub fn connect<F, T>(&self, make_peer: F) -> Result<(Arc<Peer>, T), NotAdmitted>
    where
        F: FnOnce(SessionId) -> (Arc<Peer>, T),
    {
        let mut state = self.lock();
        if state.shutting_down {
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
    pub fn join(&self, id: SessionId, profile: Profile) -> Result<(), RefusedError> {
        let checked = validate_profile(profile, self.min_age);
        let mut state = self.lock();
        let events = state.registry.join_checked(id, checked)?;
        self.deliver(&state, events);
        Ok(())
    }

    /// `Stop`.
    pub fn stop(&self, id: SessionId) -> Result<(), RefusedError> {
        let mut state = self.lock();
        let events = state.registry.stop(id)?;
        self.deliver(&state, events);
        Ok(())
    }

    /// `Leave`.
    pub fn leave(&self, id: SessionId) {
        let mut state = self.lock();
        let events = state.registry.leave(id);
        self.deliver(&state, events);
    }

    /// The session has ended: it leaves and its peer is forgotten.
    pub fn disconnect(&self, id: SessionId) {
        let mut state = self.lock();
        let events = state.registry.disconnect(id);
        if let Some(peer) = state.peers.remove(&id) {
            peer.set_route(None);
        }
        self.deliver(&state, events);
    }

    /// The most sessions connected at once since the last call.
    pub fn take_session_peak(&self) -> usize {
        self.lock().registry.take_peak()
    }

    /// Counts for the HTTP sidecar.
    pub fn stats(&self) -> Stats {
        self.lock().registry.stats()
    }

    /// Admits no session from now on and returns every connected one, so
    /// that each can be told the server is shutting down.
    pub fn begin_shutdown(&self) -> Vec<Arc<Peer>> {
        let mut state = self.lock();
        state.shutting_down = true;
        state.peers.values().cloned().collect()
    }

    /// Turns registry events into routes and queued frames.
    ///
    /// `Matched` frames go out only after every route and queue marker of the
    /// batch is in place: a client can relay only after it has read its
    /// `Matched`, so its first relay always finds both routes set and the
    /// partner's queue already expecting the new match.
    fn deliver(&self, state: &State, events: Vec<Event>) {
        let mut matched_frames = Vec::new();
        // Both sides of a match get the same freshly minted ICE servers.
        let mut minted: Option<(u64, Vec<IceServer>)> = None;
        for event in events {
            match event {
                Event::Waiting {
                    session,
                    queue_position,
                } => {
                    if let Some(peer) = state.peers.get(&session) {
                        peer.push(Outbound::Frame(encode_frame(&ServerMsg::Waiting {
                            queue_position,
                        })));
                    }
                }
                Event::Matched {
                    session,
                    partner,
                    match_id,
                    initiator,
                    partner_profile,
                } => {
                    let (Some(peer), Some(other)) =
                        (state.peers.get(&session), state.peers.get(&partner))
                    else {
                        continue;
                    };
                    let ice_servers = match &minted {
                        Some((id, servers)) if *id == match_id => servers.clone(),
                        _ => {
                            let servers = self.ice.for_match(unix_now());
                            minted = Some((match_id, servers.clone()));
                            servers
                        }
                    };
                    peer.push(Outbound::MatchChanged(Some(match_id)));
                    peer.set_route(Some(Route {
                        match_id,
                        partner: Arc::downgrade(other),
                    }));
                    let frame = encode_frame(&ServerMsg::Matched {
                        match_id,
                        partner: partner_profile,
                        initiator,
                        ice_servers,
                    });
                    matched_frames.push((peer, frame));
                }
                Event::PartnerDisconnected { session, match_id } => {
                    if let Some(peer) = state.peers.get(&session) {
                        peer.set_route(None);
                        peer.push(Outbound::MatchChanged(None));
                        peer.push(Outbound::Frame(encode_frame(
                            &ServerMsg::PartnerDisconnected { match_id },
                        )));
                    }
                }
                Event::MatchLeft { session, .. } => {
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

//! The match registry: who is connected, who waits in which queue, who is
//! matched with whom.
//!
//! It is a plain synchronous state machine, free of I/O and time: operations go
//! in, [`Event`]s (what to tell which session) come out. The async server
//! drives it and delivers the events; a multi-node pool would replace this
//! type behind the same operations.

use std::collections::HashMap;

use crate::protocol::{Gender, MAX_AGE, MAX_NAME_CHARS, Profile};

/// Waiters one match attempt examines at most. Only previous partners are
/// skipped, and many waiters can have one session as theirs (someone who
/// pressed Next on each of them); the bound keeps a `Join` under the hub's
/// lock short whatever the queue holds. If none of them is eligible, the
/// session waits, even if an eligible waiter stands further back. The
/// shared pool's script has the same bound.
pub const MATCH_SCAN_LIMIT: usize = 1024;

/// A connected session, unique for the life of the registry.
pub type SessionId = u64;

/// What the registry tells the outside world after an operation, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `session` now waits at `queue_position` (1-based) in its queue.
    Waiting {
        /// The session that waits.
        session: SessionId,
        /// Its 1-based position.
        queue_position: u32,
    },
    /// `session` was matched with `partner`.
    Matched {
        /// The session to tell.
        session: SessionId,
        /// Its partner (never told to the client; for routing only).
        partner: SessionId,
        /// The fresh match id.
        match_id: u64,
        /// Whether `session` should create the WebRTC offer.
        initiator: bool,
        /// The partner's profile, as validated.
        partner_profile: Profile,
    },
    /// `session`'s partner stopped, left or vanished: match `match_id` is over.
    PartnerDisconnected {
        /// The session to tell.
        session: SessionId,
        /// The match that ended.
        match_id: u64,
    },
    /// `session` itself ended match `match_id` (Stop, Leave or disconnect);
    /// nothing is sent for it, but its relay route is gone.
    MatchLeft {
        /// The session that ended the match.
        session: SessionId,
        /// The match that ended.
        match_id: u64,
    },
}

/// Why the registry refused an operation; each maps to a protocol `ErrorCode`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusedError {
    /// The profile breaks a rule; the text says which.
    #[error("{0}")]
    InvalidProfile(String),
    /// The operation needs a Join first.
    #[error("join first")]
    NotJoined,
    /// Join while already waiting or matched.
    #[error("already joined")]
    AlreadyJoined,
    /// The shared matching pool cannot be reached just now; try again.
    #[error("matching pool unavailable; try again")]
    Unavailable,
}

/// The registry holds as many sessions as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is at capacity")]
pub struct AtCapacity;

/// Counts the sidecar reports; all from the same state that matches sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sessions connected now, in any state.
    pub active_users: usize,
    /// Pairs matched now.
    pub active_matches: usize,
    /// Sessions waiting in the male queue.
    pub male_queue: usize,
    /// Sessions waiting in the female queue.
    pub female_queue: usize,
}

#[derive(Debug)]
enum State {
    Idle,
    Waiting {
        profile: Profile,
        ticket: u64,
    },
    Matched {
        profile: Profile,
        partner: SessionId,
        match_id: u64,
    },
}

#[derive(Debug)]
struct Entry {
    state: State,
    previous_partner: Option<SessionId>,
}

/// The matching pool of one server.
#[derive(Debug)]
pub struct Registry {
    sessions: HashMap<SessionId, Entry>,
    /// FIFO queues by arrival ticket, indexed by [`queue_index`].
    queues: [WaitQueue; 2],
    active_matches: usize,
    /// Most sessions at once since [`Registry::take_peak`] was last called.
    peak_sessions: usize,
    next_session: SessionId,
    next_match_id: u64,
    next_ticket: u64,
    min_age: u8,
    max_sessions: usize,
}

fn queue_index(gender: Gender) -> usize {
    match gender {
        Gender::Male => 0,
        Gender::Female => 1,
    }
}

/// Checks a profile against the Join rules and returns it with its name trimmed.
pub fn validate_profile(profile: Profile, min_age: u8) -> Result<Profile, RefusedError> {
    let name = profile.name.trim();
    let chars = name.chars().count();
    if chars == 0 {
        return Err(RefusedError::InvalidProfile("name is empty".into()));
    }
    if chars > MAX_NAME_CHARS {
        return Err(RefusedError::InvalidProfile(format!(
            "name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(RefusedError::InvalidProfile(
            "name contains control characters".into(),
        ));
    }
    if profile.age < min_age || profile.age > MAX_AGE {
        return Err(RefusedError::InvalidProfile(format!(
            "age must be from {min_age} to {MAX_AGE}"
        )));
    }
    Ok(Profile {
        name: name.to_owned(),
        ..profile
    })
}

impl Registry {
    /// An empty registry admitting ages from `min_age` and at most `max_sessions`.
    pub fn new(min_age: u8, max_sessions: usize) -> Self {
        Registry {
            sessions: HashMap::new(),
            queues: [WaitQueue::default(), WaitQueue::default()],
            active_matches: 0,
            peak_sessions: 0,
            next_session: 1,
            next_match_id: 1,
            next_ticket: 0,
            min_age,
            max_sessions,
        }
    }

    /// Admits a new idle session, unless the server is full.
    pub fn connect(&mut self) -> Result<SessionId, AtCapacity> {
        if self.sessions.len() >= self.max_sessions {
            return Err(AtCapacity);
        }
        let id = self.next_session;
        self.next_session += 1;
        self.sessions.insert(
            id,
            Entry {
                state: State::Idle,
                previous_partner: None,
            },
        );
        self.peak_sessions = self.peak_sessions.max(self.sessions.len());
        Ok(id)
    }

    /// `Join`: an idle session enters matching with `profile`.
    pub fn join(&mut self, id: SessionId, profile: Profile) -> Result<Vec<Event>, RefusedError> {
        let checked = validate_profile(profile, self.min_age);
        self.join_checked(id, checked)
    }

    /// `Join` with a profile already passed through [`validate_profile`]
    /// (with this registry's minimum age), so a caller can do that work
    /// outside its lock. `AlreadyJoined` takes precedence over the
    /// profile's own error.
    pub fn join_checked(
        &mut self,
        id: SessionId,
        checked: Result<Profile, RefusedError>,
    ) -> Result<Vec<Event>, RefusedError> {
        let entry = self.sessions.get(&id).ok_or(RefusedError::NotJoined)?;
        if !matches!(entry.state, State::Idle) {
            return Err(RefusedError::AlreadyJoined);
        }
        let profile = checked?;
        let mut events = Vec::with_capacity(2);
        self.enqueue(id, profile, &mut events);
        Ok(events)
    }

    /// `Stop`: end the match and find someone new, or confirm the wait.
    pub fn stop(&mut self, id: SessionId) -> Result<Vec<Event>, RefusedError> {
        let entry = self.sessions.get(&id).ok_or(RefusedError::NotJoined)?;
        let mut events = Vec::with_capacity(4);
        match &entry.state {
            State::Idle => return Err(RefusedError::NotJoined),
            State::Waiting { profile, ticket } => {
                let queue = &self.queues[queue_index(profile.gender)];
                let position = queue.position(*ticket);
                debug_assert!(position.is_some(), "{id} waits but is not queued");
                let position = position.unwrap_or(queue.len());
                events.push(Event::Waiting {
                    session: id,
                    queue_position: saturating_u32(position),
                });
            }
            State::Matched { .. } => {
                if let Some((profile, partner, partner_profile)) = self.end_match(id, &mut events) {
                    // The one left behind gets the first chance at someone new.
                    self.enqueue(partner, partner_profile, &mut events);
                    self.enqueue(id, profile, &mut events);
                }
            }
        }
        Ok(events)
    }

    /// `Leave`: end any match, leave the queue, become idle (a no-op when idle).
    pub fn leave(&mut self, id: SessionId) -> Vec<Event> {
        let mut events = Vec::with_capacity(3);
        let Some(entry) = self.sessions.get_mut(&id) else {
            return events;
        };
        match &entry.state {
            State::Idle => {}
            State::Waiting { profile, ticket } => {
                self.queues[queue_index(profile.gender)].remove(*ticket);
                entry.state = State::Idle;
            }
            State::Matched { .. } => {
                if let Some((_, partner, partner_profile)) = self.end_match(id, &mut events) {
                    self.enqueue(partner, partner_profile, &mut events);
                }
            }
        }
        events
    }

    /// The session has ended (closed, lost, timed out): it leaves and is forgotten.
    pub fn disconnect(&mut self, id: SessionId) -> Vec<Event> {
        let events = self.leave(id);
        self.sessions.remove(&id);
        events
    }

    /// Current counts, for `/health` and `/api/stats`.
    pub fn stats(&self) -> Stats {
        Stats {
            active_users: self.sessions.len(),
            active_matches: self.active_matches,
            male_queue: self.queues[queue_index(Gender::Male)].len(),
            female_queue: self.queues[queue_index(Gender::Female)].len(),
        }
    }

    /// The most sessions connected at once since the last call (or since the
    /// start); the count starts again from the sessions connected now.
    pub fn take_peak(&mut self) -> usize {
        std::mem::replace(&mut self.peak_sessions, self.sessions.len())
    }

    /// Ends `id`'s match: `id` becomes idle, its partner idle and told.
    /// Returns `id`'s profile, the partner and the partner's profile.
    fn end_match(
        &mut self,
        id: SessionId,
        events: &mut Vec<Event>,
    ) -> Option<(Profile, SessionId, Profile)> {
        let entry = self.sessions.get_mut(&id)?;
        let State::Matched {
            profile,
            partner,
            match_id,
        } = std::mem::replace(&mut entry.state, State::Idle)
        else {
            return None;
        };
        entry.previous_partner = Some(partner);
        self.active_matches -= 1;
        events.push(Event::MatchLeft {
            session: id,
            match_id,
        });
        let partner_entry = self.sessions.get_mut(&partner)?;
        let State::Matched {
            profile: partner_profile,
            ..
        } = std::mem::replace(&mut partner_entry.state, State::Idle)
        else {
            return None;
        };
        partner_entry.previous_partner = Some(id);
        events.push(Event::PartnerDisconnected {
            session: partner,
            match_id,
        });
        Some((profile, partner, partner_profile))
    }

    /// Matches an idle session with the longest-waiting eligible partner
    /// among the first [`MATCH_SCAN_LIMIT`] of the opposite queue, or queues
    /// it.
    fn enqueue(&mut self, id: SessionId, profile: Profile, events: &mut Vec<Event>) {
        let previous = self.sessions.get(&id).and_then(|e| e.previous_partner);
        let other_queue = &self.queues[queue_index(profile.gender.opposite())];
        let candidate = other_queue
            .iter()
            .take(MATCH_SCAN_LIMIT)
            .find_map(|(ticket, other)| {
                let theirs = self.sessions.get(&other).and_then(|e| e.previous_partner);
                (Some(other) != previous && theirs != Some(id)).then_some((ticket, other))
            });
        match candidate {
            Some((ticket, partner)) => self.pair(partner, ticket, id, profile, events),
            None => {
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                let queue = &mut self.queues[queue_index(profile.gender)];
                queue.push(ticket, id);
                let queue_position = saturating_u32(queue.len());
                if let Some(entry) = self.sessions.get_mut(&id) {
                    entry.state = State::Waiting { profile, ticket };
                }
                events.push(Event::Waiting {
                    session: id,
                    queue_position,
                });
            }
        }
    }

    /// Pairs the waiting session `waiter` (queue ticket `ticket`) with the
    /// newcomer `id`.
    fn pair(
        &mut self,
        waiter: SessionId,
        ticket: u64,
        id: SessionId,
        profile: Profile,
        events: &mut Vec<Event>,
    ) {
        let match_id = self.next_match_id;
        self.next_match_id += 1;
        let Some(waiter_entry) = self.sessions.get_mut(&waiter) else {
            return;
        };
        let State::Waiting {
            profile: waiter_profile,
            ..
        } = std::mem::replace(&mut waiter_entry.state, State::Idle)
        else {
            return;
        };
        self.queues[queue_index(waiter_profile.gender)].remove(ticket);
        waiter_entry.state = State::Matched {
            profile: waiter_profile.clone(),
            partner: id,
            match_id,
        };
        events.push(Event::Matched {
            session: waiter,
            partner: id,
            match_id,
            initiator: true,
            partner_profile: profile.clone(),
        });
        events.push(Event::Matched {
            session: id,
            partner: waiter,
            match_id,
            initiator: false,
            partner_profile: waiter_profile,
        });
        if let Some(entry) = self.sessions.get_mut(&id) {
            entry.state = State::Matched {
                profile,
                partner: waiter,
                match_id,
            };
        }
        self.active_matches += 1;
    }

    /// Checks every structural invariant, panicking with a description on the
    /// first broken one. For tests and debugging; O(sessions).
    pub fn assert_invariants(&self) {
        let mut waiting = [0usize; 2];
        let mut matched = 0usize;
        for (&id, entry) in &self.sessions {
            match &entry.state {
                State::Idle => {}
                State::Waiting { profile, ticket } => {
                    let q = queue_index(profile.gender);
                    assert_eq!(
                        self.queues[q].get(*ticket),
                        Some(id),
                        "{id} not in its queue"
                    );
                    assert!(
                        !self.queues[1 - q].iter().any(|(_, s)| s == id),
                        "{id} in both queues"
                    );
                    waiting[q] += 1;
                }
                State::Matched {
                    profile,
                    partner,
                    match_id,
                } => {
                    matched += 1;
                    assert_ne!(*partner, id, "{id} matched with itself");
                    let other = self.sessions.get(partner).expect("partner is connected");
                    let State::Matched {
                        profile: their_profile,
                        partner: their_partner,
                        match_id: their_match,
                    } = &other.state
                    else {
                        panic!("{id}'s partner {partner} is not matched");
                    };
                    assert_eq!(*their_partner, id, "match of {id} is not symmetric");
                    assert_eq!(their_match, match_id, "match ids differ");
                    assert_ne!(profile.gender, their_profile.gender, "same-gender match");
                    assert!(!self.queues.iter().any(|q| q.iter().any(|(_, s)| s == id)));
                }
            }
        }
        for queue in &self.queues {
            for (_, id) in queue.iter() {
                assert!(self.sessions.contains_key(&id), "ended session {id} queued");
            }
        }
        assert_eq!(
            waiting[0],
            self.queues[0].len(),
            "male queue holds non-waiters"
        );
        assert_eq!(
            waiting[1],
            self.queues[1].len(),
            "female queue holds non-waiters"
        );
        assert_eq!(matched, self.active_matches * 2, "match count drifted");
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

mod queue;
use queue::WaitQueue;

#[cfg(test)]
mod tests;

//! The hub as one node of a shared pool: session operations become calls of
//! the pool's script, their events arrive through the node's inbox, and a
//! heartbeat keeps the node's lease, its view of the pool and its recovery
//! after Redis trouble.
//!
//! Redis is the source of truth. A node keeps a *seat* per session (its
//! profile and where it last heard the session stands) only to answer the
//! protocol's errors without a round trip, to tell its own sessions what
//! they missed during a gap, and to write its sessions back if the pool's
//! data is lost.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Hub, Notice, State};
use crate::cluster::heartbeat::{Announcement, LiveNode};
use crate::cluster::inbox::{self, InboxHandler};
use crate::cluster::wire::{Unit, read_units};
use crate::cluster::{
    Answer, Cluster, HEARTBEAT, HeldSeat, LEASE, PoolState, RemotePartner, Unavailable, node_of,
};
use crate::codec;
use crate::peer::{PartnerLink, Routing};
use crate::protocol::{CloseCode, Profile};
use crate::registry::{RefusedError, SessionId, Stats};

/// How long a starting node waits for its inbox before it serves anyway
/// (degraded, if Redis is away).
const INBOX_WAIT: Duration = Duration::from_secs(2);

/// Where a session of this node last stood in the pool.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum Place {
    #[default]
    Idle,
    /// Joined here while Redis was away; joins the pool when it is back.
    Pending,
    Waiting,
    Matched {
        partner: String,
        match_id: u64,
        initiator: bool,
    },
}

/// This node's knowledge of one of its sessions.
#[derive(Debug, Default)]
pub(super) struct Seat {
    /// Set from `Join` to `Leave`.
    profile: Option<Profile>,
    place: Place,
    /// The highest match id the pool had given when the session last left
    /// it: a `Matched` with an id up to it that reaches the inbox later was
    /// published before that Leave, for an earlier join, and is not shown.
    left_after_match: u64,
}

/// The pool-only part of the hub's state.
#[derive(Debug, Default)]
pub(super) struct Side {
    seats: seats::Seats,
    /// The highest match id this node has seen.
    highest_match: u64,
}

impl Side {
    /// What this node's seats count for: its sessions in a match (a pair
    /// across nodes counts on both) and its waiting ones, by gender;
    /// `active_users` is left at 0 (the hub counts its peers). O(1).
    pub(super) fn counts(&self) -> Stats {
        self.seats.tally()
    }
}

/// The seats of this node's sessions, with a running tally of what they
/// count for. A seat changes only through [`Seats::edit`],
/// [`Seats::edit_or_insert`] or [`Seats::remove`], which keep the tally, so
/// the hub publishes its counts at every change without walking every seat.
///
/// [`Seats::edit`]: seats::Seats::edit
/// [`Seats::edit_or_insert`]: seats::Seats::edit_or_insert
/// [`Seats::remove`]: seats::Seats::remove
mod seats {
    use std::collections::HashMap;
    use std::collections::hash_map::{Iter, Values};
    use std::ops::{Deref, DerefMut};

    use super::{Place, Seat};
    use crate::protocol::Gender;
    use crate::registry::{SessionId, Stats};

    #[derive(Debug, Default)]
    pub(in crate::hub) struct Seats {
        map: HashMap<SessionId, Seat>,
        /// The sum of every seat's [`weight`].
        tally: Stats,
    }

    /// What one seat counts for: one session in a match, or one waiting
    /// (or pending) in its gender's queue, or nothing.
    fn weight(seat: &Seat) -> Stats {
        let gender = seat.profile.as_ref().map(|p| p.gender);
        let mut stats = Stats::default();
        match (&seat.place, gender) {
            (Place::Matched { .. }, _) => stats.active_matches = 1,
            (Place::Waiting | Place::Pending, Some(Gender::Male)) => stats.male_queue = 1,
            (Place::Waiting | Place::Pending, Some(Gender::Female)) => stats.female_queue = 1,
            _ => {}
        }
        stats
    }

    impl Seats {
        pub(in crate::hub) fn get(&self, id: &SessionId) -> Option<&Seat> {
            self.map.get(id)
        }

        pub(in crate::hub) fn iter(&self) -> Iter<'_, SessionId, Seat> {
            self.map.iter()
        }

        pub(in crate::hub) fn values(&self) -> Values<'_, SessionId, Seat> {
            self.map.values()
        }

        /// `id`'s seat, to change; the tally follows when the edit ends.
        pub(in crate::hub) fn edit(&mut self, id: &SessionId) -> Option<SeatEdit<'_>> {
            let seat = self.map.get_mut(id)?;
            Some(SeatEdit::new(seat, &mut self.tally))
        }

        /// `id`'s seat, a fresh idle one if it has none, to change.
        pub(in crate::hub) fn edit_or_insert(&mut self, id: SessionId) -> SeatEdit<'_> {
            let seat = self.map.entry(id).or_default();
            SeatEdit::new(seat, &mut self.tally)
        }

        pub(in crate::hub) fn remove(&mut self, id: &SessionId) {
            if let Some(seat) = self.map.remove(id) {
                subtract(&mut self.tally, weight(&seat));
            }
        }

        /// The sum of every seat's weight, in O(1) (checked against a full
        /// count in debug builds).
        pub(in crate::hub) fn tally(&self) -> Stats {
            debug_assert_eq!(
                self.tally,
                self.map.values().fold(Stats::default(), |mut sum, seat| {
                    add(&mut sum, weight(seat));
                    sum
                }),
                "the seats' tally drifted"
            );
            self.tally
        }
    }

    fn add(tally: &mut Stats, weight: Stats) {
        tally.active_matches += weight.active_matches;
        tally.male_queue += weight.male_queue;
        tally.female_queue += weight.female_queue;
    }

    /// Takes `weight` out of `tally`; never below zero, should the tally
    /// ever drift (which [`Seats::tally`] catches in debug builds).
    fn subtract(tally: &mut Stats, weight: Stats) {
        tally.active_matches = tally.active_matches.saturating_sub(weight.active_matches);
        tally.male_queue = tally.male_queue.saturating_sub(weight.male_queue);
        tally.female_queue = tally.female_queue.saturating_sub(weight.female_queue);
    }

    /// A seat being changed: when dropped, its old weight leaves the tally
    /// and its new one enters.
    pub(in crate::hub) struct SeatEdit<'a> {
        seat: &'a mut Seat,
        tally: &'a mut Stats,
        before: Stats,
    }

    impl<'a> SeatEdit<'a> {
        fn new(seat: &'a mut Seat, tally: &'a mut Stats) -> Self {
            let before = weight(seat);
            SeatEdit {
                seat,
                tally,
                before,
            }
        }
    }

    impl Deref for SeatEdit<'_> {
        type Target = Seat;
        fn deref(&self) -> &Seat {
            self.seat
        }
    }

    impl DerefMut for SeatEdit<'_> {
        fn deref_mut(&mut self) -> &mut Seat {
            self.seat
        }
    }

    impl Drop for SeatEdit<'_> {
        fn drop(&mut self) {
            add(self.tally, weight(self.seat));
            subtract(self.tally, self.before);
        }
    }
}

/// The pool as of this node's last heartbeat.
#[derive(Debug, Clone, Default)]
pub struct PoolView {
    /// Figures of the whole pool.
    pub pool: Stats,
    /// Every live node and what it announced.
    pub nodes: Vec<LiveNode>,
    /// Whether the last heartbeat reached Redis.
    pub reachable: bool,
}

impl Hub {
    pub(super) async fn pool_join(
        &self,
        cluster: &Cluster,
        id: SessionId,
        checked: Result<Profile, RefusedError>,
    ) -> Result<(), RefusedError> {
        let profile = {
            let mut state = self.lock();
            let seat = state.side.seats.edit_or_insert(id);
            if seat.profile.is_some() {
                return Err(RefusedError::AlreadyJoined);
            }
            checked?
        };
        // A Leave still owed to the pool goes first, or replaying it later
        // would take this new Join out again; until it is answered the seat
        // stays empty, so a late `Matched` of the earlier join is dropped.
        if cluster.take_left_of(id) {
            let owed = cluster.disconnect(id).await;
            self.left_pool(cluster, id, owed);
        }
        {
            let mut state = self.lock();
            let Some(mut seat) = state.side.seats.edit(&id) else {
                return Ok(());
            };
            seat.profile = Some(profile.clone());
            seat.place = Place::Pending;
        }
        self.enter_pool(cluster, id, &profile).await;
        Ok(())
    }

    /// Puts a joined session into the pool; if Redis is away (or this
    /// node's inbox, which would lose the answer) it stays pending here,
    /// told its place among this node's pending sessions.
    async fn enter_pool(&self, cluster: &Cluster, id: SessionId, profile: &Profile) {
        if *self.inbox_live.borrow() {
            let encoded = codec::encode(profile);
            match cluster.join(id, profile.gender, &encoded).await {
                Ok(_) => return,
                Err(error) => debug!(%error, session = id, "join waits for the pool"),
            }
        } else {
            debug!(session = id, "join waits for the inbox");
        }
        let state = self.lock();
        let still_pending = state
            .side
            .seats
            .get(&id)
            .is_some_and(|seat| seat.place == Place::Pending);
        if still_pending {
            let position = state
                .side
                .seats
                .values()
                .filter(|s| {
                    s.place == Place::Pending
                        && s.profile.as_ref().map(|p| p.gender) == Some(profile.gender)
                })
                .count();
            let notice = Notice::Waiting {
                session: id,
                queue_position: u32::try_from(position).unwrap_or(u32::MAX),
            };
            self.deliver(&state, vec![notice]);
        }
    }

    pub(super) async fn pool_stop(
        &self,
        cluster: &Cluster,
        id: SessionId,
    ) -> Result<(), RefusedError> {
        {
            let state = self.lock();
            let seat = state.side.seats.get(&id);
            match seat.map(|s| (&s.place, s.profile.is_some())) {
                None | Some((_, false)) => return Err(RefusedError::NotJoined),
                Some((Place::Pending, true)) => return Err(RefusedError::Unavailable),
                Some(_) => {}
            }
        }
        match cluster.stop(id).await {
            Ok(Answer::NotJoined) => {
                // Joined here, unknown to the pool: the pool lost its data
                // and this node has not written its sessions back yet.
                self.inbox_gap.store(true, Ordering::Relaxed);
                Err(RefusedError::Unavailable)
            }
            Ok(_) => Ok(()),
            Err(_) => Err(RefusedError::Unavailable),
        }
    }

    pub(super) async fn pool_leave(&self, cluster: &Cluster, id: SessionId) {
        {
            let mut state = self.lock();
            let had = {
                let Some(mut seat) = state.side.seats.edit(&id) else {
                    return;
                };
                seat.profile = None;
                std::mem::take(&mut seat.place)
            };
            match had {
                Place::Pending => return,
                // The route goes now, as with one process: nothing the
                // session sends from here on belongs to the match. The
                // script's own `MatchLeft` then finds the seat idle.
                Place::Matched { .. } => {
                    self.deliver(&state, vec![Notice::MatchLeft { session: id }])
                }
                Place::Idle | Place::Waiting => {}
            }
        }
        let left = cluster.leave(id).await;
        self.left_pool(cluster, id, left);
    }

    /// Notes the answer to session `id`'s Leave (or the disconnect that
    /// stood for it). A Leave clears the seat at once, but the inbox may
    /// still hold a `Matched` the pool published before it; after a new
    /// Join that one would look like the session's new match. So the seat
    /// keeps the highest match id given before the Leave, and the inbox
    /// skips matches up to it. If Redis was away, the session leaves when
    /// it is back; what the pool sends it until then is ignored.
    fn left_pool(&self, cluster: &Cluster, id: SessionId, answer: Result<u64, Unavailable>) {
        let Ok(highest) = answer else {
            cluster.leave_later(id);
            return;
        };
        let mut state = self.lock();
        // Counted as seen, so a pool restored after losing its data gives
        // higher ids than these.
        state.side.highest_match = state.side.highest_match.max(highest);
        if let Some(mut seat) = state.side.seats.edit(&id) {
            seat.left_after_match = highest;
        }
    }

    pub(super) fn pool_disconnect(&self, cluster: &Arc<Cluster>, state: &mut State, id: SessionId) {
        state.side.seats.remove(&id);
        let cluster = cluster.clone();
        tokio::spawn(async move {
            if cluster.disconnect(id).await.is_err() {
                cluster.leave_later(id);
            }
        });
    }

    /// The pool as of the last heartbeat.
    pub fn pool_view(&self) -> PoolView {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Handles one inbox message, in order: events are delivered in runs,
    /// so a match's routes are all set before its `Matched` frames go out.
    fn on_inbox(&self, cluster: &Arc<Cluster>, message: &Bytes) {
        let (units, malformed) = read_units(message);
        if malformed.is_some() {
            warn!("malformed inbox message; the rest of it is dropped");
        }
        let mut state = self.lock();
        let mut notices = Vec::new();
        for unit in units {
            let Some(peer) = state.peers.get(&unit.session()).cloned() else {
                continue;
            };
            match unit {
                Unit::Relay {
                    match_id, frame, ..
                } => {
                    self.deliver(&state, std::mem::take(&mut notices));
                    peer.push_remote_relay(match_id, frame);
                }
                Unit::Datagram {
                    match_id, payload, ..
                } => {
                    self.deliver(&state, std::mem::take(&mut notices));
                    if let Routing::Deliver(_) = peer.route(match_id) {
                        let is_chat = payload.first() == Some(&0);
                        peer.deliver_datagram(payload, is_chat, self.ack_cap);
                    }
                }
                Unit::Credit {
                    match_id, bytes, ..
                } => {
                    if let Some(remote) = peer.remote_partner(match_id) {
                        remote.credit(bytes);
                    }
                }
                Unit::Stalled { match_id, .. } => {
                    if let Routing::Deliver(_) = peer.route(match_id) {
                        if peer.has_unwritten_relays() {
                            tokio::spawn(close_if_not_reading(peer.clone(), match_id));
                        } else if let Some(remote) = peer.remote_partner(match_id) {
                            // It has written everything it was sent: the
                            // partner's credit was lost on the way (Redis
                            // away). The whole window goes back.
                            remote.return_credit(peer.relay_window());
                        }
                    }
                }
                Unit::Matched {
                    session, match_id, ..
                } if state
                    .side
                    .seats
                    .get(&session)
                    .is_some_and(|seat| match_id <= seat.left_after_match) =>
                {
                    // Should the pool's match counter ever go back (its data
                    // reloaded from an old snapshot), a real match would be
                    // skipped too: reading the sessions back, at the next
                    // heartbeat, delivers it then.
                    debug!(
                        session,
                        match_id, "a match made before the session left; skipped"
                    );
                    self.inbox_gap.store(true, Ordering::Relaxed);
                }
                event => {
                    if let Some(notice) = self.seat_event(cluster, &mut state, &peer, event) {
                        notices.push(notice);
                    }
                }
            }
        }
        self.deliver(&state, notices);
    }

    /// Applies a pool event to its session's seat; the notice to deliver,
    /// unless the seat has moved on (a left session, an ended match).
    fn seat_event(
        &self,
        cluster: &Arc<Cluster>,
        state: &mut State,
        peer: &Arc<crate::peer::Peer>,
        event: Unit,
    ) -> Option<Notice> {
        let session = event.session();
        let peers = &state.peers;
        let side = &mut state.side;
        let mut seat = side.seats.edit(&session)?;
        seat.profile.as_ref()?;
        match event {
            Unit::Waiting { position, .. } => {
                seat.place = Place::Waiting;
                Some(Notice::Waiting {
                    session,
                    queue_position: position,
                })
            }
            Unit::Matched {
                partner,
                match_id,
                initiator,
                profile,
                ..
            } => {
                let partner_profile = codec::decode::<Profile>(&profile).ok()?;
                side.highest_match = side.highest_match.max(match_id);
                let link = partner_link(cluster, peers, peer, &partner, match_id)?;
                seat.place = Place::Matched {
                    partner,
                    match_id,
                    initiator,
                };
                Some(Notice::Matched {
                    session,
                    partner: link,
                    match_id,
                    initiator,
                    partner_profile,
                })
            }
            Unit::PartnerDisconnected { match_id, .. } | Unit::MatchLeft { match_id, .. } => {
                if !matches!(&seat.place, Place::Matched { match_id: m, .. } if *m == match_id) {
                    return None;
                }
                seat.place = Place::Waiting;
                Some(match event {
                    Unit::MatchLeft { .. } => Notice::MatchLeft { session },
                    _ => Notice::PartnerDisconnected { session, match_id },
                })
            }
            _ => None,
        }
    }

    /// Reads back from the pool where this node's sessions stand and tells
    /// each what it missed; sessions the pool no longer holds join again.
    async fn reconcile(&self, cluster: &Arc<Cluster>) -> bool {
        let ids: Vec<SessionId> = {
            let state = self.lock();
            state
                .side
                .seats
                .iter()
                .filter(|(_, seat)| seat.profile.is_some())
                .map(|(&id, _)| id)
                .collect()
        };
        let Ok(states) = cluster.states(&ids).await else {
            return false;
        };
        let mut rejoin = Vec::new();
        {
            let mut state = self.lock();
            let mut notices = Vec::new();
            for (id, pooled) in ids.into_iter().zip(states) {
                let Some(peer) = state.peers.get(&id).cloned() else {
                    continue;
                };
                // The seat is brought up to date here; a new match goes
                // through `seat_event`, as from the inbox.
                let matched = {
                    let Some(mut seat) = state.side.seats.edit(&id) else {
                        continue;
                    };
                    let Some(profile) = seat.profile.clone() else {
                        continue;
                    };
                    let had = seat.place.clone();
                    if let (Place::Matched { match_id: old, .. }, false) = (
                        &had,
                        matches!(&pooled, PoolState::Matched { match_id, .. } if Some(*match_id) == matched_id(&had)),
                    ) {
                        notices.push(Notice::PartnerDisconnected {
                            session: id,
                            match_id: *old,
                        });
                        seat.place = Place::Idle;
                    }
                    match pooled {
                        PoolState::Absent => {
                            seat.place = Place::Pending;
                            rejoin.push((id, profile));
                            None
                        }
                        PoolState::Waiting { position } => {
                            if had != Place::Waiting {
                                notices.push(Notice::Waiting {
                                    session: id,
                                    queue_position: position,
                                });
                            }
                            seat.place = Place::Waiting;
                            None
                        }
                        PoolState::Matched {
                            partner,
                            match_id,
                            initiator,
                            profile,
                        } => (matched_id(&had) != Some(match_id)).then_some(Unit::Matched {
                            session: id,
                            partner,
                            match_id,
                            initiator,
                            profile,
                        }),
                    }
                };
                if let Some(unit) = matched
                    && let Some(notice) = self.seat_event(cluster, &mut state, &peer, unit)
                {
                    notices.push(notice);
                }
            }
            self.deliver(&state, notices);
        }
        for (id, profile) in rejoin {
            self.enter_pool(cluster, id, &profile).await;
        }
        true
    }

    /// Sessions that ended while Redis was away leave the pool, and pending
    /// ones join it (at every heartbeat; usually there are none). They join
    /// only while the inbox can hear the pool's answer: after Redis comes
    /// back, the inbox may subscribe a little later than a heartbeat gets
    /// through, and a retry that waited again would tell each its place
    /// again.
    async fn retry_pending(&self, cluster: &Arc<Cluster>) {
        for id in cluster.take_left() {
            let answer = cluster.disconnect(id).await;
            self.left_pool(cluster, id, answer);
        }
        if !*self.inbox_live.borrow() {
            return;
        }
        let pending: Vec<(SessionId, Profile)> = {
            let state = self.lock();
            state
                .side
                .seats
                .iter()
                .filter(|(_, seat)| seat.place == Place::Pending)
                .filter_map(|(&id, seat)| Some((id, seat.profile.clone()?)))
                .collect()
        };
        for (id, profile) in pending {
            self.enter_pool(cluster, id, &profile).await;
        }
    }

    /// After Redis lost the pool's data: writes back what this node holds,
    /// so that waits and matches go on.
    async fn restore(&self, cluster: &Arc<Cluster>) -> bool {
        let (highest, held) = {
            let state = self.lock();
            let held: Vec<HeldSeat> = state
                .side
                .seats
                .iter()
                .filter_map(|(&id, seat)| {
                    let profile = seat.profile.as_ref()?;
                    let matched = match &seat.place {
                        Place::Waiting => None,
                        Place::Matched {
                            partner,
                            match_id,
                            initiator,
                        } => Some((partner.clone(), *match_id, *initiator)),
                        Place::Idle | Place::Pending => return None,
                    };
                    Some(HeldSeat {
                        id,
                        gender: profile.gender,
                        profile: codec::encode(profile),
                        matched,
                    })
                })
                .collect();
            (state.side.highest_match, held)
        };
        match cluster.restore(highest, &held).await {
            Ok(()) => {
                let sessions = held.len();
                info!(
                    sessions,
                    "pool data was lost; this node's sessions written back"
                );
                true
            }
            Err(error) => {
                warn!(%error, "writing sessions back to the pool failed; retrying");
                false
            }
        }
    }

    /// What this node announces, from its own figures and `base`.
    fn announcement(&self, base: &Announcement) -> Announcement {
        let stats = self.node_stats();
        let open = !self.is_draining();
        Announcement {
            sessions: stats.active_users,
            matched: stats.active_matches,
            open: open && base.open,
            ..base.clone()
        }
    }

    /// Runs this node's part of the pool until `shutdown`: the inbox and the
    /// heartbeat (lease, announcement, reaping, recovery). `first_beat` is
    /// told whether the first heartbeat reached Redis, so that a node starts
    /// serving already registered (or knowing it is degraded).
    pub async fn run_pool(
        self: Arc<Self>,
        base: impl Fn() -> Announcement + Send + 'static,
        first_beat: tokio::sync::oneshot::Sender<bool>,
        shutdown: CancellationToken,
    ) {
        let mut first_beat = Some(first_beat);
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let handler: Arc<dyn InboxHandler> = Arc::new(Inbox {
            hub: Arc::downgrade(&self),
            cluster: cluster.clone(),
        });
        tokio::spawn(inbox::run(cluster.clone(), handler, shutdown.clone()));
        // A node serves once it can hear the pool: a session matched before
        // its inbox is subscribed would never be told. Bounded: with Redis
        // away the node starts degraded.
        let mut live = self.inbox_live.subscribe();
        let _ = tokio::time::timeout(INBOX_WAIT, live.wait_for(|live| *live)).await;
        let mut known_epoch: Option<String> = None;
        let mut recovery = Recovery::None;
        let mut healthy_since: Option<Instant> = None;
        let mut ticks = tokio::time::interval(HEARTBEAT);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let announcement = self.announcement(&base());
            // A node that just (re)gained Redis lets the others renew first.
            let may_reap = healthy_since.is_some_and(|since| since.elapsed() >= LEASE);
            let beat = match cluster
                .heartbeat(&announcement, &new_epoch(), may_reap)
                .await
            {
                Ok(beat) => beat,
                Err(error) => {
                    if healthy_since.take().is_some() {
                        warn!(%error, "heartbeat failed; matching across nodes is degraded");
                    }
                    self.set_reachable(false);
                    if let Some(first) = first_beat.take() {
                        let _ = first.send(false);
                    }
                    continue;
                }
            };
            let was_down = healthy_since.is_none() && known_epoch.is_some();
            healthy_since.get_or_insert_with(Instant::now);
            if beat.reaped > 0 {
                info!(sessions = beat.reaped, "reaped the sessions of dead nodes");
            }
            if known_epoch.as_ref().is_some_and(|e| *e != beat.epoch) {
                recovery = Recovery::Restore;
            } else if beat.lost && known_epoch.is_some() {
                warn!("this node was taken for dead; its sessions join again");
                recovery = Recovery::Forget;
            } else if (was_down || self.inbox_gap.swap(false, Ordering::Relaxed))
                && recovery == Recovery::None
            {
                recovery = Recovery::Reconcile;
            }
            known_epoch = Some(beat.epoch.clone());
            // Each step is retried at the next heartbeat until it succeeds.
            let done = match recovery {
                Recovery::None => true,
                Recovery::Restore => self.restore(&cluster).await,
                Recovery::Forget => {
                    cluster.forget().await.is_ok() && self.reconcile(&cluster).await
                }
                Recovery::Reconcile => self.reconcile(&cluster).await,
            };
            if done {
                recovery = Recovery::None;
                self.retry_pending(&cluster).await;
            }
            self.set_view(&beat);
            if let Some(first) = first_beat.take() {
                let _ = first.send(true);
            }
        }
    }

    fn set_reachable(&self, reachable: bool) {
        self.view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reachable = reachable;
    }

    fn set_view(&self, beat: &crate::cluster::heartbeat::Beat) {
        let (mut users, mut matched) = (0, 0);
        for node in &beat.nodes {
            users += node.announcement.sessions;
            matched += node.announcement.matched;
        }
        let view = PoolView {
            pool: Stats {
                active_users: users,
                active_matches: matched / 2,
                male_queue: beat.queues[0],
                female_queue: beat.queues[1],
            },
            nodes: beat.nodes.clone(),
            reachable: true,
        };
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = view;
    }

    /// Leaves the pool on shutdown: out of discovery at once, and, once the
    /// sessions are closed, whatever is left of this node.
    pub async fn depart_pool(&self) {
        if let Some(cluster) = &self.cluster {
            let _ = tokio::time::timeout(Duration::from_secs(1), cluster.depart()).await;
        }
    }

    /// The last step of a shutdown in a pool.
    pub async fn retire_from_pool(&self) {
        if let Some(cluster) = &self.cluster {
            let _ = tokio::time::timeout(Duration::from_secs(1), cluster.retire()).await;
        }
    }
}

/// What a node still has to do to be in step with the pool again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    None,
    /// The pool lost its data: write back what this node holds.
    Restore,
    /// This node was reaped while away: clear its leftovers, then reconcile.
    Forget,
    /// Events may have been missed: read the sessions' states back.
    Reconcile,
}

fn matched_id(place: &Place) -> Option<u64> {
    match place {
        Place::Matched { match_id, .. } => Some(*match_id),
        _ => None,
    }
}

/// How a session of this node reaches the partner `member` of `match_id`.
fn partner_link(
    cluster: &Arc<Cluster>,
    peers: &HashMap<SessionId, Arc<crate::peer::Peer>>,
    peer: &crate::peer::Peer,
    member: &str,
    match_id: u64,
) -> Option<PartnerLink> {
    let (node, session) = node_of(member)?;
    if node == &**cluster.node() {
        // A partner that has already gone gets a link to nothing: its
        // disconnect's events follow.
        let weak = peers.get(&session).map_or_else(Weak::new, Arc::downgrade);
        return Some(PartnerLink::Local(weak));
    }
    Some(PartnerLink::Remote(Arc::new(RemotePartner::new(
        node.into(),
        session,
        match_id,
        cluster.bus().clone(),
        peer.relay_window(),
    ))))
}

/// A fresh epoch to propose: it takes only if the pool has none.
fn new_epoch() -> String {
    crate::cluster::new_node_id()
}

/// The inbox's way into the hub.
struct Inbox {
    hub: Weak<Hub>,
    cluster: Arc<Cluster>,
}

impl InboxHandler for Inbox {
    fn message(&self, message: Bytes) {
        if let Some(hub) = self.hub.upgrade() {
            hub.on_inbox(&self.cluster, &message);
        }
    }

    /// After a gap, the heartbeat reads the sessions back once it knows
    /// whether the pool kept its data (a restore) or not.
    fn subscribed(&self, after_gap: bool) {
        if let Some(hub) = self.hub.upgrade() {
            if after_gap {
                hub.inbox_gap.store(true, Ordering::Relaxed);
            }
            hub.inbox_live.send_replace(true);
        }
    }

    fn unsubscribed(&self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.inbox_live.send_replace(false);
        }
    }
}

/// A partner on another node found no credit for a while and `peer` has
/// relays waiting unwritten: closes `peer` if its connection sends no stream
/// data for the next [`RELAY_STALL_TIMEOUT`] (its client reads nothing). One
/// that reads, however slowly, is left alone; its partner only waits.
///
/// [`RELAY_STALL_TIMEOUT`]: crate::peer::RELAY_STALL_TIMEOUT
async fn close_if_not_reading(peer: Arc<crate::peer::Peer>, match_id: u64) {
    let before = peer.stream_frames_sent();
    tokio::time::sleep(crate::peer::RELAY_STALL_TIMEOUT).await;
    let still_matched = matches!(peer.route(match_id), Routing::Deliver(_));
    if still_matched && peer.has_unwritten_relays() && peer.stream_frames_sent() == before {
        peer.request_close(CloseCode::Abuse, "not reading the signaling stream");
    }
}

//! The phases every scenario starts with: connect every session, join them
//! all, and check every `Matched` against the partner's before pairing them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use quicmatch::protocol::{ClientMsg, Profile, ServerMsg};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::args::Scenario;
use crate::loopback::{ClientEndpoint, Target};
use crate::pair::Pair;
use crate::session::{Session, gender_of, index_of, name_of};
use crate::shared::{Counters, Shared};
use crate::tasks::collect;

/// A session's match, as its `Matched` told it.
#[derive(Debug, Clone, Copy)]
pub struct MatchInfo {
    /// The match's id.
    pub match_id: u64,
    /// The partner's session index.
    pub partner: u32,
    /// Whether this session is the match's initiator.
    pub initiator: bool,
}

/// Connects every session, `--connect-concurrency` handshakes at a time,
/// spread over `endpoints`, each to its node's entry of `targets` (one
/// per `--url`); failures are recorded and left out.
pub async fn connect_all(
    endpoints: &[Arc<ClientEndpoint>],
    targets: &[Target],
    shared: &Arc<Shared>,
) -> Vec<Session> {
    let args = &shared.args;
    let total = args.sessions();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency as usize));
    let mut set = JoinSet::new();
    for index in 0..total {
        let endpoint = endpoints[(index % args.connectors) as usize].clone();
        let target = targets[args.node_of(index)].clone();
        let (permits, shared) = (permits.clone(), shared.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.ok();
            let result = connect_one(&endpoint, &target, index, &shared).await;
            if result.is_ok() {
                Counters::add(&shared.counters.connected, 1);
            }
            result
        });
    }
    let mut sessions = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs(args.phase_timeout_secs);
    for result in collect(&mut set, deadline, shared, "connect phase").await {
        match result {
            Ok(session) => sessions.push(session),
            Err(error) => shared.error(format!("{error:#}")),
        }
    }
    sessions
}

/// Connects session `index` and proves the server has admitted it (ping).
async fn connect_one(
    endpoint: &ClientEndpoint,
    target: &Target,
    index: u32,
    shared: &Shared,
) -> anyhow::Result<Session> {
    let mut session = Session::open(endpoint, target, index, shared.args.frame_rate).await?;
    // Unpaced, so that the Join after it is not held back.
    let nonce = u64::from(index);
    session.send_now(&ClientMsg::Ping { nonce }).await?;
    loop {
        match session.next_msg().await? {
            ServerMsg::Pong { nonce: got } if got == nonce => return Ok(session),
            other => shared.error(format!(
                "session {index}: unexpected {other:?} before joining"
            )),
        }
    }
}

/// Joins every session at once and waits for their `Matched`; the sessions
/// that failed (recorded) come back second.
pub async fn join_all(
    sessions: Vec<Session>,
    shared: &Arc<Shared>,
) -> (Vec<(Session, MatchInfo)>, Vec<Session>) {
    let mut set = JoinSet::new();
    for mut session in sessions {
        let shared = shared.clone();
        set.spawn(async move {
            let result = join_one(&mut session).await;
            if result.is_ok() {
                Counters::add(&shared.counters.matched, 1);
            }
            (session, result)
        });
    }
    let (mut matched, mut failed) = (Vec::with_capacity(set.len()), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(shared.args.phase_timeout_secs);
    for (session, result) in collect(&mut set, deadline, shared, "join phase").await {
        match result {
            Ok(info) => matched.push((session, info)),
            Err(error) => {
                shared.error(format!("{error:#}"));
                failed.push(session);
            }
        }
    }
    (matched, failed)
}

/// Joins and waits for `Matched`, checking the partner is one of ours, of
/// the other gender.
async fn join_one(session: &mut Session) -> anyhow::Result<MatchInfo> {
    let index = session.index;
    let gender = gender_of(index);
    session
        .send(&ClientMsg::Join(Profile {
            name: name_of(index),
            age: 30,
            gender,
        }))
        .await?;
    loop {
        match session.next_msg().await? {
            ServerMsg::Waiting { .. } => {}
            ServerMsg::Matched {
                match_id,
                partner,
                initiator,
                ..
            } => {
                let partner_index = index_of(&partner.name).with_context(|| {
                    format!(
                        "session {index}: partner name {:?} is not ours",
                        partner.name
                    )
                })?;
                ensure!(
                    partner.gender != gender && gender_of(partner_index) == partner.gender,
                    "session {index}: matched with {} of the wrong gender",
                    partner.name
                );
                return Ok(MatchInfo {
                    match_id,
                    partner: partner_index,
                    initiator,
                });
            }
            other => bail!("session {index}: expected Matched, got {other:?}"),
        }
    }
}

/// The matched sessions, paired up for the scenario.
#[derive(Default)]
pub struct Paired {
    /// Pairs for relay and chat.
    pub pairs: Vec<Pair>,
    /// Both sessions of every match, with their first match, for churn.
    pub firsts: Vec<(Session, MatchInfo)>,
    /// Sessions whose match their partner did not mirror (recorded as misrouted).
    pub unpaired: Vec<Session>,
}

/// Checks every match against its partner's, then forms the pairs (or, for
/// churn, keeps each session with its first match).
pub fn pair_up(
    mut matched: Vec<(Session, MatchInfo)>,
    scenario: Scenario,
    shared: &Shared,
) -> Paired {
    let total = shared.args.sessions();
    matched.sort_by_key(|(s, _)| s.index);
    let mut slots: Vec<Option<(Session, MatchInfo)>> = (0..total).map(|_| None).collect();
    for (session, info) in matched {
        let index = session.index as usize;
        slots[index] = Some((session, info));
    }
    let mut paired = Paired::default();
    for index in 0..total as usize {
        let Some((_, info)) = &slots[index] else {
            continue;
        };
        let info = *info;
        if !info.initiator {
            continue;
        }
        let partner = info.partner as usize;
        let consistent = matches!(
            slots.get(partner),
            Some(Some((_, theirs))) if theirs.partner as usize == index && theirs.match_id == info.match_id && !theirs.initiator
        );
        if !consistent {
            shared.misrouted(format!(
                "session {index}: match {} is not mirrored by its partner {partner}",
                info.match_id
            ));
            continue;
        }
        let (Some((initiator, a)), Some((responder, b))) =
            (slots[index].take(), slots[partner].take())
        else {
            continue;
        };
        if scenario == Scenario::Churn {
            paired.firsts.push((initiator, a));
            paired.firsts.push((responder, b));
        } else {
            paired.pairs.push(Pair {
                id: paired.pairs.len(),
                match_id: info.match_id,
                cross_node: shared.args.node_of(initiator.index)
                    != shared.args.node_of(responder.index),
                initiator,
                responder,
            });
        }
    }
    for (session, info) in slots.into_iter().flatten() {
        shared.misrouted(format!(
            "session {}: match {} has no consistent partner",
            session.index, info.match_id
        ));
        paired.unpaired.push(session);
    }
    paired
}

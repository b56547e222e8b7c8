//! The churn scenario: every match is ended at once by its initiator
//! (`Stop`) and both sessions are re-matched, again and again for
//! `--duration-secs`. Every session logs its matches; afterwards both sides
//! of every match must agree.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quicmatch::protocol::{ClientMsg, ServerMsg};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::procfs::{Sample, sample};
use crate::session::{Session, gender_of, index_of};
use crate::setup::MatchInfo;
use crate::shared::{Counters, Shared};
use crate::tasks::collect;

/// What a churn run hands back.
pub struct ChurnResult {
    /// Sampled once every session has seen the end of the churn.
    pub end: Sample,
    /// Every session, to close at teardown.
    pub sessions: Vec<Session>,
    /// Distinct matches whose two sides were checked against each other.
    pub matches_checked: u64,
}

/// Runs the churn with every session of `firsts` (each with its first
/// match) for `--duration-secs`, then checks every match's two sides.
pub async fn churn(firsts: Vec<(Session, MatchInfo)>, shared: &Arc<Shared>) -> ChurnResult {
    let args = &shared.args;
    let phase_limit = Duration::from_secs(args.phase_timeout_secs);
    if args.pairs < 2 {
        eprintln!(
            "quicmatch-load: churn with one pair cannot re-match (never the previous partner)"
        );
    }
    let stop = CancellationToken::new();
    let barrier = Arc::new(Barrier::new(firsts.len() + 1));
    let mut set = JoinSet::new();
    for (session, info) in firsts {
        set.spawn(churn_session(
            session,
            info,
            stop.clone(),
            barrier.clone(),
            shared.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    stop.cancel();
    // Every session has pinged after its last Stop: the churn is over.
    if timeout(phase_limit, barrier.wait()).await.is_err() {
        shared.fail("churn: sessions never finished".into());
    }
    let end = sample(&args.server_pid);
    let (mut logs, mut sessions) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + phase_limit;
    for outcome in collect(&mut set, deadline, shared, "churn drain").await {
        logs.extend(outcome.log);
        sessions.push(outcome.session);
    }
    ChurnResult {
        end,
        sessions,
        matches_checked: check_match_logs(&logs, shared),
    }
}

/// One entry of a churning session's match log.
#[derive(Debug, Clone, Copy)]
struct MatchRecord {
    /// The match's id.
    match_id: u64,
    /// The session that logged it.
    me: u32,
    /// Its partner in that match.
    partner: u32,
    /// Whether `me` was the initiator.
    initiator: bool,
}

/// What a churning session hands back.
struct ChurnOutcome {
    /// The session, to close at teardown.
    session: Session,
    /// Every match it was in, in order.
    log: Vec<MatchRecord>,
}

/// A churning session's view of its own state.
struct ChurnState {
    /// The session's index.
    index: u32,
    /// Its current match and partner, if any.
    current: Option<(u64, u32)>,
    /// Every match it was in, in order.
    log: Vec<MatchRecord>,
    /// Whether it should stop its current match (it is the initiator).
    want_stop: bool,
    /// Whether new matches still count towards the churn's figure.
    counting: bool,
}

impl ChurnState {
    /// The state of session `index` in its first match.
    fn new(index: u32, first: MatchInfo) -> ChurnState {
        ChurnState {
            index,
            current: Some((first.match_id, first.partner)),
            log: vec![MatchRecord {
                match_id: first.match_id,
                me: index,
                partner: first.partner,
                initiator: first.initiator,
            }],
            want_stop: first.initiator,
            counting: true,
        }
    }

    /// Takes one server message; `stopping` once the churn is over.
    fn on_msg(&mut self, msg: ServerMsg, stopping: bool, shared: &Shared) {
        let index = self.index;
        match msg {
            ServerMsg::Matched {
                match_id,
                partner,
                initiator,
                ..
            } => {
                let Some(partner_index) = index_of(&partner.name) else {
                    return shared.misrouted(format!(
                        "session {index}: partner {:?} is not ours",
                        partner.name
                    ));
                };
                self.on_matched(match_id, partner_index, initiator, stopping, shared);
            }
            ServerMsg::PartnerDisconnected { match_id } => {
                if self.current.map(|c| c.0) != Some(match_id) {
                    shared.misrouted(format!(
                        "session {index}: PartnerDisconnected {match_id}, but its match is {:?}",
                        self.current
                    ));
                }
                self.current = None;
            }
            ServerMsg::Waiting { .. } => {
                if let Some((old, _)) = self.current {
                    shared.misrouted(format!("session {index}: Waiting while in match {old}"));
                }
            }
            ServerMsg::Error { code, message } => {
                shared.error(format!("session {index}: Error {code:?}: {message}"))
            }
            other => shared.error(format!("session {index}: unexpected {other:?}")),
        }
    }

    /// Takes a `Matched` with one of our sessions, `partner`: checks it
    /// (not while in a match, other gender, not the previous partner) and
    /// logs it.
    fn on_matched(
        &mut self,
        match_id: u64,
        partner: u32,
        initiator: bool,
        stopping: bool,
        shared: &Shared,
    ) {
        let index = self.index;
        if let Some((old, _)) = self.current {
            shared.misrouted(format!(
                "session {index}: Matched {match_id} while still in match {old}"
            ));
        }
        if gender_of(partner) == gender_of(index) {
            shared.misrouted(format!(
                "session {index}: matched with same-gender {partner}"
            ));
        }
        if self.log.last().is_some_and(|last| last.partner == partner) {
            shared.misrouted(format!(
                "session {index}: re-matched with its previous partner {partner}"
            ));
        }
        self.log.push(MatchRecord {
            match_id,
            me: index,
            partner,
            initiator,
        });
        self.current = Some((match_id, partner));
        if initiator && self.counting {
            Counters::add(&shared.counters.matches, 1);
        }
        self.want_stop = initiator && !stopping;
    }
}

/// Churn scenario for one session: the initiator of each of its matches
/// stops it at once; until `stop` is cancelled. Then two rounds of pings
/// separated by a barrier make sure every message of every match has arrived.
async fn churn_session(
    mut session: Session,
    first: MatchInfo,
    stop: CancellationToken,
    barrier: Arc<Barrier>,
    shared: Arc<Shared>,
) -> ChurnOutcome {
    let index = session.index;
    let mut state = ChurnState::new(index, first);
    let limit = Duration::from_secs(shared.args.duration_secs + shared.args.phase_timeout_secs);
    let churn = async {
        loop {
            if state.want_stop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    _ = session.frames.ready() => {}
                }
                session.send_now(&ClientMsg::Stop).await?;
                state.want_stop = false;
                state.current = None;
            }
            let msg = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                msg = session.next_msg() => msg?,
            };
            state.on_msg(msg, false, &shared);
        }
        // Every Stop this session sent has now been handled by the server.
        session
            .ping(1 << 41, |msg| state.on_msg(msg, true, &shared))
            .await
    };
    let first_round = timeout(limit, churn).await;
    match &first_round {
        Ok(Ok(())) => {}
        Ok(Err(error)) => shared.error(format!("session {index}: churn: {error:#}")),
        Err(_) => shared.error(format!("session {index}: churn did not finish in time")),
    }
    barrier.wait().await;
    state.counting = false;
    if matches!(first_round, Ok(Ok(()))) {
        // Every Stop of every session has been handled: whatever they caused
        // is queued ahead of this pong.
        let who = format!("session {index}");
        session
            .final_ping(1 << 42, limit, &who, &shared, |msg| {
                state.on_msg(msg, true, &shared)
            })
            .await;
    }
    ChurnOutcome {
        session,
        log: state.log,
    }
}

/// Checks that both sides of every match saw the same match; returns how
/// many distinct matches there were.
fn check_match_logs(logs: &[MatchRecord], shared: &Shared) -> u64 {
    let mut by_match: HashMap<u64, Vec<&MatchRecord>> = HashMap::with_capacity(logs.len() / 2 + 1);
    for record in logs {
        by_match.entry(record.match_id).or_default().push(record);
    }
    for (match_id, sides) in &by_match {
        let ok = match sides.as_slice() {
            [a, b] => a.partner == b.me && b.partner == a.me && a.initiator != b.initiator,
            _ => false,
        };
        if !ok {
            shared.misrouted(format!("match {match_id} seen inconsistently: {sides:?}"));
        }
    }
    by_match.len() as u64
}

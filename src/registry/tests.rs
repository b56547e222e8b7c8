//! Unit and property tests of the match registry.

use super::*;
use proptest::prelude::*;

fn profile(name: &str, gender: Gender) -> Profile {
    Profile {
        name: name.into(),
        age: 30,
        gender,
    }
}

fn registry() -> Registry {
    Registry::new(18, 1_000)
}

/// The (session, match_id) pairs of the Matched events.
fn matched(events: &[Event]) -> Vec<(SessionId, SessionId, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Matched {
                session,
                partner,
                match_id,
                ..
            } => Some((*session, *partner, *match_id)),
            _ => None,
        })
        .collect()
}

#[test]
fn first_join_waits_then_opposite_gender_matches() {
    let mut r = registry();
    let (a, b) = (r.connect().unwrap(), r.connect().unwrap());
    let ev = r.join(a, profile("Ann", Gender::Female)).unwrap();
    assert_eq!(
        ev,
        vec![Event::Waiting {
            session: a,
            queue_position: 1
        }]
    );
    let ev = r.join(b, profile("  Bob ", Gender::Male)).unwrap();
    assert_eq!(
        ev,
        vec![
            Event::Matched {
                session: a,
                partner: b,
                match_id: 1,
                initiator: true,
                partner_profile: profile("Bob", Gender::Male),
            },
            Event::Matched {
                session: b,
                partner: a,
                match_id: 1,
                initiator: false,
                partner_profile: profile("Ann", Gender::Female),
            },
        ]
    );
    assert_eq!(
        r.stats(),
        Stats {
            active_users: 2,
            active_matches: 1,
            male_queue: 0,
            female_queue: 0
        }
    );
    r.assert_invariants();
}

#[test]
fn same_gender_queues_in_fifo_order() {
    let mut r = registry();
    let men: Vec<_> = (0..3).map(|_| r.connect().unwrap()).collect();
    for (i, &m) in men.iter().enumerate() {
        let ev = r.join(m, profile("M", Gender::Male)).unwrap();
        assert_eq!(
            ev,
            vec![Event::Waiting {
                session: m,
                queue_position: i as u32 + 1
            }]
        );
    }
    let w = r.connect().unwrap();
    let ev = r.join(w, profile("W", Gender::Female)).unwrap();
    assert_eq!(matched(&ev), vec![(men[0], w, 1), (w, men[0], 1)]);
    r.assert_invariants();
}

#[test]
fn stop_while_waiting_reports_the_position_after_departures() {
    let mut r = registry();
    let men: Vec<_> = (0..5).map(|_| r.connect().unwrap()).collect();
    for &m in &men {
        r.join(m, profile("M", Gender::Male)).unwrap();
    }
    r.leave(men[1]);
    r.disconnect(men[3]);
    let position = |r: &mut Registry, id| r.stop(id).unwrap();
    assert_eq!(
        position(&mut r, men[4]),
        vec![Event::Waiting {
            session: men[4],
            queue_position: 3
        }]
    );
    assert_eq!(
        position(&mut r, men[0]),
        vec![Event::Waiting {
            session: men[0],
            queue_position: 1
        }]
    );
    // The one who left joins again at the back.
    r.join(men[1], profile("M", Gender::Male)).unwrap();
    assert_eq!(
        position(&mut r, men[1]),
        vec![Event::Waiting {
            session: men[1],
            queue_position: 4
        }]
    );
    r.assert_invariants();
}

#[test]
fn join_twice_and_invalid_profiles_are_refused() {
    let mut r = registry();
    let a = r.connect().unwrap();
    for (bad, why) in [
        (profile("   ", Gender::Male), "empty"),
        (profile(&"x".repeat(33), Gender::Male), "longer"),
        (profile("a\u{7}b", Gender::Male), "control"),
        (
            Profile {
                age: 17,
                ..profile("A", Gender::Male)
            },
            "age",
        ),
        (
            Profile {
                age: 121,
                ..profile("A", Gender::Male)
            },
            "age",
        ),
    ] {
        match r.join(a, bad) {
            Err(RefusedError::InvalidProfile(msg)) => assert!(msg.contains(why), "{msg}"),
            other => panic!("expected InvalidProfile, got {other:?}"),
        }
    }
    // 32 characters (not bytes) is fine.
    r.join(a, profile(&"é".repeat(32), Gender::Male)).unwrap();
    assert_eq!(
        r.join(a, profile("A", Gender::Male)),
        Err(RefusedError::AlreadyJoined)
    );
    r.assert_invariants();
}

#[test]
fn stop_rematches_both_but_never_with_each_other() {
    let mut r = registry();
    let (m1, w1, w2) = (
        r.connect().unwrap(),
        r.connect().unwrap(),
        r.connect().unwrap(),
    );
    r.join(m1, profile("m1", Gender::Male)).unwrap();
    r.join(w1, profile("w1", Gender::Female)).unwrap();
    r.join(w2, profile("w2", Gender::Female)).unwrap();
    // w1 presses Next: m1 is told, re-queued first and gets w2; w1 waits.
    let ev = r.stop(w1).unwrap();
    assert_eq!(
        ev[0],
        Event::MatchLeft {
            session: w1,
            match_id: 1
        }
    );
    assert_eq!(
        ev[1],
        Event::PartnerDisconnected {
            session: m1,
            match_id: 1
        }
    );
    assert_eq!(matched(&ev), vec![(w2, m1, 2), (m1, w2, 2)]);
    assert_eq!(
        ev.last(),
        Some(&Event::Waiting {
            session: w1,
            queue_position: 1
        })
    );
    // Stop while waiting answers Waiting again.
    assert_eq!(
        r.stop(w1).unwrap(),
        vec![Event::Waiting {
            session: w1,
            queue_position: 1
        }]
    );
    r.assert_invariants();
}

#[test]
fn previous_partner_is_skipped_until_someone_else_comes() {
    let mut r = registry();
    let (m, w) = (r.connect().unwrap(), r.connect().unwrap());
    r.join(m, profile("m", Gender::Male)).unwrap();
    r.join(w, profile("w", Gender::Female)).unwrap();
    let ev = r.stop(m).unwrap();
    assert!(
        matched(&ev).is_empty(),
        "rematched with previous partner: {ev:?}"
    );
    assert_eq!(r.stats().male_queue + r.stats().female_queue, 2);
    let w2 = r.connect().unwrap();
    let ev = r.join(w2, profile("w2", Gender::Female)).unwrap();
    assert_eq!(matched(&ev), vec![(m, w2, 2), (w2, m, 2)]);
    r.assert_invariants();
}

#[test]
fn stop_and_leave_when_idle() {
    let mut r = registry();
    let a = r.connect().unwrap();
    assert_eq!(r.stop(a), Err(RefusedError::NotJoined));
    assert!(r.leave(a).is_empty());
    assert_eq!(r.stop(999), Err(RefusedError::NotJoined));
}

#[test]
fn leave_and_disconnect_requeue_the_partner() {
    let mut r = registry();
    let (m, w) = (r.connect().unwrap(), r.connect().unwrap());
    r.join(m, profile("m", Gender::Male)).unwrap();
    r.join(w, profile("w", Gender::Female)).unwrap();
    let ev = r.leave(m);
    assert_eq!(
        ev,
        vec![
            Event::MatchLeft {
                session: m,
                match_id: 1
            },
            Event::PartnerDisconnected {
                session: w,
                match_id: 1
            },
            Event::Waiting {
                session: w,
                queue_position: 1
            },
        ]
    );
    // m may join again, with a new profile; it is not matched with w again.
    let ev = r.join(m, profile("m2", Gender::Male)).unwrap();
    assert_eq!(
        ev,
        vec![Event::Waiting {
            session: m,
            queue_position: 1
        }]
    );
    let ev = r.disconnect(w);
    assert!(ev.is_empty());
    assert_eq!(
        r.stats(),
        Stats {
            active_users: 1,
            active_matches: 0,
            male_queue: 1,
            female_queue: 0
        }
    );
    r.disconnect(m);
    assert_eq!(r.stats(), Stats::default());
    r.assert_invariants();
}

#[test]
fn capacity_is_enforced_and_freed_by_disconnect() {
    let mut r = Registry::new(18, 2);
    let a = r.connect().unwrap();
    r.connect().unwrap();
    assert_eq!(r.connect(), Err(AtCapacity));
    r.disconnect(a);
    assert!(r.connect().is_ok());
}

#[test]
fn match_ids_are_never_reused() {
    let mut r = registry();
    let m = r.connect().unwrap();
    r.join(m, profile("m", Gender::Male)).unwrap();
    let mut seen = std::collections::HashSet::new();
    for i in 0..10 {
        let w = r.connect().unwrap();
        let ev = r
            .join(w, profile(&format!("w{i}"), Gender::Female))
            .unwrap();
        let pairs = matched(&ev);
        assert_eq!(pairs.len(), 2, "{ev:?}");
        assert!(seen.insert(pairs[0].2));
        // Everyone m has met waits again, and none of them is offered to m.
        assert!(matched(&r.stop(m).unwrap()).is_empty());
    }
    r.assert_invariants();
}

#[derive(Debug, Clone)]
enum Op {
    Connect,
    Join(usize, Gender, u8),
    Stop(usize),
    Leave(usize),
    Disconnect(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let gender = prop_oneof![Just(Gender::Male), Just(Gender::Female)];
    prop_oneof![
        1 => Just(Op::Connect),
        4 => (any::<usize>(), gender, 10u8..130).prop_map(|(i, g, a)| Op::Join(i, g, a)),
        2 => any::<usize>().prop_map(Op::Stop),
        1 => any::<usize>().prop_map(Op::Leave),
        1 => any::<usize>().prop_map(Op::Disconnect),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random operation sequences over many sessions keep every invariant:
    /// one queue or match per session, symmetric opposite-gender matches, no
    /// ended session ever offered, never the immediately previous partner,
    /// counts that agree with the state.
    #[test]
    fn random_operations_keep_invariants(ops in prop::collection::vec(op(), 1..300)) {
        let mut r = Registry::new(18, 40);
        let mut live: Vec<SessionId> = Vec::new();
        let mut ended = std::collections::HashSet::new();
        let mut previous: HashMap<SessionId, SessionId> = HashMap::new();
        let mut current: HashMap<SessionId, (SessionId, u64)> = HashMap::new();
        let mut match_ids = std::collections::HashSet::new();
        for op in ops {
            let pick = |i: usize| live.get(i % live.len().max(1)).copied();
            let events = match op {
                Op::Connect => {
                    if let Ok(id) = r.connect() { live.push(id); }
                    Vec::new()
                }
                Op::Join(i, g, age) => match pick(i) {
                    Some(id) => r.join(id, Profile { name: format!("s{id}"), age, gender: g })
                        .unwrap_or_default(),
                    None => Vec::new(),
                },
                Op::Stop(i) => pick(i).map(|id| r.stop(id).unwrap_or_default()).unwrap_or_default(),
                Op::Leave(i) => pick(i).map(|id| r.leave(id)).unwrap_or_default(),
                Op::Disconnect(i) => match pick(i) {
                    Some(id) => {
                        live.retain(|&s| s != id);
                        ended.insert(id);
                        r.disconnect(id)
                    }
                    None => Vec::new(),
                },
            };
            for event in &events {
                match event {
                    Event::Matched { session, partner, match_id, .. } => {
                        prop_assert!(!ended.contains(session) && !ended.contains(partner));
                        prop_assert_ne!(previous.get(session), Some(partner));
                        prop_assert!(!current.contains_key(session), "matched twice");
                        current.insert(*session, (*partner, *match_id));
                        if *session < *partner {
                            prop_assert!(match_ids.insert(*match_id), "match id reused");
                        }
                    }
                    Event::PartnerDisconnected { session, match_id }
                    | Event::MatchLeft { session, match_id } => {
                        let (partner, id) = current.remove(session).expect("was matched");
                        prop_assert_eq!(id, *match_id);
                        previous.insert(*session, partner);
                    }
                    Event::Waiting { session, queue_position } => {
                        prop_assert!(!ended.contains(session));
                        prop_assert!(*queue_position >= 1);
                    }
                }
            }
            r.assert_invariants();
            let stats = r.stats();
            prop_assert_eq!(stats.active_users, live.len());
            prop_assert_eq!(stats.active_matches * 2, current.len());
        }
    }
}

#[test]
fn peak_counts_the_most_sessions_since_last_taken() {
    let mut r = registry();
    let ids: Vec<_> = (0..5).map(|_| r.connect().unwrap()).collect();
    for id in &ids[..4] {
        r.disconnect(*id);
    }
    assert_eq!(r.take_peak(), 5);
    assert_eq!(r.take_peak(), 1);
}

/// A `Join` examines at most [`MATCH_SCAN_LIMIT`] waiters: with that many
/// ineligible ones (each had the joiner as previous partner) in front, it
/// waits rather than scan on to the eligible one behind them.
#[test]
fn a_match_attempt_examines_a_bounded_number_of_waiters() {
    let mut r = Registry::new(18, MATCH_SCAN_LIMIT + 10);
    let bob = r.connect().unwrap();
    let mut women = Vec::new();
    for i in 0..=MATCH_SCAN_LIMIT {
        let woman = r.connect().unwrap();
        r.join(woman, profile(&format!("W{i}"), Gender::Female))
            .unwrap();
        women.push(woman);
    }
    // All but the last had Bob as their previous partner.
    for &woman in &women[..MATCH_SCAN_LIMIT] {
        if let Some(entry) = r.sessions.get_mut(&woman) {
            entry.previous_partner = Some(bob);
        }
    }
    let events = r.join(bob, profile("Bob", Gender::Male)).unwrap();
    assert!(matched(&events).is_empty(), "{events:?}");
    assert_eq!(r.stats().male_queue, 1);
    // With one ineligible waiter fewer, the eligible one is within reach.
    let mut r2 = Registry::new(18, MATCH_SCAN_LIMIT + 10);
    let bob2 = r2.connect().unwrap();
    let mut women2 = Vec::new();
    for i in 0..MATCH_SCAN_LIMIT {
        let woman = r2.connect().unwrap();
        r2.join(woman, profile(&format!("W{i}"), Gender::Female))
            .unwrap();
        women2.push(woman);
    }
    for &woman in &women2[..MATCH_SCAN_LIMIT - 1] {
        if let Some(entry) = r2.sessions.get_mut(&woman) {
            entry.previous_partner = Some(bob2);
        }
    }
    let events = r2.join(bob2, profile("Bob", Gender::Male)).unwrap();
    assert_eq!(matched(&events).len(), 2, "{events:?}");
}

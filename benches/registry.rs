//! Benchmarks of the matching state machine with a long queue: 10,000
//! sessions already waiting when each measured operation runs.
//!
//! Every benchmark keeps the registry in a steady state (the queue stays at
//! 10,000) by undoing each measured operation outside the timed region; the
//! time is taken around the one registry call only (`iter_custom`), so the
//! figures include about 40 ns of clock reads.
//!
//! Run with `cargo bench --bench registry`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use quicmatch::protocol::{Gender, Profile};
use quicmatch::registry::{Event, Registry, SessionId};

/// Sessions waiting in the queue during every measurement.
const WAITING: usize = 10_000;

fn profile(gender: Gender) -> Profile {
    Profile {
        name: "  Alexandra  ".into(),
        age: 29,
        gender,
    }
}

/// A registry with `WAITING` men waiting.
fn men_waiting() -> Registry {
    let mut registry = Registry::new(18, usize::MAX);
    for _ in 0..WAITING {
        let id = registry.connect().expect("room");
        registry.join(id, profile(Gender::Male)).expect("join");
    }
    registry
}

fn matched_with(events: &[Event], id: SessionId) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::Matched { session, .. } if *session == id))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry/10k_waiting");

    // A woman connects and joins: matched at once with the man waiting longest.
    // Undo: she disconnects, which puts him back at the end of the queue.
    group.bench_function("join_match", |b| {
        let mut registry = men_waiting();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let id = registry.connect().expect("room");
                let start = Instant::now();
                let events = registry.join(black_box(id), profile(Gender::Female));
                total += start.elapsed();
                assert!(events.is_ok_and(|e| matched_with(&e, id)));
                registry.disconnect(id);
            }
            total
        })
    });

    // A matched woman stops: her partner goes to the back of the queue and she
    // is matched with the man at its front. Undo: she disconnects (her new
    // partner goes to the back). A fresh woman each time, so that no man
    // waits with her as his previous partner (whom he may not meet again).
    group.bench_function("stop_rematch", |b| {
        let mut registry = men_waiting();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let id = registry.connect().expect("room");
                registry.join(id, profile(Gender::Female)).expect("join");
                let start = Instant::now();
                let events = registry.stop(black_box(id));
                total += start.elapsed();
                assert!(events.is_ok_and(|e| matched_with(&e, id)));
                registry.disconnect(id);
            }
            total
        })
    });

    // A matched woman leaves: her partner is re-queued at the back.
    // Undo: she disconnects; a fresh woman each time, as above.
    group.bench_function("leave_matched", |b| {
        let mut registry = men_waiting();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let id = registry.connect().expect("room");
                registry.join(id, profile(Gender::Female)).expect("join");
                let start = Instant::now();
                let events = registry.leave(black_box(id));
                total += start.elapsed();
                assert_eq!(events.len(), 3);
                registry.disconnect(id);
            }
            total
        })
    });

    // The man at the front of the queue leaves it.
    // Undo: he joins again, at the back.
    group.bench_function("leave_waiting", |b| {
        let mut registry = men_waiting();
        let mut order: std::collections::VecDeque<SessionId> = (1..=WAITING as u64).collect();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let id = order.pop_front().expect("queue");
                let start = Instant::now();
                let events = registry.leave(black_box(id));
                total += start.elapsed();
                assert!(events.is_empty());
                registry.join(id, profile(Gender::Male)).expect("join");
                order.push_back(id);
            }
            total
        })
    });

    // Stop while waiting at the back of the queue: answered with the
    // session's position (a prefix sum over the queue's arrival slots).
    group.bench_function("stop_waiting_at_back", |b| {
        let mut registry = men_waiting();
        let last = WAITING as SessionId;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let events = registry.stop(black_box(last));
                total += start.elapsed();
                assert!(events.is_ok_and(|e| e.len() == 1));
            }
            total
        })
    });

    // A whole session's life under load: connect, join (matched), disconnect.
    group.bench_function("connect_join_disconnect", |b| {
        let mut registry = men_waiting();
        b.iter(|| {
            let id = registry.connect().expect("room");
            let events = registry.join(id, profile(Gender::Female));
            registry.disconnect(id);
            events
        })
    });

    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! What every task of a run shares: the arguments, live counters, the
//! failures seen so far, the clock that message timestamps count from and
//! the name of the current phase.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::args::Args;

/// Live counts, shared by every task and the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    /// Sessions connected and admitted (they answered a ping).
    pub connected: AtomicU64,
    /// Sessions that got their first `Matched`.
    pub matched: AtomicU64,
    /// Offers or chats that reached the right partner.
    pub delivered: AtomicU64,
    /// Offers or chats that never arrived.
    pub lost: AtomicU64,
    /// Chats that arrived after the sender had stopped waiting for them.
    pub late: AtomicU64,
    /// Messages delivered to the wrong session, twice, out of order, or
    /// matches the two sides saw differently.
    pub misrouted: AtomicU64,
    /// `Error` answers, broken sessions, failed tasks.
    pub errors: AtomicU64,
    /// Matches made during churn (counted by their initiators).
    pub matches: AtomicU64,
    /// Chat acknowledgements that reached the sender.
    pub acks: AtomicU64,
}

impl Counters {
    /// Adds `n` to one of the counters.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads one of the counters.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Failure descriptions kept for the report; the rest are only counted.
const KEPT_FAILURES: usize = 20;

/// Failure descriptions; the first few are kept for the report.
#[derive(Debug, Default)]
pub struct Failures {
    /// The first [`KEPT_FAILURES`] descriptions.
    kept: Mutex<Vec<String>>,
    /// How many failures there were in all.
    total: AtomicU64,
}

impl Failures {
    /// Counts a failure and keeps its description if there is room.
    fn push(&self, what: String) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEPT_FAILURES {
            kept.push(what);
        }
    }

    /// How many failures there were in all.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The descriptions kept for the report.
    pub fn kept(&self) -> Vec<String> {
        self.kept.lock().map(|k| k.clone()).unwrap_or_default()
    }
}

/// What every task shares.
pub struct Shared {
    /// The command line.
    pub args: Args,
    /// Live counts.
    pub counters: Counters,
    /// What went wrong.
    pub failures: Failures,
    /// The clock that the timestamps in messages count from.
    pub epoch: Instant,
    /// The phase the run is in, for the progress line.
    phase: Mutex<&'static str>,
}

impl Shared {
    /// A run of `args` that starts now, in its connect phase.
    pub fn new(args: Args) -> Shared {
        Shared {
            args,
            counters: Counters::default(),
            failures: Failures::default(),
            epoch: Instant::now(),
            phase: Mutex::new("connect"),
        }
    }

    /// Nanoseconds since [`Shared::epoch`]: the timestamp messages carry.
    pub fn since_epoch_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records a failure that is neither an error nor a misrouting (a
    /// timeout, a skipped phase, lost messages).
    pub fn fail(&self, what: String) {
        self.failures.push(what);
    }

    /// Records an error: an `Error` answer, a broken session, a failed task.
    pub fn error(&self, what: String) {
        Counters::add(&self.counters.errors, 1);
        self.fail(what);
    }

    /// Records a message or match that reached the wrong place.
    pub fn misrouted(&self, what: String) {
        Counters::add(&self.counters.misrouted, 1);
        self.fail(what);
    }

    /// Enters a new phase (shown on the progress line).
    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    }

    /// The current phase.
    pub fn phase(&self) -> &'static str {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }
}

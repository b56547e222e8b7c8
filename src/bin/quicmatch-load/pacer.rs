//! Pacing: every session keeps under the server's per-session rate limits,
//! and pairs start spread out rather than in lockstep.

use std::time::Duration;

use tokio::time::{Instant, sleep_until};

/// Spaces sends at least `1.02 / rate` seconds apart, so that no second ever
/// holds more than `rate` of them.
#[derive(Debug)]
pub struct Pacer {
    /// Time between sends; `None` sends as fast as possible.
    interval: Option<Duration>,
    /// When the next send may go.
    next: Instant,
}

impl Pacer {
    /// A pacer for `rate` sends per second; 0 never waits.
    pub fn new(rate: u32) -> Pacer {
        Pacer {
            interval: (rate > 0).then(|| Duration::from_secs_f64(1.02 / f64::from(rate))),
            next: Instant::now(),
        }
    }

    /// Holds the next send back until `at` (to stagger senders).
    pub fn not_before(&mut self, at: Instant) {
        self.next = self.next.max(at);
    }

    /// Waits until the next send is allowed and books it.
    pub async fn ready(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        let at = self.next.max(now);
        if at > now {
            sleep_until(at).await;
        }
        self.next = at + interval;
    }
}

/// Staggered start of pair `id` of `pairs` within one pacing interval of
/// `rate`, so that pairs do not send in lockstep.
pub fn stagger(start: Instant, id: usize, pairs: usize, rate: u32) -> Instant {
    if rate == 0 || pairs == 0 {
        return start;
    }
    let interval = 1.0 / f64::from(rate);
    start + Duration::from_secs_f64(interval * id as f64 / pairs as f64)
}

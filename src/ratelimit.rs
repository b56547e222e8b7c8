//! Per-session rate limits (PROTOCOL.md section 5), sans I/O: the caller
//! passes the time in.

use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: f64,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        TokenBucket {
            burst: f64::from(burst),
            rate: f64::from(rate),
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Which budget a message draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A signaling frame.
    Frame,
    /// A datagram.
    Datagram,
}

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Allow,
    /// Drop it; when `notify`, tell the sender with `Error RateLimited`.
    Drop {
        /// At most once a second.
        notify: bool,
    },
    /// The session keeps flooding: close it with code 2.
    Close,
}

/// How many dropped messages a session may accumulate (refilled at a tenth of
/// that a second) before it counts as flooding.
const STRIKE_BURST: u32 = 200;
const STRIKE_RATE: u32 = 20;
const NOTICE_INTERVAL: Duration = Duration::from_secs(1);

/// The rate limits of one session.
#[derive(Debug, Clone)]
pub struct FloodGuard {
    frames: TokenBucket,
    datagrams: TokenBucket,
    strikes: TokenBucket,
    last_notice: Option<Instant>,
}

impl FloodGuard {
    /// Limits of `frame_rate` frames and `datagram_rate` datagrams a second,
    /// each with a burst of two seconds' worth: time is taken when the server
    /// reads a message, not when it was sent, so a network stall can bunch
    /// up a client that kept to the rate.
    pub fn new(frame_rate: u32, datagram_rate: u32, now: Instant) -> Self {
        FloodGuard {
            frames: TokenBucket::new(frame_rate, frame_rate.saturating_mul(2), now),
            datagrams: TokenBucket::new(datagram_rate, datagram_rate.saturating_mul(2), now),
            strikes: TokenBucket::new(STRIKE_RATE, STRIKE_BURST, now),
            last_notice: None,
        }
    }

    /// Decides about one incoming message.
    pub fn check(&mut self, kind: Kind, now: Instant) -> Verdict {
        let bucket = match kind {
            Kind::Frame => &mut self.frames,
            Kind::Datagram => &mut self.datagrams,
        };
        if bucket.try_take(now) {
            return Verdict::Allow;
        }
        if !self.strikes.try_take(now) {
            return Verdict::Close;
        }
        let notify = self
            .last_notice
            .is_none_or(|t| now.saturating_duration_since(t) >= NOTICE_INTERVAL);
        if notify {
            self.last_notice = Some(now);
        }
        Verdict::Drop { notify }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promised_rates_are_never_limited() {
        // 50 frames and 20 datagrams in every second, sent as a burst at the
        // start of each second, for ten seconds.
        let t0 = Instant::now();
        let mut guard = FloodGuard::new(50, 20, t0);
        for second in 0..10 {
            let now = t0 + Duration::from_secs(second);
            for _ in 0..50 {
                assert_eq!(guard.check(Kind::Frame, now), Verdict::Allow);
            }
            for _ in 0..20 {
                assert_eq!(guard.check(Kind::Datagram, now), Verdict::Allow);
            }
        }
    }

    #[test]
    fn excess_is_dropped_notified_once_a_second_then_closed() {
        let t0 = Instant::now();
        let mut guard = FloodGuard::new(50, 20, t0);
        for _ in 0..100 {
            assert_eq!(guard.check(Kind::Frame, t0), Verdict::Allow);
        }
        assert_eq!(guard.check(Kind::Frame, t0), Verdict::Drop { notify: true });
        assert_eq!(
            guard.check(Kind::Frame, t0),
            Verdict::Drop { notify: false }
        );
        let later = t0 + Duration::from_millis(1_001);
        // The bucket refilled: allowed again, and the next drop notifies.
        assert_eq!(guard.check(Kind::Frame, later), Verdict::Allow);
        let verdicts: Vec<_> = (0..400).map(|_| guard.check(Kind::Frame, later)).collect();
        assert!(verdicts.contains(&Verdict::Drop { notify: true }));
        assert_eq!(verdicts.last(), Some(&Verdict::Close));
    }
}

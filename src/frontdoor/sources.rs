//! Per-source limits: how many sessions one source address may hold at once,
//! and how fast it may open new ones. A plain state machine (time is passed
//! in), tested on its own; the front door holds it under a lock taken once
//! when a session is admitted and once when it ends, never per message.
//!
//! A source is an IPv4 address or an IPv6 /64 (one subscriber's prefix: a
//! host picks any address inside it at will). IPv4-mapped IPv6 addresses
//! (`::ffff:a.b.c.d`, what a dual-stack socket reports) count as the IPv4
//! address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use ipnet::IpNet;

/// The key a source's figures are kept under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// One IPv4 address.
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6(u64),
}

impl SourceKey {
    /// The source `ip` belongs to.
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => SourceKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Networks exempt from the Retry and the per-source limits
/// (`--trusted-net`; by default loopback, so local tools and load tests work).
#[derive(Debug, Clone, Default)]
pub struct TrustedNets(Vec<IpNet>);

impl TrustedNets {
    /// These networks.
    pub fn new(nets: Vec<IpNet>) -> TrustedNets {
        TrustedNets(nets)
    }

    /// Whether `ip` (IPv4-mapped or not) is inside one of them.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// What one source may do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceLimits {
    /// Sessions open at once.
    pub sessions: u32,
    /// New sessions a second, on average.
    pub rate: f64,
    /// New sessions at once after a quiet while.
    pub burst: u32,
}

/// Why a source was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// It already holds its share of sessions.
    Sessions,
    /// It opens sessions faster than its rate.
    Rate,
}

impl OverLimit {
    /// A label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            OverLimit::Sessions => "source_sessions",
            OverLimit::Rate => "source_rate",
        }
    }
}

/// One source's figures.
#[derive(Debug, Clone, Copy)]
struct Entry {
    sessions: u32,
    /// New sessions it may open now (a token bucket), as of `at`.
    tokens: f64,
    at: Instant,
}

/// Every source that holds a session or opened one recently, up to a bound.
#[derive(Debug)]
pub struct SourceTable {
    limits: SourceLimits,
    /// Sources remembered at most; a new one past it is refused.
    max_sources: usize,
    entries: HashMap<SourceKey, Entry>,
    /// Admissions since the table last forgot idle sources.
    since_sweep: usize,
}

/// Admissions between two sweeps of sources that hold nothing and whose
/// rate has recovered.
const SWEEP_EVERY: usize = 1024;

impl SourceTable {
    /// An empty table enforcing `limits`, remembering at most `max_sources`.
    pub fn new(limits: SourceLimits, max_sources: usize) -> SourceTable {
        SourceTable {
            limits,
            max_sources,
            entries: HashMap::new(),
            since_sweep: 0,
        }
    }

    /// A new session from `key` at `now`: counted if within its limits.
    pub fn admit(&mut self, key: SourceKey, now: Instant) -> Result<(), OverLimit> {
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.sweep(now);
        }
        if self.entries.len() >= self.max_sources && !self.entries.contains_key(&key) {
            self.sweep(now);
            if self.entries.len() >= self.max_sources {
                // Every place is taken by sources with sessions or a fresh
                // burst: a newcomer waits as if over its rate.
                return Err(OverLimit::Rate);
            }
        }
        let limits = self.limits;
        let entry = self.entries.entry(key).or_insert(Entry {
            sessions: 0,
            tokens: f64::from(limits.burst),
            at: now,
        });
        refill(entry, &limits, now);
        if entry.sessions >= limits.sessions {
            return Err(OverLimit::Sessions);
        }
        if entry.tokens < 1.0 {
            return Err(OverLimit::Rate);
        }
        entry.tokens -= 1.0;
        entry.sessions += 1;
        Ok(())
    }

    /// A session from `key` admitted earlier has ended.
    pub fn release(&mut self, key: SourceKey) {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.sessions = entry.sessions.saturating_sub(1);
        }
    }

    /// Sessions `key` holds now.
    pub fn sessions(&self, key: SourceKey) -> u32 {
        self.entries.get(&key).map_or(0, |e| e.sessions)
    }

    /// Sources remembered (holding sessions, or recently active).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets sources that hold no session and whose rate has recovered:
    /// remembering them would change nothing. The table thus holds at most
    /// the sources with sessions plus those active within one burst's
    /// recovery time.
    fn sweep(&mut self, now: Instant) {
        self.since_sweep = 0;
        let limits = self.limits;
        self.entries.retain(|_, entry| {
            refill(entry, &limits, now);
            entry.sessions > 0 || entry.tokens < f64::from(limits.burst)
        });
    }
}

/// Adds the tokens earned since the entry's last update.
fn refill(entry: &mut Entry, limits: &SourceLimits, now: Instant) {
    let earned = now.saturating_duration_since(entry.at).as_secs_f64() * limits.rate;
    entry.tokens = (entry.tokens + earned).min(f64::from(limits.burst));
    entry.at = now;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    const LIMITS: SourceLimits = SourceLimits {
        sessions: 3,
        rate: 2.0,
        burst: 4,
    };

    fn v4(s: &str) -> SourceKey {
        SourceKey::of(s.parse().unwrap())
    }

    #[test]
    fn ipv6_sources_are_keyed_by_their_64_bit_prefix_and_mapped_ipv4_as_ipv4() {
        assert_eq!(v4("2001:db8:1:2::1"), v4("2001:db8:1:2:ffff::9"));
        assert_ne!(v4("2001:db8:1:2::1"), v4("2001:db8:1:3::1"));
        assert_eq!(v4("::ffff:192.0.2.7"), v4("192.0.2.7"));
        assert_ne!(v4("192.0.2.7"), v4("192.0.2.8"));
    }

    #[test]
    fn trusted_nets_match_mapped_addresses_too() {
        let nets = TrustedNets::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(nets.contains("127.0.0.1".parse().unwrap()));
        assert!(nets.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!nets.contains("::1".parse().unwrap()));
        assert!(!TrustedNets::default().contains("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn a_source_holds_at_most_its_sessions_and_gets_a_place_back_when_one_ends() {
        let mut table = SourceTable::new(
            SourceLimits {
                rate: 1000.0,
                burst: 1000,
                ..LIMITS
            },
            100,
        );
        let (key, now) = (v4("192.0.2.1"), Instant::now());
        for _ in 0..3 {
            assert_eq!(table.admit(key, now), Ok(()));
        }
        assert_eq!(table.admit(key, now), Err(OverLimit::Sessions));
        assert_eq!(table.admit(v4("192.0.2.2"), now), Ok(()));
        table.release(key);
        assert_eq!(table.admit(key, now), Ok(()));
    }

    #[test]
    fn a_source_opens_a_burst_at_once_then_at_its_rate() {
        let mut table = SourceTable::new(
            SourceLimits {
                sessions: 100,
                ..LIMITS
            },
            100,
        );
        let (key, start) = (v4("192.0.2.1"), Instant::now());
        for _ in 0..4 {
            assert_eq!(table.admit(key, start), Ok(()));
        }
        assert_eq!(table.admit(key, start), Err(OverLimit::Rate));
        // 2 a second: one more after half a second, not before.
        assert_eq!(
            table.admit(key, start + Duration::from_millis(400)),
            Err(OverLimit::Rate)
        );
        assert_eq!(table.admit(key, start + Duration::from_millis(500)), Ok(()));
    }

    #[test]
    fn idle_sources_are_forgotten_and_busy_ones_kept() {
        let mut table = SourceTable::new(LIMITS, 1 << 20);
        let start = Instant::now();
        let busy = v4("10.0.0.1");
        table.admit(busy, start).unwrap();
        for i in 0..SWEEP_EVERY as u32 {
            let key = SourceKey::V4(i + 1_000_000);
            table.admit(key, start).unwrap();
            table.release(key);
        }
        assert!(table.len() > SWEEP_EVERY / 2);
        // Once their burst has recovered (2 s at 2 a second), they go.
        let later = start + Duration::from_secs(3);
        for _ in 0..SWEEP_EVERY {
            let _ = table.admit(v4("10.0.0.2"), later);
        }
        assert!(table.len() <= 2, "{} sources remembered", table.len());
        assert_eq!(table.sessions(busy), 1);
    }

    #[test]
    fn the_table_is_bounded_and_makes_room_from_idle_sources() {
        let mut table = SourceTable::new(LIMITS, 3);
        let start = Instant::now();
        for i in 0..3 {
            table.admit(SourceKey::V4(i), start).unwrap();
        }
        assert_eq!(table.admit(SourceKey::V4(9), start), Err(OverLimit::Rate));
        // One leaves; once its burst recovers it is forgotten, making room.
        table.release(SourceKey::V4(0));
        let later = start + Duration::from_secs(3);
        assert_eq!(table.admit(SourceKey::V4(9), later), Ok(()));
        assert!(table.len() <= 3);
    }

    proptest! {
        /// Whatever the order of admissions, releases and time, a source
        /// never holds more than its sessions, never opens more than
        /// `burst + rate × elapsed`, and the table remembers only sources
        /// with sessions or an unrecovered rate.
        #[test]
        fn limits_hold_under_any_sequence(
            ops in proptest::collection::vec((0u8..4, 0u32..3, 0u64..400), 1..300)
        ) {
            let mut table = SourceTable::new(LIMITS, 1 << 20);
            let start = Instant::now();
            let mut now = start;
            let mut held = [0u32; 3];
            let mut opened = [0u32; 3];
            for (op, source, step_ms) in ops {
                now += Duration::from_millis(step_ms);
                let key = SourceKey::V4(source);
                let i = source as usize;
                if op < 3 {
                    if table.admit(key, now).is_ok() {
                        held[i] += 1;
                        opened[i] += 1;
                    }
                } else if held[i] > 0 {
                    table.release(key);
                    held[i] -= 1;
                }
                prop_assert!(held[i] <= LIMITS.sessions);
                prop_assert_eq!(table.sessions(key), held[i]);
                let allowed = f64::from(LIMITS.burst)
                    + LIMITS.rate * now.duration_since(start).as_secs_f64();
                prop_assert!(f64::from(opened[i]) <= allowed + 1e-9);
            }
        }
    }
}

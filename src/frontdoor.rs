//! The front door: what a connection attempt may cost before it is a
//! session. Each new QUIC connection is decided on its first packet, before
//! any state is kept for it:
//!
//! 1. From a reflection-prone source port (DNS, NTP, SNMP, …: answers there
//!    would bounce off a service at a spoofed victim's address): ignored, no
//!    Retry or handshake sent.
//! 2. With `--handshake-limit` handshakes in flight already: refused (one
//!    stateless packet).
//! 3. With `--handshake-soft-limit` in flight and an address not yet proven:
//!    answered with a stateless Retry, so that only a client that receives
//!    at its address gets a handshake's state (37 KiB).
//! 4. Otherwise the handshake runs, holding one slot, under
//!    `--handshake-timeout-secs` for every step up to the signaling stream.
//!
//! Once the session request has arrived (the address now proven),
//! [`Admission`] decides from its origin and join token whether it may open
//! a session at all (403); then its source's share is checked
//! ([`sources`]): sessions at once and new sessions a second; over either,
//! the request is answered 429. Both before a session exists.
//!
//! Sources in `--trusted-net` (loopback by default: it cannot be spoofed
//! from outside) skip step 3 and the source limits; nothing skips the hard
//! limit, the session cap or the memory ceiling ([`budget`]).

pub mod budget;
pub mod sources;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::admission::{Admission, Decision};
use crate::config::Config;
use budget::{MemoryCeiling, SessionCost};
use sources::{OverLimit, SourceKey, SourceLimits, SourceTable, TrustedNets};

/// The handshake limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Handshakes in flight past which unproven addresses are sent a Retry.
    pub soft: usize,
    /// Handshakes in flight past which new ones are refused.
    pub hard: usize,
    /// Time from the first packet to the signaling stream.
    pub timeout: Duration,
    /// Source ports never answered.
    pub ignored_ports: Vec<u16>,
}

/// What to do with a connection's first packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Send nothing.
    Ignore,
    /// Refuse the connection.
    Refuse,
    /// Ask the client to prove its address first.
    Retry,
    /// Run the handshake, holding this slot.
    Proceed(HandshakeSlot),
}

impl Arrival {
    /// A label for the handshake metric (not for `Proceed`).
    pub fn label(&self) -> &'static str {
        match self {
            Arrival::Ignore => "ignored",
            Arrival::Refuse => "refused",
            Arrival::Retry => "retried",
            Arrival::Proceed(_) => "proceeding",
        }
    }
}

/// The decision on a first packet, from the figures alone.
fn first_packet(
    limits: &HandshakeLimits,
    in_flight: usize,
    port: u16,
    validated: bool,
    trusted: bool,
) -> Option<Arrival> {
    if limits.ignored_ports.contains(&port) {
        return Some(Arrival::Ignore);
    }
    if in_flight >= limits.hard {
        return Some(Arrival::Refuse);
    }
    if in_flight >= limits.soft && !validated && !trusted {
        return Some(Arrival::Retry);
    }
    None
}

/// One handshake in flight; the count drops when it is dropped.
pub struct HandshakeSlot(Arc<FrontDoor>);

impl HandshakeSlot {
    /// The front door it came through.
    pub fn door(&self) -> &Arc<FrontDoor> {
        &self.0
    }
}

impl std::fmt::Debug for HandshakeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandshakeSlot")
    }
}

impl PartialEq for HandshakeSlot {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for HandshakeSlot {}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("quicmatch_handshakes_in_flight").decrement(1.0);
    }
}

/// A session request let in: its pass through the front door.
pub struct Pass {
    /// Its join token's `sub`, if any.
    pub subject: Option<String>,
    /// Its place in its source's share.
    pub seat: SourceSeat,
}

/// Why a session request was turned away, before a session existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not the session path: 404.
    NotFound,
    /// Its origin or join token: 403.
    Forbidden,
    /// Its source is over a limit: 429.
    TooMany(OverLimit),
}

impl Refused {
    /// The handshake metric's label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::NotFound => "not_found",
            Refused::Forbidden => "forbidden",
            Refused::TooMany(over) => over.label(),
        }
    }
}

/// A session's place in its source's share; given back when dropped.
pub struct SourceSeat {
    door: Arc<FrontDoor>,
    /// `None` for a trusted source, which is not counted.
    key: Option<SourceKey>,
}

impl Drop for SourceSeat {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.door.lock_sources().release(key);
        }
    }
}

/// The front door of one server.
pub struct FrontDoor {
    admission: Admission,
    handshakes: HandshakeLimits,
    in_flight: AtomicUsize,
    trusted: TrustedNets,
    sources: Mutex<SourceTable>,
    ceiling: MemoryCeiling,
}

impl FrontDoor {
    /// The front door `config` asks for.
    pub fn from_config(config: &Config) -> anyhow::Result<FrontDoor> {
        anyhow::ensure!(
            config.handshake_limit >= 1,
            "--handshake-limit must be at least 1"
        );
        let handshakes = HandshakeLimits {
            // A soft limit above the hard one would never be reached.
            soft: config.handshake_soft_limit.min(config.handshake_limit),
            hard: config.handshake_limit,
            timeout: Duration::from_secs(config.handshake_timeout_secs),
            ignored_ports: config.ignored_source_ports.clone(),
        };
        let trusted = TrustedNets::new(
            config
                .trusted_nets
                .iter()
                .filter_map(|net| net.as_net())
                .collect(),
        );
        let limits = SourceLimits {
            sessions: config.source_sessions,
            rate: config.source_rate,
            burst: config.source_burst,
        };
        let ceiling = MemoryCeiling::new(
            config.memory_budget,
            config.max_sessions,
            SessionCost::worst_case(usize::try_from(config.outbound_queue_bytes)?),
            config.handshake_limit,
        )?;
        // Room for every source that can hold a session, and as many again
        // that recently did.
        let max_sources = ceiling.session_cap().saturating_mul(2).max(1024);
        Ok(FrontDoor {
            admission: Admission::from_config(config)?,
            handshakes,
            in_flight: AtomicUsize::new(0),
            trusted,
            sources: Mutex::new(SourceTable::new(limits, max_sources)),
            ceiling,
        })
    }

    fn lock_sources(&self) -> std::sync::MutexGuard<'_, SourceTable> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides a new connection from its first packet: its source and
    /// whether that address is proven (it came back with a Retry token).
    pub fn arrive(self: &Arc<Self>, remote: SocketAddr, validated: bool) -> Arrival {
        let trusted = self.trusted.contains(remote.ip());
        let mut answer = None;
        // Decided and counted in one step, so that accept loops of several
        // endpoints never take the count past the hard limit together.
        let counted =
            self.in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |in_flight| {
                    answer = first_packet(
                        &self.handshakes,
                        in_flight,
                        remote.port(),
                        validated,
                        trusted,
                    );
                    answer.is_none().then_some(in_flight + 1)
                });
        match (counted, answer) {
            (Err(_), Some(answer)) => answer,
            _ => {
                metrics::gauge!("quicmatch_handshakes_in_flight").increment(1.0);
                Arrival::Proceed(HandshakeSlot(self.clone()))
            }
        }
    }

    /// A session request (its path and query, its `Origin`, its source)
    /// asks to be let in, over either transport: its token's subject and
    /// its seat in its source's share, or why not (counted and logged here;
    /// the caller only answers).
    pub fn admit(
        self: &Arc<Self>,
        path: &str,
        origin: Option<&str>,
        remote: IpAddr,
    ) -> Result<Pass, Refused> {
        let refused = match self.admission.check(path, origin) {
            Decision::Admit { subject } => match self.seat(remote) {
                Ok(seat) => return Ok(Pass { subject, seat }),
                Err(over) => {
                    debug!(limit = over.label(), %remote, "too many sessions from one source");
                    Refused::TooMany(over)
                }
            },
            Decision::NotFound => Refused::NotFound,
            Decision::Forbidden(why) => {
                debug!(why, origin, "session refused");
                Refused::Forbidden
            }
        };
        crate::metrics::handshake(refused.label());
        Err(refused)
    }

    /// A session from `ip` asks to be admitted: a seat in its source's
    /// share, or which limit it is over.
    pub fn seat(self: &Arc<Self>, ip: IpAddr) -> Result<SourceSeat, OverLimit> {
        if self.trusted.contains(ip) {
            return Ok(SourceSeat {
                door: self.clone(),
                key: None,
            });
        }
        let key = SourceKey::of(ip);
        self.lock_sources().admit(key, Instant::now())?;
        Ok(SourceSeat {
            door: self.clone(),
            key: Some(key),
        })
    }

    /// Handshakes in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Time allowed from the first packet to the signaling stream.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshakes.timeout
    }

    /// The handshake limits.
    pub fn handshake_limits(&self) -> &HandshakeLimits {
        &self.handshakes
    }

    /// Reads the resident memory for the ceiling until `shutdown` (at once
    /// done without a budget).
    pub async fn watch_memory(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let ceiling = &self.ceiling;
        ceiling.watch(shutdown).await;
    }

    /// Who may open a session (origins, join tokens).
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The memory ceiling.
    pub fn ceiling(&self) -> &MemoryCeiling {
        &self.ceiling
    }
}

/// A `--trusted-net` value: a network in CIDR notation, a bare address, or
/// `none` (trust no one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedNet(Option<ipnet::IpNet>);

impl TrustedNet {
    /// The network, unless `none`.
    pub fn as_net(&self) -> Option<ipnet::IpNet> {
        self.0
    }
}

impl std::str::FromStr for TrustedNet {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("none") {
            return Ok(TrustedNet(None));
        }
        if let Ok(net) = value.parse::<ipnet::IpNet>() {
            return Ok(TrustedNet(Some(net.trunc())));
        }
        value
            .parse::<IpAddr>()
            .map(|ip| TrustedNet(Some(ipnet::IpNet::from(ip))))
            .map_err(|_| format!("{value:?} is not a network like 10.0.0.0/8 or 2001:db8::/32"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn reflection_ports() -> Vec<u16> {
        crate::config::DEFAULT_IGNORED_SOURCE_PORTS
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect()
    }

    fn limits() -> HandshakeLimits {
        HandshakeLimits {
            soft: 2,
            hard: 4,
            timeout: Duration::from_secs(10),
            ignored_ports: reflection_ports(),
        }
    }

    #[test]
    fn first_packets_are_answered_by_the_figures() {
        let l = limits();
        let decide = |in_flight, port, validated, trusted| {
            first_packet(&l, in_flight, port, validated, trusted).map(|a| a.label())
        };
        assert_eq!(decide(0, 50_000, false, false), None);
        assert_eq!(decide(1, 50_000, false, false), None);
        assert_eq!(decide(2, 50_000, false, false), Some("retried"));
        assert_eq!(decide(2, 50_000, true, false), None);
        assert_eq!(decide(4, 50_000, true, false), Some("refused"));
        assert_eq!(decide(4, 50_000, false, false), Some("refused"));
        // Trusted sources skip the Retry, not the hard limit or the ports.
        assert_eq!(decide(3, 50_000, false, true), None);
        assert_eq!(decide(4, 50_000, false, true), Some("refused"));
        let ports = reflection_ports();
        assert_eq!(ports, [0, 17, 19, 53, 111, 123, 137, 138, 161, 389, 500]);
        for port in ports {
            assert_eq!(decide(0, port, true, true), Some("ignored"));
        }
    }

    fn door(args: &[&str]) -> Arc<FrontDoor> {
        let config = Config::parse_from(std::iter::once("quicmatch").chain(args.iter().copied()));
        Arc::new(FrontDoor::from_config(&config).unwrap())
    }

    #[test]
    fn slots_count_handshakes_in_flight_until_dropped() {
        let door = door(&[
            "--handshake-soft-limit",
            "1",
            "--handshake-limit",
            "2",
            "--trusted-net",
            "none",
        ]);
        let remote: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let first = door.arrive(remote, false);
        assert!(matches!(first, Arrival::Proceed(_)));
        assert_eq!(door.arrive(remote, false), Arrival::Retry);
        let second = door.arrive(remote, true);
        assert!(matches!(second, Arrival::Proceed(_)));
        assert_eq!(door.arrive(remote, true), Arrival::Refuse);
        assert_eq!(door.in_flight(), 2);
        drop((first, second));
        assert_eq!(door.in_flight(), 0);
        assert!(matches!(door.arrive(remote, false), Arrival::Proceed(_)));
    }

    #[test]
    fn loopback_is_trusted_by_default_and_not_with_none() {
        let trusting = door(&["--source-sessions", "1"]);
        let seats: Vec<_> = (0..5)
            .map(|_| trusting.seat("::1".parse().unwrap()))
            .collect();
        assert!(seats.iter().all(Result::is_ok));
        let strict = door(&["--source-sessions", "1", "--trusted-net", "none"]);
        let seat = strict.seat("127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(
            strict.seat("::ffff:127.0.0.1".parse().unwrap()).err(),
            Some(OverLimit::Sessions)
        );
        drop(seat);
        assert!(strict.seat("127.0.0.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn trusted_nets_parse() {
        let parse = |s: &str| s.parse::<TrustedNet>();
        assert_eq!(parse("none"), Ok(TrustedNet(None)));
        assert_eq!(
            parse("10.1.2.3/8").unwrap().as_net(),
            Some("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            parse("::1").unwrap().as_net(),
            Some("::1/128".parse().unwrap())
        );
        assert!(parse("10.0.0.0/33").is_err());
        assert!(parse("example.org").is_err());
    }
}

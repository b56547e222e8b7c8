//! The memory ceiling: what one session can cost at worst, how many sessions
//! a memory budget therefore holds, and a live check of the process's
//! resident memory against the budget.
//!
//! Every per-session buffer is bounded (see [`crate::transport`] and
//! [`crate::peer`]), so a session's worst case is a sum of limits, not a
//! guess: a hostile but legal client can fill each of them at once. With
//! `--memory-budget`, the session cap is lowered (if need be) so that the
//! worst case of every session, plus every handshake in flight, plus the
//! process's own base, fits; past the cap, or whenever the resident memory
//! is over the budget, new sessions are refused with `Closing` code 4.
//! Without it, the worst case at `--max-sessions` is logged at start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::codec::FRAME_HEADER_LEN;
use crate::protocol::MAX_FRAME_LEN;
use crate::transport::{DATAGRAM_BUFFER, RECEIVE_WINDOW, SEND_WINDOW};

/// A session's fixed cost beyond its buffers: the QUIC connection and TLS
/// state, its task, its registry entry. Measured at 31.1 KiB a session with
/// 10,000 sessions connected and matched (docs/performance.md §14); taken
/// with headroom for the heap's peaks.
pub const SESSION_BASE: u64 = 48 * 1024;
/// One QUIC handshake in flight (TLS state, crypto buffers, its task):
/// measured at 37 KiB; rounded up.
pub const HANDSHAKE_STATE: u64 = 40 * 1024;
/// One handshake slot at worst: its state, plus what a client whose QUIC
/// handshake is done may send before its CONNECT (the receive window).
pub const HANDSHAKE_COST: u64 = HANDSHAKE_STATE + RECEIVE_WINDOW as u64;
/// The process with no session: runtime, sockets, sidecar, metrics.
pub const PROCESS_BASE: u64 = 32 * 1024 * 1024;
/// How often the resident memory is read.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Where a session's worst case goes, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCost {
    /// The outbound queue: the server's own frames, plus relays (half as
    /// much again, see [`crate::peer::Peer`]; from a partner on another
    /// node of a pool, up to twice that).
    pub outbound_queue: u64,
    /// Frames taken off the queue for one write, at most one frame past
    /// the batch limit.
    pub write_batch: u64,
    /// The reader's buffer: a whole frame and a read's worth beyond it.
    pub read_buffer: u64,
    /// What the client may have in flight on its streams.
    pub quic_receive: u64,
    /// What the server keeps sent but unacknowledged.
    pub quic_send: u64,
    /// Datagrams in and out.
    pub datagrams: u64,
    /// Connection, TLS and task state ([`SESSION_BASE`]).
    pub base: u64,
}

impl SessionCost {
    /// The worst case with `outbound_queue_bytes` (`--outbound-queue-bytes`).
    pub fn worst_case(outbound_queue_bytes: usize) -> SessionCost {
        let frame = (MAX_FRAME_LEN + FRAME_HEADER_LEN) as u64;
        let queue = outbound_queue_bytes as u64;
        SessionCost {
            outbound_queue: 2 * queue,
            write_batch: crate::session::MAX_BATCH_BYTES as u64 + frame,
            read_buffer: 2 * frame,
            quic_receive: u64::from(RECEIVE_WINDOW),
            quic_send: SEND_WINDOW,
            datagrams: 2 * DATAGRAM_BUFFER as u64,
            base: SESSION_BASE,
        }
    }

    /// The sum.
    pub fn total(&self) -> u64 {
        self.outbound_queue
            + self.write_batch
            + self.read_buffer
            + self.quic_receive
            + self.quic_send
            + self.datagrams
            + self.base
    }
}

/// The memory ceiling of one process.
#[derive(Debug)]
pub struct MemoryCeiling {
    budget: Option<u64>,
    per_session: u64,
    session_cap: usize,
    /// The resident memory last read, in bytes (0 before the first read).
    resident: AtomicU64,
}

impl MemoryCeiling {
    /// The ceiling for `budget` bytes (none: derived from `max_sessions`),
    /// sessions costing `cost` at worst and `handshakes` handshakes in
    /// flight at most; an error if the budget does not hold one session.
    pub fn new(
        budget: Option<u64>,
        max_sessions: usize,
        cost: SessionCost,
        handshakes: usize,
    ) -> anyhow::Result<MemoryCeiling> {
        let per_session = cost.total();
        let session_cap = match budget {
            None => max_sessions,
            Some(budget) => {
                let fixed = PROCESS_BASE + handshakes as u64 * HANDSHAKE_COST;
                let fits = budget.saturating_sub(fixed) / per_session;
                anyhow::ensure!(
                    fits >= 1,
                    "--memory-budget {budget} holds no session: the process needs {} MiB, \
                     handshakes in flight {} MiB and each session up to {} KiB",
                    PROCESS_BASE >> 20,
                    (handshakes as u64 * HANDSHAKE_COST) >> 20,
                    per_session >> 10
                );
                usize::try_from(fits)
                    .unwrap_or(usize::MAX)
                    .min(max_sessions)
            }
        };
        Ok(MemoryCeiling {
            budget,
            per_session,
            session_cap,
            resident: AtomicU64::new(0),
        })
    }

    /// The most sessions at once.
    pub fn session_cap(&self) -> usize {
        self.session_cap
    }

    /// A session's worst case, in bytes.
    pub fn per_session(&self) -> u64 {
        self.per_session
    }

    /// The budget, if one was set.
    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// The worst case at the session cap, base and handshakes aside.
    pub fn sessions_worst_case(&self) -> u64 {
        self.per_session * self.session_cap as u64
    }

    /// Whether the resident memory, last read, is over the budget.
    pub fn is_over(&self) -> bool {
        self.budget
            .is_some_and(|budget| self.resident.load(Ordering::Relaxed) > budget)
    }

    /// Reads the resident memory every second until `shutdown`; with no
    /// budget there is nothing to check and it returns at once. Over the
    /// budget, the allocator is first asked to give back what it holds
    /// free, so that memory freed by sessions gone does not keep newcomers
    /// out.
    pub async fn watch(&self, shutdown: CancellationToken) {
        let Some(budget) = self.budget else {
            return;
        };
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        let mut unreadable_logged = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let mut resident = resident_bytes();
            if resident.is_some_and(|bytes| bytes > budget) {
                trim_heap();
                resident = resident_bytes();
            }
            match resident {
                Some(bytes) => self.resident.store(bytes, Ordering::Relaxed),
                None if !unreadable_logged => {
                    unreadable_logged = true;
                    tracing::warn!(
                        "cannot read /proc/self/statm: the memory budget's live check is off"
                    );
                }
                None => {}
            }
        }
    }
}

/// Gives the heap's free memory back to the system (glibc keeps it
/// otherwise).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases free heap memory; it touches no
    // memory that is in use and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives the heap's free memory back to the system (nothing to do here).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_heap() {}

/// The process's resident memory, from `/proc/self/statm` (Linux).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

/// Parses a byte size: a number with an optional unit, `K`/`KiB`, `M`/`MiB`,
/// `G`/`GiB` (powers of 1,024), as `--memory-budget` takes it.
pub fn parse_bytes(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a size like 512MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown unit {other:?}: use KiB, MiB or GiB")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{value:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("300m"), Ok(300 << 20));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
        assert!(parse_bytes("99999999999999999999G").is_err());
    }

    #[test]
    fn the_default_worst_case_is_about_one_and_a_quarter_mebibytes() {
        let cost = SessionCost::worst_case(256 * 1024);
        assert_eq!(cost.outbound_queue, 512 * 1024);
        // What docs/security.md quotes: 1,392 KiB.
        assert_eq!(cost.total() >> 10, 1392);
    }

    #[test]
    fn a_budget_lowers_the_cap_so_that_the_worst_case_fits() {
        let cost = SessionCost::worst_case(256 * 1024);
        let budget = 1u64 << 30;
        let ceiling = MemoryCeiling::new(Some(budget), 20_000, cost, 256).unwrap();
        let cap = ceiling.session_cap();
        assert!(cap < 20_000 && cap > 500, "{cap}");
        let worst = PROCESS_BASE + 256 * HANDSHAKE_COST + cap as u64 * cost.total();
        assert!(worst <= budget);
        assert!(worst + cost.total() > budget, "one more session would fit");
        // A budget larger than the cap needs leaves the cap alone.
        let roomy = MemoryCeiling::new(Some(1 << 40), 20_000, cost, 256).unwrap();
        assert_eq!(roomy.session_cap(), 20_000);
        assert!(MemoryCeiling::new(Some(PROCESS_BASE), 20_000, cost, 256).is_err());
        // What docs/security.md quotes for the defaults.
        let four = MemoryCeiling::new(Some(4 << 30), 20_000, cost, 256).unwrap();
        assert_eq!(four.session_cap(), 2946);
    }

    #[test]
    fn without_a_budget_nothing_is_ever_over() {
        let ceiling =
            MemoryCeiling::new(None, 100, SessionCost::worst_case(256 * 1024), 256).unwrap();
        ceiling.resident.store(u64::MAX, Ordering::Relaxed);
        assert!(!ceiling.is_over());
        assert_eq!(ceiling.session_cap(), 100);
    }

    #[test]
    fn with_a_budget_sessions_are_refused_while_the_resident_memory_is_over_it() {
        let cost = SessionCost::worst_case(256 * 1024);
        let ceiling = MemoryCeiling::new(Some(64 << 20), 100, cost, 16).unwrap();
        assert!(!ceiling.is_over(), "nothing read yet");
        ceiling.resident.store(64 << 20, Ordering::Relaxed);
        assert!(!ceiling.is_over());
        ceiling.resident.store((64 << 20) + 1, Ordering::Relaxed);
        assert!(ceiling.is_over());
    }

    #[tokio::test]
    async fn the_watch_reads_the_resident_memory() {
        let cost = SessionCost::worst_case(256 * 1024);
        let ceiling =
            std::sync::Arc::new(MemoryCeiling::new(Some(1 << 40), 100, cost, 16).unwrap());
        let stop = CancellationToken::new();
        let watching = tokio::spawn({
            let (ceiling, stop) = (ceiling.clone(), stop.clone());
            async move { ceiling.watch(stop).await }
        });
        // The first read is at once.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(ceiling.resident.load(Ordering::Relaxed) > 1 << 20);
        stop.cancel();
        watching.await.unwrap();
    }

    #[test]
    fn the_resident_memory_is_read() {
        let bytes = resident_bytes().unwrap();
        assert!(bytes > 1 << 20, "{bytes}");
    }
}

//! The matching pool shared by several nodes through Redis (`--redis`).
//!
//! Redis holds who waits and who is matched; every change to it is one call
//! of the atomic script `pool.lua`, which also publishes the resulting events
//! to the inbox of each node concerned. Nodes reach each other's sessions
//! through those inboxes too: one subscription per node ([`inbox`]), one
//! batching publisher ([`Bus`]). A node's lease, its announcements and the
//! reaping of dead nodes ride on one heartbeat call a second ([`heartbeat`]).
//!
//! The [`crate::hub::Hub`] drives all of it; sessions do not know whether
//! their partner is on this node or another.

mod bus;
mod connection;
pub mod heartbeat;
pub mod inbox;
mod remote;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, warn};

pub use bus::Bus;
pub use connection::Target;
use connection::{Connection, Opened};
pub use remote::RemotePartner;

use crate::protocol::Gender;
use crate::registry::SessionId;

/// How long a node's lease lasts; it is renewed every [`HEARTBEAT`].
pub const LEASE: Duration = Duration::from_secs(3);
/// How often a node renews its lease, announces itself and reaps dead nodes.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long one Redis call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// What the pool's script answered to a session's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Done; the events follow through the inboxes.
    Done,
    /// `Join` of a session already waiting or matched.
    AlreadyJoined,
    /// `Stop` of a session that has not joined.
    NotJoined,
}

/// Redis could not be reached, or answered with an error.
#[derive(Debug, thiserror::Error)]
#[error("matching pool unavailable: {0}")]
pub struct Unavailable(#[from] redis::RedisError);

/// One node's handle on the shared pool.
pub struct Cluster {
    node: Arc<str>,
    tag: String,
    /// Clients the inbox subscribes with, in turn.
    subscribers: Vec<redis::Client>,
    conn: Connection,
    script: redis::Script,
    bus: Bus,
    reachable: AtomicBool,
    /// Nonces of this node's `Stop` calls.
    stops: AtomicU64,
    /// Sessions that ended or left while Redis was away.
    left: Mutex<Vec<SessionId>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A handle on the pool at `target` (`redis://`, `rediss://`, user and
    /// password in the URL; one server or a Redis Cluster), whose keys all
    /// carry the hash tag `{prefix}`. Connects lazily: a node starts even
    /// while Redis is away.
    pub fn new(target: &Target<'_>, prefix: &str) -> anyhow::Result<Arc<Cluster>> {
        let Opened {
            commands: conn,
            subscribers,
        } = connection::open(target, CALL_TIMEOUT)?;
        let tag = format!("{{{prefix}}}");
        Ok(Arc::new(Cluster {
            node: new_node_id().into(),
            bus: Bus::start(conn.clone(), tag.clone()),
            tag,
            subscribers,
            conn,
            script: redis::Script::new(include_str!("pool.lua")),
            reachable: AtomicBool::new(true),
            stops: AtomicU64::new(0),
            left: Mutex::new(Vec::new()),
        }))
    }

    /// This node's id, new at every start.
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// The pool member name of this node's session `id`.
    pub fn member(&self, id: SessionId) -> String {
        format!("{}:{id}", self.node)
    }

    /// The inbox channel of `node`.
    fn inbox(&self, node: &str) -> String {
        format!("{}:inbox:{node}", self.tag)
    }

    /// The delivery bus to other nodes.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Runs `op` of the pool's script with `args`.
    async fn call<T: redis::FromRedisValue>(
        &self,
        op: &str,
        args: &[&[u8]],
    ) -> Result<T, Unavailable> {
        let mut invocation = self.script.key(&self.tag);
        invocation.arg(op);
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = self.conn.clone();
        let started = std::time::Instant::now();
        let result = invocation.invoke_async(&mut conn).await;
        crate::metrics::redis_call(op, started.elapsed(), result.is_err());
        let reachable = !matches!(&result, Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal());
        if self.reachable.swap(reachable, Ordering::Relaxed) && !reachable {
            warn!("Redis is unreachable; the matching pool is degraded");
        }
        if let Err(error) = &result {
            if reachable {
                // Redis answered with an error: the script or the data is wrong.
                warn!(op, %error, "the pool's script failed");
            } else {
                debug!(op, %error, "pool call failed");
            }
        }
        Ok(result?)
    }

    async fn session_op(&self, op: &str, args: &[&[u8]]) -> Result<Answer, Unavailable> {
        let answer: String = self.call(op, args).await?;
        Ok(match answer.as_str() {
            "already" => Answer::AlreadyJoined,
            "notjoined" => Answer::NotJoined,
            _ => Answer::Done,
        })
    }

    /// `Join` of session `id` with `profile` (encoded by the codec).
    pub async fn join(
        &self,
        id: SessionId,
        gender: Gender,
        profile: &Bytes,
    ) -> Result<Answer, Unavailable> {
        let member = self.member(id);
        let gender = gender_arg(gender);
        self.session_op("join", &[member.as_bytes(), gender, profile])
            .await
    }

    /// `Stop` of session `id`. A call that timed out may still have run,
    /// so it is repeated once with the same nonce, which the script runs at
    /// most once: the answer then says what happened.
    pub async fn stop(&self, id: SessionId) -> Result<Answer, Unavailable> {
        let nonce = self.stops.fetch_add(1, Ordering::Relaxed).to_string();
        let member = self.member(id);
        let args: [&[u8]; 2] = [member.as_bytes(), nonce.as_bytes()];
        match self.session_op("stop", &args).await {
            Err(Unavailable(error)) if error.is_timeout() => self.session_op("stop", &args).await,
            answer => answer,
        }
    }

    /// `Leave` of session `id`. Answers the highest match id the pool had
    /// given when it ran: a match of `id` with an id up to it was made
    /// before the Leave, however late its `Matched` reaches this node.
    pub async fn leave(&self, id: SessionId) -> Result<u64, Unavailable> {
        self.call("leave", &[self.member(id).as_bytes()]).await
    }

    /// Session `id` has ended (or owes the pool a Leave); answers as
    /// [`Cluster::leave`].
    pub async fn disconnect(&self, id: SessionId) -> Result<u64, Unavailable> {
        self.call("disconnect", &[self.member(id).as_bytes()]).await
    }

    /// Session `id` could not leave the pool (Redis away): it is taken out
    /// of it when Redis is back (a disconnect, since a left session's seat
    /// here is gone too).
    pub fn leave_later(&self, id: SessionId) {
        self.left.lock().unwrap_or_else(|e| e.into_inner()).push(id);
    }

    /// Whether session `id` had a leave recorded by [`Cluster::leave_later`];
    /// the record is taken.
    pub fn take_left_of(&self, id: SessionId) -> bool {
        let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        let before = left.len();
        left.retain(|&l| l != id);
        left.len() != before
    }

    /// The sessions [`Cluster::leave_later`] recorded.
    pub fn take_left(&self) -> Vec<SessionId> {
        std::mem::take(&mut *self.left.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A draining node leaves discovery.
    pub async fn depart(&self) -> Result<Answer, Unavailable> {
        self.session_op("depart", &[self.node.as_bytes()]).await
    }

    /// A node that has shut down takes what is left of it out of the pool.
    pub async fn retire(&self) -> Result<Answer, Unavailable> {
        self.session_op("retire", &[self.node.as_bytes()]).await
    }
}

/// Where the pool says a session stands (see [`Cluster::states`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolState {
    /// Not in the pool, or idle in it.
    Absent,
    /// Waiting at `position`.
    Waiting {
        /// 1-based queue position.
        position: u32,
    },
    /// Matched.
    Matched {
        /// The partner's member name.
        partner: String,
        /// The match.
        match_id: u64,
        /// Whether this session creates the offer.
        initiator: bool,
        /// The partner's profile, encoded.
        profile: Bytes,
    },
}

/// A session as a node holds it, written back after the pool lost its data.
#[derive(Debug, Clone)]
pub struct HeldSeat {
    /// The session.
    pub id: SessionId,
    /// Its gender.
    pub gender: Gender,
    /// Its profile, encoded.
    pub profile: Bytes,
    /// Its partner's member name, match id and initiator flag, if matched.
    pub matched: Option<(String, u64, bool)>,
}

impl Cluster {
    /// After this node was reaped while away: its leftovers leave the pool,
    /// and the partners of its sessions on other nodes are told.
    pub async fn forget(&self) -> Result<Answer, Unavailable> {
        self.session_op("forget", &[self.node.as_bytes()]).await
    }

    /// After the pool lost its data: writes back what this node holds.
    pub async fn restore(&self, highest_match: u64, seats: &[HeldSeat]) -> Result<(), Unavailable> {
        let highest = highest_match.to_string();
        let lease = LEASE.as_millis().to_string();
        let mut owned: Vec<Vec<u8>> = Vec::with_capacity(seats.len() * 7);
        for seat in seats {
            let (state, partner, match_id, initiator) = match &seat.matched {
                Some((partner, id, initiator)) => (
                    "m",
                    partner.clone(),
                    id.to_string(),
                    if *initiator { "1" } else { "0" },
                ),
                None => ("w", String::new(), String::new(), "0"),
            };
            owned.push(self.member(seat.id).into_bytes());
            owned.push(state.into());
            owned.push(gender_arg(seat.gender).into());
            owned.push(seat.profile.to_vec());
            owned.push(partner.into_bytes());
            owned.push(match_id.into_bytes());
            owned.push(initiator.into());
        }
        let mut args: Vec<&[u8]> = vec![self.node.as_bytes(), highest.as_bytes(), lease.as_bytes()];
        args.extend(owned.iter().map(Vec::as_slice));
        self.session_op("restore", &args).await.map(drop)
    }

    /// Where the pool says each of `ids` stands.
    pub async fn states(&self, ids: &[SessionId]) -> Result<Vec<PoolState>, Unavailable> {
        let members: Vec<String> = ids.iter().map(|&id| self.member(id)).collect();
        let args: Vec<&[u8]> = members.iter().map(|m| m.as_bytes()).collect();
        let reply: Vec<Vec<u8>> = self.call("states", &args).await?;
        let field = |chunk: &[Vec<u8>], i: usize| {
            chunk
                .get(i)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        Ok(reply
            .chunks_exact(5)
            .map(|chunk| match field(chunk, 0).as_str() {
                "w" => PoolState::Waiting {
                    position: field(chunk, 3).parse().unwrap_or(1),
                },
                "m" => PoolState::Matched {
                    partner: field(chunk, 1),
                    match_id: field(chunk, 2).parse().unwrap_or(0),
                    initiator: field(chunk, 3) == "1",
                    profile: Bytes::from(chunk.get(4).cloned().unwrap_or_default()),
                },
                _ => PoolState::Absent,
            })
            .collect())
    }
}

/// The node part of a member name (`node:session`).
pub fn node_of(member: &str) -> Option<(&str, SessionId)> {
    let (node, session) = member.split_once(':')?;
    Some((node, session.parse().ok()?))
}

/// The queue index the script uses for `gender` (as the registry does).
fn gender_arg(gender: Gender) -> &'static [u8] {
    match gender {
        Gender::Male => b"0",
        Gender::Female => b"1",
    }
}

/// A node id: 64 random bits in hex, from the operating system's generator.
pub(crate) fn new_node_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No system randomness: the clock and process id still differ per boot.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos as u64 ^ u64::from(std::process::id()) << 32).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

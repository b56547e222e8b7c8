//! A node's heartbeat: one call a second renews its lease, announces it
//! (load, public URL, certificate hashes), reaps nodes whose lease ran out,
//! and reads back the pool's figures.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Cluster, LEASE, Unavailable};

/// What a node announces to the others, as JSON in the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Sessions connected to the node.
    pub sessions: usize,
    /// Its sessions that are matched.
    pub matched: usize,
    /// Where browsers open a session on it (`https://host:port/signal`), if
    /// the operator gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Base64 SHA-256 hashes of its self-signed certificate.
    #[serde(default)]
    pub hashes: Vec<String>,
    /// Whether it takes new sessions (false while draining).
    #[serde(default = "yes")]
    pub open: bool,
}

fn yes() -> bool {
    true
}

impl Default for Announcement {
    /// An open node with nothing to announce yet.
    fn default() -> Self {
        Announcement {
            sessions: 0,
            matched: 0,
            url: None,
            hashes: Vec::new(),
            open: true,
        }
    }
}

/// A live node and what it announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNode {
    /// The node's id.
    pub id: Arc<str>,
    /// Its announcement.
    pub announcement: Announcement,
}

/// What one heartbeat learned.
#[derive(Debug, Clone)]
pub struct Beat {
    /// The pool's epoch: it changes only when Redis lost the pool's data.
    pub epoch: String,
    /// This node had no lease: it was reaped (or is new).
    pub lost: bool,
    /// Sessions waiting in the male and female queues.
    pub queues: [usize; 2],
    /// Sessions of dead nodes this heartbeat reaped.
    pub reaped: usize,
    /// Every live node, this one included.
    pub nodes: Vec<LiveNode>,
}

impl Cluster {
    /// Renews this node's lease with `announcement`; reaps dead nodes when
    /// `may_reap`. `proposed_epoch` becomes the pool's epoch if it has none.
    pub async fn heartbeat(
        &self,
        announcement: &Announcement,
        proposed_epoch: &str,
        may_reap: bool,
    ) -> Result<Beat, Unavailable> {
        let lease = LEASE.as_millis().to_string();
        let info = serde_json::to_string(announcement).unwrap_or_default();
        let reap = if may_reap { "1" } else { "0" };
        let reply: Vec<redis::Value> = self
            .call(
                "heartbeat",
                &[
                    self.node.as_bytes(),
                    lease.as_bytes(),
                    info.as_bytes(),
                    proposed_epoch.as_bytes(),
                    reap.as_bytes(),
                ],
            )
            .await?;
        Ok(parse_beat(&reply))
    }
}

fn text(value: Option<&redis::Value>) -> String {
    value
        .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
        .unwrap_or_default()
}

fn count(value: Option<&redis::Value>) -> usize {
    value
        .and_then(|v| redis::from_redis_value_ref::<usize>(v).ok())
        .unwrap_or(0)
}

fn parse_beat(reply: &[redis::Value]) -> Beat {
    let nodes = reply
        .get(5..)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|pair| LiveNode {
            id: text(pair.first()).into(),
            announcement: serde_json::from_str(&text(pair.get(1))).unwrap_or_default(),
        })
        .collect();
    Beat {
        epoch: text(reply.first()),
        lost: count(reply.get(1)) == 1,
        queues: [count(reply.get(2)), count(reply.get(3))],
        reaped: count(reply.get(4)),
        nodes,
    }
}

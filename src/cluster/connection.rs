//! The connection to the pool's Redis: one server (through a reconnecting
//! [`ConnectionManager`]) or a Redis Cluster (through redis-rs's cluster
//! client, which follows the slot map). Every key of the pool carries one
//! hash tag, so on a cluster the script and its keys live on one shard.
//!
//! Subscriptions are separate: classic pub/sub reaches subscribers on any
//! node of a cluster, so the inbox subscribes on one seed at a time and
//! moves to the next when it fails.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// Where the pool lives, as the operator gave it.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// One URL; for a cluster, one or more seed nodes.
    pub urls: &'a [String],
    /// Whether `urls` are seeds of a Redis Cluster.
    pub cluster: bool,
}

/// A cloneable handle on Redis for commands; each clone shares the
/// underlying connections.
#[derive(Clone)]
pub enum Connection {
    /// One Redis server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

/// The command connection and the clients the inbox subscribes with.
pub struct Opened {
    /// For commands (the script, publishing).
    pub commands: Connection,
    /// One per URL, tried in turn for the subscription.
    pub subscribers: Vec<redis::Client>,
}

/// Opens `target` lazily: nothing is connected until the first command, so
/// a node starts (degraded) while Redis is away. Each call is bounded by
/// `timeout`.
pub fn open(target: &Target<'_>, timeout: Duration) -> anyhow::Result<Opened> {
    anyhow::ensure!(!target.urls.is_empty(), "no Redis URL");
    anyhow::ensure!(
        target.cluster || target.urls.len() == 1,
        "several Redis URLs are the seeds of a Redis Cluster: add --redis-cluster"
    );
    let subscribers = target
        .urls
        .iter()
        .map(|url| redis::Client::open(url.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let commands = if target.cluster {
        let client = ClusterClient::builder(target.urls.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .build()?;
        let config = ClusterConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        Connection::Cluster(client.get_pending_async_connection_with_config(config))
    } else {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        Connection::Single(ConnectionManager::new_lazy_with_config(
            subscribers[0].clone(),
            config,
        )?)
    };
    Ok(Opened {
        commands,
        subscribers,
    })
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

//! The command line: what to load, how hard, and how to measure it.

use anyhow::ensure;
use clap::{Parser, ValueEnum};
use quicmatch::protocol::{MAX_CHAT_LEN, MAX_SDP_LEN};

/// What the generator does once every session is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Only connect and match.
    Connect,
    /// Offers from every initiator to its partner.
    Relay,
    /// Chat datagrams from every initiator to its partner.
    Chat,
    /// Stop and re-match, over and over.
    Churn,
}

impl Scenario {
    /// The name the flag takes and the report prints.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Connect => "connect",
            Scenario::Relay => "relay",
            Scenario::Chat => "chat",
            Scenario::Churn => "churn",
        }
    }

    /// Whether initiators send messages to their partners (relay, chat).
    pub fn sends_messages(self) -> bool {
        matches!(self, Scenario::Relay | Scenario::Chat)
    }
}

/// Load generator for a quicmatch server (loopback only).
#[derive(Debug, Clone, Parser)]
#[command(name = "quicmatch-load", version, about)]
pub struct Args {
    /// Session URL of the server; repeated for the nodes of one pool, over
    /// which the sessions are spread.
    #[arg(long, default_value = "https://127.0.0.1:5000/signal")]
    pub url: Vec<String>,

    /// Base64 SHA-256 of a server certificate to pin (repeatable); fetched
    /// from each --http's /api/webtransport when absent.
    #[arg(long)]
    pub cert_hash: Vec<String>,

    /// Base URL of a server's HTTP sidecar, for the certificate hash (one per
    /// node) and the session count (the first; a pool's is the whole pool's).
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    pub http: Vec<String>,

    /// Accept any certificate instead of pinning its hash.
    #[arg(long)]
    pub insecure: bool,

    /// Every session a full TLS handshake, as a first visit is: no session
    /// resumption (by default, like a browser, the sessions resume with the
    /// server's tickets, and the server signs no handshake).
    #[arg(long)]
    pub no_resumption: bool,

    /// Pairs: 2 × pairs sessions, half women, half men.
    #[arg(long, default_value_t = 100)]
    pub pairs: u32,

    /// Messages each initiator sends (relay, chat).
    #[arg(long, default_value_t = 100)]
    pub messages: u32,

    /// What to do once matched.
    #[arg(long, value_enum, default_value_t = Scenario::Relay)]
    pub scenario: Scenario,

    /// How long churn runs, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,

    /// Process id of the server, to sample its CPU time and memory from
    /// /proc; repeated for every node, whose figures are summed.
    #[arg(long)]
    pub server_pid: Vec<u32>,

    /// UDP sockets (client endpoints) the sessions are spread over.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connectors: u32,

    /// Kernel receive and send buffer of each generator socket, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub udp_buffer_bytes: usize,

    /// Bytes of sdp in each relayed offer.
    #[arg(long, default_value_t = 2048)]
    pub payload_bytes: usize,

    /// Bytes of text in each chat datagram (at most 1000).
    #[arg(long, default_value_t = 100)]
    pub chat_bytes: usize,

    /// Frames each session sends per second at most; 0: as fast as possible.
    #[arg(long, default_value_t = 50)]
    pub frame_rate: u32,

    /// Datagrams each session sends per second at most; 0: as fast as possible.
    #[arg(long, default_value_t = 20)]
    pub datagram_rate: u32,

    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub connect_concurrency: u32,

    /// Longest any phase (connect, join, the scenario, teardown) may take, in seconds.
    #[arg(long, default_value_t = 120)]
    pub phase_timeout_secs: u64,

    /// Longest a relayed offer may take to arrive before it counts as lost, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub message_timeout_ms: u64,

    /// How long the sender waits for a chat before sending the next, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub chat_timeout_ms: u64,

    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// During the scenario, send this many QUIC Initials that never complete
    /// a handshake from one UDP socket (a handshake flood), time a newcomer's
    /// session once a second and report the server's memory growth.
    #[arg(long, default_value_t = 0)]
    pub flood_initials: u32,

    /// Seconds over which the flood's Initials are spread.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub flood_secs: u32,

    /// Where the flood and its newcomers go (default: the first --url), e.g.
    /// the server's other address family, outside its --trusted-net.
    #[arg(long)]
    pub flood_url: Option<String>,
}

impl Args {
    /// Rejects sizes the run cannot use: no pairs, or payloads too short to
    /// carry their stamp or too long for the protocol.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.pairs >= 1, "--pairs must be at least 1");
        ensure!(!self.url.is_empty(), "--url is required");
        ensure!(
            (64..=MAX_SDP_LEN).contains(&self.payload_bytes),
            "--payload-bytes must be from 64 to {MAX_SDP_LEN}"
        );
        ensure!(
            (64..=MAX_CHAT_LEN).contains(&self.chat_bytes),
            "--chat-bytes must be from 64 to {MAX_CHAT_LEN}"
        );
        ensure!(
            self.flood_initials == 0 || self.scenario != Scenario::Churn,
            "--flood-initials runs beside relay or chat (a newcomer would be matched in churn)"
        );
        Ok(())
    }

    /// Sessions the run opens: two per pair.
    pub fn sessions(&self) -> u32 {
        self.pairs * 2
    }

    /// The node (index into `--url`) session `index` connects to. Women
    /// (even indices) go round the nodes one by one and men a round slower,
    /// so that, matched in index order, a share (n-1)/n of pairs crosses
    /// nodes, as when people land on nodes at random.
    pub fn node_of(&self, index: u32) -> usize {
        let nodes = self.url.len().max(1);
        let k = (index / 2) as usize;
        if index.is_multiple_of(2) {
            k % nodes
        } else {
            (k / nodes) % nodes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_spread_over_nodes_with_a_share_of_pairs_across() {
        let args = |urls: usize| {
            let mut argv = vec!["quicmatch-load".to_owned()];
            for i in 0..urls {
                argv.extend([
                    "--url".into(),
                    format!("https://127.0.0.1:{}/signal", 5000 + i),
                ]);
            }
            Args::parse_from(argv)
        };
        let one = args(1);
        assert!((0..100).all(|i| one.node_of(i) == 0));
        for nodes in [2, 3] {
            let a = args(nodes);
            let mut per_node = vec![0; nodes];
            let mut crossing = 0;
            let pairs = (nodes * nodes * 10) as u32;
            for k in 0..pairs {
                let (woman, man) = (a.node_of(2 * k), a.node_of(2 * k + 1));
                per_node[woman] += 1;
                per_node[man] += 1;
                crossing += usize::from(woman != man);
            }
            assert!(per_node.iter().all(|&n| n == 2 * pairs as usize / nodes));
            assert_eq!(crossing, pairs as usize * (nodes - 1) / nodes);
        }
    }
}

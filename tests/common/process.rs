//! A node run as its own process, so that a test can kill it outright.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use base64::Engine;

/// A `quicmatch` process on loopback, killed when dropped.
pub struct NodeProcess {
    child: Child,
    /// Its session URL on 127.0.0.1.
    pub url: String,
    /// The SHA-256 of its self-signed certificate.
    pub hash: [u8; 32],
}

/// Starts the `quicmatch` binary as a node of the pool at `redis_url` and
/// reads its address and certificate hash from its log.
pub async fn spawn_node(redis_url: &str) -> NodeProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quicmatch"))
        .args(["--bind", "127.0.0.1", "--port", "0", "--self-signed"])
        .args(["--redis", redis_url])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the quicmatch binary");
    let stderr = child.stderr.take().expect("stderr");
    let found = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let (mut url, mut hash) = (None, None);
        for line in lines.by_ref().take(50) {
            let line = line.ok()?;
            if let Some(at) = line.find("WebTransport on ") {
                url = Some(line[at + "WebTransport on ".len()..].trim().to_owned());
            }
            if let Some(at) = line.find("sha-256 ") {
                hash = Some(line[at + "sha-256 ".len()..].trim().to_owned());
            }
            if url.is_some() && hash.is_some() {
                break;
            }
        }
        // Keep draining the log so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Some((url?, hash?))
    });
    let (url, hash) = tokio::time::timeout(std::time::Duration::from_secs(20), found)
        .await
        .expect("node started in time")
        .expect("log reader")
        .expect("address and hash in the log");
    let hash: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(hash)
        .expect("base64 hash")
        .try_into()
        .expect("32 bytes");
    NodeProcess { child, url, hash }
}

impl NodeProcess {
    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

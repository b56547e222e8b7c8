//! A server run as its own process, so that a test can kill it outright,
//! send it signals, or read its log.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;

/// A `quicmatch` process on loopback, killed when dropped.
pub struct NodeProcess {
    child: Child,
    /// Its session URL on 127.0.0.1.
    pub url: String,
    /// Its sidecar's address on 127.0.0.1.
    pub http: std::net::SocketAddr,
    /// The SHA-256 of its self-signed certificate, if self-signed.
    pub hash: Option<[u8; 32]>,
    /// Every line it has logged so far (stderr).
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Starts the `quicmatch` binary as a node of the pool at `redis_url` and
/// reads its address and certificate hash from its log.
pub async fn spawn_node(redis_url: &str) -> NodeProcess {
    spawn_server(&["--self-signed", "--redis", redis_url], &[]).await
}

/// Starts the `quicmatch` binary on 127.0.0.1 (ephemeral port) with `args`
/// and the environment `env`, and waits until it logs where it listens.
pub async fn spawn_server(args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quicmatch"));
    command
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start the quicmatch binary");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines = log.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    // Keeps reading the log so the process never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut ready = Some(ready_tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // The certificate is the last thing a starting server logs.
            let up = line.contains("self-signed certificate, sha-256")
                || line.contains("certificate from files");
            lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            if up && let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
        }
    });
    tokio::time::timeout(std::time::Duration::from_secs(20), ready_rx)
        .await
        .expect("server started in time")
        .expect("server logged its addresses");
    let lines = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let after = |marker: &str| {
        lines.iter().find_map(|line| {
            let at = line.find(marker)?;
            let rest = &line[at + marker.len()..];
            Some(
                rest.split(['"', ' '])
                    .next()
                    .unwrap_or(rest)
                    .trim()
                    .to_owned(),
            )
        })
    };
    let url = after("WebTransport on ").expect("WebTransport address in the log");
    let http = after("HTTP sidecar on http://")
        .and_then(|a| a.trim_end_matches('/').parse().ok())
        .expect("sidecar address in the log");
    let hash = after("sha-256 ").map(|hash| {
        base64::engine::general_purpose::STANDARD
            .decode(hash)
            .expect("base64 hash")
            .try_into()
            .expect("32 bytes")
    });
    NodeProcess {
        child,
        url,
        http,
        hash,
        log,
    }
}

impl NodeProcess {
    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`).
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal})");
    }

    /// Waits (bounded) for the process to exit; its exit status.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "process did not exit in time"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

//! The server's HTTP sidecar: the certificate hash to pin, and the count of
//! sessions the server holds (to see it let go of every session afterwards).

use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper::header::{ACCEPT, HOST};
use quicmatch::client::discover;
use serde_json::Value;
use tokio::time::timeout;

use crate::args::Args;
use crate::loopback::{authority, loopback_addr};

/// Longest a request to the sidecar may take.
const SIDECAR_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate hashes to pin: every `--cert-hash`, or else the first
/// one each `--http` sidecar's `/api/webtransport` lists.
pub async fn certificate_hashes(args: &Args) -> anyhow::Result<Vec<[u8; 32]>> {
    let mut hashes = Vec::new();
    for text in &args.cert_hash {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .context("the certificate hash is not base64")?;
        hashes.push(
            bytes
                .try_into()
                .map_err(|_| anyhow!("the certificate hash is not 32 bytes"))?,
        );
    }
    if !hashes.is_empty() {
        return Ok(hashes);
    }
    for http in &args.http {
        let discovery = match timeout(SIDECAR_TIMEOUT, discover(http)).await {
            Ok(answer) => answer,
            Err(_) => Err(anyhow!("no answer within {SIDECAR_TIMEOUT:?}")),
        }
        .with_context(|| {
            format!("fetching {http}/api/webtransport (give --cert-hash or --insecure instead)")
        })?;
        let hash = discovery.certificate_hashes.first().copied().context(
            "/api/webtransport lists no certificate hash (not self-signed? use --insecure)",
        )?;
        if !hashes.contains(&hash) {
            hashes.push(hash);
        }
    }
    Ok(hashes)
}

/// Sessions the server (a pool: the whole pool) reports as connected, if
/// the first sidecar answers.
pub async fn server_sessions(args: &Args) -> Option<u64> {
    let base = args.http.first()?;
    let stats = timeout(SIDECAR_TIMEOUT, get_json(base, "/api/stats"))
        .await
        .ok()?
        .ok()?;
    stats["totalUsers"].as_u64()
}

/// `GET path` from the sidecar at `base` (a loopback `http://` URL); the
/// JSON body of a 200.
async fn get_json(base: &str, path: &str) -> anyhow::Result<Value> {
    let host = authority(base, "http://")?;
    let stream = tokio::net::TcpStream::connect(loopback_addr(&host)?).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(HOST, host)
        .header(ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    ensure!(
        response.status() == StatusCode::OK,
        "GET {path}: HTTP status {}",
        response.status()
    );
    let body = response.into_body().collect().await?.to_bytes();
    connection.abort();
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[tokio::test]
    async fn cert_hash_flag_needs_no_sidecar() {
        let hash = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let args = Args::parse_from([
            "quicmatch-load",
            "--cert-hash",
            &hash,
            "--http",
            "http://127.0.0.1:1",
        ]);
        assert_eq!(certificate_hashes(&args).await.unwrap(), vec![[7u8; 32]]);
        let short = Args::parse_from(["quicmatch-load", "--cert-hash", "AAAA"]);
        assert!(certificate_hashes(&short).await.is_err());
    }
}

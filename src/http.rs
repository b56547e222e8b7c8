//! The HTTP sidecar: health and stats for operators, the WebTransport URL and
//! certificate hashes for browsers, and the web app. It reads the same hub
//! that matches sessions (and, in a shared pool, the pool's last heartbeat).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::hub::Hub;
use crate::protocol::SIGNAL_PATH;
use crate::server::PinnedHashes;

/// RFC 3339 in UTC with milliseconds, as in `2024-01-01T00:00:00.000Z`.
const TIMESTAMP: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// What the sidecar's handlers read.
#[derive(Clone)]
pub struct SidecarState {
    hub: Arc<Hub>,
    hashes: PinnedHashes,
    quic_port: u16,
    metrics: PrometheusHandle,
    history: crate::history::Recorder,
    /// `--public-url`: the session URL to give, if not built from `Host`.
    public_url: Option<String>,
}

impl SidecarState {
    /// State over the server's hub, its pinned hashes, its UDP port, the
    /// metrics recorder's handle, the dashboard's last hour and
    /// `--public-url`.
    pub fn new(
        hub: Arc<Hub>,
        hashes: PinnedHashes,
        quic_port: u16,
        metrics: PrometheusHandle,
        history: crate::history::Recorder,
        public_url: Option<String>,
    ) -> Self {
        SidecarState {
            hub,
            hashes,
            quic_port,
            metrics,
            history,
            public_url,
        }
    }
}

/// Standard base64 (with padding), as `serverCertificateHashes` values use.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The sidecar's routes.
pub fn router(state: SidecarState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/api/stats", get(stats))
        .route("/api/webtransport", get(webtransport))
        .route("/metrics", get(metrics_page))
        .route("/api/history", get(history))
        .with_state(state)
        .merge(crate::web_assets::router())
}

/// Serves the sidecar on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: SidecarState,
    shutdown: CancellationToken,
) {
    let app = router(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(error) = result {
        warn!(%error, "HTTP sidecar stopped");
    }
}

/// Lets pages on other origins read the public JSON endpoints.
fn public_json<T: Serialize>(value: T) -> Response {
    let mut response = Json(value).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /health`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    status: &'static str,
    active_users: usize,
    active_matches: usize,
    male_queue: usize,
    female_queue: usize,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<NodeFigures>,
}

/// This node's own figures, beside the whole pool's, in a shared pool.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeFigures {
    /// The node's id in the pool.
    id: String,
    /// Its sessions.
    active_users: usize,
    /// Its sessions in a match (a pair across nodes counts on both).
    matched_users: usize,
    male_queue: usize,
    female_queue: usize,
    /// Live nodes in the pool.
    nodes: usize,
    /// Whether Redis answered the last heartbeat.
    redis: bool,
}

fn node_figures(hub: &crate::hub::Hub) -> Option<NodeFigures> {
    let cluster = hub.cluster()?;
    let own = hub.node_stats();
    let view = hub.pool_view();
    Some(NodeFigures {
        id: cluster.node().to_string(),
        active_users: own.active_users,
        matched_users: own.active_matches,
        male_queue: own.male_queue,
        female_queue: own.female_queue,
        nodes: view.nodes.len(),
        redis: view.reachable,
    })
}

async fn health(State(state): State<SidecarState>) -> Response {
    let stats = state.hub.stats();
    let timestamp = time::OffsetDateTime::now_utc()
        .format(TIMESTAMP)
        .unwrap_or_default();
    let node = node_figures(&state.hub);
    // A node shutting down, or one that cannot reach its pool (it still
    // serves its own sessions): a load balancer should send newcomers
    // elsewhere.
    let status = if state.hub.is_draining() {
        "draining"
    } else if node.as_ref().is_some_and(|n| !n.redis) {
        "degraded"
    } else {
        "ok"
    };
    let mut response = public_json(Health {
        status,
        active_users: stats.active_users,
        active_matches: stats.active_matches,
        male_queue: stats.male_queue,
        female_queue: stats.female_queue,
        timestamp,
        node,
    });
    if status != "ok" {
        *response.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    }
    response
}

/// `GET /metrics`: Prometheus text format.
async fn metrics_page(State(state): State<SidecarState>) -> Response {
    let body = crate::metrics::render(&state.metrics, &state.hub);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/history`: the last hour of the dashboard's series, and now.
async fn history(State(state): State<SidecarState>) -> Response {
    let now = crate::metrics::render(&state.metrics, &state.hub);
    let mut response = Json(state.history.history(Some(&now))).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /api/stats`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiStats {
    total_users: usize,
    active_matches: usize,
    queues: Queues,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<NodeFigures>,
}

#[derive(Serialize)]
struct Queues {
    male: usize,
    female: usize,
}

async fn stats(State(state): State<SidecarState>) -> Response {
    let stats = state.hub.stats();
    public_json(ApiStats {
        total_users: stats.active_users,
        active_matches: stats.active_matches,
        queues: Queues {
            male: stats.male_queue,
            female: stats.female_queue,
        },
        node: node_figures(&state.hub),
    })
}

/// `GET /api/webtransport`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebTransportInfo {
    url: String,
    server_certificate_hashes: Vec<CertificateHash>,
}

#[derive(Serialize)]
struct CertificateHash {
    algorithm: &'static str,
    value: String,
}

async fn webtransport(State(state): State<SidecarState>, headers: HeaderMap) -> Response {
    if let Some(elsewhere) = least_loaded_node(&state.hub) {
        return public_json(elsewhere);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_without_port)
        .unwrap_or("localhost");
    let hashes = state
        .hashes
        .read()
        .map(|hashes| {
            hashes
                .iter()
                .map(|hash| CertificateHash {
                    algorithm: "sha-256",
                    value: base64(hash),
                })
                .collect()
        })
        .unwrap_or_default();
    let url = match &state.public_url {
        Some(url) => url.clone(),
        None => format!("https://{host}:{}{SIGNAL_PATH}", state.quic_port),
    };
    public_json(WebTransportInfo {
        url,
        server_certificate_hashes: hashes,
    })
}

/// In a shared pool, the live node with the fewest sessions among those
/// that announce a public URL and take sessions; `None` means this one.
fn least_loaded_node(hub: &crate::hub::Hub) -> Option<WebTransportInfo> {
    hub.cluster()?;
    let view = hub.pool_view();
    let best = view
        .nodes
        .iter()
        .filter(|n| n.announcement.open)
        .filter_map(|n| Some((n.announcement.url.as_ref()?, &n.announcement)))
        .min_by_key(|(_, a)| a.sessions)?;
    Some(WebTransportInfo {
        url: best.0.clone(),
        server_certificate_hashes: best
            .1
            .hashes
            .iter()
            .map(|value| CertificateHash {
                algorithm: "sha-256",
                value: value.clone(),
            })
            .collect(),
    })
}

/// The host part of a `Host` header (`name`, `name:port`, `[v6]` or
/// `[v6]:port`), if it is made only of characters a host may have.
fn host_without_port(value: &str) -> Option<&str> {
    let host = if value.starts_with('[') {
        &value[..=value.find(']')?]
    } else {
        value.rsplit_once(':').map_or(value, |(host, _)| host)
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    valid.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::host_without_port;

    #[test]
    fn host_header_forms() {
        assert_eq!(host_without_port("localhost:5000"), Some("localhost"));
        assert_eq!(host_without_port("example.org"), Some("example.org"));
        assert_eq!(host_without_port("[::1]:5000"), Some("[::1]"));
        assert_eq!(host_without_port("[::1]"), Some("[::1]"));
        assert_eq!(host_without_port("evil\"/x:1"), None);
        assert_eq!(host_without_port(":80"), None);
    }
}

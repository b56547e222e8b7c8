//! The HTTP sidecar: health and stats for operators, the WebTransport URL and
//! certificate hashes for browsers, the web app, and the browser module at
//! its versioned path for pages elsewhere. It reads the same hub
//! that matches sessions (and, in a shared pool, the pool's last heartbeat),
//! never taking the hub's lock: the counts it shows are the copy the hub
//! publishes at each change.
//!
//! It faces the open internet on TCP, so what one client may hold is
//! bounded ([`SidecarLimits`]): the time to send a request head (slowloris)
//! or to finish a request (a slow body), the bytes of a head and of a body,
//! the requests handled at once (more are shed with 503) and the
//! connections open at once (more are closed on arrival), and a
//! connection's whole life (a client that never reads its response).
//! axum's own `serve` offers none of the connection bounds, so [`serve`]
//! runs hyper's HTTP/1 connections itself, with hyper's header timeout and
//! tower's limits around the router.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::{BoxError, Service, ServiceBuilder};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, warn};

use crate::hub::Hub;
use crate::protocol::SIGNAL_PATH;
use crate::server::PinnedHashes;

/// RFC 3339 in UTC with milliseconds, as in `2024-01-01T00:00:00.000Z`.
const TIMESTAMP: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// How long a connection told to close (at shutdown, or at its
/// [`SidecarLimits::max_connection_age`]) has to finish the response in
/// flight before it is cut off; also how long [`serve`] waits for them all
/// at shutdown, so it returns within this of being told to stop.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What one client of the sidecar may hold. Every figure bounds something
/// a client decides (how fast it sends, how much, how often, how long it
/// stays), so that a few sockets cannot keep the sidecar from answering
/// `/health`. The defaults ([`SidecarLimits::default`]) are those of a
/// server; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidecarLimits {
    /// Time for a whole request head to arrive, from the connection's start
    /// or (kept alive) from the end of the previous response: a client
    /// trickling its headers (slowloris), and an idle kept-alive
    /// connection, are closed after it. Default 10 s.
    pub header_timeout: Duration,
    /// Time for a request to be answered, reading its body included: a
    /// request still unanswered then (a body sent slowly, or not at all) is
    /// answered 408. Default 10 s.
    pub request_timeout: Duration,
    /// Bytes a request body may have. The sidecar's routes take none; a
    /// larger `Content-Length` is answered 413 at once, and a larger chunked
    /// body fails when read. Default 1 KiB.
    pub max_body_bytes: usize,
    /// Bytes a request head (request line and headers) may have: a longer
    /// one is answered 431, and one still unfinished stops being buffered
    /// near it (hyper's read buffer, of at least 8 KiB, is bounded by it
    /// too). Default 32 KiB, as nginx's default header buffers (room for a
    /// browser's cookies).
    pub max_head_bytes: usize,
    /// Requests handled at once; more are answered 503 at once (shed, not
    /// queued). `/health` counts as one: a node this busy says so. Default
    /// 256.
    pub max_requests: usize,
    /// Connections open at once. Over it a new connection is closed at once
    /// rather than left in the kernel's queue: the client learns at once
    /// (and a load balancer tries another node), and a flood cannot fill
    /// the accept queue ahead of later clients. Default 1,024: with the head
    /// bound, well under 100 MiB of buffered heads at worst.
    pub max_connections: usize,
    /// A connection's whole life: then it is closed after its response in
    /// flight, or [`CLOSE_GRACE`] later if that response is not read (a
    /// client that never reads holds hyper in mid-write, where no other
    /// timer runs). A client simply opens another. Default 60 s.
    pub max_connection_age: Duration,
}

impl Default for SidecarLimits {
    fn default() -> Self {
        SidecarLimits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 1024,
            max_head_bytes: 32 * 1024,
            max_requests: 256,
            max_connections: 1024,
            max_connection_age: Duration::from_secs(60),
        }
    }
}

/// What the sidecar's handlers read, and the limits it is served with.
#[derive(Clone)]
pub struct SidecarState {
    hub: Arc<Hub>,
    hashes: PinnedHashes,
    quic_port: u16,
    metrics: PrometheusHandle,
    history: crate::history::Recorder,
    /// `--public-url`: the session URL to give, if not built from `Host`.
    public_url: Option<String>,
    limits: SidecarLimits,
    /// Where `GET /signal` WebSocket sessions go (none: the route answers
    /// 404).
    websocket: Option<Arc<crate::websocket::WebSocketSessions>>,
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
            limits: SidecarLimits::default(),
            websocket: None,
        }
    }

    /// The same state, also serving WebSocket sessions (PROTOCOL section 7).
    pub fn with_websocket(self, sessions: Arc<crate::websocket::WebSocketSessions>) -> Self {
        SidecarState {
            websocket: Some(sessions),
            ..self
        }
    }

    /// The same state, served with `limits` rather than the defaults.
    pub fn with_limits(self, limits: SidecarLimits) -> Self {
        SidecarState { limits, ..self }
    }

    /// The limits [`serve`] applies.
    pub fn limits(&self) -> SidecarLimits {
        self.limits
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
        .route(SIGNAL_PATH, get(signal))
        .with_state(state)
        .merge(crate::web_assets::router())
}

/// Serves the sidecar on `listener` until `shutdown`, with the state's
/// [`SidecarLimits`]; returns within [`CLOSE_GRACE`] of `shutdown`.
pub async fn serve(listener: TcpListener, state: SidecarState, shutdown: CancellationToken) {
    let limits = state.limits;
    serve_router(listener, router(state), limits, shutdown).await;
}

/// Serves `router` on `listener` until `shutdown`, within `limits`: the
/// sidecar's own loop, public so that tests (and later routes, such as a
/// WebSocket fallback) run behind exactly the same bounds.
///
/// Each accepted connection runs in a task of this function's own
/// [`JoinSet`], which counts them for [`SidecarLimits::max_connections`] and
/// ends any that are left when this returns. On `shutdown` it stops
/// accepting, tells every connection to close after its response in flight
/// and waits at most [`CLOSE_GRACE`] for them.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: SidecarLimits,
    shutdown: CancellationToken,
) {
    let service = bounded(router, &limits);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The head's own bound, and the read buffer's: hyper checks the
        // first once a head is complete, the second as it grows.
        .max_header_size(limits.max_head_bytes)
        .max_buf_size(limits.max_head_bytes.max(MIN_HEAD_BYTES));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                accept_failed(&error, &shutdown).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= limits.max_connections {
            debug!("sidecar connection closed on arrival: at the connection limit");
            drop(stream);
            continue;
        }
        connections.spawn(connection(
            stream,
            http.clone(),
            service.clone(),
            limits.max_connection_age,
            shutdown.clone(),
        ));
    }
    drop(listener);
    let closed = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(CLOSE_GRACE, closed).await.is_err() {
        debug!(
            left = connections.len(),
            "sidecar connections cut off at shutdown"
        );
    }
}

/// hyper's smallest read buffer: the buffer's bound is raised to it (a
/// smaller one would make hyper panic).
const MIN_HEAD_BYTES: usize = 8192;

/// `router` behind the per-request bounds, outermost first: a body over
/// [`SidecarLimits::max_body_bytes`] is refused (413) before it takes a
/// place; over [`SidecarLimits::max_requests`] a request is shed (503)
/// rather than queued; one not answered within
/// [`SidecarLimits::request_timeout`] is answered 408 and its place freed.
/// The layers wrap the router as a whole, so the request limit is one for
/// every route together (an axum `Router::layer` would give each its own).
fn bounded(
    router: Router,
    limits: &SidecarLimits,
) -> impl Service<Request<Incoming>, Response = Response, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(refused))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .load_shed()
        .concurrency_limit(limits.max_requests)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .service(router)
}

/// The answer to a request the limits turned away: 503 (with
/// `Retry-After`) when shed for load, 500 otherwise (no other error is
/// expected: the router itself never fails).
async fn refused(error: BoxError) -> Response {
    if error.is::<tower::load_shed::error::Overloaded>() {
        let retry = [(header::RETRY_AFTER, HeaderValue::from_static("1"))];
        return (StatusCode::SERVICE_UNAVAILABLE, retry, "busy\n").into_response();
    }
    warn!(%error, "sidecar request failed");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

/// Serves one connection (HTTP/1.1, kept alive between requests) until the
/// client closes it, hyper closes it (a head not sent in time, a malformed
/// request), it reaches `max_age`, or `shutdown`; in the last two cases it
/// closes after the response in flight, or [`CLOSE_GRACE`] later.
///
/// Upgrades are not enabled, as no route upgrades. When the WebSocket
/// fallback arrives it will call `.with_upgrades()` here; an upgraded
/// connection then leaves hyper (this task ends and stops counting towards
/// [`SidecarLimits::max_connections`]) and lives in the upgrade handler's
/// own task, which must hold a place of its own count of long-lived
/// sockets (a semaphore taken before the upgrade is answered, released
/// when the socket closes), bounded apart from this one.
async fn connection<S>(
    stream: TcpStream,
    http: http1::Builder,
    service: S,
    max_age: Duration,
    shutdown: CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    // Responses are written whole; no reason to wait for more.
    let _ = stream.set_nodelay(true);
    // Handlers may ask who is on the other end (the WebSocket fallback's
    // per-source limits).
    let remote = stream.peer_addr().ok();
    let service = tower::ServiceExt::map_request(service, move |mut request: Request<Incoming>| {
        if let Some(remote) = remote {
            request.extensions_mut().insert(ConnectInfo(remote));
        }
        request
    });
    // An upgraded connection (a WebSocket session) leaves hyper: it is the
    // session's from then on, bounded by the session's own limits, and no
    // longer by this connection's age.
    let conn = http
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        result = conn.as_mut() => Some(result),
        () = shutdown.cancelled() => None,
        () = tokio::time::sleep(max_age) => None,
    };
    let result = match ended {
        Some(result) => result,
        None => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, conn).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(error) = result {
        debug!(%error, "sidecar connection ended");
    }
}

/// After a failed `accept`: a connection that died in the queue is nothing;
/// anything else (out of file descriptors, say) is logged, and accepting
/// pauses a second (or until `shutdown`) rather than spinning.
async fn accept_failed(error: &std::io::Error, shutdown: &CancellationToken) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    warn!(%error, "HTTP sidecar cannot accept; retrying in a second");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
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

/// `GET /signal`: a WebSocket session (PROTOCOL section 7).
async fn signal(
    State(state): State<SidecarState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(sessions) = state.websocket.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match upgrade {
        Ok(upgrade) => crate::websocket::upgrade(sessions, remote, &uri, &headers, upgrade).await,
        Err(rejection) => rejection.into_response(),
    }
}

/// `GET /api/webtransport`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebTransportInfo {
    url: String,
    server_certificate_hashes: Vec<CertificateHash>,
    /// The WebSocket fallback's URL, on this sidecar.
    #[serde(skip_serializing_if = "Option::is_none")]
    websocket: Option<String>,
}

/// The WebSocket fallback's URL as the client reached this sidecar: `ws://`,
/// or `wss://` behind a proxy that says it took TLS (`X-Forwarded-Proto`).
fn websocket_url(state: &SidecarState, headers: &HeaderMap) -> Option<String> {
    state.websocket.as_ref()?;
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|value| is_authority(value))?;
    let tls = forwarded_over_tls(headers);
    let scheme = if tls { "wss" } else { "ws" };
    Some(format!("{scheme}://{authority}{SIGNAL_PATH}"))
}

/// Whether a proxy says the client reached it over TLS: `X-Forwarded-Proto:
/// https`, or `proto=https` in a standard `Forwarded` header (RFC 7239).
fn forwarded_over_tls(headers: &HeaderMap) -> bool {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let x_forwarded =
        header("x-forwarded-proto").is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let forwarded = header("forwarded").is_some_and(|value| {
        value
            .split([';', ','])
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, proto)| {
                name.eq_ignore_ascii_case("proto")
                    && proto.trim_matches('"').eq_ignore_ascii_case("https")
            })
    });
    x_forwarded || forwarded
}

/// Whether a `Host` header is a host, optionally with a port, and nothing
/// else.
fn is_authority(value: &str) -> bool {
    let Some(host) = host_without_port(value) else {
        return false;
    };
    let port = &value[host.len()..];
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Serialize)]
struct CertificateHash {
    algorithm: &'static str,
    value: String,
}

async fn webtransport(State(state): State<SidecarState>, headers: HeaderMap) -> Response {
    let websocket = websocket_url(&state, &headers);
    if let Some(elsewhere) = least_loaded_node(&state.hub) {
        return public_json(WebTransportInfo {
            websocket,
            ..elsewhere
        });
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
        websocket,
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
        websocket: None,
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
    #[test]
    fn a_proxy_that_took_tls_is_believed_in_either_header() {
        let with = |name: &'static str, value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static(value));
            super::forwarded_over_tls(&headers)
        };
        assert!(with("x-forwarded-proto", "https"));
        assert!(with(
            "forwarded",
            "for=192.0.2.60;proto=https;by=203.0.113.43"
        ));
        assert!(with("forwarded", "proto=\"HTTPS\""));
        assert!(!with("x-forwarded-proto", "http"));
        assert!(!with("forwarded", "for=192.0.2.60;proto=http"));
        assert!(!super::forwarded_over_tls(&HeaderMap::new()));
    }

    use std::sync::mpsc;

    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    /// Every page that shows the hub's figures answers while the hub's lock
    /// is held (a pool operation stuck under it, say).
    #[test]
    fn figures_are_served_while_the_hub_lock_is_held() {
        let hub = Arc::new(Hub::new(
            18,
            10,
            crate::ice::IceServers::default(),
            None,
            10,
        ));
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let state = SidecarState::new(
            hub.clone(),
            Arc::default(),
            5000,
            metrics,
            crate::history::Recorder::default(),
            None,
        );
        let app = router(state);
        let paths = ["/health", "/api/stats", "/metrics", "/api/history"];
        let held = hub.hold_lock_for_test();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            for path in paths {
                let request = Request::get(path).body(Body::empty()).expect("a request");
                let response = runtime.block_on(app.clone().oneshot(request));
                let _ = tx.send((path, response.map(|r| r.status())));
            }
        });
        let answers: Vec<_> = paths
            .iter()
            .map(|_| rx.recv_timeout(Duration::from_secs(2)))
            .collect();
        drop(held);
        for answer in answers {
            let (path, status) = answer.expect("answered while the hub's lock is held");
            assert_eq!(status, Ok(StatusCode::OK), "{path}");
        }
    }

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

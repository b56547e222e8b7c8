//! The browser app (`web/`), built into the binary and served by the HTTP sidecar.
//!
//! The files are embedded with `include_bytes!`, so a deployment is the one
//! binary. Every response carries an `ETag` (a hash of the file, computed once
//! at first use). The app's own files are `Cache-Control: no-cache`: browsers
//! keep their copy but revalidate it on each load, getting a cheap `304 Not
//! Modified` until a new build changes the file. The browser module is also
//! served at a versioned path (`/quicmatch.v1.js`, with its types beside it)
//! for pages on other origins: cacheable for an hour and readable from any
//! origin, as is the unversioned `/quicmatch.js`. There is no catch-all route:
//! any other path is left to the router this one is merged into (and is a 404
//! there).

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// One embedded file and the path it is served at.
struct Asset {
    /// URL path, e.g. `/app.js`.
    path: &'static str,
    /// The file's bytes.
    body: &'static [u8],
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its `Cache-Control`.
    cache: &'static str,
    /// Whether pages on any origin may read it (`Access-Control-Allow-Origin: *`).
    any_origin: bool,
    /// Where its TypeScript types are (`X-TypeScript-Types`), for a module.
    types: Option<&'static str>,
}

/// The browser module at the path named after the protocol's major version:
/// within a major version its API only grows, so a page that imports it from
/// here keeps working when the server is upgraded.
pub const MODULE_V1_PATH: &str = "/quicmatch.v1.js";
/// The module's TypeScript types, beside it (named by `X-TypeScript-Types`,
/// which runtimes that import modules by URL, such as Deno, read).
pub const TYPES_V1_PATH: &str = "/quicmatch.v1.d.ts";
/// How long browsers and shared caches keep the versioned files before they
/// revalidate them: a server upgrade reaches every page within the hour.
pub const MODULE_CACHE_CONTROL: &str = "public, max-age=3600";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TS: &str = "application/typescript; charset=utf-8";
/// Revalidated on each load.
const REVALIDATE: &str = "no-cache";

/// A file of the app itself: same origin, revalidated on each load.
const fn app_file(path: &'static str, body: &'static [u8], content_type: &'static str) -> Asset {
    Asset {
        path,
        body,
        content_type,
        cache: REVALIDATE,
        any_origin: false,
        types: None,
    }
}

/// Every file of the web app. Adding a file to `web/` means adding it here.
const ASSETS: &[Asset] = &[
    app_file("/", include_bytes!("../web/index.html"), HTML),
    app_file("/index.html", include_bytes!("../web/index.html"), HTML),
    // The browser module: importable from any origin; unversioned, so revalidated.
    Asset {
        path: "/quicmatch.js",
        body: include_bytes!("../web/quicmatch.js"),
        content_type: JS,
        cache: REVALIDATE,
        any_origin: true,
        types: None,
    },
    Asset {
        path: MODULE_V1_PATH,
        body: include_bytes!("../web/quicmatch.js"),
        content_type: JS,
        cache: MODULE_CACHE_CONTROL,
        any_origin: true,
        types: Some(TYPES_V1_PATH),
    },
    Asset {
        path: TYPES_V1_PATH,
        body: include_bytes!("../web/quicmatch.d.ts"),
        content_type: TS,
        cache: MODULE_CACHE_CONTROL,
        any_origin: true,
        types: None,
    },
    app_file("/app.js", include_bytes!("../web/app.js"), JS),
    app_file("/strings.js", include_bytes!("../web/strings.js"), JS),
    app_file("/log.js", include_bytes!("../web/log.js"), JS),
    app_file("/style.css", include_bytes!("../web/style.css"), CSS),
    // The operators' live dashboard (its data: /api/history).
    app_file("/dashboard", include_bytes!("../web/dashboard.html"), HTML),
    app_file("/dashboard.js", include_bytes!("../web/dashboard.js"), JS),
];

/// Strong ETags, one per entry of [`ASSETS`]: the first 16 bytes of the file's
/// SHA-256 in hex, quoted. Computed once; the files never change at run time.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.body);
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
        })
        .collect()
});

/// Routes `GET` (and `HEAD`) for each file of [`ASSETS`]: the page (`/` and
/// `/index.html`), its scripts and style, the browser module (also at
/// [`MODULE_V1_PATH`], with [`TYPES_V1_PATH`]) and the dashboard.
///
/// Generic over the state so it merges into the sidecar's router whatever
/// state that one has. It registers no fallback, so unknown paths stay 404s.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS
        .iter()
        .enumerate()
        .fold(Router::new(), |router, (index, asset)| {
            router.route(
                asset.path,
                get(move |headers: HeaderMap| async move { serve(index, &headers) }),
            )
        })
}

/// Answers one request for `ASSETS[index]`: the file, or `304` when the
/// client's `If-None-Match` already names its ETag.
fn serve(index: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let mut cache = HeaderMap::new();
    cache.insert(header::ETAG, etag.clone());
    cache.insert(header::CACHE_CONTROL, HeaderValue::from_static(asset.cache));
    if asset.any_origin {
        cache.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    if let Some(types) = asset.types {
        cache.insert("x-typescript-types", HeaderValue::from_static(types));
    }
    if if_none_match_hits(headers, etag) {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.body,
    )
        .into_response()
}

/// Whether any `If-None-Match` header lists `etag` (or `*`). Comparison is
/// weak, as RFC 9110 asks for this header: `W/"x"` matches `"x"`.
fn if_none_match_hits(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == etag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    async fn request(method: Method, path: &str, if_none_match: Option<&str>) -> Response {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn get(path: &str) -> Response {
        request(Method::GET, path, None).await
    }

    async fn body(resp: Response) -> Vec<u8> {
        to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    fn content_type(resp: &Response) -> &str {
        resp.headers()[header::CONTENT_TYPE].to_str().unwrap()
    }

    #[tokio::test]
    async fn serves_each_file_with_its_content_type() {
        for (path, ty, file) in [
            ("/", HTML, include_bytes!("../web/index.html").as_slice()),
            ("/index.html", HTML, include_bytes!("../web/index.html")),
            ("/quicmatch.js", JS, include_bytes!("../web/quicmatch.js")),
            ("/app.js", JS, include_bytes!("../web/app.js")),
            ("/log.js", JS, include_bytes!("../web/log.js")),
            ("/style.css", CSS, include_bytes!("../web/style.css")),
        ] {
            let resp = get(path).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert_eq!(content_type(&resp), ty, "{path}");
            assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache", "{path}");
            assert_eq!(resp.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert!(resp.headers().contains_key(header::ETAG), "{path}");
            assert_eq!(body(resp).await, file, "{path}");
        }
    }

    #[tokio::test]
    async fn page_loads_the_app_module() {
        let page = String::from_utf8(body(get("/").await).await).unwrap();
        assert!(page.contains(r#"<script type="module" src="app.js">"#));
        assert!(page.contains(r#"id="remote-video""#));
    }

    #[tokio::test]
    async fn etags_differ_between_files_and_are_quoted() {
        let a = get("/app.js").await.headers()[header::ETAG].clone();
        let b = get("/style.css").await.headers()[header::ETAG].clone();
        assert_ne!(a, b);
        let a = a.to_str().unwrap();
        assert!(
            a.len() == 34 && a.starts_with('"') && a.ends_with('"'),
            "{a}"
        );
    }

    #[tokio::test]
    async fn matching_if_none_match_is_not_modified() {
        let etag = get("/quicmatch.js").await.headers()[header::ETAG]
            .to_str()
            .unwrap()
            .to_owned();
        for tag in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"other\", {etag}"),
            "*".to_owned(),
        ] {
            let resp = request(Method::GET, "/quicmatch.js", Some(&tag)).await;
            assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "{tag}");
            assert_eq!(resp.headers()[header::ETAG], etag.as_str());
            assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache");
            assert!(body(resp).await.is_empty());
        }
    }

    #[tokio::test]
    async fn stale_if_none_match_gets_the_file() {
        let resp = request(Method::GET, "/style.css", Some("\"0123\"")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body(resp).await, include_bytes!("../web/style.css"));
    }

    #[tokio::test]
    async fn head_has_headers_and_no_body() {
        let resp = request(Method::HEAD, "/app.js", None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(content_type(&resp), JS);
        assert!(body(resp).await.is_empty());
    }

    #[tokio::test]
    async fn unknown_paths_are_not_found() {
        for path in [
            "/nope",
            "/web/app.js",
            "/app.js/",
            "/quicmatch.js.map",
            "/health",
        ] {
            assert_eq!(get(path).await.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[tokio::test]
    async fn other_methods_are_refused() {
        let resp = request(Method::POST, "/", None).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}

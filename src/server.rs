//! Wiring shared by `main` and the tests: the node id, the engine settings and
//! the full router (API plus Mission Control).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::{header, HeaderName, HeaderValue, Request, StatusCode};
use std::sync::Arc;

use axum::Router;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};
use tower_sessions_sqlx_store::PostgresStore;

use crate::api::ui::LoginThrottle;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::ServeDir;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use leptos::config::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use uuid::Uuid;

use crate::api::{self, AppState};
use crate::app::{shell, App};
use crate::config::Config;
use crate::engine::guard::NetworkGuard;
use crate::engine::{EngineConfig, RetryPolicy};

/// The node id: generated once and kept in the data folder (SPEC §3).
pub fn node_id(data_dir: &Path) -> Result<Uuid> {
    let file = data_dir.join("node_id");
    if let Ok(text) = std::fs::read_to_string(&file) {
        return Uuid::parse_str(text.trim()).with_context(|| format!("{} does not hold a UUID", file.display()));
    }
    let id = Uuid::new_v4();
    std::fs::write(&file, id.to_string()).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(id)
}

pub fn engine_config(c: &Config) -> EngineConfig {
    EngineConfig {
        concurrency: c.concurrency as usize,
        claim_batch: (c.concurrency as i64).min(500),
        poll_interval: Duration::from_millis(c.poll_interval_ms),
        sync_timeout: c.sync_timeout(),
        shutdown_grace: Duration::from_millis(c.shutdown_grace_ms),
        retry: RetryPolicy { base: Duration::from_millis(c.retry_base_ms), ..RetryPolicy::default() },
        network_guard: c.block_private_networks.then(|| NetworkGuard { allowed: c.allowed_networks.clone() }),
        // `validate` already refused a bad list.
        databases: c.database_aliases().unwrap_or_default(),
        files_dir: c.data_dir.join("files"),
        max_file_bytes: c.max_file_bytes,
        breaker: crate::store::flow::BreakerRule {
            min_attempts: c.circuit_min_attempts as i32,
            ..Default::default()
        },
        ..EngineConfig::default()
    }
}

/// Leptos settings: where the compiled site is (`make build`, or cargo-leptos),
/// and its fingerprinted bundle names when `herald site` prepared it.
pub fn leptos_options(addr: std::net::SocketAddr) -> LeptosOptions {
    let site_root = std::env::var("LEPTOS_SITE_ROOT").unwrap_or_else(|_| "target/site".into());
    let hash_file = crate::assets::hash_file(std::path::Path::new(&site_root));
    LeptosOptions::builder()
        .output_name(crate::assets::OUTPUT_NAME)
        .site_root(site_root)
        .site_pkg_dir("pkg")
        .site_addr(addr)
        .env(leptos::config::Env::PROD)
        .hash_files(hash_file.is_some())
        // An absolute path: Leptos joins it to the binary's folder.
        .hash_file(hash_file.map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|| "hash.txt".into()).into())
        .build()
}

/// The whole HTTP application: the API, Mission Control, and the layers every
/// request goes through (request ids, logging, time and size limits, headers).
///
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: sign-in
/// throttling is per source address.
pub async fn router(state: AppState, request_timeout: Duration) -> Result<Router> {
    let routes = generate_route_list(App);
    let options = state.leptos_options.clone();
    let engine = state.engine.clone();
    let throttle = Arc::new(LoginThrottle::default());
    let context = move || {
        leptos::prelude::provide_context(engine.clone());
        leptos::prelude::provide_context(throttle.clone());
    };
    // The bundle: precompressed copies for browsers that take them, and cache
    // headers that let a browser keep a fingerprinted file for good.
    let pkg = std::path::Path::new(options.site_root.as_ref()).join(options.site_pkg_dir.as_ref());
    let assets = Router::new()
        .nest_service("/pkg", ServeDir::new(pkg).precompressed_br().precompressed_gzip())
        .layer(axum::middleware::from_fn(crate::assets::cache_headers));
    let ui = Router::new()
        .route("/live/{project}", axum::routing::get(api::live::live))
        .leptos_routes_with_context(&state, routes, context, move || shell(options.clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(sessions(&state).await?)
        .layer(RequestBodyLimitLayer::new(state.max_body_bytes))
        .layer(axum::middleware::from_fn(same_origin_only))
        .layer(axum::middleware::from_fn(api::not_a_page));
    let x_request_id = HeaderName::from_static("x-request-id");
    // Every route but the file store's has a total time limit; an upload over a
    // slow link may take longer, and is cut off only when idle (SPEC §8).
    let timed = Router::new()
        .merge(api::routes(state.max_body_bytes))
        .merge(ui)
        .merge(assets)
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, request_timeout));
    Ok(timed
        .merge(api::file_routes())
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(x_request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                    // The path only: query strings and headers may carry secrets.
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                }))
                .layer(PropagateRequestIdLayer::new(x_request_id))
                .layer(axum::middleware::from_fn(move |req, next| api_errors_in_json(req, next, request_timeout)))
                .layer(axum::middleware::from_fn(no_nul_in_url))
                .layer(SetResponseHeaderLayer::if_not_present(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("same-origin"),
                )),
        ))
}

/// A NUL byte (`%00`) in the path or the query cannot name any project, trigger,
/// file or filter, and PostgreSQL cannot hold it in text: a 400 that says so,
/// before any handler or the authentication reads it.
async fn no_nul_in_url(req: Request<axum::body::Body>, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let uri = req.uri();
    if uri.path().contains("%00") || uri.query().is_some_and(|q| q.contains("%00")) {
        let msg = "the URL holds a NUL character (%00), which no project, trigger, file or filter contains";
        return api::ApiError::new(StatusCode::BAD_REQUEST, msg).into_response();
    }
    next.run(req).await
}

/// The API answers every error as `{"error": "<message>"}`. Its handlers do; this
/// turns the rest into that form: the extractors' own plain-text rejections (a
/// path that is not UTF-8, a query key given twice) and the empty 503 of the
/// request time limit.
async fn api_errors_in_json(
    req: Request<axum::body::Body>,
    next: axum::middleware::Next,
    request_timeout: Duration,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let api = req.uri().path().starts_with("/v1/");
    let resp = next.run(req).await;
    let status = resp.status();
    let json = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !api || json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // These bodies are a line of text; a longer one is not a rejection's.
    let text = axum::body::to_bytes(body, 16 * 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_string());
    let msg = match text {
        Ok(t) if !t.is_empty() => t,
        _ if status == StatusCode::SERVICE_UNAVAILABLE => format!(
            "the request did not finish within {} s (a request body that stalls, or a database that does not answer)",
            request_timeout.as_secs()
        ),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    (parts, api::ApiError::new(status, msg)).into_response()
}

/// Mission Control sessions, stored in PostgreSQL: HttpOnly, SameSite=Strict
/// cookies that end after 12 h without use.
async fn sessions(state: &AppState) -> Result<SessionManagerLayer<PostgresStore>> {
    let store = PostgresStore::new(state.engine.pool().clone());
    store.migrate().await.context("cannot create the session table")?;
    let sweeper = store.clone();
    use tower_sessions::session_store::ExpiredDeletion;
    tokio::spawn(async move {
        // Expired sessions are removed hourly; failures only delay the clean-up.
        let _ = sweeper.continuously_delete_expired(tokio::time::Duration::from_secs(3600)).await;
    });
    Ok(SessionManagerLayer::new(store)
        .with_name("herald_session")
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_secure(state.secure_cookies)
        .with_expiry(Expiry::OnInactivity(tower_sessions::cookie::time::Duration::hours(12))))
}

/// Sets the Content-Security-Policy of a UI page. Scripts must be ours or carry
/// this response's nonce, which Leptos puts on its hydration script.
pub fn page_security_headers() {
    use leptos::prelude::use_context;
    leptos::nonce::provide_nonce();
    let nonce = leptos::nonce::use_nonce().map(|n| n.to_string()).unwrap_or_default();
    let csp = format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    );
    if let (Some(resp), Ok(value)) = (use_context::<leptos_axum::ResponseOptions>(), HeaderValue::from_str(&csp)) {
        resp.insert_header(header::CONTENT_SECURITY_POLICY, value);
    }
}

/// CSRF protection for the UI, whose server functions are reached with the
/// session cookie: a state-changing request must come from a page of this very
/// origin. (The cookie is SameSite=Strict too; this guards older browsers and
/// same-site subdomains.) The API is exempt: it authenticates with bearer tokens,
/// which browsers never attach by themselves.
async fn same_origin_only(req: Request<axum::body::Body>, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse;
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let source = req
        .headers()
        .get(header::ORIGIN)
        .or_else(|| req.headers().get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| reqwest::Url::parse(v).ok());
    let same = source.as_ref().is_some_and(|u| {
        let authority = match u.port() {
            Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
            None => u.host_str().unwrap_or("").to_string(),
        };
        !host.is_empty() && authority.eq_ignore_ascii_case(host)
    });
    if same {
        next.run(req).await
    } else {
        let msg = match source {
            Some(_) => "cross-site request refused: the Origin header does not match this server",
            None => "cross-site request refused: this write has no Origin or Referer header (Mission Control takes writes from its own pages only)",
        };
        api::ApiError::new(StatusCode::FORBIDDEN, msg).into_response()
    }
}

/// Serves `app` on `listener` over HTTP/1.1 until `shutdown` resolves, then stops
/// accepting and waits for the connections to finish the requests they are serving
/// (idle ones close at once).
///
/// A connection may wait at most `idle_timeout` for each request's headers, from
/// the moment it opens or its previous answer went out. axum::serve sets no timer,
/// so an idle keep-alive connection, or one that sends half a request head, held
/// its place under [`LimitedListener`]'s limit for ever: a client keeping
/// HERALD_MAX_CONNECTIONS of them open shut everyone else out with 503s. Once the
/// head is in, the request is never cut by this timeout; the router's own request
/// timeout applies.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    idle_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(idle_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let router = app.clone();
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(addr));
            tower::ServiceExt::oneshot(router.clone(), req)
        });
        let connection = graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(io), service));
        tokio::spawn(async move {
            // A client that goes away, or a head that timed out, is not a server error.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %addr, "connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A listener that serves at most `max` connections at once. A connection past
/// the limit is answered `503` with `Retry-After: 1` and closed at once, so the
/// client knows to come back, and costs no memory after that. Each served
/// connection costs buffers and a task; an open-loop load past capacity opened
/// 20,000 of them, which took Herald to 412 MB.
pub struct LimitedListener<L> {
    inner: L,
    permits: Arc<tokio::sync::Semaphore>,
}

impl<L> LimitedListener<L> {
    pub fn new(inner: L, max: usize) -> Self {
        Self { inner, permits: Arc::new(tokio::sync::Semaphore::new(max.max(1))) }
    }
}

impl<L: axum::serve::Listener> axum::serve::Listener for LimitedListener<L> {
    type Io = Limited<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = self.inner.accept().await;
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    metrics::gauge!(CONNECTIONS_OPEN).increment(1);
                    return (Limited { io, _permit: permit }, addr);
                }
                Err(_) => {
                    metrics::counter!("herald_connections_refused_total").increment(1);
                    tokio::spawn(refuse(io));
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Connections being served (gauge), each holding a place under the limit.
const CONNECTIONS_OPEN: &str = "herald_connections_open";

/// A connection holding its place under [`LimitedListener`]'s limit until dropped.
pub struct Limited<T> {
    io: T,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<T> Drop for Limited<T> {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTIONS_OPEN).decrement(1);
    }
}

impl<T> Limited<T> {
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Limited<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Answers a connection past the limit: reads what the client sent first (closing
/// with unread data would reset the connection before it reads the answer), then
/// writes a 503 and closes.
async fn refuse<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut io: T) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: &str = r#"{"error":"Herald is serving as many connections as it may (HERALD_MAX_CONNECTIONS); try again shortly"}"#;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(500), io.read(&mut buf)).await;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        io.write_all(answer.as_bytes()).await?;
        io.shutdown().await
    })
    .await;
}

//! What every REST handler shares: the state, the error reply, authentication
//! and body reading.

use axum::extract::rejection::BytesRejection;
use axum::extract::FromRef;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use bytes::Bytes;
use leptos::config::LeptosOptions;
use serde_json::{json, Value};

use crate::engine::projects::{AuthError, Role};
use super::{files, health, logs, openapi, queue, triggers};
use crate::engine::{Engine, EngineError};

/// Shared by every handler and by Leptos.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub leptos_options: LeptosOptions,
    pub max_body_bytes: usize,
    /// Mark session cookies Secure (Herald is served over https).
    pub secure_cookies: bool,
    /// The bearer token `/metrics` requires, if any (HERALD_METRICS_TOKEN).
    pub metrics_token: Option<String>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(s: &AppState) -> Self {
        s.leptos_options.clone()
    }
}

/// The API routes but the file store's; Leptos adds the UI's.
pub fn routes(max_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .merge(health::routes())
        .merge(queue::routes())
        .merge(triggers::routes())
        .merge(logs::routes())
        .merge(openapi::routes())
        // A known path with a method it does not take gets an API error too
        // (an unknown path under /v1/, see `not_a_page`).
        .method_not_allowed_fallback(method_not_allowed)
        // The handlers read the body themselves, up to this limit, so that an
        // oversize body gets a JSON 413 like every other error.
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
}

/// The file store's routes. They stream bodies of any length, so they are not
/// under the total request timeout; an upload has an idle timeout instead.
pub fn file_routes() -> Router<AppState> {
    files::routes().method_not_allowed_fallback(method_not_allowed)
}

/// Requests that no route took end in Mission Control's router; one under
/// `/v1/` gets an API error that names it, not Mission Control's page (nor, for a
/// write, its cross-site refusal). Layered outside that router's other layers.
pub async fn not_a_page(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if !req.uri().path().starts_with("/v1/") {
        return next.run(req).await;
    }
    let msg = format!("no such API endpoint: {} {}; /v1/openapi.json lists them", req.method(), req.uri().path());
    ApiError::new(StatusCode::NOT_FOUND, msg).into_response()
}

/// axum adds the Allow header with the methods the path takes.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let msg = format!("{} does not take {method}; the Allow header lists what it takes", uri.path());
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, msg)
}

/// An error reply: `{"error": "<message>"}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::Invalid(_) => StatusCode::BAD_REQUEST,
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::Conflict(_) => StatusCode::CONFLICT,
            EngineError::Forbidden(_) => StatusCode::FORBIDDEN,
            EngineError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            EngineError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                StatusCode::SERVICE_UNAVAILABLE
            }
            EngineError::Database(source) => {
                // Details stay in the server log; the caller gets a plain message.
                tracing::error!(error = %source, "database error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::UnknownProject(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            AuthError::Missing | AuthError::Invalid | AuthError::ReceiverToken => ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()),
            AuthError::Engine(e) => e.into(),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
        .map(|(_, token)| token.trim_start())
}

/// Checks the bearer token for `project` and that it carries `needed`.
pub async fn authorize(state: &AppState, project: &str, headers: &HeaderMap, needed: Role) -> Result<Role, ApiError> {
    let role = state.engine.authenticate(project, bearer(headers)).await?;
    if needed == Role::Admin && role != Role::Admin {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this API key may only queue events; an admin key is required"));
    }
    Ok(role)
}

/// Reads a JSON body, with a 413 for an oversize one and a 400 naming the problem.
pub fn json_body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Value, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than the limit of {limit} bytes"))
        } else {
            ApiError::new(r.status(), r.body_text())
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "the body is empty; send a JSON object"));
    }
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {e}")))?;
    if crate::engine::queue::holds_nul(&value) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body contains a NUL character (\\u0000), which PostgreSQL cannot store",
        ));
    }
    Ok(value)
}

//! The queue API of SPEC §2 and §4.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;

use super::{authorize, json_body, ApiError, AppState};
use crate::engine::projects::Role;
use crate::engine::queue::QueueOutcome;
use crate::engine::sync::SyncStatus;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/api/{project}/eventing/queue", post(queue))
        // The path the seeds also use.
        .route("/v1/api/{project}/event-triggers/queue", post(queue_alias))
        .route("/v1/api/{project}/eventing/queue/batch", post(queue_batch))
}

#[utoipa::path(post, path = "/v1/api/{project}/eventing/queue", tag = "queue", params(("project" = String, Path, description = "Project id")),
    request_body = crate::api::openapi::QueueBody, security(("bearer" = [])),
    responses(
        (status = 200, description = "Queued (or, when synchronous, delivered)", body = crate::engine::queue::Queued),
        (status = 400, description = "Bad input", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or bad token", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown project, or no trigger for a synchronous event", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Body too large", body = crate::api::openapi::ErrorBody),
        (status = 502, description = "Synchronous: every delivery failed"),
        (status = 504, description = "Synchronous: the deadline passed"),
    ))]
async fn queue(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &project, &headers, Role::Queue).await?;
    let body = json_body(body, state.max_body_bytes)?;
    Ok(match state.engine.queue(&project, &body).await? {
        QueueOutcome::Queued(q) => Json(q).into_response(),
        QueueOutcome::Sync(reply) => {
            let status = match reply.status {
                SyncStatus::Ok => StatusCode::OK,
                SyncStatus::AllFailed => StatusCode::BAD_GATEWAY,
                SyncStatus::Timeout => StatusCode::GATEWAY_TIMEOUT,
                SyncStatus::NoTrigger => StatusCode::NOT_FOUND,
            };
            (status, Json(reply.body)).into_response()
        }
    })
}

#[utoipa::path(post, path = "/v1/api/{project}/eventing/queue/batch", tag = "queue", params(("project" = String, Path, description = "Project id")),
    request_body = crate::api::openapi::BatchBody, security(("bearer" = [])),
    responses(
        (status = 200, description = "All queued, in one transaction", body = crate::api::openapi::BatchReply),
        (status = 400, description = "A bad event; the message gives its index", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or bad token", body = crate::api::openapi::ErrorBody),
    ))]
async fn queue_batch(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &project, &headers, Role::Queue).await?;
    let body = json_body(body, state.max_body_bytes)?;
    let queued = state.engine.queue_batch(&project, &body).await?;
    Ok(Json(json!({"events": queued})).into_response())
}

#[utoipa::path(post, path = "/v1/api/{project}/event-triggers/queue", tag = "queue", description = "The same as /eventing/queue; the path the Space Cloud docs also use.", params(("project" = String, Path, description = "Project id")),
    request_body = crate::api::openapi::QueueBody, security(("bearer" = [])),
    responses(
        (status = 200, description = "Queued (or, when synchronous, delivered)", body = crate::engine::queue::Queued),
        (status = 400, description = "Bad input", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or bad token", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown project, or no trigger for a synchronous event", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Body too large", body = crate::api::openapi::ErrorBody),
        (status = 502, description = "Synchronous: every delivery failed"),
        (status = 504, description = "Synchronous: the deadline passed"),
    ))]
async fn queue_alias(
    state: State<AppState>,
    project: Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    queue(state, project, headers, body).await
}

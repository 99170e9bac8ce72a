//! The delivery history (SPEC §6): list, detail, redeliver, cancel, replay.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{authorize, json_body, ApiError, AppState};
use crate::engine::logs::{LogDetail, LogPage, LogQuery};
use crate::engine::projects::Role;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/api/{project}/eventing/logs", get(list))
        .route("/v1/api/{project}/eventing/logs/{id}", get(detail))
        .route("/v1/api/{project}/eventing/logs/{id}/redeliver", post(redeliver))
        .route("/v1/api/{project}/eventing/logs/{id}/cancel", post(cancel))
        .route("/v1/api/{project}/eventing/triggers/{name}/replay", post(replay))
}

fn log_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("no event log {id}")))
}

#[utoipa::path(get, path = "/v1/api/{project}/eventing/logs", tag = "logs",
    params(("project" = String, Path, description = "Project id"), crate::engine::logs::LogQuery), security(("bearer" = [])),
    responses((status = 200, body = crate::engine::logs::LogPage), (status = 400, body = crate::api::openapi::ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LogPage>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    Ok(Json(state.engine.list_logs(&project, query).await?))
}

#[utoipa::path(get, path = "/v1/api/{project}/eventing/logs/{id}", tag = "logs", params(("project" = String, Path, description = "Project id"), ("id" = String, Path, description = "Event log id")),
    security(("bearer" = [])), responses((status = 200, body = crate::engine::logs::LogDetail), (status = 404, body = crate::api::openapi::ErrorBody)))]
async fn detail(
    State(state): State<AppState>,
    Path((project, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<LogDetail>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    Ok(Json(state.engine.log_detail(&project, log_id(&id)?).await?))
}

#[utoipa::path(post, path = "/v1/api/{project}/eventing/logs/{id}/redeliver", tag = "logs", params(("project" = String, Path, description = "Project id"), ("id" = String, Path, description = "Event log id")),
    security(("bearer" = [])), responses((status = 200, body = crate::engine::logs::LogDetail), (status = 404, body = crate::api::openapi::ErrorBody),
        (status = 409, description = "Being delivered right now, or its trigger was deleted", body = crate::api::openapi::ErrorBody)))]
async fn redeliver(
    State(state): State<AppState>,
    Path((project, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<LogDetail>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    Ok(Json(state.engine.redeliver(&project, log_id(&id)?).await?))
}

#[utoipa::path(post, path = "/v1/api/{project}/eventing/logs/{id}/cancel", tag = "logs", params(("project" = String, Path, description = "Project id"), ("id" = String, Path, description = "Event log id")),
    security(("bearer" = [])), responses((status = 200, body = crate::engine::logs::LogDetail), (status = 404, body = crate::api::openapi::ErrorBody),
        (status = 409, description = "Not scheduled or pending", body = crate::api::openapi::ErrorBody)))]
async fn cancel(
    State(state): State<AppState>,
    Path((project, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<LogDetail>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    Ok(Json(state.engine.cancel(&project, log_id(&id)?).await?))
}

#[utoipa::path(post, path = "/v1/api/{project}/eventing/triggers/{name}/replay", tag = "logs", params(("project" = String, Path, description = "Project id"), ("name" = String, Path, description = "Trigger name")),
    request_body(content = crate::api::openapi::ReplayBody, description = "Optional time window"), security(("bearer" = [])),
    responses((status = 200, description = "{\"replayed\": n}"), (status = 404, body = crate::api::openapi::ErrorBody)))]
/// Body (optional): `{"from": "<RFC 3339>", "to": "<RFC 3339>"}`.
async fn replay(
    State(state): State<AppState>,
    Path((project, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    let window = match &body {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => json!({}),
        _ => json_body(body, state.max_body_bytes)?,
    };
    let field = |k: &str| -> Result<Option<String>, ApiError> {
        match window.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::new(StatusCode::BAD_REQUEST, format!("`{k}` must be an RFC 3339 string"))),
        }
    };
    let (from, to) = (field("from")?, field("to")?);
    let n = state.engine.replay_failed(&project, &name, from.as_deref(), to.as_deref()).await?;
    Ok(Json(json!({"replayed": n})))
}

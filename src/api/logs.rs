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
        .route("/v1/api/{project}/eventing/dead-letters", get(dead_letters))
        .route("/v1/api/{project}/eventing/settings", get(read_settings).put(write_settings))
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
    // Anything else would mean no filter, and replay every failed log of the trigger.
    let Some(keys) = window.as_object() else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "the body must be a JSON object: {\"from\", \"to\", \"error\"}, each optional"));
    };
    if let Some(k) = keys.keys().find(|k| !["from", "to", "error"].contains(&k.as_str())) {
        let msg = format!("`{k}` is not a replay filter; the filters are `from`, `to` and `error`");
        return Err(ApiError::new(StatusCode::BAD_REQUEST, msg));
    }
    let field = |k: &str| -> Result<Option<String>, ApiError> {
        match window.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::new(StatusCode::BAD_REQUEST, format!("`{k}` must be an RFC 3339 string"))),
        }
    };
    let (from, to, error) = (field("from")?, field("to")?, field("error")?);
    let n = state.engine.replay_failed(&project, &name, from.as_deref(), to.as_deref(), error.as_deref()).await?;
    Ok(Json(json!({"replayed": n})))
}

/// The `from` and `to` of a dead-letter query.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Window {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[utoipa::path(get, path = "/v1/api/{project}/eventing/dead-letters", tag = "logs",
    params(("project" = String, Path, description = "Project id"), Window), security(("bearer" = [])),
    responses((status = 200, description = "`{\"groups\": [{trigger, error, count, oldest, newest}]}`: failed event logs \
        grouped by trigger and last error, largest first; replay a group with the trigger's replay endpoint and its `error`"),
        (status = 400, body = crate::api::openapi::ErrorBody)))]
async fn dead_letters(
    State(state): State<AppState>,
    Path(project): Path<String>,
    axum::extract::Query(window): axum::extract::Query<Window>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    let groups = state.engine.dead_letters(&project, window.from.as_deref(), window.to.as_deref()).await?;
    Ok(Json(json!({"groups": groups})))
}

#[utoipa::path(get, path = "/v1/api/{project}/eventing/settings", tag = "logs",
    params(("project" = String, Path, description = "Project id")), security(("bearer" = [])),
    responses((status = 200, description = "`{\"retentionDays\": n}`: ended history older than this is removed")))]
async fn read_settings(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    Ok(Json(json!({"retentionDays": state.engine.retention_days(&project).await?})))
}

#[utoipa::path(put, path = "/v1/api/{project}/eventing/settings", tag = "logs",
    params(("project" = String, Path, description = "Project id")), security(("bearer" = [])),
    request_body(content = crate::api::openapi::SettingsBody),
    responses((status = 200, description = "`{\"retentionDays\": n}`"), (status = 400, body = crate::api::openapi::ErrorBody)))]
async fn write_settings(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    let body = json_body(body, state.max_body_bytes)?;
    let days = match body.get("retentionDays") {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "`retentionDays` must be a whole number of days")
        })?,
        None => return Err(ApiError::new(StatusCode::BAD_REQUEST, "`retentionDays` is required")),
        Some(_) => return Err(ApiError::new(StatusCode::BAD_REQUEST, "`retentionDays` must be a whole number of days")),
    };
    Ok(Json(json!({"retentionDays": state.engine.set_retention_days(&project, days).await?})))
}

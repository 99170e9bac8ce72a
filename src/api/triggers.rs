//! Trigger management (SPEC §6), for scripts and the README's examples.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};

use super::{authorize, json_body, ApiError, AppState};
use crate::engine::projects::Role;
use crate::engine::EngineError;
use crate::engine::triggers::TriggerInput;
use crate::model::Trigger;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/api/{project}/eventing/triggers", get(list).post(create))
        .route("/v1/api/{project}/eventing/triggers/{name}", get(read).put(update).delete(remove))
        .route("/v1/api/{project}/eventing/health", get(health))
}

/// A well-formed trigger that breaks a rule (a bad URL, retries out of range)
/// is 422; a body of the wrong shape is 400.
fn unprocessable(e: EngineError) -> ApiError {
    match e {
        EngineError::Invalid(msg) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, msg),
        other => other.into(),
    }
}

fn trigger_input(body: Value) -> Result<TriggerInput, ApiError> {
    serde_json::from_value(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid trigger: {e}")))
}

#[utoipa::path(get, path = "/v1/api/{project}/eventing/triggers", tag = "triggers", params(("project" = String, Path, description = "Project id")),
    security(("bearer" = [])), responses((status = 200, description = "{\"items\": [Trigger]}", body = crate::api::openapi::TriggerList),
        (status = 401, description = "Missing or bad token", body = crate::api::openapi::ErrorBody), (status = 403, description = "Not an admin key", body = crate::api::openapi::ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    Ok(Json(json!({"items": state.engine.list_triggers(&project).await?})))
}

#[utoipa::path(get, path = "/v1/api/{project}/eventing/health", tag = "triggers", params(("project" = String, Path, description = "Project id")),
    security(("bearer" = [])), responses((status = 200, description = "{\"items\": [TriggerHealth]}: each trigger's attempts over the last hour and its circuit",
        body = crate::api::openapi::HealthList),
        (status = 401, description = "Missing or bad token", body = crate::api::openapi::ErrorBody), (status = 403, description = "Not an admin key", body = crate::api::openapi::ErrorBody)))]
async fn health(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    Ok(Json(json!({"items": state.engine.trigger_health(&project).await?})))
}

#[utoipa::path(post, path = "/v1/api/{project}/eventing/triggers", tag = "triggers", params(("project" = String, Path, description = "Project id")),
    request_body = crate::engine::triggers::TriggerInput, security(("bearer" = [])),
    responses((status = 201, body = crate::model::Trigger), (status = 400, description = "Malformed body", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "The name is taken", body = crate::api::openapi::ErrorBody), (status = 422, description = "A field breaks a rule", body = crate::api::openapi::ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Trigger>), ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    let input = trigger_input(json_body(body, state.max_body_bytes)?)?;
    let created = state.engine.create_trigger(&project, input).await.map_err(unprocessable)?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/v1/api/{project}/eventing/triggers/{name}", tag = "triggers", params(("project" = String, Path, description = "Project id"), ("name" = String, Path, description = "Trigger name")),
    security(("bearer" = [])), responses((status = 200, body = crate::model::Trigger), (status = 404, body = crate::api::openapi::ErrorBody)))]
async fn read(
    State(state): State<AppState>,
    Path((project, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Trigger>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    Ok(Json(state.engine.get_trigger(&project, &name).await?))
}

#[utoipa::path(put, path = "/v1/api/{project}/eventing/triggers/{name}", tag = "triggers", params(("project" = String, Path, description = "Project id"), ("name" = String, Path, description = "Trigger name")),
    request_body = crate::engine::triggers::TriggerInput, security(("bearer" = [])),
    responses((status = 200, body = crate::model::Trigger), (status = 404, body = crate::api::openapi::ErrorBody), (status = 422, body = crate::api::openapi::ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    Path((project, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Trigger>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    let input = trigger_input(json_body(body, state.max_body_bytes)?)?;
    Ok(Json(state.engine.update_trigger(&project, &name, input).await.map_err(unprocessable)?))
}

#[utoipa::path(delete, path = "/v1/api/{project}/eventing/triggers/{name}", tag = "triggers", params(("project" = String, Path, description = "Project id"), ("name" = String, Path, description = "Trigger name")),
    security(("bearer" = [])), responses((status = 200, description = "Deleted; undelivered event logs cancelled"), (status = 404, body = crate::api::openapi::ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    Path((project, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    let cancelled = state.engine.delete_trigger(&project, &name).await?;
    Ok(Json(json!({"deleted": name, "cancelledEventLogs": cancelled})))
}

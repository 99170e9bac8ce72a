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
use crate::engine::triggers::TriggerInput;
use crate::model::Trigger;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/api/{project}/eventing/triggers", get(list).post(create))
        .route("/v1/api/{project}/eventing/triggers/{name}", get(read).put(update).delete(remove))
}

fn trigger_input(body: Value) -> Result<TriggerInput, ApiError> {
    serde_json::from_value(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid trigger: {e}")))
}

async fn list(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    Ok(Json(json!({"items": state.engine.list_triggers(&project).await?})))
}

async fn create(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Trigger>), ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    let input = trigger_input(json_body(body, state.max_body_bytes)?)?;
    Ok((StatusCode::CREATED, Json(state.engine.create_trigger(&project, input).await?)))
}

async fn read(
    State(state): State<AppState>,
    Path((project, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Trigger>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    Ok(Json(state.engine.get_trigger(&project, &name).await?))
}

async fn update(
    State(state): State<AppState>,
    Path((project, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Trigger>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    let input = trigger_input(json_body(body, state.max_body_bytes)?)?;
    Ok(Json(state.engine.update_trigger(&project, &name, input).await?))
}

async fn remove(
    State(state): State<AppState>,
    Path((project, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &project, &headers, Role::Admin).await?;
    let cancelled = state.engine.delete_trigger(&project, &name).await?;
    Ok(Json(json!({"deleted": name, "cancelledEventLogs": cancelled})))
}

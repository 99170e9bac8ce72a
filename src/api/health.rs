//! Liveness and readiness.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is up")))]
/// 200 while the process is up.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "The database answers"), (status = 503, description = "The database does not answer", body = crate::api::openapi::ErrorBody)))]
/// 200 while the database answers, 503 otherwise.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(state.engine.pool());
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": format!("database unavailable: {e}")}))),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "database did not answer within 2 s"}))),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
/// Prometheus text format. Database gauges are read now, so they are never stale.
/// With HERALD_METRICS_TOKEN set, only a scrape that presents it as a bearer token.
async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), super::ApiError> {
    use crate::metrics::{DB_POOL, DUE_UNCLAIMED, IN_FLIGHT};
    if let Some(expected) = state.metrics_token.as_deref() {
        let given = super::bearer(&headers).map(str::trim);
        // Compared by their SHA-256, so the time taken tells nothing about the token.
        use sha2::{Digest, Sha256};
        let same = given.is_some_and(|g| Sha256::digest(g.as_bytes()) == Sha256::digest(expected.trim().as_bytes()));
        if !same {
            return Err(super::ApiError::new(
                StatusCode::UNAUTHORIZED,
                "/metrics needs `Authorization: Bearer <HERALD_METRICS_TOKEN>`",
            ));
        }
    }
    let engine = &state.engine;
    let count = crate::store::events::count_due_unclaimed(engine.pool());
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), count).await {
        metrics::gauge!(DUE_UNCLAIMED).set(n as f64);
    }
    metrics::gauge!(IN_FLIGHT).set(engine.in_flight() as f64);
    let triggers = crate::store::flow::circuits(engine.pool());
    let by_trigger = match tokio::time::timeout(Duration::from_secs(2), triggers).await {
        Ok(Ok(all)) => engine.trigger_metrics(Some(&all)),
        _ => engine.trigger_metrics(None),
    };
    let pool = engine.pool();
    let idle = pool.num_idle() as f64;
    metrics::gauge!(DB_POOL, "state" => "idle").set(idle);
    metrics::gauge!(DB_POOL, "state" => "active").set(pool.size() as f64 - idle);
    metrics::gauge!(DB_POOL, "state" => "max").set(pool.options().get_max_connections() as f64);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::handle().render() + &by_trigger,
    ))
}

//! The OpenAPI 3.1 document, generated from the handlers' annotations and served
//! at `/v1/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::AppState;

/// Every error reply.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// What went wrong, naming the field or setting.
    error: String,
}

/// The queue body (SPEC §2). Unknown keys are ignored.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "camelCase")]
pub struct QueueBody {
    /// 1 to 128 characters.
    #[schema(rename = "type")]
    event_type: String,
    /// Any JSON; `payload` is accepted as an alias.
    #[schema(value_type = Object)]
    data: Option<serde_json::Value>,
    /// Epoch milliseconds (numbers below 100000000000 are seconds) or an RFC 3339 string.
    #[schema(value_type = Option<Object>)]
    timestamp: Option<serde_json::Value>,
    /// Seconds added to `timestamp`, 0 or more.
    delay: Option<f64>,
    is_synchronous: Option<bool>,
    /// The same key within 24 h returns the first event.
    idempotency_key: Option<String>,
}

/// Up to 1000 events, queued in one transaction.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchBody {
    events: Vec<QueueBody>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchReply {
    events: Vec<crate::engine::queue::Queued>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TriggerList {
    items: Vec<crate::model::Trigger>,
}

#[allow(dead_code)] // Read only by the OpenAPI document.
#[derive(utoipa::ToSchema)]
pub struct HealthList {
    items: Vec<crate::model::TriggerHealth>,
}

/// Failed event logs created in [from, to) are replayed; all are optional. With
/// `error`, only those whose last error is exactly that text (a dead-letter group).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReplayBody {
    from: Option<String>,
    to: Option<String>,
    error: Option<String>,
}

/// A project's settings.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "camelCase")]
pub struct SettingsBody {
    /// Ended event logs older than this many days are removed (1 to 3650; default 30).
    retention_days: i64,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(
                "A project API key (`hrld_…`), or an HS256 JWT signed with the project's JWT secret",
            )).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Herald", description = "Queue events over HTTP; Herald delivers them to webhooks."),
    paths(
        super::health::healthz, super::health::readyz, super::health::metrics,
        super::queue::queue, super::queue::queue_alias, super::queue::queue_batch,
        super::triggers::list, super::triggers::create, super::triggers::read, super::triggers::update,
        super::triggers::remove, super::triggers::health,
        super::logs::list, super::logs::detail, super::logs::redeliver, super::logs::cancel, super::logs::replay,
        super::logs::dead_letters, super::logs::read_settings, super::logs::write_settings,
        super::files::list_root, super::files::read, super::files::create, super::files::remove,
        openapi_json,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/openapi.json", get(openapi_json))
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "health", responses((status = 200, description = "This document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

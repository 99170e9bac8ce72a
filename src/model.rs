//! Types shared by the UI and the server: what a trigger, an event log and an
//! invocation look like on the wire. Keys are camelCase, as in the queue API.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a trigger's events come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Custom,
    Database,
    File,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Custom => "custom",
            Source::Database => "database",
            Source::File => "file",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "custom" => Some(Source::Custom),
            "database" => Some(Source::Database),
            "file" => Some(Source::File),
            _ => None,
        }
    }
}

/// The life cycle of one (event, trigger) delivery. See SPEC §1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Scheduled,
    Pending,
    Processing,
    Processed,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Scheduled,
        Status::Pending,
        Status::Processing,
        Status::Processed,
        Status::Failed,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Processed => "processed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True once nothing more will happen to the event log on its own.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Processed | Status::Failed | Status::Cancelled)
    }
}

/// A table a database trigger may watch, as the trigger form lists them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TableInfo {
    /// `schema.table`.
    pub name: String,
    /// The primary-key columns, in key order; empty when the table has none
    /// (its events then carry `"find": {}`).
    pub primary_key: Vec<String>,
    /// Whether Herald's database user may install a trigger on it.
    pub can_trigger: bool,
}

/// An event trigger: deliver events of `type` to `url`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    pub name: String,
    pub source: Source,
    #[serde(rename = "type")]
    pub event_type: String,
    pub url: String,
    pub retries: i32,
    pub timeout_ms: i32,
    #[cfg_attr(feature = "ssr", schema(value_type = Object))]
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub enabled: bool,
    #[cfg_attr(feature = "ssr", schema(value_type = Object))]
    pub options: serde_json::Map<String, serde_json::Value>,
    /// Most deliveries per second, for all nodes together; `None` for no limit (SPEC §10).
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// Most attempts in flight at once, for all nodes together (SPEC §10).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: i32,
    /// The circuit breaker's state (read-only).
    #[serde(default)]
    pub circuit: Circuit,
    /// Why Herald disabled the trigger by itself (a circuit open for 3 days); `None`
    /// when it is enabled or an operator disabled it (read-only).
    #[serde(default)]
    pub disabled_reason: Option<String>,
}

pub const DEFAULT_MAX_IN_FLIGHT: i32 = 256;

fn default_max_in_flight() -> i32 {
    DEFAULT_MAX_IN_FLIGHT
}

/// A trigger's circuit breaker (SPEC §10): `open` while nearly every recent attempt
/// failed. Its deliveries then wait, and one probe goes out each minute.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Circuit {
    pub open: bool,
    /// Why it opened.
    pub reason: Option<String>,
    pub opened_at: Option<DateTime<Utc>>,
    /// When the next probe goes out.
    pub next_probe_at: Option<DateTime<Utc>>,
}

/// A trigger's recent deliveries (SPEC §10), from the per-trigger counters: never
/// a scan of the history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TriggerHealth {
    pub trigger: String,
    /// Attempts in the last hour.
    pub attempts: i64,
    /// Attempts in the last hour that succeeded.
    pub succeeded: i64,
    /// The 95th percentile of those attempts' durations, as the upper bound of its
    /// histogram bucket, in milliseconds; `None` without attempts.
    pub p95_ms: Option<i64>,
    pub circuit: Circuit,
}

/// One row of the delivery history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventLog {
    pub id: Uuid,
    pub event_id: Uuid,
    pub trigger: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub status: Status,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub deliver_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// One HTTP attempt of an event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Invocation {
    pub id: Uuid,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    #[cfg_attr(feature = "ssr", schema(value_type = Object))]
    pub request_headers: serde_json::Value,
    pub request_body: String,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

/// One page of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LogPage {
    pub items: Vec<EventLog>,
    /// Pass back as `cursor` for the next (older) page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// An event log with its event data and every attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LogDetail {
    #[serde(flatten)]
    pub log: EventLog,
    /// The event data.
    #[cfg_attr(feature = "ssr", schema(value_type = Object))]
    pub data: serde_json::Value,
    pub invocations: Vec<Invocation>,
}

/// Failed event logs of one trigger with the same last error (SPEC §9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterGroup {
    pub trigger: String,
    /// The last error they share ("" when none was recorded).
    pub error: String,
    pub count: i64,
    pub oldest: DateTime<Utc>,
    pub newest: DateTime<Utc>,
}

/// The history dashboard's header cards and chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub now: DateTime<Utc>,
    /// Count per status, in `Status::ALL` order.
    pub counts: Vec<(Status, i64)>,
    /// Start of each bucket, with processed and failed counts; empty buckets included.
    pub buckets: Vec<(DateTime<Utc>, i64, i64)>,
}

/// An API key as listed: never the key itself, only its first characters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mission Control reads a log's detail back from its JSON: the flattened log's
    /// numbers too, and the event data's numbers digit for digit.
    #[test]
    fn a_log_detail_survives_its_json() {
        let at = DateTime::parse_from_rfc3339("2026-12-04T00:00:00Z").unwrap().with_timezone(&Utc);
        let detail = LogDetail {
            log: EventLog {
                id: Uuid::nil(),
                event_id: Uuid::nil(),
                trigger: "t".into(),
                event_type: "amounts".into(),
                status: Status::Failed,
                attempts: 3,
                created_at: at,
                deliver_at: at,
                next_attempt_at: None,
                last_error: Some("HTTP 500".into()),
            },
            data: serde_json::from_str(r#"{"big": 123456789012345678901234567890}"#).unwrap(),
            invocations: vec![Invocation {
                id: Uuid::nil(),
                started_at: at,
                duration_ms: 12,
                status_code: Some(500),
                request_headers: serde_json::json!({"content-type": "application/json"}),
                request_body: "{}".into(),
                response_body: None,
                error: None,
            }],
        };
        let text = serde_json::to_string(&detail).unwrap();
        assert!(text.contains(r#""big":123456789012345678901234567890"#), "{text}");
        assert_eq!(serde_json::from_str::<LogDetail>(&text).unwrap(), detail);
    }
}

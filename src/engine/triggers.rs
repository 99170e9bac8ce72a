//! Event trigger management, with validation that names the offending field.

use serde::Deserialize;

use super::dbevents::DEFAULT_ALIAS;
use super::{Engine, EngineError};
use crate::model::{Source, Trigger};
use crate::store;

/// Event types that only database and file sources produce.
pub const DB_TYPES: [&str; 3] = ["DB_INSERT", "DB_UPDATE", "DB_DELETE"];
pub const FILE_TYPES: [&str; 2] = ["FILE_CREATE", "FILE_DELETE"];

/// A trigger as a caller sends it: everything but `name`, `type` and `url` is optional.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerInput {
    pub name: Option<String>,
    pub source: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub url: Option<String>,
    pub retries: Option<i64>,
    pub timeout_ms: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub headers: Option<serde_json::Map<String, serde_json::Value>>,
    pub enabled: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub options: Option<serde_json::Map<String, serde_json::Value>>,
    /// Deliveries per second for all nodes together, 0.01 to 100000; null or absent for none.
    pub rate_limit: Option<f64>,
    /// Attempts in flight at once for all nodes together, 1 to 10000 (default 256).
    pub max_in_flight: Option<i64>,
    /// Read-only; accepted and ignored, so that a trigger read from the API can be sent back.
    #[schema(value_type = Option<Object>)]
    pub circuit: Option<serde_json::Value>,
    /// Read-only; accepted and ignored, as `circuit`.
    pub disabled_reason: Option<String>,
}

/// Checks an event type against SPEC §1 and §2.
pub fn validate_event_type(t: &str) -> Result<(), EngineError> {
    let n = t.chars().count();
    if n == 0 {
        return Err(EngineError::Invalid("`type` must not be empty".into()));
    }
    if n > 128 {
        return Err(EngineError::Invalid(format!("`type` is {n} characters long; the limit is 128")));
    }
    if t.chars().any(char::is_control) {
        return Err(EngineError::Invalid("`type` must not contain control characters".into()));
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), EngineError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "`name` '{name}' is invalid: use 1 to 64 letters, digits, '_' or '-'"
        )))
    }
}

/// The longest trigger URL: far beyond any real endpoint's, and within what
/// HTTP clients and servers take in a request line.
const MAX_URL_BYTES: usize = 8192;

fn validate_url(url: &str) -> Result<(), EngineError> {
    if url.len() > MAX_URL_BYTES {
        return Err(EngineError::Invalid(format!("`url` is longer than {MAX_URL_BYTES} bytes")));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| EngineError::Invalid(format!("`url` is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(EngineError::Invalid(format!("`url` must use http or https, not '{}'", parsed.scheme())));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(EngineError::Invalid("`url` has no host".into()));
    }
    // What the delivery's request will carry; refused now rather than at every attempt.
    if let Err(e) = parsed.as_str().parse::<axum::http::Uri>() {
        return Err(EngineError::Invalid(format!("`url` cannot be requested: {e}")));
    }
    Ok(())
}

fn validate_headers(headers: &serde_json::Map<String, serde_json::Value>) -> Result<(), EngineError> {
    for (k, v) in headers {
        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(EngineError::Invalid(format!("`headers`: '{k}' is not a valid header name")));
        }
        if super::deliver::RESERVED.contains(&k.to_ascii_lowercase().as_str()) {
            return Err(EngineError::Invalid(format!(
                "`headers`: '{k}' cannot be set by a trigger; Herald sets it, or it frames the request"
            )));
        }
        let Some(s) = v.as_str() else {
            return Err(EngineError::Invalid(format!("`headers`: the value of '{k}' must be a string")));
        };
        if reqwest::header::HeaderValue::from_str(s).is_err() {
            return Err(EngineError::Invalid(format!("`headers`: the value of '{k}' is not a valid header value")));
        }
    }
    Ok(())
}

impl TriggerInput {
    /// Validates the input and fills in the defaults of SPEC §1.
    pub fn into_trigger(self, name_from_path: Option<&str>) -> Result<Trigger, EngineError> {
        let name = match (name_from_path, self.name) {
            (Some(path), Some(body)) if path != body => {
                return Err(EngineError::Invalid(format!(
                    "`name` '{body}' does not match the trigger in the URL '{path}'; a trigger cannot be renamed"
                )))
            }
            (Some(path), _) => path.to_string(),
            (None, Some(body)) => body,
            (None, None) => return Err(EngineError::Invalid("`name` is required".into())),
        };
        validate_name(&name)?;
        let source = match self.source.as_deref() {
            None => Source::Custom,
            Some(s) => Source::parse(s).ok_or_else(|| {
                EngineError::Invalid(format!("`source` must be custom, database or file, not '{s}'"))
            })?,
        };
        let event_type = self.event_type.ok_or_else(|| EngineError::Invalid("`type` is required".into()))?;
        validate_event_type(&event_type)?;
        if event_type.trim() != event_type {
            return Err(EngineError::Invalid(format!(
                "`type` '{event_type}' has spaces at its start or end; events match a trigger's type exactly"
            )));
        }
        match source {
            Source::Custom if DB_TYPES.contains(&event_type.as_str()) || FILE_TYPES.contains(&event_type.as_str()) => {
                return Err(EngineError::Invalid(format!(
                    "`type` {event_type} is reserved for the database and file sources"
                )))
            }
            Source::Database if !DB_TYPES.contains(&event_type.as_str()) => {
                return Err(EngineError::Invalid("`type` of a database trigger must be DB_INSERT, DB_UPDATE or DB_DELETE".into()))
            }
            Source::File if !FILE_TYPES.contains(&event_type.as_str()) => {
                return Err(EngineError::Invalid("`type` of a file trigger must be FILE_CREATE or FILE_DELETE".into()))
            }
            _ => {}
        }
        let url = self.url.ok_or_else(|| EngineError::Invalid("`url` is required".into()))?;
        validate_url(&url)?;
        let retries = self.retries.unwrap_or(3);
        if !(0..=20).contains(&retries) {
            return Err(EngineError::Invalid(format!("`retries` must be between 0 and 20, not {retries}")));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(5000);
        if !(100..=300_000).contains(&timeout_ms) {
            return Err(EngineError::Invalid(format!(
                "`timeoutMs` must be between 100 and 300000, not {timeout_ms}"
            )));
        }
        let headers = self.headers.unwrap_or_default();
        validate_headers(&headers)?;
        if let Some(r) = self.rate_limit {
            if !(0.01..=100_000.0).contains(&r) {
                return Err(EngineError::Invalid(format!(
                    "`rateLimit` must be between 0.01 and 100000 deliveries per second, or null for none, not {r}"
                )));
            }
        }
        let max_in_flight = self.max_in_flight.unwrap_or(crate::model::DEFAULT_MAX_IN_FLIGHT as i64);
        if !(1..=10_000).contains(&max_in_flight) {
            return Err(EngineError::Invalid(format!(
                "`maxInFlight` must be between 1 and 10000, not {max_in_flight}"
            )));
        }
        Ok(Trigger {
            name,
            source,
            event_type,
            url,
            retries: retries as i32,
            timeout_ms: timeout_ms as i32,
            headers,
            enabled: self.enabled.unwrap_or(true),
            options: self.options.unwrap_or_default(),
            rate_limit: self.rate_limit,
            max_in_flight: max_in_flight as i32,
            circuit: Default::default(),
            disabled_reason: None,
        })
    }
}

impl Engine {
    pub async fn list_triggers(&self, project: &str) -> Result<Vec<Trigger>, EngineError> {
        Ok(store::triggers::list(self.pool(), project).await?)
    }

    /// Each trigger's deliveries over the last hour and its circuit (SPEC §10), from
    /// the per-trigger counters.
    pub async fn trigger_health(&self, project: &str) -> Result<Vec<crate::model::TriggerHealth>, EngineError> {
        let recent = store::flow::recent(self.reads(), project, std::time::Duration::from_secs(3600)).await?;
        let mut circuits: std::collections::HashMap<String, crate::model::Circuit> =
            self.list_triggers(project).await?.into_iter().map(|t| (t.name, t.circuit)).collect();
        Ok(recent
            .into_iter()
            .map(|r| crate::model::TriggerHealth {
                circuit: circuits.remove(&r.name).unwrap_or_default(),
                p95_ms: p95(&r.durations),
                trigger: r.name,
                attempts: r.attempts,
                succeeded: r.attempts - r.failures,
            })
            .collect())
    }

    pub async fn get_trigger(&self, project: &str, name: &str) -> Result<Trigger, EngineError> {
        store::triggers::get(self.pool(), project, name)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no trigger named '{name}'")))
    }

    /// Adds a trigger. A taken name is a `Conflict`. A database trigger installs
    /// its row trigger before this returns; if that fails, nothing is saved.
    pub async fn create_trigger(&self, project: &str, input: TriggerInput) -> Result<Trigger, EngineError> {
        let mut t = input.into_trigger(None)?;
        self.check_source(project, &mut t).await?;
        match store::triggers::insert(self.pool(), project, &t).await {
            Ok(()) => {}
            Err(e) if store::is_unique_violation(&e) => {
                return Err(EngineError::Conflict(format!("a trigger named '{}' already exists", t.name)))
            }
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = self.sync_watched(&[watched(&t)]).await {
            store::triggers::delete(self.pool(), project, &t.name).await?;
            let _ = self.sync_watched(&[watched(&t)]).await;
            return Err(e);
        }
        Ok(t)
    }

    /// Replaces a trigger's settings; the name stays.
    pub async fn update_trigger(&self, project: &str, name: &str, input: TriggerInput) -> Result<Trigger, EngineError> {
        let mut t = input.into_trigger(Some(name))?;
        self.check_source(project, &mut t).await?;
        self.replace_trigger(project, t).await
    }

    /// Turns a trigger on or off; a disabled trigger receives nothing new.
    pub async fn set_trigger_enabled(&self, project: &str, name: &str, enabled: bool) -> Result<(), EngineError> {
        let mut t = self.get_trigger(project, name).await?;
        t.enabled = enabled;
        self.replace_trigger(project, t).await.map(|_| ())
    }

    /// Deletes a trigger and cancels its undelivered event logs. Returns how many.
    pub async fn delete_trigger(&self, project: &str, name: &str) -> Result<u64, EngineError> {
        let old = store::triggers::get(self.pool(), project, name).await?;
        let cancelled = store::triggers::delete(self.pool(), project, name)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no trigger named '{name}'")))?;
        if let Some(old) = old {
            // The trigger is gone either way; a row trigger left behind only makes
            // changes that nobody receives, and the next start removes it.
            if let Err(e) = self.sync_watched(&[watched(&old)]).await {
                tracing::warn!(error = %e, "cannot remove a database trigger");
            }
        }
        Ok(cancelled)
    }

    /// Stores a new version of an existing trigger and brings the row triggers of
    /// the tables it watched and watches in line; if that fails, the old version
    /// comes back.
    async fn replace_trigger(&self, project: &str, t: Trigger) -> Result<Trigger, EngineError> {
        let old = store::triggers::get(self.pool(), project, &t.name)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no trigger named '{}'", t.name)))?;
        if !store::triggers::update(self.pool(), project, &t).await? {
            return Err(EngineError::NotFound(format!("no trigger named '{}'", t.name)));
        }
        let tables = [watched(&old), watched(&t)];
        if let Err(e) = self.sync_watched(&tables).await {
            store::triggers::update(self.pool(), project, &old).await?;
            let _ = self.sync_watched(&tables).await;
            return Err(e);
        }
        Ok(t)
    }

    async fn sync_watched(&self, tables: &[Option<(String, String)>]) -> Result<(), EngineError> {
        let mut done: Vec<&(String, String)> = Vec::new();
        for key in tables.iter().flatten() {
            if !done.contains(&key) {
                self.sync_table(&key.0, &key.1).await?;
                done.push(key);
            }
        }
        Ok(())
    }

    /// Checks a database or file trigger's `options` against the world and writes
    /// them back in their one normal form.
    async fn check_source(&self, project: &str, t: &mut Trigger) -> Result<(), EngineError> {
        let string = |key: &str| -> Result<Option<String>, EngineError> {
            match t.options.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.trim().to_string())),
                Some(_) => Err(EngineError::Invalid(format!("`options.{key}` must be a string"))),
            }
        };
        match t.source {
            Source::Custom => {}
            Source::Database => {
                let alias = string("db")?.filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_ALIAS.to_string());
                let table = string("table")?.unwrap_or_default();
                self.databases().get(&alias)?;
                self.require_grant(project, &alias).await?;
                let info = self.resolve_table(&alias, &table).await?;
                t.options = serde_json::Map::from_iter([
                    ("db".to_string(), alias.into()),
                    ("table".to_string(), info.name.into()),
                ]);
            }
            Source::File => {
                let prefix = match string("prefix")?.as_deref() {
                    None | Some("") | Some("/") => None,
                    Some(p) => Some(super::files::display_path(&super::files::parse_path(p, "options.prefix")?)),
                };
                t.options = prefix.into_iter().map(|p| ("prefix".to_string(), p.into())).collect();
            }
        }
        Ok(())
    }
}

/// The 95th percentile of a duration histogram, as its bucket's upper bound in ms.
fn p95(histogram: &[i64]) -> Option<i64> {
    let total: i64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let mut seen = 0;
    for (i, n) in histogram.iter().enumerate() {
        seen += n;
        if seen * 100 >= total * 95 {
            return store::flow::DURATION_BOUNDS_MS.get(i).map(|b| *b as i64);
        }
    }
    None
}

/// The (database alias, table) a database trigger watches.
fn watched(t: &Trigger) -> Option<(String, String)> {
    if t.source != Source::Database {
        return None;
    }
    let db = t.options.get("db")?.as_str()?;
    let table = t.options.get("table")?.as_str()?;
    Some((db.to_string(), table.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> TriggerInput {
        TriggerInput {
            name: Some("welcome-email".into()),
            event_type: Some("sent-email".into()),
            url: Some("http://localhost:8080/hook".into()),
            ..Default::default()
        }
    }

    fn err(i: TriggerInput) -> String {
        i.into_trigger(None).unwrap_err().to_string()
    }

    #[test]
    fn defaults_follow_the_spec() {
        let t = input().into_trigger(None).unwrap();
        assert_eq!((t.retries, t.timeout_ms, t.enabled, t.source), (3, 5000, true, Source::Custom));
        assert_eq!((t.rate_limit, t.max_in_flight), (None, 256));
    }

    #[test]
    fn p95_is_the_bound_of_the_bucket_holding_it() {
        assert_eq!(p95(&[]), None);
        assert_eq!(p95(&[0, 0, 0]), None);
        // 94 fast, 6 slow: the 95th is slow.
        assert_eq!(p95(&[94, 0, 6]), Some(25));
        assert_eq!(p95(&[95, 0, 5]), Some(5));
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err(TriggerInput { name: Some("a b".into()), ..input() }).contains("`name`"));
        assert!(err(TriggerInput { url: Some("ftp://x/y".into()), ..input() }).contains("http or https"));
        assert!(err(TriggerInput { url: Some("not a url".into()), ..input() }).contains("`url`"));
        assert!(err(TriggerInput { retries: Some(21), ..input() }).contains("`retries`"));
        assert!(err(TriggerInput { timeout_ms: Some(99), ..input() }).contains("`timeoutMs`"));
        assert!(err(TriggerInput { rate_limit: Some(0.0), ..input() }).contains("`rateLimit`"));
        assert!(err(TriggerInput { rate_limit: Some(100_001.0), ..input() }).contains("`rateLimit`"));
        assert!(err(TriggerInput { max_in_flight: Some(0), ..input() }).contains("`maxInFlight`"));
        assert!(err(TriggerInput { max_in_flight: Some(10_001), ..input() }).contains("`maxInFlight`"));
        assert!(err(TriggerInput { event_type: Some(String::new()), ..input() }).contains("`type`"));
        assert!(err(TriggerInput { event_type: Some("DB_INSERT".into()), ..input() }).contains("reserved"));
        let mut h = serde_json::Map::new();
        h.insert("bad header".into(), "x".into());
        assert!(err(TriggerInput { headers: Some(h), ..input() }).contains("`headers`"));
        // Issue 14, item 12: headers that frame the request or the connection.
        for name in ["Host", "Content-Length", "Transfer-Encoding", "Connection", "X-SC-Token"] {
            let h = serde_json::Map::from_iter([(name.to_string(), serde_json::Value::from("x"))]);
            let e = err(TriggerInput { headers: Some(h), ..input() });
            assert!(e.contains(&format!("'{name}' cannot be set")), "{e}");
        }
    }

    #[test]
    fn name_in_path_wins_and_cannot_change() {
        let t = TriggerInput { name: None, ..input() }.into_trigger(Some("x")).unwrap();
        assert_eq!(t.name, "x");
        assert!(input().into_trigger(Some("other")).is_err());
    }
}

//! The delivery history: listing with filters and keyset pagination, detail,
//! redelivery, cancellation and bulk replay.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Engine, EngineError};
pub use crate::model::{LogDetail, LogPage, Summary};
use crate::model::{EventLog, Status};
use crate::store::events as store;
use crate::store::history::{self, LogFilter};

/// The most rows one page may hold.
pub const MAX_PAGE: i64 = 500;

/// The history query as a caller sends it (strings, as in a URL query).
#[derive(Clone, Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    pub status: Option<String>,
    pub trigger: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Only the event logs of this event.
    pub event: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::Invalid(msg.into())
}

/// RFC 3339, or a date and time without an offset (what a date-time picker
/// gives: `2026-01-31T12:00`, with a space or seconds too), or a date alone,
/// both taken as UTC.
fn parse_time(field: &str, v: &str) -> Result<DateTime<Utc>, EngineError> {
    use chrono::{NaiveDate, NaiveDateTime};
    let v = v.trim();
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
                .or_else(|| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
                .map(|t| t.and_utc())
        })
        .ok_or_else(|| {
            invalid(format!(
                "`{field}` '{v}' is not a time: use RFC 3339 such as 2026-01-31T12:00:00Z, or 2026-01-31 12:00 for UTC"
            ))
        })
        .and_then(|t| {
            // PostgreSQL's timestamps run from 4713 BC to 294276 AD; chrono's further.
            if (1..=9999).contains(&chrono::Datelike::year(&t)) {
                Ok(t)
            } else {
                Err(invalid(format!("`{field}` '{v}' is outside the years 1 to 9999")))
            }
        })
}

/// A window whose end comes before its start finds nothing: refused as a mistake.
fn ordered(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<Window, EngineError> {
    match (from, to) {
        (Some(f), Some(t)) if f > t => Err(invalid(format!("`from` ({}) is after `to` ({})", f.to_rfc3339(), t.to_rfc3339()))),
        _ => Ok((from, to)),
    }
}

/// An optional `from` and `to`, each RFC 3339 when given (empty means none).
type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);
fn window(from: Option<&str>, to: Option<&str>) -> Result<Window, EngineError> {
    let time = |field, v: Option<&str>| v.filter(|s| !s.is_empty()).map(|v| parse_time(field, v)).transpose();
    ordered(time("from", from)?, time("to", to)?)
}

/// Cursors are `<created_at in microseconds>.<id>`: opaque to callers, stable for us.
fn encode_cursor(log: &EventLog) -> String {
    format!("{}.{}", log.created_at.timestamp_micros(), log.id)
}

fn decode_cursor(c: &str) -> Result<(DateTime<Utc>, Uuid), EngineError> {
    let bad = || invalid("`cursor` is not one this API returned");
    let (micros, id) = c.split_once('.').ok_or_else(bad)?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

impl LogQuery {
    fn into_filter(self) -> Result<LogFilter, EngineError> {
        let status = match self.status.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(Status::parse(s).ok_or_else(|| {
                invalid(format!(
                    "`status` '{s}' is not one of scheduled, pending, processing, processed, failed, cancelled"
                ))
            })?),
        };
        let limit = self.limit.unwrap_or(50);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(invalid(format!("`limit` must be between 1 and {MAX_PAGE}, not {limit}")));
        }
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let (from, to) = window(self.from.as_deref(), self.to.as_deref())?;
        Ok(LogFilter {
            status,
            trigger: non_empty(self.trigger),
            event_type: non_empty(self.event_type),
            event_id: non_empty(self.event)
                .map(|e| Uuid::parse_str(&e).map_err(|_| invalid(format!("`event` '{e}' is not an event id"))))
                .transpose()?,
            from,
            to,
            before: non_empty(self.cursor).map(|c| decode_cursor(&c)).transpose()?,
            limit,
        })
    }
}

async fn log_detail_from(pool: &sqlx::PgPool, project: &str, id: Uuid) -> Result<LogDetail, EngineError> {
    let (log, data) =
        history::log(pool, project, id).await?.ok_or_else(|| EngineError::NotFound(format!("no event log {id}")))?;
    let invocations = history::invocations(pool, id).await?;
    Ok(LogDetail { log, data, invocations })
}

impl Engine {
    /// Counts by status and processed/failed per bar over the last `window`.
    pub async fn summary(&self, project: &str, window: std::time::Duration) -> Result<Summary, EngineError> {
        Ok(history::summary(self.reads(), project, window).await?)
    }

    /// A page of the history, newest first.
    pub async fn list_logs(&self, project: &str, query: LogQuery) -> Result<LogPage, EngineError> {
        let mut filter = query.into_filter()?;
        let limit = filter.limit;
        // One extra row tells whether another page exists.
        filter.limit += 1;
        let pool = if filter.event_id.is_some() { self.pool() } else { self.reads() };
        let mut items = history::list_logs(pool, project, &filter).await?;
        let more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        let next_cursor = if more { items.last().map(encode_cursor) } else { None };
        Ok(LogPage { items, next_cursor })
    }

    /// One event log with its event data and attempts.
    /// Read from the primary, as the list of one event's logs is: they are what a
    /// caller looks up right after queueing, redelivering or cancelling, when a
    /// replica may not have them yet; and each is a lookup by key.
    pub async fn log_detail(&self, project: &str, id: Uuid) -> Result<LogDetail, EngineError> {
        log_detail_from(self.pool(), project, id).await
    }

    /// Delivers an event log again, with a fresh set of attempts.
    pub async fn redeliver(&self, project: &str, id: Uuid) -> Result<LogDetail, EngineError> {
        match store::redeliver(self.pool(), project, id).await? {
            None => Err(EngineError::NotFound(format!("no event log {id}"))),
            Some(store::Redelivery::Busy) => {
                Err(EngineError::Conflict("the event log is being delivered right now; try again when it ends".into()))
            }
            Some(store::Redelivery::TriggerGone) => {
                let log = log_detail_from(self.pool(), project, id).await?.log;
                Err(EngineError::Conflict(format!(
                    "the trigger '{}' this event log was made for was deleted; nothing to redeliver to \
                     (a trigger created later under the same name is another trigger)",
                    log.trigger
                )))
            }
            // Read back from the primary: a replica may not have the change yet.
            Some(store::Redelivery::Done) => log_detail_from(self.pool(), project, id).await,
        }
    }

    /// Cancels a scheduled or pending event log.
    pub async fn cancel(&self, project: &str, id: Uuid) -> Result<LogDetail, EngineError> {
        match store::cancel(self.pool(), project, id).await? {
            None => Err(EngineError::NotFound(format!("no event log {id}"))),
            Some(Status::Scheduled | Status::Pending) => log_detail_from(self.pool(), project, id).await,
            Some(other) => Err(EngineError::Conflict(format!(
                "only scheduled or pending event logs can be cancelled; this one is {}",
                other.as_str()
            ))),
        }
    }

    /// Makes every failed event log of a trigger in a time window due again; with
    /// `error`, only one dead-letter group (those whose last error is that text).
    pub async fn replay_failed(
        &self,
        project: &str,
        trigger: &str,
        from: Option<&str>,
        to: Option<&str>,
        error: Option<&str>,
    ) -> Result<u64, EngineError> {
        self.get_trigger(project, trigger).await?;
        let (from, to) = window(from, to)?;
        Ok(store::replay_failed(self.pool(), project, trigger, from, to, error).await?)
    }

    /// The dead letters: failed event logs in a time window, grouped by trigger and
    /// last error.
    /// Replays the failed event logs created in the window, of every trigger that
    /// has some: the dead letters of a time range. A group whose trigger was
    /// deleted is left (there is nothing to deliver it to).
    pub async fn replay_window(&self, project: &str, from: Option<&str>, to: Option<&str>) -> Result<u64, EngineError> {
        let mut triggers: Vec<String> = self.dead_letters(project, from, to).await?.into_iter().map(|g| g.trigger).collect();
        triggers.sort_unstable();
        triggers.dedup();
        let mut replayed = 0;
        for trigger in triggers {
            match self.replay_failed(project, &trigger, from, to, None).await {
                Ok(n) => replayed += n,
                Err(EngineError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(replayed)
    }

    pub async fn dead_letters(
        &self,
        project: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Vec<crate::model::DeadLetterGroup>, EngineError> {
        let (from, to) = window(from, to)?;
        Ok(history::dead_letters(self.reads(), project, from, to).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_or_a_picked_date_and_time_in_utc() {
        let t = |v: &str| parse_time("from", v).map(|t| t.to_rfc3339());
        assert_eq!(t("2026-01-31T12:00:00+02:00").unwrap(), "2026-01-31T10:00:00+00:00");
        assert_eq!(t("2026-01-31T12:00").unwrap(), "2026-01-31T12:00:00+00:00");
        assert_eq!(t("2026-01-31T12:00:05").unwrap(), "2026-01-31T12:00:05+00:00");
        assert_eq!(t("2026-01-31 12:00").unwrap(), "2026-01-31T12:00:00+00:00");
        assert_eq!(t("2026-01-31").unwrap(), "2026-01-31T00:00:00+00:00");
        let err = t("yesterday").unwrap_err().to_string();
        assert!(err.contains("`from` 'yesterday' is not a time"), "{err}");
        assert!(t("2026-02-30").is_err());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let log = EventLog {
            id: Uuid::new_v4(),
            event_id: Uuid::new_v4(),
            trigger: "t".into(),
            event_type: "t".into(),
            status: Status::Pending,
            attempts: 0,
            created_at: DateTime::from_timestamp_micros(1_795_000_000_123_456).unwrap(),
            deliver_at: Utc::now(),
            next_attempt_at: None,
            last_error: None,
        };
        assert_eq!(decode_cursor(&encode_cursor(&log)).unwrap(), (log.created_at, log.id));
        for bad in ["", "x", "1.x", "x.00000000-0000-0000-0000-000000000000"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_errors_name_the_field() {
        let q = |f: fn(&mut LogQuery)| {
            let mut q = LogQuery::default();
            f(&mut q);
            q.into_filter().unwrap_err().to_string()
        };
        assert!(q(|q| q.status = Some("done".into())).contains("`status`"));
        assert!(q(|q| q.limit = Some(0)).contains("`limit`"));
        assert!(q(|q| q.from = Some("yesterday".into())).contains("`from`"));
        assert!(q(|q| q.cursor = Some("zzz".into())).contains("`cursor`"));
    }
}

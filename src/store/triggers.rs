//! Event triggers.

use sqlx::types::Json;
use sqlx::{FromRow, PgPool};

use crate::model::{Circuit, Source, Trigger};

#[derive(FromRow)]
struct TriggerRow {
    name: String,
    source: String,
    #[sqlx(rename = "type")]
    event_type: String,
    url: String,
    retries: i32,
    timeout_ms: i32,
    headers: Json<serde_json::Map<String, serde_json::Value>>,
    options: Json<serde_json::Map<String, serde_json::Value>>,
    enabled: bool,
    rate_limit: Option<f64>,
    max_in_flight: i32,
    circuit_opened_at: Option<chrono::DateTime<chrono::Utc>>,
    circuit_reason: Option<String>,
    circuit_probe_at: Option<chrono::DateTime<chrono::Utc>>,
    disabled_reason: Option<String>,
}

impl From<TriggerRow> for Trigger {
    fn from(r: TriggerRow) -> Self {
        Trigger {
            name: r.name,
            // The CHECK constraint guarantees one of the three values.
            source: Source::parse(&r.source).unwrap_or_default(),
            event_type: r.event_type,
            url: r.url,
            retries: r.retries,
            timeout_ms: r.timeout_ms,
            headers: r.headers.0,
            enabled: r.enabled,
            options: r.options.0,
            rate_limit: r.rate_limit,
            max_in_flight: r.max_in_flight,
            circuit: Circuit {
                open: r.circuit_opened_at.is_some(),
                reason: r.circuit_opened_at.and(r.circuit_reason),
                opened_at: r.circuit_opened_at,
                next_probe_at: r.circuit_opened_at.and(r.circuit_probe_at),
            },
            disabled_reason: r.disabled_reason,
        }
    }
}

const COLUMNS: &str = "name, source, type, url, retries, timeout_ms, headers, options, enabled, rate_limit,
    max_in_flight, circuit_opened_at, circuit_reason, circuit_probe_at, disabled_reason";

pub async fn list(pool: &PgPool, project: &str) -> Result<Vec<Trigger>, sqlx::Error> {
    let rows: Vec<TriggerRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM event_triggers WHERE project = $1 ORDER BY name"))
            .bind(project)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(Trigger::from).collect())
}

pub async fn get(pool: &PgPool, project: &str, name: &str) -> Result<Option<Trigger>, sqlx::Error> {
    let row: Option<TriggerRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM event_triggers WHERE project = $1 AND name = $2"))
            .bind(project)
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(Trigger::from))
}

/// When an update closes an open circuit (`$10` is the new `enabled`, `$5` the new URL).
const RESET: &str = "(($10 AND disabled_reason IS NOT NULL) OR url IS DISTINCT FROM $5)";

/// Inserts a trigger. A duplicate name is a unique violation (see `store::is_unique_violation`).
pub async fn insert(pool: &PgPool, project: &str, t: &Trigger) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO event_triggers (project, name, source, type, url, retries, timeout_ms, headers, options, enabled,
                                     rate_limit, max_in_flight)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(project)
    .bind(&t.name)
    .bind(t.source.as_str())
    .bind(&t.event_type)
    .bind(&t.url)
    .bind(t.retries)
    .bind(t.timeout_ms)
    .bind(Json(&t.headers))
    .bind(Json(&t.options))
    .bind(t.enabled)
    .bind(t.rate_limit)
    .bind(t.max_in_flight)
    .execute(pool)
    .await?;
    Ok(())
}

/// Replaces everything but the name. Returns false when there is no such trigger.
/// Enabling a trigger resumes the event logs that waited while it was disabled.
/// Enabling a trigger that Herald disabled for its open circuit closes the circuit:
/// the operator asks for deliveries to go out again. So does a new URL.
pub async fn update(pool: &PgPool, project: &str, t: &Trigger) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let r = sqlx::query(&format!(
        "UPDATE event_triggers SET source = $3, type = $4, url = $5, retries = $6, timeout_ms = $7,
                headers = $8, options = $9, enabled = $10, rate_limit = $11, max_in_flight = $12,
                circuit_closed_at = CASE WHEN circuit_opened_at IS NOT NULL AND {RESET} THEN now() ELSE circuit_closed_at END,
                circuit_opened_at = CASE WHEN {RESET} THEN NULL ELSE circuit_opened_at END,
                disabled_reason = CASE WHEN $10 THEN NULL ELSE disabled_reason END,
                updated_at = now()
         WHERE project = $1 AND name = $2"
    ))
    .bind(project)
    .bind(&t.name)
    .bind(t.source.as_str())
    .bind(&t.event_type)
    .bind(&t.url)
    .bind(t.retries)
    .bind(t.timeout_ms)
    .bind(Json(&t.headers))
    .bind(Json(&t.options))
    .bind(t.enabled)
    .bind(t.rate_limit)
    .bind(t.max_in_flight)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() != 1 {
        return Ok(false);
    }
    if t.enabled {
        let resumed = sqlx::query(
            "UPDATE event_logs SET paused = false, held = false, updated_at = now()
             WHERE paused AND NOT key_wait AND project = $1 AND trigger_name = $2
               AND NOT EXISTS (SELECT 1 FROM event_triggers
                               WHERE project = $1 AND name = $2 AND circuit_opened_at IS NOT NULL)",
        )
        .bind(project)
        .bind(&t.name)
        .execute(&mut *tx)
        .await?;
        if resumed.rows_affected() > 0 {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(crate::store::events::WAKE_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// Deletes a trigger and cancels its undelivered event logs, in one transaction.
/// Returns `None` when there is no such trigger, else the number of cancelled logs.
pub async fn delete(pool: &PgPool, project: &str, name: &str) -> Result<Option<u64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query("DELETE FROM event_triggers WHERE project = $1 AND name = $2")
        .bind(project)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    if deleted.rows_affected() == 0 {
        return Ok(None);
    }
    // The open event logs, in three statements so that each is served by the
    // partial index holding them: event_logs_due, event_logs_paused and
    // event_logs_leased.
    let mut cancelled = 0;
    // Set-aside ones first: cancelling the head of an ordering key makes the next
    // of the key due, which the second statement then cancels.
    for open in [
        "paused AND status IN ('scheduled', 'pending')",
        "status IN ('scheduled', 'pending') AND NOT paused",
        "status = 'processing'",
    ] {
        cancelled += sqlx::query(&format!(
            "UPDATE event_logs SET status = 'cancelled', lease_until = NULL, leased_by = NULL, paused = false, held = false,
                    last_error = 'trigger deleted', updated_at = now()
             WHERE {open} AND project = $1 AND trigger_name = $2"
        ))
        .bind(project)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(Some(cancelled))
}

/// A database trigger's project holds a grant on its alias (`t` is the trigger).
const GRANTED: &str = "EXISTS (SELECT 1 FROM database_grants g WHERE g.project = t.project AND g.alias = t.options->>'db')";

/// The event types of the enabled database triggers watching one table whose
/// projects hold a grant on the alias, sorted.
pub async fn watched_ops(pool: &PgPool, alias: &str, table: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT DISTINCT type FROM event_triggers t
         WHERE source = 'database' AND enabled AND options->>'db' = $1 AND options->>'table' = $2 AND {GRANTED}
         ORDER BY type"
    ))
    .bind(alias)
    .bind(table)
    .fetch_all(pool)
    .await
}

/// Every table of a database alias that some database trigger names.
pub async fn watched_tables(pool: &PgPool, alias: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT options->>'table' FROM event_triggers
         WHERE source = 'database' AND options->>'db' = $1 AND options ? 'table'",
    )
    .bind(alias)
    .fetch_all(pool)
    .await
}

/// (project, type, table) of every enabled database trigger on a database alias
/// whose project holds a grant on it.
pub async fn watchers(pool: &PgPool, alias: &str) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT DISTINCT project, type, options->>'table' FROM event_triggers t
         WHERE source = 'database' AND enabled AND options->>'db' = $1 AND options ? 'table' AND {GRANTED}"
    ))
    .bind(alias)
    .fetch_all(pool)
    .await
}

/// Whether `project` may watch tables of the database `alias`.
pub async fn is_granted(pool: &PgPool, project: &str, alias: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM database_grants WHERE project = $1 AND alias = $2)")
        .bind(project)
        .bind(alias)
        .fetch_one(pool)
        .await
}

/// Grants `project` the database `alias`. Returns false if it already held it.
pub async fn grant(pool: &PgPool, project: &str, alias: &str) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("INSERT INTO database_grants (project, alias) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(project)
        .bind(alias)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Takes the database `alias` back from `project`. Returns false if it did not hold it.
pub async fn revoke(pool: &PgPool, project: &str, alias: &str) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM database_grants WHERE project = $1 AND alias = $2")
        .bind(project)
        .bind(alias)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Every grant, or one project's: (project, alias, granted at), sorted.
pub async fn grants(
    pool: &PgPool,
    project: Option<&str>,
) -> Result<Vec<(String, String, chrono::DateTime<chrono::Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT project, alias, granted_at FROM database_grants
         WHERE $1::text IS NULL OR project = $1 ORDER BY project, alias",
    )
    .bind(project)
    .fetch_all(pool)
    .await
}

/// The tables of one project's database triggers on an alias.
pub async fn project_tables(pool: &PgPool, project: &str, alias: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT options->>'table' FROM event_triggers
         WHERE project = $1 AND source = 'database' AND options->>'db' = $2 AND options ? 'table'",
    )
    .bind(project)
    .bind(alias)
    .fetch_all(pool)
    .await
}

/// Database triggers whose project holds no grant on their alias: (project, name, alias).
pub async fn ungranted(pool: &PgPool) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT project, name, options->>'db' FROM event_triggers t
         WHERE source = 'database' AND NOT {GRANTED} ORDER BY project, name"
    ))
    .fetch_all(pool)
    .await
}

//! Retention (SPEC §9): ended event logs older than their project's
//! `retentionDays`, their invocation logs, and the events left without any event
//! log are removed. An event log that has not ended is never removed.
//!
//! Most history goes with its time partitions, dropped whole once every project's
//! retention has passed them (store::partitions). What is left is removed in small
//! batches, each its own short transaction, found through the history index, so it
//! never holds locks or a snapshot for long: the history of a project that keeps
//! less than the longest retention, and the rows of the default partition (stored
//! before the partitions, or kept from a dropped one because they had not ended).
//! The batches leave alone what a partition will take within a partition's width,
//! so that a partition's history is dropped with it, not deleted row by row.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::partitions;

/// Most event logs removed per transaction.
pub const BATCH: i64 = 2000;

/// What one pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Partitions dropped (each range's three).
    pub partitions: u64,
    /// Rows in them, as PostgreSQL's statistics last counted them.
    pub partition_rows: u64,
    /// Event logs removed in batches.
    pub event_logs: u64,
    pub invocation_logs: u64,
    pub events: u64,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        *self == Removed::default()
    }

    fn add(&mut self, o: Removed) {
        self.partitions += o.partitions;
        self.partition_rows += o.partition_rows;
        self.event_logs += o.event_logs;
        self.invocation_logs += o.invocation_logs;
        self.events += o.events;
    }
}

/// A project's retention, in days.
pub async fn retention_days(pool: &PgPool, project: &str) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar("SELECT retention_days FROM projects WHERE id = $1").bind(project).fetch_optional(pool).await
}

/// Sets a project's retention. Returns false when there is no such project.
pub async fn set_retention_days(pool: &PgPool, project: &str, days: i32) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("UPDATE projects SET retention_days = $2 WHERE id = $1")
        .bind(project)
        .bind(days)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Every project with the moment before which batches remove its ended history:
/// its retention, and for a project at the longest retention `grace` more (a
/// partition's width): the partitions' drop takes its history first.
async fn cutoffs(pool: &PgPool, grace: chrono::Duration) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, now() - make_interval(days => retention_days)
                    - CASE WHEN retention_days = (SELECT max(retention_days) FROM projects) THEN $1 ELSE interval '0' END
         FROM projects ORDER BY id",
    )
        .bind(grace)
        .fetch_all(pool)
        .await
}

/// How long the per-minute counts are kept: they serve windows under a day.
const MINUTE_COUNTS_KEPT: &str = "2 days";

/// A project's kept counts that count nothing any more (their logs went, or a
/// dropped partition took their bucket before a batch removed the rest of it), and
/// its per-minute counts older than two days.
async fn remove_counts(pool: &PgPool, project: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "DELETE FROM event_log_counts
         WHERE project = $1 AND (n <= 0 OR (span = 'minute' AND bucket < now() - interval '{MINUTE_COUNTS_KEPT}'))"
    ))
    .bind(project)
    .execute(pool)
    .await?;
    Ok(())
}

/// One batch of a project's ended event logs created before `cutoff`, with their
/// invocation logs and the events this leaves without any event log.
async fn remove_batch(pool: &PgPool, project: &str, cutoff: DateTime<Utc>) -> Result<Removed, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Oldest first, through event_logs_history; only ended logs, whatever their age.
    // The kept counts lose what they counted of these logs in the same statement.
    let gone: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "WITH gone AS (
             DELETE FROM event_logs WHERE id IN (
                 SELECT id FROM event_logs
                 WHERE project = $1 AND created_at < $2 AND status IN ('processed', 'failed', 'cancelled')
                 ORDER BY created_at LIMIT $3
                 FOR UPDATE SKIP LOCKED)
             AND status IN ('processed', 'failed', 'cancelled')
             RETURNING id, event_id, created_at, status
         ), counted AS (
             -- The same ordered upsert as the counting trigger's, so that two
             -- writers never lock the same count rows in opposite orders.
             INSERT INTO event_log_counts (project, span, bucket, status, n)
             SELECT $1, s.span, s.bucket, g.status, -count(*)
             FROM gone g CROSS JOIN LATERAL (VALUES
                 ('minute', date_bin('1 minute', g.created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')),
                 ('hour', date_bin('1 hour', g.created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'))) AS s (span, bucket)
             GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
             ON CONFLICT (project, span, bucket, status) DO UPDATE SET n = event_log_counts.n + excluded.n
         )
         SELECT id, event_id FROM gone",
    )
    .bind(project)
    .bind(cutoff)
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if gone.is_empty() {
        tx.commit().await?;
        return Ok(Removed::default());
    }
    let log_ids: Vec<Uuid> = gone.iter().map(|g| g.0).collect();
    let mut event_ids: Vec<Uuid> = gone.iter().map(|g| g.1).collect();
    event_ids.sort_unstable();
    event_ids.dedup();
    let invocations = sqlx::query("DELETE FROM invocation_logs WHERE event_log_id = ANY($1)")
        .bind(&log_ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let events = sqlx::query(
        "DELETE FROM events e WHERE e.id = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM event_logs l WHERE l.event_id = e.id)",
    )
    .bind(&event_ids)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Removed { event_logs: gone.len() as u64, invocation_logs: invocations, events, ..Removed::default() })
}

/// One batch of a project's events created before `cutoff` that never had an
/// event log (no trigger matched them). Event ids are time-ordered, so the
/// primary key finds the old ones.
async fn remove_lone_events(pool: &PgPool, project: &str, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let bound = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        cutoff.timestamp().max(0) as u64,
        cutoff.timestamp_subsec_nanos(),
    ));
    let r = sqlx::query(
        "DELETE FROM events WHERE id IN (
             SELECT e.id FROM events e
             WHERE e.id < $2 AND e.project = $1 AND e.created_at < $3
               AND NOT EXISTS (SELECT 1 FROM event_logs l WHERE l.event_id = e.id)
             ORDER BY e.id LIMIT $4
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(project)
    .bind(bound)
    .bind(cutoff)
    .bind(BATCH)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Gives up to `BATCH` event logs stored before their type was recorded their
/// event's type. Returns how many.
pub async fn type_untyped(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE event_logs l SET event_type = e.type
         FROM (SELECT id FROM event_logs WHERE event_type = '' ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) u, events e
         WHERE l.id = u.id AND e.id = l.event_id",
    )
    .bind(BATCH)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// How long an idempotency key names its event.
pub const IDEMPOTENCY_KEPT: &str = "24 hours";

/// Forgets up to `BATCH` idempotency keys older than [`IDEMPOTENCY_KEPT`].
async fn forget_keys(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(&format!(
        "DELETE FROM idempotency_keys WHERE (project, key) IN (
             SELECT project, key FROM idempotency_keys WHERE created_at < now() - interval '{IDEMPOTENCY_KEPT}'
             LIMIT $1 FOR UPDATE SKIP LOCKED)"
    ))
    .bind(BATCH)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Makes the partitions ahead, drops those every project's retention has passed,
/// then removes what is left to remove batch after batch, until nothing is left
/// or `budget` batches ran (the next pass goes on).
pub async fn apply(pool: &PgPool, budget: usize) -> Result<Removed, sqlx::Error> {
    let mut total = Removed::default();
    // Partitions first; a failure there leaves the batches to do their part.
    if let Err(e) = partitions::ensure_ahead(pool).await {
        tracing::warn!(error = %e, "could not make the history's partitions ahead; the next pass retries");
    }
    match partitions::drop_expired(pool).await {
        Ok(dropped) => {
            total.partitions = dropped.partitions;
            total.partition_rows = dropped.rows_estimate;
        }
        Err(e) => tracing::warn!(error = %e, "could not drop old partitions; the next pass retries"),
    }
    let grace = partitions::width(partitions::max_retention_days(pool).await?);
    let mut batches = 0;
    while batches < budget {
        batches += 1;
        if forget_keys(pool).await? < BATCH as u64 {
            break;
        }
    }
    while batches < budget {
        batches += 1;
        if type_untyped(pool).await? < BATCH as u64 {
            break;
        }
    }
    for (project, cutoff) in cutoffs(pool, grace).await? {
        loop {
            if batches >= budget {
                return Ok(total);
            }
            batches += 1;
            let r = remove_batch(pool, &project, cutoff).await?;
            total.add(r);
            if r.event_logs < BATCH as u64 {
                break;
            }
        }
        loop {
            if batches >= budget {
                return Ok(total);
            }
            batches += 1;
            let n = remove_lone_events(pool, &project, cutoff).await?;
            total.events += n;
            if n < BATCH as u64 {
                break;
            }
        }
        remove_counts(pool, &project).await?;
    }
    Ok(total)
}

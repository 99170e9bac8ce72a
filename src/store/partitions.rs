//! The history's time partitions (SPEC §9). `events`, `event_logs` and
//! `invocation_logs` are partitioned by the range of their time-ordered ids
//! (invocation logs by their event log's id), the three alike: one row of
//! `history_partitions` names the three partitions of one range. Each range is a
//! tenth of the longest retention wide (at least a day), so that there are about a
//! dozen of them.
//!
//! Partitions are made ahead of time, and retention drops a range's three whole,
//! once every project's retention has passed its end: no `DELETE`, no dead rows,
//! and the files go back to the disk at once. What must stay moves first to the
//! default partition: event logs that have not ended (an event scheduled for next
//! year, a paused trigger's backlog), their attempts, and the events that logs
//! still kept point to.
//!
//! Every change here runs under one advisory lock, so that two nodes never make or
//! drop the same partition, and gives up after a short wait for the tables' locks
//! (the next pass tries again) rather than holding up deliveries.

use chrono::{DateTime, Duration, DurationRound, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The partitioned tables, each with the column its ranges are of.
pub const TABLES: [(&str, &str); 3] = [("events", "id"), ("event_logs", "id"), ("invocation_logs", "event_log_id")];

/// The advisory lock every partition change holds ("herald partitions").
const LOCK: i64 = 0x6865_7261_6c64_7074;

/// How long a change waits for a table's lock before it gives up until the next
/// pass: less than PostgreSQL's deadlock_timeout (1 s), so that a delivery that
/// waits behind it never waits long, and never in a deadlock.
const LOCK_WAIT: &str = "500ms";

/// How far ahead of now partitions are made.
pub const AHEAD: Duration = Duration::days(2);

/// One range partition.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Partition {
    pub name: String,
    pub lo: Option<Uuid>,
    pub hi: Uuid,
    pub lo_at: Option<DateTime<Utc>>,
    pub hi_at: DateTime<Utc>,
}

/// What dropping partitions removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub partitions: u64,
    /// Rows of the three tables in them, as PostgreSQL's statistics last counted them.
    pub rows_estimate: u64,
    /// Event logs that had not ended, with their attempts and events, moved to the
    /// default partition.
    pub kept: u64,
}

/// The smallest time-ordered id of a moment (as `herald_uuid_floor`).
pub fn floor_id(at: DateTime<Utc>) -> Uuid {
    let ms = at.timestamp_millis().max(0) as u128;
    Uuid::from_u128(ms << 80)
}

/// The width of new partitions for the longest retention of any project: a tenth
/// of it, at least a day and at most 31 days. Every statement that may read any
/// partition costs a planning step per partition, so their number stays about a
/// dozen (a month's retention: 3-day partitions); the price is that history at the
/// longest retention goes, by whole partitions, up to a tenth of it late.
pub fn width(max_retention_days: i32) -> Duration {
    Duration::days((max_retention_days as i64 / 10).clamp(1, 31))
}

/// The longest retention of any project, in days (30 with no project yet).
pub async fn max_retention_days(pool: &PgPool) -> Result<i32, sqlx::Error> {
    let d: Option<i32> = sqlx::query_scalar("SELECT max(retention_days) FROM projects").fetch_one(pool).await?;
    Ok(d.unwrap_or(30))
}

/// Every range partition, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<Partition>, sqlx::Error> {
    sqlx::query_as("SELECT name, lo, hi, lo_at, hi_at FROM history_partitions ORDER BY hi").fetch_all(pool).await
}

/// A partition's name for its start: `p20261204`, or with the time of day when it
/// does not start at midnight.
fn name_for(lo_at: DateTime<Utc>) -> String {
    if lo_at.duration_trunc(Duration::days(1)).ok() == Some(lo_at) {
        lo_at.format("p%Y%m%d").to_string()
    } else {
        lo_at.format("p%Y%m%d_%H%M%S").to_string()
    }
}

/// Takes the partition lock and the short lock wait for the rest of `tx`; false
/// when another node holds the lock (it is doing the same work).
async fn begin_change(tx: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'")).execute(&mut *tx).await?;
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(LOCK).fetch_one(&mut *tx).await
}

/// True for the error of a lock not granted within [`LOCK_WAIT`], or of a deadlock
/// PostgreSQL broke by cancelling this side: the next pass tries again.
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("55P03" | "40P01")))
}

/// What [`create`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Made {
    Made,
    /// The range overlaps a partition already there.
    Overlaps,
    /// Another node was changing partitions.
    Busy,
}

/// Makes the three partitions of `[lo_at, hi_at)`. Rows of that range already in
/// the default partition move into them.
pub async fn create(pool: &PgPool, lo_at: DateTime<Utc>, hi_at: DateTime<Utc>) -> Result<Made, sqlx::Error> {
    let (lo, hi) = (floor_id(lo_at), floor_id(hi_at));
    if lo >= hi {
        return Ok(Made::Overlaps);
    }
    let name = name_for(lo_at);
    let mut tx = pool.begin().await?;
    if !begin_change(&mut tx).await? {
        return Ok(Made::Busy);
    }
    let overlaps: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM history_partitions WHERE (lo IS NULL OR lo < $2) AND hi > $1 OR name = $3)",
    )
    .bind(lo)
    .bind(hi)
    .bind(&name)
    .fetch_one(&mut *tx)
    .await?;
    if overlaps {
        return Ok(Made::Overlaps);
    }
    // No row may reach the default partition between moving its rows of the range
    // and attaching (which checks that none is left there). The lock attaching
    // takes, at once: a weaker one first, upgraded later, would deadlock with a
    // claim that read the default partition and goes on to lock rows there.
    for (table, _) in TABLES {
        sqlx::query(&format!("LOCK TABLE {table}_default IN ACCESS EXCLUSIVE MODE")).execute(&mut *tx).await?;
    }
    for (table, key) in TABLES {
        let part = format!("{table}_{name}");
        let options = match table {
            "event_logs" => "autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02",
            _ => "autovacuum_vacuum_scale_factor = 0.01",
        };
        // Made apart and attached, so that the rows of its range already in the
        // default partition can move in first (attaching checks there are none).
        sqlx::query(&format!(
            "CREATE TABLE {part} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) WITH ({options})"
        ))
        .execute(&mut *tx)
        .await?;
        let unplanned = match table {
            "events" => Some("data"),
            "event_logs" => Some("last_error"),
            _ => None,
        };
        if let Some(column) = unplanned {
            sqlx::query(&format!("ALTER TABLE {part} ALTER COLUMN {column} SET STATISTICS 0")).execute(&mut *tx).await?;
        }
        sqlx::query(&format!(
            "WITH moved AS (DELETE FROM {table}_default WHERE {key} >= $1 AND {key} < $2 RETURNING *)
             INSERT INTO {part} SELECT * FROM moved"
        ))
        .bind(lo)
        .bind(hi)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!("ALTER TABLE {table} ATTACH PARTITION {part} FOR VALUES FROM ('{lo}') TO ('{hi}')"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("INSERT INTO history_partitions (name, lo, hi, lo_at, hi_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&name)
        .bind(lo)
        .bind(hi)
        .bind(lo_at)
        .bind(hi_at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Made::Made)
}

/// Makes partitions of `width` covering `[from, until)`, on whole widths counted
/// from midnight UTC, skipping the ranges that overlap partitions already there.
/// Returns how many it made; another node at the same work, or a lock not granted
/// within the short wait, stops it quietly (the next pass goes on).
pub async fn create_range(
    pool: &PgPool,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    width: Duration,
) -> Result<u64, sqlx::Error> {
    let one_day = Duration::days(1);
    let mut lo_at = from;
    let mut made = 0;
    while lo_at < until {
        // The first range may start mid-way (after the legacy partition); each one
        // ends on the next whole width from its day's midnight, and a width under
        // a day restarts at each midnight.
        let day = lo_at.duration_trunc(one_day).expect("a day fits");
        let hi_at = if width >= one_day {
            day + width
        } else {
            let k = (lo_at - day).num_milliseconds() / width.num_milliseconds().max(1) + 1;
            (day + width * k as i32).min(day + one_day)
        };
        match create(pool, lo_at, hi_at).await {
            Ok(Made::Made) => made += 1,
            Ok(Made::Overlaps) => {}
            Ok(Made::Busy) => return Ok(made),
            Err(e) if is_lock_timeout(&e) => return Ok(made),
            Err(e) => return Err(e),
        }
        lo_at = hi_at;
    }
    Ok(made)
}

/// [`create_range`], tried again a few times a second apart while another node or
/// a lock held it back: for the bench, which loads history right after.
pub async fn create_range_patiently(
    pool: &PgPool,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    width: Duration,
) -> Result<u64, sqlx::Error> {
    let mut made = 0;
    for _ in 0..10 {
        made += create_range(pool, from, until, width).await?;
        let covered: bool = sqlx::query_scalar(
            "SELECT COALESCE(sum(LEAST(hi_at, $2) - GREATEST(COALESCE(lo_at, $1), $1)), interval '0') >= $2 - $1
             FROM history_partitions WHERE COALESCE(lo_at, $1) < $2 AND hi_at > $1",
        )
        .bind(from)
        .bind(until)
        .fetch_one(pool)
        .await?;
        if covered {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    Ok(made)
}

/// Makes the partitions of the next [`AHEAD`], after the newest (from midnight
/// when there is none), at the width the longest retention asks for. After a long
/// stop, the days the node was away get none: nothing was stored then.
pub async fn ensure_ahead(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let width = width(max_retention_days(pool).await?);
    let today = Utc::now().duration_trunc(Duration::days(1)).expect("a day fits");
    let from = match list(pool).await?.pop() {
        Some(newest) => newest.hi_at.max(today - Duration::days(1)),
        None => today,
    };
    create_range(pool, from, Utc::now() + AHEAD, width).await
}

/// Drops the partitions every project's retention has passed, oldest first.
/// Returns what went.
pub async fn drop_expired(pool: &PgPool) -> Result<Dropped, sqlx::Error> {
    let max_days = max_retention_days(pool).await?;
    let horizon = Utc::now() - Duration::days(max_days as i64);
    let mut total = Dropped::default();
    for p in list(pool).await? {
        if p.hi_at > horizon {
            break;
        }
        match drop_one(pool, &p).await {
            Ok(Some(d)) => {
                total.partitions += d.partitions;
                total.rows_estimate += d.rows_estimate;
                total.kept += d.kept;
            }
            Ok(None) => break,
            Err(e) if is_lock_timeout(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Drops the three partitions of `p`, keeping what must stay. `None` when another
/// node was changing partitions.
///
/// One table at a time, each in a transaction of its own that holds only that
/// table's lock: the hot path's statements take the three tables in different
/// orders (an attempt stores its invocation log, then updates its event log; a
/// claim updates event logs, then reads events), so holding one while waiting for
/// another would wait on them in a circle. Event logs go first (their live ones
/// move to the default partition), then the attempts (those of the moved logs
/// follow them), then the events (those any event log still points to stay). A
/// node that stops half-way leaves the rest to the next pass, which skips the
/// tables already gone.
async fn drop_one(pool: &PgPool, p: &Partition) -> Result<Option<Dropped>, sqlx::Error> {
    let n = &p.name;
    let (lo, hi) = (p.lo.unwrap_or(Uuid::nil()), p.hi);
    let rows: f64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(GREATEST(reltuples, 0)), 0)::float8 FROM pg_class WHERE relname = ANY($1)",
    )
    .bind(TABLES.iter().map(|(t, _)| format!("{t}_{n}")).collect::<Vec<_>>())
    .fetch_one(pool)
    .await?;
    let mut kept = 0;
    for table in ["event_logs", "invocation_logs", "events"] {
        let part = format!("{table}_{n}");
        let mut tx = pool.begin().await?;
        if !begin_change(&mut tx).await? {
            return Ok(None);
        }
        // Under the lock, again: another node may have dropped it, or a project's
        // retention grown, since the list was read.
        let still: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM history_partitions WHERE name = $1
                            AND hi_at <= now() - make_interval(days => (SELECT COALESCE(max(retention_days), 30) FROM projects)))",
        )
        .bind(n)
        .fetch_one(&mut *tx)
        .await?;
        if !still {
            return Ok(Some(Dropped::default()));
        }
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(&part).fetch_one(&mut *tx).await?;
        if exists {
            // Nothing may change the rows that stay between reading and moving them.
            sqlx::query(&format!("LOCK TABLE ONLY {table} IN ACCESS EXCLUSIVE MODE")).execute(&mut *tx).await?;
            let keep = match table {
                // The event logs that have not ended, found through the partial
                // indexes that hold them (three disjoint sets), never by reading
                // the whole partition.
                "event_logs" => format!(
                    "SELECT * FROM {part} WHERE status IN ('scheduled', 'pending') AND NOT paused
                     UNION ALL SELECT * FROM {part} WHERE status = 'processing'
                     UNION ALL SELECT * FROM {part} WHERE status IN ('scheduled', 'pending') AND paused"
                ),
                // The attempts of the logs kept: they are in the default partition now.
                "invocation_logs" => format!(
                    "SELECT * FROM {part} WHERE event_log_id IN (SELECT id FROM event_logs WHERE id >= $1 AND id < $2)"
                ),
                // The events an event log still points to: one kept, or one made a
                // moment after its event, across the range's end.
                _ => format!(
                    "SELECT * FROM {part} WHERE id IN (SELECT event_id FROM event_logs WHERE event_id >= $1 AND event_id < $2)"
                ),
            };
            sqlx::query(&format!("CREATE TEMP TABLE keep ON COMMIT DROP AS {keep}"))
                .bind(lo)
                .bind(hi)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("DROP TABLE {part}")).execute(&mut *tx).await?;
            // With the range gone, these land in the default partition.
            let moved = sqlx::query(&format!("INSERT INTO {table} SELECT * FROM keep")).execute(&mut *tx).await?.rows_affected();
            if table == "event_logs" {
                kept = moved;
                // The counts of the ended logs that went: every count of a bucket
                // that ends before the range did. Those buckets are past every
                // project's retention, and what the default partition still holds
                // of them goes in retention's next batches (whose counts would turn
                // negative: retention removes those too).
                sqlx::query(
                    "DELETE FROM event_log_counts
                     WHERE bucket + CASE span WHEN 'hour' THEN interval '1 hour' ELSE interval '1 minute' END <= $1",
                )
                .bind(p.hi_at)
                .execute(&mut *tx)
                .await?;
            }
        }
        if table == "events" {
            sqlx::query("DELETE FROM history_partitions WHERE name = $1").bind(n).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(Some(Dropped { partitions: 1, rows_estimate: rows as u64, kept }))
}

/// Table and index bytes of each of `tables`, over all its partitions, with the
/// number of partitions (1 for a table that is not partitioned).
pub async fn sizes(pool: &PgPool, tables: &[&str]) -> Result<Vec<(String, i64, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t::text, sum(pg_table_size(p.relid))::int8, sum(pg_indexes_size(p.relid))::int8, count(*)
         FROM unnest($1::text[]) AS t CROSS JOIN LATERAL pg_partition_tree(t::regclass) p
         WHERE p.isleaf GROUP BY t ORDER BY t",
    )
    .bind(tables)
    .fetch_all(pool)
    .await
}

/// Bytes of each index of `table`, over all its partitions.
pub async fn index_sizes(pool: &PgPool, table: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT i.indexrelid::regclass::text, sum(pg_relation_size(p.relid))::int8
         FROM pg_index i CROSS JOIN LATERAL pg_partition_tree(i.indexrelid) p
         WHERE i.indrelid = $1::regclass AND p.isleaf GROUP BY 1 ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
}

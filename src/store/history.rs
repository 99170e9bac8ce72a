//! The delivery history as Mission Control and the history API read it: lists
//! with filters, one event log with its attempts, counts and the chart, dead
//! letters. No read here grows with the length of the history (SPEC §9): each is
//! served by an index or by the per-minute and per-hour counts that a trigger on
//! event_logs keeps (see the migration `history_reads`).

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::model::{EventLog, Invocation, Status, Summary};
use crate::store::partitions::floor_id;

#[derive(FromRow)]
struct EventLogRow {
    id: Uuid,
    event_id: Uuid,
    trigger_name: String,
    event_type: String,
    status: String,
    attempts: i32,
    created_at: DateTime<Utc>,
    deliver_at: DateTime<Utc>,
    next_attempt_at: DateTime<Utc>,
    last_error: Option<String>,
}

impl From<EventLogRow> for EventLog {
    fn from(r: EventLogRow) -> Self {
        let status = Status::parse(&r.status).unwrap_or(Status::Pending);
        EventLog {
            id: r.id,
            event_id: r.event_id,
            trigger: r.trigger_name,
            event_type: r.event_type,
            status,
            attempts: r.attempts,
            created_at: r.created_at,
            deliver_at: r.deliver_at,
            next_attempt_at: (!status.is_final()).then_some(r.next_attempt_at),
            last_error: r.last_error,
        }
    }
}

const LOG_SELECT: &str = "SELECT l.id, l.event_id, l.trigger_name, l.event_type, l.status, l.attempts,
    l.created_at, e.deliver_at, l.next_attempt_at, l.last_error
    FROM event_logs l JOIN events e ON e.id = l.event_id";

/// The event logs of one event, in trigger-name order.
pub async fn logs_of_event(pool: &PgPool, project: &str, event_id: Uuid) -> Result<Vec<EventLog>, sqlx::Error> {
    let rows: Vec<EventLogRow> =
        sqlx::query_as(&format!("{LOG_SELECT} WHERE l.project = $1 AND l.event_id = $2 ORDER BY l.trigger_name"))
            .bind(project)
            .bind(event_id)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(EventLog::from).collect())
}

/// One event log with its event data, or `None`.
pub async fn log(pool: &PgPool, project: &str, id: Uuid) -> Result<Option<(EventLog, serde_json::Value)>, sqlx::Error> {
    let row: Option<EventLogRow> = sqlx::query_as(&format!("{LOG_SELECT} WHERE l.project = $1 AND l.id = $2"))
        .bind(project)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let data: Json<serde_json::Value> = sqlx::query_scalar("SELECT data FROM events WHERE id = $1")
        .bind(row.event_id)
        .fetch_one(pool)
        .await?;
    Ok(Some((row.into(), data.0)))
}

/// Every attempt of an event log, oldest first.
pub async fn invocations(pool: &PgPool, log_id: Uuid) -> Result<Vec<Invocation>, sqlx::Error> {
    #[derive(FromRow)]
    struct Row {
        id: Uuid,
        started_at: DateTime<Utc>,
        duration_ms: i32,
        status_code: Option<i32>,
        request_headers: Json<serde_json::Value>,
        request_body: String,
        response_body: Option<String>,
        error: Option<String>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, started_at, duration_ms, status_code, request_headers, request_body, response_body, error
         FROM invocation_logs WHERE event_log_id = $1 ORDER BY started_at, attempt",
    )
    .bind(log_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Invocation {
            id: r.id,
            started_at: r.started_at,
            duration_ms: r.duration_ms,
            status_code: r.status_code,
            request_headers: r.request_headers.0,
            request_body: r.request_body,
            response_body: r.response_body,
            error: r.error,
        })
        .collect())
}

/// Filters of the history list; every field is optional.
#[derive(Clone, Debug, Default)]
pub struct LogFilter {
    pub status: Option<Status>,
    pub trigger: Option<String>,
    pub event_type: Option<String>,
    pub event_id: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Keyset position: rows strictly older than this (created_at, id).
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// The history, newest first, a page at a time. Each shape of filter takes the
/// index that finds its first page without reading what it skips:
/// - an event: `event_logs_event`;
/// - a status, a trigger or a type: one branch per status, each stopping at the
///   page size: ended logs through `event_logs_ended`, `event_logs_ended_trigger`
///   or `event_logs_ended_type`; those that wait long (scheduled, retrying, set
///   aside) through the `event_logs_waiting` indexes of the same shapes; fresh
///   pending ones and those being delivered through the claim's indexes (their
///   number is what the claims drain at delivery speed, and what is in flight);
/// - otherwise, a time range or nothing: `event_logs_history`.
///
/// The history is in time partitions, and planning a statement costs about the
/// same for each partition it may read (a few milliseconds for a branch over a
/// month of daily partitions). So the list looks first in the partitions of the
/// last hours before its position, and further back only when the page is not
/// complete there (see [`Windows`]).
pub async fn list_logs(pool: &PgPool, project: &str, f: &LogFilter) -> Result<Vec<EventLog>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    list_logs_on(&mut conn, project, f).await
}

/// [`list_logs`] on one connection (tests read its statistics in a transaction).
pub async fn list_logs_on(conn: &mut PgConnection, project: &str, f: &LogFilter) -> Result<Vec<EventLog>, sqlx::Error> {
    if f.event_id.is_some() {
        // The logs of one event: a handful, found through one index wherever they are.
        return fetch_list(conn, project, f, IdRange::default()).await;
    }
    // No parallel workers: a page never needs them, and starting one took longer
    // (about 10 ms) than reading the page (an hour's range ten days back).
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("SET LOCAL max_parallel_workers_per_gather = 0").execute(&mut *tx).await?;
    let windows = partition_starts(&mut tx).await?.for_list(f);
    let mut look = windows.first();
    let rows = loop {
        let rows = fetch_list(&mut tx, project, f, windows.ids(look)).await?;
        match windows.next(look, &rows, f.limit) {
            None => break rows,
            Some(further) => look = further,
        }
    };
    tx.commit().await?;
    Ok(rows)
}

async fn fetch_list(conn: &mut PgConnection, project: &str, f: &LogFilter, ids: IdRange) -> Result<Vec<EventLog>, sqlx::Error> {
    let mut q = QueryBuilder::<Postgres>::new("");
    push_list(&mut q, project, f, ids);
    // Planned for its values each time (an unnamed statement), never with a
    // generic plan: one made for "some trigger, some time range" chose a scan that
    // took 170 ms on 20 million event logs where the plan for the values takes
    // 4 ms; and only the values let the planner leave out the partitions outside
    // the ids' range.
    let rows: Vec<EventLogRow> = q.build_query_as().persistent(false).fetch_all(&mut *conn).await?;
    Ok(rows.into_iter().map(EventLog::from).collect())
}

/// A range of event log ids, `lo <= id < hi`; `None` leaves that side open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdRange {
    pub lo: Option<Uuid>,
    pub hi: Option<Uuid>,
}

/// An event log's id carries the moment its row was stored (`herald_uuid_v7`,
/// PostgreSQL's clock), its `created_at` the start of the transaction that stored
/// it. So the id's time is at or after the creation time, by less than this (no
/// transaction that stores event logs lasts an hour)…
pub const STORED_AFTER_CREATION: chrono::Duration = chrono::Duration::hours(1);
/// …and before it only if the clock was stepped back meanwhile, by less than this.
pub const STORED_BEFORE_CREATION: chrono::Duration = chrono::Duration::minutes(10);

/// Where a list looks, from the newest partitions back.
///
/// A look at the ids from the start of a partition `S` on finds every log the
/// filter wants that was created after `S` + [`STORED_BEFORE_CREATION`]: an older
/// id was stored before `S`. So a full page whose last log was created after that
/// is the page. Otherwise the list looks again from a start far enough back for
/// the density of what it found (twice over), and then, if need be, everywhere.
///
/// This holds for time-ordered ids. Logs of builds before them (random ids, in the
/// legacy and the default partitions) were all created before the partitions'
/// migration ran, which `history_ordered_since` records when there were any: a look
/// never starts earlier than that, and the last look, which has no lower bound (or
/// the one `from` gives, when it is later than that), has no upper bound either.
#[derive(Clone, Debug)]
pub struct Windows {
    /// The newest creation time the filter can want.
    anchor: DateTime<Utc>,
    /// The starts of the partitions, oldest first, from the moment ids are
    /// known to be time-ordered on.
    starts: Vec<DateTime<Utc>>,
    /// Since when ids are time-ordered, when some are not.
    ordered_since: Option<DateTime<Utc>>,
    /// The smallest id time `from` allows, when ids are time-ordered there.
    floor: Option<DateTime<Utc>>,
}

/// One look of a list: from a partition's start, or the last, exact one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Look {
    From { start: DateTime<Utc>, tries: u8 },
    Everything,
}

impl Windows {
    /// These windows, for the list `f`.
    pub fn for_list(mut self, f: &LogFilter) -> Self {
        let now = self.anchor;
        self.anchor = [Some(now), f.to, f.before.map(|b| b.0)].into_iter().flatten().min().unwrap_or(now);
        self.floor = f.from.map(|t| t - STORED_BEFORE_CREATION).filter(|t| self.ordered_since.is_none_or(|o| *t >= o));
        self
    }

    /// Looks back from `now` over the partitions that start at `starts`, from
    /// `ordered_since` on (from any when every id is time-ordered).
    fn over(now: DateTime<Utc>, mut starts: Vec<DateTime<Utc>>, ordered_since: Option<DateTime<Utc>>) -> Self {
        starts.retain(|s| ordered_since.is_none_or(|o| *s >= o));
        Windows { anchor: now, starts, ordered_since, floor: None }
    }

    /// The partitions of the last hour or more before the anchor.
    pub fn first(&self) -> Look {
        self.look_from_start_before(self.anchor - chrono::Duration::hours(1), 1)
    }

    /// The look from the start of the partition holding `t`, unless `from` is as
    /// far back (then the exact look is no wider).
    fn look_from_start_before(&self, t: DateTime<Utc>, tries: u8) -> Look {
        match self.starts.iter().rev().find(|s| **s <= t) {
            Some(&start) if self.floor.is_none_or(|f| f < start) => Look::From { start, tries },
            _ => Look::Everything,
        }
    }

    /// The ids a look reads.
    pub fn ids(&self, look: Look) -> IdRange {
        let hi = Some(floor_id(self.anchor + STORED_AFTER_CREATION));
        match look {
            Look::From { start, .. } => IdRange { lo: Some(floor_id(start)), hi },
            Look::Everything => match self.floor {
                Some(floor) => IdRange { lo: Some(floor_id(floor)), hi },
                None => IdRange::default(),
            },
        }
    }

    /// After a look that found `rows`: `None` when they are the page, or where to
    /// look next.
    pub fn next(&self, look: Look, rows: &[EventLog], limit: i64) -> Option<Look> {
        let Look::From { start, tries } = look else {
            return None;
        };
        if rows.len() as i64 >= limit && rows.last().is_some_and(|l| l.created_at > start + STORED_BEFORE_CREATION) {
            return None;
        }
        if rows.is_empty() || tries >= 2 {
            return Some(Look::Everything);
        }
        // Far enough back for a page at the density found, twice over, and at
        // least one partition further.
        let span = (self.anchor - start).num_seconds().max(3600) as f64;
        let back = (span * 2.0 * limit as f64 / rows.len() as f64).min(3650.0 * 86400.0);
        let t = (self.anchor - chrono::Duration::seconds(back as i64)).min(start - chrono::Duration::seconds(1));
        Some(self.look_from_start_before(t, tries + 1))
    }
}

/// The database's clock, the starts of the partitions (oldest first), and since
/// when ids are time-ordered when some are not (see the migration
/// `ordered_ids_since`).
async fn partition_starts(conn: &mut PgConnection) -> Result<Windows, sqlx::Error> {
    let (now, starts, ordered_since): (DateTime<Utc>, Vec<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT now(), COALESCE(array_agg(lo_at ORDER BY lo_at) FILTER (WHERE lo IS NOT NULL), '{}'),
                (SELECT max(at) FROM history_ordered_since)
         FROM history_partitions",
    )
    .fetch_one(conn)
    .await?;
    Ok(Windows::over(now, starts, ordered_since))
}

/// Writes the statement of [`list_logs`] into `q` (tests EXPLAIN it).
pub fn push_list<'a>(q: &mut QueryBuilder<'a, Postgres>, project: &'a str, f: &LogFilter, ids: IdRange) {
    if f.event_id.is_some() || (f.status.is_none() && f.trigger.is_none() && f.event_type.is_none()) {
        q.push(LOG_SELECT).push(" WHERE l.project = ").push_bind(project);
        if let Some(event) = f.event_id {
            q.push(" AND l.event_id = ").push_bind(event);
        }
        if let Some(s) = f.status {
            q.push(" AND l.status = ").push_bind(s.as_str());
        }
        push_trigger_and_time(q, f, ids);
        q.push(" ORDER BY l.created_at DESC, l.id DESC LIMIT ").push_bind(f.limit);
    } else {
        let statuses = match f.status {
            Some(s) => vec![s],
            None => Status::ALL.to_vec(),
        };
        q.push("SELECT x.id, x.event_id, x.trigger_name, x.event_type, x.status, x.attempts,
            x.created_at, e.deliver_at, x.next_attempt_at, x.last_error FROM (");
        for (i, s) in statuses.iter().enumerate() {
            if i > 0 {
                q.push(" UNION ALL ");
            }
            push_branch(q, project, *s, f, ids);
        }
        q.push(") x JOIN events e ON e.id = x.event_id ORDER BY x.created_at DESC, x.id DESC LIMIT ").push_bind(f.limit);
    }
}

/// The logs of one status that pass the filter, newest first, at most a page.
/// Statuses are written as literals, and with the group their partial index
/// names, so that the planner sees which index holds them.
fn push_branch(q: &mut QueryBuilder<'_, Postgres>, project: &str, status: Status, f: &LogFilter, ids: IdRange) {
    let columns =
        "l.id, l.event_id, l.trigger_name, l.event_type, l.status, l.attempts, l.created_at, l.next_attempt_at, l.last_error";
    let st = status.as_str();
    match status {
        Status::Processed | Status::Failed | Status::Cancelled | Status::Scheduled => {
            let group = if status.is_final() { "'processed', 'failed', 'cancelled'" } else { "'scheduled'" };
            q.push(format_args!(
                "(SELECT {columns} FROM event_logs l
                  WHERE l.status IN ({group}) AND l.status = '{st}' AND l.project = "
            ))
            .push_bind(project.to_owned());
            push_trigger_and_time(q, f, ids);
        }
        Status::Pending => {
            // Pending logs that wait long (retries, logs set aside, logs due later
            // than they were stored) are in the event_logs_waiting indexes; fresh
            // ones, which the claims drain at delivery speed, only in the claim's
            // index (event_logs_due). They were due when stored, so they are among
            // the logs due now (`<= now()` bounds the index scan, leaving out
            // everything scheduled for later); the fence (OFFSET 0) keeps the
            // planner off the history index, as below.
            q.push(format_args!(
                "(SELECT {columns} FROM ((SELECT {columns} FROM event_logs l
                  WHERE l.status = 'pending' AND (l.attempts > 0 OR l.paused OR l.next_attempt_at > l.created_at)
                    AND l.project = "
            ))
            .push_bind(project.to_owned());
            push_trigger_and_time(q, f, ids);
            q.push(" ORDER BY l.created_at DESC, l.id DESC LIMIT ").push_bind(f.limit);
            q.push(format_args!(
                ") UNION ALL SELECT {columns} FROM (SELECT {columns} FROM event_logs l
                  WHERE l.status = 'pending' AND l.attempts = 0 AND NOT l.paused AND l.next_attempt_at <= l.created_at
                    AND l.next_attempt_at <= now() AND l.project = "
            ))
            .push_bind(project.to_owned());
            push_trigger_and_time(q, f, ids);
            q.push(" OFFSET 0) l) l");
        }
        Status::Processing => {
            // Logs being delivered are gathered from the lease index (event_logs_leased,
            // and event_logs_paused), whose size is the deliveries in flight; the
            // subquery fence (OFFSET 0) keeps the planner from walking the history
            // index instead, which would read every ended log newer than the oldest
            // live one.
            q.push(format_args!("(SELECT {columns} FROM (SELECT {columns} FROM event_logs l WHERE l.status = '{st}' AND NOT l.paused AND l.project = "))
                .push_bind(project.to_owned());
            push_trigger_and_time(q, f, ids);
            q.push(format_args!(" UNION ALL SELECT {columns} FROM event_logs l WHERE l.paused AND l.status = '{st}' AND l.project = "))
                .push_bind(project.to_owned());
            push_trigger_and_time(q, f, ids);
            q.push(" OFFSET 0) l");
        }
    }
    q.push(" ORDER BY l.created_at DESC, l.id DESC LIMIT ").push_bind(f.limit).push(")");
}

fn push_trigger_and_time(q: &mut QueryBuilder<'_, Postgres>, f: &LogFilter, ids: IdRange) {
    push_id_range(q, ids);
    if let Some(t) = &f.trigger {
        q.push(" AND l.trigger_name = ").push_bind(t.clone());
    }
    if let Some(t) = &f.event_type {
        q.push(" AND l.event_type = ").push_bind(t.clone());
    }
    push_time_bounds(q, "l.created_at", f);
}

/// Bounds of the partition key, known when the statement is planned (it is never
/// prepared), so that its plan leaves out the partitions beyond them.
fn push_id_range(q: &mut QueryBuilder<'_, Postgres>, ids: IdRange) {
    if let Some(lo) = ids.lo {
        q.push(" AND l.id >= ").push_bind(lo);
    }
    if let Some(hi) = ids.hi {
        q.push(" AND l.id < ").push_bind(hi);
    }
}

/// The time range and the keyset position, on the column `at`.
fn push_time_bounds(q: &mut QueryBuilder<'_, Postgres>, at: &str, f: &LogFilter) {
    if let Some(from) = f.from {
        q.push(format_args!(" AND {at} >= ")).push_bind(from);
    }
    if let Some(to) = f.to {
        q.push(format_args!(" AND {at} < ")).push_bind(to);
    }
    if let Some((t, id)) = f.before {
        // The first bound lets the index start there; the second is the exact position.
        q.push(format_args!(" AND {at} <= ")).push_bind(t);
        q.push(format_args!(" AND ({at}, l.id) < (")).push_bind(t).push(", ").push_bind(id).push(")");
    }
}

/// The failed event logs of a project created in [from, to), grouped by trigger
/// and last error, largest groups first (served by event_logs_ended).
pub async fn dead_letters(
    pool: &PgPool,
    project: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Vec<crate::model::DeadLetterGroup>, sqlx::Error> {
    let rows: Vec<(String, String, i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT trigger_name, COALESCE(last_error, ''), count(*), min(created_at), max(created_at)
         FROM event_logs
         WHERE project = $1 AND status = 'failed'
           AND ($2::timestamptz IS NULL OR created_at >= $2) AND ($3::timestamptz IS NULL OR created_at < $3)
         GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 200",
    )
    .bind(project)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(trigger, error, count, oldest, newest)| crate::model::DeadLetterGroup { trigger, error, count, oldest, newest })
        .collect())
}


/// The granularity of the kept counts: per minute (kept two days) or per hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Minute,
    Hour,
}

impl Span {
    fn as_str(self) -> &'static str {
        match self {
            Span::Minute => "minute",
            Span::Hour => "hour",
        }
    }
}

/// The epoch the count buckets and the chart's bars are cut from (UTC).
pub const BUCKET_EPOCH: &str = "2000-01-01T00:00:00Z";

/// Ended event logs per status created in the buckets from `since` on, from the kept counts.
pub async fn ended_counts(
    pool: &PgPool,
    project: &str,
    span: Span,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT status, sum(n)::bigint FROM event_log_counts
         WHERE project = $1 AND span = $2 AND bucket >= $3 GROUP BY status",
    )
    .bind(project)
    .bind(span.as_str())
    .bind(since)
    .fetch_all(pool)
    .await
}

/// Event logs that have not ended (the backlog), per status, created from `since`
/// on: found through the claim's partial indexes, never the history.
///
/// The window is a FILTER, not a WHERE, so that it cannot become an index
/// condition: on 20 million logs the planner ANDed the claim's index with the
/// history index's range for the window, which reads every log created in it
/// (7 ms and parallel workers for an hour of 19,000 logs, for a backlog of 1,000).
pub async fn live_counts(pool: &PgPool, project: &str, since: DateTime<Utc>) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let window = partition_starts(&mut conn).await?;
    // Over a few partitions, only the partitions from the one holding `since` on
    // (see [`Windows`]): its plan, made for the values, leaves out the others. The
    // bound is a partition's start, so that it never narrows the index scans.
    let few = match window.look_from_start_before(since - STORED_BEFORE_CREATION, 1) {
        look @ Look::From { start, .. } if window.starts.iter().filter(|s| **s >= start && **s <= window.anchor).count() <= 3 => {
            Some(window.ids(look))
        }
        _ => None,
    };
    let parts = [
        "status IN ('scheduled', 'pending') AND NOT paused",
        "paused AND status IN ('scheduled', 'pending', 'processing')",
        "status = 'processing' AND NOT paused",
    ];
    let mut q = QueryBuilder::<Postgres>::new("SELECT status, count(*) FILTER (WHERE created_at >= ");
    q.push_bind(since).push(") FROM (");
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            q.push(" UNION ALL ");
        }
        q.push(format_args!("SELECT status, created_at FROM event_logs l WHERE {part} AND project = ")).push_bind(project.to_owned());
        if let Some(ids) = few {
            push_id_range(&mut q, ids);
        }
    }
    q.push(") live GROUP BY status");
    // Over many, a prepared statement with no bound: the plan PostgreSQL keeps
    // for it reads each partition's (small) claim indexes, with no planning at
    // each call; a generic plan with bounds on the ids took 18 ms.
    q.build_query_as().persistent(few.is_none()).fetch_all(&mut *conn).await
}

/// Processed and failed event logs per bar of `bar_secs` (a whole number of
/// `span`s) from `since` on, by creation time, from the kept counts.
pub async fn outcome_buckets(
    pool: &PgPool,
    project: &str,
    span: Span,
    since: DateTime<Utc>,
    bar_secs: i64,
) -> Result<Vec<(DateTime<Utc>, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT date_bin(make_interval(secs => $4), bucket, $5::timestamptz) AS b,
                COALESCE(sum(n) FILTER (WHERE status = 'processed'), 0)::bigint,
                COALESCE(sum(n) FILTER (WHERE status = 'failed'), 0)::bigint
         FROM event_log_counts
         WHERE project = $1 AND span = $2 AND bucket >= $3 AND status IN ('processed', 'failed')
         GROUP BY b ORDER BY b",
    )
    .bind(project)
    .bind(span.as_str())
    .bind(since)
    .bind(bar_secs as f64)
    .bind(DateTime::parse_from_rfc3339(BUCKET_EPOCH).expect("a valid constant"))
    .fetch_all(pool)
    .await
}

/// Counts by status and processed/failed per bar over the last `window`.
///
/// Ended logs are counted from the kept per-minute counts for windows under a
/// day and the per-hour ones beyond; the backlog is counted live. About 24 bars,
/// each a whole number of minutes (or hours) so that the kept counts fall onto
/// them, the last one holding now; the counts cover the same span as the bars
/// (from the start of the first, up to a bar less than `window` ago).
pub async fn summary(pool: &PgPool, project: &str, window: std::time::Duration) -> Result<Summary, sqlx::Error> {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(31)).max(chrono::Duration::minutes(1));
    let (span, unit) = if window < chrono::Duration::days(1) {
        (Span::Minute, 60)
    } else {
        (Span::Hour, 3600)
    };
    let bar = (window.num_seconds() / 24 / unit).max(1) * unit;
    let bars = (window.num_seconds() + bar - 1) / bar;
    let now = Utc::now();
    let start_of = |t: DateTime<Utc>, step: i64| {
        let epoch = DateTime::parse_from_rfc3339(BUCKET_EPOCH).expect("a valid constant").with_timezone(&Utc);
        epoch + chrono::Duration::seconds((t - epoch).num_seconds().div_euclid(step) * step)
    };
    let last_bar = start_of(now, bar);
    let first_bar = last_bar - chrono::Duration::seconds(bar * (bars - 1));
    // The counts cover what the bars cover, so that they add up to the same.
    let since = first_bar;
    let (ended, live, rows) = tokio::try_join!(
        ended_counts(pool, project, span, since),
        live_counts(pool, project, since),
        outcome_buckets(pool, project, span, first_bar, bar),
    )?;
    let buckets = (0..bars)
        .map(|i| {
            let start = first_bar + chrono::Duration::seconds(bar * i);
            let (p, f) = rows.iter().find(|r| r.0 == start).map(|r| (r.1, r.2)).unwrap_or((0, 0));
            (start, p, f)
        })
        .collect();
    let counts = Status::ALL
        .into_iter()
        .map(|st| {
            let n = ended.iter().chain(&live).filter(|c| c.0 == st.as_str()).map(|c| c.1).sum();
            (st, n)
        })
        .collect();
    Ok(Summary { now, counts, buckets })
}

/// What changes when the project's history does: its newest event log, and the
/// number of ended ones (the hourly counts: at most a few thousand rows).
pub async fn fingerprint(pool: &PgPool, project: &str) -> Result<(Option<Uuid>, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT id FROM event_logs WHERE project = $1 ORDER BY created_at DESC, id DESC LIMIT 1),
                (SELECT coalesce(sum(n), 0)::bigint FROM event_log_counts WHERE project = $1 AND span = 'hour')",
    )
    .bind(project)
    .fetch_one(pool)
    .await
}

//! Events, event logs and invocation logs: the queue itself.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use crate::model::Status;

/// The channel dispatchers LISTEN on. One NOTIFY per transaction that adds due work.
pub const WAKE_CHANNEL: &str = "herald_wake";

/// Which triggers of an event's type receive it: a database trigger only the
/// changes of its own database and table, a file trigger only paths under its
/// prefix (a whole path segment: `/img` matches `/img/a.png`, not `/img2`).
const SOURCE_MATCH: &str = "CASE t.source
    WHEN 'database' THEN t.options->>'db' = ins.data->>'db' AND t.options->>'table' = ins.data->>'col'
    WHEN 'file' THEN COALESCE(t.options->>'prefix', '/') = '/'
        OR ins.data->>'path' = t.options->>'prefix'
        OR starts_with(ins.data->>'path', (t.options->>'prefix') || '/')
    ELSE true END";

/// The trigger an event log belongs to, for a log aliased `l` and a trigger aliased
/// `t`: the same id. A trigger deleted and created again under the same name is
/// another trigger. Logs stored before trigger ids existed match by name, if the
/// trigger already existed when they were created.
pub(crate) const SAME_TRIGGER: &str = "t.project = l.project AND t.name = l.trigger_name
    AND (t.id = l.trigger_id OR (l.trigger_id IS NULL AND t.created_at <= l.created_at))";

/// For an event log aliased `l`: it has no ordering key, or no earlier event log of
/// its key and trigger is live (SPEC §10). Every claim checks it.
const KEY_HEAD: &str = "(l.ordering_key IS NULL OR NOT EXISTS (
    SELECT 1 FROM event_logs o
    WHERE o.trigger_id = l.trigger_id AND o.ordering_key = l.ordering_key AND o.event_id < l.event_id
      AND o.status IN ('scheduled', 'pending', 'processing')))";

/// An event to store. Its id is chosen by the caller.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub id: Uuid,
    pub event_type: String,
    pub data: serde_json::Value,
    pub deliver_at: DateTime<Utc>,
    pub synchronous: bool,
    pub idempotency_key: Option<String>,
    /// Per trigger, event logs of one key are delivered one at a time, in queue order (SPEC §10).
    pub ordering_key: Option<String>,
}

/// What became of one `NewEvent`.
#[derive(Clone, Debug)]
pub struct Stored {
    pub event_id: Uuid,
    pub deliver_at: DateTime<Utc>,
    /// Ids of the event logs made for it, one per matching trigger.
    pub log_ids: Vec<Uuid>,
    /// True when an earlier event with the same idempotency key was returned instead.
    pub duplicate: bool,
    /// The event logs among `log_ids` leased to the caller's node by this call,
    /// ready to deliver: the statement that stored them returns all a delivery
    /// needs, so none is read back.
    pub leased: Vec<Job>,
}

/// Who holds new event logs: `None` leaves them to any dispatcher; `Some` leases
/// them to one node at once (synchronous events are delivered by their receiver).
#[derive(Clone, Copy, Debug)]
pub struct Lease {
    pub node: Uuid,
    pub margin: Duration,
}

/// Stores events and their event logs (one per enabled trigger of the type) with a
/// handful of statements, whatever the batch size, and one NOTIFY when it made
/// work for the dispatchers. Given a transaction, the caller commits. Given a plain
/// connection and no idempotency keys, the one statement that stores the events
/// commits them (a round trip less each for BEGIN and COMMIT). Events with
/// idempotency keys need a transaction: a key stored and committed without its
/// event would name an event that does not exist.
pub async fn enqueue(
    conn: &mut PgConnection,
    project: &str,
    events: &[NewEvent],
    lease: Option<Lease>,
) -> Result<Vec<Stored>, sqlx::Error> {
    enqueue_leasing(conn, project, events, lease, None, &[]).await
}

/// [`enqueue_leasing`] on its own, committed when it returns: one statement with no
/// transaction around it when no event has an idempotency key (the statement is
/// atomic by itself), a transaction when keys take more statements.
pub async fn enqueue_committed(
    pool: &PgPool,
    project: &str,
    events: &[NewEvent],
    lease: Option<Lease>,
    limit: Option<usize>,
    blocked: &[Uuid],
) -> Result<Vec<Stored>, sqlx::Error> {
    if events.iter().all(|e| e.idempotency_key.is_none()) {
        let mut conn = pool.acquire().await?;
        return enqueue_leasing(&mut conn, project, events, lease, limit, blocked).await;
    }
    let mut tx = pool.begin().await?;
    let stored = enqueue_leasing(&mut tx, project, events, lease, limit, blocked).await?;
    tx.commit().await?;
    Ok(stored)
}

/// [`enqueue`], leasing at most `limit` of the new event logs that are due now to
/// `lease.node` (all of them when `limit` is `None`): that node delivers them at
/// once, with no claim. The others wait for any dispatcher as usual. Never leased
/// here: event logs of an ordering key (the claim orders them), of a trigger whose
/// circuit is open, and, with a `limit`, of the `blocked` triggers (this node's
/// deliveries of them already wait for their limits).
pub async fn enqueue_leasing(
    conn: &mut PgConnection,
    project: &str,
    events: &[NewEvent],
    lease: Option<Lease>,
    limit: Option<usize>,
    blocked: &[Uuid],
) -> Result<Vec<Stored>, sqlx::Error> {
    let keys: Vec<String> = events.iter().filter_map(|e| e.idempotency_key.clone()).collect();
    // The events to insert: those without a key, and those whose key is free. A
    // key names its first event for 24 hours (idempotency_keys); an older one, or
    // one whose event is gone, is free again.
    let fresh: Vec<&NewEvent>;
    if keys.is_empty() {
        fresh = events.iter().collect();
    } else {
        sqlx::query(&format!(
            "DELETE FROM idempotency_keys k
             WHERE k.project = $1 AND k.key = ANY($2)
               AND (k.created_at < now() - interval '{}' OR NOT EXISTS (SELECT 1 FROM events e WHERE e.id = k.event_id))",
            super::retention::IDEMPOTENCY_KEPT
        ))
        .bind(project)
        .bind(&keys)
        .execute(&mut *conn)
        .await?;
        let keyed: Vec<(&str, Uuid)> =
            events.iter().filter_map(|e| e.idempotency_key.as_deref().map(|k| (k, e.id))).collect();
        // Of two events of the batch with one key, the first takes it; keys are
        // inserted in key order, so that two batches never wait on each other's
        // keys in a circle.
        let won: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO idempotency_keys (project, key, event_id)
             SELECT DISTINCT ON (k) $1, k, id FROM UNNEST($2::text[], $3::uuid[]) WITH ORDINALITY AS u (k, id, n)
             ORDER BY k, n
             ON CONFLICT DO NOTHING
             RETURNING event_id",
        )
        .bind(project)
        .bind(keyed.iter().map(|k| k.0).collect::<Vec<_>>())
        .bind(keyed.iter().map(|k| k.1).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        let won: std::collections::HashSet<Uuid> = won.into_iter().collect();
        fresh = events.iter().filter(|e| e.idempotency_key.is_none() || won.contains(&e.id)).collect();
    }
    let events_in = events;
    let events = &fresh;

    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let data: Vec<Json<&serde_json::Value>> = events.iter().map(|e| Json(&e.data)).collect();
    let deliver_at: Vec<DateTime<Utc>> = events.iter().map(|e| e.deliver_at).collect();
    let sync: Vec<bool> = events.iter().map(|e| e.synchronous).collect();
    let idem: Vec<Option<&str>> = events.iter().map(|e| e.idempotency_key.as_deref()).collect();
    let ordering: Vec<Option<&str>> = events.iter().map(|e| e.ordering_key.as_deref()).collect();

    let inserted: Vec<InsertedRow> = sqlx::query_as(&format!(
        "WITH input AS (
             SELECT * FROM UNNEST($2::uuid[], $3::text[], $4::jsonb[], $5::timestamptz[], $6::bool[], $7::text[],
                                  $12::text[])
                 AS i (id, type, data, deliver_at, synchronous, idempotency_key, ordering_key)
         ), ins AS (
             INSERT INTO events (id, project, type, data, deliver_at, synchronous, idempotency_key, ordering_key)
             SELECT id, $1, type, data, deliver_at, synchronous, idempotency_key, ordering_key FROM input
             RETURNING id, type, data, deliver_at, created_at, ordering_key
         ), matched AS (
             SELECT ins.id, ins.type, ins.deliver_at, ins.ordering_key, t.name, t.id AS trigger_id, t.timeout_ms, t.url,
                    t.retries, t.headers,
                    -- A keyed log waits while an earlier one of its key is live,
                    -- in the database or in this very batch.
                    ins.ordering_key IS NOT NULL AND (
                        row_number() OVER (PARTITION BY t.id, ins.ordering_key ORDER BY ins.id) > 1
                        OR EXISTS (SELECT 1 FROM event_logs o
                                   WHERE o.trigger_id = t.id AND o.ordering_key = ins.ordering_key
                                     AND o.status IN ('scheduled', 'pending', 'processing'))) AS key_wait,
                    $8::uuid IS NOT NULL AND ins.ordering_key IS NULL AND t.circuit_opened_at IS NULL
                        AND ($10::bigint IS NULL OR (ins.deliver_at <= now() AND t.id <> ALL($11::uuid[])
                        AND row_number() OVER (ORDER BY ins.id, t.name) <= $10)) AS leased
             FROM ins JOIN event_triggers t ON t.project = $1 AND t.type = ins.type AND t.enabled
                 AND {SOURCE_MATCH}
         ), logs AS (
             INSERT INTO event_logs (id, event_id, project, trigger_name, trigger_id, event_type, ordering_key,
                                     paused, key_wait, status, next_attempt_at, lease_until, leased_by)
             SELECT herald_uuid_v7(), m.id, $1, m.name, m.trigger_id, m.type, m.ordering_key, m.key_wait, m.key_wait,
                    CASE WHEN m.leased THEN 'processing'
                         WHEN m.deliver_at > now() THEN 'scheduled'
                         ELSE 'pending' END,
                    -- Due now, by the database's clock, when it is not for later:
                    -- claims read the due logs in this order on every node, and a
                    -- node's clock may be behind.
                    GREATEST(m.deliver_at, now()),
                    CASE WHEN m.leased THEN now() + make_interval(secs => m.timeout_ms / 1000.0 + $9) END,
                    CASE WHEN m.leased THEN $8 END
             FROM matched m
             ORDER BY m.id, m.name
             RETURNING id, event_id, trigger_name, status
         ), made AS (
             SELECT event_id, array_agg(id) AS ids FROM logs GROUP BY event_id
         ), leased AS (
             -- What delivering the leased logs needs, besides the event itself.
             SELECT logs.event_id, array_agg(logs.id ORDER BY logs.trigger_name) AS ids,
                    array_agg(m.name ORDER BY logs.trigger_name) AS names,
                    array_agg(m.trigger_id ORDER BY logs.trigger_name) AS trigger_ids,
                    array_agg(m.url ORDER BY logs.trigger_name) AS urls,
                    array_agg(m.retries ORDER BY logs.trigger_name) AS retries,
                    array_agg(m.timeout_ms ORDER BY logs.trigger_name) AS timeouts,
                    array_agg(m.headers ORDER BY logs.trigger_name) AS headers
             FROM logs JOIN matched m ON m.id = logs.event_id AND m.name = logs.trigger_name
             WHERE logs.status = 'processing'
             GROUP BY logs.event_id
         ), secrets AS (
             SELECT jwt_secret, signing_secret FROM projects
             WHERE id = $1 AND EXISTS (SELECT 1 FROM leased)
         ), wake AS (
             -- One NOTIFY when an event log waits for a dispatcher (nobody leased it).
             SELECT pg_notify('{WAKE_CHANNEL}', '') FROM logs WHERE logs.status <> 'processing' LIMIT 1
         )
         SELECT ins.id, ins.created_at,
                COALESCE(made.ids, '{{}}') AS log_ids,
                leased.ids AS leased_ids, leased.names, leased.trigger_ids, leased.urls, leased.retries, leased.timeouts, leased.headers,
                (SELECT jwt_secret FROM secrets) AS jwt_secret, (SELECT signing_secret FROM secrets) AS signing_secret,
                (SELECT count(*) FROM wake) AS woke
         FROM ins LEFT JOIN made ON made.event_id = ins.id LEFT JOIN leased ON leased.event_id = ins.id"
    ))
    .bind(project)
    .bind(&ids)
    .bind(&types)
    .bind(&data)
    .bind(&deliver_at)
    .bind(&sync)
    .bind(&idem)
    .bind(lease.map(|l| l.node))
    .bind(lease.map(|l| l.margin.as_secs_f64()).unwrap_or(0.0))
    .bind(limit.map(|l| l as i64))
    .bind(blocked)
    .bind(&ordering)
    .fetch_all(&mut *conn)
    .await?;

    let mut by_id: std::collections::HashMap<Uuid, InsertedRow> = inserted.into_iter().map(|r| (r.id, r)).collect();

    // Events whose key was already taken: answer with the first event.
    let mut earlier: std::collections::HashMap<String, Stored> = std::collections::HashMap::new();
    let events = events_in;
    let taken: Vec<&str> = events
        .iter()
        .filter(|e| !by_id.contains_key(&e.id))
        .filter_map(|e| e.idempotency_key.as_deref())
        .collect();
    if !taken.is_empty() {
        let rows: Vec<(String, Uuid, DateTime<Utc>, Vec<Uuid>)> = sqlx::query_as(
            "SELECT k.key, e.id, e.deliver_at,
                    COALESCE((SELECT array_agg(l.id ORDER BY l.trigger_name) FROM event_logs l WHERE l.event_id = e.id), '{}')
             FROM idempotency_keys k JOIN events e ON e.id = k.event_id
             WHERE k.project = $1 AND k.key = ANY($2)",
        )
        .bind(project)
        .bind(&taken)
        .fetch_all(&mut *conn)
        .await?;
        for (key, event_id, deliver_at, log_ids) in rows {
            earlier.insert(key, Stored { event_id, deliver_at, log_ids, duplicate: true, leased: Vec::new() });
        }
    }

    let mut out = Vec::with_capacity(events.len());
    for e in events {
        if let Some(row) = by_id.remove(&e.id) {
            let leased = row.leased_jobs(project, e);
            out.push(Stored { event_id: e.id, deliver_at: e.deliver_at, log_ids: row.log_ids, duplicate: false, leased });
        } else if let Some(first) = e.idempotency_key.as_ref().and_then(|k| earlier.get(k)) {
            out.push(first.clone());
        } else {
            // A key repeated inside one batch: the first occurrence was inserted above
            // under its own id, and later ones were skipped by ON CONFLICT.
            let first = events
                .iter()
                .find(|o| o.idempotency_key == e.idempotency_key)
                .and_then(|o| out.iter().find(|s: &&Stored| s.event_id == o.id).cloned());
            match first {
                Some(s) => out.push(Stored { duplicate: true, leased: Vec::new(), ..s }),
                None => return Err(sqlx::Error::RowNotFound),
            }
        }
    }
    Ok(out)
}

/// One stored event as the enqueue statement returns it.
#[derive(FromRow)]
struct InsertedRow {
    id: Uuid,
    created_at: DateTime<Utc>,
    log_ids: Vec<Uuid>,
    leased_ids: Option<Vec<Uuid>>,
    names: Option<Vec<String>>,
    trigger_ids: Option<Vec<Uuid>>,
    urls: Option<Vec<String>>,
    retries: Option<Vec<i32>>,
    timeouts: Option<Vec<i32>>,
    headers: Option<Vec<Json<serde_json::Map<String, serde_json::Value>>>>,
    jwt_secret: Option<String>,
    signing_secret: Option<String>,
    #[allow(dead_code)] // Read only to make PostgreSQL run the NOTIFY.
    woke: i64,
}

impl InsertedRow {
    /// Jobs for the event logs this call leased: one per trigger, in trigger-name order.
    fn leased_jobs(&self, project: &str, event: &NewEvent) -> Vec<Job> {
        let (
            Some(ids),
            Some(names),
            Some(trigger_ids),
            Some(urls),
            Some(retries),
            Some(timeouts),
            Some(headers),
            Some(jwt),
            Some(signing),
        ) = (
            &self.leased_ids,
            &self.names,
            &self.trigger_ids,
            &self.urls,
            &self.retries,
            &self.timeouts,
            &self.headers,
            &self.jwt_secret,
            &self.signing_secret,
        ) else {
            return Vec::new();
        };
        (0..ids.len())
            .map(|i| Job {
                id: ids[i],
                event_id: event.id,
                project: project.to_string(),
                trigger_name: names[i].clone(),
                trigger_id: Some(trigger_ids[i]),
                probe: false,
                attempts: 0,
                event_type: event.event_type.clone(),
                data: Json(event.data.clone()),
                event_time: self.created_at,
                event_deliver_at: event.deliver_at,
                url: Some(urls[i].clone()),
                retries: Some(retries[i]),
                timeout_ms: Some(timeouts[i]),
                headers: Some(headers[i].clone()),
                jwt_secret: jwt.clone(),
                signing_secret: signing.clone(),
            })
            .collect()
    }
}

/// Everything needed to make one delivery attempt of an event log.
#[derive(Clone, Debug, FromRow)]
pub struct Job {
    pub id: Uuid,
    pub event_id: Uuid,
    pub project: String,
    pub trigger_name: String,
    /// The trigger's id; `None` when the trigger was deleted after the claim.
    pub trigger_id: Option<Uuid>,
    /// The one delivery a trigger with an open circuit lets through each minute:
    /// its success closes the circuit.
    #[sqlx(default)]
    pub probe: bool,
    /// Attempts already made before this one.
    pub attempts: i32,
    pub event_type: String,
    pub data: Json<serde_json::Value>,
    pub event_time: DateTime<Utc>,
    /// When the event was due; lag is measured from the later of this and `event_time`.
    pub event_deliver_at: DateTime<Utc>,
    /// `None` when the trigger was deleted after the claim.
    pub url: Option<String>,
    pub retries: Option<i32>,
    pub timeout_ms: Option<i32>,
    pub headers: Option<Json<serde_json::Map<String, serde_json::Value>>>,
    pub jwt_secret: String,
    pub signing_secret: String,
}

const JOB_COLUMNS: &str = "c.id, c.event_id, c.project, c.trigger_name, t.id AS trigger_id, c.attempts,
    e.type AS event_type, e.data, e.created_at AS event_time, e.deliver_at AS event_deliver_at,
    t.url, t.retries, t.timeout_ms, t.headers, p.jwt_secret, p.signing_secret";
const JOB_JOINS: &str = "JOIN events e ON e.id = c.event_id
    JOIN projects p ON p.id = c.project
    LEFT JOIN event_triggers t ON t.project = c.project AND t.name = c.trigger_name
        AND (t.id = c.trigger_id OR (c.trigger_id IS NULL AND t.created_at <= c.created_at))";

/// Claims up to `limit` due event logs for `node` in one statement, leasing each
/// for its trigger's timeout plus `margin`. A due log whose trigger is disabled, or
/// whose trigger's circuit is open, is set aside (`paused`) instead: it keeps its
/// status and waits, out of the claim's index, until the trigger is enabled or the
/// circuit closes (SPEC §8, §10). A log whose trigger is gone is claimed, and its
/// delivery cancels it. Logs of the `blocked` triggers are set aside too (`held`),
/// since this node's deliveries of them already wait for the trigger's limits:
/// [`claim_held`] takes them back. A log with an ordering key is taken only once no
/// earlier log of its key and trigger is live.
pub async fn claim(
    pool: &PgPool,
    node: Uuid,
    limit: i64,
    margin: Duration,
    blocked: &[Uuid],
) -> Result<Vec<Job>, sqlx::Error> {
    Ok(claim_from(pool, node, limit, margin, blocked, None).await?.jobs)
}

/// What [`claim_from`] took.
#[derive(Debug, Default)]
pub struct Claimed {
    pub jobs: Vec<Job>,
    /// The latest due time among the claimed logs.
    pub through: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
struct ClaimedRow {
    #[sqlx(flatten)]
    job: Job,
    claimed_through: DateTime<Utc>,
}

/// [`claim`], reading the due logs from `from` on (every due log when `None`).
///
/// A claimed log leaves an entry behind in the index of due logs, which only
/// vacuum removes, and which every claim that reads the index from its start
/// must step over. While a snapshot older than those claims is open (a long
/// ANALYZE, a backup, a report), each entry costs a look at its row: a backlog
/// of 100,000 drained at a fifth of the speed (measured: claims took 250 µs per
/// log instead of 35). A dispatcher that drains a backlog therefore starts each
/// claim where its previous one ended (see `engine::dispatch::ClaimFloor`).
pub async fn claim_from(
    pool: &PgPool,
    node: Uuid,
    limit: i64,
    margin: Duration,
    blocked: &[Uuid],
    from: Option<DateTime<Utc>>,
) -> Result<Claimed, sqlx::Error> {
    let rows: Vec<ClaimedRow> = sqlx::query_as(&format!(
        // The locked rows are updated by their physical address (ctid, stable while
        // locked): a lookup by primary key would wade through the index entries of
        // every earlier version of the row, which made large backlogs drain slower.
        // A ctid is unique only within a partition; the id beside it leaves out the
        // other partitions (pruned when the statement runs), so one TID fetch remains.
        "WITH due AS (
             SELECT l.id AS did, l.ctid, t.enabled IS NOT FALSE AND t.circuit_opened_at IS NULL AS go,
                    COALESCE(t.id = ANY($4) AND l.trigger_id IS NOT NULL, false) AS hold, COALESCE(t.timeout_ms, 0) AS timeout_ms
             FROM event_logs l LEFT JOIN event_triggers t ON {SAME_TRIGGER}
             WHERE l.status IN ('scheduled', 'pending') AND NOT l.paused AND l.next_attempt_at <= now()
               AND l.next_attempt_at >= COALESCE($5, '-infinity'::timestamptz)
               AND {KEY_HEAD}
             ORDER BY l.next_attempt_at
             LIMIT $1
             FOR UPDATE OF l SKIP LOCKED
         ), paused AS (
             UPDATE event_logs l SET paused = true, held = due.go AND due.hold, updated_at = now()
             FROM due WHERE l.id = due.did AND l.ctid = due.ctid AND NOT (due.go AND NOT due.hold)
         ), c AS (
             UPDATE event_logs l
             SET status = 'processing', leased_by = $2, updated_at = now(),
                 lease_until = now() + make_interval(secs => $3 + due.timeout_ms / 1000.0)
             FROM due WHERE l.id = due.did AND l.ctid = due.ctid AND due.go AND NOT due.hold
             RETURNING l.*
         )
         SELECT {JOB_COLUMNS}, max(c.next_attempt_at) OVER () AS claimed_through FROM c {JOB_JOINS}"
    ))
    .bind(limit)
    .bind(node)
    .bind(margin.as_secs_f64())
    .bind(blocked)
    .bind(from)
    .fetch_all(pool)
    .await?;
    let through = rows.first().map(|r| r.claimed_through);
    Ok(Claimed { jobs: rows.into_iter().map(|r| r.job).collect(), through })
}

/// Takes back up to `limit` of one trigger's due event logs set aside by [`claim`]
/// (`held`), oldest first, leased to `node`; none while the trigger is disabled or
/// its circuit is open.
pub async fn claim_held(
    pool: &PgPool,
    node: Uuid,
    trigger: Uuid,
    limit: i64,
    margin: Duration,
) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(&format!(
        "WITH t AS (
             SELECT timeout_ms FROM event_triggers WHERE id = $1 AND enabled AND circuit_opened_at IS NULL
         ), due AS (
             SELECT l.id AS did, l.ctid FROM event_logs l
             WHERE l.held AND l.trigger_id = $1 AND l.next_attempt_at <= now() AND EXISTS (SELECT 1 FROM t)
               AND l.status IN ('scheduled', 'pending')
               AND {KEY_HEAD}
             ORDER BY l.next_attempt_at
             LIMIT $2
             FOR UPDATE OF l SKIP LOCKED
         ), c AS (
             UPDATE event_logs l
             SET status = 'processing', paused = false, held = false, leased_by = $3, updated_at = now(),
                 lease_until = now() + make_interval(secs => $4 + (SELECT timeout_ms FROM t) / 1000.0)
             FROM due WHERE l.id = due.did AND l.ctid = due.ctid
             RETURNING l.*
         )
         SELECT {JOB_COLUMNS} FROM c {JOB_JOINS}"
    ))
    .bind(trigger)
    .bind(limit)
    .bind(node)
    .bind(margin.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Makes due the first waiting event log of each ordering key whose earlier logs
/// have all ended. The end of a log makes the next of its key due at once; this
/// catches the one queued while the log before it ended (it saw that log live).
pub async fn release_stuck_keys(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE event_logs l SET paused = false, key_wait = false, updated_at = now()
         FROM (SELECT DISTINCT ON (trigger_id, ordering_key) id AS did, ctid, trigger_id, ordering_key, event_id
               FROM event_logs
               WHERE key_wait AND status IN ('scheduled', 'pending', 'processing') AND ordering_key IS NOT NULL
               ORDER BY trigger_id, ordering_key, event_id) head
         WHERE l.id = head.did AND l.ctid = head.ctid AND l.key_wait
           AND NOT EXISTS (SELECT 1 FROM event_logs o
                           WHERE o.trigger_id = head.trigger_id AND o.ordering_key = head.ordering_key
                             AND o.event_id < head.event_id AND o.status IN ('scheduled', 'pending', 'processing'))",
    )
    .execute(pool)
    .await?;
    notify_if(pool, r.rows_affected()).await
}

/// Sets these event logs, leased to `node` and not started, aside (`held`): their
/// trigger is throttled on this node, and whichever node has room takes them back
/// with [`claim_held`]. No attempt is counted.
pub async fn hold(pool: &PgPool, node: Uuid, ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE event_logs SET status = 'pending', lease_until = NULL, leased_by = NULL,
                paused = trigger_id IS NOT NULL, held = trigger_id IS NOT NULL, updated_at = now()
         WHERE id = ANY($2) AND id BETWEEN $3 AND $4 AND status = 'processing' AND leased_by = $1",
    )
    .bind(node)
    .bind(ids)
    .bind(span_of(ids.iter().copied()).0)
    .bind(span_of(ids.iter().copied()).1)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// The triggers with event logs set aside by [`claim`] (`held`), by a loose scan
/// of event_logs_held: one index probe per trigger, however many logs wait.
pub async fn held_triggers(pool: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH RECURSIVE h (id) AS (
             (SELECT trigger_id FROM event_logs WHERE held AND trigger_id IS NOT NULL ORDER BY trigger_id LIMIT 1)
             UNION ALL
             SELECT (SELECT trigger_id FROM event_logs WHERE held AND trigger_id > h.id ORDER BY trigger_id LIMIT 1)
             FROM h WHERE h.id IS NOT NULL
         )
         SELECT id FROM h WHERE id IS NOT NULL",
    )
    .fetch_all(pool)
    .await
}

/// Takes the probe of each trigger whose circuit is open and whose probe is due:
/// one of its set-aside event logs, leased to `node`, and the trigger's next probe
/// moved `every` ahead (also when it had nothing to probe).
pub async fn claim_probes(pool: &PgPool, node: Uuid, margin: Duration, every: Duration) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(&format!(
        "WITH t AS (
             SELECT id, project, name, timeout_ms FROM event_triggers
             WHERE circuit_opened_at IS NOT NULL AND circuit_probe_at <= now() AND enabled
             ORDER BY circuit_probe_at LIMIT 100
             FOR UPDATE SKIP LOCKED
         ), pick AS (
             SELECT p.did, p.ctid, t.id AS trigger_id, t.timeout_ms FROM t CROSS JOIN LATERAL (
                 SELECT l.id AS did, l.ctid FROM event_logs l
                 WHERE l.paused AND NOT l.key_wait AND l.project = t.project AND l.trigger_name = t.name
                   AND l.trigger_id = t.id
                   AND l.status IN ('scheduled', 'pending') AND l.next_attempt_at <= now()
                   AND {KEY_HEAD}
                 ORDER BY l.next_attempt_at LIMIT 1
                 FOR UPDATE OF l SKIP LOCKED
             ) p
         ), next AS (
             -- Every trigger looked at moves on, with a probe or without: one
             -- with nothing to probe must not keep the others' probes waiting.
             UPDATE event_triggers SET circuit_probe_at = now() + make_interval(secs => $3)
             FROM t WHERE event_triggers.id = t.id
         ), c AS (
             UPDATE event_logs l
             SET status = 'processing', paused = false, held = false, leased_by = $1, updated_at = now(),
                 lease_until = now() + make_interval(secs => $2 + pick.timeout_ms / 1000.0)
             FROM pick WHERE l.id = pick.did AND l.ctid = pick.ctid
             RETURNING l.*
         )
         SELECT {JOB_COLUMNS}, true AS probe FROM c {JOB_JOINS}"
    ))
    .bind(node)
    .bind(margin.as_secs_f64())
    .bind(every.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// (id, trigger name) of these event logs.
pub async fn trigger_names(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as("SELECT id, trigger_name FROM event_logs WHERE id = ANY($1) ORDER BY trigger_name")
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// The time of the earliest scheduled or pending event log, if any.
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT next_attempt_at FROM event_logs WHERE status IN ('scheduled', 'pending') AND NOT paused
         ORDER BY next_attempt_at LIMIT 1",
    )
    .fetch_optional(pool)
    .await
}

/// The most due event logs [`count_due_unclaimed`] counts: every scrape of
/// `/metrics` runs it, and a backlog of millions must not make each scrape read
/// millions of index entries.
pub const DUE_COUNT_CAP: i64 = 100_000;

/// How many event logs are due and not claimed by any node, up to [`DUE_COUNT_CAP`].
pub async fn count_due_unclaimed(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM (SELECT 1 FROM event_logs
         WHERE status IN ('scheduled', 'pending') AND NOT paused AND next_attempt_at <= now()
         LIMIT {DUE_COUNT_CAP}) due",
    ))
    .fetch_one(pool)
    .await
}

/// The error an event log carries when its lease ran out before its attempt was recorded.
pub const LEASE_EXPIRED: &str =
    "the lease expired before the attempt's outcome was recorded (its node stopped or lost the database)";
/// The error an event log carries when its node restarted in the middle of its attempt.
pub const NODE_RESTARTED: &str = "the node delivering it restarted before the attempt's outcome was recorded";

/// What an interrupted attempt does to an event log (the `SET` of an `UPDATE
/// event_logs l ... FROM gone`, where `gone.retries` is its trigger's, or NULL when
/// the trigger is gone): it counts as an attempt, so an event log that kills or
/// stalls every node that takes it runs out of attempts like any other instead of
/// looping forever (SPEC §8). `$1` is the error text.
const INTERRUPTED: &str = "attempts = l.attempts + 1,
    status = CASE WHEN gone.retries IS NULL THEN 'cancelled'
                  WHEN l.attempts + 1 > gone.retries THEN 'failed' ELSE 'pending' END,
    last_error = CASE WHEN gone.retries IS NULL THEN 'trigger deleted' ELSE $1 END,
    lease_until = NULL, leased_by = NULL, next_attempt_at = LEAST(l.next_attempt_at, now()), updated_at = now()";

/// Resumes event logs set aside while their trigger was disabled, if it is enabled
/// now. Enabling a trigger resumes them at once; this catches the few a claim set
/// aside while the enable committed (served by event_logs_paused).
pub async fn resume_enabled(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(&format!(
        "UPDATE event_logs l SET paused = false, held = false, updated_at = now()
         FROM event_triggers t WHERE l.paused AND NOT l.held AND NOT l.key_wait AND t.enabled AND t.circuit_opened_at IS NULL AND {SAME_TRIGGER}"
    ))
    .execute(pool)
    .await?;
    notify_if(pool, r.rows_affected()).await
}

/// Makes event logs whose lease expired (their node died, or could not record the
/// attempt) due again, counting the lost attempt.
pub async fn requeue_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(&format!(
        "WITH gone AS (
             SELECT l.id, t.retries FROM event_logs l LEFT JOIN event_triggers t ON {SAME_TRIGGER}
             WHERE l.status = 'processing' AND l.lease_until < now()
             ORDER BY l.lease_until LIMIT 10000 FOR UPDATE OF l SKIP LOCKED
         )
         UPDATE event_logs l SET {INTERRUPTED}
         FROM gone WHERE l.id = gone.id"
    ))
    .bind(LEASE_EXPIRED)
    .execute(pool)
    .await?;
    notify_if(pool, r.rows_affected()).await
}

/// Gives back every lease `node` holds but those in `keep` (still being worked
/// on), at shutdown, once its attempts have stopped: the logs are due again for
/// another node, with no attempt counted.
pub async fn release(pool: &PgPool, node: Uuid, keep: &[Uuid]) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE event_logs SET status = 'pending', lease_until = NULL, leased_by = NULL, updated_at = now()
         WHERE status = 'processing' AND leased_by = $1 AND id <> ALL($2)",
    )
    .bind(node)
    .bind(keep)
    .execute(pool)
    .await?;
    notify_if(pool, r.rows_affected()).await
}

/// Gives back the leases of these event logs, which `node` never started on
/// (a synchronous event that found no free delivery slot before its deadline):
/// due again for any node, with no attempt counted.
pub async fn release_unstarted(pool: &PgPool, node: Uuid, ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE event_logs SET status = 'pending', lease_until = NULL, leased_by = NULL, updated_at = now()
         WHERE id = ANY($2) AND id BETWEEN $3 AND $4 AND status = 'processing' AND leased_by = $1",
    )
    .bind(node)
    .bind(ids)
    .bind(span_of(ids.iter().copied()).0)
    .bind(span_of(ids.iter().copied()).1)
    .execute(pool)
    .await?;
    notify_if(pool, r.rows_affected()).await
}

/// Extends to `margin` from now the leases `node` holds on these event logs that
/// end sooner than that. Returns how many it extended.
pub async fn renew_leases(pool: &PgPool, node: Uuid, ids: &[Uuid], margin: Duration) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE event_logs SET lease_until = now() + make_interval(secs => $3)
         WHERE id = ANY($2) AND id BETWEEN $4 AND $5 AND leased_by = $1 AND status = 'processing'
           AND lease_until < now() + make_interval(secs => $3)",
    )
    .bind(node)
    .bind(ids)
    .bind(margin.as_secs_f64())
    .bind(span_of(ids.iter().copied()).0)
    .bind(span_of(ids.iter().copied()).1)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Gives back the leases `node` took before `before`: at start-up, those of its
/// previous run, which was killed in the middle of their attempts (counted, as an
/// expired lease is), leaving alone what this run has already claimed.
pub async fn take_back_previous_run(pool: &PgPool, node: Uuid, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(&format!(
        "WITH gone AS (
             SELECT l.id, t.retries FROM event_logs l LEFT JOIN event_triggers t ON {SAME_TRIGGER}
             WHERE l.status = 'processing' AND l.leased_by = $2 AND l.updated_at < $3
             FOR UPDATE OF l
         )
         UPDATE event_logs l SET {INTERRUPTED}
         FROM gone WHERE l.id = gone.id"
    ))
    .bind(NODE_RESTARTED)
    .bind(node)
    .bind(before)
    .execute(pool)
    .await?;
    notify_if(pool, r.rows_affected()).await
}

/// Wakes the dispatchers when `n` event logs became due; returns `n`.
async fn notify_if(pool: &PgPool, n: u64) -> Result<u64, sqlx::Error> {
    if n > 0 {
        sqlx::query("SELECT pg_notify($1, '')").bind(WAKE_CHANNEL).execute(pool).await?;
    }
    Ok(n)
}

/// One recorded HTTP attempt.
#[derive(Clone, Debug)]
pub struct NewInvocation {
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub request_headers: serde_json::Value,
    pub request_body: String,
    pub response_headers: Option<serde_json::Value>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

/// What stands in for a NUL character, which PostgreSQL's text and jsonb cannot
/// hold, in what a receiver sent: U+2400 SYMBOL FOR NULL, so a reader sees where it was.
pub const NUL_STAND_IN: &str = "\u{2400}";

impl NewInvocation {
    /// The attempt as PostgreSQL can store it: whatever a receiver answered, NUL
    /// characters are replaced by [`NUL_STAND_IN`]. Borrowed, with no copy, in the
    /// usual case of nothing to replace.
    pub fn storable(&self) -> std::borrow::Cow<'_, NewInvocation> {
        let text_nul = |s: &Option<String>| s.as_deref().is_some_and(|s| s.contains('\0'));
        let json_nul = |v: &Option<serde_json::Value>| v.as_ref().is_some_and(crate::engine::queue::holds_nul);
        if !(self.request_body.contains('\0')
            || text_nul(&self.response_body)
            || text_nul(&self.error)
            || crate::engine::queue::holds_nul(&self.request_headers)
            || json_nul(&self.response_headers))
        {
            return std::borrow::Cow::Borrowed(self);
        }
        let text = |s: &str| s.replace('\0', NUL_STAND_IN);
        std::borrow::Cow::Owned(NewInvocation {
            request_body: text(&self.request_body),
            response_body: self.response_body.as_deref().map(text),
            error: self.error.as_deref().map(text),
            request_headers: replace_nul(&self.request_headers),
            response_headers: self.response_headers.as_ref().map(replace_nul),
            ..self.clone()
        })
    }
}

fn replace_nul(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(s.replace('\0', NUL_STAND_IN)),
        Value::Array(items) => Value::Array(items.iter().map(replace_nul).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.replace('\0', NUL_STAND_IN), replace_nul(v))).collect()),
        other => other.clone(),
    }
}

/// Where an event log goes after an attempt.
#[derive(Clone, Debug)]
pub enum Next {
    Processed,
    Failed,
    /// Due again at this time, for any node.
    Retry(DateTime<Utc>),
    /// Due again at this time, still held by this node (synchronous events).
    RetryHeld { at: DateTime<Utc>, lease_until: DateTime<Utc> },
}

/// One attempt to record, and where its event log goes next.
#[derive(Clone, Debug)]
pub struct Completion {
    pub log_id: Uuid,
    pub attempt: i32,
    pub next: Next,
    pub invocation: NewInvocation,
}

/// Records one attempt and moves its event log on, in one transaction. Returns
/// false when the node no longer held the lease; the attempt is still recorded.
pub async fn complete(pool: &PgPool, node: Uuid, c: &Completion) -> Result<bool, sqlx::Error> {
    Ok(complete_batch(pool, node, std::slice::from_ref(c)).await?.first().copied().unwrap_or(false))
}

/// Records many attempts and moves their event logs on, in one statement when it
/// can: one commit (one WAL flush) for all. Returns, per item, whether the node
/// still held the lease.
///
/// One attempt never fails its neighbours (SPEC §8): a batch the database refuses
/// for what it holds (not because the database is away) is split in halves and each
/// half tried again, down to single attempts; an attempt that still cannot be
/// stored is recorded without the receiver's answer, with an error that says so,
/// and its event log moves on all the same.
pub async fn complete_batch(pool: &PgPool, node: Uuid, items: &[Completion]) -> Result<Vec<bool>, sqlx::Error> {
    let mut held = vec![false; items.len()];
    let mut ranges = vec![0..items.len()];
    while let Some(range) = ranges.pop() {
        if range.is_empty() {
            continue;
        }
        let e = match complete_batch_once(pool, node, &items[range.clone()]).await {
            Ok(h) => {
                held[range].copy_from_slice(&h);
                continue;
            }
            Err(e) if !refused_for_its_data(&e) => return Err(e),
            Err(e) => e,
        };
        if range.len() > 1 {
            let mid = range.start + range.len() / 2;
            ranges.push(mid..range.end);
            ranges.push(range.start..mid);
            continue;
        }
        let c = &items[range.start];
        tracing::error!(log = %c.log_id, error = %e, "cannot store an attempt; recording it without the receiver's answer");
        let bare = Completion { invocation: c.invocation.without_answer(&e), ..c.clone() };
        held[range.start] = complete_batch_once(pool, node, std::slice::from_ref(&bare)).await?[0];
    }
    Ok(held)
}

/// Whether the database refused a statement for the values it holds (data
/// exceptions, constraint violations, values too large), which splitting the batch
/// isolates; not for a passing condition (the database away, a deadlock, a
/// timeout), which the caller retries as it is.
fn refused_for_its_data(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("54"))
        }
        sqlx::Error::Encode(_) => true,
        _ => false,
    }
}

impl NewInvocation {
    /// The attempt with only what Herald itself knows (when, how long, the status
    /// code) and an error saying why the rest is missing.
    fn without_answer(&self, why: &sqlx::Error) -> NewInvocation {
        NewInvocation {
            started_at: Utc::now(),
            duration_ms: self.duration_ms,
            status_code: self.status_code,
            request_headers: serde_json::json!({}),
            request_body: String::new(),
            response_headers: None,
            response_body: None,
            error: Some(format!("Herald could not store this attempt's details: {why}")),
        }
    }
}

/// The smallest and the largest of some ids. A statement on `id = ANY($1)` alone
/// reads the index of every partition of the history (a generic plan cannot tell
/// which partitions the array's ids are in); with `id BETWEEN` these two, PostgreSQL
/// leaves out the partitions outside them when the statement starts.
pub(crate) fn span_of(ids: impl IntoIterator<Item = Uuid>) -> (Option<Uuid>, Option<Uuid>) {
    ids.into_iter().fold((None, None), |(lo, hi), id| {
        (Some(lo.map_or(id, |l: Uuid| l.min(id))), Some(hi.map_or(id, |h: Uuid| h.max(id))))
    })
}

async fn complete_batch_once(pool: &PgPool, node: Uuid, items: &[Completion]) -> Result<Vec<bool>, sqlx::Error> {
    let mut ids = Vec::with_capacity(items.len());
    let mut statuses = Vec::with_capacity(items.len());
    let mut attempts = Vec::with_capacity(items.len());
    let mut next_at: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(items.len());
    let mut lease_until: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(items.len());
    for c in items {
        let (status, at, lease) = match &c.next {
            Next::Processed => (Status::Processed, None, None),
            Next::Failed => (Status::Failed, None, None),
            Next::Retry(at) => (Status::Pending, Some(*at), None),
            Next::RetryHeld { at, lease_until } => (Status::Processing, Some(*at), Some(*lease_until)),
        };
        ids.push(c.log_id);
        statuses.push(status.as_str());
        attempts.push(c.attempt);
        next_at.push(at);
        lease_until.push(lease);
    }
    let stored: Vec<std::borrow::Cow<'_, NewInvocation>> = items.iter().map(|c| c.invocation.storable()).collect();
    let inv = |f: fn(&NewInvocation) -> Option<String>| stored.iter().map(|i| f(i)).collect::<Vec<_>>();
    let errors = inv(|i| i.error.clone());
    let processed: Vec<bool> = items.iter().map(|c| matches!(c.next, Next::Processed)).collect();
    let pick = |keep: bool| -> Vec<usize> { (0..items.len()).filter(|&i| processed[i] == keep).collect() };
    let (done, others) = (pick(true), pick(false));
    let wake = items.iter().any(|c| matches!(c.next, Next::Retry(_)));
    // One statement, so one round trip and one commit (one WAL flush) for the batch:
    // - the invocation logs;
    // - deliveries, the common case, need no per-row values: a plain UPDATE by
    //   primary key. `lease_until IS NOT NULL` means `status = 'processing'` (a CHECK
    //   ties them); it is written so because the partial index on processing rows
    //   holds thousands of dead entries under load, and a planner with young
    //   statistics would scan it;
    // - retries and failures carry their own error, time and lease;
    // - a NOTIFY when a retry is due for any node.
    let updated: Vec<Option<Uuid>> = sqlx::query_scalar(&format!(
        "WITH inv AS (
             INSERT INTO invocation_logs (id, event_log_id, attempt, started_at, duration_ms, status_code,
                 request_headers, request_body, response_headers, response_body, error)
             SELECT herald_uuid_v7(), * FROM UNNEST($1::uuid[], $2::int[], $3::timestamptz[], $4::int[], $5::int[],
                 $6::jsonb[], $7::text[], $8::jsonb[], $9::text[], $10::text[])
         ), done AS (
             UPDATE event_logs SET status = 'processed', attempts = attempts + 1, last_error = NULL,
                    lease_until = NULL, leased_by = NULL, updated_at = now()
             WHERE id = ANY($11) AND id BETWEEN $20 AND $21 AND leased_by = $12 AND lease_until IS NOT NULL
             RETURNING id
         ), other AS (
             UPDATE event_logs l SET status = u.status, attempts = u.attempt, last_error = u.error,
                    next_attempt_at = COALESCE(u.next_at, l.next_attempt_at),
                    lease_until = u.lease_until,
                    leased_by = CASE WHEN u.lease_until IS NULL THEN NULL ELSE l.leased_by END,
                    updated_at = now()
             FROM UNNEST($13::uuid[], $14::text[], $15::int[], $16::text[], $17::timestamptz[], $18::timestamptz[])
                  AS u (id, status, attempt, error, next_at, lease_until)
             WHERE l.id = ANY($13) AND l.id BETWEEN $22 AND $23 AND l.id = u.id AND l.leased_by = $12
               AND l.lease_until IS NOT NULL
             RETURNING l.id
         ), wake AS (
             SELECT pg_notify('{WAKE_CHANNEL}', '') WHERE $19
         )
         SELECT id FROM done UNION ALL SELECT id FROM other UNION ALL SELECT NULL FROM wake"
    ))
    .bind(&ids)
    .bind(&attempts)
    .bind(stored.iter().map(|i| i.started_at).collect::<Vec<_>>())
    .bind(stored.iter().map(|i| i.duration_ms).collect::<Vec<_>>())
    .bind(stored.iter().map(|i| i.status_code).collect::<Vec<_>>())
    .bind(stored.iter().map(|i| Json(&i.request_headers)).collect::<Vec<_>>())
    .bind(stored.iter().map(|i| i.request_body.as_str()).collect::<Vec<_>>())
    .bind(stored.iter().map(|i| i.response_headers.as_ref().map(Json)).collect::<Vec<_>>())
    .bind(inv(|i| i.response_body.clone()))
    .bind(&errors)
    .bind(done.iter().map(|&i| ids[i]).collect::<Vec<_>>())
    .bind(node)
    .bind(others.iter().map(|&i| ids[i]).collect::<Vec<_>>())
    .bind(others.iter().map(|&i| statuses[i]).collect::<Vec<_>>())
    .bind(others.iter().map(|&i| attempts[i]).collect::<Vec<_>>())
    .bind(others.iter().map(|&i| errors[i].clone()).collect::<Vec<_>>())
    .bind(others.iter().map(|&i| next_at[i]).collect::<Vec<_>>())
    .bind(others.iter().map(|&i| lease_until[i]).collect::<Vec<_>>())
    .bind(wake)
    .bind(span_of(done.iter().map(|&i| ids[i])).0)
    .bind(span_of(done.iter().map(|&i| ids[i])).1)
    .bind(span_of(others.iter().map(|&i| ids[i])).0)
    .bind(span_of(others.iter().map(|&i| ids[i])).1)
    .fetch_all(pool)
    .await?;
    let updated: std::collections::HashSet<Uuid> = updated.into_iter().flatten().collect();
    Ok(ids.iter().map(|id| updated.contains(id)).collect())
}

/// Analyzes each queue table (events, event logs) that changed by more rows than it had at its last
/// ANALYZE (at least 1000), and returns their names. The tables grow from nothing
/// to millions of rows in minutes, faster than autovacuum looks (once a minute);
/// a plan made while a table was small, such as a sequential scan, would stay
/// cached on every connection until the statistics change.
pub async fn refresh_statistics(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT s.relname::text FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
         WHERE s.relid IN (SELECT relid FROM pg_partition_tree('events') WHERE isleaf
                           UNION ALL SELECT relid FROM pg_partition_tree('event_logs') WHERE isleaf)
           AND s.n_mod_since_analyze > GREATEST(1000, c.reltuples)",
    )
    .fetch_all(pool)
    .await?;
    for table in &stale {
        // The names are of Herald's own partitions, from the catalog. Retention may
        // have dropped one since (undefined_table): nothing to analyze there.
        match sqlx::query(&format!("ANALYZE {table}")).execute(pool).await {
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("42P01") => {}
            r => {
                r?;
            }
        }
    }
    Ok(stale)
}

/// Fails an event log without an attempt (its trigger is gone).
pub async fn fail_unattempted(pool: &PgPool, node: Uuid, log_id: Uuid, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE event_logs SET status = 'cancelled', last_error = $3, lease_until = NULL, leased_by = NULL,
                updated_at = now()
         WHERE id = $1 AND leased_by = $2 AND status = 'processing'",
    )
    .bind(log_id)
    .bind(node)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// What a redelivery found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redelivery {
    /// Made due now, with a fresh set of attempts.
    Done,
    /// Being delivered right now: left alone.
    Busy,
    /// Its trigger was deleted (perhaps replaced by another of the same name).
    TriggerGone,
}

/// Makes an ended, scheduled or pending event log due now with a fresh set of
/// attempts, if its own trigger still exists. `None` if there is no such event log.
pub async fn redeliver(pool: &PgPool, project: &str, id: Uuid) -> Result<Option<Redelivery>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let before: Option<(String, bool)> = sqlx::query_as(&format!(
        "SELECT l.status, EXISTS (SELECT 1 FROM event_triggers t WHERE {SAME_TRIGGER})
         FROM event_logs l WHERE l.project = $1 AND l.id = $2 FOR UPDATE"
    ))
    .bind(project)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((before, trigger_exists)) = before else { return Ok(None) };
    if !trigger_exists {
        return Ok(Some(Redelivery::TriggerGone));
    }
    if before == Status::Processing.as_str() {
        return Ok(Some(Redelivery::Busy));
    }
    {
        sqlx::query(
            "UPDATE event_logs SET status = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL,
                    lease_until = NULL, leased_by = NULL, paused = false, held = false, updated_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, '')").bind(WAKE_CHANNEL).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Some(Redelivery::Done))
}

/// Cancels a scheduled or pending event log. Returns the status it had, or `None`
/// if there is no such event log; only scheduled and pending ones change.
pub async fn cancel(pool: &PgPool, project: &str, id: Uuid) -> Result<Option<Status>, sqlx::Error> {
    let before: Option<String> = sqlx::query_scalar(
        "WITH old AS (SELECT id, status FROM event_logs WHERE project = $1 AND id = $2 FOR UPDATE),
              upd AS (UPDATE event_logs l SET status = 'cancelled', last_error = 'cancelled by an operator',
                             paused = false, held = false, updated_at = now()
                      FROM old WHERE l.id = old.id AND old.status IN ('scheduled', 'pending'))
         SELECT status FROM old",
    )
    .bind(project)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(before.as_deref().and_then(Status::parse))
}

/// Makes every failed event log of a trigger created in [from, to) due again with
/// fresh attempts; with `error`, only those whose last error is that text (a
/// dead-letter group). Returns how many.
pub async fn replay_failed(
    pool: &PgPool,
    project: &str,
    trigger: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    error: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Only the logs of the trigger that has this name now: those of an earlier
    // trigger of the same name never go to this one's URL.
    let r = sqlx::query(&format!(
        "UPDATE event_logs l SET status = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL,
                paused = false, held = false, updated_at = now()
         WHERE l.project = $1 AND l.trigger_name = $2 AND l.status = 'failed'
           AND ($3::timestamptz IS NULL OR l.created_at >= $3)
           AND ($4::timestamptz IS NULL OR l.created_at < $4)
           AND ($5::text IS NULL OR COALESCE(l.last_error, '') = $5)
           AND EXISTS (SELECT 1 FROM event_triggers t WHERE {SAME_TRIGGER})"
    ))
    .bind(project)
    .bind(trigger)
    .bind(from)
    .bind(to)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() > 0 {
        sqlx::query("SELECT pg_notify($1, '')").bind(WAKE_CHANNEL).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(r.rows_affected())
}

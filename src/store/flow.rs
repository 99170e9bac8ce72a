//! Flow control and endpoint health (SPEC §10): the shares of each trigger's limits
//! that nodes hold, the per-trigger attempt counters, and the circuit breaker.

use std::time::Duration;

use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use super::events::WAKE_CHANNEL;

/// Serialises the nodes' changes to their shares: a node computes its share from
/// what the others hold, and writes it, under this transaction-level advisory lock.
const CREDITS_LOCK: i64 = 0x6865_7261_6c64_0001;

/// A node's share of one trigger's limits is ignored by the other nodes once it
/// has not been renewed for this long: its node is gone.
pub const CREDITS_TTL: Duration = Duration::from_secs(10);

/// One trigger's limits, with what the other live nodes hold of them.
#[derive(Clone, Debug, FromRow)]
pub struct Limits {
    pub trigger_id: Uuid,
    /// False when the trigger was deleted: the node forgets it.
    pub exists: bool,
    /// False while the trigger is disabled or its circuit is open: deliveries
    /// waiting on a node go back to the database, where they wait set aside.
    pub go: bool,
    pub max_in_flight: i32,
    pub rate_limit: Option<f64>,
    pub others_slots: i64,
    pub others_rate: f64,
    /// Other live nodes with deliveries of this trigger waiting for a share.
    pub others_wanting: i64,
}

/// The share a node asks to hold of one trigger.
#[derive(Clone, Debug, PartialEq)]
pub struct Share {
    pub trigger_id: Uuid,
    /// What the other nodes count as taken: never less than what is in flight.
    pub slots: i32,
    /// How many may be in flight here once this is written: new deliveries start
    /// only below it, so a share that shrinks drains down to it (not written).
    pub cap: i32,
    pub rate: f64,
    pub wants: bool,
}

/// Renews `node`'s shares in one transaction under [`CREDITS_LOCK`]: reads the
/// limits of `triggers` and what the other live nodes hold, lets `decide` choose
/// the new shares from them (it must never ask for more than the others left),
/// writes them, and drops every other share `node` held. Returns the shares written.
pub async fn renew_shares(
    pool: &PgPool,
    node: Uuid,
    triggers: &[Uuid],
    decide: impl FnOnce(&[Limits]) -> Vec<Share>,
) -> Result<Vec<Share>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Every node waits on this lock: one whose renewal stalls (a paused VM, a
    // half-open connection) must not hold it for long.
    sqlx::query("SET LOCAL lock_timeout = '3s'").execute(&mut *tx).await?;
    sqlx::query("SET LOCAL idle_in_transaction_session_timeout = '5s'").execute(&mut *tx).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CREDITS_LOCK).execute(&mut *tx).await?;
    let limits: Vec<Limits> = sqlx::query_as(
        "SELECT i.id AS trigger_id, t.id IS NOT NULL AS exists,
                COALESCE(t.enabled AND t.circuit_opened_at IS NULL, false) AS go,
                COALESCE(t.max_in_flight, 0) AS max_in_flight, t.rate_limit,
                COALESCE(sum(c.slots), 0)::bigint AS others_slots,
                COALESCE(sum(c.rate) FILTER (WHERE c.renewed_at > clock_timestamp() - make_interval(secs => $3)), 0)::float8
                    AS others_rate,
                count(c.node) FILTER (WHERE c.wants AND c.renewed_at > clock_timestamp() - make_interval(secs => $3))
                    AS others_wanting
         FROM unnest($1::uuid[]) AS i (id)
         LEFT JOIN event_triggers t ON t.id = i.id
         -- A node gone quiet may still have requests open until its trigger's
         -- timeout: its slots count that much longer than its rate.
         LEFT JOIN flow_credits c ON c.trigger_id = i.id AND c.node <> $2
             AND c.renewed_at > clock_timestamp() - make_interval(secs => $3 + COALESCE(t.timeout_ms, 0) / 1000.0)
         GROUP BY i.id, t.id, t.enabled, t.circuit_opened_at, t.max_in_flight, t.rate_limit",
    )
    .bind(triggers)
    .bind(node)
    .bind(CREDITS_TTL.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    let shares: Vec<Share> = decide(&limits).into_iter().filter(|s| s.slots > 0 || s.rate > 0.0 || s.wants).collect();
    let ids: Vec<Uuid> = shares.iter().map(|s| s.trigger_id).collect();
    let slots: Vec<i32> = shares.iter().map(|s| s.slots).collect();
    let rates: Vec<f64> = shares.iter().map(|s| s.rate).collect();
    let wants: Vec<bool> = shares.iter().map(|s| s.wants).collect();
    sqlx::query("DELETE FROM flow_credits WHERE node = $1 AND trigger_id <> ALL($2)")
        .bind(node)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO flow_credits (trigger_id, node, slots, rate, wants, renewed_at)
         SELECT id, $1, slots, rate, wants, clock_timestamp() FROM unnest($2::uuid[], $3::int[], $4::float8[], $5::bool[])
             AS s (id, slots, rate, wants)
         ORDER BY id
         ON CONFLICT (trigger_id, node) DO UPDATE
         SET slots = excluded.slots, rate = excluded.rate, wants = excluded.wants, renewed_at = excluded.renewed_at",
    )
    .bind(node)
    .bind(&ids)
    .bind(&slots)
    .bind(&rates)
    .bind(&wants)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(shares)
}

/// Drops every share `node` holds (at shutdown, once its deliveries have stopped).
pub async fn drop_shares(pool: &PgPool, node: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM flow_credits WHERE node = $1").bind(node).execute(pool).await?;
    Ok(())
}

/// Attempts of one trigger counted by one node since its last flush.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttemptCounts {
    pub attempts: i32,
    pub failures: i32,
    /// One count per bound of `DURATION_BOUNDS_MS`.
    pub durations: Vec<i32>,
    pub last_error: Option<String>,
}

/// The upper bounds, in milliseconds, of the attempt-duration histogram kept per
/// trigger; the last bucket takes everything longer.
pub const DURATION_BOUNDS_MS: [i32; 14] =
    [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, i32::MAX];

/// Adds counted attempts to the current 10-second bucket of each trigger.
pub async fn add_attempts(pool: &PgPool, counts: &[(Uuid, AttemptCounts)]) -> Result<(), sqlx::Error> {
    if counts.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<&(Uuid, AttemptCounts)> = counts.iter().collect();
    sorted.sort_by_key(|(id, _)| *id);
    let ids: Vec<Uuid> = sorted.iter().map(|(id, _)| *id).collect();
    let attempts: Vec<i32> = sorted.iter().map(|(_, c)| c.attempts).collect();
    let failures: Vec<i32> = sorted.iter().map(|(_, c)| c.failures).collect();
    // Arrays of arrays must be rectangular: one text literal per trigger instead.
    let durations: Vec<String> = sorted
        .iter()
        .map(|(_, c)| format!("{{{}}}", c.durations.iter().map(i32::to_string).collect::<Vec<_>>().join(",")))
        .collect();
    let errors: Vec<Option<&str>> = sorted.iter().map(|(_, c)| c.last_error.as_deref()).collect();
    sqlx::query(
        "INSERT INTO trigger_stats (trigger_id, bucket, attempts, failures, durations, last_error)
         SELECT id, to_timestamp(floor(extract(epoch FROM now()) / 10) * 10), a, f, d::int[], e
         FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[], $5::text[]) AS s (id, a, f, d, e)
         ON CONFLICT (trigger_id, bucket) DO UPDATE
         SET attempts = trigger_stats.attempts + excluded.attempts,
             failures = trigger_stats.failures + excluded.failures,
             durations = ARRAY(SELECT x + y FROM unnest(trigger_stats.durations, excluded.durations) AS u (x, y)),
             last_error = COALESCE(excluded.last_error, trigger_stats.last_error)",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&failures)
    .bind(&durations)
    .bind(&errors)
    .execute(pool)
    .await?;
    Ok(())
}

/// When a circuit opens (SPEC §10).
#[derive(Clone, Debug)]
pub struct BreakerRule {
    /// Fewest attempts in the window before the circuit may open; 0: never.
    pub min_attempts: i32,
    /// Share of those attempts that failed, 0 to 1.
    pub failure_ratio: f64,
    pub window: Duration,
    /// Between probes while open.
    pub probe_every: Duration,
    /// An open circuit disables its trigger after this long.
    pub disable_after: Duration,
}

impl Default for BreakerRule {
    fn default() -> Self {
        BreakerRule {
            min_attempts: 20,
            failure_ratio: 0.9,
            window: Duration::from_secs(300),
            probe_every: Duration::from_secs(60),
            disable_after: Duration::from_secs(3 * 86_400),
        }
    }
}

/// Opens the circuit of each of `triggers` whose attempts in the window (those
/// since its circuit last closed) reach the rule. Returns (project, trigger name,
/// reason) of each circuit it opened.
pub async fn open_circuits(
    pool: &PgPool,
    triggers: &[Uuid],
    rule: &BreakerRule,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "WITH recent AS (
             SELECT s.trigger_id, sum(s.attempts) AS attempts, sum(s.failures) AS failures,
                    (array_agg(s.last_error ORDER BY s.bucket DESC) FILTER (WHERE s.last_error IS NOT NULL))[1] AS last_error
             FROM event_triggers t JOIN trigger_stats s ON s.trigger_id = t.id
             WHERE t.id = ANY($1) AND t.circuit_opened_at IS NULL
               AND s.bucket >= now() - make_interval(secs => $2)
               AND s.bucket >= COALESCE(t.circuit_closed_at, '-infinity')
             GROUP BY s.trigger_id
         )
         UPDATE event_triggers t
         SET circuit_opened_at = now(), circuit_probe_at = now() + make_interval(secs => $5),
             circuit_reason = format('%s of the last %s attempts in %s failed; the last error: %s',
                 r.failures, r.attempts, $6::text, COALESCE(r.last_error, 'none recorded'))
         FROM recent r
         WHERE t.id = r.trigger_id AND t.circuit_opened_at IS NULL
           AND r.attempts >= $3 AND r.failures >= r.attempts * $4
         RETURNING t.project, t.name, t.circuit_reason",
    )
    .bind(triggers)
    .bind(rule.window.as_secs_f64())
    .bind(rule.min_attempts as i64)
    .bind(rule.failure_ratio)
    .bind(rule.probe_every.as_secs_f64())
    .bind(human(rule.window))
    .fetch_all(pool)
    .await
}

/// "5 minutes", "90 seconds".
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(60) && s >= 60 {
        format!("{} minute{}", s / 60, if s == 60 { "" } else { "s" })
    } else {
        format!("{s} second{}", if s == 1 { "" } else { "s" })
    }
}

/// Closes a trigger's circuit after a successful probe and resumes the event
/// logs that waited meanwhile. Returns false if it was not open.
pub async fn close_circuit(pool: &PgPool, trigger_id: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let closed: Option<(String, String)> = sqlx::query_as(
        "UPDATE event_triggers SET circuit_opened_at = NULL, circuit_probe_at = NULL, circuit_reason = NULL,
                circuit_closed_at = now()
         WHERE id = $1 AND circuit_opened_at IS NOT NULL
         RETURNING project, name",
    )
    .bind(trigger_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((project, name)) = closed else { return Ok(false) };
    let resumed = sqlx::query(
        "UPDATE event_logs SET paused = false, held = false, updated_at = now()
         WHERE paused AND NOT key_wait AND project = $1 AND trigger_name = $2 AND trigger_id = $3",
    )
    .bind(&project)
    .bind(&name)
    .bind(trigger_id)
    .execute(&mut *tx)
    .await?;
    if resumed.rows_affected() > 0 {
        sqlx::query("SELECT pg_notify($1, '')").bind(WAKE_CHANNEL).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Disables the triggers whose circuit has been open for `after`, saying why.
/// Returns (project, trigger name) of each.
pub async fn disable_long_open(pool: &PgPool, after: Duration) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE event_triggers
         SET enabled = false, updated_at = now(),
             disabled_reason = format('Herald disabled it at %s: its circuit had been open since %s (%s)',
                 to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI \"UTC\"'),
                 to_char(circuit_opened_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI \"UTC\"'), circuit_reason)
         WHERE enabled AND circuit_opened_at < now() - make_interval(secs => $1)
         RETURNING project, name",
    )
    .bind(after.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Every trigger with whether its circuit is open: (project, name, open).
pub async fn circuits(pool: &PgPool) -> Result<Vec<(String, String, bool)>, sqlx::Error> {
    sqlx::query_as("SELECT project, name, circuit_opened_at IS NOT NULL FROM event_triggers ORDER BY project, name")
        .fetch_all(pool)
        .await
}

/// Attempts of one trigger over a span, added up from its 10-second buckets.
#[derive(Clone, Debug, FromRow)]
pub struct Recent {
    pub name: String,
    pub attempts: i64,
    pub failures: i64,
    pub durations: Vec<i64>,
}

/// The attempts of each of a project's triggers over the last `span`.
pub async fn recent(pool: &PgPool, project: &str, span: Duration) -> Result<Vec<Recent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.name, COALESCE(sum(s.attempts), 0)::bigint AS attempts, COALESCE(sum(s.failures), 0)::bigint AS failures,
                COALESCE((SELECT array_agg(n ORDER BY i) FROM (
                    SELECT i, sum(d)::bigint AS n
                    FROM trigger_stats s2, unnest(s2.durations) WITH ORDINALITY AS u (d, i)
                    WHERE s2.trigger_id = t.id AND s2.bucket >= now() - make_interval(secs => $2)
                    GROUP BY i) h), '{}') AS durations
         FROM event_triggers t
         LEFT JOIN trigger_stats s ON s.trigger_id = t.id AND s.bucket >= now() - make_interval(secs => $2)
         WHERE t.project = $1
         GROUP BY t.id, t.name ORDER BY t.name",
    )
    .bind(project)
    .bind(span.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Removes attempt counters older than `keep`, and shares of nodes long gone.
pub async fn prune(pool: &PgPool, keep: Duration) -> Result<u64, sqlx::Error> {
    let stats = sqlx::query("DELETE FROM trigger_stats WHERE bucket < now() - make_interval(secs => $1)")
        .bind(keep.as_secs_f64())
        .execute(pool)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM flow_credits WHERE renewed_at < now() - interval '1 hour'").execute(pool).await?;
    Ok(stats)
}

//! Issue 15 (history for months): retention per project, never removing an event
//! log that has not ended; dead letters grouped and replayed by group.
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{wait_for, Herald, Receiver, Reply};
use herald::model::Status;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// A time-ordered id of the given moment, as Herald makes them.
fn id_at(t: DateTime<Utc>) -> Uuid {
    Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, t.timestamp() as u64, t.timestamp_subsec_nanos()))
}

/// Stores an event created `age` ago in `project`, with one event log per given
/// status (and one attempt each), as Herald would have then. Returns the event id
/// and the log ids.
async fn old_event(pool: &PgPool, project: &str, age: chrono::Duration, statuses: &[&str]) -> (Uuid, Vec<Uuid>) {
    let at = Utc::now() - age;
    let event = id_at(at);
    // The event, its logs and their attempts in one transaction: the node's own
    // retention pass may run meanwhile, and must never see one without the others.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO events (id, project, type, data, deliver_at, created_at) VALUES ($1, $2, 't', '{}', $3, $3)")
        .bind(event)
        .bind(project)
        .bind(at)
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut logs = Vec::new();
    for (i, status) in statuses.iter().enumerate() {
        let log = id_at(at);
        // A pending log waits for a retry tomorrow: one due now would be claimed
        // by the node's dispatcher, end (its trigger does not exist) and become
        // history that the test's second pass removes.
        let next = match *status {
            "scheduled" => Utc::now() + chrono::Duration::days(365),
            "pending" => Utc::now() + chrono::Duration::days(1),
            _ => at,
        };
        // A processing log holds a lease, as Herald's always do.
        let lease = (*status == "processing").then(|| Utc::now() + chrono::Duration::hours(1));
        sqlx::query(
            "INSERT INTO event_logs (id, event_id, project, trigger_name, event_type, status, attempts, next_attempt_at,
                                     created_at, lease_until)
             VALUES ($1, $2, $3, $4, 't', $5, 1, $6, $7, $8)",
        )
        .bind(log)
        .bind(event)
        .bind(project)
        .bind(format!("t{i}"))
        .bind(status)
        .bind(next)
        .bind(at)
        .bind(lease)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO invocation_logs (id, event_log_id, attempt, started_at, duration_ms, request_headers, request_body)
             VALUES ($1, $2, 1, $3, 5, '{}', '{}')",
        )
        .bind(Uuid::now_v7())
        .bind(log)
        .bind(at)
        .execute(&mut *tx)
        .await
        .unwrap();
        logs.push(log);
    }
    tx.commit().await.unwrap();
    (event, logs)
}

async fn exists(pool: &PgPool, table: &str, column: &str, id: Uuid) -> bool {
    sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE {column} = $1)"))
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// SPEC §9: ended event logs older than the retention go with their attempts and
/// the events they leave without logs; an event log that has not ended stays,
/// whatever its age (an event scheduled for next year); each project keeps its own.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn retention_removes_old_ended_history_and_never_what_has_not_ended(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    h.engine.create_project("archive").await.unwrap();
    assert_eq!(h.engine.retention_days("default").await.unwrap(), 30, "the default");
    h.engine.set_retention_days("archive", 60).await.unwrap();
    let days = chrono::Duration::days;

    let (gone_event, gone_logs) = old_event(&pool, "default", days(40), &["processed", "failed", "cancelled"]).await;
    let (scheduled_event, scheduled_logs) = old_event(&pool, "default", days(400), &["scheduled"]).await;
    let (mixed_event, mixed_logs) = old_event(&pool, "default", days(40), &["processed", "pending", "processing"]).await;
    let (young_event, _) = old_event(&pool, "default", days(5), &["processed"]).await;
    let (lone_event, _) = old_event(&pool, "default", days(40), &[]).await;
    let (kept_elsewhere, _) = old_event(&pool, "archive", days(40), &["processed"]).await;

    h.engine.apply_retention().await.unwrap();

    // The node's own pass, which runs at start, may hold some of these (its
    // batches skip each other's rows) and commit a moment later.
    wait_for(Duration::from_secs(10), || async {
        for log in &gone_logs {
            if exists(&pool, "event_logs", "id", *log).await || exists(&pool, "invocation_logs", "event_log_id", *log).await {
                return None;
            }
        }
        let events_gone = !exists(&pool, "events", "id", gone_event).await && !exists(&pool, "events", "id", lone_event).await;
        events_gone.then_some(())
    })
    .await;
    assert!(exists(&pool, "event_logs", "id", scheduled_logs[0]).await, "a scheduled log was removed");
    assert!(exists(&pool, "invocation_logs", "event_log_id", scheduled_logs[0]).await);
    assert!(exists(&pool, "events", "id", scheduled_event).await, "the event of a scheduled log was removed");
    assert!(!exists(&pool, "event_logs", "id", mixed_logs[0]).await);
    assert!(exists(&pool, "event_logs", "id", mixed_logs[1]).await, "a pending log was removed");
    assert!(exists(&pool, "event_logs", "id", mixed_logs[2]).await, "a processing log was removed");
    assert!(exists(&pool, "events", "id", mixed_event).await, "an event with live logs was removed");
    assert!(exists(&pool, "events", "id", young_event).await, "young history was removed");
    assert!(exists(&pool, "events", "id", kept_elsewhere).await, "another project's longer retention was ignored");

    // A second pass finds nothing more.
    let again = h.engine.apply_retention().await.unwrap();
    assert!(again.is_empty(), "{again:?}");
}

/// The retention setting through the management API, with errors that name it.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn retention_is_set_through_the_api(pool: PgPool) {
    let h = Herald::start(pool).await;
    let settings = "/v1/api/default/eventing/settings";
    let (status, reply) = h.send(h.http.get(format!("{}{settings}", h.base))).await;
    assert_eq!((status, reply), (200, json!({"retentionDays": 30})));
    for bad in [json!({"retentionDays": 0}), json!({"retentionDays": 3651}), json!({"retentionDays": "7"}), json!({})] {
        let (status, reply) = h.send(h.http.put(format!("{}{settings}", h.base)).json(&bad)).await;
        assert_eq!(status, 400, "{bad}: {reply}");
        assert!(reply["error"].as_str().unwrap().contains("retentionDays"), "{reply}");
    }
    let (status, reply) = h.send(h.http.put(format!("{}{settings}", h.base)).json(&json!({"retentionDays": 7}))).await;
    assert_eq!((status, reply), (200, json!({"retentionDays": 7})));
    assert_eq!(h.engine.retention_days("default").await.unwrap(), 7);
}

/// SPEC §9: failed event logs grouped by trigger and last error; one group is
/// replayed in bulk through the trigger's replay endpoint, the others stay.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn dead_letters_are_grouped_and_replayed_by_group(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    // Three failures with one error, two with another, all with no retries.
    rx.script([Reply::status(500), Reply::status(500), Reply::status(500), Reply::status(404), Reply::status(404)]);
    h.trigger("hook", "t", &rx.url("/hook"), json!({"retries": 0})).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, reply) = h.queue(json!({"type": "t", "data": i})).await;
        let id = reply["eventId"].as_str().unwrap().to_string();
        // One at a time, so the scripted answers go in order.
        assert_eq!(h.settled(&id).await, vec![Status::Failed]);
        ids.push(id);
    }
    let (status, reply) = h.send(h.http.get(format!("{}/v1/api/default/eventing/dead-letters", h.base))).await;
    assert_eq!(status, 200, "{reply}");
    let groups: Vec<(String, String, i64)> = reply["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["trigger"].as_str().unwrap().into(), g["error"].as_str().unwrap().into(), g["count"].as_i64().unwrap()))
        .collect();
    assert_eq!(groups, [
        ("hook".into(), "HTTP 500 Internal Server Error".into(), 3),
        ("hook".into(), "HTTP 404 Not Found".into(), 2),
    ]);
    let (status, reply) =
        h.post("/v1/api/default/eventing/triggers/hook/replay", json!({"error": "HTTP 404 Not Found"})).await;
    assert_eq!((status, reply["replayed"].as_i64()), (200, Some(2)), "{reply}");
    for id in &ids[3..] {
        assert_eq!(h.settled(id).await, vec![Status::Processed]);
    }
    for id in &ids[..3] {
        assert_eq!(h.statuses(id).await, vec![Status::Failed]);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 7);
}

/// Counts of the event logs of `project` per status created from `since` on, by
/// scanning them: what the kept counts must agree with.
async fn scanned_counts(pool: &PgPool, project: &str, since: DateTime<Utc>) -> Vec<(Status, i64)> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM event_logs WHERE project = $1 AND created_at >= $2 GROUP BY status")
            .bind(project)
            .bind(since)
            .fetch_all(pool)
            .await
            .unwrap();
    Status::ALL
        .into_iter()
        .map(|s| (s, rows.iter().find(|r| r.0 == s.as_str()).map(|r| r.1).unwrap_or(0)))
        .collect()
}

/// SPEC §9: the Event Logs page's counts and chart come from counts kept as logs
/// end (not from a scan), and they agree with the history after deliveries,
/// failures, a cancel, a redelivery and a replay moved logs in and out of the
/// ended statuses.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn kept_counts_agree_with_the_history(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let ok = Receiver::start().await;
    let bad = Receiver::start().await;
    bad.always(Reply::status(500));
    h.trigger("ok", "a", &ok.url("/ok"), json!({})).await;
    h.trigger("bad", "b", &bad.url("/bad"), json!({"retries": 0})).await;
    let mut last = String::new();
    for i in 0..6 {
        let (_, q) = h.queue(json!({"type": "a", "data": i})).await;
        last = q["eventId"].as_str().unwrap().to_string();
    }
    for i in 0..4 {
        let (_, q) = h.queue(json!({"type": "b", "data": i})).await;
        assert_eq!(h.settled(q["eventId"].as_str().unwrap()).await, vec![Status::Failed]);
    }
    assert_eq!(h.settled(&last).await, vec![Status::Processed]);
    let (_, q) = h.queue(json!({"type": "a", "delay": 3600})).await;
    let cancelled = h.logs(q["eventId"].as_str().unwrap()).await[0].id;
    h.queue(json!({"type": "a", "delay": 3600})).await;
    let (s, d) = h.post(&format!("/v1/api/default/eventing/logs/{cancelled}/cancel"), json!({})).await;
    assert_eq!(s, 200, "{d}");
    // A processed log delivered again ends processed again; the failed ones,
    // replayed to a receiver that now answers, end processed.
    let redelivered = h.logs(&last).await[0].id;
    let (s, d) = h.post(&format!("/v1/api/default/eventing/logs/{redelivered}/redeliver"), json!({})).await;
    assert_eq!(s, 200, "{d}");
    bad.always(Reply::status(200));
    let (s, d) = h.post("/v1/api/default/eventing/triggers/bad/replay", json!({})).await;
    assert_eq!((s, d["replayed"].as_i64()), (200, Some(4)), "{d}");
    wait_for(Duration::from_secs(10), || async {
        let counts = scanned_counts(&pool, "default", Utc::now() - chrono::Duration::hours(1)).await;
        (counts.iter().find(|c| c.0 == Status::Processed).unwrap().1 == 10
            && counts.iter().find(|c| c.0 == Status::Processing).unwrap().1 == 0)
            .then_some(())
    })
    .await;

    for window in [Duration::from_secs(3600), Duration::from_secs(7 * 86400)] {
        let summary = h.engine.summary("default", window).await.unwrap();
        // The counts cover what the bars cover: from the start of the first bar.
        let since = summary.buckets[0].0;
        assert!(since <= Utc::now() - chrono::Duration::from_std(window).unwrap() + chrono::Duration::from_std(window / 24).unwrap());
        let expected = scanned_counts(&pool, "default", since).await;
        assert_eq!(summary.counts, expected, "window {window:?}");
        assert_eq!(
            expected.iter().map(|c| (c.0, c.1)).filter(|c| c.1 > 0).collect::<Vec<_>>(),
            [(Status::Scheduled, 1), (Status::Processed, 10), (Status::Cancelled, 1)]
        );
        let processed: i64 = summary.buckets.iter().map(|b| b.1).sum();
        let failed: i64 = summary.buckets.iter().map(|b| b.2).sum();
        assert_eq!((processed, failed), (10, 0), "window {window:?}: {:?}", summary.buckets);
        assert!(summary.buckets.len() >= 24 && summary.buckets.len() <= 30, "{}", summary.buckets.len());
    }
    // The counts the trigger kept are the counts a scan makes, bucket by bucket.
    let kept: Vec<(String, DateTime<Utc>, String, i64)> =
        sqlx::query_as("SELECT span, bucket, status, n FROM event_log_counts WHERE n <> 0 ORDER BY 1, 2, 3")
            .fetch_all(&pool)
            .await
            .unwrap();
    let scanned: Vec<(String, DateTime<Utc>, String, i64)> = sqlx::query_as(
        "SELECT s.span, date_bin(s.step, created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), status, count(*)
         FROM event_logs CROSS JOIN (VALUES ('hour', interval '1 hour'), ('minute', interval '1 minute')) AS s (span, step)
         WHERE status IN ('processed', 'failed', 'cancelled') GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(kept, scanned);
}

/// Stores `n` ended or live event logs spread over the last `hours`, across five
/// triggers and three types, as Herald would have (each event with its log).
async fn spread_history(pool: &PgPool, n: i64, hours: i64) {
    // Pairs of logs share their creation time (ids break the tie), and one
    // pending log in two is set aside (paused), as a disabled trigger's are.
    sqlx::query(
        "WITH g AS (
             SELECT i, at, herald_uuid_at(at) AS event_id, 'type' || (i % 3) AS type
             FROM (SELECT i, now() - make_interval(secs => $2 * 3600.0 * (i / 2) / $1) AS at
                   FROM generate_series(1, $1) i) r
         ), e AS (
             INSERT INTO events (id, project, type, data, deliver_at, created_at)
             SELECT event_id, 'default', type, '{}', at, at FROM g
         )
         INSERT INTO event_logs (id, event_id, project, trigger_name, event_type, status, attempts, next_attempt_at,
                                 created_at, lease_until, last_error, paused)
         SELECT herald_uuid_at(g.at), g.event_id, 'default', 'trigger' || (g.i % 5), g.type,
                (ARRAY['processed', 'processed', 'processed', 'failed', 'cancelled', 'pending', 'scheduled', 'processing'])[1 + g.i % 8],
                1, g.at, g.at,
                CASE WHEN g.i % 8 = 7 THEN now() + interval '1 hour' END,
                CASE WHEN g.i % 8 = 3 THEN 'HTTP 500' END,
                g.i % 16 = 5
         FROM g",
    )
    .bind(n)
    .bind(hours as f64)
    .execute(pool)
    .await
    .unwrap();
}

fn filter(f: impl FnOnce(&mut herald::store::history::LogFilter)) -> herald::store::history::LogFilter {
    let mut filter = herald::store::history::LogFilter { limit: 7, ..Default::default() };
    f(&mut filter);
    filter
}

/// Every page of a filter, following the keyset cursor as the API does.
async fn every_page(pool: &PgPool, mut f: herald::store::history::LogFilter) -> Vec<Uuid> {
    let mut ids = Vec::new();
    loop {
        let page = herald::store::history::list_logs(pool, "default", &f).await.unwrap();
        ids.extend(page.iter().map(|l| l.id));
        match page.last() {
            Some(last) if page.len() as i64 == f.limit => f.before = Some((last.created_at, last.id)),
            _ => return ids,
        }
    }
}

/// Every filter of the history list, alone and combined, pages through exactly
/// the event logs a plain scan finds, newest first, whichever index serves it.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn every_list_filter_pages_through_what_a_scan_finds(pool: PgPool) {
    spread_history(&pool, 300, 48).await;
    let from = Utc::now() - chrono::Duration::hours(30);
    let to = Utc::now() - chrono::Duration::hours(6);
    let event: Uuid = sqlx::query_scalar("SELECT event_id FROM event_logs ORDER BY created_at LIMIT 1 OFFSET 100")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut filters = vec![("no filter", filter(|_| {}))];
    for s in Status::ALL {
        filters.push(("status", filter(|f| f.status = Some(s))));
        filters.push(("status and trigger", filter(|f| (f.status, f.trigger) = (Some(s), Some("trigger1".into())))));
        filters.push(("status and time", filter(|f| (f.status, f.from, f.to) = (Some(s), Some(from), Some(to)))));
    }
    filters.extend([
        ("trigger", filter(|f| f.trigger = Some("trigger2".into()))),
        ("no such trigger", filter(|f| f.trigger = Some("nothing".into()))),
        ("trigger and time", filter(|f| (f.trigger, f.from, f.to) = (Some("trigger3".into()), Some(from), Some(to)))),
        ("type", filter(|f| f.event_type = Some("type1".into()))),
        ("type and status", filter(|f| (f.event_type, f.status) = (Some("type2".into()), Some(Status::Failed)))),
        ("type and trigger", filter(|f| (f.event_type, f.trigger) = (Some("type0".into()), Some("trigger0".into())))),
        ("type and time", filter(|f| (f.event_type, f.from, f.to) = (Some("type0".into()), Some(from), Some(to)))),
        ("event", filter(|f| f.event_id = Some(event))),
        ("time", filter(|f| (f.from, f.to) = (Some(from), Some(to)))),
    ]);
    for (name, f) in filters {
        let expected: Vec<Uuid> = sqlx::query_scalar(
            "SELECT l.id FROM event_logs l JOIN events e ON e.id = l.event_id
             WHERE ($1::text IS NULL OR l.status = $1) AND ($2::text IS NULL OR l.trigger_name = $2)
               AND ($3::text IS NULL OR e.type = $3) AND ($4::uuid IS NULL OR l.event_id = $4)
               AND ($5::timestamptz IS NULL OR l.created_at >= $5) AND ($6::timestamptz IS NULL OR l.created_at < $6)
             ORDER BY l.created_at DESC, l.id DESC",
        )
        .bind(f.status.map(Status::as_str))
        .bind(&f.trigger)
        .bind(&f.event_type)
        .bind(f.event_id)
        .bind(f.from)
        .bind(f.to)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(!expected.is_empty() || name == "no such trigger", "{name}: the case finds nothing");
        assert_eq!(every_page(&pool, f.clone()).await, expected, "{name}: {f:?}");
    }
}

/// The event log partitions (of a range or the default one) that a list reads.
async fn partitions_read(pool: &PgPool, f: &herald::store::history::LogFilter) -> (Vec<Uuid>, Vec<String>) {
    // A session of its own: the statistics a session has not yet reported
    // include its earlier transactions'.
    let mut conn: sqlx::PgConnection = sqlx::Connection::connect_with(&*pool.connect_options()).await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
    let page: Vec<Uuid> =
        herald::store::history::list_logs_on(&mut tx, "default", f).await.unwrap().iter().map(|l| l.id).collect();
    let read: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_stat_xact_user_tables
         WHERE (relname LIKE 'event\\_logs\\_p%' OR relname = 'event_logs_default') AND idx_scan + seq_scan > 0
         ORDER BY relname",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    (page, read)
}

/// The history is in daily partitions, and a list reads only those its page
/// needs: the newest ones for a page of recent logs, further back for a sparse
/// filter or an older position, everything (exactly) for a filter that finds
/// little. Whatever it reads, it pages through what a scan finds, including a log
/// whose creation time is after its id's (the clock stepped back) at a partition's
/// edge, and old live logs in the default partition.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_list_reads_only_the_partitions_its_page_needs(pool: PgPool) {
    let day = chrono::Duration::days(1);
    herald::store::partitions::create_range(&pool, Utc::now() - day * 12, Utc::now() + day, day).await.unwrap();
    // Every 10 minutes for 10 days a log: most of a busy trigger, one an hour of
    // another and one a day of a rare one (the newest of each 50 minutes ago), the
    // oldest rare ones pending; a few of an old trigger 9 days ago.
    sqlx::query(
        "WITH g AS (
             SELECT i, now() - make_interval(mins => 10 * i) AS at FROM generate_series(1, 1440) i
         ), t AS (
             SELECT i, at, herald_uuid_at(at) AS event_id,
                    CASE WHEN i % 144 = 5 THEN 'rare' WHEN i % 6 = 5 THEN 'hourly' WHEN i BETWEEN 1300 AND 1302 THEN 'old'
                         ELSE 'busy' END AS name,
                    CASE WHEN i % 144 = 5 AND i > 1000 THEN 'pending' WHEN i % 10 = 3 THEN 'failed' ELSE 'processed' END AS status
             FROM g
         ), e AS (
             INSERT INTO events (id, project, type, data, deliver_at, created_at)
             SELECT event_id, 'default', name || '.type', '{}', at, at FROM t
         )
         INSERT INTO event_logs (id, event_id, project, trigger_name, event_type, status, attempts, next_attempt_at, created_at)
         SELECT herald_uuid_at(at), event_id, 'default', name, name || '.type', status, 1, at + interval '1 year', at FROM t",
    )
    .execute(&pool)
    .await
    .unwrap();
    let edge: DateTime<Utc> = sqlx::query_scalar("SELECT hi_at FROM history_partitions ORDER BY hi_at LIMIT 1 OFFSET 5")
        .fetch_one(&pool)
        .await
        .unwrap();
    let middle = Utc::now() - day * 5;
    let minutes = chrono::Duration::minutes;
    for (stored, created, name) in [
        // Stored a minute before a partition's end, created (its transaction's
        // start, by a clock stepped back) five minutes after it.
        (edge - minutes(1), edge + minutes(5), "busy"),
        // Created and stored in the next partition, 2 minutes into it: older than
        // the log above, but in the partition a look from that edge reads.
        (edge + minutes(2), edge + minutes(2), "busy"),
        // Stored half an hour after its transaction began, a little before `middle`.
        (middle + minutes(30), middle - minutes(5), "busy"),
        // Pending for 13 days: older than every partition, in the default one.
        (Utc::now() - day * 13, Utc::now() - day * 13, "rare"),
    ] {
        sqlx::query(
            "WITH e AS (
                 INSERT INTO events (id, project, type, data, deliver_at, created_at)
                 VALUES ($1, 'default', $3 || '.type', '{}', $4, $4) RETURNING id, type
             )
             INSERT INTO event_logs (id, event_id, project, trigger_name, event_type, status, next_attempt_at, created_at)
             SELECT $2, e.id, 'default', $3, e.type, 'pending', $4 + interval '1 year', $4 FROM e",
        )
        .bind(id_at(stored))
        .bind(id_at(stored))
        .bind(name)
        .bind(created)
        .execute(&pool)
        .await
        .unwrap();
    }
    let in_default: i64 = sqlx::query_scalar("SELECT count(*) FROM event_logs_default").fetch_one(&pool).await.unwrap();
    assert_eq!(in_default, 1);
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();

    let ordered_since: i64 =
        sqlx::query_scalar("SELECT count(*) FROM history_ordered_since").fetch_one(&pool).await.unwrap();
    assert_eq!(ordered_since, 0, "a database made by this build has only time-ordered ids");

    // Pages through exactly what a scan finds.
    let mut filters = Vec::new();
    for limit in [7, 60] {
        filters.extend([
            filter(|f| f.limit = limit),
            filter(|f| (f.trigger, f.limit) = (Some("busy".into()), limit)),
            filter(|f| (f.trigger, f.limit) = (Some("rare".into()), limit)),
            filter(|f| (f.trigger, f.limit) = (Some("old".into()), limit)),
            filter(|f| (f.trigger, f.limit) = (Some("nothing".into()), limit)),
            filter(|f| (f.status, f.limit) = (Some(Status::Pending), limit)),
            filter(|f| (f.event_type, f.status, f.limit) = (Some("busy.type".into()), Some(Status::Failed), limit)),
            filter(|f| (f.to, f.limit) = (Some(middle), limit)),
            filter(|f| (f.from, f.to, f.limit) = (Some(middle - day), Some(middle), limit)),
            filter(|f| (f.trigger, f.from, f.limit) = (Some("rare".into()), Some(middle), limit)),
            filter(|f| (f.from, f.limit) = (Some(edge + minutes(2)), limit)),
            filter(|f| (f.trigger, f.limit) = (Some("hourly".into()), limit)),
        ]);
    }
    // A page that a look from the edge fills, ending on the log 2 minutes into the
    // partition: the log created 5 minutes into it, stored before it, belongs on
    // that page.
    let to = edge + minutes(65);
    let seen: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_logs WHERE trigger_name = 'busy' AND created_at < $1 AND id >= herald_uuid_floor($2)",
    )
    .bind(to)
    .bind(edge)
    .fetch_one(&pool)
    .await
    .unwrap();
    filters.push(filter(|f| (f.trigger, f.to, f.limit) = (Some("busy".into()), Some(to), seen)));
    for f in filters {
        let expected: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM event_logs
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR trigger_name = $2)
               AND ($3::text IS NULL OR event_type = $3)
               AND ($4::timestamptz IS NULL OR created_at >= $4) AND ($5::timestamptz IS NULL OR created_at < $5)
             ORDER BY created_at DESC, id DESC",
        )
        .bind(f.status.map(Status::as_str))
        .bind(&f.trigger)
        .bind(&f.event_type)
        .bind(f.from)
        .bind(f.to)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(every_page(&pool, f.clone()).await, expected, "{f:?}");
    }

    // What each first page reads.
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM history_partitions").fetch_one(&pool).await.unwrap();
    let (page, read) = partitions_read(&pool, &filter(|f| f.trigger = Some("busy".into()))).await;
    assert_eq!(page.len(), 7);
    assert!(read.len() <= 3, "a page of the last hour read {read:?}");
    let (page, read) = partitions_read(&pool, &filter(|f| (f.to, f.limit) = (Some(middle), 60))).await;
    assert_eq!(page.len(), 60);
    assert!(read.len() <= 3, "a page of ten hours five days ago read {read:?}");
    let (page, read) = partitions_read(&pool, &filter(|f| f.trigger = Some("hourly".into()))).await;
    assert_eq!(page.len(), 7);
    assert!(read.len() <= 3, "a page of a log an hour read {read:?}");
    let (page, read) = partitions_read(&pool, &filter(|f| f.trigger = Some("nothing".into()))).await;
    assert!(page.is_empty());
    assert_eq!(read.len(), all as usize + 1, "finding nothing reads every partition and the default one: {read:?}");
}

/// The plan of each shape of list filter on a history of realistic proportions
/// starts from the index made for it, never from a scan of the whole history.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn each_list_filter_is_served_by_its_index(pool: PgPool) {
    // In daily partitions, as a node that has run for the week keeps it.
    let day = chrono::Duration::days(1);
    herald::store::partitions::create_range(&pool, Utc::now() - day * 8, Utc::now() + day, day).await.unwrap();
    spread_history(&pool, 40_000, 24 * 7).await;
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    let cases = [
        (filter(|_| {}), "event_logs_history"),
        (filter(|f| f.status = Some(Status::Failed)), "event_logs_ended"),
        (filter(|f| f.status = Some(Status::Pending)), "event_logs_waiting"),
        (filter(|f| f.status = Some(Status::Pending)), "event_logs_due"),
        (filter(|f| f.status = Some(Status::Scheduled)), "event_logs_waiting"),
        (filter(|f| (f.trigger, f.status) = (Some("trigger1".into()), Some(Status::Scheduled))), "event_logs_waiting_trigger"),
        (filter(|f| (f.event_type, f.status) = (Some("type1".into()), Some(Status::Pending))), "event_logs_waiting_type"),
        (filter(|f| f.status = Some(Status::Processing)), "event_logs_leased"),
        (filter(|f| f.trigger = Some("trigger1".into())), "event_logs_ended_trigger"),
        (filter(|f| (f.trigger, f.status) = (Some("trigger1".into()), Some(Status::Cancelled))), "event_logs_ended_trigger"),
        (filter(|f| f.event_type = Some("type1".into())), "event_logs_ended_type"),
        (filter(|f| (f.event_type, f.status) = (Some("type1".into()), Some(Status::Cancelled))), "event_logs_ended_type"),
        (filter(|f| f.event_id = Some(Uuid::now_v7())), "event_logs_event"),
    ];
    for (f, index) in cases {
        let mut q = sqlx::QueryBuilder::new("EXPLAIN ");
        herald::store::history::push_list(&mut q, "default", &f, Default::default());
        let plan: Vec<String> = q.build_query_scalar().fetch_all(&pool).await.unwrap();
        let plan = plan.join("\n");
        // The index of a partition is named after its partition.
        let leaves: Vec<String> =
            sqlx::query_scalar("SELECT relid::regclass::text FROM pg_partition_tree($1::regclass) WHERE isleaf")
                .bind(index)
                .fetch_all(&pool)
                .await
                .unwrap();
        assert!(leaves.len() > 7, "{index} has {} partitions", leaves.len());
        assert!(leaves.iter().any(|l| plan.contains(&format!(" {l} "))), "{f:?} should use {index}:\n{plan}");
        // Only a partition of a few pages may be read whole: the one the history
        // starts in holds, depending on the hour the test runs, from nothing to a
        // day's logs, and for a handful of rows the planner rightly prefers a scan
        // to an index. A day's partition here costs about 340 to scan.
        for line in plan.lines().filter(|l| l.contains("Seq Scan on event_logs")) {
            assert!(total_cost(line) < 100.0, "{f:?} scans the history:\n{plan}");
        }
    }
    // The bound above tells a day from a few pages: reading the fullest partition
    // whole costs more than it.
    let mut conn = pool.acquire().await.unwrap();
    for off in ["SET enable_indexscan = off", "SET enable_bitmapscan = off"] {
        sqlx::query(off).execute(&mut *conn).await.unwrap();
    }
    let fullest: String = sqlx::query_scalar(
        "SELECT c.oid::regclass::text FROM pg_partition_tree('event_logs') t JOIN pg_class c ON c.oid = t.relid
         WHERE t.isleaf ORDER BY c.reltuples DESC LIMIT 1",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let scan: String = sqlx::query_scalar(&format!("EXPLAIN SELECT * FROM {fullest} WHERE status = 'pending'"))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(total_cost(&scan) > 300.0, "{fullest}: {scan}");
}

/// The total cost of a plan line, `… (cost=0.00..13.78 rows=…`.
fn total_cost(line: &str) -> f64 {
    line.split("(cost=")
        .nth(1)
        .and_then(|c| c.split("..").nth(1))
        .and_then(|c| c.split(' ').next())
        .and_then(|total| total.parse().ok())
        .unwrap_or_else(|| panic!("no cost in {line}"))
}

/// The kept counts as a scan of the history makes them: per hour, and per minute
/// for the last two days (older minutes are not kept).
async fn kept_and_scanned(pool: &PgPool) -> (Vec<(String, DateTime<Utc>, String, i64)>, Vec<(String, DateTime<Utc>, String, i64)>) {
    let kept = sqlx::query_as(
        "SELECT span, bucket, status, n FROM event_log_counts
         WHERE n <> 0 AND (span = 'hour' OR bucket >= now() - interval '2 days') ORDER BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let scanned = sqlx::query_as(
        "SELECT * FROM (
             SELECT s.span, date_bin(s.step, created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS b, status, count(*)
             FROM event_logs CROSS JOIN (VALUES ('hour', interval '1 hour'), ('minute', interval '1 minute')) AS s (span, step)
             WHERE status IN ('processed', 'failed', 'cancelled')
             GROUP BY 1, 2, 3) c
         WHERE span = 'hour' OR b >= now() - interval '2 days' ORDER BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    (kept, scanned)
}

/// Retention takes away the counts of the logs it removes, so the 30-day chart
/// never shows history that is gone; logs that end after a long wait are counted
/// in the bucket of their creation.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn retention_takes_the_counts_of_what_it_removes(pool: PgPool) {
    // Logs created over the last 12 days, stored live and then ended by updates,
    // as deliveries end them: the trigger counts them.
    spread_history(&pool, 600, 24 * 12).await;
    for step in [
        "UPDATE event_logs SET status = 'pending', lease_until = NULL, last_error = NULL",
        // The loaded logs ended without being counted; these counts start from nothing.
        "DELETE FROM event_log_counts",
        // By the time step between logs (1728 s): the steps are whole multiples of
        // 4 s, so a status by the second made every log alike, and one run in
        // four had none ended.
        "UPDATE event_logs SET status = (ARRAY['processed', 'failed', 'cancelled', 'pending'])[1 + round(extract(epoch FROM now() - created_at) / 1728)::bigint % 4]",
    ] {
        sqlx::query(step).execute(&pool).await.unwrap();
    }
    let (kept, scanned) = kept_and_scanned(&pool).await;
    assert!(!kept.is_empty());
    assert_eq!(kept, scanned, "counts kept as logs end");

    herald::store::projects::insert_if_missing(&pool, "default", "a-jwt-secret", "a-signing-secret").await.unwrap();
    // Batches leave a partition's width (a day) to the partitions: 4 days keep 5.
    assert!(herald::store::retention::set_retention_days(&pool, "default", 4).await.unwrap());
    let removed = herald::store::retention::apply(&pool, 1000).await.unwrap();
    // The logs span 6 days: those of the oldest day, three in four of them ended.
    assert!(removed.event_logs > 50, "{removed:?}");
    let (kept, scanned) = kept_and_scanned(&pool).await;
    assert_eq!(kept, scanned, "counts after retention");
    let summary = herald::store::history::summary(&pool, "default", Duration::from_secs(30 * 86400)).await.unwrap();
    let expected = scanned_counts(&pool, "default", Utc::now() - chrono::Duration::days(30)).await;
    assert_eq!(summary.counts, expected);
    let oldest: i64 =
        sqlx::query_scalar(
            "SELECT count(*) FROM event_log_counts WHERE bucket + interval '1 hour' < now() - interval '5 days 1 minute'",
        )
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(oldest, 0, "no count of removed history is left");
}

/// The migration that adds the kept counts and the type column keeps every row
/// stored before it: each event log gets its event's type, and the counts of the
/// history already there are made from it.
#[sqlx::test(migrations = false)]
async fn the_history_migration_keeps_every_row_and_counts_it(pool: PgPool) {
    let all: Vec<_> = herald::store::MIGRATOR.iter().cloned().collect();
    let at = all.iter().position(|m| m.description.contains("history reads")).expect("the history migration");
    let before = sqlx::migrate::Migrator { migrations: std::borrow::Cow::Owned(all[..at].to_vec()), ..sqlx::migrate::Migrator::DEFAULT };
    // One connection: the upgrade refuses while another session uses the history.
    let mut conn = pool.acquire().await.unwrap();
    before.run(&mut *conn).await.unwrap();
    sqlx::query(
        "WITH e AS (
             INSERT INTO events (id, project, type, data, deliver_at, created_at)
             SELECT gen_random_uuid(), 'default', 'type' || (i % 3), '{}', now(), now() - make_interval(hours => i)
             FROM generate_series(1, 50) i RETURNING id, created_at
         )
         INSERT INTO event_logs (id, event_id, project, trigger_name, status, next_attempt_at, created_at)
         SELECT gen_random_uuid(), id, 'default', 'hook',
                CASE WHEN extract(hour FROM created_at)::int % 2 = 0 THEN 'processed' ELSE 'pending' END, now(), created_at
         FROM e",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    herald::store::MIGRATOR.run(&mut *conn).await.unwrap();
    drop(conn);
    // The logs stored before get their types from the background pass.
    assert_eq!(herald::store::retention::type_untyped(&pool).await.unwrap(), 50);
    assert_eq!(herald::store::retention::type_untyped(&pool).await.unwrap(), 0);
    let (logs, typed): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE l.event_type = e.type) FROM event_logs l JOIN events e ON e.id = l.event_id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((logs, typed), (50, 50));
    let (kept, scanned) = kept_and_scanned(&pool).await;
    assert!(!kept.is_empty());
    assert_eq!(kept, scanned);
}

/// Buffers (shared hits and reads) the list of `f` touches, from EXPLAIN ANALYZE.
async fn list_buffers(pool: &PgPool, f: &herald::store::history::LogFilter) -> i64 {
    let mut q = sqlx::QueryBuilder::new("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ");
    herald::store::history::push_list(&mut q, "default", f, Default::default());
    let plan: sqlx::types::Json<serde_json::Value> = q.build_query_scalar().fetch_one(pool).await.unwrap();
    let top = &plan.0[0]["Plan"];
    top["Shared Hit Blocks"].as_i64().unwrap() + top["Shared Read Blocks"].as_i64().unwrap()
}

/// A filtered list reads a page of the project's waiting logs, not the whole
/// backlog: 60,000 events over two projects, scheduled for next year or retrying
/// (some set aside by a disabled trigger), a hundred fresh ones due now, and a few
/// of another trigger and type.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_filtered_list_reads_a_page_not_the_backlog(pool: PgPool) {
    sqlx::query(
        "WITH g AS (
             SELECT i, now() - make_interval(secs => i) AS at, herald_uuid_at(now() - make_interval(secs => i)) AS event_id,
                    CASE WHEN i % 9973 = 0 THEN 'quiet' ELSE 'busy' END AS kind,
                    CASE WHEN i % 2 = 0 THEN 'default' ELSE 'other' END AS project
             FROM generate_series(1, 60000) i
         ), e AS (
             INSERT INTO events (id, project, type, data, deliver_at, created_at)
             SELECT event_id, project, kind || '.type', '{}', now() + interval '300 days', at FROM g
         )
         INSERT INTO event_logs (id, event_id, project, trigger_name, event_type, status, attempts, next_attempt_at,
                                 created_at, paused)
         SELECT herald_uuid_at(g.at), g.event_id, g.project, g.kind, g.kind || '.type',
                CASE WHEN g.i % 500 = 2 THEN 'pending' WHEN g.i % 4 < 2 THEN 'scheduled' ELSE 'pending' END,
                CASE WHEN g.i % 500 = 2 OR g.i % 4 < 2 THEN 0 ELSE 3 END,
                CASE WHEN g.i % 500 = 2 THEN g.at ELSE now() + interval '300 days' END, g.at,
                g.i % 3 = 0 AND g.i % 500 <> 2
         FROM g",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    let quiet: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM event_logs WHERE project = 'default' AND trigger_name = 'quiet' ORDER BY created_at DESC, id DESC",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(quiet.len(), 3, "the fixture's quiet logs");
    let fresh: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_logs WHERE project = 'default' AND status = 'pending' AND attempts = 0 AND NOT paused",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(fresh, 120, "the fixture's fresh pending logs");
    let cases = [
        filter(|f| f.trigger = Some("quiet".into())),
        filter(|f| f.event_type = Some("quiet.type".into())),
        filter(|f| (f.trigger, f.status) = (Some("quiet".into()), Some(Status::Scheduled))),
        filter(|f| (f.event_type, f.status) = (Some("quiet.type".into()), Some(Status::Pending))),
        filter(|f| f.status = Some(Status::Scheduled)),
        filter(|f| f.status = Some(Status::Pending)),
        filter(|f| (f.status, f.limit) = (Some(Status::Pending), 200)),
    ];
    for f in cases {
        let expected: Vec<Uuid> = {
            let all: Vec<(Uuid, String, String, String)> = sqlx::query_as(
                "SELECT id, trigger_name, event_type, status FROM event_logs WHERE project = 'default'
                 ORDER BY created_at DESC, id DESC",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            all.into_iter()
                .filter(|(_, t, ty, st)| {
                    f.trigger.as_deref().is_none_or(|x| x == t)
                        && f.event_type.as_deref().is_none_or(|x| x == ty)
                        && f.status.is_none_or(|s| s.as_str() == st)
                })
                .map(|r| r.0)
                .take(f.limit as usize)
                .collect()
        };
        let got: Vec<Uuid> = herald::store::history::list_logs(&pool, "default", &f).await.unwrap().iter().map(|l| l.id).collect();
        assert_eq!(got, expected, "{f:?}");
        // A few buffers per row listed (index, log, event) and the fresh logs due
        // now; reading the backlog through the claim's index touched 2,126 for a
        // page of 7.
        let buffers = list_buffers(&pool, &f).await;
        assert!(buffers < 300 + 6 * f.limit, "{f:?} touched {buffers} buffers for a page of {}", f.limit);
    }
}

/// Leaf density of an index, in percent (pgstattuple, which PostgreSQL ships): of
/// its largest partition's index, where the history of the test is.
async fn leaf_density(pool: &PgPool, index: &str) -> (f64, i64) {
    sqlx::query_as(
        "SELECT s.avg_leaf_density, s.leaf_pages FROM pg_partition_tree($1::regclass) p
         CROSS JOIN LATERAL pgstatindex(p.relid) s WHERE p.isleaf ORDER BY s.leaf_pages DESC LIMIT 1",
    )
        .bind(index)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("pgstatindex({index}): {e}"))
}

/// The list indexes stay dense as the history grows through the real path (events
/// queued over HTTP one call after another, delivered to a receiver, as a steady
/// stream is). New logs carry the newest times: indexes that put them at the front
/// of each group split into half-empty pages for good (about 50 % leaf density,
/// twice the pages and splits), where ascending ones fill their pages.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn list_indexes_stay_dense_as_the_history_grows(pool: PgPool) {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        .execute(&pool)
        .await
        .expect("the pgstattuple extension (PostgreSQL's contrib) measures index density");
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    rx.always(Reply::status(200));
    h.trigger("dense", "dense.t", &rx.url("/hook"), json!({})).await;
    const EVENTS: i64 = 3000;
    for n in 0..EVENTS {
        let (status, body) = h.queue(json!({"type": "dense.t", "data": {"n": n}})).await;
        assert_eq!(status, 200, "{body}");
    }
    wait_for(Duration::from_secs(120), || async {
        let ended: i64 = sqlx::query_scalar("SELECT count(*) FROM event_logs WHERE status = 'processed'")
            .fetch_one(&pool)
            .await
            .unwrap();
        (ended == EVENTS).then_some(())
    })
    .await;
    for index in ["event_logs_history", "event_logs_ended", "event_logs_ended_trigger", "event_logs_ended_type"] {
        let (density, pages) = leaf_density(&pool, index).await;
        assert!(density >= 75.0, "{index}: leaf pages {density:.0} % full on average ({pages} pages for {EVENTS} logs)");
    }
}

/// The table a row is in: a partition's name.
async fn partition_of(pool: &PgPool, table: &str, column: &str, id: Uuid) -> Option<String> {
    sqlx::query_scalar(&format!("SELECT tableoid::regclass::text FROM {table} WHERE {column} = $1 LIMIT 1"))
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// SPEC §9 "no bloat": once every project's retention has passed a day, its
/// partitions are dropped whole, not deleted row by row. What has not ended (a log
/// scheduled for next year, a pending and a processing one) moves to the default
/// partition with its attempts and its event, as does an event that a younger log
/// in another partition points to. The counts of the day go with it.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn retention_drops_whole_partitions_and_keeps_what_has_not_ended(pool: PgPool) {
    use herald::store::{partitions, retention};
    let day = chrono::Duration::days(1);
    herald::store::projects::insert_if_missing(&pool, "default", "a-jwt-secret", "a-signing-secret").await.unwrap();
    partitions::create_range(&pool, Utc::now() - day * 40, Utc::now() + day, day).await.unwrap();
    let before = partitions::list(&pool).await.unwrap();
    assert!(before.len() >= 41, "{} partitions", before.len());

    let (gone_event, gone_logs) = old_event(&pool, "default", day * 35, &["processed", "failed", "cancelled"]).await;
    let (scheduled_event, scheduled_logs) = old_event(&pool, "default", day * 35, &["scheduled"]).await;
    let (mixed_event, mixed_logs) = old_event(&pool, "default", day * 35, &["processed", "pending", "processing"]).await;
    let (lone_event, _) = old_event(&pool, "default", day * 35, &[]).await;
    let (young_event, young_logs) = old_event(&pool, "default", day * 5, &["processed"]).await;
    // An event of the old day with a log made in a young one.
    let (crossing_event, _) = old_event(&pool, "default", day * 35, &[]).await;
    sqlx::query("UPDATE event_logs SET event_id = $1 WHERE id = $2")
        .bind(crossing_event)
        .bind(young_logs[0])
        .execute(&pool)
        .await
        .unwrap();
    let old_partition = partition_of(&pool, "event_logs", "id", gone_logs[0]).await.unwrap();
    assert!(old_partition.starts_with("event_logs_p"), "{old_partition}");
    sqlx::query("UPDATE event_logs SET status = 'processed' WHERE id = $1")
        .bind(mixed_logs[1])
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE event_logs SET status = 'pending' WHERE id = $1").bind(mixed_logs[1]).execute(&pool).await.unwrap();
    // The logs above were stored ended, which no trigger counts: count them as a scan does.
    for step in [
        "DELETE FROM event_log_counts",
        "INSERT INTO event_log_counts (project, span, bucket, status, n)
         SELECT project, s.span, date_bin(s.step, created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), status, count(*)
         FROM event_logs CROSS JOIN (VALUES ('hour', interval '1 hour'), ('minute', interval '1 minute')) AS s (span, step)
         WHERE status IN ('processed', 'failed', 'cancelled') GROUP BY 1, 2, 3, 4",
    ] {
        sqlx::query(step).execute(&pool).await.unwrap();
    }
    let counted_before: i64 = sqlx::query_scalar("SELECT count(*) FROM event_log_counts").fetch_one(&pool).await.unwrap();

    let removed = retention::apply(&pool, 1000).await.unwrap();
    assert!(removed.partitions >= 5, "{removed:?}");
    assert_eq!(removed.event_logs, 0, "the old day's logs went with their partition, not in batches: {removed:?}");
    let exists_table: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(&old_partition)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(exists_table, None, "{old_partition} was not dropped");

    for log in &gone_logs {
        assert!(!exists(&pool, "event_logs", "id", *log).await);
        assert!(!exists(&pool, "invocation_logs", "event_log_id", *log).await);
    }
    assert!(!exists(&pool, "events", "id", gone_event).await);
    assert!(!exists(&pool, "events", "id", lone_event).await);
    assert!(!exists(&pool, "event_logs", "id", mixed_logs[0]).await);
    for (log, event) in [(scheduled_logs[0], scheduled_event), (mixed_logs[1], mixed_event), (mixed_logs[2], mixed_event)] {
        assert_eq!(partition_of(&pool, "event_logs", "id", log).await.as_deref(), Some("event_logs_default"), "{log}");
        assert_eq!(partition_of(&pool, "invocation_logs", "event_log_id", log).await.as_deref(), Some("invocation_logs_default"));
        assert_eq!(partition_of(&pool, "events", "id", event).await.as_deref(), Some("events_default"));
    }
    let kept: (String, i32, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT status, attempts, lease_until FROM event_logs WHERE id = $1")
            .bind(mixed_logs[2])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((kept.0.as_str(), kept.1), ("processing", 1), "a kept log is as it was");
    assert!(kept.2.is_some());
    assert_eq!(partition_of(&pool, "events", "id", crossing_event).await.as_deref(), Some("events_default"));
    assert!(exists(&pool, "events", "id", young_event).await, "young history was removed");

    // The counts of the dropped days went with them; the rest agree with a scan.
    let (kept_counts, scanned) = kept_and_scanned(&pool).await;
    assert_eq!(kept_counts, scanned);
    let counted_after: i64 = sqlx::query_scalar("SELECT count(*) FROM event_log_counts").fetch_one(&pool).await.unwrap();
    assert!(counted_after < counted_before, "{counted_before} -> {counted_after}");

    // Partitions reach two days ahead; nothing more to do on a second pass.
    let newest = partitions::list(&pool).await.unwrap().pop().unwrap();
    assert!(newest.hi_at >= Utc::now() + partitions::AHEAD, "{newest:?}");
    let again = retention::apply(&pool, 1000).await.unwrap();
    assert!(again.is_empty(), "{again:?}");

    // A kept log ends later; the next batch of retention takes it from the default partition.
    sqlx::query("UPDATE event_logs SET status = 'failed', lease_until = NULL WHERE id = $1")
        .bind(mixed_logs[2])
        .execute(&pool)
        .await
        .unwrap();
    let removed = retention::apply(&pool, 1000).await.unwrap();
    assert_eq!(removed.event_logs, 1, "{removed:?}");
    let (kept_counts, scanned) = kept_and_scanned(&pool).await;
    assert_eq!(kept_counts, scanned, "no count below zero is left");
}

/// The partitions migration keeps every row stored before it, in place (the
/// legacy partition) or, for ids that sort after its moment (UUIDv4 ids of early
/// builds), in the default partition; idempotency keys of the last day move to
/// their own table and still answer with their first event.
#[sqlx::test(migrations = false)]
async fn the_partition_migration_keeps_every_row(pool: PgPool) {
    let all: Vec<_> = herald::store::MIGRATOR.iter().cloned().collect();
    let at = all.iter().position(|m| m.description.contains("time partitions")).expect("the partitions migration");
    let before = sqlx::migrate::Migrator { migrations: std::borrow::Cow::Owned(all[..at].to_vec()), ..sqlx::migrate::Migrator::DEFAULT };
    // One connection: the upgrade refuses while another session uses the history.
    let mut conn = pool.acquire().await.unwrap();
    before.run(&mut *conn).await.unwrap();
    sqlx::query("INSERT INTO projects (id, jwt_secret, signing_secret) VALUES ('default', 'a', 'b')")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "WITH e AS (
             INSERT INTO events (id, project, type, data, deliver_at, created_at, idempotency_key)
             SELECT CASE WHEN i % 2 = 0 THEN gen_random_uuid() ELSE herald_uuid_at(now() - make_interval(hours => i)) END,
                    'default', 't', jsonb_build_object('i', i), now(), now() - make_interval(hours => i),
                    CASE WHEN i <= 4 THEN 'key' || i END
             FROM generate_series(1, 400) i RETURNING id, created_at
         ), l AS (
             INSERT INTO event_logs (id, event_id, project, trigger_name, event_type, status, next_attempt_at, created_at)
             SELECT CASE WHEN random() < 0.5 THEN gen_random_uuid() ELSE herald_uuid_at(created_at) END, id, 'default', 'hook',
                    't', 'processed', now(), created_at
             FROM e RETURNING id
         )
         INSERT INTO invocation_logs (id, event_log_id, attempt, started_at, duration_ms, request_headers, request_body)
         SELECT gen_random_uuid(), id, 1, now(), 5, '{}', 'body' FROM l",
    )
    .execute(&mut *conn)
    .await
    .unwrap();

    // A node of the earlier build still at work (another session that used the
    // history a moment ago) stops the upgrade, which changes nothing.
    let mut other = pool.acquire().await.unwrap();
    sqlx::query("SELECT count(*) FROM event_logs").execute(&mut *other).await.unwrap();
    let refused = herald::store::MIGRATOR.run(&mut *conn).await.unwrap_err().to_string();
    assert!(refused.contains("stop every Herald node before upgrading"), "{refused}");
    sqlx::Connection::close(other.detach()).await.unwrap();
    let partitioned: bool = sqlx::query_scalar("SELECT to_regclass('history_partitions') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(!partitioned, "the refused upgrade left a table behind");

    let snapshot = "SELECT (SELECT string_agg(id::text || data::text, ',' ORDER BY id) FROM events),
                           (SELECT string_agg(id::text || event_id::text || status, ',' ORDER BY id) FROM event_logs),
                           (SELECT string_agg(event_log_id::text || request_body, ',' ORDER BY event_log_id) FROM invocation_logs)";
    let rows_before: (String, String, String) = sqlx::query_as(snapshot).fetch_one(&mut *conn).await.unwrap();

    herald::store::MIGRATOR.run(&mut *conn).await.unwrap();
    drop(conn);
    let rows_after: (String, String, String) = sqlx::query_as(snapshot).fetch_one(&pool).await.unwrap();
    assert_eq!(rows_after, rows_before, "every row is kept");
    let places: Vec<(String, i64)> = sqlx::query_as(
        "SELECT tableoid::regclass::text, count(*) FROM event_logs GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(places.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["event_logs_default", "event_logs_legacy"]);
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys").fetch_one(&pool).await.unwrap();
    assert_eq!(keys, 4);
    // The list bounds its reads by id only for logs created since the upgrade.
    let since: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT max(at) FROM history_ordered_since").fetch_one(&pool).await.unwrap();
    assert!(since.is_some_and(|t| t <= Utc::now() && t > Utc::now() - chrono::Duration::minutes(5)), "{since:?}");

    // Partitions made from here take their rows out of the default partition.
    let made = herald::store::partitions::ensure_ahead(&pool).await.unwrap();
    assert!(made >= 1, "{made}");
    let rows_now: (String, String, String) = sqlx::query_as(snapshot).fetch_one(&pool).await.unwrap();
    assert_eq!(rows_now, rows_before, "every row is kept");
    // The list pages through them all, newest first, wherever their ids put them.
    for f in [filter(|_| {}), filter(|f| f.from = Some(Utc::now() - chrono::Duration::hours(100)))] {
        let expected: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM event_logs WHERE $1::timestamptz IS NULL OR created_at >= $1 ORDER BY created_at DESC, id DESC",
        )
        .bind(f.from)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(expected.len() >= 99, "{}", expected.len());
        assert_eq!(every_page(&pool, f).await, expected);
    }

    // A key stored before answers with its event.
    let h = Herald::start(pool.clone()).await;
    let first: Uuid = sqlx::query_scalar("SELECT event_id FROM idempotency_keys WHERE key = 'key1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (status, body) = h.queue(json!({"type": "t", "data": {}, "idempotencyKey": "key1"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eventId"].as_str(), Some(first.to_string().as_str()), "{body}");
}

//! Issue 15 (history for months): retention per project, never removing an event
//! log that has not ended; dead letters grouped and replayed by group.
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Herald, Receiver, Reply};
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
    sqlx::query("INSERT INTO events (id, project, type, data, deliver_at, created_at) VALUES ($1, $2, 't', '{}', $3, $3)")
        .bind(event)
        .bind(project)
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
    let mut logs = Vec::new();
    for (i, status) in statuses.iter().enumerate() {
        let log = id_at(at);
        let next = if *status == "scheduled" { Utc::now() + chrono::Duration::days(365) } else { at };
        // A processing log holds a lease, as Herald's always do.
        let lease = (*status == "processing").then(|| Utc::now() + chrono::Duration::hours(1));
        sqlx::query(
            "INSERT INTO event_logs (id, event_id, project, trigger_name, status, attempts, next_attempt_at, created_at,
                                     lease_until)
             VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8)",
        )
        .bind(log)
        .bind(event)
        .bind(project)
        .bind(format!("t{i}"))
        .bind(status)
        .bind(next)
        .bind(at)
        .bind(lease)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO invocation_logs (id, event_log_id, attempt, started_at, duration_ms, request_headers, request_body)
             VALUES ($1, $2, 1, $3, 5, '{}', '{}')",
        )
        .bind(Uuid::now_v7())
        .bind(log)
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
        logs.push(log);
    }
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

    for log in &gone_logs {
        assert!(!exists(&pool, "event_logs", "id", *log).await, "an old ended log stays");
        assert!(!exists(&pool, "invocation_logs", "event_log_id", *log).await, "its attempts stay");
    }
    assert!(!exists(&pool, "events", "id", gone_event).await, "its event stays");
    assert!(!exists(&pool, "events", "id", lone_event).await, "an old event that matched no trigger stays");
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

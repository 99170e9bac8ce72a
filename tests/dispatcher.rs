//! The dispatcher's guarantees: leases, crash recovery, several nodes on one
//! database, and graceful shutdown.
#![cfg(feature = "ssr")]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{wait_for, Herald, Receiver, Reply};
use herald::engine::Engine;
use herald::model::Status;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn an_expired_lease_is_claimed_again(pool: PgPool) {
    // A node claims work and dies before delivering it: its lease runs out, and a
    // live node delivers the event log.
    let mut config = common::test_config();
    config.lease_margin = Duration::from_millis(300);
    let h = Herald::start_with(pool.clone(), config).await;
    let rx = Receiver::start().await;
    h.trigger("t", "t", &rx.url("/x"), json!({"timeoutMs": 100})).await;
    // Pause the live node's claims by holding the work first, as a crashed node.
    let dead = Uuid::new_v4();
    let (_, reply) = {
        let mut tx = pool.begin().await.unwrap();
        let ev = herald::store::events::NewEvent {
            id: Uuid::new_v4(),
            event_type: "t".into(),
            data: json!(null),
            deliver_at: chrono::Utc::now(),
            synchronous: false,
            idempotency_key: None,
            ordering_key: None,
        };
        let lease = herald::store::events::Lease { node: dead, margin: Duration::from_millis(300) };
        let stored = herald::store::events::enqueue(&mut tx, "default", &[ev], Some(lease)).await.unwrap();
        tx.commit().await.unwrap();
        (200, json!({"eventId": stored[0].event_id}))
    };
    let id = reply["eventId"].as_str().unwrap();
    assert_eq!(h.statuses(id).await, vec![Status::Processing]);
    assert_eq!(h.settled(id).await, vec![Status::Processed]);
    assert_eq!(rx.count(), 1);
    let got = rx.received();
    assert_eq!(got[0].json()["source"], h.engine.node_id().to_string());
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn two_nodes_deliver_each_event_log_once(pool: PgPool) {
    let a = Herald::start(pool.clone()).await;
    let b = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    // A little latency in the receiver keeps both nodes busy at once.
    rx.always(Reply::status(200).delayed(Duration::from_millis(5)));
    a.trigger("t", "t", &rx.url("/x"), json!({})).await;
    for chunk in 0..4 {
        let events: Vec<_> = (0..250).map(|i| json!({"type": "t", "data": chunk * 1000 + i})).collect();
        let target = if chunk % 2 == 0 { &a } else { &b };
        let (s, body) = target.post("/v1/api/default/eventing/queue/batch", json!({"events": events})).await;
        assert_eq!(s, 200, "{body}");
    }
    wait_for(Duration::from_secs(60), || async { (rx.count() >= 1000).then_some(()) }).await;
    let done = wait_for(Duration::from_secs(20), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM event_logs WHERE status = 'processed'")
            .fetch_one(&pool)
            .await
            .unwrap();
        (n == 1000).then_some(n)
    })
    .await;
    assert_eq!(done, 1000);
    let mut per_id: HashMap<String, usize> = HashMap::new();
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for r in rx.received() {
        *per_id.entry(r.header("webhook-id").to_string()).or_default() += 1;
        *per_node.entry(r.json()["source"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_id.len(), 1000);
    assert!(per_id.values().all(|&n| n == 1), "an event log was delivered twice");
    assert_eq!(per_node.len(), 2, "both nodes took work: {per_node:?}");
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn shutdown_finishes_in_flight_work_and_releases_the_rest(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    rx.always(Reply::status(200).delayed(Duration::from_millis(300)));
    h.trigger("t", "t", &rx.url("/x"), json!({})).await;
    let (_, reply) = h.queue(json!({"type": "t"})).await;
    let id = reply["eventId"].as_str().unwrap();
    wait_for(Duration::from_secs(10), || async { (rx.count() == 1).then_some(()) }).await;
    h.engine.shutdown().await;
    // The attempt in flight was allowed to finish.
    assert_eq!(h.statuses(id).await, vec![Status::Processed]);

    // A node that stops while it holds a lease it has not started on gives it
    // back at once, instead of leaving it to expire.
    let node_id = Uuid::new_v4();
    let node = Engine::new(pool.clone(), node_id, common::test_config());
    let (_, reply) = h.queue(json!({"type": "t"})).await;
    let id = reply["eventId"].as_str().unwrap();
    let claimed = herald::store::events::claim(&pool, node_id, 10, Duration::from_secs(60), &[]).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(h.statuses(id).await, vec![Status::Processing]);
    node.shutdown().await;
    assert_eq!(h.statuses(id).await, vec![Status::Pending]);
    let holder: Option<Uuid> = sqlx::query_scalar("SELECT leased_by FROM event_logs WHERE id = $1")
        .bind(claimed[0].id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(holder, None);
}

/// A due event log of a trigger that does not exist (its delivery only cancels
/// it), due at `at`. Returns its id.
async fn due_log(pool: &PgPool, at: chrono::DateTime<chrono::Utc>) -> Uuid {
    sqlx::query_scalar(
        "WITH e AS (
             INSERT INTO events (id, project, type, deliver_at) VALUES (herald_uuid_v7(), 'default', 't', $1)
             RETURNING id
         )
         INSERT INTO event_logs (id, event_id, project, trigger_name, event_type, status, next_attempt_at)
         SELECT herald_uuid_v7(), e.id, 'default', 'gone', 't', 'pending', $1 FROM e
         RETURNING id",
    )
    .bind(at)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn still_due(pool: &PgPool, id: Uuid) -> bool {
    let status: String = sqlx::query_scalar("SELECT status FROM event_logs WHERE id = $1").bind(id).fetch_one(pool).await.unwrap();
    status == "pending"
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn claims_draining_a_backlog_start_where_the_last_one_ended_and_still_find_logs_due_earlier(pool: PgPool) {
    // While claims fill their batch, each starts at the due time the previous one
    // reached, so that it does not step again over what earlier claims left in the
    // index. A log due before that point is found by a claim that reads from the
    // start: at once when a claim comes up short, and at least every second.
    let mut config = common::test_config();
    config.claim_batch = 10;
    config.concurrency = 200;
    let node = Engine::new(pool.clone(), Uuid::new_v4(), config);
    node.bootstrap().await.unwrap();
    let start = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut backlog = Vec::new();
    for i in 0..30 {
        backlog.push(due_log(&pool, start + chrono::Duration::seconds(i)).await);
    }
    assert_eq!(node.dispatch_once().await.unwrap(), (10, 10));

    // Committed late: due before everything claimed so far.
    let late = due_log(&pool, start - chrono::Duration::hours(1)).await;
    assert_eq!(node.dispatch_once().await.unwrap(), (10, 10));
    assert!(still_due(&pool, late).await, "a claim that filled its batch reads on from where it ended");
    for id in &backlog[..20] {
        assert!(!still_due(&pool, *id).await, "the first 20 of the backlog were claimed in order");
    }
    assert_eq!(node.dispatch_once().await.unwrap(), (10, 10));
    assert!(still_due(&pool, late).await);
    // Nothing more after the floor: the claim reads from the start and finds it.
    assert_eq!(node.dispatch_once().await.unwrap(), (1, 10));
    assert!(!still_due(&pool, late).await, "the log due earlier was claimed once the backlog was drained");

    // While claims keep filling their batch, one reads from the start every second.
    for i in 0..40 {
        due_log(&pool, start + chrono::Duration::seconds(100 + i)).await;
    }
    assert_eq!(node.dispatch_once().await.unwrap(), (10, 10));
    let late = due_log(&pool, start - chrono::Duration::hours(1)).await;
    assert_eq!(node.dispatch_once().await.unwrap(), (10, 10));
    assert!(still_due(&pool, late).await);
    tokio::time::sleep(herald::engine::dispatch::READ_ALL_EVERY + Duration::from_millis(100)).await;
    assert_eq!(node.dispatch_once().await.unwrap(), (10, 10));
    assert!(!still_due(&pool, late).await, "a claim a second after the last full read reads from the start");
    node.shutdown().await;
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn an_event_for_now_is_due_by_the_databases_clock(pool: PgPool) {
    // A node whose clock is behind stamps the events it queues in the past. Their
    // logs are due by the database's clock all the same, in the order every
    // node's claims read them.
    let h = Herald::start(pool.clone()).await;
    h.trigger("t", "t", "http://127.0.0.1:9/x", json!({})).await;
    h.engine.shutdown().await;
    let mut tx = pool.begin().await.unwrap();
    let behind = chrono::Utc::now() - chrono::Duration::minutes(10);
    let ev = herald::store::events::NewEvent {
        id: Uuid::new_v4(),
        event_type: "t".into(),
        data: json!(null),
        deliver_at: behind,
        synchronous: false,
        idempotency_key: None,
        ordering_key: None,
    };
    let stored = herald::store::events::enqueue(&mut tx, "default", &[ev], None).await.unwrap();
    tx.commit().await.unwrap();
    let (status, due, created): (String, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT status, next_attempt_at, created_at FROM event_logs WHERE id = $1")
            .bind(stored[0].log_ids[0])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "pending");
    assert_eq!(due, created, "due when it was stored, not ten minutes earlier");
}

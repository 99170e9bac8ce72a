//! The fault-injection suite (`make test-faults`): Herald as a real process,
//! killed and restarted under load. Each test checks what a user cares about: no
//! event log is lost, and each one ends `processed` once the sink acknowledged it.
//! Ignored by plain `cargo test` for its length; `make test-faults` runs it.
#![cfg(feature = "ssr")]

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{database_url, wait_for, Receiver};
use herald::engine::projects::Role;
use herald::engine::Engine;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Starts the real binary on the test database, with a fixed data folder (and so
/// a fixed node id across restarts).
fn spawn(db_url: &str, data: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .env("DATABASE_URL", db_url)
        .env("HERALD_DATA_DIR", data)
        .env("HERALD_ADDR", format!("127.0.0.1:{port}"))
        .env("HERALD_ADMIN_PASSWORD", "faults-only-password")
        .env("HERALD_CONCURRENCY", "64")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the herald binary starts")
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
#[ignore = "fault suite: run with make test-faults"]
async fn kill_9_in_the_middle_of_50_000_deliveries_loses_nothing(pool: PgPool) {
    const N: usize = 50_000;
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.unwrap();
    let url = database_url(&db, "postgres");
    let rx = Receiver::start().await;

    // The events are queued before Herald runs, through the engine (no dispatcher).
    let engine = Engine::new(pool.clone(), Uuid::new_v4(), Default::default());
    engine.bootstrap().await.unwrap();
    let key = engine.create_api_key("default", Role::Admin, "faults").await.unwrap();
    let _ = key;
    let input = serde_json::from_value(json!({"name": "sink", "type": "load", "url": rx.url("/sink"), "timeoutMs": 2000}))
        .unwrap();
    engine.create_trigger("default", input).await.unwrap();
    for chunk in 0..N / 1000 {
        let events: Vec<_> = (chunk * 1000..(chunk + 1) * 1000).map(|i| json!({"type": "load", "data": {"seq": i}})).collect();
        engine.queue_batch("default", &json!({"events": events})).await.unwrap();
    }

    let data = std::env::temp_dir().join(format!("herald-faults-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&data).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut herald = spawn(&url, &data, port);
    // Kill it hard once a fifth of the deliveries arrived.
    wait_for(Duration::from_secs(300), || async { (rx.count() >= N / 5).then_some(()) }).await;
    herald.kill().unwrap();
    herald.wait().unwrap();
    let at_kill = rx.count();
    let in_flight: i64 = sqlx::query_scalar("SELECT count(*) FROM event_logs WHERE status = 'processing'")
        .fetch_one(&pool)
        .await
        .unwrap();

    let mut herald = spawn(&url, &data, port);
    let done = wait_for(Duration::from_secs(600), || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM event_logs WHERE status <> 'processed'")
            .fetch_one(&pool)
            .await
            .unwrap();
        (left == 0).then_some(())
    })
    .await;
    let _ = done;
    herald.kill().unwrap();
    herald.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);

    let mut seen: HashMap<u64, usize> = HashMap::new();
    for r in rx.received() {
        *seen.entry(r.json()["data"]["seq"].as_u64().unwrap()).or_default() += 1;
    }
    assert_eq!(seen.len(), N, "every event arrived at least once");
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "kill -9 after {at_kill} arrivals with {in_flight} event logs in flight: {duplicates} duplicate deliveries, \
         {} arrivals in all",
        rx.count()
    );
    assert!(duplicates as i64 <= in_flight, "only in-flight work is delivered twice ({duplicates} > {in_flight})");
    let bad: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_logs l WHERE NOT EXISTS
           (SELECT 1 FROM invocation_logs i WHERE i.event_log_id = l.id AND i.status_code = 200)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(bad, 0, "every processed event log has its acknowledged attempt recorded");
}

//! Database events (SPEC §5) against a real PostgreSQL and a real receiver: the
//! row trigger Herald installs, the data of each operation, transactions, volume,
//! another database through its outbox, and the errors of bad triggers.
#![cfg(feature = "ssr")]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{database_url, test_config, wait_for, Herald, Receiver};
use serde_json::{json, Value};
use sqlx::PgPool;

async fn db_trigger(h: &Herald, name: &str, event_type: &str, url: &str, options: Value) -> (u16, Value) {
    h.post(
        "/v1/api/default/eventing/triggers",
        json!({"name": name, "source": "database", "type": event_type, "url": url, "options": options}),
    )
    .await
}

/// The `data` of every delivery so far, in arrival order.
fn datas(rx: &Receiver) -> Vec<Value> {
    rx.received().iter().map(|r| r.json()["data"].clone()).collect()
}

async fn wait_count(rx: &Receiver, n: usize, bound: Duration) {
    wait_for(bound, || async { (rx.count() >= n).then_some(()) }).await;
}

/// How many row triggers named herald_capture a table carries.
async fn capture_triggers(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = 'herald_capture'")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn insert_update_and_delete_deliver_the_documented_data(pool: PgPool) {
    sqlx::query("CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL, qty int NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    for (name, t) in [("ins", "DB_INSERT"), ("upd", "DB_UPDATE"), ("del", "DB_DELETE")] {
        // A bare table name means the public schema.
        let (status, reply) = db_trigger(&h, name, t, &rx.url(&format!("/{name}")), json!({"table": "orders"})).await;
        assert_eq!(status, 201, "{reply}");
        assert_eq!(reply["options"], json!({"db": "default", "table": "public.orders"}));
    }
    assert_eq!(capture_triggers(&pool, "orders").await, 1, "one row trigger serves all three operations");

    sqlx::query("INSERT INTO orders VALUES (1, 'book', 2)").execute(&pool).await.unwrap();
    wait_count(&rx, 1, Duration::from_secs(10)).await;
    sqlx::query("UPDATE orders SET qty = 3 WHERE id = 1").execute(&pool).await.unwrap();
    wait_count(&rx, 2, Duration::from_secs(10)).await;
    sqlx::query("DELETE FROM orders WHERE id = 1").execute(&pool).await.unwrap();
    wait_count(&rx, 3, Duration::from_secs(10)).await;

    let got = rx.received();
    assert_eq!(got.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/ins", "/upd", "/del"]);
    let types: Vec<Value> = got.iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(types, [json!("DB_INSERT"), json!("DB_UPDATE"), json!("DB_DELETE")]);
    let row = json!({"id": 1, "item": "book", "qty": 2});
    let updated = json!({"id": 1, "item": "book", "qty": 3});
    assert_eq!(
        datas(&rx),
        [
            json!({"db": "default", "col": "public.orders", "doc": row, "find": {"id": 1}}),
            json!({"db": "default", "col": "public.orders", "doc": updated, "before": row, "find": {"id": 1}}),
            json!({"db": "default", "col": "public.orders", "before": updated, "find": {"id": 1}}),
        ]
    );
    // They show in the history like any other event.
    let (status, page) = h.send(h.http.get(format!("{}/v1/api/default/eventing/logs?type=DB_UPDATE", h.base))).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_rolled_back_transaction_delivers_nothing(pool: PgPool) {
    sqlx::query("CREATE TABLE notes (id bigserial PRIMARY KEY, body text)").execute(&pool).await.unwrap();
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    let (status, reply) = db_trigger(&h, "notes", "DB_INSERT", &rx.url("/n"), json!({"table": "public.notes"})).await;
    assert_eq!(status, 201, "{reply}");

    let mut tx = pool.begin().await.unwrap();
    for i in 0..5 {
        sqlx::query("INSERT INTO notes (body) VALUES ($1)").bind(format!("rolled back {i}")).execute(&mut *tx).await.unwrap();
    }
    tx.rollback().await.unwrap();
    // A committed marker after it: once it arrives, anything from the rolled-back
    // transaction would have arrived too.
    sqlx::query("INSERT INTO notes (body) VALUES ('committed')").execute(&pool).await.unwrap();
    wait_count(&rx, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bodies: Vec<Value> = datas(&rx).iter().map(|d| d["doc"]["body"].clone()).collect();
    assert_eq!(bodies, [json!("committed")]);
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM herald.changes").fetch_one(&pool).await.unwrap();
    assert_eq!(outbox, 0, "the outbox is drained");
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn ten_thousand_inserts_in_one_transaction_all_arrive_once(pool: PgPool) {
    sqlx::query("CREATE TABLE readings (id int PRIMARY KEY, value float8)").execute(&pool).await.unwrap();
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    let (status, reply) = db_trigger(&h, "readings", "DB_INSERT", &rx.url("/r"), json!({"table": "readings"})).await;
    assert_eq!(status, 201, "{reply}");

    let started = std::time::Instant::now();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO readings SELECT g, g * 0.5 FROM generate_series(1, 10000) g")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let committed = started.elapsed();

    wait_count(&rx, 10_000, Duration::from_secs(180)).await;
    // A figure for the record, not a timed assertion.
    eprintln!("10,000 inserts: committed in {committed:?}, all delivered after {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: Vec<i64> = datas(&rx).iter().map(|d| d["find"]["id"].as_i64().unwrap()).collect();
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 10_000, "no duplicates");
    assert_eq!(unique, (1..=10_000).collect::<HashSet<i64>>());
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_logs WHERE status = 'processed'").fetch_one(&pool).await.unwrap();
    assert_eq!(processed, 10_000);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_table_without_primary_key_gets_an_empty_find(pool: PgPool) {
    sqlx::query("CREATE TABLE logbook (line text)").execute(&pool).await.unwrap();
    let h = Herald::start(pool.clone()).await;
    let tables = h.engine.list_tables("default").await.unwrap();
    let logbook = tables.iter().find(|t| t.name == "public.logbook").expect("listed");
    assert!(logbook.primary_key.is_empty() && logbook.can_trigger);
    assert!(tables.iter().all(|t| t.name != "public.event_logs"), "Herald's own tables are not offered");

    let rx = Receiver::start().await;
    let (status, reply) = db_trigger(&h, "lines", "DB_INSERT", &rx.url("/l"), json!({"table": "logbook"})).await;
    assert_eq!(status, 201, "{reply}");
    sqlx::query("INSERT INTO logbook VALUES ('hello')").execute(&pool).await.unwrap();
    wait_count(&rx, 1, Duration::from_secs(10)).await;
    assert_eq!(datas(&rx)[0], json!({"db": "default", "col": "public.logbook", "doc": {"line": "hello"}, "find": {}}));
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn the_row_trigger_follows_the_triggers_that_need_it(pool: PgPool) {
    sqlx::query("CREATE TABLE items (id int PRIMARY KEY)").execute(&pool).await.unwrap();
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    assert_eq!(db_trigger(&h, "a", "DB_INSERT", &rx.url("/a"), json!({"table": "items"})).await.0, 201);
    assert_eq!(db_trigger(&h, "b", "DB_DELETE", &rx.url("/b"), json!({"table": "items"})).await.0, 201);
    assert_eq!(capture_triggers(&pool, "items").await, 1);

    // Disabling one leaves the other's operation captured: inserts still fire.
    let (status, _) = h
        .send(h.http.put(format!("{}/v1/api/default/eventing/triggers/a", h.base)).json(&json!({
            "source": "database", "type": "DB_INSERT", "url": rx.url("/a"), "enabled": false,
            "options": {"table": "items"}})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(capture_triggers(&pool, "items").await, 1);
    sqlx::query("INSERT INTO items VALUES (1)").execute(&pool).await.unwrap();
    sqlx::query("DELETE FROM items WHERE id = 1").execute(&pool).await.unwrap();
    wait_count(&rx, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paths: Vec<String> = rx.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/b"], "the disabled insert trigger received nothing");
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM herald.changes").fetch_one(&pool).await.unwrap();
    assert_eq!(outbox, 0);

    assert_eq!(h.delete("/v1/api/default/eventing/triggers/b").await.0, 200);
    assert_eq!(capture_triggers(&pool, "items").await, 0, "no enabled trigger is left: the row trigger is gone");
    assert_eq!(h.delete("/v1/api/default/eventing/triggers/a").await.0, 200);
    assert_eq!(capture_triggers(&pool, "items").await, 0);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn bad_database_triggers_get_clear_errors_and_change_nothing(pool: PgPool) {
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.unwrap();
    let role = format!("herald_limited_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    for stmt in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT CONNECT ON DATABASE \"{db}\" TO {role}"),
        "CREATE TABLE guarded (id int PRIMARY KEY)".into(),
        format!("GRANT SELECT ON guarded TO {role}"),
    ] {
        sqlx::query(&stmt).execute(&pool).await.unwrap();
    }
    let mut config = test_config();
    config.databases = vec![("limited".into(), database_url(&db, &role))];
    let h = Herald::start_with(pool.clone(), config).await;
    h.engine.grant_database("default", "limited").await.unwrap();
    let url = "http://127.0.0.1:9/hook";

    let cases = [
        (json!({"table": "nope"}), "there is no table public.nope in the database 'default'"),
        (json!({"db": "elsewhere", "table": "guarded"}), "there is no database alias 'elsewhere'"),
        (json!({"table": "events"}), "public.events belongs to Herald"),
        (json!({}), "`options.table`: a table is required"),
        (json!({"db": "limited", "table": "guarded"}), "may not create triggers on public.guarded"),
    ];
    for (options, want) in cases {
        let (status, reply) = db_trigger(&h, "bad", "DB_INSERT", url, options.clone()).await;
        assert_eq!(status, 422, "{options}: {reply}");
        let msg = reply["error"].as_str().unwrap();
        assert!(msg.contains(want), "{options}: {msg}");
    }
    let (status, reply) = db_trigger(&h, "bad", "FILE_CREATE", url, json!({"table": "guarded"})).await;
    assert_eq!(status, 422);
    assert!(reply["error"].as_str().unwrap().contains("DB_INSERT, DB_UPDATE or DB_DELETE"));
    let (status, reply) = h.queue(json!({"type": "DB_INSERT", "data": {}})).await;
    assert_eq!(status, 400, "users cannot queue database events: {reply}");

    assert!(h.engine.list_triggers("default").await.unwrap().is_empty(), "nothing was saved");
    assert_eq!(capture_triggers(&pool, "guarded").await, 0);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn another_database_delivers_through_its_outbox(pool: PgPool) {
    let other = format!("herald_shop_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    sqlx::query(&format!("CREATE DATABASE {other}")).execute(&pool).await.unwrap();
    let shop_url = database_url(&other, "postgres");
    let shop = PgPool::connect(&shop_url).await.unwrap();
    sqlx::query("CREATE TABLE carts (id int PRIMARY KEY, total numeric)").execute(&shop).await.unwrap();

    let mut config = test_config();
    config.databases = vec![("shop".into(), shop_url)];
    let h = Herald::start_with(pool.clone(), config).await;
    h.engine.grant_database("default", "shop").await.unwrap();
    let rx = Receiver::start().await;
    let (status, reply) =
        db_trigger(&h, "carts", "DB_INSERT", &rx.url("/c"), json!({"db": "shop", "table": "carts"})).await;
    assert_eq!(status, 201, "{reply}");
    let tables = h.engine.list_tables("shop").await.unwrap();
    assert_eq!(tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["public.carts"]);

    let mut tx = shop.begin().await.unwrap();
    sqlx::query("INSERT INTO carts SELECT g, g * 10 FROM generate_series(1, 50) g").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = shop.begin().await.unwrap();
    sqlx::query("INSERT INTO carts VALUES (999, 1)").execute(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();

    wait_count(&rx, 50, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = datas(&rx);
    assert_eq!(got.len(), 50);
    assert_eq!(got[0]["db"], "shop");
    assert_eq!(got[0]["col"], "public.carts");
    let ids: HashSet<i64> = got.iter().map(|d| d["find"]["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=50).collect::<HashSet<i64>>());
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM herald.changes").fetch_one(&shop).await.unwrap();
    assert_eq!(outbox, 0);

    h.engine.shutdown().await;
    shop.close().await;
}

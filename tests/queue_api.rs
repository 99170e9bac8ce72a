//! The queue API over real HTTP: authentication, validation, idempotency, the
//! batch form and every synchronous outcome.
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use common::{Herald, Receiver, Reply};
use herald::engine::projects::Role;
use herald::model::Status;
use serde_json::json;
use sqlx::PgPool;

const QUEUE: &str = "/v1/api/default/eventing/queue";

async fn raw(h: &Herald, path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let mut req = h.http.post(format!("{}{}", h.base, path)).body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

async fn event_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn authentication(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let body = r#"{"type": "t"}"#;
    let (s, b) = raw(&h, QUEUE, None, body).await;
    assert_eq!((s, b["error"].as_str().unwrap().contains("bearer")), (401, true));
    assert_eq!(raw(&h, QUEUE, Some("hrld_wrong"), body).await.0, 401);
    assert_eq!(raw(&h, "/v1/api/nope/eventing/queue", Some(&h.key), body).await.0, 404);
    assert_eq!(raw(&h, QUEUE, Some(&h.key), body).await.0, 200);
    // The scheme's name is case-insensitive (RFC 9110 §11.1).
    for scheme in ["BEARER", "bearer", "BeArEr"] {
        let req = h.http.post(format!("{}{QUEUE}", h.base)).header("authorization", format!("{scheme} {}", h.key)).body(body);
        assert_eq!(req.send().await.unwrap().status().as_u16(), 200, "{scheme}");
    }
    assert_eq!(raw(&h, "/v1/api/default/event-triggers/queue", Some(&h.key), body).await.0, 200);

    // A key of another project does not open this one.
    h.engine.create_project("other").await.unwrap();
    let other = h.engine.create_api_key("other", Role::Admin, "t").await.unwrap();
    assert_eq!(raw(&h, QUEUE, Some(&other), body).await.0, 401);
    assert_eq!(raw(&h, "/v1/api/other/eventing/queue", Some(&other), body).await.0, 200);

    // A queue-role key may queue but not manage triggers.
    let queue_key = h.engine.create_api_key("default", Role::Queue, "t").await.unwrap();
    assert_eq!(raw(&h, QUEUE, Some(&queue_key), body).await.0, 200);
    let resp = h.http.get(format!("{}/v1/api/default/eventing/triggers", h.base)).bearer_auth(&queue_key);
    assert_eq!(resp.send().await.unwrap().status().as_u16(), 403);

    // An HS256 JWT signed with the project secret; a wrong secret or an expired token fails.
    let secret: String = sqlx::query_scalar("SELECT jwt_secret FROM projects WHERE id = 'default'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let jwt = |secret: &str, exp: i64| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"id": "app", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let later = chrono::Utc::now().timestamp() + 600;
    assert_eq!(raw(&h, QUEUE, Some(&jwt(&secret, later)), body).await.0, 200);
    assert_eq!(raw(&h, QUEUE, Some(&jwt("wrong", later)), body).await.0, 401);
    assert_eq!(raw(&h, QUEUE, Some(&jwt(&secret, later - 3600)), body).await.0, 401);
    // Not valid before a time to come: refused until then.
    let early = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"id": "app", "exp": later, "nbf": later - 60}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    assert_eq!(raw(&h, QUEUE, Some(&early), body).await.0, 401);
    assert_eq!(event_count(&pool).await, 8);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn bad_input_gets_a_clear_4xx_and_stores_nothing(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let cases: Vec<(String, u16, &str)> = vec![
        ("not json".into(), 400, "not valid JSON"),
        ("".into(), 400, "empty"),
        ("[1, 2]".into(), 400, "JSON object"),
        ("{}".into(), 400, "`type` is required"),
        (r#"{"type": ""}"#.into(), 400, "`type` must not be empty"),
        (json!({"type": "x".repeat(129)}).to_string(), 400, "limit is 128"),
        (r#"{"type": "t", "delay": -5}"#.into(), 400, "`delay`"),
        (r#"{"type": "t", "delay": "soon"}"#.into(), 400, "`delay`"),
        (r#"{"type": "t", "delay": 1e300}"#.into(), 400, "`delay`"),
        (r#"{"type": "t", "timestamp": "next tuesday"}"#.into(), 400, "`timestamp`"),
        (r#"{"type": "DB_INSERT"}"#.into(), 400, "cannot be queued"),
        (format!(r#"{{"type": "t", "data": "{}"}}"#, "x".repeat(70 * 1024)), 413, "larger than the limit"),
        ("[".repeat(10_000), 400, "not valid JSON"),
    ];
    for (body, status, message) in cases {
        let (s, b) = raw(&h, QUEUE, Some(&h.key), &body).await;
        let shown = &body[..body.len().min(40)];
        assert_eq!(s, status, "{shown}: {b}");
        assert!(b["error"].as_str().unwrap().contains(message), "{shown}: {b}");
    }
    let (s, b) = raw(&h, QUEUE, Some(&h.key), r#"{"type": "t", "isSynchronous": true, "delay": 5}"#).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(event_count(&pool).await, 0);

    // A trigger URL that is not http(s) is refused with the field named.
    let (s, b) = h
        .post("/v1/api/default/eventing/triggers", json!({"name": "x", "type": "t", "url": "file:///etc/passwd"}))
        .await;
    assert_eq!(s, 422);
    assert!(b["error"].as_str().unwrap().contains("`url` must use http or https"), "{b}");
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn an_idempotency_key_queues_once(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    h.trigger("t", "t", &rx.url("/x"), json!({})).await;
    let (_, first) = h.queue(json!({"type": "t", "idempotencyKey": "order-1"})).await;
    let (_, again) = h.queue(json!({"type": "t", "idempotencyKey": "order-1", "data": 2})).await;
    assert_eq!(first, again);
    let (_, other) = h.queue(json!({"type": "t", "idempotencyKey": "order-2"})).await;
    assert_ne!(first["eventId"], other["eventId"]);
    h.settled(first["eventId"].as_str().unwrap()).await;
    h.settled(other["eventId"].as_str().unwrap()).await;
    assert_eq!(rx.count(), 2);
    assert_eq!(event_count(&pool).await, 2);

    // After 24 h the key is free again (the key's own time counts, kept apart from the event).
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'order-1'")
        .execute(&pool)
        .await
        .unwrap();
    let (_, fresh) = h.queue(json!({"type": "t", "idempotencyKey": "order-1"})).await;
    assert_ne!(fresh["eventId"], first["eventId"]);
    let (_, again) = h.queue(json!({"type": "t", "idempotencyKey": "order-1"})).await;
    assert_eq!(again["eventId"], fresh["eventId"], "the key names its new event");
    // Retention forgets keys past 24 h; the others stay.
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'order-2'")
        .execute(&pool)
        .await
        .unwrap();
    h.engine.apply_retention().await.unwrap();
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys ORDER BY key").fetch_all(&pool).await.unwrap();
    assert_eq!(keys, ["order-1"]);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn the_batch_form_is_all_or_nothing(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    h.trigger("a", "t", &rx.url("/a"), json!({})).await;
    h.trigger("b", "t", &rx.url("/b"), json!({})).await;
    let batch = "/v1/api/default/eventing/queue/batch";

    let (s, b) = h.post(batch, json!({"events": [{"type": "t"}, {"type": ""}, {"type": "t"}]})).await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().starts_with("events[1]: "), "{b}");
    assert_eq!(event_count(&pool).await, 0);

    let too_many: Vec<_> = (0..1001).map(|_| json!({"type": "t"})).collect();
    assert_eq!(h.post(batch, json!({"events": too_many})).await.0, 400);

    let events: Vec<_> = (0..100).map(|i| json!({"type": "t", "data": {"i": i}})).collect();
    let (s, b) = h.post(batch, json!({"events": events})).await;
    assert_eq!(s, 200, "{b}");
    let queued = b["events"].as_array().unwrap();
    assert_eq!(queued.len(), 100);
    assert!(queued.iter().all(|q| q["triggers"] == 2));
    common::wait_for(Duration::from_secs(20), || async { (rx.count() == 200).then_some(()) }).await;
    let unfinished: i64 = sqlx::query_scalar("SELECT count(*) FROM event_logs WHERE status <> 'processed'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let unfinished = common::wait_for(Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM event_logs WHERE status <> 'processed'")
                .fetch_one(&pool)
                .await
                .unwrap();
            (n == 0).then_some(n)
        }
    })
    .await
    .min(unfinished);
    assert_eq!(unfinished, 0);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn synchronous_events_return_the_webhook_response(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    rx.always(Reply::json(200, json!({"response": {"greeting": "hello"}})));
    h.trigger("answer", "ask", &rx.url("/x"), json!({})).await;
    let (s, b) = h.queue(json!({"type": "ask", "data": {"q": 1}, "isSynchronous": true})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["result"], json!({"greeting": "hello"}));
    assert_eq!(b["deliveries"][0]["trigger"], "answer");
    assert_eq!(b["deliveries"][0]["status"], "processed");
    assert_eq!(b["deliveries"][0]["statusCode"], 200);
    // Persisted like any other event.
    assert_eq!(h.statuses(b["eventId"].as_str().unwrap()).await, vec![Status::Processed]);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn synchronous_retries_then_succeeds(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    rx.script([Reply::status(500)]);
    rx.always(Reply::json(200, json!({"response": 7})));
    h.trigger("t", "ask", &rx.url("/x"), json!({"retries": 2})).await;
    let (s, b) = h.queue(json!({"type": "ask", "isSynchronous": true})).await;
    assert_eq!((s, &b["result"]), (200, &json!(7)), "{b}");
    assert_eq!(rx.count(), 2);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn synchronous_failure_timeout_and_no_trigger(pool: PgPool) {
    let mut config = common::test_config();
    config.sync_timeout = Duration::from_millis(700);
    let h = Herald::start_with(pool, config).await;
    let rx = Receiver::start().await;

    let (s, b) = h.queue(json!({"type": "nobody-listens", "isSynchronous": true})).await;
    assert_eq!(s, 404, "{b}");
    assert!(b["error"].as_str().unwrap().contains("no enabled trigger"));

    h.trigger("broken", "fails", &rx.url("/broken"), json!({"retries": 1})).await;
    rx.script([Reply::status(500), Reply::status(500)]);
    let (s, b) = h.queue(json!({"type": "fails", "isSynchronous": true})).await;
    assert_eq!(s, 502, "{b}");
    assert_eq!(b["error"], "every delivery failed");
    assert_eq!(b["result"], serde_json::Value::Null);
    assert_eq!(b["deliveries"][0]["status"], "failed");
    assert_eq!(b["deliveries"][0]["statusCode"], 500);

    h.trigger("slow", "slow", &rx.url("/slow"), json!({"timeoutMs": 3000})).await;
    rx.script([Reply::json(200, json!({"response": 1})).delayed(Duration::from_millis(1500))]);
    let (s, b) = h.queue(json!({"type": "slow", "isSynchronous": true})).await;
    assert_eq!(s, 504, "{b}");
    let id = b["eventId"].as_str().unwrap();
    // The delivery goes on in the background and ends processed.
    assert_eq!(h.settled(id).await, vec![Status::Processed]);
}

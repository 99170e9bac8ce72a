//! The management API: triggers, the history with filters and pagination,
//! detail, redeliver, cancel, replay, and project isolation.
#![cfg(feature = "ssr")]

mod common;

use std::time::{Duration, Instant};

use common::{wait_for, Herald, Receiver, Reply};
use herald::engine::projects::Role;
use herald::model::Status;
use serde_json::json;
use sqlx::PgPool;

const API: &str = "/v1/api/default/eventing";

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn trigger_crud(pool: PgPool) {
    let h = Herald::start(pool).await;
    let (s, b) = h.post(&format!("{API}/triggers"), json!({"name": "a", "type": "t", "url": "http://x.test/"})).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!((b["retries"].as_i64(), b["timeoutMs"].as_i64(), b["source"].as_str()), (Some(3), Some(5000), Some("custom")));
    let (s, b) = h.post(&format!("{API}/triggers"), json!({"name": "a", "type": "t", "url": "http://x.test/"})).await;
    assert_eq!(s, 409, "{b}");
    let put = h.http.put(format!("{}{API}/triggers/a", h.base)).json(&json!({"type": "u", "url": "https://y.test/", "retries": 0}));
    let (s, b) = h.send(put).await;
    assert_eq!((s, b["type"].as_str(), b["retries"].as_i64()), (200, Some("u"), Some(0)), "{b}");
    let (s, b) = h.send(h.http.get(format!("{}{API}/triggers/a", h.base))).await;
    assert_eq!((s, b["url"].as_str()), (200, Some("https://y.test/")));
    let (s, b) = h.send(h.http.get(format!("{}{API}/triggers", h.base))).await;
    assert_eq!((s, b["items"].as_array().unwrap().len()), (200, 1));
    assert_eq!(h.send(h.http.get(format!("{}{API}/triggers/nope", h.base))).await.0, 404);
    let (s, b) = h.post(&format!("{API}/triggers"), json!({"name": "b", "type": "t", "url": "http://x.test/", "bogus": 1})).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"].as_str().unwrap().contains("bogus"), "{b}");
    let (s, b) = h.post(&format!("{API}/triggers"), json!({"name": "b", "type": "t", "url": "http://x.test/", "retries": 99})).await;
    assert_eq!(s, 422, "{b}");
    assert!(b["error"].as_str().unwrap().contains("`retries`"), "{b}");
    let (s, _) = h.post(&format!("{API}/triggers"), json!({"name": "b", "type": "t", "url": "http://x.test/", "retries": "3"})).await;
    assert_eq!(s, 400, "a wrong type is a malformed body");
    // A type with spaces around it would never match the event its author means.
    for t in [" t1", "t1 ", "   "] {
        let (s, b) = h.post(&format!("{API}/triggers"), json!({"name": "sp", "type": t, "url": "http://x.test/"})).await;
        assert!((400..500).contains(&s), "{t:?}: {s} {b}");
        assert!(b["error"].as_str().unwrap().contains("`type`"), "{t:?}: {b}");
    }
    // A URL no request can be made to is refused when saved, not retried for ever.
    let long = json!({"name": "b", "type": "t", "url": format!("http://x.test/{}", "x".repeat(9_000))});
    let (s, b) = h.post(&format!("{API}/triggers"), long).await;
    assert!((400..500).contains(&s), "{s} {b}");
    assert!(b["error"].as_str().unwrap().contains("`url` is longer than 8192 bytes"), "{b}");
    let big = json!({"name": "b", "type": "t", "url": format!("http://x.test/{}", "x".repeat(70_000))});
    assert_eq!(h.post(&format!("{API}/triggers"), big).await.0, 413);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn history_filters_and_keyset_pages(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    h.trigger("ok", "a", &rx.url("/ok"), json!({})).await;
    h.trigger("later", "b", &rx.url("/later"), json!({})).await;
    for i in 0..5 {
        h.queue(json!({"type": "a", "data": i})).await;
        h.queue(json!({"type": "b", "delay": 3600})).await;
    }
    let get = |q: String| h.send(h.http.get(format!("{}{API}/logs?{q}", h.base)));
    let (s, b) = get("limit=4".into()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["items"].as_array().unwrap().len(), 4);
    // Walk every page: 10 rows, newest first, no repeats.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("limit=3&cursor={c}"),
            None => "limit=3".into(),
        };
        let (_, page) = get(q).await;
        for item in page["items"].as_array().unwrap() {
            seen.push((item["createdAt"].as_str().unwrap().to_string(), item["id"].as_str().unwrap().to_string()));
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 10);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(sorted.len(), 10);

    let (_, b) = get("status=scheduled".into()).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 5);
    assert!(b["items"].as_array().unwrap().iter().all(|i| i["trigger"] == "later" && i["type"] == "b"));
    let (_, b) = get("trigger=ok&type=a".into()).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 5);
    let one = b["items"][0]["eventId"].as_str().unwrap().to_string();
    let (_, b) = get(format!("event={one}")).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 1);
    assert_eq!(b["items"][0]["eventId"], one.as_str());
    assert_eq!(get("event=nope".into()).await.0, 400);
    let (_, b) = get("from=2000-01-01T00:00:00Z&to=2001-01-01T00:00:00Z".into()).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 0);
    let (s, b) = get("status=bogus".into()).await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().contains("`status`"));
    // A time PostgreSQL cannot hold, or a window that ends before it starts, is
    // bad input that names the field, in every read and in a replay.
    for (q, says) in [
        ("logs?from=-5000-01-01", "`from`"),
        ("logs?to=+200000-01-01T00:00:00Z", "`to`"),
        ("logs?from=2027-01-01&to=2026-01-01", "`from`"),
        ("dead-letters?from=-5000-01-01", "`from`"),
        ("dead-letters?from=2027-01-01&to=2026-01-01", "`from`"),
    ] {
        let (s, b) = h.send(h.http.get(format!("{}{API}/{q}", h.base))).await;
        assert_eq!(s, 400, "{q}: {b}");
        assert!(b["error"].as_str().unwrap().contains(says), "{q}: {b}");
    }
    h.trigger("r", "r", "http://x.test/", json!({})).await;
    for body in [json!({"from": "-5000-01-01"}), json!({"from": "2027-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"})] {
        let (s, b) = h.post(&format!("{API}/triggers/r/replay"), body.clone()).await;
        assert_eq!(s, 400, "{body}: {b}");
        assert!(b["error"].as_str().unwrap().contains("`from`"), "{body}: {b}");
    }
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn detail_redeliver_cancel_and_replay(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    rx.script([Reply::status(500)]);
    h.trigger("t", "t", &rx.url("/x"), json!({"retries": 0})).await;
    let (_, q) = h.queue(json!({"type": "t", "data": {"n": 1}})).await;
    let event = q["eventId"].as_str().unwrap();
    assert_eq!(h.settled(event).await, vec![Status::Failed]);
    let id = h.logs(event).await[0].id;

    let (s, d) = h.send(h.http.get(format!("{}{API}/logs/{id}", h.base))).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["data"], json!({"n": 1}));
    assert_eq!(d["status"], "failed");
    assert_eq!(d["invocations"][0]["statusCode"], 500);
    assert!(d["invocations"][0]["requestHeaders"]["webhook-signature"].as_str().unwrap().starts_with("v1,"));

    // Redeliver: a fresh set of attempts; the receiver now answers 200.
    let (s, d) = h.post(&format!("{API}/logs/{id}/redeliver"), json!({})).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(h.settled(event).await, vec![Status::Processed]);
    let (_, d) = h.send(h.http.get(format!("{}{API}/logs/{id}", h.base))).await;
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["invocations"].as_array().unwrap().len(), 2);

    // Cancel works on scheduled work only.
    let (s, _) = h.post(&format!("{API}/logs/{id}/cancel"), json!({})).await;
    assert_eq!(s, 409);
    let (_, q) = h.queue(json!({"type": "t", "delay": 3600})).await;
    let later = h.logs(q["eventId"].as_str().unwrap()).await[0].id;
    let (s, d) = h.post(&format!("{API}/logs/{later}/cancel"), json!({})).await;
    assert_eq!((s, d["status"].as_str()), (200, Some("cancelled")), "{d}");
    assert_eq!(h.post(&format!("{API}/logs/00000000-0000-0000-0000-000000000000/cancel"), json!({})).await.0, 404);
    assert_eq!(h.post(&format!("{API}/logs/not-a-uuid/redeliver"), json!({})).await.0, 404);

    // Replay: every failed event log of the trigger in the window.
    rx.script([Reply::status(500), Reply::status(500)]);
    let (_, a) = h.queue(json!({"type": "t"})).await;
    let (_, b) = h.queue(json!({"type": "t"})).await;
    h.settled(a["eventId"].as_str().unwrap()).await;
    h.settled(b["eventId"].as_str().unwrap()).await;
    let (s, r) = h.post(&format!("{API}/triggers/t/replay"), json!({"from": "2000-01-01T00:00:00Z"})).await;
    assert_eq!((s, r["replayed"].as_u64()), (200, Some(2)), "{r}");
    assert_eq!(h.settled(a["eventId"].as_str().unwrap()).await, vec![Status::Processed]);
    assert_eq!(h.settled(b["eventId"].as_str().unwrap()).await, vec![Status::Processed]);
    assert_eq!(h.post(&format!("{API}/triggers/nope/replay"), json!({})).await.0, 404);
    // A body that is not an object, or a key replay does not take, would have
    // replayed every failed log of the trigger: it is refused, naming the problem.
    for (body, says) in [(json!([1]), "object"), (json!("x"), "object"), (json!({"form": "2000-01-01T00:00:00Z"}), "`form`")] {
        let (s, r) = h.post(&format!("{API}/triggers/t/replay"), body.clone()).await;
        assert_eq!(s, 400, "{body}: {r}");
        assert!(r["error"].as_str().unwrap().contains(says), "{body}: {r}");
    }
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn no_route_crosses_projects(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    h.trigger("t", "t", &rx.url("/x"), json!({})).await;
    let (_, q) = h.queue(json!({"type": "t"})).await;
    let log = h.logs(q["eventId"].as_str().unwrap()).await[0].id;
    h.engine.create_project("other").await.unwrap();
    let other = h.engine.create_api_key("other", Role::Admin, "t").await.unwrap();

    // The other project's admin key, on default's routes: refused.
    let routes = [
        ("GET", format!("{API}/triggers")),
        ("POST", format!("{API}/triggers")),
        ("GET", format!("{API}/triggers/t")),
        ("PUT", format!("{API}/triggers/t")),
        ("DELETE", format!("{API}/triggers/t")),
        ("POST", format!("{API}/triggers/t/replay")),
        ("GET", format!("{API}/logs")),
        ("GET", format!("{API}/logs/{log}")),
        ("POST", format!("{API}/logs/{log}/redeliver")),
        ("POST", format!("{API}/logs/{log}/cancel")),
        ("POST", format!("{API}/queue")),
        ("POST", format!("{API}/queue/batch")),
        ("POST", "/v1/api/default/event-triggers/queue".to_string()),
    ];
    for (method, path) in &routes {
        let req = h.http.request(method.parse().unwrap(), format!("{}{path}", h.base)).bearer_auth(&other).json(&json!({}));
        assert_eq!(req.send().await.unwrap().status().as_u16(), 401, "{method} {path}");
    }
    // And on its own routes, it sees none of default's data.
    let mine = "/v1/api/other/eventing";
    let get = |p: String| h.http.get(format!("{}{p}", h.base)).bearer_auth(&other).send();
    let b: serde_json::Value = get(format!("{mine}/logs")).await.unwrap().json().await.unwrap();
    assert_eq!(b["items"].as_array().unwrap().len(), 0);
    assert_eq!(get(format!("{mine}/logs/{log}")).await.unwrap().status().as_u16(), 404);
    assert_eq!(get(format!("{mine}/triggers/t")).await.unwrap().status().as_u16(), 404);
    let redeliver = h.http.post(format!("{}{mine}/logs/{log}/redeliver", h.base)).bearer_auth(&other).send();
    assert_eq!(redeliver.await.unwrap().status().as_u16(), 404);
    let cancel = h.http.post(format!("{}{mine}/logs/{log}/cancel", h.base)).bearer_auth(&other).send();
    assert_eq!(cancel.await.unwrap().status().as_u16(), 404);
    // Queueing type "t" into "other" reaches none of default's triggers.
    let (s, b) = {
        let r = h.http.post(format!("{}{mine}/queue", h.base)).bearer_auth(&other).json(&json!({"type": "t"})).send().await.unwrap();
        (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
    };
    assert_eq!((s, b["triggers"].as_u64()), (200, Some(0)));
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn metrics_appear_after_deliveries(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    rx.script([Reply::status(500)]);
    h.trigger("metered", "metered", &rx.url("/x"), json!({"retries": 1})).await;
    let (_, q) = h.queue(json!({"type": "metered"})).await;
    assert_eq!(h.settled(q["eventId"].as_str().unwrap()).await, vec![Status::Processed]);
    let resp = h.http.get(format!("{}/metrics", h.base)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    let value = |prefix: &str, labels: &[&str]| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix) && labels.iter().all(|lb| l.contains(lb)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} {labels:?} in:\n{text}"))
    };
    let t = "trigger=\"metered\"";
    assert_eq!(value("herald_deliveries_total", &[t, "outcome=\"retry\""]), 1.0);
    assert_eq!(value("herald_deliveries_total", &[t, "outcome=\"processed\""]), 1.0);
    assert!(value("herald_events_queued_total", &["project=\"default\""]) >= 1.0);
    assert!(value("herald_attempt_duration_seconds_count", &["outcome=\"processed\""]) >= 1.0);
    assert!(value("herald_delivery_lag_seconds_count", &[]) >= 1.0);
    assert!(text.contains("herald_due_unclaimed "), "{text}");
    assert!(text.contains("herald_deliveries_in_flight "), "{text}");
    assert!(value("herald_db_pool_connections", &["state=\"max\""]) >= 1.0);
}

/// Rotating the JWT secret refuses JWTs signed with the old one; rotating the
/// signing secret changes what the next delivery is signed with.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn rotating_secrets_takes_effect_at_once(pool: PgPool) {
    use herald::engine::projects::SecretKind;
    let h = Herald::start(pool).await;
    let (old_jwt, old_signing) = h.engine.project_secrets("default").await.unwrap();
    let token = |secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"role": "queue", "exp": chrono::Utc::now().timestamp() + 600}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let old_token = token(&old_jwt);
    assert_eq!(h.engine.authenticate("default", Some(&old_token)).await.unwrap(), Role::Queue);

    let new_jwt = h.engine.rotate_secret("default", SecretKind::Jwt).await.unwrap();
    assert_ne!(new_jwt, old_jwt);
    assert!(h.engine.authenticate("default", Some(&old_token)).await.is_err(), "the old JWT must stop working");
    assert_eq!(h.engine.authenticate("default", Some(&token(&new_jwt))).await.unwrap(), Role::Queue);

    let new_signing = h.engine.rotate_secret("default", SecretKind::Signing).await.unwrap();
    assert!(new_signing.starts_with("whsec_") && new_signing != old_signing);
    assert_eq!(h.engine.project_secrets("default").await.unwrap(), (new_jwt, new_signing));

    let err = h.engine.rotate_secret("nope", SecretKind::Jwt).await.unwrap_err();
    assert!(err.to_string().contains("unknown project 'nope'"), "{err}");
}

/// Password changes need the current password and a valid new one.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn changing_the_admin_password(pool: PgPool) {
    let h = Herald::start(pool).await;
    h.engine.set_admin_password("ops", "first-password").await.unwrap();
    let wrong = h.engine.change_admin_password("ops", "not-it", "second-password").await.unwrap_err();
    assert!(wrong.to_string().contains("current password is wrong"), "{wrong}");
    let short = h.engine.change_admin_password("ops", "first-password", "short").await.unwrap_err();
    assert!(short.to_string().contains("at least 8"), "{short}");
    h.engine.change_admin_password("ops", "first-password", "second-password").await.unwrap();
    assert!(!h.engine.check_admin_password("ops", "first-password").await.unwrap());
    assert!(h.engine.check_admin_password("ops", "second-password").await.unwrap());
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn api_keys_need_a_name(pool: PgPool) {
    let h = Herald::start(pool).await;
    let err = h.engine.create_api_key("default", Role::Queue, "  ").await.unwrap_err();
    assert!(err.to_string().contains("give the key a name"), "{err}");
    h.engine.create_project("second").await.unwrap();
    assert_eq!(h.engine.list_projects().await.unwrap(), vec!["default".to_string(), "second".to_string()]);
}

/// Credentials are remembered for a few seconds; a revocation on one node reaches
/// every other node at once.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_revoked_key_stops_working_on_every_node_at_once(pool: PgPool) {
    let a = Herald::start(pool.clone()).await;
    let b = Herald::start(pool.clone()).await;
    wait_for(Duration::from_secs(10), || async { b.engine.hears_notifications().then_some(()) }).await;
    let status = |key: String| {
        let b = &b;
        async move {
            let req = b.http.post(format!("{}{API}/queue", b.base)).bearer_auth(key).json(&json!({"type": "t"}));
            req.send().await.unwrap().status().as_u16()
        }
    };
    let key_id = |name: &'static str| {
        let a = &a;
        async move { a.engine.list_api_keys("default").await.unwrap().into_iter().find(|k| k.name == name).unwrap().id }
    };

    // Node B remembers a key it checked: revoked behind Herald's back (no NOTIFY),
    // it still works there for now.
    let quiet = a.engine.create_api_key("default", Role::Queue, "quiet").await.unwrap();
    assert_eq!(status(quiet.clone()).await, 200);
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1").bind(key_id("quiet").await).execute(&pool).await.unwrap();
    assert_eq!(status(quiet.clone()).await, 200, "node B answers from its cache");

    // Revoked through Herald on node A: node B refuses it well within the cache's 5 s.
    let key = a.engine.create_api_key("default", Role::Queue, "shared").await.unwrap();
    assert_eq!(status(key.clone()).await, 200);
    a.engine.revoke_api_key("default", key_id("shared").await).await.unwrap();
    let revoked_at = Instant::now();
    wait_for(Duration::from_secs(3), || async { (status(key.clone()).await == 401).then_some(()) }).await;
    assert!(revoked_at.elapsed() < herald::engine::projects::AUTH_CACHE_TTL, "{:?}", revoked_at.elapsed());
    // The same message made node B forget the quietly revoked key too.
    assert_eq!(status(quiet).await, 401);
}

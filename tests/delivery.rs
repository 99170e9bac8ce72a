//! Delivery against a real receiver: fan-out, the wire format, retries,
//! Retry-After, 410, timeouts, scheduling and misbehaving webhooks.
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{wait_for, Herald, Receiver, Reply};
use hmac::{Hmac, Mac};
use herald::model::Status;
use serde_json::json;
use sha2::Sha256;
use sqlx::PgPool;

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn fans_out_to_every_enabled_trigger_of_the_type(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    h.trigger("a", "user-signed-up", &rx.url("/a"), json!({})).await;
    h.trigger("b", "user-signed-up", &rx.url("/b"), json!({})).await;
    h.trigger("off", "user-signed-up", &rx.url("/off"), json!({"enabled": false})).await;
    h.trigger("other", "something-else", &rx.url("/other"), json!({})).await;

    let (status, reply) = h.queue(json!({"type": "user-signed-up", "data": {"n": 1}})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["triggers"], 2);
    let id = reply["eventId"].as_str().unwrap();
    assert_eq!(h.settled(id).await, vec![Status::Processed, Status::Processed]);
    let mut paths: Vec<String> = rx.received().into_iter().map(|r| r.path).collect();
    paths.sort();
    assert_eq!(paths, vec!["/a", "/b"]);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn sends_the_exact_cloudevent_with_verifiable_signatures(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    let secrets = json!({"X-Tenant": "acme", "Proxy-Authorization": "Basic UFJPWFk=", "X-Auth": "AUTHSECRET"});
    h.trigger("hook", "order-paid", &rx.url("/hook"), json!({"headers": secrets})).await;
    let (_, reply) = h.queue(json!({"type": "order-paid", "data": {"order": 42, "items": ["a"]}})).await;
    let event_id = reply["eventId"].as_str().unwrap();
    h.settled(event_id).await;

    let log = &h.logs(event_id).await[0];
    let got = &rx.received()[0];
    let body = got.json();
    let node = h.engine.node_id().to_string();
    assert_eq!(body["specversion"], "1.0-rc1");
    assert_eq!(body["id"], log.id.to_string());
    assert_eq!(body["type"], "order-paid");
    assert_eq!(body["source"], node);
    assert_eq!(body["data"], json!({"order": 42, "items": ["a"]}));
    let time = chrono::DateTime::parse_from_rfc3339(body["time"].as_str().unwrap()).unwrap();
    assert!((time.timestamp_millis() - log.created_at.timestamp_millis()).abs() < 1000);
    assert_eq!(body.as_object().unwrap().len(), 6, "no extra keys: {body}");

    assert_eq!(got.header("content-type"), "application/json");
    assert_eq!(got.header("x-tenant"), "acme");
    assert_eq!(got.header("webhook-id"), log.id.to_string());

    let (jwt_secret, signing_secret): (String, String) =
        sqlx::query_as("SELECT jwt_secret, signing_secret FROM projects WHERE id = 'default'")
            .fetch_one(&pool)
            .await
            .unwrap();

    // Standard Webhooks: HMAC-SHA256 over "id.timestamp.body" with the decoded secret.
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(signing_secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(got.header("webhook-id").as_bytes());
    mac.update(b".");
    mac.update(got.header("webhook-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&got.body);
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    assert_eq!(got.header("webhook-signature"), expected);
    let ts: i64 = got.header("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);

    // X-SC-Token: HS256 with the project secret, naming this node.
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.required_spec_claims = ["exp".to_string()].into();
    let token = jsonwebtoken::decode::<serde_json::Value>(
        got.header("x-sc-token"),
        &jsonwebtoken::DecodingKey::from_secret(jwt_secret.as_bytes()),
        &v,
    )
    .expect("X-SC-Token verifies with the project secret");
    assert_eq!(token.claims["id"], node);
    assert_eq!(token.claims["role"], "SpaceCloud");
    assert_eq!(token.claims["exp"].as_i64().unwrap() - token.claims["iat"].as_i64().unwrap(), 1800);

    // The invocation log has the request, with the token redacted, and the response.
    let inv = herald::store::history::invocations(&pool, log.id).await.unwrap();
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0].status_code, Some(200));
    assert_eq!(inv[0].request_headers["x-sc-token"], "[redacted]");
    // Credentials the trigger adds are kept out of the history too; they were sent.
    assert_eq!(inv[0].request_headers["proxy-authorization"], "[redacted]");
    assert_eq!(inv[0].request_headers["x-auth"], "[redacted]");
    assert_eq!(inv[0].request_headers["x-tenant"], "acme");
    assert_eq!(got.header("proxy-authorization"), "Basic UFJPWFk=");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&inv[0].request_body).unwrap(), body);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn retries_until_the_attempts_run_out(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    rx.always(Reply::status(500));
    h.trigger("flaky", "t", &rx.url("/x"), json!({"retries": 2})).await;
    let (_, reply) = h.queue(json!({"type": "t"})).await;
    let id = reply["eventId"].as_str().unwrap();
    assert_eq!(h.settled(id).await, vec![Status::Failed]);
    assert_eq!(rx.count(), 3, "retries + 1 attempts");
    let log = &h.logs(id).await[0];
    assert_eq!(log.attempts, 3);
    assert_eq!(log.last_error.as_deref(), Some("HTTP 500 Internal Server Error"));
    let inv = herald::store::history::invocations(&pool, log.id).await.unwrap();
    assert_eq!(inv.iter().map(|i| i.status_code).collect::<Vec<_>>(), vec![Some(500); 3]);
    // Every retry carries the same webhook-id, so receivers can de-duplicate.
    let ids: std::collections::HashSet<String> =
        rx.received().iter().map(|r| r.header("webhook-id").to_string()).collect();
    assert_eq!(ids.len(), 1);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_500_then_a_200_ends_processed(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    rx.script([Reply::status(500), Reply::status(503)]);
    h.trigger("t", "t", &rx.url("/x"), json!({"retries": 3})).await;
    let (_, reply) = h.queue(json!({"type": "t"})).await;
    let id = reply["eventId"].as_str().unwrap();
    assert_eq!(h.settled(id).await, vec![Status::Processed]);
    assert_eq!(rx.count(), 3);
    assert_eq!(h.logs(id).await[0].attempts, 3);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn retry_after_replaces_the_backoff(pool: PgPool) {
    // A base wait of one minute: only Retry-After can explain a retry within seconds.
    let mut config = common::test_config();
    config.retry.base = Duration::from_secs(60);
    let h = Herald::start_with(pool, config).await;
    let rx = Receiver::start().await;
    rx.script([Reply::status(429).header("retry-after", "1")]);
    h.trigger("t", "t", &rx.url("/x"), json!({})).await;
    let (_, reply) = h.queue(json!({"type": "t"})).await;
    let id = reply["eventId"].as_str().unwrap();
    assert_eq!(h.settled(id).await, vec![Status::Processed]);
    let got = rx.received();
    assert_eq!(got.len(), 2);
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(950) && gap < Duration::from_secs(5), "{gap:?}");
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn gone_fails_at_once(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    rx.always(Reply::status(410));
    h.trigger("t", "t", &rx.url("/x"), json!({"retries": 5})).await;
    let (_, reply) = h.queue(json!({"type": "t"})).await;
    let id = reply["eventId"].as_str().unwrap();
    assert_eq!(h.settled(id).await, vec![Status::Failed]);
    assert_eq!(rx.count(), 1);
    assert_eq!(h.logs(id).await[0].attempts, 1);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_slow_webhook_times_out_and_is_recorded(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    rx.always(Reply::status(200).delayed(Duration::from_secs(3)));
    h.trigger("slow", "t", &rx.url("/x"), json!({"retries": 1, "timeoutMs": 200})).await;
    let (_, reply) = h.queue(json!({"type": "t"})).await;
    let id = reply["eventId"].as_str().unwrap();
    assert_eq!(h.settled(id).await, vec![Status::Failed]);
    let log = &h.logs(id).await[0];
    let inv = herald::store::history::invocations(&pool, log.id).await.unwrap();
    assert_eq!(inv.len(), 2);
    for i in &inv {
        assert_eq!(i.error.as_deref(), Some("timed out after 200 ms"));
        assert!(i.duration_ms >= 190 && i.duration_ms < 2000, "{}", i.duration_ms);
        assert_eq!(i.status_code, None);
    }
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn connection_errors_redirects_and_huge_bodies_are_failed_attempts(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    // Nothing listens on a port we bound and released.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/x", l.local_addr().unwrap())
    };
    h.trigger("refused", "t", &closed, json!({"retries": 0})).await;
    rx.script([Reply::status(302).header("location", "http://example.invalid/")]);
    h.trigger("redirect", "t", &rx.url("/redirect"), json!({"retries": 0})).await;
    let (_, reply) = h.queue(json!({"type": "t"})).await;
    let id = reply["eventId"].as_str().unwrap();
    assert_eq!(h.settled(id).await, vec![Status::Failed, Status::Failed]);
    let logs = h.logs(id).await;
    let refused = herald::store::history::invocations(&pool, logs[1].id).await.unwrap();
    assert!(refused[0].error.as_deref().unwrap().contains("onnect"), "{:?}", refused[0].error);
    let redirect = herald::store::history::invocations(&pool, logs[0].id).await.unwrap();
    assert_eq!(redirect[0].status_code, Some(302));

    // A 2xx with a huge body is a success; only 64 KiB of it is read and kept.
    let big = "x".repeat(5 * 1024 * 1024);
    rx.script([Reply { body: big, ..Reply::status(200) }]);
    h.trigger("big", "big", &rx.url("/big"), json!({})).await;
    let (_, reply) = h.queue(json!({"type": "big"})).await;
    let id = reply["eventId"].as_str().unwrap();
    assert_eq!(h.settled(id).await, vec![Status::Processed]);
    let inv = herald::store::history::invocations(&pool, h.logs(id).await[0].id).await.unwrap();
    assert_eq!(inv[0].response_body.as_ref().unwrap().len(), 64 * 1024);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn scheduled_events_wait_then_arrive_on_time(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    h.trigger("later", "reminder", &rx.url("/x"), json!({})).await;
    let sent = std::time::Instant::now();
    let (status, reply) = h.queue(json!({"type": "reminder", "delay": 1.5})).await;
    assert_eq!(status, 200);
    let id = reply["eventId"].as_str().unwrap().to_string();
    assert_eq!(h.statuses(&id).await, vec![Status::Scheduled]);
    let deliver_at = chrono::DateTime::parse_from_rfc3339(reply["deliverAt"].as_str().unwrap()).unwrap();
    assert!((deliver_at.timestamp_millis() - chrono::Utc::now().timestamp_millis() - 1500).abs() < 500);

    wait_for(Duration::from_secs(10), || async { (rx.count() == 1).then_some(()) }).await;
    let waited = rx.received()[0].at - sent;
    assert!(waited >= Duration::from_millis(1400), "too early: {waited:?}");
    assert!(waited < Duration::from_millis(2500), "more than 1 s late: {waited:?}");
    assert_eq!(h.settled(&id).await, vec![Status::Processed]);

    // A timestamp in epoch seconds, in the past: delivered at once.
    let (_, reply) = h.queue(json!({"type": "reminder", "timestamp": 1587902400})).await;
    assert_eq!(reply["deliverAt"], "2020-04-26T12:00:00Z");
    assert_eq!(h.settled(reply["eventId"].as_str().unwrap()).await, vec![Status::Processed]);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn deleting_a_trigger_cancels_its_pending_logs(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    h.trigger("doomed", "t", &rx.url("/x"), json!({})).await;
    let (_, reply) = h.queue(json!({"type": "t", "delay": 3600})).await;
    let id = reply["eventId"].as_str().unwrap();
    let (status, body) = h.send(h.http.delete(format!("{}/v1/api/default/eventing/triggers/doomed", h.base))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cancelledEventLogs"], 1);
    assert_eq!(h.statuses(id).await, vec![Status::Cancelled]);
    // Nothing matches the type any more: the event is stored with no deliveries.
    let (_, reply) = h.queue(json!({"type": "t"})).await;
    assert_eq!(reply["triggers"], 0);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn the_ssrf_guard_refuses_private_addresses_at_delivery_time(pool: PgPool) {
    use herald::engine::guard::NetworkGuard;
    let mut config = common::test_config();
    config.network_guard = Some(NetworkGuard::default());
    let h = Herald::start_with(pool.clone(), config).await;
    let rx = Receiver::start().await;
    let port = rx.base.rsplit(':').next().unwrap().to_string();
    // An IP literal, and a name that resolves to loopback: both refused, at once.
    h.trigger("literal", "t", &rx.url("/x"), json!({"retries": 3})).await;
    h.trigger("named", "t", &format!("http://localhost:{port}/x"), json!({"retries": 3})).await;
    let (_, reply) = h.queue(json!({"type": "t"})).await;
    let id = reply["eventId"].as_str().unwrap();
    assert_eq!(h.settled(id).await, vec![Status::Failed, Status::Failed]);
    assert_eq!(rx.count(), 0);
    for log in h.logs(id).await {
        assert_eq!(log.attempts, 1, "a refused address is not retried");
        let inv = herald::store::history::invocations(&pool, log.id).await.unwrap();
        let err = inv[0].error.as_deref().unwrap();
        assert!(err.contains("HERALD_BLOCK_PRIVATE_NETWORKS"), "{err}");
    }

    // A network on the allow list gets through.
    let mut config = common::test_config();
    config.network_guard = Some(NetworkGuard { allowed: vec!["127.0.0.0/8".parse().unwrap()] });
    h.engine.shutdown().await;
    let allowed = Herald::start_with(pool, config).await;
    let (_, reply) = allowed.queue(json!({"type": "t"})).await;
    assert_eq!(allowed.settled(reply["eventId"].as_str().unwrap()).await, vec![Status::Processed, Status::Processed]);
    assert_eq!(rx.count(), 2);
}

/// The receiver gets the numbers the caller queued, digit for digit, whether the
/// event is delivered as it is stored or later from the database, and the
/// history shows them so: JSON numbers are not all f64s (an id of 30 digits, a
/// decimal with 34 significant digits).
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn numbers_arrive_exactly_as_queued(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    h.trigger("exact", "amounts", &rx.url("/n"), json!({})).await;
    let data = r#"{"big":123456789012345678901234567890,"dec":0.1000000000000000055511151231257827,"neg":-98765432109876543210,"u":18446744073709551615,"f":1.5}"#;
    let queue = |extra: &str| {
        let body = format!(r#"{{"type":"amounts","data":{data}{extra}}}"#);
        h.send(h.http.post(format!("{}/v1/api/default/eventing/queue", h.base)).body(body))
    };
    // Delivered as stored, and a second after, from the database.
    let (s, now) = queue("").await;
    assert_eq!(s, 200, "{now}");
    let (s, later) = queue(r#","delay":1"#).await;
    assert_eq!(s, 200, "{later}");
    for reply in [&now, &later] {
        h.settled(reply["eventId"].as_str().unwrap()).await;
    }
    // Key order is JSON's business, not the digits'.
    let exact = ["\"big\":123456789012345678901234567890", "\"dec\":0.1000000000000000055511151231257827",
        "\"neg\":-98765432109876543210", "\"u\":18446744073709551615", "\"f\":1.5"];
    let got = rx.received();
    assert_eq!(got.len(), 2);
    for r in &got {
        let body = String::from_utf8_lossy(&r.body);
        assert!(exact.iter().all(|n| body.contains(n)), "{body}");
    }
    let id = h.logs(now["eventId"].as_str().unwrap()).await[0].id;
    let detail = h.http.get(format!("{}/v1/api/default/eventing/logs/{id}", h.base)).bearer_auth(&h.key).send().await.unwrap();
    let text = detail.text().await.unwrap();
    assert!(exact.iter().all(|n| text.contains(n)), "{text}");
}

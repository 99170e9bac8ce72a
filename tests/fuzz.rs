//! A fuzzed queue API (issue: the fault-injection suite, item 5): random and
//! malformed bodies, wrong types, huge numbers, deep nesting and invalid UTF-8
//! go to the real handlers over HTTP. Every answer must be a 2xx or a 4xx with a
//! JSON error, never a 5xx, and Herald must stay healthy.
#![cfg(feature = "ssr")]

mod common;

use common::Herald;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use sqlx::PgPool;

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A queue body: usually a plausible `type`, then the other known keys with
/// values of any type, plus noise.
fn queue_body() -> impl Strategy<Value = Value> {
    let event_type = prop_oneof![3 => "[a-z][a-z.-]{0,20}".prop_map(Value::String), 1 => any_json()];
    let key = prop_oneof![
        Just("data"), Just("payload"), Just("timestamp"), Just("delay"),
        Just("isSynchronous"), Just("idempotencyKey"), Just("options"), Just("events"),
    ];
    (prop::option::weighted(0.9, event_type), prop::collection::vec((key, any_json()), 0..4)).prop_map(|(t, pairs)| {
        let mut body: serde_json::Map<String, Value> = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        if let Some(t) = t {
            body.insert("type".into(), t);
        }
        Value::Object(body)
    })
}

/// Raw bodies no JSON generator makes: invalid UTF-8, huge numbers, deep nesting.
fn raw_cases() -> Vec<Vec<u8>> {
    let mut cases: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, 0xfd],
        b"{\"type\": \"\xc3\x28\"}".to_vec(),
        b"{\"type\": \"t\", \"timestamp\": 1e400}".to_vec(),
        b"{\"type\": \"t\", \"delay\": 123456789012345678901234567890}".to_vec(),
        b"{\"type\": \"t\", \"timestamp\": -1}".to_vec(),
        b"{\"type\": \"t\", \"timestamp\": \"9999999-01-01T00:00:00Z\"}".to_vec(),
        b"{\"type\": \"t\"".to_vec(),
        b"null".to_vec(),
        b"".to_vec(),
        b"\"just a string\"".to_vec(),
        b"{\"type\": \"\\ud800\"}".to_vec(),
        b"{\"type\": \"t\", \"type\": 5}".to_vec(),
        b"{\"events\": []}".to_vec(),
    ];
    cases.push(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes());
    cases.push(format!("{{\"type\": \"t\", \"data\": {}1{}}}", "[".repeat(5_000), "]".repeat(5_000)).into_bytes());
    cases.push(format!("{{\"type\": \"{}\"}}", "x".repeat(10_000)).into_bytes());
    cases
}

async fn send(h: &Herald, path: &str, body: Vec<u8>) -> (u16, String) {
    let resp = h
        .http
        .post(format!("{}{}", h.base, path))
        .bearer_auth(&h.key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("Herald answers every request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

fn check(path: &str, body: &[u8], status: u16, reply: &str) {
    let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    assert!(status < 500, "{path} answered {status} to {shown}: {reply}");
    if status >= 400 {
        let v: Value = serde_json::from_str(reply).unwrap_or(Value::Null);
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{path} {status} without a JSON error: {reply}");
    }
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn random_and_malformed_bodies_get_4xx_never_5xx(pool: PgPool) {
    let h = Herald::start(pool).await;
    let paths = ["/v1/api/default/eventing/queue", "/v1/api/default/eventing/queue/batch", "/v1/api/default/eventing/triggers"];
    for body in raw_cases() {
        for path in paths {
            let (status, reply) = send(&h, path, body.clone()).await;
            check(path, &body, status, &reply);
        }
    }

    let mut runner = TestRunner::new(Config { cases: 400, ..Config::default() });
    let strategy = (queue_body(), any::<bool>());
    let mut accepted = 0;
    for _ in 0..400 {
        let (mut body, as_batch) = strategy.new_tree(&mut runner).unwrap().current();
        let path = if as_batch {
            body = json!({"events": [body]});
            paths[1]
        } else {
            paths[0]
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        let (status, reply) = send(&h, path, bytes.clone()).await;
        check(path, &bytes, status, &reply);
        accepted += usize::from(status == 200);
        // Anything with any JSON as the whole trigger body.
        let any = serde_json::to_vec(&any_json().new_tree(&mut runner).unwrap().current()).unwrap();
        let (status, reply) = send(&h, paths[2], any.clone()).await;
        check(paths[2], &any, status, &reply);
    }
    // The generator reaches valid bodies too, so the happy path was exercised.
    let (status, _) = send(&h, paths[0], br#"{"type": "fuzz-done"}"#.to_vec()).await;
    assert_eq!(status, 200, "Herald still queues after the fuzzing");
    let ready = h.http.get(format!("{}/readyz", h.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    eprintln!("fuzz: {accepted} of 400 generated queue bodies were valid and queued");
}

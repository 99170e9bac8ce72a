//! Edges every request goes through: request ids, CSRF on UI routes, limits.
#![cfg(feature = "ssr")]

mod common;

use common::Herald;
use sqlx::PgPool;

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn request_ids_are_returned_and_kept(pool: PgPool) {
    let h = Herald::start(pool).await;
    let resp = h.http.get(format!("{}/healthz", h.base)).send().await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "{id}");
    let resp = h.http.get(format!("{}/healthz", h.base)).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me-42");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn ui_routes_refuse_cross_site_writes(pool: PgPool) {
    let h = Herald::start(pool).await;
    let post = |origin: Option<String>| {
        let mut req = h.http.post(format!("{}/api/any_server_fn", h.base)).body("x=1");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    let refused = post(Some("http://evil.example".into())).await.unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("cross-site"));
    assert_eq!(post(None).await.unwrap().status().as_u16(), 403);
    // The same origin passes the guard (and then finds no such function).
    let same = post(Some(h.base.clone())).await.unwrap();
    assert_ne!(same.status().as_u16(), 403);
    // The bearer-token API is not subject to it.
    let api = h
        .http
        .post(format!("{}/v1/api/default/eventing/queue", h.base))
        .header("origin", "http://evil.example")
        .bearer_auth(&h.key)
        .json(&serde_json::json!({"type": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status().as_u16(), 200);
}

/// A mistyped API path is an API error that names it, whatever the method: not
/// the UI's cross-site refusal, nor its HTML page.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn an_unknown_api_endpoint_is_a_json_404_that_names_it(pool: PgPool) {
    let h = Herald::start(pool).await;
    for (method, path) in [
        ("PUT", "/v1/api/settings"),
        ("POST", "/v1/api/default/eventing/events"),
        ("GET", "/v1/api/default/eventing/nosuch"),
        ("DELETE", "/v1/api/default"),
    ] {
        let resp = h
            .http
            .request(method.parse().unwrap(), format!("{}{path}", h.base))
            .bearer_auth(&h.key)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{method} {path}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"), "{method} {path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(&format!("{method} {path}")), "{method} {path}: {error}");
        assert!(error.contains("/v1/openapi.json"), "{error}");
    }
    // A known path with a method it does not take is a 405, not a 404.
    let resp = h.http.delete(format!("{}/v1/api/default/eventing/queue", h.base)).bearer_auth(&h.key).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    // The UI's own refusal says what was missing when no Origin came at all.
    let resp = h.http.post(format!("{}/api/any_server_fn", h.base)).body("x=1").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("no Origin or Referer"), "{body}");
}

/// What the URL carries reaches SQL only as valid text: a NUL byte (`%00`), which
/// PostgreSQL cannot hold, in the project, a trigger's name or a filter is a 400
/// that names it, with or without a key; never a 500 and an ERROR in the log.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_nul_byte_in_the_url_is_a_clear_400(pool: PgPool) {
    let h = Herald::start(pool).await;
    let api = "/v1/api/default/eventing";
    for (method, path, key) in [
        ("GET", "/v1/api/a%00b/eventing/logs".to_string(), false),
        ("POST", "/v1/api/a%00b/eventing/queue".to_string(), false),
        ("GET", format!("{api}/logs?type=%00"), true),
        ("GET", format!("{api}/logs?trigger=a%00"), true),
        ("GET", format!("{api}/triggers/a%00b"), true),
        ("DELETE", format!("{api}/triggers/a%00b"), true),
        ("POST", format!("{api}/triggers/a%00b/replay"), true),
        ("GET", "/v1/api/default/files/a%00b".to_string(), true),
    ] {
        let mut req = h.http.request(method.parse().unwrap(), format!("{}{path}", h.base)).body("{}");
        if key {
            req = req.bearer_auth(&h.key);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{method} {path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("NUL"), "{method} {path}: {body}");
    }
}

/// An extractor's own rejection (a path that is not UTF-8, a query key given
/// twice) is a JSON error like every other, not axum's plain text.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn rejected_paths_and_queries_answer_in_json(pool: PgPool) {
    let h = Herald::start(pool).await;
    for path in [
        "/v1/api/default/eventing/triggers/%ff",
        "/v1/api/default/files/a%ffb",
        "/v1/api/default/eventing/dead-letters?from=1&from=2",
    ] {
        let resp = h.http.get(format!("{}{path}", h.base)).bearer_auth(&h.key).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{path}");
        let text = resp.text().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
        assert!(!body["error"].as_str().unwrap().is_empty(), "{path}: {body}");
    }
}

//! The OpenAPI document covers every route of the router, and every documented
//! route exists.
#![cfg(feature = "ssr")]

mod common;

use common::Herald;
use sqlx::PgPool;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// Every `(method, path)` registered with `.route(...)` in the API sources.
fn routes_in_source() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for rest in text.split(".route(\"").skip(1) {
            let (path, after) = rest.split_once('"').unwrap();
            // A catch-all `{*path}` is documented as `{path}`.
            let path = path.replace("{*", "{");
            // The handlers of this route: up to the end of its line.
            let chain = after.lines().next().unwrap_or("");
            for m in METHODS {
                let token = format!("{m}(");
                let mut at = 0;
                while let Some(i) = chain[at..].find(&token) {
                    let start = at + i;
                    let before = chain[..start].chars().last();
                    if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        found.push((m.to_string(), path.to_string()));
                    }
                    at = start + token.len();
                }
            }
        }
    }
    found
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn every_route_is_documented_and_every_documented_route_exists(pool: PgPool) {
    let h = Herald::start(pool).await;
    let doc: serde_json::Value =
        reqwest::get(format!("{}/v1/openapi.json", h.base)).await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();

    let routes = routes_in_source();
    assert!(routes.len() >= 16, "the scan found too few routes: {routes:?}");
    for (method, path) in &routes {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is not in the OpenAPI document");
    }

    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys().filter(|m| METHODS.contains(&m.as_str())) {
            let url = format!("{}{}", h.base, path)
                .replace("{project}", "default")
                .replace("{name}", "no-such-trigger")
                .replace("{id}", "00000000-0000-0000-0000-000000000000")
                .replace("{path}", "openapi-probe.txt");
            let resp = h.http.request(method.to_uppercase().parse().unwrap(), url).bearer_auth(&h.key).send().await.unwrap();
            let status = resp.status().as_u16();
            let html = resp.headers().get("content-type").is_some_and(|c| c.to_str().unwrap().starts_with("text/html"));
            assert!(status != 405 && !html, "{method} {path} is documented but not routed ({status})");
        }
    }
}

//! Issue 14, item 12: with the SSRF guard on, a system proxy (HTTP_PROXY) must not
//! resolve and connect on Herald's behalf, past the guard. Its own test binary:
//! the proxy setting is process-wide.
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use common::{Herald, Receiver};
use herald::engine::guard::NetworkGuard;
use herald::model::Status;
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn the_guard_ignores_a_system_proxy(pool: PgPool) {
    // The "proxy" is a recorder on loopback: a request proxied through it arrives
    // with the target's absolute URL.
    let proxy = Receiver::start().await;
    std::env::set_var("HTTP_PROXY", &proxy.base);
    std::env::set_var("http_proxy", &proxy.base);
    // The test's own calls to Herald go direct.
    std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
    std::env::set_var("no_proxy", "127.0.0.1,localhost");
    let mut config = common::test_config();
    config.network_guard = Some(NetworkGuard::default());
    let h = Herald::start_with(pool, config).await;
    // A name only an internal resolver knows, as in an SSRF attempt.
    h.trigger("internal", "t", "http://metadata.internal.invalid/latest/meta-data", json!({"retries": 0})).await;
    let (_, reply) = h.queue(json!({"type": "t"})).await;
    let statuses = h.settled(reply["eventId"].as_str().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.count(), 0, "the proxy was asked to fetch {:?}", proxy.received().first().map(|r| &r.path));
    assert_eq!(statuses, vec![Status::Failed]);
}

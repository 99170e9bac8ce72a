//! Wiring shared by `main` and the tests: the node id, the engine settings and
//! the full router (API plus Mission Control).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use leptos::config::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use uuid::Uuid;

use crate::api::{self, AppState};
use crate::app::{shell, App};
use crate::config::Config;
use crate::engine::guard::NetworkGuard;
use crate::engine::{EngineConfig, RetryPolicy};

/// The node id: generated once and kept in the data folder (SPEC §3).
pub fn node_id(data_dir: &Path) -> Result<Uuid> {
    let file = data_dir.join("node_id");
    if let Ok(text) = std::fs::read_to_string(&file) {
        return Uuid::parse_str(text.trim()).with_context(|| format!("{} does not hold a UUID", file.display()));
    }
    let id = Uuid::new_v4();
    std::fs::write(&file, id.to_string()).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(id)
}

pub fn engine_config(c: &Config) -> EngineConfig {
    EngineConfig {
        concurrency: c.concurrency as usize,
        claim_batch: (c.concurrency as i64).min(500),
        poll_interval: Duration::from_millis(c.poll_interval_ms),
        sync_timeout: c.sync_timeout(),
        shutdown_grace: Duration::from_millis(c.shutdown_grace_ms),
        retry: RetryPolicy { base: Duration::from_millis(c.retry_base_ms), ..RetryPolicy::default() },
        network_guard: c.block_private_networks.then(|| NetworkGuard { allowed: c.allowed_networks.clone() }),
        ..EngineConfig::default()
    }
}

/// Leptos settings: where cargo-leptos put the compiled site.
pub fn leptos_options(addr: std::net::SocketAddr) -> LeptosOptions {
    let site_root = std::env::var("LEPTOS_SITE_ROOT").unwrap_or_else(|_| "target/site".into());
    LeptosOptions::builder()
        .output_name("herald")
        .site_root(site_root)
        .site_pkg_dir("pkg")
        .site_addr(addr)
        .env(leptos::config::Env::PROD)
        .build()
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let options = state.leptos_options.clone();
    Router::new()
        .merge(api::routes(state.max_body_bytes))
        .leptos_routes(&state, routes, move || shell(options.clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .with_state(state)
}

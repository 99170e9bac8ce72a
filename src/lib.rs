//! Herald: a self-hosted eventing service with a web UI, Mission Control.
//!
//! - `model`: types shared by the UI and the server.
//! - `app`: the Leptos UI.
//! - `engine` (server only): queueing, dispatch, delivery, retries.
//! - `store` (server only): every SQL statement.
//! - `api`: the HTTP handlers (server only) and the UI's server functions.
//! - `bench` (server only): `herald bench`, the benchmark harness.

#![recursion_limit = "512"]

pub mod api;
pub mod app;
pub mod model;

#[cfg(feature = "ssr")]
pub mod assets;
#[cfg(feature = "ssr")]
pub mod bench;
#[cfg(feature = "ssr")]
pub mod config;
#[cfg(feature = "ssr")]
pub mod embedded_pg;
#[cfg(feature = "ssr")]
pub mod metrics;
#[cfg(feature = "ssr")]
pub mod engine;
#[cfg(feature = "ssr")]
pub mod server;
#[cfg(feature = "ssr")]
pub mod store;

/// The browser entry point: hydrates the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}

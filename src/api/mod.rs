//! The HTTP surface. REST handlers (server only) are thin: they authenticate,
//! call the engine and map its errors to statuses. `ui` holds Mission Control's
//! server functions, which both the server and the browser build compile.

pub mod ui;

#[cfg(feature = "ssr")]
pub mod files;
#[cfg(feature = "ssr")]
pub mod health;
#[cfg(feature = "ssr")]
pub mod live;
#[cfg(feature = "ssr")]
pub mod logs;
#[cfg(feature = "ssr")]
pub mod openapi;
#[cfg(feature = "ssr")]
pub mod queue;
#[cfg(feature = "ssr")]
mod rest;
#[cfg(feature = "ssr")]
pub mod triggers;

#[cfg(feature = "ssr")]
pub use rest::*;

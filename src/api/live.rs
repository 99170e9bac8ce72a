//! `GET /live/{project}`: server-sent events for Mission Control's open pages.
//! Each `history` event says the project's history changed (see
//! `Engine::watch_history`); the page then refetches what it shows. Signed-in
//! sessions only; the stream ends when the session signs out.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::ui::server::user_of;
use super::AppState;

pub async fn live(State(state): State<AppState>, session: tower_sessions::Session, Path(project): Path<String>) -> Response {
    let engine = state.engine.clone();
    match user_of(&engine, &session).await {
        Ok(Some(_)) => {}
        Ok(None) => return (StatusCode::UNAUTHORIZED, "sign in first").into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
    match engine.list_projects().await {
        Ok(projects) if projects.contains(&project) => {}
        Ok(_) => return (StatusCode::NOT_FOUND, format!("no project '{project}'")).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
    let rx = engine.watch_history(&project);
    let first = futures_util::stream::once(async { Ok::<_, Infallible>(Event::default().event("ready").data("0")) });
    let changes = futures_util::stream::unfold((rx, engine, session), |(mut rx, engine, session)| async move {
        rx.changed().await.ok()?;
        let version = *rx.borrow_and_update();
        // A session signed out (or whose password changed) hears no more.
        user_of(&engine, &session).await.ok().flatten()?;
        let event = Event::default().event("history").data(version.to_string());
        Some((Ok::<_, Infallible>(event), (rx, engine, session)))
    });
    use futures_util::StreamExt;
    // Shutdown ends the stream: graceful shutdown waits for open connections.
    let stopping = state.engine.shutdown_token().cancelled_owned();
    Sse::new(first.chain(changes).take_until(stopping)).keep_alive(KeepAlive::default()).into_response()
}

//! Mission Control's server functions. Each one checks the session itself (they
//! are public HTTP endpoints), calls the engine and maps its errors. No SQL here.

use leptos::prelude::*;
use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

use crate::model::{ApiKey, DeadLetterGroup, LogPage, Summary, TableInfo, Trigger};

/// The one error type of the UI's server functions. Internal details stay in the
/// server log; the browser gets a plain message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AppError {
    /// No session, or it expired.
    SignedOut,
    /// Bad input; `field` names the form field when known.
    Invalid { field: Option<String>, message: String },
    NotFound(String),
    Conflict(String),
    Server(String),
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::SignedOut => write!(f, "you are signed out; sign in again"),
            // Shown next to its field, the "`field`: " prefix the API keeps is noise.
            AppError::Invalid { field: Some(field), message } => {
                let text = message.strip_prefix(&format!("`{field}`: ")).unwrap_or(message);
                write!(f, "{text}")
            }
            AppError::Invalid { message, .. } => write!(f, "{message}"),
            AppError::NotFound(m) | AppError::Conflict(m) | AppError::Server(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for AppError {}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        AppError::Server(value.to_string())
    }
}

impl AppError {
    /// The form field this error belongs to, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            AppError::Invalid { field, .. } => field.as_deref(),
            AppError::Conflict(_) => Some("name"),
            _ => None,
        }
    }
}

/// The Add/Edit form as typed, before validation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TriggerForm {
    pub name: String,
    pub source: String,
    pub event_type: String,
    pub url: String,
    pub retries: String,
    pub timeout_ms: String,
    /// Deliveries per second; empty for no limit.
    pub rate_limit: String,
    pub max_in_flight: String,
    pub headers: Vec<(String, String)>,
    pub enabled: bool,
    /// Database source: the alias and the `schema.table`.
    pub db: String,
    pub table: String,
    /// File source: the folder it is limited to, if any.
    pub prefix: String,
}

/// One delivery of a synchronous event, as the Trigger modal shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryView {
    pub trigger: String,
    pub status: String,
    pub status_code: Option<i64>,
    pub duration_ms: Option<i64>,
}

/// What firing an event from the Trigger modal produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FireResult {
    pub event_id: String,
    pub synchronous: bool,
    /// The webhook's `response`, pretty-printed (synchronous only).
    pub result: Option<String>,
    pub deliveries: Vec<DeliveryView>,
    pub triggers: i64,
    /// Set when every delivery failed or the deadline passed.
    pub error: Option<String>,
}

#[server(endpoint = "login")]
pub async fn login(user: String, password: String) -> Result<(), AppError> {
    server::respond(async move {
        server::login(user, password).await
    })
    .await
}

#[server(endpoint = "logout")]
pub async fn logout() -> Result<(), AppError> {
    server::respond(async move {
        let session = server::session().await?;
        session.flush().await.map_err(server::internal)?;
        Ok(())
    })
    .await
}

/// The signed-in user, or `None`.
#[server(endpoint = "whoami")]
pub async fn whoami() -> Result<Option<String>, AppError> {
    server::respond(async move {
        let engine = use_context::<crate::engine::Engine>().ok_or_else(|| server::internal("no engine in context"))?;
        server::current_user(&engine).await
    })
    .await
}

#[server(endpoint = "list_triggers")]
pub async fn list_triggers(project: String) -> Result<Vec<Trigger>, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        engine.list_triggers(&project).await.map_err(server::engine_error)
    })
    .await
}

#[server(endpoint = "trigger_health")]
pub async fn trigger_health(project: String) -> Result<Vec<crate::model::TriggerHealth>, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        engine.trigger_health(&project).await.map_err(server::engine_error)
    })
    .await
}

#[server(endpoint = "save_trigger", input = leptos::server_fn::codec::Json)]
pub async fn save_trigger(project: String, form: TriggerForm, create: bool) -> Result<Trigger, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        let input = server::trigger_input(form)?;
        let saved = if create {
            engine.create_trigger(&project, input).await
        } else {
            let name = input.name.clone().unwrap_or_default();
            engine.update_trigger(&project, &name, input).await
        };
        saved.map_err(server::engine_error)
    })
    .await
}

/// The database aliases a database trigger may name.
#[server(endpoint = "list_databases")]
pub async fn list_databases() -> Result<Vec<String>, AppError> {
    server::respond(async move {
        let engine = server::signed_in().await?;
        Ok(engine.databases().aliases())
    })
    .await
}

/// The tables of a database alias that a database trigger may watch.
#[server(endpoint = "list_tables")]
pub async fn list_tables(db: String) -> Result<Vec<TableInfo>, AppError> {
    server::respond(async move {
        let engine = server::signed_in().await?;
        engine.list_tables(&db).await.map_err(server::engine_error)
    })
    .await
}

#[server(endpoint = "set_trigger_enabled")]
pub async fn set_trigger_enabled(project: String, name: String, enabled: bool) -> Result<(), AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        engine.set_trigger_enabled(&project, &name, enabled).await.map_err(server::engine_error)
    })
    .await
}

#[server(endpoint = "delete_trigger")]
pub async fn delete_trigger(project: String, name: String) -> Result<(), AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        engine.delete_trigger(&project, &name).await.map(|_| ()).map_err(server::engine_error)
    })
    .await
}

/// Fires an event as the queue API would, through the same engine.
#[server(endpoint = "fire_event")]
pub async fn fire_event(project: String, event_type: String, data: String, synchronous: bool) -> Result<FireResult, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        server::fire(&engine, &project, event_type, &data, synchronous).await
    })
    .await
}

/// The history filters, as the Event Logs page keeps them in its URL.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogFilters {
    pub status: String,
    pub trigger: String,
    pub event_type: String,
    pub event: String,
    pub from: String,
    pub to: String,
    pub cursor: String,
}

/// Counts and chart data over the last `window_hours`.
#[server(endpoint = "log_summary")]
pub async fn log_summary(project: String, window_hours: i64) -> Result<Summary, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        let hours = window_hours.clamp(1, 24 * 31) as u64;
        engine.summary(&project, std::time::Duration::from_secs(hours * 3600)).await.map_err(server::engine_error)
    })
    .await
}

#[server(endpoint = "list_logs", input = leptos::server_fn::codec::Json)]
pub async fn list_logs(project: String, filters: LogFilters) -> Result<LogPage, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        let some = |s: String| (!s.is_empty()).then_some(s);
        let query = crate::engine::logs::LogQuery {
            status: some(filters.status),
            trigger: some(filters.trigger),
            event_type: some(filters.event_type),
            event: some(filters.event),
            from: some(filters.from),
            to: some(filters.to),
            limit: Some(25),
            cursor: some(filters.cursor),
        };
        engine.list_logs(&project, query).await.map_err(server::engine_error)
    })
    .await
}

#[server(endpoint = "log_detail")]
pub async fn get_log_detail(project: String, id: String) -> Result<crate::model::LogDetail, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        let id = server::log_id(&id)?;
        engine.log_detail(&project, id).await.map_err(server::engine_error)
    })
    .await
}

#[server(endpoint = "redeliver_log")]
pub async fn redeliver_log(project: String, id: String) -> Result<(), AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        engine.redeliver(&project, server::log_id(&id)?).await.map(|_| ()).map_err(server::engine_error)
    })
    .await
}

#[server(endpoint = "cancel_log")]
pub async fn cancel_log(project: String, id: String) -> Result<(), AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        engine.cancel(&project, server::log_id(&id)?).await.map(|_| ()).map_err(server::engine_error)
    })
    .await
}

/// Every project, for the switcher.
#[server(endpoint = "list_projects")]
pub async fn list_projects() -> Result<Vec<String>, AppError> {
    server::respond(async move {
        let engine = server::signed_in().await?;
        engine.list_projects().await.map_err(server::engine_error)
    })
    .await
}

/// Creates a project with fresh secrets; a taken id is a conflict.
#[server(endpoint = "create_project")]
pub async fn create_project(id: String) -> Result<String, AppError> {
    server::respond(async move {
        let engine = server::signed_in().await?;
        let id = id.trim().to_string();
        match engine.create_project(&id).await {
            Ok(true) => Ok(id),
            Ok(false) => Err(AppError::Invalid { field: Some("id".into()), message: format!("project '{id}' already exists") }),
            Err(e) => Err(server::field_error("id", e)),
        }
    })
    .await
}

#[server(endpoint = "list_api_keys")]
pub async fn list_api_keys(project: String) -> Result<Vec<ApiKey>, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        engine.list_api_keys(&project).await.map_err(server::engine_error)
    })
    .await
}

/// Makes an API key and returns it: the only time it is ever shown.
#[server(endpoint = "create_api_key")]
pub async fn create_api_key(project: String, name: String, role: String) -> Result<String, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        let role = crate::engine::projects::Role::parse(&role).ok_or_else(|| AppError::Invalid {
            field: Some("role".into()),
            message: format!("`role`: '{role}' is not a role; use admin or queue"),
        })?;
        engine.create_api_key(&project, role, &name).await.map_err(server::engine_error)
    })
    .await
}

#[server(endpoint = "revoke_api_key")]
pub async fn revoke_api_key(project: String, id: String) -> Result<(), AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        let id = uuid::Uuid::parse_str(&id).map_err(|_| AppError::NotFound(format!("no API key {id}")))?;
        engine.revoke_api_key(&project, id).await.map_err(server::engine_error)
    })
    .await
}

/// Every database alias Herald knows, and whether the project may watch its
/// tables. Mission Control's accounts are operators: they grant and revoke.
#[server(endpoint = "database_grants")]
pub async fn database_grants(project: String) -> Result<Vec<(String, bool)>, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        let granted = engine.list_database_grants(Some(&project)).await.map_err(server::engine_error)?;
        Ok(engine
            .databases()
            .aliases()
            .into_iter()
            .map(|alias| {
                let held = granted.iter().any(|g| g.alias == alias);
                (alias, held)
            })
            .collect())
    })
    .await
}

/// Grants or revokes one database alias for the project.
#[server(endpoint = "set_database_grant")]
pub async fn set_database_grant(project: String, alias: String, granted: bool) -> Result<(), AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        let done = if granted {
            engine.grant_database(&project, &alias).await
        } else {
            engine.revoke_database(&project, &alias).await
        };
        done.map(|_| ()).map_err(server::engine_error)
    })
    .await
}

/// The project's history retention, in days.
#[server(endpoint = "retention_days")]
pub async fn retention_days(project: String) -> Result<i32, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        engine.retention_days(&project).await.map_err(server::engine_error)
    })
    .await
}

/// Sets the project's history retention, as typed in Settings.
#[server(endpoint = "set_retention")]
pub async fn set_retention(project: String, days: String) -> Result<i32, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        let days: i64 = days.trim().parse().map_err(|_| AppError::Invalid {
            field: Some("retentionDays".into()),
            message: format!("`retentionDays`: '{}' is not a whole number of days", days.trim()),
        })?;
        engine.set_retention_days(&project, days).await.map_err(|e| server::field_error("retentionDays", e))
    })
    .await
}

/// The dead letters: failed event logs grouped by trigger and last error, of
/// those created in the window `from`..`to` (either may be empty).
#[server(endpoint = "dead_letters")]
pub async fn dead_letters(project: String, from: String, to: String) -> Result<Vec<DeadLetterGroup>, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        engine.dead_letters(&project, Some(&from), Some(&to)).await.map_err(server::engine_error)
    })
    .await
}

/// Replays one dead-letter group, within the window; returns how many event logs
/// are due again.
#[server(endpoint = "replay_dead_letters")]
pub async fn replay_dead_letters(project: String, trigger: String, error: String, from: String, to: String) -> Result<u64, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        engine.replay_failed(&project, &trigger, Some(&from), Some(&to), Some(&error)).await.map_err(server::engine_error)
    })
    .await
}

/// Replays every dead letter created in the window, of every trigger.
#[server(endpoint = "replay_dead_letters_in_window")]
pub async fn replay_dead_letters_in_window(project: String, from: String, to: String) -> Result<u64, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        engine.replay_window(&project, Some(&from), Some(&to)).await.map_err(server::engine_error)
    })
    .await
}

/// The project's JWT secret and signing secret, shown on request.
#[server(endpoint = "project_secrets")]
pub async fn project_secrets(project: String) -> Result<(String, String), AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        engine.project_secrets(&project).await.map_err(server::engine_error)
    })
    .await
}

/// Replaces the `jwt` or the `signing` secret and returns the new one.
#[server(endpoint = "rotate_secret")]
pub async fn rotate_secret(project: String, kind: String) -> Result<String, AppError> {
    server::respond(async move {
        let engine = server::signed_in_to(&project).await?;
        let kind = crate::engine::projects::SecretKind::parse(&kind)
            .ok_or_else(|| AppError::Invalid { field: None, message: format!("no secret called '{kind}'; use jwt or signing") })?;
        engine.rotate_secret(&project, kind).await.map_err(server::engine_error)
    })
    .await
}

/// Changes the signed-in user's password, after checking the current one.
#[server(endpoint = "change_password")]
pub async fn change_password(current: String, new: String, repeat: String) -> Result<(), AppError> {
    server::respond(async move {
        let engine = server::signed_in().await?;
        if new != repeat {
            return Err(AppError::Invalid { field: Some("repeat".into()), message: "`repeat`: the two new passwords differ".into() });
        }
        let user = server::current_user(&engine).await?.ok_or(AppError::SignedOut)?;
        // Under the sign-in throttle: a stolen session must not be a way to guess
        // the password at the speed of argon2.
        if !server::password_is_right(&engine, &user, &current).await? {
            return Err(AppError::Invalid { field: Some("current".into()), message: crate::engine::admins::WRONG_CURRENT_PASSWORD.into() });
        }
        engine.replace_checked_admin_password(&user, &current, &new).await.map_err(server::engine_error)?;
        // Every other session of this user is now signed out; this one stays.
        server::remember_password_version(&engine, &user).await
    })
    .await
}

#[cfg(feature = "ssr")]
pub(crate) mod server {
    use std::net::SocketAddr;

    use axum::http;
    use leptos::prelude::*;
    use serde_json::{json, Value};

    use super::{AppError, DeliveryView, FireResult, TriggerForm};
    use crate::engine::queue::QueueOutcome;
    use crate::engine::sync::SyncStatus;
    use crate::engine::triggers::TriggerInput;
    use crate::engine::{Engine, EngineError};

    pub const USER_KEY: &str = "user";
    const PASSWORD_VERSION_KEY: &str = "password_version";

    /// Sign-in attempts per source address and per user name (see
    /// [`crate::engine::signin`]).
    pub type LoginThrottle = crate::engine::signin::SignInThrottle;

    /// Gives a failed server function the HTTP status its error deserves (the
    /// default would be 500 for all).
    /// Context is read before the first `.await`: Leptos does not promise it after.
    pub async fn respond<T>(work: impl std::future::Future<Output = Result<T, AppError>>) -> Result<T, AppError> {
        let response = use_context::<leptos_axum::ResponseOptions>();
        let result = work.await;
        if let Err(e) = &result {
            let status = match e {
                AppError::SignedOut => http::StatusCode::UNAUTHORIZED,
                AppError::Invalid { .. } => http::StatusCode::BAD_REQUEST,
                AppError::NotFound(_) => http::StatusCode::NOT_FOUND,
                AppError::Conflict(_) => http::StatusCode::CONFLICT,
                AppError::Server(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
            };
            if let Some(resp) = response {
                resp.set_status(status);
            }
        }
        result
    }

    pub fn internal(e: impl std::fmt::Display) -> AppError {
        tracing::error!(error = %e, "server function failed");
        AppError::Server("something went wrong on the server; see its log".into())
    }

    /// Maps engine errors; an `Invalid` message starting with `field` names the field.
    pub fn engine_error(e: EngineError) -> AppError {
        match e {
            EngineError::Invalid(message) | EngineError::Forbidden(message) => {
                let field = message.strip_prefix('`').and_then(|m| m.split_once('`')).map(|(f, _)| f.to_string());
                AppError::Invalid { field, message }
            }
            EngineError::NotFound(m) => AppError::NotFound(m),
            EngineError::Conflict(m) => AppError::Conflict(m),
            other => internal(other),
        }
    }

    /// Like `engine_error`, for a form with one field: an invalid value belongs to it.
    pub fn field_error(field: &str, e: EngineError) -> AppError {
        match engine_error(e) {
            AppError::Invalid { message, .. } => AppError::Invalid { field: Some(field.into()), message },
            other => other,
        }
    }

    pub async fn session() -> Result<tower_sessions::Session, AppError> {
        leptos_axum::extract::<tower_sessions::Session>().await.map_err(internal)
    }

    /// The engine, once the session is signed in and `project` exists: a project
    /// that does not exist is not found, not an empty project that stores events.
    pub async fn signed_in_to(project: &str) -> Result<Engine, AppError> {
        let engine = signed_in().await?;
        if !engine.project_exists(project).await.map_err(engine_error)? {
            return Err(AppError::NotFound(format!("unknown project '{project}'")));
        }
        Ok(engine)
    }

    /// The engine, once the session is known to be signed in.
    pub async fn signed_in() -> Result<Engine, AppError> {
        // Before any `.await`: Leptos does not promise the context after one.
        let engine = use_context::<Engine>().ok_or_else(|| internal("the engine is not in the server context"))?;
        current_user(&engine).await?.ok_or(AppError::SignedOut)?;
        Ok(engine)
    }

    /// The session's user, if it is signed in and its password has not changed
    /// since (a change signs out the other sessions).
    pub async fn current_user(engine: &Engine) -> Result<Option<String>, AppError> {
        user_of(engine, &session().await?).await
    }

    /// The user of a session, as `current_user`, for handlers outside Leptos.
    pub async fn user_of(engine: &Engine, session: &tower_sessions::Session) -> Result<Option<String>, AppError> {
        let Some(user) = session.get::<String>(USER_KEY).await.map_err(internal)? else {
            return Ok(None);
        };
        let seen = session.get::<serde_json::Value>(PASSWORD_VERSION_KEY).await.map_err(internal)?.and_then(|v| {
            v.as_str().and_then(|s| s.parse::<i64>().ok()).or_else(|| v.as_i64())
        });
        let now = engine.admin_password_version(&user).await.map_err(engine_error)?;
        if now.is_none() || seen != now {
            // Signed out, but the session is left as it is: this runs while a
            // page streams, after the session layer has looked at the session,
            // and a flush racing its save answered 500 ("missing session id").
            // The stale record can never sign in again (its version is old);
            // the next sign-in replaces it and expiry removes it.
            return Ok(None);
        }
        Ok(Some(user))
    }

    pub async fn remember_password_version(engine: &Engine, user: &str) -> Result<(), AppError> {
        let version = engine.admin_password_version(user).await.map_err(engine_error)?;
        // As text: sessions are stored as MessagePack, and serde_json's exact
        // numbers (arbitrary_precision) do not survive it as numbers.
        session().await?.insert(PASSWORD_VERSION_KEY, version.map(|v| v.to_string())).await.map_err(internal)
    }

    pub async fn login(user: String, password: String) -> Result<(), AppError> {
        let engine = use_context::<Engine>().ok_or_else(|| internal("no engine in context"))?;
        if !crate::engine::admins::plausible_username(&user) {
            return Err(AppError::Invalid { field: None, message: "wrong user name or password".into() });
        }
        if !password_is_right(&engine, &user, &password).await? {
            return Err(AppError::Invalid { field: None, message: "wrong user name or password".into() });
        }
        let session = session().await?;
        // A new session id on sign-in: a planted cookie cannot ride the new session.
        session.cycle_id().await.map_err(internal)?;
        remember_password_version(&engine, &user).await?;
        session.insert(USER_KEY, user).await.map_err(internal)?;
        Ok(())
    }

    /// Checks a user's password under the sign-in throttle (sign-in, and the
    /// current password of a password change). The wait after failures comes
    /// before the check, per address and per user name: guesses sent in parallel
    /// are refused, not checked.
    pub async fn password_is_right(engine: &Engine, user: &str, password: &str) -> Result<bool, AppError> {
        let throttle = use_context::<std::sync::Arc<LoginThrottle>>().ok_or_else(|| internal("no throttle"))?;
        let source = leptos_axum::extract::<axum::extract::ConnectInfo<SocketAddr>>()
            .await
            .map(|c| throttle_key(c.0.ip()))
            .unwrap_or_else(|_| "unknown".into());
        let until = match throttle.begin(&source, user, std::time::Instant::now()) {
            Ok(until) => until,
            Err(wait) => {
                return Err(AppError::Invalid {
                    field: None,
                    message: format!(
                        "too many wrong passwords for this user name or address; try again in {} s",
                        wait.as_secs_f64().ceil().max(1.0)
                    ),
                })
            }
        };
        if !engine.check_admin_password(user, password).await.map_err(engine_error)? {
            // Answered once the wait is over: a client that waits for the answer
            // before trying again is never refused.
            tokio::time::sleep_until(until.into()).await;
            return Ok(false);
        }
        throttle.succeeded(&source, user);
        Ok(true)
    }

    /// The address sign-ins are throttled by: an IPv4 address, or an IPv6 /64 (one
    /// host usually holds a whole /64, so single addresses cost an attacker nothing).
    fn throttle_key(ip: std::net::IpAddr) -> String {
        match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
        }
    }

    pub fn log_id(id: &str) -> Result<uuid::Uuid, AppError> {
        uuid::Uuid::parse_str(id).map_err(|_| AppError::NotFound(format!("no event log {id}")))
    }

    pub fn trigger_input(form: TriggerForm) -> Result<TriggerInput, AppError> {
        let number = |field: &str, label: &str, v: &str| -> Result<Option<i64>, AppError> {
            if v.trim().is_empty() {
                return Ok(None);
            }
            v.trim().parse().map(Some).map_err(|_| AppError::Invalid {
                field: Some(field.into()),
                message: format!("`{field}`: {label} must be a whole number"),
            })
        };
        let mut headers = serde_json::Map::new();
        for (k, v) in form.headers.into_iter().filter(|(k, v)| !(k.trim().is_empty() && v.trim().is_empty())) {
            headers.insert(k.trim().to_string(), Value::String(v));
        }
        let options = match form.source.as_str() {
            "database" => Some(serde_json::Map::from_iter([
                ("db".to_string(), Value::String(form.db.trim().to_string())),
                ("table".to_string(), Value::String(form.table.trim().to_string())),
            ])),
            "file" => Some(serde_json::Map::from_iter([("prefix".to_string(), Value::String(form.prefix.trim().to_string()))])),
            _ => None,
        };
        Ok(TriggerInput {
            name: Some(form.name.trim().to_string()),
            source: Some(if form.source.is_empty() { "custom".into() } else { form.source }),
            event_type: Some(form.event_type.trim().to_string()),
            url: Some(form.url.trim().to_string()),
            retries: number("retries", "Retries", &form.retries)?,
            timeout_ms: number("timeoutMs", "Timeout", &form.timeout_ms)?,
            headers: Some(headers),
            enabled: Some(form.enabled),
            options,
            rate_limit: match form.rate_limit.trim() {
                "" => None,
                v => Some(v.parse::<f64>().ok().filter(|r| r.is_finite()).ok_or_else(|| AppError::Invalid {
                    field: Some("rateLimit".into()),
                    message: "`rateLimit`: Rate limit must be a number of deliveries per second, or empty for none".into(),
                })?),
            },
            max_in_flight: number("maxInFlight", "Max in flight", &form.max_in_flight)?,
            circuit: None,
            disabled_reason: None,
        })
    }

    pub async fn fire(
        engine: &Engine,
        project: &str,
        event_type: String,
        data: &str,
        synchronous: bool,
    ) -> Result<FireResult, AppError> {
        let data: Value = if data.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(data).map_err(|e| AppError::Invalid {
                field: Some("data".into()),
                message: format!("the data is not valid JSON: {e}"),
            })?
        };
        let body = json!({"type": event_type, "data": data, "isSynchronous": synchronous});
        match engine.queue(project, &body).await.map_err(engine_error)? {
            QueueOutcome::Queued(q) => Ok(FireResult {
                event_id: q.event_id.to_string(),
                synchronous: false,
                result: None,
                deliveries: vec![],
                triggers: q.triggers as i64,
                error: None,
            }),
            QueueOutcome::Sync(reply) => {
                let b = reply.body;
                let deliveries: Vec<DeliveryView> = b["deliveries"]
                    .as_array()
                    .map(|ds| {
                        ds.iter()
                            .map(|d| DeliveryView {
                                trigger: d["trigger"].as_str().unwrap_or("").into(),
                                status: d["status"].as_str().unwrap_or("").into(),
                                status_code: d["statusCode"].as_i64(),
                                duration_ms: d["durationMs"].as_i64(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(FireResult {
                    event_id: b["eventId"].as_str().unwrap_or("").into(),
                    synchronous: true,
                    result: b.get("result").map(|r| serde_json::to_string_pretty(r).unwrap_or_default()),
                    triggers: deliveries.len() as i64,
                    deliveries,
                    error: (reply.status != SyncStatus::Ok).then(|| b["error"].as_str().unwrap_or("").to_string()),
                })
            }
        }
    }
}

#[cfg(feature = "ssr")]
pub use server::LoginThrottle;

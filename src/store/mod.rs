//! Every SQL statement Herald runs, one file per table group.

pub mod admins;
pub mod events;
pub mod flow;
pub mod history;
pub mod partitions;
pub mod projects;
pub mod retention;
pub mod triggers;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub use sqlx::Error as DbError;

/// The embedded migrations, applied at start-up and by `herald migrate`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens the connection pool.
pub async fn connect(options: PgConnectOptions, max_connections: u32) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        // A pool that cannot get a connection fails fast instead of hanging callers,
        // so the API can answer 503 while the database is away.
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
}

/// Opens the pool for the hot path's write statements: storing events and
/// recording attempts. Their shape never changes and their best plan does not
/// depend on the values bound, so these connections plan each statement once
/// (a generic plan) instead of for every call: PostgreSQL's default re-planned
/// them each time, which cost about a seventh of its CPU under load. The other
/// statements keep the default: a claim's plan, for one, depends on its limit.
///
/// A generic plan lives as long as the connection or until the next ANALYZE: one
/// made while a table was nearly empty would scan the whole table on every call as
/// it grows. Every row these statements read is found by an index, so sequential
/// scans are ruled out on these connections.
pub async fn connect_writer(options: PgConnectOptions, max_connections: u32) -> Result<PgPool, DbError> {
    let options = options.options([("plan_cache_mode", "force_generic_plan"), ("enable_seqscan", "off")]);
    connect(options, max_connections).await
}

/// Opens the pool for the history's reads on a streaming replica
/// (HERALD_READ_DATABASE_URL). Its sessions are read-only, so a URL that names a
/// primary by mistake still gets no writes. It must hold Herald's tables at the
/// latest migration this build knows: a replica lags its primary, so right after
/// a migration this waits up to `catch_up` for it to replay that far.
pub async fn connect_reader(options: PgConnectOptions, max_connections: u32, catch_up: Duration) -> Result<PgPool, String> {
    let options = options.options([("default_transaction_read_only", "on")]);
    let pool = connect(options, max_connections).await.map_err(|e| format!("cannot connect: {e}"))?;
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let deadline = std::time::Instant::now() + catch_up;
    loop {
        let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .map_err(|e| format!("it does not hold Herald's tables (is it a replica of Herald's database?): {e}"))?;
        let applied = applied.unwrap_or(0);
        if applied >= latest {
            return Ok(pool);
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "its schema is at migration {applied} and this build needs {latest}, still after {} s: \
                 is it a replica of Herald's database, and is it replaying?",
                catch_up.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// True when `e` is a unique-constraint violation.
pub fn is_unique_violation(e: &DbError) -> bool {
    matches!(e, DbError::Database(d) if d.code().as_deref() == Some("23505"))
}

pub fn is_foreign_key_violation(e: &DbError) -> bool {
    matches!(e, DbError::Database(d) if d.code().as_deref() == Some("23503"))
}

//! Projects and their API keys.

use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// A project's secrets, as the engine needs them.
#[derive(Clone, Debug, FromRow)]
pub struct Project {
    pub id: String,
    pub jwt_secret: String,
    pub signing_secret: String,
}

/// Held while a node makes what the first start makes (the `default` project, its
/// first admin key, the Mission Control account), so that nodes starting together
/// on an empty database make one of each. It is a session-level advisory lock on
/// a connection of its own that is closed, never returned to the pool, when this
/// is dropped: the lock cannot outlive it, even on an error or a panic.
pub struct FirstStartLock(#[allow(dead_code)] sqlx::pool::PoolConnection<sqlx::Postgres>);

/// Waits for, and takes, the first-start lock ("herald first start").
pub async fn lock_first_start(pool: &PgPool) -> Result<FirstStartLock, sqlx::Error> {
    const LOCK: i64 = 0x6865_7261_6c64_6673;
    let mut conn = pool.acquire().await?;
    conn.close_on_drop();
    sqlx::query("SELECT pg_advisory_lock($1)").bind(LOCK).execute(&mut *conn).await?;
    Ok(FirstStartLock(conn))
}

/// Creates the project unless it exists. Returns true when it was created.
pub async fn insert_if_missing(
    pool: &PgPool,
    id: &str,
    jwt_secret: &str,
    signing_secret: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO projects (id, jwt_secret, signing_secret) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(jwt_secret)
    .bind(signing_secret)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn get(pool: &PgPool, id: &str) -> Result<Option<Project>, sqlx::Error> {
    sqlx::query_as("SELECT id, jwt_secret, signing_secret FROM projects WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn insert_api_key(
    pool: &PgPool,
    project: &str,
    name: &str,
    role: &str,
    prefix: &str,
    key_hash: &[u8],
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO api_keys (id, project, name, role, prefix, key_hash) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(project)
        .bind(name)
        .bind(role)
        .bind(prefix)
        .bind(key_hash)
        .execute(pool)
        .await?;
    Ok(id)
}

/// Finds a live key by its hash and returns `(project, role)`. Marks it used, at
/// most once a minute, so that busy keys do not write on every request.
pub async fn find_api_key(pool: &PgPool, key_hash: &[u8]) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "WITH k AS (
             SELECT id, project, role, last_used_at FROM api_keys
             WHERE key_hash = $1 AND revoked_at IS NULL
         ), touched AS (
             UPDATE api_keys a SET last_used_at = now() FROM k
             WHERE a.id = k.id AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute')
         )
         SELECT project, role FROM k",
    )
    .bind(key_hash)
    .fetch_optional(pool)
    .await
}

pub use crate::model::ApiKey as ApiKeyInfo;

pub async fn list_api_keys(pool: &PgPool, project: &str) -> Result<Vec<ApiKeyInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, role, prefix, created_at, last_used_at, revoked_at FROM api_keys
         WHERE project = $1 ORDER BY created_at",
    )
    .bind(project)
    .fetch_all(pool)
    .await
}

/// Revokes a live key. Returns false when the project has no such live key.
pub async fn revoke_api_key(pool: &PgPool, project: &str, id: Uuid) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE project = $1 AND id = $2 AND revoked_at IS NULL")
        .bind(project)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Every project id, in order.
pub async fn list(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM projects ORDER BY id").fetch_all(pool).await
}

/// Replaces the project's JWT secret. Returns false for an unknown project.
pub async fn set_jwt_secret(pool: &PgPool, id: &str, secret: &str) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("UPDATE projects SET jwt_secret = $2 WHERE id = $1").bind(id).bind(secret).execute(pool).await?;
    Ok(r.rows_affected() == 1)
}

/// Replaces the project's webhook signing secret. Returns false for an unknown project.
pub async fn set_signing_secret(pool: &PgPool, id: &str, secret: &str) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("UPDATE projects SET signing_secret = $2 WHERE id = $1")
        .bind(id)
        .bind(secret)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Whether the project has ever had an API key, revoked ones included.
pub async fn has_had_api_keys(pool: &PgPool, project: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE project = $1)").bind(project).fetch_one(pool).await
}

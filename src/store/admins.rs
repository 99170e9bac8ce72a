//! Mission Control accounts.

use sqlx::PgPool;

/// Creates the account or replaces its password hash.
pub async fn upsert(pool: &PgPool, username: &str, password_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO admins (username, password_hash) VALUES ($1, $2)
         ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now()",
    )
    .bind(username)
    .bind(password_hash)
    .execute(pool)
    .await?;
    Ok(())
}

/// Creates the account unless any account exists. Returns true when it did.
pub async fn insert_first(pool: &PgPool, username: &str, password_hash: &str) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO admins (username, password_hash)
         SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM admins)",
    )
    .bind(username)
    .bind(password_hash)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn password_hash(pool: &PgPool, username: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT password_hash FROM admins WHERE username = $1")
        .bind(username)
        .fetch_optional(pool)
        .await
}

pub async fn exists_any(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM admins)").fetch_one(pool).await
}

/// When the user's password last changed, in microseconds: a session made
/// before that is no longer valid. `None` when the user does not exist.
pub async fn password_version(pool: &PgPool, username: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT (extract(epoch FROM updated_at) * 1000000)::bigint FROM admins WHERE username = $1")
        .bind(username)
        .fetch_optional(pool)
        .await
}

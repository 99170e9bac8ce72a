//! Mission Control accounts: argon2id password hashes, the first-start admin,
//! and password checks.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distributions::Alphanumeric;
use rand::Rng;

use super::{Engine, EngineError};
use crate::store;

pub const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 1024;
/// Verified against when the user does not exist, to take the same time.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0n4HfWmRZS7kJ8YqHu8y0b3iJ3n0j5xjK6d1sWvQ7b8";

fn validate_username(user: &str) -> Result<(), EngineError> {
    let ok = (1..=64).contains(&user.len())
        && user.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "user name '{user}' is invalid: use 1 to 64 letters, digits, '_', '.', '@' or '-'"
        )))
    }
}

fn hash_password(password: &str) -> Result<String, EngineError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        return Err(EngineError::Invalid(format!("the password must have at least {MIN_PASSWORD} characters")));
    }
    if password.len() > MAX_PASSWORD {
        return Err(EngineError::Invalid(format!("the password must be at most {MAX_PASSWORD} bytes")));
    }
    let salt = SaltString::generate(&mut OsRng);
    // Argon2::default() is argon2id with the OWASP-recommended parameters.
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| EngineError::Invalid(format!("cannot hash the password: {e}")))
}

/// Runs argon2 (tens of milliseconds of CPU by design) on a blocking thread, so
/// that sign-ins never stall the threads that queue and deliver events (SPEC §8).
/// Also bounded: each hash takes 19 MiB, and a flood of sign-ins from many
/// addresses must not make hundreds at once.
async fn off_the_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, EngineError> {
    static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
    let _turn = HASHING.acquire().await.map_err(|e| EngineError::Invalid(format!("password hashing failed: {e}")))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EngineError::Invalid(format!("password hashing failed: {e}")))
}

/// Whether a user name could name an account (1 to 64 letters, digits and `_.@-`);
/// one that cannot is refused before any throttling or hashing.
pub fn plausible_username(user: &str) -> bool {
    validate_username(user).is_ok()
}

async fn hash_password_off_the_runtime(password: &str) -> Result<String, EngineError> {
    let password = password.to_string();
    off_the_runtime(move || hash_password(&password)).await?
}

/// What a password change with the wrong current password is told.
pub const WRONG_CURRENT_PASSWORD: &str = "`current`: the current password is wrong";

impl Engine {
    /// Sets (or creates the account with) a password.
    pub async fn set_admin_password(&self, user: &str, password: &str) -> Result<(), EngineError> {
        validate_username(user)?;
        let hash = hash_password_off_the_runtime(password).await?;
        Ok(store::admins::upsert(self.pool(), user, &hash).await?)
    }

    /// On the first start, creates the admin account. The password comes from the
    /// caller (HERALD_ADMIN_PASSWORD) or is generated and returned, to be shown once.
    pub async fn bootstrap_admin(&self, user: &str, password: Option<&str>) -> Result<Option<String>, EngineError> {
        if store::admins::exists_any(self.pool()).await? {
            return Ok(None);
        }
        validate_username(user)?;
        let generated: Option<String> = match password {
            Some(_) => None,
            None => Some(rand::thread_rng().sample_iter(&Alphanumeric).take(20).map(char::from).collect()),
        };
        let password = password.or(generated.as_deref()).unwrap_or_default();
        let hash = hash_password_off_the_runtime(password).await?;
        let created = store::admins::insert_first(self.pool(), user, &hash).await?;
        Ok(if created { generated } else { None })
    }

    /// Changes a user's password after checking the current one.
    pub async fn change_admin_password(&self, user: &str, current: &str, new: &str) -> Result<(), EngineError> {
        if !self.check_admin_password(user, current).await? {
            return Err(EngineError::Invalid(WRONG_CURRENT_PASSWORD.into()));
        }
        self.replace_checked_admin_password(user, current, new).await
    }

    /// A password change whose current password the caller has already checked
    /// (Mission Control does, under the sign-in throttle), so it is not hashed twice.
    pub async fn replace_checked_admin_password(&self, user: &str, current: &str, new: &str) -> Result<(), EngineError> {
        if current == new {
            return Err(EngineError::Invalid("`new`: the new password is the same as the current one".into()));
        }
        let hash = hash_password_off_the_runtime(new).await.map_err(|e| EngineError::Invalid(format!("`new`: {e}")))?;
        Ok(store::admins::upsert(self.pool(), user, &hash).await?)
    }

    /// A number that changes whenever the user's password does; sessions keep
    /// it, so a password change signs out every other session. `None` when the
    /// user does not exist.
    pub async fn admin_password_version(&self, user: &str) -> Result<Option<i64>, EngineError> {
        Ok(store::admins::password_version(self.pool(), user).await?)
    }

    /// True when the user exists and the password is right. Unknown users cost the
    /// same hashing work, so timing does not reveal which names exist.
    pub async fn check_admin_password(&self, user: &str, password: &str) -> Result<bool, EngineError> {
        let stored = store::admins::password_hash(self.pool(), user).await?;
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| DECOY.to_string());
        let password = password.to_string();
        let ok = off_the_runtime(move || {
            PasswordHash::new(&hash)
                .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await?;
        Ok(known && ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"wrong horse", &parsed).is_err());
        assert!(hash_password("short").unwrap_err().to_string().contains("at least 8"));
        assert!(PasswordHash::new(DECOY).is_ok(), "the decoy must cost a real verification");
    }
}

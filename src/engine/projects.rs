//! Projects, their secrets and API keys, and authentication of queue calls.

use base64::Engine as _;
use rand::distributions::Alphanumeric;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Engine, EngineError};
use crate::store;

/// The project the first start creates.
pub const DEFAULT_PROJECT: &str = "default";

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything in its project.
    Admin,
    /// Queue events only.
    Queue,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "queue" => Some(Role::Queue),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Queue => "queue",
        }
    }
}

/// The two secrets a project owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// Signs `X-SC-Token` and verifies JWTs sent to the queue API.
    Jwt,
    /// The Standard Webhooks `whsec_` secret behind `webhook-signature`.
    Signing,
}

impl SecretKind {
    pub fn parse(s: &str) -> Option<SecretKind> {
        match s {
            "jwt" => Some(SecretKind::Jwt),
            "signing" => Some(SecretKind::Signing),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Jwt => "jwt",
            SecretKind::Signing => "signing",
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown project '{0}'")]
    UnknownProject(String),
    #[error("missing bearer token: send `Authorization: Bearer <API key or JWT>`")]
    Missing,
    #[error("invalid API key or token")]
    Invalid,
    #[error("this is the X-SC-Token Herald sends to webhook receivers; it identifies a delivery and opens no API route. Use an API key or a JWT you signed yourself")]
    ReceiverToken,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Checks a project id against SPEC §1.
pub fn validate_project_id(id: &str) -> Result<(), EngineError> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "project id '{id}' is invalid: use 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter or digit"
        )))
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::thread_rng().fill_bytes(&mut b);
    b
}

fn new_jwt_secret() -> String {
    hex::encode(random_bytes::<32>())
}

fn new_signing_secret() -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(random_bytes::<24>()))
}

fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// What a first start made and shows once: each is `None` when it existed already.
#[derive(Debug, Default)]
pub struct FirstStart {
    /// The `default` project's first admin API key.
    pub api_key: Option<String>,
    /// The generated password of the Mission Control account (none when the
    /// account existed, or HERALD_ADMIN_PASSWORD gave it).
    pub admin_password: Option<String>,
}

impl Engine {
    /// Creates a project with fresh secrets. Returns false if it already existed.
    pub async fn create_project(&self, id: &str) -> Result<bool, EngineError> {
        validate_project_id(id)?;
        Ok(store::projects::insert_if_missing(self.pool(), id, &new_jwt_secret(), &new_signing_secret()).await?)
    }

    /// What the first start needs and prints nothing: the `default` project and the
    /// history's partitions ahead. `herald migrate` does it too, so that a
    /// deployment script can make keys before the server has ever started.
    pub async fn bootstrap_project(&self) -> Result<(), EngineError> {
        self.create_project(DEFAULT_PROJECT).await?;
        // The history's partitions of today and the next days, before the first
        // event arrives (retention's pass keeps them ahead from then on).
        // A node that cannot make them now still starts: rows with no partition
        // of their own go to the default partition, and the next pass moves them.
        if let Err(e) = store::partitions::ensure_ahead(self.pool()).await {
            tracing::warn!(error = %e, "could not make the history's partitions ahead; retention's pass retries");
        }
        Ok(())
    }

    /// Everything a serving node's start makes when it is missing: the `default`
    /// project, its first admin API key and the Mission Control account. Nodes
    /// that start together take turns, so there is one key and one account, shown
    /// by the node that made them; the others find them made and show nothing.
    pub async fn first_start(&self, admin_user: &str, admin_password: Option<&str>) -> Result<FirstStart, EngineError> {
        let _turn = store::projects::lock_first_start(self.pool()).await?;
        let api_key = self.bootstrap().await?;
        let admin_password = self.bootstrap_admin(admin_user, admin_password).await?;
        Ok(FirstStart { api_key, admin_password })
    }

    /// Creates the `default` project on first start, and an admin key for it if it
    /// never had one, which is returned so that the caller can print it, once.
    pub async fn bootstrap(&self) -> Result<Option<String>, EngineError> {
        self.bootstrap_project().await?;
        // The flow loop's first minute pass, run here so that it is over before
        // the node serves (its next one comes a minute later): a key left waiting
        // while every node was down goes at once. One-shot commands (`migrate`)
        // make the project but leave this to the serving node.
        self.breaker_minute().await;
        if store::projects::has_had_api_keys(self.pool(), DEFAULT_PROJECT).await? {
            return Ok(None);
        }
        Ok(Some(self.create_api_key(DEFAULT_PROJECT, Role::Admin, "first start").await?))
    }

    /// Makes an API key. Only its hash is stored; the key is returned once.
    pub async fn create_api_key(&self, project: &str, role: Role, name: &str) -> Result<String, EngineError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return Err(EngineError::Invalid("`name`: give the key a name of 1 to 64 characters".into()));
        }
        if name.chars().any(char::is_control) {
            return Err(EngineError::Invalid("`name` may not contain control characters".into()));
        }
        if !self.project_exists(project).await? {
            return Err(EngineError::NotFound(format!("unknown project '{project}'")));
        }
        let secret: String = rand::thread_rng().sample_iter(&Alphanumeric).take(40).map(char::from).collect();
        let key = format!("hrld_{secret}");
        store::projects::insert_api_key(self.pool(), project, name, role.as_str(), &key[..12], &hash_key(&key))
            .await?;
        Ok(key)
    }

    pub async fn list_api_keys(&self, project: &str) -> Result<Vec<store::projects::ApiKeyInfo>, EngineError> {
        Ok(store::projects::list_api_keys(self.pool(), project).await?)
    }

    /// Revokes a key; it stops working at once.
    pub async fn revoke_api_key(&self, project: &str, id: uuid::Uuid) -> Result<(), EngineError> {
        if store::projects::revoke_api_key(self.pool(), project, id).await? {
            self.forget_credentials().await;
            Ok(())
        } else {
            Err(EngineError::NotFound(format!("project '{project}' has no live API key {id}")))
        }
    }

    pub async fn project_exists(&self, project: &str) -> Result<bool, EngineError> {
        Ok(store::projects::get(self.pool(), project).await?.is_some())
    }

    pub async fn list_projects(&self) -> Result<Vec<String>, EngineError> {
        Ok(store::projects::list(self.pool()).await?)
    }

    /// The project's JWT secret and webhook signing secret, for its settings page.
    pub async fn project_secrets(&self, project: &str) -> Result<(String, String), EngineError> {
        let p = store::projects::get(self.pool(), project)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("unknown project '{project}'")))?;
        Ok((p.jwt_secret, p.signing_secret))
    }

    /// Replaces one of the project's secrets with a fresh random one and returns
    /// it. JWTs signed with the old secret stop working at once; deliveries
    /// claimed after this call are signed with the new signing secret.
    pub async fn rotate_secret(&self, project: &str, kind: SecretKind) -> Result<String, EngineError> {
        let (secret, updated) = match kind {
            SecretKind::Jwt => {
                let s = new_jwt_secret();
                let ok = store::projects::set_jwt_secret(self.pool(), project, &s).await?;
                (s, ok)
            }
            SecretKind::Signing => {
                let s = new_signing_secret();
                let ok = store::projects::set_signing_secret(self.pool(), project, &s).await?;
                (s, ok)
            }
        };
        if !updated {
            return Err(EngineError::NotFound(format!("unknown project '{project}'")));
        }
        if kind == SecretKind::Jwt {
            self.forget_credentials().await;
        }
        tracing::info!(project, secret = kind.as_str(), "secret rotated");
        Ok(secret)
    }

    /// Checks a bearer token for a project: one of its API keys, or an HS256 JWT
    /// signed with its secret. Returns the role the token carries.
    ///
    /// A success is remembered for a few seconds (see [`AuthCache`]), so that a busy
    /// client costs no database round trip per call.
    pub async fn authenticate(&self, project: &str, token: Option<&str>) -> Result<Role, AuthError> {
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        let cache_key = token.map(|t| (project.to_string(), hash_key(t)));
        if let Some(role) = cache_key.as_ref().and_then(|k| self.0.auth_cache.get(k)) {
            return Ok(role);
        }
        let role = self.authenticate_uncached(project, token).await?;
        if let Some(k) = cache_key {
            self.0.auth_cache.put(k, role);
        }
        Ok(role)
    }

    async fn authenticate_uncached(&self, project: &str, token: Option<&str>) -> Result<Role, AuthError> {
        let p = store::projects::get(self.pool(), project)
            .await
            .map_err(EngineError::from)?
            .ok_or_else(|| AuthError::UnknownProject(project.to_string()))?;
        let token = token.ok_or(AuthError::Missing)?;
        if token.matches('.').count() == 2 {
            return verify_jwt(token, &p.jwt_secret);
        }
        // The key is found by its SHA-256, so no comparison of secrets happens here.
        match store::projects::find_api_key(self.pool(), &hash_key(token)).await.map_err(EngineError::from)? {
            Some((key_project, role)) if key_project == project => Role::parse(&role).ok_or(AuthError::Invalid),
            _ => Err(AuthError::Invalid),
        }
    }
}

/// How long a successful authentication is remembered. Revoking a key or rotating
/// the JWT secret clears every node's cache at once (by NOTIFY); this bound is a
/// second line of defence.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(5);
/// Most remembered credentials; past it the cache starts over.
const AUTH_CACHE_ENTRIES: usize = 10_000;

/// Successful authentications of the last few seconds, keyed by project and the
/// SHA-256 of the token. Failures are never cached, so a new key or project works
/// at once. The cache is only used while this node LISTENs on [`AUTH_CHANNEL`], so
/// that a revocation made anywhere (another node, the CLI) reaches it.
#[derive(Default)]
pub(crate) struct AuthCache {
    entries: Mutex<HashMap<(String, Vec<u8>), (Role, Instant)>>,
    listening: std::sync::atomic::AtomicBool,
}

impl AuthCache {
    fn get(&self, key: &(String, Vec<u8>)) -> Option<Role> {
        if !self.listening.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).filter(|(_, at)| at.elapsed() < AUTH_CACHE_TTL).map(|(role, _)| *role)
    }

    fn put(&self, key: (String, Vec<u8>), role: Role) {
        if !self.listening.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= AUTH_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, (role, Instant::now()));
    }

    pub(crate) fn clear(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub(crate) fn listening(&self) -> bool {
        self.listening.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Turns the cache on once revocations are heard, and off (emptied) when the
    /// LISTEN connection is lost.
    pub(crate) fn set_listening(&self, on: bool) {
        self.listening.store(on, std::sync::atomic::Ordering::Release);
        self.clear();
    }
}

impl Engine {
    /// Forgets every remembered credential, on this node at once and on the
    /// others through a NOTIFY on [`AUTH_CHANNEL`].
    async fn forget_credentials(&self) {
        self.0.auth_cache.clear();
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')").bind(AUTH_CHANNEL).execute(self.pool()).await {
            tracing::warn!(error = %e, "cannot tell the other nodes to forget credentials; they will within 5 s");
        }
    }
}

/// The channel that tells every node to forget remembered credentials.
pub const AUTH_CHANNEL: &str = "herald_auth";

/// The `role` claim of the `X-SC-Token` Herald sends with every delivery (SPEC §3).
pub const RECEIVER_ROLE: &str = "SpaceCloud";

/// A JWT grants the role in its `role` claim when that is "queue"; any other
/// valid token signed with the project secret is an admin token, as in Space Cloud,
/// except the token Herald hands to every receiver (`role: SpaceCloud`): it only
/// tells a receiver who sent the delivery, and opens nothing (SPEC §8).
fn verify_jwt(token: &str, secret: &str) -> Result<Role, AuthError> {
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
    let mut v = Validation::new(Algorithm::HS256);
    v.required_spec_claims.clear();
    v.validate_exp = true;
    // A token that says it is not valid yet is not (RFC 7519 §4.1.5).
    v.validate_nbf = true;
    let data = decode::<serde_json::Value>(token, &DecodingKey::from_secret(secret.as_bytes()), &v)
        .map_err(|_| AuthError::Invalid)?;
    Ok(match data.claims.get("role").and_then(|r| r.as_str()) {
        Some("queue") => Role::Queue,
        Some(role) if role.trim().eq_ignore_ascii_case(RECEIVER_ROLE) => return Err(AuthError::ReceiverToken),
        _ => Role::Admin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids() {
        for ok in ["default", "a", "my-app_2", &"a".repeat(63)] {
            assert!(validate_project_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", "A", "a b", "a/b", &"a".repeat(64)] {
            assert!(validate_project_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signing_secret_is_standard_webhooks_form() {
        let s = new_signing_secret();
        let raw = base64::engine::general_purpose::STANDARD.decode(s.strip_prefix("whsec_").unwrap()).unwrap();
        assert_eq!(raw.len(), 24);
    }
}

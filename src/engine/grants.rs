//! Database grants (SPEC §8): which projects may watch tables in which database
//! aliases. Only an operator grants: `herald database grant`, or a Mission
//! Control account; a project's own API keys cannot.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Engine, EngineError};
use crate::store;

/// One grant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub project: String,
    pub alias: String,
    pub granted_at: DateTime<Utc>,
}

/// The message of a refused database trigger: what to run to allow it.
pub fn not_granted(project: &str, alias: &str) -> EngineError {
    EngineError::Forbidden(format!(
        "`options.db`: the project '{project}' may not watch tables in the database '{alias}'. An operator grants it \
         with `herald database grant --project {project} --db {alias}`, or in Mission Control's project settings"
    ))
}

impl Engine {
    /// Refuses a database trigger on an alias its project does not hold.
    pub(crate) async fn require_grant(&self, project: &str, alias: &str) -> Result<(), EngineError> {
        if store::triggers::is_granted(self.pool(), project, alias).await? {
            Ok(())
        } else {
            Err(not_granted(project, alias))
        }
    }

    /// Lets `project` watch tables of the database `alias`, and installs the row
    /// triggers its existing database triggers there need. Returns false if it
    /// already held the grant.
    pub async fn grant_database(&self, project: &str, alias: &str) -> Result<bool, EngineError> {
        self.databases().get(alias)?;
        if store::projects::get(self.pool(), project).await?.is_none() {
            return Err(EngineError::NotFound(format!("unknown project '{project}'")));
        }
        let granted = store::triggers::grant(self.pool(), project, alias).await?;
        self.resync_project_tables(project, alias).await?;
        tracing::info!(project, alias, "database granted");
        Ok(granted)
    }

    /// Takes a grant back: the project's database triggers on that alias stop
    /// capturing at once (their row triggers go, unless another project's need them).
    pub async fn revoke_database(&self, project: &str, alias: &str) -> Result<bool, EngineError> {
        let revoked = store::triggers::revoke(self.pool(), project, alias).await?;
        if revoked {
            self.resync_project_tables(project, alias).await?;
            tracing::info!(project, alias, "database grant revoked");
        }
        Ok(revoked)
    }

    /// Every grant, or one project's.
    pub async fn list_database_grants(&self, project: Option<&str>) -> Result<Vec<Grant>, EngineError> {
        Ok(store::triggers::grants(self.pool(), project)
            .await?
            .into_iter()
            .map(|(project, alias, granted_at)| Grant { project, alias, granted_at })
            .collect())
    }

    /// Names, in the log, every database trigger that captures nothing because its
    /// project holds no grant on its alias (after an upgrade, or a revoke).
    pub(crate) async fn warn_about_ungranted_triggers(&self) {
        match store::triggers::ungranted(self.pool()).await {
            Ok(list) => {
                for (project, name, alias) in list {
                    tracing::warn!(project, trigger = name, alias,
                        "this database trigger captures nothing: its project holds no grant on the alias; \
                         `herald database grant --project {project} --db {alias}` lets it");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list database triggers without a grant"),
        }
    }

    async fn resync_project_tables(&self, project: &str, alias: &str) -> Result<(), EngineError> {
        if self.databases().get(alias).is_err() {
            return Ok(());
        }
        for table in store::triggers::project_tables(self.pool(), project, alias).await? {
            self.sync_table(alias, &table).await?;
        }
        Ok(())
    }
}

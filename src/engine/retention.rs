//! Retention (SPEC §9): the per-project setting and the pass that applies it.

use std::time::Duration;

use super::{Engine, EngineError};
use crate::store::retention as store;
pub use store::Removed;

/// The retention a new project gets, in days.
pub const DEFAULT_DAYS: i32 = 30;
/// The allowed range, in days.
pub const DAYS: std::ops::RangeInclusive<i64> = 1..=3650;
/// How often the retention pass runs: often, so that each pass removes a
/// minute's worth of history in a few short batches rather than a burst.
const EVERY: Duration = Duration::from_secs(60);
/// Most batches one pass removes; the next pass goes on.
const BUDGET: usize = 500;

impl Engine {
    /// A project's retention, in days.
    pub async fn retention_days(&self, project: &str) -> Result<i32, EngineError> {
        store::retention_days(self.pool(), project)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("unknown project '{project}'")))
    }

    /// Sets a project's retention; the next pass applies it.
    pub async fn set_retention_days(&self, project: &str, days: i64) -> Result<i32, EngineError> {
        if !DAYS.contains(&days) {
            return Err(EngineError::Invalid(format!(
                "`retentionDays` must be between {} and {} days, not {days}",
                DAYS.start(),
                DAYS.end()
            )));
        }
        if !store::set_retention_days(self.pool(), project, days as i32).await? {
            return Err(EngineError::NotFound(format!("unknown project '{project}'")));
        }
        tracing::info!(project, days, "retention set");
        Ok(days as i32)
    }

    /// One retention pass over every project.
    pub async fn apply_retention(&self) -> Result<Removed, EngineError> {
        Ok(store::apply(self.pool(), BUDGET).await?)
    }

    /// Applies retention at start and every minute, and forgets the metrics of
    /// deleted triggers. Passes on several nodes do not collide: each batch
    /// skips the rows another holds.
    pub(crate) async fn retention_loop(self) {
        let cancel = self.shutdown_token();
        loop {
            match self.apply_retention().await {
                Ok(r) if r.is_empty() => {}
                Ok(r) => tracing::info!(partitions = r.partitions, partition_rows = r.partition_rows,
                    event_logs = r.event_logs, invocation_logs = r.invocation_logs,
                    events = r.events, "retention removed old history"),
                Err(e) => tracing::warn!(error = %e, "retention pass failed; the next one retries"),
            }
            // The metrics of deleted triggers go too, whether or not anything scrapes.
            if let Ok(triggers) = crate::store::flow::circuits(self.pool()).await {
                self.0.delivery_counts.forget_deleted_triggers(&triggers);
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }
}

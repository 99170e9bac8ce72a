//! Live updates for Mission Control's open pages: one poll a second per project
//! that has a page open on this node, shared by all of them. The poll reads a
//! fingerprint of the project's history from the database (the newest event log
//! and the counts of ended ones), so changes made by any node are seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use super::Engine;
use crate::store::history;

/// How often a watched project's history is looked at.
pub const LIVE_POLL: Duration = Duration::from_secs(1);

/// The watched projects, each with the sender of its change counter.
#[derive(Default)]
pub(crate) struct Hub {
    projects: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Engine {
    /// A counter that goes up whenever the project's history changes: an event
    /// log queued, ended, cancelled or removed, on any node. Pages refetch what
    /// they show when it moves. The poll stops when the last receiver is dropped.
    pub fn watch_history(&self, project: &str) -> watch::Receiver<u64> {
        let mut projects = self.0.live.projects.lock().expect("live hub lock");
        if let Some(tx) = projects.get(project) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(0);
        projects.insert(project.to_string(), tx.clone());
        let engine = self.clone();
        let project = project.to_string();
        tokio::spawn(async move { engine.poll_history(project, tx).await });
        rx
    }

    async fn poll_history(self, project: String, tx: watch::Sender<u64>) {
        let mut tick = tokio::time::interval(LIVE_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = None;
        loop {
            tick.tick().await;
            {
                // Under the lock: a page subscribing now finds either this poll or none.
                let mut projects = self.0.live.projects.lock().expect("live hub lock");
                if tx.receiver_count() == 0 {
                    projects.remove(&project);
                    return;
                }
            }
            match history::fingerprint(self.reads(), &project).await {
                Ok(now) if last != Some(now) => {
                    if last.is_some() {
                        tx.send_modify(|v| *v += 1);
                    }
                    last = Some(now);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, project, "live updates: the history could not be read"),
            }
        }
    }
}

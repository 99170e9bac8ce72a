//! Synchronous events (SPEC §4): persisted first, delivered at once by this node,
//! and waited for up to the sync deadline.

use serde_json::{json, Value};

use super::{Engine, EngineError};
use crate::model::Status;
use crate::store::events::{self as store, NewEvent};

/// How a synchronous call ended; the API maps each to its status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncStatus {
    /// At least one delivery succeeded (200).
    Ok,
    /// Every delivery failed (502).
    AllFailed,
    /// The deadline passed; delivery goes on in the background (504).
    Timeout,
    /// No enabled trigger for the type (404).
    NoTrigger,
}

/// The reply body and how it ended.
#[derive(Clone, Debug)]
pub struct SyncReply {
    pub status: SyncStatus,
    pub body: Value,
}

impl Engine {
    pub(crate) async fn queue_sync(&self, project: &str, event: NewEvent) -> Result<SyncReply, EngineError> {
        let event_type = event.event_type.clone();
        let stored = store::enqueue_committed(self.writer(), project, std::slice::from_ref(&event), self.own_lease(), None, &[])
            .await?;
        super::queue::count_queued(project, 1);
        let mut stored = stored.into_iter().next().ok_or(EngineError::Database(sqlx::Error::RowNotFound))?;
        let event_id = stored.event_id;
        if stored.duplicate {
            return Err(EngineError::Conflict(format!(
                "`idempotencyKey` was already used by event {event_id}; a synchronous event cannot be replayed"
            )));
        }
        if stored.log_ids.is_empty() {
            return Ok(SyncReply {
                status: SyncStatus::NoTrigger,
                body: json!({"error": format!("no enabled trigger for type '{event_type}'"), "eventId": event_id}),
            });
        }

        // Every event log of a synchronous event is leased to this node as it is
        // stored. Each takes a delivery slot like any other delivery (SPEC §8); one
        // that finds none free before the deadline is handed to the dispatchers.
        let deadline = std::time::Instant::now() + self.config().sync_timeout;
        let jobs = std::mem::take(&mut stored.leased);
        // Logs not leased here belong to triggers whose circuit is open: they wait.
        let unleased: Vec<uuid::Uuid> =
            stored.log_ids.iter().filter(|id| !jobs.iter().any(|j| j.id == **id)).copied().collect();
        let waiting = if unleased.is_empty() { Vec::new() } else { store::trigger_names(self.pool(), &unleased).await? };
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let engine = self.clone();
                let held = self.hold_lease(job.id);
                self.0.tasks.spawn(async move {
                    let _held = held;
                    // Room within the trigger's limits first (SPEC §10), then a
                    // slot: a delivery waiting for its trigger holds no slot.
                    let ticket = match job.trigger_id {
                        Some(trigger) => engine.flow_ticket(trigger, deadline).await,
                        None => None,
                    };
                    let slot = if ticket.is_some() || job.trigger_id.is_none() {
                        tokio::time::timeout_at(deadline.into(), engine.0.slots.clone().acquire_owned()).await.ok().and_then(Result::ok)
                    } else {
                        None
                    };
                    match slot {
                        Some(permit) => {
                            let mut ticket = ticket;
                            let outcome = engine.deliver_job(job, Some(deadline), &mut ticket).await;
                            drop(permit);
                            drop(ticket);
                            outcome
                        }
                        _ => {
                            if let Err(e) = store::release_unstarted(engine.pool(), engine.node_id(), &[job.id]).await {
                                tracing::warn!(log = %job.id, error = %e, "cannot hand a synchronous delivery to the dispatchers; its lease will expire");
                            }
                            super::dispatch::DeliveryOutcome {
                                log_id: job.id,
                                trigger: job.trigger_name.clone(),
                                status: Status::Pending,
                                status_code: None,
                                duration_ms: None,
                                response: None,
                            }
                        }
                    }
                })
            })
            .collect();
        let all = futures_util::future::join_all(handles);
        let Ok(results) = tokio::time::timeout(self.config().sync_timeout, all).await else {
            return Ok(SyncReply {
                status: SyncStatus::Timeout,
                body: json!({
                    "error": format!("the deliveries did not finish within {} ms; they go on in the background",
                                     self.config().sync_timeout.as_millis()),
                    "eventId": event_id,
                }),
            });
        };
        let mut outcomes: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
        outcomes.extend(waiting.iter().map(|(log_id, trigger)| super::dispatch::DeliveryOutcome {
            log_id: *log_id,
            trigger: trigger.clone(),
            status: Status::Pending,
            status_code: None,
            duration_ms: None,
            response: None,
        }));
        outcomes.sort_by(|a, b| a.trigger.cmp(&b.trigger));
        // The webhook's answer is the `response` field of its JSON body (seed 004).
        let response_of = |o: &super::dispatch::DeliveryOutcome| {
            o.response.as_ref().and_then(|r| r.get("response")).cloned().unwrap_or(Value::Null)
        };
        let result = outcomes.iter().find(|o| o.status == Status::Processed).map(response_of).unwrap_or(Value::Null);
        let deliveries: Vec<Value> = outcomes
            .iter()
            .map(|o| {
                json!({
                    "trigger": o.trigger,
                    "eventLogId": o.log_id,
                    "status": o.status,
                    "statusCode": o.status_code,
                    "durationMs": o.duration_ms,
                    "response": response_of(o),
                })
            })
            .collect();
        let ok = outcomes.iter().any(|o| o.status == Status::Processed);
        // A delivery whose next retry falls after the deadline was handed to the
        // dispatchers: it has not failed, it goes on in the background.
        let going_on = outcomes.iter().any(|o| !o.status.is_final());
        let mut body = json!({"result": result, "eventId": event_id, "deliveries": deliveries});
        let status = if ok {
            SyncStatus::Ok
        } else if !waiting.is_empty() && outcomes.iter().all(|o| o.status.is_final() || waiting.iter().any(|w| w.0 == o.log_id)) {
            let names: Vec<&str> = waiting.iter().map(|w| w.1.as_str()).collect();
            body["error"] = json!(format!(
                "the circuit of {} is open (its receiver failed nearly every recent attempt): the delivery waits \
                 and goes out once the circuit closes",
                names.join(", ")
            ));
            SyncStatus::Timeout
        } else if going_on {
            body["error"] = json!(format!(
                "the deliveries did not succeed within {} ms; their retries go on in the background",
                self.config().sync_timeout.as_millis()
            ));
            SyncStatus::Timeout
        } else {
            body["error"] = json!("every delivery failed");
            SyncStatus::AllFailed
        };
        Ok(SyncReply { status, body })
    }
}

//! Queueing: the body rules of SPEC §2, and storing events with their event logs.

use chrono::{DateTime, Duration as ChronoDuration, SubsecRound, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::sync::SyncReply;
use super::triggers::{validate_event_type, DB_TYPES, FILE_TYPES};
use super::{Engine, EngineError};
use crate::store::events::{self as store, NewEvent};

/// Numbers below this are epoch seconds, above it epoch milliseconds (SPEC §2).
const SECONDS_BELOW: f64 = 100_000_000_000.0;
/// The furthest ahead an event may be scheduled: ten years.
const MAX_AHEAD_SECS: f64 = 10.0 * 365.0 * 86_400.0;
/// The most events in one batch call.
pub const MAX_BATCH: usize = 1000;
const MAX_IDEMPOTENCY_KEY: usize = 256;
const MAX_ORDERING_KEY: usize = 256;

/// A parsed queue request.
#[derive(Clone, Debug)]
pub struct QueueRequest {
    pub event: NewEvent,
    /// True when `timestamp` or `delay` put delivery in the future.
    pub scheduled: bool,
}

/// The reply to an asynchronous queue call.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Queued {
    pub event_id: Uuid,
    pub deliver_at: DateTime<Utc>,
    pub triggers: usize,
}

/// What a queue call produced.
#[derive(Debug)]
pub enum QueueOutcome {
    Queued(Queued),
    Sync(SyncReply),
}

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::Invalid(msg.into())
}

/// Whether any string or key in a JSON value holds U+0000, which PostgreSQL's
/// jsonb and text refuse.
pub fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// Reads a queue body (SPEC §2) into an event. Unknown keys are ignored.
pub fn parse_event(body: &Value, now: DateTime<Utc>) -> Result<QueueRequest, EngineError> {
    let obj = body.as_object().ok_or_else(|| invalid("the body must be a JSON object"))?;
    let event_type = match obj.get("type") {
        None | Some(Value::Null) => return Err(invalid("`type` is required")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid("`type` must be a string")),
    };
    validate_event_type(&event_type)?;
    if DB_TYPES.contains(&event_type.as_str()) || FILE_TYPES.contains(&event_type.as_str()) {
        return Err(invalid(format!(
            "`type` {event_type} is produced by database and file triggers and cannot be queued"
        )));
    }
    // `payload` is what Space Cloud's own clients send.
    let data = obj.get("data").or_else(|| obj.get("payload")).cloned().unwrap_or(Value::Null);
    if holds_nul(&data) {
        return Err(invalid("`data` contains a NUL character (\\u0000), which PostgreSQL cannot store"));
    }

    let base = match obj.get("timestamp") {
        None | Some(Value::Null) => now,
        Some(Value::Number(n)) => {
            let n = n.as_f64().filter(|n| n.is_finite() && *n >= 0.0).ok_or_else(|| {
                invalid("`timestamp` must be a non-negative number of epoch milliseconds (or seconds)")
            })?;
            let ms = if n < SECONDS_BELOW { n * 1000.0 } else { n };
            if ms > (now.timestamp_millis() as f64) + MAX_AHEAD_SECS * 1000.0 {
                return Err(invalid("`timestamp` is more than 10 years ahead"));
            }
            DateTime::from_timestamp_millis(ms as i64).ok_or_else(|| invalid("`timestamp` is out of range"))?
        }
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map_err(|_| {
                invalid(format!(
                    "`timestamp` '{s}' is not an RFC 3339 time such as 2026-01-31T12:00:00Z, or a number"
                ))
            })?
            .with_timezone(&Utc),
        Some(_) => return Err(invalid("`timestamp` must be a number or an RFC 3339 string")),
    };
    let delay = match obj.get("delay") {
        None | Some(Value::Null) => 0.0,
        Some(Value::Number(n)) => {
            let d = n.as_f64().unwrap_or(f64::NAN);
            if !d.is_finite() || d < 0.0 {
                return Err(invalid("`delay` must be a number of seconds, 0 or more"));
            }
            if d > MAX_AHEAD_SECS {
                return Err(invalid(format!("`delay` of {d} seconds is more than the limit of 10 years")));
            }
            d
        }
        Some(_) => return Err(invalid("`delay` must be a number of seconds")),
    };
    // PostgreSQL keeps microseconds: round here so that replies match what is stored.
    let deliver_at = (base + ChronoDuration::microseconds((delay * 1e6) as i64)).trunc_subsecs(6);
    if (deliver_at - now).num_seconds() as f64 > MAX_AHEAD_SECS {
        return Err(invalid("`timestamp` plus `delay` is more than 10 years ahead"));
    }
    let synchronous = match obj.get("isSynchronous") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("`isSynchronous` must be true or false")),
    };
    let idempotency_key = match obj.get("idempotencyKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => return Err(invalid("`idempotencyKey` must not be empty")),
        Some(Value::String(s)) if s.len() > MAX_IDEMPOTENCY_KEY => {
            return Err(invalid(format!("`idempotencyKey` is longer than {MAX_IDEMPOTENCY_KEY} bytes")))
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("`idempotencyKey` must be a string")),
    };
    let ordering_key = match obj.get("orderingKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => return Err(invalid("`orderingKey` must not be empty")),
        Some(Value::String(s)) if s.chars().count() > MAX_ORDERING_KEY => {
            return Err(invalid(format!("`orderingKey` is longer than {MAX_ORDERING_KEY} characters")))
        }
        Some(Value::String(s)) if s.contains('\0') => {
            return Err(invalid("`orderingKey` contains a NUL character (\\u0000), which PostgreSQL cannot store"))
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("`orderingKey` must be a string")),
    };
    if synchronous && ordering_key.is_some() {
        return Err(invalid(
            "`orderingKey` cannot be combined with `isSynchronous`: a synchronous event is delivered at once, \
             and an ordered one waits for the events of its key queued before it",
        ));
    }
    Ok(QueueRequest {
        event: NewEvent {
            id: Uuid::now_v7(),
            event_type,
            data,
            deliver_at,
            synchronous,
            idempotency_key,
            ordering_key,
        },
        scheduled: deliver_at > now,
    })
}

pub(crate) fn count_queued(project: &str, n: u64) {
    metrics::counter!(crate::metrics::EVENTS_QUEUED, "project" => project.to_string()).increment(n);
}

impl Engine {
    /// Queues one event (SPEC §2). A synchronous one is delivered and waited for (SPEC §4).
    pub async fn queue(&self, project: &str, body: &Value) -> Result<QueueOutcome, EngineError> {
        let req = parse_event(body, Utc::now())?;
        if req.event.synchronous {
            if req.scheduled {
                return Err(invalid(
                    "`isSynchronous` cannot be combined with a future `timestamp` or a `delay`",
                ));
            }
            return Ok(QueueOutcome::Sync(self.queue_sync(project, req.event).await?));
        }
        let s = self.store_one(project, req.event).await?;
        Ok(QueueOutcome::Queued(Queued { event_id: s.event_id, deliver_at: s.deliver_at, triggers: s.log_ids.len() }))
    }

    /// Queues up to 1000 events in one transaction, or none: a bad event rejects
    /// the batch with an error that gives its index.
    pub async fn queue_batch(&self, project: &str, body: &Value) -> Result<Vec<Queued>, EngineError> {
        let events = body
            .as_object()
            .and_then(|o| o.get("events"))
            .ok_or_else(|| invalid("the body must be a JSON object with an `events` array"))?
            .as_array()
            .ok_or_else(|| invalid("`events` must be an array"))?;
        if events.is_empty() || events.len() > MAX_BATCH {
            return Err(invalid(format!("`events` must hold 1 to {MAX_BATCH} events, not {}", events.len())));
        }
        let now = Utc::now();
        let mut parsed = Vec::with_capacity(events.len());
        for (i, body) in events.iter().enumerate() {
            let req = parse_event(body, now).map_err(|e| invalid(format!("events[{i}]: {e}")))?;
            if req.event.synchronous {
                return Err(invalid(format!("events[{i}]: `isSynchronous` is not allowed in a batch")));
            }
            parsed.push(req.event);
        }
        let slots = self.slots_for_queueing(parsed.len());
        let mut stored =
            store::enqueue_committed(self.writer(), project, &parsed, self.own_lease(), Some(slots.len()), &self.0.flow.blocked())
                .await?;
        count_queued(project, stored.iter().filter(|s| !s.duplicate).count() as u64);
        self.deliver_leased(take_leased(&mut stored), slots);
        Ok(stored
            .into_iter()
            .map(|s| Queued { event_id: s.event_id, deliver_at: s.deliver_at, triggers: s.log_ids.len() })
            .collect())
    }
}

/// Most events the enqueuer stores in one transaction.
const ENQUEUE_BATCH: usize = 1000;
/// Enqueuer transactions in flight at once. One: on a small machine the calls that
/// arrive while it is written make the next, larger batch, and larger batches cost
/// less CPU per event (measured: single calls 6.6-6.9k/s with two, 7.3-7.5k/s with one).
const ENQUEUE_WRITERS: usize = 1;
/// Queue calls that may wait for the enqueuer. Past it a call gets 503 at once:
/// under more load than the database absorbs, callers hear so promptly and memory
/// stays bounded, instead of every call slowing down.
pub const ENQUEUE_BACKLOG: usize = 20_000;

/// An event handed to the enqueuer, and where to send what became of it: the
/// stored event, or the event back when its batch failed and the caller should
/// store it alone.
pub(crate) type PendingEnqueue = (String, NewEvent, tokio::sync::oneshot::Sender<Result<store::Stored, NewEvent>>);

impl Engine {
    /// Stores one asynchronous event: through the enqueuer, which shares one
    /// transaction among every queue call that arrived meanwhile, or alone when
    /// the enqueuer is not running or its batch failed.
    async fn store_one(&self, project: &str, event: NewEvent) -> Result<store::Stored, EngineError> {
        let event = if self.0.enqueuer_running.load(std::sync::atomic::Ordering::Acquire) {
            let (reply, answer) = tokio::sync::oneshot::channel();
            match self.0.enqueues.try_send((project.to_string(), event, reply)) {
                Ok(()) => match answer.await {
                    Ok(Ok(stored)) => return Ok(stored),
                    Ok(Err(event)) => event,
                    Err(_) => return Err(EngineError::Overloaded("the queue call was dropped at shutdown".into())),
                },
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!(crate::metrics::QUEUE_REFUSED).increment(1);
                    return Err(EngineError::Overloaded(format!(
                        "Herald is overloaded: {ENQUEUE_BACKLOG} queue calls are already waiting for the database; \
                         retry shortly, or send events in batches"
                    )));
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed((_, event, _))) => event,
            }
        } else {
            event
        };
        let slots = self.slots_for_queueing(1);
        let blocked = self.0.flow.blocked();
        let stored = store::enqueue_committed(
            self.writer(),
            project,
            std::slice::from_ref(&event),
            self.own_lease(),
            Some(slots.len()),
            &blocked,
        )
        .await?;
        count_queued(project, 1);
        let mut stored = stored.into_iter().next().ok_or(EngineError::Database(sqlx::Error::RowNotFound))?;
        self.deliver_leased(std::mem::take(&mut stored.leased), slots);
        Ok(stored)
    }

    /// The lease of event logs this node delivers as it stores them.
    pub(crate) fn own_lease(&self) -> Option<store::Lease> {
        Some(store::Lease { node: self.node_id(), margin: self.config().lease_margin })
    }

    /// The enqueuer: group commit for single queue calls. While a transaction is
    /// being written, new calls wait in the channel; the next transaction takes
    /// them all (up to [`ENQUEUE_BATCH`]). An idle Herald writes each call at once.
    pub(crate) async fn enqueue_loop(self) {
        let Some(mut rx) = self.0.enqueue_rx.lock().ok().and_then(|mut r| r.take()) else { return };
        self.0.enqueuer_running.store(true, std::sync::atomic::Ordering::Release);
        let writers = std::sync::Arc::new(tokio::sync::Semaphore::new(ENQUEUE_WRITERS));
        let cancel = self.shutdown_token();
        loop {
            let Ok(permit) = writers.clone().acquire_owned().await else { break };
            // Waits for one call, then takes every call already waiting.
            let mut batch = Vec::new();
            tokio::select! {
                n = rx.recv_many(&mut batch, ENQUEUE_BATCH) => if n == 0 { break },
                _ = cancel.cancelled() => break,
            }
            let engine = self.clone();
            tokio::spawn(async move {
                engine.write_enqueued(batch).await;
                drop(permit);
            });
        }
        self.0.enqueuer_running.store(false, std::sync::atomic::Ordering::Release);
        // Calls that arrived meanwhile store their events themselves.
        rx.close();
        while let Ok((_, event, reply)) = rx.try_recv() {
            let _ = reply.send(Err(event));
        }
    }

    /// Stores a batch of single queue calls in one transaction, one enqueue per
    /// project. If it fails, each event goes back to its caller to be stored
    /// alone, so that one bad event cannot fail the others.
    async fn write_enqueued(&self, mut batch: Vec<PendingEnqueue>) {
        batch.sort_by(|a, b| a.0.cmp(&b.0));
        let (mut projects, mut events, mut replies) = (Vec::new(), Vec::new(), Vec::new());
        for (project, event, reply) in batch {
            projects.push(project);
            events.push(event);
            replies.push(reply);
        }
        let slots = self.slots_for_queueing(events.len());
        let blocked = self.0.flow.blocked();
        let written: Result<Vec<store::Stored>, sqlx::Error> = async {
            if projects.first() == projects.last() {
                // One project, the usual case: one statement stores them all.
                let lease = self.own_lease();
                return store::enqueue_committed(self.writer(), &projects[0], &events, lease, Some(slots.len()), &blocked)
                    .await;
            }
            let mut tx = self.writer().begin().await?;
            let mut stored: Vec<store::Stored> = Vec::with_capacity(events.len());
            let mut start = 0;
            while start < events.len() {
                let end = start + projects[start..].iter().take_while(|p| **p == projects[start]).count();
                let leased_so_far: usize = stored.iter().map(|s| s.leased.len()).sum();
                let limit = Some(slots.len().saturating_sub(leased_so_far));
                stored.extend(
                    store::enqueue_leasing(&mut tx, &projects[start], &events[start..end], self.own_lease(), limit, &blocked)
                        .await?,
                );
                start = end;
            }
            tx.commit().await?;
            Ok(stored)
        }
        .await;
        match written {
            Ok(mut stored) => {
                for (project, s) in projects.iter().zip(&stored) {
                    if !s.duplicate {
                        count_queued(project, 1);
                    }
                }
                let leased = take_leased(&mut stored);
                for (reply, s) in replies.into_iter().zip(stored) {
                    let _ = reply.send(Ok(s));
                }
                self.deliver_leased(leased, slots);
            }
            Err(e) => {
                tracing::debug!(error = %e, events = events.len(), "a shared enqueue failed; storing each alone");
                for (reply, event) in replies.into_iter().zip(events) {
                    let _ = reply.send(Err(event));
                }
            }
        }
    }
}

/// The jobs of every event log leased at queueing, taken out of what the callers get.
fn take_leased(stored: &mut [store::Stored]) -> Vec<store::Job> {
    stored.iter_mut().flat_map(|s| std::mem::take(&mut s.leased)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn parse(v: Value) -> Result<QueueRequest, String> {
        parse_event(&v, now()).map_err(|e| e.to_string())
    }

    #[test]
    fn timestamps_in_seconds_milliseconds_and_rfc3339() {
        let secs = parse(json!({"type": "t", "timestamp": 1587902400})).unwrap();
        assert_eq!(secs.event.deliver_at.to_rfc3339(), "2020-04-26T12:00:00+00:00");
        let ms = parse(json!({"type": "t", "timestamp": 1587902400123u64})).unwrap();
        assert_eq!(ms.event.deliver_at.timestamp_millis(), 1587902400123);
        let s = parse(json!({"type": "t", "timestamp": "2026-11-22T13:00:00+01:00"})).unwrap();
        assert_eq!(s.event.deliver_at, now());
        assert!(!s.scheduled);
    }

    #[test]
    fn delay_adds_seconds_with_fractions() {
        let r = parse(json!({"type": "t", "delay": 1.5})).unwrap();
        assert_eq!(r.event.deliver_at - now(), ChronoDuration::milliseconds(1500));
        assert!(r.scheduled);
        let r = parse(json!({"type": "t", "delay": 3600, "timestamp": 1587902400})).unwrap();
        assert_eq!(r.event.deliver_at.to_rfc3339(), "2020-04-26T13:00:00+00:00");
    }

    #[test]
    fn payload_is_an_alias_of_data() {
        assert_eq!(parse(json!({"type": "t", "payload": {"a": 1}})).unwrap().event.data, json!({"a": 1}));
        assert_eq!(parse(json!({"type": "t"})).unwrap().event.data, Value::Null);
        let both = parse(json!({"type": "t", "data": 1, "payload": 2, "options": {}})).unwrap();
        assert_eq!(both.event.data, json!(1));
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            (json!([1]), "JSON object"),
            (json!({}), "`type` is required"),
            (json!({"type": ""}), "`type`"),
            (json!({"type": 5}), "`type` must be a string"),
            (json!({"type": "x".repeat(129)}), "128"),
            (json!({"type": "DB_INSERT"}), "cannot be queued"),
            (json!({"type": "t", "delay": -1}), "`delay`"),
            (json!({"type": "t", "delay": "10"}), "`delay`"),
            (json!({"type": "t", "delay": 1e30}), "`delay`"),
            (json!({"type": "t", "timestamp": "yesterday"}), "`timestamp`"),
            (json!({"type": "t", "timestamp": 1e30}), "`timestamp`"),
            (json!({"type": "t", "timestamp": true}), "`timestamp`"),
            (json!({"type": "t", "isSynchronous": "yes"}), "`isSynchronous`"),
            (json!({"type": "t", "idempotencyKey": 7}), "`idempotencyKey`"),
            (json!({"type": "t", "data": {"a": ["x\u{0}y"]}}), "NUL"),
        ];
        for (body, want) in cases {
            let err = parse(body.clone()).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
    }
}

//! The dispatcher: claims due event logs under leases, runs their deliveries with
//! bounded concurrency, and moves each event log on after every attempt.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use super::deliver::{self, Verdict};
use super::{Engine, EngineError};
use crate::model::Status;
use crate::store::events::{self as store, Completion, Job, Next, WAKE_CHANNEL};

/// Where a dispatcher's claims start reading the due logs (see
/// [`store::claim_from`]). While claims fill their batch, a backlog is being
/// drained in due order: the next claim starts at the due time the last one
/// reached, instead of stepping again over the entries every earlier claim left
/// behind. Logs due before that floor (a transaction that committed late,
/// leases given back, logs of an ordering key let go) are found by the claim
/// that reads from the start: at once when a claim from the floor comes up
/// short, and at least every [`READ_ALL_EVERY`] while claims keep filling.
#[derive(Debug, Default)]
pub(crate) struct ClaimFloor {
    from: Option<DateTime<Utc>>,
    read_all_at: Option<Instant>,
}

/// Longest time between two claims that read the due logs from the start.
pub const READ_ALL_EVERY: Duration = Duration::from_secs(1);

impl ClaimFloor {
    /// Where the next claim starts; `None` is from the start.
    pub(crate) fn start(&self, now: Instant) -> Option<DateTime<Utc>> {
        let recent = self.read_all_at.is_some_and(|at| now.duration_since(at) < READ_ALL_EVERY);
        self.from.filter(|_| recent)
    }

    /// After a claim (`read_all`: one of its reads started from the start) that
    /// took logs due up to `through`, and filled its batch or not.
    pub(crate) fn after(&mut self, read_all: bool, filled: bool, through: Option<DateTime<Utc>>, now: Instant) {
        if read_all {
            self.read_all_at = Some(now);
        }
        self.from = through.filter(|_| filled);
    }
}

/// How a delivery ended, as far as this node saw it.
#[derive(Clone, Debug)]
pub struct DeliveryOutcome {
    pub log_id: uuid::Uuid,
    pub trigger: String,
    pub status: Status,
    pub status_code: Option<i32>,
    pub duration_ms: Option<i32>,
    /// The JSON body of the last answer, if it was JSON.
    pub response: Option<serde_json::Value>,
}

impl Engine {
    /// Starts the dispatcher, its NOTIFY listener and the lease sweeper. They stop
    /// when `shutdown()` is called.
    pub fn start(&self) -> Vec<JoinHandle<()>> {
        let mut workers = vec![
            tokio::spawn(self.clone().listen()),
            tokio::spawn(self.clone().sweep_expired_leases()),
            tokio::spawn(self.clone().renew_leases_loop()),
            tokio::spawn(self.clone().dispatch_loop()),
            tokio::spawn(self.clone().reconcile_loop()),
            tokio::spawn(self.clone().completion_loop()),
            tokio::spawn(self.clone().enqueue_loop()),
            tokio::spawn(self.clone().refresh_statistics_loop()),
            tokio::spawn(self.clone().retention_loop()),
            tokio::spawn(self.clone().flow_loop()),
            tokio::spawn(self.clone().pump_loop()),
            tokio::spawn(self.clone().drain_held_loop()),
        ];
        let engine = self.clone();
        workers.push(tokio::spawn(async move {
            engine.warn_about_ungranted_triggers().await;
            engine.sync_all_tables().await
        }));
        for alias in self.databases().aliases() {
            workers.push(tokio::spawn(self.clone().drain_loop(alias)));
        }
        workers
    }

    /// Stops claiming, lets in-flight attempts finish within the grace period,
    /// stops the attempts still running, then gives back every lease this node
    /// still holds so another node can take over. No attempt of this node is
    /// running when its lease is handed back.
    pub async fn shutdown(&self) {
        self.0.shutdown.cancel();
        // Deliveries waiting for their trigger's limits never started: their
        // leases are handed back below with the others.
        self.0.flow.forget_waiting();
        self.0.tasks.close();
        if tokio::time::timeout(self.config().shutdown_grace, self.0.tasks.wait()).await.is_err() {
            tracing::warn!(running = self.0.tasks.len(), "shutdown grace period over; stopping the attempts still running");
            self.0.abandon.cancel();
            // They stop at once; what they already recorded stays recorded.
            if tokio::time::timeout(Duration::from_secs(5), self.0.tasks.wait()).await.is_err() {
                tracing::warn!(running = self.0.tasks.len(), "deliveries did not stop; their leases will expire instead");
            }
        }
        let still_held: Vec<uuid::Uuid> = self.held_leases();
        // Leases are renewed up to here: requests drain before shutdown is called.
        self.0.leases_handed_back.cancel();
        match store::release(self.pool(), self.node_id(), &still_held).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "released leases for other nodes"),
            Err(e) => tracing::warn!(error = %e, "could not release leases; they will expire instead"),
        }
    }

    /// One step of the dispatcher: claims as many due event logs as there are free
    /// slots (at most one batch) and starts their deliveries. Returns how many it
    /// claimed and how many it asked for.
    pub async fn dispatch_once(&self) -> Result<(usize, usize), EngineError> {
        if self.0.shutdown.is_cancelled() {
            return Ok((0, 0));
        }
        // The slots are taken before the claim: queue calls take them too, to
        // deliver their own events at once.
        let mut permits = self.take_slots(self.config().claim_batch as usize);
        let free = permits.len();
        if free == 0 {
            return Ok((0, 0));
        }
        let blocked = self.0.flow.blocked();
        let (pool, node, margin) = (self.pool(), self.node_id(), self.config().lease_margin);
        let from = self.claim_floor().start(Instant::now());
        let mut claimed = store::claim_from(pool, node, free as i64, margin, &blocked, from).await?;
        let mut read_all = from.is_none();
        if !read_all && claimed.jobs.len() < free {
            // Nothing more past the floor: read from the start, for logs due earlier.
            let rest = free - claimed.jobs.len();
            let more = store::claim_from(pool, node, rest as i64, margin, &blocked, None).await?;
            claimed.jobs.extend(more.jobs);
            claimed.through = more.through;
            read_all = true;
        }
        self.claim_floor().after(read_all, claimed.jobs.len() == free, claimed.through, Instant::now());
        let jobs = claimed.jobs;
        let claimed = jobs.len();
        if !blocked.is_empty() {
            self.0.flow.mark_held(&blocked);
        }
        for job in jobs {
            let permit = permits.pop().expect("claimed no more than the slots taken");
            self.start_or_wait(job, Some(permit));
        }
        Ok((claimed, free))
    }

    fn claim_floor(&self) -> std::sync::MutexGuard<'_, ClaimFloor> {
        self.0.claim_floor.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes up to `want` free delivery slots at once.
    pub(crate) fn take_slots(&self, want: usize) -> Vec<OwnedSemaphorePermit> {
        let mut permits = Vec::new();
        while permits.len() < want {
            match self.0.slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        permits
    }

    /// Free delivery slots for events being queued on this node, which then delivers
    /// them itself at once: no claim, no NOTIFY round trip. None while the
    /// dispatcher is not running here (a node that only queues leaves all work to
    /// the others).
    pub(crate) fn slots_for_queueing(&self, want: usize) -> Vec<OwnedSemaphorePermit> {
        if !self.0.dispatcher_running.load(Ordering::Acquire) || self.0.shutdown.is_cancelled() {
            return Vec::new();
        }
        self.take_slots(want)
    }

    /// Delivers event logs that were leased to this node as they were stored,
    /// one slot each; unused slots are given back.
    pub(crate) fn deliver_leased(&self, jobs: Vec<Job>, mut permits: Vec<OwnedSemaphorePermit>) {
        permits.truncate(jobs.len());
        for (job, permit) in jobs.into_iter().zip(permits) {
            self.start_or_wait(job, Some(permit));
        }
    }

    /// Runs one delivery. `ticket` is its room within the trigger's limits.
    pub(crate) fn spawn_delivery(
        &self,
        job: Job,
        held: HeldLease,
        permit: Option<OwnedSemaphorePermit>,
        ticket: Option<super::flow::Ticket>,
    ) {
        let engine = self.clone();
        self.0.tasks.spawn(async move {
            let probe = job.probe.then_some(job.trigger_id).flatten();
            let mut ticket = ticket;
            let outcome = engine.deliver_job(job, None, &mut ticket).await;
            if let Some(trigger) = probe {
                engine.probe_done(trigger, outcome.status == Status::Processed).await;
            }
            drop(held);
            drop(permit);
            drop(ticket);
            // A slot is free: a delivery waiting for one may start.
            engine.0.flow.pump.notify_one();
            // A slot is free: the dispatcher may be waiting for one.
            if engine.0.slots.available_permits() * 2 >= engine.config().concurrency {
                engine.0.wake.notify_one();
            }
        });
    }

    async fn dispatch_loop(self) {
        // Leases held under this node id from before this start belong to its
        // previous run (it was killed): give them back at once rather than wait for
        // them to expire. Rows claimed since (by a synchronous event) stay.
        // The database's clock, which also stamped the old leases.
        let started: Option<chrono::DateTime<Utc>> =
            sqlx::query_scalar("SELECT now()").fetch_one(self.pool()).await.ok();
        let released = match started {
            Some(t) => store::take_back_previous_run(self.pool(), self.node_id(), t).await,
            None => Ok(0),
        };
        match released {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "took back the leases of this node's previous run"),
            Err(e) => tracing::warn!(error = %e, "cannot release old leases; they will expire instead"),
        }
        let cancel = self.0.shutdown.clone();
        let poll = self.config().poll_interval;
        self.0.dispatcher_running.store(true, Ordering::Release);
        while !cancel.is_cancelled() {
            let wait = match self.dispatch_once().await {
                // A full batch: there may be more due right now.
                Ok((claimed, asked)) if claimed > 0 && claimed == asked => continue,
                Ok((_, 0)) => poll,
                Ok(_) => match store::next_due(self.pool()).await {
                    Ok(Some(at)) => {
                        // Due rows we could not claim are held by another node's claim
                        // right now; look again shortly rather than spin.
                        let ms = (at - Utc::now()).num_milliseconds().max(20) as u64;
                        Duration::from_millis(ms).min(poll)
                    }
                    Ok(None) => poll,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the next due time");
                        poll
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "claiming event logs failed; retrying");
                    Duration::from_secs(1).min(poll)
                }
            };
            tokio::select! {
                _ = self.0.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => {}
            }
        }
    }

    /// Turns NOTIFYs into wake-ups. The listener reconnects by itself after the
    /// database comes back; the poll covers whatever was missed meanwhile.
    async fn listen(self) {
        let cancel = self.0.shutdown.clone();
        while !cancel.is_cancelled() {
            let mut listener = match PgListener::connect_with(self.pool()).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN for new work; polling meanwhile");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = cancel.cancelled() => return,
                    }
                }
            };
            if let Err(e) = listener.listen_all([WAKE_CHANNEL, super::projects::AUTH_CHANNEL]).await {
                tracing::warn!(error = %e, "LISTEN failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = cancel.cancelled() => return,
                }
            }
            // Whatever was missed while not listening: work, and revocations.
            self.0.wake.notify_one();
            self.0.auth_cache.set_listening(true);
            loop {
                tokio::select! {
                    msg = listener.try_recv() => match msg {
                        Ok(Some(n)) if n.channel() == super::projects::AUTH_CHANNEL => self.0.auth_cache.clear(),
                        Ok(Some(_)) => self.0.wake.notify_one(),
                        // The connection dropped and is back: whatever was sent in
                        // between is lost, so forget credentials and look for work.
                        Ok(None) => {
                            tracing::warn!("the LISTEN connection dropped and was re-established");
                            self.0.auth_cache.clear();
                            self.0.wake.notify_one();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "lost the LISTEN connection; reconnecting");
                            self.0.auth_cache.set_listening(false);
                            break;
                        }
                    },
                    _ = cancel.cancelled() => {
                        self.0.auth_cache.set_listening(false);
                        return;
                    }
                }
            }
        }
    }

    /// Keeps the planner's picture of the queue tables current while they grow.
    async fn refresh_statistics_loop(self) {
        let cancel = self.0.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = cancel.cancelled() => return,
            }
            match store::refresh_statistics(self.pool()).await {
                Ok(tables) if tables.is_empty() => {}
                Ok(tables) => tracing::debug!(?tables, "analyzed tables that grew"),
                Err(e) => tracing::debug!(error = %e, "cannot refresh table statistics"),
            }
        }
    }

    /// Marks an event log as worked on by this node until the guard is dropped:
    /// its lease is renewed meanwhile.
    pub(crate) fn hold_lease(&self, log_id: uuid::Uuid) -> HeldLease {
        *self.0.held.lock().unwrap_or_else(|p| p.into_inner()).entry(log_id).or_insert(0) += 1;
        HeldLease { engine: self.clone(), log_id }
    }

    fn held_leases(&self) -> Vec<uuid::Uuid> {
        self.0.held.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect()
    }

    /// Renews the leases of the event logs this node is working on, a few times
    /// per lease margin, so that a lease outlives the recording of its attempt
    /// however long commits lag. Only leases close to their end are written: a
    /// delivery that ends in time costs nothing here. A node that dies stops
    /// renewing, and its leases expire within one margin.
    async fn renew_leases_loop(self) {
        // Not the shutdown signal: HTTP requests drain after it, and the attempts
        // they started still need their leases until shutdown hands them back.
        let cancel = self.0.leases_handed_back.clone();
        let margin = self.config().lease_margin;
        let every = (margin / 3).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = cancel.cancelled() => return,
            }
            let held = self.held_leases();
            if held.is_empty() {
                continue;
            }
            match store::renew_leases(self.pool(), self.node_id(), &held, margin).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(renewed = n, "renewed the leases of slow deliveries"),
                Err(e) => tracing::warn!(error = %e, "cannot renew leases"),
            }
        }
    }

    /// Makes work whose node died due again, a few times per lease margin.
    async fn sweep_expired_leases(self) {
        let cancel = self.0.shutdown.clone();
        let every = (self.config().lease_margin / 3).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = cancel.cancelled() => return,
            }
            match store::requeue_expired(self.pool()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(requeued = n, "took over event logs whose lease expired"),
                Err(e) => tracing::warn!(error = %e, "lease sweep failed"),
            }
            match store::resume_enabled(self.pool()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(resumed = n, "resumed event logs of enabled triggers"),
                Err(e) => tracing::warn!(error = %e, "cannot resume the event logs of enabled triggers"),
            }
        }
    }

    /// Delivers one claimed event log: one attempt, leaving any retry to whichever
    /// node claims it next. With `hold_until` (a synchronous event's deadline),
    /// this node keeps the lease and makes the retries due before that deadline
    /// itself; a retry due later goes to the dispatchers like any other. `ticket`,
    /// the delivery's room within its trigger's limits, is given back while such a
    /// retry waits, and taken again for it.
    pub(crate) async fn deliver_job(
        &self,
        mut job: Job,
        hold_until: Option<std::time::Instant>,
        ticket: &mut Option<super::flow::Ticket>,
    ) -> DeliveryOutcome {
        let mut outcome = DeliveryOutcome {
            log_id: job.id,
            trigger: job.trigger_name.clone(),
            status: Status::Processing,
            status_code: None,
            duration_ms: None,
            response: None,
        };
        let (Some(retries), Some(timeout_ms)) = (job.retries, job.timeout_ms) else {
            if let Err(e) = store::fail_unattempted(self.pool(), self.node_id(), job.id, "trigger deleted").await {
                tracing::warn!(error = %e, "cannot cancel an event log of a deleted trigger");
            }
            outcome.status = Status::Cancelled;
            return outcome;
        };
        let timeout = Duration::from_millis(timeout_ms as u64);
        loop {
            let attempt_no = job.attempts + 1;
            let guard = self.config().network_guard.as_ref();
            let a = tokio::select! {
                a = deliver::attempt(&self.0.http, guard, self.node_id(), &job, timeout) => a,
                // Shutdown's grace period is over: stop, and let the lease be handed back.
                _ = self.0.abandon.cancelled() => return outcome,
            };
            // The receiver has answered: the request no longer counts against the
            // trigger's maxInFlight while its outcome is recorded.
            let limited = ticket.take().is_some();
            let now = Utc::now();
            let next = match &a.verdict {
                Verdict::Delivered => Next::Processed,
                Verdict::Fatal => Next::Failed,
                Verdict::Retryable { .. } if attempt_no > retries => Next::Failed,
                Verdict::Retryable { retry_after } => {
                    let wait = self.config().retry.next_delay_random(attempt_no as u32, *retry_after);
                    let at = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1));
                    let hold = hold_until.is_some_and(|deadline| std::time::Instant::now() + wait < deadline);
                    if hold {
                        let lease = chrono::Duration::from_std(timeout + self.config().lease_margin)
                            .unwrap_or(chrono::Duration::minutes(6));
                        Next::RetryHeld { at, lease_until: at + lease }
                    } else {
                        Next::Retry(at)
                    }
                }
            };
            match &a.verdict {
                Verdict::Delivered => tracing::debug!(log = %job.id, trigger = %job.trigger_name,
                    attempt = attempt_no, ms = a.invocation.duration_ms, "delivered"),
                _ => tracing::warn!(log = %job.id, trigger = %job.trigger_name, attempt = attempt_no,
                    error = a.invocation.error.as_deref().unwrap_or(""), "delivery attempt failed"),
            }
            record_metrics(&self.0.delivery_counts, &job, &next, &a.invocation, now);
            if let Some(trigger) = job.trigger_id {
                let ok = matches!(a.verdict, Verdict::Delivered);
                self.0.flow.count(trigger, ok, a.invocation.duration_ms, a.invocation.error.as_deref());
            }
            outcome.status_code = a.invocation.status_code;
            outcome.duration_ms = Some(a.invocation.duration_ms);
            outcome.response = a.response_json;
            outcome.status = match next {
                Next::Processed => Status::Processed,
                Next::Failed => Status::Failed,
                Next::Retry(_) | Next::RetryHeld { .. } => Status::Pending,
            };
            let done = Completion { log_id: job.id, attempt: attempt_no, next: next.clone(), invocation: a.invocation };
            // A synchronous caller is waiting on this very attempt: record it at once
            // rather than through the completer's queue.
            let recorded = if hold_until.is_some() {
                store::complete(self.writer(), self.node_id(), &done).await.map_err(|e| e.to_string())
            } else {
                self.complete(done).await
            };
            match recorded {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(log = %job.id, "lease lost during the attempt; another node owns it now");
                    return outcome;
                }
                Err(e) => {
                    // The lease will expire and the event log will be delivered again:
                    // at-least-once, never lost.
                    tracing::warn!(log = %job.id, error = %e, "cannot record the attempt");
                    return outcome;
                }
            }
            let Next::RetryHeld { at, .. } = next else { return outcome };
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // Shutdown releases the lease; another node makes the retry.
                _ = self.0.shutdown.cancelled() => return outcome,
            }
            if let (true, Some(trigger), Some(deadline)) = (limited, job.trigger_id, hold_until) {
                *ticket = self.flow_ticket(trigger, deadline).await;
                if ticket.is_none() {
                    // No room before the deadline: the dispatchers make the retry.
                    if let Err(e) = store::release_unstarted(self.pool(), self.node_id(), &[job.id]).await {
                        tracing::warn!(log = %job.id, error = %e, "cannot hand a retry to the dispatchers; its lease will expire");
                    }
                    return outcome;
                }
            }
            job.attempts = attempt_no;
        }
    }
}

/// An event log this node is working on; see [`Engine::hold_lease`].
pub(crate) struct HeldLease {
    engine: Engine,
    log_id: uuid::Uuid,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        // Counted: the same event log may be claimed again (a retry due at once)
        // before the task that held it first has let go.
        let mut held = self.engine.0.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.log_id) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.log_id);
            }
        }
    }
}

/// An attempt handed to the completer, and where to send its outcome.
pub(crate) type PendingCompletion = (Completion, tokio::sync::oneshot::Sender<Result<bool, String>>);

/// Most attempts recorded in one transaction.
const COMPLETION_BATCH: usize = 256;
/// Completion transactions in flight at once: while one waits for its commit,
/// the next batch is already being written.
const COMPLETION_WRITERS: usize = 2;

impl Engine {
    /// Records an attempt: through the completer, which writes every attempt that
    /// finished meanwhile in one transaction, or directly when it is not running.
    /// Returns whether this node still held the lease.
    async fn complete(&self, c: Completion) -> Result<bool, String> {
        let c = if self.0.completer_running.load(Ordering::Acquire) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            match self.0.completions.send((c, tx)) {
                Ok(()) => match rx.await {
                    Ok(r) => return r,
                    Err(_) => return Err("the completer stopped before recording the attempt".into()),
                },
                Err(tokio::sync::mpsc::error::SendError((c, _))) => c,
            }
        } else {
            c
        };
        store::complete(self.writer(), self.node_id(), &c).await.map_err(|e| e.to_string())
    }

    /// The completer: group commit for delivery results. Under load many attempts
    /// finish while one batch is written; the next batch takes them all, so a
    /// transaction (and a WAL flush) serves many deliveries instead of one. It stays
    /// up after shutdown starts until the deliveries in flight are recorded.
    async fn completion_loop(self) {
        let Some(mut rx) = self.0.completion_rx.lock().ok().and_then(|mut r| r.take()) else { return };
        self.0.completer_running.store(true, Ordering::Release);
        let cancel = self.shutdown_token();
        let mut cancelled_at: Option<std::time::Instant> = None;
        let writers = std::sync::Arc::new(tokio::sync::Semaphore::new(COMPLETION_WRITERS));
        loop {
            if cancel.is_cancelled() {
                let since = *cancelled_at.get_or_insert_with(std::time::Instant::now);
                let grace_over = since.elapsed() > self.config().shutdown_grace + Duration::from_secs(1);
                if (self.0.tasks.is_empty() && rx.is_empty()) || grace_over {
                    break;
                }
            }
            // A writer first: while all are busy, attempts pile up into the next batch.
            let Ok(permit) = writers.clone().acquire_owned().await else { break };
            // Waits for one attempt, then takes every attempt already waiting.
            let mut batch = Vec::new();
            match tokio::time::timeout(Duration::from_millis(100), rx.recv_many(&mut batch, COMPLETION_BATCH)).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => continue,
            }
            let engine = self.clone();
            tokio::spawn(async move {
                engine.write_completions(batch).await;
                drop(permit);
            });
        }
        // Every batch handed to a writer is recorded before the completer stops.
        let _ = writers.acquire_many(COMPLETION_WRITERS as u32).await;
        self.0.completer_running.store(false, Ordering::Release);
        // Whatever arrived meanwhile is recorded one by one.
        rx.close();
        while let Ok((c, reply)) = rx.try_recv() {
            let _ = reply.send(store::complete(self.writer(), self.node_id(), &c).await.map_err(|e| e.to_string()));
        }
    }
}

impl Engine {
    /// Records one batch of attempts and tells each delivery whether it still held its lease.
    async fn write_completions(&self, batch: Vec<PendingCompletion>) {
        let items: Vec<Completion> = batch.iter().map(|(c, _)| c.clone()).collect();
        match store::complete_batch(self.writer(), self.node_id(), &items).await {
            Ok(held) => {
                for ((_, reply), held) in batch.into_iter().zip(held) {
                    let _ = reply.send(Ok(held));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(msg.clone()));
                }
            }
        }
    }
}

fn record_metrics(
    counts: &crate::metrics::DeliveryCounts,
    job: &Job,
    next: &Next,
    inv: &crate::store::events::NewInvocation,
    now: chrono::DateTime<Utc>,
) {
    use crate::metrics::{Outcome, ATTEMPT_SECONDS, LAG_SECONDS};
    let outcome = match next {
        Next::Processed => Outcome::Processed,
        Next::Failed => Outcome::Failed,
        Next::Retry(_) | Next::RetryHeld { .. } => Outcome::Retry,
    };
    counts.count(&job.project, &job.trigger_name, outcome);
    metrics::histogram!(ATTEMPT_SECONDS, "outcome" => outcome.name()).record(inv.duration_ms as f64 / 1000.0);
    if matches!(next, Next::Processed) {
        let due = job.event_time.max(job.event_deliver_at);
        metrics::histogram!(LAG_SECONDS).record((now - due).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
    }
}

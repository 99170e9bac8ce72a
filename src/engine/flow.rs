//! Flow control on this node (SPEC §10): a trigger's deliveries start only within
//! the share of its `maxInFlight` and `rateLimit` this node holds. Shares live in
//! the database (`flow_credits`), taken under a lock so that the live nodes' shares
//! never add up to more than the limits; a node with deliveries waiting asks for
//! its fair part, a node with none gives its share back. Checking a share is a
//! lookup in memory: the hot path makes no database call for it.
//!
//! A claimed event log whose trigger has no room right now waits here, leased to
//! this node, until a delivery of its trigger ends or a token arrives. While any
//! wait, the claim leaves the trigger's other logs in the database (`blocked`).
//!
//! This module also counts attempts per trigger for the circuit breaker and the
//! health column, and runs the breaker: it opens circuits, sends the probes, and
//! disables triggers whose circuit stayed open too long.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit};
use uuid::Uuid;

use super::dispatch::HeldLease;
use super::Engine;
use crate::store::events::Job;
use crate::store::flow::{self as store, AttemptCounts, Limits, Share, DURATION_BOUNDS_MS};

/// How often a node renews its shares, flushes its attempt counts and looks for
/// circuits to open or probe.
const TICK: Duration = Duration::from_secs(1);
/// A share is used only this long after the renewal that granted it began: well
/// before the other nodes stop counting it (`CREDITS_TTL`).
const SHARE_VALID: Duration = Duration::from_secs(8);
/// A node keeps the share of a trigger it delivered to this recently, even with
/// nothing waiting, unless another node wants it: the next delivery then needs no
/// renewal first.
const KEEP_IDLE: Duration = Duration::from_secs(30);
/// The bucket of a rate share holds this many seconds of it (at least one token):
/// small, so that no second sees much more than the limit.
const BURST_SECONDS: f64 = 0.02;
/// How long attempt counters are kept: the health column reads the last hour.
const KEEP_STATS: Duration = Duration::from_secs(3 * 3600);

#[derive(Default)]
pub(crate) struct Flow {
    state: Mutex<State>,
    /// Wakes the pump: a delivery ended, a share grew, or a delivery began to wait.
    pub(crate) pump: Notify,
    /// Wakes the renewal early: a trigger has deliveries waiting and no room.
    renew: Notify,
    /// Wakes the drain of held event logs.
    drain: Notify,
    counts: Mutex<HashMap<Uuid, AttemptCounts>>,
}

#[derive(Default)]
struct State {
    triggers: HashMap<Uuid, TriggerFlow>,
    /// Shares may be used until then; `None` before the first renewal.
    valid_until: Option<Instant>,
}

struct TriggerFlow {
    /// This node's share of the trigger's maxInFlight.
    slots: u32,
    in_flight: u32,
    rate_limit: Option<f64>,
    /// This node's share of the rate limit, per second.
    rate: f64,
    tokens: f64,
    refilled: Instant,
    /// Claimed event logs waiting for room, in the order they came.
    waiting: VecDeque<Waiting>,
    /// Synchronous deliveries waiting for room (they wait in their own task).
    waiters: u32,
    /// Some of its due event logs are set aside in the database (`held`) for
    /// the nodes with room to take back.
    held: bool,
    last_active: Instant,
}

/// A claimed delivery waiting for room in its trigger's limits. It keeps the
/// node's delivery slot it came with, so that a node claims no more than it can
/// run: waiting is short unless the trigger is throttled, and then the excess
/// goes back to the database (`held`).
struct Waiting {
    job: Job,
    lease: HeldLease,
    permit: Option<OwnedSemaphorePermit>,
    since: Instant,
}

/// A trigger whose oldest waiting delivery waited this long is throttled: the
/// claims set its other due logs aside instead of bringing them here.
const THROTTLED_AFTER: Duration = Duration::from_millis(100);

impl TriggerFlow {
    /// Throttled here, or with logs held in the database.
    fn blocked(&self, now: Instant) -> bool {
        self.held || self.waiting.front().is_some_and(|w| now.duration_since(w.since) >= THROTTLED_AFTER)
    }

    /// How many waiting deliveries to keep when throttled: what the share can
    /// start within about a second. The rest go back to the database.
    fn keep_waiting(&self) -> usize {
        let mut keep = self.slots as usize;
        if self.rate_limit.is_some() {
            keep = keep.min(self.rate.ceil() as usize);
        }
        keep.max(1)
    }

    fn new() -> Self {
        TriggerFlow {
            slots: 0,
            in_flight: 0,
            rate_limit: None,
            rate: 0.0,
            tokens: 1.0,
            refilled: Instant::now(),
            waiting: VecDeque::new(),
            waiters: 0,
            held: false,
            last_active: Instant::now(),
        }
    }

    fn burst(&self) -> f64 {
        (self.rate * BURST_SECONDS).max(1.0)
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst());
        self.refilled = now;
    }

    /// Takes room for one delivery if there is any: a slot, and a token when the
    /// trigger has a rate limit.
    fn take(&mut self, now: Instant) -> bool {
        if self.in_flight >= self.slots {
            return false;
        }
        if self.rate_limit.is_some() {
            self.refill(now);
            if self.tokens < 1.0 {
                return false;
            }
            self.tokens -= 1.0;
        }
        self.in_flight += 1;
        self.last_active = now;
        true
    }

    /// When the next token arrives, if a rate share is what it waits for.
    fn next_token(&self) -> Option<Duration> {
        (self.rate_limit.is_some() && self.rate > 0.0 && self.in_flight < self.slots)
            .then(|| Duration::from_secs_f64(((1.0 - self.tokens) / self.rate).max(0.0)))
    }

    fn wants(&self) -> bool {
        !self.waiting.is_empty() || self.waiters > 0 || self.held
    }

    /// How many held event logs to take back now: enough to fill the free slots,
    /// and for a rate share about a second of it; none while plenty wait here.
    fn to_take(&self) -> i64 {
        if !self.held || self.slots == 0 {
            return 0;
        }
        let mut room = self.slots as i64 - self.in_flight as i64 - self.waiting.len() as i64;
        if self.rate_limit.is_some() {
            room = room.min(self.rate.ceil() as i64 - self.waiting.len() as i64);
        }
        if room < (self.slots as i64 / 4).clamp(1, 32) && !self.waiting.is_empty() {
            return 0;
        }
        room.clamp(0, 256)
    }

    /// The share to ask for, given what the other nodes hold.
    fn decide(&self, l: &Limits, now: Instant) -> Share {
        let wants = self.wants();
        let busy = wants || self.in_flight > 0 || now.duration_since(self.last_active) < KEEP_IDLE;
        let others = l.others_wanting as f64;
        let max = l.max_in_flight as i64;
        let free = (max - l.others_slots).max(0);
        let target = if l.others_wanting == 0 {
            if busy { free } else { 0 }
        } else if wants {
            (max as f64 / (others + 1.0)).ceil() as i64
        } else {
            0
        };
        let cap = target.min(free) as i32;
        // Never below what is in flight: the others count this share as taken.
        let slots = cap.max(self.in_flight as i32);
        let rate = match l.rate_limit {
            None => 0.0,
            Some(limit) => {
                let free = (limit - l.others_rate).max(0.0);
                let target = if l.others_wanting == 0 {
                    if busy { free } else { 0.0 }
                } else if wants {
                    limit / (others + 1.0)
                } else {
                    0.0
                };
                target.min(free)
            }
        };
        Share { trigger_id: l.trigger_id, slots, cap, rate, wants }
    }
}

/// The slot of a waiting delivery, the last in its queue: for a delivery that
/// has room to start now. Waiting deliveries hold slots so that a node claims no
/// more than it can run, but one without a slot (taken back from `held`, or a
/// probe) must not wait forever behind them.
fn steal_slot(st: &mut State) -> Option<OwnedSemaphorePermit> {
    st.triggers.values_mut().find_map(|t| t.waiting.iter_mut().rev().find_map(|w| w.permit.take()))
}

/// Room for one delivery of a trigger; given back when dropped.
pub(crate) struct Ticket {
    engine: Engine,
    trigger: Uuid,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let flow = &self.engine.0.flow;
        if let Some(t) = flow.lock().triggers.get_mut(&self.trigger) {
            t.in_flight = t.in_flight.saturating_sub(1);
            t.last_active = Instant::now();
        }
        flow.pump.notify_one();
    }
}

impl Flow {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Triggers with deliveries waiting here or held in the database: the claim
    /// sets their other due logs aside (`held`), and the queue calls leave them.
    pub(crate) fn blocked(&self) -> Vec<Uuid> {
        let now = Instant::now();
        self.lock().triggers.iter().filter(|(_, t)| t.blocked(now)).map(|(id, _)| *id).collect()
    }

    /// After a claim that set aside the due logs of `blocked` triggers.
    pub(crate) fn mark_held(&self, blocked: &[Uuid]) {
        let mut st = self.lock();
        for id in blocked {
            st.triggers.entry(*id).or_insert_with(TriggerFlow::new).held = true;
        }
        drop(st);
        self.drain.notify_one();
    }

    /// Counts one attempt of a trigger for the breaker and the health column.
    pub(crate) fn count(&self, trigger: Uuid, ok: bool, duration_ms: i32, error: Option<&str>) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let c = counts.entry(trigger).or_insert_with(|| AttemptCounts {
            durations: vec![0; DURATION_BOUNDS_MS.len()],
            ..Default::default()
        });
        c.attempts += 1;
        if !ok {
            c.failures += 1;
            c.last_error = error.map(|e| e.chars().take(300).collect());
        }
        let i = DURATION_BOUNDS_MS.iter().position(|b| duration_ms <= *b).unwrap_or(DURATION_BOUNDS_MS.len() - 1);
        c.durations[i] += 1;
    }

    /// Drops the deliveries waiting here (at shutdown): their leases are handed back.
    pub(crate) fn forget_waiting(&self) {
        for t in self.lock().triggers.values_mut() {
            t.waiting.clear();
        }
    }
}

impl Engine {
    /// Starts a claimed delivery if its trigger has room on this node; otherwise
    /// it waits here, leased, and its slot goes back.
    pub(crate) fn start_or_wait(&self, job: Job, permit: Option<OwnedSemaphorePermit>) {
        let Some(trigger) = job.trigger_id else {
            // The trigger is gone: the delivery only cancels the log.
            let lease = self.hold_lease(job.id);
            return self.spawn_delivery(job, lease, permit, None);
        };
        let flow = &self.0.flow;
        let lease = self.hold_lease(job.id);
        let started = {
            let mut st = flow.lock();
            let valid = st.valid_until.is_some_and(|v| Instant::now() < v);
            let t = st.triggers.entry(trigger).or_insert_with(TriggerFlow::new);
            if permit.is_some() && valid && t.waiting.is_empty() && t.take(Instant::now()) {
                Some((job, lease, permit))
            } else if self.0.shutdown.is_cancelled() {
                // Shutdown hands back what waits; this came too late for that.
                let (engine, id) = (self.clone(), job.id);
                tokio::spawn(async move {
                    let released = crate::store::events::release_unstarted(engine.pool(), engine.node_id(), &[id]).await;
                    drop(lease);
                    if let Err(e) = released {
                        tracing::warn!(log = %id, error = %e, "cannot hand back a delivery at shutdown; its lease will expire");
                    }
                });
                None
            } else {
                let first = t.waiting.is_empty();
                t.waiting.push_back(Waiting { job, lease, permit, since: Instant::now() });
                if first {
                    flow.renew.notify_one();
                    flow.pump.notify_one();
                }
                None
            }
        };
        if let Some((job, lease, permit)) = started {
            let ticket = Ticket { engine: self.clone(), trigger };
            self.spawn_delivery(job, lease, permit, Some(ticket));
        }
    }

    /// Waits until `trigger` has room for one delivery on this node, or `deadline`.
    pub(crate) async fn flow_ticket(&self, trigger: Uuid, deadline: Instant) -> Option<Ticket> {
        let flow = &self.0.flow;
        let mut registered = false;
        let ticket = loop {
            {
                let mut st = flow.lock();
                let valid = st.valid_until.is_some_and(|v| Instant::now() < v);
                let t = st.triggers.entry(trigger).or_insert_with(TriggerFlow::new);
                if valid && t.take(Instant::now()) {
                    if registered {
                        t.waiters = t.waiters.saturating_sub(1);
                    }
                    break Some(Ticket { engine: self.clone(), trigger });
                }
                if !registered {
                    t.waiters += 1;
                    registered = true;
                    flow.renew.notify_one();
                }
            }
            if Instant::now() >= deadline || self.0.shutdown.is_cancelled() {
                if let Some(t) = flow.lock().triggers.get_mut(&trigger) {
                    t.waiters = t.waiters.saturating_sub(1);
                }
                break None;
            }
            tokio::time::sleep(Duration::from_millis(5).min(deadline.saturating_duration_since(Instant::now()))).await;
        };
        ticket
    }

    /// Starts the waiting deliveries that have room now, while slots are free.
    fn pump_once(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut start = Vec::new();
        let mut next: Option<Duration> = None;
        {
            let mut st = self.0.flow.lock();
            let valid = st.valid_until.is_some_and(|v| now < v);
            let ids: Vec<Uuid> = st.triggers.iter().filter(|(_, t)| !t.waiting.is_empty()).map(|(id, _)| *id).collect();
            'triggers: for id in ids {
                loop {
                    let Some(t) = st.triggers.get_mut(&id) else { continue 'triggers };
                    if t.waiting.is_empty() {
                        continue 'triggers;
                    }
                    if !valid || !t.take(now) {
                        if let Some(d) = t.next_token() {
                            next = Some(next.map_or(d, |n| n.min(d)));
                        }
                        continue 'triggers;
                    }
                    let mut permit = t.waiting.front_mut().and_then(|w| w.permit.take());
                    if permit.is_none() {
                        permit = self.0.slots.clone().try_acquire_owned().ok();
                    }
                    if permit.is_none() {
                        // Every slot is held by a delivery that waits: this one has
                        // room now, so it takes the slot of one that has not.
                        permit = steal_slot(&mut st);
                    }
                    let t = st.triggers.get_mut(&id).expect("still there");
                    let Some(permit) = permit else {
                        t.in_flight -= 1;
                        t.tokens += if t.rate_limit.is_some() { 1.0 } else { 0.0 };
                        break 'triggers;
                    };
                    let w = t.waiting.pop_front().expect("not empty");
                    start.push((w.job, w.lease, permit, id));
                }
            }
        }
        for (job, lease, permit, trigger) in start {
            let ticket = Ticket { engine: self.clone(), trigger };
            self.spawn_delivery(job, lease, Some(permit), Some(ticket));
        }
        next
    }

    /// Starts waiting deliveries as room comes: when a delivery ends, a share
    /// grows, or the next token of a rate share is due.
    pub(crate) async fn pump_loop(self) {
        let cancel = self.0.shutdown.clone();
        loop {
            let next = self.pump_once().unwrap_or(TICK);
            tokio::select! {
                _ = self.0.flow.pump.notified() => {}
                _ = tokio::time::sleep(next.max(Duration::from_millis(1))) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Takes held event logs back from the database for the triggers with room
    /// here, a few times a second while any are held.
    pub(crate) async fn drain_held_loop(self) {
        let cancel = self.0.shutdown.clone();
        loop {
            let wanted: Vec<(Uuid, i64)> = {
                let st = self.0.flow.lock();
                let valid = st.valid_until.is_some_and(|v| Instant::now() < v);
                st.triggers.iter().filter(|_| valid).map(|(id, t)| (*id, t.to_take())).filter(|(_, n)| *n > 0).collect()
            };
            for (trigger, n) in &wanted {
                let margin = self.config().lease_margin;
                match crate::store::events::claim_held(self.pool(), self.node_id(), *trigger, *n, margin).await {
                    Ok(jobs) => {
                        if (jobs.len() as i64) < *n {
                            if let Some(t) = self.0.flow.lock().triggers.get_mut(trigger) {
                                t.held = false;
                            }
                        }
                        for job in jobs {
                            self.start_or_wait(job, None);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot take back held event logs"),
                }
            }
            let any_held = self.0.flow.lock().triggers.values().any(|t| t.held);
            let pause = if any_held { Duration::from_millis(20) } else { TICK };
            tokio::select! {
                _ = self.0.flow.drain.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Renews this node's shares once a second (and at once when a trigger has
    /// deliveries waiting), flushes the attempt counts, and runs the breaker.
    pub(crate) async fn flow_loop(self) {
        let cancel = self.0.shutdown.clone();
        let mut last_tick = Instant::now() - TICK;
        // The first minute's pass ran at start-up (`bootstrap`).
        let mut last_minute = Instant::now();
        loop {
            if let Err(e) = self.renew_shares().await {
                tracing::warn!(error = %e, "cannot renew this node's shares of the triggers' limits");
            }
            if cancel.is_cancelled() {
                // The requests still open count against the limits until they
                // end: the shares are renewed until then, and dropped after.
                if self.0.tasks.is_empty() {
                    break;
                }
                tokio::select! {
                    _ = self.0.tasks.wait() => {}
                    _ = tokio::time::sleep(TICK) => {}
                }
                continue;
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.breaker_tick().await;
            }
            if last_minute.elapsed() >= Duration::from_secs(60) {
                last_minute = Instant::now();
                self.breaker_minute().await;
            }
            tokio::select! {
                _ = self.0.flow.renew.notified() => {
                    // Many deliveries begin to wait at once: renew once for them all.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                _ = tokio::time::sleep(TICK.saturating_sub(last_tick.elapsed())) => {}
                _ = cancel.cancelled() => {}
            }
        }
        if let Err(e) = store::drop_shares(self.pool(), self.node_id()).await {
            tracing::debug!(error = %e, "cannot drop this node's shares; they expire by themselves");
        }
    }

    async fn renew_shares(&self) -> Result<(), sqlx::Error> {
        let flow = &self.0.flow;
        // Held logs of any trigger, set aside by any node: this node asks for a
        // share of them too, so that they drain even if that node is gone.
        let held: std::collections::HashSet<Uuid> =
            crate::store::events::held_triggers(self.pool()).await?.into_iter().collect();
        {
            let mut st = flow.lock();
            for (id, t) in st.triggers.iter_mut() {
                t.held = held.contains(id);
            }
            for id in &held {
                st.triggers.entry(*id).or_insert_with(|| TriggerFlow { held: true, ..TriggerFlow::new() });
            }
        }
        let ids: Vec<Uuid> = flow.lock().triggers.keys().copied().collect();
        let began = Instant::now();
        let mut orphans = Vec::new();
        let mut held_back: Vec<Waiting> = Vec::new();
        let mut throttled: Vec<Waiting> = Vec::new();
        let renewed = store::renew_shares(self.pool(), self.node_id(), &ids, |limits| {
            let mut st = flow.lock();
            let now = Instant::now();
            let mut shares = Vec::with_capacity(limits.len());
            for l in limits {
                if !l.exists {
                    // Deleted: deleting cancelled its event logs, so what waits
                    // here is dropped, never sent.
                    if let Some(t) = st.triggers.remove(&l.trigger_id) {
                        orphans.extend(t.waiting);
                    }
                    continue;
                }
                let Some(t) = st.triggers.get_mut(&l.trigger_id) else { continue };
                if !l.go {
                    // Disabled, or its circuit opened: what waits here goes back,
                    // but the circuit's probe.
                    let (probes, back): (VecDeque<_>, VecDeque<_>) = t.waiting.drain(..).partition(|w| w.job.probe);
                    t.waiting = probes;
                    held_back.extend(back);
                } else if t.blocked(now) && t.waiting.len() > t.keep_waiting() {
                    // Throttled: keep what the share starts within a second; the
                    // rest waits in the database, for whichever node has room.
                    let keep = t.keep_waiting();
                    throttled.extend(t.waiting.drain(keep..).filter(|w| !w.job.probe));
                    t.held = true;
                }
                t.rate_limit = l.rate_limit;
                let share = t.decide(l, now);
                // A smaller share applies before it is written; a larger one after.
                t.slots = t.slots.min(share.cap as u32);
                t.rate = t.rate.min(share.rate);
                t.tokens = t.tokens.min(t.burst());
                shares.push(share);
            }
            shares
        })
        .await;
        // Deliveries taken out of the queues above go back to the database even
        // when the renewal failed: dropped, their leases would expire and count
        // an attempt that was never made.
        if let Ok(shares) = &renewed {
            let mut st = flow.lock();
            st.valid_until = Some(began + SHARE_VALID);
            let granted: HashMap<Uuid, &Share> = shares.iter().map(|s| (s.trigger_id, s)).collect();
            st.triggers.retain(|id, t| match granted.get(id) {
                Some(s) => {
                    t.slots = s.cap as u32;
                    t.rate = s.rate;
                    true
                }
                // Nothing held, nothing waiting: forgotten until it is needed again.
                None => {
                    t.slots = 0;
                    t.rate = 0.0;
                    t.in_flight > 0 || t.wants()
                }
            });
        }
        flow.pump.notify_one();
        flow.drain.notify_one();
        drop(orphans);
        if !throttled.is_empty() {
            let ids: Vec<Uuid> = throttled.iter().map(|w| w.job.id).collect();
            match crate::store::events::hold(self.pool(), self.node_id(), &ids).await {
                Ok(n) => tracing::debug!(held = n, "set aside the deliveries of throttled triggers"),
                Err(e) => tracing::warn!(error = %e, "cannot set aside the deliveries of a throttled trigger; their leases will expire"),
            }
            drop(throttled);
        }
        if !held_back.is_empty() {
            let ids: Vec<Uuid> = held_back.iter().map(|w| w.job.id).collect();
            // Due again with no attempt counted; the next claim sets them aside.
            let released = crate::store::events::release_unstarted(self.pool(), self.node_id(), &ids).await;
            drop(held_back);
            match released {
                Ok(n) => tracing::info!(released = n, "handed back deliveries of triggers now disabled or with an open circuit"),
                Err(e) => tracing::warn!(error = %e, "cannot hand back deliveries of a stopped trigger; their leases will expire"),
            }
        }
        renewed.map(|_| ())
    }

    /// Once a second: the attempt counts go to the database; circuits open where
    /// nearly every recent attempt failed; due probes go out.
    async fn breaker_tick(&self) {
        let counts: Vec<(Uuid, AttemptCounts)> =
            std::mem::take(&mut *self.0.flow.counts.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect();
        let failing: Vec<Uuid> = counts.iter().filter(|(_, c)| c.failures > 0).map(|(id, _)| *id).collect();
        if let Err(e) = store::add_attempts(self.pool(), &counts).await {
            tracing::warn!(error = %e, "cannot record the attempt counts of the last second");
        }
        // A rule of 0 attempts turns the breaker off.
        if !failing.is_empty() && self.config().breaker.min_attempts > 0 {
            match store::open_circuits(self.pool(), &failing, &self.config().breaker).await {
                Ok(opened) => {
                    for (project, trigger, reason) in opened {
                        tracing::warn!(%project, %trigger, %reason, "opened the trigger's circuit: its deliveries wait, one probe goes out at a time");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot check the triggers' circuits"),
            }
        }
        if self.0.shutdown.is_cancelled() {
            return;
        }
        let rule = &self.config().breaker;
        match crate::store::events::claim_probes(self.pool(), self.node_id(), self.config().lease_margin, rule.probe_every)
            .await
        {
            Ok(probes) => {
                for job in probes {
                    tracing::info!(log = %job.id, trigger = %job.trigger_name, "probing a trigger whose circuit is open");
                    self.start_or_wait(job, None);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot send the probes of open circuits"),
        }
    }

    /// Once a minute, and once at start-up before the node serves: triggers whose
    /// circuit stayed open too long are disabled, ordering keys left waiting are
    /// released, and old attempt counts go.
    pub(crate) async fn breaker_minute(&self) {
        match store::disable_long_open(self.pool(), self.config().breaker.disable_after).await {
            Ok(disabled) => {
                for (project, trigger) in disabled {
                    tracing::warn!(%project, %trigger, "disabled the trigger: its circuit stayed open too long");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot disable the triggers whose circuit stayed open"),
        }
        match crate::store::events::release_stuck_keys(self.pool()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "made due the next event logs of ordering keys whose earlier logs ended"),
            Err(e) => tracing::warn!(error = %e, "cannot look for ordering keys left waiting"),
        }
        if let Err(e) = store::prune(self.pool(), KEEP_STATS).await {
            tracing::debug!(error = %e, "cannot prune the attempt counters");
        }
    }

    /// After a probe's delivery: a success closes its trigger's circuit.
    pub(crate) async fn probe_done(&self, trigger: Uuid, delivered: bool) {
        if !delivered {
            return;
        }
        match store::close_circuit(self.pool(), trigger).await {
            Ok(true) => tracing::info!(%trigger, "closed the trigger's circuit after a successful probe"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot close a circuit after a successful probe; the next probe will"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: i32, rate: Option<f64>, others_slots: i64, others_rate: f64, others_wanting: i64) -> Limits {
        Limits {
            trigger_id: Uuid::nil(),
            exists: true,
            go: true,
            max_in_flight: max,
            rate_limit: rate,
            others_slots,
            others_rate,
            others_wanting,
        }
    }

    fn waiting(n: usize, in_flight: u32) -> TriggerFlow {
        let mut t = TriggerFlow::new();
        t.in_flight = in_flight;
        t.waiters = n as u32;
        t
    }

    #[test]
    fn alone_a_node_takes_what_is_free() {
        let s = waiting(1, 0).decide(&limits(256, Some(200.0), 0, 0.0, 0), Instant::now());
        assert_eq!((s.slots, s.rate, s.wants), (256, 200.0, true));
        let s = waiting(1, 0).decide(&limits(256, Some(200.0), 56, 50.0, 0), Instant::now());
        assert_eq!((s.slots, s.rate), (200, 150.0));
    }

    #[test]
    fn with_others_waiting_a_node_asks_for_its_fair_part_only() {
        let s = waiting(1, 0).decide(&limits(10, Some(200.0), 0, 0.0, 1), Instant::now());
        assert_eq!((s.slots, s.rate), (5, 100.0));
        // The others hold it all: nothing until they give some back.
        let s = waiting(1, 0).decide(&limits(10, Some(200.0), 10, 200.0, 1), Instant::now());
        assert_eq!((s.slots, s.rate), (0, 0.0));
    }

    #[test]
    fn an_idle_node_gives_its_share_to_a_node_that_wants_it_but_never_below_what_is_in_flight() {
        let mut idle = waiting(0, 3);
        idle.last_active = Instant::now() - KEEP_IDLE;
        let s = idle.decide(&limits(10, Some(5.0), 0, 0.0, 1), Instant::now());
        assert_eq!((s.slots, s.cap, s.rate, s.wants), (3, 0, 0.0, false));
        idle.in_flight = 0;
        let s = idle.decide(&limits(10, None, 0, 0.0, 0), Instant::now());
        assert_eq!((s.slots, s.rate), (0, 0.0));
    }

    #[test]
    fn a_busy_node_whose_share_shrinks_starts_nothing_new_until_it_is_below_it() {
        // maxInFlight lowered to 10 while 256 are in flight here.
        let busy = waiting(5, 256);
        let s = busy.decide(&limits(10, None, 0, 0.0, 0), Instant::now());
        assert_eq!((s.slots, s.cap), (256, 10));
        // Another node wants its part of 256 while this one holds it all.
        let s = busy.decide(&limits(256, None, 0, 0.0, 1), Instant::now());
        assert_eq!((s.slots, s.cap), (256, 128));
    }

    #[test]
    fn tokens_arrive_at_the_rate_share_and_never_pile_up_past_the_burst() {
        let mut t = waiting(0, 0);
        t.slots = 100;
        t.rate_limit = Some(100.0);
        t.rate = 100.0;
        t.tokens = 0.0;
        let start = Instant::now();
        t.refilled = start;
        assert!(!t.take(start));
        assert!(t.take(start + Duration::from_millis(11)));
        t.refill(start + Duration::from_secs(10));
        assert_eq!(t.tokens, 2.0);
    }
}

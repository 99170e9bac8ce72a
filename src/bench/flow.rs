//! The flow-control scenarios (SPEC §10): `rate-limit`, a trigger limited to a
//! rate receiving a burst, and `ordering`, events over many ordering keys to a
//! receiver that fails some first attempts. Each has its own receiver on
//! loopback, which records what the scenario checks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::{json, Value};

use super::{with_json, Target};

/// What a scenario's receiver saw: (key, seq, arrival, requests of the key open at once).
#[derive(Default)]
struct Seen {
    arrivals: Mutex<Vec<(String, u64, Instant, usize)>>,
    open: Mutex<HashMap<String, usize>>,
    /// Failing: the first attempt of one event in `fail_every` gets 503 (0: none),
    /// picked by a hash of its seq so that failures fall on every key alike.
    fail_every: u64,
    failed: Mutex<HashSet<u64>>,
}

async fn receive(State(seen): State<Arc<Seen>>, body: Bytes) -> axum::response::Response {
    let at = Instant::now();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let key = v["data"]["key"].as_str().unwrap_or("").to_string();
    let seq = v["data"]["seq"].as_u64().unwrap_or(u64::MAX);
    let open = {
        let mut open = seen.open.lock().unwrap();
        let n = open.entry(key.clone()).or_default();
        *n += 1;
        *n
    };
    seen.arrivals.lock().unwrap().push((key.clone(), seq, at, open));
    // A receiver doing a little work: two requests of a key would overlap.
    if !key.is_empty() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    *seen.open.lock().unwrap().get_mut(&key).expect("counted above") -= 1;
    if seen.fail_every > 0
        && (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40).is_multiple_of(seen.fail_every)
        && seen.failed.lock().unwrap().insert(seq)
    {
        return (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")], "busy").into_response();
    }
    StatusCode::OK.into_response()
}

async fn start(fail_every: u64) -> Result<(Arc<Seen>, String)> {
    let seen = Arc::new(Seen { fail_every, ..Seen::default() });
    let app = axum::Router::new().fallback(receive).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/flow", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((seen, url))
}

async fn trigger(t: &Target, body: Value) -> Result<()> {
    let url = format!("{}/v1/api/default/eventing/triggers", t.base);
    let r = with_json(t.http.post(&url), &t.key, &body).send().await?;
    if !r.status().is_success() {
        bail!("cannot create the trigger {}: {}", body["name"], r.text().await?);
    }
    Ok(())
}

/// Queues the events in batches of 500, from `clients` clients at once. With one,
/// queue order is the order of `events` (concurrent calls have no order between them).
async fn queue(t: &Target, events: Vec<Value>, clients: usize) -> Result<()> {
    let mut tasks = Vec::new();
    for chunk in events.chunks(500) {
        let (http, body) = (t.http.clone(), json!({"events": chunk}));
        let url = format!("{}/v1/api/default/eventing/queue/batch", t.base);
        let key = t.key.clone();
        tasks.push(tokio::spawn(async move { with_json(http.post(url), &key, &body).send().await }));
        if tasks.len() >= clients {
            for task in tasks.drain(..) {
                let r = task.await??;
                if !r.status().is_success() {
                    bail!("a batch was refused: {}", r.text().await?);
                }
            }
        }
    }
    for task in tasks {
        let r = task.await??;
        if !r.status().is_success() {
            bail!("a batch was refused: {}", r.text().await?);
        }
    }
    Ok(())
}

/// Waits until `n` distinct events arrived, or nothing new came for `idle`.
async fn wait(seen: &Seen, n: usize, idle: Duration) {
    let mut last = (0, Instant::now());
    loop {
        let got: HashSet<u64> = seen.arrivals.lock().unwrap().iter().map(|a| a.1).collect();
        if got.len() >= n {
            return;
        }
        if got.len() != last.0 {
            last = (got.len(), Instant::now());
        } else if last.1.elapsed() > idle {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The most arrivals in any window of one second (each starting at an arrival).
fn busiest_second(mut at: Vec<Instant>) -> usize {
    at.sort();
    let mut best = 0;
    let mut end = 0;
    for start in 0..at.len() {
        while end < at.len() && at[end] < at[start] + Duration::from_secs(1) {
            end += 1;
        }
        best = best.max(end - start);
    }
    best
}

/// `rate-limit`: `events` events to a trigger limited to `limit` per second.
pub(super) async fn rate_limit(t: &Target, run: u64, events: usize, limit: f64) -> Result<Value> {
    let (seen, url) = start(0).await?;
    let event_type = format!("bench.rate.{run}");
    trigger(t, json!({"name": format!("bench-rate-{run}"), "type": event_type, "url": url, "rateLimit": limit})).await?;
    let start = Instant::now();
    queue(t, (0..events).map(|seq| json!({"type": event_type, "data": {"seq": seq}})).collect(), 4).await?;
    wait(&seen, events, Duration::from_secs(10)).await;
    let at: Vec<Instant> = seen.arrivals.lock().unwrap().iter().map(|a| a.2).collect();
    let (first, last) = (at.iter().min().copied(), at.iter().max().copied());
    let achieved = match (first, last) {
        (Some(f), Some(l)) if l > f => Some((at.len() - 1) as f64 / (l - f).as_secs_f64()),
        _ => None,
    };
    let per_second: Vec<usize> = {
        let mut buckets = vec![0usize; (start.elapsed().as_secs() + 1) as usize];
        for a in &at {
            buckets[(*a - start).as_secs() as usize] += 1;
        }
        buckets
    };
    let busiest = busiest_second(at.clone());
    Ok(json!({
        "scenario": "rate-limit", "events": events, "limit_per_s": limit, "delivered": at.len(),
        "achieved_per_s": achieved.map(|r| (r * 10.0).round() / 10.0),
        "busiest_1s_window": busiest, "over_limit_pct": ((busiest as f64 / limit - 1.0) * 1000.0).round() / 10.0,
        "per_second": per_second,
    }))
}

/// `ordering`: `events` events over `keys` ordering keys; the receiver fails the
/// first attempt of one event in ten (with `Retry-After: 1`).
pub(super) async fn ordering(t: &Target, run: u64, events: usize, keys: usize) -> Result<Value> {
    let (seen, url) = start(10).await?;
    let event_type = format!("bench.ordering.{run}");
    trigger(t, json!({"name": format!("bench-ordering-{run}"), "type": event_type, "url": url, "retries": 10})).await?;
    let start = Instant::now();
    let batch: Vec<Value> = (0..events)
        .map(|seq| {
            let key = format!("key-{}", seq % keys);
            json!({"type": event_type, "orderingKey": key, "data": {"key": key, "seq": seq}})
        })
        .collect();
    // One batch after the other: the order they were queued in is the order of seq.
    queue(t, batch, 1).await?;
    let queued_in = start.elapsed();
    wait(&seen, events, Duration::from_secs(30)).await;
    let arrivals = seen.arrivals.lock().unwrap().clone();
    let last = arrivals.iter().map(|a| a.2).max();
    // A violation: a key's event arriving after a later event of the key, or two
    // requests of a key at once.
    let mut violations = 0u64;
    let mut newest: HashMap<&str, u64> = HashMap::new();
    for (key, seq, _, open) in &arrivals {
        if *open > 1 {
            violations += 1;
        }
        let prev = newest.entry(key.as_str()).or_insert(*seq);
        if *seq < *prev {
            violations += 1;
        }
        *prev = (*prev).max(*seq);
    }
    let distinct: HashSet<u64> = arrivals.iter().map(|a| a.1).collect();
    Ok(json!({
        "scenario": "ordering", "events": events, "keys": keys, "delivered": distinct.len(),
        "requests": arrivals.len(), "failed_first_attempts": seen.failed.lock().unwrap().len(),
        "order_violations": violations,
        "queued_s": (queued_in.as_secs_f64() * 10.0).round() / 10.0,
        "delivered_per_s": last.map(|l| (distinct.len() as f64 / (l - start).as_secs_f64()).round()),
        "note": "one event in ten fails its first attempt with Retry-After: 1, and its key waits that second",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_second_counts_every_window() {
        let t = Instant::now();
        let ms = |m: u64| t + Duration::from_millis(m);
        assert_eq!(busiest_second(vec![]), 0);
        assert_eq!(busiest_second(vec![ms(0), ms(999), ms(1000), ms(1500), ms(1999)]), 3);
        assert_eq!(busiest_second(vec![ms(1500), ms(0), ms(10), ms(20), ms(999), ms(1005)]), 4);
    }
}

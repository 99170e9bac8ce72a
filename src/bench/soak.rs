//! The `soak` scenario (SPEC §9): a constant rate for a long time while retention
//! removes history as fast as it arrives. Before the run it stores as much
//! history as the run will add (each ended log with its event and one attempt,
//! copies of a real delivery of this run, so that removed rows are the size of
//! arriving ones), created so that with retention at one day it turns old at the
//! run's own rate from the moment the run starts: retention removes it minute by
//! minute, as on a node that has run for longer than its retention. Throughput
//! and p99 must stay flat and the tables' sizes bounded.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use sqlx::PgPool;

use super::{open_loop, percentile, Sink, Target};

const CHUNK: i64 = 100_000;
/// Added to the soak's run id for its warm-up delivery, so the sink tells them apart.
const WARM_UP_RUN: u64 = 1_000_000;
/// The width of the aged history's partitions.
const AGED_PARTITION: chrono::Duration = chrono::Duration::minutes(2);

pub(super) async fn run(t: &Target, sink: &Sink, sink_url: &str, run: u64, rate: u64, seconds: u64) -> Result<()> {
    let Some(db) = &t.db else {
        eprintln!("soak: skipped (needs --bench-database-url with --url)");
        return Ok(());
    };
    let aged = rate * seconds;
    // One real delivery, the template of the aged history.
    let (warm_up, _) = open_loop(t, sink, sink_url, run + WARM_UP_RUN, 50, 1).await?;
    anyhow::ensure!(!warm_up.latencies_ms.is_empty(), "soak: the warm-up deliveries never arrived");
    // The aged history in partitions of a few minutes, as a node keeps a day's
    // (SPEC §9): with retention at one day they pass it one after another during the
    // run, and retention drops each whole, as it drops a day's on a node at
    // 30 days. The load's own rows go to the node's partition of today.
    let day = chrono::Duration::days(1);
    let from = chrono::Utc::now() - day;
    let until = from + chrono::Duration::seconds(seconds as i64 + 900);
    let made = crate::store::partitions::create_range_patiently(db, from, until, AGED_PARTITION).await?;
    eprintln!(
        "soak: storing {aged} ended event logs in {made} partitions of {} min, for retention to remove during the run…",
        AGED_PARTITION.num_minutes()
    );
    let load = Instant::now();
    load_aged(db, aged as i64, seconds).await?;
    sqlx::query("VACUUM ANALYZE event_logs, events, invocation_logs").execute(db).await?;
    // The load leaves gigabytes of dirty pages; a node that has run for its retention
    // has none of that pending, so write them out before the clock starts, rather
    // than in a checkpoint during the first minutes.
    super::checkpoint_after_load(db, "soak").await;
    let before_days = crate::store::retention::retention_days(db, "default").await?.unwrap_or(30);
    crate::store::retention::set_retention_days(db, "default", 1).await?;
    let old_at_start: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_logs WHERE trigger_name = 'bench-soak-aged' AND created_at < now() - interval '1 day'",
    )
    .fetch_one(db)
    .await?;
    eprintln!(
        "soak: stored in {:.0} s ({old_at_start} already past retention); {rate} events/s for {seconds} s…",
        load.elapsed().as_secs_f64()
    );

    let sizes_at_start = sizes(db).await?;
    let indexes_at_start = index_sizes(db).await?;
    println!("{}", json!({"scenario": "soak", "at": "start", "sizes_mb": sizes_at_start}));
    // Each minute: the sizes, the aged logs left, and Herald's RSS (sampled every
    // second: its peak in the minute and where it ended), so growth shows as it happens.
    let sampler = {
        let (db, pid) = (db.clone(), t.pid);
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                let mut peak_rss = 0f64;
                for _ in 0..60 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Some((_, rss)) = pid.and_then(super::usage) {
                        peak_rss = peak_rss.max(rss);
                    }
                }
                let rss = pid.and_then(super::usage).map(|(_, rss)| rss.round());
                if let Ok(s) = sizes(&db).await {
                    // Through the ended logs' trigger index: a scan of the whole
                    // table each minute showed up in the run's own p99.
                    let left: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM event_logs
                         WHERE project = 'default' AND trigger_name = 'bench-soak-aged' AND status = 'processed'",
                    )
                    .fetch_one(&db)
                    .await
                    .unwrap_or(-1);
                    println!(
                        "{}",
                        json!({"scenario": "soak", "at_s": start.elapsed().as_secs(), "sizes_mb": s, "aged_left": left,
                               "rss_mb": rss, "peak_rss_mb": pid.map(|_| peak_rss.round())})
                    );
                }
            }
        })
    };
    let (mut f, timeline) = open_loop(t, sink, sink_url, run, rate, seconds).await?;
    sampler.abort();
    crate::store::retention::set_retention_days(db, "default", before_days).await?;
    let sizes_at_end = sizes(db).await?;
    println!("{}", json!({"scenario": "soak", "at": "end", "sizes_mb": sizes_at_end}));

    // Per minute: deliveries that arrived in it, and the p99 of the events sent in it.
    let minutes = seconds.div_ceil(60) as usize;
    let mut delivered = vec![0u64; minutes];
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); minutes];
    for (i, arrival) in timeline.arrivals.iter().enumerate() {
        let Some(a) = arrival else { continue };
        let at = (*a - timeline.start).as_secs() as usize / 60;
        if at < minutes {
            delivered[at] += 1;
        }
        if let Some((sent, ms)) = timeline.latency(i) {
            let m = (sent / 60_000_000_000) as usize;
            if m < minutes {
                latencies[m].push(ms);
            }
        }
    }
    print_slow_seconds(&timeline);
    println!();
    println!("{:<8} {:>12} {:>9} {:>9}", "minute", "delivered/s", "p50 ms", "p99 ms");
    let mut rows = Vec::new();
    for m in 0..minutes {
        let span = if m + 1 == minutes { (seconds - m as u64 * 60).max(1) as f64 } else { 60.0 };
        latencies[m].sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&latencies[m], 0.5), percentile(&latencies[m], 0.99));
        let per_s = delivered[m] as f64 / span;
        println!("{:<8} {:>12.0} {:>9.1} {:>9.1}", m + 1, per_s, p50.unwrap_or(f64::NAN), p99.unwrap_or(f64::NAN));
        println!("{}", json!({"scenario": "soak", "minute": m + 1, "delivered_per_s": per_s.round(), "p50_ms": p50, "p99_ms": p99}));
        rows.push((per_s, p99));
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.iter().rev().nth(1).or(rows.last())) {
        println!(
            "soak: delivered/s first minute {:.0}, last full minute {:.0} ({:+.1} %); p99 {:.1} → {:.1} ms",
            first.0,
            last.0,
            (last.0 / first.0.max(1.0) - 1.0) * 100.0,
            first.1.unwrap_or(f64::NAN),
            last.1.unwrap_or(f64::NAN)
        );
    }
    println!("soak: sizes at start {sizes_at_start}, at end {sizes_at_end}");
    println!("soak: event_logs' indexes (MB) at start {indexes_at_start}, at end {}", index_sizes(db).await?);
    f.scenario = format!("soak-{rate}/s");
    super::report(&f);
    Ok(())
}

/// The seconds whose slowest event took over 250 ms, with their wall-clock
/// time (UTC), to set beside PostgreSQL's log (checkpoints, autovacuum) and find
/// what a p99 spike coincides with.
fn print_slow_seconds(timeline: &super::Timeline) {
    const SLOW_MS: f64 = 250.0;
    let wall_start = chrono::Utc::now() - timeline.start.elapsed();
    let mut worst: std::collections::BTreeMap<u64, (f64, usize)> = std::collections::BTreeMap::new();
    for i in 0..timeline.arrivals.len() {
        let Some((sent, ms)) = timeline.latency(i) else { continue };
        if ms > SLOW_MS {
            let w = worst.entry(sent / 1_000_000_000).or_default();
            *w = (w.0.max(ms), w.1 + 1);
        }
    }
    for (second, (max_ms, n)) in worst {
        let at = wall_start + chrono::Duration::seconds(second as i64);
        println!(
            "{}",
            json!({"scenario": "soak", "slow_second": second, "utc": at.format("%H:%M:%S").to_string(),
                   "events_over_250_ms": n, "max_ms": max_ms.round()})
        );
    }
}

/// Table and index sizes (MB) of the history's tables.
async fn sizes(db: &PgPool) -> Result<serde_json::Value> {
    let rows = crate::store::partitions::sizes(db, &["events", "event_logs", "invocation_logs"]).await?;
    let mut v = serde_json::Map::new();
    for (name, table, indexes, partitions) in rows {
        v.insert(name, json!({"table": table / 1_000_000, "indexes": indexes / 1_000_000, "partitions": partitions}));
    }
    Ok(v.into())
}

/// Each index of `event_logs` with its size (MB), to tell which of them grows.
async fn index_sizes(db: &PgPool) -> Result<serde_json::Value> {
    let rows = crate::store::partitions::index_sizes(db, "event_logs").await?;
    Ok(rows.into_iter().map(|(name, size)| (name, json!(size / 1_000_000))).collect::<serde_json::Map<_, _>>().into())
}

/// `n` processed event logs, each with its event and one attempt copied from the
/// newest real ones, created evenly over `seconds`, so that they pass a one-day
/// retention at `n / seconds` a second from when the load ends. How long the load
/// takes is estimated from its first chunk: the rows of that chunk are dated with a
/// rough guess, the rest with the estimate.
async fn load_aged(db: &PgPool, n: i64, seconds: u64) -> Result<()> {
    let started = Instant::now();
    let mut done = 0i64;
    let mut load_s = n as f64 / 50_000.0;
    while done < n {
        let size = CHUNK.min(n - done);
        let chunk = Instant::now();
        let ends_in = (load_s - started.elapsed().as_secs_f64()).max(0.0);
        sqlx::query(
            "WITH tpl AS (
                 SELECT e.data, i.request_headers, i.request_body, i.response_headers, i.response_body, i.duration_ms
                 FROM invocation_logs i JOIN event_logs l ON l.id = i.event_log_id JOIN events e ON e.id = l.event_id
                 WHERE l.trigger_name <> 'bench-soak-aged'
                 ORDER BY i.event_log_id DESC LIMIT 1
             ), g AS (
                 SELECT i, at, herald_uuid_at(at) AS event_id, herald_uuid_at(at) AS log_id
                 FROM (SELECT i, now() + make_interval(secs => $5) - interval '1 day'
                                 + make_interval(secs => $4 * i::float8 / $3) AS at
                       FROM generate_series($1::bigint, $1::bigint + $2 - 1) i) r
             ), e AS (
                 INSERT INTO events (id, project, type, data, deliver_at, created_at)
                 SELECT event_id, 'default', 'bench.soak.aged', tpl.data, at, at FROM g, tpl
             ), l AS (
                 INSERT INTO event_logs (id, event_id, project, trigger_name, event_type, status, attempts,
                                         next_attempt_at, created_at, updated_at)
                 SELECT log_id, event_id, 'default', 'bench-soak-aged', 'bench.soak.aged', 'processed', 1, at, at, at
                 FROM g
             ), inv AS (
                 INSERT INTO invocation_logs (id, event_log_id, attempt, started_at, duration_ms, status_code,
                                              request_headers, request_body, response_headers, response_body)
                 SELECT herald_uuid_at(at), log_id, 1, at, tpl.duration_ms, 200, tpl.request_headers,
                        tpl.request_body, tpl.response_headers, tpl.response_body
                 FROM g, tpl
             )
             INSERT INTO event_log_counts (project, span, bucket, status, n)
             SELECT 'default', s.span, s.bucket, 'processed', count(*)
             FROM g CROSS JOIN LATERAL (VALUES
                 ('hour', date_bin('1 hour', g.at, TIMESTAMPTZ '2000-01-01 00:00:00+00')),
                 ('minute', date_bin('1 minute', g.at, TIMESTAMPTZ '2000-01-01 00:00:00+00'))) AS s (span, bucket)
             GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
             ON CONFLICT (project, span, bucket, status) DO UPDATE SET n = event_log_counts.n + excluded.n",
        )
        .bind(done)
        .bind(size)
        .bind(n as f64)
        .bind(seconds as f64)
        .bind(ends_in)
        .execute(db)
        .await?;
        if done == 0 {
            // The rest at the first chunk's pace, plus the VACUUM after it (about as long again as a tenth).
            load_s = chunk.elapsed().as_secs_f64() * n as f64 / size as f64 * 1.1;
        }
        done += size;
    }
    Ok(())
}

//! The `soak` scenario (SPEC §9): a constant rate for a long time while retention
//! removes history as fast as it arrives. Before the run it stores, with
//! retention set to one day, as much history as the run will add, created just
//! over a day ago (each ended log with one attempt), so that retention removes
//! it minute by minute during the run. Throughput and p99 must stay flat and the
//! tables' sizes bounded.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use sqlx::PgPool;

use super::{open_loop, percentile, Sink, Target};

const CHUNK: i64 = 100_000;

pub(super) async fn run(t: &Target, sink: &Sink, sink_url: &str, run: u64, rate: u64, seconds: u64) -> Result<()> {
    let Some(db) = &t.db else {
        eprintln!("soak: skipped (needs --bench-database-url with --url)");
        return Ok(());
    };
    let aged = rate * seconds;
    eprintln!("soak: storing {aged} ended event logs created a day ago, for retention to remove during the run…");
    let load = Instant::now();
    load_aged(db, aged as i64, seconds).await?;
    sqlx::query("VACUUM ANALYZE event_logs").execute(db).await?;
    let before_days = crate::store::retention::retention_days(db, "default").await?.unwrap_or(30);
    crate::store::retention::set_retention_days(db, "default", 1).await?;
    eprintln!("soak: stored in {:.0} s; {rate} events/s for {seconds} s…", load.elapsed().as_secs_f64());

    let sizes_at_start = sizes(db).await?;
    println!("{}", json!({"scenario": "soak", "at": "start", "sizes_mb": sizes_at_start}));
    let sampler = {
        let db = db.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                if let Ok(s) = sizes(&db).await {
                    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM event_logs WHERE trigger_name = 'bench-soak-aged'")
                        .fetch_one(&db)
                        .await
                        .unwrap_or(-1);
                    println!("{}", json!({"scenario": "soak", "at_s": start.elapsed().as_secs(), "sizes_mb": s, "aged_left": left}));
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
        let sent = timeline.sent_ns[i];
        let Some(a) = arrival else { continue };
        let at = (*a - timeline.start).as_secs() as usize / 60;
        if at < minutes {
            delivered[at] += 1;
        }
        if sent != u64::MAX {
            let m = (sent / 60_000_000_000) as usize;
            if m < minutes {
                latencies[m].push(((*a - timeline.start).as_nanos() as f64 - sent as f64) / 1e6);
            }
        }
    }
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
    f.scenario = format!("soak-{rate}/s");
    super::report(&f);
    Ok(())
}

/// Table and index sizes (MB) of the history's tables.
async fn sizes(db: &PgPool) -> Result<serde_json::Value> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, pg_table_size(oid), pg_indexes_size(oid) FROM pg_class
         WHERE relname IN ('events', 'event_logs', 'invocation_logs') ORDER BY relname",
    )
    .fetch_all(db)
    .await?;
    let mut v = serde_json::Map::new();
    for (name, table, indexes) in rows {
        v.insert(name, json!({"table": table / 1_000_000, "indexes": indexes / 1_000_000}));
    }
    Ok(v.into())
}

/// `n` processed event logs, each with its event and one attempt, created evenly
/// over the `seconds` before a day ago: retention (one day) removes them over
/// the next `seconds`.
async fn load_aged(db: &PgPool, n: i64, seconds: u64) -> Result<()> {
    let mut done = 0i64;
    while done < n {
        let size = CHUNK.min(n - done);
        sqlx::query(
            "WITH g AS (
                 SELECT i, at, herald_uuid_at(at) AS event_id, herald_uuid_at(at) AS log_id
                 FROM (SELECT i, now() - interval '1 day' - make_interval(secs => $4 * (1.0 - i::float8 / $3)) AS at
                       FROM generate_series($1::bigint, $1::bigint + $2 - 1) i) r
             ), e AS (
                 INSERT INTO events (id, project, type, data, deliver_at, created_at)
                 SELECT event_id, 'default', 'bench.soak.aged', jsonb_build_object('seq', i), at, at FROM g
             ), l AS (
                 INSERT INTO event_logs (id, event_id, project, trigger_name, event_type, status, attempts,
                                         next_attempt_at, created_at, updated_at)
                 SELECT log_id, event_id, 'default', 'bench-soak-aged', 'bench.soak.aged', 'processed', 1, at, at, at
                 FROM g
             ), inv AS (
                 INSERT INTO invocation_logs (id, event_log_id, attempt, started_at, duration_ms, status_code,
                                              request_headers, request_body, response_body)
                 SELECT herald_uuid_at(at), log_id, 1, at, 3, 200, '{\"content-type\": \"application/json\"}',
                        jsonb_build_object('seq', i)::text, '{\"ok\":true}'
                 FROM g
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
        .execute(db)
        .await?;
        done += size;
    }
    Ok(())
}

//! The `history` scenario (SPEC §9): how the dashboard's reads behave as the
//! history grows. It loads ended event logs spread over the last 30 days with one
//! set-based statement per chunk, the way Herald's own statements store them (an
//! event, its log, and the counts the trigger keeps), then times every read of the
//! Event Logs page through the store functions Herald runs for it, at each size.
//! Invocation logs are not loaded: no timed read touches them.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;
use sqlx::PgPool;

use super::{percentile, Target};
use crate::model::Status;
use crate::store::history::{self, LogFilter};

/// Rows per loading statement (one transaction each).
const CHUNK: i64 = 250_000;
/// Bytes of disk one loaded event log takes with its event and every index,
/// measured on this schema, with room to spare.
const BYTES_PER_ROW: u64 = 900;

/// One timed read: its name and its p50 and p99 in milliseconds, per size.
struct Read {
    name: &'static str,
    times: Vec<(u64, f64, f64)>,
}

pub(super) async fn run(t: &Target, sizes: &[u64], days: u32, samples: usize) -> Result<()> {
    let Some(db) = &t.db else {
        eprintln!("history: skipped (needs --bench-database-url with --url)");
        return Ok(());
    };
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    let mut loaded = already_loaded(db).await?;
    let mut reads: Vec<Read> = Vec::new();
    for &size in &sizes {
        if size > loaded {
            let more = size - loaded;
            let need = more * BYTES_PER_ROW;
            if let Some(free) = free_bytes(t) {
                if free < need + (2 << 30) {
                    eprintln!(
                        "history: {size} event logs need about {:.1} GB more disk and {:.1} GB is free: skipped",
                        need as f64 / 1e9,
                        free as f64 / 1e9
                    );
                    continue;
                }
            }
            // In partitions of the width the node's retention gives, as a node that
            // has run for these days keeps them.
            let now = chrono::Utc::now();
            let day = chrono::Duration::days(1);
            // Back from the oldest range the node made, on the same edges.
            use crate::store::partitions;
            let width = partitions::width(partitions::max_retention_days(db).await?);
            let oldest = partitions::list(db).await?.into_iter().filter_map(|p| p.lo_at).min();
            let until = oldest.unwrap_or(now + day);
            let widths = ((until - (now - day * (days as i32 + 1))).num_seconds() as f64 / width.num_seconds() as f64).ceil();
            partitions::create_range_patiently(db, until - width * widths.max(0.0) as i32, until, width).await?;
            eprintln!("history: loading {more} ended event logs over {days} days…");
            let started = Instant::now();
            load(db, loaded, more, days).await?;
            // The reads are timed on a settled database, as a node that has run
            // for a while has: the kept counts' row versions from the load
            // vacuumed, and the load's gigabytes of dirty pages written out, so
            // that no timed read pays for evicting them.
            for table in ["event_logs", "events", "event_log_counts"] {
                sqlx::query(&format!("VACUUM ANALYZE {table}")).execute(db).await?;
            }
            super::checkpoint_after_load(db, "history").await;
            loaded = size;
            eprintln!("history: loaded in {:.0} s; {}", started.elapsed().as_secs_f64(), table_sizes(db).await?);
        }
        for (name, p50, p99) in time_reads(db, days, samples).await? {
            println!("{}", json!({"scenario": "history", "event_logs": size, "read": name, "p50_ms": round(p50), "p99_ms": round(p99)}));
            match reads.iter_mut().find(|r| r.name == name) {
                Some(r) => r.times.push((size, p50, p99)),
                None => reads.push(Read { name, times: vec![(size, p50, p99)] }),
            }
        }
    }
    print_table(&reads);
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Event logs the bench loaded in an earlier size of this run.
async fn already_loaded(db: &PgPool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM event_logs WHERE trigger_name LIKE 'bench-history-%'")
        .fetch_one(db)
        .await?;
    Ok(n as u64)
}

fn free_bytes(t: &Target) -> Option<u64> {
    let dir = t.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let s = nix::sys::statvfs::statvfs(&dir).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

async fn table_sizes(db: &PgPool) -> Result<String> {
    let rows = crate::store::partitions::sizes(db, &["events", "event_logs", "invocation_logs", "event_log_counts"]).await?;
    Ok(rows
        .iter()
        .map(|(n, t, i, parts)| {
            format!("{n} {:.0} MB + indexes {:.0} MB ({parts} partitions)", *t as f64 / 1e6, *i as f64 / 1e6)
        })
        .collect::<Vec<_>>()
        .join(", "))
}

/// Loads `n` ended event logs (90 % processed, 8 % failed, 2 % cancelled) created
/// at random moments of the last `days`, with time-ordered ids of those moments.
/// Twenty common triggers and ten common types; one log in 10,000 goes to the
/// rare trigger and one in 9,973 has the rare type. The counts the trigger keeps
/// are added per chunk. On the first load, 1,000 events scheduled a year ahead.
async fn load(db: &PgPool, offset: u64, n: u64, days: u32) -> Result<()> {
    let mut done = 0i64;
    while done < n as i64 {
        let size = CHUNK.min(n as i64 - done);
        let first = offset as i64 + done;
        sqlx::query(
            "WITH g AS (
                 SELECT i, at, herald_uuid_at(at) AS event_id, herald_uuid_at(at) AS log_id,
                        CASE WHEN i % 9973 = 0 THEN 'bench.history.rare' ELSE 'bench.history.' || (i % 10) END AS type,
                        CASE WHEN i % 100 < 90 THEN 'processed' WHEN i % 100 < 98 THEN 'failed' ELSE 'cancelled' END AS status
                 FROM (SELECT i, now() - random() * make_interval(days => $3) AS at
                       FROM generate_series($1::bigint, $1::bigint + $2 - 1) i) r
             ), e AS (
                 INSERT INTO events (id, project, type, data, deliver_at, created_at)
                 SELECT event_id, 'default', type, jsonb_build_object('seq', i, 'note', 'a loaded history row'), at, at
                 FROM g
             ), l AS (
                 INSERT INTO event_logs (id, event_id, project, trigger_name, event_type, status, attempts,
                                         next_attempt_at, last_error, created_at, updated_at)
                 SELECT log_id, event_id, 'default',
                        CASE WHEN i % 10000 = 0 THEN 'bench-history-rare' ELSE 'bench-history-' || (i % 20) END,
                        type, status, 1, at, CASE status WHEN 'failed' THEN 'HTTP 500 Internal Server Error' END, at, at
                 FROM g
             )
             INSERT INTO event_log_counts (project, span, bucket, status, n)
             SELECT 'default', s.span, s.bucket, g.status, count(*)
             FROM g CROSS JOIN LATERAL (VALUES
                 ('hour', date_bin('1 hour', g.at, TIMESTAMPTZ '2000-01-01 00:00:00+00')),
                 ('minute', CASE WHEN g.at >= now() - interval '2 days'
                                 THEN date_bin('1 minute', g.at, TIMESTAMPTZ '2000-01-01 00:00:00+00') END)) AS s (span, bucket)
             WHERE s.bucket IS NOT NULL
             GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
             ON CONFLICT (project, span, bucket, status) DO UPDATE SET n = event_log_counts.n + excluded.n",
        )
        .bind(first)
        .bind(size)
        .bind(days as i32)
        .execute(db)
        .await?;
        done += size;
        eprintln!("history: {} / {n}", done);
    }
    if offset == 0 {
        sqlx::query(
            "WITH g AS (SELECT i, herald_uuid_v7() AS event_id FROM generate_series(1, 1000) i), e AS (
                 INSERT INTO events (id, project, type, data, deliver_at)
                 SELECT event_id, 'default', 'bench.history.0', '{}', now() + interval '365 days' FROM g
             )
             INSERT INTO event_logs (id, event_id, project, trigger_name, event_type, status, next_attempt_at)
             SELECT herald_uuid_v7(), event_id, 'default', 'bench-history-0', 'bench.history.0', 'scheduled',
                    now() + interval '365 days'
             FROM g",
        )
        .execute(db)
        .await?;
    }
    Ok(())
}

/// Times each read `samples` times (after one unmeasured run) and returns its
/// p50 and p99 in milliseconds.
async fn time_reads(db: &PgPool, days: u32, samples: usize) -> Result<Vec<(&'static str, f64, f64)>> {
    let event: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT event_id FROM event_logs WHERE trigger_name LIKE 'bench-history-%' LIMIT 1")
            .fetch_optional(db)
            .await?;
    let ago = |d: i64| chrono::Utc::now() - chrono::Duration::days(d);
    let list = |f: fn(&mut LogFilter)| {
        let mut filter = LogFilter { limit: 51, ..Default::default() };
        f(&mut filter);
        filter
    };
    let lists: Vec<(&'static str, LogFilter)> = vec![
        ("list, no filter", list(|_| {})),
        ("list, status=failed", list(|f| f.status = Some(Status::Failed))),
        ("list, status=cancelled", list(|f| f.status = Some(Status::Cancelled))),
        ("list, status=scheduled", list(|f| f.status = Some(Status::Scheduled))),
        ("list, trigger=rare", list(|f| f.trigger = Some("bench-history-rare".into()))),
        ("list, trigger=none such", list(|f| f.trigger = Some("no-such-trigger".into()))),
        ("list, trigger+failed", list(|f| (f.trigger, f.status) = (Some("bench-history-3".into()), Some(Status::Failed)))),
        ("list, type=rare", list(|f| f.event_type = Some("bench.history.rare".into()))),
        ("list, type=none such", list(|f| f.event_type = Some("no.such.type".into()))),
        ("list, type+cancelled", list(|f| (f.event_type, f.status) = (Some("bench.history.4".into()), Some(Status::Cancelled)))),
        ("list, event", LogFilter { event_id: event, limit: 51, ..Default::default() }),
        ("list, 1 h range 10 days ago", LogFilter {
            from: Some(ago(10)),
            to: Some(ago(10) + chrono::Duration::hours(1)),
            limit: 51,
            ..Default::default()
        }),
        ("list, trigger+range", LogFilter {
            trigger: Some("bench-history-7".into()),
            from: Some(ago(20)),
            to: Some(ago(19)),
            limit: 51,
            ..Default::default()
        }),
    ];
    if days < 30 {
        bail!("--history-days must be at least 30: the 30-day dashboard window is one of the reads");
    }
    let mut out = Vec::new();
    for (name, hours) in [("counts+chart, 1 h", 1u64), ("counts+chart, 24 h", 24), ("counts+chart, 7 days", 168), ("counts+chart, 30 days", 720)] {
        let (p50, p99) = time(samples, || async {
            history::summary(db, "default", Duration::from_secs(hours * 3600)).await.map(|_| ())
        })
        .await?;
        out.push((name, p50, p99));
    }
    for (name, f) in &lists {
        let (p50, p99) = time(samples, || async { history::list_logs(db, "default", f).await.map(|_| ()) }).await?;
        out.push((*name, p50, p99));
    }
    Ok(out)
}

async fn time<F, Fut>(samples: usize, mut read: F) -> Result<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), sqlx::Error>>,
{
    read().await?;
    let mut ms = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        read().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok((percentile(&ms, 0.5).unwrap_or(0.0), percentile(&ms, 0.99).unwrap_or(0.0)))
}

fn print_table(reads: &[Read]) {
    let Some(sizes) = reads.first().map(|r| r.times.iter().map(|t| t.0).collect::<Vec<_>>()) else { return };
    println!();
    print!("{:<30}", "history read (ms)");
    for s in &sizes {
        print!(" {:>18}", format!("p50/p99 at {}", human(*s)));
    }
    if sizes.len() > 1 {
        print!(" {:>12}", "p99 ratio");
    }
    println!();
    for r in reads {
        print!("{:<30}", r.name);
        for (_, p50, p99) in &r.times {
            print!(" {:>18}", format!("{p50:.1} / {p99:.1}"));
        }
        if let (Some(first), Some(last)) = (r.times.first(), r.times.last()) {
            if r.times.len() > 1 {
                print!(" {:>12}", format!("{:.2}×", last.2 / first.2.max(0.01)));
            }
        }
        println!();
    }
}

fn human(n: u64) -> String {
    if n >= 1_000_000 { format!("{}M", n / 1_000_000) } else if n >= 1000 { format!("{}k", n / 1000) } else { n.to_string() }
}

//! `herald bench --scenarios peers --peer-graphile <graphile-bench.mjs>`:
//! graphile-worker and Herald's throughput runs, alternated, on the same
//! PostgreSQL cluster (the one the bench started for Herald, so its settings are
//! Herald's by construction), and the ratios of their delivered/s per round.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{throughput, BenchArgs, Figures, Sink, Target};

/// One round: the peer's delivered/s, then Herald's single-call and batch runs.
struct Round {
    peer: f64,
    single: f64,
    batch: f64,
}

pub(super) async fn run(t: &Target, sink: &Sink, sink_url: &str, run_id: &mut u64, args: &BenchArgs) -> Result<Vec<Figures>> {
    let script = args.peer_graphile.as_deref().context(
        "the peers scenario needs --peer-graphile <graphile-bench.mjs> with graphile-worker installed next to it (`make bench-peers` does both)",
    )?;
    let db = t.db.as_ref().context("the peers scenario needs Herald's database (run it without --url)")?;
    let socket = t.socket_dir().context("the peers scenario needs the bench's own PostgreSQL (run it without --url or DATABASE_URL)")?;
    sqlx::query("DROP DATABASE IF EXISTS graphile_peer WITH (FORCE)").execute(db).await?;
    sqlx::query("CREATE DATABASE graphile_peer").execute(db).await?;
    let conn = format!("postgres://postgres@localhost/graphile_peer?host={}", socket.display());
    let mut rounds = Vec::new();
    let mut all = Vec::new();
    let peer_db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::postgres::PgConnectOptions::new().socket(&socket).username("postgres").database("graphile_peer"))
        .await?;
    for round in 1..=args.rounds.max(1) {
        let peer = graphile(script, &conn, args.events, args.clients).await?;
        // Each system's clean-up after its run (vacuum of the rows it deleted or
        // updated, a checkpoint) is done before the other runs, not during it.
        settle(&peer_db, db).await?;
        println!("{}", json!({"scenario": "peer-graphile", "round": round, "events": args.events, "delivered_per_s": peer}));
        let mut herald = [0.0; 2];
        for (i, batch) in [false, true].into_iter().enumerate() {
            *run_id += 1;
            let f = throughput(t, sink, sink_url, *run_id, args, batch).await?;
            println!("{}", f.json());
            herald[i] = f.delivered_per_s.unwrap_or(0.0);
            all.push(f);
        }
        settle(db, db).await?;
        rounds.push(Round { peer, single: herald[0], batch: herald[1] });
    }
    println!();
    println!("Herald ÷ graphile-worker 0.17.3, delivered/s, {} events per run, same PostgreSQL cluster, alternated:", args.events);
    println!("{:<8} {:>12} {:>14} {:>14} {:>10} {:>10}", "round", "graphile/s", "herald single", "herald batch", "single ×", "batch ×");
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "{:<8} {:>12.0} {:>14.0} {:>14.0} {:>10.2} {:>10.2}",
            i + 1, r.peer, r.single, r.batch, r.single / r.peer, r.batch / r.peer
        );
    }
    let single: Vec<f64> = rounds.iter().map(|r| r.single / r.peer).collect();
    let batch: Vec<f64> = rounds.iter().map(|r| r.batch / r.peer).collect();
    let summary = json!({
        "scenario": "peer-ratios",
        "rounds": rounds.len(),
        "single_vs_graphile": spread(&single),
        "batch_vs_graphile": spread(&batch),
        "targets": {"single": 1.5, "batch": 2.5},
    });
    println!(
        "single calls: {}× (best {}×, spread {}–{}; target ≥ 1.5×)   batches: {}× (best {}×, spread {}–{}; target ≥ 2.5×)",
        summary["single_vs_graphile"]["median"], summary["single_vs_graphile"]["best"],
        summary["single_vs_graphile"]["min"], summary["single_vs_graphile"]["max"],
        summary["batch_vs_graphile"]["median"], summary["batch_vs_graphile"]["best"],
        summary["batch_vs_graphile"]["min"], summary["batch_vs_graphile"]["max"],
    );
    println!("{summary}");
    Ok(all)
}

/// Median, best, min and max, to two decimals.
fn spread(ratios: &[f64]) -> Value {
    let mut v = ratios.to_vec();
    v.sort_by(f64::total_cmp);
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let median = if v.is_empty() { 0.0 } else { v[v.len() / 2] };
    json!({"median": r2(median), "best": r2(*v.last().unwrap_or(&0.0)), "min": r2(*v.first().unwrap_or(&0.0)), "max": r2(*v.last().unwrap_or(&0.0))})
}

/// Runs the peer's script once and reads its JSON line's delivered/s.
async fn graphile(script: &Path, conn: &str, events: usize, concurrency: usize) -> Result<f64> {
    // Run from the script's folder, where graphile-worker is installed.
    let script = std::path::absolute(script)?;
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(conn)
        .arg(events.to_string())
        .arg(concurrency.to_string())
        .current_dir(script.parent().unwrap_or(Path::new(".")))
        .output()
        .await
        .context("cannot run node (the peer needs Node.js)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("the peer failed ({}): {}{}", out.status, stdout, String::from_utf8_lossy(&out.stderr));
    }
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).context("the peer printed no JSON line")?;
    let v: Value = serde_json::from_str(line).with_context(|| format!("the peer's line is not JSON: {line}"))?;
    v["delivered_per_s"].as_f64().with_context(|| format!("no delivered_per_s in the peer's line: {line}"))
}

/// VACUUM ANALYZE of a database, then a CHECKPOINT of the cluster.
async fn settle(database: &sqlx::PgPool, cluster: &sqlx::PgPool) -> Result<()> {
    sqlx::raw_sql("VACUUM ANALYZE").execute(database).await?;
    sqlx::raw_sql("CHECKPOINT").execute(cluster).await?;
    Ok(())
}

//! `herald bench --scenarios capacity`: the node's highest sustainable rate R
//! (the open-loop rate it still keeps up with), found by doubling and then
//! bisecting, and then three runs at R/2, each judged against the latency
//! targets (p50 ≤ 5 ms, p99 ≤ 25 ms).

use anyhow::Result;
use serde_json::json;

use super::{open_loop, percentile, Figures, Sink, Target};

/// Seconds of each probe while searching for R.
const PROBE_SECONDS: u64 = 5;
/// Where the search starts and stops.
const FIRST_RATE: u64 = 1000;
const MAX_RATE: u64 = 64_000;

/// Kept up: every event sent and accepted and delivered, at no less than 95 %
/// of the offered rate, and no queue building up (p99 under 250 ms).
fn kept_up(f: &Figures, rate: u64) -> bool {
    let mut l = f.latencies_ms.clone();
    l.sort_by(f64::total_cmp);
    f.refused == 0
        && f.lost == 0
        && f.latencies_ms.len() as u64 == f.events
        && f.delivered_per_s.is_some_and(|d| d >= 0.95 * rate as f64)
        && percentile(&l, 0.99).is_some_and(|p| p < 250.0)
}

pub(super) async fn run(t: &Target, sink: &Sink, sink_url: &str, run_id: &mut u64, seconds: u64, rounds: usize) -> Result<Vec<Figures>> {
    let mut probe = |rate: u64| {
        *run_id += 1;
        let id = *run_id;
        async move {
            let (f, _) = open_loop(t, sink, sink_url, id, rate, PROBE_SECONDS).await?;
            let ok = kept_up(&f, rate);
            let j = f.json();
            println!(
                "{}",
                json!({"scenario": "capacity-probe", "rate": rate, "kept_up": ok, "delivered_per_s": j["delivered_per_s"],
                       "p50_ms": j["p50_ms"], "p99_ms": j["p99_ms"], "refused": f.refused, "max_rss_mb": j["max_rss_mb"]})
            );
            anyhow::Ok(ok)
        }
    };
    // Double while it keeps up, then bisect to within 10 %.
    let (mut good, mut bad) = (0u64, None);
    let mut rate = FIRST_RATE;
    while rate <= MAX_RATE {
        if probe(rate).await? {
            good = rate;
            rate *= 2;
        } else {
            bad = Some(rate);
            break;
        }
    }
    if let Some(mut high) = bad {
        let mut low = good.max(FIRST_RATE / 2);
        while high - low > low / 10 {
            let mid = (low + high) / 2;
            if probe(mid).await? {
                low = mid;
                good = mid;
            } else {
                high = mid;
            }
        }
    }
    let r = good.max(1);
    let half = (r / 2).max(1);
    println!("{}", json!({"scenario": "capacity", "sustainable_rate_per_s": r, "half_rate_per_s": half}));
    let mut all = Vec::new();
    let mut verdicts = Vec::new();
    for round in 1..=rounds.max(1) {
        *run_id += 1;
        let (mut f, _) = open_loop(t, sink, sink_url, *run_id, half, seconds).await?;
        f.scenario = format!("half-capacity-{half}/s");
        let j = f.json();
        let (p50, p99) = (j["p50_ms"].as_f64().unwrap_or(f64::MAX), j["p99_ms"].as_f64().unwrap_or(f64::MAX));
        let met = p50 <= 5.0 && p99 <= 25.0;
        verdicts.push(met);
        println!("{}", json!({"scenario": "half-capacity", "round": round, "rate": half, "p50_ms": p50, "p99_ms": p99,
                               "targets_met": met, "max_rss_mb": j["max_rss_mb"]}));
        all.push(f);
    }
    println!(
        "capacity: R = {r}/s; at R/2 = {half}/s the latency targets (p50 ≤ 5 ms, p99 ≤ 25 ms) were met in {} of {} runs",
        verdicts.iter().filter(|m| **m).count(),
        verdicts.len()
    );
    Ok(all)
}

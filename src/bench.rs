//! `herald bench`: throughput and latency figures that anyone can reproduce.
//!
//! It starts a webhook sink in this process (real HTTP on loopback, keep-alive,
//! 200 to everything, arrival times on a monotonic clock) and, unless given a URL,
//! a Herald child process on its own embedded PostgreSQL. Then it drives the
//! scenarios with real HTTP clients and prints a table plus one JSON line each.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use clap::Args;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt;

mod capacity;
mod flow;
mod history;
mod peers;
mod soak;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// A running Herald to measure. Unset: the bench starts one (this binary, on
    /// its own embedded PostgreSQL in a temporary folder, or on DATABASE_URL).
    #[arg(long)]
    pub url: Option<String>,
    /// An admin API key of the project `default` on --url.
    #[arg(long, env = "HERALD_BENCH_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Herald's database, for the backlog scenario and the settings report (given --url).
    #[arg(long = "bench-database-url")]
    pub database_url: Option<String>,
    /// Small sizes: every scenario finishes in seconds.
    #[arg(long)]
    pub quick: bool,
    /// Scenarios to run, comma-separated: throughput, latency, sync, backlog, and
    /// (not by default, they take long) history, soak, rate-limit, ordering,
    /// peers (needs --peer-graphile), capacity (the sustainable rate R, then
    /// latency at R/2) and snapshot (the batch run while a transaction holds a
    /// snapshot open, as a backup does).
    #[arg(long, value_delimiter = ',', default_value = "throughput,latency,sync,backlog")]
    pub scenarios: Vec<String>,
    /// The peer bench (graphile-bench.mjs, with graphile-worker installed next to
    /// it) for the `peers` scenario; `make bench-peers` sets it up.
    #[arg(long)]
    pub peer_graphile: Option<PathBuf>,
    /// Rounds of the `peers` scenario (peer, then Herald, each round) and runs at
    /// R/2 of the `capacity` scenario.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Events per throughput run.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// HTTP clients sending at once in the throughput runs.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Rates of the latency scenario, events per second.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub rates: Vec<u64>,
    /// Seconds each rate runs.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Sequential synchronous events.
    #[arg(long, default_value_t = 2000)]
    pub sync_events: usize,
    /// Backlog sizes to pre-load and drain.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    pub backlog: Vec<u64>,
    /// History sizes (ended event logs) at which the history scenario times the
    /// dashboard's reads.
    #[arg(long, value_delimiter = ',', default_value = "2000000,20000000")]
    pub history_rows: Vec<u64>,
    /// Days the loaded history spreads over (at least 30).
    #[arg(long, default_value_t = 30)]
    pub history_days: u32,
    /// Timed runs of each history read.
    #[arg(long, default_value_t = 50)]
    pub history_samples: usize,
    /// Seconds the soak scenario runs.
    #[arg(long, default_value_t = 1800)]
    pub soak_seconds: u64,
    /// Events per second of the soak scenario; unset: half the batch throughput
    /// measured in this run (measured first if the throughput scenario did not run).
    #[arg(long)]
    pub soak_rate: Option<u64>,
    /// Events of the rate-limit scenario.
    #[arg(long, default_value_t = 10_000)]
    pub rate_limit_events: usize,
    /// The rate limit of its trigger, deliveries per second.
    #[arg(long, default_value_t = 200.0)]
    pub rate_limit: f64,
    /// Events of the ordering scenario.
    #[arg(long, default_value_t = 10_000)]
    pub ordering_events: usize,
    /// Ordering keys they spread over.
    #[arg(long, default_value_t = 100)]
    pub ordering_keys: usize,
}

/// One scenario's figures: a table row and a JSON line.
#[derive(Default, Clone, Debug)]
struct Figures {
    scenario: String,
    events: u64,
    queued_per_s: Option<f64>,
    delivered_per_s: Option<f64>,
    latencies_ms: Vec<f64>,
    /// Events Herald accepted (2xx) that never reached the sink.
    lost: u64,
    duplicates: u64,
    /// Events Herald did not accept (503 when overloaded, or any other failure):
    /// not lost, since the caller was told.
    refused: u64,
    herald_cpu_s: Option<f64>,
    max_rss_mb: Option<f64>,
    note: String,
}

/// Writes out the dirty pages a load left before a clock starts: a node that has
/// run for a while has none of them pending. Needs a superuser (or
/// pg_checkpoint); without one it says what the figures then include.
async fn checkpoint_after_load(db: &PgPool, scenario: &str) {
    if let Err(e) = sqlx::query("CHECKPOINT").execute(db).await {
        eprintln!("{scenario}: cannot CHECKPOINT after the load ({e}); what is timed first pays for the load's writes");
    }
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

impl Figures {
    fn json(&self) -> Value {
        let mut l = self.latencies_ms.clone();
        l.sort_by(f64::total_cmp);
        let r = |v: Option<f64>| v.map(|x| (x * 100.0).round() / 100.0);
        json!({
            "scenario": self.scenario, "events": self.events,
            "queued_per_s": r(self.queued_per_s), "delivered_per_s": r(self.delivered_per_s),
            "p50_ms": r(percentile(&l, 0.5)), "p90_ms": r(percentile(&l, 0.9)),
            "p99_ms": r(percentile(&l, 0.99)), "max_ms": r(l.last().copied()),
            "lost": self.lost, "duplicates": self.duplicates, "refused": self.refused,
            "herald_cpu_s": r(self.herald_cpu_s), "max_rss_mb": r(self.max_rss_mb), "note": self.note,
        })
    }
}

/// Which sequence numbers Herald accepted (answered 2xx).
#[derive(Clone)]
struct Accepted(Arc<Vec<std::sync::atomic::AtomicBool>>);

impl Accepted {
    fn new(n: usize) -> Self {
        Accepted(Arc::new((0..n).map(|_| std::sync::atomic::AtomicBool::new(false)).collect()))
    }

    fn mark(&self, seqs: std::ops::Range<usize>) {
        for seq in seqs {
            self.0[seq].store(true, Ordering::Relaxed);
        }
    }

    fn count(&self) -> usize {
        self.0.iter().filter(|a| a.load(Ordering::Relaxed)).count()
    }

    /// Accepted events that never arrived.
    fn lost(&self, arrivals: &[Option<Instant>]) -> u64 {
        self.0.iter().zip(arrivals).filter(|(a, arrived)| a.load(Ordering::Relaxed) && arrived.is_none()).count() as u64
    }
}

/// What the sink saw: per run, each sequence number's arrival times.
#[derive(Default)]
struct Sink {
    arrivals: Mutex<Vec<(u64, u64, Instant)>>,
    /// Time spent inside the handler, in nanoseconds, per request (sync scenario).
    handling_ns: Mutex<Vec<u64>>,
}

async fn sink_handler(State(sink): State<Arc<Sink>>, body: Bytes) -> axum::Json<Value> {
    let at = Instant::now();
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        let run = v["data"]["run"].as_u64().unwrap_or(0);
        let seq = v["data"]["seq"].as_u64().unwrap_or(u64::MAX);
        sink.arrivals.lock().unwrap().push((run, seq, at));
    }
    sink.handling_ns.lock().unwrap().push(at.elapsed().as_nanos() as u64);
    axum::Json(json!({"response": {"ok": true}}))
}

impl Sink {
    async fn start() -> Result<(Arc<Sink>, String)> {
        let sink = Arc::new(Sink::default());
        let app = axum::Router::new().fallback(sink_handler).with_state(sink.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((sink, url))
    }

    fn count(&self, run: u64) -> usize {
        self.arrivals.lock().unwrap().iter().filter(|a| a.0 == run).count()
    }

    /// Waits until `n` events of `run` arrived, or nothing new came for `idle`.
    async fn wait_for(&self, run: u64, n: usize, idle: Duration) {
        let mut last = (0, Instant::now());
        loop {
            let c = self.count(run);
            if c >= n {
                return;
            }
            if c != last.0 {
                last = (c, Instant::now());
            } else if last.1.elapsed() > idle {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// (unique arrivals, duplicates, arrival time per seq, last arrival).
    fn tally(&self, run: u64, n: usize) -> (u64, u64, Vec<Option<Instant>>, Option<Instant>) {
        let mut first = vec![None; n];
        let mut dup = 0;
        let mut last: Option<Instant> = None;
        for &(r, seq, at) in self.arrivals.lock().unwrap().iter().filter(|a| a.0 == run) {
            let Some(slot) = first.get_mut(seq as usize) else { continue };
            if slot.is_some() {
                dup += 1;
            } else {
                *slot = Some(at);
            }
            last = Some(last.map_or(at, |l: Instant| l.max(at)));
            let _ = r;
        }
        (first.iter().filter(|a| a.is_some()).count() as u64, dup, first, last)
    }
}

/// The Herald under test.
struct Target {
    base: String,
    key: String,
    http: reqwest::Client,
    pid: Option<u32>,
    db: Option<PgPool>,
    child: Option<tokio::process::Child>,
    data_dir: Option<PathBuf>,
    /// The bench made the key itself (on DATABASE_URL), and revokes it when it stops.
    own_key: bool,
}

impl Target {
    /// The socket folder of the bench's own embedded PostgreSQL, if it has one.
    fn socket_dir(&self) -> Option<PathBuf> {
        if std::env::var_os("DATABASE_URL").is_some() {
            return None;
        }
        self.data_dir.as_ref().map(|d| d.join("run"))
    }

    async fn spawn() -> Result<Target> {
        // On DATABASE_URL the database may be one Herald has used before, whose
        // node prints no first key: the bench makes a key of its own first.
        let made_ahead = match std::env::var_os("DATABASE_URL") {
            Some(_) => Some(bench_key().await?),
            None => None,
        };
        let dir = std::env::temp_dir().join(format!("herald-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("serve")
            .env("HERALD_DATA_DIR", &dir)
            .env("HERALD_ADDR", format!("127.0.0.1:{port}"))
            .env("HERALD_ADMIN_PASSWORD", "bench-only-password")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the Herald under test")?;
        let pid = child.id();
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim().starts_with("hrld_") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line.trim().to_string());
                    }
                }
            }
        });
        let own_key = made_ahead.is_some();
        let key = match made_ahead {
            Some(key) => key,
            None => tokio::time::timeout(Duration::from_secs(120), rx)
                .await
                .context("Herald did not print its first API key within 2 minutes")??,
        };
        let base = format!("http://127.0.0.1:{port}");
        let http = client();
        for _ in 0..600 {
            if http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let opts = match std::env::var("DATABASE_URL") {
            Ok(url) => url.parse::<PgConnectOptions>()?,
            Err(_) => PgConnectOptions::new().socket(dir.join("run")).username("postgres").database("herald"),
        };
        let db = bench_pool(opts).await?;
        Ok(Target { base, key, http, pid, db: Some(db), child: Some(child), data_dir: Some(dir), own_key })
    }

    async fn remote(url: String, key: Option<String>, database_url: Option<String>) -> Result<Target> {
        let key = key.context("--url needs --key (an admin API key of the project 'default')")?;
        let db = match database_url {
            Some(u) => Some(
                bench_pool(u.parse().context("--bench-database-url is not a PostgreSQL URL")?)
                    .await
                    .context("cannot connect to --bench-database-url")?,
            ),
            None => None,
        };
        Ok(Target {
            base: url.trim_end_matches('/').to_string(),
            key,
            http: client(),
            pid: None,
            db,
            child: None,
            data_dir: None,
            own_key: false,
        })
    }

    async fn trigger(&self, name: &str, event_type: &str, sink: &str) -> Result<()> {
        let url = format!("{}/v1/api/default/eventing/triggers", self.base);
        let body = json!({"name": name, "type": event_type, "url": sink, "retries": 3, "timeoutMs": 10000});
        let r = with_json(self.http.post(&url), &self.key, &body).send().await?;
        if r.status().as_u16() == 409 {
            let r = with_json(self.http.put(format!("{url}/{name}")), &self.key, &body).send().await?;
            if !r.status().is_success() {
                bail!("cannot update the trigger {name}: {}", r.text().await?);
            }
        } else if !r.status().is_success() {
            bail!("cannot create the trigger {name}: {}", r.text().await?);
        }
        Ok(())
    }

    /// (CPU seconds, RSS in MB) of the Herald process, when it is our child.
    fn usage(&self) -> Option<(f64, f64)> {
        usage(self.pid?)
    }

    async fn stop(mut self) {
        if let (Some(child), Some(pid)) = (self.child.as_mut(), self.pid) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if self.own_key {
            if let Err(e) = revoke_bench_key(&self.key).await {
                eprintln!("could not revoke the bench's API key {}…: {e:#}", &self.key[..12]);
            }
        }
    }
}

/// (CPU seconds, RSS in MB) of a process, from /proc.
pub(super) fn usage(pid: u32) -> Option<(f64, f64)> {
    {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
        let cpu = (fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / ticks;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
        Some((cpu, rss_kb / 1024.0))
    }
}

/// An admin key of the project `default` on DATABASE_URL's database, made with
/// Herald's own command line (`migrate`, then `api-key create`, which prints the
/// key alone on its last line).
async fn bench_key() -> Result<String> {
    herald_cli(&["migrate"]).await?;
    let out = herald_cli(&["api-key", "create", "--project", "default", "--role", "admin", "--name", "herald bench"]).await?;
    out.lines()
        .last()
        .map(str::trim)
        .filter(|k| k.starts_with("hrld_"))
        .map(str::to_string)
        .with_context(|| format!("`herald api-key create` printed no key: {out}"))
}

/// Revokes the key [`bench_key`] made, found by its prefix in `herald api-key list`.
async fn revoke_bench_key(key: &str) -> Result<()> {
    let list = herald_cli(&["api-key", "list", "--project", "default"]).await?;
    let id = list
        .lines()
        .find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(2) == Some(&&key[..12])).then(|| cols[0].to_string())
        })
        .context("the key is not in `herald api-key list`")?;
    herald_cli(&["api-key", "revoke", "--project", "default", "--id", &id]).await?;
    Ok(())
}

/// Runs this herald binary's command line (on the same DATABASE_URL) and returns
/// what it printed, or an error with what it said when it failed.
async fn herald_cli(args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .with_context(|| format!("cannot run `herald {}`", args.join(" ")))?;
    if !out.status.success() {
        bail!("`herald {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The bench's own connection to Herald's database. Its bulk statements (loading a
/// million-row backlog) are slow on purpose, so sqlx's slow-statement warnings are off.
async fn bench_pool(opts: PgConnectOptions) -> Result<PgPool> {
    use sqlx::ConnectOptions;
    Ok(PgPool::connect_with(opts.disable_statement_logging()).await?)
}

/// A JSON request with the key (reqwest's `json` feature is not built).
fn with_json(req: reqwest::RequestBuilder, key: &str, body: &Value) -> reqwest::RequestBuilder {
    req.bearer_auth(key).header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(1024).tcp_nodelay(true).build().expect("a plain HTTP client")
}

/// Samples the child's peak RSS while a scenario runs.
struct Watch {
    peak: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
    cpu0: Option<f64>,
}

fn watch(t: &Target) -> Watch {
    let peak = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let cpu0 = t.usage().map(|u| u.0);
    if let Some(pid) = t.pid {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Some((_, rss)) = usage(pid) {
                    peak.fetch_max((rss * 1024.0) as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    Watch { peak, stop, cpu0 }
}

impl Watch {
    fn finish(self, t: &Target, f: &mut Figures) {
        self.stop.cancel();
        if let (Some(c0), Some((c1, rss))) = (self.cpu0, t.usage()) {
            f.herald_cpu_s = Some(c1 - c0);
            f.max_rss_mb = Some((self.peak.load(Ordering::Relaxed) as f64 / 1024.0).max(rss));
        }
    }
}

/// Runs the chosen scenarios and prints the results.
pub async fn run(args: BenchArgs) -> Result<()> {
    let mut args = args;
    if args.quick {
        args.events = args.events.min(5_000);
        args.rates = vec![1000, 5000];
        args.seconds = args.seconds.min(3);
        args.sync_events = args.sync_events.min(300);
        args.backlog = vec![10_000, 50_000];
        args.history_rows = vec![20_000, 200_000];
        args.history_samples = args.history_samples.min(10);
        args.soak_seconds = args.soak_seconds.min(90);
        args.rate_limit_events = args.rate_limit_events.min(1_000);
        args.ordering_events = args.ordering_events.min(2_000);
    }
    let (sink, sink_url) = Sink::start().await?;
    let target = match args.url.clone() {
        Some(url) => Target::remote(url, args.key.clone(), args.database_url.clone()).await?,
        None => {
            eprintln!("starting a Herald with its own PostgreSQL…");
            Target::spawn().await?
        }
    };
    let env = environment(&target, args.quick).await;
    println!("{}", env);
    let mut all = Vec::new();
    let mut run_id = 0u64;
    let scenarios = args.scenarios.clone();
    let result: Result<()> = async {
        for s in &scenarios {
            match s.as_str() {
                "throughput" => {
                    for batch in [false, true] {
                        run_id += 1;
                        all.push(throughput(&target, &sink, &sink_url, run_id, &args, batch).await?);
                        report(all.last().unwrap());
                    }
                }
                "latency" => {
                    for &rate in &args.rates {
                        run_id += 1;
                        all.push(latency(&target, &sink, &sink_url, run_id, rate, args.seconds).await?);
                        report(all.last().unwrap());
                    }
                }
                "sync" => {
                    run_id += 1;
                    all.push(synchronous(&target, &sink, &sink_url, run_id, args.sync_events).await?);
                    report(all.last().unwrap());
                }
                "backlog" => {
                    for &n in &args.backlog {
                        run_id += 1;
                        match backlog(&target, &sink, &sink_url, run_id, n).await? {
                            Some(f) => {
                                all.push(f);
                                report(all.last().unwrap());
                            }
                            None => eprintln!("backlog: skipped (needs --bench-database-url with --url)"),
                        }
                    }
                }
                "history" => history::run(&target, &args.history_rows, args.history_days, args.history_samples).await?,
                "soak" => {
                    let rate = match args.soak_rate {
                        Some(r) => r,
                        None => {
                            let measured = match all.iter().rev().find(|f| f.scenario == "throughput-batch") {
                                Some(f) => f.delivered_per_s,
                                None => {
                                    run_id += 1;
                                    let mut quick = args.clone();
                                    quick.events = quick.events.min(30_000);
                                    let f = throughput(&target, &sink, &sink_url, run_id, &quick, true).await?;
                                    report(&f);
                                    f.delivered_per_s
                                }
                            };
                            (measured.unwrap_or(1000.0) / 2.0) as u64
                        }
                    };
                    run_id += 1;
                    soak::run(&target, &sink, &sink_url, run_id, rate.max(1), args.soak_seconds).await?;
                }
                "capacity" => {
                    all.extend(capacity::run(&target, &sink, &sink_url, &mut run_id, args.seconds, args.rounds).await?);
                }
                "peers" => {
                    all.extend(peers::run(&target, &sink, &sink_url, &mut run_id, &args).await?);
                }
                "snapshot" => {
                    run_id += 1;
                    match under_snapshot(&target, &sink, &sink_url, run_id, &args).await? {
                        Some(f) => {
                            all.push(f);
                            report(all.last().unwrap());
                        }
                        None => eprintln!("snapshot: skipped (needs --bench-database-url with --url)"),
                    }
                }
                "rate-limit" => {
                    run_id += 1;
                    println!("{}", flow::rate_limit(&target, run_id, args.rate_limit_events, args.rate_limit).await?);
                }
                "ordering" => {
                    run_id += 1;
                    println!("{}", flow::ordering(&target, run_id, args.ordering_events, args.ordering_keys).await?);
                }
                other => bail!(
                    "unknown scenario '{other}': use throughput, latency, sync, backlog, history, soak, rate-limit, ordering, peers, capacity or snapshot"
                ),
            }
        }
        Ok(())
    }
    .await;
    target.stop().await;
    result?;
    print_table(&all);
    Ok(())
}

fn report(f: &Figures) {
    println!("{}", f.json());
}

fn print_table(all: &[Figures]) {
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if x >= 100.0 { format!("{x:.0}") } else { format!("{x:.2}") }
        }
        other => other.to_string(),
    };
    println!();
    println!(
        "{:<22} {:>8} {:>10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>5} {:>5} {:>7} {:>7} {:>7}",
        "scenario", "events", "queued/s", "delivered/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "lost", "dup", "refused", "cpu s", "rss MB"
    );
    for f in all {
        let j = f.json();
        println!(
            "{:<22} {:>8} {:>10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>5} {:>5} {:>7} {:>7} {:>7}",
            f.scenario, f.events, cell(&j["queued_per_s"]), cell(&j["delivered_per_s"]), cell(&j["p50_ms"]),
            cell(&j["p90_ms"]), cell(&j["p99_ms"]), cell(&j["max_ms"]), f.lost, f.duplicates, f.refused,
            cell(&j["herald_cpu_s"]), cell(&j["max_rss_mb"])
        );
        if !f.note.is_empty() {
            println!("    {}", f.note);
        }
    }
}

/// PostgreSQL's version and the settings that matter, and the disk's fdatasync rate.
async fn environment(t: &Target, quick: bool) -> Value {
    let mut env = json!({"scenario": "environment", "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)});
    if let Some(db) = &t.db {
        let row: Result<(String, String, String, String), _> = sqlx::query_as(
            "SELECT version(), current_setting('synchronous_commit'), current_setting('shared_buffers'),
                    current_setting('data_directory', true)",
        )
        .fetch_one(db)
        .await;
        if let Ok((version, sc, sb, _)) = row {
            env["postgres"] = json!(version);
            env["synchronous_commit"] = json!(sc);
            env["shared_buffers"] = json!(sb);
        }
    }
    env["fdatasync_ops_per_s"] = if quick { json!(null) } else { json!(fdatasync_rate().await) };
    env
}

/// Runs pg_test_fsync briefly and reads its first fdatasync figure (ops/s).
async fn fdatasync_rate() -> Option<f64> {
    let file = std::env::temp_dir().join(format!("herald-fsync-{}", uuid::Uuid::new_v4().simple()));
    // On PATH, or where Debian keeps PostgreSQL's programs.
    let mut candidates = vec![PathBuf::from("pg_test_fsync")];
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin/pg_test_fsync")).collect())
        .unwrap_or_default();
    versions.sort();
    candidates.extend(versions.into_iter().rev());
    let mut out = None;
    for program in candidates {
        if let Ok(o) = tokio::process::Command::new(&program).args(["-s", "1", "-f"]).arg(&file).output().await {
            out = Some(o);
            break;
        }
    }
    let out = out?;
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.trim_start().starts_with("fdatasync"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn event(run: u64, seq: usize, event_type: &str) -> Value {
    json!({"type": event_type, "data": {"run": run, "seq": seq}})
}

/// Scenario 1: N events as fast as possible, one per call or 500 per batch call.
async fn throughput(t: &Target, sink: &Sink, sink_url: &str, run: u64, args: &BenchArgs, batch: bool) -> Result<Figures> {
    let event_type = format!("bench.throughput.{run}");
    t.trigger(&format!("bench-{run}"), &event_type, sink_url).await?;
    let n = args.events;
    let per_call = if batch { 500 } else { 1 };
    let clients = if batch { args.clients.clamp(1, 8) } else { args.clients.max(1) };
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Accepted::new(n);
    let w = watch(t);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, accepted, http) = (next.clone(), accepted.clone(), t.http.clone());
        let (base, key, event_type) = (t.base.clone(), t.key.clone(), event_type.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(per_call, Ordering::Relaxed);
                if from >= n {
                    break;
                }
                let to = (from + per_call).min(n);
                let ok = if batch {
                    let events: Vec<Value> = (from..to).map(|i| event(run, i, &event_type)).collect();
                    let url = format!("{base}/v1/api/default/eventing/queue/batch");
                    with_json(http.post(url), &key, &json!({"events": events})).send().await
                } else {
                    let url = format!("{base}/v1/api/default/eventing/queue");
                    with_json(http.post(url), &key, &event(run, from, &event_type)).send().await
                };
                if ok.is_ok_and(|r| r.status().is_success()) {
                    accepted.mark(from..to);
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let queued_in = start.elapsed();
    sink.wait_for(run, accepted.count(), Duration::from_secs(30)).await;
    let (unique, dup, arrivals, last) = sink.tally(run, n);
    let mut f = Figures {
        scenario: if batch { "throughput-batch".into() } else { "throughput-single".into() },
        events: n as u64,
        queued_per_s: Some(accepted.count() as f64 / queued_in.as_secs_f64()),
        delivered_per_s: last.map(|l| unique as f64 / (l - start).as_secs_f64()),
        lost: accepted.lost(&arrivals),
        duplicates: dup,
        refused: (n - accepted.count()) as u64,
        note: format!("{clients} clients, {per_call} event(s) per call"),
        ..Figures::default()
    };
    w.finish(t, &mut f);
    Ok(f)
}

/// Most latency-scenario calls awaiting their answer at once.
const IN_FLIGHT: usize = 20_000;

/// Scenario 2: an open-loop load at a fixed rate; latency from send to arrival.
async fn latency(t: &Target, sink: &Sink, sink_url: &str, run: u64, rate: u64, seconds: u64) -> Result<Figures> {
    Ok(open_loop(t, sink, sink_url, run, rate, seconds).await?.0)
}

/// When each event of an open-loop run was sent and when it arrived.
pub(super) struct Timeline {
    start: Instant,
    /// Per event: nanoseconds from `start` to its send, u64::MAX if never sent.
    sent_ns: Vec<u64>,
    arrivals: Vec<Option<Instant>>,
}

impl Timeline {
    /// Event `i`'s send time (nanoseconds from `start`) and latency (ms), if it
    /// was sent and arrived.
    fn latency(&self, i: usize) -> Option<(u64, f64)> {
        let (sent, arrival) = (self.sent_ns[i], self.arrivals[i]?);
        (sent != u64::MAX).then(|| (sent, ((arrival - self.start).as_nanos() as f64 - sent as f64) / 1e6))
    }
}

async fn open_loop(t: &Target, sink: &Sink, sink_url: &str, run: u64, rate: u64, seconds: u64) -> Result<(Figures, Timeline)> {
    let event_type = format!("bench.latency.{run}");
    t.trigger(&format!("bench-{run}"), &event_type, sink_url).await?;
    let n = (rate * seconds) as usize;
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(u64::MAX)).collect());
    let accepted = Accepted::new(n);
    let unsent = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let w = watch(t);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut issued = 0usize;
    let start = Instant::now();
    while issued < n {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(n);
        while issued < due {
            let seq = issued;
            issued += 1;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                unsent.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (http, sent, accepted) = (t.http.clone(), sent.clone(), accepted.clone());
            let url = format!("{}/v1/api/default/eventing/queue", t.base);
            let (key, body) = (t.key.clone(), event(run, seq, &event_type));
            tokio::spawn(async move {
                sent[seq].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
                let r = with_json(http.post(url), &key, &body).send().await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    accepted.mark(seq..seq + 1);
                }
                drop(permit);
            });
        }
    }
    let queued_in = start.elapsed();
    // Every call answered: only then is it known which events were accepted.
    let _all = in_flight.acquire_many(IN_FLIGHT as u32).await?;
    sink.wait_for(run, accepted.count(), Duration::from_secs(10)).await;
    let (unique, dup, arrivals, last) = sink.tally(run, n);
    let lost = accepted.lost(&arrivals);
    let timeline = Timeline {
        start: base,
        sent_ns: sent.iter().map(|s| s.load(Ordering::Relaxed)).collect(),
        arrivals: arrivals.clone(),
    };
    let latencies_ms = (0..n).filter_map(|i| timeline.latency(i)).map(|(_, ms)| ms).collect();
    let mut f = Figures {
        scenario: format!("latency-{rate}/s"),
        events: n as u64,
        queued_per_s: Some(n as f64 / queued_in.as_secs_f64()),
        delivered_per_s: last.map(|l| unique as f64 / (l - start).as_secs_f64()),
        latencies_ms,
        lost,
        duplicates: dup,
        refused: (n - accepted.count()) as u64,
        note: format!(
            "{seconds} s open loop; {} not sent (over {IN_FLIGHT} calls in flight)",
            unsent.load(Ordering::Relaxed)
        ),
        ..Figures::default()
    };
    w.finish(t, &mut f);
    Ok((f, timeline))
}

/// Scenario 3: sequential synchronous events; round trip and overhead over the sink.
async fn synchronous(t: &Target, sink: &Sink, sink_url: &str, run: u64, n: usize) -> Result<Figures> {
    let event_type = format!("bench.sync.{run}");
    t.trigger(&format!("bench-{run}"), &event_type, sink_url).await?;
    sink.handling_ns.lock().unwrap().clear();
    let w = watch(t);
    let mut rtt = Vec::with_capacity(n);
    let mut failed = 0u64;
    let accepted = Accepted::new(n);
    let start = Instant::now();
    for seq in 0..n {
        let mut body = event(run, seq, &event_type);
        body["isSynchronous"] = json!(true);
        let t0 = Instant::now();
        let url = format!("{}/v1/api/default/eventing/queue", t.base);
        let r = with_json(t.http.post(url), &t.key, &body).send().await;
        let ok = match r {
            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            rtt.push(t0.elapsed().as_secs_f64() * 1000.0);
            accepted.mark(seq..seq + 1);
        } else {
            failed += 1;
        }
    }
    let elapsed = start.elapsed();
    let mut handling: Vec<f64> = sink.handling_ns.lock().unwrap().iter().map(|ns| *ns as f64 / 1e6).collect();
    handling.sort_by(f64::total_cmp);
    let mut sorted = rtt.clone();
    sorted.sort_by(f64::total_cmp);
    let overhead = percentile(&sorted, 0.5).zip(percentile(&handling, 0.5)).map(|(a, b)| a - b);
    let (unique, dup, arrivals, _) = sink.tally(run, n);
    let mut f = Figures {
        scenario: "sync-round-trip".into(),
        events: n as u64,
        queued_per_s: Some(n as f64 / elapsed.as_secs_f64()),
        delivered_per_s: Some(unique as f64 / elapsed.as_secs_f64()),
        latencies_ms: rtt,
        lost: accepted.lost(&arrivals),
        duplicates: dup,
        refused: failed,
        note: format!(
            "overhead over the sink's handling, p50: {:.2} ms",
            overhead.unwrap_or(f64::NAN)
        ),
        ..Figures::default()
    };
    w.finish(t, &mut f);
    Ok(f)
}

/// Scenario: the batch throughput run while a transaction holds a snapshot open
/// all along, as a backup (pg_dump) or a long report does. PostgreSQL can then
/// remove nothing the run leaves behind, not even the index entries of claimed
/// event logs, and the claims must not wade through them.
async fn under_snapshot(t: &Target, sink: &Sink, sink_url: &str, run: u64, args: &BenchArgs) -> Result<Option<Figures>> {
    let Some(db) = &t.db else { return Ok(None) };
    let mut held = db.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *held).await?;
    // The first query takes the snapshot, which lasts until the rollback.
    sqlx::query("SELECT count(*) FROM projects").execute(&mut *held).await?;
    let figures = throughput(t, sink, sink_url, run, args, true).await;
    held.rollback().await?;
    let mut f = figures?;
    f.scenario = "batch-under-snapshot".into();
    f.note = format!("{}; a REPEATABLE READ transaction open all run, as a backup holds", f.note);
    Ok(Some(f))
}

/// Scenario 4: pre-load N due event logs (held back until all are stored), then
/// release them at once and time the drain.
async fn backlog(t: &Target, sink: &Sink, sink_url: &str, run: u64, n: u64) -> Result<Option<Figures>> {
    let Some(db) = &t.db else { return Ok(None) };
    let event_type = format!("bench.backlog.{run}");
    let trigger = format!("bench-{run}");
    t.trigger(&trigger, &event_type, sink_url).await?;
    eprintln!("backlog: pre-loading {n} event logs…");
    let load = Instant::now();
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO events (id, project, type, data, deliver_at)
         SELECT herald_uuid_v7(), 'default', $1, jsonb_build_object('run', $2::bigint, 'seq', g), now() + interval '1 day'
         FROM generate_series(0, $3::bigint - 1) g",
    )
    .bind(&event_type)
    .bind(run as i64)
    .bind(n as i64)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO event_logs (id, event_id, project, trigger_name, event_type, status, next_attempt_at)
         SELECT herald_uuid_v7(), id, 'default', $2, type, 'scheduled', deliver_at FROM events WHERE type = $1",
    )
    .bind(&event_type)
    .bind(&trigger)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    sqlx::query("VACUUM ANALYZE event_logs").execute(db).await?;
    let loaded_in = load.elapsed();
    let w = watch(t);
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE event_logs SET status = 'pending', next_attempt_at = now()
                 WHERE status = 'scheduled' AND trigger_name = $1")
        .bind(&trigger)
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_notify('herald_wake', '')").execute(&mut *tx).await?;
    tx.commit().await?;
    // The dispatcher sees the rows from the commit on.
    let start = Instant::now();
    sink.wait_for(run, n as usize, Duration::from_secs(30)).await;
    let (unique, dup, _, last) = sink.tally(run, n as usize);
    let mut f = Figures {
        scenario: format!("backlog-drain-{n}"),
        events: n,
        delivered_per_s: last.map(|l| unique as f64 / (l - start).as_secs_f64()),
        lost: n - unique,
        duplicates: dup,
        note: format!("pre-loaded in {:.1} s", loaded_in.as_secs_f64()),
        ..Figures::default()
    };
    w.finish(t, &mut f);
    Ok(Some(f))
}

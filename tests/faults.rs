//! The fault-injection suite (`make test-faults`): Herald as a real process,
//! killed and restarted under load. Each test checks what a user cares about: no
//! event log is lost, and each one ends `processed` once the sink acknowledged it.
//! Ignored by plain `cargo test` for its length; `make test-faults` runs it.
#![cfg(feature = "ssr")]

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{database_url, wait_for, Receiver};
use herald::engine::projects::Role;
use herald::engine::Engine;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Starts the real binary on the test database, with a fixed data folder (and so
/// a fixed node id across restarts).
fn spawn(db_url: &str, data: &std::path::Path, port: u16) -> Child {
    spawn_with(db_url, data, port, &[])
}

fn spawn_with(db_url: &str, data: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .envs(env.iter().copied())
        .env("DATABASE_URL", db_url)
        .env("HERALD_DATA_DIR", data)
        .env("HERALD_ADDR", format!("127.0.0.1:{port}"))
        .env("HERALD_ADMIN_PASSWORD", "faults-only-password")
        .env("HERALD_CONCURRENCY", "64")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the herald binary starts")
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
#[ignore = "fault suite: run with make test-faults"]
async fn kill_9_in_the_middle_of_50_000_deliveries_loses_nothing(pool: PgPool) {
    const N: usize = 50_000;
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.unwrap();
    let url = database_url(&db, "postgres");
    let rx = Receiver::start().await;

    // The events are queued before Herald runs, through the engine (no dispatcher).
    let engine = Engine::new(pool.clone(), Uuid::new_v4(), Default::default());
    engine.bootstrap().await.unwrap();
    let key = engine.create_api_key("default", Role::Admin, "faults").await.unwrap();
    let _ = key;
    let input = serde_json::from_value(json!({"name": "sink", "type": "load", "url": rx.url("/sink"), "timeoutMs": 2000}))
        .unwrap();
    engine.create_trigger("default", input).await.unwrap();
    for chunk in 0..N / 1000 {
        let events: Vec<_> = (chunk * 1000..(chunk + 1) * 1000).map(|i| json!({"type": "load", "data": {"seq": i}})).collect();
        engine.queue_batch("default", &json!({"events": events})).await.unwrap();
    }

    let data = std::env::temp_dir().join(format!("herald-faults-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&data).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut herald = spawn(&url, &data, port);
    // Kill it hard once a fifth of the deliveries arrived.
    wait_for(Duration::from_secs(300), || async { (rx.count() >= N / 5).then_some(()) }).await;
    herald.kill().unwrap();
    herald.wait().unwrap();
    let at_kill = rx.count();
    let in_flight: i64 = sqlx::query_scalar("SELECT count(*) FROM event_logs WHERE status = 'processing'")
        .fetch_one(&pool)
        .await
        .unwrap();

    let mut herald = spawn(&url, &data, port);
    all_processed(&pool, Duration::from_secs(600)).await;
    herald.kill().unwrap();
    herald.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);

    let mut seen: HashMap<u64, usize> = HashMap::new();
    for r in rx.received() {
        *seen.entry(r.json()["data"]["seq"].as_u64().unwrap()).or_default() += 1;
    }
    assert_eq!(seen.len(), N, "every event arrived at least once");
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "kill -9 after {at_kill} arrivals with {in_flight} event logs in flight: {duplicates} duplicate deliveries, \
         {} arrivals in all",
        rx.count()
    );
    assert!(duplicates as i64 <= in_flight, "only in-flight work is delivered twice ({duplicates} > {in_flight})");
    let bad: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_logs l WHERE NOT EXISTS
           (SELECT 1 FROM invocation_logs i WHERE i.event_log_id = l.id AND i.status_code = 200)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(bad, 0, "every processed event log has its acknowledged attempt recorded");
}

/// Waits until every event log is processed.
async fn all_processed(pool: &PgPool, bound: Duration) {
    wait_for(bound, || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM event_logs WHERE status <> 'processed'")
            .fetch_one(pool)
            .await
            .unwrap();
        (left == 0).then_some(())
    })
    .await;
}

/// The node id a child wrote into its data folder.
async fn node_id_of(data: &std::path::Path) -> String {
    let file = data.join("node_id");
    wait_for(Duration::from_secs(30), || async { std::fs::read_to_string(&file).ok().map(|s| s.trim().to_string()) })
        .await
}

async fn queue_many(engine: &Engine, event_type: &str, from: usize, to: usize) {
    let mut at = from;
    while at < to {
        let end = (at + 1000).min(to);
        let events: Vec<_> = (at..end).map(|i| json!({"type": event_type, "data": {"seq": i}})).collect();
        engine.queue_batch("default", &json!({"events": events})).await.unwrap();
        at = end;
    }
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
#[ignore = "fault suite: run with make test-faults"]
async fn three_nodes_share_100_000_deliveries_and_take_over_a_killed_one(pool: PgPool) {
    const N: usize = 100_000;
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.unwrap();
    let url = database_url(&db, "postgres");
    let rx = Receiver::start().await;
    let engine = Engine::new(pool.clone(), Uuid::new_v4(), Default::default());
    engine.bootstrap().await.unwrap();
    for (name, t) in [("spread", "spread"), ("takeover", "takeover")] {
        let input = serde_json::from_value(json!({"name": name, "type": t, "url": rx.url(&format!("/{name}")), "timeoutMs": 2000}))
            .unwrap();
        engine.create_trigger("default", input).await.unwrap();
    }
    queue_many(&engine, "spread", 0, N).await;

    let mut nodes = Vec::new();
    for _ in 0..3 {
        let data = std::env::temp_dir().join(format!("herald-faults-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&data).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = spawn(&url, &data, port);
        nodes.push((child, data));
    }
    let started = std::time::Instant::now();
    wait_for(Duration::from_secs(900), || async { (rx.count() >= N).then_some(()) }).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut per_seq: HashMap<u64, usize> = HashMap::new();
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for r in rx.received() {
        let body = r.json();
        *per_seq.entry(body["data"]["seq"].as_u64().unwrap()).or_default() += 1;
        *per_node.entry(body["source"].as_str().unwrap().to_string()).or_default() += 1;
    }
    eprintln!("3 nodes delivered {N} events in {took:?}: {per_node:?}");
    for (i, (child, _)) in nodes.iter_mut().enumerate() {
        assert!(child.try_wait().unwrap().is_none(), "node {i} exited before the test ended (its stderr is above)");
    }
    assert_eq!(per_seq.len(), N);
    assert!(per_seq.values().all(|&c| c == 1), "each event log is delivered exactly once without faults");
    assert_eq!(per_node.len(), 3, "all three nodes delivered");
    assert!(per_node.values().all(|&c| c >= N / 10), "the work is spread: {per_node:?}");

    // Now slow deliveries, so that work is leased when a node dies.
    rx.always(common::Reply::json(200, json!({})).delayed(Duration::from_millis(300)));
    const M: usize = 3000;
    queue_many(&engine, "takeover", 0, M).await;
    let victim = node_id_of(&nodes[0].1).await;
    let base = rx.count();
    wait_for(Duration::from_secs(120), || async { (rx.count() >= base + 300).then_some(()) }).await;
    nodes[0].0.kill().unwrap();
    nodes[0].0.wait().unwrap();
    let killed_at = std::time::Instant::now();
    let victim_id = Uuid::parse_str(&victim).unwrap();
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM event_logs WHERE status = 'processing' AND leased_by = $1")
        .bind(victim_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    // The lease is the trigger's timeout (2 s) plus the 30 s margin; the sweep runs every 10 s.
    wait_for(Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM event_logs WHERE status = 'processing' AND leased_by = $1")
            .bind(victim_id)
            .fetch_one(&pool)
            .await
            .unwrap();
        (n == 0).then_some(())
    })
    .await;
    let taken_over = killed_at.elapsed();
    all_processed(&pool, Duration::from_secs(300)).await;
    eprintln!("killed a node holding {held} leases; the others took them over after {taken_over:?}");
    // Lease (2 s timeout + 30 s margin) plus one sweep interval (10 s), plus slack
    // for a loaded 2-core machine.
    assert!(taken_over <= Duration::from_secs(32 + 10 + 5), "taken over within the lease time plus one sweep");
    let seen: std::collections::HashSet<u64> = rx
        .received()
        .iter()
        .filter(|r| r.path == "/takeover")
        .map(|r| r.json()["data"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seen.len(), M, "every event of the second wave arrived");
    for (i, (mut child, data)) in nodes.into_iter().enumerate() {
        if i > 0 {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let _ = std::fs::remove_dir_all(data);
    }
}

/// Runs a command as the `postgres` user when the tests run as root (PostgreSQL
/// refuses root).
fn as_postgres(program: &str) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

/// The command line PostgreSQL last started with, from postmaster.opts.
fn postmaster_command(pgdata: &std::path::Path) -> Vec<String> {
    // `/path/to/postgres "-D" "/data" "-c" "…"`: the program bare, the arguments quoted.
    let opts = std::fs::read_to_string(pgdata.join("postmaster.opts")).unwrap();
    let (program, args) = opts.trim().split_once(' ').unwrap();
    let mut command = vec![program.trim_matches('"').to_string()];
    command.extend(args.split('"').skip(1).step_by(2).map(str::to_string));
    command
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
#[ignore = "fault suite: run with make test-faults"]
async fn postgres_restarted_under_load_gets_503s_and_loses_nothing(_pool: PgPool) {
    use std::io::BufRead;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    // Herald on its own embedded cluster, which this test stops and starts.
    let rx = Receiver::start().await;
    let data = std::env::temp_dir().join(format!("herald-faults-pg-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&data).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut herald = Command::new(env!("CARGO_BIN_EXE_herald"))
        .env_remove("DATABASE_URL")
        .env("HERALD_DATA_DIR", &data)
        .env("HERALD_ADDR", format!("127.0.0.1:{port}"))
        .env("HERALD_ADMIN_PASSWORD", "faults-only-password")
        .env("HERALD_POLL_INTERVAL_MS", "200")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (key_tx, key_rx) = std::sync::mpsc::channel();
    let stdout = herald.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.trim().starts_with("hrld_") {
                let _ = key_tx.send(line.trim().to_string());
            }
        }
    });
    let key = key_rx.recv_timeout(Duration::from_secs(120)).expect("Herald prints its first key");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    wait_for(Duration::from_secs(60), || async {
        http.get(format!("{base}/readyz")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;
    let r = http
        .post(format!("{base}/v1/api/default/eventing/triggers"))
        .bearer_auth(&key)
        .json(&json!({"name": "sink", "type": "steady", "url": rx.url("/sink")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Steady load from 4 clients: every answer is recorded with its time.
    let answers: Arc<Mutex<Vec<(usize, u16, String, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (http, base, key, answers, stop, next) =
            (http.clone(), base.clone(), key.clone(), answers.clone(), stop.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let seq = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let r = http
                    .post(format!("{base}/v1/api/default/eventing/queue"))
                    .bearer_auth(&key)
                    .json(&json!({"type": "steady", "data": {"seq": seq}}))
                    .send()
                    .await;
                let (status, body) = match r {
                    Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                    Err(e) => (0, e.to_string()),
                };
                answers.lock().unwrap().push((seq, status, body, Instant::now()));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pgdata = data.join("postgres");
    let command = postmaster_command(&pgdata);
    let stopped = as_postgres("pg_ctl").args(["-D"]).arg(&pgdata).args(["-m", "fast", "-w", "stop"]).status().unwrap();
    assert!(stopped.success());
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = std::fs::File::create(data.join("restarted-postgres.log")).unwrap();
    let mut postgres = as_postgres(&command[0]).args(&command[1..]).stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let up_at = Instant::now();
    // Recovery is Herald's own doing: the load simply goes on until 200s return.
    let recovered = tokio::time::timeout(Duration::from_secs(30), async {
        while !answers.lock().unwrap().iter().any(|a| a.1 == 200 && a.3 > up_at) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if recovered.is_err() {
        eprintln!("{}", std::fs::read_to_string(data.join("restarted-postgres.log")).unwrap_or_default());
    }
    eprintln!("first 200 after the restart: {:?} after PostgreSQL was started again", up_at.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let answers = answers.lock().unwrap().clone();
    let ok: Vec<usize> = answers.iter().filter(|a| a.1 == 200).map(|a| a.0).collect();
    let unavailable: Vec<&(usize, u16, String, Instant)> = answers.iter().filter(|a| a.1 == 503).collect();
    let other: Vec<&(usize, u16, String, Instant)> = answers.iter().filter(|a| a.1 != 200 && a.1 != 503).collect();
    eprintln!(
        "PostgreSQL down for 4 s under load: {} answers, {} x 200, {} x 503, {} other",
        answers.len(),
        ok.len(),
        unavailable.len(),
        other.len()
    );
    assert!(other.is_empty(), "only 200 or 503, never a hang or a 500: {:?}", &other[..other.len().min(3)]);
    assert!(!unavailable.is_empty(), "the outage was seen");
    assert!(unavailable.iter().all(|a| a.2.contains("unavailable")), "503s say why: {}", unavailable[0].2);
    assert!(answers.iter().any(|a| a.1 == 200 && a.3 > up_at), "Herald recovered by itself after the restart");
    assert!(answers.iter().any(|a| a.1 == 200 && a.3 < down_at));

    // Every event answered 200 is stored, and delivered.
    let want: std::collections::HashSet<u64> = ok.iter().map(|&s| s as u64).collect();
    let got = wait_for(Duration::from_secs(60), || async {
        let seen: std::collections::HashSet<u64> =
            rx.received().iter().map(|r| r.json()["data"]["seq"].as_u64().unwrap()).collect();
        want.is_subset(&seen).then_some(seen)
    })
    .await;
    assert!(want.is_subset(&got));

    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(herald.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = herald.wait();
    let _ = postgres.wait();
    let _ = std::fs::remove_dir_all(&data);
}

/// A webhook sink that misbehaves in every way the issue lists, one path per fault.
/// `/flaky` and `/busy` fail the first attempt of each message and accept the next.
async fn evil_sink() -> (String, String) {
    use axum::body::Body;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use std::sync::{Arc, Mutex};

    let seen: Arc<Mutex<std::collections::HashSet<String>>> = Default::default();
    let first_time = move |headers: &HeaderMap| {
        let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        seen.lock().unwrap().insert(id)
    };
    let (f1, f2) = (first_time.clone(), first_time);
    let app = axum::Router::new()
        .route("/hang", post(|| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            StatusCode::OK
        }))
        .route("/silent", post(|| std::future::pending::<StatusCode>()))
        .route("/flaky", post(move |h: HeaderMap| async move {
            if f1(&h) { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
        }))
        .route("/busy", post(move |h: HeaderMap| async move {
            if f2(&h) {
                (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
            } else {
                StatusCode::OK.into_response()
            }
        }))
        .route("/gone", post(|| async { StatusCode::GONE }))
        .route("/huge", post(|| async {
            // 100 MiB, produced only as fast as it is read.
            const CHUNK: usize = 64 * 1024;
            let chunks = futures_util::stream::iter(
                (0..1600).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; CHUNK]))),
            );
            Response::builder()
                .header("content-length", (1600 * CHUNK).to_string())
                .body(Body::from_stream(chunks))
                .unwrap()
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Resets every connection once the request has arrived (SO_LINGER 0, then close).
    let reset = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_url = format!("http://{}/reset", reset.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = reset.accept().await else { return };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 16 * 1024];
                let _ = conn.read(&mut buf).await;
                #[allow(deprecated)]
                let _ = conn.set_linger(Some(Duration::ZERO));
                drop(conn);
            });
        }
    });
    (base, reset_url)
}

/// Peak resident memory of a process, sampled until `stop` is cancelled.
fn watch_rss(pid: u32, stop: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0u64;
        while !stop.is_cancelled() {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                let kb = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .unwrap_or(0);
                peak = peak.max(kb);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    })
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
#[ignore = "fault suite: run with make test-faults"]
async fn webhook_faults_end_right_and_memory_stays_bounded(pool: PgPool) {
    const PER_FAULT: usize = 100;
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.unwrap();
    let url = database_url(&db, "postgres");
    let (base, reset_url) = evil_sink().await;
    let engine = Engine::new(pool.clone(), Uuid::new_v4(), Default::default());
    engine.bootstrap().await.unwrap();
    let faults = ["hang", "silent", "reset", "flaky", "busy", "gone", "huge"];
    for f in faults {
        let target = if f == "reset" { reset_url.clone() } else { format!("{base}/{f}") };
        // A short timeout where timing out is the fault under test; elsewhere a long
        // one, so that a busy machine cannot turn a slow answer into a timeout.
        let timeout_ms = if matches!(f, "hang" | "silent") { 500 } else { 10_000 };
        let input = serde_json::from_value(
            json!({"name": f, "type": f, "url": target, "retries": 2, "timeoutMs": timeout_ms}),
        )
        .unwrap();
        engine.create_trigger("default", input).await.unwrap();
        queue_many(&engine, f, 0, PER_FAULT).await;
    }

    let data = std::env::temp_dir().join(format!("herald-faults-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&data).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // Each fault's own outcome is under test, not the circuit breaker, which would
    // otherwise hold back the deliveries to the receivers that always fail.
    let mut herald =
        spawn_with(&url, &data, port, &[("HERALD_RETRY_BASE_MS", "100"), ("HERALD_CIRCUIT_MIN_ATTEMPTS", "0")]);
    let stop = tokio_util::sync::CancellationToken::new();
    let peak_rss = watch_rss(herald.id(), stop.clone());
    wait_for(Duration::from_secs(300), || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM event_logs WHERE status IN ('scheduled', 'pending', 'processing')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (open == 0).then_some(())
    })
    .await;
    stop.cancel();
    let peak_kb = peak_rss.await.unwrap();
    herald.kill().unwrap();
    herald.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);

    // Per event log: its status, attempts, and the status codes and errors of its
    // invocation logs in order.
    type Row = (String, String, i32, Vec<Option<i32>>, Vec<Option<String>>, Vec<Option<i32>>, Vec<f64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT l.trigger_name, l.status, l.attempts,
                array_agg(i.status_code ORDER BY i.attempt), array_agg(i.error ORDER BY i.attempt),
                array_agg(length(i.response_body) ORDER BY i.attempt),
                array_agg(extract(epoch FROM i.started_at)::float8 ORDER BY i.attempt)
         FROM event_logs l JOIN invocation_logs i ON i.event_log_id = l.id
         GROUP BY l.id, l.trigger_name, l.status, l.attempts",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut per_fault: HashMap<String, usize> = HashMap::new();
    for (fault, status, attempts, codes, errors, body_len, started) in rows {
        *per_fault.entry(fault.clone()).or_default() += 1;
        let ctx = format!("{fault}: {status} after {attempts} attempts, codes {codes:?}, errors {errors:?}");
        assert_eq!(codes.len(), attempts as usize, "one invocation log per attempt; {ctx}");
        match fault.as_str() {
            "hang" | "silent" => {
                assert_eq!((status.as_str(), attempts), ("failed", 3), "{ctx}");
                assert!(codes.iter().all(Option::is_none), "{ctx}");
                assert!(errors.iter().all(|e| e.as_deref() == Some("timed out after 500 ms")), "{ctx}");
            }
            "reset" => {
                assert_eq!((status.as_str(), attempts), ("failed", 3), "{ctx}");
                assert!(codes.iter().all(Option::is_none), "{ctx}");
                assert!(errors.iter().all(|e| e.as_deref().is_some_and(|e| !e.is_empty())), "{ctx}");
            }
            "flaky" => assert_eq!((status.as_str(), codes), ("processed", vec![Some(500), Some(200)]), "{ctx}"),
            "busy" => {
                assert_eq!((status.as_str(), codes), ("processed", vec![Some(429), Some(200)]), "{ctx}");
                assert!(started[1] - started[0] >= 0.95, "Retry-After: 1 was honoured; {ctx}");
            }
            "gone" => assert_eq!((status.as_str(), codes), ("failed", vec![Some(410)]), "{ctx}"),
            "huge" => {
                assert_eq!((status.as_str(), codes), ("processed", vec![Some(200)]), "{ctx}");
                assert_eq!(body_len, vec![Some(64 * 1024)], "only 64 KiB of the 100 MiB body is kept; {ctx}");
            }
            other => panic!("unexpected trigger {other}"),
        }
    }
    for f in faults {
        assert_eq!(per_fault.get(f), Some(&PER_FAULT), "every {f} event log has invocation logs");
    }
    eprintln!("webhook faults: {} event logs settled as expected; Herald's peak RSS {} MB", 7 * PER_FAULT, peak_kb / 1024);
    assert!(peak_kb > 0, "RSS was sampled");
    assert!(peak_kb < 200 * 1024, "Herald's memory stays under 200 MB under webhook faults: {peak_kb} kB");
}

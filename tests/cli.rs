//! The command line, run as a real process against a real database.
#![cfg(feature = "ssr")]

use std::process::Command;

use herald::engine::projects::Role;
use herald::engine::Engine;
use sqlx::PgPool;
use uuid::Uuid;

async fn herald(pool: &PgPool, args: &[&str]) -> (bool, String, String) {
    herald_with(pool, args, &[], "").await
}

async fn herald_with(pool: &PgPool, args: &[&str], env: &[(&str, &str)], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(pool).await.unwrap();
    let socket = std::env::var("HERALD_TEST_PG_DIR").expect("run under scripts/with-postgres.sh");
    let url = format!("postgres:///{db}?host={socket}&user=postgres");
    let data = std::env::temp_dir().join(format!("herald-cli-{}", Uuid::new_v4()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("HERALD_DATA_DIR", &data)
        .env("RUST_LOG", "warn")
        .env_remove("HERALD_ADMIN_PASSWORD")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&data);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn api_keys_from_the_command_line(pool: PgPool) {
    let engine = Engine::new(pool.clone(), Uuid::new_v4(), Default::default());
    engine.create_project("default").await.unwrap();

    let (ok, out, err) = herald(&pool, &["api-key", "create", "--project", "default", "--role", "queue", "--name", "ci"]).await;
    assert!(ok, "{err}");
    // The key is alone on the last line, for scripts.
    let key = out.lines().last().unwrap().to_string();
    assert!(key.starts_with("hrld_") && !key.contains(' '), "{out}");
    assert_eq!(engine.authenticate("default", Some(&key)).await.unwrap(), Role::Queue);

    let (ok, out, _) = herald(&pool, &["api-key", "list", "--project", "default"]).await;
    assert!(ok);
    assert!(out.contains(&key[..12]) && out.contains("queue") && out.contains("ci"), "{out}");
    assert!(!out.contains(&key), "the key itself is never listed");
    let id = engine.list_api_keys("default").await.unwrap()[0].id.to_string();

    let (ok, _, err) = herald(&pool, &["api-key", "revoke", "--project", "default", "--id", &id]).await;
    assert!(ok, "{err}");
    assert!(engine.authenticate("default", Some(&key)).await.is_err());
    let (ok, _, err) = herald(&pool, &["api-key", "revoke", "--project", "default", "--id", &id]).await;
    assert!(!ok && err.contains("no live API key"), "{err}");

    let (ok, _, err) = herald(&pool, &["api-key", "create", "--project", "missing"]).await;
    assert!(!ok && err.contains("unknown project 'missing'"), "{err}");
    let (ok, out, _) = herald(&pool, &["migrate"]).await;
    assert!(ok && out.contains("migrations applied"));
}

#[test]
fn bad_settings_stop_start_up_naming_the_setting() {
    let run = |env: (&str, &str)| {
        let out = Command::new(env!("CARGO_BIN_EXE_herald")).env(env.0, env.1).arg("migrate").output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(("HERALD_ADDR", "nowhere")).contains("HERALD_ADDR"));
    assert!(run(("HERALD_CONCURRENCY", "0")).contains("HERALD_CONCURRENCY"));
    assert!(run(("DATABASE_URL", "mysql://x")).contains("DATABASE_URL"));
    assert!(run(("HERALD_BLOCK_PRIVATE_NETWORKS", "maybe")).contains("HERALD_BLOCK_PRIVATE_NETWORKS"));
    assert!(run(("HERALD_ALLOWED_NETWORKS", "10.0.0.0/33")).contains("HERALD_ALLOWED_NETWORKS"));
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn admin_passwords(pool: PgPool) {
    let engine = Engine::new(pool.clone(), Uuid::new_v4(), Default::default());
    // First start: a generated password, shown once; a second start changes nothing.
    let generated = engine.bootstrap_admin("admin", None).await.unwrap().expect("a generated password");
    assert!(engine.check_admin_password("admin", &generated).await.unwrap());
    assert_eq!(engine.bootstrap_admin("admin", Some("ignored-now")).await.unwrap(), None);

    let (ok, out, err) = herald_with(&pool, &["admin", "set-password"], &[], "a much better secret\n").await;
    assert!(ok, "{err}");
    assert!(out.contains("password of 'admin' set"));
    assert!(engine.check_admin_password("admin", "a much better secret").await.unwrap());
    assert!(!engine.check_admin_password("admin", &generated).await.unwrap());

    let env = [("HERALD_ADMIN_PASSWORD", "from the environment"), ("HERALD_ADMIN_USER", "ops")];
    let (ok, _, err) = herald_with(&pool, &["admin", "set-password"], &env, "").await;
    assert!(ok, "{err}");
    assert!(engine.check_admin_password("ops", "from the environment").await.unwrap());
    assert!(!engine.check_admin_password("nobody", "from the environment").await.unwrap());

    let (ok, _, err) = herald_with(&pool, &["admin", "set-password"], &[], "short\n").await;
    assert!(!ok && err.contains("at least 8"), "{err}");
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM admins WHERE username = 'admin'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));
}

/// Nodes started together on an empty database (a deployment's replicas all
/// start at once) make one admin API key and one Mission Control account
/// between them, and none of them fails.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn nodes_starting_together_make_one_key_and_one_account(pool: PgPool) {
    for round in 0..6 {
        sqlx::query("TRUNCATE admins, api_keys CASCADE").execute(&pool).await.unwrap();
        let starts = (0..3).map(|_| {
            let engine = Engine::new(pool.clone(), Uuid::new_v4(), Default::default());
            async move { engine.first_start("admin", None).await.map(|made| (made.api_key, made.admin_password)) }
        });
        let results = futures_util::future::join_all(starts).await;
        let started: Vec<_> = results.into_iter().map(|r| r.expect("every node starts")).collect();
        let keys = started.iter().filter(|(k, _)| k.is_some()).count();
        let passwords = started.iter().filter(|(_, p)| p.is_some()).count();
        assert_eq!((keys, passwords), (1, 1), "round {round}: one key and one password shown, by whichever node made them");
        let rows: (i64, i64) = sqlx::query_as("SELECT (SELECT count(*) FROM api_keys), (SELECT count(*) FROM admins)")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, (1, 1), "round {round}");
    }
}

/// The bench on DATABASE_URL runs again on a database Herald has used before,
/// whose first start is long past (its node prints no first key then), and
/// leaves no live key of its own behind.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn the_bench_runs_again_on_a_database_herald_has_used(pool: PgPool) {
    let args = ["bench", "--scenarios", "throughput", "--events", "300", "--clients", "4"];
    for run in 1..=2 {
        let (ok, stdout, stderr) = herald(&pool, &args).await;
        assert!(ok, "run {run} failed:\n{stderr}\n{stdout}");
        let single = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["scenario"] == "throughput-single")
            .unwrap_or_else(|| panic!("run {run}: no throughput line in {stdout}"));
        assert_eq!((single["events"].as_u64(), single["lost"].as_u64()), (Some(300), Some(0)), "run {run}: {single}");
    }
    // Each run revoked the key it made when it ended.
    let keys: (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE revoked_at IS NULL), count(*) FILTER (WHERE revoked_at IS NOT NULL)
         FROM api_keys WHERE name = 'herald bench'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(keys, (0, 2), "(live, revoked) keys of the bench");
}

/// The flow-control scenarios at small sizes: the rate limit holds and per-key
/// order has no violation (the figures at full size are in the README).
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn the_flow_scenarios_report_their_figures(pool: PgPool) {
    let args = [
        "bench", "--scenarios", "rate-limit,ordering", "--rate-limit-events", "150", "--rate-limit", "50",
        "--ordering-events", "300", "--ordering-keys", "10",
    ];
    let (ok, stdout, stderr) = herald(&pool, &args).await;
    assert!(ok, "the bench failed:\n{stderr}\n{stdout}");
    let lines: Vec<serde_json::Value> =
        stdout.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let rate = lines.iter().find(|l| l["scenario"] == "rate-limit").expect("a rate-limit line");
    assert_eq!(rate["delivered"], 150, "{rate}");
    assert!(rate["busiest_1s_window"].as_u64().unwrap() <= 55, "{rate}");
    assert!(rate["achieved_per_s"].as_f64().unwrap() <= 52.0, "{rate}");
    let ordering = lines.iter().find(|l| l["scenario"] == "ordering").expect("an ordering line");
    assert_eq!(ordering["delivered"], 300, "{ordering}");
    assert_eq!(ordering["order_violations"], 0, "{ordering}");
    // One event in ten failed its first attempt once, and was sent again.
    let failed = ordering["failed_first_attempts"].as_u64().unwrap();
    assert!((10..=60).contains(&failed), "{ordering}");
    assert_eq!(ordering["requests"].as_u64().unwrap(), 300 + failed, "{ordering}");
}

/// `herald bench` end to end at small sizes: it starts its own Herald (this binary, on
/// the test database) and sink, runs every scenario, and reports each one with the
/// fields the issue asks for; nothing is lost, duplicated or refused.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn the_bench_reports_every_scenario_and_loses_nothing(pool: PgPool) {
    let args = [
        "bench", "--events", "1000", "--clients", "8", "--rates", "200", "--seconds", "2", "--sync-events", "30",
        "--backlog", "1000", "--scenarios", "throughput,latency,sync,backlog,snapshot",
    ];
    let (ok, stdout, stderr) = herald(&pool, &args).await;
    assert!(ok, "the bench failed:\n{stderr}\n{stdout}");
    let lines: Vec<serde_json::Value> =
        stdout.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();

    let env = lines.iter().find(|l| l["scenario"] == "environment").expect("an environment line");
    assert!(env["postgres"].as_str().unwrap().starts_with("PostgreSQL "), "{env}");
    assert_eq!(env["synchronous_commit"], "on", "{env}");
    assert!(env["shared_buffers"].is_string(), "{env}");
    assert!(env.get("fdatasync_ops_per_s").is_some(), "{env}");

    let expected =
        ["throughput-single", "throughput-batch", "latency-200/s", "sync-round-trip", "backlog-drain-1000", "batch-under-snapshot"];
    let scenarios: Vec<&str> =
        lines.iter().filter_map(|l| l["scenario"].as_str()).filter(|s| *s != "environment").collect();
    assert_eq!(scenarios, expected, "{stdout}");
    for l in lines.iter().filter(|l| l["scenario"] != "environment") {
        for field in ["events", "queued_per_s", "delivered_per_s", "p50_ms", "p99_ms", "max_ms", "lost", "duplicates"] {
            assert!(l.get(field).is_some(), "`{field}` missing: {l}");
        }
        assert_eq!((l["lost"].as_u64(), l["duplicates"].as_u64(), l["refused"].as_u64()), (Some(0), Some(0), Some(0)), "{l}");
        assert!(l["delivered_per_s"].as_f64().is_some_and(|r| r > 0.0), "{l}");
        assert!(l["herald_cpu_s"].as_f64().is_some_and(|c| c > 0.0), "{l}");
    }
    for name in ["latency-200/s", "sync-round-trip"] {
        let l = lines.iter().find(|l| l["scenario"] == name).unwrap();
        let (p50, p99, max) = (l["p50_ms"].as_f64().unwrap(), l["p99_ms"].as_f64().unwrap(), l["max_ms"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{l}");
    }
    // The readable table follows the JSON lines.
    assert!(stdout.contains("delivered/s") && stdout.contains("backlog-drain-1000"), "{stdout}");
}

/// Issue 14, item 7: a deployment script runs `migrate`, then makes a key, before
/// the server has ever started.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn migrate_then_api_key_create_works_before_the_first_start(pool: PgPool) {
    let (ok, out, err) = herald(&pool, &["migrate"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("migrations applied"), "{out}");
    let (ok, out, err) = herald(&pool, &["api-key", "create", "--project", "default", "--role", "admin"]).await;
    assert!(ok, "migrate then api-key create: {err}");
    let key = out.lines().last().unwrap().to_string();
    let engine = Engine::new(pool.clone(), Uuid::new_v4(), Default::default());
    assert_eq!(engine.authenticate("default", Some(&key)).await.unwrap(), Role::Admin);
    // The first start then makes no second key: the project already has one.
    assert_eq!(engine.bootstrap().await.unwrap(), None);
}

/// Sends a keep-alive `GET /healthz` on `conn` and waits up to `wait` for the
/// status line; None if no answer came in time.
async fn healthz(conn: &mut tokio::net::TcpStream, wait: std::time::Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n").await.ok()?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(wait, conn.read(&mut buf)).await.ok()?.ok()?;
    String::from_utf8_lossy(&buf[..n]).lines().next().map(str::to_string)
}

/// Herald as a process on a free loopback port against the test's database, with
/// `env` on top; killed when dropped. Returns the child, its address and its data folder.
async fn serve_herald(pool: &PgPool, env: &[(&str, &str)]) -> (tokio::process::Child, String, std::path::PathBuf) {
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(pool).await.unwrap();
    let socket = std::env::var("HERALD_TEST_PG_DIR").expect("run under scripts/with-postgres.sh");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let data = std::env::temp_dir().join(format!("herald-cli-{}", Uuid::new_v4()));
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .env("DATABASE_URL", format!("postgres:///{db}?host={socket}&user=postgres"))
        .env("HERALD_DATA_DIR", &data)
        .env("HERALD_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, format!("127.0.0.1:{port}"), data)
}

/// The first connection to `addr` that answers a `GET /healthz`, once Herald is up.
async fn first_answered(child: &mut tokio::process::Child, addr: &str) -> tokio::net::TcpStream {
    loop {
        if let Ok(mut c) = tokio::net::TcpStream::connect(addr).await {
            if healthz(&mut c, std::time::Duration::from_secs(5)).await.is_some() {
                return c;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "Herald exited");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn connections_past_the_limit_get_503_until_one_closes(pool: PgPool) {
    use std::time::Duration;
    let (mut child, addr, data) = serve_herald(&pool, &[("HERALD_MAX_CONNECTIONS", "2")]).await;
    let connect = || tokio::net::TcpStream::connect(addr.clone());
    let mut first = first_answered(&mut child, &addr).await;
    let mut second = connect().await.unwrap();
    assert_eq!(healthz(&mut second, Duration::from_secs(5)).await.as_deref(), Some("HTTP/1.1 200 OK"));
    assert_eq!(healthz(&mut first, Duration::from_secs(5)).await.as_deref(), Some("HTTP/1.1 200 OK"), "kept alive");
    // A third connection is answered 503 at once while two are open.
    let mut third = connect().await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(healthz(&mut third, Duration::from_secs(5)).await.as_deref(), Some("HTTP/1.1 503 Service Unavailable"));
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once, took {:?}", started.elapsed());
    drop(first);
    // Once one closes, a new connection is served.
    let mut fourth = loop {
        let mut c = connect().await.unwrap();
        match healthz(&mut c, Duration::from_secs(5)).await.as_deref() {
            Some("HTTP/1.1 200 OK") => break c,
            other => {
                assert!(started.elapsed() < Duration::from_secs(10), "never served again: {other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(healthz(&mut second, Duration::from_secs(5)).await.as_deref(), Some("HTTP/1.1 200 OK"));
    assert_eq!(healthz(&mut fourth, Duration::from_secs(5)).await.as_deref(), Some("HTTP/1.1 200 OK"));
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&data);
}

/// Bytes read until the server closes `conn`, or None if it is still open after `wait`.
async fn read_until_closed(conn: &mut tokio::net::TcpStream, wait: std::time::Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(wait, async {
        let mut buf = [0u8; 1024];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(got)
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn idle_and_slow_header_connections_are_closed_and_free_their_place(pool: PgPool) {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    let (mut child, addr, data) =
        serve_herald(&pool, &[("HERALD_MAX_CONNECTIONS", "2"), ("HERALD_IDLE_TIMEOUT_MS", "1000")]).await;
    let connect = || tokio::net::TcpStream::connect(addr.clone());
    // A keep-alive connection that goes idle after one request...
    let mut idle = first_answered(&mut child, &addr).await;
    // ...and one that sends half a request head and then nothing (slowloris).
    let mut slow = connect().await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: her").await.unwrap();
    let opened = Instant::now();
    assert_eq!(
        healthz(&mut connect().await.unwrap(), Duration::from_secs(5)).await.as_deref(),
        Some("HTTP/1.1 503 Service Unavailable"),
        "both places are taken"
    );
    // Herald closes both once they have waited the idle timeout, and not before.
    assert!(read_until_closed(&mut idle, Duration::from_secs(10)).await.is_some(), "the idle connection was never closed");
    let slow_got = read_until_closed(&mut slow, Duration::from_secs(10)).await.expect("the slow connection was never closed");
    let waited = opened.elapsed();
    assert!(waited >= Duration::from_millis(800), "closed after {waited:?}, before the timeout");
    assert!(!String::from_utf8_lossy(&slow_got).contains("200 OK"), "the half request was served");
    // Their places are free again.
    let mut next = connect().await.unwrap();
    assert_eq!(healthz(&mut next, Duration::from_secs(5)).await.as_deref(), Some("HTTP/1.1 200 OK"));
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&data);
}

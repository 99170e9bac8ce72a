//! Issue 14 ("Trust"): each test reproduces a defect found in review, against a
//! real PostgreSQL and a real receiver on loopback, and fails on the code before
//! the fix. SPEC §8 states the rules.
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use common::{wait_for, Herald, Receiver, Reply};
use futures_util::StreamExt;
use herald::model::Status;
use serde_json::json;
use sqlx::PgPool;

/// Item 1: the X-SC-Token a receiver gets with every delivery is signed with the
/// project's JWT secret; it must open no API route, not even queueing.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_receivers_token_opens_no_api_route(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    h.trigger("hook", "ping", &rx.url("/hook"), json!({})).await;
    let (_, reply) = h.queue(json!({"type": "ping"})).await;
    h.settled(reply["eventId"].as_str().unwrap()).await;
    let token = rx.received()[0].header("x-sc-token").to_string();
    assert_eq!(token.matches('.').count(), 2, "a JWT: {token}");

    let routes = [
        ("GET", "/v1/api/default/eventing/triggers"),
        ("GET", "/v1/api/default/eventing/logs"),
        ("POST", "/v1/api/default/eventing/queue"),
        ("DELETE", "/v1/api/default/eventing/triggers/hook"),
        ("GET", "/v1/api/default/files"),
    ];
    for (method, path) in routes {
        let req = h
            .http
            .request(method.parse().unwrap(), format!("{}{path}", h.base))
            .bearer_auth(&token)
            .json(&json!({"type": "ping"}));
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!(status, 401, "{method} {path} answered {status}: {body}");
        assert!(body.contains("X-SC-Token"), "the refusal says why: {body}");
    }
    // The trigger is still there.
    assert_eq!(h.engine.list_triggers("default").await.unwrap().len(), 1);
}

/// Sets a trigger's `enabled` through the API, as an operator would.
async fn set_enabled(h: &Herald, name: &str, enabled: bool) {
    let t = h.engine.get_trigger("default", name).await.unwrap();
    let body = json!({"type": t.event_type, "url": t.url, "retries": t.retries, "timeoutMs": t.timeout_ms,
                      "enabled": enabled});
    let req = h.http.put(format!("{}/v1/api/default/eventing/triggers/{name}", h.base)).json(&body);
    let (status, reply) = h.send(req).await;
    assert_eq!(status, 200, "{reply}");
}

/// Item 3: a disabled trigger is paused: no scheduled delivery, no retry; its
/// logs keep their status and resume when it is enabled again.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_disabled_trigger_delivers_nothing_until_enabled(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    h.trigger("later", "scheduled", &rx.url("/later"), json!({})).await;
    // The first attempt fails and asks for a retry in a second.
    rx.script([Reply::status(503).header("retry-after", "1")]);
    h.trigger("retry", "retried", &rx.url("/retry"), json!({})).await;

    let (_, scheduled) = h.queue(json!({"type": "scheduled", "delay": 1})).await;
    let scheduled = scheduled["eventId"].as_str().unwrap().to_string();
    let (_, retried) = h.queue(json!({"type": "retried"})).await;
    let retried = retried["eventId"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(10), || async { (h.logs(&retried).await[0].attempts == 1).then_some(()) }).await;
    set_enabled(&h, "later", false).await;
    set_enabled(&h, "retry", false).await;

    // Well past the schedule and the retry time: nothing is sent.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(rx.count(), 1, "only the first attempt before the pause: {:?}",
        rx.received().iter().map(|r| r.path.clone()).collect::<Vec<_>>());
    assert_eq!(h.statuses(&scheduled).await, vec![Status::Scheduled], "keeps its status while paused");
    assert_eq!(h.statuses(&retried).await, vec![Status::Pending]);
    // Events queued while it is disabled get no event log for it.
    let (_, reply) = h.queue(json!({"type": "scheduled"})).await;
    assert_eq!(reply["triggers"], 0, "{reply}");

    set_enabled(&h, "later", true).await;
    set_enabled(&h, "retry", true).await;
    assert_eq!(h.settled(&scheduled).await, vec![Status::Processed]);
    assert_eq!(h.settled(&retried).await, vec![Status::Processed]);
    assert_eq!(h.logs(&retried).await[0].attempts, 2);
    let mut paths: Vec<String> = rx.received().into_iter().map(|r| r.path).collect();
    paths.sort();
    assert_eq!(paths, vec!["/later", "/retry", "/retry"]);
}

/// Item 14: event logs belong to a trigger's identity, not its name. A trigger
/// deleted and created again under the same name (another type, another URL)
/// never receives the first one's events through redeliver or replay.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_new_trigger_of_the_same_name_never_gets_the_old_ones_events(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    rx.script([Reply::status(410)]);
    h.trigger("hook", "invoice-paid", &rx.url("/old"), json!({"retries": 0})).await;
    let (_, reply) = h.queue(json!({"type": "invoice-paid", "data": {"secret": "old tenant data"}})).await;
    let event_id = reply["eventId"].as_str().unwrap();
    assert_eq!(h.settled(event_id).await, vec![Status::Failed]);
    let log_id = h.logs(event_id).await[0].id;

    let (status, reply) = h.delete("/v1/api/default/eventing/triggers/hook").await;
    assert_eq!(status, 200, "{reply}");
    h.trigger("hook", "user-created", &rx.url("/new"), json!({})).await;

    let (status, reply) = h.post(&format!("/v1/api/default/eventing/logs/{log_id}/redeliver"), json!({})).await;
    assert_eq!(status, 409, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("deleted"), "{reply}");
    let (status, reply) = h.post("/v1/api/default/eventing/triggers/hook/replay", json!({})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["replayed"], 0, "{reply}");

    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(rx.received().iter().all(|r| r.path == "/old"), "nothing went to the new URL");
    assert_eq!(h.statuses(event_id).await, vec![Status::Failed]);

    // The new trigger's own failed logs still replay.
    rx.script([Reply::status(410)]);
    let (_, reply) = h.queue(json!({"type": "user-created"})).await;
    let new_event = reply["eventId"].as_str().unwrap();
    assert_eq!(h.settled(new_event).await, vec![Status::Failed]);
    let (_, reply) = h.post("/v1/api/default/eventing/triggers/hook/replay", json!({})).await;
    assert_eq!(reply["replayed"], 1, "{reply}");
    assert_eq!(h.settled(new_event).await, vec![Status::Processed]);
}

/// Item 2: a receiver answering 200 with a NUL byte in its body. The attempt is
/// recorded (the NUL shown as U+2400) and the event log ends; the attempts of other
/// event logs recorded in the same batch are not lost or repeated.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_nul_byte_in_a_reply_is_recorded_and_harms_no_other_attempt(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let nul = Receiver::start().await;
    nul.always(Reply { body: "ok\0done".into(), ..Reply::status(200) });
    let plain = Receiver::start().await;
    h.trigger("nul", "t", &nul.url("/nul"), json!({})).await;
    h.trigger("plain", "t", &plain.url("/plain"), json!({})).await;

    let events: Vec<_> = (0..100).map(|i| json!({"type": "t", "data": i})).collect();
    let (status, reply) = h.post("/v1/api/default/eventing/queue/batch", json!({"events": events})).await;
    assert_eq!(status, 200, "{reply}");
    wait_for(Duration::from_secs(30), || async {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM event_logs WHERE status <> 'processed'")
            .fetch_one(&pool)
            .await
            .unwrap();
        (open == 0).then_some(())
    })
    .await;
    let (logs, attempts, invocations): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), sum(attempts), (SELECT count(*) FROM invocation_logs) FROM event_logs",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((logs, attempts, invocations), (200, 200, 200), "one attempt each, each recorded");
    assert_eq!((nul.count(), plain.count()), (100, 100), "nothing delivered twice");
    let body: String = sqlx::query_scalar(
        "SELECT i.response_body FROM invocation_logs i JOIN event_logs l ON l.id = i.event_log_id
         WHERE l.trigger_name = 'nul' LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(body, format!("ok{}done", herald::store::events::NUL_STAND_IN));
}

/// Leases one event log of each given trigger's type to a node that then vanishes.
async fn leased_to_a_dead_node(pool: &PgPool, event_type: &str) -> (uuid::Uuid, Vec<uuid::Uuid>) {
    let mut conn = pool.acquire().await.unwrap();
    let ev = herald::store::events::NewEvent {
        id: uuid::Uuid::now_v7(),
        event_type: event_type.into(),
        data: json!(null),
        deliver_at: chrono::Utc::now(),
        synchronous: false,
        idempotency_key: None,
        ordering_key: None,
    };
    let dead = uuid::Uuid::new_v4();
    let lease = herald::store::events::Lease { node: dead, margin: Duration::from_millis(200) };
    let stored = herald::store::events::enqueue(&mut conn, "default", &[ev], Some(lease)).await.unwrap();
    (dead, stored[0].log_ids.clone())
}

/// Item 2: an expired lease counts as an attempt, so an event log whose every
/// node dies (or cannot record it) runs out of attempts instead of looping.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn an_expired_lease_counts_as_an_attempt(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    h.trigger("none", "no-retries", &rx.url("/none"), json!({"retries": 0, "timeoutMs": 100})).await;
    h.trigger("one", "one-retry", &rx.url("/one"), json!({"retries": 1, "timeoutMs": 100})).await;
    let (_, no_retries) = leased_to_a_dead_node(&pool, "no-retries").await;
    let (_, one_retry) = leased_to_a_dead_node(&pool, "one-retry").await;

    let log = |id: uuid::Uuid| {
        let pool = pool.clone();
        async move { herald::store::history::log(&pool, "default", id).await.unwrap().unwrap().0 }
    };
    let ended = wait_for(Duration::from_secs(20), || async {
        let l = log(no_retries[0]).await;
        l.status.is_final().then_some(l)
    })
    .await;
    assert_eq!((ended.status, ended.attempts), (Status::Failed, 1));
    assert_eq!(ended.last_error.as_deref(), Some(herald::store::events::LEASE_EXPIRED));
    let retried = wait_for(Duration::from_secs(20), || async {
        let l = log(one_retry[0]).await;
        l.status.is_final().then_some(l)
    })
    .await;
    assert_eq!((retried.status, retried.attempts), (Status::Processed, 2));
    let paths: Vec<String> = rx.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/one"], "the log out of attempts is not delivered");
}

/// Item 2: a batch of attempts in which one cannot be stored (here a start time
/// PostgreSQL refuses) records every other attempt, and that one without the
/// receiver's answer.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_batch_with_an_unstorable_attempt_records_the_others(pool: PgPool) {
    use herald::store::events::{complete_batch, Completion, NewInvocation, Next};
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    h.trigger("a", "batch", &rx.url("/a"), json!({})).await;
    h.trigger("b", "batch", &rx.url("/b"), json!({})).await;
    h.trigger("c", "batch", &rx.url("/c"), json!({})).await;
    let (node, logs) = leased_to_a_dead_node(&pool, "batch").await;
    assert_eq!(logs.len(), 3);
    let attempt = |log_id, started_at| Completion {
        log_id,
        attempt: 1,
        next: Next::Processed,
        invocation: NewInvocation {
            started_at,
            duration_ms: 3,
            status_code: Some(200),
            request_headers: json!({}),
            request_body: "{}".into(),
            response_headers: None,
            response_body: Some("fine".into()),
            error: None,
        },
    };
    let now = chrono::Utc::now();
    let items = [attempt(logs[0], now), attempt(logs[1], chrono::DateTime::<chrono::Utc>::MIN_UTC), attempt(logs[2], now)];
    let held = complete_batch(&pool, node, &items).await.unwrap();
    assert_eq!(held, vec![true, true, true]);
    for id in &logs {
        let (log, _) = herald::store::history::log(&pool, "default", *id).await.unwrap().unwrap();
        assert_eq!((log.status, log.attempts), (Status::Processed, 1), "{id}");
        assert_eq!(herald::store::history::invocations(&pool, *id).await.unwrap().len(), 1);
    }
    let bad = herald::store::history::invocations(&pool, logs[1]).await.unwrap();
    assert!(bad[0].error.as_deref().unwrap().contains("could not store"), "{:?}", bad[0].error);
}

/// Everything Herald logs in this test binary, from the first call on.
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<&'static std::sync::Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static std::sync::Mutex<Vec<u8>> = Box::leak(Box::new(std::sync::Mutex::new(Vec::new())));
        struct Sink(&'static std::sync::Mutex<Vec<u8>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || Sink(logs))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this binary");
        logs
    })
}

/// Item 13: a webhook URL's path and query are secrets (Slack-style URLs); what
/// Herald logs and records about a failed attempt names the host only.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn failed_attempts_never_log_the_urls_secret_path(pool: PgPool) {
    let logs = captured_logs();
    let h = Herald::start(pool.clone()).await;
    // Nothing listens on a port we bound and released: a connection error.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let secret = "T0001/B0002/XoXoSeCrEtToKeN";
    let url = format!("http://127.0.0.1:{port}/services/{secret}?token=AnotherSecret");
    h.trigger("slack", "t", &url, json!({"retries": 0})).await;
    let (_, reply) = h.queue(json!({"type": "t"})).await;
    let event_id = reply["eventId"].as_str().unwrap();
    assert_eq!(h.settled(event_id).await, vec![Status::Failed]);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("delivery attempt failed"), "the failure is logged: {text}");
    assert!(!text.contains("XoXoSeCrEtToKeN") && !text.contains("AnotherSecret"), "a secret was logged: {text}");
    let log = &h.logs(event_id).await[0];
    let error = log.last_error.as_deref().unwrap();
    assert!(!error.contains("XoXoSeCrEtToKeN") && !error.contains("AnotherSecret"), "{error}");
    let inv = herald::store::history::invocations(&pool, log.id).await.unwrap();
    assert!(!inv[0].error.as_deref().unwrap().contains("XoXoSeCrEtToKeN"), "{:?}", inv[0].error);
}

/// Item 15: `/metrics` names every project and trigger; with HERALD_METRICS_TOKEN
/// set it answers only a scrape that presents the token.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn metrics_can_require_a_bearer_token(pool: PgPool) {
    let token = "a-scrape-token-of-some-length";
    let serving = common::Serving { metrics_token: Some(token.into()), ..Default::default() };
    let h = Herald::start_custom(pool, common::test_config(), serving).await;
    let scrape = |auth: Option<&str>| {
        let mut req = h.http.get(format!("{}/metrics", h.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let (status, body) = scrape(None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("HERALD_METRICS_TOKEN"), "{body}");
    assert_eq!(scrape(Some("Bearer wrong-token-of-some-length")).await.0, 401);
    // An API key of a project is not the metrics token.
    assert_eq!(scrape(Some(&format!("Bearer {}", h.key))).await.0, 401);
    let (status, body) = scrape(Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 200);
    assert!(body.contains("herald_due_unclaimed"), "{body}");
}

/// Item 9: password hashing runs off the async threads. On this test's one-thread
/// runtime a ticker task keeps ticking while sign-ins are checked; with argon2 on
/// the runtime's thread it stood still for the length of every check.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn password_checks_leave_the_runtime_free(pool: PgPool) {
    assert_eq!(
        tokio::runtime::Handle::current().runtime_flavor(),
        tokio::runtime::RuntimeFlavor::CurrentThread,
        "the measure needs a one-thread runtime"
    );
    let engine = herald::engine::Engine::new(pool, uuid::Uuid::new_v4(), common::test_config());
    engine.set_admin_password("admin", "the right password").await.unwrap();
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let started = std::time::Instant::now();
    for i in 0..6 {
        let guess = format!("wrong guess {i}");
        assert!(!engine.check_admin_password("admin", &guess).await.unwrap());
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let ticked = ticks.load(std::sync::atomic::Ordering::Relaxed);
    ticker.abort();
    // A free runtime ticks about once per millisecond; a blocked one only while
    // the checks wait for the database.
    assert!(ticked * 4 >= elapsed_ms, "{ticked} ticks in {elapsed_ms} ms: the checks held the runtime's thread");
}

/// Item 6: the embedded cluster starts in a data folder inside a folder only
/// root may enter (root's home, a `mktemp -d` folder), as `make run` from a
/// clone in /root needs. PostgreSQL runs as `postgres` when Herald runs as root.
#[tokio::test]
async fn the_embedded_cluster_starts_inside_a_root_only_folder() {
    use std::os::unix::fs::PermissionsExt;
    let private = std::env::temp_dir().join(format!("herald-private-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = private.join("clone").join("data");
    let started = herald::embedded_pg::EmbeddedPostgres::start(&data).await;
    let pg = match started {
        Ok(pg) => pg,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&private);
            panic!("{e:#}");
        }
    };
    let pool = sqlx::PgPool::connect_with(pg.connect_options()).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await.unwrap();
    assert_eq!(one, 1);
    pool.close().await;
    pg.stop().await.unwrap();
    // Nobody but root (and the postgres user, passing through) may enter it still.
    let mode = std::fs::metadata(&private).unwrap().permissions().mode();
    assert_eq!(mode & 0o007, 0, "others gained access: {mode:o}");
    std::fs::remove_dir_all(&private).unwrap();
}

/// The files in the file store's temporary folder.
fn tmp_files(config: &herald::engine::EngineConfig) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(config.files_dir.join(".tmp")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// A body that sends `chunks` chunks of `size` bytes, `gap` apart.
fn trickle(chunks: usize, size: usize, gap: Duration) -> reqwest::Body {
    let stream = futures_util::stream::unfold(0usize, move |i| async move {
        if i == chunks {
            return None;
        }
        tokio::time::sleep(gap).await;
        Some((Ok::<_, std::io::Error>(vec![b'x'; size]), i + 1))
    });
    reqwest::Body::wrap_stream(stream)
}

/// Item 5: a large upload over a slow link outlasts the request time limit and
/// succeeds; only an idle upload is cut off, and it leaves no temporary file.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_slow_upload_succeeds_and_an_idle_one_leaves_nothing(pool: PgPool) {
    let mut config = common::test_config();
    config.upload_idle_timeout = Duration::from_millis(700);
    let serving = common::Serving { request_timeout: Duration::from_millis(800), ..Default::default() };
    let h = Herald::start_custom(pool, config.clone(), serving).await;
    let url = format!("{}/v1/api/default/files/big.bin", h.base);

    // 2.5 s in all, well over the 0.8 s request limit, never idle for long.
    let resp = h.http.post(&url).bearer_auth(&h.key).body(trickle(25, 32 * 1024, Duration::from_millis(100)))
        .send().await.unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 201, "{}", resp.text().await.unwrap());
    assert_eq!(std::fs::metadata(config.files_dir.join("default/big.bin")).unwrap().len(), 25 * 32 * 1024);

    // One chunk, then silence past the idle limit.
    let stalled = futures_util::stream::iter([Ok::<_, std::io::Error>(vec![b'y'; 1024])])
        .chain(futures_util::stream::pending());
    let sent = h.http.post(format!("{}/v1/api/default/files/stalled.bin", h.base)).bearer_auth(&h.key)
        .body(reqwest::Body::wrap_stream(stalled)).send();
    match tokio::time::timeout(Duration::from_secs(5), sent).await.expect("the server cuts an idle upload off") {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            assert_eq!(status, 400, "{body}");
            assert!(body.contains("stalled"), "{body}");
        }
        // The server may close the connection while the client still sends.
        Err(e) => assert!(!e.is_timeout(), "{e}"),
    }
    wait_for(Duration::from_secs(5), || async { tmp_files(&config).is_empty().then_some(()) }).await;
    assert!(!config.files_dir.join("default/stalled.bin").exists());
}

/// Item 5: an upload abandoned half-way (its request dropped, as a timeout or a
/// client abort does) leaves no temporary file; one left by a crash is swept at
/// start-up.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn interrupted_uploads_leave_no_temporary_file(pool: PgPool) {
    use std::io::Write;
    let config = common::test_config();
    // A crash's leftover, old, and a younger file another node may be writing.
    std::fs::create_dir_all(config.files_dir.join(".tmp")).unwrap();
    let stale = config.files_dir.join(".tmp/left-by-a-crash");
    let mut f = std::fs::File::create(&stale).unwrap();
    f.write_all(b"partial").unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600)).unwrap();
    drop(f);
    let young = config.files_dir.join(".tmp/being-written");
    std::fs::write(&young, b"partial").unwrap();

    let h = Herald::start_with(pool, config.clone()).await;
    wait_for(Duration::from_secs(5), || async { (!stale.exists()).then_some(()) }).await;
    assert!(young.exists(), "a young temporary file is left to its writer");
    std::fs::remove_file(&young).unwrap();

    let stalled = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'z'; 4096]))])
        .chain(futures_util::stream::pending());
    let upload = h.engine.upload_file("default", "abandoned.bin", None, Box::pin(stalled));
    if let Ok(done) = tokio::time::timeout(Duration::from_millis(300), upload).await {
        panic!("the upload should still wait for bytes: {:?}", done.map(|o| o.path));
    }
    assert_eq!(tmp_files(&config), Vec::<std::path::PathBuf>::new(), "the dropped upload cleaned up after itself");
}

/// Item 11: a file intent is judged only against the disk of the node that
/// started it. Another node's slow delete (its file still there on that node,
/// absent from this node's disk) must not fire a FILE_DELETE that never happened.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_node_settles_only_its_own_file_intents(pool: PgPool) {
    let a = herald::engine::Engine::new(pool.clone(), uuid::Uuid::new_v4(), common::test_config());
    a.bootstrap().await.unwrap();
    let b = herald::engine::Engine::new(pool.clone(), uuid::Uuid::new_v4(), common::test_config());
    // Node A is deleting /big (a large folder, slowly); the intent is past the grace period.
    std::fs::create_dir_all(a.config().files_dir.join("default/big")).unwrap();
    sqlx::query(
        "INSERT INTO file_intents (id, project, op, kind, path, meta, created_at, node)
         VALUES (gen_random_uuid(), 'default', 'delete', 'folder', '/big', '{}', now() - interval '5 seconds', $1)",
    )
    .bind(a.node_id())
    .execute(&pool)
    .await
    .unwrap();
    // Node B's disk has no /big: before, it took the delete for done.
    assert_eq!(b.reconcile_intents().await.unwrap(), 0, "node B fired another node's delete");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&pool).await.unwrap();
    assert_eq!(events, 0);
    // Node A's own disk still holds it: still in progress, nothing fired.
    assert_eq!(a.reconcile_intents().await.unwrap(), 0);
    // Once A's delete finishes, A settles it.
    std::fs::remove_dir_all(a.config().files_dir.join("default/big")).unwrap();
    assert_eq!(a.reconcile_intents().await.unwrap(), 1);
}

/// Item 4: a project may watch tables only in the database aliases granted to it.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn database_triggers_need_a_grant(pool: PgPool) {
    sqlx::query("CREATE TABLE orders (id int PRIMARY KEY, item text)").execute(&pool).await.unwrap();
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    h.engine.create_project("tenant-b").await.unwrap();
    let key_b = h.engine.create_api_key("tenant-b", herald::engine::projects::Role::Admin, "b").await.unwrap();
    let create_b = |name: &str, options: serde_json::Value| {
        let body = json!({"name": name, "source": "database", "type": "DB_INSERT", "url": rx.url("/b"), "options": options});
        let req = h.http.post(format!("{}/v1/api/tenant-b/eventing/triggers", h.base)).bearer_auth(&key_b).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<serde_json::Value>().await.unwrap())
        }
    };

    // Project B's own admin key cannot capture the default database's rows...
    let (status, reply) = create_b("steal", json!({"db": "default", "table": "orders"})).await;
    assert_eq!(status, 403, "{reply}");
    let msg = reply["error"].as_str().unwrap();
    assert!(msg.contains("herald database grant --project tenant-b --db default"), "{msg}");
    // ...until an operator grants it.
    assert!(h.engine.grant_database("tenant-b", "default").await.unwrap());
    let (status, reply) = create_b("orders", json!({"db": "default", "table": "orders"})).await;
    assert_eq!(status, 201, "{reply}");
    sqlx::query("INSERT INTO orders VALUES (1, 'lamp')").execute(&pool).await.unwrap();
    wait_for(Duration::from_secs(10), || async { (rx.count() == 1).then_some(()) }).await;
    // A revoked grant stops the capture at once.
    assert!(h.engine.revoke_database("tenant-b", "default").await.unwrap());
    sqlx::query("INSERT INTO orders VALUES (2, 'desk')").execute(&pool).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.count(), 1, "nothing captured after the revoke");
    let grants = h.engine.list_database_grants(None).await.unwrap();
    assert_eq!(grants.iter().map(|g| (g.project.as_str(), g.alias.as_str())).collect::<Vec<_>>(), [("default", "default")]);
}

/// Item 4: Herald's own tables (`projects` holds every project's secrets) can
/// never be watched, even through another alias that reaches Herald's database,
/// and even by a project that holds that alias.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn heralds_own_tables_are_refused_through_every_alias(pool: PgPool) {
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.unwrap();
    sqlx::query("CREATE TABLE orders (id int PRIMARY KEY, item text)").execute(&pool).await.unwrap();
    let mut config = common::test_config();
    config.databases = vec![("mirror".into(), common::database_url(&db, "postgres"))];
    let h = Herald::start_with(pool.clone(), config).await;
    h.engine.grant_database("default", "mirror").await.unwrap();
    for table in ["projects", "public.api_keys", "event_logs", "database_grants"] {
        let (status, reply) = h
            .post("/v1/api/default/eventing/triggers",
                json!({"name": "leak", "source": "database", "type": "DB_INSERT", "url": "http://127.0.0.1:9/leak",
                       "options": {"db": "mirror", "table": table}}))
            .await;
        assert!(status == 400 || status == 422, "{table}: {status} {reply}");
        assert!(reply["error"].as_str().unwrap().contains("belongs to Herald"), "{table}: {reply}");
    }
    let tables = h.engine.list_tables("mirror").await.unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["public.orders"], "only the user's own table");
}

/// Item 8: synchronous events take delivery slots like any other delivery: with
/// two slots, four synchronous events to a slow receiver run two at a time.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn synchronous_events_take_delivery_slots(pool: PgPool) {
    let mut config = common::test_config();
    config.concurrency = 2;
    let h = Herald::start_with(pool, config).await;
    let rx = Receiver::start().await;
    rx.always(Reply::json(200, json!({"response": "ok"})).delayed(Duration::from_millis(1000)));
    h.trigger("slow", "slow", &rx.url("/slow"), json!({})).await;
    let calls = (0..4).map(|_| h.queue(json!({"type": "slow", "isSynchronous": true})));
    for (status, reply) in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200, "{reply}");
    }
    let mut arrivals: Vec<std::time::Instant> = rx.received().iter().map(|r| r.at).collect();
    arrivals.sort();
    assert_eq!(arrivals.len(), 4);
    for (i, a) in arrivals.iter().enumerate() {
        let overlapping = arrivals[i..].iter().filter(|b| b.duration_since(*a) < Duration::from_millis(900)).count();
        assert!(overlapping <= 2, "{overlapping} requests at once with 2 delivery slots");
    }
}

/// Item 8: a synchronous event's retry due after its deadline is made by the
/// dispatchers, not held in the memory of the node that answered 504.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_synchronous_retry_after_the_deadline_goes_to_the_dispatchers(pool: PgPool) {
    let mut config = common::test_config();
    config.sync_timeout = Duration::from_millis(1000);
    let h = Herald::start_with(pool.clone(), config).await;
    let rx = Receiver::start().await;
    rx.script([Reply::status(503).header("retry-after", "2")]);
    h.trigger("later", "later", &rx.url("/later"), json!({})).await;
    let (status, reply) = h.queue(json!({"type": "later", "isSynchronous": true})).await;
    assert_eq!(status, 504, "the delivery goes on in the background: {reply}");
    let event_id = reply["eventId"].as_str().unwrap();
    let log = &h.logs(event_id).await[0];
    assert_eq!((log.status, log.attempts), (Status::Pending, 1));
    let holder: Option<uuid::Uuid> = sqlx::query_scalar("SELECT leased_by FROM event_logs WHERE id = $1")
        .bind(log.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(holder, None, "no node holds it in memory");
    assert_eq!(h.settled(event_id).await, vec![Status::Processed]);
    assert_eq!(rx.count(), 2);
}

/// Item 10: a lease outlives the recording of its attempt. Recording is stalled
/// (the invocation table locked by another session) for longer than the lease:
/// the event log must not be taken over and delivered a second time.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_lease_outlives_a_slow_recording(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    h.trigger("t", "t", &rx.url("/t"), json!({"timeoutMs": 100})).await;
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE invocation_logs IN EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    let (_, reply) = h.queue(json!({"type": "t"})).await;
    let event_id = reply["eventId"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(5), || async { (rx.count() == 1).then_some(()) }).await;
    // The lease is the timeout (0.1 s) plus the margin (1 s); recording waits 3 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    blocker.commit().await.unwrap();
    assert_eq!(h.settled(&event_id).await, vec![Status::Processed]);
    assert_eq!(h.logs(&event_id).await[0].attempts, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 1, "delivered again while its first attempt was being recorded");
}

/// Item 10: shutdown hands back leases only once the attempts still running after
/// the grace period have stopped.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn shutdown_stops_running_attempts_before_handing_their_leases_back(pool: PgPool) {
    let mut config = common::test_config();
    config.shutdown_grace = Duration::from_millis(300);
    let h = Herald::start_with(pool.clone(), config).await;
    let rx = Receiver::start().await;
    rx.always(Reply::status(200).delayed(Duration::from_secs(5)));
    h.trigger("slow", "slow", &rx.url("/slow"), json!({"timeoutMs": 10000})).await;
    let (_, reply) = h.queue(json!({"type": "slow"})).await;
    let event_id = reply["eventId"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(5), || async { (rx.count() == 1).then_some(()) }).await;
    let started = std::time::Instant::now();
    h.engine.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(4), "shutdown waited for the slow attempt: {:?}", started.elapsed());
    assert_eq!(h.engine.in_flight(), 0, "an attempt still runs after its lease was handed back");
    let log = &h.logs(&event_id).await[0];
    assert_eq!((log.status, log.attempts), (Status::Pending, 0), "handed back, for another node");
}

/// Item 3, a race found in review: a claim that read the trigger as disabled sets
/// a log aside while the enable commits. The lease sweep resumes such logs.
#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_log_set_aside_by_a_claim_racing_an_enable_is_resumed(pool: PgPool) {
    let h = Herald::start(pool.clone()).await;
    let rx = Receiver::start().await;
    h.trigger("hook", "t", &rx.url("/hook"), json!({})).await;
    set_enabled(&h, "hook", false).await;
    let (_, reply) = h.queue(json!({"type": "t", "delay": 0.3})).await;
    assert_eq!(reply["triggers"], 0);
    // What the losing side of the race leaves: an enabled trigger, a paused log.
    set_enabled(&h, "hook", true).await;
    let (_, reply) = h.queue(json!({"type": "t", "delay": 60})).await;
    let event_id = reply["eventId"].as_str().unwrap().to_string();
    sqlx::query("UPDATE event_logs SET paused = true, next_attempt_at = now()").execute(&pool).await.unwrap();
    assert_eq!(h.settled(&event_id).await, vec![Status::Processed]);
    assert_eq!(rx.count(), 1);
}

//! The file store (SPEC §5) over real HTTP: uploads, folders, downloads and
//! deletes fire FILE_CREATE and FILE_DELETE; failures fire nothing; paths that
//! could leave the store are refused; crashes are reconciled from intents.
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use common::{test_config, wait_for, Herald, Receiver};
use serde_json::{json, Value};
use sqlx::PgPool;

const FILES: &str = "/v1/api/default/files";

async fn file_trigger(h: &Herald, name: &str, event_type: &str, url: &str, options: Value) {
    let (status, reply) = h
        .post(
            "/v1/api/default/eventing/triggers",
            json!({"name": name, "source": "file", "type": event_type, "url": url, "options": options}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
}

fn events(rx: &Receiver) -> Vec<(String, Value)> {
    rx.received().iter().map(|r| (r.json()["type"].as_str().unwrap().to_string(), r.json()["data"].clone())).collect()
}

async fn wait_count(rx: &Receiver, n: usize) {
    wait_for(Duration::from_secs(10), || async { (rx.count() >= n).then_some(()) }).await;
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn create_read_and_delete_fire_their_events(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    file_trigger(&h, "created", "FILE_CREATE", &rx.url("/created"), json!({})).await;
    file_trigger(&h, "deleted", "FILE_DELETE", &rx.url("/deleted"), json!({})).await;

    // A raw upload into a folder that does not exist yet.
    let (status, reply) = h
        .send(h.http.post(format!("{}{FILES}/docs/readme.txt", h.base)).header("content-type", "text/plain").body("hello"))
        .await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply, json!({"path": "/docs/readme.txt", "type": "file", "meta": {"size": 5, "contentType": "text/plain"}, "created": true}));
    wait_count(&rx, 1).await;
    assert_eq!(
        events(&rx)[0],
        ("FILE_CREATE".into(), json!({"path": "/docs/readme.txt", "type": "file", "meta": {"size": 5, "contentType": "text/plain"}}))
    );

    // Download and list.
    let resp = h.http.get(format!("{}{FILES}/docs/readme.txt", h.base)).bearer_auth(&h.key).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.text().await.unwrap(), "hello");
    let (status, listing) = h.send(h.http.get(format!("{}{FILES}/docs", h.base))).await;
    assert_eq!(status, 200);
    assert_eq!(listing["path"], "/docs");
    assert_eq!(listing["items"][0]["name"], "readme.txt");
    assert_eq!(listing["items"][0]["size"], 5);
    let (_, root) = h.send(h.http.get(format!("{}{FILES}", h.base))).await;
    assert_eq!(root["items"][0], json!({"name": "docs", "type": "folder", "size": null, "modifiedAt": root["items"][0]["modifiedAt"]}));

    // A multipart upload: the file part is stored, its content type kept.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![7u8; 1000]).file_name("pic.png").mime_str("image/png").unwrap(),
    );
    let (status, reply) = h.send(h.http.post(format!("{}{FILES}/docs/pic.png", h.base)).multipart(form)).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["meta"], json!({"size": 1000, "contentType": "image/png"}));

    // mkdir: once fires, twice is a no-op.
    let (status, reply) = h.send(h.http.post(format!("{}{FILES}/archive/2026?op=mkdir", h.base))).await;
    assert_eq!((status, reply["type"].clone()), (201, json!("folder")));
    let (status, reply) = h.send(h.http.post(format!("{}{FILES}/archive/2026?op=mkdir", h.base))).await;
    assert_eq!((status, reply["created"].clone()), (200, json!(false)));
    wait_count(&rx, 3).await;

    // Delete a file, then a folder with what it holds.
    let (status, reply) = h.delete(&format!("{FILES}/docs/readme.txt")).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({"path": "/docs/readme.txt", "type": "file", "meta": {"size": 5, "contentType": "text/plain"}}));
    let (status, _) = h.delete(&format!("{FILES}/docs")).await;
    assert_eq!(status, 200);
    wait_count(&rx, 5).await;

    // Failures fire nothing.
    assert_eq!(h.delete(&format!("{FILES}/docs")).await.0, 404);
    let (status, reply) = h.send(h.http.post(format!("{}{FILES}/archive", h.base)).body("x")).await;
    assert_eq!(status, 409, "a file cannot replace a folder: {reply}");
    let (status, reply) = h.send(h.http.post(format!("{}{FILES}/x?op=rename", h.base))).await;
    assert_eq!(status, 400);
    assert!(reply["error"].as_str().unwrap().contains("`op`"));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let got = events(&rx);
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[2], ("FILE_CREATE".into(), json!({"path": "/archive/2026", "type": "folder", "meta": {}})));
    assert_eq!(
        got[3],
        ("FILE_DELETE".into(), json!({"path": "/docs/readme.txt", "type": "file", "meta": {"size": 5, "contentType": "text/plain"}}))
    );
    assert_eq!(got[4], ("FILE_DELETE".into(), json!({"path": "/docs", "type": "folder", "meta": {}})));
    let intents: i64 = sqlx::query_scalar("SELECT count(*) FROM file_intents").fetch_one(&h.pool).await.unwrap();
    assert_eq!(intents, 0, "every intent was settled");
}

/// One HTTP/1.1 request written by hand, so that the path reaches Herald exactly
/// as given. Returns the status and the body.
async fn raw_request(h: &Herald, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = h.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
        h.key
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    let status = reply.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, reply)
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn paths_that_leave_the_store_are_refused(pool: PgPool) {
    let config = test_config();
    let files_dir = config.files_dir.clone();
    let h = Herald::start_with(pool, config).await;
    let rx = Receiver::start().await;
    file_trigger(&h, "any", "FILE_CREATE", &rx.url("/c"), json!({})).await;

    // Sent raw: an HTTP client library would resolve "../" before sending.
    for path in ["../secret", "a/../../secret", "%2e%2e/secret", "/etc/passwd", "%2Fetc%2Fpasswd", "a%5c..%5cb", "a/./b"] {
        for method in ["POST", "GET", "DELETE"] {
            let (status, body) = raw_request(&h, method, &format!("{FILES}/{path}")).await;
            assert_eq!(status, 400, "{method} {path}: {body}");
            assert!(body.contains("`path`"), "{method} {path}: {body}");
        }
    }
    // A name longer than a file system takes (255 bytes) is bad input, not a
    // storage failure: a 400 naming it, for every operation.
    for name in ["A".repeat(256), "é".repeat(128)] {
        for (method, query) in [("POST", ""), ("POST", "?op=mkdir"), ("GET", ""), ("DELETE", "")] {
            let url = format!("{}{FILES}/docs/{name}{query}", h.base);
            let (status, reply) = h.send(h.http.request(method.parse().unwrap(), url).body("x")).await;
            assert_eq!(status, 400, "{method} {query}: {reply}");
            assert!(reply["error"].as_str().unwrap().contains("255 bytes"), "{reply}");
        }
    }
    // A symbolic link that leads out of the store.
    let outside = std::env::temp_dir().join(format!("herald-outside-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "secret").unwrap();
    std::fs::create_dir_all(files_dir.join("default")).unwrap();
    std::os::unix::fs::symlink(&outside, files_dir.join("default/escape")).unwrap();
    let (status, reply) = h.send(h.http.get(format!("{}{FILES}/escape/secret.txt", h.base))).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("symbolic link"));
    let (status, _) = h.send(h.http.post(format!("{}{FILES}/escape/new.txt", h.base)).body("x")).await;
    assert_eq!(status, 400);
    assert!(!outside.join("new.txt").exists());
    assert_eq!(h.delete(&format!("{FILES}/escape/secret.txt")).await.0, 400);
    assert!(outside.join("secret.txt").exists());

    // No key, no access.
    let resp = h.http.get(format!("{}{FILES}", h.base)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 0, "refused operations fire nothing");
    // A trailing slash names a folder: a file read so is not found, as a file
    // system has it (ENOTDIR), rather than served.
    let (status, _) = h.send(h.http.post(format!("{}{FILES}/docs/plain.txt", h.base)).body("x")).await;
    assert_eq!(status, 201);
    let (status, reply) = h.send(h.http.get(format!("{}{FILES}/docs/plain.txt/", h.base))).await;
    assert_eq!(status, 404, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("not a folder"), "{reply}");
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn a_prefix_limits_a_trigger_to_one_folder_and_size_is_capped(pool: PgPool) {
    let h = Herald::start(pool).await;
    let rx = Receiver::start().await;
    file_trigger(&h, "invoices", "FILE_CREATE", &rx.url("/i"), json!({"prefix": "invoices/"})).await;
    let t = h.engine.get_trigger("default", "invoices").await.unwrap();
    assert_eq!(t.options["prefix"], "/invoices", "the prefix is stored in its normal form");
    for path in ["invoices2/a.pdf", "other/b.pdf", "invoices/c.pdf"] {
        let (status, _) = h.send(h.http.post(format!("{}{FILES}/{path}", h.base)).body("x")).await;
        assert_eq!(status, 201);
    }
    wait_count(&rx, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events(&rx).iter().map(|e| e.1["path"].clone()).collect::<Vec<_>>(), [json!("/invoices/c.pdf")]);

    // Over HERALD_MAX_FILE_BYTES (1 MiB in tests): 413, nothing stored, nothing fired.
    let big = vec![0u8; 1024 * 1024 + 1];
    let (status, reply) = h.send(h.http.post(format!("{}{FILES}/invoices/big.bin", h.base)).body(big)).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(h.send(h.http.get(format!("{}{FILES}/invoices/big.bin", h.base))).await.0, 404);
    let (status, reply) = h
        .post("/v1/api/default/eventing/triggers", json!({"name": "bad", "source": "file", "type": "FILE_CREATE",
            "url": rx.url("/x"), "options": {"prefix": "../etc"}}))
        .await;
    assert_eq!(status, 422);
    assert!(reply["error"].as_str().unwrap().contains("`options.prefix`"));
    assert_eq!(rx.count(), 1);
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn intents_left_by_a_crash_are_reconciled_at_start(pool: PgPool) {
    // What a node that crashed mid-operation leaves behind, built by hand: the
    // disk state and the intent rows, then a fresh start.
    let config = test_config();
    let root = config.files_dir.join("default");
    std::fs::create_dir_all(root.join("reports")).unwrap();
    std::fs::write(root.join("reports/q3.csv"), "a,b\n1,2\n").unwrap();
    herald::engine::Engine::new(pool.clone(), uuid::Uuid::new_v4(), config.clone()).bootstrap().await.unwrap();
    let stale = "now() - interval '2 minutes'";
    for (op, kind, path, status, age) in [
        // Renamed into place, then the crash: before the event was queued.
        ("create", "file", "/reports/q3.csv", "intent", stale),
        // Deleted, and the intent even marked staged.
        ("delete", "file", "/reports/gone.csv", "staged", stale),
        // Never reached the disk, and long abandoned: dropped, nothing fired.
        ("create", "file", "/reports/never.csv", "intent", "now() - interval '2 hours'"),
        // Too young to judge: it may still be running on a live node.
        ("delete", "folder", "/reports", "intent", "now()"),
    ] {
        sqlx::query(&format!(
            "INSERT INTO file_intents (id, project, op, kind, path, meta, status, created_at)
             VALUES (gen_random_uuid(), 'default', $1, $2, $3, '{{\"size\": 1}}', $4, {age})"
        ))
        .bind(op)
        .bind(kind)
        .bind(path)
        .bind(status)
        .execute(&pool)
        .await
        .unwrap();
    }
    let mut config = config;
    config.intent_grace = Duration::from_secs(60);
    let h = Herald::start_with(pool.clone(), config).await;
    let rx = Receiver::start().await;
    // The trigger exists before the start in real life; here the reconciler may
    // run before it is added, so the events are checked in the history instead.
    file_trigger(&h, "all-create", "FILE_CREATE", &rx.url("/c"), json!({})).await;
    let fired: Vec<(String, Value)> = wait_for(Duration::from_secs(10), || async {
        let rows: Vec<(String, sqlx::types::Json<Value>)> =
            sqlx::query_as("SELECT type, data FROM events ORDER BY type").fetch_all(&pool).await.unwrap();
        (rows.len() >= 2).then(|| rows.into_iter().map(|(t, d)| (t, d.0)).collect())
    })
    .await;
    assert_eq!(
        fired,
        [
            ("FILE_CREATE".to_string(), json!({"path": "/reports/q3.csv", "type": "file", "meta": {"size": 8}})),
            ("FILE_DELETE".to_string(), json!({"path": "/reports/gone.csv", "type": "file", "meta": {"size": 1}})),
        ]
    );
    let left: Vec<String> =
        sqlx::query_scalar("SELECT path FROM file_intents ORDER BY path").fetch_all(&pool).await.unwrap();
    assert_eq!(left, ["/reports"], "only the young intent waits");
}

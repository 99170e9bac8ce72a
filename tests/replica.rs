//! Issue 15, item 5: with HERALD_READ_DATABASE_URL the history is read from a
//! streaming replica (a real one: pg_basebackup of the test cluster, started as a
//! hot standby), and delivery never waits for it.
#![cfg(feature = "ssr")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{wait_for, Herald, Receiver, Reply, Serving};
use herald::model::Status;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

/// The replica's port on the test cluster's socket folder.
const PORT: u16 = 5433;

/// The path of a PostgreSQL server program: in the newest installed version's
/// folder (Debian's), else on PATH.
fn program(name: &str) -> String {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).filter(|p| p.join(name).exists()).collect())
        .unwrap_or_default();
    dirs.sort_by_key(|d| d.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0));
    dirs.last().map(|d| d.join(name).to_string_lossy().into_owned()).unwrap_or_else(|| name.to_string())
}

/// Runs a PostgreSQL program as the user `postgres` (PostgreSQL refuses root).
fn as_postgres(name: &str, args: &[&str]) {
    let program = program(name);
    let program = program.as_str();
    let root = nix::unistd::Uid::effective().is_root();
    let mut cmd = if root { Command::new("runuser") } else { Command::new(program) };
    if root {
        cmd.args(["-u", "postgres", "--", program]);
    }
    let out = cmd.args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A hot standby of the test cluster, stopped and removed when dropped.
struct Replica {
    data: PathBuf,
}

impl Replica {
    fn start(socket_dir: &Path) -> Replica {
        let data = socket_dir.join("replica");
        let (sock, data_s) = (socket_dir.to_str().unwrap(), data.to_str().unwrap());
        as_postgres("pg_basebackup", &["-D", data_s, "-R", "-X", "stream", "-c", "fast", "-h", sock, "-U", "postgres"]);
        let port = PORT.to_string();
        let opts = format!("-c listen_addresses='' -k {sock} -c port={port} -c max_connections=400 -c hot_standby=on");
        let log = socket_dir.join("replica.log");
        as_postgres("pg_ctl", &["-D", data_s, "-l", log.to_str().unwrap(), "-w", "-o", &opts, "start"]);
        Replica { data }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let pg_ctl = program("pg_ctl");
        let args = ["-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "stop"];
        let _ = if nix::unistd::Uid::effective().is_root() {
            Command::new("runuser").args(["-u", "postgres", "--", &pg_ctl]).args(args).output()
        } else {
            Command::new(&pg_ctl).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

async fn listed(h: &Herald) -> Vec<String> {
    let (status, page) = h.send(h.http.get(format!("{}/v1/api/default/eventing/logs", h.base))).await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().iter().map(|l| l["eventId"].as_str().unwrap().to_string()).collect()
}

#[sqlx::test(migrator = "herald::store::MIGRATOR")]
async fn the_history_is_read_from_a_streaming_replica(pool: PgPool) {
    let socket_dir = PathBuf::from(std::env::var("HERALD_TEST_PG_DIR").expect("run through scripts/with-postgres.sh"));
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.unwrap();
    let _replica = Replica::start(&socket_dir);
    let on_replica = |database: &str| {
        PgConnectOptions::new().socket(&socket_dir).port(PORT).username("postgres").database(database)
    };

    // A database without Herald's tables is refused with a reason.
    let refused = herald::store::connect_reader(on_replica("postgres"), 2, Duration::from_secs(5)).await.unwrap_err();
    assert!(refused.contains("does not hold Herald's tables"), "{refused}");

    let reader = herald::store::connect_reader(on_replica(&db), 4, Duration::from_secs(30)).await.unwrap();
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&reader).await.unwrap();
    assert!(in_recovery, "the reader is the standby");
    let serving = Serving { reader: Some(reader), ..Default::default() };
    let h = Herald::start_custom(pool.clone(), common::test_config(), serving).await;
    let rx = Receiver::start().await;
    rx.always(Reply::status(200));
    h.trigger("hook", "t", &rx.url("/hook"), json!({})).await;

    let (_, q) = h.queue(json!({"type": "t", "data": 1})).await;
    let first = q["eventId"].as_str().unwrap().to_string();
    assert_eq!(h.settled(&first).await, vec![Status::Processed]);
    wait_for(Duration::from_secs(10), || async { listed(&h).await.contains(&first).then_some(()) }).await;

    // With the replica's replay paused, delivery goes on and the history shows
    // what the replica has: the list comes from it, not from the primary.
    let control = sqlx::PgPool::connect_with(on_replica(&db)).await.unwrap();
    sqlx::query("SELECT pg_wal_replay_pause()").execute(&control).await.unwrap();
    let (_, q) = h.queue(json!({"type": "t", "data": 2})).await;
    let second = q["eventId"].as_str().unwrap().to_string();
    assert_eq!(h.settled(&second).await, vec![Status::Processed], "delivery does not wait for the replica");
    assert_eq!(rx.count(), 2);
    assert_eq!(listed(&h).await, vec![first.clone()], "the replica has not replayed the second event yet");
    // What a caller looks up right after queueing, one log or one event's logs,
    // comes from the primary.
    let log = h.logs(&second).await[0].id;
    let (status, detail) = h.send(h.http.get(format!("{}/v1/api/default/eventing/logs/{log}", h.base))).await;
    assert_eq!((status, detail["status"].as_str()), (200, Some("processed")), "{detail}");
    let (status, page) =
        h.send(h.http.get(format!("{}/v1/api/default/eventing/logs?event={second}", h.base))).await;
    assert_eq!((status, page["items"].as_array().map(Vec::len)), (200, Some(1)), "{page}");

    // A redelivery's answer is read back from the primary, never stale.
    let (status, detail) = h.post(&format!("/v1/api/default/eventing/logs/{log}/redeliver"), json!({})).await;
    assert_eq!((status, detail["id"].as_str()), (200, Some(log.to_string().as_str())), "{detail}");

    sqlx::query("SELECT pg_wal_replay_resume()").execute(&control).await.unwrap();
    wait_for(Duration::from_secs(10), || async { listed(&h).await.contains(&second).then_some(()) }).await;
}

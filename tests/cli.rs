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

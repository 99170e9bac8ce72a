//! The `herald` binary: config -> database -> migrations -> engine -> HTTP.

// Leptos view types are deep; the release build of this crate lays them out too.
#![recursion_limit = "512"]

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use herald::api::AppState;
use herald::config::{AdminCommand, ApiKeyCommand, Cli, Command, Config, DatabaseCommand};
use herald::embedded_pg::EmbeddedPostgres;
use herald::engine::projects::Role;
use axum::serve::ListenerExt;
use herald::engine::Engine;
use herald::{server, store};
use sqlx::postgres::PgConnectOptions;

// glibc's allocator spent a sixth of Herald's CPU under load (profiled with perf);
// mimalloc's per-thread heaps make the many small JSON and HTTP allocations cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(msg) = cli.config.validate() {
        eprintln!("herald: {msg}");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt().with_env_filter(cli.config.log.as_str()).with_target(false).init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Bench(args)) => return herald::bench::run(args).await,
        Some(Command::Site { site }) => {
            let done = herald::assets::prepare(&site)?;
            for (name, bytes, br, gz) in done.files {
                println!("{name:<36} {bytes:>9} bytes  br {br:>8}  gzip {gz:>8}");
            }
            return Ok(());
        }
        _ => {}
    }
    let config = cli.config;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create HERALD_DATA_DIR {}", config.data_dir.display()))?;
    let (options, embedded) = match &config.database_url {
        Some(url) => (url.parse::<PgConnectOptions>().context("DATABASE_URL is not a valid PostgreSQL URL")?, None),
        None => {
            let pg = EmbeddedPostgres::start(&config.data_dir).await?;
            (pg.connect_options(), Some(pg))
        }
    };
    let result = with_database(&config, options, cli.command).await;
    if let Some(pg) = embedded {
        tracing::info!("stopping the embedded PostgreSQL");
        if let Err(e) = pg.stop().await {
            tracing::warn!(error = %e, "the embedded PostgreSQL did not stop cleanly");
        }
    }
    result
}

async fn with_database(config: &Config, options: PgConnectOptions, command: Option<Command>) -> Result<()> {
    let pool = store::connect(options.clone(), config.db_pool_size).await.context("cannot connect to the database")?;
    store::MIGRATOR.run(&pool).await.context("database migration failed")?;
    let writer = store::connect_writer(options, config.db_pool_size).await.context("cannot connect to the database")?;
    let node_id = server::node_id(&config.data_dir)?;
    let mut engine = Engine::new(pool.clone(), node_id, server::engine_config(config)).with_writer(writer);
    if let Some(url) = &config.read_database_url {
        let options = url.parse::<PgConnectOptions>().context("HERALD_READ_DATABASE_URL is not a valid PostgreSQL URL")?;
        let reader = store::connect_reader(options, config.db_pool_size, std::time::Duration::from_secs(120))
            .await
            .map_err(|e| anyhow::anyhow!("HERALD_READ_DATABASE_URL: {e}"))?;
        tracing::info!("the history is read from HERALD_READ_DATABASE_URL");
        engine = engine.with_reader(reader);
    }
    let result = match command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            engine.bootstrap_project().await?;
            println!("migrations applied; the project 'default' exists");
            Ok(())
        }
        Command::ApiKey(ApiKeyCommand::Create { project, role, name }) => {
            let role = Role::parse(&role).context("--role must be admin or queue")?;
            let key = engine.create_api_key(&project, role, &name).await?;
            println!("created a {} key for project '{project}':", role.as_str());
            println!("{key}");
            Ok(())
        }
        Command::ApiKey(ApiKeyCommand::List { project }) => {
            println!("{:<36}  {:<6}  {:<12}  {:<20}  {:<20}  name", "id", "role", "prefix", "created", "last used");
            for k in engine.list_api_keys(&project).await? {
                let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_else(|| "-".into())
                };
                let revoked = if k.revoked_at.is_some() { " (revoked)" } else { "" };
                println!("{:<36}  {:<6}  {:<12}  {:<20}  {:<20}  {}{revoked}", k.id, k.role, k.prefix,
                    when(Some(k.created_at)), when(k.last_used_at), k.name);
            }
            Ok(())
        }
        Command::ApiKey(ApiKeyCommand::Revoke { project, id }) => {
            engine.revoke_api_key(&project, id).await?;
            println!("revoked {id}");
            Ok(())
        }
        Command::Database(DatabaseCommand::Grant { project, db }) => {
            engine.bootstrap_project().await?;
            if engine.grant_database(&project, &db).await? {
                println!("granted: project '{project}' may watch tables in the database '{db}'");
            } else {
                println!("project '{project}' already held the database '{db}'");
            }
            Ok(())
        }
        Command::Database(DatabaseCommand::Revoke { project, db }) => {
            if engine.revoke_database(&project, &db).await? {
                println!("revoked: project '{project}' may no longer watch tables in the database '{db}'");
                Ok(())
            } else {
                Err(anyhow::anyhow!("project '{project}' holds no grant on the database '{db}'"))
            }
        }
        Command::Database(DatabaseCommand::List { project }) => {
            println!("{:<24}  {:<24}  granted", "project", "database");
            for g in engine.list_database_grants(project.as_deref()).await? {
                println!("{:<24}  {:<24}  {}", g.project, g.alias, g.granted_at.format("%Y-%m-%d %H:%M:%S"));
            }
            Ok(())
        }
        Command::Admin(AdminCommand::SetPassword { user }) => {
            let password = match &config.admin_password {
                Some(p) => p.clone(),
                None => {
                    eprintln!("new password for '{user}':");
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line).context("cannot read the password")?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            engine.set_admin_password(&user, &password).await?;
            println!("password of '{user}' set");
            Ok(())
        }
        Command::Serve => serve(config, engine).await,
        // `run` handles it before any database is started.
        Command::Bench(_) | Command::Site { .. } => Ok(()),
    };
    pool.close().await;
    result
}

async fn serve(config: &Config, engine: Engine) -> Result<()> {
    let made = engine.first_start(&config.admin_user, config.admin_password.as_deref()).await?;
    if let Some(key) = made.api_key {
        println!();
        println!("  Herald created the project 'default' and an admin API key for it.");
        println!("  It is shown only this once; keep it somewhere safe:");
        println!();
        println!("      {key}");
        println!();
    }
    if let Some(password) = made.admin_password {
        println!("  Mission Control account '{}' has the password (shown only this once):", config.admin_user);
        println!();
        println!("      {password}");
        println!();
        println!("  Change it with `herald admin set-password`.");
        println!();
    }
    let options = server::leptos_options(config.addr);
    herald::assets::check_site(std::path::Path::new(options.site_root.as_ref()))?;
    let workers = engine.start();
    let state = AppState {
        engine: engine.clone(),
        leptos_options: options,
        max_body_bytes: config.max_body_bytes as usize,
        secure_cookies: config.secure_cookies,
        metrics_token: config.metrics_token.clone(),
    };
    let tcp = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on HERALD_ADDR {}", config.addr))?;
    let listener = server::LimitedListener::new(tcp, config.max_connections as usize)
        // Replies go out at once rather than wait on Nagle's algorithm.
        .tap_io(|conn| {
            let _ = conn.get_ref().set_nodelay(true);
        });
    tracing::info!(addr = %config.addr, node = %engine.node_id(), "Herald is serving on http://{}", config.addr);
    let shutdown = engine.shutdown_token();
    // Synchronous events may legitimately wait for the whole sync deadline.
    let request_timeout = config.sync_timeout() + std::time::Duration::from_secs(10);
    let app = server::router(state, request_timeout).await?;
    let idle_timeout = std::time::Duration::from_millis(config.idle_timeout_ms);
    server::serve(listener, app, idle_timeout, async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    })
    .await;
    engine.shutdown().await;
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail at start-up");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

//! Configuration: one struct, read from flags and environment variables, checked
//! at start-up so that a bad value stops Herald with a message naming the setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "herald", version, about = "Self-hosted eventing: queue events over HTTP, deliver them to webhooks.")]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API and Mission Control (the default).
    Serve,
    /// Run the database migrations and exit.
    Migrate,
    /// Manage API keys.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Manage Mission Control accounts.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Manage which projects may watch tables in which database aliases.
    #[command(subcommand)]
    Database(DatabaseCommand),
    /// Measure throughput and latency: starts a webhook sink and (unless --url) a
    /// Herald on its own database, then prints a table and one JSON line per scenario.
    Bench(crate::bench::BenchArgs),
    /// Prepare a built Mission Control bundle for serving (a build step, run by
    /// `make`): fingerprint herald.js and the wasm, write hash.txt and brotli and
    /// gzip copies of every file in <SITE>/pkg.
    Site {
        /// The site root, as LEPTOS_SITE_ROOT.
        #[arg(default_value = "target/site")]
        site: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set a password (creating the account if needed). The password is read from
    /// HERALD_ADMIN_PASSWORD, or else from the first line of standard input.
    SetPassword {
        #[arg(long, env = "HERALD_ADMIN_USER", default_value = "admin")]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DatabaseCommand {
    /// Let a project watch tables in a database alias (`default` or one of HERALD_DATABASES).
    Grant {
        #[arg(long)]
        project: String,
        #[arg(long = "db", value_name = "ALIAS")]
        db: String,
    },
    /// Take a grant back: the project's database triggers there stop capturing.
    Revoke {
        #[arg(long)]
        project: String,
        #[arg(long = "db", value_name = "ALIAS")]
        db: String,
    },
    /// List the grants, of every project or of one.
    List {
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key. The key is printed alone on the last line.
    Create {
        #[arg(long, default_value = "default")]
        project: String,
        #[arg(long, value_parser = ["admin", "queue"], default_value = "admin")]
        role: String,
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List a project's API keys (never the keys themselves).
    List {
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Revoke an API key by its id (see `list`).
    Revoke {
        #[arg(long, default_value = "default")]
        project: String,
        #[arg(long)]
        id: uuid::Uuid,
    },
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HERALD_ADDR", value_name = "HERALD_ADDR", default_value = "127.0.0.1:3000", global = true)]
    pub addr: SocketAddr,

    /// PostgreSQL URL. When unset, Herald runs its own cluster in <data dir>/postgres.
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// A streaming replica of Herald's database. When set, the history's reads
    /// (Mission Control's Event Logs and Dead Letters, the history API) go to it,
    /// so a busy dashboard never slows delivery; everything else uses the primary.
    #[arg(long, env = "HERALD_READ_DATABASE_URL", value_name = "HERALD_READ_DATABASE_URL", hide_env_values = true,
          global = true)]
    pub read_database_url: Option<String>,

    /// Folder for the node id and the embedded PostgreSQL cluster.
    #[arg(long, env = "HERALD_DATA_DIR", value_name = "HERALD_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long = "log", env = "RUST_LOG", value_name = "RUST_LOG", default_value = "info,sqlx=warn", global = true)]
    pub log: String,

    /// HTTP connections served at once. A connection past it gets 503 with
    /// Retry-After and is closed, so an overload cannot take Herald's memory.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", value_name = "HERALD_MAX_CONNECTIONS", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub max_connections: u32,

    /// How long a connection may wait for a request's headers, in milliseconds:
    /// an idle keep-alive connection, or one sending its headers too slowly, is
    /// closed after it and frees its place under HERALD_MAX_CONNECTIONS. A request
    /// being served, and a stream of live updates, are never cut by it.
    #[arg(long, env = "HERALD_IDLE_TIMEOUT_MS", value_name = "HERALD_IDLE_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000), global = true)]
    pub idle_timeout_ms: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "HERALD_MAX_BODY_BYTES", value_name = "HERALD_MAX_BODY_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024 * 1024), global = true)]
    pub max_body_bytes: u64,

    /// How long a synchronous event waits for its deliveries, in milliseconds.
    #[arg(long, env = "HERALD_SYNC_TIMEOUT_MS", value_name = "HERALD_SYNC_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000), global = true)]
    pub sync_timeout_ms: u64,

    /// Most deliveries in flight at once on this node. An attempt holds its slot
    /// until its outcome is recorded, and events queued here are delivered at once
    /// while slots are free, so a larger number also means fewer claims.
    #[arg(long, env = "HERALD_CONCURRENCY", value_name = "HERALD_CONCURRENCY", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=10_000), global = true)]
    pub concurrency: u32,

    /// Fallback poll interval of the dispatcher, in milliseconds. New work wakes it at once.
    #[arg(long, env = "HERALD_POLL_INTERVAL_MS", value_name = "HERALD_POLL_INTERVAL_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(10..=60_000), global = true)]
    pub poll_interval_ms: u64,

    /// How long shutdown waits for in-flight deliveries, in milliseconds.
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE_MS", value_name = "HERALD_SHUTDOWN_GRACE_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000), global = true)]
    pub shutdown_grace_ms: u64,

    /// Wait before the first retry, in milliseconds. Later retries double it, up to 1 h.
    #[arg(long, env = "HERALD_RETRY_BASE_MS", value_name = "HERALD_RETRY_BASE_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000), global = true)]
    pub retry_base_ms: u64,

    /// Attempts to a trigger in 5 minutes before its circuit may open (when 90 % of
    /// them failed; SPEC §10). 0 turns the circuit breaker off.
    #[arg(long, env = "HERALD_CIRCUIT_MIN_ATTEMPTS", value_name = "HERALD_CIRCUIT_MIN_ATTEMPTS", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000), global = true)]
    pub circuit_min_attempts: u32,

    /// Refuse deliveries to loopback, private, link-local and cloud-metadata
    /// addresses. Turn it on when people who are not operators can set webhook URLs.
    #[arg(long, env = "HERALD_BLOCK_PRIVATE_NETWORKS", value_name = "HERALD_BLOCK_PRIVATE_NETWORKS",
          default_value_t = false, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new(), global = true)]
    pub block_private_networks: bool,

    /// Networks that stay reachable with the guard on, as comma-separated CIDRs
    /// (e.g. 10.20.0.0/16,fd12::/16).
    #[arg(long, env = "HERALD_ALLOWED_NETWORKS", value_name = "HERALD_ALLOWED_NETWORKS",
          value_delimiter = ',', global = true)]
    pub allowed_networks: Vec<ipnet::IpNet>,

    /// Mission Control's first account, created on the first start.
    #[arg(long, env = "HERALD_ADMIN_USER", value_name = "HERALD_ADMIN_USER", default_value = "admin", global = true)]
    pub admin_user: String,

    /// The first account's password. Unset: a password is generated and printed once.
    #[arg(long, env = "HERALD_ADMIN_PASSWORD", value_name = "HERALD_ADMIN_PASSWORD", hide_env_values = true,
          global = true)]
    pub admin_password: Option<String>,

    /// Mark Mission Control's session cookie Secure. Turn it on when Herald is
    /// served over https (directly or behind a proxy).
    #[arg(long, env = "HERALD_SECURE_COOKIES", value_name = "HERALD_SECURE_COOKIES", default_value_t = false,
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), global = true)]
    pub secure_cookies: bool,

    /// A bearer token that `/metrics` requires (`Authorization: Bearer <token>`).
    /// Unset: `/metrics` is open, as Prometheus expects by default; it names every
    /// project and trigger, so set this when the port is reachable by others.
    #[arg(long, env = "HERALD_METRICS_TOKEN", value_name = "HERALD_METRICS_TOKEN", hide_env_values = true,
          global = true)]
    pub metrics_token: Option<String>,

    /// More PostgreSQL databases whose tables database triggers may watch, as
    /// comma-separated alias=URL pairs (e.g. shop=postgres://app@db/shop). The alias
    /// `default` is Herald's own database.
    #[arg(long, env = "HERALD_DATABASES", value_name = "HERALD_DATABASES", value_delimiter = ',', global = true)]
    pub databases: Vec<String>,

    /// Largest file the file store accepts, in bytes.
    #[arg(long, env = "HERALD_MAX_FILE_BYTES", value_name = "HERALD_MAX_FILE_BYTES", default_value_t = 100 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub max_file_bytes: u64,

    /// Connections in each of Herald's two database pools: one for the hot path's
    /// writes (storing events, recording attempts), one for everything else.
    #[arg(long, env = "HERALD_DB_POOL_SIZE", value_name = "HERALD_DB_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(2..=1_000), global = true)]
    pub db_pool_size: u32,
}

impl Config {
    pub fn sync_timeout(&self) -> Duration {
        Duration::from_millis(self.sync_timeout_ms)
    }

    /// The extra database aliases of HERALD_DATABASES, checked.
    pub fn database_aliases(&self) -> Result<Vec<(String, String)>, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        for entry in self.databases.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (alias, url) = entry
                .split_once('=')
                .ok_or_else(|| format!("HERALD_DATABASES entry '{entry}' must look like alias=postgres://..."))?;
            let (alias, url) = (alias.trim(), url.trim());
            let alias_ok = (1..=63).contains(&alias.len())
                && alias.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
            if !alias_ok {
                return Err(format!(
                    "HERALD_DATABASES alias '{alias}' is invalid: use 1 to 63 lower-case letters, digits, '_' or '-'"
                ));
            }
            if alias == "default" {
                return Err("HERALD_DATABASES cannot redefine the alias 'default': it is Herald's own database".into());
            }
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(format!("HERALD_DATABASES: the URL of '{alias}' must start with postgres:// or postgresql://"));
            }
            if let Err(e) = url.parse::<sqlx::postgres::PgConnectOptions>() {
                return Err(format!("HERALD_DATABASES: the URL of '{alias}' is not a valid PostgreSQL URL: {e}"));
            }
            if out.iter().any(|(a, _)| a == alias) {
                return Err(format!("HERALD_DATABASES names the alias '{alias}' twice"));
            }
            out.push((alias.to_string(), url.to_string()));
        }
        Ok(out)
    }

    /// Checks what clap's types cannot.
    pub fn validate(&self) -> Result<(), String> {
        self.database_aliases()?;
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err("DATABASE_URL must start with postgres:// or postgresql://".into());
            }
        }
        if let Some(url) = &self.read_database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err("HERALD_READ_DATABASE_URL must start with postgres:// or postgresql://".into());
            }
            if let Err(e) = url.parse::<sqlx::postgres::PgConnectOptions>() {
                return Err(format!("HERALD_READ_DATABASE_URL is not a valid PostgreSQL URL: {e}"));
            }
        }
        if self.metrics_token.as_deref().is_some_and(|t| t.trim().len() < 16) {
            return Err("HERALD_METRICS_TOKEN must be at least 16 characters long".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("HERALD_DATA_DIR must not be empty".into());
        }
        if !self.allowed_networks.is_empty() && !self.block_private_networks {
            return Err("HERALD_ALLOWED_NETWORKS only has an effect with HERALD_BLOCK_PRIVATE_NETWORKS=true".into());
        }
        if let Err(e) = self.log.parse::<tracing_subscriber::EnvFilter>() {
            return Err(format!("RUST_LOG is not a valid log filter: {e}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_databases(list: &[&str]) -> Result<Vec<(String, String)>, String> {
        let cli = Cli::try_parse_from(["herald"]).unwrap();
        Config { databases: list.iter().map(|s| s.to_string()).collect(), ..cli.config }.database_aliases()
    }

    #[test]
    fn database_aliases_are_checked() {
        assert_eq!(
            with_databases(&["shop=postgres://app@db/shop", " crm = postgresql:///crm?host=/run "]).unwrap(),
            vec![("shop".into(), "postgres://app@db/shop".into()), ("crm".into(), "postgresql:///crm?host=/run".into())]
        );
        for (bad, want) in [
            ("postgres://x/y", "alias=postgres"),
            ("default=postgres://x/y", "cannot redefine"),
            ("Shop=postgres://x/y", "is invalid"),
            ("shop=mysql://x/y", "must start with"),
        ] {
            let err = with_databases(&[bad]).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
        assert!(with_databases(&["a=postgres://x/a", "a=postgres://x/b"]).unwrap_err().contains("twice"));
    }
}

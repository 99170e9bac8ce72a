//! The private PostgreSQL cluster Herald runs when `DATABASE_URL` is unset.
//!
//! The cluster lives in `<data dir>/postgres` and listens only on a Unix socket in
//! `<data dir>/run`, with no TCP port. PostgreSQL refuses to run as root, so a root
//! Herald runs it as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::process::Command;

const DB_NAME: &str = "herald";

/// Server settings for Herald's write-heavy load, durability untouched
/// (`fsync`, `synchronous_commit` and `full_page_writes` stay on):
/// - a larger buffer cache than the 128 MB default, so the hot tables' indexes stay in memory;
/// - checkpoints at most every 15 min or 8 GB of WAL instead of 5 min or 1 GB: the
///   first change to a page after a checkpoint writes the whole page to the WAL,
///   so rarer checkpoints write much less; and a checkpoint's closing fsync of
///   the data files holds commits back (the soak's p99 spikes sat on them: with
///   4 GB, one every 3.3 min at 3,000 events/s, which write 11 MB of WAL a second).
///   Not more: the WAL folder grows to about this size under sustained load, and
///   16 GB filled this machine's free disk during the soak's bulk load;
/// - those page images compressed (lz4);
/// - connections for two pools of every node on the cluster.
const SETTINGS: &str = "-c unix_socket_permissions=0700 -c max_connections=200 -c shared_buffers=256MB \
    -c max_wal_size=8GB -c checkpoint_timeout=15min -c wal_compression=lz4";
const SUPERUSER: &str = "postgres";

/// A running cluster, started (or adopted after a crash) by this process.
pub struct EmbeddedPostgres {
    bin_dir: Option<PathBuf>,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    as_postgres_user: bool,
}

impl EmbeddedPostgres {
    /// Initialises the cluster if needed and starts it. A server left running by a
    /// killed Herald is adopted; a stale `postmaster.pid` is cleared.
    pub async fn start(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create HERALD_DATA_DIR {}", data_dir.display()))?;
        let data_dir = data_dir.canonicalize().context("cannot resolve HERALD_DATA_DIR")?;
        let pg = EmbeddedPostgres {
            bin_dir: find_bin_dir()?,
            pgdata: data_dir.join("postgres"),
            socket_dir: data_dir.join("run"),
            as_postgres_user: nix::unistd::geteuid().is_root(),
        };
        for dir in [&pg.pgdata, &pg.socket_dir] {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            pg.give_to_postgres(dir)?;
        }
        if pg.as_postgres_user {
            pg.grant_passage(&data_dir).await?;
        }
        if !pg.pgdata.join("PG_VERSION").exists() {
            tracing::info!(path = %pg.pgdata.display(), "initialising the embedded PostgreSQL cluster");
            pg.run("initdb", &[
                "-D", path_str(&pg.pgdata)?, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C",
            ])
            .await
            .context("initdb failed")?;
        }
        if pg.adopt_running_server().await {
            tracing::info!("adopting the embedded PostgreSQL left running by an earlier Herald");
        } else {
            pg.clear_stale_lock_files();
            // Inside the cluster folder, which the postgres user owns and can write.
            let log = pg.pgdata.join("server.log");
            let opts = format!("-c listen_addresses='' -k {} {SETTINGS}", path_str(&pg.socket_dir)?);
            pg.run("pg_ctl", &[
                "-D", path_str(&pg.pgdata)?, "-l", path_str(&log)?, "-w", "-t", "120", "-o", &opts, "start",
            ])
            .await
            .with_context(|| format!("the embedded PostgreSQL did not start; see {}", log.display()))?;
        }
        pg.ensure_database().await?;
        Ok(pg)
    }

    /// Connection options for Herald's database in this cluster.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .username(SUPERUSER)
            .database(DB_NAME)
    }

    /// Stops the cluster cleanly (a fast shutdown: sessions end, data is flushed).
    pub async fn stop(&self) -> Result<()> {
        self.run("pg_ctl", &["-D", path_str(&self.pgdata)?, "-m", "fast", "-w", "-t", "60", "stop"])
            .await
            .context("pg_ctl stop failed")
    }

    async fn connect(&self, db: &str) -> Result<sqlx::PgConnection> {
        let opts = PgConnectOptions::new().socket(&self.socket_dir).username(SUPERUSER).database(db);
        Ok(opts.connect().await?)
    }

    async fn ensure_database(&self) -> Result<()> {
        let mut conn = self.connect("postgres").await.context("cannot connect to the embedded PostgreSQL")?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(DB_NAME)
            .fetch_one(&mut conn)
            .await?;
        if !exists {
            sqlx::query(&format!("CREATE DATABASE {DB_NAME}")).execute(&mut conn).await?;
        }
        conn.close().await?;
        Ok(())
    }

    /// True when a server from an earlier run answers on our socket. A server that
    /// is still going away (its lock file names a live process, but it refuses
    /// connections) gets a few seconds to finish before we start a new one.
    async fn adopt_running_server(&self) -> bool {
        for _ in 0..20 {
            if self.connect("postgres").await.is_ok() {
                return true;
            }
            if self.lock_holder().is_none() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }

    /// The live PostgreSQL process named by `postmaster.pid`, if any.
    fn lock_holder(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        let pid = text.lines().next()?.trim().parse::<i32>().ok()?;
        is_live_postgres(pid).then_some(pid)
    }

    /// A lock file whose process is gone (or is no longer PostgreSQL, after a reboot
    /// recycled the pid) would make `pg_ctl start` refuse to start.
    fn clear_stale_lock_files(&self) {
        let candidates = [self.pgdata.join("postmaster.pid"), self.socket_dir.join(".s.PGSQL.5432.lock")];
        for lock in candidates {
            let Ok(text) = std::fs::read_to_string(&lock) else { continue };
            let pid = text.lines().next().and_then(|l| l.trim().parse::<i32>().ok());
            if !pid.is_some_and(is_live_postgres) {
                tracing::warn!(file = %lock.display(), "removing a stale PostgreSQL lock file");
                let _ = std::fs::remove_file(&lock);
            }
        }
    }

    fn give_to_postgres(&self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if self.as_postgres_user {
            let user = nix::unistd::User::from_name(SUPERUSER)?
                .context("Herald runs as root, and PostgreSQL refuses root: create a `postgres` user, or run Herald as another user")?;
            nix::unistd::chown(dir, Some(user.uid), Some(user.gid))
                .with_context(|| format!("cannot give {} to the postgres user", dir.display()))?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(())
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let exe = match &self.bin_dir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        };
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", SUPERUSER, "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        // Own process group: a Ctrl-C in the terminal must reach Herald only, so that
        // Herald can finish its work against the database before stopping it.
        cmd.args(args).process_group(0).stdin(Stdio::null()).kill_on_drop(false);
        let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
            .await
            .with_context(|| format!("{program} did not finish in 180 s"))?
            .with_context(|| format!("cannot run {program}"))?;
        if !out.status.success() {
            // The program's own text on lines of its own, after Herald's.
            bail!(
                "{program} exited with {}:\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Whether the postgres user may enter `dir` (search permission, ACLs and
    /// groups included), asked of the system as that user.
    async fn postgres_may_enter(dir: &Path) -> bool {
        Command::new("runuser")
            .args(["-u", SUPERUSER, "--", "test", "-x"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success())
    }

    /// PostgreSQL runs as the postgres user, which must pass through every folder
    /// above the cluster. A folder only root may enter (root's home, a `mktemp -d`
    /// folder) gets an ACL entry that lets the postgres user pass through it, and
    /// nothing more: not list it, not read or write what is in it (SPEC §8).
    async fn grant_passage(&self, data_dir: &Path) -> Result<()> {
        let uid = nix::unistd::User::from_name(SUPERUSER)?.context("no postgres user")?.uid.as_raw();
        for dir in data_dir.ancestors().collect::<Vec<_>>().into_iter().rev() {
            if Self::postgres_may_enter(dir).await {
                continue;
            }
            allow_user_to_search(dir, uid).with_context(|| {
                format!(
                    "PostgreSQL runs as the postgres user, which cannot enter {}, and Herald could not let it \
                     pass (an ACL entry). Put HERALD_DATA_DIR in a folder the postgres user can reach, or run \
                     Herald as another user than root",
                    dir.display()
                )
            })?;
            tracing::info!(folder = %dir.display(), "let the postgres user pass through this folder (ACL entry u:postgres:--x) to reach the embedded cluster");
            if !Self::postgres_may_enter(dir).await {
                bail!(
                    "PostgreSQL runs as the postgres user, which still cannot enter {} after Herald added an ACL \
                     entry for it. Put HERALD_DATA_DIR in a folder the postgres user can reach",
                    dir.display()
                );
            }
        }
        Ok(())
    }
}

/// True when `pid` is a running (not zombie) PostgreSQL process.
fn is_live_postgres(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // "pid (comm) state ...": the command is in parentheses, the state follows it.
    let Some((comm, rest)) = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')) else { return false };
    comm.starts_with("postgres") && !rest.trim_start().starts_with(['Z', 'X'])
}

/// Finds `initdb` and `pg_ctl`: on PATH, or in Debian's versioned folders.
fn find_bin_dir() -> Result<Option<PathBuf>> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("pg_ctl").is_file() && d.join("initdb").is_file()))
        .unwrap_or(false);
    if on_path {
        return Ok(None);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    match versions.pop() {
        Some(bin) => Ok(Some(bin)),
        None => bail!(
            "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them \
             (Debian/Ubuntu: `apt-get install postgresql`), or set DATABASE_URL to use an existing database"
        ),
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().with_context(|| format!("path is not UTF-8: {}", p.display()))
}

/// Adds (or widens) the POSIX ACL entry `user:<uid>:--x` of a folder, as
/// `setfacl -m u:<uid>:x` would, without needing the acl tools: the ACL is the
/// `system.posix_acl_access` attribute, a version word and 8-byte entries
/// (tag, permissions, id) in tag order.
fn allow_user_to_search(dir: &Path, uid: u32) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    const NAME: &[u8] = b"system.posix_acl_access\0";
    const VERSION: u32 = 2;
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const SEARCH: u16 = 1;
    let path = CString::new(dir.as_os_str().as_bytes())?;
    let name = NAME.as_ptr() as *const libc::c_char;

    let mut entries: Vec<(u16, u16, u32)> = Vec::new();
    // SAFETY: path and name are NUL-terminated; a null buffer of size 0 asks for the size.
    let size = unsafe { libc::getxattr(path.as_ptr(), name, std::ptr::null_mut(), 0) };
    if size < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENODATA) {
            return Err(e.into());
        }
    }
    let mut buf = vec![0u8; size.max(0) as usize];
    // SAFETY: as above; buf is writable for its length.
    let n = if buf.is_empty() {
        0
    } else {
        unsafe { libc::getxattr(path.as_ptr(), name, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) }
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if n > 4 {
        for e in buf[4..n as usize].chunks_exact(8) {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            entries.push((tag, perm, id));
        }
    } else {
        // No ACL yet: the one the mode bits stand for.
        let mode = std::fs::metadata(dir)?.mode() as u16;
        entries = vec![(USER_OBJ, (mode >> 6) & 7, u32::MAX), (GROUP_OBJ, (mode >> 3) & 7, u32::MAX), (OTHER, mode & 7, u32::MAX)];
    }
    match entries.iter_mut().find(|e| e.0 == USER && e.2 == uid) {
        Some(e) => e.1 |= SEARCH,
        None => entries.push((USER, SEARCH, uid)),
    }
    // Named entries need a mask; it must let their permissions through.
    let group = entries.iter().find(|e| e.0 == GROUP_OBJ).map(|e| e.1).unwrap_or(0);
    match entries.iter_mut().find(|e| e.0 == MASK) {
        Some(m) => m.1 |= SEARCH,
        None => entries.push((MASK, group | SEARCH, u32::MAX)),
    }
    entries.sort_by_key(|e| (e.0, e.2));
    let mut acl = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    // SAFETY: as above; acl is readable for its length.
    let r = unsafe { libc::setxattr(path.as_ptr(), name, acl.as_ptr() as *const libc::c_void, acl.len(), 0) };
    if r != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

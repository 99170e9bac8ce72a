//! Database events (SPEC §5): DB_INSERT, DB_UPDATE and DB_DELETE.
//!
//! Saving a database trigger installs one row-level AFTER trigger, `herald_capture`,
//! on the watched table. It does one insert into the outbox `herald.changes` of
//! that database, in the user's own transaction: a rolled-back change leaves no
//! row, a committed one cannot be lost, and nothing slow runs inside the user's
//! transaction. A drainer per database turns outbox rows into events.
//! - In Herald's own database (alias `default`) the drain and the enqueue share one
//!   transaction: each change becomes its events exactly once.
//! - In another database the enqueue commits first, with an idempotency key made
//!   from the change's id, and the outbox rows are deleted after: a crash in
//!   between drains them again, and the key turns the repeat into a no-op.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use serde_json::{json, Value};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Executor, FromRow, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{Engine, EngineError};
use crate::model::TableInfo;
use crate::store;
use crate::store::events::NewEvent;

/// Herald's own database.
pub const DEFAULT_ALIAS: &str = "default";
/// The row trigger Herald installs on a watched table.
const TRIGGER_NAME: &str = "herald_capture";
/// The channel the capture function notifies; one NOTIFY per transaction survives.
const CHANNEL: &str = "herald_changes";
/// Most outbox rows turned into events per transaction.
const DRAIN_BATCH: i64 = 1000;

/// Herald's tables in its own database: watching them would feed Herald its own
/// writes.
const HERALD_TABLES: [&str; 16] = [
    "public.flow_credits",
    "public.trigger_stats",
    "public.database_grants",
    "public.projects",
    "public.api_keys",
    "public.event_triggers",
    "public.events",
    "public.event_logs",
    "public.invocation_logs",
    "public.event_log_counts",
    "public.history_partitions",
    "public.history_ordered_since",
    "public.idempotency_keys",
    "public.admins",
    "public.file_intents",
    "public._sqlx_migrations",
];
/// Whether a database holds Herald's own tables: the alias `default`, or any other
/// alias that reaches Herald's database (or another Herald's). Its `projects` table
/// holds every project's secrets.
const IS_HERALD_DATABASE: &str = "SELECT to_regclass('public.event_logs') IS NOT NULL
    AND to_regclass('public.invocation_logs') IS NOT NULL AND to_regclass('public.projects') IS NOT NULL";

/// Schemas that never hold user tables.
const HIDDEN_SCHEMAS: [&str; 4] = ["information_schema", "herald", "tower_sessions", "pg_catalog"];

/// The outbox and the capture function, created in each database Herald watches.
/// The function is SECURITY DEFINER so that writers need no rights on the outbox,
/// with a fixed search_path so that a caller's cannot redirect it. Trigger arguments: the table's name, then its key columns.
const OUTBOX_SQL: &str = r#"
CREATE SCHEMA IF NOT EXISTS herald;
CREATE TABLE IF NOT EXISTS herald.changes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uid        uuid NOT NULL DEFAULT gen_random_uuid(),
    tbl        text NOT NULL,
    op         text NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
    doc        jsonb,
    before     jsonb,
    find       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE herald.changes SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);
REVOKE ALL ON SCHEMA herald FROM PUBLIC;
CREATE OR REPLACE FUNCTION herald.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    keyed jsonb;
    find  jsonb := '{}'::jsonb;
    i     int;
BEGIN
    IF TG_OP = 'INSERT' THEN
        keyed := to_jsonb(NEW);
    ELSE
        keyed := to_jsonb(OLD);
    END IF;
    FOR i IN 1 .. TG_NARGS - 1 LOOP
        find := find || jsonb_build_object(TG_ARGV[i], keyed -> TG_ARGV[i]);
    END LOOP;
    INSERT INTO herald.changes (tbl, op, doc, before, find) VALUES (
        TG_ARGV[0], TG_OP,
        CASE TG_OP WHEN 'INSERT' THEN keyed WHEN 'UPDATE' THEN to_jsonb(NEW) END,
        CASE WHEN TG_OP <> 'INSERT' THEN keyed END,
        find);
    PERFORM pg_notify('herald_changes', '');
    RETURN NULL;
END
$fn$;
"#;

/// User tables of a database, with their primary key and whether Herald may
/// install triggers on them. `$2`/`$3` narrow it to one schema and table.
const TABLES_SQL: &str = "
SELECT n.nspname::text AS schema, c.relname::text AS name,
       COALESCE((SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
                 FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])
                 WHERE i.indrelid = c.oid AND i.indisprimary), '{}') AS primary_key,
       has_table_privilege(c.oid, 'TRIGGER') AS can_trigger
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname <> ALL($1) AND n.nspname NOT LIKE 'pg\\_%'
  AND ($2::text IS NULL OR (n.nspname = $2 AND c.relname = $3))
ORDER BY 1, 2";

#[derive(FromRow)]
struct TableRow {
    schema: String,
    name: String,
    primary_key: Vec<String>,
    can_trigger: bool,
}

impl TableRow {
    fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// Splits `schema.table`; a bare name is in `public`.
pub fn split_table(table: &str) -> (&str, &str) {
    table.split_once('.').unwrap_or(("public", table))
}

/// Every database alias, with a small pool for each. `default` shares Herald's pool.
pub struct Databases {
    list: Vec<(String, PgPool)>,
}

impl Databases {
    /// Pools for the aliases connect lazily: a database that is down does not stop
    /// Herald, and its drainer retries.
    pub fn new(default: &PgPool, extra: &[(String, String)]) -> Self {
        let mut list = vec![(DEFAULT_ALIAS.to_string(), default.clone())];
        for (alias, url) in extra {
            match PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy(url)
            {
                Ok(pool) => list.push((alias.clone(), pool)),
                Err(e) => tracing::error!(alias, error = %e, "HERALD_DATABASES: cannot use this URL"),
            }
        }
        Databases { list }
    }

    pub fn aliases(&self) -> Vec<String> {
        self.list.iter().map(|(a, _)| a.clone()).collect()
    }

    pub fn get(&self, alias: &str) -> Result<&PgPool, EngineError> {
        self.list.iter().find(|(a, _)| a == alias).map(|(_, p)| p).ok_or_else(|| {
            EngineError::Invalid(format!(
                "`options.db`: there is no database alias '{alias}'; Herald knows {} (add more with HERALD_DATABASES)",
                self.aliases().join(", ")
            ))
        })
    }
}

/// One captured change, as the outbox holds it.
#[derive(FromRow)]
struct Change {
    id: i64,
    uid: Uuid,
    tbl: String,
    op: String,
    doc: Option<Json<Value>>,
    before: Option<Json<Value>>,
    find: Json<Value>,
}

impl Change {
    /// The event data of SPEC §5: INSERT has no `before`, DELETE no `doc`.
    fn data(&self, alias: &str) -> Value {
        let mut data = json!({"db": alias, "col": self.tbl, "find": self.find.0});
        if let Some(doc) = &self.doc {
            data["doc"] = doc.0.clone();
        }
        if let Some(before) = &self.before {
            data["before"] = before.0.clone();
        }
        data
    }
}

fn unreachable(alias: &str, e: sqlx::Error) -> EngineError {
    EngineError::Invalid(format!("`options.db`: cannot reach the database '{alias}': {e}"))
}

fn is_undefined_table(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01"))
}

/// Creates or refreshes the outbox, one installer at a time.
async fn ensure_outbox(tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    // A plain string runs over the simple protocol, which allows many statements.
    (&mut **tx).execute(OUTBOX_SQL).await?;
    Ok(())
}

impl Engine {
    /// The user tables of a database alias, for the trigger form.
    pub async fn list_tables(&self, alias: &str) -> Result<Vec<TableInfo>, EngineError> {
        let pool = self.databases().get(alias)?;
        let rows: Vec<TableRow> = sqlx::query_as(TABLES_SQL)
            .bind(&HIDDEN_SCHEMAS[..])
            .bind(None::<&str>)
            .bind(None::<&str>)
            .fetch_all(pool)
            .await
            .map_err(|e| unreachable(alias, e))?;
        let herald = self.is_herald_database(alias, pool).await?;
        Ok(rows
            .into_iter()
            .filter(|r| !herald || !HERALD_TABLES.contains(&r.qualified().as_str()))
            .map(|r| TableInfo { name: r.qualified(), primary_key: r.primary_key, can_trigger: r.can_trigger })
            .collect())
    }

    /// Whether the database behind `alias` holds Herald's tables (see [`IS_HERALD_DATABASE`]).
    async fn is_herald_database(&self, alias: &str, pool: &PgPool) -> Result<bool, EngineError> {
        if alias == DEFAULT_ALIAS {
            return Ok(true);
        }
        sqlx::query_scalar(IS_HERALD_DATABASE).fetch_one(pool).await.map_err(|e| unreachable(alias, e))
    }

    /// Checks that a table can be watched: it exists, it is not Herald's, and
    /// Herald may create triggers on it. Returns it with its schema-qualified name.
    pub async fn resolve_table(&self, alias: &str, table: &str) -> Result<TableInfo, EngineError> {
        let table = table.trim();
        if table.is_empty() {
            return Err(EngineError::Invalid(
                "`options.table`: a table is required; name the one to watch, such as public.orders".into(),
            ));
        }
        let pool = self.databases().get(alias)?;
        let (schema, name) = split_table(table);
        let qualified = format!("{schema}.{name}");
        if HIDDEN_SCHEMAS.contains(&schema)
            || schema.starts_with("pg_")
            || (HERALD_TABLES.contains(&qualified.as_str()) && self.is_herald_database(alias, pool).await?)
        {
            return Err(EngineError::Invalid(format!(
                "`options.table`: {qualified} belongs to Herald or PostgreSQL and cannot be watched"
            )));
        }
        let row: Option<TableRow> = sqlx::query_as(TABLES_SQL)
            .bind(&HIDDEN_SCHEMAS[..])
            .bind(schema)
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(|e| unreachable(alias, e))?;
        let Some(row) = row else {
            return Err(EngineError::Invalid(format!(
                "`options.table`: there is no table {qualified} in the database '{alias}' (names are case-sensitive)"
            )));
        };
        if !row.can_trigger {
            let user: String =
                sqlx::query_scalar("SELECT current_user::text").fetch_one(pool).await.map_err(|e| unreachable(alias, e))?;
            return Err(EngineError::Invalid(format!(
                "`options.table`: Herald connects to the database '{alias}' as '{user}', which may not create triggers \
                 on {qualified}: make '{user}' the table's owner, or GRANT TRIGGER ON {qualified} TO \"{user}\""
            )));
        }
        Ok(TableInfo { name: qualified, primary_key: row.primary_key, can_trigger: true })
    }

    /// Makes the row trigger on one table match the enabled database triggers that
    /// watch it: the union of their operations, or no trigger at all.
    pub async fn sync_table(&self, alias: &str, table: &str) -> Result<(), EngineError> {
        let pool = self.databases().get(alias)?;
        let mut tx = pool.begin().await.map_err(|e| unreachable(alias, e))?;
        // One installer at a time per database; the wanted state is read under the
        // lock, so the last installer always installs the latest state.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('herald.capture'))").execute(&mut *tx).await?;
        let ops = store::triggers::watched_ops(self.pool(), alias, table).await?;
        let (schema, name) = split_table(table);
        let row: Option<TableRow> = sqlx::query_as(TABLES_SQL)
            .bind(&HIDDEN_SCHEMAS[..])
            .bind(schema)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            // The table is gone, and its trigger with it.
            return Ok(());
        };
        let drop: String = sqlx::query_scalar("SELECT format('DROP TRIGGER IF EXISTS %I ON %I.%I', $1, $2, $3)")
            .bind(TRIGGER_NAME)
            .bind(schema)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        (&mut *tx).execute(drop.as_str()).await?;
        if !ops.is_empty() {
            ensure_outbox(&mut tx).await?;
            let events = ops.iter().map(|op| op.trim_start_matches("DB_").to_string()).collect::<Vec<_>>().join(" OR ");
            let mut args = vec![row.qualified()];
            args.extend(row.primary_key.iter().cloned());
            let create: String = sqlx::query_scalar(
                "SELECT format('CREATE TRIGGER %I AFTER %s ON %I.%I FOR EACH ROW EXECUTE FUNCTION herald.capture(%s)',
                               $1, $2, $3, $4, (SELECT string_agg(quote_literal(a), ', ') FROM unnest($5::text[]) a))",
            )
            .bind(TRIGGER_NAME)
            .bind(events)
            .bind(schema)
            .bind(name)
            .bind(&args)
            .fetch_one(&mut *tx)
            .await?;
            (&mut *tx).execute(create.as_str()).await?;
        }
        tx.commit().await?;
        tracing::info!(alias, table, ops = ?ops, "database trigger synchronised");
        Ok(())
    }

    /// At start-up: every table that Herald watches, or that still carries its
    /// trigger, is brought in line (a trigger deleted while its database was down,
    /// a primary key that changed).
    pub async fn sync_all_tables(&self) {
        for alias in self.databases().aliases() {
            let mut tables: BTreeSet<String> = match store::triggers::watched_tables(self.pool(), &alias).await {
                Ok(t) => t.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the watched tables");
                    return;
                }
            };
            let Ok(pool) = self.databases().get(&alias) else { continue };
            match sqlx::query_scalar::<_, String>(
                "SELECT n.nspname || '.' || c.relname FROM pg_trigger t
                 JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE t.tgname = $1 AND NOT t.tgisinternal",
            )
            .bind(TRIGGER_NAME)
            .fetch_all(pool)
            .await
            {
                Ok(installed) => tables.extend(installed),
                Err(e) => tracing::warn!(alias, error = %e, "cannot read the installed database triggers"),
            }
            for table in tables {
                if let Err(e) = self.sync_table(&alias, &table).await {
                    tracing::warn!(alias, table, error = %e, "cannot synchronise a database trigger");
                }
            }
        }
    }

    /// Turns up to one batch of outbox rows of a database into events. Returns how
    /// many rows it took.
    pub async fn drain_changes(&self, alias: &str) -> Result<usize, EngineError> {
        let source = self.databases().get(alias)?;
        let mut src = source.begin().await?;
        let outbox: bool = sqlx::query_scalar("SELECT to_regclass('herald.changes') IS NOT NULL")
            .fetch_one(&mut *src)
            .await?;
        if !outbox {
            // No database trigger was ever installed there.
            return Ok(0);
        }
        let changes: Vec<Change> = match sqlx::query_as(
            "SELECT id, uid, tbl, op, doc, before, find FROM herald.changes ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(DRAIN_BATCH)
        .fetch_all(&mut *src)
        .await
        {
            Ok(c) => c,
            // No database trigger was ever installed there.
            Err(e) if is_undefined_table(&e) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        if changes.is_empty() {
            return Ok(0);
        }
        let shared = alias == DEFAULT_ALIAS;
        let watchers = store::triggers::watchers(self.pool(), alias).await?;
        let now = Utc::now().trunc_subsecs(6);
        let mut by_project: BTreeMap<String, Vec<NewEvent>> = BTreeMap::new();
        for c in &changes {
            let event_type = format!("DB_{}", c.op);
            let projects: BTreeSet<&String> =
                watchers.iter().filter(|w| w.1 == event_type && w.2 == c.tbl).map(|w| &w.0).collect();
            for project in projects {
                by_project.entry(project.clone()).or_default().push(NewEvent {
                    id: Uuid::now_v7(),
                    event_type: event_type.clone(),
                    data: c.data(alias),
                    deliver_at: now,
                    synchronous: false,
                    idempotency_key: (!shared).then(|| format!("herald-db:{alias}:{}", c.uid)),
                    ordering_key: None,
                });
            }
        }
        let ids: Vec<i64> = changes.iter().map(|c| c.id).collect();
        if shared {
            for (project, events) in &by_project {
                store::events::enqueue(&mut src, project, events, None).await?;
            }
        } else {
            let mut tx = self.pool().begin().await?;
            for (project, events) in &by_project {
                store::events::enqueue(&mut tx, project, events, None).await?;
            }
            tx.commit().await?;
        }
        sqlx::query("DELETE FROM herald.changes WHERE id = ANY($1)").bind(&ids).execute(&mut *src).await?;
        src.commit().await?;
        for (project, events) in &by_project {
            super::queue::count_queued(project, events.len() as u64);
        }
        Ok(changes.len())
    }

    /// Drains one database's outbox whenever its capture function notifies, and on
    /// the poll interval in case a notification was missed.
    pub(crate) async fn drain_loop(self, alias: String) {
        let cancel = self.shutdown_token();
        let poll = self.config().poll_interval;
        let Ok(pool) = self.databases().get(&alias).cloned() else { return };
        let mut listener: Option<PgListener> = None;
        let mut failures = 0u32;
        while !cancel.is_cancelled() {
            if listener.is_none() {
                if let Ok(mut l) = PgListener::connect_with(&pool).await {
                    if l.listen(CHANNEL).await.is_ok() {
                        listener = Some(l);
                    }
                }
            }
            let wait = match self.drain_changes(&alias).await {
                Ok(n) if n as i64 == DRAIN_BATCH => continue,
                Ok(_) => {
                    failures = 0;
                    poll
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures % 60 == 0 {
                        tracing::warn!(alias, error = %e, "cannot drain database changes; retrying");
                    }
                    Duration::from_secs(1).min(poll)
                }
            };
            let lost = match listener.as_mut() {
                Some(l) => tokio::select! {
                    msg = l.recv() => msg.is_err(),
                    _ = tokio::time::sleep(wait) => false,
                    _ = cancel.cancelled() => return,
                },
                None => tokio::select! {
                    _ = tokio::time::sleep(wait) => false,
                    _ = cancel.cancelled() => return,
                },
            };
            if lost {
                listener = None;
            }
        }
    }
}

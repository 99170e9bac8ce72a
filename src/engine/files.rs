//! The file store (SPEC §5): files and folders on local disk under
//! `<files dir>/<project>/`, with FILE_CREATE and FILE_DELETE events.
//!
//! No event is lost or invented when Herald crashes mid-operation:
//! 1. an upload is first written to a temporary file;
//! 2. an *intent* row records the operation;
//! 3. the disk operation runs (a rename into place, a mkdir, a removal);
//! 4. the intent is marked *staged*: the disk now holds the result;
//! 5. one transaction deletes the intent and queues the event.
//!
//! A failed operation deletes its intent and fires nothing. The reconciler settles
//! intents that a crash left behind: a staged one fires its event; an unstaged one
//! fires if the disk shows the operation happened, and is dropped otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::types::Json;
use sqlx::FromRow;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::{Engine, EngineError};
use crate::store::events::{self as store, NewEvent};

/// An unstaged intent whose operation never reached the disk is dropped after this.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);
const MAX_PATH_BYTES: usize = 1024;

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::Invalid(msg.into())
}

/// The longest file or folder name file systems take (NAME_MAX on Linux).
const MAX_NAME_BYTES: usize = 255;

/// Reads a store path ("a/b.txt", "/a/b.txt") into its segments. Anything that
/// could leave the store is refused: `..`, `.`, empty segments (which is how an
/// absolute path such as `//etc/passwd` arrives), backslashes, control characters;
/// and names no file system takes, over [`MAX_NAME_BYTES`].
pub fn parse_path(raw: &str, field: &str) -> Result<Vec<String>, EngineError> {
    if raw.len() > MAX_PATH_BYTES {
        return Err(invalid(format!("`{field}` is longer than {MAX_PATH_BYTES} bytes")));
    }
    let trimmed = raw.strip_prefix('/').unwrap_or(raw);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let mut segments = Vec::new();
    for seg in trimmed.split('/') {
        match seg {
            "" => return Err(invalid(format!("`{field}` '{raw}' has an empty segment; absolute paths are refused"))),
            "." | ".." => return Err(invalid(format!("`{field}` '{raw}' may not contain '{seg}'"))),
            s if s.len() > MAX_NAME_BYTES => {
                return Err(invalid(format!(
                    "`{field}` has a segment of {} bytes; a file or folder name takes at most {MAX_NAME_BYTES} bytes",
                    s.len()
                )))
            }
            s if s.chars().any(|c| c.is_control() || c == '\\') => {
                return Err(invalid(format!("`{field}` '{raw}' contains a control character or a backslash")))
            }
            s => segments.push(s.to_string()),
        }
    }
    Ok(segments)
}

/// Reads a path as a request names it, relative to the store's root: a leading
/// '/' (an absolute path, e.g. `files//etc/passwd` or `files/%2Fetc`) is refused.
fn request_path(raw: &str) -> Result<Vec<String>, EngineError> {
    if raw.starts_with('/') {
        return Err(invalid(format!("`path` '{raw}' is absolute; name it relative to the file store")));
    }
    parse_path(raw, "path")
}

/// The form paths take in events and replies: "/a/b.txt", or "/" for the root.
pub fn display_path(segments: &[String]) -> String {
    format!("/{}", segments.join("/"))
}

/// A file or folder in a listing.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: Option<u64>,
    pub modified_at: Option<DateTime<Utc>>,
}

/// The reply to a create or delete.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileOutcome {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[schema(value_type = Object)]
    pub meta: Value,
    /// Creates only: false when the folder already existed (nothing was created,
    /// nothing fired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

/// What a GET found.
pub enum Found {
    File { path: PathBuf, size: u64, content_type: String },
    Folder { path: String, items: Vec<Entry> },
}

#[derive(FromRow)]
struct Intent {
    id: Uuid,
    project: String,
    op: String,
    kind: String,
    path: String,
    tmp_path: Option<String>,
    meta: Json<Value>,
    status: String,
    created_at: DateTime<Utc>,
}

fn content_type_of(path: &Path) -> String {
    mime_guess::from_path(path).first_or_octet_stream().essence_str().to_string()
}

fn io_error(what: &str, path: &str, e: std::io::Error) -> EngineError {
    match e.kind() {
        std::io::ErrorKind::NotFound => EngineError::NotFound(format!("{path} does not exist")),
        std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory | std::io::ErrorKind::IsADirectory => {
            EngineError::Conflict(format!("cannot {what} {path}: {e}"))
        }
        _ => {
            tracing::error!(path, error = %e, "file store I/O error");
            EngineError::Storage(format!("cannot {what} {path}: {e}"))
        }
    }
}

impl Engine {
    fn store_root(&self, project: &str) -> PathBuf {
        self.config().files_dir.join(project)
    }

    /// The disk path of a store path. Symbolic links are refused anywhere on the
    /// way, since they could lead out of the store.
    async fn disk_path(&self, project: &str, segments: &[String]) -> Result<PathBuf, EngineError> {
        let mut p = self.store_root(project);
        for seg in segments {
            p.push(seg);
            match tokio::fs::symlink_metadata(&p).await {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(invalid(format!(
                        "`path` {} goes through a symbolic link, which could lead out of the file store",
                        display_path(segments)
                    )))
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(self.store_root(project).join(segments.join("/")))
    }

    /// Writes a file from a body stream (SPEC §5): FILE_CREATE once it is in place.
    /// An existing file is replaced; missing parent folders are created.
    pub async fn upload_file<S, E>(
        &self,
        project: &str,
        raw_path: &str,
        content_type: Option<String>,
        mut body: S,
    ) -> Result<FileOutcome, EngineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let segments = request_path(raw_path)?;
        if segments.is_empty() {
            return Err(invalid("`path` must name a file, not the root folder"));
        }
        let shown = display_path(&segments);
        let target = self.disk_path(project, &segments).await?;
        if tokio::fs::metadata(&target).await.is_ok_and(|m| m.is_dir()) {
            return Err(EngineError::Conflict(format!("{shown} is a folder; delete it first to put a file there")));
        }
        let tmp_dir = self.tmp_dir();
        tokio::fs::create_dir_all(&tmp_dir).await.map_err(|e| io_error("create", ".tmp", e))?;
        // Removed when this function ends without placing the file, however it
        // ends: an error, or the client going away (the future is dropped).
        let tmp_file = TmpFile(Some(tmp_dir.join(Uuid::new_v4().to_string())));
        let tmp = tmp_file.path().to_path_buf();
        let size = self.write_tmp(&tmp, &mut body).await?;
        let content_type = content_type
            .filter(|c| !c.is_empty() && c != "application/octet-stream")
            .unwrap_or_else(|| content_type_of(&target));
        let meta = json!({"size": size, "contentType": content_type});
        let intent = self.record_intent(project, "create", "file", &shown, Some(&tmp), &meta).await?;
        let placed = async {
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(|e| io_error("create the folder of", &shown, e))?;
            }
            tokio::fs::rename(&tmp, &target).await.map_err(|e| io_error("write", &shown, e))
        }
        .await;
        if let Err(e) = placed {
            drop(tmp_file);
            self.abandon_intent(intent).await;
            return Err(e);
        }
        tmp_file.placed();
        self.stage_and_fire(intent, project, "FILE_CREATE", &shown, "file", &meta).await?;
        Ok(FileOutcome { path: shown, kind: "file", meta, created: Some(true) })
    }

    async fn write_tmp<S, E>(&self, tmp: &Path, body: &mut S) -> Result<u64, EngineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let limit = self.config().max_file_bytes;
        let idle = self.config().upload_idle_timeout;
        let mut file = tokio::fs::File::create(tmp).await.map_err(|e| io_error("create", "a temporary file", e))?;
        let mut size: u64 = 0;
        loop {
            let Ok(next) = tokio::time::timeout(idle, body.next()).await else {
                return Err(invalid(format!(
                    "the upload stalled: no bytes for {} s after {size} bytes",
                    idle.as_secs_f64()
                )));
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| invalid(format!("the upload was interrupted: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(EngineError::TooLarge(format!("the file is larger than the limit of {limit} bytes")));
            }
            file.write_all(&chunk).await.map_err(|e| io_error("write", "a temporary file", e))?;
        }
        // The event promises the file is there: make it durable before it fires.
        file.sync_all().await.map_err(|e| io_error("write", "a temporary file", e))?;
        Ok(size)
    }

    /// Creates a folder and its missing parents: FILE_CREATE for the folder. An
    /// existing folder is a success that creates and fires nothing.
    pub async fn make_folder(&self, project: &str, raw_path: &str) -> Result<FileOutcome, EngineError> {
        let segments = request_path(raw_path)?;
        if segments.is_empty() {
            return Err(invalid("`path` must name a folder, not the root folder"));
        }
        let shown = display_path(&segments);
        let target = self.disk_path(project, &segments).await?;
        match tokio::fs::metadata(&target).await {
            Ok(m) if m.is_dir() => {
                return Ok(FileOutcome { path: shown, kind: "folder", meta: json!({}), created: Some(false) })
            }
            Ok(_) => return Err(EngineError::Conflict(format!("{shown} is a file"))),
            Err(_) => {}
        }
        let meta = json!({});
        let intent = self.record_intent(project, "create", "folder", &shown, None, &meta).await?;
        if let Err(e) = tokio::fs::create_dir_all(&target).await {
            self.abandon_intent(intent).await;
            return Err(io_error("create", &shown, e));
        }
        self.stage_and_fire(intent, project, "FILE_CREATE", &shown, "folder", &meta).await?;
        Ok(FileOutcome { path: shown, kind: "folder", meta, created: Some(true) })
    }

    /// Deletes a file, or a folder with everything in it: FILE_DELETE.
    pub async fn delete_path(&self, project: &str, raw_path: &str) -> Result<FileOutcome, EngineError> {
        let segments = request_path(raw_path)?;
        if segments.is_empty() {
            return Err(invalid("`path` must name a file or folder; the root folder cannot be deleted"));
        }
        let shown = display_path(&segments);
        let target = self.disk_path(project, &segments).await?;
        let m = tokio::fs::metadata(&target).await.map_err(|e| io_error("delete", &shown, e))?;
        let (kind, meta) = if m.is_dir() {
            ("folder", json!({}))
        } else {
            ("file", json!({"size": m.len(), "contentType": content_type_of(&target)}))
        };
        let intent = self.record_intent(project, "delete", kind, &shown, None, &meta).await?;
        let removed =
            if m.is_dir() { tokio::fs::remove_dir_all(&target).await } else { tokio::fs::remove_file(&target).await };
        if let Err(e) = removed {
            self.abandon_intent(intent).await;
            return Err(io_error("delete", &shown, e));
        }
        self.stage_and_fire(intent, project, "FILE_DELETE", &shown, kind, &meta).await?;
        Ok(FileOutcome { path: shown, kind, meta, created: None })
    }

    /// A file to download, or a folder's listing.
    pub async fn read_path(&self, project: &str, raw_path: &str) -> Result<Found, EngineError> {
        let segments = request_path(raw_path)?;
        let shown = display_path(&segments);
        let target = self.disk_path(project, &segments).await?;
        let m = match tokio::fs::metadata(&target).await {
            Ok(m) => m,
            // The root of a project that has stored nothing yet is an empty folder.
            Err(_) if segments.is_empty() => return Ok(Found::Folder { path: shown, items: Vec::new() }),
            Err(e) => return Err(io_error("read", &shown, e)),
        };
        if !m.is_dir() {
            // "a/b.txt/" names a folder; a file system answers ENOTDIR.
            if raw_path.ends_with('/') {
                return Err(EngineError::NotFound(format!("{shown} is a file, not a folder")));
            }
            return Ok(Found::File { content_type: content_type_of(&target), path: target, size: m.len() });
        }
        let mut items = Vec::new();
        let mut dir = tokio::fs::read_dir(&target).await.map_err(|e| io_error("list", &shown, e))?;
        while let Some(entry) = dir.next_entry().await.map_err(|e| io_error("list", &shown, e))? {
            let Ok(m) = entry.metadata().await else { continue };
            if m.file_type().is_symlink() {
                continue;
            }
            items.push(Entry {
                name: entry.file_name().to_string_lossy().into_owned(),
                kind: if m.is_dir() { "folder" } else { "file" },
                size: (!m.is_dir()).then_some(m.len()),
                modified_at: m.modified().ok().map(DateTime::<Utc>::from),
            });
        }
        items.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Ok(Found::Folder { path: shown, items })
    }

    async fn record_intent(
        &self,
        project: &str,
        op: &str,
        kind: &str,
        path: &str,
        tmp: Option<&Path>,
        meta: &Value,
    ) -> Result<Uuid, EngineError> {
        let id = Uuid::new_v4();
        let r = sqlx::query(
            "INSERT INTO file_intents (id, project, op, kind, path, tmp_path, meta, node)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(project)
        .bind(op)
        .bind(kind)
        .bind(path)
        .bind(tmp.map(|t| t.to_string_lossy().into_owned()))
        .bind(Json(meta))
        .bind(self.node_id())
        .execute(self.pool())
        .await;
        match r {
            Ok(_) => Ok(id),
            Err(e) if crate::store::is_foreign_key_violation(&e) => {
                Err(EngineError::NotFound(format!("no project '{project}'")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn abandon_intent(&self, id: Uuid) {
        if let Err(e) = sqlx::query("DELETE FROM file_intents WHERE id = $1").bind(id).execute(self.pool()).await {
            // The reconciler finds the disk unchanged and drops it later.
            tracing::warn!(intent = %id, error = %e, "cannot drop the intent of a failed file operation");
        }
    }

    /// Marks the intent staged (the disk holds the result), then queues the event
    /// and retires the intent in one transaction.
    async fn stage_and_fire(
        &self,
        intent: Uuid,
        project: &str,
        event_type: &str,
        path: &str,
        kind: &str,
        meta: &Value,
    ) -> Result<(), EngineError> {
        sqlx::query("UPDATE file_intents SET status = 'staged' WHERE id = $1").bind(intent).execute(self.pool()).await?;
        let mut tx = self.pool().begin().await?;
        let mine: Option<Uuid> = sqlx::query_scalar("DELETE FROM file_intents WHERE id = $1 RETURNING id")
            .bind(intent)
            .fetch_optional(&mut *tx)
            .await?;
        // None: the reconciler got there first and fired the event itself.
        if mine.is_some() {
            let event = file_event(event_type, path, kind, meta);
            store::enqueue(&mut tx, project, &[event], None).await?;
        }
        tx.commit().await?;
        if mine.is_some() {
            super::queue::count_queued(project, 1);
        }
        Ok(())
    }

    /// Settles intents older than the grace period that a crash left behind: this
    /// node's own, which its disk can judge (another node's slow delete is not a
    /// delete that happened here), and any node's staged ones, which the database
    /// alone shows to have happened. Returns how many events it fired.
    pub async fn reconcile_intents(&self) -> Result<usize, EngineError> {
        let mut tx = self.pool().begin().await?;
        let intents: Vec<Intent> = sqlx::query_as(
            "SELECT id, project, op, kind, path, tmp_path, meta, status, created_at FROM file_intents
             WHERE created_at < now() - make_interval(secs => $1)
               AND (node = $2 OR node IS NULL OR status = 'staged')
             ORDER BY created_at LIMIT 500 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.config().intent_grace.as_secs_f64())
        .bind(self.node_id())
        .fetch_all(&mut *tx)
        .await?;
        let mut fired = 0;
        for i in intents {
            let segments = parse_path(&i.path, "path").unwrap_or_default();
            let target = self.store_root(&i.project).join(segments.join("/"));
            let on_disk = tokio::fs::metadata(&target).await.ok();
            let upload_pending = match &i.tmp_path {
                Some(t) => tokio::fs::metadata(t).await.is_ok(),
                None => false,
            };
            let happened = i.status == "staged"
                || match (i.op.as_str(), &on_disk) {
                    ("create", Some(m)) => !upload_pending && m.is_dir() == (i.kind == "folder"),
                    ("delete", None) => true,
                    _ => false,
                };
            let age = (Utc::now() - i.created_at).to_std().unwrap_or_default();
            if !happened && age < ABANDONED_AFTER {
                // It may still be running (a large folder being deleted); look again later.
                continue;
            }
            if happened {
                let mut meta = i.meta.0.clone();
                if let (Some(m), "create", "file") = (&on_disk, i.op.as_str(), i.kind.as_str()) {
                    meta["size"] = json!(m.len());
                }
                let event_type = if i.op == "create" { "FILE_CREATE" } else { "FILE_DELETE" };
                store::enqueue(&mut tx, &i.project, &[file_event(event_type, &i.path, &i.kind, &meta)], None).await?;
                fired += 1;
                tracing::info!(path = %i.path, event_type, "reconciled a file operation interrupted by a crash");
            } else if let Some(t) = &i.tmp_path {
                let _ = tokio::fs::remove_file(t).await;
            }
            sqlx::query("DELETE FROM file_intents WHERE id = $1").bind(i.id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(fired)
    }

    /// Runs the reconciler at start-up and then every few seconds.
    pub(crate) async fn reconcile_loop(self) {
        let cancel = self.shutdown_token();
        let every = (self.config().intent_grace / 2).clamp(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            if let Err(e) = self.reconcile_intents().await {
                tracing::warn!(error = %e, "cannot reconcile file intents");
            }
            match self.sweep_tmp().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed temporary files of interrupted uploads"),
                Err(e) => tracing::warn!(error = %e, "cannot sweep the file store's temporary files"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }
}

impl Engine {
    fn tmp_dir(&self) -> PathBuf {
        self.config().files_dir.join(".tmp")
    }

    /// Removes temporary files that no upload will finish: not named by any file
    /// intent (a crashed upload's, which the reconciler settles) and untouched for
    /// longer than an upload may stay idle (another node sharing this folder may
    /// be writing a younger one). Runs at start-up and with the reconciler.
    pub async fn sweep_tmp(&self) -> Result<usize, EngineError> {
        let dir = self.tmp_dir();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error("read", ".tmp", e)),
        };
        let named: Vec<String> =
            sqlx::query_scalar("SELECT tmp_path FROM file_intents WHERE tmp_path IS NOT NULL").fetch_all(self.pool()).await?;
        let idle = self.config().upload_idle_timeout * 2;
        let mut removed = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let path = entry.path();
            if named.iter().any(|n| Path::new(n) == path) {
                continue;
            }
            let age = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            if age > idle && tokio::fs::remove_file(&path).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A temporary upload file, removed when dropped unless it was placed.
struct TmpFile(Option<PathBuf>);

impl TmpFile {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("the path is there until placed")
    }

    /// The file was renamed into place: nothing to remove.
    fn placed(mut self) {
        self.0 = None;
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Synchronous: a drop cannot wait, and unlinking one file is quick.
            let _ = std::fs::remove_file(path);
        }
    }
}

fn file_event(event_type: &str, path: &str, kind: &str, meta: &Value) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        event_type: event_type.to_string(),
        data: json!({"path": path, "meta": meta, "type": kind}),
        deliver_at: Utc::now().trunc_subsecs(6),
        synchronous: false,
        idempotency_key: None,
        ordering_key: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_the_store_are_refused() {
        for bad in ["../x", "a/../../x", "a/./b", "//etc/passwd", "a//b", "a\\..\\b", "a/\u{0}b"] {
            assert!(parse_path(bad, "path").is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_path("/a/b.txt", "path").unwrap(), vec!["a", "b.txt"]);
        assert_eq!(parse_path("a/b/", "path").unwrap(), vec!["a", "b"]);
        assert!(parse_path("/", "path").unwrap().is_empty());
        assert_eq!(display_path(&parse_path("x/y", "path").unwrap()), "/x/y");
        assert!(parse_path(&"a".repeat(2000), "path").unwrap_err().to_string().contains("longer"));
    }
}

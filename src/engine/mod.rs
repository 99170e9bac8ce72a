//! The eventing engine: queueing, dispatch, delivery, retries and synchronous
//! events. It knows nothing about HTTP handlers or the UI; the API and the UI's
//! server functions both call it.

pub mod admins;
pub mod dbevents;
pub mod deliver;
pub mod dispatch;
pub mod files;
pub mod flow;
pub mod grants;
pub mod guard;
pub mod live;
pub mod logs;
pub mod projects;
pub mod queue;
pub mod retention;
pub mod retry;
pub mod signin;
pub mod sync;
pub mod triggers;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use retry::RetryPolicy;

/// Errors the engine reports to its callers. The API maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad input; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Not allowed for this caller; the message says who may allow it.
    #[error("{0}")]
    Forbidden(String),
    /// A body over a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The file store's disk failed.
    #[error("{0}")]
    Storage(String),
    /// More work is waiting than this node takes on; the caller may retry.
    #[error("{0}")]
    Overloaded(String),
    /// The database cannot be reached right now; the caller may retry.
    #[error("the database is unavailable, try again shortly")]
    Unavailable(#[source] sqlx::Error),
    #[error("internal database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for EngineError {
    fn from(e: sqlx::Error) -> Self {
        if database_away(&e) {
            EngineError::Unavailable(e)
        } else if matches!(&e, sqlx::Error::Database(d) if d.code().as_deref() == Some(TEXT_NOT_STORABLE)) {
            // Every field is checked for a NUL where it comes in; this is the
            // backstop for one that was not, so it is the caller's error, not ours.
            EngineError::Invalid("a value holds a NUL character, which PostgreSQL cannot store in text".into())
        } else {
            EngineError::Database(e)
        }
    }
}

/// SQLSTATE 22021, character_not_in_repertoire: a text value with a NUL byte.
const TEXT_NOT_STORABLE: &str = "22021";

/// Whether an error means the database is unreachable or going away (a restart,
/// a failover) rather than that the statement was wrong: the caller may retry.
pub fn database_away(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) => true,
        // 08xxx: connection exceptions; 57P01-57P03: admin or crash shutdown,
        // cannot connect now (starting up or in recovery).
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")),
        _ => false,
    }
}

/// Tuning of one node's engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most deliveries in flight at once.
    pub concurrency: usize,
    /// Most event logs claimed in one statement.
    pub claim_batch: i64,
    /// Fallback poll when no NOTIFY arrives.
    pub poll_interval: Duration,
    /// Added to a trigger's timeout to make the lease of a claimed event log.
    pub lease_margin: Duration,
    /// How long a synchronous event waits for its deliveries.
    pub sync_timeout: Duration,
    /// How long shutdown waits for in-flight deliveries.
    pub shutdown_grace: Duration,
    pub retry: RetryPolicy,
    /// The SSRF guard; `None` lets deliveries reach any address.
    pub network_guard: Option<guard::NetworkGuard>,
    /// Database aliases besides `default` (Herald's own database), with their URLs.
    pub databases: Vec<(String, String)>,
    /// Root of the file store.
    pub files_dir: std::path::PathBuf,
    /// Largest file the file store accepts.
    pub max_file_bytes: u64,
    /// How old a file intent must be before the reconciler settles it; younger
    /// ones may still be in progress on some node.
    pub intent_grace: Duration,
    /// An upload that sends no bytes for this long is cut off (SPEC §8: an idle
    /// timeout, not a total one).
    pub upload_idle_timeout: Duration,
    /// When a trigger's circuit opens, and how it probes (SPEC §10).
    pub breaker: crate::store::flow::BreakerRule,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            concurrency: 512,
            claim_batch: 500,
            poll_interval: Duration::from_secs(2),
            lease_margin: Duration::from_secs(30),
            sync_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            network_guard: None,
            databases: Vec::new(),
            files_dir: std::path::PathBuf::from("data/files"),
            max_file_bytes: 100 * 1024 * 1024,
            intent_grace: Duration::from_secs(60),
            upload_idle_timeout: Duration::from_secs(30),
            breaker: Default::default(),
        }
    }
}

/// A handle on the engine of this node. Cheap to clone.
#[derive(Clone)]
pub struct Engine(Arc<Inner>);

struct Inner {
    pool: PgPool,
    /// Connections for the hot path's writes; the main pool unless set.
    writer: PgPool,
    /// Connections for the history's reads (a streaming replica's, with
    /// HERALD_READ_DATABASE_URL); the main pool unless set.
    reader: PgPool,
    /// Every database alias, `default` included, with a pool for it.
    databases: dbevents::Databases,
    node_id: Uuid,
    config: EngineConfig,
    http: reqwest::Client,
    /// Wakes the dispatcher: a NOTIFY arrived, or a delivery slot freed up.
    wake: Notify,
    /// Free delivery slots of the dispatcher.
    slots: Arc<Semaphore>,
    /// Every delivery task, so that shutdown can wait for them.
    tasks: TaskTracker,
    /// The event logs this node holds a lease on and is working on (waiting for a
    /// slot, making the attempt, or recording it): their leases are renewed while
    /// the node lives, so a lease always outlives the recording of its attempt.
    held: std::sync::Mutex<std::collections::HashMap<Uuid, u32>>,
    /// Cancelled once shutdown has handed the leases back: renewal stops there.
    leases_handed_back: CancellationToken,
    /// The projects whose history open pages watch (live updates).
    live: live::Hub,
    /// Cancelled when shutdown's grace period is over: attempts still running stop
    /// before their leases are handed back, so no attempt runs while another node
    /// makes the same delivery.
    abandon: CancellationToken,
    /// Attempts waiting to be recorded by the completer, many per transaction.
    completions: tokio::sync::mpsc::UnboundedSender<dispatch::PendingCompletion>,
    completion_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<dispatch::PendingCompletion>>>,
    completer_running: std::sync::atomic::AtomicBool,
    /// Events waiting to be stored by the enqueuer, many per transaction.
    enqueues: tokio::sync::mpsc::Sender<queue::PendingEnqueue>,
    enqueue_rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<queue::PendingEnqueue>>>,
    enqueuer_running: std::sync::atomic::AtomicBool,
    auth_cache: projects::AuthCache,
    /// Set once the dispatcher runs: queue calls may then lease their events to this node.
    dispatcher_running: std::sync::atomic::AtomicBool,
    /// Where the dispatcher's next claim starts reading the due logs.
    claim_floor: std::sync::Mutex<dispatch::ClaimFloor>,
    shutdown: CancellationToken,
    /// Per-trigger limits on this node, and the breaker's counts.
    flow: flow::Flow,
    /// This node's attempts per trigger, for /metrics.
    delivery_counts: crate::metrics::DeliveryCounts,
}

impl Engine {
    pub fn new(pool: PgPool, node_id: Uuid, config: EngineConfig) -> Self {
        let http = deliver::http_client(config.concurrency, config.network_guard.clone());
        crate::metrics::handle();
        let databases = dbevents::Databases::new(&pool, &config.databases);
        let (completions, completion_rx) = tokio::sync::mpsc::unbounded_channel();
        let (enqueues, enqueue_rx) = tokio::sync::mpsc::channel(queue::ENQUEUE_BACKLOG);
        Engine(Arc::new(Inner {
            enqueues,
            enqueue_rx: std::sync::Mutex::new(Some(enqueue_rx)),
            enqueuer_running: std::sync::atomic::AtomicBool::new(false),
            auth_cache: projects::AuthCache::default(),
            delivery_counts: Default::default(),
            dispatcher_running: std::sync::atomic::AtomicBool::new(false),
            claim_floor: Default::default(),
            completions,
            completion_rx: std::sync::Mutex::new(Some(completion_rx)),
            completer_running: std::sync::atomic::AtomicBool::new(false),
            databases,
            writer: pool.clone(),
            reader: pool.clone(),
            pool,
            node_id,
            slots: Arc::new(Semaphore::new(config.concurrency)),
            config,
            http,
            wake: Notify::new(),
            tasks: TaskTracker::new(),
            held: std::sync::Mutex::new(std::collections::HashMap::new()),
            leases_handed_back: CancellationToken::new(),
            live: live::Hub::default(),
            abandon: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            flow: flow::Flow::default(),
        }))
    }

    /// Uses `writer` for the hot path's writes (see [`crate::store::connect_writer`]);
    /// without it they go through the main pool. Call before the engine is shared.
    pub fn with_writer(mut self, writer: PgPool) -> Self {
        Arc::get_mut(&mut self.0).expect("with_writer is called before the engine is shared").writer = writer;
        self
    }

    /// Sends the history's reads (Mission Control's Event Logs and dead letters,
    /// the history API) to `reader`, a streaming replica's pool. Call before the
    /// engine is shared.
    pub fn with_reader(mut self, reader: PgPool) -> Self {
        Arc::get_mut(&mut self.0).expect("with_reader is called before the engine is shared").reader = reader;
        self
    }

    /// The pool the history is read from.
    pub(crate) fn reads(&self) -> &PgPool {
        &self.0.reader
    }

    pub fn pool(&self) -> &PgPool {
        &self.0.pool
    }

    /// The pool that stores events and records attempts.
    pub(crate) fn writer(&self) -> &PgPool {
        &self.0.writer
    }

    pub fn databases(&self) -> &dbevents::Databases {
        &self.0.databases
    }

    /// This node's id: the CloudEvents `source` and the `id` claim of X-SC-Token.
    pub fn node_id(&self) -> Uuid {
        self.0.node_id
    }

    pub fn config(&self) -> &EngineConfig {
        &self.0.config
    }

    /// Whether this node's LISTEN connection is up: new work and revoked
    /// credentials reach it at once (and only then does it remember credentials).
    pub fn hears_notifications(&self) -> bool {
        self.0.auth_cache.listening()
    }

    /// Deliveries running on this node right now.
    pub fn in_flight(&self) -> usize {
        self.0.tasks.len()
    }

    /// This node's series labelled by trigger, for /metrics (see
    /// [`crate::metrics::DeliveryCounts::render`]).
    pub fn trigger_metrics(&self, triggers: Option<&[(String, String, bool)]>) -> String {
        self.0.delivery_counts.render(triggers)
    }

    /// Signals the dispatcher and all delivery loops to stop.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.0.shutdown.clone()
    }
}

//! Test harness: a real Herald (engine + HTTP API) on a fresh database from
//! `#[sqlx::test]`, and a real webhook receiver on loopback that records every
//! request and answers as scripted.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald::api::AppState;
use herald::engine::projects::Role;
use herald::engine::{Engine, EngineConfig, RetryPolicy};
use herald::model::Status;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// What the receiver answers to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply { status, headers: vec![], body: String::new(), delay: Duration::ZERO }
    }
    pub fn json(status: u16, body: Value) -> Self {
        Reply { body: body.to_string(), headers: vec![("content-type", "application/json".into())], ..Reply::status(status) }
    }
    pub fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("Herald sends JSON")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

#[derive(Default)]
struct ReceiverState {
    log: Mutex<Vec<Received>>,
    /// Scripted replies, used in order; when empty, `fallback` answers.
    script: Mutex<VecDeque<Reply>>,
    fallback: Mutex<Option<Reply>>,
    /// Requests being answered right now, and the most there ever were at once.
    open: Mutex<(usize, usize)>,
}

/// A webhook receiver on 127.0.0.1:0.
#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new().fallback(receive).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { base, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Answers the next requests with these replies, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// Answers with this once the script is used up (200 "{}" by default).
    pub fn always(&self, reply: Reply) {
        *self.state.fallback.lock().unwrap() = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.log.lock().unwrap().len()
    }

    /// The most requests it was answering at once.
    pub fn max_concurrent(&self) -> usize {
        self.state.open.lock().unwrap().1
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.log.lock().unwrap().push(Received { path: uri.path().to_string(), headers, body, at: Instant::now() });
    let reply = state.script.lock().unwrap().pop_front();
    let reply = reply
        .or_else(|| state.fallback.lock().unwrap().clone())
        .unwrap_or_else(|| Reply::json(200, json!({})));
    {
        let mut open = state.open.lock().unwrap();
        open.0 += 1;
        open.1 = open.1.max(open.0);
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    state.open.lock().unwrap().0 -= 1;
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

/// Engine settings for tests: short waits everywhere, so nothing sleeps for long.
pub fn test_config() -> EngineConfig {
    EngineConfig {
        concurrency: 32,
        claim_batch: 32,
        poll_interval: Duration::from_millis(500),
        lease_margin: Duration::from_secs(1),
        sync_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(5),
        retry: RetryPolicy { base: Duration::from_millis(50), ..RetryPolicy::default() },
        network_guard: None,
        databases: Vec::new(),
        files_dir: std::env::temp_dir().join(format!("herald-test-files-{}", Uuid::new_v4())),
        max_file_bytes: 1024 * 1024,
        intent_grace: Duration::from_millis(500),
        upload_idle_timeout: Duration::from_secs(30),
        breaker: Default::default(),
    }
}

/// How the HTTP side of a test node is set up.
pub struct Serving {
    /// HERALD_METRICS_TOKEN.
    pub metrics_token: Option<String>,
    /// The total time limit of a request (file routes excepted).
    pub request_timeout: Duration,
    /// A pool the history is read from (HERALD_READ_DATABASE_URL).
    pub reader: Option<PgPool>,
}

impl Default for Serving {
    fn default() -> Self {
        Serving { metrics_token: None, request_timeout: Duration::from_secs(60), reader: None }
    }
}

/// A running Herald node: engine, dispatcher and HTTP API.
pub struct Herald {
    pub engine: Engine,
    pub pool: PgPool,
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl Herald {
    pub async fn start(pool: PgPool) -> Herald {
        Herald::start_with(pool, test_config()).await
    }

    pub async fn start_with(pool: PgPool, config: EngineConfig) -> Herald {
        Herald::start_custom(pool, config, Serving::default()).await
    }

    /// A node served with these HTTP settings.
    pub async fn start_custom(pool: PgPool, config: EngineConfig, serving: Serving) -> Herald {
        let Serving { metrics_token, request_timeout, reader } = serving;
        let mut engine = Engine::new(pool.clone(), Uuid::new_v4(), config);
        if let Some(reader) = reader {
            engine = engine.with_reader(reader);
        }
        let key = match engine.bootstrap().await.unwrap() {
            Some(key) => key,
            None => engine.create_api_key("default", Role::Admin, "test").await.unwrap(),
        };
        engine.start();
        let state = AppState {
            engine: engine.clone(),
            leptos_options: herald::server::leptos_options("127.0.0.1:0".parse().unwrap()),
            max_body_bytes: 64 * 1024,
            secure_cookies: false,
            metrics_token,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = herald::server::router(state, request_timeout).await.unwrap();
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Herald { engine, pool, base, key, http: reqwest::Client::new() }
    }

    /// POSTs JSON to a path with the admin key; returns the status and the JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{}", self.base, path)).json(&body)).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.bearer_auth(&self.key).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn queue(&self, body: Value) -> (u16, Value) {
        self.post("/v1/api/default/eventing/queue", body).await
    }

    /// DELETEs a path with the admin key.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}{}", self.base, path))).await
    }

    /// Adds a trigger through the API; `extra` may set retries, timeoutMs, headers.
    pub async fn trigger(&self, name: &str, event_type: &str, url: &str, extra: Value) {
        let mut body = json!({"name": name, "type": event_type, "url": url});
        body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
        let (status, reply) = self.post("/v1/api/default/eventing/triggers", body).await;
        assert_eq!(status, 201, "{reply}");
    }

    /// The statuses of an event's logs, in trigger-name order.
    pub async fn statuses(&self, event_id: &str) -> Vec<Status> {
        let id = Uuid::parse_str(event_id).unwrap();
        herald::store::history::logs_of_event(&self.pool, "default", id)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.status)
            .collect()
    }

    pub async fn logs(&self, event_id: &str) -> Vec<herald::model::EventLog> {
        let id = Uuid::parse_str(event_id).unwrap();
        herald::store::history::logs_of_event(&self.pool, "default", id).await.unwrap()
    }

    /// Waits until every event log of the event has one of the final statuses.
    pub async fn settled(&self, event_id: &str) -> Vec<Status> {
        let id = event_id.to_string();
        wait_for(Duration::from_secs(20), || async {
            let s = self.statuses(&id).await;
            (!s.is_empty() && s.iter().all(|st| st.is_final())).then_some(s)
        })
        .await
    }
}

/// A PostgreSQL URL for another database on the test cluster, as `user`.
pub fn database_url(database: &str, user: &str) -> String {
    let base = std::env::var("DATABASE_URL").expect("tests run under scripts/with-postgres.sh");
    let mut url = reqwest::Url::parse(&base).expect("DATABASE_URL is a URL");
    url.set_path(&format!("/{database}"));
    let query: Vec<(String, String)> =
        url.query_pairs().filter(|(k, _)| k != "user").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    url.query_pairs_mut().clear().extend_pairs(query).append_pair("user", user);
    url.to_string()
}

/// Polls `check` until it returns `Some`, failing the test after `bound`.
pub async fn wait_for<T, F, Fut>(bound: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

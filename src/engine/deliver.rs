//! One delivery attempt: the CloudEvents body, the signatures, the HTTP POST and
//! the verdict.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

use super::guard::{Blocked, GuardedResolver, NetworkGuard};
use crate::store::events::{Job, NewInvocation};

/// The most response body kept, and read, per attempt.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Lifetime of the X-SC-Token JWT.
const TOKEN_TTL_SECS: i64 = 30 * 60;
/// Headers a trigger's own headers cannot set: those Herald sets itself, and those
/// that frame the request or the connection (a `Host` or `Content-Length` of the
/// trigger's choosing would smuggle a request to another virtual host or past a proxy).
pub const RESERVED: [&str; 15] = [
    "content-type", "x-sc-token", "webhook-id", "webhook-timestamp", "webhook-signature",
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer",
    "proxy-connection", "expect",
];

/// The shared HTTP client: keep-alive pools, no redirects (a redirect is a failed
/// attempt, never a silent POST to somewhere else).
pub fn http_client(pool_size: usize, guard: Option<NetworkGuard>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder();
    if let Some(guard) = guard {
        // A proxy (HTTP_PROXY and friends, which reqwest honours by default) would
        // resolve and connect on Herald's behalf, past the guard.
        builder = builder.dns_resolver(Arc::new(GuardedResolver(Arc::new(guard)))).no_proxy();
    }
    builder
        .user_agent(concat!("Herald/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(pool_size)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .expect("the HTTP client settings are static and valid")
}

/// What the attempt means for the event log.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// A 2xx.
    Delivered,
    /// Worth another try: a timeout, a connection error, a 5xx, a 429 or any other
    /// non-2xx. `retry_after` is the receiver's own wait, on a 429 or 503.
    Retryable { retry_after: Option<Duration> },
    /// Never worth another try: a 410 Gone, or a URL that cannot be requested.
    Fatal,
}

/// The outcome of one attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub verdict: Verdict,
    pub invocation: NewInvocation,
    /// The response body, when it was JSON.
    pub response_json: Option<Value>,
}

/// The CloudEvents body of SPEC §3.
pub fn cloud_event(job: &Job, node_id: Uuid) -> Value {
    json!({
        "specversion": "1.0-rc1",
        "id": job.id,
        "type": job.event_type,
        "source": node_id,
        "time": job.event_time.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": job.data.0,
    })
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the decoded
/// `whsec_` secret, as Standard Webhooks defines it.
pub fn sign(signing_secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw = signing_secret.strip_prefix("whsec_").unwrap_or(signing_secret);
    let key = b64.decode(raw).unwrap_or_else(|_| raw.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts keys of any length");
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", b64.encode(mac.finalize().into_bytes()))
}

/// The X-SC-Token: who sent the request, signed with the project's secret.
pub fn sc_token(jwt_secret: &str, node_id: Uuid, now: i64) -> String {
    let claims = json!({"id": node_id, "role": "SpaceCloud", "iat": now, "exp": now + TOKEN_TTL_SECS});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(jwt_secret.as_bytes()),
    )
    .expect("HS256 signing of a JSON object cannot fail")
}

/// Header names whose values are secrets, and are not written to invocation logs.
fn is_sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "cookie" || ["auth", "token", "secret", "key", "password"].iter().any(|s| n.contains(s))
}

/// Makes one attempt of `job`, bounded by `timeout` from connect to the last byte read.
pub async fn attempt(
    http: &reqwest::Client,
    guard: Option<&NetworkGuard>,
    node_id: Uuid,
    job: &Job,
    timeout: Duration,
) -> Attempt {
    let body = serde_json::to_vec(&cloud_event(job, node_id)).expect("a JSON value always serialises");
    let now = Utc::now();
    let msg_id = job.id.to_string();
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let token = sc_token(&job.jwt_secret, node_id, now.timestamp());
    headers.insert("x-sc-token", HeaderValue::from_str(&token).expect("a JWT is a valid header value"));
    headers.insert("webhook-id", HeaderValue::from_str(&msg_id).expect("a UUID is a valid header value"));
    headers.insert("webhook-timestamp", HeaderValue::from(now.timestamp()));
    let signature = sign(&job.signing_secret, &msg_id, now.timestamp(), &body);
    headers.insert("webhook-signature", HeaderValue::from_str(&signature).expect("base64 is a valid header value"));
    for (k, v) in job.headers.iter().flat_map(|h| h.0.iter()) {
        // Validated when the trigger was saved; skip anything that slipped through.
        let (Ok(name), Some(Ok(value))) = (HeaderName::from_bytes(k.as_bytes()), v.as_str().map(HeaderValue::from_str))
        else {
            continue;
        };
        if !RESERVED.contains(&name.as_str()) {
            headers.insert(name, value);
        }
    }
    let logged_headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            let shown = if is_sensitive(k.as_str()) { "[redacted]" } else { v.to_str().unwrap_or("[binary]") };
            (k.to_string(), Value::String(shown.to_string()))
        })
        .collect();

    let started = Instant::now();
    let url = job.url.clone().unwrap_or_default();
    let result = tokio::time::timeout(timeout, send(http, guard, &url, headers, body.clone())).await;
    let duration_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
    let mut inv = NewInvocation {
        started_at: now,
        duration_ms,
        status_code: None,
        request_headers: Value::Object(logged_headers),
        request_body: String::from_utf8_lossy(&body).into_owned(),
        response_headers: None,
        response_body: None,
        error: None,
    };
    let (verdict, response_json) = match result {
        Err(_) => {
            inv.error = Some(format!("timed out after {} ms", timeout.as_millis()));
            (Verdict::Retryable { retry_after: None }, None)
        }
        Ok(Err(SendError::Url(e))) => {
            inv.error = Some(format!("cannot request {}: {e}", redact_url(&url)));
            (Verdict::Fatal, None)
        }
        Ok(Err(SendError::Http(e))) => {
            inv.error = Some(error_chain(&e));
            // A connection the SSRF guard refused will be refused again, and a
            // request that could not be built (a URL no HTTP request can carry)
            // cannot be built again: fail now.
            let refused = e.is_builder() || source_chain(&e).any(|s| s.is::<Blocked>());
            (if refused { Verdict::Fatal } else { Verdict::Retryable { retry_after: None } }, None)
        }
        Ok(Ok(resp)) => {
            inv.status_code = Some(resp.status.as_u16() as i32);
            inv.response_headers = Some(Value::Object(
                resp.headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.to_str().unwrap_or("[binary]").to_string())))
                    .collect(),
            ));
            let json = serde_json::from_slice::<Value>(&resp.body).ok();
            inv.response_body = Some(String::from_utf8_lossy(&resp.body).into_owned());
            let verdict = classify(resp.status, &resp.headers);
            if verdict != Verdict::Delivered {
                let mut msg = format!("HTTP {}", resp.status);
                if resp.truncated {
                    msg.push_str(" (response body cut at 64 KiB)");
                }
                inv.error = Some(msg);
            }
            (verdict, json)
        }
    };
    Attempt { verdict, invocation: inv, response_json }
}

/// Maps an HTTP answer to a verdict (SPEC §3).
pub fn classify(status: StatusCode, headers: &HeaderMap) -> Verdict {
    if status.is_success() {
        return Verdict::Delivered;
    }
    if status == StatusCode::GONE {
        return Verdict::Fatal;
    }
    let retry_after = if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after)
    } else {
        None
    };
    Verdict::Retryable { retry_after }
}

/// `Retry-After` as delta-seconds or an HTTP-date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    truncated: bool,
}

enum SendError {
    Url(String),
    Http(reqwest::Error),
}

async fn send(
    http: &reqwest::Client,
    guard: Option<&NetworkGuard>,
    url: &str,
    headers: HeaderMap,
    body: Vec<u8>,
) -> Result<Response, SendError> {
    let url = reqwest::Url::parse(url).map_err(|e| SendError::Url(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SendError::Url(format!("unsupported scheme '{}'", url.scheme())));
    }
    // An IP literal never reaches the resolver, so the guard checks it here.
    let literal = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<std::net::IpAddr>().ok());
    if let (Some(guard), Some(ip)) = (guard, literal) {
        if !guard.permits(ip) {
            return Err(SendError::Url(Blocked { host: ip.to_string(), addrs: ip.to_string() }.to_string()));
        }
    }
    let mut resp = http.post(url).headers(headers).body(body).send().await.map_err(|e| SendError::Http(e.without_url()))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    let mut truncated = false;
    // Read at most 64 KiB; a receiver that sends more is cut off, and the
    // connection is dropped rather than drained.
    while let Some(chunk) = resp.chunk().await.map_err(|e| SendError::Http(e.without_url()))? {
        let room = MAX_RESPONSE_BYTES - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response { status, headers, body, truncated })
}

/// The causes of an error, outermost first.
fn source_chain<'a>(e: &'a reqwest::Error) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(e), |s| s.source())
}

/// A URL as it may appear in logs and error texts: its scheme, host and port only.
/// Paths and queries often carry secrets (Slack-style webhook URLs).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match u.host_str() {
            Some(host) => match u.port() {
                Some(port) => format!("{}://{host}:{port}/…", u.scheme()),
                None => format!("{}://{host}/…", u.scheme()),
            },
            None => format!("{}:…", u.scheme()),
        },
        Err(_) => "(an invalid URL)".to_string(),
    }
}

/// A reqwest error with its causes, e.g. "error sending request: connection
/// refused", without the URL (see [`redact_url`]).
fn error_chain(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    for s in source_chain(e) {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_verdicts() {
        let h = HeaderMap::new();
        assert_eq!(classify(StatusCode::OK, &h), Verdict::Delivered);
        assert_eq!(classify(StatusCode::NO_CONTENT, &h), Verdict::Delivered);
        assert_eq!(classify(StatusCode::GONE, &h), Verdict::Fatal);
        assert_eq!(classify(StatusCode::INTERNAL_SERVER_ERROR, &h), Verdict::Retryable { retry_after: None });
        assert_eq!(classify(StatusCode::FOUND, &h), Verdict::Retryable { retry_after: None });
        let mut ra = HeaderMap::new();
        ra.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(classify(StatusCode::TOO_MANY_REQUESTS, &ra), Verdict::Retryable {
            retry_after: Some(Duration::from_secs(7))
        });
        assert_eq!(classify(StatusCode::SERVICE_UNAVAILABLE, &ra), Verdict::Retryable {
            retry_after: Some(Duration::from_secs(7))
        });
        // Only 429 and 503 carry a Retry-After that Herald honours.
        assert_eq!(classify(StatusCode::BAD_GATEWAY, &ra), Verdict::Retryable { retry_after: None });
    }

    #[test]
    fn retry_after_as_http_date() {
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(d <= Duration::from_secs(120) && d >= Duration::from_secs(118), "{d:?}");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The test vector published with the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}

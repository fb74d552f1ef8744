//! The one request path every provider call takes: per-tenant concurrency bounds, the
//! `x-ms-throttle-priority` header, timeouts, and retries that honour `Retry-After`
//! (MICROSOFT.md §4), with throttle counters for metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::HeaderMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::error::{DirectoryError, ProviderFailure};

/// Bodies of failed responses are read up to this size; error bodies are small, and a huge one
/// is not worth holding in memory (the rest is not read).
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Successful bodies larger than this fail as `invalid`. A 999-user Graph page with every
/// selected property is a few MiB; 32 MiB leaves room for long attribute values while keeping
/// a hostile or broken endpoint from exhausting memory.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How requests are sent and retried. The defaults suit background syncs.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Whole-request timeout, including reading the body.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: usize,
    /// First backoff delay when the provider gave no `Retry-After`; doubles per attempt.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not slept through inside one call: the call fails
    /// as transient with `retry_after` set, so the caller (Temporal) can schedule the retry.
    pub max_retry_after: Duration,
    /// Concurrent requests per managed tenant (Graph throttles per app per tenant, §4).
    pub per_tenant_concurrency: usize,
    /// Sends `x-ms-throttle-priority: Low` (MICROSOFT.md §4, SPEC §5.1) on every call.
    pub background: bool,
    /// Lets clients of administrator-typed endpoints (CIPP) reach loopback, private and
    /// link-local addresses (`ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS`; see `outbound`). Off by
    /// default; Microsoft's endpoints are not subject to it.
    pub allow_private_endpoints: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            request_timeout: Duration::from_secs(100),
            connect_timeout: Duration::from_secs(10),
            max_attempts: 5,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
            per_tenant_concurrency: 4,
            background: true,
            allow_private_endpoints: false,
        }
    }
}

/// Throttling counters shared with the metrics exporter. All counters only grow.
#[derive(Debug, Default)]
pub struct ThrottleStats {
    throttled_responses: AtomicU64,
    retries: AtomicU64,
    wait_millis: AtomicU64,
}

impl ThrottleStats {
    /// Responses with status 429.
    pub fn throttled_responses(&self) -> u64 {
        self.throttled_responses.load(Ordering::Relaxed)
    }

    /// Requests sent again after a retryable failure.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Time spent waiting before retries.
    pub fn total_wait(&self) -> Duration {
        Duration::from_millis(self.wait_millis.load(Ordering::Relaxed))
    }

    fn record_retry(&self, status: Option<u16>, wait: Duration) {
        if status == Some(429) {
            self.throttled_responses.fetch_add(1, Ordering::Relaxed);
        }
        self.retries.fetch_add(1, Ordering::Relaxed);
        let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.wait_millis.fetch_add(millis, Ordering::Relaxed);
        metrics::counter!("entra_sync_provider_retries_total").increment(1);
        metrics::counter!("entra_sync_provider_wait_milliseconds_total").increment(millis);
    }
}

/// A failed HTTP answer as read off the wire, before classification.
#[derive(Debug)]
pub(crate) struct FailedResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl FailedResponse {
    pub fn retry_after(&self) -> Option<Duration> {
        parse_retry_after(&self.headers)
    }

    /// Reads the OAuth (`error`, `error_codes`) or Graph (`error.code`) shape of the body.
    pub fn provider_failure(&self) -> ProviderFailure {
        let mut failure = ProviderFailure {
            status: Some(self.status),
            retry_after: self.retry_after(),
            ..ProviderFailure::default()
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&self.body) else {
            return failure;
        };
        match value.get("error") {
            Some(serde_json::Value::String(oauth_error)) => {
                failure.oauth_error = Some(oauth_error.clone());
                failure.error_codes = value
                    .get("error_codes")
                    .and_then(|codes| codes.as_array())
                    .map(|codes| codes.iter().filter_map(|code| code.as_u64()).collect())
                    .unwrap_or_default();
                failure.message = value
                    .get("error_description")
                    .and_then(|text| text.as_str())
                    .map(short_description)
                    .unwrap_or_default();
            }
            Some(serde_json::Value::Object(graph_error)) => {
                failure.graph_code = graph_error
                    .get("code")
                    .and_then(|code| code.as_str())
                    .map(str::to_owned);
                failure.message = graph_error
                    .get("message")
                    .and_then(|text| text.as_str())
                    .map(short_description)
                    .unwrap_or_default();
            }
            _ => {}
        }
        failure
    }
}

/// The first line of a provider's description, without the trace and correlation ids, and
/// capped so an odd provider cannot flood logs or results.
pub(crate) fn short_description(text: &str) -> String {
    let first_line = text.lines().next().unwrap_or_default();
    let without_trace = match first_line.find(" Trace ID:") {
        Some(index) => &first_line[..index],
        None => first_line,
    };
    without_trace.trim().chars().take(300).collect()
}

/// `Retry-After` in seconds (what Graph sends, §4) or as an HTTP date.
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    // Round up so a date-based wait is never shorter than asked.
    let millis = u64::try_from(wait.num_milliseconds()).unwrap_or(0);
    Some(Duration::from_millis(millis.div_ceil(1000) * 1000))
}

/// One semaphore per managed tenant, created on first use.
#[derive(Debug)]
struct TenantLimiter {
    permits: usize,
    semaphores: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl TenantLimiter {
    async fn acquire(&self, tenant: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut semaphores = self.semaphores.lock().ok()?;
            semaphores
                .entry(tenant.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.permits.max(1))))
                .clone()
        };
        semaphore.acquire_owned().await.ok()
    }
}

/// The shared HTTP client of one provider client.
#[derive(Debug, Clone)]
pub(crate) struct HttpCore {
    client: reqwest::Client,
    settings: HttpSettings,
    stats: Arc<ThrottleStats>,
    limiter: Arc<TenantLimiter>,
}

impl HttpCore {
    pub fn new(settings: HttpSettings, stats: Arc<ThrottleStats>) -> Result<Self, DirectoryError> {
        HttpCore::build(settings, stats, true)
    }

    /// A core for an endpoint an administrator configured (CIPP): unless
    /// `allow_private_endpoints`, only public addresses are dialled, checked on every
    /// connection (`outbound::PublicOnlyResolver`).
    pub fn for_configured_endpoint(
        settings: HttpSettings,
        stats: Arc<ThrottleStats>,
    ) -> Result<Self, DirectoryError> {
        let allow_private = settings.allow_private_endpoints;
        HttpCore::build(settings, stats, allow_private)
    }

    fn build(
        settings: HttpSettings,
        stats: Arc<ThrottleStats>,
        allow_private: bool,
    ) -> Result<Self, DirectoryError> {
        let builder = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.connect_timeout)
            // Graph's nextLinks are followed by us, after a host check; never by the client.
            .redirect(reqwest::redirect::Policy::none());
        let client = crate::outbound::apply(builder, allow_private)
            .build()
            .map_err(|error| DirectoryError::Config {
                code: "http_client".to_owned(),
                message: format!("cannot build the HTTP client: {error}"),
                setting: "TLS configuration".to_owned(),
            })?;
        let limiter = Arc::new(TenantLimiter {
            permits: settings.per_tenant_concurrency,
            semaphores: Mutex::new(HashMap::new()),
        });
        Ok(HttpCore {
            client,
            settings,
            stats,
            limiter,
        })
    }

    /// Sends a request built by `build` (called once per attempt) until it succeeds, fails in
    /// a way `classify` calls non-retryable, or attempts run out. 429/503/504 wait at least the
    /// `Retry-After` the provider gave; otherwise exponential backoff with jitter over
    /// `[d, 2d)`, so no retry is immediate (§4: "Never retry immediately").
    pub async fn send(
        &self,
        tenant: Option<&str>,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        classify: impl Fn(&FailedResponse) -> DirectoryError,
    ) -> Result<reqwest::Response, DirectoryError> {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.min_backoff)
            .with_max_delay(self.settings.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        let max_attempts = self.settings.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (error, status) = {
                let _permit = match tenant {
                    Some(tenant) => self.limiter.acquire(tenant).await,
                    None => None,
                };
                let mut request = build(&self.client);
                if self.settings.background {
                    request = request.header("x-ms-throttle-priority", "Low");
                }
                let response = match request.build() {
                    Ok(request) => {
                        let span = request_span(&request, tenant, attempt);
                        let response = self.client.execute(request).instrument(span.clone()).await;
                        match &response {
                            Ok(response) => {
                                span.record(
                                    "http.response.status_code",
                                    response.status().as_u16(),
                                );
                                if !response.status().is_success() {
                                    span.record("otel.status_code", "ERROR");
                                }
                            }
                            Err(_) => {
                                span.record("otel.status_code", "ERROR");
                            }
                        }
                        response
                    }
                    Err(error) => Err(error),
                };
                record_request(&response);
                match response {
                    Ok(response) if response.status().is_success() => return Ok(response),
                    Ok(response) => {
                        let failed = read_failed(response).await;
                        let status = failed.status;
                        (classify(&failed), Some(status))
                    }
                    Err(error) => (transport_error(&error), None),
                }
            };
            if !error.is_retryable() || attempt >= max_attempts {
                return Err(error);
            }
            let provider_wait = match &error {
                DirectoryError::Transient { retry_after, .. } => *retry_after,
                _ => None,
            };
            let wait = match provider_wait {
                Some(wait) if wait > self.settings.max_retry_after => return Err(error),
                Some(wait) if !wait.is_zero() => wait,
                _ => backoff.next().unwrap_or(self.settings.max_backoff),
            };
            tracing::warn!(
                class = error.class(),
                code = error.code().unwrap_or_default(),
                status = status.unwrap_or_default(),
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "retrying provider request"
            );
            self.stats.record_retry(status, wait);
            tokio::time::sleep(wait).await;
        }
    }
}

/// The span of one provider request (one attempt): method, host and path — never the query
/// (paging and delta links carry opaque tokens, CIPP's tenant filter a domain) nor a header (the
/// bearer token) — plus the Entra tenant asked about and the attempt number. A path that
/// names a user by address is left out whole.
fn request_span(request: &reqwest::Request, tenant: Option<&str>, attempt: usize) -> tracing::Span {
    let url = request.url();
    let host = url.host_str().unwrap_or_default();
    let path = url.path();
    let path = if path.contains('@') { "" } else { path };
    tracing::info_span!(
        "provider.request",
        otel.name = format!("{} {host}", request.method()),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = %request.method(),
        server.address = host,
        url.path = path,
        entra_tenant_id = tenant,
        attempt,
        http.response.status_code = tracing::field::Empty,
    )
}

/// Counts every provider request by status (SPEC §9: Microsoft requests by status, throttled
/// requests). Transport failures count under `error`.
fn record_request(response: &Result<reqwest::Response, reqwest::Error>) {
    let status = match response {
        Ok(response) => response.status().as_u16().to_string(),
        Err(_) => "error".to_owned(),
    };
    if status == "429" {
        metrics::counter!("entra_sync_throttled_requests_total").increment(1);
    }
    metrics::counter!("entra_sync_provider_requests_total", "status" => status).increment(1);
}

async fn read_failed(response: reqwest::Response) -> FailedResponse {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // Only the first MAX_ERROR_BODY_BYTES are read; a longer body is cut there.
    let bytes = match read_capped(response, MAX_ERROR_BODY_BYTES).await {
        Ok(Capped::Complete(bytes)) | Ok(Capped::Truncated(bytes)) => bytes,
        Err(_) => Vec::new(),
    };
    let body = String::from_utf8_lossy(&bytes).into_owned();
    FailedResponse {
        status,
        headers,
        body,
    }
}

/// A body read up to a cap.
pub enum Capped {
    Complete(Vec<u8>),
    /// The body was longer than the cap; these are its first `cap` bytes, and the rest was
    /// never read.
    Truncated(Vec<u8>),
}

/// Reads `response`'s body chunk by chunk and stops at `cap` bytes, so memory stays bounded
/// whatever the server sends (a `Content-Length` above the cap stops before reading at all).
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Capped, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|length| length > cap as u64)
    {
        return Ok(Capped::Truncated(Vec::new()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok(Capped::Truncated(body));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Capped::Complete(body))
}

/// A request that got no HTTP answer. reqwest's own text may hold the URL, so it is not used.
fn transport_error(error: &reqwest::Error) -> DirectoryError {
    if let Some(refusal) = crate::outbound::refused(error) {
        return DirectoryError::Config {
            code: "private_endpoint".to_owned(),
            message: refusal.to_string(),
            setting: "ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS".to_owned(),
        };
    }
    if error.is_timeout() {
        DirectoryError::Transient {
            code: "timeout".to_owned(),
            message: "the provider did not answer in time".to_owned(),
            retry_after: None,
        }
    } else if error.is_builder() {
        DirectoryError::invalid("the request could not be built")
    } else {
        DirectoryError::Transient {
            code: "connection".to_owned(),
            message: "the provider could not be reached".to_owned(),
            retry_after: None,
        }
    }
}

/// Reads a successful body as JSON, at most [`MAX_BODY_BYTES`]; a longer body or one that is
/// not JSON is `Invalid`.
pub(crate) async fn read_json(
    response: reqwest::Response,
) -> Result<serde_json::Value, DirectoryError> {
    read_json_capped(response, MAX_BODY_BYTES).await
}

pub(crate) async fn read_json_capped(
    response: reqwest::Response,
    cap: usize,
) -> Result<serde_json::Value, DirectoryError> {
    let bytes = match read_capped(response, cap).await {
        Ok(Capped::Complete(bytes)) => bytes,
        Ok(Capped::Truncated(_)) => {
            return Err(DirectoryError::invalid(format!(
                "the answer is larger than {cap} bytes"
            )))
        }
        Err(error) if error.is_timeout() => {
            return Err(DirectoryError::Transient {
                code: "timeout".to_owned(),
                message: "the provider did not finish the answer in time".to_owned(),
                retry_after: None,
            })
        }
        Err(_) => {
            return Err(DirectoryError::Transient {
                code: "connection".to_owned(),
                message: "the answer was cut off".to_owned(),
                retry_after: None,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|error| DirectoryError::invalid(format!("the answer is not JSON: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    fn failed(status: u16, body: &str) -> FailedResponse {
        FailedResponse {
            status,
            headers: HeaderMap::new(),
            body: body.to_owned(),
        }
    }

    /// An HTTP server on a free port that answers every request with `200` and a chunked
    /// body that never ends (until the client hangs up), and counts the bytes it wrote.
    async fn endless_server() -> (String, Arc<AtomicU64>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let written = Arc::new(AtomicU64::new(0));
        let counter = written.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b' '; 64 * 1024];
                    let framed = [
                        format!("{:x}\r\n", chunk.len()).into_bytes(),
                        chunk,
                        b"\r\n".to_vec(),
                    ]
                    .concat();
                    while socket.write_all(&framed).await.is_ok() {
                        counter.fetch_add(64 * 1024, Ordering::Relaxed);
                    }
                });
            }
        });
        (format!("http://{address}/"), written)
    }

    #[tokio::test]
    async fn an_endless_body_fails_as_invalid_at_the_cap_without_reading_it_all() {
        let (url, written) = endless_server().await;
        let response = reqwest::get(&url).await.expect("response");
        let outcome = tokio::time::timeout(Duration::from_secs(60), read_json(response))
            .await
            .expect("reading stops at the cap instead of running forever");
        match outcome {
            Err(DirectoryError::Invalid { message }) => {
                assert!(message.contains("larger than"), "{message}")
            }
            other => panic!("expected invalid, got {other:?}"),
        }
        // The reader stopped near the cap: far less than twice the cap was ever sent.
        assert!(written.load(Ordering::Relaxed) < 2 * MAX_BODY_BYTES as u64);
    }

    #[tokio::test]
    async fn an_endless_error_body_is_cut_at_the_error_cap() {
        let (url, _) = endless_server().await;
        let response = reqwest::get(&url).await.expect("response");
        let failed = tokio::time::timeout(Duration::from_secs(60), read_failed(response))
            .await
            .expect("reading stops at the error cap");
        assert_eq!(failed.body.len(), MAX_ERROR_BODY_BYTES);
    }

    #[tokio::test]
    async fn a_declared_length_above_the_cap_is_refused_before_reading() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 4096\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&[b'1'; 4096]).await;
            }
        });
        let response = reqwest::get(format!("http://{address}/"))
            .await
            .expect("response");
        assert!(matches!(
            read_json_capped(response, 1024).await,
            Err(DirectoryError::Invalid { .. })
        ));
    }

    #[test]
    fn oauth_error_body_is_read() {
        let body = r#"{"error":"invalid_grant","error_description":"AADSTS70008: The refresh token has expired. Trace ID: abc Correlation ID: def","error_codes":[70008],"trace_id":"abc"}"#;
        let failure = failed(400, body).provider_failure();
        assert_eq!(failure.oauth_error.as_deref(), Some("invalid_grant"));
        assert_eq!(failure.error_codes, vec![70008]);
        assert_eq!(
            failure.message,
            "AADSTS70008: The refresh token has expired."
        );
    }

    #[test]
    fn graph_error_body_is_read() {
        let body = r#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation.","innerError":{"request-id":"x"}}}"#;
        let failure = failed(403, body).provider_failure();
        assert_eq!(
            failure.graph_code.as_deref(),
            Some("Authorization_RequestDenied")
        );
        assert_eq!(
            failure.message,
            "Insufficient privileges to complete the operation."
        );
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(7)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).expect("header"));
        let wait = parse_retry_after(&headers).expect("a wait");
        assert!(
            wait >= Duration::from_secs(29) && wait <= Duration::from_secs(31),
            "{wait:?}"
        );
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&headers), None);
    }
}

//! Logs and metrics (SPEC §9). Logs: text for a terminal, or one JSON object per line with
//! `ENTRA_SYNC_LOG_FORMAT=json`. Metrics: one Prometheus recorder per process, rendered at
//! `/metrics` on the operations listener (`ENTRA_SYNC__METRICS__LISTEN`, beside `/healthz` and
//! `/readyz`, never on the public API), together with the Temporal SDK's worker metrics and
//! the gauges read from the database (runs by status, the review backlog). Libraries only emit
//! through the `metrics` facade; without a recorder (tests) that costs nothing. No metric
//! carries a PSA-tenant (or customer) label: that would grow without bound and put customer
//! identities into the monitoring system.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use entra_sync_store::Store;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use temporalio_common::telemetry::metrics::CoreMeter;
use temporalio_common::telemetry::{start_prometheus_metric_exporter, PrometheusExporterOptions};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields and the
    /// current span's fields.
    Json,
}

impl LogFormat {
    /// From `ENTRA_SYNC_LOG_FORMAT` (`text` or `json`, any case); unset or empty is text.
    pub fn parse(value: Option<&str>) -> Result<LogFormat> {
        match value.map(str::trim).unwrap_or("") {
            "" => Ok(LogFormat::Text),
            value if value.eq_ignore_ascii_case("text") => Ok(LogFormat::Text),
            value if value.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
            other => anyhow::bail!("ENTRA_SYNC_LOG_FORMAT must be `text` or `json`, not `{other}`"),
        }
    }
}

/// Installs the process's log subscriber (to stderr, filtered by `RUST_LOG`, default `info`).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // Already installed (a test calling twice): keep the first.
    let _ = result;
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub fn recorder() -> Result<PrometheusHandle> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    // Two callers at once (parallel tests, or serve and its gauges) must not both try to
    // install: the global recorder can be set only once.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALLING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The Temporal SDK's metrics (task slots, poll and schedule-to-start latencies, …, prefixed
/// `temporal_`). The SDK exports them only through its own Prometheus server, so it listens
/// on an ephemeral loopback port and `/metrics` appends what that server renders.
pub struct SdkMetrics {
    pub meter: Arc<dyn CoreMeter>,
    address: SocketAddr,
    client: reqwest::Client,
}

impl SdkMetrics {
    /// Starts the SDK's exporter on `127.0.0.1:0`. Needs a Tokio runtime.
    pub fn start() -> Result<SdkMetrics> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let started = start_prometheus_metric_exporter(
            PrometheusExporterOptions::builder()
                .socket_addr(loopback)
                .counters_total_suffix(true)
                .use_seconds_for_durations(true)
                .unit_suffix(true)
                .build(),
        )
        .context("starting the Temporal SDK's metrics exporter")?;
        Ok(SdkMetrics {
            meter: started.meter,
            address: started.bound_addr,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .context("building the SDK metrics client")?,
        })
    }

    async fn render(&self) -> Option<String> {
        let response = self
            .client
            .get(format!("http://{}/metrics", self.address))
            .send()
            .await
            .ok()?;
        response.text().await.ok()
    }
}

/// The gauges read from the database: runs by kind and status (running, and finished in the
/// last 24 hours), the open review items and the oldest one's age, and connected connections.
pub async fn refresh_database_gauges(store: &Store) -> Result<()> {
    let runs = store
        .run_status_counts()
        .await
        .context("counting runs by status")?;
    for kind in ["sync", "discovery"] {
        for status in ["running", "completed", "partial", "failed", "cancelled"] {
            let count = runs
                .iter()
                .find(|row| row.kind == kind && row.status == status)
                .map_or(0, |row| row.count);
            metrics::gauge!("entra_sync_runs", "kind" => kind, "status" => status)
                .set(count as f64);
        }
    }
    let backlog = store
        .review_backlog()
        .await
        .context("reading the review backlog")?;
    metrics::gauge!("entra_sync_review_backlog").set(backlog.open as f64);
    metrics::gauge!("entra_sync_review_backlog_oldest_seconds").set(backlog.oldest_age_seconds);
    let connected = store
        .count_connected()
        .await
        .context("counting connections")?;
    metrics::gauge!("entra_sync_active_connections").set(connected as f64);
    Ok(())
}

/// Refreshes the database gauges every `every`, for ever (spawn it). Failures are logged and
/// tried again next time.
pub async fn refresh_database_gauges_every(store: Store, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        if let Err(error) = refresh_database_gauges(&store).await {
            tracing::warn!(error = %format!("{error:#}"), "refreshing the database gauges failed");
        }
    }
}

/// The operations router: `/metrics` (this process's metrics, then the SDK's when given),
/// `/healthz` (the process answers) and `/readyz` (with a store: Postgres answers).
pub fn ops_router(
    handle: PrometheusHandle,
    store: Option<Store>,
    sdk: Option<Arc<SdkMetrics>>,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                let sdk = sdk.clone();
                async move {
                    let mut text = handle.render();
                    if let Some(sdk) = sdk {
                        if let Some(sdk_text) = sdk.render().await {
                            if !text.is_empty() && !text.ends_with('\n') {
                                text.push('\n');
                            }
                            text.push_str(&sdk_text);
                        }
                    }
                    text
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let store = store.clone();
                async move {
                    match store {
                        Some(store) => match store.ping().await {
                            Ok(()) => (StatusCode::OK, "ready"),
                            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
                        },
                        None => (StatusCode::OK, "ready"),
                    }
                }
            }),
        )
}

/// Kept for callers of the earlier API: `/metrics` (and the health routes) without SDK
/// metrics, refreshing the database gauges on each scrape when given a store.
pub fn metrics_router(handle: PrometheusHandle, store: Option<Store>) -> Router {
    ops_router(handle, store, None)
}

/// Serves `router` on `listen` in the background (the operations listener).
pub async fn spawn_ops_listener(listen: &str, router: Router) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the metrics listener {listen}"))?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    tracing::info!(listen = %address, "metrics and health listening");
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_text(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn metrics_endpoint_renders_what_the_libraries_emit() {
        let handle = recorder().expect("recorder");
        metrics::counter!("entra_sync_provider_requests_total", "status" => "429").increment(2);
        metrics::histogram!("entra_sync_tenant_sync_seconds", "result" => "ok").record(1.5);
        let (status, text) = get_text(metrics_router(handle, None), "/metrics").await;
        assert!(status.is_success());
        assert!(
            text.contains("entra_sync_provider_requests_total{status=\"429\"} 2"),
            "{text}"
        );
        assert!(text.contains("entra_sync_tenant_sync_seconds"), "{text}");
    }

    #[tokio::test]
    async fn health_routes_answer_without_a_store() {
        let handle = recorder().expect("recorder");
        let (status, _) = get_text(ops_router(handle.clone(), None, None), "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = get_text(ops_router(handle, None, None), "/readyz").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn log_format_is_text_unless_json_is_asked_for() {
        assert_eq!(LogFormat::parse(None).expect("unset"), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some("")).expect("empty"), LogFormat::Text);
        assert_eq!(
            LogFormat::parse(Some("JSON")).expect("json"),
            LogFormat::Json
        );
        assert!(LogFormat::parse(Some("xml")).is_err());
    }
}

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

/// Installs the process's log subscriber (to stderr, filtered by `RUST_LOG`, default `info`),
/// without traces. See [`init_telemetry`].
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::util::SubscriberInitExt;
    // Already installed (a test calling twice): keep the first.
    let _ = subscriber(
        format,
        None,
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    )
    .try_init();
}

/// The standard variable that turns traces on: the OTLP/HTTP collector's base URL (the
/// exporter posts to `{endpoint}/v1/traces`; `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` names the
/// full URL instead).
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";

/// Whether traces are exported, from the standard variables: an OTLP endpoint is set (and
/// `OTEL_SDK_DISABLED` is not `true`, nor `OTEL_TRACES_EXPORTER` `none`).
pub fn traces_enabled(variable: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| variable(name).is_some_and(|value| !value.trim().is_empty());
    let disabled = variable("OTEL_SDK_DISABLED")
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
        || variable("OTEL_TRACES_EXPORTER")
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("none"));
    (set(OTLP_ENDPOINT) || set(OTLP_TRACES_ENDPOINT)) && !disabled
}

/// What [`init_telemetry`] installed; [`Telemetry::shutdown`] exports the spans still queued.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports every span still queued and stops the exporter (bounded: a collector that does
    /// not answer delays the exit by at most about ten seconds). Call once, before the process
    /// exits (a graceful shutdown on SIGTERM ends here).
    pub fn shutdown(&self) {
        if let Some(provider) = &self.provider {
            if let Err(error) = provider.force_flush() {
                eprintln!("exporting the last spans failed: {error}");
            }
            let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
        }
    }
}

/// The tracer provider exporting over OTLP/HTTP (protobuf) with a batch processor, when
/// [`traces_enabled`] by `variable` (the process environment in production); None otherwise:
/// then no exporter exists and nothing is ever sent. The standard variables configure it
/// (`OTEL_EXPORTER_OTLP_*`, `OTEL_BSP_*`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`).
pub fn tracer_from_env(
    service: &str,
    variable: impl Fn(&str) -> Option<String>,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use opentelemetry_otlp::WithExportConfig;
    if !traces_enabled(&variable) {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .context("building the OTLP span exporter (OTEL_EXPORTER_OTLP_ENDPOINT)")?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if variable("OTEL_SERVICE_NAME").is_none_or(|name| name.trim().is_empty()) {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// Installs the log subscriber and, when [`traces_enabled`] by the environment, the
/// OpenTelemetry layer (see [`subscriber`]) with a tracer of service `service` (unless
/// `OTEL_SERVICE_NAME` says otherwise) and the W3C trace-context propagator (the Temporal
/// header and a caller's `traceparent`).
pub fn init_telemetry(format: LogFormat, service: &str) -> Result<Telemetry> {
    use tracing_subscriber::util::SubscriberInitExt;
    let provider = tracer_from_env(service, |name| std::env::var(name).ok())?;
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
    }
    let installed = subscriber(
        format,
        provider.clone(),
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    )
    .try_init();
    if installed.is_err() {
        // Already installed (a test calling twice): keep the first; export nothing from here.
        return Ok(Telemetry::default());
    }
    Ok(Telemetry { provider })
}

/// The process's subscriber: log lines to `writer` (filtered by `RUST_LOG`, default `info`)
/// and, with a tracer `provider`, the OpenTelemetry layer: this crate's spans (`entra_sync*`
/// targets: API requests, workflow starts, activities, provider requests) become exported
/// spans, and JSON log lines carry `trace_id` and `span_id`. `RUST_LOG` filters the log lines
/// only; the exported spans are this crate's `info` spans whatever it says.
pub fn subscriber(
    format: LogFormat,
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    writer: tracing_subscriber::fmt::writer::BoxMakeWriter,
) -> impl tracing::Subscriber + Send + Sync {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let dispatch = DispatchSlot::default();
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(JsonWithTraceIds {
                inner: tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
                dispatch: dispatch.clone(),
            })
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    let traces = provider.map(|provider| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("entra-sync"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("entra_sync", tracing::Level::INFO),
            )
    });
    tracing_subscriber::registry()
        .with(CaptureDispatch(dispatch))
        .with(logs)
        .with(traces)
}

/// The JSON format with the OpenTelemetry ids of the event's span, when it has valid ones
/// (traces on): `"trace_id"` (32 hex digits) and `"span_id"` (16) lead the object, so a log
/// line finds its trace. The ids are read through the dispatch [`CaptureDispatch`] saw: while
/// an event is being written the default dispatcher is not reachable (tracing guards against
/// re-entrance), so `Span::current()` would be empty here.
struct JsonWithTraceIds<F> {
    inner: F,
    dispatch: DispatchSlot,
}

/// Where [`CaptureDispatch`] keeps the subscriber's dispatch (weakly: the subscriber owns it).
#[derive(Clone, Default)]
struct DispatchSlot(Arc<OnceLock<tracing::dispatcher::WeakDispatch>>);

/// A layer that only remembers the dispatch it is registered with.
struct CaptureDispatch(DispatchSlot);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureDispatch {
    fn on_register_dispatch(&self, dispatch: &tracing::Dispatch) {
        let _ = self.0 .0.set(dispatch.downgrade());
    }
}

/// The (trace id, span id) of the span `event` belongs to, when OpenTelemetry knows it.
fn trace_ids(dispatch: &tracing::Dispatch, event: &tracing::Event<'_>) -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt;
    let id = match event.parent() {
        Some(id) => id.clone(),
        None if event.is_contextual() => dispatch.current_span().id()?.clone(),
        None => return None,
    };
    let context = tracing_opentelemetry::get_otel_context(&id, dispatch)?;
    let span = context.span();
    let ids = span.span_context();
    ids.is_valid()
        .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JsonWithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = self
            .dispatch
            .0
            .get()
            .and_then(tracing::dispatcher::WeakDispatch::upgrade)
            .and_then(|dispatch| trace_ids(&dispatch, event));
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        match line.strip_prefix('{') {
            Some(rest) => {
                let separator = if rest.trim_start().starts_with('}') {
                    ""
                } else {
                    ","
                };
                write!(
                    writer,
                    "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"{separator}{rest}"
                )
            }
            None => writer.write_str(&line),
        }
    }
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

    /// A log writer into memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn writer(&self) -> tracing_subscriber::fmt::writer::BoxMakeWriter {
            let lines = self.clone();
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(move || lines.clone())
        }

        fn json(&self) -> Vec<serde_json::Value> {
            let bytes = self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(|line| serde_json::from_str(line).expect("a JSON log line"))
                .collect()
        }
    }

    #[test]
    fn traces_are_off_unless_an_otlp_endpoint_is_set() {
        let unset = |_: &str| None;
        assert!(!traces_enabled(unset));
        assert!(tracer_from_env("entra-sync-test", unset)
            .expect("no error")
            .is_none());
        let empty = |name: &str| (name == OTLP_ENDPOINT).then(String::new);
        assert!(!traces_enabled(empty));
        let set = |name: &str| (name == OTLP_ENDPOINT).then(|| "http://127.0.0.1:4318".to_owned());
        assert!(traces_enabled(set));
        let traces_only = |name: &str| {
            (name == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .then(|| "http://127.0.0.1:4318/v1/traces".to_owned())
        };
        assert!(traces_enabled(traces_only));
        let disabled = |name: &str| match name {
            OTLP_ENDPOINT => Some("http://127.0.0.1:4318".to_owned()),
            "OTEL_SDK_DISABLED" => Some("true".to_owned()),
            _ => None,
        };
        assert!(!traces_enabled(disabled));
        let no_exporter = |name: &str| match name {
            OTLP_ENDPOINT => Some("http://127.0.0.1:4318".to_owned()),
            "OTEL_TRACES_EXPORTER" => Some("none".to_owned()),
            _ => None,
        };
        assert!(!traces_enabled(no_exporter));
    }

    #[test]
    fn json_log_lines_carry_the_trace_and_span_ids_when_tracing_is_on() {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let lines = Lines::default();
        let subscriber = subscriber(LogFormat::Json, Some(provider.clone()), lines.writer());
        tracing::subscriber::with_default(subscriber, || {
            // Warnings: `make test` runs with RUST_LOG=warn, which filters the log lines.
            let span = tracing::warn_span!("activity", run_id = "r-1");
            span.in_scope(|| tracing::warn!(pages = 2, "inside a span"));
            tracing::warn!("outside any span");
        });
        provider.force_flush().expect("flush");
        let spans = exporter.get_finished_spans().expect("spans");
        assert_eq!(spans.len(), 1, "{spans:?}");
        let exported = &spans[0];
        let lines = lines.json();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["message"], "inside a span");
        assert_eq!(
            lines[0]["trace_id"],
            exported.span_context.trace_id().to_string()
        );
        assert_eq!(
            lines[0]["span_id"],
            exported.span_context.span_id().to_string()
        );
        assert_eq!(lines[0]["pages"], 2);
        assert_eq!(lines[0]["span"]["run_id"], "r-1");
        assert_eq!(lines[1]["message"], "outside any span");
        assert!(lines[1].get("trace_id").is_none(), "{}", lines[1]);
    }

    #[test]
    fn without_a_tracer_nothing_is_traced_and_json_lines_have_no_trace_ids() {
        let lines = Lines::default();
        let subscriber = subscriber(LogFormat::Json, None, lines.writer());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::warn_span!("activity", run_id = "r-1");
            span.in_scope(|| tracing::warn!("inside a span"));
        });
        let lines = lines.json();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["span"]["run_id"], "r-1");
        assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
        assert!(lines[0].get("span_id").is_none(), "{}", lines[0]);
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

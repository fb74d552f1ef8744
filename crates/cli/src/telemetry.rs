//! Prometheus metrics (SPEC §9): one recorder per process, rendered at `/metrics` — on the API's
//! listener for `serve`, and on `ENTRA_SYNC__WORKER__METRICS_LISTEN` for a worker. Libraries
//! only emit through the `metrics` facade; without a recorder (tests) that costs nothing.

use std::sync::OnceLock;

use anyhow::{Context, Result};
use axum::routing::get;
use axum::Router;
use entra_sync_store::Store;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub fn recorder() -> Result<PrometheusHandle> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// A router serving `/metrics`. With a store, the active-connections gauge is refreshed on
/// each scrape, so it is right whichever process changed a connection.
pub fn metrics_router(handle: PrometheusHandle, store: Option<Store>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            let store = store.clone();
            async move {
                if let Some(store) = store {
                    if let Ok(connected) = store.count_connected().await {
                        metrics::gauge!("entra_sync_active_connections").set(connected as f64);
                    }
                }
                handle.render()
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn metrics_endpoint_renders_what_the_libraries_emit() {
        let handle = recorder().expect("recorder");
        metrics::counter!("entra_sync_provider_requests_total", "status" => "429").increment(2);
        metrics::histogram!("entra_sync_tenant_sync_seconds", "result" => "ok").record(1.5);
        let response = metrics_router(handle, None)
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert!(response.status().is_success());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("entra_sync_provider_requests_total{status=\"429\"} 2"),
            "{text}"
        );
        assert!(text.contains("entra_sync_tenant_sync_seconds"), "{text}");
    }
}

//! Liveness, readiness and the OpenAPI document.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    status: &'static str,
    database: &'static str,
    temporal: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "process up")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// The database and Temporal answer.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let database = match state.store.ping().await {
        Ok(_) => "ok",
        Err(error) => {
            tracing::warn!(%error, "readiness: database unreachable");
            "unreachable"
        }
    };
    let temporal = match state.starter.ready().await {
        Ok(()) => "ok",
        Err(error) => {
            tracing::warn!(%error, "readiness: temporal unreachable");
            "unreachable"
        }
    };
    let ready = database == "ok" && temporal == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if ready { "ready" } else { "not_ready" },
            database,
            temporal,
        }),
    )
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "the OpenAPI 3.1 document")))]
async fn openapi_json() -> Json<&'static serde_json::Value> {
    Json(crate::openapi::cached_document())
}

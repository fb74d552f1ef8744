//! The HTTP API of entra-sync (SPEC §7): an axum router over the store and a Temporal client.
//!
//! Only this crate knows HTTP status codes. Every route is declared once, through
//! `utoipa_axum::routes!`, so the router and the OpenAPI document served at
//! `/api/v1/openapi.json` cannot drift apart.

pub(crate) mod app;
pub mod auth;
pub(crate) mod console;
pub mod error;
pub mod extract;
mod limits;
pub mod openapi;
pub(crate) mod routes;
pub mod starter;
mod trace;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use secrecy::SecretString;
use url::Url;

pub use crate::starter::{TemporalStarter, WorkflowStarter};

/// The Microsoft endpoints and app registration the API needs (connect/direct and CIPP
/// API-client token minting).
#[derive(Clone)]
pub struct MicrosoftConfig {
    /// `MICROSOFT_LOGIN_BASE_URL`, default `https://login.microsoftonline.com`.
    pub login_base_url: Url,
    /// `MICROSOFT_GRAPH_BASE_URL`, default `https://graph.microsoft.com`.
    pub graph_base_url: Url,
    /// `MICROSOFT_CLIENT_ID`; None means direct connections are not configured.
    pub client_id: Option<String>,
    /// `MICROSOFT_CLIENT_SECRET`.
    pub client_secret: Option<SecretString>,
    /// `MICROSOFT_OAUTH_CALLBACK_URL`, the redirect URI registered in Azure.
    pub callback_url: Option<String>,
    /// The app-registration resolution of SPEC §2.1 (the PSA tenant's secrets, then the
    /// environment, then the application's secrets; secret, certificate or federated token).
    /// When set it replaces `client_id` and `client_secret`.
    pub app_registrations: Option<Arc<entra_sync_connection::AppCredentialResolver>>,
}

impl std::fmt::Debug for MicrosoftConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MicrosoftConfig")
            .field("login_base_url", &self.login_base_url.as_str())
            .field("graph_base_url", &self.graph_base_url.as_str())
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("callback_url", &self.callback_url)
            .field("app_registrations", &self.app_registrations.is_some())
            .finish()
    }
}

impl Default for MicrosoftConfig {
    fn default() -> Self {
        MicrosoftConfig {
            login_base_url: Url::parse("https://login.microsoftonline.com")
                .unwrap_or_else(|_| unreachable!("constant URL parses")),
            graph_base_url: Url::parse("https://graph.microsoft.com")
                .unwrap_or_else(|_| unreachable!("constant URL parses")),
            client_id: None,
            client_secret: None,
            callback_url: None,
            app_registrations: None,
        }
    }
}

/// The API's configuration, loaded once by the binary.
#[derive(Clone)]
pub struct ApiConfig {
    /// `ENTRA_SYNC_MASTER_KEY`: manages PSA tenants, users and feature flags.
    pub master_key: SecretString,
    /// Passed to every sync workflow: managed tenants synced at once.
    pub max_parallel_tenants: u32,
    pub microsoft: MicrosoftConfig,
    /// How long connect/validate wait for CIPP before answering 502.
    pub provider_timeout: std::time::Duration,
    /// `ENTRA_SYNC_OAUTH_STATE_TTL_SECONDS` (default 600).
    pub oauth_state_ttl: std::time::Duration,
    /// `ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS`: lets a CIPP base URL reach loopback, private and
    /// link-local addresses (off: such an endpoint is refused, see `directory::outbound`).
    pub allow_private_endpoints: bool,
    /// A request that has not been answered after this long gets 503 `timeout` (its work is
    /// dropped; a transaction in flight rolls back).
    pub request_timeout: std::time::Duration,
    /// Requests handled at once; more wait (within `request_timeout`) for a free slot, then
    /// get 503 `overloaded`.
    pub max_concurrent_requests: usize,
}

impl ApiConfig {
    /// A configuration with defaults for everything but the master key.
    pub fn new(master_key: SecretString) -> ApiConfig {
        ApiConfig {
            master_key,
            max_parallel_tenants: 16,
            microsoft: MicrosoftConfig::default(),
            provider_timeout: std::time::Duration::from_secs(20),
            oauth_state_ttl: std::time::Duration::from_secs(600),
            allow_private_endpoints: false,
            request_timeout: std::time::Duration::from_secs(60),
            max_concurrent_requests: 256,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ApiConfig")
            .field("master_key", &"<redacted>")
            .field("max_parallel_tenants", &self.max_parallel_tenants)
            .field("microsoft", &self.microsoft)
            .field("provider_timeout", &self.provider_timeout)
            .field("oauth_state_ttl", &self.oauth_state_ttl)
            .field("allow_private_endpoints", &self.allow_private_endpoints)
            .field("request_timeout", &self.request_timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .finish()
    }
}

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: entra_sync_store::Store,
    pub starter: Arc<dyn WorkflowStarter>,
    pub config: Arc<ApiConfig>,
    /// The connection layer: stored connections as directory sources (the preflight reads
    /// through it, with the same token lease as the worker).
    pub connections: Arc<entra_sync_connection::DirectoryFactory>,
}

impl AppState {
    pub fn new(
        store: entra_sync_store::Store,
        starter: Arc<dyn WorkflowStarter>,
        config: ApiConfig,
    ) -> AppState {
        let microsoft = &config.microsoft;
        let mut directory = entra_sync_connection::DirectorySettings::new(
            microsoft.login_base_url.clone(),
            microsoft.graph_base_url.clone(),
        );
        // A person waits on these calls: one attempt each, bounded by the provider timeout.
        directory.http =
            entra_sync_connection::interactive::interactive_http(config.provider_timeout, 1);
        directory.http.allow_private_endpoints = config.allow_private_endpoints;
        directory.app_registrations = microsoft.app_registrations.clone();
        directory.redirect_uri = microsoft.callback_url.clone();
        directory.retry_after_cap = config.provider_timeout;
        AppState {
            store,
            starter,
            connections: Arc::new(entra_sync_connection::DirectoryFactory::new(directory)),
            config: Arc::new(config),
        }
    }
}

/// The whole HTTP surface: `/api/v1/…`, the OAuth callback, `/healthz`, `/readyz` and the
/// OpenAPI document.
pub fn router(state: AppState) -> Router {
    let (router, _document) = routes::openapi_router().split_for_parts();
    let limits = limits::Limits::new(
        state.config.request_timeout,
        state.config.max_concurrent_requests,
    );
    router
        .merge(console::router(&state))
        .merge(routes::callback_with_trailing_slash())
        .fallback(routes::fallback)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            limits,
            limits::enforce,
        ))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// One span and one structured line per request: method, the route template (never the raw
/// URI, whose query can carry an OAuth code or state, or a search for an address), status and
/// latency. The span (`request`) is what OpenTelemetry exports as the request's server span;
/// the handlers record the PSA tenant (`auth::authorize`) and a started run's id on it. A
/// caller's W3C `traceparent` header makes it the span's parent.
async fn log_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        tenant_id = tracing::field::Empty,
        run_id = tracing::field::Empty,
    );
    trace::continue_remote_trace(&span, request.headers());
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    span.record("http.response.status_code", status);
    let _entered = span.enter();
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
        tracing::warn!(%method, %route, status, elapsed_ms, "request failed");
    } else if route == "/healthz" || route == "/readyz" {
        tracing::debug!(%method, %route, status, elapsed_ms, "request");
    } else {
        tracing::info!(%method, %route, status, elapsed_ms, "request");
    }
    drop(_entered);
    response
}

/// The OpenAPI document of [`router`], without building a state (for tests and tooling).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, document) = routes::openapi_router().split_for_parts();
    document
}

/// The OpenAPI document as served at `/api/v1/openapi.json`: [`openapi_document`] completed
/// with what the shared layers do (`openapi::complete`).
pub fn openapi_json() -> serde_json::Value {
    openapi::complete(&openapi_document())
}

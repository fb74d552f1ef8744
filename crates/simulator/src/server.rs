//! The HTTP router, the request log and the response helpers shared by the login, Graph and CIPP surfaces.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::state::{FaultKind, State as SimState};
use crate::{admin, cipp, graph, login, SimulatorConfig};

/// One request as the simulator saw it. Tokens are never recorded: only the authorization scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// MICROSOFT.md §4: background syncs send `x-ms-throttle-priority: Low`.
    pub throttle_priority: Option<String>,
    /// The scheme of the `Authorization` header (e.g. `Bearer`), never the credential.
    pub authorization_scheme: Option<String>,
    /// When the request arrived.
    pub at: Instant,
    pub status: u16,
}

/// How many requests the log keeps; past this the oldest half is dropped.
const REQUEST_LOG_CAPACITY: usize = 200_000;

pub(crate) struct Shared {
    pub config: SimulatorConfig,
    pub base_url: String,
    pub state: Mutex<SimState>,
    pub log: Mutex<Vec<LoggedRequest>>,
}

impl Shared {
    /// Locks the state; a poisoned lock (a panic elsewhere) still yields the data.
    pub fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn lock_log(&self) -> MutexGuard<'_, Vec<LoggedRequest>> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn graph_base(&self) -> String {
        format!("{}/graph", self.base_url)
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/login/{tenant}/oauth2/v2.0/token", post(login::token))
        .route(
            "/login/{tenant}/oauth2/v2.0/authorize",
            get(login::authorize),
        )
        .route("/login/{tenant}/adminconsent", get(login::admin_consent))
        .route("/graph/v1.0/users", get(graph::users))
        .route("/graph/v1.0/users/delta", get(graph::users_delta))
        .route(
            "/graph/v1.0/groups/{group}/transitiveMembers/microsoft.graph.user",
            get(graph::group_transitive_member_users),
        )
        // Graph docs: `/delta` is a shortcut for the fully qualified `/microsoft.graph.delta`.
        .route(
            "/graph/v1.0/users/microsoft.graph.delta",
            get(graph::users_delta),
        )
        .route(
            "/graph/v1.0/tenantRelationships/delegatedAdminRelationships",
            get(graph::relationships),
        )
        .route(
            "/graph/v1.0/tenantRelationships/delegatedAdminCustomers",
            get(graph::customers),
        )
        .route("/graph/v1.0/contracts", get(graph::contracts))
        .route("/graph/v1.0/domains", get(graph::domains))
        .route("/graph/v1.0/organization", get(graph::organization))
        .route("/cipp/api/ListTenants", get(cipp::list_tenants))
        .route("/cipp/api/ListUsers", get(cipp::list_users))
        .route("/cipp/api/ListGraphRequest", get(cipp::list_graph_request))
        .merge(admin::router())
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            throttle_limit_percentage,
        ))
        .layer(middleware::from_fn_with_state(shared.clone(), log_request))
        .with_state(shared)
}

async fn fallback(request: Request) -> Response {
    let path = request.uri().path().to_string();
    if path.starts_with("/graph/") {
        let segment = path.rsplit('/').next().unwrap_or_default();
        // MICROSOFT.md §4 error body.
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{segment}'."),
        );
    }
    (StatusCode::NOT_FOUND, "Not Found").into_response()
}

async fn log_request(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let at = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let throttle_priority = header_text(request.headers(), "x-ms-throttle-priority");
    let authorization_scheme = header_text(request.headers(), "authorization")
        .and_then(|value| value.split_whitespace().next().map(str::to_string));
    let response = next.run(request).await;
    if !path.starts_with("/_admin") {
        let mut log = shared.lock_log();
        // A long-running demo or benchmark must not grow without bound: keep the newest entries.
        if log.len() >= REQUEST_LOG_CAPACITY {
            log.drain(..REQUEST_LOG_CAPACITY / 2);
        }
        log.push(LoggedRequest {
            method,
            path,
            query,
            throttle_priority,
            authorization_scheme,
            at,
            status: response.status().as_u16(),
        });
    }
    response
}

/// MICROSOFT.md §4: responses may carry `x-ms-throttle-limit-percentage`; Graph sends it once an app has
/// used more than 0.8 of its budget (values 0.8 to 1.8). Only while resource-unit throttling is on.
async fn throttle_limit_percentage(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let token = request
        .uri()
        .path()
        .starts_with("/graph/")
        .then(|| bearer(request.headers()))
        .flatten();
    let mut response = next.run(request).await;
    let Some(token) = token else {
        return response;
    };
    let usage = {
        let state = shared.lock();
        state
            .access_tokens
            .get(&token)
            .and_then(|access| state.resource_unit_usage(&access.tenant_id))
    };
    if let Some(usage) = usage.filter(|usage| *usage > 0.8) {
        if let Ok(value) = HeaderValue::from_str(&format!("{:.1}", usage.min(1.8))) {
            response
                .headers_mut()
                .insert("x-ms-throttle-limit-percentage", value);
        }
    }
    response
}

pub(crate) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

/// The bearer credential of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = header_text(headers, "authorization")?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|token| !token.is_empty())
}

/// Query parameters in order; keys keep their `$`.
pub(crate) fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|raw| {
        url::form_urlencoded::parse(raw.as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// A query parameter by name, ignoring case (OData system query options are case-insensitive).
pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

pub(crate) fn encode_cursor<T: Serialize>(cursor: &T) -> String {
    let bytes = serde_json::to_vec(cursor).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn decode_cursor<T: DeserializeOwned>(text: &str) -> Option<T> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A JSON object of `fields`, each value moved in. (`json!` would copy every value it is given
/// through serde, which for a page of a thousand users costs the answer milliseconds.)
pub(crate) fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    )
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn text_response(status: StatusCode, body: &str) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// MICROSOFT.md §4: `{"error":{"code","message","innerError":{"request-id","date"}}}`.
pub(crate) fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": request_id,
                "client-request-id": request_id,
            }
        }
    });
    let mut response = json_response(status, &body);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("request-id", value);
    }
    response
}

/// Which surface a fault answers on: Graph answers with the MICROSOFT.md §4 body, the others in plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    Graph,
    Plain,
}

/// What a matching fault means for the handler.
pub(crate) enum FaultOutcome {
    /// No fault (or a delay that has been served): answer normally.
    Proceed,
    /// Answer with this response.
    Respond(Response),
    /// A surface-specific fault the handler interprets (CIPP rows, token errors, authorize denial).
    Special(FaultKind),
}

/// Consumes the first fault matching the request and turns the generic ones into responses.
pub(crate) async fn apply_fault(
    shared: &Shared,
    path: &str,
    tenant: Option<&str>,
    surface: Surface,
) -> FaultOutcome {
    let fault = shared.lock().take_fault(path, tenant);
    let Some(kind) = fault else {
        return FaultOutcome::Proceed;
    };
    match kind {
        FaultKind::Delay { ms } => {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            FaultOutcome::Proceed
        }
        // MICROSOFT.md §4: 429 with `Retry-After` in seconds.
        FaultKind::Throttle { retry_after_secs } => {
            let mut response = match surface {
                Surface::Graph => graph_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    "Too many requests.",
                ),
                Surface::Plain => text_response(StatusCode::TOO_MANY_REQUESTS, "Too many requests"),
            };
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            FaultOutcome::Respond(response)
        }
        // MICROSOFT.md §4: 503 is retryable, possibly with `Retry-After`.
        FaultKind::Unavailable { retry_after_secs } => {
            let mut response = match surface {
                Surface::Graph => graph_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "serviceNotAvailable",
                    "Service is temporarily unavailable. Please try again later.",
                ),
                Surface::Plain => {
                    text_response(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                }
            };
            if let Some(seconds) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            FaultOutcome::Respond(response)
        }
        // MICROSOFT.md §4: 504 is retryable.
        FaultKind::GatewayTimeout => FaultOutcome::Respond(match surface {
            Surface::Graph => graph_error(
                StatusCode::GATEWAY_TIMEOUT,
                "gatewayTimeout",
                "The gateway did not receive a timely response.",
            ),
            Surface::Plain => text_response(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout"),
        }),
        // learn.microsoft.com/en-us/graph/resolve-auth-errors: 401 for a token the resource refuses.
        FaultKind::Unauthorized => FaultOutcome::Respond(match surface {
            Surface::Graph => graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            ),
            Surface::Plain => text_response(StatusCode::UNAUTHORIZED, "Unauthorized"),
        }),
        FaultKind::OkBody { body, content_type } => {
            let mut response = (StatusCode::OK, Body::from(body)).into_response();
            let content_type = content_type.unwrap_or_else(|| "application/json".to_owned());
            if let Ok(value) = HeaderValue::from_str(&content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            FaultOutcome::Respond(response)
        }
        FaultKind::CutOff => {
            let parts: [Result<axum::body::Bytes, std::io::Error>; 2] = [
                Ok(axum::body::Bytes::from_static(b"{\"value\":[{\"id\":\"")),
                Err(std::io::Error::other("the simulator cut the answer off")),
            ];
            let mut response = (
                StatusCode::OK,
                Body::from_stream(futures::stream::iter(parts)),
            )
                .into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            FaultOutcome::Respond(response)
        }
        FaultKind::MalformedJson => {
            let mut response =
                (StatusCode::OK, Body::from("{\"value\":[{\"id\":\"")).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            FaultOutcome::Respond(response)
        }
        other => FaultOutcome::Special(other),
    }
}

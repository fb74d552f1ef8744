//! The direct Microsoft connection: starting the authorization-code flow (PKCE + state) and
//! its callback, which exchanges the code, probes Graph, and only then saves the token set.
//!
//! Codes, verifiers, states and tokens are secrets: they are never logged or echoed.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use entra_sync_connection::interactive::{
    app_registration as resolve_app_registration, authorization_client, probe_graph,
    MicrosoftEndpoints,
};
use entra_sync_connection::{AppCredential, DirectoryError, OAuthClient};
use entra_sync_store::connection::DirectTokenSetRecord;
use entra_sync_store::error::StoreError;
use entra_sync_store::flags::UI_FLAG;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audit;
use crate::app::Caller;
use crate::auth::{Authorized, EntraUpdate, API_KEY_HEADER};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::AppState;

pub const CALLBACK_PATH: &str = "/auth/oauth2/microsoft/callback";

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(connect_direct))
        .routes(routes!(oauth_callback))
}

/// The callback registered with a trailing slash (`MICROSOFT_OAUTH_CALLBACK_URL` ending in
/// `/callback/`, as Microsoft's portal often shows it): the same handler. Not a separate entry
/// in the OpenAPI document, which describes the canonical path.
pub(crate) fn callback_with_trailing_slash() -> axum::Router<AppState> {
    axum::Router::new().route(
        "/auth/oauth2/microsoft/callback/",
        axum::routing::get(oauth_callback),
    )
}

fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    }
}

fn config_error(message: &str) -> ApiError {
    ApiError::unprocessable("direct_not_configured", message)
}

/// The app registration for `tenant_id`: through the configured resolution (SPEC §2.1: the
/// PSA tenant's secrets, the environment, the application's secrets), else the plain settings.
async fn app_registration(
    state: &AppState,
    tenant_id: uuid::Uuid,
) -> Result<(String, AppCredential), ApiError> {
    let microsoft = &state.config.microsoft;
    if let Some(resolver) = &microsoft.app_registrations {
        return resolve_app_registration(resolver, tenant_id)
            .await
            .map_err(|error| config_error(&error.to_string()))?
            .ok_or_else(|| {
                config_error("no app registration is configured: set MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET")
            });
    }
    let client_id = microsoft.client_id.clone().ok_or_else(|| {
        config_error("no app registration is configured: set MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET")
    })?;
    let secret = microsoft.client_secret.clone().ok_or_else(|| {
        config_error("no client secret is configured: set MICROSOFT_CLIENT_SECRET")
    })?;
    Ok((client_id, AppCredential::ClientSecret(secret)))
}

/// The app registration's OAuth client, after the configuration checks of SPEC §2.1.
pub(crate) async fn oauth_client(
    state: &AppState,
    tenant_id: uuid::Uuid,
) -> Result<OAuthClient, ApiError> {
    let microsoft = &state.config.microsoft;
    let (client_id, credential) = app_registration(state, tenant_id).await?;
    if let AppCredential::ClientSecret(secret) = &credential {
        if uuid::Uuid::parse_str(secret.expose_secret().trim()).is_ok() {
            return Err(config_error(
                "MICROSOFT_CLIENT_SECRET looks like a GUID: that is probably the secret's ID; use the secret's value",
            ));
        }
    }
    let callback = microsoft.callback_url.clone().ok_or_else(|| {
        config_error(&format!(
            "no redirect URI is configured: set MICROSOFT_OAUTH_CALLBACK_URL to https://<host>{CALLBACK_PATH}"
        ))
    })?;
    let callback_url = url::Url::parse(&callback)
        .map_err(|_| config_error("MICROSOFT_OAUTH_CALLBACK_URL is not a valid URL"))?;
    if callback_url.scheme() != "https" && !is_loopback_host(&callback_url) {
        return Err(config_error(
            "MICROSOFT_OAUTH_CALLBACK_URL must use https unless the host is localhost, 127.0.0.1 or [::1]",
        ));
    }
    // Microsoft's portal and many guides register the URI with a trailing slash; both forms
    // are answered (the router serves both paths) and the configured one is sent as is, since
    // Microsoft compares it exactly with the registered one.
    if callback_url.path().trim_end_matches('/') != CALLBACK_PATH {
        return Err(config_error(&format!(
            "MICROSOFT_OAUTH_CALLBACK_URL must end in {CALLBACK_PATH}, the path this service answers and the one registered in Azure"
        )));
    }
    authorization_client(
        &microsoft.login_base_url,
        client_id,
        credential,
        callback,
        state.config.provider_timeout,
    )
    .map_err(|error| ApiError::unprocessable("direct_not_configured", error.to_string()))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuthorizeView {
    /// Send the admin's browser here; Microsoft redirects back to the callback.
    pub(crate) authorize_url: String,
    /// The flow must finish before this time.
    pub(crate) expires_at: chrono::DateTime<chrono::Utc>,
}

/// Starts a direct connection: returns the Microsoft sign-in URL (PKCE S256, single-use state
/// bound to this tenant and user).
#[utoipa::path(post, path = "/api/v1/integrations/entra/connect/direct", tag = "entra",
    responses((status = 200, body = AuthorizeView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn connect_direct(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
) -> Result<Json<AuthorizeView>, ApiError> {
    crate::app::entra::connect_direct(&state, &Caller::from(caller))
        .await
        .map(Json)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CallbackQuery {
    pub(crate) code: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) error_description: Option<String>,
}

impl std::fmt::Debug for CallbackQueryRedacted<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CallbackQuery")
            .field("has_code", &self.0.code.is_some())
            .field("has_state", &self.0.state.is_some())
            .field("error", &self.0.error)
            .finish()
    }
}

struct CallbackQueryRedacted<'a>(&'a CallbackQuery);

/// A failed callback: a stable code and a message without secrets.
struct CallbackFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl CallbackFailure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        CallbackFailure {
            status,
            code,
            message: message.into(),
        }
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"))
}

/// The OAuth redirect target. Browsers are sent to `/console?entra_status=…`; a request with
/// `Accept: application/json` gets `{"status":"connected"}` or an error body.
#[utoipa::path(get, path = "/auth/oauth2/microsoft/callback", tag = "entra", security(()),
    params(CallbackQuery),
    responses((status = 200, description = "connected (JSON)"),
              (status = 303, description = "redirect to the console"),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn oauth_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<CallbackQuery>,
) -> Response {
    let json = wants_json(&headers);
    tracing::info!(query = ?CallbackQueryRedacted(&query), "oauth callback");
    match complete_authorization(&state, &headers, query).await {
        Ok(()) => {
            if json {
                Json(serde_json::json!({"status": "connected"})).into_response()
            } else {
                Redirect::to("/console?entra_status=success").into_response()
            }
        }
        Err(failure) => {
            metrics::counter!("entra_sync_oauth_failures_total", "reason" => failure.code)
                .increment(1);
            if json {
                ApiError::new(failure.status, failure.code, failure.message).into_response()
            } else if failure.code == "session_mismatch" {
                crate::console::refusal_page(
                    "This sign-in belongs to another browser",
                    "The Microsoft sign-in was started from a different console session, so it was not completed here. Nothing was changed and the sign-in can still be finished where it started.",
                    "Finish the sign-in in the browser where you pressed Connect to Microsoft, or sign in to the console here and press Connect to Microsoft again.",
                )
            } else {
                Redirect::to(&format!(
                    "/console?entra_status=failure&error={}",
                    failure.code
                ))
                .into_response()
            }
        }
    }
}

async fn complete_authorization(
    state: &AppState,
    headers: &HeaderMap,
    query: CallbackQuery,
) -> Result<(), CallbackFailure> {
    let bad = |code: &'static str, message: &str| {
        CallbackFailure::new(StatusCode::BAD_REQUEST, code, message)
    };
    let Some(state_param) = query
        .state
        .filter(|value| !value.is_empty() && value.len() <= 512)
    else {
        return Err(bad(
            "invalid_state",
            "the sign-in response carries no valid state",
        ));
    };
    let internal = |error: &dyn std::fmt::Display| {
        tracing::error!(%error, "oauth callback failed");
        CallbackFailure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; it has been logged",
        )
    };
    // A flow started from the console completes only with that console session's cookie
    // (SPEC §10); a refused callback leaves the state unused for the browser that owns it.
    if let Some(Some(bound)) = state
        .store
        .oauth_state_console_binding(&state_param)
        .await
        .map_err(|error| internal(&error))?
    {
        let presented = crate::console::session_cookie_hash(headers);
        if presented.as_deref() != Some(bound.as_slice()) {
            return Err(CallbackFailure::new(
                StatusCode::FORBIDDEN,
                "session_mismatch",
                "this sign-in was started in another browser session; finish it in the browser that started it",
            ));
        }
    }
    // Credentials presented with the callback must belong to the tenant that started the flow;
    // the store refuses the state otherwise, without using it up.
    let presented_tenant = match headers
        .get(API_KEY_HEADER)
        .and_then(|value| value.to_str().ok())
    {
        Some(key) => state
            .store
            .authenticate_api_key(key)
            .await
            .map_err(|error| internal(&error))?
            .map(|user| user.tenant_id),
        None => None,
    };
    let consumed = state
        .store
        .consume_oauth_state(&state_param, presented_tenant)
        .await
        .map_err(|error| match error {
            StoreError::NotFound => bad("invalid_state", "the sign-in state is unknown"),
            StoreError::Conflict(code) if code == "oauth_state_tenant_mismatch" => {
                CallbackFailure::new(
                    StatusCode::FORBIDDEN,
                    "tenant_mismatch",
                    "the sign-in was started by another PSA tenant",
                )
            }
            StoreError::Conflict(_) => bad("state_used", "the sign-in state was already used"),
            StoreError::Invalid(_) => bad(
                "state_expired",
                "the sign-in took too long; start the connection again",
            ),
            other => internal(&other),
        })?;
    let flag_on = state
        .store
        .flag_enabled(UI_FLAG, consumed.tenant_id)
        .await
        .map_err(|error| internal(&error))?;
    if !flag_on {
        return Err(CallbackFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the Entra integration is not enabled",
        ));
    }
    if let Some(error) = query.error {
        let code = if error == "access_denied" {
            "consent_denied"
        } else {
            "authorization_failed"
        };
        let description = query
            .error_description
            .as_deref()
            .map(|text| text.chars().take(300).collect::<String>())
            .unwrap_or_default();
        return Err(CallbackFailure::new(
            StatusCode::BAD_REQUEST,
            code,
            format!("Microsoft refused the sign-in: {description}"),
        ));
    }
    let Some(code) = query.code.filter(|code| !code.is_empty()) else {
        return Err(bad(
            "invalid_request",
            "the sign-in response carries no code",
        ));
    };
    let client = oauth_client(state, consumed.tenant_id)
        .await
        .map_err(|error| {
            CallbackFailure::new(error.status, "direct_not_configured", error.message)
        })?;
    let provider_failure = |error: DirectoryError| {
        let status = match error {
            DirectoryError::Transient { .. } | DirectoryError::Invalid { .. } => {
                StatusCode::BAD_GATEWAY
            }
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        CallbackFailure::new(status, "microsoft_rejected", error.to_string())
    };
    let token_set = client
        .exchange_code(
            &SecretString::from(code),
            &SecretString::from(consumed.code_verifier.clone()),
        )
        .await
        .map_err(provider_failure)?;
    let Some(refresh_token) = token_set.refresh_token.clone() else {
        return Err(CallbackFailure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_refresh_token",
            "Microsoft issued no refresh token; the offline_access scope must be granted",
        ));
    };
    let microsoft = &state.config.microsoft;
    let organization = probe_graph(
        &MicrosoftEndpoints {
            login_base_url: microsoft.login_base_url.clone(),
            graph_base_url: microsoft.graph_base_url.clone(),
            client_id: Some(client.config().client_id.clone()),
            redirect_uri: client.config().redirect_uri.clone(),
        },
        &token_set.access_token,
        state.config.provider_timeout,
        2,
    )
    .await
    .map_err(provider_failure)?;
    state
        .store
        .save_direct_connection(
            consumed.tenant_id,
            &DirectTokenSetRecord {
                access_token: token_set.access_token.expose_secret().to_owned(),
                refresh_token: refresh_token.expose_secret().to_owned(),
                expires_at: token_set.expires_at,
                scope: token_set.scope.clone(),
            },
        )
        .await
        .map_err(|error| internal(&error))?;
    if let Some((partner_id, partner_name)) = &organization {
        state
            .store
            .set_partner_tenant(consumed.tenant_id, partner_id, partner_name)
            .await
            .map_err(|error| internal(&error))?;
    }
    super::refresh_schedule(state, consumed.tenant_id).await;
    audit(
        state,
        consumed.tenant_id,
        &format!("user:{}", consumed.user_id),
        "entra.connect.direct",
        Some("connection".to_owned()),
        serde_json::json!({"scope": token_set.scope}),
    )
    .await
    .map_err(|error| CallbackFailure::new(error.status, "internal_error", error.message))?;
    Ok(())
}

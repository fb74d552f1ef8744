//! The Microsoft identity platform (OAuth 2.0 v2): the authorize and token endpoints (MICROSOFT.md §1).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Duration;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::server::{
    apply_fault, json_response, param, parse_query, FaultOutcome, Shared, Surface,
};
use crate::state::{
    clamp_seconds, AccessToken, CodeRecord, ConsentFault, FaultKind, RefreshRecord, TokenKind,
};

const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
/// Microsoft Graph's well-known application id, accepted as a resource name too.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// MICROSOFT.md §1: refresh tokens last 90 days of inactivity.
const REFRESH_INACTIVITY_DAYS: i64 = 90;

/// An AADSTS error: HTTP status, `error`, code and the description text after `AADSTSnnnn: `.
struct AadError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl AadError {
    fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            code,
            description: description.into(),
        }
    }

    /// MICROSOFT.md §1 error body: `error`, `error_description` starting with `AADSTSnnnn:`, `error_codes`,
    /// `timestamp`, `trace_id`, `correlation_id`, `error_uri`.
    fn into_response(self) -> Response {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let timestamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
        let body = json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
                self.code, self.description
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        json_response(self.status, &body)
    }
}

/// The standard answer for an AADSTS code requested by a fault or a consent switch (MICROSOFT.md §1 and §5).
fn aadsts(code: u32, tenant: &str, client_id: &str) -> AadError {
    let bad_request = StatusCode::BAD_REQUEST;
    let unauthorized = StatusCode::UNAUTHORIZED;
    match code {
        70008 => AadError::new(bad_request, "invalid_grant", code, "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource."),
        700082 => AadError::new(bad_request, "invalid_grant", code, "The refresh token has expired due to inactivity. The token was issued on a date and was inactive for 90.00:00:00."),
        50173 => AadError::new(bad_request, "invalid_grant", code, "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password."),
        70043 => AadError::new(bad_request, "invalid_grant", code, "The refresh token has expired or is invalid due to sign-in frequency checks by conditional access."),
        50076 => AadError::new(bad_request, "invalid_grant", code, "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access the resource."),
        50079 => AadError::new(bad_request, "invalid_grant", code, "Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication to access the resource."),
        54005 => AadError::new(bad_request, "invalid_grant", code, "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token."),
        65001 => AadError::new(bad_request, "invalid_grant", code, format!("The user or administrator has not consented to use the application with ID '{client_id}'. Send an interactive authorization request for this user and resource.")),
        90099 => AadError::new(bad_request, "invalid_grant", code, format!("The application '{client_id}' has not been authorized in the tenant '{tenant}'. Applications must be authorized to access the customer tenant before partner delegated administrators can use them.")),
        7000215 => AadError::new(unauthorized, "invalid_client", code, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app."),
        7000222 => AadError::new(unauthorized, "invalid_client", code, format!("The provided client secret keys for app '{client_id}' are expired.")),
        700016 => AadError::new(bad_request, "unauthorized_client", code, format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.")),
        90002 => AadError::new(bad_request, "invalid_request", code, format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.")),
        50011 => AadError::new(bad_request, "invalid_request", code, format!("The redirect URI specified in the request does not match the redirect URIs configured for the application '{client_id}'.")),
        50196 => AadError::new(bad_request, "invalid_request", code, "The server terminated an operation because it encountered a client request loop."),
        90055 => AadError::new(StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable", code, "The request has been throttled. Please retry later."),
        other => AadError::new(bad_request, "invalid_request", other, "The request was rejected by the simulator on demand."),
    }
}

fn missing(parameter: &str) -> AadError {
    AadError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{parameter}'."),
    )
}

/// Resolves `{tenant}` of the path: `common`, `organizations`, the partner or a customer id or domain
/// (MICROSOFT.md §1). The multi-tenant aliases resolve to the partner, where the MSP's admin signs in.
fn resolve_tenant(shared: &Shared, tenant: &str) -> Option<String> {
    let partner = &shared.config.partner_tenant_id;
    if ["common", "organizations"]
        .iter()
        .any(|alias| alias.eq_ignore_ascii_case(tenant))
        || tenant.eq_ignore_ascii_case(partner)
        || tenant.eq_ignore_ascii_case(crate::graph::PARTNER_DOMAIN)
    {
        return Some(partner.clone());
    }
    let state = shared.lock();
    state
        .tenant_position(tenant)
        .map(|position| state.tenants[position].tenant_id.clone())
}

fn is_partner(shared: &Shared, tenant_id: &str) -> bool {
    tenant_id.eq_ignore_ascii_case(&shared.config.partner_tenant_id)
}

fn token_success(
    shared: &Shared,
    tenant_id: &str,
    kind: TokenKind,
    scope: String,
    refresh: Option<RefreshRecord>,
    id_token: Option<String>,
) -> Response {
    let mut state = shared.lock();
    let access_token = state.random_token("sim-at.");
    let lifetime = state.settings.access_token_lifetime_secs;
    let now = state.now();
    let expires_at = now + clamp_seconds(i64::try_from(lifetime).unwrap_or(i64::MAX));
    // Forget expired tokens now and then, so a long benchmark does not grow the map without bound.
    if state.access_tokens.len() >= 10_000 {
        state
            .access_tokens
            .retain(|_, token| token.expires_at > now);
    }
    state.access_tokens.insert(
        access_token.clone(),
        AccessToken {
            tenant_id: tenant_id.to_string(),
            kind,
            expires_at,
        },
    );
    // MICROSOFT.md §1 success body.
    let mut body = json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": lifetime,
        "access_token": access_token,
    });
    if let Some(record) = refresh {
        let refresh_token = state.random_token("sim-rt.");
        state.refresh_tokens.insert(refresh_token.clone(), record);
        body["refresh_token"] = json!(refresh_token);
    }
    if let Some(id_token) = id_token {
        body["id_token"] = json!(id_token);
    }
    drop(state);
    let mut response = json_response(StatusCode::OK, &body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An unsigned id token with the claims a client might read (tid, oid, preferred_username).
fn id_token(shared: &Shared, client_id: &str) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = engine.encode(br#"{"typ":"JWT","alg":"none"}"#);
    let partner = &shared.config.partner_tenant_id;
    let claims = json!({
        "aud": client_id,
        "iss": format!("https://login.microsoftonline.com/{partner}/v2.0"),
        "tid": partner,
        "oid": "7a1d5f4e-0000-4000-8000-00000000ad01",
        "preferred_username": format!("admin@{}", crate::graph::PARTNER_DOMAIN),
        "name": "MSP Admin",
    });
    format!("{header}.{}.", engine.encode(claims.to_string()))
}

/// The Graph scopes a delegated grant gets, in the resource-qualified form the token endpoint answers with.
fn graph_scopes(scopes: &[String]) -> String {
    scopes
        .iter()
        .filter(|scope| !["offline_access", "openid", "profile", "email"].contains(&scope.as_str()))
        .map(|scope| {
            if scope.starts_with("https://") {
                scope.clone()
            } else {
                format!("{GRAPH_RESOURCE}/{scope}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `POST /{tenant}/oauth2/v2.0/token` (MICROSOFT.md §1).
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form = parse_query(Some(&body));
    let basic = basic_credentials(&headers);
    let client_id = param(&form, "client_id")
        .map(str::to_string)
        .or_else(|| basic.as_ref().map(|(id, _)| id.clone()))
        .unwrap_or_default();
    let Some(tenant_id) = resolve_tenant(&shared, &tenant) else {
        return aadsts(90002, &tenant, &client_id).into_response();
    };
    let path = format!("/login/{tenant}/oauth2/v2.0/token");
    match apply_fault(&shared, &path, Some(&tenant_id), Surface::Plain).await {
        FaultOutcome::Respond(response) => return response,
        FaultOutcome::Special(FaultKind::TokenError { aadsts: code }) => {
            return aadsts(code, &tenant_id, &client_id).into_response();
        }
        FaultOutcome::Special(_) | FaultOutcome::Proceed => {}
    }
    let Some(grant_type) = param(&form, "grant_type") else {
        return missing("grant_type").into_response();
    };
    if client_id.is_empty() {
        return missing("client_id").into_response();
    }
    let config = &shared.config;
    let is_app = client_id.eq_ignore_ascii_case(&config.app_client_id);
    let is_cipp = client_id.eq_ignore_ascii_case(&config.cipp_client_id);
    if !is_app && !is_cipp {
        return aadsts(700016, &tenant_id, &client_id).into_response();
    }
    // Client authentication: a secret, or a JWT client assertion (MICROSOFT.md §1), which the simulator
    // accepts without checking its signature.
    let assertion_ok = param(&form, "client_assertion_type")
        == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        && param(&form, "client_assertion").is_some_and(|assertion| !assertion.is_empty());
    let secret = param(&form, "client_secret")
        .map(str::to_string)
        .or_else(|| basic.map(|(_, secret)| secret));
    match secret {
        Some(secret) => {
            let expected = if is_app {
                &config.app_client_secret
            } else {
                &config.cipp_client_secret
            };
            if &secret != expected {
                return aadsts(7000215, &tenant_id, &client_id).into_response();
            }
        }
        None if assertion_ok => {}
        None => {
            return AadError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
            .into_response()
        }
    }
    // Per-tenant consent problems answer at that customer tenant (MICROSOFT.md §1: AADSTS90099; §5: 65001).
    let consent = {
        let state = shared.lock();
        state
            .tenant_position(&tenant_id)
            .and_then(|position| state.tenants[position].consent_fault)
    };
    match consent {
        Some(ConsentFault::Aadsts65001) => {
            return aadsts(65001, &tenant_id, &client_id).into_response()
        }
        Some(ConsentFault::Aadsts90099) => {
            return aadsts(90099, &tenant_id, &client_id).into_response()
        }
        _ => {}
    }
    match grant_type {
        "client_credentials" => client_credentials(&shared, &form, &tenant_id, &client_id, is_cipp),
        "authorization_code" if is_app => {
            authorization_code(&shared, &form, &tenant_id, &client_id)
        }
        "refresh_token" if is_app => refresh_token(&shared, &form, &tenant_id, &client_id),
        // The simulated CIPP API client is a daemon: it only uses client credentials (MICROSOFT.md §5a).
        "authorization_code" | "refresh_token" => AadError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        )
        .into_response(),
        other => AadError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{other}'."),
        )
        .into_response(),
    }
}

/// OAuth 2.0 `client_secret_basic` (RFC 6749 §2.3.1), which the identity platform accepts besides a
/// `client_secret` form field: `Authorization: Basic base64(urlencoded id ":" urlencoded secret)`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |part: &str| {
        url::form_urlencoded::parse(format!("x={part}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

fn invalid_scope(scope: &str) -> Response {
    AadError::new(
        StatusCode::BAD_REQUEST,
        "invalid_scope",
        1002012,
        format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
    )
    .into_response()
}

fn invalid_resource(resource: &str, tenant_id: &str) -> Response {
    AadError::new(
        StatusCode::BAD_REQUEST,
        "invalid_resource",
        500011,
        format!("The resource principal named {resource} was not found in the tenant named {tenant_id}."),
    )
    .into_response()
}

fn client_credentials(
    shared: &Shared,
    form: &[(String, String)],
    tenant_id: &str,
    client_id: &str,
    is_cipp: bool,
) -> Response {
    // MICROSOFT.md §1: `scope` must be `{resource}/.default`; no refresh token is returned.
    let Some(scope) = param(form, "scope") else {
        return missing("scope").into_response();
    };
    let scope = scope.trim();
    let Some(resource) = scope
        .strip_suffix("/.default")
        .filter(|_| !scope.contains(' '))
    else {
        return invalid_scope(scope);
    };
    if is_cipp {
        // MICROSOFT.md §5a: CIPP API clients get tokens against the MSP's tenant, `api://{client id}/.default`.
        if !is_partner(shared, tenant_id) {
            return aadsts(700016, tenant_id, client_id).into_response();
        }
        let expected = format!("api://{}", shared.config.cipp_client_id);
        if !resource.eq_ignore_ascii_case(&expected) && !resource.eq_ignore_ascii_case(client_id) {
            return invalid_resource(resource, tenant_id);
        }
        return token_success(
            shared,
            tenant_id,
            TokenKind::Cipp,
            scope.to_string(),
            None,
            None,
        );
    }
    if !resource.eq_ignore_ascii_case(GRAPH_RESOURCE)
        && !resource.eq_ignore_ascii_case(GRAPH_APP_ID)
    {
        return invalid_resource(resource, tenant_id);
    }
    token_success(
        shared,
        tenant_id,
        TokenKind::App,
        format!("{GRAPH_RESOURCE}/.default"),
        None,
        None,
    )
}

fn authorization_code(
    shared: &Shared,
    form: &[(String, String)],
    tenant_id: &str,
    client_id: &str,
) -> Response {
    let Some(code) = param(form, "code") else {
        return missing("code").into_response();
    };
    let Some(redirect_uri) = param(form, "redirect_uri") else {
        return missing("redirect_uri").into_response();
    };
    let verifier = param(form, "code_verifier").unwrap_or_default();
    let record = {
        let mut state = shared.lock();
        let now = state.now();
        let lifetime = state.settings.authorization_code_lifetime_secs;
        let Some(record) = state.codes.get_mut(code) else {
            return AadError::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                9002313,
                "Invalid request. Request is malformed or invalid.",
            )
            .into_response();
        };
        // MICROSOFT.md §1: redeeming a code twice gives AADSTS54005.
        if record.redeemed {
            return aadsts(54005, tenant_id, client_id).into_response();
        }
        // MICROSOFT.md §1: codes live about 10 minutes.
        if now - record.issued_at > clamp_seconds(lifetime) {
            return aadsts(70008, tenant_id, client_id).into_response();
        }
        if !record.client_id.eq_ignore_ascii_case(client_id) {
            return AadError::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                70000,
                "The provided value for the 'code' parameter is not valid. The code was issued to a different client.",
            )
            .into_response();
        }
        // MICROSOFT.md §1: the redirect_uri must be the same as before.
        if record.redirect_uri != redirect_uri {
            return aadsts(50011, tenant_id, client_id).into_response();
        }
        // PKCE: S256(code_verifier) must equal the code_challenge of the authorize request.
        let digest = Sha256::digest(verifier.as_bytes());
        let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
        if verifier.is_empty() || computed != record.code_challenge {
            return AadError::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            )
            .into_response();
        }
        record.redeemed = true;
        record.clone()
    };
    issue_delegated(
        shared,
        &shared.config.partner_tenant_id,
        client_id,
        &record.scopes,
    )
}

/// A delegated token set for the MSP admin; a refresh token only with `offline_access` (MICROSOFT.md §1).
fn issue_delegated(
    shared: &Shared,
    tenant_id: &str,
    client_id: &str,
    scopes: &[String],
) -> Response {
    let refresh = scopes
        .iter()
        .any(|scope| scope == "offline_access")
        .then(|| RefreshRecord {
            client_id: client_id.to_string(),
            scopes: scopes.to_vec(),
            last_used: shared.lock().now(),
        });
    let id_token = scopes
        .iter()
        .any(|scope| scope == "openid")
        .then(|| id_token(shared, client_id));
    let kind = if is_partner(shared, tenant_id) {
        TokenKind::PartnerDelegated
    } else {
        TokenKind::CustomerDelegated
    };
    token_success(
        shared,
        tenant_id,
        kind,
        graph_scopes(scopes),
        refresh,
        id_token,
    )
}

fn refresh_token(
    shared: &Shared,
    form: &[(String, String)],
    tenant_id: &str,
    client_id: &str,
) -> Response {
    let Some(refresh_token) = param(form, "refresh_token") else {
        return missing("refresh_token").into_response();
    };
    let record = {
        let mut state = shared.lock();
        let now = state.now();
        // MICROSOFT.md §1: refresh tokens rotate; the used one stops working.
        if state.rotated_refresh_tokens.contains(refresh_token) {
            return aadsts(70008, tenant_id, client_id).into_response();
        }
        let Some(record) = state.refresh_tokens.get(refresh_token).cloned() else {
            return AadError::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                9002313,
                "Invalid request. Request is malformed or invalid.",
            )
            .into_response();
        };
        if !record.client_id.eq_ignore_ascii_case(client_id) {
            return AadError::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                700024,
                "Client assertion is not within its valid time range or the refresh token was issued to a different client.",
            )
            .into_response();
        }
        // MICROSOFT.md §1: refresh tokens last 90 days of inactivity.
        if now - record.last_used > Duration::days(REFRESH_INACTIVITY_DAYS) {
            return aadsts(700082, tenant_id, client_id).into_response();
        }
        state.refresh_tokens.remove(refresh_token);
        state
            .rotated_refresh_tokens
            .insert(refresh_token.to_string());
        record
    };
    if let Some(scope) = param(form, "scope") {
        let requested: Vec<&str> = scope.split_whitespace().collect();
        let graph_only = requested.iter().all(|scope| {
            scope.starts_with(GRAPH_RESOURCE)
                || !scope.contains("://")
                || scope.starts_with(GRAPH_APP_ID)
        });
        if !graph_only {
            return invalid_resource(scope, tenant_id);
        }
    }
    // MICROSOFT.md §1: the refresh token is bound to user and client, not to a tenant, so redeeming it at a
    // customer tenant gives a token for that customer (the Secure Application Model).
    issue_delegated(shared, tenant_id, client_id, &record.scopes)
}

fn authorize_error(error: AadError) -> Response {
    error.into_response()
}

/// `GET /{tenant}/oauth2/v2.0/authorize` (MICROSOFT.md §1): consents automatically and redirects back.
pub(crate) async fn authorize(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = parse_query(raw.as_deref());
    let client_id = param(&params, "client_id").unwrap_or_default().to_string();
    let Some(tenant_id) = resolve_tenant(&shared, &tenant) else {
        return authorize_error(aadsts(90002, &tenant, &client_id));
    };
    if client_id.is_empty() {
        return authorize_error(missing("client_id"));
    }
    if !client_id.eq_ignore_ascii_case(&shared.config.app_client_id) {
        return authorize_error(aadsts(700016, &tenant_id, &client_id));
    }
    let Some(redirect_uri) = param(&params, "redirect_uri").map(str::to_string) else {
        return authorize_error(missing("redirect_uri"));
    };
    let registered = shared.lock().settings.redirect_uris.clone();
    let parsed = url::Url::parse(&redirect_uri).ok();
    let acceptable = match &parsed {
        Some(url) if ["http", "https"].contains(&url.scheme()) => {
            registered.is_empty() || registered.iter().any(|uri| uri == &redirect_uri)
        }
        _ => false,
    };
    let Some(mut redirect) = parsed.filter(|_| acceptable) else {
        return authorize_error(aadsts(50011, &tenant_id, &client_id));
    };
    if param(&params, "response_type") != Some("code") {
        return authorize_error(AadError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            900144,
            "The request body must contain the following parameter: 'response_type' with the value 'code'.",
        ));
    }
    let Some(code_challenge) = param(&params, "code_challenge").map(str::to_string) else {
        return authorize_error(missing("code_challenge"));
    };
    if param(&params, "code_challenge_method") != Some("S256") {
        return authorize_error(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'code_challenge_method' with the value 'S256'.",
        ));
    }
    let state_param = param(&params, "state").map(str::to_string);
    let scopes: Vec<String> = param(&params, "scope")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let path = format!("/login/{tenant}/oauth2/v2.0/authorize");
    let denied = match apply_fault(&shared, &path, Some(&tenant_id), Surface::Plain).await {
        FaultOutcome::Respond(response) => return response,
        FaultOutcome::Special(FaultKind::AuthorizeDenied) => true,
        FaultOutcome::Special(_) | FaultOutcome::Proceed => false,
    };
    {
        let mut pairs = redirect.query_pairs_mut();
        if denied {
            // MICROSOFT.md §1: `?error=access_denied&error_description=…&state=…`.
            pairs.append_pair("error", "access_denied");
            pairs.append_pair(
                "error_description",
                "AADSTS65004: User declined to consent to access the app.",
            );
        } else {
            let code = {
                let mut state = shared.lock();
                let code = state.random_token("sim-code.");
                let issued_at = state.now();
                state.codes.insert(
                    code.clone(),
                    CodeRecord {
                        client_id: client_id.clone(),
                        redirect_uri: redirect_uri.clone(),
                        code_challenge,
                        scopes,
                        issued_at,
                        redeemed: false,
                    },
                );
                code
            };
            pairs.append_pair("code", &code);
        }
        if let Some(state_value) = &state_param {
            pairs.append_pair("state", state_value);
        }
    }
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(location) = HeaderValue::from_str(redirect.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// `GET /{tenant}/adminconsent?client_id=…&redirect_uri=…&state=…` (MICROSOFT.md §1 admin consent URL).
/// Grants consent at once: the tenant's consent or role problem is cleared, so a client can prove that a
/// consent fix needs no restart. The redirect carries `admin_consent=True&tenant=…&state=…` as the identity
/// platform's admin-consent documentation describes.
pub(crate) async fn admin_consent(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = parse_query(raw.as_deref());
    let client_id = param(&params, "client_id").unwrap_or_default().to_string();
    let Some(tenant_id) = resolve_tenant(&shared, &tenant) else {
        return authorize_error(aadsts(90002, &tenant, &client_id));
    };
    if !client_id.eq_ignore_ascii_case(&shared.config.app_client_id) {
        return authorize_error(aadsts(700016, &tenant_id, &client_id));
    }
    let Some(redirect_uri) = param(&params, "redirect_uri").map(str::to_string) else {
        return authorize_error(missing("redirect_uri"));
    };
    let registered = shared.lock().settings.redirect_uris.clone();
    let Some(mut redirect) = url::Url::parse(&redirect_uri).ok().filter(|url| {
        ["http", "https"].contains(&url.scheme())
            && (registered.is_empty() || registered.iter().any(|uri| uri == &redirect_uri))
    }) else {
        return authorize_error(aadsts(50011, &tenant_id, &client_id));
    };
    let path = format!("/login/{tenant}/adminconsent");
    let denied = match apply_fault(&shared, &path, Some(&tenant_id), Surface::Plain).await {
        FaultOutcome::Respond(response) => return response,
        FaultOutcome::Special(FaultKind::AuthorizeDenied) => true,
        FaultOutcome::Special(_) | FaultOutcome::Proceed => false,
    };
    {
        let mut pairs = redirect.query_pairs_mut();
        if denied {
            pairs.append_pair("error", "access_denied");
            pairs.append_pair(
                "error_description",
                "AADSTS65004: User declined to consent to access the app.",
            );
        } else {
            {
                let mut state = shared.lock();
                if let Some(position) = state.tenant_position(&tenant_id) {
                    state.tenants[position].consent_fault = None;
                }
            }
            pairs.append_pair("admin_consent", "True");
            pairs.append_pair("tenant", &tenant_id);
        }
        if let Some(state_value) = param(&params, "state") {
            pairs.append_pair("state", state_value);
        }
    }
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(location) = HeaderValue::from_str(redirect.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

//! Sign-in, sign-out and the [`Console`] extractor: the signed-in user of a console request.
//!
//! The session id is 32 random bytes in an `HttpOnly`, `SameSite=Lax` cookie (`Secure` when
//! the request arrived over https, as a TLS-terminating proxy reports in
//! `X-Forwarded-Proto`); Postgres keeps only its SHA-256, with an expiry. Sign-out deletes the
//! row, so a copied cookie is dead afterwards.

use axum::extract::{Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use entra_sync_store::console::ConsoleSession;
use entra_sync_store::flags::{AMBIGUOUS_QUEUE_FLAG, CIPP_FLAG, CLIENT_SYNC_ACTION_FLAG, UI_FLAG};
use entra_sync_store::psa::PsaUserType;
use minijinja::{context, Value};
use sha2::{Digest, Sha256};

use super::{field, render, see_other, PageError, PageResult};
use crate::app::Caller;
use crate::auth::Permission;
use crate::AppState;

pub(crate) const COOKIE: &str = "entra_sync_console";
/// How long a session lasts after sign-in.
const SESSION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(8 * 3600);
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// A signed-in console user.
pub(crate) struct Console {
    pub(crate) session_id: String,
    pub(crate) session: ConsoleSession,
    csrf_header: Option<String>,
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty() && value.len() <= 128)
}

/// The console session a request carries, if any (also used by the OAuth callback).
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, COOKIE)
}

fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

fn set_cookie(headers: &HeaderMap, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if over_https(headers) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .ok()
}

impl FromRequestParts<AppState> for Console {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let session_id = session_cookie(&parts.headers).ok_or(PageError::SignIn)?;
        let session = state
            .store
            .console_session(&session_id)
            .await
            .map_err(crate::error::ApiError::from)?
            .ok_or(PageError::SignIn)?;
        let csrf_header = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Ok(Console {
            session_id,
            session,
            csrf_header,
        })
    }
}

impl Console {
    /// The user, authorized for permission `P` exactly as the JSON API would authorize them.
    pub(crate) async fn caller<P: Permission>(
        &self,
        state: &AppState,
    ) -> Result<Caller, PageError> {
        let authorized = crate::auth::authorize::<P>(state, self.session.user.clone()).await?;
        Ok(Caller::from(authorized))
    }

    /// Refuses a state-changing request whose CSRF token (form field `csrf` or the
    /// `X-CSRF-Token` header) is not this session's.
    pub(crate) fn verify(&self, form: &[(String, String)]) -> Result<(), PageError> {
        let presented = field(form, "csrf")
            .map(str::to_owned)
            .or_else(|| self.csrf_header.clone())
            .unwrap_or_default();
        let digest = |value: &str| -> [u8; 32] { Sha256::digest(value.as_bytes()).into() };
        if digest(&presented) == digest(&self.session.csrf_token) {
            Ok(())
        } else {
            Err(PageError::page(
                StatusCode::FORBIDDEN,
                "The form expired",
                "This form was not sent from your current console session, so nothing was changed.",
                "Go back, reload the page and submit the form again.",
            ))
        }
    }

    pub(crate) fn can_update(&self) -> bool {
        self.session.user.has_permission("system_settings.update")
    }

    /// What every page's layout needs: who is signed in, the CSRF token, which parts of the
    /// navigation to show.
    pub(crate) async fn layout(&self, state: &AppState, section: &str) -> Result<Value, PageError> {
        let tenant_id = self.session.user.tenant_id;
        let flags = state
            .store
            .enabled_flags(tenant_id)
            .await
            .map_err(crate::error::ApiError::from)?;
        let enabled = |flag: &str| flags.iter().any(|enabled| enabled == flag);
        Ok(context! { user_email => self.session.user.email.clone(),
        csrf => self.session.csrf_token.clone(),
        section => section,
        can_update => self.can_update(),
        entra_enabled => enabled(UI_FLAG),
        cipp_enabled => enabled(CIPP_FLAG),
        client_sync_enabled => enabled(CLIENT_SYNC_ACTION_FLAG),
        queue_enabled => enabled(AMBIGUOUS_QUEUE_FLAG) })
    }

    /// The Entra pages are not shown while `entra-integration-ui` is off.
    pub(crate) async fn require_entra(&self, state: &AppState) -> Result<(), PageError> {
        let enabled = state
            .store
            .flag_enabled(UI_FLAG, self.session.user.tenant_id)
            .await
            .map_err(crate::error::ApiError::from)?;
        if enabled {
            Ok(())
        } else {
            Err(PageError::page(
                StatusCode::NOT_FOUND,
                "The Entra integration is not switched on",
                "Your workspace does not have the Entra integration enabled yet.",
                "Ask the platform administrator to enable the entra-integration-ui flag for your workspace.",
            ))
        }
    }
}

pub(crate) async fn sign_in_page(
    headers: HeaderMap,
    State(state): State<AppState>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Some(session_id) = session_cookie(&headers) {
        if let Ok(Some(_)) = state.store.console_session(&session_id).await {
            return see_other(&headers, "/console");
        }
    }
    let signed_out = query.contains_key("signed_out");
    render(StatusCode::OK, "sign_in.html", context! { signed_out })
}

fn refused(message: &str) -> Response {
    render(
        StatusCode::UNAUTHORIZED,
        "sign_in.html",
        context! { error => message },
    )
}

pub(crate) async fn sign_in(
    headers: HeaderMap,
    State(state): State<AppState>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let key = field(&form, "api_key").map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > 256 {
        return Ok(refused(
            "Enter the API key your PSA administrator gave you.",
        ));
    }
    let Some(user) = state
        .store
        .authenticate_api_key(key)
        .await
        .map_err(crate::error::ApiError::from)?
    else {
        return Ok(refused(
            "That API key is not valid. Check it for typing mistakes, or ask your PSA administrator for a new one.",
        ));
    };
    if user.user_type == PsaUserType::Client {
        return Err(PageError::page(
            StatusCode::FORBIDDEN,
            "Client-portal users cannot use this console",
            "This console is for the MSP's own staff. Your key belongs to a client-portal user.",
            "Use your PSA's client portal instead, or ask the MSP for a staff account.",
        ));
    }
    let created = state
        .store
        .create_console_session(&user, SESSION_LIFETIME)
        .await
        .map_err(crate::error::ApiError::from)?;
    let mut response = see_other(&headers, "/console");
    if let Some(cookie) = set_cookie(&headers, &created.session_id, SESSION_LIFETIME.as_secs()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

pub(crate) async fn sign_out(
    console: Console,
    headers: HeaderMap,
    State(state): State<AppState>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    console.verify(&form)?;
    state
        .store
        .delete_console_session(&console.session_id)
        .await
        .map_err(crate::error::ApiError::from)?;
    let mut response = see_other(&headers, "/console/sign-in?signed_out=1");
    if let Some(cookie) = set_cookie(&headers, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded_proto: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(proto) = forwarded_proto {
            headers.insert(
                "x-forwarded-proto",
                HeaderValue::from_str(proto).expect("header value"),
            );
        }
        headers
    }

    fn attributes(cookie: &HeaderValue) -> Vec<String> {
        cookie
            .to_str()
            .expect("ASCII cookie")
            .split(';')
            .map(|attribute| attribute.trim().to_owned())
            .collect()
    }

    #[test]
    fn session_cookie_is_secure_only_over_https_and_always_http_only_and_lax() {
        for (proto, secure) in [
            (Some("https"), true),
            (Some("HTTPS"), true),
            (Some("http"), false),
            (None, false),
        ] {
            let cookie = set_cookie(&headers(proto), "session-id", 60).expect("a cookie");
            let attributes = attributes(&cookie);
            assert_eq!(
                attributes[0],
                format!("{COOKIE}=session-id"),
                "{attributes:?}"
            );
            assert!(
                attributes.iter().any(|a| a == "HttpOnly"),
                "{proto:?}: {attributes:?}"
            );
            assert!(
                attributes.iter().any(|a| a == "SameSite=Lax"),
                "{proto:?}: {attributes:?}"
            );
            assert!(
                attributes.iter().any(|a| a == "Path=/"),
                "{proto:?}: {attributes:?}"
            );
            assert_eq!(
                attributes.iter().any(|a| a == "Secure"),
                secure,
                "{proto:?}: {attributes:?}"
            );
        }
    }

    #[test]
    fn sign_out_cookie_expires_at_once_with_the_same_attributes() {
        let cookie = set_cookie(&headers(Some("https")), "", 0).expect("a cookie");
        let attributes = attributes(&cookie);
        assert_eq!(attributes[0], format!("{COOKIE}="));
        for expected in ["Max-Age=0", "HttpOnly", "SameSite=Lax", "Secure"] {
            assert!(
                attributes.iter().any(|a| a == expected),
                "{expected}: {attributes:?}"
            );
        }
    }
}

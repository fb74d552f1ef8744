//! The web console (SPEC §10): server-rendered HTML under `/console`, enhanced with the
//! vendored htmx (live run progress, the review queue's contact picker).
//!
//! Handlers here only translate between HTTP forms and the application layer
//! (`crate::app`): they never run SQL or call Microsoft or CIPP themselves. A page is a
//! minijinja template under `crates/api/templates/console/`, embedded at compile time.
//!
//! Security: a server-side session (see [`session`]) in an `HttpOnly`, `SameSite=Lax` cookie;
//! every POST carries the session's CSRF token (a hidden form field, or the `X-CSRF-Token`
//! header htmx sends); every page is served with a Content-Security-Policy that allows only
//! this origin's script and style (no inline script), so an injected string cannot run.

mod clients;
mod overview;
mod review;
mod runs;
mod session;
mod settings;
mod wizard;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::{context, Environment, Value};

pub(crate) use session::Console;

use crate::error::ApiError;
use crate::AppState;

/// The console's routes, merged into the API's router.
pub(crate) fn router(state: &AppState) -> Router<AppState> {
    let csp = content_security_policy(state);
    Router::new()
        .route("/console", get(overview::page))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route(
            "/console/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/assets/htmx.min.js", get(htmx))
        .route("/console/assets/console.css", get(stylesheet))
        .route("/console/sync", post(overview::sync_all))
        .route("/console/runs", get(runs::list))
        .route("/console/runs/{run_id}", get(runs::page))
        .route("/console/runs/{run_id}/live", get(runs::live))
        .route("/console/runs/{run_id}/cancel", post(runs::cancel))
        .route(
            "/console/runs/{run_id}/tenants/{managed_tenant_id}/held",
            post(runs::held),
        )
        .route("/console/setup", get(wizard::page))
        .route("/console/setup/cipp", post(wizard::cipp))
        .route("/console/setup/direct", post(wizard::direct))
        .route("/console/setup/discover", post(wizard::discover))
        .route(
            "/console/setup/discover/{run_id}",
            get(wizard::discovery_live),
        )
        .route("/console/setup/map", post(wizard::confirm))
        .route(
            "/console/disconnect",
            get(wizard::disconnect_page).post(wizard::disconnect),
        )
        .route("/console/review", get(review::list))
        .route("/console/review/{item_id}/picker", get(review::picker))
        .route("/console/review/{item_id}/resolve", post(review::resolve))
        .route("/console/review/{item_id}/reopen", post(review::reopen))
        .route(
            "/console/settings",
            get(settings::page).post(settings::save),
        )
        .route(
            "/console/settings/tenants/{managed_tenant_id}",
            get(settings::tenant_page).post(settings::tenant_save),
        )
        .route("/console/clients", get(clients::page))
        .route("/console/clients/{client_id}/sync", post(clients::sync))
        .route("/console/contacts", get(clients::contacts))
        .route("/console/contacts/{contact_id}", get(clients::history))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let csp = csp.clone();
                async move {
                    let mut response = next.run(request).await;
                    let headers = response.headers_mut();
                    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
                    headers.insert(
                        header::X_CONTENT_TYPE_OPTIONS,
                        HeaderValue::from_static("nosniff"),
                    );
                    headers.insert(
                        header::REFERRER_POLICY,
                        HeaderValue::from_static("same-origin"),
                    );
                    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
                    headers
                        .entry(header::CACHE_CONTROL)
                        .or_insert(HeaderValue::from_static("no-store"));
                    response
                }
            },
        ))
}

/// Only this origin's scripts and styles; forms may post here and, for "Connect to
/// Microsoft", be redirected to the Microsoft sign-in origin (Chromium applies
/// `form-action` to a form's redirects too).
fn content_security_policy(state: &AppState) -> HeaderValue {
    let login = state
        .config
        .microsoft
        .login_base_url
        .origin()
        .ascii_serialization();
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self' {login}; frame-ancestors 'none'; base-uri 'none'; \
         object-src 'none'"
    );
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"))
}

async fn htmx() -> Response {
    asset(
        include_bytes!("../../assets/htmx.min.js"),
        "text/javascript; charset=utf-8",
    )
}

async fn stylesheet() -> Response {
    asset(
        include_bytes!("../../assets/console.css"),
        "text/css; charset=utf-8",
    )
}

fn asset(bytes: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        bytes,
    )
        .into_response()
}

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../templates/console/", $name)))),*]
    };
}

/// Every template, embedded in the binary.
const TEMPLATES: &[(&str, &str)] = templates!(
    "base.html",
    "error.html",
    "sign_in.html",
    "overview.html",
    "runs.html",
    "run.html",
    "run_live.html",
    "setup.html",
    "cipp_result.html",
    "discovery_live.html",
    "disconnect.html",
    "review.html",
    "picker.html",
    "settings.html",
    "tenant_filters.html",
    "clients.html",
    "contacts.html",
    "history.html",
);

fn environment() -> Result<&'static Environment<'static>, String> {
    static ENVIRONMENT: std::sync::OnceLock<Result<Environment<'static>, String>> =
        std::sync::OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            let mut environment = Environment::new();
            for (name, source) in TEMPLATES {
                environment
                    .add_template(name, source)
                    .map_err(|error| format!("{error:#}"))?;
            }
            environment.add_filter("when", when);
            environment.add_filter("duration", duration);
            environment.add_filter("sentence", sentence);
            Ok(environment)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// RFC 3339 timestamps as `2026-12-04 17:12 UTC`.
fn when(value: Value) -> String {
    let text = value.as_str().map(str::to_owned).unwrap_or_default();
    match chrono::DateTime::parse_from_rfc3339(&text) {
        Ok(time) => time
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
        Err(_) => text,
    }
}

/// A message as a sentence: a capital first letter and a full stop unless it already ends
/// with one or with a link (error messages are written lowercase without a period, STYLE.md; a page shows
/// them between sentences of its own).
fn sentence(value: Value) -> String {
    let text = value.as_str().map(str::to_owned).unwrap_or_else(|| {
        if value.is_none() || value.is_undefined() {
            String::new()
        } else {
            value.to_string()
        }
    });
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let mut characters = text.chars();
    let mut sentence: String = characters
        .next()
        .map(|first| first.to_uppercase().chain(characters).collect())
        .unwrap_or_default();
    // A text that ends with a link (an admin-consent URL) gets no full stop: it would read as
    // part of the address when copied.
    let ends_with_link = sentence
        .rsplit(char::is_whitespace)
        .next()
        .is_some_and(|word| word.starts_with("https://") || word.starts_with("http://"));
    if !ends_with_link && !sentence.ends_with(['.', '!', '?', '…']) {
        sentence.push('.');
    }
    sentence
}

/// Seconds as "15 minutes", "1 day".
fn duration(seconds: u64) -> String {
    match seconds {
        s if s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s % 3_600 == 0 => plural(s / 3_600, "hour"),
        s if s % 60 == 0 => plural(s / 60, "minute"),
        s => plural(s, "second"),
    }
}

fn plural(count: u64, unit: &str) -> String {
    if count == 1 {
        format!("1 {unit}")
    } else {
        format!("{count} {unit}s")
    }
}

/// Renders a template to a response with `status`.
pub(crate) fn render(status: StatusCode, name: &str, context: Value) -> Response {
    let rendered = environment().and_then(|environment| {
        environment
            .get_template(name)
            .and_then(|template| template.render(context))
            .map_err(|error| format!("{error:#}"))
    });
    match rendered {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(template = name, error = %error, "console template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered; see the server log",
            )
                .into_response()
        }
    }
}

/// The SHA-256 of the console session cookie a request carries (what an OAuth state bound to
/// a console session is compared with).
pub(crate) fn session_cookie_hash(headers: &HeaderMap) -> Option<Vec<u8>> {
    session::session_cookie(headers)
        .map(|session_id| entra_sync_store::console::session_hash(&session_id))
}

/// A 403 page outside a console session (the OAuth callback's refusal).
pub(crate) fn refusal_page(title: &str, message: &str, remedy: &str) -> Response {
    PageError::page(StatusCode::FORBIDDEN, title, message, remedy).into_response()
}

/// What a console handler answers when it cannot show its page.
#[derive(Debug)]
pub(crate) enum PageError {
    /// Not signed in (or the session expired): to the sign-in page.
    SignIn,
    /// An error page with a heading, the problem and what to do.
    Page {
        status: StatusCode,
        title: String,
        message: String,
        remedy: String,
    },
}

impl PageError {
    pub(crate) fn page(
        status: StatusCode,
        title: impl Into<String>,
        message: impl Into<String>,
        remedy: impl Into<String>,
    ) -> PageError {
        PageError::Page {
            status,
            title: title.into(),
            message: message.into(),
            remedy: remedy.into(),
        }
    }
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> PageError {
        let remedy = match error.status {
            StatusCode::UNAUTHORIZED => "Sign in again.",
            StatusCode::FORBIDDEN => {
                "Ask an administrator of your PSA for the permission this page needs."
            }
            StatusCode::NOT_FOUND if error.code == "not_found" || error.code == "route_not_found" => {
                "The Entra integration may not be switched on for your workspace, or the item no longer exists. Go back to the overview."
            }
            StatusCode::NOT_FOUND => "Go back to the overview.",
            StatusCode::CONFLICT => "Reload the page to see the current state, then try again.",
            StatusCode::BAD_GATEWAY => "The provider or the workflow engine did not answer; try again in a minute.",
            status if status.is_client_error() => "Correct the input and try again.",
            _ => "Try again; if it keeps failing, check the server log.",
        };
        let title = match error.status {
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not available",
            status if status.is_server_error() => "Something went wrong",
            _ => "That did not work",
        };
        PageError::page(error.status, title, error.message, remedy)
    }
}

impl From<minijinja::Error> for PageError {
    fn from(error: minijinja::Error) -> PageError {
        tracing::error!(error = %error, "console template context failed");
        PageError::page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The page could not be prepared.",
            "Try again; if it keeps failing, check the server log.",
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignIn => Redirect::to("/console/sign-in").into_response(),
            PageError::Page {
                status,
                title,
                message,
                remedy,
            } => render(status, "error.html", context! { title, message, remedy }),
        }
    }
}

pub(crate) type PageResult = Result<Response, PageError>;

/// After a POST: to `location` with 303, also for htmx (which follows `HX-Redirect`).
pub(crate) fn see_other(headers: &HeaderMap, location: &str) -> Response {
    if headers.contains_key("hx-request") {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if let Ok(value) = HeaderValue::from_str(location) {
            response.headers_mut().insert("hx-redirect", value);
        }
        return response;
    }
    Redirect::to(location).into_response()
}

/// The first value of `name` in a form.
pub(crate) fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// A form's text field, trimmed; None when absent or blank.
pub(crate) fn text(form: &[(String, String)], name: &str) -> Option<String> {
    field(form, name)
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let environment = environment().map(|_| ());
        assert_eq!(environment, Ok(()));
    }

    #[test]
    fn messages_read_as_sentences() {
        let check = |input: &str, expected: &str| {
            assert_eq!(sentence(Value::from(input)), expected, "{input:?}");
        };
        check(
            "the workflow could not be started",
            "The workflow could not be started.",
        );
        check("Reconnect in Setup.", "Reconnect in Setup.");
        check("  why not?  ", "Why not?");
        check("", "");
        check("élan lost…", "Élan lost…");
        check(
            "grant consent at https://login.example/t/adminconsent?client_id=a",
            "Grant consent at https://login.example/t/adminconsent?client_id=a",
        );
        assert_eq!(sentence(Value::from(())), "");
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(duration(86_400), "1 day");
        assert_eq!(duration(900), "15 minutes");
        assert_eq!(duration(7_200), "2 hours");
    }
}

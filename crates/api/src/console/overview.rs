//! The overview (connection health, review backlog, schedule, failing tenants) and
//! "Sync All Tenants Now".

use std::collections::HashMap;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use minijinja::context;

use super::{render, see_other, Console, PageResult};
use crate::auth::{EntraRead, EntraUpdate};
use crate::routes::runs::{SyncBody, SyncScopeName};
use crate::AppState;

/// The words for a failed OAuth callback's code (SPEC §2.1), with what to do.
fn callback_failure(code: &str) -> (String, String) {
    let (message, remedy) = match code {
        "access_denied" | "consent_required" => (
            "Microsoft sign-in was cancelled or consent was not given.",
            "Start again with Connect to Microsoft and accept the requested permissions (an administrator of the partner tenant must consent).",
        ),
        "oauth_state_expired" => (
            "The sign-in took too long and its link expired.",
            "Start again with Connect to Microsoft and finish the sign-in within 10 minutes.",
        ),
        "oauth_state_used" | "oauth_state_unknown" | "invalid_state" => (
            "This sign-in link was already used or is not known.",
            "Start again with Connect to Microsoft from this console.",
        ),
        "oauth_state_tenant_mismatch" | "session_mismatch" => (
            "The sign-in was started from another console session.",
            "Finish the sign-in in the browser that started it, or start again here.",
        ),
        "direct_not_configured" => (
            "The Microsoft app registration is not configured on this server.",
            "Set MICROSOFT_CLIENT_ID, a credential and MICROSOFT_OAUTH_CALLBACK_URL, then try again (see the runbook).",
        ),
        _ => (
            "Microsoft did not accept the sign-in.",
            "Try Connect to Microsoft again; if it keeps failing, check the server log for this error code.",
        ),
    };
    (format!("{message} (error code: {code})"), remedy.to_owned())
}

pub(crate) async fn page(
    console: Console,
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    let layout = console.layout(&state, "overview").await?;
    let entra_status = query.get("entra_status").cloned().unwrap_or_default();
    let failure = query
        .get("error")
        .map(|code| callback_failure(code.chars().take(64).collect::<String>().as_str()))
        .map(|(message, remedy)| context! { message, remedy });
    let entra_enabled = layout.get_attr("entra_enabled")?.is_true();
    if !entra_enabled {
        return Ok(render(
            StatusCode::OK,
            "overview.html",
            context! { entra_status, failure, ..layout },
        ));
    }
    let caller = console.caller::<EntraRead>(&state).await?;
    let status = crate::app::entra::integration_status(&state, &caller).await?;
    let health = crate::app::overview::health(&state, &caller).await?;
    Ok(render(
        StatusCode::OK,
        "overview.html",
        context! { entra_status, failure, status, health, ..layout },
    ))
}

pub(crate) async fn sync_all(
    console: Console,
    headers: HeaderMap,
    State(state): State<AppState>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    console.verify(&form)?;
    let caller = console.caller::<EntraUpdate>(&state).await?;
    let started = crate::app::runs::start_sync(
        &state,
        &caller,
        SyncBody {
            scope: SyncScopeName::All,
            client_id: None,
        },
    )
    .await?;
    Ok(see_other(
        &headers,
        &format!("/console/runs/{}", started.run_id),
    ))
}

//! The setup wizard (SPEC §2–§5): Connect (direct or CIPP), Discover, Map, Initial sync; and
//! disconnect with its confirmation.

use std::collections::HashMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use minijinja::{context, Value};
use uuid::Uuid;

use super::{field, render, see_other, text, Console, PageError, PageResult};
use crate::app::Caller;
use crate::auth::{EntraRead, EntraUpdate};
use crate::routes::entra::{CippConnectBody, ConfirmBody, DecisionBody};
use crate::routes::PageQuery;
use crate::AppState;

fn all() -> PageQuery {
    PageQuery {
        limit: Some(500),
        cursor: None,
    }
}

/// Everything the setup page shows; `extra` carries a form's outcome (errors, test result).
async fn setup_context(
    console: &Console,
    state: &AppState,
    caller: &Caller,
    query: &HashMap<String, String>,
    extra: Value,
) -> Result<Value, PageError> {
    let layout = console.layout(state, "setup").await?;
    let status = crate::app::entra::integration_status(state, caller).await?;
    let health = crate::app::overview::health(state, caller).await?;
    let tenants = crate::app::entra::list_managed_tenants(state, caller, all()).await?;
    let preview = crate::app::entra::mapping_preview(state, caller, all()).await?;
    let (_, client_names) = crate::app::overview::names(state, caller).await?;
    let clients: Vec<Value> = client_names
        .iter()
        .map(|(client_id, name)| context! { client_id, name })
        .collect();
    let discovery_run_id = query
        .get("discovery")
        .and_then(|id| id.parse::<Uuid>().ok())
        .map(|id| id.to_string());
    let direct_configured = state.config.microsoft.client_id.is_some()
        || state.config.microsoft.app_registrations.is_some();
    Ok(context! {
        status,
        health,
        tenants,
        preview,
        clients,
        client_names,
        discovery_run_id,
        direct_configured,
        connected => query.get("connected").cloned(),
        mapped => query.get("mapped").cloned(),
        ..minijinja::value::merge_maps([extra, layout])
    })
}

pub(crate) async fn page(
    console: Console,
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    console.require_entra(&state).await?;
    let caller = console.caller::<EntraRead>(&state).await?;
    let context = setup_context(&console, &state, &caller, &query, context! {}).await?;
    Ok(render(StatusCode::OK, "setup.html", context))
}

fn cipp_body(form: &[(String, String)]) -> CippConnectBody {
    CippConnectBody {
        base_url: text(form, "base_url").unwrap_or_default(),
        api_token: text(form, "api_token"),
        client_id: text(form, "client_id"),
        client_secret: text(form, "client_secret"),
        tenant_id: text(form, "tenant_id"),
    }
}

/// "Test connection" and "Save" of the CIPP form. The test lists tenants and saves nothing;
/// with htmx it answers only the result fragment, so the typed credentials stay in the form.
pub(crate) async fn cipp(
    console: Console,
    headers: HeaderMap,
    State(state): State<AppState>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    console.verify(&form)?;
    let caller = console.caller::<EntraUpdate>(&state).await?;
    let base_url = text(&form, "base_url").unwrap_or_default();
    if field(&form, "action") != Some("test") {
        return match crate::app::entra::connect_cipp(&state, &caller, cipp_body(&form)).await {
            Ok(_) => Ok(see_other(
                &headers,
                "/console/setup?connected=cipp#discover",
            )),
            Err(error) if error.is_for_the_form() => {
                let extra = context! { cipp_error => error.message, base_url };
                let context =
                    setup_context(&console, &state, &caller, &HashMap::new(), extra).await?;
                Ok(render(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "setup.html",
                    context,
                ))
            }
            Err(error) => Err(error.into()),
        };
    }
    let (test_ok, test_error, status) =
        match crate::app::entra::test_cipp(&state, &caller, cipp_body(&form)).await {
            Ok(count) => (
                Some(format!(
                    "Connection works: CIPP lists {count} customer {}. Press Save to keep it.",
                    if count == 1 { "tenant" } else { "tenants" }
                )),
                None,
                StatusCode::OK,
            ),
            Err(error) if error.is_for_the_form() => {
                (None, Some(error.message), StatusCode::UNPROCESSABLE_ENTITY)
            }
            Err(error) => return Err(error.into()),
        };
    let extra = context! { cipp_ok => test_ok, cipp_error => test_error, base_url };
    if headers.contains_key("hx-request") {
        // htmx swaps only the result; a 200 so that htmx swaps the error text too.
        return Ok(render(StatusCode::OK, "cipp_result.html", extra));
    }
    let context = setup_context(&console, &state, &caller, &HashMap::new(), extra).await?;
    Ok(render(status, "setup.html", context))
}

/// "Connect to Microsoft": the state is bound to this console session, then the browser goes
/// to the Microsoft sign-in page.
pub(crate) async fn direct(
    console: Console,
    State(state): State<AppState>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    console.verify(&form)?;
    let caller = console.caller::<EntraUpdate>(&state).await?;
    let view =
        crate::app::entra::connect_direct_for_session(&state, &caller, &console.session_id).await?;
    Ok(Redirect::to(&view.authorize_url).into_response())
}

pub(crate) async fn discover(
    console: Console,
    headers: HeaderMap,
    State(state): State<AppState>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    console.verify(&form)?;
    let caller = console.caller::<EntraUpdate>(&state).await?;
    let started = crate::app::entra::start_discovery(&state, &caller).await?;
    Ok(see_other(
        &headers,
        &format!("/console/setup?discovery={}#discover", started.run_id),
    ))
}

/// The discovery run's progress, polled by htmx until it ends; then the tenants found.
pub(crate) async fn discovery_live(
    console: Console,
    State(state): State<AppState>,
    Path(run_id): Path<Uuid>,
) -> PageResult {
    console.require_entra(&state).await?;
    let layout = console.layout(&state, "setup").await?;
    let caller = console.caller::<EntraRead>(&state).await?;
    let run = crate::app::runs::get_run(&state, &caller, run_id).await?;
    let tenants = crate::app::entra::list_managed_tenants(&state, &caller, all()).await?;
    Ok(render(
        StatusCode::OK,
        "discovery_live.html",
        context! { run, tenants, discovery_run_id => run_id.to_string(), ..layout },
    ))
}

/// One "Confirm" for every decision on the Map step. Tenants left on "decide later" are not
/// sent.
pub(crate) async fn confirm(
    console: Console,
    headers: HeaderMap,
    State(state): State<AppState>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    console.verify(&form)?;
    let caller = console.caller::<EntraUpdate>(&state).await?;
    let mut decisions = Vec::new();
    for (key, value) in &form {
        let Some(id) = key.strip_prefix("decision:") else {
            continue;
        };
        let Ok(managed_tenant_id) = id.parse::<Uuid>() else {
            continue;
        };
        let decision = match value.as_str() {
            "" => continue,
            "skip" => DecisionBody::Skip { managed_tenant_id },
            "create_client" => DecisionBody::CreateClient { managed_tenant_id },
            other => match other
                .strip_prefix("map:")
                .and_then(|id| id.parse::<Uuid>().ok())
            {
                Some(client_id) => DecisionBody::Map {
                    managed_tenant_id,
                    client_id,
                },
                None => continue,
            },
        };
        decisions.push(decision);
    }
    let start_initial_sync = field(&form, "start_initial_sync") == Some("on");
    if decisions.is_empty() {
        let extra = context! { map_error => "Choose a client, Skip or Create a client for at least one tenant, then press Confirm." };
        let context = setup_context(&console, &state, &caller, &HashMap::new(), extra).await?;
        return Ok(render(
            StatusCode::UNPROCESSABLE_ENTITY,
            "setup.html",
            context,
        ));
    }
    let count = decisions.len();
    let confirmed = match crate::app::entra::confirm_mappings(
        &state,
        &caller,
        ConfirmBody {
            decisions,
            start_initial_sync,
        },
    )
    .await
    {
        Ok(confirmed) => confirmed,
        Err(error) if error.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let extra = context! { map_error => error.message };
            let context = setup_context(&console, &state, &caller, &HashMap::new(), extra).await?;
            return Ok(render(
                StatusCode::UNPROCESSABLE_ENTITY,
                "setup.html",
                context,
            ));
        }
        Err(error) => return Err(error.into()),
    };
    match confirmed.run_id {
        Some(run_id) => Ok(see_other(&headers, &format!("/console/runs/{run_id}"))),
        None => Ok(see_other(
            &headers,
            &format!("/console/setup?mapped={count}#map"),
        )),
    }
}

pub(crate) async fn disconnect_page(console: Console, State(state): State<AppState>) -> PageResult {
    console.require_entra(&state).await?;
    let layout = console.layout(&state, "overview").await?;
    let caller = console.caller::<EntraUpdate>(&state).await?;
    let status = crate::app::entra::integration_status(&state, &caller).await?;
    Ok(render(
        StatusCode::OK,
        "disconnect.html",
        context! { status, ..layout },
    ))
}

pub(crate) async fn disconnect(
    console: Console,
    headers: HeaderMap,
    State(state): State<AppState>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    console.verify(&form)?;
    let caller = console.caller::<EntraUpdate>(&state).await?;
    crate::app::entra::disconnect(&state, &caller).await?;
    Ok(see_other(&headers, "/console?disconnected=1"))
}

//! Run history (newest first, paged), one run's page with its live progress fragment, cancel,
//! and the answer to held inactivations.

use std::collections::HashMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use entra_sync_store::page::PageRequest;
use minijinja::context;
use uuid::Uuid;

use super::{field, render, see_other, Console, PageError, PageResult};
use crate::auth::{EntraRead, EntraUpdate};
use crate::routes::runs::{HeldAction, HeldInactivationsBody};
use crate::AppState;

const PAGE_SIZE: u32 = 20;

pub(crate) async fn list(
    console: Console,
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    console.require_entra(&state).await?;
    let layout = console.layout(&state, "runs").await?;
    let caller = console.caller::<EntraRead>(&state).await?;
    let cursor = query
        .get("cursor")
        .filter(|cursor| cursor.len() <= 512)
        .cloned();
    let runs = crate::app::runs::list_runs(
        &state,
        &caller,
        None,
        PageRequest {
            limit: Some(PAGE_SIZE),
            cursor,
        },
    )
    .await?;
    Ok(render(
        StatusCode::OK,
        "runs.html",
        context! { runs, ..layout },
    ))
}

/// A run's page (`run.html`) or its live fragment (`run_live.html`, which the page includes):
/// both are rendered from the same context here, so the fragment htmx swaps in always shows
/// what the page showed.
async fn render_run(
    console: &Console,
    state: &AppState,
    run_id: Uuid,
    template: &str,
) -> PageResult {
    console.require_entra(state).await?;
    let layout = console.layout(state, "runs").await?;
    let caller = console.caller::<EntraRead>(state).await?;
    let run = crate::app::runs::get_run(state, &caller, run_id).await?;
    let requested_by =
        crate::app::overview::actor_name(state, &caller, run.requested_by.as_deref()).await?;
    let (tenant_names, client_names) = crate::app::overview::names(state, &caller).await?;
    Ok(render(
        StatusCode::OK,
        template,
        context! { run, requested_by, tenant_names, client_names, ..layout },
    ))
}

pub(crate) async fn page(
    console: Console,
    State(state): State<AppState>,
    Path(run_id): Path<Uuid>,
) -> PageResult {
    render_run(&console, &state, run_id, "run.html").await
}

/// The part of a run's page that changes while it runs; htmx fetches it every second until the
/// run has ended (the fragment of an ended run no longer asks to be polled).
pub(crate) async fn live(
    console: Console,
    State(state): State<AppState>,
    Path(run_id): Path<Uuid>,
) -> PageResult {
    render_run(&console, &state, run_id, "run_live.html").await
}

pub(crate) async fn cancel(
    console: Console,
    headers: HeaderMap,
    State(state): State<AppState>,
    Path(run_id): Path<Uuid>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    console.verify(&form)?;
    let caller = console.caller::<EntraUpdate>(&state).await?;
    crate::app::runs::cancel_run(&state, &caller, run_id).await?;
    Ok(see_other(&headers, &format!("/console/runs/{run_id}")))
}

pub(crate) async fn held(
    console: Console,
    headers: HeaderMap,
    State(state): State<AppState>,
    Path((run_id, managed_tenant_id)): Path<(Uuid, Uuid)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    console.verify(&form)?;
    let caller = console.caller::<EntraUpdate>(&state).await?;
    let action = match field(&form, "action") {
        Some("apply") => HeldAction::Apply,
        Some("discard") => HeldAction::Discard,
        _ => {
            return Err(PageError::page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Choose apply or discard",
                "The form did not say whether to apply or discard the held inactivations.",
                "Go back to the run and press one of the two buttons.",
            ))
        }
    };
    crate::app::runs::resolve_held_inactivations(
        &state,
        &caller,
        run_id,
        managed_tenant_id,
        HeldInactivationsBody { action },
    )
    .await?;
    Ok(see_other(&headers, &format!("/console/runs/{run_id}")))
}

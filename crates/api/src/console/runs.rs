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

async fn run_context(
    console: &Console,
    state: &AppState,
    run_id: Uuid,
) -> Result<minijinja::Value, PageError> {
    let caller = console.caller::<EntraRead>(state).await?;
    let run = crate::app::runs::get_run(state, &caller, run_id).await?;
    let (tenant_names, client_names) = crate::app::overview::names(state, &caller).await?;
    Ok(context! { run, tenant_names, client_names })
}

pub(crate) async fn page(
    console: Console,
    State(state): State<AppState>,
    Path(run_id): Path<Uuid>,
) -> PageResult {
    console.require_entra(&state).await?;
    let layout = console.layout(&state, "runs").await?;
    let run = run_context(&console, &state, run_id).await?;
    Ok(render(
        StatusCode::OK,
        "run.html",
        minijinja::value::merge_maps([run, layout]),
    ))
}

/// The part of a run's page that changes while it runs; htmx fetches it every second until the
/// run has ended (the fragment of an ended run no longer asks to be polled).
pub(crate) async fn live(
    console: Console,
    State(state): State<AppState>,
    Path(run_id): Path<Uuid>,
) -> PageResult {
    console.require_entra(&state).await?;
    let layout = console.layout(&state, "runs").await?;
    let run = run_context(&console, &state, run_id).await?;
    Ok(render(
        StatusCode::OK,
        "run_live.html",
        minijinja::value::merge_maps([run, layout]),
    ))
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

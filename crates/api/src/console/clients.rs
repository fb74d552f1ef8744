//! Clients (each mapped client with its managed tenants, last sync and "Sync now"), contacts
//! (search) and one contact's history: every change the sync made and why.

use std::collections::HashMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use minijinja::context;
use uuid::Uuid;

use super::{render, see_other, Console, PageResult};
use crate::auth::{ContactRead, EntraRead, EntraUpdate};
use crate::routes::psa::ContactQuery;
use crate::routes::runs::{SyncBody, SyncScopeName};
use crate::AppState;

pub(crate) async fn page(console: Console, State(state): State<AppState>) -> PageResult {
    console.require_entra(&state).await?;
    let layout = console.layout(&state, "clients").await?;
    let caller = console.caller::<EntraRead>(&state).await?;
    let clients = crate::app::overview::mapped_clients(&state, &caller).await?;
    // "Sync now" is not offered while no sync can run (nothing connected, or a reconnect is
    // needed); the page says what to do instead.
    let connection_status = crate::app::entra::integration_status(&state, &caller)
        .await?
        .connection
        .status;
    Ok(render(
        StatusCode::OK,
        "clients.html",
        context! { clients, connection_status, ..layout },
    ))
}

/// "Sync now" for one client (flag `entra-integration-client-sync-action`; the application
/// layer refuses it when the flag is off).
pub(crate) async fn sync(
    console: Console,
    headers: HeaderMap,
    State(state): State<AppState>,
    Path(client_id): Path<Uuid>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    console.verify(&form)?;
    let caller = console.caller::<EntraUpdate>(&state).await?;
    let started = crate::app::runs::start_sync(
        &state,
        &caller,
        SyncBody {
            scope: SyncScopeName::Client,
            client_id: Some(client_id),
        },
    )
    .await?;
    Ok(see_other(
        &headers,
        &format!("/console/runs/{}", started.run_id),
    ))
}

pub(crate) async fn contacts(
    console: Console,
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    console.require_entra(&state).await?;
    let layout = console.layout(&state, "contacts").await?;
    let caller = console.caller::<ContactRead>(&state).await?;
    let search: String = query
        .get("q")
        .map(|q| q.trim().chars().take(100).collect())
        .unwrap_or_default();
    let contacts = crate::app::psa::list_contacts(
        &state,
        &caller,
        ContactQuery {
            client_id: None,
            email: None,
            include_inactive: true,
            limit: Some(50),
            cursor: query
                .get("cursor")
                .filter(|cursor| cursor.len() <= 512)
                .cloned(),
        },
        (!search.is_empty()).then(|| search.clone()),
    )
    .await?;
    let (_, client_names) = crate::app::overview::names(&state, &caller).await?;
    Ok(render(
        StatusCode::OK,
        "contacts.html",
        context! { contacts, client_names, search, ..layout },
    ))
}

pub(crate) async fn history(
    console: Console,
    State(state): State<AppState>,
    Path(contact_id): Path<Uuid>,
) -> PageResult {
    console.require_entra(&state).await?;
    let layout = console.layout(&state, "contacts").await?;
    let caller = console.caller::<ContactRead>(&state).await?;
    let contact = crate::app::psa::get_contact(&state, &caller, contact_id).await?;
    let changes = crate::app::psa::contact_history(&state, &caller, contact_id).await?;
    let (tenant_names, client_names) = crate::app::overview::names(&state, &caller).await?;
    Ok(render(
        StatusCode::OK,
        "history.html",
        context! { contact, changes, tenant_names, client_names, ..layout },
    ))
}

//! The review queue: filter by status, client and reason; resolve with `link_existing`
//! (through a contact picker that searches on the server), `create_new`, or dismiss with a
//! note; re-open a dismissed item.

use std::collections::HashMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use minijinja::context;
use uuid::Uuid;

use super::{field, render, see_other, text, Console, PageError, PageResult};
use crate::auth::{ContactRead, EntraRead, EntraUpdate};
use crate::routes::admin::{ResolveBody, ReviewQuery, ReviewReasonFilter, ReviewStatusFilter};
use crate::routes::psa::ContactQuery;
use crate::AppState;

pub(crate) async fn list(
    console: Console,
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    console.require_entra(&state).await?;
    let layout = console.layout(&state, "review").await?;
    let caller = console.caller::<EntraRead>(&state).await?;
    let status_name = query.get("status").map(String::as_str).unwrap_or("open");
    let status = match status_name {
        "open" => Some(ReviewStatusFilter::Open),
        "resolved" => Some(ReviewStatusFilter::Resolved),
        "dismissed" => Some(ReviewStatusFilter::Dismissed),
        _ => None,
    };
    let client_id = query
        .get("client_id")
        .and_then(|id| id.parse::<Uuid>().ok());
    let reason = query.get("reason").and_then(|name| {
        ReviewReasonFilter::ALL
            .into_iter()
            .find(|reason| reason.as_str() == name)
    });
    let items = crate::app::admin::list_review_items(
        &state,
        &caller,
        ReviewQuery {
            status,
            client_id,
            reason,
            managed_tenant_id: None,
            limit: Some(100),
            cursor: query
                .get("cursor")
                .filter(|cursor| cursor.len() <= 512)
                .cloned(),
        },
    )
    .await?;
    let next_cursor = items.next_cursor.clone();
    let items = items.items;
    let (tenant_names, client_names) = crate::app::overview::names(&state, &caller).await?;
    let clients: Vec<_> = client_names
        .iter()
        .map(|(client_id, name)| context! { client_id, name })
        .collect();
    Ok(render(
        StatusCode::OK,
        "review.html",
        context! { items, next_cursor, tenant_names, client_names, clients,
        reasons => ReviewReasonFilter::ALL.map(ReviewReasonFilter::as_str),
        filter => context! {
            status => status_name,
            client_id => client_id.map(|id| id.to_string()),
            reason => reason.map(ReviewReasonFilter::as_str),
        },
        resolved => query.get("resolved").cloned(), ..layout },
    ))
}

/// The contact picker's results for `q` (name or email contains it), searched on the server.
pub(crate) async fn picker(
    console: Console,
    State(state): State<AppState>,
    Path(item_id): Path<Uuid>,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    console.require_entra(&state).await?;
    let layout = console.layout(&state, "review").await?;
    let caller = console.caller::<ContactRead>(&state).await?;
    let search: String = query
        .get("q")
        .map(|q| q.trim().chars().take(100).collect())
        .unwrap_or_default();
    let contacts = if search.chars().count() < 2 {
        None
    } else {
        Some(
            crate::app::psa::list_contacts(
                &state,
                &caller,
                ContactQuery {
                    client_id: None,
                    email: None,
                    include_inactive: false,
                    limit: Some(10),
                    cursor: None,
                },
                Some(search.clone()),
            )
            .await?,
        )
    };
    let (_, client_names) = crate::app::overview::names(&state, &caller).await?;
    Ok(render(
        StatusCode::OK,
        "picker.html",
        context! { item_id => item_id.to_string(), search, contacts, client_names, ..layout },
    ))
}

pub(crate) async fn resolve(
    console: Console,
    headers: HeaderMap,
    State(state): State<AppState>,
    Path(item_id): Path<Uuid>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    console.verify(&form)?;
    let caller = console.caller::<EntraUpdate>(&state).await?;
    let body = match field(&form, "action") {
        Some("link_existing") => {
            let contact_id = field(&form, "contact_id")
                .and_then(|id| id.parse::<Uuid>().ok())
                .ok_or_else(|| {
                    PageError::page(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Choose a contact",
                        "No contact was chosen to link.",
                        "Search for the contact in the picker and press its Link button.",
                    )
                })?;
            ResolveBody::LinkExisting {
                contact_id,
                allow_other_client: field(&form, "allow_other_client") == Some("on"),
            }
        }
        Some("create_new") => ResolveBody::CreateNew {},
        Some("dismiss") => ResolveBody::Dismiss {
            note: text(&form, "note"),
        },
        _ => {
            return Err(PageError::page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Choose an action",
                "The form did not say how to resolve the item.",
                "Go back to the review queue and use one of the buttons.",
            ))
        }
    };
    crate::app::admin::resolve_review_item(&state, &caller, item_id, body).await?;
    Ok(see_other(&headers, "/console/review?resolved=1"))
}

pub(crate) async fn reopen(
    console: Console,
    headers: HeaderMap,
    State(state): State<AppState>,
    Path(item_id): Path<Uuid>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    console.verify(&form)?;
    let caller = console.caller::<EntraUpdate>(&state).await?;
    crate::app::admin::reopen_review_item(&state, &caller, item_id).await?;
    Ok(see_other(&headers, "/console/review?status=open"))
}

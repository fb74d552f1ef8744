//! PSA reads the console needs: contacts (the review queue's picker) and a contact's history.

use entra_sync_store::psa::ContactFilter;
use uuid::Uuid;

use super::Caller;
use crate::error::ApiError;
use crate::routes::psa::{ContactChangeView, ContactQuery, ContactView};
use crate::routes::{check_text, ListResponse, PageQuery};
use crate::AppState;

/// Lists contacts by name, with their link and inactive reason; `search` matches name or email.
pub(crate) async fn list_contacts(
    state: &AppState,
    caller: &Caller,
    query: ContactQuery,
    search: Option<String>,
) -> Result<ListResponse<ContactView>, ApiError> {
    if let Some(email) = &query.email {
        check_text("email", email, 320)
            .map_err(|error| ApiError::bad_request("invalid_query", error.message))?;
    }
    let page_query = PageQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    };
    let filter = ContactFilter {
        client_id: query.client_id,
        email: query.email.clone(),
        include_inactive: query.include_inactive,
        search,
    };
    let page = state
        .store
        .list_contacts(caller.user.tenant_id, &filter, &page_query.page_request()?)
        .await?;
    Ok(ListResponse::from_page(page, ContactView::from))
}

/// Every change the sync made to a contact, oldest first.
pub(crate) async fn contact_history(
    state: &AppState,
    caller: &Caller,
    contact_id: Uuid,
) -> Result<ListResponse<ContactChangeView>, ApiError> {
    let tenant_id = caller.user.tenant_id;
    state.store.get_contact(tenant_id, contact_id).await?;
    let changes = state.store.contact_history(tenant_id, contact_id).await?;
    Ok(ListResponse {
        items: changes
            .into_iter()
            .map(|change| ContactChangeView {
                change_id: change.change_id,
                run_id: change.run_id,
                managed_tenant_id: change.managed_tenant_id,
                object_id: change.object_id,
                action: change.action,
                before: change.before,
                after: change.after,
                at: change.at,
            })
            .collect(),
        next_cursor: None,
    })
}

/// One contact with its link and inactive reason.
pub(crate) async fn get_contact(
    state: &AppState,
    caller: &Caller,
    contact_id: Uuid,
) -> Result<ContactView, ApiError> {
    let record = state
        .store
        .get_contact(caller.user.tenant_id, contact_id)
        .await?;
    Ok(ContactView::from(record))
}

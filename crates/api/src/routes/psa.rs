//! The PSA's own resources the integration works with: clients and contacts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use entra_sync_domain::model::ContactFields;
use entra_sync_store::psa::{Client, ContactPatch, ContactRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{audit, check_text, double_option, ListResponse, PageQuery};
use crate::app::Caller;
use crate::auth::{
    Authorized, ClientCreate, ClientRead, ContactCreate, ContactRead, ContactUpdate,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::AppState;

const MAX_NAME_CHARS: usize = 256;
const MAX_FIELD_CHARS: usize = 128;
pub(crate) const MAX_DOMAINS: usize = 200;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_clients, create_client))
        .routes(routes!(list_contacts, create_contact))
        .routes(routes!(update_contact))
        .routes(routes!(contact_history))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ClientView {
    pub(crate) client_id: Uuid,
    pub(crate) name: String,
    pub(crate) domains: Vec<String>,
    pub(crate) secondary_domains: Vec<String>,
}

impl From<Client> for ClientView {
    fn from(client: Client) -> Self {
        ClientView {
            client_id: client.client_id,
            name: client.name,
            domains: client.domains,
            secondary_domains: client.secondary_domains,
        }
    }
}

/// Lists clients by name.
#[utoipa::path(get, path = "/api/v1/clients", tag = "psa", params(PageQuery),
    responses((status = 200, body = ListResponse<ClientView>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
async fn list_clients(
    caller: Authorized<ClientRead>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ListResponse<ClientView>>, ApiError> {
    let page = state
        .store
        .list_clients(caller.user.tenant_id, &query.page_request()?)
        .await?;
    Ok(Json(ListResponse::from_page(page, ClientView::from)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateClientBody {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) domains: Vec<String>,
    #[serde(default)]
    pub(crate) secondary_domains: Vec<String>,
}

fn check_domains(field: &str, domains: &[String]) -> Result<(), ApiError> {
    if domains.len() > MAX_DOMAINS {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("{field} has more than {MAX_DOMAINS} entries"),
        ));
    }
    for domain in domains {
        let normalized = domain.trim().trim_end_matches('.').to_lowercase();
        if !entra_sync_domain::email::is_domain(&normalized) {
            return Err(ApiError::unprocessable(
                "invalid_domain",
                format!("{field} contains a value that is not a domain name"),
            ));
        }
    }
    Ok(())
}

/// Creates a client.
#[utoipa::path(post, path = "/api/v1/clients", tag = "psa", request_body = CreateClientBody,
    responses((status = 201, body = ClientView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_client(
    caller: Authorized<ClientCreate>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateClientBody>,
) -> Result<(StatusCode, Json<ClientView>), ApiError> {
    // Checked as sent (the document's limits count what is sent), then stored trimmed.
    check_text("name", &body.name, MAX_NAME_CHARS)?;
    let name = body.name.trim();
    if name.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_field",
            "name must not be empty",
        ));
    }
    check_domains("domains", &body.domains)?;
    check_domains("secondary_domains", &body.secondary_domains)?;
    let client = state
        .store
        .create_client(
            caller.user.tenant_id,
            name,
            &body.domains,
            &body.secondary_domains,
        )
        .await?;
    audit(
        &state,
        caller.user.tenant_id,
        &caller.actor(),
        "client.create",
        Some(format!("client:{}", client.client_id)),
        serde_json::json!({"name": client.name, "domains": client.domains,
                           "secondary_domains": client.secondary_domains}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(client.into())))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ContactLinkView {
    pub(crate) managed_tenant_id: Uuid,
    pub(crate) entra_tenant_id: String,
    pub(crate) object_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ContactView {
    pub(crate) contact_id: Uuid,
    pub(crate) client_id: Uuid,
    pub(crate) full_name: String,
    pub(crate) email: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) mobile: Option<String>,
    pub(crate) job_title: Option<String>,
    pub(crate) is_active: bool,
    /// `disabled_upstream`, `deleted_upstream` or `manual`.
    pub(crate) inactive_reason: Option<String>,
    pub(crate) sync_locked: bool,
    pub(crate) link: Option<ContactLinkView>,
}

impl From<ContactRecord> for ContactView {
    fn from(record: ContactRecord) -> Self {
        let contact = record.contact;
        ContactView {
            contact_id: contact.contact_id,
            client_id: contact.client_id,
            full_name: contact.fields.full_name,
            email: contact.fields.email,
            phone: contact.fields.phone,
            mobile: contact.fields.mobile,
            job_title: contact.fields.job_title,
            is_active: contact.is_active,
            inactive_reason: contact
                .inactive_reason
                .map(|reason| reason.as_str().to_owned()),
            sync_locked: contact.sync_locked,
            link: record.link.map(|link| ContactLinkView {
                managed_tenant_id: link.managed_tenant_id,
                entra_tenant_id: link.entra_tenant_id,
                object_id: link.object_id,
            }),
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContactQuery {
    pub(crate) client_id: Option<Uuid>,
    pub(crate) email: Option<String>,
    #[serde(default)]
    pub(crate) include_inactive: bool,
    pub(crate) limit: Option<u32>,
    pub(crate) cursor: Option<String>,
}

/// Lists contacts by name, with their link and inactive reason.
#[utoipa::path(get, path = "/api/v1/contacts", tag = "psa", params(ContactQuery),
    responses((status = 200, body = ListResponse<ContactView>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_contacts(
    caller: Authorized<ContactRead>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ContactQuery>,
) -> Result<Json<ListResponse<ContactView>>, ApiError> {
    crate::app::psa::list_contacts(&state, &Caller::from(caller), query, None)
        .await
        .map(Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateContactBody {
    pub(crate) client_id: Uuid,
    pub(crate) full_name: String,
    pub(crate) email: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) mobile: Option<String>,
    pub(crate) job_title: Option<String>,
}

/// A contact's address: one the matcher can use. An empty string is refused rather than
/// stored; `null` (or leaving the field out) means no address.
fn check_email(email: &str) -> Result<(), ApiError> {
    if email.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_email",
            "email must be an address; send null for none",
        ));
    }
    if entra_sync_domain::email::normalize_email(email).is_none() {
        return Err(ApiError::unprocessable(
            "invalid_email",
            "email is not a valid address",
        ));
    }
    Ok(())
}

fn check_optional(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(value) => check_text(field, value, MAX_FIELD_CHARS),
        None => Ok(()),
    }
}

/// Creates a contact under a client.
#[utoipa::path(post, path = "/api/v1/contacts", tag = "psa", request_body = CreateContactBody,
    responses((status = 201, body = ContactView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_contact(
    caller: Authorized<ContactCreate>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateContactBody>,
) -> Result<(StatusCode, Json<ContactView>), ApiError> {
    check_text("full_name", &body.full_name, MAX_NAME_CHARS)?;
    if let Some(email) = &body.email {
        check_text("email", email, 254)?;
        check_email(email)?;
    }
    check_optional("phone", body.phone.as_deref())?;
    check_optional("mobile", body.mobile.as_deref())?;
    check_optional("job_title", body.job_title.as_deref())?;
    let fields = ContactFields {
        full_name: body.full_name,
        email: body.email,
        phone: body.phone,
        mobile: body.mobile,
        job_title: body.job_title,
    };
    let record = state
        .store
        .create_contact(caller.user.tenant_id, body.client_id, &fields)
        .await?;
    audit(
        &state,
        caller.user.tenant_id,
        &caller.actor(),
        "contact.create",
        Some(format!("contact:{}", record.contact.contact_id)),
        serde_json::json!({"client_id": record.contact.client_id}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateContactBody {
    /// Cannot be cleared (null is refused).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub(crate) full_name: Option<Option<String>>,
    /// null clears the field.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub(crate) email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub(crate) phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub(crate) mobile: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub(crate) job_title: Option<Option<String>>,
    /// True: the sync leaves this contact's fields and active state alone.
    pub(crate) sync_locked: Option<bool>,
    /// False marks the contact inactive (reason `manual`); true reactivates it.
    pub(crate) is_active: Option<bool>,
}

/// Edits a contact's fields, lock and active state.
#[utoipa::path(patch, path = "/api/v1/contacts/{contact_id}", tag = "psa",
    params(("contact_id" = Uuid, Path, description = "contact")),
    request_body = UpdateContactBody,
    responses((status = 200, body = ContactView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_contact(
    caller: Authorized<ContactUpdate>,
    State(state): State<AppState>,
    ApiPath(contact_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateContactBody>,
) -> Result<Json<ContactView>, ApiError> {
    let full_name = match body.full_name {
        Some(None) => {
            return Err(ApiError::unprocessable(
                "invalid_field",
                "full_name cannot be null",
            ))
        }
        Some(Some(full_name)) => {
            check_text("full_name", &full_name, MAX_NAME_CHARS)?;
            Some(full_name)
        }
        None => None,
    };
    if let Some(Some(email)) = &body.email {
        check_text("email", email, 254)?;
        check_email(email)?;
    }
    check_optional("phone", body.phone.clone().flatten().as_deref())?;
    check_optional("mobile", body.mobile.clone().flatten().as_deref())?;
    check_optional("job_title", body.job_title.clone().flatten().as_deref())?;
    let changed: Vec<&str> = [
        ("full_name", full_name.is_some()),
        ("email", body.email.is_some()),
        ("phone", body.phone.is_some()),
        ("mobile", body.mobile.is_some()),
        ("job_title", body.job_title.is_some()),
        ("sync_locked", body.sync_locked.is_some()),
        ("is_active", body.is_active.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    let patch = ContactPatch {
        full_name,
        email: body.email,
        phone: body.phone,
        mobile: body.mobile,
        job_title: body.job_title,
        sync_locked: body.sync_locked,
        is_active: body.is_active,
    };
    let record = state
        .store
        .update_contact(caller.user.tenant_id, contact_id, &patch)
        .await?;
    audit(
        &state,
        caller.user.tenant_id,
        &caller.actor(),
        "contact.update",
        Some(format!("contact:{contact_id}")),
        serde_json::json!({"fields": changed, "sync_locked": patch.sync_locked,
                           "is_active": patch.is_active}),
    )
    .await?;
    Ok(Json(record.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ContactChangeView {
    pub(crate) change_id: Uuid,
    pub(crate) run_id: Option<Uuid>,
    pub(crate) managed_tenant_id: Option<Uuid>,
    pub(crate) object_id: Option<String>,
    /// `create`, `link`, `update`, `inactivate`, `reactivate` or `review_link`.
    pub(crate) action: String,
    #[schema(value_type = Option<Object>)]
    pub(crate) before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub(crate) after: Option<serde_json::Value>,
    pub(crate) at: chrono::DateTime<chrono::Utc>,
}

/// Every change the sync made to a contact, oldest first: the answer to "why did it do that?".
#[utoipa::path(get, path = "/api/v1/contacts/{contact_id}/history", tag = "psa",
    params(("contact_id" = Uuid, Path, description = "contact")),
    responses((status = 200, body = ListResponse<ContactChangeView>),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn contact_history(
    caller: Authorized<ContactRead>,
    State(state): State<AppState>,
    ApiPath(contact_id): ApiPath<Uuid>,
) -> Result<Json<ListResponse<ContactChangeView>>, ApiError> {
    crate::app::psa::contact_history(&state, &Caller::from(caller), contact_id)
        .await
        .map(Json)
}

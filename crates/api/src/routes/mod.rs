//! The route table: one module per area, each contributing `utoipa_axum` routes, plus the
//! shapes several areas share (list pages, audit helper).

pub(crate) mod admin;
pub(crate) mod entra;
mod health;
pub(crate) mod oauth;

pub(crate) use oauth::callback_with_trailing_slash;
pub(crate) mod platform;
pub(crate) mod psa;
pub(crate) mod runs;

use axum::http::{Method, Uri};
use entra_sync_store::page::{Page, PageRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::AppState;

pub(crate) fn openapi_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(platform::routes())
        .merge(psa::routes())
        .merge(entra::routes())
        .merge(runs::routes())
        .merge(admin::routes())
        .merge(oauth::routes())
}

pub(crate) async fn fallback(uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "route_not_found",
        format!("no endpoint at {}", uri.path()),
    )
}

pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// `limit` and `cursor` of every list endpoint.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    /// At most this many items (1..=500, default 50; outside that range is a 400).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; empty means the first page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub(crate) fn page_request(&self) -> Result<PageRequest, ApiError> {
        use entra_sync_store::page::MAX_LIMIT;
        if self
            .limit
            .is_some_and(|limit| !(1..=MAX_LIMIT).contains(&limit))
        {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let max_cursor = crate::openapi::MAX_CURSOR_CHARS as usize;
        if self
            .cursor
            .as_ref()
            .is_some_and(|cursor| cursor.chars().count() > max_cursor)
        {
            return Err(ApiError::bad_request("invalid_query", "cursor is too long"));
        }
        Ok(PageRequest {
            limit: self.limit,
            // An empty cursor (`?cursor=`, what a client sends for "no previous page") is the
            // first page.
            cursor: self.cursor.clone().filter(|cursor| !cursor.is_empty()),
        })
    }
}

/// A page of a list: `{"items":[…],"next_cursor":"…"|null}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ListResponse<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> ListResponse<T> {
    pub(crate) fn from_page<S>(page: Page<S>, view: impl Fn(S) -> T) -> ListResponse<T> {
        ListResponse {
            items: page.items.into_iter().map(view).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// Records who changed what (audit failures fail the request: an unaudited change would break
/// the audit promise, and the database is down anyway).
pub(crate) async fn audit(
    state: &AppState,
    tenant_id: uuid::Uuid,
    actor: &str,
    action: &str,
    target: Option<String>,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    state
        .store
        .record_api_audit(tenant_id, actor, action, target.as_deref(), Some(&detail))
        .await?;
    Ok(())
}

/// Deserializes a field that distinguishes absent (None) from null (Some(None)).
pub(crate) fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Deserializes an optional nested object, refusing the array form (`[true, 900]`) that serde's
/// derive also accepts for a struct but the OpenAPI document does not allow.
pub(crate) fn object_or_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Null => Ok(None),
        value @ serde_json::Value::Object(_) => {
            T::deserialize(value).map(Some).map_err(D::Error::custom)
        }
        _ => Err(D::Error::custom("expected an object or null")),
    }
}

/// Refuses strings longer than `max` characters or containing control characters.
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("{field} is longer than {max} characters"),
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("{field} contains control characters"),
        ));
    }
    Ok(())
}

/// Pages a list the store returns whole. The cursor is the offset of the next item, opaque to
/// callers like every other cursor.
pub(crate) fn paginate<T>(items: Vec<T>, query: &PageQuery) -> Result<ListResponse<T>, ApiError> {
    let invalid = || {
        ApiError::unprocessable(
            "invalid_cursor",
            "the cursor is not valid; start again without one",
        )
    };
    let request = query.page_request()?;
    let limit = request
        .limit
        .unwrap_or(entra_sync_store::page::DEFAULT_LIMIT)
        .clamp(1, entra_sync_store::page::MAX_LIMIT) as usize;
    let offset = match request.cursor.as_deref() {
        None => 0,
        Some(cursor) => {
            entra_sync_store::page::decode_offset_cursor(cursor).map_err(|_| invalid())?
        }
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(offset).take(limit).collect();
    let next = offset.saturating_add(page.len());
    let next_cursor = (next < total).then(|| entra_sync_store::page::encode_offset_cursor(next));
    Ok(ListResponse {
        items: page,
        next_cursor,
    })
}

/// Makes the PSA tenant's recurring-sync Schedule match its settings and connection: present
/// with the configured interval while the schedule is enabled and a connection is saved,
/// absent otherwise. A failure is logged, not returned: the change that triggered this is
/// already committed, and the worker reconciles every schedule when it starts.
pub(crate) async fn refresh_schedule(state: &AppState, tenant_id: uuid::Uuid) {
    let wanted = async {
        let settings = state.store.load_settings(tenant_id).await?;
        let connection = state.store.connection_summary(tenant_id).await?;
        Ok::<_, entra_sync_store::error::StoreError>(
            (settings.schedule.enabled && connection.has_credentials)
                .then(|| std::time::Duration::from_secs(settings.schedule.interval_seconds)),
        )
    };
    let result = match wanted.await {
        Ok(interval) => state.starter.apply_schedule(tenant_id, interval).await,
        Err(error) => Err(anyhow::anyhow!(
            "reading the schedule settings failed: {error}"
        )),
    };
    if let Err(error) = result {
        tracing::warn!(%tenant_id, error = %error, "updating the recurring schedule failed");
    }
}

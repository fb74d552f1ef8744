//! The Entra integration: connection (CIPP, direct, validate, disconnect), status, discovery,
//! managed tenants, mapping preview and confirmation, mappings and unmap.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use entra_sync_connection::interactive::{cipp_tenants_visible, probe_graph, MicrosoftEndpoints};
use entra_sync_connection::{DirectoryError, ErrorRecord};
use entra_sync_store::connection::{CippCredentialsRecord, ConnectionCredentials};
use entra_sync_store::discovery::ManagedTenantRecord;
use entra_sync_store::mapping::MappingRecord;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::runs::RunView;
use super::{audit, check_text, ListResponse, PageQuery};
use crate::app::Caller;
use crate::auth::{Authorized, EntraRead, EntraUpdate};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::AppState;

pub(crate) const MAX_DECISIONS: usize = 1000;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(integration_status))
        .routes(routes!(connect_cipp))
        .routes(routes!(validate_connection))
        .routes(routes!(disconnect))
        .routes(routes!(start_discovery))
        .routes(routes!(list_managed_tenants))
        .routes(routes!(mapping_preview))
        .routes(routes!(confirm_mappings))
        .routes(routes!(list_mappings))
        .routes(routes!(unmap))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConnectionView {
    /// `direct`, `cipp`, or null.
    pub(crate) kind: Option<String>,
    /// `disconnected`, `connected`, `needs_reconnect` or `validation_failed`.
    pub(crate) status: String,
    pub(crate) cipp_base_url: Option<String>,
    pub(crate) connected_at: Option<chrono::DateTime<chrono::Utc>>,
    #[schema(value_type = Option<Object>)]
    pub(crate) last_error: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CountsSummaryView {
    pub(crate) managed_tenants: i64,
    pub(crate) active_managed_tenants: i64,
    pub(crate) missing_managed_tenants: i64,
    pub(crate) mapped: i64,
    pub(crate) skipped: i64,
    pub(crate) undecided: i64,
    pub(crate) linked_contacts: i64,
    pub(crate) open_review_items: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ScheduleView {
    pub(crate) enabled: bool,
    pub(crate) interval_seconds: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FeaturesView {
    pub(crate) client_sync_action: bool,
    pub(crate) cipp: bool,
    /// Off: the sync applies no field overwrites.
    pub(crate) field_sync: bool,
    pub(crate) ambiguous_queue: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IntegrationStatusView {
    pub(crate) connection: ConnectionView,
    pub(crate) counts: CountsSummaryView,
    pub(crate) schedule: ScheduleView,
    pub(crate) features: FeaturesView,
    pub(crate) last_sync_run: Option<RunView>,
    pub(crate) last_discovery_run: Option<RunView>,
}

pub(crate) async fn connection_view(
    state: &AppState,
    tenant_id: Uuid,
) -> Result<ConnectionView, ApiError> {
    let summary = state.store.connection_summary(tenant_id).await?;
    Ok(ConnectionView {
        kind: summary.kind,
        status: summary.status,
        cipp_base_url: summary.cipp_base_url,
        connected_at: summary.connected_at,
        last_error: summary.last_error,
    })
}

/// Status: connection, counts, schedule, feature flags, last runs.
#[utoipa::path(get, path = "/api/v1/integrations/entra", tag = "entra",
    responses((status = 200, body = IntegrationStatusView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn integration_status(
    caller: Authorized<EntraRead>,
    State(state): State<AppState>,
) -> Result<Json<IntegrationStatusView>, ApiError> {
    crate::app::entra::integration_status(&state, &Caller::from(caller))
        .await
        .map(Json)
}

/// CIPP credentials: `{base_url, api_token}` or `{base_url, client_id, client_secret,
/// tenant_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CippConnectBody {
    pub(crate) base_url: String,
    pub(crate) api_token: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
    pub(crate) tenant_id: Option<String>,
}

fn loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(domain) => domain.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(address) => address.is_loopback(),
        url::Host::Ipv6(address) => address.is_loopback(),
    }
}

/// A CIPP base URL: https (http only for loopback hosts, as in local tests), no credentials,
/// query or fragment.
pub(crate) fn parse_cipp_base_url(raw: &str) -> Result<url::Url, ApiError> {
    let invalid =
        |why: &str| ApiError::unprocessable("invalid_base_url", format!("base_url {why}"));
    check_text("base_url", raw, 2048)?;
    let url = url::Url::parse(raw.trim()).map_err(|_| invalid("is not a valid URL"))?;
    let host = url.host().ok_or_else(|| invalid("has no host"))?;
    match url.scheme() {
        "https" => {}
        "http" if loopback(&host) => {}
        "http" => return Err(invalid("must use https")),
        _ => return Err(invalid("must be an https URL")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not contain credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    Ok(url)
}

fn required_secret(field: &str, value: Option<String>) -> Result<String, ApiError> {
    let value = value.unwrap_or_default();
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_credentials",
            format!("{field} is required"),
        ));
    }
    check_text(field, trimmed, 4096)?;
    Ok(trimmed.to_owned())
}

pub(crate) fn cipp_credentials(body: CippConnectBody) -> Result<CippCredentialsRecord, ApiError> {
    let client_fields =
        body.client_id.is_some() || body.client_secret.is_some() || body.tenant_id.is_some();
    match (body.api_token, client_fields) {
        (Some(api_token), false) => Ok(CippCredentialsRecord::ApiToken {
            api_token: required_secret("api_token", Some(api_token))?,
        }),
        (None, true) => Ok(CippCredentialsRecord::ApiClient {
            client_id: required_secret("client_id", body.client_id)?,
            client_secret: required_secret("client_secret", body.client_secret)?,
            tenant_id: required_secret("tenant_id", body.tenant_id)?,
        }),
        (Some(_), true) => Err(ApiError::unprocessable(
            "invalid_credentials",
            "send either api_token or client_id, client_secret and tenant_id, not both",
        )),
        (None, false) => Err(ApiError::unprocessable(
            "invalid_credentials",
            "send api_token, or client_id, client_secret and tenant_id",
        )),
    }
}

/// How many tenants CIPP shows for `credentials` (one attempt within the provider timeout).
pub(crate) async fn cipp_check(
    state: &AppState,
    base_url: url::Url,
    credentials: &CippCredentialsRecord,
) -> Result<usize, DirectoryError> {
    cipp_tenants_visible(
        &state.config.microsoft.login_base_url,
        base_url,
        credentials,
        state.config.provider_timeout,
        state.config.allow_private_endpoints,
    )
    .await
}

/// A provider failure as the caller sees it (502 or 422, with class and remediation).
pub(crate) fn provider_error(provider: &str, error: &DirectoryError) -> ApiError {
    ApiError::provider(provider, error)
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConnectedView {
    pub(crate) connection: ConnectionView,
    /// Customer tenants the credentials can see.
    pub(crate) tenants_visible: usize,
}

/// Connects CIPP: the credentials are validated by listing tenants before anything is saved.
#[utoipa::path(post, path = "/api/v1/integrations/entra/connect/cipp", tag = "entra",
    request_body = CippConnectBody,
    responses((status = 200, body = ConnectedView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn connect_cipp(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CippConnectBody>,
) -> Result<Json<ConnectedView>, ApiError> {
    crate::app::entra::connect_cipp(&state, &Caller::from(caller), body)
        .await
        .map(Json)
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ValidationView {
    /// Whether the probe succeeded.
    pub(crate) ok: bool,
    pub(crate) connection: ConnectionView,
    pub(crate) tenants_visible: Option<usize>,
    pub(crate) error: Option<crate::error::ErrorDetail>,
}

/// Probes the saved connection now and records the outcome in its status.
#[utoipa::path(post, path = "/api/v1/integrations/entra/validate", tag = "entra",
    responses((status = 200, body = ValidationView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn validate_connection(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
) -> Result<Json<ValidationView>, ApiError> {
    use entra_sync_store::connection::ConnectionStatus;
    let tenant_id = caller.user.tenant_id;
    let connection = state.store.get_connection(tenant_id).await?;
    let Some(connection) = connection.filter(|connection| connection.credentials.is_some()) else {
        return Err(ApiError::conflict(
            "not_connected",
            "there is no connection to validate",
        ));
    };
    let outcome = match (&connection.credentials, &connection.cipp_base_url) {
        (Some(ConnectionCredentials::Cipp(credentials)), Some(base_url)) => {
            let base_url = url::Url::parse(base_url).map_err(|_| {
                ApiError::conflict("invalid_connection", "the saved base URL is not valid")
            })?;
            cipp_check(&state, base_url, credentials).await.map(Some)
        }
        (Some(ConnectionCredentials::Direct(token_set)), _)
            if token_set.expires_at > chrono::Utc::now() + chrono::Duration::seconds(60) =>
        {
            // The saved access token is still good: probe Graph with it. Refreshing here
            // would rotate the refresh token outside the sync's per-connection lock.
            let microsoft = &state.config.microsoft;
            probe_graph(
                &MicrosoftEndpoints {
                    login_base_url: microsoft.login_base_url.clone(),
                    graph_base_url: microsoft.graph_base_url.clone(),
                    client_id: microsoft.client_id.clone(),
                    redirect_uri: microsoft.callback_url.clone(),
                },
                &SecretString::from(token_set.access_token.clone()),
                state.config.provider_timeout,
                1,
            )
            .await
            .map(|_| None)
        }
        _ => {
            // An expired access token is refreshed by the sync under its per-connection lock
            // (refresh tokens rotate on every use); here the saved status is reported.
            return Ok(Json(ValidationView {
                ok: connection.status == ConnectionStatus::Connected,
                connection: connection_view(&state, tenant_id).await?,
                tenants_visible: None,
                error: None,
            }));
        }
    };
    let (ok, tenants_visible, error) = match outcome {
        Ok(count) => {
            state
                .store
                .set_connection_status(tenant_id, ConnectionStatus::Connected, None)
                .await?;
            (true, count, None)
        }
        Err(error) => {
            let status = match error {
                DirectoryError::ReauthRequired { .. } => ConnectionStatus::NeedsReconnect,
                DirectoryError::Transient { .. } => connection.status,
                _ => ConnectionStatus::ValidationFailed,
            };
            let recorded = ErrorRecord::from_directory(&error).to_json();
            state
                .store
                .set_connection_status(tenant_id, status, Some(&recorded))
                .await?;
            let provider = match connection.kind {
                Some(entra_sync_store::connection::ConnectionKind::Direct) => "Microsoft",
                _ => "CIPP",
            };
            let api_error = provider_error(provider, &error);
            (false, None, Some(api_error.detail()))
        }
    };
    audit(
        &state,
        tenant_id,
        &caller.actor(),
        "entra.validate",
        Some("connection".to_owned()),
        serde_json::json!({"ok": ok}),
    )
    .await?;
    Ok(Json(ValidationView {
        ok,
        connection: connection_view(&state, tenant_id).await?,
        tenants_visible,
        error,
    }))
}

/// Disconnects: credentials are cleared; mappings, runs, links and contacts are kept.
#[utoipa::path(post, path = "/api/v1/integrations/entra/disconnect", tag = "entra",
    responses((status = 200, body = ConnectionView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn disconnect(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
) -> Result<Json<ConnectionView>, ApiError> {
    crate::app::entra::disconnect(&state, &Caller::from(caller))
        .await
        .map(Json)
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StartedDiscoveryView {
    pub(crate) run_id: Uuid,
    pub(crate) deduplicated: bool,
}

/// Starts discovery of the managed tenants reachable through the connection.
#[utoipa::path(post, path = "/api/v1/integrations/entra/discovery", tag = "entra",
    responses((status = 202, body = StartedDiscoveryView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn start_discovery(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<StartedDiscoveryView>), ApiError> {
    let view = crate::app::entra::start_discovery(&state, &Caller::from(caller)).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ManagedTenantView {
    pub(crate) managed_tenant_id: Uuid,
    pub(crate) entra_tenant_id: String,
    pub(crate) display_name: String,
    pub(crate) domains: Vec<String>,
    /// `active` or `missing`.
    pub(crate) status: String,
    pub(crate) first_seen_at: chrono::DateTime<chrono::Utc>,
    pub(crate) last_seen_at: chrono::DateTime<chrono::Utc>,
}

impl From<&ManagedTenantRecord> for ManagedTenantView {
    fn from(record: &ManagedTenantRecord) -> Self {
        ManagedTenantView {
            managed_tenant_id: record.managed_tenant_id,
            entra_tenant_id: record.entra_tenant_id.clone(),
            display_name: record.display_name.clone(),
            domains: record
                .domains
                .iter()
                .map(|domain| domain.name.clone())
                .collect(),
            status: record.status.as_str().to_owned(),
            first_seen_at: record.first_seen_at,
            last_seen_at: record.last_seen_at,
        }
    }
}

/// The discovered managed tenants, by display name.
#[utoipa::path(get, path = "/api/v1/integrations/entra/managed-tenants", tag = "entra",
    params(PageQuery),
    responses((status = 200, body = ListResponse<ManagedTenantView>),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_managed_tenants(
    caller: Authorized<EntraRead>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ListResponse<ManagedTenantView>>, ApiError> {
    crate::app::entra::list_managed_tenants(&state, &Caller::from(caller), query)
        .await
        .map(Json)
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CandidateView {
    pub(crate) client_id: Uuid,
    pub(crate) name: String,
    pub(crate) score: f64,
    /// `primary_domain`, `secondary_domain` or `name`.
    pub(crate) reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PreviewItemView {
    pub(crate) managed_tenant_id: Uuid,
    pub(crate) entra_tenant_id: String,
    pub(crate) display_name: String,
    pub(crate) domains: Vec<String>,
    /// `active` or `missing`.
    pub(crate) status: String,
    /// `auto_matched`, `needs_review`, `unmatched`, `mapped`, `skipped` or `create_client`.
    pub(crate) state: String,
    /// The auto-matched client, or the client of a decision.
    pub(crate) client_id: Option<Uuid>,
    pub(crate) candidates: Vec<CandidateView>,
}

/// Read-only preview of how each managed tenant would map; changes nothing.
#[utoipa::path(get, path = "/api/v1/integrations/entra/mappings/preview", tag = "entra",
    params(PageQuery),
    responses((status = 200, body = ListResponse<PreviewItemView>),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn mapping_preview(
    caller: Authorized<EntraRead>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ListResponse<PreviewItemView>>, ApiError> {
    crate::app::entra::mapping_preview(&state, &Caller::from(caller), query)
        .await
        .map(Json)
}

/// One decision of a confirmation batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum DecisionBody {
    Map {
        managed_tenant_id: Uuid,
        client_id: Uuid,
    },
    Skip {
        managed_tenant_id: Uuid,
    },
    CreateClient {
        managed_tenant_id: Uuid,
    },
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfirmBody {
    pub(crate) decisions: Vec<DecisionBody>,
    /// Start the initial sync of every mapped tenant once the decisions are saved.
    #[serde(default)]
    pub(crate) start_initial_sync: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MappingView {
    pub(crate) managed_tenant_id: Uuid,
    /// `mapped`, `skipped` or `create_client`.
    pub(crate) decision: String,
    pub(crate) client_id: Option<Uuid>,
    pub(crate) decided_by: Option<String>,
    pub(crate) decided_at: chrono::DateTime<chrono::Utc>,
}

impl From<&MappingRecord> for MappingView {
    fn from(record: &MappingRecord) -> Self {
        MappingView {
            managed_tenant_id: record.managed_tenant_id,
            decision: record.decision.as_str().to_owned(),
            client_id: record.client_id,
            decided_by: record.decided_by.clone(),
            decided_at: record.decided_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConfirmView {
    pub(crate) mappings: Vec<MappingView>,
    /// The initial sync's run, when `start_initial_sync` was true.
    pub(crate) run_id: Option<Uuid>,
    pub(crate) deduplicated: Option<bool>,
}

/// Applies a batch of mapping decisions, all or none; optionally starts the initial sync.
#[utoipa::path(post, path = "/api/v1/integrations/entra/mappings/confirm", tag = "entra",
    request_body = ConfirmBody,
    responses((status = 200, body = ConfirmView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn confirm_mappings(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ConfirmBody>,
) -> Result<Json<ConfirmView>, ApiError> {
    crate::app::entra::confirm_mappings(&state, &Caller::from(caller), body)
        .await
        .map(Json)
}

/// The confirmed mappings.
#[utoipa::path(get, path = "/api/v1/integrations/entra/mappings", tag = "entra",
    params(PageQuery),
    responses((status = 200, body = ListResponse<MappingView>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn list_mappings(
    caller: Authorized<EntraRead>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ListResponse<MappingView>>, ApiError> {
    crate::app::entra::list_mappings(&state, &Caller::from(caller), query)
        .await
        .map(Json)
}

/// Removes a managed tenant's decision; its links and contacts are kept.
#[utoipa::path(post, path = "/api/v1/integrations/entra/mappings/{managed_tenant_id}/unmap",
    tag = "entra",
    params(("managed_tenant_id" = Uuid, Path, description = "managed tenant")),
    responses((status = 204, description = "unmapped"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn unmap(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
    ApiPath(managed_tenant_id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let tenant_id = caller.user.tenant_id;
    state
        .store
        .unmap(tenant_id, managed_tenant_id, &caller.actor())
        .await?;
    audit(
        &state,
        tenant_id,
        &caller.actor(),
        "entra.mapping.unmap",
        Some(format!("managed_tenant:{managed_tenant_id}")),
        serde_json::json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

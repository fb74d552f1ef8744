//! The Entra integration: connection (CIPP, direct, validate, disconnect), status, discovery,
//! managed tenants, mapping preview and confirmation, mappings and unmap.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use entra_sync_directory::cipp::{CippAuth, CippClient, CippConfig};
use entra_sync_directory::error::DirectoryError;
use entra_sync_directory::http::{HttpSettings, ThrottleStats};
use entra_sync_domain::mapping::{ClientForMapping, MappingIndex, MappingState};
use entra_sync_store::connection::{CippCredentialsRecord, ConnectionCredentials};
use entra_sync_store::discovery::ManagedTenantRecord;
use entra_sync_store::flags::{
    AMBIGUOUS_QUEUE_FLAG, CIPP_FLAG, CLIENT_SYNC_ACTION_FLAG, FIELD_SYNC_FLAG,
};
use entra_sync_store::mapping::{MappingAction, MappingDecisionInput, MappingRecord};
use entra_sync_store::runs::{RunKind, RunScope, RunTrigger};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::runs::{start_run, RunView};
use super::{audit, check_text, paginate, ListResponse, PageQuery};
use crate::auth::{Authorized, EntraRead, EntraUpdate};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::AppState;

const MAX_DECISIONS: usize = 1000;

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
    kind: Option<String>,
    /// `disconnected`, `connected`, `needs_reconnect` or `validation_failed`.
    status: String,
    cipp_base_url: Option<String>,
    connected_at: Option<chrono::DateTime<chrono::Utc>>,
    #[schema(value_type = Option<Object>)]
    last_error: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CountsSummaryView {
    managed_tenants: i64,
    active_managed_tenants: i64,
    missing_managed_tenants: i64,
    mapped: i64,
    skipped: i64,
    undecided: i64,
    linked_contacts: i64,
    open_review_items: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ScheduleView {
    enabled: bool,
    interval_seconds: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FeaturesView {
    client_sync_action: bool,
    cipp: bool,
    /// Off: the sync applies no field overwrites.
    field_sync: bool,
    ambiguous_queue: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IntegrationStatusView {
    connection: ConnectionView,
    counts: CountsSummaryView,
    schedule: ScheduleView,
    features: FeaturesView,
    last_sync_run: Option<RunView>,
    last_discovery_run: Option<RunView>,
}

async fn connection_view(state: &AppState, tenant_id: Uuid) -> Result<ConnectionView, ApiError> {
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
    let tenant_id = caller.user.tenant_id;
    let connection = connection_view(&state, tenant_id).await?;
    let counts = state.store.status_page_counts(tenant_id).await?;
    let settings = state.store.load_settings(tenant_id).await?;
    let flags = state.store.enabled_flags(tenant_id).await?;
    let enabled = |flag: &str| flags.iter().any(|enabled| enabled == flag);
    let last_sync_run = state.store.last_run(tenant_id, RunKind::Sync).await?;
    let last_discovery_run = state.store.last_run(tenant_id, RunKind::Discovery).await?;
    Ok(Json(IntegrationStatusView {
        connection,
        counts: CountsSummaryView {
            managed_tenants: counts.managed_tenants,
            active_managed_tenants: counts.active_managed_tenants,
            missing_managed_tenants: counts.missing_managed_tenants,
            mapped: counts.mapped,
            skipped: counts.skipped,
            undecided: counts.undecided,
            linked_contacts: counts.linked_contacts,
            open_review_items: counts.open_review_items,
        },
        schedule: ScheduleView {
            enabled: settings.schedule.enabled,
            interval_seconds: settings.schedule.interval_seconds,
        },
        features: FeaturesView {
            client_sync_action: enabled(CLIENT_SYNC_ACTION_FLAG),
            cipp: enabled(CIPP_FLAG),
            field_sync: enabled(FIELD_SYNC_FLAG),
            ambiguous_queue: enabled(AMBIGUOUS_QUEUE_FLAG),
        },
        last_sync_run: last_sync_run.as_ref().map(RunView::from),
        last_discovery_run: last_discovery_run.as_ref().map(RunView::from),
    }))
}

/// CIPP credentials: `{base_url, api_token}` or `{base_url, client_id, client_secret,
/// tenant_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CippConnectBody {
    base_url: String,
    api_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    tenant_id: Option<String>,
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
fn parse_cipp_base_url(raw: &str) -> Result<url::Url, ApiError> {
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

fn cipp_credentials(body: CippConnectBody) -> Result<CippCredentialsRecord, ApiError> {
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

pub(crate) fn cipp_client(
    state: &AppState,
    base_url: url::Url,
    credentials: &CippCredentialsRecord,
) -> Result<CippClient, ApiError> {
    let auth = match credentials {
        CippCredentialsRecord::ApiToken { api_token } => {
            CippAuth::ApiToken(SecretString::from(api_token.clone()))
        }
        CippCredentialsRecord::ApiClient {
            client_id,
            client_secret,
            tenant_id,
        } => CippAuth::ClientCredentials {
            client_id: client_id.clone(),
            client_secret: SecretString::from(client_secret.clone()),
            tenant_id: tenant_id.clone(),
        },
    };
    // An interactive request: answer within the provider timeout rather than retrying for
    // minutes, and do not mark the calls as background traffic.
    let settings = HttpSettings {
        request_timeout: state.config.provider_timeout,
        connect_timeout: state
            .config
            .provider_timeout
            .min(std::time::Duration::from_secs(10)),
        max_attempts: 1,
        background: false,
        ..HttpSettings::default()
    };
    CippClient::new(
        CippConfig {
            base_url,
            auth,
            login_base_url: state.config.microsoft.login_base_url.clone(),
        },
        settings,
        Arc::new(ThrottleStats::default()),
    )
    .map_err(|error| provider_error("CIPP", &error))
}

/// A provider failure as the caller sees it: transient and unusable answers are the
/// provider's fault (502); credentials, consent and configuration are the caller's (422).
fn provider_error(provider: &str, error: &DirectoryError) -> ApiError {
    let message = format!("{provider} check failed ({}): {error}", error.class());
    match error {
        DirectoryError::Transient { .. } | DirectoryError::Invalid { .. } => {
            ApiError::bad_gateway("provider_unavailable", message)
        }
        _ => ApiError::unprocessable("provider_validation_failed", message),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConnectedView {
    connection: ConnectionView,
    /// Customer tenants the credentials can see.
    tenants_visible: usize,
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
    let tenant_id = caller.user.tenant_id;
    if !state.store.flag_enabled(CIPP_FLAG, tenant_id).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "feature_disabled",
            "CIPP connections are not enabled for this tenant",
        ));
    }
    let base_url = parse_cipp_base_url(&body.base_url)?;
    let credentials = cipp_credentials(body)?;
    let client = cipp_client(&state, base_url.clone(), &credentials)?;
    let tenants = client.list_tenants().await.map_err(|error| {
        tracing::info!(%tenant_id, class = error.class(), "CIPP connect validation failed");
        provider_error("CIPP", &error)
    })?;
    let base_url_text = base_url.as_str().trim_end_matches('/').to_owned();
    state
        .store
        .save_cipp_connection(tenant_id, &base_url_text, &credentials)
        .await?;
    super::refresh_schedule(&state, tenant_id).await;
    audit(
        &state,
        tenant_id,
        &caller.actor(),
        "entra.connect.cipp",
        Some("connection".to_owned()),
        serde_json::json!({
            "base_url": base_url_text,
            "mode": match credentials {
                CippCredentialsRecord::ApiToken { .. } => "api_token",
                CippCredentialsRecord::ApiClient { .. } => "api_client",
            },
            "tenants_visible": tenants.len(),
        }),
    )
    .await?;
    Ok(Json(ConnectedView {
        connection: connection_view(&state, tenant_id).await?,
        tenants_visible: tenants.len(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ValidationView {
    /// Whether the probe succeeded.
    ok: bool,
    connection: ConnectionView,
    tenants_visible: Option<usize>,
    error: Option<crate::error::ErrorDetail>,
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
            let client = cipp_client(&state, base_url, credentials)?;
            client
                .list_tenants()
                .await
                .map(|tenants| Some(tenants.len()))
        }
        (Some(ConnectionCredentials::Direct(token_set)), _)
            if token_set.expires_at > chrono::Utc::now() + chrono::Duration::seconds(60) =>
        {
            // The saved access token is still good: probe Graph with it. Refreshing here
            // would rotate the refresh token outside the sync's per-connection lock.
            let microsoft = &state.config.microsoft;
            let context = entra_sync_directory::error::ErrorContext {
                login_base_url: microsoft.login_base_url.clone(),
                client_id: microsoft.client_id.clone().unwrap_or_default(),
                redirect_uri: microsoft.callback_url.clone(),
                tenant_id: None,
                settings: entra_sync_directory::error::SettingNames::MICROSOFT,
            };
            entra_sync_directory::graph::probe(
                &microsoft.graph_base_url,
                &SecretString::from(token_set.access_token.clone()),
                &context,
                HttpSettings {
                    request_timeout: state.config.provider_timeout,
                    max_attempts: 1,
                    background: false,
                    ..HttpSettings::default()
                },
                Arc::new(ThrottleStats::default()),
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
            let recorded = serde_json::json!({
                "class": error.class(),
                "code": error.code(),
                "message": error.to_string(),
                "remediation": error.remediation(),
            });
            state
                .store
                .set_connection_status(tenant_id, status, Some(&recorded))
                .await?;
            let provider = match connection.kind {
                Some(entra_sync_store::connection::ConnectionKind::Direct) => "Microsoft",
                _ => "CIPP",
            };
            let api_error = provider_error(provider, &error);
            (
                false,
                None,
                Some(crate::error::ErrorDetail {
                    code: api_error.code,
                    message: api_error.message,
                }),
            )
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
    let tenant_id = caller.user.tenant_id;
    state.store.disconnect(tenant_id).await?;
    super::refresh_schedule(&state, tenant_id).await;
    audit(
        &state,
        tenant_id,
        &caller.actor(),
        "entra.disconnect",
        Some("connection".to_owned()),
        serde_json::json!({}),
    )
    .await?;
    Ok(Json(connection_view(&state, tenant_id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StartedDiscoveryView {
    run_id: Uuid,
    deduplicated: bool,
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
    let tenant_id = caller.user.tenant_id;
    let summary = state.store.connection_summary(tenant_id).await?;
    if !summary.has_credentials {
        return Err(ApiError::conflict(
            "not_connected",
            "connect to Microsoft or CIPP before running discovery",
        ));
    }
    let outcome = start_run(
        &state,
        tenant_id,
        RunKind::Discovery,
        RunTrigger::Manual,
        RunScope::All,
        &caller.actor(),
    )
    .await?;
    audit(
        &state,
        tenant_id,
        &caller.actor(),
        "entra.discovery.start",
        Some(format!("run:{}", outcome.run_id)),
        serde_json::json!({"deduplicated": outcome.deduplicated}),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StartedDiscoveryView {
            run_id: outcome.run_id,
            deduplicated: outcome.deduplicated,
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ManagedTenantView {
    managed_tenant_id: Uuid,
    entra_tenant_id: String,
    display_name: String,
    domains: Vec<String>,
    /// `active` or `missing`.
    status: String,
    first_seen_at: chrono::DateTime<chrono::Utc>,
    last_seen_at: chrono::DateTime<chrono::Utc>,
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
    let tenants = state
        .store
        .list_managed_tenants(caller.user.tenant_id)
        .await?;
    let views = tenants.iter().map(ManagedTenantView::from).collect();
    Ok(Json(paginate(views, &query)?))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CandidateView {
    client_id: Uuid,
    name: String,
    score: f64,
    /// `primary_domain`, `secondary_domain` or `name`.
    reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PreviewItemView {
    managed_tenant_id: Uuid,
    entra_tenant_id: String,
    display_name: String,
    domains: Vec<String>,
    /// `active` or `missing`.
    status: String,
    /// `auto_matched`, `needs_review`, `unmatched`, `mapped`, `skipped` or `create_client`.
    state: String,
    /// The auto-matched client, or the client of a decision.
    client_id: Option<Uuid>,
    candidates: Vec<CandidateView>,
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
    let inputs = state
        .store
        .mapping_preview_inputs(caller.user.tenant_id)
        .await?;
    let clients: Vec<ClientForMapping> = inputs
        .clients
        .iter()
        .map(|client| ClientForMapping {
            client_id: client.client_id,
            name: client.name.clone(),
            domains: client.domains.clone(),
            secondary_domains: client.secondary_domains.clone(),
        })
        .collect();
    // Indexed once, so each tenant is compared with its few possible candidates only.
    let index = MappingIndex::new(&clients);
    let items = inputs
        .tenants
        .iter()
        .map(|tenant| {
            let managed = &tenant.managed_tenant;
            let domains: Vec<String> = managed
                .domains
                .iter()
                .map(|domain| domain.name.clone())
                .collect();
            let (state, client_id, candidates) = match &tenant.mapping {
                Some(mapping) => (
                    mapping.decision.as_str().to_owned(),
                    mapping.client_id,
                    Vec::new(),
                ),
                None => {
                    let preview = index.preview(&managed.display_name, &domains);
                    let client_id = match preview.state {
                        MappingState::AutoMatched { client_id } => Some(client_id),
                        _ => None,
                    };
                    let candidates = preview
                        .candidates
                        .iter()
                        .map(|candidate| CandidateView {
                            client_id: candidate.client_id,
                            name: candidate.name.clone(),
                            score: (candidate.score * 1000.0).round() / 1000.0,
                            reason: candidate.reason.as_str().to_owned(),
                        })
                        .collect();
                    (preview.state.as_str().to_owned(), client_id, candidates)
                }
            };
            PreviewItemView {
                managed_tenant_id: managed.managed_tenant_id,
                entra_tenant_id: managed.entra_tenant_id.clone(),
                display_name: managed.display_name.clone(),
                domains,
                status: managed.status.as_str().to_owned(),
                state,
                client_id,
                candidates,
            }
        })
        .collect();
    Ok(Json(paginate(items, &query)?))
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
    decisions: Vec<DecisionBody>,
    /// Start the initial sync of every mapped tenant once the decisions are saved.
    #[serde(default)]
    start_initial_sync: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MappingView {
    managed_tenant_id: Uuid,
    /// `mapped`, `skipped` or `create_client`.
    decision: String,
    client_id: Option<Uuid>,
    decided_by: Option<String>,
    decided_at: chrono::DateTime<chrono::Utc>,
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
    mappings: Vec<MappingView>,
    /// The initial sync's run, when `start_initial_sync` was true.
    run_id: Option<Uuid>,
    deduplicated: Option<bool>,
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
    let tenant_id = caller.user.tenant_id;
    if body.decisions.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_body",
            "decisions must not be empty",
        ));
    }
    if body.decisions.len() > MAX_DECISIONS {
        return Err(ApiError::unprocessable(
            "invalid_body",
            format!("at most {MAX_DECISIONS} decisions per request"),
        ));
    }
    let decisions: Vec<MappingDecisionInput> = body
        .decisions
        .iter()
        .map(|decision| match *decision {
            DecisionBody::Map {
                managed_tenant_id,
                client_id,
            } => MappingDecisionInput {
                managed_tenant_id,
                action: MappingAction::Map { client_id },
            },
            DecisionBody::Skip { managed_tenant_id } => MappingDecisionInput {
                managed_tenant_id,
                action: MappingAction::Skip,
            },
            DecisionBody::CreateClient { managed_tenant_id } => MappingDecisionInput {
                managed_tenant_id,
                action: MappingAction::CreateClient,
            },
        })
        .collect();
    let records = state
        .store
        .confirm_mappings(tenant_id, &decisions, &caller.actor())
        .await?;
    audit(
        &state,
        tenant_id,
        &caller.actor(),
        "entra.mappings.confirm",
        Some("mappings".to_owned()),
        serde_json::json!({
            "decisions": records.iter().map(|record| serde_json::json!({
                "managed_tenant_id": record.managed_tenant_id,
                "decision": record.decision.as_str(),
                "client_id": record.client_id,
            })).collect::<Vec<_>>(),
            "start_initial_sync": body.start_initial_sync,
        }),
    )
    .await?;
    let (run_id, deduplicated) = if body.start_initial_sync {
        let outcome = start_run(
            &state,
            tenant_id,
            RunKind::Sync,
            RunTrigger::Initial,
            RunScope::All,
            &caller.actor(),
        )
        .await?;
        (Some(outcome.run_id), Some(outcome.deduplicated))
    } else {
        (None, None)
    };
    Ok(Json(ConfirmView {
        mappings: records.iter().map(MappingView::from).collect(),
        run_id,
        deduplicated,
    }))
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
    let records = state.store.list_mappings(caller.user.tenant_id).await?;
    Ok(Json(paginate(
        records.iter().map(MappingView::from).collect(),
        &query,
    )?))
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

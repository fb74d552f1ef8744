//! The Entra connection and mapping: status, CIPP connect, discovery, disconnect, managed
//! tenants, mapping preview and confirmation.

use axum::http::StatusCode;
use entra_sync_domain::mapping::{ClientForMapping, MappingIndex, MappingState};
use entra_sync_store::connection::CippCredentialsRecord;
use entra_sync_store::flags::{
    AMBIGUOUS_QUEUE_FLAG, CIPP_FLAG, CLIENT_SYNC_ACTION_FLAG, FIELD_SYNC_FLAG,
};
use entra_sync_store::mapping::{
    MappingAction, MappingDecisionInput, MappingPreviewInputs, PreviewTenant,
};
use entra_sync_store::runs::{RunKind, RunScope, RunTrigger};

use super::Caller;
use crate::error::ApiError;
use crate::routes::entra::*;
use crate::routes::oauth::AuthorizeView;
use crate::routes::runs::{start_run, RunView};
use crate::routes::{audit, paginate, ListResponse, PageQuery};
use crate::AppState;
use secrecy::ExposeSecret;

/// Status: connection, counts, schedule, feature flags, last runs.
pub(crate) async fn integration_status(
    state: &AppState,
    caller: &Caller,
) -> Result<IntegrationStatusView, ApiError> {
    let tenant_id = caller.user.tenant_id;
    let connection = crate::routes::entra::connection_view(state, tenant_id).await?;
    let counts = state.store.status_page_counts(tenant_id).await?;
    let settings = state.store.load_settings(tenant_id).await?;
    let flags = state.store.enabled_flags(tenant_id).await?;
    let enabled = |flag: &str| flags.iter().any(|enabled| enabled == flag);
    let last_sync_run = state.store.last_run(tenant_id, RunKind::Sync).await?;
    let last_discovery_run = state.store.last_run(tenant_id, RunKind::Discovery).await?;
    Ok(IntegrationStatusView {
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
    })
}

/// CIPP connections are behind their feature flag: 404 when it is off.
async fn require_cipp_flag(state: &AppState, tenant_id: uuid::Uuid) -> Result<(), ApiError> {
    if state.store.flag_enabled(CIPP_FLAG, tenant_id).await? {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "feature_disabled",
            "CIPP connections are not enabled for this tenant",
        ))
    }
}

/// Connects CIPP: the credentials are validated by listing tenants before anything is saved.
pub(crate) async fn connect_cipp(
    state: &AppState,
    caller: &Caller,
    body: CippConnectBody,
) -> Result<ConnectedView, ApiError> {
    let tenant_id = caller.user.tenant_id;
    require_cipp_flag(state, tenant_id).await?;
    let base_url = parse_cipp_base_url(&body.base_url)?;
    let credentials = cipp_credentials(body)?;
    let tenants_visible = cipp_check(state, base_url.clone(), &credentials)
        .await
        .map_err(|error| {
            tracing::info!(%tenant_id, class = error.class(), "CIPP connect validation failed");
            provider_error("CIPP", &error)
        })?;
    let base_url_text = base_url.as_str().trim_end_matches('/').to_owned();
    state
        .store
        .save_cipp_connection(tenant_id, &base_url_text, &credentials)
        .await?;
    // A CIPP connection replaces any direct sign-in, and its partner tenant with it.
    state.store.clear_partner_tenant(tenant_id).await?;
    crate::routes::refresh_schedule(state, tenant_id).await;
    audit(
        state,
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
            "tenants_visible": tenants_visible,
        }),
    )
    .await?;
    Ok(ConnectedView {
        connection: crate::routes::entra::connection_view(state, tenant_id).await?,
        tenants_visible,
    })
}

/// Disconnects: credentials are cleared; mappings, runs, links and contacts are kept.
pub(crate) async fn disconnect(
    state: &AppState,
    caller: &Caller,
) -> Result<ConnectionView, ApiError> {
    let tenant_id = caller.user.tenant_id;
    state.store.disconnect(tenant_id).await?;
    // The partner tenant belonged to the cleared sign-in.
    state.store.clear_partner_tenant(tenant_id).await?;
    crate::routes::refresh_schedule(state, tenant_id).await;
    audit(
        state,
        tenant_id,
        &caller.actor(),
        "entra.disconnect",
        Some("connection".to_owned()),
        serde_json::json!({}),
    )
    .await?;
    crate::routes::entra::connection_view(state, tenant_id).await
}

/// Starts discovery of the managed tenants reachable through the connection.
pub(crate) async fn start_discovery(
    state: &AppState,
    caller: &Caller,
) -> Result<StartedDiscoveryView, ApiError> {
    let tenant_id = caller.user.tenant_id;
    let summary = state.store.connection_summary(tenant_id).await?;
    if !summary.has_credentials {
        return Err(ApiError::conflict(
            "not_connected",
            "connect to Microsoft or CIPP before running discovery",
        ));
    }
    let outcome = start_run(
        state,
        tenant_id,
        RunKind::Discovery,
        RunTrigger::Manual,
        RunScope::All,
        &caller.actor(),
    )
    .await?;
    audit(
        state,
        tenant_id,
        &caller.actor(),
        "entra.discovery.start",
        Some(format!("run:{}", outcome.run_id)),
        serde_json::json!({"deduplicated": outcome.deduplicated}),
    )
    .await?;
    Ok(StartedDiscoveryView {
        run_id: outcome.run_id,
        deduplicated: outcome.deduplicated,
    })
}

/// The discovered managed tenants.
pub(crate) async fn list_managed_tenants(
    state: &AppState,
    caller: &Caller,
    query: PageQuery,
) -> Result<ListResponse<ManagedTenantView>, ApiError> {
    let tenants = state
        .store
        .list_managed_tenants(caller.user.tenant_id)
        .await?;
    let views = tenants.iter().map(ManagedTenantView::from).collect();
    paginate(views, &query)
}

/// Read-only preview of how each managed tenant would map; changes nothing.
pub(crate) async fn mapping_preview(
    state: &AppState,
    caller: &Caller,
    query: PageQuery,
) -> Result<ListResponse<PreviewItemView>, ApiError> {
    let inputs = state
        .store
        .mapping_preview_inputs(caller.user.tenant_id)
        .await?;
    // Scoring is pure computation that grows with tenants and clients: it runs off the async
    // workers, so other requests are not held up behind it.
    let items = tokio::task::spawn_blocking(move || preview_items(&inputs))
        .await
        .map_err(|error| ApiError::internal(&error))?;
    paginate(items, &query)
}

/// Below this many managed tenants the preview is scored on one thread: starting threads
/// would cost more than they save.
const PARALLEL_PREVIEW_TENANTS: usize = 256;

/// Every managed tenant's preview item, in the inputs' order. The clients are indexed once,
/// so each tenant is compared with its few possible candidates only; the tenants are shared
/// between the machine's cores (the index is read-only, each thread has its own scratch).
fn preview_items(inputs: &MappingPreviewInputs) -> Vec<PreviewItemView> {
    let threads = if inputs.tenants.len() < PARALLEL_PREVIEW_TENANTS {
        1
    } else {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    };
    preview_items_on(inputs, threads)
}

/// [`preview_items`] on `threads` threads.
fn preview_items_on(inputs: &MappingPreviewInputs, threads: usize) -> Vec<PreviewItemView> {
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
    let index = MappingIndex::new(&clients);
    let tenants = &inputs.tenants;
    if threads <= 1 || tenants.is_empty() {
        return tenants
            .iter()
            .map(|tenant| preview_item(&index, tenant))
            .collect();
    }
    let chunk = tenants.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = tenants
            .chunks(chunk)
            .map(|part| {
                let index = &index;
                scope.spawn(move || {
                    part.iter()
                        .map(|tenant| preview_item(index, tenant))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// One managed tenant's preview item: its decision when it has one, else what the index
/// suggests.
fn preview_item(index: &MappingIndex, tenant: &PreviewTenant) -> PreviewItemView {
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
}

/// Applies a batch of mapping decisions, all or none; optionally starts the initial sync.
pub(crate) async fn confirm_mappings(
    state: &AppState,
    caller: &Caller,
    body: ConfirmBody,
) -> Result<ConfirmView, ApiError> {
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
        state,
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
            state,
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
    Ok(ConfirmView {
        mappings: records.iter().map(MappingView::from).collect(),
        run_id,
        deduplicated,
    })
}

/// The confirmed mappings.
pub(crate) async fn list_mappings(
    state: &AppState,
    caller: &Caller,
    query: PageQuery,
) -> Result<ListResponse<MappingView>, ApiError> {
    let records = state.store.list_mappings(caller.user.tenant_id).await?;
    paginate(records.iter().map(MappingView::from).collect(), &query)
}

/// Starts a direct connection: the Microsoft sign-in URL (PKCE S256, single-use state bound
/// to this tenant and user).
pub(crate) async fn connect_direct(
    state: &AppState,
    caller: &Caller,
) -> Result<AuthorizeView, ApiError> {
    let client = crate::routes::oauth::oauth_client(state, caller.user.tenant_id).await?;
    let request = client
        .begin_authorization(None)
        .map_err(|error| ApiError::unprocessable("direct_not_configured", error.to_string()))?;
    let ttl = chrono::Duration::from_std(state.config.oauth_state_ttl)
        .unwrap_or_else(|_| chrono::Duration::minutes(10));
    let expires_at = chrono::Utc::now() + ttl;
    state
        .store
        .create_oauth_state(
            caller.user.tenant_id,
            caller.user.user_id,
            request.state.expose_secret(),
            request.code_verifier.expose_secret(),
            expires_at,
        )
        .await?;
    audit(
        state,
        caller.user.tenant_id,
        &caller.actor(),
        "entra.connect.direct.start",
        Some("connection".to_owned()),
        serde_json::json!({}),
    )
    .await?;
    Ok(AuthorizeView {
        authorize_url: request.url.to_string(),
        expires_at,
    })
}

/// Tries CIPP credentials without saving anything ("Test connection"): how many customer
/// tenants they can see.
pub(crate) async fn test_cipp(
    state: &AppState,
    caller: &Caller,
    body: CippConnectBody,
) -> Result<usize, ApiError> {
    let tenant_id = caller.user.tenant_id;
    require_cipp_flag(state, tenant_id).await?;
    let base_url = parse_cipp_base_url(&body.base_url)?;
    let credentials = cipp_credentials(body)?;
    cipp_check(state, base_url, &credentials)
        .await
        .map_err(|error| provider_error("CIPP", &error))
}

/// Starts a direct connection from a console session: as [`connect_direct`], and the state is
/// bound to that session, so the callback completes only in the browser that started it.
pub(crate) async fn connect_direct_for_session(
    state: &AppState,
    caller: &Caller,
    session_id: &str,
) -> Result<AuthorizeView, ApiError> {
    let view = connect_direct(state, caller).await?;
    let oauth_state = url::Url::parse(&view.authorize_url)
        .ok()
        .and_then(|url| {
            url.query_pairs()
                .find(|(key, _)| key == "state")
                .map(|(_, value)| value.into_owned())
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the sign-in URL has no state",
            )
        })?;
    state
        .store
        .bind_oauth_state_to_console_session(caller.user.tenant_id, &oauth_state, session_id)
        .await?;
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use entra_sync_store::discovery::{ManagedTenantRecord, ManagedTenantStatus, TenantDomain};
    use entra_sync_store::psa::Client;
    use uuid::Uuid;

    fn inputs(tenants: usize) -> MappingPreviewInputs {
        let tenant_id = Uuid::from_u128(1);
        let clients = (0..40u128)
            .map(|index| Client {
                tenant_id,
                client_id: Uuid::from_u128(100 + index),
                name: format!("Client {index} Holdings"),
                domains: vec![format!("client{index}.example")],
                secondary_domains: Vec::new(),
                created_at: Utc::now(),
            })
            .collect();
        let tenants = (0..tenants)
            .map(|index| PreviewTenant {
                managed_tenant: ManagedTenantRecord {
                    managed_tenant_id: Uuid::from_u128(10_000 + index as u128),
                    entra_tenant_id: format!("entra-{index}"),
                    // Some match a client by domain, some by name, some not at all.
                    display_name: match index % 3 {
                        0 => format!("Client {} Holdings", index % 40),
                        1 => format!("Cliient {} Holdings", index % 40),
                        _ => format!("Unrelated {index}"),
                    },
                    domains: vec![TenantDomain {
                        name: format!("client{}.example", index % 80),
                        is_default: true,
                        is_initial: false,
                    }],
                    status: ManagedTenantStatus::Active,
                    first_seen_at: Utc::now(),
                    last_seen_at: Utc::now(),
                    last_discovery_run_id: None,
                },
                mapping: None,
            })
            .collect();
        MappingPreviewInputs { tenants, clients }
    }

    /// Shared between threads, the preview is the one a single thread computes, item for
    /// item and in the tenants' order.
    #[test]
    fn a_preview_scored_on_several_threads_is_the_single_threaded_one() {
        let inputs = inputs(1_001);
        let single = serde_json::to_value(preview_items_on(&inputs, 1)).expect("items serialize");
        for threads in [2, 3, 8] {
            let shared =
                serde_json::to_value(preview_items_on(&inputs, threads)).expect("items serialize");
            assert_eq!(shared, single, "{threads} threads");
        }
        let ids: Vec<Uuid> = preview_items_on(&inputs, 3)
            .iter()
            .map(|item| item.managed_tenant_id)
            .collect();
        let expected: Vec<Uuid> = inputs
            .tenants
            .iter()
            .map(|tenant| tenant.managed_tenant.managed_tenant_id)
            .collect();
        assert_eq!(ids, expected);
        let states: std::collections::BTreeSet<String> = preview_items_on(&inputs, 2)
            .into_iter()
            .map(|item| item.state)
            .collect();
        assert!(
            states.len() >= 2,
            "the fixture should give several states: {states:?}"
        );
    }
}

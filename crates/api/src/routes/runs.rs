//! Sync runs: start (deduplicated), history, one run with its tenant results, cancel, and the
//! admin's answer to inactivations held by the mass-inactivation guard.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use entra_sync_store::flags::CLIENT_SYNC_ACTION_FLAG;
use entra_sync_store::inactivation::HeldInactivationAction;
use entra_sync_store::runs::{
    NewRun, RunKind, RunRecord, RunScope, RunStatus, RunTrigger, StartRunOutcome, TallyCounts,
    TenantResultRecord,
};
use entra_sync_workflows::contract::{DiscoveryRunInput, SyncRunInput, CONTRACT_VERSION};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{audit, ListResponse};
use crate::auth::{Authorized, EntraRead, EntraUpdate};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_sync))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
        .routes(routes!(list_held_inactivations, resolve_held_inactivations))
        .routes(routes!(preflight))
}

/// Creates a run row (or finds the running one of the same scope) and starts its workflow. If
/// the workflow cannot be started the run is finished as failed, so no run stays `running`
/// without a workflow.
pub(crate) async fn start_run(
    state: &AppState,
    tenant_id: Uuid,
    kind: RunKind,
    trigger: RunTrigger,
    scope: RunScope,
    requested_by: &str,
) -> Result<StartRunOutcome, ApiError> {
    let outcome = state
        .store
        .start_run(&NewRun {
            tenant_id,
            kind,
            trigger,
            scope,
            requested_by: Some(requested_by.to_owned()),
        })
        .await?;
    if outcome.deduplicated {
        return Ok(outcome);
    }
    let started = match kind {
        RunKind::Sync => {
            state
                .starter
                .start_sync(SyncRunInput {
                    version: CONTRACT_VERSION,
                    tenant_id: tenant_id.to_string(),
                    run_id: outcome.run_id.to_string(),
                    max_parallel_tenants: state.config.max_parallel_tenants.max(1),
                })
                .await
        }
        RunKind::Discovery => {
            state
                .starter
                .start_discovery(DiscoveryRunInput {
                    version: CONTRACT_VERSION,
                    tenant_id: tenant_id.to_string(),
                    run_id: outcome.run_id.to_string(),
                })
                .await
        }
    };
    match started {
        Ok(workflow_id) => {
            state
                .store
                .set_run_workflow_id(tenant_id, outcome.run_id, &workflow_id)
                .await?;
            Ok(outcome)
        }
        Err(error) => {
            tracing::error!(%tenant_id, run_id = %outcome.run_id, error = %error, "workflow start failed");
            let run_error = serde_json::json!({
                "class": "transient",
                "code": "workflow_start_failed",
                "message": "the workflow could not be started",
                "remediation": "check that Temporal and a worker are running, then start the run again",
            });
            if let Err(finish_error) = state
                .store
                .finish_run(
                    tenant_id,
                    outcome.run_id,
                    RunStatus::Failed,
                    Some(&run_error),
                )
                .await
            {
                tracing::error!(%tenant_id, run_id = %outcome.run_id, error = %finish_error,
                    "could not mark the run failed after its workflow did not start");
            }
            Err(ApiError::bad_gateway(
                "workflow_start_failed",
                "the run could not be started because the workflow engine did not accept it; try again",
            ))
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SyncScopeName {
    /// Every mapped managed tenant.
    All,
    /// The managed tenants mapped to one client (`client_id`).
    Client,
}

/// `{"scope":"all"}` or `{"scope":"client","client_id":…}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncBody {
    scope: SyncScopeName,
    client_id: Option<Uuid>,
}

/// The scope a body names, refusing a `client_id` with `all` (it would silently sync every
/// tenant) and `client` without one.
fn requested_scope(body: &SyncBody) -> Result<Option<Uuid>, ApiError> {
    match (body.scope, body.client_id) {
        (SyncScopeName::All, None) => Ok(None),
        (SyncScopeName::Client, Some(client_id)) => Ok(Some(client_id)),
        (SyncScopeName::All, Some(_)) => Err(ApiError::unprocessable(
            "invalid_body",
            "client_id is only allowed with scope \"client\"",
        )),
        (SyncScopeName::Client, None) => Err(ApiError::unprocessable(
            "invalid_body",
            "scope \"client\" needs a client_id",
        )),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StartedRunView {
    run_id: Uuid,
    /// True when a run of the same scope was already running and is returned instead.
    deduplicated: bool,
}

/// Starts a manual sync ("Sync All Tenants Now" or "Sync this client").
#[utoipa::path(post, path = "/api/v1/integrations/entra/sync", tag = "sync",
    request_body = SyncBody,
    responses((status = 202, body = StartedRunView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn start_sync(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SyncBody>,
) -> Result<(StatusCode, Json<StartedRunView>), ApiError> {
    let tenant_id = caller.user.tenant_id;
    let scope = match requested_scope(&body)? {
        None => RunScope::All,
        Some(client_id) => {
            if !state
                .store
                .flag_enabled(CLIENT_SYNC_ACTION_FLAG, tenant_id)
                .await?
            {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "feature_disabled",
                    "single-client sync is not enabled for this tenant",
                ));
            }
            state.store.get_client(tenant_id, client_id).await.map_err(
                |error| match ApiError::from(error) {
                    error if error.status == StatusCode::NOT_FOUND => {
                        ApiError::unprocessable("unknown_client", "the client does not exist")
                    }
                    other => other,
                },
            )?;
            RunScope::Client(client_id)
        }
    };
    let outcome = start_run(
        &state,
        tenant_id,
        RunKind::Sync,
        RunTrigger::Manual,
        scope,
        &caller.actor(),
    )
    .await?;
    audit(
        &state,
        tenant_id,
        &caller.actor(),
        "entra.sync.start",
        Some(format!("run:{}", outcome.run_id)),
        serde_json::json!({
            "scope": match scope { RunScope::All => "all", RunScope::Client(_) => "client" },
            "client_id": match scope { RunScope::All => None, RunScope::Client(id) => Some(id) },
            "deduplicated": outcome.deduplicated,
        }),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StartedRunView {
            run_id: outcome.run_id,
            deduplicated: outcome.deduplicated,
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunErrorView {
    class: Option<String>,
    code: Option<String>,
    message: Option<String>,
    remediation: Option<String>,
}

fn error_view(value: &Option<serde_json::Value>) -> Option<RunErrorView> {
    let value = value.as_ref()?;
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    Some(RunErrorView {
        class: text("class"),
        code: text("code"),
        message: text("message"),
        remediation: text("remediation"),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CountsView {
    seen: u64,
    eligible: u64,
    created: u64,
    linked: u64,
    updated: u64,
    inactivated: u64,
    reactivated: u64,
    queued: u64,
    errors: u64,
    /// Skipped users by reason.
    skipped: std::collections::BTreeMap<String, u64>,
}

impl From<&TallyCounts> for CountsView {
    fn from(counts: &TallyCounts) -> Self {
        CountsView {
            seen: counts.seen,
            eligible: counts.eligible,
            created: counts.created,
            linked: counts.linked,
            updated: counts.updated,
            inactivated: counts.inactivated,
            reactivated: counts.reactivated,
            queued: counts.queued,
            errors: counts.errors,
            skipped: counts.skipped.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TenantResultView {
    managed_tenant_id: Uuid,
    /// `running`, `retrying`, `completed`, `failed`, `needs_confirmation` or `cancelled`.
    status: String,
    /// `delta` or `full`.
    mode: String,
    counts: CountsView,
    /// The failure (while `retrying`: the last attempt's).
    error: Option<RunErrorView>,
    /// While `retrying`: the attempt that failed (1 for the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<i32>,
    /// While `retrying`: when the next attempt starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    started_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&TenantResultRecord> for TenantResultView {
    fn from(result: &TenantResultRecord) -> Self {
        TenantResultView {
            managed_tenant_id: result.managed_tenant_id,
            status: result.status.as_str().to_owned(),
            mode: result.mode.as_str().to_owned(),
            counts: CountsView::from(&result.counts),
            error: error_view(&result.error),
            attempt: None,
            next_attempt_at: None,
            started_at: result.started_at,
            finished_at: result.finished_at,
        }
    }
}

impl RunView {
    /// Shows the tenants waiting for another attempt as `retrying` (SPEC §5.7).
    fn with_retry_states(
        mut self,
        states: &[entra_sync_store::failures::TenantRetryState],
    ) -> Self {
        for tenant in &mut self.tenants {
            if tenant.status != "running" {
                continue;
            }
            if let Some(state) = states
                .iter()
                .find(|state| state.managed_tenant_id == tenant.managed_tenant_id)
            {
                tenant.status = "retrying".to_owned();
                tenant.attempt = Some(state.attempt);
                tenant.next_attempt_at = Some(state.next_attempt_at);
            }
        }
        self
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunView {
    run_id: Uuid,
    /// `discovery` or `sync`.
    kind: String,
    /// `initial`, `manual` or `scheduled`.
    trigger: String,
    /// `all` or `client`.
    scope: String,
    client_id: Option<Uuid>,
    /// `running`, `completed`, `partial`, `failed` or `cancelled`.
    status: String,
    requested_by: Option<String>,
    started_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    cancel_requested: bool,
    /// Sync runs: the tenants' counts summed. Discovery runs: `{discovered, added,
    /// marked_missing}`.
    #[schema(value_type = Object)]
    totals: serde_json::Value,
    error: Option<RunErrorView>,
    tenants: Vec<TenantResultView>,
}

impl From<&RunRecord> for RunView {
    fn from(run: &RunRecord) -> Self {
        let (scope, client_id) = match run.scope {
            RunScope::All => ("all", None),
            RunScope::Client(client_id) => ("client", Some(client_id)),
        };
        let totals = match (&run.totals, run.kind) {
            (Some(totals), _) => totals.clone(),
            (None, RunKind::Sync) => {
                // While a run is going, totals are the sum of its tenants so far.
                let mut sum = TallyCounts::default();
                for tenant in &run.tenants {
                    sum.add(&tenant.counts);
                }
                serde_json::to_value(CountsView::from(&sum)).unwrap_or_default()
            }
            (None, RunKind::Discovery) => serde_json::json!({}),
        };
        RunView {
            run_id: run.run_id,
            kind: run.kind.as_str().to_owned(),
            trigger: run.trigger.as_str().to_owned(),
            scope: scope.to_owned(),
            client_id,
            status: run.status.as_str().to_owned(),
            requested_by: run.requested_by.clone(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            cancel_requested: run.cancel_requested_at.is_some(),
            totals,
            error: error_view(&run.error),
            tenants: run.tenants.iter().map(TenantResultView::from).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KindFilter {
    Sync,
    Discovery,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunsQuery {
    /// Only runs of this kind.
    kind: Option<KindFilter>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Run history, newest first (sync and discovery runs).
#[utoipa::path(get, path = "/api/v1/integrations/entra/sync/runs", tag = "sync",
    params(RunsQuery),
    responses((status = 200, body = ListResponse<RunView>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn list_runs(
    caller: Authorized<EntraRead>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<RunsQuery>,
) -> Result<Json<ListResponse<RunView>>, ApiError> {
    let page = super::PageQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .page_request()?;
    let kind = query.kind.map(|kind| match kind {
        KindFilter::Sync => RunKind::Sync,
        KindFilter::Discovery => RunKind::Discovery,
    });
    let runs = state
        .store
        .list_runs(caller.user.tenant_id, kind, &page)
        .await?;
    Ok(Json(ListResponse::from_page(runs, |run| {
        RunView::from(&run)
    })))
}

/// One run with its tenant results.
#[utoipa::path(get, path = "/api/v1/integrations/entra/sync/runs/{run_id}", tag = "sync",
    params(("run_id" = Uuid, Path, description = "run")),
    responses((status = 200, body = RunView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn get_run(
    caller: Authorized<EntraRead>,
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<Uuid>,
) -> Result<Json<RunView>, ApiError> {
    let run = state.store.get_run(caller.user.tenant_id, run_id).await?;
    let retries = if run.status == RunStatus::Running {
        state
            .store
            .tenant_retry_states(caller.user.tenant_id, run_id)
            .await?
    } else {
        Vec::new()
    };
    Ok(Json(RunView::from(&run).with_retry_states(&retries)))
}

/// Cancels a running run (its workflow finishes the run as `cancelled`).
#[utoipa::path(post, path = "/api/v1/integrations/entra/sync/runs/{run_id}/cancel", tag = "sync",
    params(("run_id" = Uuid, Path, description = "run")),
    responses((status = 202, body = RunView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 502, body = ErrorBody)))]
async fn cancel_run(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let tenant_id = caller.user.tenant_id;
    let run = state.store.request_run_cancel(tenant_id, run_id).await?;
    if run.status != RunStatus::Running {
        return Err(ApiError::conflict(
            "run_finished",
            format!("the run already ended as {}", run.status.as_str()),
        ));
    }
    match run.workflow_id.as_deref() {
        Some(workflow_id) => {
            state.starter.cancel(workflow_id).await.map_err(|error| {
                tracing::error!(%tenant_id, %run_id, error = %error, "workflow cancel failed");
                ApiError::bad_gateway(
                    "workflow_cancel_failed",
                    "the workflow engine did not accept the cancellation; try again",
                )
            })?;
        }
        None => {
            // No workflow was recorded for the run: nobody else will finish it.
            state
                .store
                .finish_run(tenant_id, run_id, RunStatus::Cancelled, None)
                .await?;
        }
    }
    audit(
        &state,
        tenant_id,
        &caller.actor(),
        "entra.run.cancel",
        Some(format!("run:{run_id}")),
        serde_json::json!({}),
    )
    .await?;
    let run = state.store.get_run(tenant_id, run_id).await?;
    Ok((StatusCode::ACCEPTED, Json(RunView::from(&run))))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HeldInactivationView {
    contact_id: Uuid,
    object_id: String,
    /// `disabled_upstream` or `deleted_upstream`.
    reason: String,
    /// `pending`, `held`, `applied` or `discarded`.
    state: String,
}

/// The inactivations a run queued for a managed tenant, so an admin sees what the
/// mass-inactivation guard held before applying or discarding it.
#[utoipa::path(get,
    path = "/api/v1/integrations/entra/sync/runs/{run_id}/tenants/{managed_tenant_id}/held-inactivations",
    tag = "sync",
    params(("run_id" = Uuid, Path, description = "run"),
           ("managed_tenant_id" = Uuid, Path, description = "managed tenant")),
    responses((status = 200, body = ListResponse<HeldInactivationView>),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_held_inactivations(
    caller: Authorized<EntraRead>,
    State(state): State<AppState>,
    ApiPath((run_id, managed_tenant_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<ListResponse<HeldInactivationView>>, ApiError> {
    let tenant_id = caller.user.tenant_id;
    // The run must be the caller's: a foreign run id is a 404, not an empty list.
    state.store.get_run(tenant_id, run_id).await?;
    let held = state
        .store
        .list_held_inactivations(tenant_id, run_id, managed_tenant_id)
        .await?;
    Ok(Json(ListResponse {
        items: held
            .into_iter()
            .map(|held| HeldInactivationView {
                contact_id: held.contact_id,
                object_id: held.object_id,
                reason: held.reason.as_str().to_owned(),
                state: held.state,
            })
            .collect(),
        next_cursor: None,
    }))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HeldAction {
    Apply,
    Discard,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeldInactivationsBody {
    action: HeldAction,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HeldInactivationsView {
    /// Contacts inactivated (apply) or inactivations dropped (discard).
    affected: u64,
    tenant: Option<TenantResultView>,
}

/// Applies or discards the inactivations the mass-inactivation guard held.
#[utoipa::path(post,
    path = "/api/v1/integrations/entra/sync/runs/{run_id}/tenants/{managed_tenant_id}/held-inactivations",
    tag = "sync",
    params(("run_id" = Uuid, Path, description = "run"),
           ("managed_tenant_id" = Uuid, Path, description = "managed tenant")),
    request_body = HeldInactivationsBody,
    responses((status = 200, body = HeldInactivationsView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn resolve_held_inactivations(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
    ApiPath((run_id, managed_tenant_id)): ApiPath<(Uuid, Uuid)>,
    ApiJson(body): ApiJson<HeldInactivationsBody>,
) -> Result<Json<HeldInactivationsView>, ApiError> {
    let tenant_id = caller.user.tenant_id;
    let action = match body.action {
        HeldAction::Apply => HeldInactivationAction::Apply,
        HeldAction::Discard => HeldInactivationAction::Discard,
    };
    let affected = state
        .store
        .resolve_held_inactivations(
            tenant_id,
            run_id,
            managed_tenant_id,
            action,
            &caller.actor(),
        )
        .await
        .map_err(|error| match ApiError::from(error) {
            error if error.status == StatusCode::NOT_FOUND => {
                ApiError::not_found("no inactivations are held for this run and managed tenant")
            }
            other => other,
        })?;
    audit(
        &state,
        tenant_id,
        &caller.actor(),
        match action {
            HeldInactivationAction::Apply => "entra.held_inactivations.apply",
            HeldInactivationAction::Discard => "entra.held_inactivations.discard",
        },
        Some(format!("run:{run_id}/managed_tenant:{managed_tenant_id}")),
        serde_json::json!({"affected": affected}),
    )
    .await?;
    let run = state.store.get_run(tenant_id, run_id).await?;
    let tenant = run
        .tenants
        .iter()
        .find(|result| result.managed_tenant_id == managed_tenant_id)
        .map(TenantResultView::from);
    Ok(Json(HeldInactivationsView { affected, tenant }))
}

/// Pages read per managed tenant by a preflight (up to about 20,000 users at Graph's 999 per
/// page): enough to show what a sync would do, absent users included, for most tenants, while
/// the request timeout below bounds the whole answer.
const PREFLIGHT_MAX_PAGES: usize = 20;
/// Managed tenants a preflight looks at.
const PREFLIGHT_MAX_TENANTS: usize = 25;
/// The whole preflight answers within this (tenants not reached are counted as not checked).
const PREFLIGHT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the absent-user rule and the mass-inactivation guard would do (SPEC §5.5).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InactivationPreviewView {
    /// Contacts a sync would inactivate: disabled users on the pages read, plus, when the
    /// enumeration was complete, linked users the directory no longer returns.
    would_inactivate: u64,
    /// Of those, linked users absent from the directory (null when the preflight did not read
    /// every user, so absence cannot be told).
    absent_users: Option<u64>,
    /// The managed tenant's linked contacts (the guard's denominator).
    linked_contacts: u64,
    /// True when the guard would hold these inactivations for an admin's confirmation.
    guard_would_hold: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PreflightTenantView {
    managed_tenant_id: Uuid,
    entra_tenant_id: String,
    client_id: Uuid,
    /// False when the tenant has more users than the preflight read.
    complete: bool,
    counts: CountsView,
    inactivations: Option<InactivationPreviewView>,
    error: Option<RunErrorView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PreflightView {
    /// What a sync of this scope would do now; nothing was written.
    tenants: Vec<PreflightTenantView>,
    totals: CountsView,
    /// Mapped tenants beyond the preflight's limit or time budget, not looked at.
    tenants_not_checked: usize,
}

/// Dry run: reads users and plans exactly as a sync would (through the same connection layer,
/// page loop and group filters), writing nothing.
#[utoipa::path(post, path = "/api/v1/integrations/entra/sync/preflight", tag = "sync",
    request_body = SyncBody,
    responses((status = 200, body = PreflightView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 502, body = ErrorBody)))]
async fn preflight(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SyncBody>,
) -> Result<Json<PreflightView>, ApiError> {
    use entra_sync_connection::{load_group_members, ConnectionKind, DirectoryError, PageLoop};
    use entra_sync_store::reconcile::PageScope;
    let tenant_id = caller.user.tenant_id;
    let scope = match requested_scope(&body)? {
        None => RunScope::All,
        Some(client_id) => {
            // The same rule as starting a single-client sync.
            if !state
                .store
                .flag_enabled(CLIENT_SYNC_ACTION_FLAG, tenant_id)
                .await?
            {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "feature_disabled",
                    "single-client sync is not enabled for this tenant",
                ));
            }
            state.store.get_client(tenant_id, client_id).await.map_err(
                |error| match ApiError::from(error) {
                    error if error.status == StatusCode::NOT_FOUND => {
                        ApiError::unprocessable("unknown_client", "the client does not exist")
                    }
                    other => other,
                },
            )?;
            RunScope::Client(client_id)
        }
    };
    let summary = state.store.connection_summary(tenant_id).await?;
    if !summary.has_credentials {
        return Err(ApiError::conflict(
            "not_connected",
            "connect to Microsoft or CIPP first",
        ));
    }
    let connected = state
        .connections
        .for_tenant(&state.store, tenant_id)
        .await
        .map_err(|error| {
            let provider = if summary.kind.as_deref() == Some("direct") {
                "Microsoft"
            } else {
                "CIPP"
            };
            ApiError::provider(provider, &error)
        })?;
    let prefer_delta = connected.kind == ConnectionKind::Direct;
    let targets = state.store.sync_targets(tenant_id, scope).await?;
    let mut tenants_not_checked = targets.len().saturating_sub(PREFLIGHT_MAX_TENANTS);
    // A run id that names no run: the dry run's statements need one, and it is rolled back.
    let preflight_run_id = Uuid::now_v7();
    let deadline = tokio::time::Instant::now() + PREFLIGHT_TIMEOUT;
    let mut totals = TallyCounts::default();
    let mut tenants = Vec::new();
    let error_of = |failure: &DirectoryError| {
        let record = entra_sync_connection::ErrorRecord::from_directory(failure);
        RunErrorView {
            class: Some(record.class.as_str().to_owned()),
            code: Some(record.code),
            message: Some(record.message),
            remediation: Some(record.remediation),
        }
    };
    let chosen: Vec<_> = targets.into_iter().take(PREFLIGHT_MAX_TENANTS).collect();
    let chosen_count = chosen.len();
    for (index, target) in chosen.into_iter().enumerate() {
        if tokio::time::Instant::now() >= deadline {
            tenants_not_checked += chosen_count - index;
            break;
        }
        let settings = state
            .store
            .load_sync_settings(tenant_id, target.managed_tenant_id)
            .await?;
        let mut counts = TallyCounts::default();
        let mut error = None;
        let mut seen_object_ids: Vec<String> = Vec::new();
        // A full enumeration (no delta link), so absent users can be shown.
        let mut pages = PageLoop::new(target.entra_tenant_id.clone(), prefer_delta, None, None);
        let source = connected.source.as_ref();
        let groups = settings.filters.named_groups();
        let read = async {
            let members = load_group_members(source, &target.entra_tenant_id, &groups).await?;
            let mut read_pages = Vec::new();
            for _ in 0..PREFLIGHT_MAX_PAGES {
                let mut fetched = pages.next_page(source).await?;
                members.annotate(&mut fetched.page.entries);
                let last = fetched.page.is_last();
                read_pages.push(fetched.page);
                if last {
                    break;
                }
            }
            Ok::<_, DirectoryError>(read_pages)
        };
        let read = match tokio::time::timeout_at(deadline, read).await {
            Ok(read) => read,
            Err(_) => Err(DirectoryError::Transient {
                code: "preflight_timeout".to_owned(),
                message: "the directory did not answer within the preflight's time".to_owned(),
                retry_after: None,
            }),
        };
        match read {
            Ok(read_pages) => {
                for page in read_pages {
                    for entry in &page.entries {
                        if let entra_sync_domain::model::DirectoryEntry::Present(user) = entry {
                            seen_object_ids.push(user.object_id.clone());
                        }
                    }
                    let outcome = state
                        .store
                        .reconcile_page(
                            &PageScope {
                                tenant_id,
                                run_id: preflight_run_id,
                                managed_tenant_id: target.managed_tenant_id,
                                mapped_client_id: target.client_id,
                                next_cursor: None,
                            },
                            &page.entries,
                            &settings,
                            true,
                        )
                        .await?;
                    counts.add(&TallyCounts::from(&outcome.tally));
                }
            }
            Err(failure) => error = Some(error_of(&failure)),
        }
        let complete = error.is_none() && pages.is_complete_enumeration();
        let inactivations = if error.is_none() {
            let absent = if complete {
                Some(
                    state
                        .store
                        .preview_absent_inactivations(
                            tenant_id,
                            target.managed_tenant_id,
                            &seen_object_ids,
                        )
                        .await?,
                )
            } else {
                None
            };
            let linked = match absent {
                Some(preview) => preview.linked,
                None => {
                    state
                        .store
                        .preview_absent_inactivations(tenant_id, target.managed_tenant_id, &[])
                        .await?
                        .linked
                }
            };
            let absent_users = absent.map(|preview| preview.would_inactivate);
            let would_inactivate = counts.inactivated + absent_users.unwrap_or_default();
            Some(InactivationPreviewView {
                would_inactivate,
                absent_users,
                linked_contacts: linked,
                guard_would_hold: entra_sync_domain::plan::inactivation_guard_trips(
                    usize::try_from(would_inactivate).unwrap_or(usize::MAX),
                    usize::try_from(linked).unwrap_or(usize::MAX),
                ),
            })
        } else {
            None
        };
        totals.add(&counts);
        tenants.push(PreflightTenantView {
            managed_tenant_id: target.managed_tenant_id,
            entra_tenant_id: target.entra_tenant_id,
            client_id: target.client_id,
            complete,
            counts: CountsView::from(&counts),
            inactivations,
            error,
        });
    }
    Ok(Json(PreflightView {
        tenants,
        totals: CountsView::from(&totals),
        tenants_not_checked,
    }))
}

//! Sync runs: start (deduplicated), history, one run with its tenant results, cancel, and the
//! admin's answer to inactivations held by the mass-inactivation guard.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use entra_sync_store::runs::{RunKind, RunRecord, RunScope, TallyCounts, TenantResultRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ListResponse;
pub(crate) use crate::app::runs::start_run;
use crate::app::Caller;
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
    pub(crate) scope: SyncScopeName,
    pub(crate) client_id: Option<Uuid>,
}

/// The scope a body names, refusing a `client_id` with `all` (it would silently sync every
/// tenant) and `client` without one.
pub(crate) fn requested_scope(body: &SyncBody) -> Result<Option<Uuid>, ApiError> {
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
    pub(crate) run_id: Uuid,
    /// True when a run of the same scope was already running and is returned instead.
    pub(crate) deduplicated: bool,
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
    let view = crate::app::runs::start_sync(&state, &Caller::from(caller), body).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunErrorView {
    pub(crate) class: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) remediation: Option<String>,
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
    pub(crate) seen: u64,
    pub(crate) eligible: u64,
    pub(crate) created: u64,
    pub(crate) linked: u64,
    pub(crate) updated: u64,
    pub(crate) inactivated: u64,
    pub(crate) reactivated: u64,
    pub(crate) queued: u64,
    pub(crate) errors: u64,
    /// Skipped users by reason.
    pub(crate) skipped: std::collections::BTreeMap<String, u64>,
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
    pub(crate) managed_tenant_id: Uuid,
    /// `running`, `retrying`, `completed`, `failed`, `needs_confirmation` or `cancelled`.
    pub(crate) status: String,
    /// `delta` or `full`.
    pub(crate) mode: String,
    pub(crate) counts: CountsView,
    /// The failure (while `retrying`: the last attempt's).
    pub(crate) error: Option<RunErrorView>,
    /// While `retrying`: the attempt that failed (1 for the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) attempt: Option<i32>,
    /// While `retrying`: when the next attempt starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(crate) started_at: chrono::DateTime<chrono::Utc>,
    pub(crate) finished_at: Option<chrono::DateTime<chrono::Utc>>,
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
    /// Shows the tenants waiting for another attempt as `retrying` (SPEC §5.7), with the
    /// error read together with the retry state: the run's own read may predate the retry.
    pub(crate) fn with_retry_states(
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
                if state.error.is_some() {
                    tenant.error = error_view(&state.error);
                }
            }
        }
        self
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunView {
    pub(crate) run_id: Uuid,
    /// `discovery` or `sync`.
    pub(crate) kind: String,
    /// `initial`, `manual` or `scheduled`.
    pub(crate) trigger: String,
    /// `all` or `client`.
    pub(crate) scope: String,
    pub(crate) client_id: Option<Uuid>,
    /// `running`, `completed`, `partial`, `failed` or `cancelled`.
    pub(crate) status: String,
    pub(crate) requested_by: Option<String>,
    pub(crate) started_at: chrono::DateTime<chrono::Utc>,
    pub(crate) finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(crate) cancel_requested: bool,
    /// Sync runs: the tenants' counts summed. Discovery runs: `{discovered, added,
    /// marked_missing}`.
    #[schema(value_type = Object)]
    pub(crate) totals: serde_json::Value,
    pub(crate) error: Option<RunErrorView>,
    pub(crate) tenants: Vec<TenantResultView>,
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
    #[param(inline)]
    pub(crate) kind: Option<KindFilter>,
    pub(crate) limit: Option<u32>,
    pub(crate) cursor: Option<String>,
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
    crate::app::runs::list_runs(&state, &Caller::from(caller), kind, page)
        .await
        .map(Json)
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
    crate::app::runs::get_run(&state, &Caller::from(caller), run_id)
        .await
        .map(Json)
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
    let view = crate::app::runs::cancel_run(&state, &Caller::from(caller), run_id).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HeldInactivationView {
    pub(crate) contact_id: Uuid,
    pub(crate) object_id: String,
    /// `disabled_upstream` or `deleted_upstream`.
    pub(crate) reason: String,
    /// `pending`, `held`, `applied` or `discarded`.
    pub(crate) state: String,
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
    pub(crate) action: HeldAction,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HeldInactivationsView {
    /// Contacts inactivated (apply) or inactivations dropped (discard).
    pub(crate) affected: u64,
    pub(crate) tenant: Option<TenantResultView>,
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
    crate::app::runs::resolve_held_inactivations(
        &state,
        &Caller::from(caller),
        run_id,
        managed_tenant_id,
        body,
    )
    .await
    .map(Json)
}

/// What the absent-user rule and the mass-inactivation guard would do (SPEC §5.5).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InactivationPreviewView {
    /// Contacts a sync would inactivate: disabled users on the pages read, plus, when the
    /// enumeration was complete, linked users the directory no longer returns.
    pub(crate) would_inactivate: u64,
    /// Of those, linked users absent from the directory (null when the preflight did not read
    /// every user, so absence cannot be told).
    pub(crate) absent_users: Option<u64>,
    /// The managed tenant's linked contacts (the guard's denominator).
    pub(crate) linked_contacts: u64,
    /// True when the guard would hold these inactivations for an admin's confirmation.
    pub(crate) guard_would_hold: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PreflightTenantView {
    pub(crate) managed_tenant_id: Uuid,
    pub(crate) entra_tenant_id: String,
    pub(crate) client_id: Uuid,
    /// False when the tenant has more users than the preflight read.
    pub(crate) complete: bool,
    pub(crate) counts: CountsView,
    pub(crate) inactivations: Option<InactivationPreviewView>,
    pub(crate) error: Option<RunErrorView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PreflightView {
    /// What a sync of this scope would do now; nothing was written.
    pub(crate) tenants: Vec<PreflightTenantView>,
    pub(crate) totals: CountsView,
    /// Mapped tenants beyond the preflight's limit or time budget, not looked at.
    pub(crate) tenants_not_checked: usize,
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
    crate::app::preflight::preflight(&state, &Caller::from(caller), &body)
        .await
        .map(Json)
}

#[cfg(test)]
mod tests {
    use entra_sync_store::failures::TenantRetryState;

    use super::*;

    fn running_tenant(managed_tenant_id: Uuid) -> TenantResultView {
        TenantResultView {
            managed_tenant_id,
            status: "running".to_owned(),
            mode: "full".to_owned(),
            counts: CountsView::from(&TallyCounts::default()),
            error: None,
            attempt: None,
            next_attempt_at: None,
            started_at: chrono::Utc::now(),
            finished_at: None,
        }
    }

    fn run_of(tenants: Vec<TenantResultView>) -> RunView {
        RunView {
            run_id: Uuid::new_v4(),
            kind: "sync".to_owned(),
            trigger: "manual".to_owned(),
            scope: "all".to_owned(),
            client_id: None,
            status: "running".to_owned(),
            requested_by: None,
            started_at: chrono::Utc::now(),
            finished_at: None,
            cancel_requested: false,
            totals: serde_json::json!({}),
            error: None,
            tenants,
        }
    }

    /// The run's tenants are read before the retry states; a retry recorded in between must
    /// still show with its error, not as `retrying` with none.
    #[test]
    fn a_retrying_tenant_shows_the_error_read_with_its_retry_state() {
        let waiting = Uuid::new_v4();
        let other = Uuid::new_v4();
        let next = chrono::Utc::now();
        let view =
            run_of(vec![running_tenant(waiting), running_tenant(other)]).with_retry_states(&[
                TenantRetryState {
                    managed_tenant_id: waiting,
                    attempt: 1,
                    next_attempt_at: next,
                    error: Some(serde_json::json!({
                        "class": "transient",
                        "code": "throttled",
                        "message": "Graph asked to wait",
                        "remediation": "None needed; the sync tries again.",
                    })),
                },
            ]);
        let retrying = &view.tenants[0];
        assert_eq!(retrying.status, "retrying");
        assert_eq!(retrying.attempt, Some(1));
        assert_eq!(retrying.next_attempt_at, Some(next));
        let error = retrying.error.as_ref().expect("the retry's error");
        assert_eq!(error.class.as_deref(), Some("transient"));
        assert_eq!(
            error.remediation.as_deref(),
            Some("None needed; the sync tries again.")
        );
        assert_eq!(view.tenants[1].status, "running");
        assert!(view.tenants[1].error.is_none());
    }
}

//! Runs: start a sync or a discovery (deduplicated), history, one run, cancel, held
//! inactivations.

use axum::http::StatusCode;
use entra_sync_store::flags::CLIENT_SYNC_ACTION_FLAG;
use entra_sync_store::inactivation::HeldInactivationAction;
use entra_sync_store::page::PageRequest;
use entra_sync_store::runs::{NewRun, RunKind, RunScope, RunStatus, RunTrigger, StartRunOutcome};
use entra_sync_workflows::contract::{DiscoveryRunInput, SyncRunInput, CONTRACT_VERSION};
use uuid::Uuid;

use super::Caller;
use crate::error::ApiError;
use crate::routes::audit;
use crate::routes::runs::{
    HeldAction, HeldInactivationsBody, HeldInactivationsView, RunView, StartedRunView, SyncBody,
    TenantResultView,
};
use crate::routes::ListResponse;
use crate::AppState;

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
    let span = tracing::Span::current();
    span.record("tenant_id", tracing::field::display(tenant_id));
    span.record("run_id", tracing::field::display(outcome.run_id));
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

/// The scope a sync body names, checked as starting it would check it: one client's scope
/// needs the client-sync flag and an existing client.
pub(crate) async fn sync_scope(
    state: &AppState,
    tenant_id: Uuid,
    body: &SyncBody,
) -> Result<RunScope, ApiError> {
    let Some(client_id) = crate::routes::runs::requested_scope(body)? else {
        return Ok(RunScope::All);
    };
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
    state
        .store
        .get_client(tenant_id, client_id)
        .await
        .map_err(|error| match ApiError::from(error) {
            error if error.status == StatusCode::NOT_FOUND => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_client",
                "the client does not exist",
            ),
            other => other,
        })?;
    Ok(RunScope::Client(client_id))
}

/// Starts a manual sync ("Sync All Tenants Now" or one client's "Sync now").
pub(crate) async fn start_sync(
    state: &AppState,
    caller: &Caller,
    body: SyncBody,
) -> Result<StartedRunView, ApiError> {
    let tenant_id = caller.user.tenant_id;
    let scope = sync_scope(state, tenant_id, &body).await?;
    let outcome = start_run(
        state,
        tenant_id,
        RunKind::Sync,
        RunTrigger::Manual,
        scope,
        &caller.actor(),
    )
    .await?;
    audit(
        state,
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
    Ok(StartedRunView {
        run_id: outcome.run_id,
        deduplicated: outcome.deduplicated,
    })
}

/// Run history, newest first.
pub(crate) async fn list_runs(
    state: &AppState,
    caller: &Caller,
    kind: Option<RunKind>,
    page: PageRequest,
) -> Result<ListResponse<RunView>, ApiError> {
    let runs = state
        .store
        .list_runs(caller.user.tenant_id, kind, &page)
        .await?;
    Ok(ListResponse::from_page(runs, |run| RunView::from(&run)))
}

/// One run with its tenant results.
pub(crate) async fn get_run(
    state: &AppState,
    caller: &Caller,
    run_id: Uuid,
) -> Result<RunView, ApiError> {
    let run = state.store.get_run(caller.user.tenant_id, run_id).await?;
    // Tenants waiting for another attempt show as `retrying` (SPEC §5.7).
    let retries = if run.status == RunStatus::Running {
        state
            .store
            .tenant_retry_states(caller.user.tenant_id, run_id)
            .await?
    } else {
        Vec::new()
    };
    Ok(RunView::from(&run).with_retry_states(&retries))
}

/// Cancels a running run.
pub(crate) async fn cancel_run(
    state: &AppState,
    caller: &Caller,
    run_id: Uuid,
) -> Result<RunView, ApiError> {
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
        state,
        tenant_id,
        &caller.actor(),
        "entra.run.cancel",
        Some(format!("run:{run_id}")),
        serde_json::json!({}),
    )
    .await?;
    let run = state.store.get_run(tenant_id, run_id).await?;
    Ok(RunView::from(&run))
}

/// Applies or discards the inactivations the mass-inactivation guard held.
pub(crate) async fn resolve_held_inactivations(
    state: &AppState,
    caller: &Caller,
    run_id: Uuid,
    managed_tenant_id: Uuid,
    body: HeldInactivationsBody,
) -> Result<HeldInactivationsView, ApiError> {
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
        state,
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
    Ok(HeldInactivationsView { affected, tenant })
}

//! The activities the sync and discovery workflows call. `sync_tenant` is the long one: it
//! pages users from the directory, reconciles each page in one transaction (which also saves
//! the resume cursor), heartbeats the cursor, and on the last page settles the tenant's
//! inactivations and writes its result.
//!
//! Resumption: each page's writes, the tenant result's counts and the cursor of the next page
//! commit in one transaction, so the stored cursor always matches the stored counts. A retry
//! (after an error, a lost heartbeat or a killed worker) resumes from that stored cursor, which
//! is never older than the last heartbeat (the heartbeat is sent after the commit); resuming
//! from a heartbeat that lagged behind the database would replay committed pages and count
//! them twice.

use std::cell::Cell;
use std::collections::HashSet;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use entra_sync_connection::{
    load_group_members, ConnectedSource, DirectoryError, DirectoryFactory, DirectorySource,
    ErrorClass, ErrorRecord, FetchedPage, GroupMembers, PageLoop, UsersPage,
};
use entra_sync_domain::model::DirectoryEntry;
use entra_sync_store::connection::ConnectionKind;
use entra_sync_store::discovery::{DiscoveredTenantRecord, TenantDomain};
use entra_sync_store::group::{GroupMember, GroupOutcome};
use entra_sync_store::inactivation::TenantFinish;
use entra_sync_store::reconcile::PageScope;
use entra_sync_store::runs::{
    LeasedStart, NewRun, RunKind, RunScope, RunStatus, RunTrigger, SyncMode, TenantResultRecord,
    TenantResultStatus,
};
use entra_sync_store::settings::SyncStart;
use entra_sync_store::Store;
use entra_sync_workflows::contract::{
    DiscoverInput, DiscoverOutput, FinishRunInput, FinishRunOutput, HandedBack,
    OpenScheduledRunInput, OpenScheduledRunOutput, PrepareSyncInput, PrepareSyncOutput, RunEnd,
    RunKindName, ScheduleSettingsInput, ScheduleSettingsOutput, SyncTarget, SyncTenantInput,
    SyncTenantOutput, SyncTenantsInput, SyncTenantsOutput, TenantEnd, TenantFailureInput,
    TenantsEndedInput,
};
use entra_sync_workflows::workflow_id_for_run;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::{info, instrument, warn};
use uuid::Uuid;

use crate::errors::{from_directory, from_store, invalid};

/// The state of the activities: the store and how to reach directories. Cheap to share.
pub struct Activities {
    store: Store,
    directories: DirectoryFactory,
    /// The bound a scheduled sync passes to its sync run (manual runs get theirs from the API).
    max_parallel_tenants: u32,
    /// Users accumulated from provider pages before a batch is reconciled in one transaction.
    batch_users: usize,
    /// The longest a sync run may take (`prepare_sync` hands it to the workflow).
    max_run: Duration,
    /// Targets per page of `prepare_sync`; a run of more runs each page as a child workflow.
    batch_tenants: usize,
}

/// The default longest run: six hours, whatever the providers' `Retry-After` asks.
pub const DEFAULT_MAX_RUN: Duration = Duration::from_secs(6 * 60 * 60);

impl Activities {
    pub fn new(store: Store, directories: DirectoryFactory) -> Self {
        Activities {
            store,
            directories,
            max_parallel_tenants: 16,
            batch_users: DEFAULT_BATCH_USERS,
            max_run: DEFAULT_MAX_RUN,
            batch_tenants: DEFAULT_BATCH_TENANTS,
        }
    }

    /// Sets how many managed tenants one page of a run's targets holds (at least 1): a run of
    /// more tenants syncs each page in a child workflow of its own.
    pub fn with_batch_tenants(mut self, batch_tenants: usize) -> Self {
        self.batch_tenants = batch_tenants.max(1);
        self
    }

    /// Sets the longest a sync run may take (at least a minute): tenants still syncing or
    /// retrying then fail with the limit as their cause and the run ends `partial`/`failed`.
    pub fn with_max_run(mut self, max_run: Duration) -> Self {
        self.max_run = max_run.max(Duration::from_secs(1));
        self
    }

    /// Sets how many users a reconcile batch accumulates (at least 1).
    pub fn with_batch_users(mut self, batch_users: usize) -> Self {
        self.batch_users = batch_users.max(1);
        self
    }

    /// Sets the bound on concurrently syncing managed tenants for scheduled runs.
    pub fn with_max_parallel_tenants(mut self, max_parallel_tenants: u32) -> Self {
        self.max_parallel_tenants = max_parallel_tenants.max(1);
        self
    }
}

/// How often a `sync_tenant` attempt heartbeats while a page is being read or written; well
/// inside `TENANT_HEARTBEAT_TIMEOUT` so a slow page (or a Retry-After wait) is not mistaken for
/// a lost worker. The SDK throttles what it actually sends.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

/// The stored cursor of a tenant whose last page committed: a retry after that point goes
/// straight to settling the tenant instead of reading the last page again.
const ENUMERATION_COMPLETE: &str = "entra-sync:enumeration-complete";

/// Users reconciled per transaction unless configured (`sync.batch_users`): provider pages
/// (Graph's delta pages can be as small as 100 users) are accumulated up to this before a
/// batch is written, so the fixed cost of a transaction (lock, reads, counts) is paid about
/// once per thousand users.
pub const DEFAULT_BATCH_USERS: usize = 1000;

/// Managed tenants per page of a run's targets unless configured (`sync.batch_tenants`). A
/// run's tenants beyond one page run as child workflows of this many each: about five history
/// events per tenant, so a child's history stays near 1,300 events, far from Temporal's 51,200,
/// and a page of targets near 40 KB, far from its 2 MB payload limit.
pub const DEFAULT_BATCH_TENANTS: usize = 250;

/// How often a run waiting for another run's sync lease on a managed tenant looks again.
const LEASE_POLL: Duration = Duration::from_secs(1);

/// A stored delta link older than this starts a full enumeration (SPEC §5.1).
const DELTA_LINK_MAX_AGE_DAYS: i64 = 6;

/// What a `sync_tenant` attempt heartbeats after each committed page; a retry resumes from it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Progress {
    /// The cursor of the next page to read; None before the first page.
    next_cursor: Option<String>,
    /// Pages committed so far in this run.
    pages: u64,
}

fn parse_uuid(value: &str, what: &str) -> Result<Uuid, ActivityError> {
    Uuid::from_str(value).map_err(|_| invalid(format!("{what} is not a UUID")))
}

fn error_json(error: &DirectoryError) -> serde_json::Value {
    ErrorRecord::from_directory(error).to_json()
}

#[activities]
impl Activities {
    #[activity(definition = entra_sync_workflows::contract::PrepareSync)]
    pub async fn prepare_sync(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: PrepareSyncInput,
    ) -> Result<PrepareSyncOutput, ActivityError> {
        let tenant_id = parse_uuid(&input.tenant_id, "tenant_id")?;
        let run_id = parse_uuid(&input.run_id, "run_id")?;
        let run = self
            .store
            .get_run(tenant_id, run_id)
            .await
            .map_err(from_store)?;
        let after = input
            .after
            .as_deref()
            .map(|after| parse_uuid(after, "after"))
            .transpose()?;
        // One more than a page says whether another page follows.
        let page = i64::try_from(self.batch_tenants).unwrap_or(i64::MAX - 1);
        let mut targets = self
            .store
            .sync_targets_page(
                tenant_id,
                run.scope,
                after,
                Some(page + 1),
                Some(Utc::now() - chrono::Duration::days(DELTA_LINK_MAX_AGE_DAYS)),
            )
            .await
            .map_err(from_store)?;
        let more = targets.len() > self.batch_tenants;
        targets.truncate(self.batch_tenants);
        Ok(PrepareSyncOutput {
            more,
            targets: targets
                .into_iter()
                .map(|target| SyncTarget {
                    managed_tenant_id: target.managed_tenant_id.to_string(),
                    entra_tenant_id: target.entra_tenant_id,
                    client_id: target.client_id.to_string(),
                    small: target.delta_link_issued_at.is_some_and(delta_link_is_fresh),
                    few_users: target.few_users,
                })
                .collect(),
            max_run_seconds: Some(self.max_run.as_secs()),
        })
    }

    #[activity(definition = entra_sync_workflows::contract::SyncTenant)]
    pub async fn sync_tenant(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: SyncTenantInput,
    ) -> Result<SyncTenantOutput, ActivityError> {
        self.sync_timed(&ctx, input, None, None).await
    }

    /// One tenant's sync under this attempt's number (for `note_retry`), timed in
    /// `entra_sync_tenant_sync_seconds`. A group passes its shared source and the tenant's
    /// start as it read them for all its tenants at once.
    async fn sync_timed(
        &self,
        ctx: &ActivityContext,
        input: SyncTenantInput,
        shared: Option<&ConnectedSource>,
        start: Option<SyncStart>,
    ) -> Result<SyncTenantOutput, ActivityError> {
        let started = std::time::Instant::now();
        let outcome = ATTEMPT
            .scope(
                ctx.info().attempt,
                NEXT_HEARTBEAT.scope(
                    Cell::new(tokio::time::Instant::now() + HEARTBEAT_EVERY),
                    self.sync_tenant_inner(ctx, input, shared, start),
                ),
            )
            .await;
        let result = if outcome.is_ok() { "ok" } else { "error" };
        metrics::histogram!("entra_sync_tenant_sync_seconds", "result" => result)
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    /// Syncs several small tenants one after another, each exactly as `sync_tenant` does (a
    /// tenant already ended by an earlier attempt is skipped by the same check), so a run in
    /// which little changed pays one activity round trip for many tenants. A tenant that
    /// fails in a way a retry can fix is handed back for the workflow to sync on its own,
    /// under the tenant retry policy; one that fails for good has its failure recorded, and
    /// the others go on.
    #[activity(definition = entra_sync_workflows::contract::SyncTenants)]
    pub async fn sync_tenants(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: SyncTenantsInput,
    ) -> Result<SyncTenantsOutput, ActivityError> {
        let mut retry = Vec::new();
        // The tenants share their PSA tenant's connection: its source is made once. If that
        // fails, each tenant makes its own and records the failure as `sync_tenant` would.
        let tenant_id = parse_uuid(&input.tenant_id, "tenant_id")?;
        let shared = self
            .directories
            .for_tenant(&self.store, tenant_id)
            .await
            .ok();
        // Their starts (settings, delta links) are read in one statement too; if that fails,
        // each tenant reads its own.
        let managed_tenant_ids: Vec<Option<Uuid>> = input
            .targets
            .iter()
            .map(|target| Uuid::from_str(&target.managed_tenant_id).ok())
            .collect();
        let known: Vec<Uuid> = managed_tenant_ids.iter().flatten().copied().collect();
        let mut starts = self
            .store
            .load_sync_starts(tenant_id, &known)
            .await
            .unwrap_or_default();
        // The tenants whose delta round is small enough are synced together first; the
        // others, and any the group leaves, each on their own below.
        let ended = match (&shared, Uuid::from_str(&input.run_id)) {
            (Some(shared), Ok(run_id)) if shared.kind == ConnectionKind::Direct => {
                let group = DeltaGroup {
                    ctx: &ctx,
                    tenant_id,
                    run_id,
                    source: shared.source.as_ref(),
                };
                self.sync_delta_group(&group, &input.targets, &starts, &mut retry)
                    .await
            }
            _ => HashSet::new(),
        };
        for (target, managed_tenant_id) in input.targets.into_iter().zip(managed_tenant_ids) {
            if ctx.is_cancelled() {
                return Err(ActivityError::cancelled());
            }
            if managed_tenant_id.is_some_and(|id| ended.contains(&id)) {
                continue;
            }
            let one = SyncTenantInput {
                tenant_id: input.tenant_id.clone(),
                run_id: input.run_id.clone(),
                target: target.clone(),
            };
            let start = managed_tenant_id.and_then(|id| starts.remove(&id));
            if let Err(failure) = self.sync_timed(&ctx, one, shared.as_ref(), start).await {
                retry.extend(handed_back(failure, target)?);
            }
        }
        Ok(SyncTenantsOutput { retry })
    }

    #[activity(definition = entra_sync_workflows::contract::RecordTenantFailure)]
    pub async fn record_tenant_failure(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: TenantFailureInput,
    ) -> Result<(), ActivityError> {
        self.end_tenant(input).await
    }

    #[activity(definition = entra_sync_workflows::contract::RecordTenantsEnded)]
    pub async fn record_tenants_ended(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: TenantsEndedInput,
    ) -> Result<(), ActivityError> {
        for managed_tenant_id in input.managed_tenant_ids {
            let one = TenantFailureInput {
                tenant_id: input.tenant_id.clone(),
                run_id: input.run_id.clone(),
                managed_tenant_id,
                status: input.status,
                message: input.message.clone(),
                time_limit_seconds: input.time_limit_seconds,
            };
            self.end_tenant(one).await?;
        }
        Ok(())
    }

    #[activity(definition = entra_sync_workflows::contract::FinishRun)]
    pub async fn finish_run(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: FinishRunInput,
    ) -> Result<FinishRunOutput, ActivityError> {
        let tenant_id = parse_uuid(&input.tenant_id, "tenant_id")?;
        let run_id = parse_uuid(&input.run_id, "run_id")?;
        let forced = input.forced.map(|forced| match forced {
            RunEnd::Completed => RunStatus::Completed,
            RunEnd::Partial => RunStatus::Partial,
            RunEnd::Failed => RunStatus::Failed,
            RunEnd::Cancelled => RunStatus::Cancelled,
        });
        let error = match &input.message {
            None => None,
            // What the failing activity recorded (discovery records its classified failure),
            // else a record of the workflow's message.
            Some(message) => Some(
                self.store
                    .get_run(tenant_id, run_id)
                    .await
                    .ok()
                    .and_then(|run| run.error)
                    .and_then(|error| ErrorRecord::from_json(&error))
                    .unwrap_or_else(|| {
                        ErrorRecord::new(ErrorClass::Transient, "run_failed", message.as_str())
                            .with_remediation(
                                "the run failed after its retries; check the worker logs and run it again",
                            )
                    })
                    .to_json(),
            ),
        };
        // Without a forced status, the run's tenant results give it.
        let final_status = self
            .store
            .finish_run_derived(tenant_id, run_id, forced, error.as_ref())
            .await
            .map_err(from_store)?;
        info!(%tenant_id, %run_id, status = ?final_status, "run finished");
        Ok(FinishRunOutput {
            status: match final_status {
                RunStatus::Completed => RunEnd::Completed,
                RunStatus::Partial => RunEnd::Partial,
                RunStatus::Cancelled => RunEnd::Cancelled,
                RunStatus::Failed | RunStatus::Running => RunEnd::Failed,
            },
        })
    }

    #[activity(definition = entra_sync_workflows::contract::LoadScheduleSettings)]
    pub async fn load_schedule_settings(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ScheduleSettingsInput,
    ) -> Result<ScheduleSettingsOutput, ActivityError> {
        let tenant_id = parse_uuid(&input.tenant_id, "tenant_id")?;
        let settings = self
            .store
            .load_settings(tenant_id)
            .await
            .map_err(from_store)?;
        Ok(ScheduleSettingsOutput {
            discovery_before_sync: settings.discovery_before_sync,
            max_parallel_tenants: self.max_parallel_tenants,
        })
    }

    /// Opens a scheduled run, or finds the running run of the same scope (`deduplicated`).
    /// The new run's workflow id is recorded at once: it is the id the scheduled workflow gives
    /// the run's child workflow, so cancel and the run reconciler can find it.
    #[activity(definition = entra_sync_workflows::contract::OpenScheduledRun)]
    pub async fn open_scheduled_run(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OpenScheduledRunInput,
    ) -> Result<OpenScheduledRunOutput, ActivityError> {
        let tenant_id = parse_uuid(&input.tenant_id, "tenant_id")?;
        let kind = match input.kind {
            RunKindName::Discovery => RunKind::Discovery,
            RunKindName::Sync => RunKind::Sync,
        };
        let outcome = self
            .store
            .start_run(&NewRun {
                tenant_id,
                kind,
                trigger: RunTrigger::Scheduled,
                scope: RunScope::All,
                requested_by: Some("schedule".to_owned()),
            })
            .await
            .map_err(from_store)?;
        let run_id = outcome.run_id.to_string();
        if !outcome.deduplicated {
            let workflow_id = workflow_id_for_run(input.kind.as_str(), &input.tenant_id, &run_id);
            self.store
                .set_run_workflow_id(tenant_id, outcome.run_id, &workflow_id)
                .await
                .map_err(from_store)?;
        }
        info!(%tenant_id, %run_id, deduplicated = outcome.deduplicated, kind = input.kind.as_str(), "scheduled run opened");
        Ok(OpenScheduledRunOutput {
            run_id,
            deduplicated: outcome.deduplicated,
        })
    }

    #[activity(definition = entra_sync_workflows::contract::DiscoverTenants)]
    pub async fn discover_tenants(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: DiscoverInput,
    ) -> Result<DiscoverOutput, ActivityError> {
        let tenant_id = parse_uuid(&input.tenant_id, "tenant_id")?;
        let run_id = parse_uuid(&input.run_id, "run_id")?;
        let listed = match self.directories.for_tenant(&self.store, tenant_id).await {
            Ok(connected) => connected.source.list_tenants().await,
            Err(error) => Err(error),
        };
        let tenants = match listed {
            Ok(tenants) => tenants,
            Err(error) => {
                // Recorded on the run now, so a non-retryable failure shows at once with its
                // remediation; nothing is marked missing after a failed listing.
                self.note_connection_error(tenant_id, &error).await;
                let _ = self
                    .store
                    .record_run_error(tenant_id, run_id, &error_json(&error))
                    .await;
                return Err(from_directory(&error));
            }
        };
        // A tenant whose domains could not be read keeps its stored ones (the reason is in
        // the worker log and the count in the run's totals).
        let domains_unreadable: Vec<String> = tenants
            .iter()
            .filter(|tenant| tenant.domains_error.is_some())
            .map(|tenant| tenant.entra_tenant_id.clone())
            .collect();
        let records: Vec<DiscoveredTenantRecord> = tenants
            .into_iter()
            .map(|tenant| DiscoveredTenantRecord {
                entra_tenant_id: tenant.entra_tenant_id,
                display_name: tenant.display_name,
                domains: tenant
                    .domains
                    .into_iter()
                    .map(|domain| TenantDomain {
                        name: domain.name,
                        is_default: domain.is_default,
                        is_initial: domain.is_initial,
                    })
                    .collect(),
            })
            .collect();
        let outcome = self
            .store
            .record_discovery_keeping_domains(tenant_id, run_id, &records, &domains_unreadable)
            .await
            .map_err(from_store)?;
        Ok(DiscoverOutput {
            found: u32::try_from(outcome.discovered).unwrap_or(u32::MAX),
            missing: u32::try_from(outcome.marked_missing).unwrap_or(u32::MAX),
        })
    }
}

impl Activities {
    /// Ends one tenant's result after its `sync_tenant` failed for good, was cancelled, or
    /// never ran (`record_tenant_failure`, `record_tenants_ended`).
    async fn end_tenant(&self, input: TenantFailureInput) -> Result<(), ActivityError> {
        let tenant_id = parse_uuid(&input.tenant_id, "tenant_id")?;
        let run_id = parse_uuid(&input.run_id, "run_id")?;
        let managed_tenant_id = parse_uuid(&input.managed_tenant_id, "managed_tenant_id")?;
        let status = match input.status {
            TenantEnd::Cancelled => TenantResultStatus::Cancelled,
            _ => TenantResultStatus::Failed,
        };
        // The last classified failure an attempt recorded on the tenant result is kept; a
        // failure no attempt could record (a lost worker, a store outage) gets a record of its
        // own. A cancelled tenant did not fail and has no error.
        let error = if status == TenantResultStatus::Cancelled {
            None
        } else {
            let last = self
                .store
                .tenant_result_error(tenant_id, run_id, managed_tenant_id)
                .await
                .ok()
                .flatten()
                .and_then(|error| ErrorRecord::from_json(&error));
            let record = match input.time_limit_seconds {
                Some(seconds) => ErrorRecord::time_limit(seconds, last.as_ref(), &input.message),
                None => last.unwrap_or_else(|| {
                    ErrorRecord::new(ErrorClass::Transient, "retries_exhausted", input.message)
                        .with_remediation(
                            "the tenant kept failing after every retry; check the worker logs for this run and run the sync again",
                        )
                }),
            };
            Some(record.to_json())
        };
        self.store
            .finish_tenant_result(tenant_id, run_id, managed_tenant_id, status, error.as_ref())
            .await
            .map_err(from_store)?;
        Ok(())
    }
}

impl Activities {
    #[instrument(skip_all, fields(tenant_id = %input.tenant_id, run_id = %input.run_id, managed_tenant_id = %input.target.managed_tenant_id))]
    async fn sync_tenant_inner(
        &self,
        ctx: &ActivityContext,
        input: SyncTenantInput,
        shared: Option<&ConnectedSource>,
        start: Option<SyncStart>,
    ) -> Result<SyncTenantOutput, ActivityError> {
        let preparing = std::time::Instant::now();
        let tenant_id = parse_uuid(&input.tenant_id, "tenant_id")?;
        let run_id = parse_uuid(&input.run_id, "run_id")?;
        let managed_tenant_id = parse_uuid(&input.target.managed_tenant_id, "managed_tenant_id")?;
        let client_id = parse_uuid(&input.target.client_id, "client_id")?;
        let entra_tenant_id = input.target.entra_tenant_id.clone();

        let start = match start {
            Some(start) => start,
            None => self
                .store
                .load_sync_start(tenant_id, managed_tenant_id)
                .await
                .map_err(from_store)?,
        };
        let settings = start.settings;
        let connected = match shared {
            Some(shared) => ConnectedSource {
                source: shared.source.clone(),
                kind: shared.kind,
            },
            None => match self.directories.for_tenant(&self.store, tenant_id).await {
                Ok(connected) => connected,
                Err(error) => {
                    return Err(self
                        .fail_tenant(tenant_id, run_id, managed_tenant_id, &error)
                        .await)
                }
            },
        };

        // CIPP gives a full snapshot every run (MICROSOFT.md §5a). Direct connections read
        // `users/delta` from the stored delta link; without one, or with one older than six
        // days (tokens last seven, §3), the delta round starts from scratch, which lists every
        // user and so is a full enumeration.
        let prefer_delta = connected.kind == ConnectionKind::Direct;
        let fresh_link = start
            .delta_link
            .filter(|(_, issued_at)| prefer_delta && delta_link_is_fresh(*issued_at))
            .map(|(link, _)| link);
        let wanted_mode = if fresh_link.is_some() {
            SyncMode::Delta
        } else {
            SyncMode::Full
        };
        // On a first attempt the first page is read while the lease is taken: one that starts
        // from scratch (no saved cursor, the mode it asked for) and took the lease at once reads
        // exactly that page next. A read changes nothing at the provider, so a page that is not
        // wanted (the tenant was handed back with a cursor, the lease had to be waited for) is
        // dropped and the right one read. A retry resumes from its saved cursor, so it does not
        // read ahead: the provider would be asked for a page no one uses.
        let earlier: Progress = ctx
            .heartbeat_details()
            .deserialize()
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut speculative = PageLoop::new(
            entra_tenant_id.clone(),
            prefer_delta,
            fresh_link.clone(),
            None,
        );
        let (leased, first_page) = tokio::join!(
            self.start_under_lease(ctx, tenant_id, managed_tenant_id, run_id, wanted_mode),
            async {
                if ctx.info().attempt > 1 {
                    return None;
                }
                provider_read(
                    ctx,
                    &earlier,
                    speculative.next_page(connected.source.as_ref()),
                )
                .await
            }
        );
        let (result, waited) = leased?;
        if result.status != TenantResultStatus::Running {
            // An earlier attempt already finished this tenant; doing it again would change nothing.
            return Ok(SyncTenantOutput {
                status: tenant_end(result.status),
            });
        }
        // A resumed attempt keeps the mode the first attempt chose.
        let mut mode = result.mode;
        let delta_link = if mode == SyncMode::Delta {
            fresh_link
        } else {
            None
        };

        // Resume from the cursor the last committed page saved (see the module docs); the
        // heartbeat says how many pages the earlier attempts committed.
        let mut progress = Progress {
            next_cursor: result.cursor.clone(),
            pages: earlier.pages,
        };
        if progress.next_cursor.is_some() {
            info!(
                pages = progress.pages,
                attempt = ctx.info().attempt,
                "resuming the tenant from its saved cursor"
            );
        }
        let enumeration_done = progress.next_cursor.as_deref() == Some(ENUMERATION_COMPLETE);
        let first_is_next = !waited && result.cursor.is_none() && mode == wanted_mode;
        let (mut pages, first_page) = match first_page {
            Some(fetched) if first_is_next => (speculative, Some(fetched)),
            _ => (
                PageLoop::new(
                    entra_tenant_id.clone(),
                    prefer_delta,
                    delta_link,
                    progress.next_cursor.clone(),
                ),
                None,
            ),
        };

        // The group filters (SPEC §5.2) need each named group's members; they are read once
        // per attempt, before the first page, so every page is judged against the same
        // membership. A failure is classified like any other directory failure.
        let group_members = if enumeration_done {
            GroupMembers::default()
        } else {
            let groups = settings.filters.named_groups();
            let loaded = with_heartbeats(
                ctx,
                &progress,
                true,
                load_group_members(connected.source.as_ref(), &entra_tenant_id, &groups),
            )
            .await
            .ok_or_else(ActivityError::cancelled)?;
            match loaded {
                Ok(members) => members,
                Err(error) => {
                    return Err(self
                        .fail_tenant(tenant_id, run_id, managed_tenant_id, &error)
                        .await)
                }
            }
        };

        record_step(STEP_PREPARE, preparing.elapsed());
        let round = if enumeration_done {
            RoundEnd::default()
        } else {
            let reading = Reading {
                ctx,
                source: connected.source.as_ref(),
                group_members: &group_members,
                scope: PageScope {
                    tenant_id,
                    run_id,
                    managed_tenant_id,
                    mapped_client_id: client_id,
                    next_cursor: None,
                },
            };
            self.read_all_batches(
                &reading,
                &mut pages,
                first_page,
                &settings,
                &mut progress,
                &mut mode,
            )
            .await?
        };
        let finishing = std::time::Instant::now();
        let finish = match round.finished {
            Some(finish) => finish,
            None => {
                let issued_at = Utc::now();
                self.store
                    .finish_tenant_sync(
                        tenant_id,
                        run_id,
                        managed_tenant_id,
                        mode == SyncMode::Full,
                        round.delta_link.as_deref().map(|link| (link, issued_at)),
                    )
                    .await
                    .map_err(from_store)?
            }
        };
        let (inactivations, status) = (finish.inactivations, finish.status);
        info!(
            pages = progress.pages,
            applied = inactivations.applied,
            held = inactivations.held,
            "tenant synced"
        );
        record_step(STEP_FINISH, finishing.elapsed());
        Ok(SyncTenantOutput {
            status: tenant_end(status),
        })
    }

    /// Records a classified directory failure. Tenant-access, configuration and reconnect
    /// failures end the tenant now with remediation; transient ones leave it running so the
    /// retry resumes it.
    async fn fail_tenant(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        managed_tenant_id: Uuid,
        error: &DirectoryError,
    ) -> ActivityError {
        warn!(
            class = error.class(),
            code = error.code(),
            "directory failure"
        );
        self.note_connection_error(tenant_id, error).await;
        if error.is_retryable() {
            self.note_retry(tenant_id, run_id, managed_tenant_id, error)
                .await;
        } else {
            let _ = self
                .store
                .finish_tenant_result(
                    tenant_id,
                    run_id,
                    managed_tenant_id,
                    TenantResultStatus::Failed,
                    Some(&error_json(error)),
                )
                .await;
        }
        from_directory(error)
    }

    /// A reauth failure belongs to the whole connection: mark it so syncs stop and the status
    /// endpoint tells the admin to reconnect.
    async fn note_connection_error(&self, tenant_id: Uuid, error: &DirectoryError) {
        if let DirectoryError::ReauthRequired { .. } = error {
            let _ = self
                .store
                .set_connection_status(
                    tenant_id,
                    entra_sync_store::connection::ConnectionStatus::NeedsReconnect,
                    Some(&error_json(error)),
                )
                .await;
        }
    }
}

tokio::task_local! {
    /// The attempt of the `sync_tenant` being run (Temporal's, 1 for the first), for recording
    /// a retry without threading it through every call.
    static ATTEMPT: u32;

    /// When the tenant being synced heartbeats next at the latest. Every heartbeat moves it
    /// [`HEARTBEAT_EVERY`] on, so a tenant whose sync ends sooner sends none (each is a call
    /// to the Temporal server, and most tenants are small), while one that goes on is
    /// heartbeated every few seconds however its work is divided between calls.
    static NEXT_HEARTBEAT: Cell<tokio::time::Instant>;
}

/// When the next heartbeat is due (an interval from now outside a tenant's sync).
fn next_heartbeat() -> tokio::time::Instant {
    NEXT_HEARTBEAT
        .try_with(Cell::get)
        .unwrap_or_else(|_| tokio::time::Instant::now() + HEARTBEAT_EVERY)
}

/// Moves the next heartbeat an interval on from now.
fn heartbeat_sent() {
    NEXT_HEARTBEAT
        .try_with(|next| next.set(tokio::time::Instant::now() + HEARTBEAT_EVERY))
        .ok();
}

/// Heartbeats `progress` and moves the next heartbeat on.
async fn heartbeat(ctx: &ActivityContext, progress: &Progress) {
    ctx.record_heartbeat(progress.clone()).await.ok();
    heartbeat_sent();
}

/// Temporal's wait before attempt `attempt + 1` under the tenant retry policy of
/// `workflows::sync` (2 s doubling, at most 2 min), or the provider's `Retry-After` (already
/// capped by the connection layer).
fn next_retry_delay(attempt: u32, error: &DirectoryError) -> Duration {
    if let DirectoryError::Transient {
        retry_after: Some(wait),
        ..
    } = error
    {
        return *wait;
    }
    let doubled = 2u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(16));
    Duration::from_secs(doubled.min(120))
}

impl Activities {
    /// A transient failure Temporal will retry: the tenant result shows `retrying` with this
    /// attempt, its error record and when the next attempt starts (SPEC §5.7). The last
    /// attempt records nothing here; `record_tenant_failure` ends the tenant with this record.
    async fn note_retry(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        managed_tenant_id: Uuid,
        error: &DirectoryError,
    ) {
        let attempt = ATTEMPT.try_with(|attempt| *attempt).unwrap_or(1);
        let next_at = Utc::now()
            + chrono::Duration::from_std(next_retry_delay(attempt, error))
                .unwrap_or(chrono::Duration::zero());
        let recorded = self
            .store
            .record_tenant_retry(
                tenant_id,
                run_id,
                managed_tenant_id,
                attempt,
                &error_json(error),
                next_at,
            )
            .await;
        if let Err(failure) = recorded {
            warn!(error = %failure, "could not record the tenant's retry state");
        }
    }
}

/// What reading a tenant's users needs, shared by the steps of `read_all_batches`.
struct Reading<'a> {
    ctx: &'a ActivityContext,
    source: &'a dyn DirectorySource,
    group_members: &'a GroupMembers,
    /// The batch's scope; `next_cursor` is set per batch.
    scope: PageScope,
}

/// Provider pages accumulated for one reconcile transaction.
#[derive(Default)]
struct Batch {
    entries: Vec<DirectoryEntry>,
    pages: u64,
}

impl Activities {
    /// Waits until this run holds the managed tenant's sync lease (SPEC §5.7), then returns its
    /// tenant result, opened in the same statement: a run that finds another run syncing the
    /// tenant waits for it to end rather than skip the tenant, so a manual "this client" run
    /// during a scheduled "all" run still syncs it, after it. Heartbeats while waiting; a
    /// cancel ends the wait. Says whether it waited.
    async fn start_under_lease(
        &self,
        ctx: &ActivityContext,
        tenant_id: Uuid,
        managed_tenant_id: Uuid,
        run_id: Uuid,
        mode: SyncMode,
    ) -> Result<(TenantResultRecord, bool), ActivityError> {
        let mut waited = false;
        loop {
            let holder = match self
                .store
                .take_lease_and_start(tenant_id, managed_tenant_id, run_id, mode)
                .await
                .map_err(from_store)?
            {
                LeasedStart::Started(result) => return Ok((result, waited)),
                LeasedStart::Held { holder } => holder,
            };
            if !waited {
                info!(holder_run_id = %holder, "another run is syncing this managed tenant; waiting for it");
                waited = true;
            }
            let details: Option<Progress> = ctx.heartbeat_details().deserialize().ok().flatten();
            ctx.record_heartbeat(details.unwrap_or_default()).await.ok();
            tokio::select! {
                _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
                _ = tokio::time::sleep(LEASE_POLL) => {}
            }
        }
    }

    /// Reads the tenant's users page by page, reconciling them in batches of about
    /// `batch_users` users (one transaction each, whose resume cursor is the provider link
    /// after the batch), until the provider says the enumeration ended. Returns the new delta
    /// link, if the provider gave one, and the tenant's end when the last batch of a delta
    /// round already ended it in its own transaction (`Store::reconcile_last_delta_page`).
    /// `first_page`, when given, is the next page of `pages`, read already.
    async fn read_all_batches(
        &self,
        reading: &Reading<'_>,
        pages: &mut PageLoop,
        mut first_page: Option<Result<FetchedPage, DirectoryError>>,
        settings: &entra_sync_domain::model::SyncSettings,
        progress: &mut Progress,
        mode: &mut SyncMode,
    ) -> Result<RoundEnd, ActivityError> {
        let scope = &reading.scope;
        let mut batch = Batch::default();
        loop {
            if reading.ctx.is_cancelled() {
                return Err(ActivityError::cancelled());
            }
            let fetched = match first_page.take() {
                Some(fetched) => self.page_or_failure(reading, fetched).await?,
                None => self.fetch_page(reading, pages, progress).await?,
            };
            if fetched.restarted_full {
                // The page loop fell back to a full enumeration (MICROSOFT.md §3): what the
                // batch held came from the refused delta round.
                self.fall_back_to_full(scope).await?;
                *mode = SyncMode::Full;
                batch = Batch::default();
                progress.next_cursor = None;
            }
            let mut page = fetched.page;
            reading.group_members.annotate(&mut page.entries);
            batch.entries.append(&mut page.entries);
            batch.pages += 1;
            let last = page.is_last();
            if !last && batch.entries.len() < self.batch_users {
                continue;
            }
            if last && batch.entries.is_empty() {
                // Nothing changed since the last batch (a delta round with no changes, most
                // often): no page transaction. A retry before the tenant ends reads the same
                // empty round again, which changes nothing either.
                progress.pages += batch.pages;
                return Ok(RoundEnd {
                    delta_link: page.delta_link,
                    finished: None,
                });
            }
            // The last batch of a delta round ends the tenant in its own transaction.
            let end = if last && *mode == SyncMode::Delta {
                BatchEnd::EndsDeltaRound {
                    delta_link: page.delta_link.as_deref(),
                }
            } else {
                BatchEnd::Continues
            };
            let finished = self
                .reconcile_batch(
                    reading,
                    settings,
                    progress,
                    &batch,
                    page.next_cursor.clone(),
                    end,
                )
                .await?;
            batch = Batch::default();
            if last {
                return Ok(RoundEnd {
                    delta_link: page.delta_link,
                    finished,
                });
            }
        }
    }

    /// Reads one provider page through the shared page loop, heartbeating; a failure fails
    /// the tenant (recorded when final, or as `retrying` when Temporal will try again).
    async fn fetch_page(
        &self,
        reading: &Reading<'_>,
        pages: &mut PageLoop,
        progress: &Progress,
    ) -> Result<FetchedPage, ActivityError> {
        let fetched = provider_read(reading.ctx, progress, pages.next_page(reading.source))
            .await
            .ok_or_else(ActivityError::cancelled)?;
        self.page_or_failure(reading, fetched).await
    }

    /// A page read, or the tenant's failure to read it (see [`Activities::fetch_page`]).
    async fn page_or_failure(
        &self,
        reading: &Reading<'_>,
        fetched: Result<FetchedPage, DirectoryError>,
    ) -> Result<FetchedPage, ActivityError> {
        let scope = &reading.scope;
        match fetched {
            Ok(page) => Ok(page),
            Err(error) => Err(self
                .fail_tenant(
                    scope.tenant_id,
                    scope.run_id,
                    scope.managed_tenant_id,
                    &error,
                )
                .await),
        }
    }

    /// Forgets the stored delta link and records that the tenant is now fully enumerated.
    async fn fall_back_to_full(&self, scope: &PageScope) -> Result<(), ActivityError> {
        self.store
            .clear_delta_state(scope.tenant_id, scope.managed_tenant_id)
            .await
            .map_err(from_store)?;
        self.store
            .set_tenant_result_mode(
                scope.tenant_id,
                scope.run_id,
                scope.managed_tenant_id,
                SyncMode::Full,
            )
            .await
            .map_err(from_store)
    }

    /// Reconciles a batch in one transaction that also stores the cursor after it (the
    /// completion marker after the last page, so a retry then does not read it again), then
    /// heartbeats the committed cursor. Once the transaction starts it runs to its end: a
    /// cancel is honoured between batches, never inside one. When the batch ends a delta
    /// round, the same transaction ends the tenant when nothing is pending, and returns how it
    /// ended.
    async fn reconcile_batch(
        &self,
        reading: &Reading<'_>,
        settings: &entra_sync_domain::model::SyncSettings,
        progress: &mut Progress,
        batch: &Batch,
        next_cursor: Option<String>,
        end: BatchEnd<'_>,
    ) -> Result<Option<TenantFinish>, ActivityError> {
        let mut scope = reading.scope.clone();
        scope.next_cursor = Some(
            next_cursor
                .clone()
                .unwrap_or_else(|| ENUMERATION_COMPLETE.to_owned()),
        );
        let reconciling = std::time::Instant::now();
        let reconciled = async {
            match end {
                BatchEnd::EndsDeltaRound { delta_link } => {
                    let issued_at = Utc::now();
                    self.store
                        .reconcile_last_delta_page(
                            &scope,
                            &batch.entries,
                            settings,
                            delta_link.map(|link| (link, issued_at)),
                        )
                        .await
                }
                BatchEnd::Continues => self
                    .store
                    .reconcile_page(&scope, &batch.entries, settings, false)
                    .await
                    .map(|outcome| (outcome, None)),
            }
        };
        let outcome = with_heartbeats(reading.ctx, progress, false, reconciled)
            .await
            .ok_or_else(ActivityError::cancelled)?;
        let (outcome, finished) = outcome.map_err(from_store)?;
        record_step(STEP_PLAN, outcome.plan_time);
        record_step(
            STEP_DATABASE,
            reconciling.elapsed().saturating_sub(outcome.plan_time),
        );
        metrics::counter!("entra_sync_users_processed_total").increment(batch.entries.len() as u64);
        progress.pages += batch.pages;
        progress.next_cursor = next_cursor;
        // The committed cursor is in the tenant result; the heartbeat tells Temporal (and a
        // retry's log) how far the tenant got. After the last batch nothing is left to resume.
        if progress.next_cursor.is_some() {
            heartbeat(reading.ctx, progress).await;
        }
        Ok(finished)
    }
}

/// Whether a batch is the last of a delta round, which its transaction then ends.
#[derive(Clone, Copy)]
enum BatchEnd<'a> {
    /// More batches follow, or a full enumeration's end, which `finish_tenant_sync` records.
    Continues,
    /// The last batch of a delta round, with the round's new delta link if it gave one.
    EndsDeltaRound { delta_link: Option<&'a str> },
}

/// What a group of delta rounds shares ([`Activities::sync_delta_group`]).
struct DeltaGroup<'a> {
    ctx: &'a ActivityContext,
    tenant_id: Uuid,
    run_id: Uuid,
    source: &'a dyn DirectorySource,
}

/// A tenant of a delta group, leased and ready to read.
struct GroupCandidate<'a> {
    target: &'a SyncTarget,
    managed_tenant_id: Uuid,
    client_id: Uuid,
    start: &'a SyncStart,
    delta_link: &'a str,
}

/// The targets a delta group can take: each with its start, a fresh delta link (younger
/// than `DELTA_LINK_MAX_AGE_DAYS`) and no group filter, whose members a round would need read
/// first. The others sync on their own.
fn group_candidates<'a>(
    targets: &'a [SyncTarget],
    starts: &'a std::collections::BTreeMap<Uuid, SyncStart>,
) -> Vec<GroupCandidate<'a>> {
    targets
        .iter()
        .filter_map(|target| {
            let managed_tenant_id = Uuid::from_str(&target.managed_tenant_id).ok()?;
            let client_id = Uuid::from_str(&target.client_id).ok()?;
            let start = starts.get(&managed_tenant_id)?;
            let (delta_link, _) = start
                .delta_link
                .as_ref()
                .filter(|(_, issued_at)| delta_link_is_fresh(*issued_at))?;
            start
                .settings
                .filters
                .named_groups()
                .is_empty()
                .then_some(GroupCandidate {
                    target,
                    managed_tenant_id,
                    client_id,
                    start,
                    delta_link,
                })
        })
        .collect()
}

/// Reads the first page of a group candidate's delta round.
async fn read_round<'a>(
    source: &dyn DirectorySource,
    candidate: GroupCandidate<'a>,
) -> (GroupCandidate<'a>, Result<FetchedPage, DirectoryError>) {
    let mut pages = PageLoop::new(
        candidate.target.entra_tenant_id.clone(),
        true,
        Some(candidate.delta_link.to_owned()),
        None,
    );
    let fetched = pages.next_page(source).await;
    (candidate, fetched)
}

/// How many of a group's delta rounds are read at once.
const GROUP_READS: usize = 8;

impl Activities {
    /// Syncs the group's tenants whose delta round fits in one provider page together
    /// (`Store::reconcile_delta_group`): their leases and results are opened in one statement,
    /// their rounds read a few at a time, and those the store can take are reconciled and
    /// ended in one transaction. Returns the tenants that need nothing more: ended here
    /// (or by an earlier attempt), or failed on reading as `sync_tenant` would have failed
    /// them (handed back in `retry` when a retry can fix it). Every other tenant is left as it
    /// was or with its result opened, for `sync_tenant`'s path, which then reads its round
    /// again; whatever goes wrong here (a statement, a round of several pages) only sends the
    /// tenants there. Candidates: a fresh delta link and no group filter (whose members a
    /// round would need read first).
    async fn sync_delta_group(
        &self,
        group: &DeltaGroup<'_>,
        targets: &[SyncTarget],
        starts: &std::collections::BTreeMap<Uuid, SyncStart>,
        retry: &mut Vec<HandedBack>,
    ) -> HashSet<Uuid> {
        let mut ended = HashSet::new();
        let started = std::time::Instant::now();
        let candidates = self
            .open_group(group, group_candidates(targets, starts), &mut ended)
            .await;
        let Some(rounds) = self.read_rounds(group, candidates, retry, &mut ended).await else {
            return ended;
        };
        let reconciled = self.reconcile_rounds(group, &rounds, &mut ended).await;
        // Each tenant ended here is timed as its share of the group's time, so the
        // histogram's sum stays the time spent syncing tenants.
        let share = started.elapsed().as_secs_f64() / reconciled.max(1) as f64;
        for _ in 0..reconciled {
            metrics::histogram!("entra_sync_tenant_sync_seconds", "result" => "ok").record(share);
        }
        if reconciled > 0 {
            info!(tenants = reconciled, "delta group synced");
        }
        ended
    }

    /// Opens the candidates' leases and results in one statement and keeps those that start
    /// fresh in delta mode; a resumed or held tenant goes its own way, and one whose result
    /// an earlier attempt already ended goes in `ended`. Nothing for fewer than two.
    async fn open_group<'a>(
        &self,
        group: &DeltaGroup<'_>,
        mut candidates: Vec<GroupCandidate<'a>>,
        ended: &mut HashSet<Uuid>,
    ) -> Vec<GroupCandidate<'a>> {
        if candidates.len() < 2 || group.ctx.is_cancelled() {
            return Vec::new();
        }
        let ids: Vec<Uuid> = candidates.iter().map(|c| c.managed_tenant_id).collect();
        let leases = match self
            .store
            .take_leases_and_start(group.tenant_id, &ids, group.run_id, SyncMode::Delta)
            .await
        {
            Ok(leases) => leases,
            Err(error) => {
                warn!(%error, "could not open the delta group's tenants; each syncs on its own");
                return Vec::new();
            }
        };
        candidates.retain(|candidate| match leases.get(&candidate.managed_tenant_id) {
            Some(Some(LeasedStart::Started(result))) => {
                if result.status != TenantResultStatus::Running {
                    ended.insert(candidate.managed_tenant_id);
                    false
                } else {
                    result.mode == SyncMode::Delta && result.cursor.is_none()
                }
            }
            _ => false,
        });
        candidates
    }

    /// Reads the candidates' delta rounds a few at a time and returns those that fit in one
    /// page. A read that fails fails its tenant as `sync_tenant` would have (handed back in
    /// `retry` when a retry can fix it, and put in `ended`); a round of several pages (or a
    /// refused delta link) is left for the tenant's own path. None when there is nothing to
    /// read, and on a cancel.
    async fn read_rounds<'a>(
        &self,
        group: &DeltaGroup<'_>,
        candidates: Vec<GroupCandidate<'a>>,
        retry: &mut Vec<HandedBack>,
        ended: &mut HashSet<Uuid>,
    ) -> Option<Vec<(GroupCandidate<'a>, UsersPage)>> {
        if candidates.is_empty() {
            return None;
        }
        let reads: Vec<_> = candidates
            .into_iter()
            .map(|candidate| read_round(group.source, candidate))
            .collect();
        // Heartbeated like a tenant's own reads, which a `Retry-After` can make long; a
        // cancel abandons them, leaving the tenants for the activity's end.
        let reads = futures::stream::iter(reads)
            .buffer_unordered(GROUP_READS)
            .collect::<Vec<(GroupCandidate, Result<FetchedPage, DirectoryError>)>>();
        let reads = provider_read(group.ctx, &Progress::default(), reads).await?;
        let mut rounds = Vec::new();
        for (candidate, fetched) in reads {
            match fetched {
                Ok(fetched) if !fetched.restarted_full && fetched.page.is_last() => {
                    rounds.push((candidate, fetched.page));
                }
                // A round of several pages (or one refused) reads again on its own.
                Ok(_) => {}
                Err(error) => {
                    let managed_tenant_id = candidate.managed_tenant_id;
                    let failure = ATTEMPT
                        .scope(
                            group.ctx.info().attempt,
                            self.fail_tenant(
                                group.tenant_id,
                                group.run_id,
                                managed_tenant_id,
                                &error,
                            ),
                        )
                        .await;
                    if let Ok(back) = handed_back(failure, candidate.target.clone()) {
                        retry.extend(back);
                        ended.insert(managed_tenant_id);
                    }
                }
            }
        }
        Some(rounds)
    }

    /// Reconciles the rounds in one transaction (`Store::reconcile_delta_group`) and ends
    /// each tenant it took, putting it in `ended`; returns how many. A tenant left `Alone`,
    /// and every tenant when the transaction fails, is left for its own path.
    async fn reconcile_rounds(
        &self,
        group: &DeltaGroup<'_>,
        rounds: &[(GroupCandidate<'_>, UsersPage)],
        ended: &mut HashSet<Uuid>,
    ) -> usize {
        let reconciling = std::time::Instant::now();
        let issued_at = Utc::now();
        let members: Vec<GroupMember> = rounds
            .iter()
            .map(|(candidate, page)| GroupMember {
                managed_tenant_id: candidate.managed_tenant_id,
                mapped_client_id: candidate.client_id,
                entries: &page.entries,
                settings: &candidate.start.settings,
                delta_link: page.delta_link.as_deref().map(|link| (link, issued_at)),
            })
            .collect();
        // Once the transaction starts it runs to its end, as a batch's does.
        let reconciled = self.store.reconcile_delta_group(
            group.tenant_id,
            group.run_id,
            ENUMERATION_COMPLETE,
            &members,
        );
        let outcomes = match with_heartbeats(group.ctx, &Progress::default(), false, reconciled)
            .await
        {
            Some(Ok(outcomes)) => outcomes,
            Some(Err(error)) => {
                warn!(%error, "could not reconcile the delta group; each tenant syncs on its own");
                return 0;
            }
            None => return 0,
        };
        record_step(STEP_DATABASE, reconciling.elapsed());
        let mut reconciled = 0usize;
        for member in &members {
            let Some(GroupOutcome::Reconciled { finish, .. }) =
                outcomes.get(&member.managed_tenant_id)
            else {
                continue;
            };
            if finish.is_none() {
                // Something is pending: ended as `sync_tenant` ends such a tenant.
                let finished = self
                    .store
                    .finish_tenant_sync(
                        group.tenant_id,
                        group.run_id,
                        member.managed_tenant_id,
                        false,
                        member.delta_link,
                    )
                    .await;
                if let Err(error) = finished {
                    warn!(%error, managed_tenant_id = %member.managed_tenant_id, "could not end a tenant of the delta group; it syncs on its own");
                    continue;
                }
            }
            ended.insert(member.managed_tenant_id);
            reconciled += 1;
            metrics::counter!("entra_sync_users_processed_total")
                .increment(member.entries.len() as u64);
        }
        reconciled
    }
}

/// How a tenant's round of pages ended ([`Activities::read_all_batches`]).
#[derive(Default)]
struct RoundEnd {
    /// The new delta link, if the provider gave one.
    delta_link: Option<String>,
    /// The tenant's end, when the last batch's transaction already ended it.
    finished: Option<TenantFinish>,
}

/// What a group does with a tenant's failure: one a retry can fix is handed back for the
/// workflow to sync on its own, under the tenant retry policy, after the wait the failure
/// names; one that fails for good (its failure recorded) needs nothing more. Any other error
/// (a cancel) ends the group's activity.
fn handed_back(
    failure: ActivityError,
    target: SyncTarget,
) -> Result<Option<HandedBack>, ActivityError> {
    match failure {
        ActivityError::Application(failure) if failure.is_non_retryable() => Ok(None),
        ActivityError::Application(failure) => {
            let wait = failure.next_retry_delay().unwrap_or(HANDED_BACK_WAIT);
            Ok(Some(HandedBack {
                target,
                after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            }))
        }
        other => Err(other),
    }
}

/// The wait before a handed-back tenant syncs again when the provider named none: the first
/// interval of the tenant retry policy (`workflows::sync`), which `note_retry` also records.
const HANDED_BACK_WAIT: Duration = Duration::from_secs(2);

/// Whether a delta link issued at `issued_at` is still used: younger than
/// `DELTA_LINK_MAX_AGE_DAYS` (tokens last seven days, MICROSOFT.md §3).
fn delta_link_is_fresh(issued_at: chrono::DateTime<Utc>) -> bool {
    Utc::now() - issued_at < chrono::Duration::days(DELTA_LINK_MAX_AGE_DAYS)
}

/// `entra_sync_sync_step_seconds{step}`: where a tenant's sync spends its time. Together with
/// `entra_sync_tenant_sync_seconds` (the whole activity) and the SDK's schedule-to-start
/// latencies they say where a run's time goes; the rest of an activity is its bookkeeping
/// (settings, lease, inactivations, the tenant's result).
const STEP_SECONDS: &str = "entra_sync_sync_step_seconds";
/// Waiting for the provider's pages (Graph or CIPP), retries and `Retry-After` included.
const STEP_PROVIDER_READ: &str = "provider_read";
/// Planning a batch (pure computation).
const STEP_PLAN: &str = "plan";
/// A batch's page transaction less its planning: reads, writes and commit.
const STEP_DATABASE: &str = "database";
/// Before the first page: settings, the directory source, the delta link, the sync lease,
/// the tenant result and the named groups' members.
const STEP_PREPARE: &str = "prepare";
/// After the last page: the new delta link, the inactivations and the tenant's result.
const STEP_FINISH: &str = "finish";

fn record_step(step: &'static str, spent: Duration) {
    metrics::histogram!(STEP_SECONDS, "step" => step).record(spent.as_secs_f64());
}

/// A read from the provider, heartbeating and abandoned on a cancel ([`with_heartbeats`]); the
/// time it took, cancelled or not, is recorded as the provider-read step.
async fn provider_read<T>(
    ctx: &ActivityContext,
    progress: &Progress,
    read: impl Future<Output = T>,
) -> Option<T> {
    let started = std::time::Instant::now();
    let read = with_heartbeats(ctx, progress, true, read).await;
    record_step(STEP_PROVIDER_READ, started.elapsed());
    read
}

/// Runs `work` while heartbeating `progress` whenever the tenant's next heartbeat comes due
/// ([`NEXT_HEARTBEAT`]). With `cancellable`, returns None as soon as the activity is cancelled
/// (used for page fetches, harmless to abandon).
async fn with_heartbeats<T>(
    ctx: &ActivityContext,
    progress: &Progress,
    cancellable: bool,
    work: impl Future<Output = T>,
) -> Option<T> {
    let cancelled = async {
        if cancellable {
            ctx.cancelled().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    beating(work, cancelled, || heartbeat(ctx, progress)).await
}

/// Runs `work` to its end (or until `cancelled`, giving None), calling `beat` each time the
/// tenant's next heartbeat comes due; `beat` moves the next one on.
async fn beating<T, B: Future<Output = ()>>(
    work: impl Future<Output = T>,
    cancelled: impl Future<Output = ()>,
    mut beat: impl FnMut() -> B,
) -> Option<T> {
    tokio::pin!(work);
    tokio::pin!(cancelled);
    loop {
        tokio::select! {
            output = &mut work => return Some(output),
            () = &mut cancelled => return None,
            () = tokio::time::sleep_until(next_heartbeat()) => beat().await,
        }
    }
}

fn tenant_end(status: TenantResultStatus) -> TenantEnd {
    match status {
        TenantResultStatus::Completed | TenantResultStatus::Running => TenantEnd::Completed,
        TenantResultStatus::Failed => TenantEnd::Failed,
        TenantResultStatus::NeedsConfirmation => TenantEnd::NeedsConfirmation,
        TenantResultStatus::Cancelled => TenantEnd::Cancelled,
    }
}

#[cfg(test)]
mod heartbeat_tests {
    use super::*;

    /// How many beats `works` (run one after another in one tenant's sync, each as a call of
    /// `beating`) cause, on a paused clock.
    async fn beats_during(works: &[Duration]) -> usize {
        let beats = Cell::new(0);
        NEXT_HEARTBEAT
            .scope(
                Cell::new(tokio::time::Instant::now() + HEARTBEAT_EVERY),
                async {
                    for work in works {
                        beating(
                            tokio::time::sleep(*work),
                            std::future::pending(),
                            || async {
                                beats.set(beats.get() + 1);
                                heartbeat_sent();
                            },
                        )
                        .await;
                    }
                },
            )
            .await;
        beats.get()
    }

    #[tokio::test(start_paused = true)]
    async fn a_sync_shorter_than_the_interval_sends_no_heartbeat() {
        assert_eq!(beats_during(&[Duration::from_secs(1)]).await, 0);
        assert_eq!(
            beats_during(&[Duration::from_millis(900), Duration::from_millis(900)]).await,
            0
        );
    }

    /// The interval runs across calls: short calls that together last long still heartbeat
    /// every `HEARTBEAT_EVERY`, so a tenant read in many quick pages never reaches the
    /// heartbeat timeout.
    #[tokio::test(start_paused = true)]
    async fn the_interval_runs_across_calls() {
        let quick = Duration::from_millis(2_500);
        // Due at 3 s and 6 s; the calls end at 2.5, 5 and 7.5 s.
        assert_eq!(beats_during(&[quick, quick, quick]).await, 2);
        // Every 3 s of one long call: at 3, 6 and 9 s.
        assert_eq!(beats_during(&[Duration::from_secs(10)]).await, 3);
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;
    use entra_sync_domain::model::SyncSettings;

    fn target(number: u128) -> SyncTarget {
        SyncTarget {
            managed_tenant_id: Uuid::from_u128(number).to_string(),
            entra_tenant_id: format!("entra-{number}"),
            client_id: Uuid::from_u128(1_000 + number).to_string(),
            small: true,
            few_users: false,
        }
    }

    #[test]
    fn a_group_takes_the_tenants_with_a_fresh_link_and_no_group_filter() {
        let fresh = Utc::now() - chrono::Duration::days(1);
        let stale = Utc::now() - chrono::Duration::days(DELTA_LINK_MAX_AGE_DAYS + 1);
        let start = |issued_at: Option<chrono::DateTime<Utc>>, groups: &[&str]| {
            let mut settings = SyncSettings::default();
            settings.filters.exclude_groups = groups.iter().map(|g| (*g).to_owned()).collect();
            SyncStart {
                settings,
                delta_link: issued_at.map(|issued_at| ("https://link".to_owned(), issued_at)),
            }
        };
        let targets: Vec<SyncTarget> = (1..=5).map(target).collect();
        let starts: std::collections::BTreeMap<Uuid, SyncStart> = [
            (1, start(Some(fresh), &[])),
            (2, start(Some(stale), &[])),
            (3, start(None, &[])),
            (
                4,
                start(Some(fresh), &["a1b2c3d4-0000-0000-0000-000000000000"]),
            ),
            // 5 has no start: its read failed, and it reads its own.
        ]
        .into_iter()
        .map(|(number, start)| (Uuid::from_u128(number), start))
        .collect();
        let taken: Vec<Uuid> = group_candidates(&targets, &starts)
            .iter()
            .map(|candidate| candidate.managed_tenant_id)
            .collect();
        assert_eq!(taken, [Uuid::from_u128(1)]);
    }
}

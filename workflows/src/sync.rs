//! The sync workflow: one run over the managed tenants in its scope. Tenants sync as bounded
//! concurrent `sync_tenant` activities, each with its own retry policy, so one tenant's failure
//! leaves the others running; the run row is always finalized, also on failure and cancel.
//!
//! Concurrency is a sliding window of `max_parallel_tenants` lanes: each lane takes the next
//! target from a shared position as soon as its current tenant ends, so one slow tenant does
//! not hold back a whole chunk. Lanes are joined with the SDK's deterministic `join_all`, and
//! which lane takes which target depends only on activity completions recorded in history.

use std::cell::Cell;
use std::time::{Duration, SystemTime};

use temporalio_common::data_converters::TemporalDeserializable;
use temporalio_common::{ActivityDefinition, RetryPolicy};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    workflows::join_all, ActivityCancellationType, ActivityCloseTimeouts, ActivityExecutionError,
    ActivityOptions, LocalActivityOptions, RetryState, WorkflowCancellationToken, WorkflowContext,
    WorkflowResult,
};

use crate::contract::{
    FinishRunInput, FinishRunOutput, PrepareSyncInput, PrepareSyncOutput, RunEnd, SyncActivities,
    SyncRunInput, SyncTarget, SyncTenantInput, SyncTenantsInput, TenantEnd, TenantFailureInput,
    TenantsEndedInput,
};

/// Error type names (set by the activities from the error classification) that retrying cannot
/// fix: the connection must be reconnected, consent granted, or configuration changed.
pub const NON_RETRYABLE_ERROR_TYPES: [&str; 4] =
    ["reauth_required", "tenant_access", "config", "invalid"];

/// The longest a bookkeeping activity may take, all attempts and waits included: its retry
/// policy spends about ten minutes before this, so a store outage longer than that fails the
/// activity instead of holding the run open.
pub const BOOKKEEPING_MAX_DURATION: Duration = Duration::from_secs(15 * 60);

/// The longest one attempt of a bookkeeping activity may take.
const BOOKKEEPING_ATTEMPT: Duration = Duration::from_secs(60);

fn bookkeeping_retry() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .maximum_interval(Duration::from_secs(30))
        .maximum_attempts(20)
        .build()
}

/// Options for short bookkeeping activities (database only).
pub(crate) fn bookkeeping_options(
    cancellation: Option<WorkflowCancellationToken>,
) -> ActivityOptions {
    let mut options =
        ActivityOptions::with_close_timeouts(ActivityCloseTimeouts::ScheduleAndStartToClose {
            schedule_to_close: BOOKKEEPING_MAX_DURATION,
            start_to_close: BOOKKEEPING_ATTEMPT,
        })
        .retry_policy(bookkeeping_retry())
        .build();
    options.cancellation_token = cancellation;
    options
}

/// The patch under which a sync run's own bookkeeping, the first `prepare_sync` and
/// `finish_run`, runs as local activities: inside the workflow task that schedules them, so
/// each costs the run no activity task and no workflow task of its own (about 20 ms of the
/// run's fixed part each on the dev server). Histories recorded before it replay as they ran.
pub const LOCAL_BOOKKEEPING: &str = "local-bookkeeping";

/// Options for a bookkeeping activity run locally: the same bounds and retries as
/// [`bookkeeping_options`] (a retry wait above the SDK's threshold becomes a workflow timer).
fn local_bookkeeping_options(
    cancellation: Option<WorkflowCancellationToken>,
) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .retry_policy(bookkeeping_retry())
        .schedule_to_close_timeout(BOOKKEEPING_MAX_DURATION)
        .start_to_close_timeout(BOOKKEEPING_ATTEMPT)
        .maybe_cancellation_token(cancellation)
        .build()
}

/// Runs one of the sync run's own bookkeeping activities: locally under [`LOCAL_BOOKKEEPING`],
/// as an ordinary activity in a history recorded before it.
async fn run_bookkeeping<W, AD>(
    ctx: &WorkflowContext<W>,
    activity: AD,
    input: AD::Input,
    cancellation: Option<WorkflowCancellationToken>,
) -> Result<AD::Output, ActivityExecutionError>
where
    AD: ActivityDefinition,
    AD::Output: TemporalDeserializable,
{
    execute_placed(
        ctx,
        activity,
        input,
        ctx.patched(LOCAL_BOOKKEEPING),
        local_bookkeeping_options(cancellation.clone()),
        bookkeeping_options(cancellation),
    )
    .await
}

/// Runs `activity` locally under `local_options` when `local`, otherwise as an activity task
/// under `options`.
async fn execute_placed<W, AD>(
    ctx: &WorkflowContext<W>,
    activity: AD,
    input: AD::Input,
    local: bool,
    local_options: LocalActivityOptions,
    options: ActivityOptions,
) -> Result<AD::Output, ActivityExecutionError>
where
    AD: ActivityDefinition,
    AD::Output: TemporalDeserializable,
{
    if local {
        ctx.execute_local_activity(activity, input, local_options)
            .await
    } else {
        ctx.execute_activity(activity, input, options).await
    }
}

/// How long a `sync_tenant` attempt may go without a heartbeat before Temporal declares its
/// worker gone and retries it elsewhere. The activity heartbeats every few seconds while a page
/// is fetched or written, so this bounds how long a crashed worker delays its tenant.
pub const TENANT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest one tenant's sync may take, every attempt and every wait between them included
/// (schedule-to-close): a tenant still retrying after this fails with the timeout as its cause,
/// so no run stays `running` past it whatever the provider's `Retry-After` says.
pub const TENANT_SYNC_MAX_DURATION: Duration = Duration::from_secs(6 * 60 * 60);

/// Attempts of one tenant's sync. Every lost worker costs an attempt, so this is generous;
/// errors classified as non-retryable stop at the first attempt regardless.
pub const TENANT_MAX_ATTEMPTS: u32 = 10;

/// Options for one tenant's sync: long, heartbeating (the heartbeat carries the page cursor so a
/// retry resumes where the last attempt stopped), retried with backoff unless the error class
/// says retrying is pointless, and bounded by `max_duration` for all attempts together.
/// Cancellation waits for the activity to acknowledge, so nothing writes to a run after it was
/// finalized as cancelled.
fn tenant_sync_options(max_duration: Duration) -> ActivityOptions {
    ActivityOptions::with_schedule_to_close_timeout(max_duration)
        .heartbeat_timeout(TENANT_HEARTBEAT_TIMEOUT)
        .cancellation_type(ActivityCancellationType::WaitCancellationCompleted)
        .retry_policy(tenant_retry())
        .build()
}

/// Retries with backoff unless the error class says retrying is pointless.
fn tenant_retry() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_secs(2))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(120))
        .maximum_attempts(TENANT_MAX_ATTEMPTS)
        .non_retryable_error_types(NON_RETRYABLE_ERROR_TYPES)
        .build()
}

/// The patch under which small tenants (`SyncTarget::small`: a fresh delta link, so one short
/// delta round) sync as local activities, `sync_tenant` and `sync_tenants` alike: inside the
/// workflow task that schedules them, with the same retries, bounds and cancellation as an
/// activity task. A run of small tenants then costs no activity task, and no workflow task
/// between its tenants and its end: the workflow goes on as soon as the worker has run them
/// (with `prepare_sync` and `finish_run`, a run of one history is one workflow task). A local
/// activity sends no heartbeats; a worker lost in one is noticed by the workflow task's
/// timeout instead, and the activity runs again on another worker, resuming from the cursor its
/// tenant saved. Histories recorded before it replay as they ran.
pub const LOCAL_SMALL_TENANTS: &str = "local-small-tenants";

/// Whether the small tenants among `targets` sync as local activities ([`LOCAL_SMALL_TENANTS`]).
/// Asked only when there are some, so a run without small tenants records no patch.
pub(crate) fn local_small_tenants<W>(ctx: &WorkflowContext<W>, targets: &[SyncTarget]) -> bool {
    targets.iter().any(|target| target.small) && ctx.patched(LOCAL_SMALL_TENANTS)
}

/// [`tenant_sync_options`] for a local activity: the same retry policy, the same bound for all
/// attempts together (also each attempt's), and the same wait for a cancel to be acknowledged.
fn local_tenant_sync_options(max_duration: Duration) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .retry_policy(tenant_retry())
        .schedule_to_close_timeout(max_duration)
        .start_to_close_timeout(max_duration)
        .cancel_type(ActivityCancellationType::WaitCancellationCompleted)
        .build()
}

/// Runs a tenant activity: locally when `local` ([`LOCAL_SMALL_TENANTS`]), otherwise as an
/// activity task under [`tenant_sync_options`].
async fn run_tenant_activity<W, AD>(
    ctx: &WorkflowContext<W>,
    local: bool,
    activity: AD,
    input: AD::Input,
    budget: Duration,
) -> Result<AD::Output, ActivityExecutionError>
where
    AD: ActivityDefinition,
    AD::Output: TemporalDeserializable,
{
    execute_placed(
        ctx,
        activity,
        input,
        local,
        local_tenant_sync_options(budget),
        tenant_sync_options(budget),
    )
    .await
}

#[workflow]
#[derive(Default)]
pub struct SyncWorkflow;

#[workflow_methods]
impl SyncWorkflow {
    #[run(name = "entra_sync_run")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: SyncRunInput,
    ) -> WorkflowResult<RunEnd> {
        let first_page = PrepareSyncInput {
            tenant_id: input.tenant_id.clone(),
            run_id: input.run_id.clone(),
            after: None,
        };
        let prepared = run_bookkeeping(ctx, SyncActivities::prepare_sync, first_page, None).await;
        let (targets, limit) = match prepared {
            // More targets than one page: each page runs as a child workflow (batch.rs).
            Ok(prepared) if prepared.more => {
                let limit = TimeLimit::from_prepared(ctx, &prepared);
                return crate::batch::run_in_batches(ctx, &input, prepared.targets, limit).await;
            }
            Ok(prepared) => {
                let limit = TimeLimit::from_prepared(ctx, &prepared);
                (prepared.targets, limit)
            }
            Err(error) => {
                let forced = if ctx.cancellation_token().is_cancelled() {
                    RunEnd::Cancelled
                } else {
                    RunEnd::Failed
                };
                return finish(ctx, &input, Some(forced), Some(describe(&error))).await;
            }
        };

        let run = RunContext::new(
            &input,
            &targets,
            input.max_parallel_tenants,
            SmallGroups::of(ctx),
            local_small_tenants(ctx, &targets),
            limit,
        );
        join_all((0..run.window()).map(|_| lane(ctx, &run))).await;

        // Tenants the run had no time left to start fail with the limit as their cause.
        if let Some(limit) = limit.filter(|_| !ctx.cancellation_token().is_cancelled()) {
            for target in run.not_started() {
                record_failure(
                    ctx,
                    &input,
                    target.managed_tenant_id.clone(),
                    TenantEnd::Failed,
                    NOT_STARTED.to_owned(),
                    Some(limit.seconds),
                )
                .await;
            }
        }

        let forced = ctx
            .cancellation_token()
            .is_cancelled()
            .then_some(RunEnd::Cancelled);
        finish(ctx, &input, forced, None).await
    }
}

/// The message of a tenant ended by the run's cancellation.
pub(crate) const CANCELLED: &str = "the run was cancelled";

/// The message a tenant that never started gets when the run's time ran out.
pub(crate) const NOT_STARTED: &str = "it had not started";

/// The run's time limit (`PrepareSyncOutput::max_run_seconds`) as a workflow-time deadline.
#[derive(Clone, Copy)]
pub(crate) struct TimeLimit {
    pub(crate) seconds: u64,
    pub(crate) deadline: SystemTime,
}

impl TimeLimit {
    fn from_prepared<W>(ctx: &WorkflowContext<W>, prepared: &PrepareSyncOutput) -> Option<Self> {
        prepared.max_run_seconds.and_then(|seconds| {
            let deadline = ctx.workflow_time()? + Duration::from_secs(seconds);
            Some(TimeLimit { seconds, deadline })
        })
    }

    /// What is left of the run's time at workflow time `now`; `None` once it is (almost) up.
    pub(crate) fn left<W>(&self, ctx: &WorkflowContext<W>) -> Option<Duration> {
        let now = ctx.workflow_time()?;
        let left = self.deadline.duration_since(now).ok()?;
        (left >= Duration::from_secs(1)).then_some(left)
    }
}

/// The most small tenants one `sync_tenants` activity syncs in a history recorded before
/// [`LARGER_SMALL_GROUPS`] ([`SmallGroups::EvenlyShared`]).
pub const MAX_SMALL_TENANTS_PER_ACTIVITY: usize = 25;

/// The patch under which small tenants are cut into fewer, larger groups
/// ([`SmallGroups::Larger`]): a `sync_tenants` activity reconciles and ends the one-page
/// delta rounds of its small tenants together, in one transaction, so a group costs about
/// what one tenant did, and each group saved is an activity task and a workflow task the run
/// does not pay. Histories recorded before it replay with the groups they had.
pub const LARGER_SMALL_GROUPS: &str = "larger-small-groups";

/// Under [`LARGER_SMALL_GROUPS`], the fewest small tenants a group holds (all of them when
/// there are fewer) and the most.
pub const MIN_SMALL_TENANTS_PER_GROUP: usize = 50;
pub const MAX_SMALL_TENANTS_PER_GROUP: usize = 100;

/// How [`plan_work`] cuts the small tenants into groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SmallGroups {
    /// Shared evenly between the lanes, at most [`MAX_SMALL_TENANTS_PER_ACTIVITY`] a group
    /// (histories recorded before [`LARGER_SMALL_GROUPS`]).
    EvenlyShared,
    /// Shared evenly between the lanes, but at least [`MIN_SMALL_TENANTS_PER_GROUP`] and at
    /// most [`MAX_SMALL_TENANTS_PER_GROUP`] a group: fewer lanes busy, fewer activities.
    Larger,
}

impl SmallGroups {
    /// The groups of a workflow that reaches this point now: [`SmallGroups::Larger`], unless
    /// its history was recorded before [`LARGER_SMALL_GROUPS`].
    pub(crate) fn of<W>(ctx: &WorkflowContext<W>) -> SmallGroups {
        if ctx.patched(LARGER_SMALL_GROUPS) {
            SmallGroups::Larger
        } else {
            SmallGroups::EvenlyShared
        }
    }

    /// The size of each group of `small` tenants over `lanes` lanes.
    fn size(self, small: usize, lanes: usize) -> usize {
        let even = small.div_ceil(lanes);
        match self {
            SmallGroups::EvenlyShared => even.clamp(1, MAX_SMALL_TENANTS_PER_ACTIVITY),
            SmallGroups::Larger => {
                even.clamp(MIN_SMALL_TENANTS_PER_GROUP, MAX_SMALL_TENANTS_PER_GROUP)
            }
        }
    }
}

/// How many groups of tenants with few users (`SyncTarget::few_users`) each lane should have
/// ahead of it when the next group is cut ([`plan_work`]).
pub const FEW_USERS_GROUPS_PER_LANE: usize = 2;

/// Tenants with few users are grouped only when there are more than this many per lane: with
/// fewer, the activity round trips saved are few and each tenant keeps its own activity.
pub const FEW_USERS_GROUPED_FROM_PER_LANE: usize = 8;

/// What the lanes take, in order, as indexes into the targets: each tenant that is neither
/// small nor has few users on its own (in the targets' order, so a run of such tenants takes
/// them exactly as before groups existed); then those with few users (`SyncTarget::few_users`);
/// then the small ones (`SyncTarget::small`) in groups sized so that the lanes share them
/// evenly. No group holds more than [`MAX_SMALL_TENANTS_PER_ACTIVITY`]; a group of one is an
/// ordinary `sync_tenant`. Targets of older histories are neither, so they plan as they did.
///
/// Tenants with few users are grouped when there are more than
/// [`FEW_USERS_GROUPED_FROM_PER_LANE`] per lane. Their real sizes are not known (on a first
/// sync, none of them), so their groups shrink as the list drains (guided self-scheduling):
/// each group takes the remaining tenants divided by [`FEW_USERS_GROUPS_PER_LANE`] groups per
/// lane, so the first groups save most activity round trips while the last ones are single
/// tenants, and a lane that drew a large tenant is made up for by the others taking more of
/// the small ones.
pub(crate) fn plan_work(
    targets: &[SyncTarget],
    lanes: usize,
    small_groups: SmallGroups,
) -> Vec<Vec<usize>> {
    let lanes = lanes.max(1);
    let (small, rest): (Vec<usize>, Vec<usize>) =
        (0..targets.len()).partition(|&index| targets[index].small);
    let (few_users, single): (Vec<usize>, Vec<usize>) = rest
        .into_iter()
        .partition(|&index| targets[index].few_users);
    let mut work: Vec<Vec<usize>> = single.into_iter().map(|index| vec![index]).collect();
    let mut left = few_users.as_slice();
    let grouped = left.len() > lanes * FEW_USERS_GROUPED_FROM_PER_LANE;
    while !left.is_empty() {
        let size = if grouped {
            left.len()
                .div_ceil(lanes * FEW_USERS_GROUPS_PER_LANE)
                .clamp(1, MAX_SMALL_TENANTS_PER_ACTIVITY)
        } else {
            1
        };
        let (group, rest) = left.split_at(size);
        work.push(group.to_vec());
        left = rest;
    }
    if !small.is_empty() {
        let size = small_groups.size(small.len(), lanes);
        work.extend(small.chunks(size).map(<[usize]>::to_vec));
    }
    work
}

/// What the lanes of one run (or of one batch of a run) share.
pub(crate) struct RunContext<'a> {
    pub(crate) input: &'a SyncRunInput,
    pub(crate) targets: &'a [SyncTarget],
    /// [`plan_work`] of the targets.
    work: Vec<Vec<usize>>,
    /// The next item of `work` no lane has taken.
    next_work: Cell<usize>,
    lanes: usize,
    pub(crate) limit: Option<TimeLimit>,
    /// Small tenants sync as local activities ([`LOCAL_SMALL_TENANTS`]).
    local_small: bool,
}

impl<'a> RunContext<'a> {
    pub(crate) fn new(
        input: &'a SyncRunInput,
        targets: &'a [SyncTarget],
        lanes: u32,
        small_groups: SmallGroups,
        local_small: bool,
        limit: Option<TimeLimit>,
    ) -> Self {
        let lanes = lanes.max(1) as usize;
        RunContext {
            input,
            targets,
            work: plan_work(targets, lanes, small_groups),
            next_work: Cell::new(0),
            lanes,
            limit,
            local_small,
        }
    }

    /// How many lanes to run: no more than there is work.
    pub(crate) fn window(&self) -> usize {
        self.lanes.min(self.work.len())
    }

    /// The targets of the work no lane took (the run was cancelled or its time ran out).
    pub(crate) fn not_started(&self) -> Vec<SyncTarget> {
        self.work
            .iter()
            .skip(self.next_work.get())
            .flatten()
            .map(|&index| self.targets[index].clone())
            .collect()
    }
}

impl RunContext<'_> {
    /// How long the next tenant's sync may take: the per-tenant bound, shortened to what is
    /// left of the run's time (workflow time, so replay computes the same); `None` once the
    /// run's time is up.
    fn tenant_budget<W>(&self, ctx: &WorkflowContext<W>) -> Option<Duration> {
        let Some(limit) = self.limit else {
            return Some(TENANT_SYNC_MAX_DURATION);
        };
        Some(limit.left(ctx)?.min(TENANT_SYNC_MAX_DURATION))
    }
}

/// One lane of the window: syncs targets one after another, each time taking the next one
/// nobody has taken, until none are left, the run is cancelled or its time is up.
pub(crate) async fn lane<W>(ctx: &WorkflowContext<W>, run: &RunContext<'_>) {
    loop {
        if ctx.cancellation_token().is_cancelled() {
            return;
        }
        let Some(budget) = run.tenant_budget(ctx) else {
            return;
        };
        let index = run.next_work.get();
        let Some(work) = run.work.get(index) else {
            return;
        };
        run.next_work.set(index + 1);
        match work.as_slice() {
            [one] => sync_one(ctx, run, run.targets[*one].clone(), budget).await,
            several => {
                let targets = several
                    .iter()
                    .map(|&index| run.targets[index].clone())
                    .collect();
                sync_several(ctx, run, targets, budget).await;
            }
        }
    }
}

/// Syncs several small tenants in one `sync_tenants` activity (same options as one tenant's).
/// A tenant it hands back, because it failed in a way a retry can fix, syncs again on its own
/// with the tenant retry policy; if the activity itself fails for good, every one of its
/// tenants does (one that already ended returns at once).
async fn sync_several<W>(
    ctx: &WorkflowContext<W>,
    run: &RunContext<'_>,
    targets: Vec<SyncTarget>,
    budget: Duration,
) {
    let input = run.input;
    // Every tenant of a group is small.
    let outcome = run_tenant_activity(
        ctx,
        run.local_small,
        SyncActivities::sync_tenants,
        SyncTenantsInput {
            tenant_id: input.tenant_id.clone(),
            run_id: input.run_id.clone(),
            targets: targets.clone(),
        },
        budget,
    )
    .await;
    let again: Vec<(SyncTarget, Duration)> = match outcome {
        Ok(output) => output
            .retry
            .into_iter()
            .map(|handed| (handed.target, Duration::from_millis(handed.after_ms)))
            .collect(),
        Err(ActivityExecutionError::Cancelled(_)) => {
            record_ended(ctx, input, &targets, TenantEnd::Cancelled, CANCELLED, None).await;
            return;
        }
        // Temporal already waited between the group's attempts.
        Err(_) => targets
            .into_iter()
            .map(|target| (target, Duration::ZERO))
            .collect(),
    };
    for (target, wait) in again {
        if !wait.is_zero() && !ctx.cancellation_token().is_cancelled() {
            // The provider's `Retry-After` (or the retry policy's interval) is honoured before
            // the tenant is asked again; a cancel ends the wait.
            let _ = ctx.timer(wait).await;
        }
        if ctx.cancellation_token().is_cancelled() {
            let one = std::slice::from_ref(&target);
            record_ended(ctx, input, one, TenantEnd::Cancelled, CANCELLED, None).await;
            continue;
        }
        match run.tenant_budget(ctx) {
            Some(budget) => sync_one(ctx, run, target, budget).await,
            None => {
                let seconds = run.limit.map(|limit| limit.seconds);
                let one = std::slice::from_ref(&target);
                record_ended(ctx, input, one, TenantEnd::Failed, NOT_STARTED, seconds).await;
            }
        }
    }
}

/// Records tenants of the run as ended in one `record_tenants_ended` activity (a tenant whose
/// result already ended keeps it). Detached from the workflow's cancellation so a cancelled
/// run still records them.
pub(crate) async fn record_ended<W>(
    ctx: &WorkflowContext<W>,
    input: &SyncRunInput,
    targets: &[SyncTarget],
    status: TenantEnd,
    message: &str,
    time_limit_seconds: Option<u64>,
) {
    if targets.is_empty() {
        return;
    }
    let _ = ctx
        .execute_activity(
            SyncActivities::record_tenants_ended,
            TenantsEndedInput {
                tenant_id: input.tenant_id.clone(),
                run_id: input.run_id.clone(),
                managed_tenant_ids: targets
                    .iter()
                    .map(|target| target.managed_tenant_id.clone())
                    .collect(),
                status,
                message: message.to_owned(),
                time_limit_seconds,
            },
            bookkeeping_options(Some(WorkflowCancellationToken::new())),
        )
        .await;
}

/// Syncs one tenant; on final failure records why in the tenant result. Never fails the run.
async fn sync_one<W>(
    ctx: &WorkflowContext<W>,
    run: &RunContext<'_>,
    target: SyncTarget,
    budget: Duration,
) {
    let input = run.input;
    let managed_tenant_id = target.managed_tenant_id.clone();
    let local = target.small && run.local_small;
    let outcome = run_tenant_activity(
        ctx,
        local,
        SyncActivities::sync_tenant,
        SyncTenantInput {
            tenant_id: input.tenant_id.clone(),
            run_id: input.run_id.clone(),
            target,
        },
        budget,
    )
    .await;
    let (status, message, time_limit) = match outcome {
        Ok(_) => return,
        Err(ActivityExecutionError::Cancelled(_)) => {
            (TenantEnd::Cancelled, CANCELLED.to_owned(), None)
        }
        // Temporal gave up because the schedule-to-close bound was reached (or the next retry
        // would pass it): the tenant ran out of time, whatever its last attempt's error was.
        Err(ActivityExecutionError::Failed(failure))
            if failure.retry_state() == RetryState::Timeout =>
        {
            let seconds = run
                .limit
                .map_or(TENANT_SYNC_MAX_DURATION.as_secs(), |limit| limit.seconds);
            let error = ActivityExecutionError::Failed(failure);
            (TenantEnd::Failed, describe(&error), Some(seconds))
        }
        Err(error) => (TenantEnd::Failed, describe(&error), None),
    };
    record_failure(ctx, input, managed_tenant_id, status, message, time_limit).await;
}

/// Records a tenant's final failure. Detached from the workflow's cancellation so a cancelled
/// run still records the tenant.
async fn record_failure<W>(
    ctx: &WorkflowContext<W>,
    input: &SyncRunInput,
    managed_tenant_id: String,
    status: TenantEnd,
    message: String,
    time_limit_seconds: Option<u64>,
) {
    let _ = ctx
        .execute_activity(
            SyncActivities::record_tenant_failure,
            TenantFailureInput {
                tenant_id: input.tenant_id.clone(),
                run_id: input.run_id.clone(),
                managed_tenant_id,
                status,
                message,
                time_limit_seconds,
            },
            bookkeeping_options(Some(WorkflowCancellationToken::new())),
        )
        .await;
}

pub(crate) async fn finish<W>(
    ctx: &WorkflowContext<W>,
    input: &SyncRunInput,
    forced: Option<RunEnd>,
    message: Option<String>,
) -> WorkflowResult<RunEnd> {
    let finishing = FinishRunInput {
        tenant_id: input.tenant_id.clone(),
        run_id: input.run_id.clone(),
        forced,
        message,
    };
    // Detached from the run's cancellation, so a cancelled run is still finalized.
    let cancellation = Some(WorkflowCancellationToken::new());
    let FinishRunOutput { status } =
        run_bookkeeping(ctx, SyncActivities::finish_run, finishing, cancellation).await?;
    Ok(status)
}

/// The message of an activity failure without the SDK's wrapping; activities build their
/// messages from classified errors, which carry no secrets.
pub(crate) fn describe(error: &ActivityExecutionError) -> String {
    let mut message = error
        .failure()
        .and_then(|failure| failure.cause.as_ref().map(|cause| cause.message.clone()))
        .or_else(|| error.failure().map(|failure| failure.message.clone()))
        .unwrap_or_else(|| error.to_string());
    message.truncate(2000);
    message
}

#[cfg(test)]
mod tests {
    use super::{
        plan_work, SmallGroups, MAX_SMALL_TENANTS_PER_ACTIVITY, MAX_SMALL_TENANTS_PER_GROUP,
        MIN_SMALL_TENANTS_PER_GROUP,
    };
    use crate::contract::SyncTarget;

    fn targets(small: &[bool]) -> Vec<SyncTarget> {
        small
            .iter()
            .enumerate()
            .map(|(index, &small)| SyncTarget {
                managed_tenant_id: format!("mt-{index}"),
                entra_tenant_id: format!("entra-{index}"),
                client_id: format!("client-{index}"),
                small,
                few_users: false,
            })
            .collect()
    }

    fn with_few_users(mut targets: Vec<SyncTarget>, few_users: &[usize]) -> Vec<SyncTarget> {
        for index in few_users {
            targets[*index].few_users = true;
        }
        targets
    }

    #[test]
    fn groups_of_tenants_with_few_users_shrink_to_single_tenants() {
        // A batch of 250 tenants on a first sync over sixteen lanes.
        let all: Vec<usize> = (0..250).collect();
        let work = plan_work(
            &with_few_users(targets(&[false; 250]), &all),
            16,
            SmallGroups::EvenlyShared,
        );
        let sizes: Vec<usize> = work.iter().map(Vec::len).collect();
        assert_eq!(sizes.first(), Some(&8), "{sizes:?}");
        assert!(sizes.windows(2).all(|pair| pair[0] >= pair[1]), "{sizes:?}");
        assert!(
            sizes.iter().rev().take(16).all(|size| *size == 1),
            "{sizes:?}"
        );
        assert!(
            work.len() < 125,
            "{} activities for 250 tenants",
            work.len()
        );
        let planned: Vec<usize> = work.iter().flatten().copied().collect();
        assert_eq!(planned, all, "every tenant once, in order");
        // Few of them for the lanes: each on its own, as before groups existed.
        let work = plan_work(
            &with_few_users(targets(&[false; 8]), &[0, 1, 2, 3]),
            2,
            SmallGroups::EvenlyShared,
        );
        assert_eq!(
            work,
            vec![
                vec![4],
                vec![5],
                vec![6],
                vec![7],
                vec![0],
                vec![1],
                vec![2],
                vec![3]
            ]
        );
        // After the tenants with many users, before the small ones; small wins over few users.
        let mut marks = vec![false; 12];
        marks[0] = true;
        marks[3] = true;
        let few: Vec<usize> = (4..12).chain([0, 1]).collect();
        let mixed = with_few_users(targets(&marks), &few);
        assert_eq!(
            plan_work(&mixed, 1, SmallGroups::EvenlyShared),
            vec![
                vec![2],
                vec![1, 4, 5, 6, 7],
                vec![8, 9],
                vec![10],
                vec![11],
                vec![0, 3]
            ]
        );
    }

    #[test]
    fn a_target_of_an_older_history_has_neither_mark() {
        let old: SyncTarget = serde_json::from_str(
            r#"{"managed_tenant_id":"m","entra_tenant_id":"e","client_id":"c"}"#,
        )
        .expect("an older target parses");
        assert!(!old.small && !old.few_users);
        let marked = with_few_users(targets(&[false]), &[0]);
        let json = serde_json::to_string(&targets(&[false])).expect("serializes");
        assert!(
            !json.contains("few_users"),
            "an unmarked target is written as before: {json}"
        );
        assert!(serde_json::to_string(&marked)
            .expect("serializes")
            .contains("\"few_users\":true"));
    }

    #[test]
    fn tenants_that_are_not_small_each_take_a_lane_in_order() {
        assert_eq!(
            plan_work(&targets(&[false; 5]), 2, SmallGroups::EvenlyShared),
            vec![vec![0], vec![1], vec![2], vec![3], vec![4]]
        );
        assert!(plan_work(&[], 4, SmallGroups::EvenlyShared).is_empty());
    }

    #[test]
    fn small_tenants_are_shared_evenly_between_the_lanes_after_the_others() {
        let mixed = targets(&[true, false, true, true, false, true, true]);
        assert_eq!(
            plan_work(&mixed, 2, SmallGroups::EvenlyShared),
            vec![vec![1], vec![4], vec![0, 2, 3], vec![5, 6]]
        );
        // As many lanes as small tenants: each syncs on its own.
        assert_eq!(
            plan_work(&targets(&[true; 3]), 16, SmallGroups::EvenlyShared),
            vec![vec![0], vec![1], vec![2]]
        );
        // Two hundred small tenants over sixteen lanes: sixteen groups of at most 13.
        let work = plan_work(&targets(&[true; 200]), 16, SmallGroups::EvenlyShared);
        assert_eq!(work.len(), 16);
        assert!(work.iter().all(|group| group.len() <= 13));
        assert_eq!(work.iter().map(Vec::len).sum::<usize>(), 200);
        // One lane: groups stop at the cap.
        let work = plan_work(&targets(&[true; 60]), 1, SmallGroups::EvenlyShared);
        assert_eq!(
            work.iter().map(Vec::len).collect::<Vec<_>>(),
            [
                MAX_SMALL_TENANTS_PER_ACTIVITY,
                MAX_SMALL_TENANTS_PER_ACTIVITY,
                10
            ]
        );
    }

    #[test]
    fn under_the_patch_small_tenants_go_in_fewer_larger_groups() {
        let larger = SmallGroups::Larger;
        // Two hundred small tenants over sixteen lanes: four groups of fifty, not sixteen.
        let work = plan_work(&targets(&[true; 200]), 16, larger);
        assert_eq!(
            work.iter().map(Vec::len).collect::<Vec<_>>(),
            [MIN_SMALL_TENANTS_PER_GROUP; 4]
        );
        let planned: Vec<usize> = work.iter().flatten().copied().collect();
        assert_eq!(
            planned,
            (0..200).collect::<Vec<_>>(),
            "every tenant once, in order"
        );
        // Fewer than the least a group holds: all in one.
        assert_eq!(
            plan_work(&targets(&[true; 3]), 16, larger),
            vec![vec![0, 1, 2]]
        );
        // Many: shared evenly between the lanes, up to the most a group holds.
        let work = plan_work(&targets(&[true; 1_000]), 16, larger);
        assert_eq!(work.len(), 16);
        assert!(work.iter().all(|group| group.len() <= 63), "{work:?}");
        let work = plan_work(&targets(&[true; 2_000]), 4, larger);
        assert!(
            work.iter()
                .all(|group| group.len() == MAX_SMALL_TENANTS_PER_GROUP),
            "{:?}",
            work.iter().map(Vec::len).collect::<Vec<_>>()
        );
        // The others are planned as before.
        let mixed = targets(&[true, false, true]);
        assert_eq!(plan_work(&mixed, 2, larger), vec![vec![1], vec![0, 2]]);
    }
}

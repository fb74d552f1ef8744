//! The activity contract: names, inputs and outputs of every activity the workflows call.
//! The activities crate implements these definitions (checked at compile time through
//! `#[activity(definition = …)]`), so this crate needs none of the I/O dependencies.

use serde::{Deserialize, Serialize};
use temporalio_macros::activity_definitions;
use temporalio_sdk::activities::ActivityError;

/// The current version of every input type below; a workflow started with an older version is
/// still decoded because new fields carry defaults.
pub const CONTRACT_VERSION: u32 = 1;

/// Input of [`crate::SyncWorkflow`]: the run row already exists (created by the starter, which
/// also deduplicates), so the workflow only needs to find it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRunInput {
    pub version: u32,
    pub tenant_id: String,
    pub run_id: String,
    /// At most this many managed tenants sync at once.
    pub max_parallel_tenants: u32,
}

/// Input of [`crate::DiscoveryWorkflow`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryRunInput {
    pub version: u32,
    pub tenant_id: String,
    pub run_id: String,
}

/// What a run ended as; mirrors the `runs.status` values that are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    Completed,
    Partial,
    Failed,
    Cancelled,
}

/// Input of the `prepare_sync` activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareSyncInput {
    pub tenant_id: String,
    pub run_id: String,
    /// Asks for the page of targets after this managed tenant id (the targets' order); absent
    /// for the first page, so a first call looks exactly as before pages existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// One managed tenant a sync run covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncTarget {
    pub managed_tenant_id: String,
    pub entra_tenant_id: String,
    pub client_id: String,
    /// Expected to read few users: a direct connection's tenant with a fresh delta link, whose
    /// round lists only what changed. Such tenants sync several to one `sync_tenants`
    /// activity, so a run in which little changed costs few activity round trips. Absent
    /// (false) in older histories, whose tenants each had their own activity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub small: bool,
    /// Likely quick to sync though read in full: at most a thousand of its users are linked
    /// (none yet, on a first sync). Such tenants also sync several to one `sync_tenants`
    /// activity, in groups small enough that the lanes stay evenly busy whatever their real
    /// sizes (`plan_work`). Absent (false) in older histories.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub few_users: bool,
}

/// Output of `prepare_sync`: the managed tenants in scope, in a stable order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareSyncOutput {
    pub targets: Vec<SyncTarget>,
    /// The longest the run may take, from the worker's configuration
    /// (`ENTRA_SYNC__WORKER__MAX_RUN_SECONDS`). Absent in runs started before it existed,
    /// which keep only the per-tenant bound.
    #[serde(default)]
    pub max_run_seconds: Option<u64>,
    /// True when more targets follow this page (ask again with `after` set to the last
    /// target's id). A run whose first page is all its targets runs its tenants in its own
    /// history; a run of more targets runs each page as a [`crate::SyncBatchWorkflow`] child,
    /// so no history grows with the number of tenants. Absent (false) in older histories.
    #[serde(default)]
    pub more: bool,
}

/// Input of the `sync_tenant` activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncTenantInput {
    pub tenant_id: String,
    pub run_id: String,
    pub target: SyncTarget,
}

/// How one managed tenant's sync ended, as the activity recorded it in its tenant result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantEnd {
    Completed,
    Failed,
    NeedsConfirmation,
    Cancelled,
}

/// Output of `sync_tenant`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncTenantOutput {
    pub status: TenantEnd,
}

/// Input of the `sync_tenants` activity: several small tenants of one run, synced one after
/// another exactly as `sync_tenant` syncs each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncTenantsInput {
    pub tenant_id: String,
    pub run_id: String,
    pub targets: Vec<SyncTarget>,
}

/// Output of `sync_tenants`. Every target it does not return has ended (completed, or failed
/// for good with the failure recorded); a target that failed in a way a retry can fix is
/// returned, and the workflow syncs it again on its own under the tenant retry policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncTenantsOutput {
    pub retry: Vec<HandedBack>,
}

/// A tenant `sync_tenants` hands back, and how long to wait before syncing it again: the
/// provider's `Retry-After` (already capped) when it gave one, else the tenant retry policy's
/// first interval — what Temporal would have waited before retrying it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedBack {
    pub target: SyncTarget,
    pub after_ms: u64,
}

/// Input of `record_tenant_failure`, used when `sync_tenant` failed for good (retries spent or
/// a non-retryable error) so the tenant result still says why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantFailureInput {
    pub tenant_id: String,
    pub run_id: String,
    pub managed_tenant_id: String,
    /// `cancelled` or `failed`.
    pub status: TenantEnd,
    pub message: String,
    /// Set when the tenant failed because the run's time ran out (its sync timed out, or it
    /// never started before the run's deadline): the limit that was reached, in seconds.
    #[serde(default)]
    pub time_limit_seconds: Option<u64>,
}

/// Input of `record_tenants_ended`: several tenants of one run that ended without (or before)
/// their `sync_tenant` — not started when the run was cancelled or ran out of time, or in a
/// batch whose child workflow failed. Each is recorded exactly as `record_tenant_failure`
/// would; a tenant whose result already ended keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantsEndedInput {
    pub tenant_id: String,
    pub run_id: String,
    pub managed_tenant_ids: Vec<String>,
    /// `cancelled` or `failed`.
    pub status: TenantEnd,
    pub message: String,
    #[serde(default)]
    pub time_limit_seconds: Option<u64>,
}

/// Input of [`crate::SyncBatchWorkflow`]: one page of a run's targets, synced in `lanes`
/// concurrent lanes under the run's deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncBatchInput {
    pub version: u32,
    pub tenant_id: String,
    pub run_id: String,
    pub targets: Vec<SyncTarget>,
    /// At most this many of the batch's tenants sync at once.
    pub lanes: u32,
    /// The run's time limit, when it has one.
    #[serde(default)]
    pub time_limit: Option<BatchTimeLimit>,
}

/// The run's maximum duration as the parent computed it: the limit in seconds and the
/// workflow-time deadline (milliseconds since the Unix epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchTimeLimit {
    pub seconds: u64,
    pub deadline_unix_ms: u64,
}

/// Output of [`crate::SyncBatchWorkflow`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncBatchOutput {
    /// Targets whose `sync_tenant` was started.
    pub started: u32,
    /// Targets recorded as not started (cancelled, or out of time).
    pub not_started: u32,
}

/// Input of `finish_run`. `outcome` is what the workflow knows (cancelled, or failed before any
/// tenant ran); otherwise the activity derives the final status from the tenant results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishRunInput {
    pub tenant_id: String,
    pub run_id: String,
    pub forced: Option<RunEnd>,
    pub message: Option<String>,
}

/// Output of `finish_run`: the status written to the run row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishRunOutput {
    pub status: RunEnd,
}

/// Input of `discover_tenants`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoverInput {
    pub tenant_id: String,
    pub run_id: String,
}

/// Output of `discover_tenants`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoverOutput {
    pub found: u32,
    pub missing: u32,
}

/// Input of [`crate::ScheduledSyncWorkflow`], stored in the PSA tenant's Temporal Schedule.
/// The schedule carries no run row: the workflow opens (or deduplicates) its runs itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledSyncInput {
    pub version: u32,
    pub tenant_id: String,
}

/// Output of [`crate::ScheduledSyncWorkflow`]: which runs it opened and how they ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledSyncOutput {
    /// The discovery run, when the settings ask for discovery before each scheduled sync.
    #[serde(default)]
    pub discovery_run_id: Option<String>,
    /// The sync run, or the run of the same scope that was already running.
    pub sync_run_id: String,
    /// True when a sync of the same scope was already running: nothing new was started.
    pub deduplicated: bool,
    /// How the sync run ended; None when deduplicated.
    #[serde(default)]
    pub status: Option<RunEnd>,
}

/// Input of `load_schedule_settings`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSettingsInput {
    pub tenant_id: String,
}

/// Output of `load_schedule_settings`: what a scheduled sync reads at the time it fires, so a
/// settings change applies to the next firing without touching the schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSettingsOutput {
    pub discovery_before_sync: bool,
    /// The worker's configured bound on concurrently syncing managed tenants.
    pub max_parallel_tenants: u32,
}

/// Which kind of run a scheduled workflow opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKindName {
    Discovery,
    Sync,
}

impl RunKindName {
    /// The `runs.kind` value, also the kind part of [`crate::workflow_id_for_run`].
    pub fn as_str(self) -> &'static str {
        match self {
            RunKindName::Discovery => "discovery",
            RunKindName::Sync => "sync",
        }
    }
}

/// Input of `open_scheduled_run`: a run of `kind`, trigger `scheduled`, scope all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenScheduledRunInput {
    pub tenant_id: String,
    pub kind: RunKindName,
}

/// Output of `open_scheduled_run`. When `deduplicated`, `run_id` is the run of the same scope
/// that was already running and the caller starts nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenScheduledRunOutput {
    pub run_id: String,
    pub deduplicated: bool,
}

/// The activity names, as registered by the worker; a test in the activities crate checks that
/// every definition here is implemented under the same name.
pub const ACTIVITY_NAMES: [&str; 9] = [
    "prepare_sync",
    "sync_tenant",
    "sync_tenants",
    "record_tenant_failure",
    "record_tenants_ended",
    "finish_run",
    "discover_tenants",
    "load_schedule_settings",
    "open_scheduled_run",
];

/// Declarations of the activities; the bodies live in the activities crate.
pub struct SyncActivities;

#[activity_definitions]
impl SyncActivities {
    #[activity(name = "prepare_sync")]
    pub fn prepare_sync(input: PrepareSyncInput) -> Result<PrepareSyncOutput, ActivityError> {
        unimplemented!()
    }

    #[activity(name = "sync_tenant")]
    pub fn sync_tenant(input: SyncTenantInput) -> Result<SyncTenantOutput, ActivityError> {
        unimplemented!()
    }

    #[activity(name = "sync_tenants")]
    pub fn sync_tenants(input: SyncTenantsInput) -> Result<SyncTenantsOutput, ActivityError> {
        unimplemented!()
    }

    #[activity(name = "record_tenant_failure")]
    pub fn record_tenant_failure(input: TenantFailureInput) -> Result<(), ActivityError> {
        unimplemented!()
    }

    #[activity(name = "record_tenants_ended")]
    pub fn record_tenants_ended(input: TenantsEndedInput) -> Result<(), ActivityError> {
        unimplemented!()
    }

    #[activity(name = "finish_run")]
    pub fn finish_run(input: FinishRunInput) -> Result<FinishRunOutput, ActivityError> {
        unimplemented!()
    }

    #[activity(name = "discover_tenants")]
    pub fn discover_tenants(input: DiscoverInput) -> Result<DiscoverOutput, ActivityError> {
        unimplemented!()
    }

    #[activity(name = "load_schedule_settings")]
    pub fn load_schedule_settings(
        input: ScheduleSettingsInput,
    ) -> Result<ScheduleSettingsOutput, ActivityError> {
        unimplemented!()
    }

    #[activity(name = "open_scheduled_run")]
    pub fn open_scheduled_run(
        input: OpenScheduledRunInput,
    ) -> Result<OpenScheduledRunOutput, ActivityError> {
        unimplemented!()
    }
}

/// The activity marker types, named for implementers' `#[activity(definition = …)]`.
pub use sync_activities::{
    DiscoverTenants, FinishRun, LoadScheduleSettings, OpenScheduledRun, PrepareSync,
    RecordTenantFailure, RecordTenantsEnded, SyncTenant, SyncTenants,
};

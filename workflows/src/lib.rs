//! Deterministic Temporal workflow definitions for entra-sync and the versioned input and output
//! types they exchange with activities and starters. These types live in Temporal history, so
//! they are a wire contract: fields may be added (with `#[serde(default)]`), never renamed.
//!
//! Workflows here do no I/O and use no clock, randomness, `tokio::spawn`/`sleep` or `HashMap`
//! iteration; everything with a side effect happens in an activity named in [`contract`].

mod batch;
pub mod contract;
mod discovery;
mod scheduled;
mod sync;
pub mod trace;

pub use batch::{batch_workflow_id, SyncBatchWorkflow};
pub use discovery::DiscoveryWorkflow;
pub use scheduled::ScheduledSyncWorkflow;
pub use sync::{SyncWorkflow, NON_RETRYABLE_ERROR_TYPES, TENANT_HEARTBEAT_TIMEOUT};

/// The workflow id of a run: one workflow per run row, so a run id names its workflow.
pub fn workflow_id_for_run(kind: &str, tenant_id: &str, run_id: &str) -> String {
    format!("entra-{kind}-{tenant_id}-{run_id}")
}

/// The id of a PSA tenant's one recurring-sync Temporal Schedule.
pub fn schedule_id_for_tenant(tenant_id: &str) -> String {
    format!("{SCHEDULE_ID_PREFIX}{tenant_id}")
}

/// Every schedule id this service owns starts with this, so start-up reconciliation can list
/// them without touching anyone else's schedules.
pub const SCHEDULE_ID_PREFIX: &str = "entra-sync-schedule-";

/// The workflow id prefix of a schedule's firings (the server appends the firing time).
pub fn scheduled_workflow_id_prefix(tenant_id: &str) -> String {
    format!("entra-scheduled-sync-{tenant_id}")
}

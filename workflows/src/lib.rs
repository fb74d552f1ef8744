//! Deterministic Temporal workflow definitions for entra-sync and the versioned input and output
//! types they exchange with activities and starters. These types live in Temporal history, so
//! they are a wire contract: fields may be added (with `#[serde(default)]`), never renamed.
//!
//! Workflows here do no I/O and use no clock, randomness, `tokio::spawn`/`sleep` or `HashMap`
//! iteration; everything with a side effect happens in an activity named in [`contract`].

pub mod contract;
mod discovery;
mod sync;

pub use discovery::DiscoveryWorkflow;
pub use sync::SyncWorkflow;

/// The workflow id of a run: one workflow per run row, so a run id names its workflow.
pub fn workflow_id_for_run(kind: &str, tenant_id: &str, run_id: &str) -> String {
    format!("entra-{kind}-{tenant_id}-{run_id}")
}

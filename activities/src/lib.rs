//! Temporal activities of entra-sync: each fetches from a directory (Graph or CIPP), calls the
//! pure domain planner through the store, applies the result in one transaction per page, and
//! heartbeats its cursor so a retry resumes where the last attempt stopped.
//!
//! Every activity implements a definition from `entra_sync_workflows::contract`, so names and
//! types are checked against what the workflows call at compile time.

//!
//! How a stored connection becomes a directory source, the page loop and the error record live
//! in `entra_sync_connection`, shared with the API.

mod errors;
mod sync;
mod trace;

pub use sync::{Activities, DEFAULT_BATCH_TENANTS, DEFAULT_BATCH_USERS, DEFAULT_MAX_RUN};
pub use trace::TraceContextInterceptor;

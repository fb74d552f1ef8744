//! End-to-end tests of entra-sync on the real stack: a real Postgres, a real Temporal server,
//! the simulator over real HTTP, the API and a worker in this process. Each test gets its own
//! database, task queue and ports.

mod batches;
mod browser;
mod chaos;
mod cli;
mod console;
mod crash;
mod direct;
mod failures;
mod group_filters;
mod harness;
mod initial_sync;
mod integrity;
mod key_rotation;
mod ops_metrics;
mod outbound_policy;
mod processes;
mod run_lifecycle;
mod schedules;
mod secret_logs;
mod serve_process;
mod shutdown;
mod traces;
mod two_workers;
mod workflow_support;

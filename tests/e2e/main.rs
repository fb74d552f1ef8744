//! End-to-end tests of entra-sync on the real stack: a real Postgres, a real Temporal server,
//! the simulator over real HTTP, the API and a worker in this process. Each test gets its own
//! database, task queue and ports.

mod chaos;
mod cli;
mod crash;
mod direct;
mod group_filters;
mod harness;
mod initial_sync;
mod integrity;
mod run_lifecycle;
mod schedules;
mod two_workers;
mod workflow_support;

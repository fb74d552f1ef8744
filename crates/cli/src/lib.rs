//! The `entra-sync` binary's library: configuration, and the thin wiring that turns
//! configuration into a running API server, Temporal worker or demo. Kept as a library so the
//! end-to-end tests run exactly what the binary runs.

pub mod api_client;
pub mod config;
pub mod demo;
pub mod doctor;
pub mod env_files;
pub mod ops;
pub mod runtime;
pub mod telemetry;

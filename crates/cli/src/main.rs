//! `entra-sync`: one binary with a subcommand per role (API server, Temporal worker,
//! migrations, the demo). Thin: loads configuration, sets up logging, and calls the library.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use entra_sync::config::Settings;
use entra_sync::runtime;

#[derive(Parser)]
#[command(
    name = "entra-sync",
    version,
    about = "Keeps PSA contacts in step with Microsoft Entra ID"
)]
struct Cli {
    /// A TOML file overriding the built-in defaults.
    #[arg(long, global = true, env = "ENTRA_SYNC_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    api: entra_sync::ops::ApiArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API on ENTRA_SYNC_LISTEN.
    Serve,
    /// Run a Temporal worker for the sync and discovery workflows.
    Worker,
    /// Apply the database migrations.
    Migrate,
    /// Re-seal every stored secret under ENTRA_SYNC_ENCRYPTION_KEY, so the keys in
    /// ENTRA_SYNC_PREVIOUS_ENCRYPTION_KEYS can be removed afterwards.
    Rekey,
    /// Drive the demo scenario through the running API and print a per-tenant summary.
    Demo(entra_sync::demo::DemoArgs),
    /// Check configuration, secrets, Postgres, Temporal and connections; print fixes.
    Doctor,
    #[command(flatten)]
    Ops(entra_sync::ops::OpsCommand),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging();
    let environment: Vec<(String, String)> = std::env::vars().collect();
    let settings = Settings::load(cli.config.as_deref(), &environment)?;
    match cli.command {
        Command::Migrate => {
            let store = runtime::connect_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            tracing::info!("migrations applied");
        }
        Command::Rekey => {
            let store = runtime::connect_store(&settings).await?;
            let report = store.rekey().await.context("re-sealing stored secrets")?;
            println!(
                "rekey: {} connection(s) re-sealed under the current key, {} already under it, {} pending OAuth state(s) re-sealed",
                report.connections_resealed,
                report.connections_current,
                report.oauth_states_resealed
            );
        }
        Command::Serve => {
            let store = runtime::connect_store(&settings).await?;
            let state = runtime::api_state(&settings, store).await?;
            let listener = tokio::net::TcpListener::bind(&settings.api.listen)
                .await
                .with_context(|| format!("binding ENTRA_SYNC_LISTEN {}", settings.api.listen))?;
            tracing::info!(listen = %settings.api.listen, "API listening");
            let metrics = entra_sync::telemetry::recorder()?;
            let metrics = entra_sync::telemetry::metrics_router(metrics, Some(state.store.clone()));
            runtime::serve(state, Some(metrics), listener, shutdown_signal()).await?;
        }
        Command::Worker => {
            let store = runtime::connect_store(&settings).await?;
            let metrics = entra_sync::telemetry::recorder()?;
            if let Some(listen) = settings
                .worker
                .metrics_listen
                .clone()
                .filter(|listen| !listen.is_empty())
            {
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("binding the worker's metrics listener {listen}"))?;
                let router = entra_sync::telemetry::metrics_router(metrics, None);
                tokio::spawn(async move { axum::serve(listener, router).await });
            }
            runtime::run_worker(&settings, store, shutdown_signal()).await?;
        }
        Command::Demo(args) => {
            entra_sync::demo::run(&args, &cli.api.api_url).await?;
        }
        Command::Doctor => {
            let findings = entra_sync::doctor::run_checks(&settings).await;
            print!("{}", entra_sync::doctor::render(&findings));
            if findings
                .iter()
                .any(|finding| finding.severity == entra_sync::doctor::Severity::Error)
            {
                std::process::exit(1);
            }
        }
        Command::Ops(command) => {
            entra_sync::ops::run(&cli.api, &command).await?;
        }
    }
    Ok(())
}

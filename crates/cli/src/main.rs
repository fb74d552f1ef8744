//! `entra-sync`: one binary with a subcommand per role (API server, Temporal worker,
//! migrations, the demo). Thin: loads configuration, sets up logging, and calls the library.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use entra_sync::config::Settings;
use entra_sync::runtime;
use entra_sync::telemetry::{self, LogFormat};

/// How often the API process re-reads the database gauges.
const GAUGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

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
    /// Exit 0 when this container's `/healthz` answers (for a container HEALTHCHECK: the
    /// runtime image has no curl). Asks the metrics listener when one is configured, else the
    /// API's.
    Healthcheck {
        /// The URL to ask instead.
        #[arg(long)]
        url: Option<String>,
    },
    #[command(flatten)]
    Ops(entra_sync::ops::OpsCommand),
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
async fn main() {
    let cli = Cli::parse();
    let format = match LogFormat::parse(std::env::var("ENTRA_SYNC_LOG_FORMAT").ok().as_deref()) {
        Ok(format) => format,
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::exit(2);
        }
    };
    // Traces (OTEL_EXPORTER_OTLP_ENDPOINT) from the long-running roles only.
    let service = match &cli.command {
        Command::Serve => Some("entra-sync-api"),
        Command::Worker => Some("entra-sync-worker"),
        _ => None,
    };
    let telemetry = match service {
        Some(service) => match telemetry::init_telemetry(format, service) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("Error: {error:#}");
                std::process::exit(2);
            }
        },
        None => {
            telemetry::init_logging(format);
            telemetry::Telemetry::default()
        }
    };
    let outcome = run(cli).await;
    if let Err(error) = &outcome {
        // Through the log subscriber, so a JSON log stays one object per line to the end.
        tracing::error!(error = %format!("{error:#}"), "entra-sync stopped with an error");
    }
    // After a graceful shutdown (SIGTERM) too: the spans still queued are exported first.
    telemetry.shutdown();
    if outcome.is_err() {
        std::process::exit(1);
    }
}

/// The `*_FILE` variables resolved (secrets mounted as files), then the settings.
fn load_settings(cli: &Cli) -> Result<Settings> {
    let environment = entra_sync::env_files::resolve(std::env::vars().collect())?;
    Settings::load(cli.config.as_deref(), &environment)
}

/// The operations listener's address from the settings: `metrics.listen`, or for a worker the
/// older `worker.metrics_listen`.
fn ops_listen(settings: &Settings) -> Option<String> {
    settings
        .metrics
        .listen
        .clone()
        .or_else(|| settings.worker.metrics_listen.clone())
        .filter(|listen| !listen.is_empty())
}

async fn healthcheck(settings: &Settings, url: Option<String>) -> Result<()> {
    let url = url.unwrap_or_else(|| {
        let listen = ops_listen(settings).unwrap_or_else(|| settings.api.listen.clone());
        // A wildcard listen address is reached on loopback from inside the container.
        let listen = listen
            .replace("0.0.0.0:", "127.0.0.1:")
            .replace("[::]:", "[::1]:");
        format!("http://{listen}/healthz")
    });
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(4))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("asking {url}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let settings = load_settings(&cli)?;
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
            let metrics = telemetry::recorder()?;
            // The API process keeps the database gauges (runs, review backlog) current; every
            // API replica reports the same values, so aggregate them with max().
            tokio::spawn(telemetry::refresh_database_gauges_every(
                state.store.clone(),
                GAUGE_REFRESH,
            ));
            if let Some(listen) = ops_listen(&settings) {
                let router = telemetry::ops_router(metrics, Some(state.store.clone()), None);
                telemetry::spawn_ops_listener(&listen, router).await?;
            }
            runtime::serve(state, None, listener, shutdown_signal()).await?;
        }
        Command::Worker => {
            let store = runtime::connect_store(&settings).await?;
            let metrics = telemetry::recorder()?;
            let sdk = std::sync::Arc::new(telemetry::SdkMetrics::start()?);
            if let Some(listen) = ops_listen(&settings) {
                let router = telemetry::ops_router(metrics, Some(store.clone()), Some(sdk.clone()));
                telemetry::spawn_ops_listener(&listen, router).await?;
            }
            runtime::run_worker_metered(
                &settings,
                store,
                runtime::WorkerTuning::default(),
                Some(sdk.meter.clone()),
                shutdown_signal(),
            )
            .await?;
        }
        Command::Healthcheck { url } => {
            healthcheck(&settings, url).await?;
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

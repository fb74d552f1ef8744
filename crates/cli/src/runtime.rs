//! Building the long-lived parts from configuration: the store, the Temporal client, the
//! worker, and the API server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use entra_sync_activities::{DirectoryFactory, DirectorySettings, SyncActivities};
use entra_sync_api::{ApiConfig, AppState, MicrosoftConfig, TemporalStarter};
use entra_sync_directory::http::HttpSettings;
use entra_sync_secrets::{
    AppCredentialResolver, DirectoryProvider, EnvironmentProvider, SecretProvider, VaultConfig,
    VaultProvider,
};
use entra_sync_store::Store;
use entra_sync_workflows::{DiscoveryWorkflow, SyncWorkflow};
use secrecy::SecretString;
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tracing::info;
use url::Url;

use crate::config::{Settings, TemporalSettings};

/// Connects to Postgres with the configured encryption key (when one is set).
pub async fn connect_store(settings: &Settings) -> Result<Store> {
    let store = Store::connect(&settings.database.url)
        .await
        .context("connecting to Postgres (DATABASE_URL)")?;
    Ok(match settings.encryption_key {
        Some(_) => store.with_encryption_key(settings.encryption_key()?),
        None => store,
    })
}

/// Connects a Temporal client to `TEMPORAL_ADDRESS` in `TEMPORAL_NAMESPACE`.
pub async fn connect_temporal(temporal: &TemporalSettings) -> Result<Client> {
    let target = if temporal.address.contains("://") {
        temporal.address.clone()
    } else {
        format!("http://{}", temporal.address)
    };
    let target = Url::parse(&target).context("TEMPORAL_ADDRESS is not host:port")?;
    let connection = Connection::connect(
        ConnectionOptions::new(target)
            .identity(format!("entra-sync@{}", std::process::id()))
            .connect_timeout(Duration::from_secs(10))
            .build(),
    )
    .await
    .with_context(|| format!("connecting to Temporal at {}", temporal.address))?;
    Client::new(
        connection,
        ClientOptions::new(temporal.namespace.clone()).build(),
    )
    .context("creating the Temporal client")
}

fn parse_url(value: &str, name: &str) -> Result<Url> {
    Url::parse(value).with_context(|| format!("{name} is not a URL"))
}

pub fn directory_settings(settings: &Settings) -> Result<DirectorySettings> {
    let microsoft = &settings.microsoft;
    Ok(DirectorySettings {
        login_base_url: parse_url(&microsoft.login_base_url, "MICROSOFT_LOGIN_BASE_URL")?,
        graph_base_url: parse_url(&microsoft.graph_base_url, "MICROSOFT_GRAPH_BASE_URL")?,
        http: HttpSettings::default(),
        app_registrations: Some(Arc::new(app_registrations(settings)?)),
        redirect_uri: microsoft.oauth_callback_url.clone(),
    })
}

/// The app-registration resolution of SPEC §2.1 over the configured secret providers: the
/// PSA tenant's secrets, then the environment (`MICROSOFT_*`, as loaded into the settings),
/// then the application's secrets.
pub fn app_registrations(settings: &Settings) -> Result<AppCredentialResolver> {
    use secrecy::ExposeSecret;
    let mut providers: Vec<Arc<dyn SecretProvider>> = Vec::new();
    if let Some(directory) = &settings.secrets.directory {
        providers.push(Arc::new(DirectoryProvider::new(directory)));
    }
    if let Some(address) = &settings.secrets.vault_address {
        let token = settings
            .secrets
            .vault_token
            .clone()
            .context("a Vault address is set but no token (VAULT_TOKEN)")?;
        providers.push(Arc::new(
            VaultProvider::new(VaultConfig {
                address: parse_url(address, "VAULT_ADDR")?,
                token,
                mount: settings
                    .secrets
                    .vault_mount
                    .clone()
                    .unwrap_or_else(|| "secret".to_owned()),
                prefix: settings
                    .secrets
                    .vault_prefix
                    .clone()
                    .unwrap_or_else(|| "entra-sync".to_owned()),
                cache_ttl: Duration::from_secs(60),
                request_timeout: Duration::from_secs(10),
            })
            .context("building the Vault client")?,
        ));
    }
    let microsoft = &settings.microsoft;
    let secret = |value: &Option<SecretString>| {
        value
            .as_ref()
            .map(|value| value.expose_secret().to_owned())
            .unwrap_or_default()
    };
    let plain = |value: &Option<String>| value.clone().unwrap_or_default();
    let pairs = [
        ("MICROSOFT_CLIENT_ID", plain(&microsoft.client_id)),
        ("MICROSOFT_CLIENT_SECRET", secret(&microsoft.client_secret)),
        ("MICROSOFT_TENANT_ID", plain(&microsoft.tenant_id)),
        (
            "MICROSOFT_CLIENT_CERTIFICATE",
            secret(&microsoft.client_certificate),
        ),
        (
            "MICROSOFT_CLIENT_CERTIFICATE_KEY",
            secret(&microsoft.client_certificate_key),
        ),
        (
            "MICROSOFT_FEDERATED_TOKEN_FILE",
            plain(&microsoft.federated_token_file),
        ),
    ];
    let environment =
        EnvironmentProvider::from_pairs(pairs.iter().map(|(name, value)| (*name, value.as_str())));
    Ok(AppCredentialResolver::new(providers, environment))
}

/// Runs a Temporal worker for the sync and discovery workflows until `shutdown` completes,
/// then lets in-flight tasks finish. The worker future is not `Send`, so this runs on the
/// caller's task.
pub async fn run_worker(
    settings: &Settings,
    store: Store,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let runtime =
        Runtime::from_current_tokio(Default::default()).context("starting the Temporal runtime")?;
    let client = connect_temporal(&settings.temporal).await?;
    let activities =
        SyncActivities::new(store, DirectoryFactory::new(directory_settings(settings)?));
    let options = WorkerOptions::new(settings.temporal.task_queue.clone())
        .register_activities(activities)
        .register_workflow::<SyncWorkflow>()
        .context("registering the sync workflow")?
        .register_workflow::<DiscoveryWorkflow>()
        .context("registering the discovery workflow")?
        .build();
    let mut worker =
        Worker::new(&runtime, client, options).context("creating the Temporal worker")?;
    let stop = worker.shutdown_handle();
    info!(task_queue = %settings.temporal.task_queue, "worker started");
    let run = worker.run();
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => return result.context("the worker stopped"),
        _ = shutdown => stop(),
    }
    run.await.context("the worker stopped while shutting down")
}

/// The API's state from configuration.
pub async fn api_state(settings: &Settings, store: Store) -> Result<AppState> {
    let client = connect_temporal(&settings.temporal).await?;
    let master_key = settings
        .api
        .master_key
        .clone()
        .context("ENTRA_SYNC_MASTER_KEY is not set; the platform endpoints need it")?;
    let mut config = ApiConfig::new(master_key);
    config.max_parallel_tenants = settings.sync.max_parallel_tenants;
    config.microsoft = MicrosoftConfig {
        login_base_url: parse_url(
            &settings.microsoft.login_base_url,
            "MICROSOFT_LOGIN_BASE_URL",
        )?,
        graph_base_url: parse_url(
            &settings.microsoft.graph_base_url,
            "MICROSOFT_GRAPH_BASE_URL",
        )?,
        client_id: settings.microsoft.client_id.clone(),
        client_secret: settings.microsoft.client_secret.clone(),
        callback_url: settings.microsoft.oauth_callback_url.clone(),
    };
    Ok(AppState::new(
        store,
        Arc::new(TemporalStarter::new(
            client,
            settings.temporal.task_queue.clone(),
        )),
        config,
    ))
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let router = entra_sync_api::router(state);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the API server stopped")
}

/// A random-looking secret is never needed here; kept so callers can name the type.
pub type Secret = SecretString;

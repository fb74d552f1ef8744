//! The test stack: a fresh database on the server named by `DATABASE_URL`, the Temporal server
//! at `TEMPORAL_ADDRESS`, a simulator, the API on an ephemeral port, and a worker on a task
//! queue of the test's own. `Stack::run` drives a scenario while the worker runs beside it.

use std::future::Future;

use anyhow::{Context, Result};
use entra_sync::config::Settings;
use entra_sync::runtime;
use entra_sync_simulator::{Simulator, SimulatorConfig};
use entra_sync_store::Store;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

pub struct Stack {
    pub simulator: Simulator,
    pub settings: Settings,
    pub store: Store,
    pub pool: PgPool,
    pub api_url: String,
    pub master_key: String,
    /// The environment the settings were loaded from, for worker processes of this stack.
    pub environment: Vec<(String, String)>,
}

fn required(name: &str) -> Result<String> {
    std::env::var(name)
        .with_context(|| format!("{name} must be set; run the tests through `make test`"))
}

fn random_name(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

impl Stack {
    pub async fn start(simulator: SimulatorConfig) -> Result<Stack> {
        Stack::start_with(simulator, |_| Vec::new()).await
    }

    /// Like `start`, with extra environment variables made from the running simulator (for
    /// example the direct connection's app registration and callback URL).
    pub async fn start_with(
        simulator: SimulatorConfig,
        extra_environment: impl FnOnce(&Simulator) -> Vec<(String, String)>,
    ) -> Result<Stack> {
        Stack::start_with_api(simulator, |simulator, _| extra_environment(simulator)).await
    }

    /// Like `start_with`; the closure also gets the API's base URL (known before the
    /// configuration is loaded, for a callback URL that must point at this API).
    pub async fn start_with_api(
        simulator: SimulatorConfig,
        extra_environment: impl FnOnce(&Simulator, &str) -> Vec<(String, String)>,
    ) -> Result<Stack> {
        Stack::start_on_with_api(
            simulator,
            &required("DATABASE_URL")?,
            &required("TEMPORAL_ADDRESS")?,
            extra_environment,
        )
        .await
    }

    /// Like `start_with`, on the Postgres server at `server_url` and the Temporal server at
    /// `temporal_address` (a test that restarts a server gets a private one, so no other test
    /// is disturbed).
    pub async fn start_on(
        simulator: SimulatorConfig,
        server_url: &str,
        temporal_address: &str,
        extra_environment: impl FnOnce(&Simulator) -> Vec<(String, String)>,
    ) -> Result<Stack> {
        Stack::start_on_with_api(simulator, server_url, temporal_address, |simulator, _| {
            extra_environment(simulator)
        })
        .await
    }

    async fn start_on_with_api(
        simulator: SimulatorConfig,
        server_url: &str,
        temporal_address: &str,
        extra_environment: impl FnOnce(&Simulator, &str) -> Vec<(String, String)>,
    ) -> Result<Stack> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api_url = format!("http://{}", listener.local_addr()?);
        let server_url = server_url.to_owned();
        let temporal_address = temporal_address.to_owned();
        let database = random_name("e2e");
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&server_url)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&admin)
            .await?;
        admin.close().await;
        let database_url = match server_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{database}"),
            None => anyhow::bail!("DATABASE_URL has no database name"),
        };

        let simulator = Simulator::start(simulator).await?;
        let master_key = random_name("master");
        let defaults: Vec<(String, String)> = [
            ("DATABASE_URL", database_url.clone()),
            ("TEMPORAL_ADDRESS", temporal_address),
            ("TEMPORAL_TASK_QUEUE", random_name("queue")),
            ("ENTRA_SYNC_MASTER_KEY", master_key.clone()),
            (
                "ENTRA_SYNC_ENCRYPTION_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned(),
            ),
            ("MICROSOFT_LOGIN_BASE_URL", simulator.login_base_url()),
            ("MICROSOFT_GRAPH_BASE_URL", simulator.graph_base_url()),
            // The simulator's CIPP listens on loopback.
            ("ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS", "true".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        // A variable the test names replaces the default of the same name (for example
        // `ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS=false` for the outbound policy's own test).
        let extra = extra_environment(&simulator, &api_url);
        let mut environment: Vec<(String, String)> = defaults
            .into_iter()
            .filter(|(name, _)| !extra.iter().any(|(other, _)| other == name))
            .collect();
        environment.extend(extra);
        let settings = Settings::load(None, &environment)?;
        let store = runtime::connect_store(&settings).await?;
        store.migrate().await?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&database_url)
            .await?;

        let state = runtime::api_state(&settings, store.clone()).await?;
        tokio::spawn(runtime::serve(
            state,
            None,
            listener,
            std::future::pending(),
        ));

        Ok(Stack {
            simulator,
            settings,
            store,
            pool,
            api_url,
            master_key,
            environment,
        })
    }

    /// Runs `scenario` while a worker serves this stack's task queue, then stops the worker.
    pub async fn run<T>(&self, scenario: impl Future<Output = Result<T>>) -> Result<T> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = runtime::run_worker(&self.settings, self.store.clone(), async {
            let _ = stopped.await;
        });
        tokio::pin!(worker);
        tokio::pin!(scenario);
        let outcome = tokio::select! {
            result = &mut worker => {
                result?;
                anyhow::bail!("the worker stopped before the scenario finished");
            }
            outcome = &mut scenario => outcome,
        };
        let _ = stop.send(());
        worker.await?;
        outcome
    }

    pub async fn count(&self, sql: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(sql).fetch_one(&self.pool).await?)
    }
}

//! No secret reaches the logs of the real processes on the *successful* paths. The same
//! flows as `crates/directory/tests/secret_logs.rs` (which captures the directory crate's
//! events in process), here through `entra-sync serve` and `entra-sync worker` processes at
//! DEBUG (TRACE for entra-sync's own crates), once with text logs and once with
//! `ENTRA_SYNC_LOG_FORMAT=json`:
//!
//! - an authorization-code exchange (the direct connect through the simulator's sign-in page
//!   and the API's callback),
//! - a refresh of the partner's delegated token (the simulator's access tokens live 60 s, less
//!   than the refresh margin, so every use refreshes) during discovery,
//! - customer-tenant token redemptions during a direct sync,
//! - a CIPP API-client token mint during the CIPP connect check, discovery and sync.
//!
//! The simulator's request log shows each flow happened. Neither process's output may hold
//! the app's client secret, the CIPP client secret or API token, any token the simulator
//! issued (every one carries a `sim-at.`, `sim-rt.` or `sim-code.` prefix, and the stored
//! token set is checked by value too), the authorization code or OAuth state, the master key,
//! a PSA user's API key, the encryption key or the database password.

use anyhow::{bail, Context, Result};
use entra_sync::demo::{create_psa_tenant, ApiClient};
use entra_sync_simulator::SimulatorConfig;
use entra_sync_store::connection::ConnectionCredentials;
use serde_json::json;
use uuid::Uuid;

use crate::harness::Stack;
use crate::processes::{
    connect_direct, direct_environment, discover_and_map_all, sync_all, Process,
};

fn token_requests(stack: &Stack, tenant: &str) -> usize {
    stack
        .simulator
        .request_log()
        .iter()
        .filter(|request| {
            request.method == "POST"
                && request.path.ends_with("/oauth2/v2.0/token")
                && request.path.to_lowercase().contains(&tenant.to_lowercase())
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_flows_log_no_secret_in_serve_and_worker_processes() -> Result<()> {
    let stack = Stack::start_with(
        SimulatorConfig {
            tenants: 2,
            users: 30,
            ..SimulatorConfig::default()
        },
        direct_environment,
    )
    .await?;
    let mut settings = stack.simulator.settings();
    settings.access_token_lifetime_secs = 60;
    stack.simulator.set_settings(settings);
    let config = stack.simulator.config().clone();
    let partner = config.partner_tenant_id.clone();
    let customers: Vec<String> = stack
        .simulator
        .msp()
        .tenants
        .iter()
        .map(|tenant| tenant.tenant_id.clone())
        .collect();

    // The database password: the test server trusts local connections, so it is only a value
    // of the configuration, which must still never be logged.
    let database_password = format!("db-password-{:016x}", rand::random::<u64>());
    let mut database_url = url::Url::parse(
        &stack
            .environment
            .iter()
            .find(|(name, _)| name == "DATABASE_URL")
            .context("DATABASE_URL")?
            .1,
    )?;
    database_url
        .set_password(Some(&database_password))
        .map_err(|()| anyhow::anyhow!("DATABASE_URL cannot carry a password"))?;
    let encryption_key = stack
        .environment
        .iter()
        .find(|(name, _)| name == "ENTRA_SYNC_ENCRYPTION_KEY")
        .context("ENTRA_SYNC_ENCRYPTION_KEY")?
        .1
        .clone();

    for format in ["text", "json"] {
        let overrides = [
            ("RUST_LOG", "debug,entra_sync=trace".to_owned()),
            ("ENTRA_SYNC_LOG_FORMAT", format.to_owned()),
            ("DATABASE_URL", database_url.to_string()),
        ];
        let mut serve =
            Process::serve(&stack, &format!("secrets-serve-{format}"), &overrides).await?;
        let mut worker = Process::worker(&stack, &format!("secrets-worker-{format}"), &overrides)?;
        let master = ApiClient::new(&serve.api_url, &stack.master_key)?;
        let flows = async {
            let (direct_tenant, direct_key) = create_psa_tenant(
                &master,
                &format!("logs-direct-{format}"),
                &format!("admin@logs-direct-{format}.example"),
            )
            .await?;
            let (_, cipp_key) = create_psa_tenant(
                &master,
                &format!("logs-cipp-{format}"),
                &format!("admin@logs-cipp-{format}.example"),
            )
            .await?;

            // The code exchange (the callback answered "connected"), then a refresh and the
            // customer redemptions.
            let (code, state) = connect_direct(&serve.api_url, &direct_key).await?;
            stack.simulator.clear_request_log();
            let direct = master.with_key(&direct_key);
            discover_and_map_all(&direct).await?;
            let run = sync_all(&direct).await?;
            if run["status"] != "completed" {
                bail!("direct sync ended {run}");
            }
            let refreshes = token_requests(&stack, &partner);
            assert!(refreshes >= 1, "no refresh at the partner tenant");
            for customer in &customers {
                assert!(
                    token_requests(&stack, customer) >= 1,
                    "no token redeemed for customer {customer}"
                );
            }
            let stored = stack
                .store
                .get_connection(Uuid::parse_str(&direct_tenant)?)
                .await?
                .and_then(|connection| connection.credentials);
            let Some(ConnectionCredentials::Direct(token_set)) = stored else {
                bail!("no direct token set stored");
            };

            // The CIPP API client: a token minted by client credentials for every use.
            stack.simulator.clear_request_log();
            let cipp = master.with_key(&cipp_key);
            cipp.post(
                "/api/v1/integrations/entra/connect/cipp",
                json!({
                    "base_url": stack.simulator.cipp_base_url(),
                    "client_id": config.cipp_client_id,
                    "client_secret": config.cipp_client_secret,
                    "tenant_id": partner,
                }),
            )
            .await?;
            discover_and_map_all(&cipp).await?;
            let run = sync_all(&cipp).await?;
            if run["status"] != "completed" {
                bail!("CIPP sync ended {run}");
            }
            assert!(
                token_requests(&stack, &partner) >= 1,
                "no CIPP token was minted"
            );
            assert!(
                stack
                    .simulator
                    .request_log()
                    .iter()
                    .any(|request| request.path.starts_with("/cipp/")),
                "CIPP was not called"
            );
            anyhow::Ok(vec![
                code,
                state,
                token_set.access_token,
                token_set.refresh_token,
                direct_key,
                cipp_key,
            ])
        }
        .await;
        let serve_log = serve.stop().await?;
        let worker_log = worker.stop().await?;
        let flow_secrets = flows.with_context(|| {
            format!("{format}: serve log:\n{serve_log}\nworker log:\n{worker_log}")
        })?;

        let level = match format {
            "json" => "\"level\":\"DEBUG\"",
            // (text lines may colour the level)
            _ => "DEBUG",
        };
        for (name, log) in [("serve", &serve_log), ("worker", &worker_log)] {
            assert!(
                log.contains(level),
                "{format}: {name} logged nothing at DEBUG"
            );
            let secrets = flow_secrets.iter().map(String::as_str).chain([
                config.app_client_secret.as_str(),
                config.cipp_client_secret.as_str(),
                config.cipp_api_token.as_str(),
                stack.master_key.as_str(),
                encryption_key.as_str(),
                database_password.as_str(),
                "sim-at.",
                "sim-rt.",
                "sim-code.",
            ]);
            for secret in secrets {
                assert!(
                    !log.contains(secret),
                    "{format}: {name} logged a secret ({}…)",
                    &secret[..secret.len().min(8)]
                );
            }
        }
    }
    Ok(())
}

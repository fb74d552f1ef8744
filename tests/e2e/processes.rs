//! `entra-sync serve` and `entra-sync worker` as real processes of a stack, with environment
//! overrides (a rotated key, another log format, the outbound policy) and their stderr kept in
//! a file, for the tests that restart them with another configuration or read their logs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::harness::Stack;
use crate::workflow_support::{eventually, worker_binary};

/// A running `entra-sync serve` or `entra-sync worker`; killed when dropped.
pub struct Process {
    child: tokio::process::Child,
    log: PathBuf,
    /// The API's base URL (`serve` only).
    pub api_url: String,
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "entra-sync-{name}-{}-{:08x}.log",
        std::process::id(),
        rand::random::<u32>()
    ))
}

fn command(
    stack: &Stack,
    subcommand: &str,
    overrides: &[(&str, String)],
) -> Result<tokio::process::Command> {
    let mut command = tokio::process::Command::new(worker_binary()?);
    command
        .arg(subcommand)
        .env_clear()
        .envs(stack.environment.iter().cloned())
        .env("RUST_LOG", "warn");
    for (name, value) in overrides {
        command.env(name, value);
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    Ok(command)
}

impl Process {
    /// `entra-sync serve` on a free port, with the stack's environment and `overrides`;
    /// returns once `/healthz` answers.
    pub async fn serve(stack: &Stack, name: &str, overrides: &[(&str, String)]) -> Result<Process> {
        let port = free_port()?;
        let log = log_path(name);
        let mut command = command(stack, "serve", overrides)?;
        let child = command
            .env("ENTRA_SYNC_LISTEN", format!("127.0.0.1:{port}"))
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting entra-sync serve")?;
        let mut process = Process {
            child,
            log,
            api_url: format!("http://127.0.0.1:{port}"),
        };
        let health = format!("{}/healthz", process.api_url);
        let started = eventually("entra-sync serve answers", Duration::from_secs(60), || {
            let health = health.clone();
            async move {
                Ok(match reqwest::get(&health).await {
                    Ok(response) if response.status().is_success() => Some(true),
                    _ => None,
                })
            }
        })
        .await;
        if let Err(error) = started {
            let log = process.stop().await.unwrap_or_default();
            return Err(error.context(format!("serve log:\n{log}")));
        }
        Ok(process)
    }

    /// `entra-sync worker` with the stack's environment and `overrides`.
    pub fn worker(stack: &Stack, name: &str, overrides: &[(&str, String)]) -> Result<Process> {
        let log = log_path(name);
        let mut command = command(stack, "worker", overrides)?;
        let child = command
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting entra-sync worker")?;
        Ok(Process {
            child,
            log,
            api_url: String::new(),
        })
    }

    /// Kills the process and returns everything it wrote to stderr.
    pub async fn stop(&mut self) -> Result<String> {
        let _ = self.child.start_kill();
        self.child.wait().await?;
        let text = std::fs::read_to_string(&self.log)?;
        let _ = std::fs::remove_file(&self.log);
        Ok(text)
    }
}

/// Runs an `entra-sync` subcommand to completion with the stack's environment and
/// `overrides`; returns (exit success, stdout, stderr).
pub async fn run_command(
    stack: &Stack,
    subcommand: &str,
    overrides: &[(&str, String)],
) -> Result<(bool, String, String)> {
    let mut command = command(stack, subcommand, overrides)?;
    let output = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output();
    // A command that should stop (a refused configuration, `rekey`) and does not is a failure.
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .with_context(|| format!("entra-sync {subcommand} did not exit within 60 s"))?
        .with_context(|| format!("running entra-sync {subcommand}"))?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Runs discovery through the API and maps every managed tenant it found to a new client
/// (no initial sync); returns how many tenants were mapped.
pub async fn discover_and_map_all(admin: &entra_sync::demo::ApiClient) -> Result<usize> {
    use serde_json::{json, Value};
    let started = admin
        .post("/api/v1/integrations/entra/discovery", json!({}))
        .await?;
    let discovery = admin
        .wait_for_run(
            started["run_id"].as_str().context("discovery run_id")?,
            Duration::from_secs(120),
            |_| {},
        )
        .await?;
    anyhow::ensure!(
        discovery["status"] == "completed",
        "discovery ended {discovery}"
    );
    let managed = admin
        .get("/api/v1/integrations/entra/managed-tenants")
        .await?;
    let decisions: Vec<Value> = managed["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|tenant| {
            json!({"managed_tenant_id": tenant["managed_tenant_id"], "action": "create_client"})
        })
        .collect();
    anyhow::ensure!(!decisions.is_empty(), "discovery found no tenant");
    admin
        .post(
            "/api/v1/integrations/entra/mappings/confirm",
            json!({"decisions": decisions, "start_initial_sync": false}),
        )
        .await?;
    Ok(decisions.len())
}

/// Starts a sync of every mapped tenant through the API and waits for its end.
pub async fn sync_all(admin: &entra_sync::demo::ApiClient) -> Result<serde_json::Value> {
    let started = admin
        .post(
            "/api/v1/integrations/entra/sync",
            serde_json::json!({"scope": "all"}),
        )
        .await?;
    admin
        .wait_for_run(
            started["run_id"].as_str().context("run_id")?,
            Duration::from_secs(180),
            |_| {},
        )
        .await
}

/// The callback URL of the direct connection in these tests: the browser leg is driven by
/// the test, so the host only has to pass the configuration checks (loopback may use http).
pub const CALLBACK_URL: &str = "http://localhost:9/auth/oauth2/microsoft/callback";

/// The app registration and callback of a direct connection, from the simulator.
pub fn direct_environment(simulator: &entra_sync_simulator::Simulator) -> Vec<(String, String)> {
    let config = simulator.config();
    vec![
        (
            "MICROSOFT_CLIENT_ID".to_owned(),
            config.app_client_id.clone(),
        ),
        (
            "MICROSOFT_CLIENT_SECRET".to_owned(),
            config.app_client_secret.clone(),
        ),
        (
            "MICROSOFT_TENANT_ID".to_owned(),
            config.partner_tenant_id.clone(),
        ),
        (
            "MICROSOFT_OAUTH_CALLBACK_URL".to_owned(),
            CALLBACK_URL.to_owned(),
        ),
    ]
}

/// Connects directly through the API at `api_url` with `admin_key`: starts the flow, follows
/// the authorize URL to the simulator's sign-in (which consents and redirects back) and calls
/// the callback as the browser would, asking for JSON. Returns the authorization code that
/// was exchanged and the state that carried it.
pub async fn connect_direct(api_url: &str, admin_key: &str) -> Result<(String, String)> {
    use serde_json::{json, Value};
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let started: Value = http
        .post(format!(
            "{api_url}/api/v1/integrations/entra/connect/direct"
        ))
        .header("x-api-key", admin_key)
        .json(&json!({}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let authorize_url = started["authorize_url"].as_str().context("authorize_url")?;
    let redirect = http.get(authorize_url).send().await?;
    anyhow::ensure!(
        redirect.status().as_u16() == 302,
        "sign-in answered {}",
        redirect.status()
    );
    let location = redirect
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .context("no Location")?;
    let location = url::Url::parse(location)?;
    let parameter = |wanted: &str| {
        location
            .query_pairs()
            .find(|(name, _)| name == wanted)
            .map(|(_, value)| value.into_owned())
            .with_context(|| format!("no {wanted} in the redirect"))
    };
    let (code, state) = (parameter("code")?, parameter("state")?);
    let answer = http
        .get(format!(
            "{api_url}/auth/oauth2/microsoft/callback?{}",
            location.query().unwrap_or_default()
        ))
        .header("x-api-key", admin_key)
        .header("accept", "application/json")
        .send()
        .await?;
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(
        status.is_success() && body["status"] == "connected",
        "callback answered {status}: {body}"
    );
    Ok((code, state))
}

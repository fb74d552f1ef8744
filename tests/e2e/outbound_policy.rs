//! The outbound address policy at the API and at sync time, with
//! `ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS=false` for this stack only (the other tests keep it on
//! for the simulator on 127.0.0.1):
//!
//! - connecting CIPP at a loopback, private or link-local base URL, or at a name that resolves
//!   to loopback (`localhost`), answers 422 with a `config` error naming the setting, nothing
//!   is stored, and the host is never contacted (a listener that would answer a recognisable
//!   body sees no connection, and the body never appears in the answer);
//! - a connection stored while it was allowed (made through an `entra-sync serve` process with
//!   private endpoints allowed: the "DNS changed" case, by name and by address) is refused on
//!   every use: discovery and each tenant of a sync fail with a `config` / `private_endpoint`
//!   error record, and the simulator gets no request;
//! - a Vault address that is loopback stops `entra-sync serve` at start with a message that
//!   names the setting, and one that resolves to loopback is never dialled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use entra_sync::demo::{create_psa_tenant, ApiClient};
use entra_sync_simulator::SimulatorConfig;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::Stack;
use crate::processes::{discover_and_map_all, run_command, sync_all, Process};

/// What the private host would answer: it must never reach an API answer or a record.
const PRIVATE_ANSWER: &str = "PRIVATE-HOST-ANSWER-7f3a";

/// A loopback listener that answers every connection with [`PRIVATE_ANSWER`] and counts them.
async fn private_host() -> Result<(u16, Arc<AtomicUsize>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let knocks = Arc::new(AtomicUsize::new(0));
    let counted = knocks.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let body = format!(
                    r#"[{{"customerId":"{PRIVATE_ANSWER}","displayName":"{PRIVATE_ANSWER}"}}]"#
                );
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    Ok((port, knocks))
}

async fn post_raw(api_url: &str, key: &str, path: &str, body: Value) -> Result<(u16, Value)> {
    let response = reqwest::Client::new()
        .post(format!("{api_url}{path}"))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

fn with_host(base: &str, host: &str) -> Result<String> {
    let mut url = url::Url::parse(base)?;
    url.set_host(Some(host))?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_endpoints_are_refused_at_connect_and_at_sync_time() -> Result<()> {
    let stack = Stack::start_with(
        SimulatorConfig {
            tenants: 2,
            users: 20,
            ..SimulatorConfig::default()
        },
        |_| {
            vec![(
                "ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS".to_owned(),
                "false".to_owned(),
            )]
        },
    )
    .await?;
    assert!(!stack.settings.allow_private_endpoints);
    let api_token = stack.simulator.config().cipp_api_token.clone();

    // 1. Two PSA tenants connected while private endpoints were allowed (a serve and a worker
    //    process of the same stack with the policy off): one by name, one by address.
    let allowed = [("ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS", "true".to_owned())];
    let mut serve = Process::serve(&stack, "policy-serve-allowed", &allowed).await?;
    let mut worker = Process::worker(&stack, "policy-worker-allowed", &allowed)?;
    let master = ApiClient::new(&serve.api_url, &stack.master_key)?;
    let mut stored = Vec::new();
    for (name, host) in [("by-name", "localhost"), ("by-address", "127.0.0.1")] {
        let (tenant_id, admin_key) =
            create_psa_tenant(&master, name, &format!("admin@{name}.example")).await?;
        let admin = master.with_key(&admin_key);
        let base_url = with_host(&stack.simulator.cipp_base_url(), host)?;
        admin
            .post(
                "/api/v1/integrations/entra/connect/cipp",
                json!({"base_url": base_url, "api_token": api_token}),
            )
            .await?;
        let mapped = discover_and_map_all(&admin).await?;
        assert_eq!(mapped, 2);
        stored.push((Uuid::parse_str(&tenant_id)?, admin_key, base_url));
    }
    serve.stop().await?;
    worker.stop().await?;

    // 2. The API of this stack (policy on) refuses private base URLs at connect time.
    let master = ApiClient::new(&stack.api_url, &stack.master_key)?;
    let (fresh_id, fresh_key) = create_psa_tenant(&master, "fresh", "admin@fresh.example").await?;
    let fresh_id = Uuid::parse_str(&fresh_id)?;
    let (port, knocks) = private_host().await?;
    for base_url in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("https://[::1]:{port}"),
        "https://10.0.0.5".to_owned(),
        "https://169.254.169.254".to_owned(),
        "https://192.168.1.10/cipp".to_owned(),
    ] {
        let (status, body) = post_raw(
            &stack.api_url,
            &fresh_key,
            "/api/v1/integrations/entra/connect/cipp",
            json!({"base_url": base_url, "api_token": api_token}),
        )
        .await?;
        let text = body.to_string();
        assert_eq!(status, 422, "{base_url}: {text}");
        assert_eq!(body["error"]["class"], "config", "{base_url}: {text}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("is not a public address")
                && message.contains("ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS"),
            "{base_url}: {text}"
        );
        assert!(!text.contains(PRIVATE_ANSWER), "{base_url}: {text}");
    }
    // Plain http to a non-loopback host is refused before the policy (https is required).
    let (status, body) = post_raw(
        &stack.api_url,
        &fresh_key,
        "/api/v1/integrations/entra/connect/cipp",
        json!({"base_url": "http://10.0.0.5", "api_token": api_token}),
    )
    .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_base_url")),
        "{body}"
    );
    assert_eq!(
        knocks.load(Ordering::SeqCst),
        0,
        "the private host was contacted"
    );
    // Nothing stored, nothing audited.
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM connections WHERE tenant_id = '{fresh_id}' AND credentials_ciphertext IS NOT NULL"
            ))
            .await?,
        0
    );
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM api_audit WHERE tenant_id = '{fresh_id}' AND action = 'entra.connect.cipp'"
            ))
            .await?,
        0
    );

    // 3. The stored connections are refused on use: discovery and every tenant of a sync fail
    //    with a config record, and CIPP hears nothing.
    stack.simulator.clear_request_log();
    stack
        .run(async {
            for (tenant_id, admin_key, base_url) in &stored {
                let admin = master.with_key(admin_key);
                let run = sync_all(&admin).await?;
                assert_eq!(run["status"], "failed", "{base_url}: {run}");
                let tenants = run["tenants"].as_array().cloned().unwrap_or_default();
                assert_eq!(tenants.len(), 2, "{run}");
                for result in &tenants {
                    assert_eq!(result["status"], "failed", "{result}");
                    assert_eq!(result["error"]["class"], "config", "{result}");
                    assert_eq!(result["error"]["code"], "private_endpoint", "{result}");
                    let message = result["error"]["message"].as_str().unwrap_or("");
                    assert!(
                        message.contains("ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS"),
                        "{result}"
                    );
                    assert!(!result["error"]["remediation"]
                        .as_str()
                        .unwrap_or("")
                        .is_empty());
                }

                let started = admin
                    .post("/api/v1/integrations/entra/discovery", json!({}))
                    .await?;
                let discovery = admin
                    .wait_for_run(
                        started["run_id"].as_str().context("run_id")?,
                        Duration::from_secs(120),
                        |_| {},
                    )
                    .await?;
                assert_eq!(discovery["status"], "failed", "{base_url}: {discovery}");
                assert_eq!(discovery["error"]["class"], "config", "{discovery}");
                assert_eq!(
                    discovery["error"]["code"], "private_endpoint",
                    "{discovery}"
                );
                // The managed tenants are kept (a failed listing marks nothing missing).
                let managed = admin
                    .get("/api/v1/integrations/entra/managed-tenants")
                    .await?;
                assert!(
                    managed["items"]
                        .as_array()
                        .is_some_and(|items| items.iter().all(|item| item["status"] != "missing")),
                    "{managed}"
                );
                let _ = tenant_id;
            }
            Ok(())
        })
        .await?;
    let cipp_requests: Vec<_> = stack
        .simulator
        .request_log()
        .into_iter()
        .filter(|request| request.path.starts_with("/cipp"))
        .collect();
    assert!(
        cipp_requests.is_empty(),
        "CIPP was called: {cipp_requests:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_vault_address_is_refused() -> Result<()> {
    let stack = Stack::start_with(
        SimulatorConfig {
            tenants: 1,
            users: 5,
            ..SimulatorConfig::default()
        },
        |_| {
            vec![(
                "ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS".to_owned(),
                "false".to_owned(),
            )]
        },
    )
    .await?;
    let (port, knocks) = private_host().await?;
    let vault_token = "vault-token-never-sent-0123".to_owned();

    // An address: refused when the process starts, naming the setting.
    let (started, _, stderr) = run_command(
        &stack,
        "serve",
        &[
            ("VAULT_ADDR", format!("http://127.0.0.1:{port}")),
            ("VAULT_TOKEN", vault_token.clone()),
            ("ENTRA_SYNC_LISTEN", "127.0.0.1:0".to_owned()),
        ],
    )
    .await?;
    assert!(!started, "serve started with a loopback Vault address");
    assert!(
        stderr.contains("is not a public address")
            && stderr.contains("ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains(&vault_token), "{stderr}");

    // A name that resolves to loopback: the process starts (names are judged when resolved),
    // and a use of the app registration (the direct connect) is refused without dialling.
    let mut serve = Process::serve(
        &stack,
        "vault-by-name",
        &[
            ("VAULT_ADDR", format!("http://localhost:{port}")),
            ("VAULT_TOKEN", vault_token.clone()),
        ],
    )
    .await?;
    let master = ApiClient::new(&serve.api_url, &stack.master_key)?;
    let (_, admin_key) = create_psa_tenant(&master, "vault", "admin@vault.example").await?;
    let (status, body) = post_raw(
        &serve.api_url,
        &admin_key,
        "/api/v1/integrations/entra/connect/direct",
        json!({}),
    )
    .await?;
    let text = body.to_string();
    assert!((400..500).contains(&status), "{status}: {text}");
    assert!(
        text.contains("is not a public address")
            || text.contains("ENTRA_SYNC__SECRETS__VAULT_ADDRESS"),
        "{status}: {text}"
    );
    assert!(!text.contains(PRIVATE_ANSWER), "{text}");
    let log = serve.stop().await?;
    assert!(!log.contains(&vault_token), "the Vault token was logged");
    assert_eq!(
        knocks.load(Ordering::SeqCst),
        0,
        "the private Vault was contacted"
    );
    Ok(())
}

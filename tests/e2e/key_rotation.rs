//! Rotating the credential encryption key on the real stack, with `entra-sync serve` and
//! `entra-sync worker` processes restarted at each step, a CIPP connection and a direct one:
//!
//! 1. both connected and synced under the first key (and a third PSA tenant's CIPP
//!    connection that nothing reads until `rekey`);
//! 2. with the new key configured and the old one removed *before* `rekey`: `rekey` fails
//!    with a message naming the settings (no panic), a sync fails each tenant with a
//!    `config` / `encryption_key` record, and nothing changes;
//! 3. restarted with the new key current and the old one previous: both still sync, and what
//!    they read is re-sealed under the new key on the way;
//! 4. `entra-sync rekey` with both keys re-seals what is left under the old key;
//! 5. restarted with only the new key: both still sync, the idle connection validates, and
//!    every stored ciphertext carries the new key's id.

use anyhow::{Context, Result};
use entra_sync::demo::{create_psa_tenant, ApiClient};
use entra_sync_simulator::{NewUser, SimulatorConfig};
use entra_sync_store::crypto::key_id;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::Stack;
use crate::processes::{
    connect_direct, direct_environment, discover_and_map_all, run_command, sync_all, Process,
};

/// The stack's key (harness.rs): the bytes 0, 1, …, 31 in base64.
const OLD_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The key rotated to: the bytes 32, 33, …, 63 in base64.
const NEW_KEY: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

fn key_bytes(first: u8) -> [u8; 32] {
    std::array::from_fn(|index| first + index as u8)
}

/// The key id each PSA tenant's stored credentials carry (`esk1` + 8 bytes), by tenant.
async fn sealed_under(stack: &Stack, tenants: &[Uuid]) -> Result<Vec<[u8; 8]>> {
    let mut ids = Vec::new();
    for tenant_id in tenants {
        let ciphertext: Vec<u8> = sqlx::query_scalar(
            "SELECT credentials_ciphertext FROM connections WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_one(&stack.pool)
        .await?;
        anyhow::ensure!(ciphertext.starts_with(b"esk1"), "no key id on {tenant_id}");
        ids.push(ciphertext[4..12].try_into()?);
    }
    Ok(ids)
}

/// Starts serve and worker with `keys` (current, previous list), syncs every PSA tenant and
/// returns the runs; stops both processes.
async fn restart_and_sync(
    stack: &Stack,
    step: &str,
    keys: &[(&str, String)],
    admins: &[String],
) -> Result<Vec<Value>> {
    // A new upstream user, so the direct connection's delta round has something to read.
    let customer = stack.simulator.msp().tenants[0].tenant_id.clone();
    stack.simulator.add_user(
        &customer,
        NewUser {
            given_name: "Rotation".into(),
            surname: step.into(),
            ..NewUser::default()
        },
    )?;
    let mut serve = Process::serve(stack, &format!("rotation-serve-{step}"), keys).await?;
    let mut worker = Process::worker(stack, &format!("rotation-worker-{step}"), keys)?;
    let mut runs = Vec::new();
    let outcome = async {
        for admin_key in admins {
            let admin = ApiClient::new(&serve.api_url, admin_key)?;
            runs.push(sync_all(&admin).await?);
        }
        anyhow::Ok(())
    }
    .await;
    serve.stop().await?;
    let worker_log = worker.stop().await?;
    outcome?;
    assert!(!worker_log.contains("panicked"), "{worker_log}");
    Ok(runs)
}

fn assert_completed(runs: &[Value], step: &str) {
    for run in runs {
        assert_eq!(run["status"], "completed", "{step}: {run}");
        assert!(
            run["totals"]["seen"].as_u64().unwrap_or(0) > 0,
            "{step}: nothing read: {run}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_restart_rekey_and_drop_the_old_key() -> Result<()> {
    let stack = Stack::start_with(
        SimulatorConfig {
            tenants: 2,
            users: 30,
            ..SimulatorConfig::default()
        },
        direct_environment,
    )
    .await?;
    let (old, new) = (key_bytes(0), key_bytes(32));
    let new_key = NEW_KEY.to_owned();
    let config = stack.simulator.config().clone();

    // 1. Under the first key: a CIPP connection (API client, so a token is minted) and a
    //    direct one, each discovered, mapped and synced; and a third PSA tenant's CIPP
    //    connection that nothing reads until `rekey`.
    let first: [(&str, String); 0] = [];
    let mut serve = Process::serve(&stack, "rotation-serve-first", &first).await?;
    let mut worker = Process::worker(&stack, "rotation-worker-first", &first)?;
    let master = ApiClient::new(&serve.api_url, &stack.master_key)?;
    let (cipp_tenant, cipp_key) =
        create_psa_tenant(&master, "rotation-cipp", "admin@rotation-cipp.example").await?;
    let (direct_tenant, direct_key) =
        create_psa_tenant(&master, "rotation-direct", "admin@rotation-direct.example").await?;
    let (idle_tenant, idle_key) =
        create_psa_tenant(&master, "rotation-idle", "admin@rotation-idle.example").await?;
    let tenants = [
        Uuid::parse_str(&cipp_tenant)?,
        Uuid::parse_str(&direct_tenant)?,
        Uuid::parse_str(&idle_tenant)?,
    ];
    let admins = [cipp_key.clone(), direct_key.clone()];
    let setup = async {
        for key in [&cipp_key, &idle_key] {
            master
                .with_key(key)
                .post(
                    "/api/v1/integrations/entra/connect/cipp",
                    json!({
                        "base_url": stack.simulator.cipp_base_url(),
                        "client_id": config.cipp_client_id,
                        "client_secret": config.cipp_client_secret,
                        "tenant_id": config.partner_tenant_id,
                    }),
                )
                .await?;
        }
        discover_and_map_all(&master.with_key(&cipp_key)).await?;
        connect_direct(&serve.api_url, &direct_key).await?;
        discover_and_map_all(&master.with_key(&direct_key)).await?;
        let mut runs = Vec::new();
        for admin_key in &admins {
            runs.push(sync_all(&master.with_key(admin_key)).await?);
        }
        anyhow::Ok(runs)
    }
    .await;
    serve.stop().await?;
    worker.stop().await?;
    assert_completed(&setup?, "first key");
    assert_eq!(sealed_under(&stack, &tenants).await?, vec![key_id(&old); 3]);

    // 2. The new key configured with the old one already removed (before any `rekey`): a
    //    clear error, not a panic, and nothing changes. `rekey` refuses, naming the settings;
    //    a sync fails each tenant with a `config` / `encryption_key` record.
    let new_only = [("ENTRA_SYNC_ENCRYPTION_KEY", new_key.clone())];
    let (succeeded, _, stderr) = run_command(&stack, "rekey", &new_only).await?;
    assert!(!succeeded, "rekey succeeded without the old key: {stderr}");
    assert!(
        stderr.contains("does not decrypt with the current or any previous key")
            && stderr.contains("ENTRA_SYNC_PREVIOUS_ENCRYPTION_KEYS"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.contains(&new_key) && !stderr.contains(OLD_KEY),
        "{stderr}"
    );
    let runs = restart_and_sync(&stack, "old-key-missing", &new_only, &admins).await?;
    for run in &runs {
        assert_eq!(run["status"], "failed", "{run}");
        for result in run["tenants"].as_array().context("tenants")? {
            assert_eq!(result["error"]["class"], "config", "{result}");
            assert_eq!(result["error"]["code"], "encryption_key", "{result}");
            assert!(
                result["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("ENTRA_SYNC_PREVIOUS_ENCRYPTION_KEYS"),
                "{result}"
            );
        }
    }
    assert_eq!(sealed_under(&stack, &tenants).await?, vec![key_id(&old); 3]);

    // 3. The new key current and the old one previous: both connections sync, and what was
    //    read is re-sealed under the new key on the way; the idle one is still under the old.
    let rotated = [
        ("ENTRA_SYNC_ENCRYPTION_KEY", new_key.clone()),
        ("ENTRA_SYNC_PREVIOUS_ENCRYPTION_KEYS", OLD_KEY.to_owned()),
    ];
    assert_completed(
        &restart_and_sync(&stack, "rotated", &rotated, &admins).await?,
        "rotated",
    );
    assert_eq!(
        sealed_under(&stack, &tenants).await?,
        vec![key_id(&new), key_id(&new), key_id(&old)]
    );

    // 4. `entra-sync rekey` with both keys re-seals what is left under the old one.
    let (succeeded, stdout, stderr) = run_command(&stack, "rekey", &rotated).await?;
    assert!(succeeded, "rekey failed: {stdout}{stderr}");
    assert!(
        stdout
            .contains("rekey: 1 connection(s) re-sealed under the current key, 2 already under it"),
        "{stdout}"
    );
    assert_eq!(sealed_under(&stack, &tenants).await?, vec![key_id(&new); 3]);

    // 5. Only the new key: both connections still sync, and the idle one still validates.
    assert_completed(
        &restart_and_sync(&stack, "new-key-only", &new_only, &admins).await?,
        "after rekey",
    );
    let mut serve = Process::serve(&stack, "rotation-serve-validate", &new_only).await?;
    let validated = ApiClient::new(&serve.api_url, &idle_key)?
        .post("/api/v1/integrations/entra/validate", json!({}))
        .await;
    serve.stop().await?;
    let validated = validated?;
    assert_eq!(validated["ok"], true, "{validated}");
    Ok(())
}

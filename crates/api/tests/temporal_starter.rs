//! `TemporalStarter` against a real Temporal server: the one at `TEMPORAL_ADDRESS` (as
//! `make test` provides), or a dev server this test starts from the project's Temporal CLI
//! (`ENTRA_SYNC_TEMPORAL_CLI`, default `.tools/venv/bin/temporal`). No worker runs, so started
//! workflows simply wait on the task queue.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use entra_sync_api::{TemporalStarter, WorkflowStarter};
use entra_sync_workflows::contract::{DiscoveryRunInput, SyncRunInput, CONTRACT_VERSION};
use entra_sync_workflows::workflow_id_for_run;
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions};
use url::Url;
use uuid::Uuid;

/// A dev server owned by the test; killed when dropped.
struct DevServer {
    _child: tokio::process::Child,
    _dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

async fn connect(address: &str) -> anyhow::Result<Client> {
    let connection = Connection::connect(
        ConnectionOptions::new(Url::parse(&format!("http://{address}"))?)
            .identity("entra-sync-api-test".to_owned())
            .connect_timeout(Duration::from_secs(3))
            .build(),
    )
    .await?;
    Ok(Client::new(
        connection,
        ClientOptions::new("default").build(),
    )?)
}

async fn temporal() -> (Client, Option<DevServer>) {
    if let Ok(address) = std::env::var("TEMPORAL_ADDRESS") {
        let client = connect(&address).await.expect("TEMPORAL_ADDRESS answers");
        return (client, None);
    }
    let cli = std::env::var("ENTRA_SYNC_TEMPORAL_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/temporal")
        });
    assert!(
        cli.exists(),
        "no TEMPORAL_ADDRESS and no Temporal CLI at {}; run `make tools` or set TEMPORAL_ADDRESS",
        cli.display()
    );
    let dir = std::env::temp_dir().join(format!("entra-sync-api-temporal-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let child = tokio::process::Command::new(&cli)
        .args([
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--log-level",
            "error",
        ])
        .arg("--db-filename")
        .arg(dir.join("temporal.db"))
        .args(["--port", &port.to_string()])
        .args(["--http-port", &free_port().to_string()])
        .args(["--metrics-port", &free_port().to_string()])
        .args(["--ui-port", &free_port().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the Temporal dev server starts");
    let address = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(client) = connect(&address).await {
            let starter = TemporalStarter::new(client.clone(), "probe");
            if starter.ready().await.is_ok() {
                return (
                    client,
                    Some(DevServer {
                        _child: child,
                        _dir: dir,
                    }),
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "the Temporal dev server did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn starts_each_run_once_and_cancels_it() {
    let (client, _server) = temporal().await;
    let task_queue = format!("api-test-{}", Uuid::new_v4());
    let starter = TemporalStarter::new(client, task_queue);
    starter.ready().await.expect("temporal is ready");

    let tenant_id = Uuid::new_v4().to_string();
    let run_id = Uuid::new_v4().to_string();
    let input = SyncRunInput {
        version: CONTRACT_VERSION,
        tenant_id: tenant_id.clone(),
        run_id: run_id.clone(),
        max_parallel_tenants: 2,
    };
    let workflow_id = starter.start_sync(input.clone()).await.expect("started");
    assert_eq!(
        workflow_id,
        workflow_id_for_run("sync", &tenant_id, &run_id)
    );
    // One workflow per run: starting the same run again is refused, not duplicated.
    assert!(starter.start_sync(input).await.is_err());
    starter.cancel(&workflow_id).await.expect("cancelled");

    let discovery_run = Uuid::new_v4().to_string();
    let discovery_id = starter
        .start_discovery(DiscoveryRunInput {
            version: CONTRACT_VERSION,
            tenant_id: tenant_id.clone(),
            run_id: discovery_run.clone(),
        })
        .await
        .expect("discovery started");
    assert_eq!(
        discovery_id,
        workflow_id_for_run("discovery", &tenant_id, &discovery_run)
    );
    starter.cancel(&discovery_id).await.expect("cancelled");
    assert!(starter.cancel("entra-sync-no-such-workflow").await.is_err());
}

#[tokio::test]
async fn schedules_are_created_updated_and_deleted_idempotently() {
    let (client, _server) = temporal().await;
    let starter = TemporalStarter::new(client.clone(), format!("api-test-{}", Uuid::new_v4()));
    let tenant_id = Uuid::new_v4();
    let handle = client.get_schedule_handle(entra_sync_workflows::schedule_id_for_tenant(
        &tenant_id.to_string(),
    ));
    let exists = || async { handle.describe(Default::default()).await.is_ok() };
    assert!(!exists().await);
    starter
        .apply_schedule(tenant_id, Some(Duration::from_secs(3600)))
        .await
        .expect("created");
    assert!(exists().await);
    starter
        .apply_schedule(tenant_id, Some(Duration::from_secs(900)))
        .await
        .expect("updated");
    let description = handle
        .describe(Default::default())
        .await
        .expect("described");
    assert!(!description.paused());
    starter
        .apply_schedule(tenant_id, None)
        .await
        .expect("deleted");
    assert!(!exists().await);
    starter
        .remove_schedule(tenant_id)
        .await
        .expect("deleting a missing schedule is fine");
}

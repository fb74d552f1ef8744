//! Shared fixtures of the API tests: a recording fake workflow starter, an app over a fresh
//! database, request helpers, and a seeded world of two PSA tenants with users of every kind.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use entra_sync_api::{router, ApiConfig, AppState, WorkflowStarter};
use entra_sync_store::discovery::{DiscoveredTenantRecord, TenantDomain};
use entra_sync_store::runs::{NewRun, RunKind, RunScope, RunStatus, RunTrigger};
use entra_sync_store::Store;
use entra_sync_workflows::contract::{DiscoveryRunInput, SyncRunInput};
use http_body_util::BodyExt;
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

pub const MASTER_KEY: &str = "test-master-key-0123456789";

/// Records every call; `fail` makes starts fail like an unreachable Temporal.
#[derive(Default)]
pub struct FakeStarter {
    pub syncs: Mutex<Vec<SyncRunInput>>,
    pub discoveries: Mutex<Vec<DiscoveryRunInput>>,
    pub cancels: Mutex<Vec<String>>,
    /// Every `apply_schedule` call: (tenant, interval or None for "no schedule").
    pub schedules: Mutex<Vec<(Uuid, Option<std::time::Duration>)>>,
    pub fail: AtomicBool,
}

#[async_trait]
impl WorkflowStarter for FakeStarter {
    async fn start_sync(&self, input: SyncRunInput) -> anyhow::Result<String> {
        if self.fail.load(Ordering::SeqCst) {
            anyhow::bail!("temporal unreachable");
        }
        let id = format!("entra-sync-{}-{}", input.tenant_id, input.run_id);
        self.syncs
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(input);
        Ok(id)
    }

    async fn start_discovery(&self, input: DiscoveryRunInput) -> anyhow::Result<String> {
        if self.fail.load(Ordering::SeqCst) {
            anyhow::bail!("temporal unreachable");
        }
        let id = format!("entra-discovery-{}-{}", input.tenant_id, input.run_id);
        self.discoveries
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(input);
        Ok(id)
    }

    async fn apply_schedule(
        &self,
        tenant_id: Uuid,
        interval: Option<std::time::Duration>,
    ) -> anyhow::Result<()> {
        self.schedules
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push((tenant_id, interval));
        Ok(())
    }

    async fn cancel(&self, workflow_id: &str) -> anyhow::Result<()> {
        self.cancels
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(workflow_id.to_owned());
        Ok(())
    }
}

pub struct TestApp {
    pub app: Router,
    pub store: Store,
    pub starter: Arc<FakeStarter>,
}

pub struct Response {
    pub status: StatusCode,
    pub body: Value,
}

impl Response {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl TestApp {
    pub fn new(pool: PgPool) -> TestApp {
        TestApp::with_config(pool, |_| {})
    }

    /// An app whose configuration `adjust` changes first (e.g. Microsoft endpoints).
    pub fn with_config(pool: PgPool, adjust: impl FnOnce(&mut ApiConfig)) -> TestApp {
        let store = Store::from_pool(pool).with_encryption_key([7u8; 32]);
        let starter = Arc::new(FakeStarter::default());
        let mut config = ApiConfig::new(SecretString::from(MASTER_KEY.to_owned()));
        config.provider_timeout = std::time::Duration::from_secs(3);
        // The simulator's CIPP listens on loopback.
        config.allow_private_endpoints = true;
        adjust(&mut config);
        let state = AppState::new(store.clone(), starter.clone(), config);
        TestApp {
            app: router(state),
            store,
            starter,
        }
    }

    pub async fn raw(&self, request: Request<Body>) -> Response {
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("the router never fails");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Response { status, body }
    }

    pub async fn request_text(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> Response {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            builder = builder.header("x-api-key", key);
        }
        let body = match body {
            Some(text) => {
                builder = builder.header("content-type", "application/json");
                Body::from(text)
            }
            None => Body::empty(),
        };
        self.raw(builder.body(body).expect("request")).await
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        self.request_text(method, path, key, body.map(|body| body.to_string()))
            .await
    }

    pub async fn get(&self, path: &str, key: &str) -> Response {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Response {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }
}

/// Every permission a PSA user can hold.
pub const ALL_PERMISSIONS: [&str; 7] = [
    "system_settings.read",
    "system_settings.update",
    "client.read",
    "client.create",
    "contact.read",
    "contact.create",
    "contact.update",
];

pub const READ_PERMISSIONS: [&str; 3] = ["system_settings.read", "client.read", "contact.read"];

/// Two PSA tenants with every flag on, users of every kind, and some data in tenant A.
pub struct World {
    pub tenant_a: Uuid,
    pub tenant_b: Uuid,
    /// Internal user of A with every permission.
    pub updater: String,
    /// Internal user of A with read permissions only.
    pub reader: String,
    /// Client-portal user of A with every permission.
    pub portal: String,
    /// Internal user of B with every permission.
    pub other: String,
    pub client_a: Uuid,
    pub contact_a: Uuid,
    pub managed_tenant_a: Uuid,
    pub discovery_run_a: Uuid,
    /// An open review item of `managed_tenant_a`, candidates in `client_a`.
    pub review_item_a: Uuid,
}

/// Inserts an open review item (the sync's planner is what queues them in production).
pub async fn insert_review_item(
    store: &Store,
    tenant_id: Uuid,
    managed_tenant_id: Uuid,
    client_id: Uuid,
    contact_id: Uuid,
    object_id: &str,
) -> Uuid {
    let item_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO review_items (tenant_id, item_id, reason, managed_tenant_id, client_id,
                                   object_id, display_name, email, candidates)
         VALUES ($1, $2, 'multiple_candidates', $3, $4, $5, 'Ada L.', 'ada@contoso.com', $6)",
    )
    .bind(tenant_id)
    .bind(item_id)
    .bind(managed_tenant_id)
    .bind(client_id)
    .bind(object_id)
    .bind(json!([{"contact_id": contact_id, "client_id": client_id,
                  "full_name": "Ada Lovelace", "email": "ada@contoso.com"}]))
    .execute(store.pool())
    .await
    .expect("review item");
    item_id
}

pub async fn create_tenant(app: &TestApp, name: &str) -> Uuid {
    let response = app
        .post(
            "/api/v1/platform/tenants",
            MASTER_KEY,
            json!({"name": name}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
    response.body["tenant_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("tenant id")
}

pub async fn create_user(
    app: &TestApp,
    tenant_id: Uuid,
    email: &str,
    user_type: &str,
    permissions: &[&str],
) -> String {
    let response = app
        .post(
            &format!("/api/v1/platform/tenants/{tenant_id}/users"),
            MASTER_KEY,
            json!({"email": email, "user_type": user_type, "permissions": permissions}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
    response.body["api_key"]
        .as_str()
        .expect("api key")
        .to_owned()
}

pub async fn set_flag(app: &TestApp, flag: &str, tenant_id: Uuid, on: bool) {
    let response = app
        .post(
            &format!("/api/v1/platform-feature-flags/{flag}/tenants"),
            MASTER_KEY,
            json!({"__action": if on { "add" } else { "remove" }, "tenantId": tenant_id}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
}

pub const FLAGS: [&str; 5] = [
    "entra-integration-ui",
    "entra-integration-client-sync-action",
    "entra-integration-cipp",
    "entra-integration-field-sync",
    "entra-integration-ambiguous-queue",
];

/// Records a finished discovery that found `names` (display name, domain) in `tenant_id`.
pub async fn discover(store: &Store, tenant_id: Uuid, tenants: &[(&str, &str)]) -> Uuid {
    let run = store
        .start_run(&NewRun {
            tenant_id,
            kind: RunKind::Discovery,
            trigger: RunTrigger::Manual,
            scope: RunScope::All,
            requested_by: Some("test".to_owned()),
        })
        .await
        .expect("start run");
    let records: Vec<DiscoveredTenantRecord> = tenants
        .iter()
        .map(|(name, domain)| DiscoveredTenantRecord {
            entra_tenant_id: Uuid::new_v4().to_string(),
            display_name: (*name).to_owned(),
            domains: vec![TenantDomain {
                name: (*domain).to_owned(),
                is_default: true,
                is_initial: false,
            }],
        })
        .collect();
    store
        .record_discovery(tenant_id, run.run_id, &records)
        .await
        .expect("record discovery");
    store
        .finish_run(tenant_id, run.run_id, RunStatus::Completed, None)
        .await
        .expect("finish run");
    run.run_id
}

pub async fn world(app: &TestApp) -> World {
    let tenant_a = create_tenant(app, "MSP A").await;
    let tenant_b = create_tenant(app, "MSP B").await;
    let ensured = app
        .post(
            "/api/v1/platform-feature-flags",
            MASTER_KEY,
            json!({"__action": "ensure_entra_phase1_flags"}),
        )
        .await;
    assert_eq!(ensured.status, StatusCode::OK, "{:?}", ensured.body);
    for flag in FLAGS {
        set_flag(app, flag, tenant_a, true).await;
        set_flag(app, flag, tenant_b, true).await;
    }
    let updater = create_user(
        app,
        tenant_a,
        "admin@msp-a.test",
        "internal",
        &ALL_PERMISSIONS,
    )
    .await;
    let reader = create_user(
        app,
        tenant_a,
        "reader@msp-a.test",
        "internal",
        &READ_PERMISSIONS,
    )
    .await;
    let portal = create_user(
        app,
        tenant_a,
        "portal@customer.test",
        "client",
        &ALL_PERMISSIONS,
    )
    .await;
    let other = create_user(
        app,
        tenant_b,
        "admin@msp-b.test",
        "internal",
        &ALL_PERMISSIONS,
    )
    .await;

    let client = app
        .post(
            "/api/v1/clients",
            &updater,
            json!({"name": "Contoso", "domains": ["contoso.com"]}),
        )
        .await;
    assert_eq!(client.status, StatusCode::CREATED, "{:?}", client.body);
    let client_a: Uuid = client.body["client_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("client id");
    let contact = app
        .post(
            "/api/v1/contacts",
            &updater,
            json!({"client_id": client_a, "full_name": "Ada Lovelace", "email": "ada@contoso.com"}),
        )
        .await;
    assert_eq!(contact.status, StatusCode::CREATED, "{:?}", contact.body);
    let contact_a: Uuid = contact.body["contact_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("contact id");
    let discovery_run_a = discover(
        &app.store,
        tenant_a,
        &[("Contoso Ltd", "contoso.com"), ("Fabrikam", "fabrikam.com")],
    )
    .await;
    let managed = app
        .store
        .list_managed_tenants(tenant_a)
        .await
        .expect("managed tenants");
    let managed_tenant_a = managed
        .iter()
        .find(|tenant| tenant.display_name == "Contoso Ltd")
        .expect("contoso")
        .managed_tenant_id;
    let review_item_a = insert_review_item(
        &app.store,
        tenant_a,
        managed_tenant_a,
        client_a,
        contact_a,
        "object-ada",
    )
    .await;
    World {
        review_item_a,
        tenant_a,
        tenant_b,
        updater,
        reader,
        portal,
        other,
        client_a,
        contact_a,
        managed_tenant_a,
        discovery_run_a,
    }
}

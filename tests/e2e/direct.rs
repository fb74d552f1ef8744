//! The direct Microsoft connection end to end: the authorization-code flow through the API
//! (PKCE, single-use state) against the simulator's authorize endpoint, discovery over GDAP,
//! syncs in delta mode through Temporal, upstream changes, classified failures, switching to
//! CIPP and disconnecting; and the refresh-token rotation under the cross-process lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use entra_sync::demo::{create_psa_tenant, ApiClient};
use entra_sync::doctor::Severity;
use entra_sync_connection::StoredRefreshTokens;
use entra_sync_directory::error::SettingNames;
use entra_sync_directory::http::{HttpSettings, ThrottleStats};
use entra_sync_directory::oauth::{
    AppCredential, CustomerTokenCache, OAuthClient, OAuthConfig, GRAPH_DEFAULT_SCOPE,
};
use entra_sync_simulator::{ConsentFault, FaultKind, FaultSpec, NewUser, SimulatorConfig};
use entra_sync_store::connection::{ConnectionCredentials, DirectTokenSetRecord};
use entra_sync_store::Store;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::Stack;
use crate::processes::{direct_environment, CALLBACK_URL};

fn simulator_config() -> SimulatorConfig {
    SimulatorConfig {
        tenants: 3,
        users: 90,
        ..SimulatorConfig::default()
    }
}

/// A JSON client for the API with one key.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

struct Answer {
    status: u16,
    body: Value,
}

impl Api {
    fn new(base: &str, key: &str) -> Result<Api> {
        Ok(Api {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            base: base.to_owned(),
            key: key.to_owned(),
        })
    }

    fn with_key(&self, key: &str) -> Api {
        Api {
            key: key.to_owned(),
            ..self.clone()
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", &self.key)
            .header("accept", "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body })
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let answer = self.call(reqwest::Method::POST, path, Some(body)).await?;
        if !(200..300).contains(&answer.status) {
            bail!("POST {path} answered {}: {}", answer.status, answer.body);
        }
        Ok(answer.body)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let answer = self.call(reqwest::Method::GET, path, None).await?;
        if !(200..300).contains(&answer.status) {
            bail!("GET {path} answered {}: {}", answer.status, answer.body);
        }
        Ok(answer.body)
    }

    /// The OAuth callback as the browser would call it, asking for JSON, with this key
    /// attached when `with_key` is set.
    async fn callback(&self, query: &str, with_key: bool) -> Result<Answer> {
        let mut request = self
            .http
            .get(format!(
                "{}/auth/oauth2/microsoft/callback?{query}",
                self.base
            ))
            .header("accept", "application/json");
        if with_key {
            request = request.header("x-api-key", &self.key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    async fn wait_for_run(&self, run_id: &str) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        loop {
            let run = self
                .get(&format!("/api/v1/integrations/entra/sync/runs/{run_id}"))
                .await?;
            if run["status"] != "running" {
                return Ok(run);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("run {run_id} still running: {run}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn sync_all(&self) -> Result<Value> {
        let started = self
            .post("/api/v1/integrations/entra/sync", json!({"scope": "all"}))
            .await?;
        self.wait_for_run(started["run_id"].as_str().context("run_id")?)
            .await
    }
}

/// A PSA tenant with an admin user and every Entra flag; returns the admin's client.
async fn psa_tenant(master: &Api, name: &str) -> Result<(Uuid, Api)> {
    let (tenant_id, admin_key) = create_psa_tenant(
        &ApiClient::new(&master.base, &master.key)?,
        name,
        &format!("admin@{name}.example"),
    )
    .await?;
    Ok((Uuid::parse_str(&tenant_id)?, master.with_key(&admin_key)))
}

/// Starts the direct connection and drives the simulator's authorize endpoint (which consents
/// and redirects back); returns the callback's query string (`code=…&state=…`).
async fn authorize(admin: &Api) -> Result<String> {
    let started = admin
        .post("/api/v1/integrations/entra/connect/direct", json!({}))
        .await?;
    let authorize_url =
        url::Url::parse(started["authorize_url"].as_str().context("authorize_url")?)?;
    let query: BTreeMap<String, String> = authorize_url.query_pairs().into_owned().collect();
    assert_eq!(query["code_challenge_method"], "S256");
    assert!(query["scope"]
        .split(' ')
        .any(|scope| scope == "offline_access"));
    assert!(query["state"].len() >= 43, "state too short");
    assert_eq!(query["redirect_uri"], CALLBACK_URL);
    let redirect = admin.http.get(authorize_url).send().await?;
    assert_eq!(redirect.status().as_u16(), 302);
    let location = redirect
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .context("no Location")?;
    let location = url::Url::parse(location)?;
    assert!(location.as_str().starts_with(CALLBACK_URL));
    Ok(location.query().unwrap_or_default().to_owned())
}

async fn connection_fingerprint(
    stack: &Stack,
    tenant_id: Uuid,
) -> Result<Option<(String, String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT coalesce(kind, ''), status, credentials_version FROM connections WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(&stack.pool)
    .await?)
}

fn tenant_results(run: &Value) -> Vec<Value> {
    run["tenants"].as_array().cloned().unwrap_or_default()
}

async fn contact_state(
    stack: &Stack,
    tenant_id: Uuid,
    object_id: &str,
) -> Result<Option<(bool, Option<String>)>> {
    Ok(sqlx::query_as(
        "SELECT c.is_active, c.inactive_reason FROM links l
         JOIN contacts c ON c.tenant_id = l.tenant_id AND c.contact_id = l.contact_id
         WHERE l.tenant_id = $1 AND l.object_id = $2",
    )
    .bind(tenant_id)
    .bind(object_id)
    .fetch_optional(&stack.pool)
    .await?)
}

/// Object ids of active linked contacts of one managed tenant.
async fn linked_objects(
    stack: &Stack,
    tenant_id: Uuid,
    entra_tenant_id: &str,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT l.object_id FROM links l
         JOIN managed_tenants mt ON mt.tenant_id = l.tenant_id AND mt.managed_tenant_id = l.managed_tenant_id
         JOIN contacts c ON c.tenant_id = l.tenant_id AND c.contact_id = l.contact_id
         WHERE l.tenant_id = $1 AND lower(mt.entra_tenant_id) = lower($2) AND c.is_active
         ORDER BY l.object_id",
    )
    .bind(tenant_id)
    .bind(entra_tenant_id)
    .fetch_all(&stack.pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_connection_authorize_discover_sync_and_delta() -> Result<()> {
    // A secrets directory, where a PSA tenant can have an app registration of its own.
    let secrets_directory =
        std::env::temp_dir().join(format!("entra-sync-direct-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&secrets_directory)?;
    let stack = Stack::start_with(simulator_config(), |simulator| {
        let mut environment = direct_environment(simulator);
        environment.push((
            "ENTRA_SYNC__SECRETS__DIRECTORY".to_owned(),
            secrets_directory.display().to_string(),
        ));
        // One lane for three tenants: once each has a delta link, the three are small and
        // sync in one `sync_tenants` (local) activity, so every delta run below goes through it.
        environment.push((
            "ENTRA_SYNC__SYNC__MAX_PARALLEL_TENANTS".to_owned(),
            "1".to_owned(),
        ));
        // A Retry-After longer than this fails the attempt, for Temporal to retry (below).
        environment.push((
            "ENTRA_SYNC__WORKER__RETRY_AFTER_CAP_SECONDS".to_owned(),
            "3".to_owned(),
        ));
        environment
    })
    .await?;
    let simulator = &stack.simulator;
    // MICROSOFT.md §3: delta entries repeat and come in any order; the sync must not care.
    let mut settings = simulator.settings();
    settings.delta_duplicates = true;
    settings.delta_reorder = true;
    settings.delta_page_size = 7;
    simulator.set_settings(settings);
    let master = Api::new(&stack.api_url, &stack.master_key)?;
    let (tenant_id, admin) = psa_tenant(&master, "direct-msp").await?;
    let (other_tenant_id, other_admin) = psa_tenant(&master, "other-msp").await?;
    // The other PSA tenant's own secrets come before the environment's (SPEC §2.1).
    let own = secrets_directory
        .join("tenants")
        .join(other_tenant_id.to_string());
    std::fs::create_dir_all(&own)?;
    std::fs::write(
        own.join("MICROSOFT_CLIENT_ID"),
        "0bad0000-0000-4000-8000-00000000b0b0",
    )?;
    std::fs::write(
        own.join("MICROSOFT_CLIENT_SECRET"),
        "other-tenant-secret-value",
    )?;
    let other_start = other_admin
        .post("/api/v1/integrations/entra/connect/direct", json!({}))
        .await?;
    let other_url = url::Url::parse(
        other_start["authorize_url"]
            .as_str()
            .context("authorize_url")?,
    )?;
    assert!(
        other_url
            .query_pairs()
            .any(|(name, value)| name == "client_id"
                && value == "0bad0000-0000-4000-8000-00000000b0b0"),
        "{other_url}"
    );
    let outcome = stack
        .run(async {
            // Start on CIPP, so the direct connection has credentials to replace.
            admin
                .post(
                    "/api/v1/integrations/entra/connect/cipp",
                    json!({"base_url": simulator.cipp_base_url(), "api_token": simulator.config().cipp_api_token}),
                )
                .await?;
            let on_cipp = connection_fingerprint(&stack, tenant_id).await?;
            assert_eq!(on_cipp.as_ref().map(|row| row.0.as_str()), Some("cipp"));

            // Forged, expired, cross-tenant and replayed states are refused and change nothing.
            let forged = admin.callback("code=whatever&state=forged-state-of-enough-length-0123456789abcdef", false).await?;
            assert_eq!((forged.status, forged.body["error"]["code"].as_str()), (400, Some("invalid_state")));
            assert_eq!(connection_fingerprint(&stack, tenant_id).await?, on_cipp);

            let expired_query = authorize(&admin).await?;
            sqlx::query("UPDATE oauth_states SET expires_at = now() - interval '1 second' WHERE tenant_id = $1 AND used_at IS NULL")
                .bind(tenant_id)
                .execute(&stack.pool)
                .await?;
            let expired = admin.callback(&expired_query, false).await?;
            assert_eq!((expired.status, expired.body["error"]["code"].as_str()), (400, Some("state_expired")));
            assert_eq!(connection_fingerprint(&stack, tenant_id).await?, on_cipp);

            let cross_query = authorize(&admin).await?;
            let cross = other_admin.callback(&cross_query, true).await?;
            assert_eq!((cross.status, cross.body["error"]["code"].as_str()), (403, Some("tenant_mismatch")));
            assert_eq!(connection_fingerprint(&stack, tenant_id).await?, on_cipp);
            assert_eq!(connection_fingerprint(&stack, other_tenant_id).await?, None);

            // The refused cross-tenant callback did not use the state up: the admin who started
            // the flow finishes it with the same answer. The code is redeemed with the
            // verifier, Graph probed, then saved.
            let query = cross_query;
            let connected = admin.callback(&query, true).await?;
            assert_eq!(connected.status, 200, "{}", connected.body);
            assert_eq!(connected.body["status"], "connected");
            let replayed = admin.callback(&query, false).await?;
            assert_eq!((replayed.status, replayed.body["error"]["code"].as_str()), (400, Some("state_used")));
            let record = stack.store.get_connection(tenant_id).await?.context("connection")?;
            let Some(ConnectionCredentials::Direct(token_set)) = &record.credentials else {
                bail!("the CIPP credentials were not replaced: {:?}", record.credentials);
            };
            assert_eq!(record.cipp_base_url, None, "CIPP settings cleared");
            // Encrypted at rest: the stored bytes do not contain the refresh token.
            let ciphertext: Vec<u8> = sqlx::query_scalar("SELECT credentials_ciphertext FROM connections WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_one(&stack.pool)
                .await?;
            let needle = token_set.refresh_token.as_bytes();
            assert!(!ciphertext.windows(needle.len()).any(|window| window == needle));

            // Discovery over GDAP finds every simulated customer with its domains.
            let discovery = admin.post("/api/v1/integrations/entra/discovery", json!({})).await?;
            let discovery = admin.wait_for_run(discovery["run_id"].as_str().context("run_id")?).await?;
            assert_eq!(discovery["status"], "completed", "{discovery}");
            let managed = admin.get("/api/v1/integrations/entra/managed-tenants").await?;
            let managed = managed["items"].as_array().cloned().unwrap_or_default();
            let msp = simulator.msp();
            assert_eq!(managed.len(), msp.tenants.len(), "{managed:?}");
            assert!(managed.iter().all(|tenant| tenant["domains"].as_array().is_some_and(|domains| !domains.is_empty())));

            // Map every tenant to a new client and run the initial sync: a delta round from
            // scratch, which is a full enumeration.
            let decisions: Vec<Value> = managed
                .iter()
                .map(|tenant| json!({"managed_tenant_id": tenant["managed_tenant_id"], "action": "create_client"}))
                .collect();
            let confirmed = admin
                .post("/api/v1/integrations/entra/mappings/confirm", json!({"decisions": decisions, "start_initial_sync": true}))
                .await?;
            let initial = admin.wait_for_run(confirmed["run_id"].as_str().context("run_id")?).await?;
            assert_eq!(initial["status"], "completed", "{initial}");
            for result in tenant_results(&initial) {
                assert_eq!((result["status"].as_str(), result["mode"].as_str()), (Some("completed"), Some("full")), "{result}");
            }
            let delta_links = stack.count(&format!("SELECT count(*) FROM delta_state WHERE tenant_id = '{tenant_id}'")).await?;
            assert_eq!(delta_links as usize, msp.tenants.len(), "a delta link per managed tenant");
            let contacts_after_initial = stack.count(&format!("SELECT count(*) FROM contacts WHERE tenant_id = '{tenant_id}'")).await?;
            assert!(contacts_after_initial > 0);

            // Upstream: a new user, a disabled one and a soft-deleted one in the first tenant.
            let first = &msp.tenants[0];
            let linked = linked_objects(&stack, tenant_id, &first.tenant_id).await?;
            assert!(linked.len() >= 3, "too few linked users in {}: {linked:?}", first.display_name);
            let (disabled, deleted) = (linked[0].clone(), linked[1].clone());
            let added = simulator
                .add_user(&first.tenant_id, NewUser { given_name: "Ada".into(), surname: "Lovelace".into(), job_title: Some("Analyst".into()), ..NewUser::default() })?;
            simulator.disable_user(&first.tenant_id, &disabled)?;
            simulator.soft_delete_user(&first.tenant_id, &deleted)?;
            simulator.clear_request_log();
            // Kept so the round can be replayed below.
            let links_before: Vec<(Uuid, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                "SELECT managed_tenant_id, delta_link, issued_at FROM delta_state WHERE tenant_id = $1",
            )
            .bind(tenant_id)
            .fetch_all(&stack.pool)
            .await?;

            let second = admin.sync_all().await?;
            let activities = scheduled_activities(&stack, tenant_id, &second).await?;
            assert_eq!(activities, ["local prepare_sync", "local sync_tenants", "local finish_run"], "{second}");
            record_run_history(&stack, tenant_id, &second, "sync_delta_group").await?;
            assert_eq!(second["status"], "completed", "{second}");
            for result in tenant_results(&second) {
                assert_eq!((result["status"].as_str(), result["mode"].as_str()), (Some("completed"), Some("delta")), "{result}");
            }
            assert!(
                simulator.request_log().iter().any(|request| request.path.ends_with("/users/delta") && request.query.as_deref().is_some_and(|query| query.contains("deltatoken") || query.contains("token"))),
                "the second sync read from the stored delta link"
            );
            // Each tenant's one-page round is read once by its group; the changed tenant's,
            // which creates a contact, once more by its own sync, whose read made while it
            // took the lease is the one it used (no second read).
            let delta_reads = simulator.request_log().iter().filter(|request| request.path.ends_with("/users/delta")).count();
            assert_eq!(delta_reads, msp.tenants.len() + 1, "delta page reads in the second sync");
            // A tenant whose delta round brought no change costs no page transaction (its
            // result never got a cursor), only its new delta link; the changed tenant's did.
            let second_run = Uuid::parse_str(second["run_id"].as_str().unwrap_or_default())?;
            let cursors: Vec<(String, Option<String>, bool)> = sqlx::query_as(
                "SELECT mt.entra_tenant_id, r.cursor, d.issued_at > r.started_at
                 FROM run_tenant_results r
                 JOIN managed_tenants mt ON mt.tenant_id = r.tenant_id AND mt.managed_tenant_id = r.managed_tenant_id
                 JOIN delta_state d ON d.tenant_id = r.tenant_id AND d.managed_tenant_id = r.managed_tenant_id
                 WHERE r.tenant_id = $1 AND r.run_id = $2",
            )
            .bind(tenant_id)
            .bind(second_run)
            .fetch_all(&stack.pool)
            .await?;
            assert_eq!(cursors.len(), msp.tenants.len());
            for (entra_tenant_id, cursor, link_saved) in &cursors {
                assert!(link_saved, "{entra_tenant_id}: the new delta link is saved");
                if *entra_tenant_id == first.tenant_id {
                    assert!(cursor.is_some(), "the changed tenant's batch committed");
                } else {
                    assert_eq!(cursor, &None, "{entra_tenant_id}: an empty delta round wrote no batch");
                }
            }
            assert_eq!(contact_state(&stack, tenant_id, &added.id).await?, Some((true, None)), "new upstream user created");
            assert_eq!(contact_state(&stack, tenant_id, &disabled).await?, Some((false, Some("disabled_upstream".to_owned()))));
            assert_eq!(contact_state(&stack, tenant_id, &deleted).await?, Some((false, Some("deleted_upstream".to_owned()))));
            let contacts_after_delta = stack.count(&format!("SELECT count(*) FROM contacts WHERE tenant_id = '{tenant_id}'")).await?;
            assert_eq!(contacts_after_delta, contacts_after_initial + 1, "only the new user was added");

            // A replay of the same delta round (as after a lost delta link save) changes
            // nothing: the same entries again, repeated and in another order.
            for (managed_tenant_id, link, issued_at) in &links_before {
                sqlx::query("UPDATE delta_state SET delta_link = $3, issued_at = $4 WHERE tenant_id = $1 AND managed_tenant_id = $2")
                    .bind(tenant_id)
                    .bind(managed_tenant_id)
                    .bind(link)
                    .bind(issued_at)
                    .execute(&stack.pool)
                    .await?;
            }
            let third = admin.sync_all().await?;
            assert_eq!(third["status"], "completed", "{third}");
            for result in tenant_results(&third) {
                assert_eq!(result["mode"], "delta", "{result}");
            }
            assert!(third["totals"]["seen"].as_u64().unwrap_or(0) >= 3, "the round was replayed: {third}");
            assert_eq!(third["totals"]["created"], 0, "{third}");
            assert_eq!(third["totals"]["linked"], 0, "{third}");
            assert_eq!(third["totals"]["inactivated"], 0, "{third}");
            assert_eq!(third["totals"]["reactivated"], 0, "{third}");
            assert_eq!(
                stack.count(&format!("SELECT count(*) FROM contacts WHERE tenant_id = '{tenant_id}'")).await?,
                contacts_after_delta
            );
            assert_eq!(contact_state(&stack, tenant_id, &disabled).await?, Some((false, Some("disabled_upstream".to_owned()))));
            assert_eq!(contact_state(&stack, tenant_id, &deleted).await?, Some((false, Some("deleted_upstream".to_owned()))));

            // Tenant access: one customer loses consent; it fails with remediation, others go on.
            let second_tenant = &msp.tenants[1];
            simulator
                .set_consent_fault(&second_tenant.tenant_id, Some(ConsentFault::GraphRequestDenied))?;
            let partial = admin.sync_all().await?;
            assert_eq!(partial["status"], "partial", "{partial}");
            let failed: Vec<Value> = tenant_results(&partial).into_iter().filter(|result| result["status"] == "failed").collect();
            assert_eq!(failed.len(), 1, "{partial}");
            assert_eq!(failed[0]["error"]["class"], "tenant_access", "{partial}");
            let remediation = failed[0]["error"]["remediation"].as_str().unwrap_or_default().to_owned();
            assert!(remediation.contains("adminconsent") || remediation.to_lowercase().contains("gdap"), "{remediation}");
            // The fix needs no restart: the next run gets fresh tokens and succeeds.
            simulator.set_consent_fault(&second_tenant.tenant_id, None)?;
            let recovered = admin.sync_all().await?;
            assert_eq!(recovered["status"], "completed", "{recovered}");
            // The failing tenant ended in its group (a failure retrying cannot fix) and the
            // others went on in the same activity.
            let activities = scheduled_activities(&stack, tenant_id, &partial).await?;
            assert_eq!(activities, ["local prepare_sync", "local sync_tenants", "local finish_run"], "{partial}");

            // A tenant of the group that fails in a way a retry fixes (a day-long Retry-After,
            // over the 3 s cap) is handed back and synced on its own with the tenant retry
            // policy; the run completes.
            simulator
                .add_fault(FaultSpec {
                    kind: FaultKind::Throttle { retry_after_secs: 86_400 },
                    path_prefix: "/graph/v1.0/users/delta".into(),
                    tenant: Some(msp.tenants[0].tenant_id.clone()),
                    count: Some(1),
                })?;
            let handed_back = admin.sync_all().await?;
            assert_eq!(handed_back["status"], "completed", "{handed_back}");
            // It was asked again only after the (capped) Retry-After.
            let log = simulator.request_log();
            let throttled_at = log
                .iter()
                .rposition(|request| request.path.ends_with("/users/delta") && request.status == 429)
                .context("the throttled delta request")?;
            let asked_again = log[throttled_at + 1..]
                .iter()
                .filter(|request| request.path.ends_with("/users/delta"))
                .map(|request| request.at)
                .max()
                .context("the tenant was asked again")?;
            assert!(
                asked_again.duration_since(log[throttled_at].at) >= Duration::from_secs(3),
                "asked again {:?} after the 429",
                asked_again.duration_since(log[throttled_at].at)
            );
            record_run_history(&stack, tenant_id, &handed_back, "sync_delta_group_handed_back").await?;
            let activities = scheduled_activities(&stack, tenant_id, &handed_back).await?;
            assert_eq!(
                activities,
                ["local prepare_sync", "local sync_tenants", "local sync_tenant", "local finish_run"],
                "{handed_back}"
            );

            // Cancelled while its small tenants' delta rounds are being read (a local
            // activity, which sends no heartbeats): the workflow sees the cancel when the
            // worker heartbeats its open workflow task (within about 8 s), the activity stops,
            // and the run ends `cancelled` with no tenant left running and nothing of the run
            // written after its end. Each delta read would answer in ten minutes, far past the
            // wait for the run's end, so only the cancel can end the run in time.
            let slow_reads = simulator
                .add_fault(FaultSpec::everywhere(FaultKind::Delay { ms: 600_000 }, "/graph/v1.0/users/delta"))?;
            let started = admin.post("/api/v1/integrations/entra/sync", json!({"scope": "all"})).await?;
            let run_id = Uuid::parse_str(started["run_id"].as_str().context("run_id")?)?;
            crate::workflow_support::wait_for_a_tenant(&stack.pool, run_id, true).await?;
            admin.post(&format!("/api/v1/integrations/entra/sync/runs/{run_id}/cancel"), json!({})).await?;
            let cancelled = admin.wait_for_run(&run_id.to_string()).await?;
            simulator.remove_fault(slow_reads);
            assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
            for result in tenant_results(&cancelled) {
                assert_eq!(result["status"], "cancelled", "{result}");
            }
            let written_after_end: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM run_tenant_results t JOIN runs r USING (tenant_id, run_id)
                 WHERE t.run_id = $1 AND (t.finished_at IS NULL OR t.finished_at > r.finished_at)",
            )
            .bind(run_id)
            .fetch_one(&stack.pool)
            .await?;
            assert_eq!(written_after_end, 0, "tenant results ended after the run: {cancelled}");
            let cancel_to_end: f64 = sqlx::query_scalar("SELECT extract(epoch FROM finished_at - cancel_requested_at)::float8 FROM runs WHERE run_id = $1")
                .bind(run_id)
                .fetch_one(&stack.pool)
                .await?;
            eprintln!("direct: the cancelled run ended {cancel_to_end:.3} s after the cancel");
            // The group's tenants are recorded as cancelled by the workflow once the activity
            // acknowledged the cancel.
            let activities = scheduled_activities(&stack, tenant_id, &cancelled).await?;
            assert_eq!(
                activities,
                ["local prepare_sync", "local sync_tenants", "record_tenants_ended", "local finish_run"],
                "{cancelled}"
            );

            // An expired delta link (and a user hard-deleted meanwhile): a full enumeration,
            // after which the absent user's contact is inactive.
            // A delta link older than six days is not used either (tokens last seven).
            sqlx::query(
                "UPDATE delta_state d SET issued_at = now() - interval '7 days'
                 FROM managed_tenants mt
                 WHERE mt.tenant_id = d.tenant_id AND mt.managed_tenant_id = d.managed_tenant_id
                   AND d.tenant_id = $1 AND lower(mt.entra_tenant_id) = lower($2)",
            )
            .bind(tenant_id)
            .bind(&msp.tenants[2].tenant_id)
            .execute(&stack.pool)
            .await?;
            let gone = linked[2].clone();
            simulator.hard_delete_user(&first.tenant_id, &gone)?;
            simulator.expire_delta_tokens(&first.tenant_id)?;
            // The preflight reads a direct connection too (a full enumeration), shows the absent
            // user's inactivation and that the guard would not hold it, and writes nothing.
            let preflight = admin.post("/api/v1/integrations/entra/sync/preflight", json!({"scope": "all"})).await?;
            let first_preflight = preflight["tenants"]
                .as_array()
                .and_then(|tenants| tenants.iter().find(|tenant| tenant["entra_tenant_id"].as_str().is_some_and(|id| id.eq_ignore_ascii_case(&first.tenant_id))))
                .cloned()
                .context("the first tenant in the preflight")?;
            assert_eq!(first_preflight["error"], Value::Null, "{preflight}");
            assert_eq!(first_preflight["complete"], true, "{preflight}");
            assert_eq!(first_preflight["inactivations"]["absent_users"], 1, "{preflight}");
            assert_eq!(first_preflight["inactivations"]["guard_would_hold"], false, "{preflight}");
            assert_eq!(contact_state(&stack, tenant_id, &gone).await?.map(|state| state.0), Some(true), "the preflight wrote nothing");
            let resynced = admin.sync_all().await?;
            assert_eq!(resynced["status"], "completed", "{resynced}");
            let modes: Vec<&str> = tenant_results(&resynced).iter().map(|result| if result["mode"] == "full" { "full" } else { "delta" }).collect();
            assert_eq!(modes.iter().filter(|mode| **mode == "full").count(), 2, "{resynced}");
            assert_eq!(contact_state(&stack, tenant_id, &gone).await?, Some((false, Some("deleted_upstream".to_owned()))));

            // A grant Microsoft no longer accepts: the connection needs reconnecting and syncs stop.
            simulator.revoke_access_tokens();
            simulator
                .add_fault(FaultSpec::everywhere(FaultKind::TokenError { aadsts: 70008 }, "/login"))?;
            let refused = admin.sync_all().await?;
            assert_ne!(refused["status"], "completed", "{refused}");
            let status = admin.get("/api/v1/integrations/entra").await?;
            let status_text = status.to_string();
            assert!(status_text.contains("needs_reconnect"), "{status}");
            let run_text = refused.to_string().to_lowercase();
            assert!(run_text.contains("reconnect"), "{refused}");
            // `entra-sync doctor` sees the same: services reachable, this connection broken.
            let findings = entra_sync::doctor::run_checks(&stack.settings).await;
            let report = entra_sync::doctor::render(&findings);
            let severity_of = |check: &str| {
                findings
                    .iter()
                    .filter(|finding| finding.check == check)
                    .map(|finding| finding.severity)
                    .max()
            };
            assert_eq!(severity_of("postgres"), Some(Severity::Ok), "{report}");
            assert_eq!(severity_of("temporal"), Some(Severity::Ok), "{report}");
            assert_eq!(severity_of("client secret"), Some(Severity::Ok), "{report}");
            assert!(
                findings.iter().any(|finding| finding.severity == Severity::Error
                    && finding.message.contains(&tenant_id.to_string())
                    && finding.remediation.as_deref().is_some_and(|fix| fix.contains("reconnect"))),
                "{report}"
            );
            assert!(!report.contains(&simulator.config().app_client_secret), "{report}");
            simulator.clear_faults();

            // Switching back to CIPP clears the direct token set; disconnect keeps the data.
            admin
                .post(
                    "/api/v1/integrations/entra/connect/cipp",
                    json!({"base_url": simulator.cipp_base_url(), "api_token": simulator.config().cipp_api_token}),
                )
                .await?;
            let record = stack.store.get_connection(tenant_id).await?.context("connection")?;
            assert!(matches!(record.credentials, Some(ConnectionCredentials::Cipp(_))), "{:?}", record.credentials);
            let counts = |stack: &Stack| {
                let pool = stack.pool.clone();
                async move {
                    let mut counts = Vec::new();
                    for table in ["mappings", "runs", "links", "contacts"] {
                        let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"))
                            .bind(tenant_id)
                            .fetch_one(&pool)
                            .await?;
                        counts.push(count);
                    }
                    anyhow::Ok(counts)
                }
            };
            let before = counts(&stack).await?;
            admin.post("/api/v1/integrations/entra/disconnect", json!({})).await?;
            assert_eq!(counts(&stack).await?, before, "disconnect kept mappings, runs, links and contacts");
            let record = stack.store.get_connection(tenant_id).await?.context("connection")?;
            assert_eq!(record.credentials, None);
            Ok(())
        })
        .await;
    let _ = std::fs::remove_dir_all(&secrets_directory);
    outcome
}

/// A PSA tenant whose direct connection holds a real token set from the simulator, with the
/// access token already inside the five-minute refresh window.
async fn stored_direct_connection(stack: &Stack) -> Result<(Uuid, Arc<OAuthClient>)> {
    let simulator = &stack.simulator;
    let oauth = Arc::new(oauth_client(stack)?);
    let request = oauth.begin_authorization(None)?;
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .get(request.url.clone())
        .send()
        .await?;
    let location = url::Url::parse(
        redirect
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .context("no Location")?,
    )?;
    let code = location
        .query_pairs()
        .find(|(name, _)| name == "code")
        .map(|(_, value)| value.into_owned())
        .context("no code")?;
    let token_set = oauth
        .exchange_code(&SecretString::from(code), &request.code_verifier)
        .await?;
    let tenant = stack
        .store
        .create_psa_tenant(&format!("rotation-{}", simulator.config().seed))
        .await?;
    stack
        .store
        .save_direct_connection(
            tenant.tenant_id,
            &DirectTokenSetRecord {
                access_token: token_set.access_token.expose_secret().to_owned(),
                refresh_token: token_set
                    .refresh_token
                    .as_ref()
                    .context("no refresh token")?
                    .expose_secret()
                    .to_owned(),
                expires_at: chrono::Utc::now() + chrono::Duration::minutes(4),
                scope: token_set.scope.clone(),
            },
        )
        .await?;
    Ok((tenant.tenant_id, oauth))
}

/// The activity types a run's workflow scheduled, in order (each once, however often it was
/// retried).
/// Saves a sync run's workflow history for the replay test (`ENTRA_SYNC_RECORD_HISTORIES`).
async fn record_run_history(stack: &Stack, tenant_id: Uuid, run: &Value, name: &str) -> Result<()> {
    let run_id = run["run_id"].as_str().context("run_id")?;
    let workflow_id =
        entra_sync_workflows::workflow_id_for_run("sync", &tenant_id.to_string(), run_id);
    let client = crate::workflow_support::temporal(stack).await?;
    crate::workflow_support::record_history(&client, &workflow_id, name).await
}

async fn scheduled_activities(stack: &Stack, tenant_id: Uuid, run: &Value) -> Result<Vec<String>> {
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    let run_id = run["run_id"].as_str().context("run_id")?;
    let workflow_id =
        entra_sync_workflows::workflow_id_for_run("sync", &tenant_id.to_string(), run_id);
    let events = crate::workflow_support::temporal(stack)
        .await?
        .get_workflow_handle::<temporalio_client::UntypedWorkflow>(&workflow_id)
        .fetch_history(Default::default())
        .into_events()
        .await?;
    Ok(events
        .iter()
        .filter_map(|event| match &event.attributes {
            Some(Attributes::ActivityTaskScheduledEventAttributes(scheduled)) => scheduled
                .activity_type
                .as_ref()
                .map(|kind| kind.name.clone()),
            // A local activity is a marker whose data names its type.
            Some(Attributes::MarkerRecordedEventAttributes(marker))
                if marker.marker_name == "core_local_activity" =>
            {
                let data = marker.details.get("data")?.payloads.first()?;
                let data: Value = serde_json::from_slice(&data.data).ok()?;
                Some(format!("local {}", data["activity_type"].as_str()?))
            }
            _ => None,
        })
        .collect())
}

fn oauth_client(stack: &Stack) -> Result<OAuthClient> {
    let config = stack.simulator.config();
    Ok(OAuthClient::new(
        OAuthConfig {
            login_base_url: url::Url::parse(&stack.simulator.login_base_url())?,
            client_id: config.app_client_id.clone(),
            credential: AppCredential::ClientSecret(SecretString::from(
                config.app_client_secret.clone(),
            )),
            redirect_uri: Some(CALLBACK_URL.to_owned()),
            settings: SettingNames::MICROSOFT,
        },
        HttpSettings::default(),
        Arc::new(ThrottleStats::default()),
    )?)
}

/// Stands in for a separate worker process: its own pool, OAuth client and token source.
async fn worker_process(stack: &Stack, tenant_id: Uuid) -> Result<Arc<StoredRefreshTokens>> {
    let store = Store::connect_with(&stack.settings.database.url, 2)
        .await?
        .with_encryption_key(stack.settings.encryption_key()?);
    let oauth = Arc::new(oauth_client(stack)?);
    Ok(Arc::new(StoredRefreshTokens::new(
        store,
        tenant_id,
        oauth,
        stack.simulator.config().partner_tenant_id.clone(),
    )))
}

fn token_grants(stack: &Stack) -> usize {
    stack
        .simulator
        .request_log()
        .iter()
        .filter(|request| {
            request.method == "POST"
                && request.path.ends_with("/oauth2/v2.0/token")
                && request.status == 200
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_concurrent_refreshes_rotate_once_across_processes() -> Result<()> {
    let stack = Stack::start(simulator_config()).await?;
    let (tenant_id, _) = stored_direct_connection(&stack).await?;
    let version_before = connection_fingerprint(&stack, tenant_id)
        .await?
        .context("row")?
        .2;
    let mut processes = Vec::new();
    for _ in 0..6 {
        processes.push(worker_process(&stack, tenant_id).await?);
    }
    stack.simulator.clear_request_log();
    let tokens: Vec<SecretString> = futures_join(processes.iter().map(|process| {
        let process = process.clone();
        tokio::spawn(async move { process.partner_access_token().await })
    }))
    .await?;
    assert_eq!(
        token_grants(&stack),
        1,
        "exactly one refresh-token redemption"
    );
    let version_after = connection_fingerprint(&stack, tenant_id)
        .await?
        .context("row")?
        .2;
    assert_eq!(
        version_after,
        version_before + 1,
        "exactly one rotation stored"
    );
    let first = tokens[0].expose_secret().to_owned();
    assert!(
        tokens.iter().all(|token| token.expose_secret() == first),
        "every caller has the new token"
    );
    let graph = url::Url::parse(&stack.simulator.graph_base_url())?;
    let oauth = oauth_client(&stack)?;
    entra_sync_directory::graph::probe(
        &graph,
        &tokens[0],
        &oauth.error_context(None),
        HttpSettings::default(),
        Arc::default(),
    )
    .await
    .context("the refreshed token works on Graph")?;

    // Customer-tenant tokens from several processes at once: each redemption rotates the
    // refresh token, and with the row lock none of them redeems a token already spent.
    stack.simulator.clear_request_log();
    let msp = stack.simulator.msp();
    let customers: Vec<String> = msp
        .tenants
        .iter()
        .map(|tenant| tenant.tenant_id.clone())
        .collect();
    let mut caches = Vec::new();
    for process in &processes {
        let oauth = Arc::new(oauth_client(&stack)?);
        caches.push(Arc::new(CustomerTokenCache::new(oauth, process.clone())));
    }
    let results: Vec<SecretString> =
        futures_join(caches.iter().enumerate().map(|(index, cache)| {
            let cache = cache.clone();
            let customer = customers[index % customers.len()].clone();
            tokio::spawn(async move { cache.access_token(&customer, GRAPH_DEFAULT_SCOPE).await })
        }))
        .await?;
    assert_eq!(results.len(), caches.len());
    assert_eq!(
        token_grants(&stack),
        caches.len(),
        "one redemption per process, none refused"
    );
    assert!(
        stack
            .simulator
            .request_log()
            .iter()
            .all(|request| !(request.path.ends_with("/token") && request.status >= 400)),
        "no redemption of a spent refresh token"
    );
    // The last stored refresh token is still the live one.
    let lease = stack.store.lease_direct_token_set(tenant_id).await?;
    let mut record = lease.token_set().clone();
    record.expires_at = chrono::Utc::now();
    lease.replace(&stack.store, &record).await?;
    processes[0]
        .partner_access_token()
        .await
        .context("the stored refresh token is current")?;

    // A grant Microsoft refuses at refresh time marks the connection `needs_reconnect`.
    let lease = stack.store.lease_direct_token_set(tenant_id).await?;
    let mut record = lease.token_set().clone();
    record.expires_at = chrono::Utc::now();
    lease.replace(&stack.store, &record).await?;
    stack.simulator.add_fault(FaultSpec::everywhere(
        FaultKind::TokenError { aadsts: 70008 },
        "/login",
    ))?;
    let refused = processes[1]
        .partner_access_token()
        .await
        .expect_err("the grant is refused");
    assert_eq!(refused.class(), "reauth_required", "{refused}");
    let connection = stack
        .store
        .get_connection(tenant_id)
        .await?
        .context("connection")?;
    assert_eq!(connection.status.as_str(), "needs_reconnect");
    let last_error = connection.last_error.unwrap_or_default().to_string();
    assert!(last_error.contains("reconnect"), "{last_error}");
    assert!(
        !last_error.contains(&record.refresh_token),
        "no token in the recorded error"
    );
    Ok(())
}

/// The token lease cannot outlive its lock (SPEC §2.1): with a slow token endpoint, two
/// workers refreshing at once redeem the refresh token exactly once and the rotation is
/// stored; a worker cancelled while its redemption is in flight releases the lease at once, so
/// the other worker refreshes without waiting for the lease's idle timeout, and nothing is
/// lost (the stored refresh token is still the live one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_token_endpoint_and_a_cancelled_refresh_lose_no_rotation() -> Result<()> {
    let stack = Stack::start(simulator_config()).await?;
    let (tenant_id, _) = stored_direct_connection(&stack).await?;
    let expire = || async {
        let lease = stack.store.lease_direct_token_set(tenant_id).await?;
        let mut record = lease.token_set().clone();
        record.expires_at = chrono::Utc::now();
        lease.replace(&stack.store, &record).await?;
        anyhow::Ok(())
    };
    let slow_login = |count: Option<u32>| FaultSpec {
        kind: FaultKind::Delay { ms: 1500 },
        path_prefix: "/login".into(),
        tenant: None,
        count,
    };
    let first = worker_process(&stack, tenant_id).await?;
    let second = worker_process(&stack, tenant_id).await?;

    // Two workers, one slow redemption.
    expire().await?;
    let version_before = connection_fingerprint(&stack, tenant_id)
        .await?
        .context("row")?
        .2;
    stack.simulator.add_fault(slow_login(None))?;
    stack.simulator.clear_request_log();
    let tokens: Vec<SecretString> = futures_join(
        [first.clone(), second.clone()]
            .into_iter()
            .map(|process| tokio::spawn(async move { process.partner_access_token().await })),
    )
    .await?;
    assert_eq!(token_grants(&stack), 1, "exactly one redemption");
    assert_eq!(tokens[0].expose_secret(), tokens[1].expose_secret());
    let version_after = connection_fingerprint(&stack, tenant_id)
        .await?
        .context("row")?
        .2;
    assert_eq!(version_after, version_before + 1, "the rotation was stored");
    stack.simulator.clear_faults();

    // A redemption cancelled in flight: its lease is released and the other worker refreshes.
    expire().await?;
    stack.simulator.add_fault(slow_login(Some(1)))?;
    stack.simulator.clear_request_log();
    let cancelled = tokio::spawn({
        let first = first.clone();
        async move { first.partner_access_token().await }
    });
    // Wait until the first worker holds the lease (its transaction sits idle while the slow
    // token endpoint answers).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let leased: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE state = 'idle in transaction' AND datname = current_database()",
        )
        .fetch_one(&stack.pool)
        .await?;
        if leased > 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the first worker never took the lease");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancelled.abort();
    let _ = cancelled.await;
    // Well inside the lease's 120 s idle timeout: the cancelled lease did not hold the lock.
    let refreshed = tokio::time::timeout(Duration::from_secs(60), second.partner_access_token())
        .await
        .context("the second worker waited on a lease the cancelled one should have released")??;
    assert!(!refreshed.expose_secret().is_empty());
    assert!(
        stack
            .simulator
            .request_log()
            .iter()
            .all(|request| !(request.path.ends_with("/token") && request.status >= 400)),
        "no spent refresh token was redeemed"
    );
    // The stored refresh token is the live one: one more refresh works.
    expire().await?;
    first
        .partner_access_token()
        .await
        .context("the stored refresh token is current")?;
    Ok(())
}

/// Awaits every spawned task and fails on the first error.
async fn futures_join<T>(
    handles: impl Iterator<
        Item = tokio::task::JoinHandle<Result<T, entra_sync_directory::error::DirectoryError>>,
    >,
) -> Result<Vec<T>> {
    let mut values = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        values.push(handle.await??);
    }
    Ok(values)
}

/// A Graph `users/delta` page that answers 200 without its `value` array (an empty object, as
/// a proxy in the way might send) is an error, never the end of the list: on a direct
/// connection, through the whole workflow, that tenant fails with class `invalid`, nobody is
/// inactivated or held, and the other tenants complete. MICROSOFT.md §3: a delta page carries
/// `value` and either `@odata.nextLink` or `@odata.deltaLink`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_page_without_its_collection_fails_the_tenant_and_inactivates_nobody() -> Result<()>
{
    let stack = Stack::start_with(simulator_config(), direct_environment).await?;
    let master = Api::new(&stack.api_url, &stack.master_key)?;
    let (tenant_id, admin) = psa_tenant(&master, "graph-collection-msp").await?;
    stack
        .run(async {
            let query = authorize(&admin).await?;
            let connected = admin.callback(&query, true).await?;
            assert_eq!(connected.status, 200, "{}", connected.body);
            let discovery = admin
                .post("/api/v1/integrations/entra/discovery", json!({}))
                .await?;
            let discovery = admin
                .wait_for_run(discovery["run_id"].as_str().context("run_id")?)
                .await?;
            assert_eq!(discovery["status"], "completed", "{discovery}");
            let managed = admin.get("/api/v1/integrations/entra/managed-tenants").await?;
            let managed = managed["items"].as_array().cloned().unwrap_or_default();
            let decisions: Vec<Value> = managed
                .iter()
                .map(|tenant| json!({"managed_tenant_id": tenant["managed_tenant_id"], "action": "create_client"}))
                .collect();
            let confirmed = admin
                .post(
                    "/api/v1/integrations/entra/mappings/confirm",
                    json!({"decisions": decisions, "start_initial_sync": true}),
                )
                .await?;
            let initial = admin
                .wait_for_run(confirmed["run_id"].as_str().context("run_id")?)
                .await?;
            assert_eq!(initial["status"], "completed", "{initial}");
            let inactive = format!(
                "SELECT count(*) FROM contacts WHERE tenant_id = '{tenant_id}' AND NOT is_active"
            );
            let inactive_before = stack.count(&inactive).await?;

            // The next round of the first tenant answers `{}` instead of its delta page.
            let broken = stack.simulator.msp().tenants[0].tenant_id.clone();
            stack.simulator.add_fault(FaultSpec {
                kind: FaultKind::OkBody {
                    body: "{}".to_owned(),
                    content_type: None,
                },
                path_prefix: "/graph/v1.0/users/delta".to_owned(),
                tenant: Some(broken.clone()),
                count: None,
            })?;
            let run = admin.sync_all().await?;
            stack.simulator.clear_faults();
            assert_eq!(run["status"], "partial", "{run}");
            let broken_managed = managed
                .iter()
                .find(|tenant| tenant["entra_tenant_id"] == broken.as_str())
                .context("the broken tenant")?["managed_tenant_id"]
                .clone();
            for result in tenant_results(&run) {
                if result["managed_tenant_id"] == broken_managed {
                    assert_eq!(result["status"], "failed", "{result}");
                    assert_eq!(result["error"]["class"], "invalid", "{result}");
                    assert!(
                        result["error"]["remediation"]
                            .as_str()
                            .is_some_and(|text| !text.is_empty()),
                        "{result}"
                    );
                } else {
                    assert_eq!(result["status"], "completed", "{result}");
                }
            }
            assert_eq!(stack.count(&inactive).await?, inactive_before);
            let pending = format!(
                "SELECT count(*) FROM pending_inactivations WHERE tenant_id = '{tenant_id}'"
            );
            assert_eq!(stack.count(&pending).await?, 0, "nothing queued or held");
            Ok(())
        })
        .await
}

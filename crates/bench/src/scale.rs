//! `make bench`, scale part: the product on the real stack — the simulator process over HTTP,
//! the `entra-sync serve` and `entra-sync worker` processes (release build), Temporal and
//! Postgres — measured from outside through the HTTP API, and printed as `name=value` lines,
//! each goal with `…_goal` and `…_met=yes|no`.
//!
//! Parts (`SCALE_PARTS`, comma-separated; default all, in this order):
//! - `mapping`: the mapping preview (`GET /mappings/preview`, which scores every managed tenant)
//!   for `SCALE_MAPPING_TENANTS` × `SCALE_MAPPING_CLIENTS` (2,000 × 5,000) and for twice both;
//!   goal under 2 s, and the doubled size within 2.5× the time.
//! - `lists`: every page of the contacts, runs, review items and audit lists (limit 500, and
//!   the first pages at the default 50) with `SCALE_LIST_CONTACTS` (200,000) contacts in the
//!   PSA tenant; goal: every page under 100 ms.
//! - `sync`: `SCALE_SYNC_TENANTS` / `SCALE_SYNC_USERS` (200 / 40,000, log-normal sizes with
//!   median `SCALE_SIZE_MEDIAN`, 61): a CIPP initial sync, a direct initial sync, then 1% of the
//!   users changed in the simulator and a direct delta sync, as a share of the initial (goal
//!   5%). Each delta figure is the median of `SCALE_DELTA_SYNCS` (3) such changes and syncs,
//!   each after a `VACUUM ANALYZE` (what autovacuum would have done before a scheduled delta).
//! - `pages`: one managed tenant of `SCALE_PAGES_USERS` (50,000) users, a direct initial sync
//!   read through `users/delta` in 999-user pages, then the same directory into a second PSA
//!   tenant in 100-user pages (Graph's delta page size "can vary", MICROSOFT.md §3); goal: the
//!   small pages within 1.3× the time of the large ones. Then 1% of the users changed and a
//!   delta sync of the first PSA tenant, as a share of its initial sync (goal: where it was when
//!   this was measured first, 1.1%).
//! - `large`: `SCALE_LARGE_TENANTS` / `SCALE_LARGE_USERS` (1,000 / 200,000): a CIPP initial
//!   sync in users/s against the store-only rate of the same `make bench`
//!   (`STORE_USERS_PER_SECOND`, from `reconcile-bench`; goal ≥ 50%).
//!
//! Every sync prints where the time went — Postgres execution time (`pg_stat_statements`),
//! the worker's and Temporal's CPU seconds (`/proc`) — and the events of the run's workflow
//! histories (`temporal workflow describe`: the run's own and each batch child's), with the
//! longest history projected to 20,000 tenants against Temporal's 51,200-event limit.
//!
//! Seeding goes through the simulator's admin API and the product's HTTP API (PSA tenant,
//! clients, connection, discovery, mapping); the bulk rows only the mapping and list parts
//! need (thousands of clients and managed tenants, 200,000 contacts, runs, review items,
//! audit entries) are written with the store's bulk calls and SQL, as syncs would have left
//! them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use entra_sync::demo::{create_psa_tenant, ApiClient};
use entra_sync_domain::model::ContactFields;
use entra_sync_store::discovery::{DiscoveredTenantRecord, TenantDomain};
use entra_sync_store::psa::{NewClient, NewContact};
use entra_sync_store::runs::{NewRun, RunKind, RunScope, RunStatus, RunTrigger};
use entra_sync_store::Store;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// The simulator's default credentials (crates/simulator, `SimulatorConfig::default`).
const CIPP_API_TOKEN: &str = "sim-cipp-api-token";
const APP_CLIENT_ID: &str = "5a1e0000-0000-4000-8000-00000000a001";
const APP_CLIENT_SECRET: &str = "sim-app-secret-value";
const PARTNER_TENANT_ID: &str = "9a57e000-0000-4000-8000-0000000000f1";
/// The callback the API is configured with; the bench plays the browser, so nothing is ever
/// called at this host.
const CALLBACK_URL: &str = "http://localhost:9/auth/oauth2/microsoft/callback";
/// Temporal's default limit of events in one workflow history.
const TEMPORAL_EVENT_LIMIT: f64 = 51_200.0;

struct Config {
    server_url: String,
    temporal_address: String,
    temporal_cli: String,
    temporal_pid: Option<u32>,
    entra_sync_bin: PathBuf,
    simulator_bin: PathBuf,
    log_dir: PathBuf,
    parts: Vec<String>,
    store_users_per_second: Option<f64>,
}

fn env_number(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name} must be a whole number, got {value:?}")),
        Err(_) => Ok(default),
    }
}

fn required(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} must be set; run `make bench`"))
}

/// Prints a figure as soon as it is measured.
fn figure(name: &str, value: impl std::fmt::Display) {
    println!("{name}={value}");
}

fn goal(name: &str, goal: &str, met: bool) {
    figure(&format!("{name}_goal"), goal);
    figure(&format!("{name}_met"), if met { "yes" } else { "no" });
}

#[tokio::main]
async fn main() -> Result<()> {
    let config = Config {
        server_url: required("DATABASE_URL")?,
        temporal_address: required("TEMPORAL_ADDRESS")?,
        temporal_cli: required("TEMPORAL_CLI")?,
        temporal_pid: std::env::var("TEMPORAL_PID")
            .ok()
            .and_then(|pid| pid.trim().parse().ok()),
        entra_sync_bin: required("ENTRA_SYNC_BIN")?.into(),
        simulator_bin: required("SIMULATOR_BIN")?.into(),
        log_dir: std::env::var("SCALE_LOG_DIR")
            .unwrap_or_else(|_| std::env::temp_dir().display().to_string())
            .into(),
        parts: std::env::var("SCALE_PARTS")
            .unwrap_or_else(|_| "mapping,lists,sync,pages,large".to_owned())
            .split(',')
            .map(|part| part.trim().to_owned())
            .filter(|part| !part.is_empty())
            .collect(),
        store_users_per_second: std::env::var("STORE_USERS_PER_SECOND")
            .ok()
            .and_then(|value| value.trim().parse().ok()),
    };
    std::fs::create_dir_all(&config.log_dir).context("create the log directory")?;
    for part in &config.parts {
        let started = Instant::now();
        match part.as_str() {
            "mapping" => mapping_part(&config).await?,
            "lists" => lists_part(&config).await?,
            "sync" => sync_part(&config).await?,
            "pages" => pages_part(&config).await?,
            "large" => large_part(&config).await?,
            other => {
                bail!("unknown SCALE_PARTS entry {other:?}; use mapping, lists, sync, pages, large")
            }
        }
        figure(
            &format!("scale_{part}_part_seconds"),
            format!("{:.0}", started.elapsed().as_secs_f64()),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The stack: a database of its own, the simulator, the API and a worker as processes
// ---------------------------------------------------------------------------------------

struct Stack {
    server_url: String,
    database: String,
    database_url: String,
    api_url: String,
    master_key: String,
    simulator_url: Option<String>,
    worker_pid: Option<u32>,
    /// The worker's `/metrics` (its operations listener).
    worker_metrics_url: Option<String>,
    children: Vec<Child>,
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn random_name(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

/// Polls `url` until it answers 2xx, for two minutes at most.
async fn wait_http(url: &str, what: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(response) = client.get(url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{what} did not answer {url} within two minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Stack {
    /// Starts a stack on a fresh database: the simulator with (tenants, users, size median)
    /// when given, the API, and a worker when asked.
    async fn start(
        config: &Config,
        name: &str,
        simulator: Option<(usize, usize, usize)>,
        worker: bool,
    ) -> Result<Stack> {
        let database = random_name("scale");
        let mut admin = PgConnection::connect(&config.server_url).await?;
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let database_url = match config.server_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{database}"),
            None => bail!("DATABASE_URL has no database name"),
        };
        let store = Store::connect_with(&database_url, 2).await?;
        store.migrate().await?;
        store.pool().close().await;

        let mut children = Vec::new();
        let log = |process: &str| -> Result<(Stdio, Stdio)> {
            let file = std::fs::File::create(config.log_dir.join(format!("{name}-{process}.log")))?;
            Ok((file.try_clone()?.into(), file.into()))
        };
        let simulator_url = match simulator {
            Some((tenants, users, median)) => {
                let port = free_port()?;
                let (stdout, stderr) = log("simulator")?;
                children.push(
                    Command::new(&config.simulator_bin)
                        .args(["--seed", "42", "--tenants", &tenants.to_string()])
                        .args(["--users", &users.to_string()])
                        .args(["--size-median", &median.to_string()])
                        .args(["--listen", &format!("127.0.0.1:{port}")])
                        .stdout(stdout)
                        .stderr(stderr)
                        .kill_on_drop(true)
                        .spawn()
                        .context("start the simulator")?,
                );
                let url = format!("http://127.0.0.1:{port}");
                wait_http(&format!("{url}/_admin/state"), "the simulator").await?;
                Some(url)
            }
            None => None,
        };
        let master_key = random_name("master");
        let api_port = free_port()?;
        let simulator_base = simulator_url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:9".to_owned());
        let environment: Vec<(&str, String)> = vec![
            ("DATABASE_URL", database_url.clone()),
            ("TEMPORAL_ADDRESS", config.temporal_address.clone()),
            ("TEMPORAL_TASK_QUEUE", random_name("queue")),
            ("ENTRA_SYNC_LISTEN", format!("127.0.0.1:{api_port}")),
            ("ENTRA_SYNC_MASTER_KEY", master_key.clone()),
            (
                "ENTRA_SYNC_ENCRYPTION_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned(),
            ),
            (
                "MICROSOFT_LOGIN_BASE_URL",
                format!("{simulator_base}/login"),
            ),
            (
                "MICROSOFT_GRAPH_BASE_URL",
                format!("{simulator_base}/graph"),
            ),
            ("MICROSOFT_CLIENT_ID", APP_CLIENT_ID.to_owned()),
            ("MICROSOFT_CLIENT_SECRET", APP_CLIENT_SECRET.to_owned()),
            ("MICROSOFT_TENANT_ID", PARTNER_TENANT_ID.to_owned()),
            ("MICROSOFT_OAUTH_CALLBACK_URL", CALLBACK_URL.to_owned()),
            // `SCALE_RUST_LOG` (default `warn`) sets the processes' log filter, for a timeline.
            (
                "RUST_LOG",
                std::env::var("SCALE_RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            ),
            // The simulator listens on loopback, which the outbound policy refuses otherwise.
            ("ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS", "true".to_owned()),
        ];
        let spawn = |command: &str, stdout: Stdio, stderr: Stdio, extra: &[(&str, String)]| {
            Command::new(&config.entra_sync_bin)
                .arg(command)
                .envs(
                    environment
                        .iter()
                        .chain(extra)
                        .map(|(key, value)| (*key, value.as_str())),
                )
                .stdout(stdout)
                .stderr(stderr)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("start `entra-sync {command}`"))
        };
        let (stdout, stderr) = log("api")?;
        children.push(spawn("serve", stdout, stderr, &[])?);
        let api_url = format!("http://127.0.0.1:{api_port}");
        wait_http(&format!("{api_url}/healthz"), "the API").await?;
        let mut worker_pid = None;
        let mut worker_metrics_url = None;
        if worker {
            let (stdout, stderr) = log("worker")?;
            let metrics_listen = format!("127.0.0.1:{}", free_port()?);
            let child = spawn(
                "worker",
                stdout,
                stderr,
                &[("ENTRA_SYNC__METRICS__LISTEN", metrics_listen.clone())],
            )?;
            worker_pid = child.id();
            children.push(child);
            let url = format!("http://{metrics_listen}/metrics");
            wait_http(&url, "the worker's metrics").await?;
            worker_metrics_url = Some(url);
        }
        Ok(Stack {
            server_url: config.server_url.clone(),
            database,
            database_url,
            api_url,
            master_key,
            simulator_url,
            worker_pid,
            worker_metrics_url,
            children,
        })
    }

    fn master(&self) -> Result<ApiClient> {
        ApiClient::new(&self.api_url, &self.master_key)
    }

    fn simulator(&self) -> Result<&str> {
        self.simulator_url.as_deref().context("no simulator")
    }

    /// A PSA tenant with an admin and every Entra flag; returns its id and the admin's client.
    async fn psa_tenant(&self, name: &str) -> Result<(Uuid, ApiClient, String)> {
        let (tenant_id, admin_key) = create_psa_tenant(
            &self.master()?,
            name,
            &format!("admin@{}.example", slug(name)),
        )
        .await?;
        let admin = ApiClient::new(&self.api_url, &admin_key)?;
        Ok((Uuid::parse_str(&tenant_id)?, admin, admin_key))
    }

    /// Stops the processes and drops the database.
    async fn stop(mut self) -> Result<()> {
        for child in &mut self.children {
            child.kill().await.ok();
        }
        let mut admin = PgConnection::connect(&self.server_url).await?;
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.database))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Mapping preview
// ---------------------------------------------------------------------------------------

const SYLLABLES: [&str; 24] = [
    "al", "ber", "cor", "dan", "el", "fa", "gor", "hel", "ir", "jan", "kel", "lor", "man", "nor",
    "ost", "par", "quin", "ros", "sel", "tor", "ul", "ven", "wes", "zan",
];
const INDUSTRIES: [&str; 12] = [
    "Dental",
    "Logistics",
    "Legal",
    "Accounting",
    "Engineering",
    "Realty",
    "Insurance",
    "Bakery",
    "Veterinary",
    "Construction",
    "Architects",
    "Solutions",
];
const SUFFIXES: [&str; 6] = ["", "", "Inc", "LLC", "Ltd", "GmbH"];

/// A company name such as "Korwesal Dental LLC".
fn company_name(rng: &mut StdRng) -> String {
    let syllables = rng.gen_range(2..=4);
    let word: String = (0..syllables)
        .map(|_| SYLLABLES[rng.gen_range(0..SYLLABLES.len())])
        .collect();
    let mut letters = word.chars();
    let word: String = letters
        .next()
        .map(|first| first.to_uppercase().chain(letters).collect())
        .unwrap_or_default();
    let industry = INDUSTRIES[rng.gen_range(0..INDUSTRIES.len())];
    let suffix = SUFFIXES[rng.gen_range(0..SUFFIXES.len())];
    format!("{word} {industry} {suffix}").trim().to_owned()
}

fn slug(name: &str) -> String {
    name.to_lowercase()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join("-")
}

/// Seeds `clients` clients and `tenants` discovered managed tenants in a new PSA tenant: a
/// third of the tenants share their primary domain with a client, a tenth a client's secondary
/// domain, a fifth carry a client's name with a typo and no shared domain, the rest match
/// nothing. Returns the admin's client.
async fn seed_mapping(stack: &Stack, tenants: usize, clients: usize) -> Result<ApiClient> {
    let (tenant_id, admin, _) = stack.psa_tenant("Scale MSP").await?;
    let mut rng = StdRng::seed_from_u64(7);
    let client_rows: Vec<NewClient> = (0..clients)
        .map(|index| {
            let name = company_name(&mut rng);
            NewClient {
                domains: vec![format!("{}-{index}.example", slug(&name))],
                secondary_domains: vec![format!("{}-{index}.co.uk", slug(&name))],
                name,
            }
        })
        .collect();
    let store = Store::connect_with(&stack.database_url, 2).await?;
    store.insert_clients_bulk(tenant_id, &client_rows).await?;
    let records: Vec<DiscoveredTenantRecord> = (0..tenants)
        .map(|index| {
            let client = &client_rows[rng.gen_range(0..client_rows.len())];
            let (display_name, domain) = match index % 30 {
                0..=9 => (client.name.clone(), client.domains[0].clone()),
                10..=12 => (client.name.clone(), client.secondary_domains[0].clone()),
                13..=18 => {
                    // A typo: the second letter doubled (names are ASCII here).
                    let mut name = client.name.clone();
                    if let Some(letter) = name.get(1..2).map(str::to_owned) {
                        name.insert_str(1, &letter);
                    }
                    (name, format!("tenant-{index}.example"))
                }
                _ => {
                    let name = company_name(&mut rng);
                    let domain = format!("{}-t{index}.example", slug(&name));
                    (name, domain)
                }
            };
            DiscoveredTenantRecord {
                entra_tenant_id: Uuid::from_u128(0x0005_ca1e_0000_0000 + index as u128).to_string(),
                display_name,
                domains: vec![
                    TenantDomain {
                        name: domain,
                        is_default: true,
                        is_initial: false,
                    },
                    TenantDomain {
                        name: format!("t{index}.onmicrosoft.com"),
                        is_default: false,
                        is_initial: true,
                    },
                ],
            }
        })
        .collect();
    let run = store
        .start_run(&NewRun {
            tenant_id,
            kind: RunKind::Discovery,
            trigger: RunTrigger::Initial,
            scope: RunScope::All,
            requested_by: Some("bench".to_owned()),
        })
        .await?;
    store
        .record_discovery(tenant_id, run.run_id, &records)
        .await?;
    store
        .finish_run(tenant_id, run.run_id, RunStatus::Completed, None)
        .await?;
    // What autovacuum would have done by the time an admin previews: otherwise its pass over
    // the freshly written rows competes with the timed requests for the two cores.
    sqlx::query("VACUUM ANALYZE clients, managed_tenants, mappings")
        .execute(store.pool())
        .await?;
    store.pool().close().await;
    Ok(admin)
}

/// How many timed requests the preview's figure is the median of. Each takes a tenth of a
/// second or two; on a shared 2-core machine single requests vary by a third, which a median
/// of three did not settle (doubling ratios of 1.97 to 2.67 for the same build).
const PREVIEW_REQUESTS: usize = 7;

/// The median of [`PREVIEW_REQUESTS`] requests of `path` (after one untimed request, which
/// warms the server's connections and caches), in seconds, and the last answer.
async fn median_request_seconds(client: &ApiClient, path: &str) -> Result<(f64, Value)> {
    let mut last = client.get(path).await?;
    let mut times = Vec::new();
    for _ in 0..PREVIEW_REQUESTS {
        let started = Instant::now();
        last = client.get(path).await?;
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], last))
}

async fn mapping_part(config: &Config) -> Result<()> {
    let tenants = env_number("SCALE_MAPPING_TENANTS", 2_000)?;
    let clients = env_number("SCALE_MAPPING_CLIENTS", 5_000)?;
    let mut seconds = Vec::new();
    for factor in [1, 2] {
        let (tenants, clients) = (tenants * factor, clients * factor);
        let stack = Stack::start(config, "mapping", None, false).await?;
        let admin = seed_mapping(&stack, tenants, clients).await?;
        // Any page makes the API score every tenant (the preview is computed whole).
        let (elapsed, page) = median_request_seconds(
            &admin,
            "/api/v1/integrations/entra/mappings/preview?limit=500",
        )
        .await?;
        let mut states: BTreeMap<String, usize> = BTreeMap::new();
        for item in page["items"].as_array().into_iter().flatten() {
            *states
                .entry(item["state"].as_str().unwrap_or("?").to_owned())
                .or_insert(0) += 1;
        }
        if states.is_empty() {
            bail!("the mapping preview returned no items: {page}");
        }
        let label = format!("mapping_preview_{tenants}x{clients}");
        figure(&format!("{label}_seconds"), format!("{elapsed:.3}"));
        figure(
            &format!("{label}_first_page_states"),
            states
                .iter()
                .map(|(state, count)| format!("{state}:{count}"))
                .collect::<Vec<_>>()
                .join(","),
        );
        seconds.push(elapsed);
        stack.stop().await?;
    }
    if let [base, doubled] = seconds[..] {
        goal(
            &format!("mapping_preview_{tenants}x{clients}_seconds"),
            "<2",
            base < 2.0,
        );
        let ratio = doubled / base;
        figure("mapping_preview_doubled_ratio", format!("{ratio:.2}"));
        goal("mapping_preview_doubled_ratio", "<=2.5", ratio <= 2.5);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Lists
// ---------------------------------------------------------------------------------------

async fn lists_part(config: &Config) -> Result<()> {
    let contacts = env_number("SCALE_LIST_CONTACTS", 200_000)?;
    let others = env_number("SCALE_LIST_OTHER_ROWS", 20_000)?;
    let stack = Stack::start(config, "lists", None, false).await?;
    let (tenant_id, admin, _) = stack.psa_tenant("Lists MSP").await?;
    let store = Store::connect_with(&stack.database_url, 2).await?;
    let client_rows: Vec<NewClient> = (0..10)
        .map(|index| NewClient {
            name: format!("Client {index}"),
            domains: vec![format!("client{index}.example")],
            secondary_domains: Vec::new(),
        })
        .collect();
    let client_ids = store.insert_clients_bulk(tenant_id, &client_rows).await?;
    let mut rng = StdRng::seed_from_u64(11);
    let seeding = Instant::now();
    for chunk_start in (0..contacts).step_by(10_000) {
        let rows: Vec<NewContact> = (chunk_start..(chunk_start + 10_000).min(contacts))
            .map(|index| {
                let name = company_name(&mut rng);
                let first = name.split_whitespace().next().unwrap_or("Person");
                NewContact {
                    client_id: client_ids[index % client_ids.len()],
                    fields: ContactFields {
                        full_name: format!("{first} {index}"),
                        email: Some(format!("person{index}@client{}.example", index % 10)),
                        phone: None,
                        mobile: None,
                        job_title: Some("Engineer".to_owned()),
                    },
                }
            })
            .collect();
        store.insert_contacts_bulk(tenant_id, &rows).await?;
    }
    // Links for half the contacts, runs with a tenant result each, review items and audit
    // entries, as syncs and people would have left them.
    let managed_tenant_id = Uuid::new_v4();
    for statement in [
        "INSERT INTO managed_tenants (tenant_id, managed_tenant_id, entra_tenant_id, display_name)
         VALUES ($1, $2, 'entra-lists', 'Lists customer')",
        "INSERT INTO links (tenant_id, managed_tenant_id, object_id, contact_id)
         SELECT tenant_id, $2, contact_id::text, contact_id FROM contacts
         WHERE tenant_id = $1 AND get_byte(uuid_send(contact_id), 15) % 2 = 0",
        "INSERT INTO runs (tenant_id, run_id, kind, trigger, scope, status, started_at,
                           finished_at)
         SELECT $1, gen_random_uuid(), CASE WHEN i % 4 = 0 THEN 'discovery' ELSE 'sync' END,
                'scheduled', 'all', 'completed', now() - i * interval '1 hour',
                now() - i * interval '1 hour' + interval '1 minute'
         FROM generate_series(1, $3 / 10) AS i",
        "INSERT INTO run_tenant_results (tenant_id, run_id, managed_tenant_id, status, mode)
         SELECT tenant_id, run_id, $2, 'completed', 'delta' FROM runs WHERE tenant_id = $1",
        "INSERT INTO review_items (tenant_id, item_id, status, reason, managed_tenant_id,
                                   object_id, created_at, resolved_at)
         SELECT $1, gen_random_uuid(), CASE WHEN i % 10 = 0 THEN 'open' ELSE 'resolved' END,
                'multiple_candidates', $2, 'object-' || i, now() - i * interval '1 minute',
                CASE WHEN i % 10 = 0 THEN NULL ELSE now() END
         FROM generate_series(1, $3) AS i",
        "INSERT INTO api_audit (tenant_id, audit_id, actor, action, at)
         SELECT $1, gen_random_uuid(), 'user:bench', 'contact.update',
                now() - i * interval '1 second'
         FROM generate_series(1, $3) AS i",
    ] {
        sqlx::query(statement)
            .bind(tenant_id)
            .bind(managed_tenant_id)
            .bind(others as i64)
            .execute(store.pool())
            .await
            .with_context(|| format!("seed: {statement}"))?;
    }
    store.pool().close().await;
    figure("lists_contacts", contacts);
    figure("lists_other_rows", others);
    figure(
        "lists_seed_seconds",
        format!("{:.1}", seeding.elapsed().as_secs_f64()),
    );
    // Measured right after the bulk writes, before autovacuum has necessarily analyzed them:
    // the moment a page used to stall.
    let lists: [(&str, String); 6] = [
        ("contacts", "/api/v1/contacts".to_owned()),
        (
            "contacts_of_client",
            format!("/api/v1/contacts?client_id={}", client_ids[3]),
        ),
        (
            "sync_runs",
            "/api/v1/integrations/entra/sync/runs?kind=sync".to_owned(),
        ),
        (
            "review_items",
            "/api/v1/integrations/entra/reconciliation-queue".to_owned(),
        ),
        (
            "open_review_items",
            "/api/v1/integrations/entra/reconciliation-queue?status=open".to_owned(),
        ),
        ("audit", "/api/v1/audit".to_owned()),
    ];
    let mut worst_overall: f64 = 0.0;
    for (name, path) in &lists {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut latencies = Vec::new();
        // The first twenty pages at the default limit, then the whole list at 500 a page.
        for limit in [50, 500] {
            let mut cursor: Option<String> = None;
            let mut pages = 0;
            loop {
                let mut url = format!("{path}{separator}limit={limit}");
                if let Some(cursor) = &cursor {
                    url.push_str(&format!("&cursor={cursor}"));
                }
                let started = Instant::now();
                let page = admin.get(&url).await?;
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                pages += 1;
                cursor = page["next_cursor"].as_str().map(str::to_owned);
                if cursor.is_none() || (limit == 50 && pages == 20) {
                    break;
                }
            }
        }
        latencies.sort_by(f64::total_cmp);
        let at = |quantile: f64| {
            let index = ((latencies.len() as f64 - 1.0) * quantile).round() as usize;
            latencies.get(index).copied().unwrap_or(0.0)
        };
        let worst = at(1.0);
        figure(&format!("list_{name}_pages"), latencies.len());
        figure(
            &format!("list_{name}_page_ms_p50"),
            format!("{:.1}", at(0.5)),
        );
        figure(
            &format!("list_{name}_page_ms_p99"),
            format!("{:.1}", at(0.99)),
        );
        figure(&format!("list_{name}_page_ms_max"), format!("{worst:.1}"));
        worst_overall = worst_overall.max(worst);
    }
    figure("list_page_ms_max", format!("{worst_overall:.1}"));
    goal("list_page_ms_max", "<100", worst_overall < 100.0);
    stack.stop().await
}

// ---------------------------------------------------------------------------------------
// Syncs
// ---------------------------------------------------------------------------------------

/// CPU seconds (user + system) of a process, from `/proc/{pid}/stat` (clock ticks of 1/100 s).
fn process_cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The most memory a process has held resident since it started (`VmHWM` in
/// `/proc/{pid}/status`), in MB.
fn peak_rss_mb(pid: u32) -> Option<f64> {
    status_peak_rss_mb(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// `VmHWM` of a `/proc/{pid}/status` text, in MB.
fn status_peak_rss_mb(status: &str) -> Option<f64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kilobytes: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes / 1024.0)
}

/// The CPU seconds of a `/proc/{pid}/stat` line.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    let (_, fields) = stat.rsplit_once(')')?;
    let mut fields = fields.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// The whole machine's CPU seconds so far from `/proc/stat`: busy, idle (waiting for I/O
/// included) and stolen (time the hypervisor ran something else while this machine had work;
/// a virtual machine's programs look slow then without using more CPU of their own).
fn machine_cpu_seconds() -> Option<MachineCpu> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal
    let ticks: Vec<f64> = line
        .split_whitespace()
        .take(8)
        .filter_map(|tick| tick.parse().ok())
        .collect();
    let total: f64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    let steal = ticks.get(7).copied().unwrap_or(0.0);
    Some(MachineCpu {
        busy: (total - idle - steal) / 100.0,
        idle: idle / 100.0,
        steal: steal / 100.0,
    })
}

#[derive(Clone, Copy)]
struct MachineCpu {
    busy: f64,
    idle: f64,
    steal: f64,
}

/// CPU seconds so far of every process on the machine, summed by program name (`comm` in
/// `/proc/{pid}/stat`: `postgres` for every backend, `temporal`, `entra-sync`, …). A process
/// that ends between two readings is missed, so the sums are a lower bound. Kernel threads
/// are left out.
fn cpu_seconds_by_program() -> BTreeMap<String, f64> {
    let mut programs = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return programs;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        // Kernel threads have no command line, and names that change with their work.
        let is_program = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|command_line| !command_line.is_empty());
        if !is_program {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map(|(name, _)| name.to_owned());
        if let (Some(name), Some(seconds)) = (name, stat_cpu_seconds(&stat)) {
            *programs.entry(name).or_insert(0.0) += seconds;
        }
    }
    programs
}

/// Where the time of a run goes: readings taken before it, reported after it.
struct Meters {
    machine: Option<MachineCpu>,
    programs: BTreeMap<String, f64>,
    worker_pid: Option<u32>,
    temporal_pid: Option<u32>,
    worker: Option<f64>,
    temporal: Option<f64>,
    database_url: String,
    worker_metrics_url: Option<String>,
    worker_metrics: Option<String>,
}

/// The worker's `/metrics` text, if it answers.
async fn scrape(url: Option<&str>) -> Option<String> {
    let response = reqwest::get(url?).await.ok()?;
    response.text().await.ok()
}

/// The sum over every series of metric `name` in a Prometheus text exposition whose labels
/// include `label` (all series when None).
fn metric_sum(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, labels) = match series.split_once('{') {
                Some((series_name, labels)) => (series_name, labels),
                None => (series, ""),
            };
            if series_name != name || label.is_some_and(|label| !labels.contains(label)) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// Where a sync's time went, from the worker's own metrics (seconds summed over the tenants
/// synced concurrently, so they may add up to more than the run's wall time): each step of
/// the tenants' activities, what the activities spent besides them, and how long activities
/// and workflow tasks waited in Temporal's queues before a worker started them.
const TIME_FIGURES: &[(&str, &str, Option<&str>)] = &[
    (
        "provider_read",
        "entra_sync_sync_step_seconds_sum",
        Some("step=\"provider_read\""),
    ),
    (
        "plan",
        "entra_sync_sync_step_seconds_sum",
        Some("step=\"plan\""),
    ),
    (
        "database",
        "entra_sync_sync_step_seconds_sum",
        Some("step=\"database\""),
    ),
    (
        "prepare",
        "entra_sync_sync_step_seconds_sum",
        Some("step=\"prepare\""),
    ),
    (
        "finish",
        "entra_sync_sync_step_seconds_sum",
        Some("step=\"finish\""),
    ),
    (
        "tenant_activities",
        "entra_sync_tenant_sync_seconds_sum",
        None,
    ),
    (
        "activity_schedule_to_start",
        "temporal_activity_schedule_to_start_latency_seconds_sum",
        None,
    ),
    (
        "workflow_task_schedule_to_start",
        "temporal_workflow_task_schedule_to_start_latency_seconds_sum",
        None,
    ),
    (
        "workflow_task_execution",
        "temporal_workflow_task_execution_latency_seconds_sum",
        None,
    ),
];

/// With `SCALE_STATEMENTS=N`, the N statements that took most of Postgres' time, as comment
/// lines on stderr: calls, total milliseconds and the statement's start.
async fn print_statements(connection: &mut PgConnection, label: &str, top: i64) {
    let rows: Vec<(i64, f64, String)> = sqlx::query_as(
        "SELECT calls, (total_exec_time + total_plan_time)::float8, query FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         ORDER BY total_exec_time + total_plan_time DESC LIMIT $1",
    )
    .bind(top)
    .fetch_all(connection)
    .await
    .unwrap_or_default();
    for (calls, milliseconds, query) in rows {
        let query: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
        let query: String = query.chars().take(140).collect();
        eprintln!("# {label} {calls:>7} calls {milliseconds:>9.1} ms  {query}");
    }
}

impl Meters {
    async fn start(stack: &Stack, config: &Config) -> Meters {
        // Needs the server to preload pg_stat_statements (deploy/scripts/bench.sh does);
        // without it the Postgres figure is left out.
        if let Ok(mut connection) = PgConnection::connect(&stack.database_url).await {
            let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .execute(&mut connection)
                .await;
            let _ = sqlx::query("SELECT pg_stat_statements_reset()")
                .execute(&mut connection)
                .await;
            let _ = connection.close().await;
        }
        Meters {
            machine: machine_cpu_seconds(),
            programs: cpu_seconds_by_program(),
            worker_pid: stack.worker_pid,
            temporal_pid: config.temporal_pid,
            worker: stack.worker_pid.and_then(process_cpu_seconds),
            temporal: config.temporal_pid.and_then(process_cpu_seconds),
            database_url: stack.database_url.clone(),
            worker_metrics_url: stack.worker_metrics_url.clone(),
            worker_metrics: scrape(stack.worker_metrics_url.as_deref()).await,
        }
    }

    /// Prints `{label}_time_{part}_seconds` for each of [`TIME_FIGURES`], and
    /// `{label}_time_bookkeeping_seconds`: the tenant activities' time outside the steps.
    async fn report_time(&self, label: &str) {
        let (Some(before), Some(after)) = (
            self.worker_metrics.as_deref(),
            scrape(self.worker_metrics_url.as_deref()).await,
        ) else {
            return;
        };
        let spent = |name: &str, filter: Option<&str>| {
            metric_sum(&after, name, filter) - metric_sum(before, name, filter)
        };
        let mut steps = 0.0;
        let mut activities = 0.0;
        for (part, name, filter) in TIME_FIGURES {
            let seconds = spent(name, *filter);
            match *part {
                "provider_read" | "plan" | "database" | "prepare" | "finish" => steps += seconds,
                "tenant_activities" => activities = seconds,
                _ => {}
            }
            figure(
                &format!("{label}_time_{part}_seconds"),
                format!("{seconds:.2}"),
            );
        }
        figure(
            &format!("{label}_time_bookkeeping_seconds"),
            format!("{:.2}", (activities - steps).max(0.0)),
        );
    }

    /// Prints `{label}_postgres_statements`, `{label}_postgres_exec_seconds`,
    /// `{label}_worker_cpu_seconds` and
    /// `{label}_temporal_cpu_seconds`, each where measurable.
    async fn report(&self, label: &str) {
        let postgres: Option<f64> = async {
            let mut connection = PgConnection::connect(&self.database_url).await.ok()?;
            // Statements: every call the product made (BEGIN and COMMIT included), not the
            // meter's own; each is a round trip, what a run that changes little pays most for.
            let (milliseconds, calls): (Option<f64>, Option<i64>) = sqlx::query_as(
                "SELECT sum(total_exec_time + total_plan_time)::float8,
                        sum(calls) FILTER (WHERE query NOT LIKE '%pg_stat_statements%')::int8
                 FROM pg_stat_statements
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_one(&mut connection)
            .await
            .ok()?;
            if let Some(calls) = calls {
                figure(&format!("{label}_postgres_statements"), calls);
            }
            if let Some(top) = std::env::var("SCALE_STATEMENTS")
                .ok()
                .and_then(|top| top.parse::<i64>().ok())
            {
                print_statements(&mut connection, label, top).await;
            }
            let _ = connection.close().await;
            milliseconds.map(|milliseconds| milliseconds / 1000.0)
        }
        .await;
        if let Some(seconds) = postgres {
            figure(
                &format!("{label}_postgres_exec_seconds"),
                format!("{seconds:.1}"),
            );
        }
        let spent = |pid: Option<u32>, before: Option<f64>| {
            pid.and_then(process_cpu_seconds)
                .zip(before)
                .map(|(after, before)| after - before)
        };
        if let Some(seconds) = spent(self.worker_pid, self.worker) {
            figure(
                &format!("{label}_worker_cpu_seconds"),
                format!("{seconds:.1}"),
            );
        }
        if let Some(seconds) = spent(self.temporal_pid, self.temporal) {
            figure(
                &format!("{label}_temporal_cpu_seconds"),
                format!("{seconds:.1}"),
            );
        }
        // Every process together (Postgres, Temporal, the worker, the simulator, the API):
        // busy against idle says whether the run was paced by CPU or by waiting.
        if let (Some(before), Some(now)) = (self.machine, machine_cpu_seconds()) {
            figure(
                &format!("{label}_machine_busy_cpu_seconds"),
                format!("{:.2}", now.busy - before.busy),
            );
            figure(
                &format!("{label}_machine_idle_cpu_seconds"),
                format!("{:.2}", now.idle - before.idle),
            );
            figure(
                &format!("{label}_machine_steal_cpu_seconds"),
                format!("{:.2}", now.steal - before.steal),
            );
        }
        // The same busy time by program, those that used at least 0.05 s.
        for (program, seconds) in cpu_seconds_by_program() {
            let spent = seconds - self.programs.get(&program).copied().unwrap_or(0.0);
            if spent >= 0.05 {
                figure(
                    &format!("{label}_cpu_seconds_by_program.{program}"),
                    format!("{spent:.2}"),
                );
            }
        }
        self.report_time(label).await;
    }
}

/// A PSA tenant connected and mapped: one client per managed tenant with its default domain
/// (through the API), the connection, discovery, and every auto-matched tenant confirmed.
async fn prepare_tenant(stack: &Stack, name: &str, direct: bool) -> Result<ApiClient> {
    let (_, admin, admin_key) = stack.psa_tenant(name).await?;
    let simulator = stack.simulator()?;
    let state: Value = reqwest::get(format!("{simulator}/_admin/state"))
        .await?
        .json()
        .await?;
    for tenant in state["tenants"].as_array().into_iter().flatten() {
        let domain = tenant["default_domain"]
            .as_str()
            .context("default_domain")?;
        admin
            .post(
                "/api/v1/clients",
                json!({"name": tenant["display_name"], "domains": [domain]}),
            )
            .await?;
    }
    if direct {
        connect_direct(&admin, &stack.api_url, &admin_key).await?;
    } else {
        admin
            .post(
                "/api/v1/integrations/entra/connect/cipp",
                json!({"base_url": format!("{simulator}/cipp"), "api_token": CIPP_API_TOKEN}),
            )
            .await?;
    }
    let started = admin
        .post("/api/v1/integrations/entra/discovery", json!({}))
        .await?;
    let run = wait_run(&admin, started["run_id"].as_str().context("run_id")?).await?;
    if run["status"] != "completed" {
        bail!("discovery ended {}: {}", run["status"], run["error"]);
    }
    let mut decisions = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/v1/integrations/entra/mappings/preview?limit=500".to_owned();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = admin.get(&path).await?;
        for item in page["items"].as_array().into_iter().flatten() {
            if item["state"] == "auto_matched" {
                decisions.push(json!({"action": "map",
                    "managed_tenant_id": item["managed_tenant_id"],
                    "client_id": item["client_id"]}));
            }
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    admin
        .post(
            "/api/v1/integrations/entra/mappings/confirm",
            json!({"decisions": decisions, "start_initial_sync": false}),
        )
        .await?;
    Ok(admin)
}

/// The direct connection's authorization-code flow, the bench playing the browser against
/// the simulator's authorize endpoint (which consents and redirects back).
async fn connect_direct(admin: &ApiClient, api_url: &str, admin_key: &str) -> Result<()> {
    let started = admin
        .post("/api/v1/integrations/entra/connect/direct", json!({}))
        .await?;
    let authorize_url = started["authorize_url"].as_str().context("authorize_url")?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let redirect = http.get(authorize_url).send().await?;
    let location = redirect
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .context("the authorize endpoint did not redirect")?;
    let query = url::Url::parse(location)?
        .query()
        .unwrap_or_default()
        .to_owned();
    let callback = http
        .get(format!("{api_url}/auth/oauth2/microsoft/callback?{query}"))
        .header("accept", "application/json")
        .header("x-api-key", admin_key)
        .send()
        .await?;
    if !callback.status().is_success() {
        bail!(
            "the OAuth callback answered {}: {}",
            callback.status(),
            callback.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Polls a run twice a second until it ends (an hour at most).
async fn wait_run(admin: &ApiClient, run_id: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(3_600);
    loop {
        let run = admin
            .get(&format!("/api/v1/integrations/entra/sync/runs/{run_id}"))
            .await?;
        if run["status"] != "running" {
            return Ok(run);
        }
        if Instant::now() > deadline {
            bail!("run {run_id} still running after an hour");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs "sync all" and reports its time, totals, where the time went and its history length;
/// returns the seconds.
async fn timed_sync(
    stack: &Stack,
    config: &Config,
    admin: &ApiClient,
    label: &str,
    users: usize,
) -> Result<f64> {
    let meters = Meters::start(stack, config).await;
    let (seconds, run, run_id) = run_sync(admin, label).await?;
    let tenants = run["tenants"].as_array().map_or(0, Vec::len);
    figure(&format!("{label}_seconds"), format!("{seconds:.2}"));
    figure(
        &format!("{label}_users_per_second"),
        format!("{:.0}", users as f64 / seconds),
    );
    figure(&format!("{label}_tenants"), tenants);
    for count in ["seen", "created", "linked", "updated"] {
        if let Some(value) = run["totals"][count].as_u64() {
            figure(&format!("{label}_{count}"), value);
        }
    }
    meters.report(label).await;
    if let Some(histories) = run_histories(stack, config, &run_id).await {
        report_histories(label, tenants, &histories);
        if histories.children.is_empty() {
            report_orchestration(config, label, &histories.workflow_id).await;
        }
    }
    Ok(seconds)
}

/// Runs "sync all" to its end; returns its seconds, its record and its id. The seconds are the
/// run's own record, from its creation by the API to its finalization, so they do not depend
/// on how often this polls; the wall clock if the record lacks either.
async fn run_sync(admin: &ApiClient, label: &str) -> Result<(f64, Value, String)> {
    let started = Instant::now();
    let run = admin
        .post("/api/v1/integrations/entra/sync", json!({"scope": "all"}))
        .await?;
    let run_id = run["run_id"].as_str().context("run_id")?.to_owned();
    let run = wait_run(admin, &run_id).await?;
    if run["status"] != "completed" {
        bail!("{label}: the run ended {}: {}", run["status"], run["error"]);
    }
    let recorded = |field: &str| {
        run[field]
            .as_str()
            .and_then(|time| chrono::DateTime::parse_from_rfc3339(time).ok())
    };
    let seconds = match (recorded("started_at"), recorded("finished_at")) {
        (Some(start), Some(finish)) => (finish - start).num_milliseconds() as f64 / 1000.0,
        _ => started.elapsed().as_secs_f64(),
    };
    Ok((seconds, run, run_id))
}

/// How many delta syncs a delta figure is the median of, by default. A delta sync takes a
/// tenth of a second or a few; on a shared 2-core machine one such run varies by a third
/// from the next (0.11 to 0.15 s for the same build), more than the changes it should tell.
const DELTA_SYNCS: usize = 3;

/// Changes 1% of the users, lets the database settle ([`settle_database`]) and runs a delta
/// sync, `SCALE_DELTA_SYNCS` times (default [`DELTA_SYNCS`]); the last is reported in full as
/// [`timed_sync`] does. Prints every run's seconds and returns their median.
async fn timed_deltas(
    stack: &Stack,
    config: &Config,
    admin: &ApiClient,
    label: &str,
    users: usize,
) -> Result<f64> {
    let syncs = env_number("SCALE_DELTA_SYNCS", DELTA_SYNCS)?.max(1);
    let mut seconds = Vec::with_capacity(syncs);
    for round in 1..=syncs {
        let changed = change_one_percent(stack).await?;
        settle_database(stack).await?;
        if round < syncs {
            seconds.push(run_sync(admin, label).await?.0);
        } else {
            figure(&format!("{label}_changed_users"), changed);
            seconds.push(timed_sync(stack, config, admin, label, users).await?);
        }
    }
    let each: Vec<String> = seconds.iter().map(|s| format!("{s:.3}")).collect();
    figure(&format!("{label}_seconds_each"), each.join(","));
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    figure(&format!("{label}_median_seconds"), format!("{median:.3}"));
    Ok(median)
}

/// The activities that sync tenants; the others are the run's bookkeeping.
const TENANT_ACTIVITIES: [&str; 2] = ["sync_tenant", "sync_tenants"];

/// The fixed part of a run, from its workflow's history: what it spends before its first
/// tenant and after its last, whatever the tenants cost.
#[derive(Debug, PartialEq)]
struct Orchestration {
    /// From the workflow's start to the first tenant activity's scheduling: workflow tasks and
    /// `prepare_sync`.
    before_tenants: f64,
    /// From the last tenant activity's completion to the workflow's: a workflow task and
    /// `finish_run`.
    after_tenants: f64,
}

/// Reads [`Orchestration`] from `temporal workflow show --output json`; None when a time or
/// an event is missing.
fn orchestration(history: &Value) -> Option<Orchestration> {
    let events = history["events"].as_array()?;
    let time = |event: &Value| {
        event["eventTime"]
            .as_str()
            .and_then(|time| chrono::DateTime::parse_from_rfc3339(time).ok())
    };
    let kind = |event: &Value| {
        event["eventType"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("EVENT_TYPE_")
            .to_owned()
    };
    let started = time(events.first()?)?;
    // The event ids of the tenant activities' scheduling, which their completions name.
    let mut tenant_scheduled = std::collections::BTreeSet::new();
    let mut first_tenant = None;
    let mut last_tenant = None;
    let mut finished = None;
    for event in events {
        match kind(event).as_str() {
            "ACTIVITY_TASK_SCHEDULED" => {
                let name = event["activityTaskScheduledEventAttributes"]["activityType"]["name"]
                    .as_str()
                    .unwrap_or_default();
                if TENANT_ACTIVITIES.contains(&name) {
                    first_tenant = first_tenant.or_else(|| time(event));
                    tenant_scheduled.insert(event["eventId"].as_str()?.to_owned());
                }
            }
            "ACTIVITY_TASK_COMPLETED" => {
                let scheduled = event["activityTaskCompletedEventAttributes"]["scheduledEventId"]
                    .as_str()
                    .unwrap_or_default();
                if tenant_scheduled.contains(scheduled) {
                    last_tenant = time(event);
                }
            }
            "WORKFLOW_EXECUTION_COMPLETED" => finished = time(event),
            _ => {}
        }
    }
    let seconds = |delta: chrono::TimeDelta| delta.num_microseconds().unwrap_or(0) as f64 / 1e6;
    Some(Orchestration {
        before_tenants: seconds(first_tenant? - started),
        after_tenants: seconds(finished? - last_tenant?),
    })
}

/// Prints `{label}_workflow_tasks` and, when its tenants ran as activity tasks,
/// `{label}_orchestration_{before,after}_tenants_seconds` for a run of one history, and
/// keeps the history as `{label}-history.json` in the log directory.
async fn report_orchestration(config: &Config, label: &str, workflow_id: &str) {
    let output = Command::new(&config.temporal_cli)
        .args(["workflow", "show", "--workflow-id", workflow_id])
        .args(["--address", &config.temporal_address, "--output", "json"])
        .output()
        .await;
    let Some(output) = output.ok().filter(|output| output.status.success()) else {
        return;
    };
    // Kept beside the processes' logs, to read the run's timeline event by event.
    let _ = std::fs::write(
        config.log_dir.join(format!("{label}-history.json")),
        &output.stdout,
    );
    let Ok(history) = serde_json::from_slice::<Value>(&output.stdout) else {
        return;
    };
    // A run whose tenants all ran as local activities has no tenant activity events: its
    // workflow tasks say what it cost Temporal.
    let workflow_tasks = history["events"].as_array().map_or(0, |events| {
        events
            .iter()
            .filter(|event| event["eventType"] == "EVENT_TYPE_WORKFLOW_TASK_COMPLETED")
            .count()
    });
    figure(&format!("{label}_workflow_tasks"), workflow_tasks);
    if let Some(found) = orchestration(&history) {
        figure(
            &format!("{label}_orchestration_before_tenants_seconds"),
            format!("{:.3}", found.before_tenants),
        );
        figure(
            &format!("{label}_orchestration_after_tenants_seconds"),
            format!("{:.3}", found.after_tenants),
        );
    }
}

/// The history lengths of a run: its own workflow's, and each of its batch children's in
/// order (`{workflow id}-batch-{index}`, none when its targets fit in one batch).
struct RunHistories {
    workflow_id: String,
    run: u64,
    children: Vec<u64>,
}

/// Prints the events of the run's histories and projects them to 20,000 tenants: the run's own
/// history grows by its events per batch, and a child holds at most one batch of tenants, so
/// the longest history at 20,000 tenants is the larger of the two projections. A run that took
/// the one-history path is projected as the batches it would run in at that size (its events
/// per tenant times a batch), the run's own history then only by what it has now.
fn report_histories(label: &str, tenants: usize, histories: &RunHistories) {
    let children_events: u64 = histories.children.iter().sum();
    let total = histories.run + children_events;
    figure(&format!("{label}_history_events"), total);
    figure(&format!("{label}_history_events_run"), histories.run);
    figure(
        &format!("{label}_history_children"),
        histories.children.len(),
    );
    figure(&format!("{label}_history_events_children"), children_events);
    let largest_child = histories.children.iter().copied().max().unwrap_or(0);
    figure(
        &format!("{label}_history_events_largest_child"),
        largest_child,
    );
    if tenants == 0 {
        return;
    }
    let per_tenant = total as f64 / tenants as f64;
    figure(
        &format!("{label}_history_events_per_tenant"),
        format!("{per_tenant:.1}"),
    );
    let batch = batch_tenants() as f64;
    let batches_at_20000 = (20_000.0 / batch).ceil();
    let (run_at_20000, child_at_20000) = if histories.children.is_empty() {
        (histories.run as f64, per_tenant * batch)
    } else {
        let per_batch = histories.run as f64 / histories.children.len() as f64;
        let child_tenants = (tenants as f64).min(batch * histories.children.len() as f64);
        let child_per_tenant = children_events as f64 / child_tenants;
        (per_batch * batches_at_20000, child_per_tenant * batch)
    };
    let longest = run_at_20000.max(child_at_20000);
    figure(
        &format!("{label}_history_events_run_at_20000_tenants"),
        format!("{run_at_20000:.0}"),
    );
    figure(
        &format!("{label}_history_events_child_at_20000_tenants"),
        format!("{child_at_20000:.0}"),
    );
    figure(
        &format!("{label}_history_events_longest_at_20000_tenants"),
        format!("{longest:.0}"),
    );
    goal(
        &format!("{label}_history_events_longest_at_20000_tenants"),
        &format!("<{TEMPORAL_EVENT_LIMIT:.0}"),
        longest < TEMPORAL_EVENT_LIMIT,
    );
}

/// Tenants per batch child, as the worker is configured (`ENTRA_SYNC__SYNC__BATCH_TENANTS`).
fn batch_tenants() -> usize {
    env_number(
        "ENTRA_SYNC__SYNC__BATCH_TENANTS",
        entra_sync_activities::DEFAULT_BATCH_TENANTS,
    )
    .unwrap_or(entra_sync_activities::DEFAULT_BATCH_TENANTS)
    .max(1)
}

async fn run_histories(stack: &Stack, config: &Config, run_id: &str) -> Option<RunHistories> {
    let mut connection = PgConnection::connect(&stack.database_url).await.ok()?;
    let workflow_id: Option<String> =
        sqlx::query_scalar("SELECT workflow_id FROM runs WHERE run_id = $1::uuid")
            .bind(run_id)
            .fetch_one(&mut connection)
            .await
            .ok()?;
    let _ = connection.close().await;
    let workflow_id = workflow_id?;
    let run = history_length(config, &workflow_id).await?;
    let mut children = Vec::new();
    while let Some(events) = history_length(
        config,
        &entra_sync_workflows::batch_workflow_id(&workflow_id, children.len()),
    )
    .await
    {
        children.push(events);
    }
    Some(RunHistories {
        workflow_id,
        run,
        children,
    })
}

/// The number of events in a workflow's history, from `temporal workflow describe`; None when
/// there is no such workflow.
async fn history_length(config: &Config, workflow_id: &str) -> Option<u64> {
    let output = Command::new(&config.temporal_cli)
        .args(["workflow", "describe", "--workflow-id", workflow_id])
        .args(["--address", &config.temporal_address, "--output", "json"])
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let description: Value = serde_json::from_slice(&output.stdout).ok()?;
    find_number(&description, "historyLength")
}

/// The first number under `key` anywhere in a JSON document (numbers may come as strings).
fn find_number(value: &Value, key: &str) -> Option<u64> {
    match value {
        Value::Object(map) => map
            .get(key)
            .and_then(|found| {
                found
                    .as_u64()
                    .or_else(|| found.as_str().and_then(|text| text.parse().ok()))
            })
            .or_else(|| map.values().find_map(|child| find_number(child, key))),
        Value::Array(items) => items.iter().find_map(|child| find_number(child, key)),
        _ => None,
    }
}

/// Changes the job title of one user in a hundred through the simulator's admin API; returns
/// how many.
async fn change_one_percent(stack: &Stack) -> Result<usize> {
    let simulator = stack.simulator()?;
    let http = reqwest::Client::new();
    let state: Value = http
        .get(format!("{simulator}/_admin/state"))
        .send()
        .await?
        .json()
        .await?;
    let mut changed = 0;
    let mut position = 0usize;
    for tenant in state["tenants"].as_array().into_iter().flatten() {
        let tenant_id = tenant["tenant_id"].as_str().context("tenant_id")?;
        let users: Value = http
            .get(format!("{simulator}/_admin/tenants/{tenant_id}/users"))
            .send()
            .await?
            .json()
            .await?;
        for user in users.as_array().into_iter().flatten() {
            position += 1;
            if !position.is_multiple_of(100) || user["deleted"] == true {
                continue;
            }
            let user_id = user["id"].as_str().context("user id")?;
            let response = http
                .patch(format!(
                    "{simulator}/_admin/tenants/{tenant_id}/users/{user_id}"
                ))
                .json(&json!({"job_title": format!("Promoted {position}")}))
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("the simulator refused a change: {}", response.status());
            }
            changed += 1;
        }
    }
    Ok(changed)
}

/// What the hours between a sync and the scheduled delta sync after it would have done:
/// autovacuum's pass over the rows the bench's previous syncs wrote (`VACUUM ANALYZE`, which
/// autovacuum starts at a moment of its own choosing), a checkpoint, and the operating system
/// writing the dirty pages out (`sync`; it does so on its own about thirty seconds after a
/// page was written). Otherwise the timed delta, a tenth of a second, shares the two cores
/// with that work, or sets the hint bits of rows written seconds before.
async fn settle_database(stack: &Stack) -> Result<()> {
    let mut connection = PgConnection::connect(&stack.database_url).await?;
    sqlx::query("VACUUM ANALYZE")
        .execute(&mut connection)
        .await?;
    sqlx::query("CHECKPOINT").execute(&mut connection).await?;
    connection.close().await?;
    let synced = Command::new("sync").status().await;
    if !synced.is_ok_and(|status| status.success()) {
        eprintln!("settle: `sync` failed; the delta may share the machine with its writeback");
    }
    Ok(())
}

async fn sync_part(config: &Config) -> Result<()> {
    let tenants = env_number("SCALE_SYNC_TENANTS", 200)?;
    let users = env_number("SCALE_SYNC_USERS", 40_000)?;
    let median = env_number("SCALE_SIZE_MEDIAN", 61)?;
    let stack = Stack::start(config, "sync", Some((tenants, users, median)), true).await?;
    figure("sync_tenants", tenants);
    figure("sync_users", users);
    figure("sync_size_median", median);
    let cipp = prepare_tenant(&stack, "Scale CIPP", false).await?;
    let cipp_initial = timed_sync(&stack, config, &cipp, "sync_cipp_initial", users).await?;
    let direct = prepare_tenant(&stack, "Scale Direct", true).await?;
    let direct_initial = timed_sync(&stack, config, &direct, "sync_direct_initial", users).await?;
    let delta = timed_deltas(&stack, config, &direct, "sync_direct_delta", users).await?;
    let share = 100.0 * delta / direct_initial;
    figure(
        "sync_direct_delta_percent_of_direct_initial",
        format!("{share:.1}"),
    );
    figure(
        "sync_direct_delta_percent_of_cipp_initial",
        format!("{:.1}", 100.0 * delta / cipp_initial),
    );
    goal(
        "sync_direct_delta_percent_of_direct_initial",
        "<=5",
        share <= 5.0,
    );
    stack.stop().await
}

/// Sets the simulator's `users/delta` page size (its admin settings).
async fn set_delta_page_size(stack: &Stack, size: usize) -> Result<()> {
    let url = format!("{}/_admin/settings", stack.simulator()?);
    let http = reqwest::Client::new();
    let mut settings: Value = http.get(&url).send().await?.json().await?;
    settings["delta_page_size"] = json!(size);
    let answer = http.post(&url).json(&settings).send().await?;
    if !answer.status().is_success() {
        bail!("the simulator refused its settings: {}", answer.status());
    }
    Ok(())
}

async fn pages_part(config: &Config) -> Result<()> {
    let users = env_number("SCALE_PAGES_USERS", 50_000)?;
    // The worker's memory does not grow with the tenant: the peak of a fresh worker that
    // synced a tenant a tenth the size, against the peak of the one that syncs the large
    // tenant first.
    let reference_users = (users / 10).max(1);
    let reference_peak = {
        let stack = Stack::start(
            config,
            "pages_reference",
            Some((1, reference_users, reference_users)),
            true,
        )
        .await?;
        set_delta_page_size(&stack, 999).await?;
        let tenant = prepare_tenant(&stack, "Pages reference", true).await?;
        timed_sync(&stack, config, &tenant, "pages_reference", reference_users).await?;
        let peak = stack.worker_pid.and_then(peak_rss_mb);
        stack.stop().await?;
        peak
    };
    let stack = Stack::start(config, "pages", Some((1, users, users)), true).await?;
    figure("pages_users", users);
    set_delta_page_size(&stack, 999).await?;
    let large = prepare_tenant(&stack, "Pages 999", true).await?;
    let large_seconds = timed_sync(&stack, config, &large, "pages_999", users).await?;
    let large_peak = stack.worker_pid.and_then(peak_rss_mb);
    if let (Some(reference_peak), Some(large_peak)) = (reference_peak, large_peak) {
        figure("pages_reference_users", reference_users);
        figure(
            "pages_reference_worker_peak_rss_mb",
            format!("{reference_peak:.1}"),
        );
        figure("pages_999_worker_peak_rss_mb", format!("{large_peak:.1}"));
        let ratio = large_peak / reference_peak;
        figure("pages_worker_peak_rss_ratio", format!("{ratio:.2}"));
        goal("pages_worker_peak_rss_ratio", "<=1.25", ratio <= 1.25);
    }
    set_delta_page_size(&stack, 100).await?;
    let small = prepare_tenant(&stack, "Pages 100", true).await?;
    let small_seconds = timed_sync(&stack, config, &small, "pages_100", users).await?;
    let ratio = small_seconds / large_seconds;
    figure("pages_100_to_999_ratio", format!("{ratio:.2}"));
    goal("pages_100_to_999_ratio", "<=1.3", ratio <= 1.3);
    // A single large tenant's delta with 1% changed stays the small share of its initial sync
    // it was when the issue was filed (1.1%).
    set_delta_page_size(&stack, 999).await?;
    let delta_seconds = timed_deltas(&stack, config, &large, "pages_999_delta", users).await?;
    let share = 100.0 * delta_seconds / large_seconds;
    figure("pages_999_delta_percent_of_initial", format!("{share:.1}"));
    goal("pages_999_delta_percent_of_initial", "<=1.1", share <= 1.1);
    stack.stop().await
}

async fn large_part(config: &Config) -> Result<()> {
    let tenants = env_number("SCALE_LARGE_TENANTS", 1_000)?;
    let users = env_number("SCALE_LARGE_USERS", 200_000)?;
    let median = env_number("SCALE_SIZE_MEDIAN", 61)?;
    let stack = Stack::start(config, "large", Some((tenants, users, median)), true).await?;
    figure("large_tenants", tenants);
    figure("large_users", users);
    let cipp = prepare_tenant(&stack, "Scale Large", false).await?;
    let seconds = timed_sync(&stack, config, &cipp, "large_cipp_initial", users).await?;
    let rate = users as f64 / seconds;
    match config.store_users_per_second {
        Some(store_rate) if store_rate > 0.0 => {
            figure(
                "large_store_only_users_per_second",
                format!("{store_rate:.0}"),
            );
            let percent = 100.0 * rate / store_rate;
            figure(
                "large_cipp_initial_percent_of_store_only",
                format!("{percent:.0}"),
            );
            goal(
                "large_cipp_initial_percent_of_store_only",
                ">=50",
                percent >= 50.0,
            );
        }
        _ => figure(
            "large_store_only_users_per_second",
            "unknown (STORE_USERS_PER_SECOND not set)",
        ),
    }
    stack.stop().await
}

#[cfg(test)]
mod tests {
    use super::{orchestration, status_peak_rss_mb, Orchestration};
    use serde_json::{json, Value};

    #[test]
    fn the_peak_resident_memory_is_read_from_the_status() {
        let status =
            "Name:\tentra-sync\nVmPeak:\t  900000 kB\nVmHWM:\t   28160 kB\nVmRSS:\t   20480 kB\n";
        assert_eq!(status_peak_rss_mb(status), Some(27.5));
        assert_eq!(status_peak_rss_mb("Name:\tkernel thread\n"), None);
    }

    fn event(id: u64, at: &str, kind: &str, attributes: Value) -> Value {
        let mut event = json!({
            "eventId": id.to_string(),
            "eventTime": format!("2026-12-07T03:00:{at}Z"),
            "eventType": format!("EVENT_TYPE_{kind}"),
        });
        if let (Some(event), Some(attributes)) = (event.as_object_mut(), attributes.as_object()) {
            event.extend(attributes.clone());
        }
        event
    }

    fn scheduled(id: u64, at: &str, name: &str) -> Value {
        let attributes =
            json!({"activityTaskScheduledEventAttributes": {"activityType": {"name": name}}});
        event(id, at, "ACTIVITY_TASK_SCHEDULED", attributes)
    }

    fn completed(id: u64, at: &str, scheduled: u64) -> Value {
        let attributes = json!({"activityTaskCompletedEventAttributes": {"scheduledEventId": scheduled.to_string()}});
        event(id, at, "ACTIVITY_TASK_COMPLETED", attributes)
    }

    #[test]
    fn the_fixed_part_of_a_run_is_read_from_its_history() {
        let history = json!({"events": [
            event(1, "00.000", "WORKFLOW_EXECUTION_STARTED", json!({})),
            scheduled(5, "00.010", "prepare_sync"),
            completed(7, "00.030", 5),
            scheduled(11, "00.045", "sync_tenants"),
            scheduled(12, "00.046", "sync_tenants"),
            completed(15, "00.300", 12),
            completed(16, "00.350", 11),
            event(20, "00.360", "MARKER_RECORDED", json!({})),
            event(24, "00.380", "WORKFLOW_EXECUTION_COMPLETED", json!({})),
        ]});
        assert_eq!(
            orchestration(&history),
            Some(Orchestration {
                before_tenants: 0.045,
                after_tenants: 0.03,
            })
        );
        // A run that has not completed (or reached no tenant) has no such figures.
        let events = history["events"].as_array().cloned().unwrap_or_default();
        let unfinished = json!({"events": events[..8].to_vec()});
        assert_eq!(orchestration(&unfinished), None);
        assert_eq!(orchestration(&json!({"events": []})), None);
    }
}

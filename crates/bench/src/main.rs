//! `make bench`: times `Store::reconcile_page` on a real Postgres against the floor of writing
//! the same number of contact rows with one `COPY`, and prints the figures as `name=value`
//! lines.
//!
//! The scenario: a 50,000-user directory, read in pages of 999, reconciled against 50,000
//! existing contacts of which 25,000 carry the emails of directory users. The first run links
//! those 25,000 and creates the other 25,000 users; the re-run (a new run) finds everything
//! linked and updates the job title of one user in ten (the only field whose policy is
//! `overwrite`). The floor is `COPY contacts FROM STDIN` of 50,000 rows in one transaction on
//! the same database, the best of three; like the sync, it writes `email_normalized` itself.
//! A second reference, `first_run_writes_copy_seconds`, is a `COPY` of exactly the rows the
//! first run must write (25,000 contacts, 50,000 links, 50,000 audit rows): the first run
//! cannot be cheaper than its own writes.
//!
//! Each figure is the median of three rounds, each on a fresh database. Before each run the
//! tables are vacuumed and analyzed, as autovacuum would have done in an established database;
//! the first run's own links are therefore unknown to the statistics, as in a real first sync.
//!
//! When the server preloads `pg_stat_statements` (deploy/scripts/bench.sh arranges it), the
//! server time of each statement of the page is printed too, which says where the time goes;
//! the rest of a run's wall time is the client's (planning, building the bulk arrays and audit
//! JSON, encoding and round trips).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use entra_sync_domain::email::email_key;
use entra_sync_domain::model::{
    ContactField, DirectoryEntry, DirectoryUser, FieldPolicy, SyncSettings, Tally,
};
use entra_sync_domain::plan::new_contact_fields;
use entra_sync_store::discovery::{DiscoveredTenantRecord, TenantDomain};
use entra_sync_store::mapping::{MappingAction, MappingDecisionInput};
use entra_sync_store::psa::NewContact;
use entra_sync_store::reconcile::PageScope;
use entra_sync_store::runs::{NewRun, RunKind, RunScope, RunStatus, RunTrigger, SyncMode};
use entra_sync_store::Store;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

const USERS: usize = 50_000;
/// Graph's largest page of users.
const PAGE_SIZE: usize = 999;
const DOMAIN: &str = "contoso.com";
/// The reconcile should take at most this many times the COPY floor.
const GOAL_RATIO: f64 = 4.0;
/// The no-change re-run against the COPY floor, and the first run against a COPY of exactly
/// the rows it writes, should each stay within this ratio.
const WRITES_GOAL_RATIO: f64 = 1.5;
/// COPY repetitions; the fastest is the floor, which keeps the ratio conservative.
const FLOOR_REPETITIONS: usize = 3;
/// Rounds of the whole scenario, each on a fresh database; the figures are their medians.
const ROUNDS: usize = 3;

/// The benchmark's PSA tenant, as the sync would have set it up.
struct Fixture {
    tenant_id: Uuid,
    client_id: Uuid,
    managed_tenant_id: Uuid,
    /// The contacts of the even-numbered directory users, in user order.
    matching_contact_ids: Vec<Uuid>,
}

/// What reconciling every page of one run took.
struct RunFigures {
    elapsed: Duration,
    /// The most statements one page ran (a kind of write a page has none of costs none).
    statements_per_page: u32,
    tally: Tally,
    profile: Option<BTreeMap<&'static str, f64>>,
    /// CPU seconds this process spent during the pages, when the OS tells.
    client_cpu_seconds: Option<f64>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let server_url = std::env::var("DATABASE_URL")
        .context("DATABASE_URL must name a Postgres server; run `make bench`")?;
    // The machine is shared, so one round can be unlucky: every figure is the median of its
    // rounds, each round on a fresh database.
    let mut rounds: Vec<Vec<(String, f64)>> = Vec::with_capacity(ROUNDS);
    let mut statements_per_page = None;
    for _ in 0..ROUNDS {
        let (figures, statements) = round(&server_url).await?;
        // Deterministic data: every round runs the same statements.
        ensure!(
            statements_per_page.is_none_or(|expected| expected == statements),
            "statements per page differ between rounds"
        );
        statements_per_page = Some(statements);
        rounds.push(figures);
    }
    let median = |name: &str| -> f64 {
        let mut values: Vec<f64> = rounds
            .iter()
            .filter_map(|figures| {
                figures
                    .iter()
                    .find(|(figure, _)| figure == name)
                    .map(|(_, value)| *value)
            })
            .collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let first_seconds = median("first_run_seconds");
    let rerun_seconds = median("rerun_seconds");
    let floor_seconds = median("copy_floor_seconds");
    let first_ratio = first_seconds / floor_seconds;
    let rerun_ratio = rerun_seconds / floor_seconds;
    println!("users={USERS}");
    println!("pages={}", USERS.div_ceil(PAGE_SIZE));
    println!("rounds={ROUNDS}");
    println!("first_run_seconds={first_seconds:.3}");
    println!(
        "first_run_users_per_second={:.0}",
        USERS as f64 / first_seconds
    );
    println!("rerun_seconds={rerun_seconds:.3}");
    println!("rerun_users_per_second={:.0}", USERS as f64 / rerun_seconds);
    let (first_statements, rerun_statements) = statements_per_page.context("no rounds")?;
    println!("first_run_statements_per_page={first_statements}");
    println!("rerun_statements_per_page={rerun_statements}");
    println!("copy_floor_seconds={floor_seconds:.3}");
    println!("first_run_floor_ratio={first_ratio:.2}");
    println!("rerun_floor_ratio={rerun_ratio:.2}");
    println!("goal_ratio={GOAL_RATIO}");
    let writes_seconds = median("first_run_writes_copy_seconds");
    println!(
        "goal_met={}",
        first_ratio <= GOAL_RATIO && rerun_ratio <= GOAL_RATIO
    );
    // The rows the first run cannot avoid writing (25,000 contacts, 50,000 links, 50,000 audit
    // rows), written by COPY: how far the first run is from the cost of its own writes.
    println!("first_run_writes_copy_seconds={writes_seconds:.3}");
    println!(
        "first_run_writes_copy_floor_ratio={:.2}",
        writes_seconds / floor_seconds
    );
    println!(
        "first_run_to_writes_copy_ratio={:.2}",
        first_seconds / writes_seconds
    );
    // Re-runs mostly read: the no-change re-run within 1.5× the COPY floor, and the first run
    // within 1.5× a COPY of exactly the rows it writes.
    let rerun_goal_met = rerun_ratio <= WRITES_GOAL_RATIO;
    let first_writes_goal_met = first_seconds / writes_seconds <= WRITES_GOAL_RATIO;
    println!("rerun_goal_ratio={WRITES_GOAL_RATIO}");
    println!("rerun_goal_met={rerun_goal_met}");
    println!("first_run_writes_goal_ratio={WRITES_GOAL_RATIO}");
    println!("first_run_writes_goal_met={first_writes_goal_met}");
    // Where the time goes: server time per statement, the rest of the wall time, and how much
    // of that rest was the client's CPU.
    let first_round = rounds.first().context("no rounds")?;
    for (name, _) in first_round {
        if name.contains('.') || name.contains("client") {
            println!("{name}={:.3}", median(name));
        }
    }
    Ok(())
}

/// One round on a fresh database: seed, first run, re-run, floor. Returns the figures by name
/// and the most statements a page ran in the first run and in the re-run.
async fn round(server_url: &str) -> Result<(Vec<(String, f64)>, (u32, u32))> {
    let (database, database_url) = create_database(server_url).await?;
    let store = Store::connect_with(&database_url, 4)
        .await
        .context("connect to the benchmark database")?;
    store.migrate().await.context("migrate")?;
    let profiler = Profiler::connect(&database_url).await;

    let fixture = seed(&store).await?;
    let settings = SyncSettings {
        field_policy: BTreeMap::from([(ContactField::JobTitle, FieldPolicy::Overwrite)]),
        ..SyncSettings::default()
    };

    let first_users = directory_users(false);
    let first = reconcile_run(&store, &fixture, &first_users, &settings, &profiler).await?;
    ensure!(
        first.tally.created == (USERS / 2) as u64 && first.tally.linked == (USERS / 2) as u64,
        "first run should create and link {} each, got {:?}",
        USERS / 2,
        first.tally
    );

    // A scheduled re-run comes hours after the first run, long after autovacuum has processed
    // the links, contacts and audit rows the first run wrote; without this the re-run would
    // be planned with statistics that say the tenant has no links, or share the machine with
    // autovacuum, depending on when it woke.
    settle(&store).await?;
    let rerun_users = directory_users(true);
    let rerun = reconcile_run(&store, &fixture, &rerun_users, &settings, &profiler).await?;
    ensure!(
        rerun.tally.created == 0
            && rerun.tally.linked == 0
            && rerun.tally.updated == (USERS / 10) as u64,
        "re-run should only update {} contacts, got {:?}",
        USERS / 10,
        rerun.tally
    );

    let floor = copy_floor(&store, &first_users).await?;
    let writes_floor = first_run_writes_floor(&store, &first_users).await?;
    store.pool().close().await;
    profiler.close().await;
    drop_database(server_url, &database).await?;

    let mut figures = vec![
        ("first_run_seconds".to_owned(), first.elapsed.as_secs_f64()),
        ("rerun_seconds".to_owned(), rerun.elapsed.as_secs_f64()),
        ("copy_floor_seconds".to_owned(), floor.as_secs_f64()),
        (
            "first_run_writes_copy_seconds".to_owned(),
            writes_floor.as_secs_f64(),
        ),
    ];
    for (name, run) in [("first_run", &first), ("rerun", &rerun)] {
        if let Some(profile) = &run.profile {
            let total: f64 = profile.values().sum();
            for (label, server_seconds) in profile {
                figures.push((format!("{name}_server_seconds.{label}"), *server_seconds));
            }
            figures.push((format!("{name}_server_seconds.total"), total));
            figures.push((
                format!("{name}_client_seconds"),
                (run.elapsed.as_secs_f64() - total).max(0.0),
            ));
        }
        if let Some(cpu) = run.client_cpu_seconds {
            figures.push((format!("{name}_client_cpu_seconds"), cpu));
        }
    }
    Ok((
        figures,
        (first.statements_per_page, rerun.statements_per_page),
    ))
}

/// What autovacuum does between runs in an established database: statistics and visibility
/// for every table.
async fn settle(store: &Store) -> Result<()> {
    maintain(store, "VACUUM ANALYZE").await
}

/// Starts a timed section from the same state of the write-ahead log as every other one: a
/// checkpoint just done. Without it a section could run while a checkpoint (started by the WAL
/// the previous section wrote) flushes, or just after one, when every page it touches first
/// goes to the log whole; the 50,000-row COPY floor then ranged 0.77–1.26 s between runs of
/// one build.
async fn checkpoint(store: &Store) -> Result<()> {
    maintain(store, "CHECKPOINT").await
}

/// Runs one maintenance command (`settle`, `checkpoint`) on the server.
async fn maintain(store: &Store, command: &'static str) -> Result<()> {
    sqlx::query(command)
        .execute(store.pool())
        .await
        .context(command)?;
    Ok(())
}

/// Creates a database of its own on the server and returns its name and URL.
async fn create_database(server_url: &str) -> Result<(String, String)> {
    let database = format!("bench_{:016x}", rand::random::<u64>());
    let mut admin = PgConnection::connect(server_url)
        .await
        .context("connect to DATABASE_URL")?;
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&mut admin)
        .await
        .context("create the benchmark database")?;
    admin.close().await?;
    match server_url.rsplit_once('/') {
        Some((base, _)) => {
            let database_url = format!("{base}/{database}");
            Ok((database, database_url))
        }
        None => bail!("DATABASE_URL has no database name"),
    }
}

async fn drop_database(server_url: &str, database: &str) -> Result<()> {
    let mut admin = PgConnection::connect(server_url)
        .await
        .context("connect to DATABASE_URL")?;
    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .context("drop the benchmark database")?;
    admin.close().await?;
    Ok(())
}

/// A PSA tenant with one client, one discovered managed tenant mapped to it, and 50,000
/// contacts: one per even-numbered directory user (with the fields the sync would have given
/// it) and 25,000 former staff no directory user matches.
async fn seed(store: &Store) -> Result<Fixture> {
    let tenant_id = store.create_psa_tenant("Bench MSP").await?.tenant_id;
    let client_id = store
        .create_client(tenant_id, "Contoso", &[DOMAIN.to_owned()], &[])
        .await?
        .client_id;
    let discovery = store
        .start_run(&NewRun {
            tenant_id,
            kind: RunKind::Discovery,
            trigger: RunTrigger::Initial,
            scope: RunScope::All,
            requested_by: Some("bench".to_owned()),
        })
        .await?;
    store
        .record_discovery(
            tenant_id,
            discovery.run_id,
            &[DiscoveredTenantRecord {
                entra_tenant_id: Uuid::from_u128(0xc0_27050).to_string(),
                display_name: "Contoso".to_owned(),
                domains: vec![TenantDomain {
                    name: DOMAIN.to_owned(),
                    is_default: true,
                    is_initial: false,
                }],
            }],
        )
        .await?;
    store
        .finish_run(tenant_id, discovery.run_id, RunStatus::Completed, None)
        .await?;
    let managed_tenant_id = store
        .list_managed_tenants(tenant_id)
        .await?
        .first()
        .context("discovery recorded no managed tenant")?
        .managed_tenant_id;
    store
        .confirm_mappings(
            tenant_id,
            &[MappingDecisionInput {
                managed_tenant_id,
                action: MappingAction::Map { client_id },
            }],
            "bench",
        )
        .await?;

    let users = directory_users(false);
    let contacts: Vec<NewContact> = users
        .iter()
        .step_by(2)
        .map(|user| NewContact {
            client_id,
            fields: new_contact_fields(user),
        })
        .chain((0..USERS / 2).map(|index| NewContact {
            client_id,
            fields: entra_sync_domain::model::ContactFields {
                full_name: format!("Former Staff {index:05}"),
                email: Some(format!("former{index:05}@{DOMAIN}")),
                phone: None,
                mobile: None,
                job_title: Some("Consultant".to_owned()),
            },
        }))
        .collect();
    let mut contact_ids = store.insert_contacts_bulk(tenant_id, &contacts).await?;
    contact_ids.truncate(USERS / 2);
    // An established database has statistics and visibility maps for its contacts; the first
    // run's own links are still unknown to the statistics, as in a real first sync.
    settle(store).await?;
    Ok(Fixture {
        tenant_id,
        client_id,
        managed_tenant_id,
        matching_contact_ids: contact_ids,
    })
}

/// The directory, the same on every call; `promoted` gives one user in ten a new job title.
fn directory_users(promoted: bool) -> Vec<DirectoryUser> {
    (0..USERS)
        .map(|index| {
            let address = format!("user{index:05}@{DOMAIN}");
            let job_title = if promoted && index % 10 == 0 {
                "Senior Engineer"
            } else {
                "Engineer"
            };
            DirectoryUser {
                object_id: Uuid::from_u128(0xb3_0000_0000 + index as u128).to_string(),
                display_name: Some(format!("Bench User {index:05}")),
                given_name: Some("Bench".to_owned()),
                surname: Some(format!("User {index:05}")),
                mail: Some(address.clone()),
                user_principal_name: Some(address.clone()),
                other_mails: Vec::new(),
                proxy_addresses: vec![format!("SMTP:{address}")],
                account_enabled: Some(true),
                user_type: Some("Member".to_owned()),
                creation_type: None,
                job_title: Some(job_title.to_owned()),
                mobile_phone: Some(format!("+1 555 1{index:05}")),
                business_phones: vec![format!("+1 555 2{index:05}")],
                assigned_license_count: 1,
                group_ids: None,
            }
        })
        .collect()
}

/// Starts a sync run and its tenant result, reconciles every page, and finishes both; only
/// the pages are timed.
async fn reconcile_run(
    store: &Store,
    fixture: &Fixture,
    users: &[DirectoryUser],
    settings: &SyncSettings,
    profiler: &Profiler,
) -> Result<RunFigures> {
    let tenant_id = fixture.tenant_id;
    let managed_tenant_id = fixture.managed_tenant_id;
    let run = store
        .start_run(&NewRun {
            tenant_id,
            kind: RunKind::Sync,
            trigger: RunTrigger::Manual,
            scope: RunScope::All,
            requested_by: Some("bench".to_owned()),
        })
        .await?;
    ensure!(!run.deduplicated, "a sync run was already running");
    store
        .start_tenant_result(tenant_id, run.run_id, managed_tenant_id, SyncMode::Full)
        .await?;
    let pages: Vec<Vec<DirectoryEntry>> = users
        .chunks(PAGE_SIZE)
        .map(|page| page.iter().cloned().map(DirectoryEntry::Present).collect())
        .collect();

    checkpoint(store).await?;
    profiler.reset().await;
    let cpu_before = process_cpu_seconds();
    let mut tally = Tally::default();
    let mut statements_per_page = 0;
    let started = Instant::now();
    for (index, page) in pages.iter().enumerate() {
        let scope = PageScope {
            tenant_id,
            run_id: run.run_id,
            managed_tenant_id,
            mapped_client_id: fixture.client_id,
            next_cursor: (index + 1 < pages.len()).then(|| format!("page-{}", index + 1)),
        };
        let outcome = store.reconcile_page(&scope, page, settings, false).await?;
        statements_per_page = statements_per_page.max(outcome.statements);
        tally.add(&outcome.tally);
    }
    let elapsed = started.elapsed();
    let client_cpu_seconds = process_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let profile = profiler.read().await;

    store
        .finish_tenant_result(
            tenant_id,
            run.run_id,
            managed_tenant_id,
            entra_sync_store::runs::TenantResultStatus::Completed,
            None,
        )
        .await?;
    store
        .finish_run(tenant_id, run.run_id, RunStatus::Completed, None)
        .await?;
    Ok(RunFigures {
        elapsed,
        statements_per_page,
        tally,
        profile,
        client_cpu_seconds,
    })
}

/// The contact columns both COPY floors write: those the sync writes, `email_normalized`
/// included (left out, the trigger would normalize each row in SQL, which the sync never pays).
const COPY_CONTACTS: &str = "COPY contacts (tenant_id, contact_id, client_id, full_name, email, \
                             email_normalized, phone, mobile, job_title) FROM STDIN";

/// Appends the `COPY_CONTACTS` row of the contact the sync would create for `user`.
fn push_contact_row(
    rows: &mut String,
    tenant_id: Uuid,
    contact_id: Uuid,
    client_id: Uuid,
    user: &DirectoryUser,
) {
    let fields = new_contact_fields(user);
    let optional = |value: Option<&str>| value.unwrap_or("\\N").to_owned();
    rows.push_str(&format!(
        "{tenant_id}\t{contact_id}\t{client_id}\t{}\t{}\t{}\t{}\t{}\t{}\n",
        fields.full_name,
        optional(fields.email.as_deref()),
        optional(fields.email.as_deref().and_then(email_key).as_deref()),
        optional(fields.phone.as_deref()),
        optional(fields.mobile.as_deref()),
        optional(fields.job_title.as_deref()),
    ));
}

/// The fastest of a few `COPY contacts FROM STDIN` of one contact per directory user, each in
/// one transaction and under a PSA tenant of its own; the rows are encoded before the clock
/// starts.
async fn copy_floor(store: &Store, users: &[DirectoryUser]) -> Result<Duration> {
    let mut fastest: Option<Duration> = None;
    for repetition in 0..FLOOR_REPETITIONS {
        let tenant_id = store
            .create_psa_tenant(&format!("Floor {repetition}"))
            .await?
            .tenant_id;
        let client_id = store
            .create_client(tenant_id, "Floor", &[DOMAIN.to_owned()], &[])
            .await?
            .client_id;
        let mut rows = String::with_capacity(users.len() * 200);
        for user in users {
            push_contact_row(&mut rows, tenant_id, Uuid::now_v7(), client_id, user);
        }
        checkpoint(store).await?;
        let mut connection = store.pool().acquire().await?;
        let started = Instant::now();
        let mut transaction = Connection::begin(&mut *connection).await?;
        let mut copy = transaction.copy_in_raw(COPY_CONTACTS).await?;
        copy.send(rows.as_bytes()).await?;
        let copied = copy.finish().await?;
        transaction.commit().await?;
        let elapsed = started.elapsed();
        ensure!(
            copied == users.len() as u64,
            "COPY wrote {copied} rows, expected {}",
            users.len()
        );
        fastest = Some(fastest.map_or(elapsed, |fastest| fastest.min(elapsed)));
    }
    fastest.context("no COPY repetitions")
}

/// A `COPY` of exactly the rows the first run writes, in one transaction, under a freshly
/// seeded PSA tenant of its own: the 25,000 new contacts, the 50,000 links, their 50,000
/// audit rows, and what the run saw (`run_seen`: one row per page of 999 users, holding their
/// sorted object ids). Encoded before the clock starts.
async fn first_run_writes_floor(store: &Store, users: &[DirectoryUser]) -> Result<Duration> {
    let fixture = seed(store).await?;
    let tenant_id = fixture.tenant_id;
    let managed_tenant_id = fixture.managed_tenant_id;
    let run_id = Uuid::now_v7();
    let json_optional = |value: &Option<String>| match value {
        Some(value) => format!("\"{value}\""),
        None => "null".to_owned(),
    };
    let (mut contacts, mut links, mut changes) = (String::new(), String::new(), String::new());
    let mut seen = String::new();
    let mut matching = fixture.matching_contact_ids.iter();
    for (index, user) in users.iter().enumerate() {
        let object_id = &user.object_id;
        let (contact_id, action, after) = if index % 2 == 0 {
            let contact_id = *matching.next().context("too few matching contacts")?;
            let after = format!("{{\"linked_object_id\": \"{object_id}\"}}");
            (contact_id, "link", after)
        } else {
            let contact_id = Uuid::now_v7();
            let fields = new_contact_fields(user);
            push_contact_row(
                &mut contacts,
                tenant_id,
                contact_id,
                fixture.client_id,
                user,
            );
            let after = format!(
                "{{\"full_name\": \"{}\", \"email\": {}, \"phone\": {}, \"mobile\": {}, \
                 \"job_title\": {}}}",
                fields.full_name,
                json_optional(&fields.email),
                json_optional(&fields.phone),
                json_optional(&fields.mobile),
                json_optional(&fields.job_title),
            );
            (contact_id, "create", after)
        };
        links.push_str(&format!(
            "{tenant_id}\t{managed_tenant_id}\t{object_id}\t{contact_id}\t{run_id}\n"
        ));
        changes.push_str(&format!(
            "{tenant_id}\t{run_id}\t{managed_tenant_id}\t{object_id}\t{contact_id}\t{action}\t\
             {after}\n"
        ));
    }
    let mut connection = store.pool().acquire().await?;
    for page in users.chunks(PAGE_SIZE) {
        let mut object_ids: Vec<&str> = page.iter().map(|user| user.object_id.as_str()).collect();
        object_ids.sort_unstable();
        let digest: Uuid = sqlx::query_scalar("SELECT run_seen_digest($1, 0)")
            .bind(&object_ids)
            .fetch_one(&mut *connection)
            .await?;
        let quoted: Vec<String> = object_ids.iter().map(|id| format!("\"{id}\"")).collect();
        seen.push_str(&format!(
            "{tenant_id}\t{managed_tenant_id}\t{run_id}\t{{{}}}\t{digest}\n",
            quoted.join(",")
        ));
    }
    checkpoint(store).await?;
    let started = Instant::now();
    let mut transaction = Connection::begin(&mut *connection).await?;
    for (statement, rows) in [
        (COPY_CONTACTS, &contacts),
        (
            "COPY links (tenant_id, managed_tenant_id, object_id, contact_id, \
             created_by_run_id) FROM STDIN",
            &links,
        ),
        (
            "COPY run_seen (tenant_id, managed_tenant_id, run_id, object_ids, digest) FROM STDIN",
            &seen,
        ),
        (
            "COPY contact_changes (tenant_id, run_id, managed_tenant_id, object_id, contact_id, \
             action, after) FROM STDIN",
            &changes,
        ),
    ] {
        let mut copy = transaction.copy_in_raw(statement).await?;
        copy.send(rows.as_bytes()).await?;
        copy.finish().await?;
    }
    transaction.commit().await?;
    Ok(started.elapsed())
}

/// Server time per statement of the page, from `pg_stat_statements` when the server preloads
/// it; otherwise does nothing.
struct Profiler {
    pool: Option<PgPool>,
}

impl Profiler {
    async fn connect(database_url: &str) -> Profiler {
        let pool = async {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(database_url)
                .await?;
            sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .execute(&pool)
                .await?;
            // Fails unless the library is preloaded.
            sqlx::query("SELECT pg_stat_statements_reset()")
                .execute(&pool)
                .await?;
            Ok::<PgPool, sqlx::Error>(pool)
        }
        .await;
        match pool {
            Ok(pool) => Profiler { pool: Some(pool) },
            Err(error) => {
                eprintln!("no per-statement profile (pg_stat_statements unavailable: {error})");
                Profiler { pool: None }
            }
        }
    }

    async fn close(&self) {
        if let Some(pool) = &self.pool {
            pool.close().await;
        }
    }

    async fn reset(&self) {
        if let Some(pool) = &self.pool {
            if let Err(error) = sqlx::query("SELECT pg_stat_statements_reset()")
                .execute(pool)
                .await
            {
                eprintln!("could not reset pg_stat_statements: {error}");
            }
        }
    }

    /// Seconds of server execution time by statement of the page.
    async fn read(&self) -> Option<BTreeMap<&'static str, f64>> {
        let pool = self.pool.as_ref()?;
        let rows: Vec<(String, f64)> = match sqlx::query_as(
            "SELECT query, total_exec_time + total_plan_time FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_all(pool)
        .await
        {
            Ok(rows) => rows,
            Err(error) => {
                eprintln!("could not read pg_stat_statements: {error}");
                return None;
            }
        };
        let mut profile = BTreeMap::new();
        for (query, milliseconds) in rows {
            if let Some(label) = statement_label(&query) {
                *profile.entry(label).or_insert(0.0) += milliseconds / 1000.0;
            }
        }
        Some(profile)
    }
}

/// A short name for each statement `reconcile_page` runs (numbered in its order); None for
/// the profiler's own queries.
fn statement_label(query: &str) -> Option<&'static str> {
    let query = query.split_whitespace().collect::<Vec<_>>().join(" ");
    let labels: [(&str, &'static str); 16] = [
        ("pg_stat_statements", ""),
        ("pg_advisory_xact_lock", "01_lock"),
        ("SELECT k.object_id, l.contact_id", "02_read_links"),
        ("FROM contacts c LEFT JOIN links", "03_read_contacts"),
        ("AS k(email) CROSS JOIN LATERAL", "03_read_contacts"),
        ("INSERT INTO address_claims", "03b_claim_addresses"),
        (
            "SELECT EXISTS ( SELECT 1 FROM UNNEST",
            "03c_check_new_addresses",
        ),
        ("FROM review_items WHERE", "04_read_reviews"),
        ("INSERT INTO contacts", "05_insert_contacts"),
        ("INSERT INTO links", "06_insert_links"),
        ("UPDATE contacts c SET full_name", "07_update_contacts"),
        ("INSERT INTO review_items", "08_insert_reviews"),
        (
            "INSERT INTO pending_inactivations",
            "09_pending_inactivations",
        ),
        ("SET is_active = true", "10_reactivate"),
        // What the page saw, the tenant's counts and cursor, and the release of the page's
        // address claims: one statement.
        ("INSERT INTO run_seen", "11_record_seen_and_write_counts"),
        ("COMMIT", "14_commit"),
    ];
    for (needle, label) in labels {
        if query.contains(needle) {
            return (!label.is_empty()).then_some(label);
        }
    }
    if query.starts_with("BEGIN") {
        return Some("00_begin");
    }
    Some("other")
}

/// User plus system CPU seconds of this process so far, from `/proc/self/stat` (Linux, whose
/// clock tick is 1/100 s); None elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces; the fields after it are space-separated, with user
    // and system time the 12th and 13th after the closing parenthesis.
    let (_, fields) = stat.rsplit_once(')')?;
    let mut fields = fields.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / 100.0)
}

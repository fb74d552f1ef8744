//! The store against a real Postgres: each test gets a fresh database with the workspace's
//! migrations applied (`#[sqlx::test]`, which needs DATABASE_URL pointing at a server whose
//! user may create databases).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use entra_sync_domain::model::{
    Action, ContactField, ContactFields, DirectoryEntry, DirectoryUser, FieldPolicy,
    InactiveReason, SyncSettings,
};
use entra_sync_store::connection::{
    CippCredentialsRecord, ConnectionCredentials, ConnectionStatus, DirectTokenSetRecord,
};
use entra_sync_store::discovery::{DiscoveredTenantRecord, ManagedTenantStatus, TenantDomain};
use entra_sync_store::error::StoreError;
use entra_sync_store::inactivation::{HeldInactivationAction, TenantFinish};
use entra_sync_store::mapping::{MappingAction, MappingDecisionInput};
use entra_sync_store::page::PageRequest;
use entra_sync_store::psa::{ContactFilter, NewContact, PsaUserType};
use entra_sync_store::reconcile::{PageOutcome, PageScope, PLAIN_INSERT_ROWS};
use entra_sync_store::review::{ReviewFilter, ReviewResolution, ReviewStatus};
use entra_sync_store::runs::{
    LeasedStart, NewRun, RunKind, RunScope, RunStatus, RunTrigger, SyncMode, TenantResultStatus,
};
use entra_sync_store::Store;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const KEY: [u8; 32] = [42u8; 32];

/// A PSA tenant with one mapped managed tenant, ready for a sync.
struct Fixture {
    store: Store,
    tenant_id: Uuid,
    client_id: Uuid,
    other_client_id: Uuid,
    managed_tenant_id: Uuid,
}

impl Fixture {
    async fn new(pool: PgPool) -> Fixture {
        let store = Store::from_pool(pool).with_encryption_key(KEY);
        let tenant = store.create_psa_tenant("Acme MSP").await.expect("tenant");
        let client = store
            .create_client(
                tenant.tenant_id,
                "Contoso",
                &["contoso.com".to_owned()],
                &[],
            )
            .await
            .expect("client");
        let other = store
            .create_client(
                tenant.tenant_id,
                "Fabrikam",
                &["fabrikam.com".to_owned()],
                &[],
            )
            .await
            .expect("other client");
        let managed_tenant_id = common::discover_and_map(
            &store,
            tenant.tenant_id,
            client.client_id,
            &[discovered(
                "11111111-1111-1111-1111-111111111111",
                "Contoso Ltd",
            )],
        )
        .await[0];
        Fixture {
            store,
            tenant_id: tenant.tenant_id,
            client_id: client.client_id,
            other_client_id: other.client_id,
            managed_tenant_id,
        }
    }

    async fn start_sync(&self) -> Uuid {
        let outcome = self
            .store
            .start_run(&NewRun {
                tenant_id: self.tenant_id,
                kind: RunKind::Sync,
                trigger: RunTrigger::Manual,
                scope: RunScope::All,
                requested_by: Some("admin@msp.example".to_owned()),
            })
            .await
            .expect("start sync");
        assert!(!outcome.deduplicated);
        outcome.run_id
    }

    /// A new sync run with this managed tenant's result opened in `mode`.
    async fn start_tenant_sync(&self, mode: SyncMode) -> Uuid {
        let run_id = self.start_sync().await;
        self.store
            .start_tenant_result(self.tenant_id, run_id, self.managed_tenant_id, mode)
            .await
            .expect("store");
        run_id
    }

    /// A complete full sync of `entries` that saves `delta_link`, run to its end; how the
    /// tenant ended.
    async fn full_sync_saving(
        &self,
        entries: &[DirectoryEntry],
        delta_link: (&str, chrono::DateTime<chrono::Utc>),
    ) -> TenantFinish {
        let run_id = self.start_tenant_sync(SyncMode::Full).await;
        self.reconcile(run_id, entries).await;
        let finish = self
            .store
            .finish_tenant_sync(
                self.tenant_id,
                run_id,
                self.managed_tenant_id,
                true,
                Some(delta_link),
            )
            .await
            .expect("store");
        self.store
            .finish_run(self.tenant_id, run_id, RunStatus::Completed, None)
            .await
            .expect("store");
        finish
    }

    fn scope(&self, run_id: Uuid) -> PageScope {
        PageScope {
            tenant_id: self.tenant_id,
            run_id,
            managed_tenant_id: self.managed_tenant_id,
            mapped_client_id: self.client_id,
            next_cursor: None,
        }
    }

    async fn reconcile(&self, run_id: Uuid, entries: &[DirectoryEntry]) -> PageOutcome {
        self.store
            .reconcile_page(
                &self.scope(run_id),
                entries,
                &SyncSettings::default(),
                false,
            )
            .await
            .expect("reconcile")
    }

    async fn contact(&self, client_id: Uuid, name: &str, email: &str) -> Uuid {
        self.store
            .create_contact(
                self.tenant_id,
                client_id,
                &ContactFields {
                    full_name: name.to_owned(),
                    email: Some(email.to_owned()),
                    ..ContactFields::default()
                },
            )
            .await
            .expect("contact")
            .contact
            .contact_id
    }
}

fn discovered(entra_tenant_id: &str, name: &str) -> DiscoveredTenantRecord {
    DiscoveredTenantRecord {
        entra_tenant_id: entra_tenant_id.to_owned(),
        display_name: name.to_owned(),
        domains: vec![TenantDomain {
            name: format!("{}.onmicrosoft.com", name.to_lowercase().replace(' ', "")),
            is_default: true,
            is_initial: true,
        }],
    }
}

fn user(object_id: &str, email: &str) -> DirectoryEntry {
    DirectoryEntry::Present(DirectoryUser {
        object_id: object_id.to_owned(),
        display_name: Some(format!("User {object_id}")),
        mail: Some(email.to_owned()),
        user_principal_name: Some(email.to_owned()),
        account_enabled: Some(true),
        user_type: Some("Member".to_owned()),
        job_title: Some("Engineer".to_owned()),
        ..DirectoryUser::default()
    })
}

fn users(count: usize, prefix: &str) -> Vec<DirectoryEntry> {
    (0..count)
        .map(|index| {
            user(
                &format!("{prefix}-{index}"),
                &format!("{prefix}{index}@contoso.com"),
            )
        })
        .collect()
}

/// Row counts of every table in the schema, by table name.
async fn row_counts(pool: &PgPool) -> BTreeMap<String, i64> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
           AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    let mut counts = BTreeMap::new();
    for table in tables {
        let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(pool)
            .await
            .expect("count");
        counts.insert(table, count);
    }
    counts
}

/// Statements Postgres executed in this test's database so far (pg_stat_statements calls,
/// utility statements such as BEGIN and COMMIT included), minus the reads of the counter
/// itself.
async fn executed_statements(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND toplevel AND query NOT LIKE '%pg_stat_statements%'",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_statements")
}

/// The object ids recorded as seen, by every run.
const SEEN_IDS: &str = "SELECT count(*) FROM run_seen, unnest(object_ids)";

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

#[sqlx::test(migrations = "../../migrations")]
async fn concurrent_start_run_starts_one_run(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let new_run = NewRun {
        tenant_id: fixture.tenant_id,
        kind: RunKind::Sync,
        trigger: RunTrigger::Manual,
        scope: RunScope::All,
        requested_by: None,
    };
    let outcomes =
        futures::future::join_all((0..8).map(|_| fixture.store.start_run(&new_run))).await;
    let outcomes: Vec<_> = outcomes
        .into_iter()
        .map(|outcome| outcome.expect("start"))
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|outcome| !outcome.deduplicated)
            .count(),
        1
    );
    assert!(outcomes
        .iter()
        .all(|outcome| outcome.run_id == outcomes[0].run_id));
    assert_eq!(
        count(&pool, "SELECT count(*) FROM runs WHERE kind = 'sync'").await,
        1
    );

    // Another scope is another run; a finished run no longer deduplicates.
    let client_run = fixture
        .store
        .start_run(&NewRun {
            scope: RunScope::Client(fixture.client_id),
            ..new_run.clone()
        })
        .await
        .expect("client run");
    assert!(!client_run.deduplicated);
    assert_ne!(client_run.run_id, outcomes[0].run_id);
    fixture
        .store
        .finish_run(
            fixture.tenant_id,
            outcomes[0].run_id,
            RunStatus::Completed,
            None,
        )
        .await
        .expect("finish");
    let next = fixture.store.start_run(&new_run).await.expect("next");
    assert!(!next.deduplicated);
    assert_ne!(next.run_id, outcomes[0].run_id);
}

#[sqlx::test(migrations = "../../migrations")]
async fn finish_run_never_rewrites_a_finished_run(pool: PgPool) {
    let fixture = Fixture::new(pool).await;
    let run_id = fixture.start_sync().await;
    let store = &fixture.store;
    store
        .start_tenant_result(
            fixture.tenant_id,
            run_id,
            fixture.managed_tenant_id,
            SyncMode::Full,
        )
        .await
        .expect("tenant result");
    let mut scope = fixture.scope(run_id);
    scope.next_cursor = Some("page-2".to_owned());
    store
        .reconcile_page(&scope, &users(3, "a"), &SyncSettings::default(), false)
        .await
        .expect("reconcile");
    let progress = store.get_run(fixture.tenant_id, run_id).await.expect("run");
    assert_eq!(progress.tenants[0].cursor.as_deref(), Some("page-2"));
    assert_eq!(
        progress.tenants[0].counts.created, 3,
        "counts advance with the page"
    );
    // `running` is no end: both ways of ending a run refuse it with a message that says so
    // (not the name of the table's check, which would refuse it too) and leave the run as it is.
    let refusals = [
        store
            .finish_run(fixture.tenant_id, run_id, RunStatus::Running, None)
            .await
            .map(|_| ()),
        store
            .finish_run_derived(fixture.tenant_id, run_id, Some(RunStatus::Running), None)
            .await
            .map(|_| ()),
    ];
    for refusal in refusals {
        assert!(
            matches!(&refusal, Err(StoreError::Invalid(message)) if message.contains("final status")),
            "{refusal:?}"
        );
    }
    assert_eq!(
        store.get_run(fixture.tenant_id, run_id).await.expect("run"),
        progress
    );
    store
        .finish_tenant_result(
            fixture.tenant_id,
            run_id,
            fixture.managed_tenant_id,
            TenantResultStatus::Completed,
            None,
        )
        .await
        .expect("finish tenant");
    assert!(store
        .finish_run(fixture.tenant_id, run_id, RunStatus::Completed, None)
        .await
        .expect("finish"));
    let finished = store.get_run(fixture.tenant_id, run_id).await.expect("run");
    assert!(!store
        .finish_run(
            fixture.tenant_id,
            run_id,
            RunStatus::Failed,
            Some(&serde_json::json!({"code": "late"}))
        )
        .await
        .expect("second finish"));
    let after = store.get_run(fixture.tenant_id, run_id).await.expect("run");
    assert_eq!(after, finished);
    assert_eq!(after.status, RunStatus::Completed);
    assert_eq!(after.totals.as_ref().expect("totals")["created"], 3);
    assert_eq!(after.tenants.len(), 1);
    assert_eq!(after.tenants[0].counts.created, 3);
    assert!(matches!(
        store
            .finish_run(fixture.tenant_id, Uuid::new_v4(), RunStatus::Failed, None)
            .await,
        Err(StoreError::NotFound)
    ));
}

#[sqlx::test(migrations = "../../migrations")]
async fn reconcile_links_creates_and_queues_and_replays_harmlessly(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let existing = fixture
        .contact(fixture.client_id, "Alice", "Alice@Contoso.com ")
        .await;
    let twin_one = fixture
        .contact(fixture.client_id, "Bob One", "bob@contoso.com")
        .await;
    let twin_two = fixture
        .contact(fixture.client_id, "Bob Two", "bob@contoso.com")
        .await;
    let elsewhere = fixture
        .contact(fixture.other_client_id, "Carol", "carol@contoso.com")
        .await;
    let run_id = fixture.start_sync().await;
    let mut guest = DirectoryUser {
        object_id: "guest".to_owned(),
        mail: Some("guest@gmail.com".to_owned()),
        user_type: Some("Guest".to_owned()),
        ..DirectoryUser::default()
    };
    guest.display_name = Some("Guest".to_owned());
    let page = vec![
        user("alice", "alice@contoso.com"),
        user("bob", "bob@contoso.com"),
        user("carol", "carol@contoso.com"),
        user("dave", "dave@contoso.com"),
        DirectoryEntry::Present(guest),
    ];
    let first = fixture.reconcile(run_id, &page).await;
    assert_eq!(first.tally.seen, 5);
    assert_eq!(first.tally.linked, 1, "{:?}", first.plan);
    assert_eq!(first.tally.created, 1, "{:?}", first.plan);
    assert_eq!(first.tally.queued, 2, "{:?}", first.plan);

    let links: BTreeMap<String, Uuid> =
        sqlx::query_as::<_, (String, Uuid)>("SELECT object_id, contact_id FROM links")
            .fetch_all(&pool)
            .await
            .expect("links")
            .into_iter()
            .collect();
    assert_eq!(links.len(), 2);
    assert_eq!(links["alice"], existing);
    let dave = fixture
        .store
        .get_contact(fixture.tenant_id, links["dave"])
        .await
        .expect("dave");
    assert_eq!(dave.contact.client_id, fixture.client_id);
    assert_eq!(
        dave.contact.fields.email.as_deref(),
        Some("dave@contoso.com")
    );
    assert_eq!(dave.contact.fields.job_title.as_deref(), Some("Engineer"));
    assert_eq!(dave.link.expect("link").object_id, "dave");

    let items = fixture
        .store
        .list_review_items(
            fixture.tenant_id,
            &ReviewFilter::default(),
            &PageRequest::default(),
        )
        .await
        .expect("review");
    let reasons: BTreeMap<String, String> = items
        .items
        .iter()
        .map(|item| (item.object_id.clone(), item.reason.clone()))
        .collect();
    assert_eq!(reasons["bob"], "multiple_candidates");
    assert_eq!(reasons["carol"], "candidate_in_other_client");
    let bob = items
        .items
        .iter()
        .find(|item| item.object_id == "bob")
        .expect("bob");
    let candidate_ids: Vec<String> = bob
        .candidates
        .as_array()
        .expect("candidates")
        .iter()
        .map(|candidate| candidate["contact_id"].as_str().expect("id").to_owned())
        .collect();
    assert!(candidate_ids.contains(&twin_one.to_string()));
    assert!(candidate_ids.contains(&twin_two.to_string()));
    let carol = items
        .items
        .iter()
        .find(|item| item.object_id == "carol")
        .expect("carol");
    assert_eq!(carol.candidates[0]["contact_id"], elsewhere.to_string());
    assert_eq!(
        count(&pool, "SELECT count(*) FROM contact_changes").await,
        2,
        "one audit row per link and create"
    );

    // Replaying the page changes nothing.
    let before = row_counts(&pool).await;
    let replay = fixture.reconcile(run_id, &page).await;
    assert_eq!(row_counts(&pool).await, before);
    assert!(
        replay
            .plan
            .actions
            .iter()
            .all(|action| matches!(action, Action::Skip { .. })),
        "{:?}",
        replay.plan
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn statements_do_not_grow_with_page_size(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let run_id = fixture.start_sync().await;
    // Seed contacts so the big page links, creates and queues.
    let seeded: Vec<NewContact> = (0..300)
        .map(|index| NewContact {
            client_id: fixture.client_id,
            fields: ContactFields {
                full_name: format!("Big {index}"),
                email: Some(format!("big{index}@contoso.com")),
                ..ContactFields::default()
            },
        })
        .collect();
    fixture
        .store
        .insert_contacts_bulk(fixture.tenant_id, &seeded)
        .await
        .expect("seed");
    // Counted by Postgres itself (pg_stat_statements, which deploy/scripts/lib.sh preloads),
    // not by the code: every statement this database executed during each page.
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&pool)
        .await
        .expect("pg_stat_statements (the server must preload it)");
    // Entries of databases earlier tests dropped fill the server's table, and a full table
    // evicts the least-called entries (ours among them); start from an empty one.
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(&pool)
        .await
        .expect("reset pg_stat_statements");
    let before_small = executed_statements(&pool).await;
    fixture.reconcile(run_id, &users(100, "small")).await;
    let before_big = executed_statements(&pool).await;
    let big = fixture.reconcile(run_id, &users(999, "big")).await;
    let after_big = executed_statements(&pool).await;
    let (small_executed, big_executed) = (before_big - before_small, after_big - before_big);
    println!("statements executed: 100-user page {small_executed}, 999-user page {big_executed}");
    assert!(
        small_executed >= 10,
        "the page ran statements: {small_executed}"
    );
    assert_eq!(small_executed, big_executed);
    // A page of a few users (below PLAIN_INSERT_ROWS, as most delta batches are) inserts its
    // links without a savepoint: one statement fewer (a savepoint is left to the commit, so
    // there is no release). What a page saw is one row whatever its size.
    let before_few = executed_statements(&pool).await;
    fixture.reconcile(run_id, &users(10, "few")).await;
    let few_executed = executed_statements(&pool).await - before_few;
    println!("statements executed: 10-user page {few_executed}");
    assert_eq!(few_executed + 1, small_executed);
    // A page with nothing to write (the same users again, as an unchanged delta round sends
    // them) runs no statement for the kinds of write it has none of.
    let before_unchanged = executed_statements(&pool).await;
    let unchanged = fixture.reconcile(run_id, &users(100, "small")).await;
    let unchanged_executed = executed_statements(&pool).await - before_unchanged;
    println!("statements executed: unchanged 100-user page {unchanged_executed}");
    assert_eq!(unchanged.tally.created + unchanged.tally.linked, 0);
    assert!(
        unchanged_executed + 4 <= small_executed,
        "an unchanged page ran {unchanged_executed} statements, a creating one {small_executed}"
    );
    assert_eq!(big.tally.seen, 999);
    assert_eq!(big.tally.linked, 300);
    assert_eq!(big.tally.created, 699);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM links").await,
        100 + 999 + 10
    );
    // One audit row per link, from the plain insert (the 100- and 999-user pages) and from the
    // skipping one (the 10-user page) alike, each naming its link's user.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM contact_changes c
             JOIN links l ON l.tenant_id = c.tenant_id AND l.contact_id = c.contact_id
                         AND l.object_id = c.object_id
             WHERE c.action IN ('create', 'link')"
        )
        .await,
        100 + 999 + 10
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM contact_changes").await,
        100 + 999 + 10
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM contacts").await,
        300 + 100 + 699 + 10
    );
}

/// A writer that does not supply `email_normalized` (a bulk load, a manual fix in SQL) gets it
/// filled from the address, on insert and when it changes the address alone; a writer that
/// supplies it keeps its value.
#[sqlx::test(migrations = "../../migrations")]
async fn email_normalized_is_filled_only_for_writers_that_leave_it_out(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let normalized = |contact_id: Uuid| {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT email_normalized FROM contacts WHERE contact_id = $1",
        )
        .bind(contact_id)
        .fetch_one(&pool)
    };
    let loaded: Uuid = sqlx::query_scalar(
        "INSERT INTO contacts (tenant_id, client_id, full_name, email)
         VALUES ($1, $2, 'Loaded', '\u{a0}Loaded@Contoso.COM ') RETURNING contact_id",
    )
    .bind(fixture.tenant_id)
    .bind(fixture.client_id)
    .fetch_one(&pool)
    .await
    .expect("bulk-loaded contact");
    assert_eq!(
        normalized(loaded).await.expect("read").as_deref(),
        Some("loaded@contoso.com")
    );
    sqlx::query("UPDATE contacts SET email = 'Moved@Contoso.com' WHERE contact_id = $1")
        .bind(loaded)
        .execute(&pool)
        .await
        .expect("address changed alone");
    assert_eq!(
        normalized(loaded).await.expect("read").as_deref(),
        Some("moved@contoso.com")
    );
    let supplied: Uuid = sqlx::query_scalar(
        "INSERT INTO contacts (tenant_id, client_id, full_name, email, email_normalized)
         VALUES ($1, $2, 'Supplied', 'Supplied@Contoso.com', 'as-supplied') RETURNING contact_id",
    )
    .bind(fixture.tenant_id)
    .bind(fixture.client_id)
    .fetch_one(&pool)
    .await
    .expect("contact with its key");
    assert_eq!(
        normalized(supplied).await.expect("read").as_deref(),
        Some("as-supplied")
    );
    sqlx::query(
        "UPDATE contacts SET email = 'Other@Contoso.com', email_normalized = 'other-supplied'
         WHERE contact_id = $1",
    )
    .bind(supplied)
    .execute(&pool)
    .await
    .expect("address changed with its key");
    assert_eq!(
        normalized(supplied).await.expect("read").as_deref(),
        Some("other-supplied")
    );
}

/// Two writers link one contact at once: the page read the contact unlinked, and another
/// transaction linked it before the page's link insert ran. The link that came first stays;
/// the page's user gets no link and no audit row, and the page keeps its other writes.
/// Covered with a page of two users (inserts that skip existing rows) and with one of more
/// than `PLAIN_INSERT_ROWS` (a plain insert that fails on the key and is redone).
#[sqlx::test(migrations = "../../migrations")]
async fn a_link_made_meanwhile_wins_and_the_page_keeps_its_other_writes(pool: PgPool) {
    link_made_meanwhile(pool, 0).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_link_made_meanwhile_wins_over_a_large_page(pool: PgPool) {
    link_made_meanwhile(pool, PLAIN_INSERT_ROWS).await;
}

/// The page is Bob, Carol and `filler` more new users.
async fn link_made_meanwhile(pool: PgPool, filler: usize) {
    let fixture = Fixture::new(pool.clone()).await;
    let bob = fixture
        .contact(fixture.client_id, "Bob", "bob@contoso.com")
        .await;
    let run_id = fixture.start_sync().await;
    let mut other = pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO links (tenant_id, managed_tenant_id, object_id, contact_id)
         VALUES ($1, $2, 'elsewhere-bob', $3)",
    )
    .bind(fixture.tenant_id)
    .bind(fixture.managed_tenant_id)
    .bind(bob)
    .execute(&mut *other)
    .await
    .expect("the other writer's link");

    let reconciling = tokio::spawn({
        let store = fixture.store.clone();
        let scope = fixture.scope(run_id);
        let mut page = vec![
            user("bob", "bob@contoso.com"),
            user("carol", "carol@contoso.com"),
        ];
        page.extend(users(filler, "filler"));
        async move {
            store
                .reconcile_page(&scope, &page, &SyncSettings::default(), false)
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !reconciling.is_finished(),
        "the page's link insert waits for the other writer's link of the same contact"
    );
    other.commit().await.expect("commit the other link");
    let outcome = reconciling.await.expect("join").expect("the page commits");

    let linked_to: Vec<String> =
        sqlx::query_scalar("SELECT object_id FROM links WHERE contact_id = $1")
            .bind(bob)
            .fetch_all(&pool)
            .await
            .expect("links");
    assert_eq!(linked_to, ["elsewhere-bob"]);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM links WHERE object_id = 'carol'"
        )
        .await,
        1,
        "{:?}",
        outcome.plan
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM contact_changes WHERE object_id = 'bob'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM contact_changes WHERE object_id = 'carol'"
        )
        .await,
        1,
        "carol's contact was created and linked, with its audit row"
    );
    assert_eq!(count(&pool, SEEN_IDS).await, 2 + filler as i64);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM links WHERE object_id LIKE 'filler-%'"
        )
        .await,
        filler as i64
    );
}

/// A round of updates of a field no index holds (a tenth of the users promoted, as the bench's
/// re-run does) finds room on each contact's own page: the contacts table leaves a fifth of
/// each page free (fillfactor 80), so Postgres writes every new row version beside the old one
/// as a heap-only tuple and adds no index entry. The users carry what a real directory user
/// does (phones, a job title, a full name): with a tenth free (fillfactor 90) 17 of the 100
/// new versions went to another page, each with an entry in every index of the table, and this
/// test failed.
#[sqlx::test(migrations = "../../migrations")]
async fn a_round_of_job_title_updates_stays_on_the_contacts_pages(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let staff = |promoted: bool| -> Vec<DirectoryEntry> {
        (0..1000)
            .map(|index| {
                let address = format!("staff{index:05}@contoso.com");
                DirectoryEntry::Present(DirectoryUser {
                    object_id: format!("staff-{index}"),
                    display_name: Some(format!("Staff Member {index:05}")),
                    mail: Some(address.clone()),
                    user_principal_name: Some(address),
                    account_enabled: Some(true),
                    user_type: Some("Member".to_owned()),
                    job_title: Some(
                        if promoted && index % 10 == 0 {
                            "Senior Engineer"
                        } else {
                            "Engineer"
                        }
                        .to_owned(),
                    ),
                    mobile_phone: Some(format!("+1 555 1{index:05}")),
                    business_phones: vec![format!("+1 555 2{index:05}")],
                    ..DirectoryUser::default()
                })
            })
            .collect()
    };
    let settings = SyncSettings {
        field_policy: BTreeMap::from([(ContactField::JobTitle, FieldPolicy::Overwrite)]),
        ..SyncSettings::default()
    };
    let first = fixture.start_sync().await;
    let created = fixture
        .store
        .reconcile_page(&fixture.scope(first), &staff(false), &settings, false)
        .await
        .expect("first run");
    assert_eq!(created.tally.created, 1000);

    let pages = || async {
        let rows: Vec<(Uuid, i64)> =
            sqlx::query_as("SELECT contact_id, (ctid::text::point)[0]::bigint FROM contacts")
                .fetch_all(&pool)
                .await
                .expect("pages");
        rows.into_iter().collect::<BTreeMap<Uuid, i64>>()
    };
    let before = pages().await;
    let page_count = before.values().collect::<BTreeSet<_>>().len();
    assert!(page_count > 10, "the contacts fill {page_count} pages");

    // The same run's next page, with the same users now linked, plans exactly what a re-run
    // would.
    let updated = fixture
        .store
        .reconcile_page(&fixture.scope(first), &staff(true), &settings, false)
        .await
        .expect("re-run");
    assert_eq!(updated.tally.updated, 100, "{:?}", updated.tally);
    let after = pages().await;
    let promoted: Vec<Uuid> =
        sqlx::query_scalar("SELECT contact_id FROM contacts WHERE job_title = 'Senior Engineer'")
            .fetch_all(&pool)
            .await
            .expect("promoted");
    assert_eq!(promoted.len(), 100);
    let moved = promoted
        .iter()
        .filter(|contact_id| before[*contact_id] != after[*contact_id])
        .count();
    assert_eq!(
        moved, 0,
        "{moved} of 100 updated contacts moved to another page"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn dry_run_writes_nothing(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    fixture
        .contact(fixture.client_id, "Bob One", "bob@contoso.com")
        .await;
    fixture
        .contact(fixture.client_id, "Bob Two", "bob@contoso.com")
        .await;
    let run_id = fixture.start_sync().await;
    fixture.reconcile(run_id, &users(5, "linked")).await;
    let mut disabled = users(1, "linked").remove(0);
    if let DirectoryEntry::Present(user) = &mut disabled {
        user.account_enabled = Some(false);
    }
    let page = vec![
        disabled,
        user("new", "new@contoso.com"),
        user("bob", "bob@contoso.com"),
        DirectoryEntry::Removed {
            object_id: "linked-2".to_owned(),
            permanent: false,
        },
    ];
    let before = row_counts(&pool).await;
    let preflight = fixture
        .store
        .reconcile_page(
            &fixture.scope(Uuid::now_v7()),
            &page,
            &SyncSettings::default(),
            true,
        )
        .await
        .expect("dry run");
    assert_eq!(row_counts(&pool).await, before);
    assert_eq!(preflight.tally.created, 1);
    assert_eq!(preflight.tally.queued, 1);
    assert_eq!(
        preflight
            .plan
            .actions
            .iter()
            .filter(|action| matches!(action, Action::Inactivate { .. }))
            .count(),
        2
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn discovery_marks_missing_and_revives(pool: PgPool) {
    let fixture = Fixture::new(pool).await;
    let store = &fixture.store;
    let run_id = Uuid::now_v7();
    let outcome = store
        .record_discovery(
            fixture.tenant_id,
            run_id,
            &[discovered(
                "22222222-2222-2222-2222-222222222222",
                "Northwind",
            )],
        )
        .await
        .expect("discovery");
    assert_eq!((outcome.added, outcome.marked_missing), (1, 1));
    let tenants = store
        .list_managed_tenants(fixture.tenant_id)
        .await
        .expect("list");
    assert_eq!(tenants.len(), 2, "never deleted");
    let contoso = tenants
        .iter()
        .find(|tenant| tenant.managed_tenant_id == fixture.managed_tenant_id)
        .expect("contoso");
    assert_eq!(contoso.status, ManagedTenantStatus::Missing);
    assert!(store
        .sync_targets(fixture.tenant_id, RunScope::All)
        .await
        .expect("targets")
        .is_empty());

    store
        .record_discovery(
            fixture.tenant_id,
            run_id,
            &[discovered(
                "11111111-1111-1111-1111-111111111111",
                "Contoso Ltd",
            )],
        )
        .await
        .expect("again");
    let contoso = store
        .get_managed_tenant(fixture.tenant_id, fixture.managed_tenant_id)
        .await
        .expect("contoso");
    assert_eq!(contoso.status, ManagedTenantStatus::Active);
    let targets = store
        .sync_targets(fixture.tenant_id, RunScope::All)
        .await
        .expect("targets");
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].client_id, fixture.client_id);
}

/// A target's delta link (which makes it a small tenant for the sync workflow) counts only
/// under a direct connection: after a switch to CIPP, the links the direct connection left are
/// not used, and the tenant reads every user.
#[sqlx::test(migrations = "../../migrations")]
async fn a_delta_link_counts_for_a_target_only_under_a_direct_connection(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let store = &fixture.store;
    let issued_at = chrono::Utc::now();
    store
        .save_delta_state(
            fixture.tenant_id,
            fixture.managed_tenant_id,
            "https://graph.microsoft.com/v1.0/users/delta?$deltatoken=abc",
            issued_at,
        )
        .await
        .expect("delta state");
    for (kind, expected) in [("cipp", None), ("direct", Some(issued_at))] {
        sqlx::query(
            "INSERT INTO connections (tenant_id, kind, status) VALUES ($1, $2, 'connected')
             ON CONFLICT (tenant_id) DO UPDATE SET kind = EXCLUDED.kind",
        )
        .bind(fixture.tenant_id)
        .bind(kind)
        .execute(&pool)
        .await
        .expect("connection");
        let targets = store
            .sync_targets(fixture.tenant_id, RunScope::All)
            .await
            .expect("targets");
        assert_eq!(targets.len(), 1);
        assert_eq!(
            targets[0]
                .delta_link_issued_at
                .map(|issued_at| issued_at.timestamp_micros()),
            expected.map(|issued_at| issued_at.timestamp_micros()),
            "{kind}"
        );
    }
}

/// Links `count` more directory users of the fixture's managed tenant to new contacts.
async fn link_users(pool: &PgPool, fixture: &Fixture, from: i32, count: i32) {
    sqlx::query(
        "WITH made AS (
             INSERT INTO contacts (tenant_id, contact_id, client_id, full_name)
             SELECT $1, gen_random_uuid(), $2, 'User ' || n FROM generate_series($4, $4 + $5 - 1) n
             RETURNING contact_id, full_name)
         INSERT INTO links (tenant_id, managed_tenant_id, object_id, contact_id)
         SELECT $1, $3, 'object-' || full_name, contact_id FROM made",
    )
    .bind(fixture.tenant_id)
    .bind(fixture.client_id)
    .bind(fixture.managed_tenant_id)
    .bind(from)
    .bind(count)
    .execute(pool)
    .await
    .expect("links");
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_target_has_few_users_until_more_than_a_thousand_are_linked(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let few_users = || async {
        let targets = fixture
            .store
            .sync_targets(fixture.tenant_id, RunScope::All)
            .await
            .expect("targets");
        assert_eq!(targets.len(), 1);
        targets[0].few_users
    };
    assert!(few_users().await, "before its first sync");
    link_users(&pool, &fixture, 0, 1_000).await;
    assert!(few_users().await, "a thousand linked");
    link_users(&pool, &fixture, 1_000, 1).await;
    assert!(!few_users().await, "a thousand and one linked");

    // A tenant that syncs from a fresh delta link is not counted when the caller says which
    // links are fresh; one whose link is older is.
    sqlx::query(
        "INSERT INTO connections (tenant_id, kind, status) VALUES ($1, 'direct', 'connected')",
    )
    .bind(fixture.tenant_id)
    .execute(&pool)
    .await
    .expect("connection");
    // Back to a thousand linked, so that counting says few.
    let removed =
        sqlx::query("DELETE FROM links WHERE tenant_id = $1 AND object_id = 'object-User 1000'")
            .bind(fixture.tenant_id)
            .execute(&pool)
            .await
            .expect("unlink one")
            .rows_affected();
    assert_eq!(removed, 1);
    let issued_at = chrono::Utc::now() - chrono::Duration::days(2);
    fixture
        .store
        .save_delta_state(
            fixture.tenant_id,
            fixture.managed_tenant_id,
            "link",
            issued_at,
        )
        .await
        .expect("delta state");
    let fixture = &fixture;
    let counted = |fresh_after: Option<chrono::DateTime<chrono::Utc>>| async move {
        fixture
            .store
            .sync_targets_page(fixture.tenant_id, RunScope::All, None, None, fresh_after)
            .await
            .expect("targets")[0]
            .few_users
    };
    assert!(counted(None).await, "counted: a thousand linked");
    assert!(
        !counted(Some(issued_at - chrono::Duration::days(1))).await,
        "a fresh link: not counted"
    );
    assert!(
        counted(Some(issued_at + chrono::Duration::days(1))).await,
        "an older link: counted"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn confirm_mappings_is_all_or_none(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let store = &fixture.store;
    store
        .record_discovery(
            fixture.tenant_id,
            Uuid::now_v7(),
            &[
                discovered("11111111-1111-1111-1111-111111111111", "Contoso Ltd"),
                discovered("22222222-2222-2222-2222-222222222222", "Northwind"),
                discovered("33333333-3333-3333-3333-333333333333", "Tailspin"),
            ],
        )
        .await
        .expect("discovery");
    let tenants = store
        .list_managed_tenants(fixture.tenant_id)
        .await
        .expect("list");
    let id_of = |name: &str| {
        tenants
            .iter()
            .find(|tenant| tenant.display_name == name)
            .expect(name)
            .managed_tenant_id
    };
    let before = row_counts(&pool).await;
    let refused = store
        .confirm_mappings(
            fixture.tenant_id,
            &[
                MappingDecisionInput {
                    managed_tenant_id: id_of("Northwind"),
                    action: MappingAction::CreateClient,
                },
                MappingDecisionInput {
                    managed_tenant_id: id_of("Tailspin"),
                    action: MappingAction::Map {
                        client_id: Uuid::new_v4(),
                    },
                },
            ],
            "admin",
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    let duplicate = store
        .confirm_mappings(
            fixture.tenant_id,
            &[
                MappingDecisionInput {
                    managed_tenant_id: id_of("Tailspin"),
                    action: MappingAction::Skip,
                },
                MappingDecisionInput {
                    managed_tenant_id: id_of("Tailspin"),
                    action: MappingAction::Map {
                        client_id: fixture.client_id,
                    },
                },
            ],
            "admin",
        )
        .await;
    assert!(matches!(duplicate, Err(StoreError::Invalid(_))));
    assert_eq!(row_counts(&pool).await, before);

    let preview_before = row_counts(&pool).await;
    let inputs = store
        .mapping_preview_inputs(fixture.tenant_id)
        .await
        .expect("preview");
    assert_eq!(
        row_counts(&pool).await,
        preview_before,
        "preview is read-only"
    );
    assert_eq!(inputs.tenants.len(), 3);
    assert_eq!(inputs.clients.len(), 2);

    let mappings = store
        .confirm_mappings(
            fixture.tenant_id,
            &[
                MappingDecisionInput {
                    managed_tenant_id: id_of("Northwind"),
                    action: MappingAction::CreateClient,
                },
                MappingDecisionInput {
                    managed_tenant_id: id_of("Tailspin"),
                    action: MappingAction::Skip,
                },
            ],
            "admin",
        )
        .await
        .expect("confirm");
    assert_eq!(mappings.len(), 2);
    let created_client = mappings[0].client_id.expect("created client");
    let client = store
        .get_client(fixture.tenant_id, created_client)
        .await
        .expect("client");
    assert_eq!(client.name, "Northwind");
    assert_eq!(
        store
            .list_mappings(fixture.tenant_id)
            .await
            .expect("mappings")
            .len(),
        3
    );
    store
        .unmap(fixture.tenant_id, id_of("Northwind"), "admin")
        .await
        .expect("unmap");
    let history = store
        .mapping_history(fixture.tenant_id, id_of("Northwind"))
        .await
        .expect("history");
    let decisions: Vec<&str> = history.iter().map(|entry| entry.0.as_str()).collect();
    assert_eq!(decisions, ["create_client", "unmapped"]);
}

#[sqlx::test(migrations = "../../migrations")]
async fn one_open_review_item_per_user_and_resolutions_are_honoured(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let twin = fixture
        .contact(fixture.client_id, "Bob One", "bob@contoso.com")
        .await;
    fixture
        .contact(fixture.client_id, "Bob Two", "bob@contoso.com")
        .await;
    fixture
        .contact(fixture.client_id, "Eve One", "eve@contoso.com")
        .await;
    fixture
        .contact(fixture.client_id, "Eve Two", "eve@contoso.com")
        .await;
    fixture
        .contact(fixture.client_id, "Fay One", "fay@contoso.com")
        .await;
    fixture
        .contact(fixture.client_id, "Fay Two", "fay@contoso.com")
        .await;
    let run_id = fixture.start_sync().await;
    let page = vec![
        user("bob", "bob@contoso.com"),
        user("eve", "eve@contoso.com"),
        user("fay", "fay@contoso.com"),
    ];
    fixture.reconcile(run_id, &page).await;
    fixture.reconcile(run_id, &page).await;
    let open = "SELECT count(*) FROM review_items WHERE status = 'open'";
    assert_eq!(count(&pool, open).await, 3);
    // The partial unique index refuses a second open item for the same user.
    let duplicate = sqlx::query(
        "INSERT INTO review_items (tenant_id, reason, managed_tenant_id, object_id)
         VALUES ($1, 'multiple_candidates', $2, 'bob')",
    )
    .bind(fixture.tenant_id)
    .bind(fixture.managed_tenant_id)
    .execute(&pool)
    .await;
    assert!(duplicate.is_err());

    let items = fixture
        .store
        .list_review_items(
            fixture.tenant_id,
            &ReviewFilter {
                status: Some(ReviewStatus::Open),
                ..ReviewFilter::default()
            },
            &PageRequest::first(2),
        )
        .await
        .expect("page one");
    assert_eq!(items.items.len(), 2);
    let rest = fixture
        .store
        .list_review_items(
            fixture.tenant_id,
            &ReviewFilter::default(),
            &PageRequest {
                limit: Some(2),
                cursor: items.next_cursor.clone(),
            },
        )
        .await
        .expect("page two");
    assert_eq!(rest.items.len(), 1);
    assert!(rest.next_cursor.is_none());
    // The reason filter is part of the query, so a page holds only matching items.
    for (reason, expected) in [("multiple_candidates", 3), ("candidate_in_other_client", 0)] {
        let filtered = fixture
            .store
            .list_review_items(
                fixture.tenant_id,
                &ReviewFilter {
                    reason: Some(reason.to_owned()),
                    ..ReviewFilter::default()
                },
                &PageRequest::first(10),
            )
            .await
            .expect("filtered by reason");
        assert_eq!(filtered.items.len(), expected, "{reason}");
        assert!(filtered.items.iter().all(|item| item.reason == reason));
    }
    let item_of = |object_id: &str| {
        items
            .items
            .iter()
            .chain(&rest.items)
            .find(|item| item.object_id == object_id)
            .expect(object_id)
            .item_id
    };

    let store = &fixture.store;
    let other = fixture
        .contact(fixture.other_client_id, "Bob Elsewhere", "b@fabrikam.com")
        .await;
    let refused = store
        .resolve_review_item(
            fixture.tenant_id,
            item_of("bob"),
            &ReviewResolution::LinkExisting {
                contact_id: other,
                allow_other_client: false,
            },
            "support",
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(ref code)) if code == "contact_in_other_client")
    );
    store
        .resolve_review_item(
            fixture.tenant_id,
            item_of("bob"),
            &ReviewResolution::LinkExisting {
                contact_id: twin,
                allow_other_client: false,
            },
            "support",
        )
        .await
        .expect("link existing");
    store
        .resolve_review_item(
            fixture.tenant_id,
            item_of("eve"),
            &ReviewResolution::CreateNew,
            "support",
        )
        .await
        .expect("create new");
    store
        .resolve_review_item(
            fixture.tenant_id,
            item_of("fay"),
            &ReviewResolution::Dismiss {
                note: Some("shared mailbox".to_owned()),
            },
            "support",
        )
        .await
        .expect("dismiss");
    assert!(matches!(
        store
            .resolve_review_item(
                fixture.tenant_id,
                item_of("fay"),
                &ReviewResolution::CreateNew,
                "x"
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .get_contact(fixture.tenant_id, twin)
            .await
            .expect("twin")
            .link
            .expect("link")
            .object_id,
        "bob"
    );

    let next = fixture.reconcile(run_id, &page).await;
    assert_eq!(
        next.tally.created, 1,
        "create_new honoured: {:?}",
        next.plan
    );
    assert_eq!(
        next.tally.queued, 0,
        "dismissed and linked users are not queued again"
    );
    assert_eq!(count(&pool, open).await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM links").await, 2);

    store
        .reopen_review_item(fixture.tenant_id, item_of("fay"))
        .await
        .expect("reopen");
    assert_eq!(count(&pool, open).await, 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn credentials_are_encrypted_and_switching_kind_clears_the_other(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let store = &fixture.store;
    let cipp = CippCredentialsRecord::ApiClient {
        client_id: "cipp-client".to_owned(),
        client_secret: "super-secret-value-123".to_owned(),
        tenant_id: "msp-tenant".to_owned(),
    };
    store
        .save_cipp_connection(fixture.tenant_id, "https://cipp.example/", &cipp)
        .await
        .expect("save");
    let connection = store
        .get_connection(fixture.tenant_id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(
        connection.credentials,
        Some(ConnectionCredentials::Cipp(cipp.clone()))
    );
    assert_eq!(
        connection.cipp_base_url.as_deref(),
        Some("https://cipp.example")
    );
    assert_eq!(connection.status, ConnectionStatus::Connected);
    assert!(!format!("{connection:?}").contains("super-secret-value-123"));

    let ciphertext: Vec<u8> =
        sqlx::query_scalar("SELECT credentials_ciphertext FROM connections WHERE tenant_id = $1")
            .bind(fixture.tenant_id)
            .fetch_one(&pool)
            .await
            .expect("ciphertext");
    let plaintext = serde_json::to_vec(&ConnectionCredentials::Cipp(cipp)).expect("json");
    assert_ne!(ciphertext, plaintext);
    assert!(!ciphertext
        .windows(b"super-secret-value-123".len())
        .any(|window| window == b"super-secret-value-123"));

    // Another key cannot read it.
    let wrong_key = Store::from_pool(pool.clone()).with_encryption_key([1u8; 32]);
    assert!(matches!(
        wrong_key.get_connection(fixture.tenant_id).await,
        Err(StoreError::Encryption(_))
    ));

    let tokens = DirectTokenSetRecord {
        access_token: "access".to_owned(),
        refresh_token: "refresh-1".to_owned(),
        expires_at: chrono::Utc::now(),
        scope: "Directory.Read.All".to_owned(),
    };
    let direct = store
        .save_direct_connection(fixture.tenant_id, &tokens)
        .await
        .expect("direct");
    assert_eq!(
        direct.credentials,
        Some(ConnectionCredentials::Direct(tokens.clone()))
    );
    assert_eq!(direct.cipp_base_url, None, "cipp credentials cleared");
    let rotated = DirectTokenSetRecord {
        refresh_token: "refresh-2".to_owned(),
        ..tokens
    };
    let version = store
        .replace_direct_token_set(fixture.tenant_id, direct.credentials_version, &rotated)
        .await
        .expect("rotate");
    assert!(matches!(
        store
            .replace_direct_token_set(fixture.tenant_id, direct.credentials_version, &rotated)
            .await,
        Err(StoreError::Conflict(_))
    ));
    let current = store
        .get_connection(fixture.tenant_id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(current.credentials_version, version);
    assert_eq!(
        current.credentials,
        Some(ConnectionCredentials::Direct(rotated))
    );

    store
        .disconnect(fixture.tenant_id)
        .await
        .expect("disconnect");
    let gone = store
        .get_connection(fixture.tenant_id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(gone.credentials, None);
    assert_eq!(gone.status, ConnectionStatus::Disconnected);
}

#[sqlx::test(migrations = "../../migrations")]
async fn oauth_state_is_single_use_and_api_keys_authenticate(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let store = &fixture.store;
    let (user, key) = store
        .create_psa_user(
            fixture.tenant_id,
            "admin@msp.example",
            PsaUserType::Internal,
            &["system_settings.read".to_owned()],
        )
        .await
        .expect("user");
    let authenticated = store
        .authenticate_api_key(&key.0)
        .await
        .expect("auth")
        .expect("known");
    assert_eq!(authenticated.user_id, user.user_id);
    assert!(authenticated.has_permission("system_settings.read"));
    assert!(store
        .authenticate_api_key("esk_wrong")
        .await
        .expect("auth")
        .is_none());
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_one(&pool)
        .await
        .expect("hash");
    assert_ne!(stored, key.0.as_bytes());

    let expires = chrono::Utc::now() + chrono::Duration::minutes(10);
    store
        .create_oauth_state(
            fixture.tenant_id,
            user.user_id,
            "state-abc",
            "verifier-xyz",
            expires,
        )
        .await
        .expect("state");
    // Another PSA tenant's credentials are refused and do not use the state up.
    assert!(matches!(
        store.consume_oauth_state("state-abc", Some(Uuid::new_v4())).await,
        Err(StoreError::Conflict(code)) if code == "oauth_state_tenant_mismatch"
    ));
    let consumed = store
        .consume_oauth_state("state-abc", Some(fixture.tenant_id))
        .await
        .expect("consume");
    assert_eq!(consumed.tenant_id, fixture.tenant_id);
    assert_eq!(consumed.code_verifier, "verifier-xyz");
    assert!(matches!(
        store.consume_oauth_state("state-abc", None).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.consume_oauth_state("forged", None).await,
        Err(StoreError::NotFound)
    ));
    store
        .create_oauth_state(
            fixture.tenant_id,
            user.user_id,
            "old-state",
            "v",
            chrono::Utc::now() - chrono::Duration::seconds(1),
        )
        .await
        .expect("expired state");
    assert!(matches!(
        store.consume_oauth_state("old-state", None).await,
        Err(StoreError::Invalid(_))
    ));
}

#[sqlx::test(migrations = "../../migrations")]
async fn mass_inactivation_is_held_over_the_guard(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let store = &fixture.store;
    let first_run = fixture.start_sync().await;
    let everyone = users(20, "u");
    fixture.reconcile(first_run, &everyone).await;
    let first = store
        .finish_tenant_inactivations(
            fixture.tenant_id,
            first_run,
            fixture.managed_tenant_id,
            true,
        )
        .await
        .expect("first finish");
    assert_eq!((first.applied, first.held), (0, 0));
    store
        .finish_run(fixture.tenant_id, first_run, RunStatus::Completed, None)
        .await
        .expect("finish first");

    // Two missing users out of twenty stay under the guard and apply.
    let second_run = fixture.start_sync().await;
    fixture.reconcile(second_run, &everyone[..18]).await;
    let incomplete = store
        .finish_tenant_inactivations(
            fixture.tenant_id,
            second_run,
            fixture.managed_tenant_id,
            false,
        )
        .await
        .expect("incomplete");
    assert_eq!(
        (incomplete.applied, incomplete.held),
        (0, 0),
        "unfinished enumeration"
    );
    let second = store
        .finish_tenant_inactivations(
            fixture.tenant_id,
            second_run,
            fixture.managed_tenant_id,
            true,
        )
        .await
        .expect("second finish");
    assert_eq!((second.applied, second.held), (2, 0));
    let inactive = "SELECT count(*) FROM contacts WHERE NOT is_active AND inactive_reason = 'deleted_upstream'";
    assert_eq!(count(&pool, inactive).await, 2);
    store
        .finish_run(fixture.tenant_id, second_run, RunStatus::Completed, None)
        .await
        .expect("finish second");

    // Fifteen missing out of twenty trip the guard: held, nothing inactivated.
    let third_run = fixture.start_sync().await;
    store
        .start_tenant_result(
            fixture.tenant_id,
            third_run,
            fixture.managed_tenant_id,
            SyncMode::Full,
        )
        .await
        .expect("tenant result");
    fixture.reconcile(third_run, &everyone[..5]).await;
    let third = store
        .finish_tenant_inactivations(
            fixture.tenant_id,
            third_run,
            fixture.managed_tenant_id,
            true,
        )
        .await
        .expect("third finish");
    assert_eq!((third.applied, third.held), (0, 13));
    assert_eq!(count(&pool, inactive).await, 2);
    let status = store
        .finish_tenant_result(
            fixture.tenant_id,
            third_run,
            fixture.managed_tenant_id,
            TenantResultStatus::Completed,
            None,
        )
        .await
        .expect("tenant finish");
    assert_eq!(status, TenantResultStatus::NeedsConfirmation);

    let applied = store
        .resolve_held_inactivations(
            fixture.tenant_id,
            third_run,
            fixture.managed_tenant_id,
            HeldInactivationAction::Apply,
            "admin",
        )
        .await
        .expect("apply");
    assert_eq!(applied, 13);
    assert_eq!(count(&pool, inactive).await, 15);
    let run = store
        .get_run(fixture.tenant_id, third_run)
        .await
        .expect("run");
    assert_eq!(run.tenants[0].status, TenantResultStatus::Completed);
    assert_eq!(run.tenants[0].counts.inactivated, 13);
    assert!(matches!(
        store
            .resolve_held_inactivations(
                fixture.tenant_id,
                third_run,
                fixture.managed_tenant_id,
                HeldInactivationAction::Discard,
                "admin",
            )
            .await,
        Err(StoreError::NotFound)
    ));
    let audited = "SELECT count(*) FROM contact_changes WHERE action = 'inactivate'";
    assert_eq!(count(&pool, audited).await, 15);

    store
        .finish_run(fixture.tenant_id, third_run, RunStatus::Completed, None)
        .await
        .expect("finish third");

    // Users that come back are reactivated by the sync that made them inactive.
    let fourth_run = fixture.start_sync().await;
    let back = fixture.reconcile(fourth_run, &everyone).await;
    assert_eq!(back.tally.reactivated, 15, "{:?}", back.plan);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM contacts WHERE NOT is_active").await,
        0
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn settings_flags_and_contacts_round_trip(pool: PgPool) {
    let fixture = Fixture::new(pool).await;
    let store = &fixture.store;
    let defaults = store
        .load_sync_settings(fixture.tenant_id, fixture.managed_tenant_id)
        .await
        .expect("defaults");
    assert!(defaults.mark_inactive_when_disabled);
    assert!(
        !defaults.field_sync_enabled,
        "field sync flag is off until enabled"
    );

    let mut settings = store
        .load_settings(fixture.tenant_id)
        .await
        .expect("settings");
    settings
        .field_policy
        .insert("job_title".to_owned(), "overwrite".to_owned());
    settings.filters.exclusion_patterns = vec!["^svc-".to_owned()];
    settings.filters.include_groups = vec!["5b0e6c5e-0000-4000-8000-000000000001".to_owned()];
    settings.filters.exclude_groups = vec!["Sales Team".to_owned()];
    assert!(
        matches!(
            store
                .save_settings(fixture.tenant_id, &settings, "admin")
                .await,
            Err(StoreError::Invalid(_))
        ),
        "a group id that is not a GUID is refused"
    );
    settings.filters.exclude_groups = Vec::new();
    store
        .save_settings(fixture.tenant_id, &settings, "admin")
        .await
        .expect("save");
    settings.schedule.interval_seconds = 60;
    assert!(matches!(
        store
            .save_settings(fixture.tenant_id, &settings, "admin")
            .await,
        Err(StoreError::Invalid(_))
    ));
    settings.schedule.interval_seconds = 3600;
    settings.filters.exclusion_patterns = vec!["(".to_owned()];
    assert!(matches!(
        store
            .save_settings(fixture.tenant_id, &settings, "admin")
            .await,
        Err(StoreError::Invalid(_))
    ));
    store
        .save_filter_override(
            fixture.tenant_id,
            fixture.managed_tenant_id,
            &entra_sync_store::settings::FilterOverride {
                exclude_guests: Some(false),
                exclude_groups: Some(vec!["5b0e6c5e-0000-4000-8000-000000000002".to_owned()]),
                ..Default::default()
            },
            "admin",
        )
        .await
        .expect("override");
    store
        .ensure_flags(&entra_sync_store::flags::ENTRA_PHASE1_FLAGS)
        .await
        .expect("flags");
    store
        .set_flag_tenant(
            entra_sync_store::flags::FIELD_SYNC_FLAG,
            fixture.tenant_id,
            true,
        )
        .await
        .expect("flag");
    assert!(matches!(
        store
            .set_flag_tenant("no-such-flag", fixture.tenant_id, true)
            .await,
        Err(StoreError::NotFound)
    ));
    let merged = store
        .load_sync_settings(fixture.tenant_id, fixture.managed_tenant_id)
        .await
        .expect("merged");
    assert!(merged.field_sync_enabled);
    assert!(!merged.filters.exclude_guests);
    assert_eq!(merged.filters.exclusion_patterns, vec!["^svc-".to_owned()]);
    assert_eq!(
        merged.filters.include_groups,
        vec!["5b0e6c5e-0000-4000-8000-000000000001".to_owned()],
        "the tenant's include groups stay when the override does not set them"
    );
    assert_eq!(
        merged.filters.exclude_groups,
        vec!["5b0e6c5e-0000-4000-8000-000000000002".to_owned()]
    );

    let contact = fixture
        .contact(fixture.client_id, "Zed", "zed@contoso.com")
        .await;
    let edited = store
        .update_contact(
            fixture.tenant_id,
            contact,
            &entra_sync_store::psa::ContactPatch {
                phone: Some(Some("+1 555".to_owned())),
                sync_locked: Some(true),
                is_active: Some(false),
                ..Default::default()
            },
        )
        .await
        .expect("patch");
    assert_eq!(edited.contact.inactive_reason, Some(InactiveReason::Manual));
    assert!(edited.contact.sync_locked);
    let listed = store
        .list_contacts(
            fixture.tenant_id,
            &ContactFilter {
                email: Some(" ZED@contoso.com".to_owned()),
                include_inactive: true,
                ..ContactFilter::default()
            },
            &PageRequest::default(),
        )
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    let active_only = store
        .list_contacts(
            fixture.tenant_id,
            &ContactFilter::default(),
            &PageRequest::default(),
        )
        .await
        .expect("active");
    assert!(active_only.items.is_empty());
}

#[sqlx::test(migrations = "../../migrations")]
async fn contacts_and_managed_tenants_are_never_deleted(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    fixture
        .contact(fixture.client_id, "Kept", "kept@contoso.com")
        .await;
    let contact_delete = sqlx::query("DELETE FROM contacts").execute(&pool).await;
    assert!(matches!(
        contact_delete.map_err(StoreError::from),
        Err(StoreError::Conflict(ref code)) if code == "never_deleted"
    ));
    assert!(sqlx::query("DELETE FROM managed_tenants")
        .execute(&pool)
        .await
        .is_err());
    assert_eq!(count(&pool, "SELECT count(*) FROM contacts").await, 1);
    let counts = fixture
        .store
        .status_page_counts(fixture.tenant_id)
        .await
        .expect("counts");
    assert_eq!((counts.active_managed_tenants, counts.mapped), (1, 1));
}

#[sqlx::test(migrations = "../../migrations")]
async fn concurrent_workers_on_one_tenant_do_not_duplicate_contacts(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let run_id = fixture.start_sync().await;
    let page = users(200, "race");
    let outcomes =
        futures::future::join_all((0..4).map(|_| fixture.reconcile(run_id, &page))).await;
    assert_eq!(
        outcomes
            .iter()
            .map(|outcome| outcome.tally.created)
            .sum::<u64>(),
        200,
        "the advisory lock lets exactly one worker create each contact"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM contacts").await, 200);
    assert_eq!(count(&pool, "SELECT count(*) FROM links").await, 200);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM contact_changes").await,
        200
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn tenants_cannot_reach_each_others_rows(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let contact = fixture
        .contact(fixture.client_id, "Private", "p@contoso.com")
        .await;
    let intruder = fixture
        .store
        .create_psa_tenant("Other MSP")
        .await
        .expect("tenant");
    let store = &fixture.store;
    assert!(matches!(
        store.get_contact(intruder.tenant_id, contact).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .get_client(intruder.tenant_id, fixture.client_id)
            .await,
        Err(StoreError::NotFound)
    ));
    // A contact cannot be created under another tenant's client (composite foreign key).
    assert!(matches!(
        store
            .create_contact(
                intruder.tenant_id,
                fixture.client_id,
                &ContactFields {
                    full_name: "Sneaky".to_owned(),
                    ..ContactFields::default()
                }
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(store
        .list_managed_tenants(intruder.tenant_id)
        .await
        .expect("list")
        .is_empty());
}

#[sqlx::test(migrations = "../../migrations")]
async fn delta_state_and_run_history_pages(pool: PgPool) {
    let fixture = Fixture::new(pool).await;
    let store = &fixture.store;
    let (tenant_id, managed_tenant_id) = (fixture.tenant_id, fixture.managed_tenant_id);
    assert_eq!(
        store
            .get_delta_state(tenant_id, managed_tenant_id)
            .await
            .expect("get"),
        None
    );
    let issued_at = chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("time");
    store
        .save_delta_state(
            tenant_id,
            managed_tenant_id,
            "https://graph/delta?token=1",
            issued_at,
        )
        .await
        .expect("save");
    store
        .save_delta_state(
            tenant_id,
            managed_tenant_id,
            "https://graph/delta?token=2",
            issued_at,
        )
        .await
        .expect("replace");
    assert_eq!(
        store
            .get_delta_state(tenant_id, managed_tenant_id)
            .await
            .expect("get"),
        Some(("https://graph/delta?token=2".to_owned(), issued_at))
    );
    store
        .clear_delta_state(tenant_id, managed_tenant_id)
        .await
        .expect("clear");
    assert_eq!(
        store
            .get_delta_state(tenant_id, managed_tenant_id)
            .await
            .expect("get"),
        None
    );

    let mut started = Vec::new();
    for _ in 0..5 {
        let run_id = fixture.start_sync().await;
        store
            .finish_run(tenant_id, run_id, RunStatus::Completed, None)
            .await
            .expect("finish");
        started.push(run_id);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_runs(
                tenant_id,
                Some(RunKind::Sync),
                &PageRequest {
                    limit: Some(2),
                    cursor,
                },
            )
            .await
            .expect("page");
        seen.extend(page.items.iter().map(|run| run.run_id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    started.reverse();
    assert_eq!(seen, started, "newest first, each run once");
}

/// `add_counts` (the page transactions' and inactivations' count update) sums every key of
/// either side, treats a missing or null value as 0, sums `skipped` key by key and always
/// returns a `skipped` object.
#[sqlx::test(migrations = "../../migrations")]
async fn add_counts_sums_every_key_of_either_side(pool: PgPool) {
    let cases = [
        (json!({}), json!({}), json!({"skipped": {}})),
        (
            json!({"seen": 5, "created": 1, "skipped": {"guest": 1}}),
            json!({"seen": 2, "updated": 3, "skipped": {"guest": 1, "disabled": 4}}),
            json!({"seen": 7, "created": 1, "updated": 3, "skipped": {"guest": 2, "disabled": 4}}),
        ),
        (
            json!({"seen": null, "queued": 1}),
            json!({"seen": 2}),
            json!({"seen": 2, "queued": 1, "skipped": {}}),
        ),
        (
            json!({"skipped": {"guest": 2}}),
            json!({"inactivated": 1}),
            json!({"inactivated": 1, "skipped": {"guest": 2}}),
        ),
    ];
    for (a, b, expected) in cases {
        let sum: serde_json::Value = sqlx::query_scalar("SELECT add_counts($1, $2)")
            .bind(&a)
            .bind(&b)
            .fetch_one(&pool)
            .await
            .expect("store");
        assert_eq!(sum, expected, "{a} + {b}");
    }
}

/// The sync lease (SPEC §5.7): a second run waits while the holder's result for the tenant is
/// running and opens no result of its own meanwhile; the holder keeps the lease on a retry and
/// re-finds its result as its pages left it; the run that takes the lease over drops what the
/// earlier run saw and opens its result in the same statement.
#[sqlx::test(migrations = "../../migrations")]
async fn a_sync_lease_passes_on_when_its_holder_ends_the_tenant(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let store = &fixture.store;
    let (tenant_id, managed_tenant_id) = (fixture.tenant_id, fixture.managed_tenant_id);
    let take = |run_id: Uuid, mode: SyncMode| async move {
        store
            .take_lease_and_start(tenant_id, managed_tenant_id, run_id, mode)
            .await
            .expect("store")
    };
    let results_of = |run_id: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM run_tenant_results WHERE run_id = $1",
            )
            .bind(run_id)
            .fetch_one(&pool)
            .await
            .expect("count")
        }
    };
    let first = fixture.start_sync().await;
    let LeasedStart::Started(opened) = take(first, SyncMode::Full).await else {
        panic!("a free lease is taken");
    };
    assert_eq!(opened.status, TenantResultStatus::Running);
    assert_eq!(opened.mode, SyncMode::Full);
    assert_eq!(opened.cursor, None);
    fixture.reconcile(first, &users(3, "u")).await;
    assert_eq!(count(&pool, SEEN_IDS).await, 3);

    // A second run of another scope (runs are deduplicated per scope only).
    let second = store
        .start_run(&NewRun {
            tenant_id,
            kind: RunKind::Sync,
            trigger: RunTrigger::Manual,
            scope: RunScope::Client(fixture.client_id),
            requested_by: None,
        })
        .await
        .expect("store")
        .run_id;
    assert_eq!(
        take(second, SyncMode::Delta).await,
        LeasedStart::Held { holder: first }
    );
    assert_eq!(results_of(second).await, 0, "a waiting run opens no result");
    let LeasedStart::Started(resumed) = take(first, SyncMode::Delta).await else {
        panic!("the holder's retry keeps the lease");
    };
    assert_eq!(
        resumed.mode,
        SyncMode::Full,
        "a retry keeps the mode it started with"
    );
    assert_eq!(
        resumed.counts.seen, 3,
        "a retry finds what its pages recorded"
    );
    assert_eq!(results_of(first).await, 1);
    assert_eq!(count(&pool, SEEN_IDS).await, 3);

    store
        .finish_tenant_result(
            tenant_id,
            first,
            managed_tenant_id,
            TenantResultStatus::Completed,
            None,
        )
        .await
        .expect("store");
    let LeasedStart::Started(taken_over) = take(second, SyncMode::Delta).await else {
        panic!("the lease passes on once the holder's result ended");
    };
    assert_eq!(taken_over.status, TenantResultStatus::Running);
    assert_eq!(taken_over.mode, SyncMode::Delta);
    assert_eq!(
        count(&pool, SEEN_IDS).await,
        3,
        "what the first run saw stays until a run that holds the lease ends"
    );
    assert_eq!(
        take(first, SyncMode::Full).await,
        LeasedStart::Held { holder: second }
    );

    // The first run ending drops nothing: the lease is the second's now.
    store
        .finish_run(tenant_id, first, RunStatus::Completed, None)
        .await
        .expect("store");
    assert_eq!(count(&pool, SEEN_IDS).await, 3);
    // The second run ending drops what the runs before it saw, and keeps its own.
    fixture.reconcile(second, &users(2, "u")).await;
    assert_eq!(count(&pool, SEEN_IDS).await, 5);
    store
        .finish_run(tenant_id, second, RunStatus::Completed, None)
        .await
        .expect("store");
    let runs_seen: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT run_id FROM run_seen")
        .fetch_all(&pool)
        .await
        .expect("run_seen");
    assert_eq!(
        runs_seen,
        vec![second],
        "the lease holder's end drops what earlier runs saw"
    );
    assert_eq!(count(&pool, SEEN_IDS).await, 2);
}

/// A time on a fixed morning, by its minute: when a delta link was issued, in the tests.
fn at_minute(minute: u32) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(&format!("2026-12-06T08:{minute:02}:00Z"))
        .expect("time")
        .with_timezone(&chrono::Utc)
}

/// `finish_tenant_sync`: a delta sync with nothing pending ends in one statement, saving the
/// new delta link; one whose pages queued removals applies them (or holds them over the
/// guard) first; and ending a tenant again answers its stored status and changes nothing.
#[sqlx::test(migrations = "../../migrations")]
async fn a_delta_finish_saves_the_link_and_settles_what_the_pages_queued(pool: PgPool) {
    let fixture = &Fixture::new(pool.clone()).await;
    let store = &fixture.store;
    let (tenant_id, managed_tenant_id) = (fixture.tenant_id, fixture.managed_tenant_id);
    let at = at_minute;
    let sync = |mode: SyncMode| fixture.start_tenant_sync(mode);
    let removed = |index: usize| DirectoryEntry::Removed {
        object_id: format!("u-{index}"),
        permanent: false,
    };
    let inactive = "SELECT count(*) FROM contacts WHERE NOT is_active";

    let everyone = users(20, "u");
    let finish = fixture.full_sync_saving(&everyone, ("link-1", at(1))).await;
    assert_eq!(finish.status, TenantResultStatus::Completed);

    // Nothing removed: one statement ends it.
    let quiet = sync(SyncMode::Delta).await;
    fixture.reconcile(quiet, &everyone[..1]).await;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&pool)
        .await
        .expect("pg_stat_statements (the server must preload it)");
    let before = executed_statements(&pool).await;
    let finish = store
        .finish_tenant_sync(
            tenant_id,
            quiet,
            managed_tenant_id,
            false,
            Some(("link-2", at(2))),
        )
        .await
        .expect("store");
    assert_eq!(
        (
            finish.status,
            finish.inactivations.applied,
            finish.inactivations.held
        ),
        (TenantResultStatus::Completed, 0, 0)
    );
    assert_eq!(
        executed_statements(&pool).await - before,
        4,
        "begin, lock, the statement, commit"
    );
    assert_eq!(
        store
            .get_delta_state(tenant_id, managed_tenant_id)
            .await
            .expect("store"),
        Some(("link-2".to_owned(), at(2)))
    );
    // Again (a retry after the finish): the stored status, nothing else changes.
    let again = store
        .finish_tenant_sync(tenant_id, quiet, managed_tenant_id, false, None)
        .await
        .expect("store");
    assert_eq!(again, finish);
    store
        .finish_run(tenant_id, quiet, RunStatus::Completed, None)
        .await
        .expect("store");

    // A removal under the guard is applied.
    let one_removed = sync(SyncMode::Delta).await;
    fixture.reconcile(one_removed, &[removed(3)]).await;
    let finish = store
        .finish_tenant_sync(
            tenant_id,
            one_removed,
            managed_tenant_id,
            false,
            Some(("link-3", at(3))),
        )
        .await
        .expect("store");
    assert_eq!(
        (
            finish.status,
            finish.inactivations.applied,
            finish.inactivations.held
        ),
        (TenantResultStatus::Completed, 1, 0)
    );
    assert_eq!(count(&pool, inactive).await, 1);
    assert_eq!(
        store
            .get_delta_state(tenant_id, managed_tenant_id)
            .await
            .expect("store"),
        Some(("link-3".to_owned(), at(3)))
    );
    store
        .finish_run(tenant_id, one_removed, RunStatus::Completed, None)
        .await
        .expect("store");

    // Twelve removals of twenty trip the guard: held, and the tenant needs confirmation, also
    // when it is ended again.
    let many_removed = sync(SyncMode::Delta).await;
    let removals: Vec<DirectoryEntry> = (4..16).map(removed).collect();
    fixture.reconcile(many_removed, &removals).await;
    let finish = store
        .finish_tenant_sync(tenant_id, many_removed, managed_tenant_id, false, None)
        .await
        .expect("store");
    assert_eq!(
        (
            finish.status,
            finish.inactivations.applied,
            finish.inactivations.held
        ),
        (TenantResultStatus::NeedsConfirmation, 0, 12)
    );
    assert_eq!(count(&pool, inactive).await, 1);
    let again = store
        .finish_tenant_sync(tenant_id, many_removed, managed_tenant_id, false, None)
        .await
        .expect("store");
    assert_eq!(again, finish);
    assert_eq!(
        store
            .get_delta_state(tenant_id, managed_tenant_id)
            .await
            .expect("store"),
        Some(("link-3".to_owned(), at(3))),
        "no link given, the stored one stays"
    );
}

/// `reconcile_last_delta_page`: the last batch of a delta round ends the tenant in the page's
/// own transaction, one statement more than the page alone, when nothing is pending; when the
/// page queued a removal it commits the page, ends nothing and leaves the tenant to
/// `finish_tenant_sync`, which applies the removal.
#[sqlx::test(migrations = "../../migrations")]
async fn the_last_delta_page_ends_a_quiet_tenant_in_its_own_transaction(pool: PgPool) {
    let fixture = &Fixture::new(pool.clone()).await;
    let store = &fixture.store;
    let (tenant_id, managed_tenant_id) = (fixture.tenant_id, fixture.managed_tenant_id);
    let at = at_minute;
    let sync = |mode: SyncMode| fixture.start_tenant_sync(mode);
    let status = |run_id: Uuid| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT status FROM run_tenant_results WHERE run_id = $1 AND managed_tenant_id = $2",
        )
        .bind(run_id)
        .bind(managed_tenant_id)
        .fetch_one(&fixture.store.pool().clone())
        .await
        .expect("status")
    };
    let delta_state = || async {
        store
            .get_delta_state(tenant_id, managed_tenant_id)
            .await
            .expect("store")
    };
    let last_page = |run_id: Uuid, entries: Vec<DirectoryEntry>, link: &'static str, minute| async move {
        let mut scope = fixture.scope(run_id);
        scope.next_cursor = Some("complete".to_owned());
        store
            .reconcile_last_delta_page(
                &scope,
                &entries,
                &SyncSettings::default(),
                Some((link, at(minute))),
            )
            .await
            .expect("reconcile")
    };

    fixture
        .full_sync_saving(&users(20, "u"), ("link-1", at(1)))
        .await;

    // Two users changed: the page and the tenant's end commit together.
    let quiet = sync(SyncMode::Delta).await;
    let changed = users(2, "u");
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&pool)
        .await
        .expect("pg_stat_statements (the server must preload it)");
    let before = executed_statements(&pool).await;
    let (outcome, finish) = last_page(quiet, changed.clone(), "link-2", 2).await;
    let ran = executed_statements(&pool).await - before;
    let finish = finish.expect("nothing pending: the page ended the tenant");
    assert_eq!(
        (
            finish.status,
            finish.inactivations.applied,
            finish.inactivations.held
        ),
        (TenantResultStatus::Completed, 0, 0)
    );
    assert_eq!(outcome.tally.seen, 2);
    assert_eq!(status(quiet).await, "completed");
    assert_eq!(delta_state().await, Some(("link-2".to_owned(), at(2))));
    store
        .finish_run(tenant_id, quiet, RunStatus::Completed, None)
        .await
        .expect("store");
    // The same page without the end, in a run of its own, runs one statement fewer.
    let plain = sync(SyncMode::Delta).await;
    let before = executed_statements(&pool).await;
    fixture.reconcile(plain, &changed).await;
    assert_eq!(
        ran,
        executed_statements(&pool).await - before + 1,
        "the page's statements and the end's one"
    );
    assert_eq!(status(plain).await, "running");
    store
        .finish_tenant_sync(tenant_id, plain, managed_tenant_id, false, None)
        .await
        .expect("store");
    store
        .finish_run(tenant_id, plain, RunStatus::Completed, None)
        .await
        .expect("store");

    // A removal is pending after the page: it commits, the tenant does not end, and the link
    // is not saved until `finish_tenant_sync` has applied the removal.
    let removing = sync(SyncMode::Delta).await;
    let removal = vec![DirectoryEntry::Removed {
        object_id: "u-5".to_owned(),
        permanent: false,
    }];
    let (outcome, finish) = last_page(removing, removal, "link-3", 3).await;
    assert!(
        finish.is_none(),
        "a pending removal leaves the end to the caller"
    );
    assert_eq!(outcome.tally.seen, 1);
    assert_eq!(status(removing).await, "running");
    assert_eq!(delta_state().await, Some(("link-2".to_owned(), at(2))));
    let finish = store
        .finish_tenant_sync(
            tenant_id,
            removing,
            managed_tenant_id,
            false,
            Some(("link-3", at(3))),
        )
        .await
        .expect("store");
    assert_eq!(
        (finish.status, finish.inactivations.applied),
        (TenantResultStatus::Completed, 1)
    );
    assert_eq!(delta_state().await, Some(("link-3".to_owned(), at(3))));
}

/// A page waits for the managed tenant's lock, which its transaction takes together with its
/// `BEGIN`: while another transaction holds the lock the page writes nothing, and once that
/// transaction ends the page commits.
#[sqlx::test(migrations = "../../migrations")]
async fn a_page_waits_for_the_managed_tenants_lock(pool: PgPool) {
    let fixture = std::sync::Arc::new(Fixture::new(pool.clone()).await);
    let run_id = fixture.start_sync().await;
    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!(
            "entra-sync:managed-tenant:{}:{}",
            fixture.tenant_id, fixture.managed_tenant_id
        ))
        .execute(&mut *holder)
        .await
        .expect("lock");
    let page = tokio::spawn({
        let fixture = fixture.clone();
        async move { fixture.reconcile(run_id, &users(3, "waiting")).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!page.is_finished(), "the page did not wait for the lock");
    assert_eq!(count(&pool, "SELECT count(*) FROM links").await, 0);
    holder.commit().await.expect("release");
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), page)
        .await
        .expect("the page ends once the lock is free")
        .expect("page task");
    assert_eq!(outcome.tally.seen, 3);
    assert_eq!(count(&pool, "SELECT count(*) FROM links").await, 3);
}

//! Contact integrity in the store (real Postgres): what a run saw decides absent users, one
//! run per managed tenant, counts owned by the page transaction, held inactivations re-checked,
//! one email normalization, unstorable values skipped, and statement counts as Postgres saw them.

mod common;

use entra_sync_domain::model::{ContactFields, DirectoryEntry, DirectoryUser, SyncSettings};
use entra_sync_store::discovery::{DiscoveredTenantRecord, TenantDomain};
use entra_sync_store::page::PageRequest;
use entra_sync_store::reconcile::{PageOutcome, PageScope, PLAIN_INSERT_ROWS};
use entra_sync_store::review::{ReviewFilter, ReviewResolution};
use entra_sync_store::runs::{
    NewRun, RunKind, RunScope, RunStatus, RunTrigger, SyncMode, TallyCounts, TenantResultStatus,
};
use entra_sync_store::Store;
use sqlx::PgPool;
use uuid::Uuid;

/// A discovered tenant whose one domain is its default.
fn discovered(entra_tenant_id: &str, display_name: &str, domain: &str) -> DiscoveredTenantRecord {
    DiscoveredTenantRecord {
        entra_tenant_id: entra_tenant_id.to_owned(),
        display_name: display_name.to_owned(),
        domains: vec![TenantDomain {
            name: domain.to_owned(),
            is_default: true,
            is_initial: false,
        }],
    }
}

struct Fixture {
    store: Store,
    tenant_id: Uuid,
    client_id: Uuid,
    managed_tenant_id: Uuid,
}

impl Fixture {
    async fn new(pool: PgPool) -> Fixture {
        let store = Store::from_pool(pool).with_encryption_key([7u8; 32]);
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
        let managed_tenant_id = common::discover_and_map(
            &store,
            tenant.tenant_id,
            client.client_id,
            &[discovered(
                "11111111-1111-1111-1111-111111111111",
                "Contoso Ltd",
                "contoso.com",
            )],
        )
        .await[0];
        Fixture {
            store,
            tenant_id: tenant.tenant_id,
            client_id: client.client_id,
            managed_tenant_id,
        }
    }

    /// A sync run of the given scope with this managed tenant's result opened.
    async fn start_sync(&self, scope: RunScope) -> Uuid {
        let outcome = self
            .store
            .start_run(&NewRun {
                tenant_id: self.tenant_id,
                kind: RunKind::Sync,
                trigger: RunTrigger::Manual,
                scope,
                requested_by: Some("admin@msp.example".to_owned()),
            })
            .await
            .expect("start sync");
        self.store
            .start_tenant_result(
                self.tenant_id,
                outcome.run_id,
                self.managed_tenant_id,
                SyncMode::Full,
            )
            .await
            .expect("tenant result");
        outcome.run_id
    }

    async fn reconcile(&self, run_id: Uuid, entries: &[DirectoryEntry]) -> PageOutcome {
        self.store
            .reconcile_page(
                &PageScope {
                    tenant_id: self.tenant_id,
                    run_id,
                    managed_tenant_id: self.managed_tenant_id,
                    mapped_client_id: self.client_id,
                    next_cursor: None,
                },
                entries,
                &SyncSettings::default(),
                false,
            )
            .await
            .expect("reconcile")
    }

    async fn finish(&self, run_id: Uuid) -> u64 {
        let outcome = self
            .store
            .finish_tenant_inactivations(self.tenant_id, run_id, self.managed_tenant_id, true)
            .await
            .expect("finish inactivations");
        outcome.applied + outcome.held
    }

    /// The counts of the run's result for the managed tenant.
    async fn tenant_counts(&self, run_id: Uuid) -> TallyCounts {
        let record = self
            .store
            .get_run(self.tenant_id, run_id)
            .await
            .expect("run");
        record.tenants[0].counts.clone()
    }

    /// Ends the managed tenant's result of the run as completed.
    async fn end_tenant(&self, run_id: Uuid) {
        self.store
            .finish_tenant_result(
                self.tenant_id,
                run_id,
                self.managed_tenant_id,
                TenantResultStatus::Completed,
                None,
            )
            .await
            .expect("finish the tenant");
    }

    async fn end_run(&self, run_id: Uuid) {
        self.store
            .finish_run(self.tenant_id, run_id, RunStatus::Completed, None)
            .await
            .expect("finish run");
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
        ..DirectoryUser::default()
    })
}

fn users(range: std::ops::Range<usize>) -> Vec<DirectoryEntry> {
    range
        .map(|index| user(&format!("u-{index}"), &format!("u{index}@contoso.com")))
        .collect()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

const WRONGLY_INACTIVE: &str = "SELECT count(*) FROM contacts WHERE NOT is_active";

/// Two runs whose enumerations interleave on one managed tenant (what an "all" run and a
/// "client" run did before leases) each judge absence by their own enumeration only.
#[sqlx::test(migrations = "../../migrations")]
async fn interleaved_runs_do_not_erase_what_each_other_saw(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let first = fixture.start_sync(RunScope::All).await;
    fixture.reconcile(first, &users(0..10)).await;
    fixture.finish(first).await;
    fixture.end_run(first).await;

    let all = fixture.start_sync(RunScope::All).await;
    let client = fixture
        .start_sync(RunScope::Client(fixture.client_id))
        .await;
    fixture.reconcile(all, &users(0..5)).await;
    fixture.reconcile(client, &users(0..10)).await;
    fixture.reconcile(all, &users(5..10)).await;
    assert_eq!(fixture.finish(all).await, 0, "the all run saw everyone");
    assert_eq!(
        fixture.finish(client).await,
        0,
        "the client run saw everyone"
    );
    assert_eq!(count(&pool, WRONGLY_INACTIVE).await, 0);
}

/// A review item resolved with `link_existing` while a run is under way creates a link the run
/// never saw as a link; its user is present, so it is not inactivated.
#[sqlx::test(migrations = "../../migrations")]
async fn a_link_made_by_a_review_during_a_run_is_not_inactivated(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let store = &fixture.store;
    // Two contacts with one address: the user is queued as multiple_candidates.
    let mut contacts = Vec::new();
    for name in ["Dana One", "Dana Two"] {
        contacts.push(
            store
                .create_contact(
                    fixture.tenant_id,
                    fixture.client_id,
                    &ContactFields {
                        full_name: name.to_owned(),
                        email: Some("dana@contoso.com".to_owned()),
                        ..ContactFields::default()
                    },
                )
                .await
                .expect("contact")
                .contact
                .contact_id,
        );
    }
    let mut page = users(0..5);
    page.push(user("dana", "dana@contoso.com"));
    let first = fixture.start_sync(RunScope::All).await;
    let outcome = fixture.reconcile(first, &page).await;
    assert_eq!(outcome.tally.queued, 1);
    fixture.finish(first).await;
    fixture.end_run(first).await;

    // The next run reads the page (Dana still queued), then an admin links Dana.
    let run = fixture.start_sync(RunScope::All).await;
    fixture.reconcile(run, &page).await;
    let items = store
        .list_review_items(
            fixture.tenant_id,
            &ReviewFilter::default(),
            &PageRequest::first(10),
        )
        .await
        .expect("items");
    store
        .resolve_review_item(
            fixture.tenant_id,
            items.items[0].item_id,
            &ReviewResolution::LinkExisting {
                contact_id: contacts[0],
                allow_other_client: false,
            },
            "admin@msp.example",
        )
        .await
        .expect("link existing");
    assert_eq!(fixture.finish(run).await, 0);
    assert_eq!(count(&pool, WRONGLY_INACTIVE).await, 0);
}

/// Graph may send an entry twice in one delta round; `seen` counts the user once. The page
/// that repeats users keeps the rest of its writes: its new users are linked and recorded.
/// Both forms of the page's inserts are covered: a few users (the inserts that skip existing
/// rows) and more than `PLAIN_INSERT_ROWS` (plain inserts, redone when a key exists).
#[sqlx::test(migrations = "../../migrations")]
async fn replayed_entries_are_seen_once(pool: PgPool) {
    replay(pool, 5, 2).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn replayed_entries_in_a_large_page_are_seen_once(pool: PgPool) {
    replay(pool, 2 * PLAIN_INSERT_ROWS, PLAIN_INSERT_ROWS).await;
}

/// A batch the run recorded already (a page replayed exactly, as a retried activity may) adds
/// nothing to what the tenant saw, while its cursor still advances.
#[sqlx::test(migrations = "../../migrations")]
async fn a_batch_replayed_exactly_counts_nothing_again(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let run = fixture.start_sync(RunScope::All).await;
    let first = fixture.reconcile(run, &users(0..10)).await;
    assert_eq!((first.tally.seen, first.tally.eligible), (10, 10));
    let counted = fixture.tenant_counts(run).await;
    assert_eq!((counted.seen, counted.eligible), (10, 10));
    let replayed = fixture.reconcile(run, &users(0..10)).await;
    assert_eq!((replayed.tally.seen, replayed.tally.eligible), (0, 0));
    let counts = fixture.tenant_counts(run).await;
    assert_eq!(counts, counted, "the replay changed the counts");
    assert_eq!(count(&pool, "SELECT count(*) FROM run_seen").await, 1);
}

/// Reconciles users `0..first`, then `first - overlap..first + overlap` in the same run. A
/// page counts the users it carried; when the tenant's result ends, `seen` and `eligible`
/// count each user once.
async fn replay(pool: PgPool, first: usize, overlap: usize) {
    let fixture = Fixture::new(pool.clone()).await;
    let run = fixture.start_sync(RunScope::All).await;
    fixture.reconcile(run, &users(0..first)).await;
    let replaying = fixture
        .reconcile(run, &users(first - overlap..first + overlap))
        .await;
    assert_eq!(replaying.tally.seen, 2 * overlap as u64);
    let total = (first + overlap) as u64;
    assert_eq!(
        fixture.tenant_counts(run).await.seen,
        total + overlap as u64,
        "while the tenant syncs, the replayed users count in each page"
    );
    fixture.end_tenant(run).await;
    let counts = fixture.tenant_counts(run).await;
    assert_eq!(counts.seen, total, "each user once");
    assert_eq!(counts.eligible, total, "each user once");
    assert_eq!(counts.linked + counts.created, total);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM links").await,
        total as i64
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(DISTINCT object_id) FROM run_seen, unnest(object_ids) AS object_id"
        )
        .await,
        total as i64
    );
}

/// Entries without a usable object id count as seen; a batch of nothing else still records
/// them, so the count made when the tenant's result ends keeps them.
#[sqlx::test(migrations = "../../migrations")]
async fn entries_without_an_id_stay_seen_when_the_tenant_ends(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let run = fixture.start_sync(RunScope::All).await;
    let nameless = DirectoryEntry::Invalid {
        object_id: None,
        reason: "no id".to_owned(),
    };
    fixture.reconcile(run, &users(0..3)).await;
    fixture.reconcile(run, &[nameless.clone(), nameless]).await;
    fixture.reconcile(run, &users(2..4)).await;
    fixture.end_tenant(run).await;
    assert_eq!(fixture.tenant_counts(run).await.seen, 4 + 2);
}

/// An address with non-breaking spaces, other case and a decomposed accent matches its contact
/// in SQL exactly as in the planner: linked, not created again.
#[sqlx::test(migrations = "../../migrations")]
async fn unicode_forms_of_an_address_match_their_contact(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    for (name, email) in [
        ("José Núñez", "\u{a0}JOSÉ@contoso.com\u{a0}"),
        ("Åsa Öberg", "\u{2003}Åsa.Öberg@Contoso.com"),
        // Stored decomposed (e + combining diaeresis), read composed from the directory.
        ("Zoë Decomposed", "ZOE\u{308}@contoso.com"),
    ] {
        fixture
            .store
            .create_contact(
                fixture.tenant_id,
                fixture.client_id,
                &ContactFields {
                    full_name: name.to_owned(),
                    email: Some(email.to_owned()),
                    ..ContactFields::default()
                },
            )
            .await
            .expect("contact");
    }
    let run = fixture.start_sync(RunScope::All).await;
    let outcome = fixture
        .reconcile(
            run,
            &[
                user("jose", "jose\u{301}@contoso.com"),
                user("asa", "åsa.öberg@contoso.com"),
                user("zoe", "zo\u{eb}@contoso.com"),
            ],
        )
        .await;
    assert_eq!(
        (outcome.tally.linked, outcome.tally.created),
        (3, 0),
        "{:?}",
        outcome.plan
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM contacts").await, 3);
}

/// A NUL byte or an over-long value skips that user with a reason; the page goes on.
#[sqlx::test(migrations = "../../migrations")]
async fn values_postgres_cannot_store_skip_the_user(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let run = fixture.start_sync(RunScope::All).await;
    let mut page = users(0..3);
    page.push(user("nul\u{0}id", "nul@contoso.com"));
    if let DirectoryEntry::Present(mut bad) = user("nul-name", "nulname@contoso.com") {
        bad.display_name = Some("Bad\u{0}Name".to_owned());
        page.push(DirectoryEntry::Present(bad));
    }
    if let DirectoryEntry::Present(mut long) = user("long", "long@contoso.com") {
        long.job_title = Some("x".repeat(20_000));
        page.push(DirectoryEntry::Present(long));
    }
    page.push(DirectoryEntry::Removed {
        object_id: "gone\u{0}".to_owned(),
        permanent: false,
    });
    let outcome = fixture.reconcile(run, &page).await;
    assert_eq!(outcome.tally.created, 3);
    assert_eq!(count(&pool, "SELECT count(*) FROM contacts").await, 3);
    let skipped: u64 = outcome.tally.skipped.values().sum();
    assert!(
        skipped + outcome.tally.errors >= 4,
        "bad records are skipped with a reason: {:?}",
        outcome.tally
    );
}

/// Held inactivations are re-checked when an admin applies them: a user a later run saw, a
/// contact locked since, is dropped with the reason; the tenant result's counts, the run's
/// totals and the audit say what was applied.
#[sqlx::test(migrations = "../../migrations")]
async fn held_inactivations_are_rechecked_when_applied(pool: PgPool) {
    use entra_sync_store::inactivation::HeldInactivationAction;
    use entra_sync_store::psa::ContactPatch;
    let fixture = Fixture::new(pool.clone()).await;
    let store = &fixture.store;
    let first = fixture.start_sync(RunScope::All).await;
    fixture.reconcile(first, &users(0..20)).await;
    fixture.finish(first).await;
    fixture.end_run(first).await;

    // Fifteen of twenty missing: the guard holds them.
    let held_run = fixture.start_sync(RunScope::All).await;
    fixture.reconcile(held_run, &users(0..5)).await;
    assert_eq!(fixture.finish(held_run).await, 15);
    store
        .finish_tenant_result(
            fixture.tenant_id,
            held_run,
            fixture.managed_tenant_id,
            entra_sync_store::runs::TenantResultStatus::Completed,
            None,
        )
        .await
        .expect("tenant finish");
    fixture.end_run(held_run).await;

    // Since then: a later run saw u-5, and an admin locked u-6's contact.
    let later = fixture.start_sync(RunScope::All).await;
    fixture.reconcile(later, &users(5..6)).await;
    let locked: Uuid = sqlx::query_scalar("SELECT contact_id FROM links WHERE object_id = 'u-6'")
        .fetch_one(&pool)
        .await
        .expect("link");
    store
        .update_contact(
            fixture.tenant_id,
            locked,
            &ContactPatch {
                sync_locked: Some(true),
                ..ContactPatch::default()
            },
        )
        .await
        .expect("lock");

    let applied = store
        .resolve_held_inactivations(
            fixture.tenant_id,
            held_run,
            fixture.managed_tenant_id,
            HeldInactivationAction::Apply,
            "admin",
        )
        .await
        .expect("apply");
    assert_eq!(applied, 13);
    let held = store
        .list_held_inactivations(fixture.tenant_id, held_run, fixture.managed_tenant_id)
        .await
        .expect("held");
    let dropped: Vec<(&str, Option<&str>)> = held
        .iter()
        .filter(|item| item.state == "dropped")
        .map(|item| (item.object_id.as_str(), item.drop_reason.as_deref()))
        .collect();
    assert_eq!(
        dropped,
        vec![("u-5", Some("seen_by_later_run")), ("u-6", Some("locked"))]
    );
    let run = store
        .get_run(fixture.tenant_id, held_run)
        .await
        .expect("run");
    assert_eq!(run.tenants[0].counts.inactivated, 13);
    assert_eq!(
        run.totals
            .as_ref()
            .and_then(|totals| totals.get("inactivated"))
            .and_then(serde_json::Value::as_u64),
        Some(13)
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM contact_changes WHERE action = 'inactivate' AND run_id = $1",
    )
    .bind(held_run)
    .fetch_one(&pool)
    .await
    .expect("audit");
    assert_eq!(audited, 13);
}

/// The counts of a tenant result come from the page transactions and the inactivation step
/// only, so they equal the audit rows; the users of a replayed page count once when the
/// tenant's result ends.
#[sqlx::test(migrations = "../../migrations")]
async fn counts_equal_the_audit(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let first = fixture.start_sync(RunScope::All).await;
    fixture.reconcile(first, &users(0..12)).await;
    fixture.finish(first).await;
    fixture.end_run(first).await;
    let run = fixture.start_sync(RunScope::All).await;
    fixture.reconcile(run, &users(0..6)).await;
    fixture.reconcile(run, &users(6..10)).await;
    fixture.reconcile(run, &users(6..10)).await;
    fixture.finish(run).await;
    fixture.finish(run).await;
    fixture.end_tenant(run).await;
    let counts = fixture.tenant_counts(run).await;
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM contact_changes WHERE action = 'inactivate' AND run_id = $1",
    )
    .bind(run)
    .fetch_one(&pool)
    .await
    .expect("audit");
    assert_eq!((counts.seen, counts.inactivated), (10, 2));
    assert_eq!(i64::try_from(counts.inactivated).expect("count"), audited);
}

/// Two managed tenants of one PSA tenant reconcile at the same moment and both see a new
/// address (a user in one, an `otherMails` entry in the other). Both page transactions are held
/// after planning (each planned a create) until both got there; the address lock then lets one
/// create the contact and makes the other plan again: one contact, the other user queued
/// (`candidate_linked_to_other_user`), as a sequential run would.
#[sqlx::test(migrations = "../../migrations")]
async fn parallel_tenants_create_one_contact_per_address(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let store = &fixture.store;
    let other_client = store
        .create_client(
            fixture.tenant_id,
            "Fabrikam",
            &["fabrikam.com".to_owned()],
            &[],
        )
        .await
        .expect("client");
    // Discovery reports both tenants; Contoso keeps the fixture's mapping.
    let second_managed = common::discover(
        store,
        fixture.tenant_id,
        &[
            discovered(
                "11111111-1111-1111-1111-111111111111",
                "Contoso Ltd",
                "contoso.com",
            ),
            discovered(
                "22222222-2222-2222-2222-222222222222",
                "Fabrikam Inc",
                "fabrikam.com",
            ),
        ],
    )
    .await[1];
    common::map_to(
        store,
        fixture.tenant_id,
        &[second_managed],
        other_client.client_id,
    )
    .await;
    let run = fixture.start_sync(RunScope::All).await;
    store
        .start_tenant_result(fixture.tenant_id, run, second_managed, SyncMode::Full)
        .await
        .expect("second tenant result");

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let held = store.clone().with_create_barrier(barrier);
    let in_contoso = user("pat-contoso", "pat@contoso.com");
    let mut in_fabrikam = DirectoryUser {
        object_id: "pat-fabrikam".to_owned(),
        display_name: Some("Pat Guest".to_owned()),
        user_principal_name: Some("pat@fabrikam.com".to_owned()),
        account_enabled: Some(true),
        user_type: Some("Member".to_owned()),
        ..DirectoryUser::default()
    };
    in_fabrikam.other_mails = vec!["pat@contoso.com".to_owned()];
    in_fabrikam.mail = Some("pat@contoso.com".to_owned());
    let scope_of = |managed_tenant_id: Uuid, client_id: Uuid| PageScope {
        tenant_id: fixture.tenant_id,
        run_id: run,
        managed_tenant_id,
        mapped_client_id: client_id,
        next_cursor: None,
    };
    let contoso_scope = scope_of(fixture.managed_tenant_id, fixture.client_id);
    let fabrikam_scope = scope_of(second_managed, other_client.client_id);
    let contoso_page = [in_contoso];
    let fabrikam_page = [DirectoryEntry::Present(in_fabrikam)];
    let settings = SyncSettings::default();
    let (first, second) = tokio::join!(
        held.reconcile_page(&contoso_scope, &contoso_page, &settings, false),
        held.reconcile_page(&fabrikam_scope, &fabrikam_page, &settings, false),
    );
    let (first, second) = (first.expect("contoso page"), second.expect("fabrikam page"));
    assert_eq!(
        first.tally.created + second.tally.created,
        1,
        "{:?} {:?}",
        first.plan,
        second.plan
    );
    assert_eq!(first.tally.queued + second.tally.queued, 1);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM contacts WHERE email_normalized = 'pat@contoso.com'"
        )
        .await,
        1
    );
    let reason: String = sqlx::query_scalar("SELECT reason FROM review_items")
        .fetch_one(&pool)
        .await
        .expect("review item");
    // What a sequential run decides: whichever tenant went first links the contact, so the
    // other user's candidate is linked to another user.
    assert_eq!(reason, "candidate_linked_to_other_user");
}

/// A discovery in which one tenant's domains could not be read keeps the domains stored before
/// for that tenant (and counts it in the run's totals), while another tenant's domains are
/// replaced by what the provider said.
#[sqlx::test(migrations = "../../migrations")]
async fn unreadable_domains_keep_the_stored_ones(pool: PgPool) {
    let fixture = Fixture::new(pool.clone()).await;
    let run_id = common::start_discovery(&fixture.store, fixture.tenant_id).await;
    let contoso = "11111111-1111-1111-1111-111111111111";
    let fabrikam = "22222222-2222-2222-2222-222222222222";
    let fabrikam_domain = |name: &str| TenantDomain {
        name: name.to_owned(),
        is_default: true,
        is_initial: false,
    };
    fixture
        .store
        .record_discovery(
            fixture.tenant_id,
            run_id,
            &[DiscoveredTenantRecord {
                entra_tenant_id: fabrikam.to_owned(),
                display_name: "Fabrikam".to_owned(),
                domains: vec![fabrikam_domain("fabrikam.com")],
            }],
        )
        .await
        .expect("first listing");
    let outcome = fixture
        .store
        .record_discovery_keeping_domains(
            fixture.tenant_id,
            run_id,
            &[
                DiscoveredTenantRecord {
                    entra_tenant_id: contoso.to_owned(),
                    display_name: "Contoso Ltd".to_owned(),
                    domains: Vec::new(),
                },
                DiscoveredTenantRecord {
                    entra_tenant_id: fabrikam.to_owned(),
                    display_name: "Fabrikam".to_owned(),
                    domains: vec![fabrikam_domain("fabrikam.net")],
                },
            ],
            &[contoso.to_uppercase()],
        )
        .await
        .expect("listing with unreadable domains");
    assert_eq!(outcome.domains_kept, 1);
    assert_eq!(outcome.marked_missing, 0);
    let tenants = fixture
        .store
        .list_managed_tenants(fixture.tenant_id)
        .await
        .expect("tenants");
    let domains_of = |id: &str| -> Vec<String> {
        tenants
            .iter()
            .find(|tenant| tenant.entra_tenant_id == id)
            .map(|tenant| tenant.domains.iter().map(|d| d.name.clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(domains_of(contoso), vec!["contoso.com".to_owned()]);
    assert_eq!(domains_of(fabrikam), vec!["fabrikam.net".to_owned()]);
    let unreadable: Option<i64> = sqlx::query_scalar(
        "SELECT (totals->>'domains_unreadable')::bigint FROM runs WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(&pool)
    .await
    .expect("totals");
    assert_eq!(unreadable, Some(1));
}

//! A delta group (`Store::reconcile_delta_group`) against a real Postgres: the tenants it takes
//! end exactly as their own last delta pages would end them, the ones it leaves are untouched,
//! and the whole group costs a fixed number of statements.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use entra_sync_domain::model::{
    ContactField, DirectoryEntry, DirectoryUser, FieldPolicy, SkipReason, SyncSettings,
};
use entra_sync_store::discovery::{DiscoveredTenantRecord, TenantDomain};
use entra_sync_store::group::{GroupMember, GroupOutcome};
use entra_sync_store::reconcile::PageScope;
use entra_sync_store::runs::{
    LeasedStart, NewRun, RunKind, RunScope, RunStatus, RunTrigger, SyncMode, TenantResultStatus,
};
use entra_sync_store::Store;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// The resume cursor a tenant's last batch leaves.
const COMPLETE: &str = "complete";

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, minute, 0).unwrap()
}

/// Job titles follow the directory, so a changed one updates its contact.
fn settings() -> SyncSettings {
    let mut settings = SyncSettings::default();
    settings
        .field_policy
        .insert(ContactField::JobTitle, FieldPolicy::Overwrite);
    settings
}

fn user(object_id: &str, job_title: &str) -> DirectoryEntry {
    DirectoryEntry::Present(DirectoryUser {
        object_id: object_id.to_owned(),
        display_name: Some(format!("User {object_id}")),
        mail: Some(format!("{object_id}@contoso.com")),
        user_principal_name: Some(format!("{object_id}@contoso.com")),
        account_enabled: Some(true),
        user_type: Some("Member".to_owned()),
        job_title: Some(job_title.to_owned()),
        ..DirectoryUser::default()
    })
}

fn disabled(object_id: &str) -> DirectoryEntry {
    let DirectoryEntry::Present(mut user) = user(object_id, "Engineer") else {
        unreachable!("a present user")
    };
    user.account_enabled = Some(false);
    DirectoryEntry::Present(user)
}

/// The managed tenants of the scenario, each with five users after the first sync, and what
/// each one's delta round brings.
fn rounds() -> Vec<(&'static str, Vec<DirectoryEntry>)> {
    vec![
        // Two job titles changed, and a disabled user never synced, which the filters skip
        // whatever contacts its address matches: updates and a skip, which a group applies.
        (
            "updated",
            vec![
                user("updated-1", "Manager"),
                user("updated-3", "Director"),
                disabled("updated-8"),
            ],
        ),
        // Nothing changed: no page would run, and the group records nothing seen either.
        ("empty", vec![]),
        // A user sent twice with a change, and an entry without a usable record: seen once,
        // one skipped.
        (
            "replayed",
            vec![
                user("replayed-2", "Lead"),
                DirectoryEntry::Invalid {
                    object_id: Some("replayed-9".to_owned()),
                    reason: "no display name".to_owned(),
                },
                user("replayed-2", "Lead"),
            ],
        ),
        // A new user: it needs creating, which only a page of its own does.
        ("new", vec![user("new-7", "Engineer")]),
        // A removed user: its inactivation is queued by a page of its own.
        (
            "removal",
            vec![DirectoryEntry::Removed {
                object_id: "removal-0".to_owned(),
                permanent: false,
            }],
        ),
    ]
}

/// A PSA tenant whose managed tenants (one per round, named after it) are mapped to one
/// client and fully synced once, each saving the delta link `first`.
struct Msp {
    store: Store,
    tenant_id: Uuid,
    client_id: Uuid,
    /// By round name, in `rounds()` order.
    managed_tenants: Vec<(&'static str, Uuid)>,
}

impl Msp {
    async fn new(pool: PgPool, name: &str) -> Msp {
        let store = Store::from_pool(pool);
        let tenant_id = store
            .create_psa_tenant(name)
            .await
            .expect("tenant")
            .tenant_id;
        let client_id = store
            .create_client(tenant_id, "Contoso", &["contoso.com".to_owned()], &[])
            .await
            .expect("client")
            .client_id;
        let records: Vec<DiscoveredTenantRecord> = rounds()
            .iter()
            .map(|(round, _)| DiscoveredTenantRecord {
                entra_tenant_id: entra_tenant_id(round),
                display_name: round.to_string(),
                domains: vec![TenantDomain {
                    name: format!("{round}.onmicrosoft.com"),
                    is_default: true,
                    is_initial: true,
                }],
            })
            .collect();
        let ids = common::discover_and_map(&store, tenant_id, client_id, &records).await;
        let managed_tenants: Vec<(&'static str, Uuid)> =
            rounds().iter().map(|(round, _)| *round).zip(ids).collect();
        let msp = Msp {
            store,
            tenant_id,
            client_id,
            managed_tenants,
        };
        let first = msp.start_run().await;
        for (round, managed_tenant_id) in &msp.managed_tenants {
            let entries: Vec<DirectoryEntry> = (0..5)
                .map(|index| user(&format!("{round}-{index}"), "Engineer"))
                .collect();
            msp.store
                .start_tenant_result(tenant_id, first, *managed_tenant_id, SyncMode::Full)
                .await
                .expect("result");
            msp.store
                .reconcile_page(
                    &msp.scope(first, *managed_tenant_id),
                    &entries,
                    &SyncSettings::default(),
                    false,
                )
                .await
                .expect("first sync");
            msp.store
                .finish_tenant_sync(
                    tenant_id,
                    first,
                    *managed_tenant_id,
                    true,
                    Some(("first", at(1))),
                )
                .await
                .expect("first sync's end");
        }
        msp.finish_run(first).await;
        msp
    }

    async fn start_run(&self) -> Uuid {
        self.store
            .start_run(&NewRun {
                tenant_id: self.tenant_id,
                kind: RunKind::Sync,
                trigger: RunTrigger::Manual,
                scope: RunScope::All,
                requested_by: None,
            })
            .await
            .expect("sync run")
            .run_id
    }

    async fn finish_run(&self, run_id: Uuid) {
        self.store
            .finish_run(self.tenant_id, run_id, RunStatus::Completed, None)
            .await
            .expect("finish run");
    }

    fn scope(&self, run_id: Uuid, managed_tenant_id: Uuid) -> PageScope {
        PageScope {
            tenant_id: self.tenant_id,
            run_id,
            managed_tenant_id,
            mapped_client_id: self.client_id,
            next_cursor: Some(COMPLETE.to_owned()),
        }
    }

    /// A tenant's round on its own, as `sync_tenant` runs it: its last page ends it (with
    /// `finish_tenant_sync` after it when something is pending); an empty round runs no page.
    async fn alone(&self, run_id: Uuid, managed_tenant_id: Uuid, entries: &[DirectoryEntry]) {
        let link = Some(("second", at(2)));
        let finish = if entries.is_empty() {
            None
        } else {
            self.store
                .reconcile_last_delta_page(
                    &self.scope(run_id, managed_tenant_id),
                    entries,
                    &settings(),
                    link,
                )
                .await
                .expect("last delta page")
                .1
        };
        if finish.is_none() {
            self.store
                .finish_tenant_sync(self.tenant_id, run_id, managed_tenant_id, false, link)
                .await
                .expect("tenant end");
        }
    }

    /// What a run left, keyed by what both scenarios share (entra tenant and object ids).
    async fn state(&self, run_id: Uuid) -> Value {
        let pool = self.store.pool();
        let results: Vec<(String, String, String, Value, Option<String>)> = sqlx::query_as(
            "SELECT mt.entra_tenant_id, r.status, r.mode, r.counts, r.cursor
             FROM run_tenant_results r
             JOIN managed_tenants mt USING (tenant_id, managed_tenant_id)
             WHERE r.tenant_id = $1 AND r.run_id = $2 ORDER BY 1",
        )
        .bind(self.tenant_id)
        .bind(run_id)
        .fetch_all(pool)
        .await
        .expect("results");
        let seen: Vec<(String, Vec<String>, i32)> = sqlx::query_as(
            "SELECT mt.entra_tenant_id, s.object_ids, s.without_id
             FROM run_seen s JOIN managed_tenants mt USING (tenant_id, managed_tenant_id)
             WHERE s.tenant_id = $1 AND s.run_id = $2 ORDER BY 1, 2",
        )
        .bind(self.tenant_id)
        .bind(run_id)
        .fetch_all(pool)
        .await
        .expect("seen");
        let links: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT mt.entra_tenant_id, d.delta_link, d.issued_at
             FROM delta_state d JOIN managed_tenants mt USING (tenant_id, managed_tenant_id)
             WHERE d.tenant_id = $1 ORDER BY 1",
        )
        .bind(self.tenant_id)
        .fetch_all(pool)
        .await
        .expect("delta links");
        let contacts: Vec<ContactState> = sqlx::query_as(
            "SELECT l.object_id, c.full_name, c.job_title, c.is_active, c.inactive_reason
                 FROM contacts c LEFT JOIN links l USING (tenant_id, contact_id)
                 WHERE c.tenant_id = $1 ORDER BY 1, 2",
        )
        .bind(self.tenant_id)
        .fetch_all(pool)
        .await
        .expect("contacts");
        let changes: Vec<Change> = sqlx::query_as(
            "SELECT object_id, action, before, after FROM contact_changes
             WHERE tenant_id = $1 AND run_id = $2 ORDER BY 1, 2",
        )
        .bind(self.tenant_id)
        .bind(run_id)
        .fetch_all(pool)
        .await
        .expect("changes");
        let pending: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT object_id, reason, state FROM pending_inactivations
             WHERE tenant_id = $1 AND run_id = $2 ORDER BY 1",
        )
        .bind(self.tenant_id)
        .bind(run_id)
        .fetch_all(pool)
        .await
        .expect("pending inactivations");
        json!({
            "results": results, "seen": seen, "links": links, "contacts": contacts,
            "changes": changes, "pending": pending,
        })
    }
}

/// A contact's linked object id, name, job title, whether it is active and why not.
type ContactState = (Option<String>, String, Option<String>, bool, Option<String>);

/// An audit row's object id, action, before and after.
type Change = (Option<String>, String, Option<Value>, Option<Value>);

fn entra_tenant_id(round: &str) -> String {
    let number = rounds()
        .iter()
        .position(|(name, _)| *name == round)
        .expect("a round");
    format!("00000000-0000-4000-8000-{number:012}")
}

async fn executed_statements(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query NOT LIKE '%pg_stat_statements%'",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_statements")
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_delta_group_ends_its_tenants_as_their_own_pages_would(pool: PgPool) {
    // Two PSA tenants with the same managed tenants and users: one syncs its delta rounds as
    // a group, the other each on its own.
    let grouped = Msp::new(pool.clone(), "Grouped MSP").await;
    let alone = Msp::new(pool.clone(), "Alone MSP").await;
    let rounds = rounds();

    let alone_run = alone.start_run().await;
    for ((_, entries), (_, managed_tenant_id)) in rounds.iter().zip(&alone.managed_tenants) {
        let start = alone
            .store
            .take_lease_and_start(
                alone.tenant_id,
                *managed_tenant_id,
                alone_run,
                SyncMode::Delta,
            )
            .await
            .expect("lease");
        assert!(matches!(start, LeasedStart::Started(_)), "{start:?}");
        alone.alone(alone_run, *managed_tenant_id, entries).await;
    }
    alone.finish_run(alone_run).await;

    // The grouped tenants' leases and results open in one statement; a tenant another
    // running run holds is answered with its holder.
    // (A run for the client, so that the run below is not the same run deduplicated.)
    let holder = grouped
        .store
        .start_run(&NewRun {
            tenant_id: grouped.tenant_id,
            kind: RunKind::Sync,
            trigger: RunTrigger::Manual,
            scope: RunScope::Client(grouped.client_id),
            requested_by: None,
        })
        .await
        .expect("client run")
        .run_id;
    let held = grouped.managed_tenants[0].1;
    grouped
        .store
        .take_lease_and_start(grouped.tenant_id, held, holder, SyncMode::Delta)
        .await
        .expect("the other run's lease");
    let grouped_run = grouped.start_run().await;
    let ids: Vec<Uuid> = grouped.managed_tenants.iter().map(|(_, id)| *id).collect();
    let leases = grouped
        .store
        .take_leases_and_start(grouped.tenant_id, &ids, grouped_run, SyncMode::Delta)
        .await
        .expect("leases");
    assert_eq!(leases.len(), ids.len());
    assert_eq!(leases[&held], Some(LeasedStart::Held { holder }));
    // Once the holder's run ends, the lease is free, and taking it again is idempotent.
    grouped.finish_run(holder).await;
    let leases = grouped
        .store
        .take_leases_and_start(grouped.tenant_id, &ids, grouped_run, SyncMode::Delta)
        .await
        .expect("leases");
    for id in &ids {
        match &leases[id] {
            Some(LeasedStart::Started(result)) => {
                assert_eq!(
                    (result.status, result.mode, result.cursor.as_deref()),
                    (TenantResultStatus::Running, SyncMode::Delta, None)
                );
            }
            other => panic!("{id}: {other:?}"),
        }
    }

    let settings = settings();
    let members: Vec<GroupMember> = rounds
        .iter()
        .zip(&grouped.managed_tenants)
        .map(|((_, entries), (_, managed_tenant_id))| GroupMember {
            managed_tenant_id: *managed_tenant_id,
            mapped_client_id: grouped.client_id,
            entries,
            settings: &settings,
            delta_link: Some(("second", at(2))),
        })
        .collect();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&pool)
        .await
        .expect("pg_stat_statements (the server must preload it)");
    let before = executed_statements(&pool).await;
    let outcomes = grouped
        .store
        .reconcile_delta_group(grouped.tenant_id, grouped_run, COMPLETE, &members)
        .await
        .expect("group");
    let ran = executed_statements(&pool).await - before;
    // BEGIN and a lock per tenant (one simple query, counted per statement), the links with
    // their contacts, the updates, what was seen, the ends and COMMIT.
    assert_eq!(ran, 1 + members.len() as i64 + 5, "statements of the group");

    let outcome = |round: &str| {
        let index = rounds
            .iter()
            .position(|(name, _)| *name == round)
            .expect("a round");
        outcomes[&grouped.managed_tenants[index].1].clone()
    };
    let Some(GroupOutcome::Reconciled { tally, finish }) = Some(outcome("updated")) else {
        panic!("{:?}", outcome("updated"));
    };
    assert_eq!((tally.seen, tally.updated), (3, 2));
    assert_eq!(tally.skipped.get(&SkipReason::Disabled), Some(&1));
    assert_eq!(
        finish.map(|finish| finish.status),
        Some(TenantResultStatus::Completed)
    );
    let Some(GroupOutcome::Reconciled { tally, .. }) = Some(outcome("replayed")) else {
        panic!("{:?}", outcome("replayed"));
    };
    assert_eq!((tally.seen, tally.updated), (2, 1));
    assert!(matches!(
        outcome("empty"),
        GroupOutcome::Reconciled {
            finish: Some(_),
            ..
        }
    ));
    assert_eq!(outcome("new"), GroupOutcome::Alone);
    assert_eq!(outcome("removal"), GroupOutcome::Alone);

    // What the group left alone is untouched: still running, nothing seen, no cursor.
    let untouched = grouped.state(grouped_run).await;
    for round in ["new", "removal"] {
        let id = entra_tenant_id(round);
        let result = untouched["results"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|result| result[0] == id.as_str())
            .expect("its result");
        assert_eq!(result[1], "running", "{round}: {result}");
        assert_eq!(result[4], Value::Null, "{round}: {result}");
        assert!(
            !untouched["seen"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|seen| seen[0] == id.as_str()),
            "{round}"
        );
    }
    // Then each of those on its own, as the activity does after the group.
    for ((_, entries), (_, managed_tenant_id)) in rounds.iter().zip(&grouped.managed_tenants) {
        if outcomes[managed_tenant_id] == GroupOutcome::Alone {
            grouped
                .alone(grouped_run, *managed_tenant_id, entries)
                .await;
        }
    }
    grouped.finish_run(grouped_run).await;

    assert_eq!(
        grouped.state(grouped_run).await,
        alone.state(alone_run).await,
        "the group left what the tenants' own pages left"
    );

    // A group run again after it ended (a retried activity) changes nothing.
    let settled = grouped.state(grouped_run).await;
    grouped
        .store
        .reconcile_delta_group(grouped.tenant_id, grouped_run, COMPLETE, &members[..3])
        .await
        .expect("group again");
    assert_eq!(grouped.state(grouped_run).await, settled);
}

//! The keyset-paged lists (contacts, runs, review items, API audit) on generated data of tens
//! of thousands of rows: every request shape pages correctly, and `EXPLAIN` shows that its
//! first and a later page are read from an index in the list's order — no sequential scan and
//! no sort of the tenant's rows — under both the custom and the generic plan (sqlx prepares
//! each statement once per connection, so after a few executions Postgres may run the generic
//! one).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use entra_sync_store::api_queries::{
    api_audit_list_sql, contacts_list_sql, review_items_list_sql, runs_list_sql, ListParam, ListSql,
};
use entra_sync_store::page::PageRequest;
use entra_sync_store::psa::ContactFilter;
use entra_sync_store::review::{ReviewFilter, ReviewStatus};
use entra_sync_store::runs::RunKind;
use entra_sync_store::Store;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// Rows of each list in the large tenant.
const ROWS: i64 = 24_000;
/// The page size the API defaults to, plus the row that says another page follows.
const FETCH: i64 = 51;

struct Data {
    tenant_id: Uuid,
    client_id: Uuid,
    managed_tenant_id: Uuid,
}

/// When the generated data is analyzed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Analyzed {
    /// After both tenants are written, as autovacuum would have done.
    AfterBoth,
    /// After the small tenant's contacts and before any of the large tenant's rows: the
    /// statistics then say every contact belongs to the small tenant (and the other lists
    /// have none), as when a PSA tenant's first sync follows another's.
    BeforeTheLargeTenant,
}

/// A large PSA tenant (1,001 managed tenants; ROWS contacts, half linked, a tenth inactive, in
/// three clients; ROWS
/// runs with a tenant result each; ROWS review items, a tenth open; ROWS audit entries) and a
/// small one beside it (500 contacts), analyzed as `analyzed` says.
async fn generate(pool: &PgPool, analyzed: Analyzed) -> Data {
    // The statistics are the ones `analyzed` says, whenever autovacuum would visit.
    for table in [
        "contacts",
        "links",
        "managed_tenants",
        "runs",
        "run_tenant_results",
        "review_items",
        "api_audit",
    ] {
        sqlx::query(&format!(
            "ALTER TABLE {table} SET (autovacuum_enabled = off)"
        ))
        .execute(pool)
        .await
        .expect("autovacuum off");
    }
    let store = Store::from_pool(pool.clone());
    let small = store.create_psa_tenant("Small MSP").await.expect("tenant");
    let big = store.create_psa_tenant("Big MSP").await.expect("tenant");
    let mut client_ids = Vec::new();
    for name in ["Contoso", "Fabrikam", "Northwind"] {
        client_ids.push(
            store
                .create_client(big.tenant_id, name, &[], &[])
                .await
                .expect("client")
                .client_id,
        );
    }
    let small_client = store
        .create_client(small.tenant_id, "Small", &[], &[])
        .await
        .expect("client")
        .client_id;
    let managed_tenant_id = Uuid::new_v4();
    let statements = [
        "INSERT INTO managed_tenants (tenant_id, managed_tenant_id, entra_tenant_id, display_name)
         VALUES ($1, $3, 'entra-big', 'Big customer')",
        // A thousand more customers, so the contacts' links spread over many managed tenants.
        "INSERT INTO managed_tenants (tenant_id, managed_tenant_id, entra_tenant_id, display_name)
         SELECT $1, gen_random_uuid(), 'entra-' || i, 'Customer ' || i
         FROM generate_series(1, 1000) AS i",
        // Names repeat (a thousand distinct), so the keyset's id breaks real ties.
        "INSERT INTO contacts (tenant_id, contact_id, client_id, full_name, email, is_active,
                               inactive_reason)
         SELECT $1, gen_random_uuid(), ($4::uuid[])[1 + i % 3],
                'Person ' || md5((i % 1000)::text), 'person' || i || '@example.com',
                i % 10 <> 0, CASE WHEN i % 10 = 0 THEN 'manual' END
         FROM generate_series(1, $2) AS i",
        "INSERT INTO links (tenant_id, managed_tenant_id, object_id, contact_id)
         SELECT c.tenant_id, mt.managed_tenant_id, c.contact_id::text, c.contact_id
         FROM (SELECT tenant_id, contact_id, row_number() OVER () AS n FROM contacts
               WHERE tenant_id = $1) AS c
         JOIN (SELECT managed_tenant_id, row_number() OVER () - 1 AS m FROM managed_tenants
               WHERE tenant_id = $1) AS mt ON mt.m = c.n % 1001
         WHERE c.n % 2 = 0",
        "INSERT INTO runs (tenant_id, run_id, kind, trigger, scope, status, started_at,
                           finished_at)
         SELECT $1, gen_random_uuid(), CASE WHEN i % 4 = 0 THEN 'discovery' ELSE 'sync' END,
                'manual', 'all', 'completed', now() - i * interval '1 minute',
                now() - i * interval '1 minute' + interval '10 seconds'
         FROM generate_series(1, $2) AS i",
        "INSERT INTO run_tenant_results (tenant_id, run_id, managed_tenant_id, status, mode)
         SELECT tenant_id, run_id, $3, 'completed', 'full' FROM runs WHERE tenant_id = $1",
        "INSERT INTO review_items (tenant_id, item_id, status, reason, managed_tenant_id,
                                   client_id, object_id, created_at, resolved_at)
         SELECT $1, gen_random_uuid(), CASE WHEN i % 10 = 0 THEN 'open' ELSE 'resolved' END,
                'multiple_candidates', $3, ($4::uuid[])[1 + i % 3], 'object-' || i,
                now() - i * interval '1 second',
                CASE WHEN i % 10 = 0 THEN NULL ELSE now() END
         FROM generate_series(1, $2) AS i",
        "INSERT INTO api_audit (tenant_id, audit_id, actor, action, at)
         SELECT $1, gen_random_uuid(), 'user:bench', 'contact.update',
                now() - (i / 3) * interval '1 second'
         FROM generate_series(1, $2) AS i",
    ];
    for index in 0..500 {
        store
            .create_contact(
                small.tenant_id,
                small_client,
                &entra_sync_domain::model::ContactFields {
                    full_name: format!("Small {index}"),
                    email: None,
                    phone: None,
                    mobile: None,
                    job_title: None,
                },
            )
            .await
            .expect("small contact");
    }
    if analyzed == Analyzed::BeforeTheLargeTenant {
        sqlx::query("ANALYZE").execute(pool).await.expect("analyze");
    }
    for statement in statements {
        sqlx::query(statement)
            .bind(big.tenant_id)
            .bind(ROWS)
            .bind(managed_tenant_id)
            .bind(&client_ids)
            .execute(pool)
            .await
            .expect(statement);
    }
    if analyzed == Analyzed::AfterBoth {
        sqlx::query("ANALYZE").execute(pool).await.expect("analyze");
    }
    Data {
        tenant_id: big.tenant_id,
        client_id: client_ids[1],
        managed_tenant_id,
    }
}

/// A SQL literal of a parameter, for `EXECUTE`.
fn literal(param: &ListParam) -> String {
    match param {
        ListParam::Uuid(value) => format!("'{value}'::uuid"),
        ListParam::Text(value) => format!("'{}'::text", value.replace('\'', "''")),
        ListParam::Time(value) => format!("'{}'::timestamptz", value.to_rfc3339()),
    }
}

/// The plan of a list statement under `plan_cache_mode` (`force_custom_plan` or
/// `force_generic_plan`), through PREPARE and EXPLAIN EXECUTE as a prepared statement runs.
async fn plan(connection: &mut PgConnection, list: &ListSql, mode: &str) -> Value {
    sqlx::query(&format!("SET plan_cache_mode = {mode}"))
        .execute(&mut *connection)
        .await
        .expect("set plan_cache_mode");
    for setting in &list.settings {
        sqlx::query(&format!("SET {setting}"))
            .execute(&mut *connection)
            .await
            .expect("planner setting");
    }
    sqlx::query(&format!("PREPARE list_statement AS {}", list.sql))
        .execute(&mut *connection)
        .await
        .expect("prepare");
    let arguments: Vec<String> = list.params.iter().map(literal).collect();
    let (plan,): (Value,) = sqlx::query_as(&format!(
        "EXPLAIN (FORMAT JSON) EXECUTE list_statement({})",
        arguments.join(", ")
    ))
    .fetch_one(&mut *connection)
    .await
    .expect("explain");
    sqlx::query("DEALLOCATE list_statement")
        .execute(&mut *connection)
        .await
        .expect("deallocate");
    sqlx::query("RESET ALL")
        .execute(&mut *connection)
        .await
        .expect("reset");
    plan
}

/// Every node of a plan, depth first.
fn nodes(plan: &Value) -> Vec<&Value> {
    fn walk<'a>(node: &'a Value, out: &mut Vec<&'a Value>) {
        out.push(node);
        if let Some(children) = node.get("Plans").and_then(Value::as_array) {
            for child in children {
                walk(child, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(root) = plan.get(0).and_then(|plan| plan.get("Plan")) {
        walk(root, &mut out);
    }
    out
}

/// Asserts the plan reads `table` through one of `indexes` in order: no sequential scan of
/// anything, no sort (unless `sort_allowed`, for a shape whose index lookup finds a handful of
/// rows, which it then orders), no bitmap scan of the listed table.
fn assert_index_plan(what: &str, plan: &Value, table: &str, indexes: &[&str], sort_allowed: bool) {
    let nodes = nodes(plan);
    assert!(!nodes.is_empty(), "{what}: no plan: {plan}");
    let text = |node: &Value, key: &str| {
        node.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    for node in &nodes {
        let node_type = text(node, "Node Type");
        assert_ne!(node_type, "Seq Scan", "{what}: sequential scan in {plan:#}");
        if !sort_allowed {
            assert!(
                !node_type.contains("Sort"),
                "{what}: sorts the tenant's rows: {plan:#}"
            );
        }
        if text(node, "Relation Name") == table {
            assert!(
                node_type == "Index Scan" || node_type == "Index Only Scan",
                "{what}: {table} read by {node_type}: {plan:#}"
            );
            let index = text(node, "Index Name");
            assert!(
                indexes.contains(&index.as_str()),
                "{what}: {table} read through {index}, expected one of {indexes:?}: {plan:#}"
            );
        }
    }
    assert!(
        nodes
            .iter()
            .any(|node| text(node, "Relation Name") == table),
        "{what}: {table} not in the plan: {plan:#}"
    );
}

async fn assert_plans(
    connection: &mut PgConnection,
    what: &str,
    lists: [ListSql; 2],
    table: &str,
    indexes: &[&str],
    sort_allowed: bool,
) {
    for (page, list) in ["first page", "later page"].iter().zip(&lists) {
        for mode in ["force_custom_plan", "force_generic_plan"] {
            let plan = plan(connection, list, mode).await;
            assert_index_plan(
                &format!("{what}, {page}, {mode}"),
                &plan,
                table,
                indexes,
                sort_allowed,
            );
        }
    }
}

/// Walks `pages` pages of `limit` through a list call and returns every item key, checking
/// that the keys strictly follow the list's order.
async fn walk<T, K: Ord + Clone + std::fmt::Debug, F, Fut>(
    what: &str,
    pages: usize,
    limit: u32,
    fetch: F,
    key: impl Fn(&T) -> K,
    descending: bool,
) -> Vec<K>
where
    F: Fn(PageRequest) -> Fut,
    Fut: std::future::Future<Output = entra_sync_store::Result<entra_sync_store::page::Page<T>>>,
{
    let mut keys: Vec<K> = Vec::new();
    let mut cursor = None;
    for _ in 0..pages {
        let page = fetch(PageRequest {
            limit: Some(limit),
            cursor: cursor.clone(),
        })
        .await
        .expect(what);
        keys.extend(page.items.iter().map(&key));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    for pair in keys.windows(2) {
        let in_order = if descending {
            pair[0] > pair[1]
        } else {
            pair[0] < pair[1]
        };
        assert!(in_order, "{what}: {:?} then {:?}", pair[0], pair[1]);
    }
    keys
}

#[sqlx::test(migrations = "../../migrations")]
async fn every_list_page_is_read_from_an_index_in_order(pool: PgPool) {
    every_list_page_is_read_from_an_index(pool, Analyzed::AfterBoth).await;
}

/// The same for a PSA tenant the statistics do not know yet. A plan made for its id expected
/// it to have a single row, so any index that starts with the tenant looked as good as
/// another: a lookup by address read the tenant's contacts through the name index, and the
/// runs were read in bulk and sorted. The lists compare the tenant through a sub-select (the
/// planner then estimates it as it does in a generic plan) and never sort.
#[sqlx::test(migrations = "../../migrations")]
async fn every_list_page_is_read_from_an_index_for_a_tenant_the_statistics_do_not_know(
    pool: PgPool,
) {
    every_list_page_is_read_from_an_index(pool, Analyzed::BeforeTheLargeTenant).await;
}

async fn every_list_page_is_read_from_an_index(pool: PgPool, analyzed: Analyzed) {
    let data = generate(&pool, analyzed).await;
    let store = Store::from_pool(pool.clone());
    let tenant_id = data.tenant_id;
    let mut connection = pool.acquire().await.expect("connection").detach();

    // Contacts: each filter shape walked for 12 pages of 500, then explained at its first
    // page and after the last row walked.
    let contact_filters = [
        ("contacts", ContactFilter::default()),
        (
            "contacts of a client",
            ContactFilter {
                client_id: Some(data.client_id),
                ..ContactFilter::default()
            },
        ),
        (
            "contacts with inactive",
            ContactFilter {
                include_inactive: true,
                ..ContactFilter::default()
            },
        ),
    ];
    for (what, filter) in &contact_filters {
        let keys = walk(
            what,
            12,
            500,
            |page| {
                let store = store.clone();
                let filter = filter.clone();
                async move { store.list_contacts(tenant_id, &filter, &page).await }
            },
            |record| {
                (
                    record.contact.fields.full_name.clone(),
                    record.contact.contact_id,
                )
            },
            false,
        )
        .await;
        assert_eq!(keys.len(), 6_000, "{what}: twelve full pages");
        let last = keys.last().cloned();
        assert_plans(
            &mut connection,
            what,
            [
                contacts_list_sql(tenant_id, filter, None, FETCH),
                contacts_list_sql(tenant_id, filter, last, FETCH),
            ],
            "contacts",
            &["contacts_by_name", "contacts_by_client_name"],
            false,
        )
        .await;
    }
    let by_email = ContactFilter {
        email: Some(" Person77@Example.com ".to_owned()),
        ..ContactFilter::default()
    };
    let found = store
        .list_contacts(tenant_id, &by_email, &PageRequest::first(50))
        .await
        .expect("by email");
    assert_eq!(found.items.len(), 1, "one contact has that address");
    assert_plans(
        &mut connection,
        "contacts by email",
        [
            contacts_list_sql(tenant_id, &by_email, None, FETCH),
            contacts_list_sql(
                tenant_id,
                &by_email,
                Some(("Person".to_owned(), Uuid::nil())),
                FETCH,
            ),
        ],
        "contacts",
        &["contacts_by_email"],
        true,
    )
    .await;

    // Runs, with and without a kind.
    for kind in [None, Some(RunKind::Sync), Some(RunKind::Discovery)] {
        let what = format!("runs of kind {kind:?}");
        let keys = walk(
            &what,
            10,
            500,
            |page| {
                let store = store.clone();
                async move { store.list_runs(tenant_id, kind, &page).await }
            },
            |run| (run.started_at, run.run_id),
            true,
        )
        .await;
        assert!(keys.len() >= 5_000, "{what}: at least ten pages");
        let last: Option<(DateTime<Utc>, Uuid)> = keys.last().copied();
        assert_plans(
            &mut connection,
            &what,
            [
                runs_list_sql(tenant_id, kind.map(RunKind::as_str), None, FETCH),
                runs_list_sql(tenant_id, kind.map(RunKind::as_str), last, FETCH),
            ],
            "runs",
            &["runs_newest_first", "runs_by_kind_newest_first"],
            false,
        )
        .await;
    }

    // Review items: no filter, by status, by client, by managed tenant.
    let review_filters = [
        ReviewFilter::default(),
        ReviewFilter {
            status: Some(ReviewStatus::Open),
            ..ReviewFilter::default()
        },
        ReviewFilter {
            status: Some(ReviewStatus::Resolved),
            ..ReviewFilter::default()
        },
        ReviewFilter {
            client_id: Some(data.client_id),
            ..ReviewFilter::default()
        },
        ReviewFilter {
            managed_tenant_id: Some(data.managed_tenant_id),
            ..ReviewFilter::default()
        },
        ReviewFilter {
            status: Some(ReviewStatus::Open),
            reason: Some("multiple_candidates".to_owned()),
            ..ReviewFilter::default()
        },
    ];
    for filter in &review_filters {
        let what = format!("review items {filter:?}");
        let keys = walk(
            &what,
            4,
            500,
            |page| {
                let store = store.clone();
                let filter = filter.clone();
                async move { store.list_review_items(tenant_id, &filter, &page).await }
            },
            |item| (item.created_at, item.item_id),
            true,
        )
        .await;
        assert!(!keys.is_empty(), "{what}: some items");
        let distinct: BTreeSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{what}: no item twice");
        let last = keys.last().copied();
        assert_plans(
            &mut connection,
            &what,
            [
                review_items_list_sql(tenant_id, filter, None, FETCH),
                review_items_list_sql(tenant_id, filter, last, FETCH),
            ],
            "review_items",
            &["review_items_newest_first", "review_items_listing"],
            false,
        )
        .await;
    }

    // The API audit.
    let keys = walk(
        "audit",
        10,
        500,
        |page| {
            let store = store.clone();
            async move { store.list_api_audit(tenant_id, &page).await }
        },
        |entry| (entry.at, entry.audit_id),
        true,
    )
    .await;
    assert_eq!(keys.len(), 5_000, "audit: ten full pages");
    let last = keys.last().copied();
    assert_plans(
        &mut connection,
        "audit",
        [
            api_audit_list_sql(tenant_id, None, FETCH),
            api_audit_list_sql(tenant_id, last, FETCH),
        ],
        "api_audit",
        &["api_audit_by_time_and_id"],
        false,
    )
    .await;
    connection.close().await.expect("close");
}

/// Right after a large write, before autovacuum has analyzed: the contacts and links have no
/// statistics and the planner takes the tenant for a few rows. Every contact list shape still
/// reads its page from the name-ordered index and stops at the limit (the list's `NO_SORT`);
/// without it the planner sorts the tenant's rows for each page.
#[sqlx::test(migrations = "../../migrations")]
async fn contact_pages_keep_their_index_before_statistics_exist(pool: PgPool) {
    let data = generate(&pool, Analyzed::AfterBoth).await;
    for statement in [
        "DELETE FROM pg_statistic WHERE starelid IN ('contacts'::regclass, 'links'::regclass)",
        "UPDATE pg_class SET reltuples = -1, relpages = 0
         WHERE relname IN ('contacts', 'links', 'contacts_by_name', 'contacts_by_client_name',
                           'links_one_per_contact')",
    ] {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect(statement);
    }
    let mut connection = pool.acquire().await.expect("connection").detach();
    let filters = [
        ("contacts, no statistics", ContactFilter::default()),
        (
            "contacts of a client, no statistics",
            ContactFilter {
                client_id: Some(data.client_id),
                ..ContactFilter::default()
            },
        ),
    ];
    let later = Some(("Person 8".to_owned(), Uuid::nil()));
    for (what, filter) in &filters {
        let lists = [
            contacts_list_sql(data.tenant_id, filter, None, 501),
            contacts_list_sql(data.tenant_id, filter, later.clone(), 501),
        ];
        assert_plans(
            &mut connection,
            what,
            lists,
            "contacts",
            &["contacts_by_name", "contacts_by_client_name"],
            false,
        )
        .await;
    }
}

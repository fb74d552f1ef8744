//! The Graph client against the simulated Graph (MICROSOFT.md §2, §3, §5) with tokens from the
//! simulated identity platform.

use std::collections::{HashMap, HashSet};

use entra_sync_directory::error::DirectoryError;
use entra_sync_directory::graph::GraphClient;
use entra_sync_directory::source::{DirectorySource, UsersCursor, UsersPage};
use entra_sync_domain::model::DirectoryEntry;
use entra_sync_simulator::{ConsentFault, DeltaExpiry, NewUser};

use crate::{
    assert_class, fast_settings, graph_setup, largest_tenant, listed_user_count, smallest_tenant,
    start_simulator, token_requests,
};

/// Reads pages from `cursor` until the last one; returns the pages and the final delta link.
async fn read_round(
    graph: &GraphClient,
    tenant: &str,
    mut cursor: UsersCursor,
) -> Result<(Vec<UsersPage>, Option<String>), DirectoryError> {
    let mut pages = Vec::new();
    loop {
        let page = DirectorySource::users_page(graph, tenant, cursor).await?;
        let next = page.next_cursor.clone();
        let delta_link = page.delta_link.clone();
        pages.push(page);
        match next {
            Some(next) => cursor = UsersCursor::Next(next),
            None => return Ok((pages, delta_link)),
        }
    }
}

fn present_ids(pages: &[UsersPage]) -> HashSet<String> {
    pages
        .iter()
        .flat_map(|page| &page.entries)
        .filter_map(|entry| match entry {
            DirectoryEntry::Present(user) => Some(user.object_id.clone()),
            _ => None,
        })
        .collect()
}

fn last_entry_by_id(pages: &[UsersPage]) -> HashMap<String, DirectoryEntry> {
    let mut entries = HashMap::new();
    for entry in pages.iter().flat_map(|page| &page.entries) {
        let id = match entry {
            DirectoryEntry::Present(user) => user.object_id.clone(),
            DirectoryEntry::Removed { object_id, .. } => object_id.clone(),
            DirectoryEntry::Invalid { object_id, .. } => object_id.clone().unwrap_or_default(),
        };
        entries.insert(id, entry.clone());
    }
    entries
}

#[tokio::test]
async fn gdap_customers_are_listed_once_each_with_domains() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenants = setup.graph.list_tenants().await.expect("tenants");
    let msp = simulator.msp();
    let expected: HashSet<&str> = msp
        .tenants
        .iter()
        .map(|tenant| tenant.tenant_id.as_str())
        .collect();
    let listed: Vec<&str> = tenants
        .iter()
        .map(|tenant| tenant.entra_tenant_id.as_str())
        .collect();
    assert_eq!(
        listed.len(),
        expected.len(),
        "one row per customer: {listed:?}"
    );
    assert_eq!(listed.iter().copied().collect::<HashSet<_>>(), expected);
    for tenant in &tenants {
        let source = msp
            .tenants
            .iter()
            .find(|source| source.tenant_id == tenant.entra_tenant_id)
            .expect("known");
        assert_eq!(tenant.display_name, source.display_name);
        let verified: HashSet<String> = source
            .domains
            .iter()
            .filter(|domain| domain.is_verified || domain.is_default || domain.is_initial)
            .map(|domain| domain.id.to_ascii_lowercase())
            .collect();
        let read: HashSet<String> = tenant
            .domains
            .iter()
            .map(|domain| domain.name.clone())
            .collect();
        assert_eq!(read, verified);
        assert_eq!(
            tenant
                .domains
                .iter()
                .filter(|domain| domain.is_default)
                .count(),
            1
        );
    }
}

#[tokio::test]
async fn a_customer_without_consent_is_still_discovered() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = smallest_tenant(&simulator);
    simulator
        .set_consent_fault(&tenant.tenant_id, Some(ConsentFault::Aadsts90099))
        .expect("fault");
    let tenants = setup
        .graph
        .list_tenants()
        .await
        .expect("discovery succeeds");
    let unconsented = tenants
        .iter()
        .find(|listed| listed.entra_tenant_id == tenant.tenant_id)
        .expect("listed");
    assert!(unconsented.domains.is_empty());
    assert!(tenants
        .iter()
        .filter(|listed| listed.entra_tenant_id != tenant.tenant_id)
        .all(|listed| !listed.domains.is_empty()));
}

#[tokio::test]
async fn delegated_admin_customers_stand_in_when_relationships_fail() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    simulator
        .add_fault(entra_sync_simulator::FaultSpec {
            kind: entra_sync_simulator::FaultKind::MalformedJson,
            path_prefix: "/graph/v1.0/tenantRelationships/delegatedAdminRelationships".to_owned(),
            tenant: None,
            count: Some(1),
        })
        .expect("fault");
    let customers = setup.graph.list_gdap_customers().await.expect("customers");
    let expected: HashSet<String> = simulator
        .msp()
        .tenants
        .iter()
        .map(|tenant| tenant.tenant_id.clone())
        .collect();
    let listed: HashSet<String> = customers
        .iter()
        .map(|tenant| tenant.entra_tenant_id.clone())
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(customers.len(), expected.len());
    let fallback = crate::requests_to(
        &simulator,
        "/graph/v1.0/tenantRelationships/delegatedAdminCustomers",
    );
    assert_eq!(fallback.len(), 1);
}

#[tokio::test]
async fn a_full_enumeration_pages_through_every_user() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = largest_tenant(&simulator);
    let start = UsersCursor::Start {
        prefer_delta: false,
        delta_link: None,
    };
    let (pages, delta_link) = read_round(&setup.graph, &tenant.tenant_id, start)
        .await
        .expect("pages");
    assert!(pages.len() >= 2, "{} pages", pages.len());
    assert_eq!(delta_link, None);
    assert_eq!(present_ids(&pages).len(), listed_user_count(&tenant));
    let first = crate::requests_to(&simulator, "/graph/v1.0/users");
    let query = first[0].query.clone().unwrap_or_default();
    assert!(
        query.contains("%24top=999") || query.contains("$top=999"),
        "{query}"
    );
    assert!(query.contains("creationType"), "{query}");
}

#[tokio::test]
async fn delta_rounds_return_everyone_then_only_changes() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = largest_tenant(&simulator);
    let tenant_id = tenant.tenant_id.as_str();
    let start = UsersCursor::Start {
        prefer_delta: true,
        delta_link: None,
    };
    let (pages, delta_link) = read_round(&setup.graph, tenant_id, start)
        .await
        .expect("first round");
    assert!(pages.len() >= 2);
    assert_eq!(present_ids(&pages).len(), listed_user_count(&tenant));
    let delta_link = delta_link.expect("the last page carries a deltaLink");
    assert!(pages[..pages.len() - 1]
        .iter()
        .all(|page| page.delta_link.is_none()));

    let live: Vec<_> = tenant.users.iter().filter(|user| !user.deleted).collect();
    let added = simulator
        .add_user(
            tenant_id,
            NewUser {
                given_name: "Dana".to_owned(),
                surname: "Delta".to_owned(),
                ..NewUser::default()
            },
        )
        .expect("add");
    simulator
        .disable_user(tenant_id, &live[10].id)
        .expect("disable");
    simulator
        .soft_delete_user(tenant_id, &live[11].id)
        .expect("soft delete");
    simulator
        .hard_delete_user(tenant_id, &live[12].id)
        .expect("hard delete");

    let resume = UsersCursor::Start {
        prefer_delta: true,
        delta_link: Some(delta_link),
    };
    let (changes, next_link) = read_round(&setup.graph, tenant_id, resume)
        .await
        .expect("changes");
    assert!(next_link.is_some(), "a new deltaLink for the next run");
    let entries = last_entry_by_id(&changes);
    assert!(
        entries.len() <= 10,
        "only changes come back: {}",
        entries.len()
    );
    assert!(
        matches!(&entries[&added.id], DirectoryEntry::Present(user) if user.given_name.as_deref() == Some("Dana"))
    );
    assert!(
        matches!(&entries[&live[10].id], DirectoryEntry::Present(user) if user.account_enabled == Some(false))
    );
    assert_eq!(
        entries[&live[11].id],
        DirectoryEntry::Removed {
            object_id: live[11].id.clone(),
            permanent: false
        }
    );
    assert_eq!(
        entries[&live[12].id],
        DirectoryEntry::Removed {
            object_id: live[12].id.clone(),
            permanent: true
        }
    );
}

#[tokio::test]
async fn an_expired_delta_link_asks_for_a_full_enumeration() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = smallest_tenant(&simulator);
    let tenant_id = tenant.tenant_id.as_str();
    for expiry in [
        DeltaExpiry::Gone,
        DeltaExpiry::SyncStateNotFound,
        DeltaExpiry::SyncStateNotFoundPascal,
        DeltaExpiry::ResyncRequired,
    ] {
        let mut settings = simulator.settings();
        settings.delta_expiry = expiry;
        simulator.set_settings(settings);
        let start = UsersCursor::Start {
            prefer_delta: true,
            delta_link: None,
        };
        let (_, delta_link) = read_round(&setup.graph, tenant_id, start)
            .await
            .expect("round");
        simulator.expire_delta_tokens(tenant_id).expect("expire");
        let resume = UsersCursor::Start {
            prefer_delta: true,
            delta_link,
        };
        let error = assert_class(
            read_round(&setup.graph, tenant_id, resume).await,
            "delta_expired",
        );
        assert!(!error.is_retryable());
        assert!(
            matches!(error, DirectoryError::DeltaExpired { .. }),
            "{expiry:?}: {error:?}"
        );
        // The caller's restart: a fresh round reads everyone again.
        let restart = UsersCursor::Start {
            prefer_delta: true,
            delta_link: None,
        };
        let (pages, _) = read_round(&setup.graph, tenant_id, restart)
            .await
            .expect("restart");
        assert_eq!(
            present_ids(&pages).len(),
            listed_user_count(&tenant),
            "{expiry:?}"
        );
    }
}

#[tokio::test]
async fn background_calls_send_low_throttle_priority() {
    let simulator = start_simulator().await;
    let tenant = smallest_tenant(&simulator);
    let background = graph_setup(&simulator, fast_settings()).await;
    background
        .graph
        .users_page(&tenant.tenant_id, None)
        .await
        .expect("users");
    let requests = crate::requests_to(&simulator, "/graph/v1.0/users");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].throttle_priority.as_deref(), Some("Low"));

    simulator.clear_request_log();
    let interactive = graph_setup(
        &simulator,
        entra_sync_directory::http::HttpSettings {
            background: false,
            ..fast_settings()
        },
    )
    .await;
    interactive
        .graph
        .users_page(&tenant.tenant_id, None)
        .await
        .expect("users");
    let requests = crate::requests_to(&simulator, "/graph/v1.0/users");
    assert_eq!(requests[0].throttle_priority, None);
}

#[tokio::test]
async fn customer_tokens_are_single_flight_and_rotate_the_refresh_token() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = smallest_tenant(&simulator);
    let before = setup.refresh_tokens.current();
    simulator.clear_request_log();

    let calls = (0..8).map(|_| {
        let graph = setup.graph.clone();
        let tenant_id = tenant.tenant_id.clone();
        tokio::spawn(async move {
            graph
                .users_page(&tenant_id, None)
                .await
                .map(|page| page.entries.len())
        })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.expect("task").expect("users");
    }
    assert_eq!(
        token_requests(&simulator, &tenant.tenant_id),
        1,
        "one token request for 8 callers"
    );
    assert_eq!(setup.refresh_tokens.rotation_count(), 1);
    let after = setup.refresh_tokens.current();
    assert_ne!(before, after, "the rotated refresh token was stored");

    // The old refresh token no longer works once rotated (§1): a cache that kept using it
    // would have to reconnect.
    let oauth = setup.graph.tokens().oauth();
    let stale = oauth
        .refresh(
            &tenant.tenant_id,
            &secrecy::SecretString::from(before),
            entra_sync_directory::oauth::GRAPH_DEFAULT_SCOPE,
        )
        .await;
    assert_class(stale, "reauth_required");

    // Another tenant's token spends the stored (rotated) refresh token.
    let other = largest_tenant(&simulator);
    setup
        .graph
        .users_page(&other.tenant_id, None)
        .await
        .expect("another tenant");
    assert_eq!(setup.refresh_tokens.rotation_count(), 2);
}

#[tokio::test]
async fn tenant_access_errors_drop_the_tenants_tokens() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = smallest_tenant(&simulator);
    let tenant_id = tenant.tenant_id.as_str();
    setup
        .graph
        .users_page(tenant_id, None)
        .await
        .expect("users");
    assert_eq!(token_requests(&simulator, tenant_id), 1);
    setup
        .graph
        .users_page(tenant_id, None)
        .await
        .expect("cached token");
    assert_eq!(token_requests(&simulator, tenant_id), 1);

    simulator
        .set_consent_fault(tenant_id, Some(ConsentFault::GraphRequestDenied))
        .expect("fault");
    let error = assert_class(
        setup.graph.users_page(tenant_id, None).await,
        "tenant_access",
    );
    assert!(
        error
            .remediation()
            .is_some_and(|text| text.contains("GDAP")),
        "{error:?}"
    );
    simulator.set_consent_fault(tenant_id, None).expect("fixed");
    setup
        .graph
        .users_page(tenant_id, None)
        .await
        .expect("works after the fix");
    assert_eq!(
        token_requests(&simulator, tenant_id),
        2,
        "the token was dropped and minted again"
    );

    simulator
        .set_consent_fault(tenant_id, Some(ConsentFault::GraphIdentityNotFound))
        .expect("fault");
    let error = assert_class(
        setup.graph.users_page(tenant_id, None).await,
        "tenant_access",
    );
    let expected_url = format!(
        "{}/{}/adminconsent?client_id={}",
        simulator.login_base_url(),
        tenant_id,
        simulator.config().app_client_id
    );
    assert!(
        error
            .remediation()
            .is_some_and(|text| text.contains(&expected_url)),
        "{error:?}"
    );

    simulator
        .set_consent_fault(tenant_id, Some(ConsentFault::Aadsts65001))
        .expect("fault");
    let error = assert_class(
        setup.graph.users_page(tenant_id, None).await,
        "tenant_access",
    );
    assert_eq!(error.code(), Some("AADSTS65001"));
    assert!(
        error
            .remediation()
            .is_some_and(|text| text.contains(&expected_url)),
        "{error:?}"
    );

    // Other tenants are unaffected.
    let other = largest_tenant(&simulator);
    setup
        .graph
        .users_page(&other.tenant_id, None)
        .await
        .expect("other tenant");
}

#[tokio::test]
async fn a_cut_off_answer_is_invalid_not_a_panic() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = smallest_tenant(&simulator);
    simulator
        .add_fault(entra_sync_simulator::FaultSpec {
            kind: entra_sync_simulator::FaultKind::MalformedJson,
            path_prefix: "/graph/v1.0/users".to_owned(),
            tenant: Some(tenant.tenant_id.clone()),
            count: Some(1),
        })
        .expect("fault");
    assert_class(
        setup.graph.users_page(&tenant.tenant_id, None).await,
        "invalid",
    );
}

/// The listed (not deleted) members of a simulated group, as the client should return them.
pub(crate) fn listed_members(
    tenant: &entra_sync_simulator::CustomerTenant,
    group: &entra_sync_simulator::SimGroup,
) -> HashSet<String> {
    group
        .member_ids
        .iter()
        .filter(|id| {
            tenant
                .users
                .iter()
                .any(|user| &user.id == *id && !user.deleted)
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn group_members_are_read_transitively_across_pages() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = largest_tenant(&simulator);
    let group = tenant
        .groups
        .iter()
        .max_by_key(|group| group.member_ids.len())
        .expect("a group")
        .clone();
    let deleted = group.member_ids[0].clone();
    simulator
        .soft_delete_user(&tenant.tenant_id, &deleted)
        .expect("soft delete");
    let tenant = largest_tenant(&simulator);
    let expected = listed_members(&tenant, &group);
    let ids = setup
        .graph
        .group_member_ids(&tenant.tenant_id, &group.id.to_uppercase())
        .await
        .expect("members");
    assert_eq!(ids.len(), expected.len(), "no member twice");
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), expected);
    assert!(!ids.contains(&deleted), "a deleted user is no member");
    let path = format!(
        "/graph/v1.0/groups/{}/transitiveMembers/microsoft.graph.user",
        group.id
    );
    let requests = crate::requests_to(&simulator, &path);
    assert_eq!(requests.len(), expected.len().div_ceil(999).max(1));
    assert!(requests.len() >= 2, "the group should span pages");
    let query = requests[0].query.clone().unwrap_or_default();
    assert!(
        query.contains("$top=999") || query.contains("%24top=999"),
        "{query}"
    );
}

#[tokio::test]
async fn an_unknown_or_malformed_group_is_an_error() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = smallest_tenant(&simulator);
    let unknown = setup
        .graph
        .group_member_ids(&tenant.tenant_id, "00000000-0000-4000-8000-000000000000")
        .await;
    assert!(unknown.is_err(), "{unknown:?}");
    let malformed = setup
        .graph
        .group_member_ids(&tenant.tenant_id, "../users")
        .await;
    assert_class(malformed, "invalid");
}

/// A 401 from one customer tenant for a token its authority just issued is that tenant's
/// problem (`tenant_access`, with the consent link), not the MSP's grant; the same 401 on the
/// partner's own call is `reauth_required` (SPEC §2.3, MICROSOFT.md §5).
#[tokio::test]
async fn a_401_from_one_customer_is_tenant_access_and_from_the_partner_is_reauth() {
    use entra_sync_simulator::{FaultKind, FaultSpec};
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = smallest_tenant(&simulator);
    simulator
        .add_fault(FaultSpec {
            kind: FaultKind::Unauthorized,
            path_prefix: "/graph".to_owned(),
            tenant: Some(tenant.tenant_id.clone()),
            count: None,
        })
        .expect("fault");
    let error = assert_class(
        setup.graph.users_page(&tenant.tenant_id, None).await,
        "tenant_access",
    );
    assert!(
        error
            .remediation()
            .is_some_and(|text| text.contains("adminconsent")),
        "{error:?}"
    );
    // Another customer is not affected.
    let other = largest_tenant(&simulator);
    setup
        .graph
        .users_page(&other.tenant_id, None)
        .await
        .expect("the other tenant reads");
    simulator.clear_faults();

    let partner = simulator.config().partner_tenant_id.clone();
    simulator
        .add_fault(FaultSpec {
            kind: FaultKind::Unauthorized,
            path_prefix: "/graph".to_owned(),
            tenant: Some(partner),
            count: None,
        })
        .expect("fault");
    assert_class(setup.graph.list_tenants().await, "reauth_required");
}

/// A 200 without its `value` array (`{}`, `{"value":null}`, a proxy's HTML page) is an
/// `invalid` error on both enumerations, never an empty last page: a sync that took it for the
/// end of the list would inactivate every user it had not read yet. Once the faults are used
/// up the same tenant reads completely, and only a page that had its array ends a round.
#[tokio::test]
async fn a_page_without_its_value_array_is_invalid_not_the_end() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = largest_tenant(&simulator);
    let bodies = [
        ("{}", None),
        (r#"{"value":null}"#, None),
        (
            "<html><body>Proxy login</body></html>",
            Some("text/html".to_owned()),
        ),
    ];
    for prefer_delta in [false, true] {
        for (body, content_type) in bodies.iter().cloned() {
            simulator
                .add_fault(entra_sync_simulator::FaultSpec {
                    kind: entra_sync_simulator::FaultKind::OkBody {
                        body: body.to_owned(),
                        content_type,
                    },
                    path_prefix: "/graph/v1.0/users".to_owned(),
                    tenant: Some(tenant.tenant_id.clone()),
                    count: Some(1),
                })
                .expect("fault");
            let start = UsersCursor::Start {
                prefer_delta,
                delta_link: None,
            };
            let error = read_round(&setup.graph, &tenant.tenant_id, start)
                .await
                .expect_err("a page without value is an error");
            assert_eq!(
                error.class(),
                "invalid",
                "{body} (delta {prefer_delta}): {error}"
            );
        }
        let start = UsersCursor::Start {
            prefer_delta,
            delta_link: None,
        };
        let (pages, delta_link) = read_round(&setup.graph, &tenant.tenant_id, start)
            .await
            .expect("pages");
        assert_eq!(present_ids(&pages).len(), listed_user_count(&tenant));
        assert_eq!(delta_link.is_some(), prefer_delta);
    }
}

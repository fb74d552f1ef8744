//! Graph: users paging and `$top` bounds, delta rounds with changes, removals, restores and expiry, GDAP, domains, faults.

use std::collections::HashSet;
use std::time::Duration;

use entra_sync_simulator::{DeltaExpiry, FaultKind, FaultSpec, NewUser};
use serde_json::Value;

use crate::{app_token, get, graph_error_code, start};

const SELECT: &str = "id,displayName,givenName,surname,mail,userPrincipalName,otherMails,proxyAddresses,accountEnabled,userType,jobTitle,mobilePhone,businessPhones,assignedLicenses,creationType";

/// Follows nextLinks from `url`, returning every page.
async fn all_pages(url: String, token: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut next = Some(url);
    while let Some(url) = next.take() {
        let (status, _, body) = get(&url, token).await;
        assert_eq!(status, 200, "{body}");
        next = body["@odata.nextLink"].as_str().map(str::to_string);
        pages.push(body);
        assert!(pages.len() < 200, "paging does not end");
    }
    pages
}

fn values(pages: &[Value]) -> Vec<Value> {
    pages
        .iter()
        .flat_map(|page| page["value"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn users_page_through_a_big_tenant_with_top_999() {
    let sim = start().await;
    let msp = sim.msp();
    let big = msp
        .tenants
        .iter()
        .find(|tenant| tenant.users.len() > 999)
        .expect("a tenant above 999 users");
    let token = app_token(&sim, &big.tenant_id).await;
    let url = format!(
        "{}/v1.0/users?$select={SELECT}&$top=999",
        sim.graph_base_url()
    );
    let pages = all_pages(url, &token).await;
    assert!(pages.len() >= 2);
    for page in &pages[..pages.len() - 1] {
        let link = page["@odata.nextLink"].as_str().expect("nextLink");
        assert!(
            link.starts_with(&sim.graph_base_url()),
            "nextLink is a full URL: {link}"
        );
    }
    let users = values(&pages);
    let ids: HashSet<&str> = users
        .iter()
        .filter_map(|user| user["id"].as_str())
        .collect();
    assert_eq!(ids.len(), big.users.len());
    assert_eq!(users.len(), big.users.len());
    let guest = users
        .iter()
        .find(|user| user["userType"] == "Guest")
        .expect("a guest");
    assert_eq!(guest["creationType"], "Invitation");
    assert!(guest["userPrincipalName"]
        .as_str()
        .unwrap_or_default()
        .contains("#EXT#@"));
    assert!(users.iter().any(|user| user["mail"].is_null()));
    assert!(users.iter().all(|user| user["businessPhones"]
        .as_array()
        .is_some_and(|phones| phones.len() <= 1)));
    assert!(users.iter().all(|user| user["assignedLicenses"].is_array()));
}

#[tokio::test]
async fn top_is_bounded_and_select_is_checked() {
    let sim = start().await;
    let tenant = sim.msp().tenants[0].tenant_id.clone();
    let token = app_token(&sim, &tenant).await;
    let base = sim.graph_base_url();
    for bad in ["1000", "0", "abc"] {
        let (status, _, body) = get(&format!("{base}/v1.0/users?$top={bad}"), &token).await;
        assert_eq!(status, 400, "$top={bad}");
        assert_eq!(graph_error_code(&body), "Request_BadRequest");
    }
    let (status, _, body) = get(&format!("{base}/v1.0/users?$select=id,nonsense"), &token).await;
    assert_eq!(status, 400);
    assert_eq!(graph_error_code(&body), "Request_BadRequest");

    // MICROSOFT.md §3: without $select only the default property set comes back.
    let (status, _, body) = get(&format!("{base}/v1.0/users"), &token).await;
    assert_eq!(status, 200);
    let first = &body["value"][0];
    assert!(first.get("displayName").is_some());
    assert!(first.get("accountEnabled").is_none());
    assert!(first.get("proxyAddresses").is_none());
    assert!(body["value"]
        .as_array()
        .is_some_and(|page| page.len() <= 100));
}

#[tokio::test]
async fn an_empty_page_can_still_carry_a_next_link() {
    let sim = start().await;
    let tenant = sim.msp().tenants[1].clone();
    assert!(
        tenant.users.len() > 10,
        "precondition: the second tenant has more than ten users"
    );
    let token = app_token(&sim, &tenant.tenant_id).await;
    let pages = all_pages(
        format!("{}/v1.0/users?$top=5", sim.graph_base_url()),
        &token,
    )
    .await;
    assert!(pages
        .iter()
        .any(|page| page["value"].as_array().is_some_and(Vec::is_empty)
            && page["@odata.nextLink"].is_string()));
    assert_eq!(values(&pages).len(), tenant.users.len());
}

/// Runs a delta round from `url` and returns (entries, deltaLink).
async fn delta_round(url: String, token: &str) -> (Vec<Value>, String) {
    let pages = all_pages(url, token).await;
    let last = pages.last().expect("a page");
    let delta_link = last["@odata.deltaLink"]
        .as_str()
        .expect("deltaLink on the last page")
        .to_string();
    for page in &pages[..pages.len() - 1] {
        assert!(page.get("@odata.deltaLink").is_none());
    }
    (values(&pages), delta_link)
}

fn find<'a>(entries: &'a [Value], id: &str) -> Vec<&'a Value> {
    entries.iter().filter(|entry| entry["id"] == id).collect()
}

#[tokio::test]
async fn delta_reports_changes_removals_and_restores() {
    let sim = start().await;
    let tenant = sim.msp().tenants[0].clone();
    let tenant_id = tenant.tenant_id.clone();
    let token = app_token(&sim, &tenant_id).await;
    let url = format!("{}/v1.0/users/delta?$select={SELECT}", sim.graph_base_url());
    let (initial, delta_link) = delta_round(url, &token).await;
    assert_eq!(initial.len(), tenant.users.len());
    assert!(delta_link.starts_with(&sim.graph_base_url()));

    // No change: the next round is empty.
    let (entries, delta_link) = delta_round(delta_link, &token).await;
    assert!(entries.is_empty(), "{entries:?}");

    let users = &tenant.users;
    let (disabled, renamed, soft, hard, mail_changed) = (
        &users[7].id,
        &users[8].id,
        &users[9].id,
        &users[10].id,
        &users[11].id,
    );
    sim.disable_user(&tenant_id, disabled).expect("disable");
    sim.rename_user(
        &tenant_id,
        renamed,
        Some("Renamed Person"),
        Some("Renamed"),
        Some("Person"),
    )
    .expect("rename");
    sim.soft_delete_user(&tenant_id, soft).expect("soft delete");
    sim.hard_delete_user(&tenant_id, hard).expect("hard delete");
    sim.change_mail(&tenant_id, mail_changed, Some("new.address@example.com"))
        .expect("mail");
    let added = sim
        .add_user(
            &tenant_id,
            NewUser {
                given_name: "Nora".to_string(),
                surname: "Newhire".to_string(),
                ..NewUser::default()
            },
        )
        .expect("add");

    let (entries, delta_link) = delta_round(delta_link, &token).await;
    assert_eq!(find(&entries, disabled)[0]["accountEnabled"], false);
    assert_eq!(find(&entries, renamed)[0]["displayName"], "Renamed Person");
    assert_eq!(find(&entries, soft)[0]["@removed"]["reason"], "changed");
    assert!(find(&entries, soft)[0].get("mail").is_none());
    assert_eq!(find(&entries, hard)[0]["@removed"]["reason"], "deleted");
    assert_eq!(
        find(&entries, mail_changed)[0]["mail"],
        "new.address@example.com"
    );
    assert_eq!(find(&entries, &added.id)[0]["givenName"], "Nora");
    assert_eq!(entries.len(), 6, "{entries:?}");

    // The users list no longer shows removed users.
    let pages = all_pages(
        format!("{}/v1.0/users?$top=999", sim.graph_base_url()),
        &token,
    )
    .await;
    let listed = values(&pages);
    assert!(find(&listed, soft).is_empty() && find(&listed, hard).is_empty());

    // A restored user reappears with no annotation.
    sim.restore_user(&tenant_id, soft).expect("restore");
    let (entries, delta_link) = delta_round(delta_link, &token).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["id"], soft.as_str());
    assert!(entries[0].get("@removed").is_none());
    assert!(entries[0]["userPrincipalName"].is_string());

    // MICROSOFT.md §3: with $select, a change to an unselected property is not reported.
    let narrow = format!(
        "{}/v1.0/users/delta?$select=id,displayName",
        sim.graph_base_url()
    );
    let (_, narrow_link) = delta_round(narrow, &token).await;
    sim.update_user(
        &tenant_id,
        &users[12].id,
        entra_sync_simulator::UserPatch {
            job_title: Some("Chief Cat Herder".to_string()),
            ..Default::default()
        },
    )
    .expect("job title");
    let (entries, _) = delta_round(narrow_link, &token).await;
    assert!(entries.is_empty(), "{entries:?}");
    let (entries, _) = delta_round(delta_link, &token).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["jobTitle"], "Chief Cat Herder");
}

#[tokio::test]
async fn delta_rejects_top_and_can_repeat_entries() {
    let sim = start().await;
    let tenant = sim.msp().tenants[0].clone();
    let token = app_token(&sim, &tenant.tenant_id).await;
    let (status, _, body) = get(
        &format!("{}/v1.0/users/delta?$top=10", sim.graph_base_url()),
        &token,
    )
    .await;
    assert_eq!(status, 400);
    graph_error_code(&body);

    let (plain, _) =
        delta_round(format!("{}/v1.0/users/delta", sim.graph_base_url()), &token).await;
    let mut settings = sim.settings();
    settings.delta_duplicates = true;
    settings.delta_reorder = true;
    sim.set_settings(settings);
    let (entries, _) =
        delta_round(format!("{}/v1.0/users/delta", sim.graph_base_url()), &token).await;
    let unique: HashSet<&str> = entries
        .iter()
        .filter_map(|entry| entry["id"].as_str())
        .collect();
    assert_eq!(unique.len(), tenant.users.len());
    assert!(entries.len() > unique.len(), "duplicates are emitted");
    assert_ne!(
        plain[0]["id"], entries[0]["id"],
        "entries come in another order"
    );
}

#[tokio::test]
async fn expired_delta_tokens_answer_410_or_the_resync_codes() {
    let sim = start().await;
    let tenant_id = sim.msp().tenants[0].tenant_id.clone();
    let token = app_token(&sim, &tenant_id).await;
    let url = format!("{}/v1.0/users/delta?$select=id,mail", sim.graph_base_url());
    let (_, delta_link) = delta_round(url.clone(), &token).await;

    sim.expire_delta_tokens(&tenant_id).expect("expire");
    let (status, headers, body) = get(&delta_link, &token).await;
    assert_eq!(status, 410);
    let location = headers
        .get("location")
        .and_then(|value| value.to_str().ok())
        .expect("Location");
    assert!(location.starts_with(&sim.graph_base_url()));
    graph_error_code(&body);

    for (mode, code) in [
        (DeltaExpiry::SyncStateNotFound, "syncStateNotFound"),
        (DeltaExpiry::SyncStateNotFoundPascal, "SyncStateNotFound"),
        (DeltaExpiry::ResyncRequired, "resyncRequired"),
    ] {
        let mut settings = sim.settings();
        settings.delta_expiry = mode;
        sim.set_settings(settings);
        let (_, body) = (0, get(&delta_link, &token).await.2);
        assert_eq!(graph_error_code(&body), code);
    }

    // MICROSOFT.md §3: directory delta tokens last 7 days.
    let mut settings = sim.settings();
    settings.delta_expiry = DeltaExpiry::Gone;
    sim.set_settings(settings);
    let (_, fresh_link) = delta_round(url, &token).await;
    let (status, _, _) = get(&fresh_link, &token).await;
    assert_eq!(status, 200);
    sim.advance_clock(8 * 24 * 3600);
    let token = app_token(&sim, &tenant_id).await;
    let (status, _, _) = get(&fresh_link, &token).await;
    assert_eq!(status, 410);
}

#[tokio::test]
async fn a_link_used_with_another_tenants_token_is_refused() {
    let sim = start().await;
    let msp = sim.msp();
    let first = app_token(&sim, &msp.tenants[0].tenant_id).await;
    let second = app_token(&sim, &msp.tenants[1].tenant_id).await;
    let (_, _, body) = get(
        &format!("{}/v1.0/users?$top=1", sim.graph_base_url()),
        &first,
    )
    .await;
    let next = body["@odata.nextLink"].as_str().expect("nextLink");
    let (status, _, body) = get(next, &second).await;
    assert_eq!(status, 401);
    assert_eq!(graph_error_code(&body), "InvalidAuthenticationToken");
    let (status, _, body) = get(
        &format!("{}/v1.0/users", sim.graph_base_url()),
        "not-a-token",
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(graph_error_code(&body), "InvalidAuthenticationToken");
}

#[tokio::test]
async fn gdap_relationships_filter_and_page() {
    let sim = start().await;
    let msp = sim.msp();
    let token = app_token(&sim, &msp.partner_tenant_id).await;
    let base = sim.graph_base_url();
    let all = values(
        &all_pages(
            format!("{base}/v1.0/tenantRelationships/delegatedAdminRelationships?$top=3"),
            &token,
        )
        .await,
    );
    let active = values(
        &all_pages(
            format!("{base}/v1.0/tenantRelationships/delegatedAdminRelationships?$filter=status%20eq%20'active'&$top=3"),
            &token,
        )
        .await,
    );
    assert!(all.len() > active.len());
    assert!(all
        .iter()
        .any(|relationship| relationship["status"] == "terminated"));
    assert!(active
        .iter()
        .all(|relationship| relationship["status"] == "active"));
    let customers: HashSet<&str> = active
        .iter()
        .filter_map(|relationship| relationship["customer"]["tenantId"].as_str())
        .collect();
    assert_eq!(customers.len(), msp.tenants.len());
    assert!(
        active.len() > customers.len(),
        "several relationships share a customer"
    );
    let first = &active[0];
    assert!(first["accessDetails"]["unifiedRoles"][0]["roleDefinitionId"].is_string());
    assert!(first["endDateTime"].is_string() && first["autoExtendDuration"].is_string());

    let (status, _, _) = get(
        &format!("{base}/v1.0/tenantRelationships/delegatedAdminRelationships?$top=301"),
        &token,
    )
    .await;
    assert_eq!(status, 400);

    let customers = values(
        &all_pages(
            format!("{base}/v1.0/tenantRelationships/delegatedAdminCustomers?$top=2"),
            &token,
        )
        .await,
    );
    assert_eq!(customers.len(), msp.tenants.len());
    assert!(customers[0]["tenantId"].is_string() && customers[0]["displayName"].is_string());

    // A customer-tenant token cannot read the partner's relationships.
    let customer_token = app_token(&sim, &msp.tenants[0].tenant_id).await;
    let (status, _, body) = get(
        &format!("{base}/v1.0/tenantRelationships/delegatedAdminRelationships"),
        &customer_token,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(graph_error_code(&body), "Authorization_RequestDenied");
}

#[tokio::test]
async fn domains_and_organization_describe_the_token_tenant() {
    let sim = start().await;
    let tenant = sim.msp().tenants[2].clone();
    let token = app_token(&sim, &tenant.tenant_id).await;
    let (status, _, body) = get(&format!("{}/v1.0/domains", sim.graph_base_url()), &token).await;
    assert_eq!(status, 200);
    let domains = body["value"].as_array().expect("value");
    assert_eq!(domains.len(), tenant.domains.len());
    assert!(domains.iter().any(|domain| domain["isInitial"] == true
        && domain["id"]
            .as_str()
            .unwrap_or_default()
            .ends_with(".onmicrosoft.com")));
    assert_eq!(
        domains
            .iter()
            .filter(|domain| domain["isDefault"] == true)
            .count(),
        1
    );
    let (status, _, body) = get(
        &format!("{}/v1.0/organization", sim.graph_base_url()),
        &token,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["value"][0]["displayName"],
        tenant.display_name.as_str()
    );
    assert!(body["value"][0]["verifiedDomains"][0]["name"].is_string());
}

#[tokio::test]
async fn throttling_and_other_faults_follow_microsoft_md_section_4() {
    let sim = start().await;
    let tenant_id = sim.msp().tenants[0].tenant_id.clone();
    let token = app_token(&sim, &tenant_id).await;
    let url = format!("{}/v1.0/users?$top=5", sim.graph_base_url());
    sim.add_fault(FaultSpec {
        kind: FaultKind::Throttle {
            retry_after_secs: 1,
        },
        path_prefix: "/graph/v1.0/users".to_string(),
        tenant: Some(tenant_id.clone()),
        count: Some(1),
    })
    .expect("fault");
    sim.clear_request_log();
    let (status, headers, body) = get(&url, &token).await;
    assert_eq!(status, 429);
    assert_eq!(
        headers
            .get("retry-after")
            .and_then(|value| value.to_str().ok()),
        Some("1")
    );
    graph_error_code(&body);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, _, _) = get(&url, &token).await;
    assert_eq!(status, 200, "the fault was used up");
    let log = sim.request_log();
    assert_eq!(
        log.iter().map(|request| request.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    assert!(log[1].at.duration_since(log[0].at) >= Duration::from_secs(1));
    assert_eq!(log[0].throttle_priority.as_deref(), Some("Low"));
    assert_eq!(log[0].authorization_scheme.as_deref(), Some("Bearer"));

    // A fault scoped to another tenant does not touch this one.
    let other = sim.msp().tenants[1].tenant_id.clone();
    sim.add_fault(FaultSpec {
        kind: FaultKind::GatewayTimeout,
        path_prefix: "/graph".to_string(),
        tenant: Some(other),
        count: None,
    })
    .expect("fault");
    assert_eq!(get(&url, &token).await.0, 200);
    sim.clear_faults();

    sim.add_fault(FaultSpec {
        kind: FaultKind::Unavailable {
            retry_after_secs: None,
        },
        path_prefix: "/graph".to_string(),
        tenant: None,
        count: Some(1),
    })
    .expect("fault");
    let (status, headers, _) = get(&url, &token).await;
    assert_eq!(status, 503);
    assert!(headers.get("retry-after").is_none());

    sim.add_fault(FaultSpec {
        kind: FaultKind::MalformedJson,
        path_prefix: "/graph".to_string(),
        tenant: None,
        count: Some(1),
    })
    .expect("fault");
    let (status, _, body) = get(&url, &token).await;
    assert_eq!(status, 200);
    assert!(body.is_null(), "the body does not parse");

    sim.add_fault(FaultSpec {
        kind: FaultKind::Delay { ms: 300 },
        path_prefix: "/graph".to_string(),
        tenant: None,
        count: Some(1),
    })
    .expect("fault");
    let started = std::time::Instant::now();
    assert_eq!(get(&url, &token).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn the_resource_unit_budget_throttles_with_retry_after() {
    let sim = start().await;
    let tenant_id = sim.msp().tenants[0].tenant_id.clone();
    let token = app_token(&sim, &tenant_id).await;
    let mut settings = sim.settings();
    settings.resource_unit_throttling = true;
    settings.resource_unit_limit = Some(3);
    sim.set_settings(settings);
    let selected = format!("{}/v1.0/users?$select=id&$top=1", sim.graph_base_url());
    let unselected = format!("{}/v1.0/users?$top=1", sim.graph_base_url());
    // MICROSOFT.md §4: 1 unit with $select, 2 without.
    let (status, headers, _) = get(&selected, &token).await;
    assert_eq!(status, 200);
    assert!(
        headers.get("x-ms-throttle-limit-percentage").is_none(),
        "a third of the budget"
    );
    let (status, headers, _) = get(&unselected, &token).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers
            .get("x-ms-throttle-limit-percentage")
            .and_then(|value| value.to_str().ok()),
        Some("1.0")
    );
    let (status, headers, body) = get(&selected, &token).await;
    assert_eq!(status, 429);
    let retry_after: u64 = headers
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=10).contains(&retry_after));
    graph_error_code(&body);
    // Another tenant has its own budget.
    let other = app_token(&sim, &sim.msp().tenants[1].tenant_id).await;
    assert_eq!(get(&selected, &other).await.0, 200);
    // The window is 10 seconds on the simulator clock.
    sim.advance_clock(11);
    assert_eq!(get(&selected, &token).await.0, 200);
}

#[tokio::test]
async fn contracts_list_customers_for_the_partner() {
    let sim = start().await;
    let msp = sim.msp();
    let token = app_token(&sim, &msp.partner_tenant_id).await;
    let contracts = values(
        &all_pages(
            format!("{}/v1.0/contracts?$top=2", sim.graph_base_url()),
            &token,
        )
        .await,
    );
    assert_eq!(contracts.len(), msp.tenants.len());
    for field in [
        "id",
        "contractType",
        "customerId",
        "defaultDomainName",
        "displayName",
    ] {
        assert!(contracts[0][field].is_string(), "{field}");
    }
}

#[tokio::test]
async fn bad_input_gets_a_graph_error_never_a_crash() {
    let sim = start().await;
    let token = app_token(&sim, &sim.msp().tenants[0].tenant_id).await;
    let base = sim.graph_base_url();
    let cases = [
        format!("{base}/v1.0/users?$skiptoken=%%%"),
        format!("{base}/v1.0/users?$skiptoken=eyJ0IjoxfQ"),
        format!("{base}/v1.0/users?$top=-1"),
        format!("{base}/v1.0/users?$top=99999999999999999999999"),
        format!("{base}/v1.0/users?$filter=startswith(displayName,'a')"),
        format!("{base}/v1.0/users?$select="),
        format!("{base}/v1.0/users/delta?$orderby=displayName"),
        format!("{base}/v1.0/tenantRelationships/delegatedAdminRelationships?$skiptoken=bm9wZQ"),
        format!("{base}/v1.0/nothing/here"),
    ];
    for url in &cases {
        let (status, _, body) = get(url, &token).await;
        if status == 200 {
            assert!(body["value"].is_array(), "{url}: {body}");
        } else {
            assert!((400..500).contains(&status), "{url}: {status}");
            graph_error_code(&body);
        }
    }
    // An unreadable delta token is an invalid token: 410 (MICROSOFT.md §3).
    let (status, _, _) = get(
        &format!("{base}/v1.0/users/delta?$deltatoken=garbage"),
        &token,
    )
    .await;
    assert_eq!(status, 410);
    // The server is still answering.
    assert_eq!(
        get(&format!("{base}/v1.0/users?$top=1"), &token).await.0,
        200
    );
}

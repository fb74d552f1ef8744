//! The CIPP client against the simulated CIPP API (MICROSOFT.md §5a).

use std::collections::HashSet;
use std::sync::Arc;

use entra_sync_directory::cipp::{CippAuth, CippClient, CippConfig};
use entra_sync_directory::error::DirectoryError;
use entra_sync_directory::http::{HttpSettings, ThrottleStats};
use entra_sync_directory::source::{DirectorySource, UsersCursor};
use entra_sync_domain::model::DirectoryEntry;
use entra_sync_simulator::{ConsentFault, FaultKind, FaultSpec, Simulator};
use secrecy::SecretString;

use crate::{
    assert_class, fast_settings, largest_tenant, listed_user_count, requests_to, smallest_tenant,
    start_simulator, token_requests, url,
};

fn cipp_with(simulator: &Simulator, auth: CippAuth, settings: HttpSettings) -> CippClient {
    CippClient::new(
        CippConfig {
            base_url: url(&simulator.cipp_base_url()),
            auth,
            login_base_url: url(&simulator.login_base_url()),
        },
        settings,
        Arc::new(ThrottleStats::default()),
    )
    .expect("cipp client")
}

fn api_token_client(simulator: &Simulator) -> CippClient {
    let token = SecretString::from(simulator.config().cipp_api_token.clone());
    cipp_with(simulator, CippAuth::ApiToken(token), fast_settings())
}

fn api_client_credentials(simulator: &Simulator) -> CippAuth {
    let config = simulator.config();
    CippAuth::ClientCredentials {
        client_id: config.cipp_client_id.clone(),
        client_secret: SecretString::from(config.cipp_client_secret.clone()),
        tenant_id: config.partner_tenant_id.clone(),
    }
}

fn fault(
    kind: FaultKind,
    path_prefix: &str,
    tenant: Option<&str>,
    count: Option<u32>,
) -> FaultSpec {
    FaultSpec {
        kind,
        path_prefix: path_prefix.to_owned(),
        tenant: tenant.map(str::to_owned),
        count,
    }
}

/// Reads every page of a tenant through the trait, as the sync activity does.
async fn all_pages(
    source: &dyn DirectorySource,
    tenant: &str,
) -> Result<Vec<Vec<DirectoryEntry>>, DirectoryError> {
    let mut pages = Vec::new();
    let mut cursor = UsersCursor::Start {
        prefer_delta: true,
        delta_link: None,
    };
    loop {
        let page = source.users_page(tenant, cursor).await?;
        assert_eq!(page.delta_link, None, "CIPP passes no delta links through");
        pages.push(page.entries);
        match page.next_cursor {
            Some(next) => cursor = UsersCursor::Next(next),
            None => return Ok(pages),
        }
    }
}

#[tokio::test]
async fn tenants_are_listed_with_their_domains() {
    let simulator = start_simulator().await;
    let cipp = api_token_client(&simulator);
    let tenants = cipp.list_tenants().await.expect("tenants");
    let msp = simulator.msp();
    let expected: HashSet<String> = msp
        .tenants
        .iter()
        .map(|tenant| tenant.tenant_id.clone())
        .collect();
    let listed: HashSet<String> = tenants
        .iter()
        .map(|tenant| tenant.entra_tenant_id.clone())
        .collect();
    assert_eq!(listed, expected);
    for tenant in &tenants {
        let source = msp
            .tenants
            .iter()
            .find(|source| source.tenant_id == tenant.entra_tenant_id)
            .expect("known");
        assert_eq!(tenant.display_name, source.display_name);
        let default = source
            .domains
            .iter()
            .find(|domain| domain.is_default)
            .expect("a default domain");
        assert!(
            tenant
                .domains
                .iter()
                .any(|domain| domain.is_default && domain.name == default.id.to_ascii_lowercase()),
            "{tenant:?}"
        );
        assert!(
            tenant.domains.iter().any(|domain| domain.is_initial),
            "{tenant:?}"
        );
    }
    cipp.validate().await.expect("valid credentials");
}

#[tokio::test]
async fn the_error_row_is_a_classified_error_not_an_empty_list() {
    let simulator = start_simulator().await;
    simulator
        .add_fault(fault(
            FaultKind::CippTenantsErrorRow,
            "/cipp/api/ListTenants",
            None,
            Some(1),
        ))
        .expect("fault");
    let cipp = api_token_client(&simulator);
    // The simulator's row carries AADSTS700082: CIPP's own grant expired.
    let error = assert_class(cipp.list_tenants().await, "reauth_required");
    assert!(error.to_string().contains("AADSTS700082"), "{error}");
    assert!(cipp.list_tenants().await.is_ok(), "the fault was used up");
}

#[tokio::test]
async fn users_are_paged_with_manual_pagination_across_pages() {
    let simulator = start_simulator().await;
    let tenant = largest_tenant(&simulator);
    assert!(
        listed_user_count(&tenant) > 999,
        "the largest tenant needs two pages"
    );
    let cipp = api_token_client(&simulator);
    let pages = all_pages(&cipp, &tenant.tenant_id).await.expect("pages");
    assert!(pages.len() >= 2, "{} pages", pages.len());
    let ids: HashSet<String> = pages
        .iter()
        .flatten()
        .map(|entry| match entry {
            DirectoryEntry::Present(user) => user.object_id.clone(),
            other => panic!("unexpected entry {other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), listed_user_count(&tenant));
    let requests = requests_to(&simulator, "/cipp/api/ListGraphRequest");
    assert_eq!(requests.len(), pages.len());
    for (index, request) in requests.iter().enumerate() {
        let query = request.query.clone().unwrap_or_default();
        assert!(
            !query.to_ascii_lowercase().contains("%24count") && !query.contains("$count"),
            "{query}"
        );
        assert!(query.contains("manualPagination=true"), "{query}");
        assert_eq!(query.contains("nextLink="), index > 0, "{query}");
        assert_eq!(request.authorization_scheme.as_deref(), Some("Bearer"));
    }
}

#[tokio::test]
async fn list_users_is_the_fallback_when_list_graph_request_is_disabled() {
    let simulator = start_simulator().await;
    let tenant = smallest_tenant(&simulator);
    simulator
        .add_fault(fault(
            FaultKind::CippDisabled,
            "/cipp/api/ListGraphRequest",
            Some(&tenant.tenant_id),
            None,
        ))
        .expect("fault");
    let cipp = api_token_client(&simulator);
    let pages = all_pages(&cipp, &tenant.tenant_id).await.expect("pages");
    assert_eq!(pages.len(), 1, "ListUsers answers in one page");
    assert_eq!(pages[0].len(), listed_user_count(&tenant));
    // `Aliases` stands in for proxyAddresses: every user with aliases upstream has them here.
    for user in tenant
        .users
        .iter()
        .filter(|user| !user.deleted && !user.proxy_addresses.is_empty())
    {
        let read = pages[0]
            .iter()
            .find_map(|entry| match entry {
                DirectoryEntry::Present(read) if read.object_id == user.id => Some(read),
                _ => None,
            })
            .expect("the user is listed");
        let lower = |list: &[String]| {
            list.iter()
                .map(|text| text.to_ascii_lowercase())
                .collect::<HashSet<_>>()
        };
        assert_eq!(lower(&read.proxy_addresses), lower(&user.proxy_addresses));
    }
    assert_eq!(requests_to(&simulator, "/cipp/api/ListUsers").len(), 1);
}

#[tokio::test]
async fn cipp_errors_are_classified() {
    let simulator = start_simulator().await;
    let tenant = smallest_tenant(&simulator);
    let cipp = api_token_client(&simulator);

    simulator
        .add_fault(fault(
            FaultKind::CippForbidden,
            "/cipp/api/ListTenants",
            None,
            Some(1),
        ))
        .expect("fault");
    assert_class(cipp.list_tenants().await, "config");

    simulator
        .add_fault(fault(
            FaultKind::CippDisabled,
            "/cipp/api/ListTenants",
            None,
            Some(1),
        ))
        .expect("fault");
    assert_class(cipp.list_tenants().await, "config");

    // A Graph error for one tenant fails that tenant only, with CIPP remediation.
    simulator
        .add_fault(fault(
            FaultKind::CippGraphError,
            "/cipp/api/",
            Some(&tenant.tenant_id),
            Some(2),
        ))
        .expect("fault");
    let error = assert_class(
        cipp.users_page(&tenant.tenant_id, None).await,
        "tenant_access",
    );
    assert!(
        error
            .remediation()
            .is_some_and(|text| text.contains(&tenant.tenant_id)),
        "{error:?}"
    );

    simulator
        .set_consent_fault(&tenant.tenant_id, Some(ConsentFault::Aadsts65001))
        .expect("consent fault");
    assert_class(
        cipp.users_page(&tenant.tenant_id, None).await,
        "tenant_access",
    );
    simulator
        .set_consent_fault(&tenant.tenant_id, None)
        .expect("consent fixed");
    assert!(cipp.users_page(&tenant.tenant_id, None).await.is_ok());

    let wrong_token = cipp_with(
        &simulator,
        CippAuth::ApiToken(SecretString::from("not-the-token".to_owned())),
        fast_settings(),
    );
    let error = assert_class(wrong_token.list_tenants().await, "reauth_required");
    assert!(!error.to_string().contains("not-the-token"), "{error}");
}

#[tokio::test]
async fn api_client_tokens_are_minted_once_and_reused() {
    let simulator = start_simulator().await;
    let cipp = cipp_with(
        &simulator,
        api_client_credentials(&simulator),
        fast_settings(),
    );
    cipp.list_tenants().await.expect("tenants");
    let tenant = smallest_tenant(&simulator);
    cipp.users_page(&tenant.tenant_id, None)
        .await
        .expect("users");
    let partner = simulator.config().partner_tenant_id.clone();
    assert_eq!(
        token_requests(&simulator, &partner),
        1,
        "one client-credentials grant"
    );
    // After the simulator forgets the token CIPP answers 401; the client mints a new one.
    simulator.revoke_access_tokens();
    cipp.list_tenants().await.expect("a fresh token");
    assert_eq!(token_requests(&simulator, &partner), 2);

    let wrong_secret = cipp_with(
        &simulator,
        CippAuth::ClientCredentials {
            client_id: simulator.config().cipp_client_id.clone(),
            client_secret: SecretString::from("wrong".to_owned()),
            tenant_id: partner,
        },
        fast_settings(),
    );
    let error = assert_class(wrong_secret.validate().await, "config");
    match error {
        DirectoryError::Config { setting, .. } => assert_eq!(setting, "CIPP client_secret"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn cipp_throttling_is_retried_after_retry_after() {
    let simulator = start_simulator().await;
    simulator
        .add_fault(fault(
            FaultKind::Throttle {
                retry_after_secs: 1,
            },
            "/cipp/api/ListTenants",
            None,
            Some(1),
        ))
        .expect("fault");
    let cipp = api_token_client(&simulator);
    cipp.list_tenants().await.expect("tenants after the wait");
    let requests = requests_to(&simulator, "/cipp/api/ListTenants");
    assert_eq!(
        requests
            .iter()
            .map(|request| request.status)
            .collect::<Vec<_>>(),
        vec![429, 200]
    );
    assert!(crate::gap_after_status(&requests, 429) >= std::time::Duration::from_secs(1));
}

#[tokio::test]
async fn group_members_are_paged_with_manual_pagination() {
    let simulator = start_simulator().await;
    let tenant = largest_tenant(&simulator);
    let group = tenant
        .groups
        .iter()
        .max_by_key(|group| group.member_ids.len())
        .expect("a group")
        .clone();
    let expected = crate::graph::listed_members(&tenant, &group);
    let cipp = api_token_client(&simulator);
    let ids = cipp
        .group_member_ids(&tenant.tenant_id, &group.id)
        .await
        .expect("members");
    assert_eq!(ids.len(), expected.len(), "no member twice");
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), expected);
    let requests = requests_to(&simulator, "/cipp/api/ListGraphRequest");
    assert_eq!(requests.len(), expected.len().div_ceil(999));
    assert!(requests.len() >= 2, "the group should span pages");
    for (index, request) in requests.iter().enumerate() {
        let query = request.query.clone().unwrap_or_default();
        assert!(query.contains("manualPagination=true"), "{query}");
        assert!(query.contains("transitiveMembers"), "{query}");
        assert_eq!(query.contains("nextLink="), index > 0, "{query}");
    }
}

/// Discovery through CIPP sees every verified domain of a tenant (through `ListGraphRequest`
/// `Endpoint=domains`), not only the default and initial ones `ListTenants` carries.
#[tokio::test]
async fn discovery_reads_every_verified_domain() {
    let simulator = start_simulator().await;
    let cipp = api_token_client(&simulator);
    let tenants = cipp.list_tenants().await.expect("tenants");
    let msp = simulator.msp();
    let mut saw_a_third_domain = false;
    for expected in &msp.tenants {
        let listed = tenants
            .iter()
            .find(|tenant| tenant.entra_tenant_id == expected.tenant_id)
            .expect("listed");
        let names: HashSet<String> = listed
            .domains
            .iter()
            .map(|domain| domain.name.clone())
            .collect();
        let verified: HashSet<String> = expected
            .domains
            .iter()
            .filter(|domain| domain.is_verified)
            .map(|domain| domain.id.to_ascii_lowercase())
            .collect();
        assert_eq!(names, verified, "{}", expected.tenant_id);
        saw_a_third_domain |= verified.len() > 2;
    }
    assert!(
        saw_a_third_domain,
        "the seed should give some tenant a domain beyond the default and initial"
    );
}

/// A 200 without its `Results` array (`{}`, `{"Results":null}`, an HTML page from a proxy) is
/// an `invalid` error, never an empty last page: a sync that took it for the end of the list
/// would inactivate every user it had not read yet.
#[tokio::test]
async fn a_page_without_its_results_is_invalid_not_the_end() {
    let simulator = start_simulator().await;
    let tenant = largest_tenant(&simulator);
    let cipp = api_token_client(&simulator);
    let bodies = [
        ("{}", None),
        (r#"{"Results":null,"Metadata":{}}"#, None),
        (
            "<html><body>Proxy login</body></html>",
            Some("text/html".to_owned()),
        ),
    ];
    for (body, content_type) in bodies {
        simulator
            .add_fault(fault(
                FaultKind::OkBody {
                    body: body.to_owned(),
                    content_type,
                },
                "/cipp/api/ListGraphRequest",
                None,
                Some(1),
            ))
            .expect("fault");
        let error = all_pages(&cipp, &tenant.tenant_id)
            .await
            .expect_err("a page without Results is an error");
        assert_eq!(error.class(), "invalid", "{body}: {error}");
    }
    // With the faults used up, the same tenant reads completely.
    let pages = all_pages(&cipp, &tenant.tenant_id).await.expect("pages");
    assert_eq!(
        pages.iter().map(Vec::len).sum::<usize>(),
        listed_user_count(&tenant)
    );
}

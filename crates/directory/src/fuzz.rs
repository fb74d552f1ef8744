//! Fuzz targets for everything that reads a provider's bytes, run on the stable toolchain as
//! property tests (cargo-fuzz needs nightly): Graph user objects, CIPP `ListGraphRequest` and
//! `ListTenants` answers, token responses, and error bodies through classification. Inputs are
//! arbitrary JSON biased towards the field names the parsers look at, so generated documents
//! reach the deep branches, plus arbitrary bytes for the error-body reader. Properties: no
//! panic, and each parser's invariants. `make test` runs a short pass; set
//! `ENTRA_SYNC_FUZZ_CASES` for a long one (the README records the last long run).

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::error::{classify, ErrorContext, SettingNames};
use crate::http::FailedResponse;
use entra_sync_domain::model::DirectoryEntry;

/// Cases per target: `ENTRA_SYNC_FUZZ_CASES`, or 256 for the short run in `make test`.
fn cases() -> u32 {
    std::env::var("ENTRA_SYNC_FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(256)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Names the parsers read, so that generated objects hit them often.
const KEYS: &[&str] = &[
    "id",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "userPrincipalName",
    "otherMails",
    "proxyAddresses",
    "accountEnabled",
    "userType",
    "jobTitle",
    "mobilePhone",
    "businessPhones",
    "assignedLicenses",
    "creationType",
    "@removed",
    "reason",
    "value",
    "@odata.nextLink",
    "@odata.deltaLink",
    "Results",
    "Metadata",
    "nextLink",
    "Queued",
    "customerId",
    "defaultDomainName",
    "initialDomainName",
    "access_token",
    "refresh_token",
    "expires_in",
    "scope",
    "error",
    "error_description",
    "error_codes",
    "code",
    "message",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9._%+-]{0,12}@[a-zA-Z0-9.-]{0,12}",
        Just("AllTenants".to_owned()),
        Just("deleted".to_owned()),
        Just("SMTP:Someone@Contoso.com".to_owned()),
        Just("AADSTS70008: The refresh token has expired. Trace ID: x".to_owned()),
        Just("Member".to_owned()),
        Just("Guest".to_owned()),
        "[0-9a-f-]{36}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|number| {
            serde_json::Number::from_f64(number)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }),
        text().prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Arbitrary JSON, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..10)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn context() -> ErrorContext {
    ErrorContext {
        login_base_url: url::Url::parse("https://login.microsoftonline.com")
            .unwrap_or_else(|_| unreachable!("constant URL")),
        client_id: "00000000-0000-0000-0000-000000000001".to_owned(),
        redirect_uri: None,
        tenant_id: Some("tenant".to_owned()),
        settings: SettingNames::CIPP,
    }
}

proptest! {
    #![proptest_config(config())]

    /// A Graph user object: never panics; a present user has the id it was sent with; an
    /// entry without a usable id never claims one.
    #[test]
    fn graph_user_objects(value in json()) {
        match crate::users::parse_entry(&value) {
            DirectoryEntry::Present(user) => {
                prop_assert_eq!(Some(user.object_id.as_str()), value.get("id").and_then(Value::as_str));
            }
            DirectoryEntry::Removed { object_id, .. } => {
                prop_assert!(!object_id.trim().is_empty());
            }
            DirectoryEntry::Invalid { object_id, .. } => {
                if let Some(object_id) = object_id {
                    prop_assert!(!object_id.trim().is_empty());
                }
            }
        }
    }

    /// A Graph users page (`value` of user objects) read the way both Graph and CIPP pages
    /// are: one entry per element, whatever the elements are.
    #[test]
    fn graph_user_pages(values in proptest::collection::vec(json(), 0..20)) {
        let entries: Vec<DirectoryEntry> = values.iter().map(crate::users::parse_entry).collect();
        prop_assert_eq!(entries.len(), values.len());
    }

    /// A CIPP `ListGraphRequest` answer: never panics; a page has one entry per result.
    #[test]
    fn cipp_graph_request_pages(body in json()) {
        if let Ok(page) = crate::cipp::parse_graph_request_page(&body) {
            let results = body.get("Results").and_then(Value::as_array).map_or(0, Vec::len);
            prop_assert_eq!(page.entries.len(), results);
            if let Some(cursor) = page.next_cursor {
                prop_assert!(!cursor.is_empty());
            }
        }
    }

    /// A CIPP `ListTenants` answer: never panics; tenants have non-empty, distinct ids and
    /// lowercase domains, and the `AllTenants` pseudo-row never becomes a tenant.
    #[test]
    fn cipp_tenant_lists(rows in proptest::collection::vec(json(), 0..12), as_array in any::<bool>()) {
        let body = if as_array { Value::Array(rows) } else { rows.into_iter().next().unwrap_or(Value::Null) };
        if let Ok(tenants) = crate::cipp::parse_tenants(&body, &context()) {
            let mut seen = std::collections::BTreeSet::new();
            for tenant in &tenants {
                prop_assert!(!tenant.entra_tenant_id.is_empty());
                prop_assert!(!tenant.entra_tenant_id.eq_ignore_ascii_case("AllTenants"));
                prop_assert!(seen.insert(tenant.entra_tenant_id.to_ascii_lowercase()));
                for domain in &tenant.domains {
                    prop_assert_eq!(domain.name.clone(), domain.name.to_ascii_lowercase());
                }
            }
        }
    }

    /// A token endpoint answer: never panics (an absurd `expires_in` once overflowed the
    /// expiry time); a token set always has a non-empty access token.
    #[test]
    fn token_responses(body in json(), expires_in in any::<i64>()) {
        let mut body = body;
        if let Value::Object(object) = &mut body {
            if object.contains_key("expires_in") {
                object.insert("expires_in".to_owned(), Value::from(expires_in));
            }
        }
        if let Ok(token_set) = crate::oauth::parse_token_response(&body) {
            use secrecy::ExposeSecret;
            prop_assert!(!token_set.access_token.expose_secret().is_empty());
        }
    }

    /// An error body (any bytes, or JSON in the OAuth and Graph shapes) with any status:
    /// reading and classifying it never panics, and the message it yields stays short.
    #[test]
    fn error_bodies_through_classification(
        status in 100u16..600,
        body in prop_oneof![
            any::<String>(),
            json().prop_map(|value| value.to_string()),
            json().prop_map(|value| serde_json::json!({"error": value}).to_string()),
        ],
    ) {
        let failed = FailedResponse { status, headers: reqwest::header::HeaderMap::new(), body };
        let failure = failed.provider_failure();
        prop_assert!(failure.message.chars().count() <= 300);
        let error = classify(&failure, &context());
        prop_assert!(!error.class().is_empty());
    }
}

//! `entra-sync doctor`: checks the configuration and what it points at, and prints each
//! finding with what to do about it (SPEC §2.1 configuration checks, §9 operations). The
//! checks: the OAuth redirect URI (https unless loopback, the path this service answers), a
//! client secret that looks like the secret's ID, where the app registration comes from, the
//! encryption key, Postgres and Temporal reachability, and every PSA tenant's connection state.

use std::fmt::Write as _;
use std::time::Duration;

use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::config::Settings;
use crate::runtime;

/// The callback path the API serves (`crates/api`, route `oauth_callback`), which must be the
/// path of the redirect URI registered in Azure.
pub const CALLBACK_PATH: &str = "/auth/oauth2/microsoft/callback";

/// How long one reachability check may take.
const REACH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Ok,
    Warning,
    Error,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warning => "warn",
            Severity::Error => "FAIL",
        }
    }
}

/// One check's result. Never holds a secret value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub check: &'static str,
    pub severity: Severity,
    pub message: String,
    pub remediation: Option<String>,
}

fn ok(check: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        check,
        severity: Severity::Ok,
        message: message.into(),
        remediation: None,
    }
}

fn problem(
    check: &'static str,
    severity: Severity,
    message: impl Into<String>,
    remediation: impl Into<String>,
) -> Finding {
    Finding {
        check,
        severity,
        message: message.into(),
        remediation: Some(remediation.into()),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    }
}

/// The OAuth callback URL (`MICROSOFT_OAUTH_CALLBACK_URL`).
pub fn check_redirect_uri(callback_url: Option<&str>) -> Vec<Finding> {
    const CHECK: &str = "redirect URI";
    let Some(callback_url) = callback_url else {
        return vec![problem(
            CHECK,
            Severity::Warning,
            "MICROSOFT_OAUTH_CALLBACK_URL is not set; direct connections cannot start",
            format!("set MICROSOFT_OAUTH_CALLBACK_URL to https://<public host>{CALLBACK_PATH} and register the same URI on the app in Azure (Authentication → Web → Redirect URIs)"),
        )];
    };
    let Ok(url) = url::Url::parse(callback_url) else {
        return vec![problem(
            CHECK,
            Severity::Error,
            "MICROSOFT_OAUTH_CALLBACK_URL is not a valid absolute URL",
            format!("use the form https://<public host>{CALLBACK_PATH}"),
        )];
    };
    let mut findings = Vec::new();
    if url.scheme() != "https" && !is_loopback(&url) {
        findings.push(problem(
            CHECK,
            Severity::Error,
            format!("{callback_url} uses {} on a host that is not loopback; Microsoft only accepts http for localhost", url.scheme()),
            "use https (http is allowed only for localhost, 127.0.0.1 and [::1])",
        ));
    }
    // The service answers the path with and without a trailing slash (as Microsoft's portal
    // often registers it); the configured URI is sent to Microsoft exactly as written.
    if url.path().trim_end_matches('/') != CALLBACK_PATH
        || url.query().is_some()
        || url.fragment().is_some()
    {
        findings.push(problem(
            CHECK,
            Severity::Error,
            format!("the callback URL path is {}, but this service answers {CALLBACK_PATH}: Microsoft would redirect to a URL nobody serves (callback URL mismatch, AADSTS50011 if Azure has the other one)", url.path()),
            format!("set MICROSOFT_OAUTH_CALLBACK_URL to {}://{}{CALLBACK_PATH} and register exactly that URI on the app in Azure", url.scheme(), url.host_str().unwrap_or("<host>")),
        ));
    }
    if findings.is_empty() {
        findings.push(ok(
            CHECK,
            format!("{callback_url} (register exactly this URI on the app in Azure)"),
        ));
    }
    findings
}

/// A client secret that parses as a GUID is almost always the secret's ID column in Azure.
pub fn check_client_secret(source: &str, secret: &str) -> Finding {
    const CHECK: &str = "client secret";
    if Uuid::parse_str(secret.trim()).is_ok() {
        problem(
            CHECK,
            Severity::Error,
            format!("the client secret from {source} looks like a GUID: that is the secret's ID, not its value (AADSTS7000215 at sign-in)"),
            "in Azure (App registrations → Certificates & secrets) copy the secret's Value, shown only when it is created; create a new secret if it is no longer shown",
        )
    } else {
        ok(CHECK, format!("set in {source} (value not shown)"))
    }
}

/// The configuration alone: no network.
pub fn check_configuration(settings: &Settings) -> Vec<Finding> {
    let microsoft = &settings.microsoft;
    let mut findings = check_redirect_uri(microsoft.oauth_callback_url.as_deref());
    for (name, value) in [
        ("MICROSOFT_LOGIN_BASE_URL", &microsoft.login_base_url),
        ("MICROSOFT_GRAPH_BASE_URL", &microsoft.graph_base_url),
    ] {
        match url::Url::parse(value) {
            Ok(url) if url.scheme() == "https" || is_loopback(&url) => {}
            _ => findings.push(problem(
                "endpoints",
                Severity::Error,
                format!("{name} is {value}, not an https URL"),
                format!("unset {name} for the public cloud, or set the sovereign cloud's https endpoint"),
            )),
        }
    }
    match settings.encryption_key() {
        Ok(_) => findings.push(ok("encryption key", "ENTRA_SYNC_ENCRYPTION_KEY is 32 bytes")),
        Err(error) => findings.push(problem(
            "encryption key",
            Severity::Error,
            error.to_string(),
            "set ENTRA_SYNC_ENCRYPTION_KEY to base64 of 32 random bytes (openssl rand -base64 32); keep the same key for every process",
        )),
    }
    if settings.api.master_key.is_none() {
        findings.push(problem(
            "master key",
            Severity::Warning,
            "ENTRA_SYNC_MASTER_KEY is not set; the API will not start",
            "set ENTRA_SYNC_MASTER_KEY to a long random value",
        ));
    }
    findings
}

/// Where the app registration comes from (application level; a PSA tenant's own secrets take
/// precedence for that tenant) and whether its secret looks right.
pub async fn check_app_registration(settings: &Settings) -> Vec<Finding> {
    const CHECK: &str = "app registration";
    let resolver = match runtime::app_registrations(settings) {
        Ok(resolver) => resolver,
        Err(error) => {
            return vec![problem(
            CHECK,
            Severity::Error,
            format!("{error:#}"),
            "fix the secret provider settings (ENTRA_SYNC__SECRETS__*, VAULT_ADDR, VAULT_TOKEN)",
        )]
        }
    };
    // The nil tenant has no secrets of its own, so this resolves the shared registration.
    match resolver.resolve(Uuid::nil()).await {
        Ok(Some(app)) => {
            let mut findings = vec![ok(
                CHECK,
                format!("client id {} from {} ({:?})", app.client_id, app.source, app.credential),
            )];
            if let entra_sync_connection::AppCredential::ClientSecret(secret) = &app.credential {
                findings.push(check_client_secret(&app.source, secret.expose_secret()));
            }
            findings
        }
        Ok(None) => vec![problem(
            CHECK,
            Severity::Warning,
            "no app registration is configured; direct connections are unavailable (CIPP still works)",
            "set MICROSOFT_CLIENT_ID with MICROSOFT_CLIENT_SECRET (or a certificate, or a federated token file) in the environment, the secrets directory or Vault",
        )],
        Err(error) => vec![problem(
            CHECK,
            Severity::Error,
            error.to_string(),
            "fix the named secret, or the provider's address and token",
        )],
    }
}

/// Postgres and Temporal answer; every PSA tenant's connection state.
pub async fn check_services(settings: &Settings) -> Vec<Finding> {
    let mut findings = Vec::new();
    let store = match tokio::time::timeout(REACH_TIMEOUT, runtime::connect_store(settings)).await {
        Ok(Ok(store)) => match store.ping().await {
            Ok(()) => {
                findings.push(ok("postgres", "reachable"));
                Some(store)
            }
            Err(error) => {
                findings.push(problem(
                    "postgres",
                    Severity::Error,
                    format!("connected but a query failed: {error}"),
                    "check the database user's rights and run `entra-sync migrate`",
                ));
                None
            }
        },
        Ok(Err(error)) => {
            findings.push(problem(
                "postgres",
                Severity::Error,
                format!("{error:#}"),
                "check DATABASE_URL (host, port, user, database) and that Postgres is running",
            ));
            None
        }
        Err(_) => {
            findings.push(problem(
                "postgres",
                Severity::Error,
                "no answer within 10 seconds",
                "check DATABASE_URL and the network path to Postgres",
            ));
            None
        }
    };
    match tokio::time::timeout(REACH_TIMEOUT, runtime::connect_temporal(&settings.temporal)).await {
        Ok(Ok(_)) => findings.push(ok("temporal", format!("reachable at {}", settings.temporal.address))),
        Ok(Err(error)) => findings.push(problem(
            "temporal",
            Severity::Error,
            format!("{error:#}"),
            "check TEMPORAL_ADDRESS (host:port) and TEMPORAL_NAMESPACE, and that the Temporal server is running",
        )),
        Err(_) => findings.push(problem("temporal", Severity::Error, "no answer within 10 seconds", "check TEMPORAL_ADDRESS and the network path to Temporal")),
    }
    if let Some(store) = store {
        findings.extend(check_connections(&store).await);
    }
    findings
}

async fn check_connections(store: &entra_sync_store::Store) -> Vec<Finding> {
    const CHECK: &str = "connection";
    let connections = match store.connection_health().await {
        Ok(connections) => connections,
        Err(error) => {
            return vec![problem(
                CHECK,
                Severity::Warning,
                format!("cannot read connections: {error}"),
                "run `entra-sync migrate`",
            )]
        }
    };
    if connections.is_empty() {
        return vec![ok(CHECK, "no PSA tenant has connected yet")];
    }
    connections
        .into_iter()
        .map(|connection| {
            let who = format!(
                "{} ({}): {} {}",
                connection.tenant_name,
                connection.tenant_id,
                connection.kind.as_deref().unwrap_or("-"),
                connection.status
            );
            let detail = connection
                .last_error_code
                .as_deref()
                .map(|code| format!(", last error {code}"))
                .unwrap_or_default();
            match connection.status.as_str() {
                "needs_reconnect" => problem(
                    CHECK,
                    Severity::Error,
                    format!("{who}{detail}; syncs are stopped"),
                    "an admin of that PSA tenant must reconnect: POST /api/v1/integrations/entra/connect/direct and sign in again (or reconnect CIPP)",
                ),
                "validation_failed" => problem(
                    CHECK,
                    Severity::Warning,
                    format!("{who}{detail}"),
                    "fix the credentials and connect again; POST /api/v1/integrations/entra/validate re-checks them",
                ),
                _ => ok(CHECK, format!("{who}{detail}")),
            }
        })
        .collect()
}

/// Every check, configuration first.
pub async fn run_checks(settings: &Settings) -> Vec<Finding> {
    let mut findings = check_configuration(settings);
    findings.extend(check_app_registration(settings).await);
    findings.extend(check_services(settings).await);
    findings
}

/// The findings as the command prints them.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for finding in findings {
        let _ = writeln!(
            out,
            "[{:<4}] {:<16} {}",
            finding.severity.label(),
            finding.check,
            finding.message
        );
        if let Some(remediation) = &finding.remediation {
            let _ = writeln!(out, "       {:<16} fix: {remediation}", "");
        }
    }
    let errors = findings
        .iter()
        .filter(|finding| finding.severity == Severity::Error)
        .count();
    let warnings = findings
        .iter()
        .filter(|finding| finding.severity == Severity::Warning)
        .count();
    let _ = writeln!(out, "{errors} problem(s), {warnings} warning(s)");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn severities(callback: Option<&str>) -> Vec<Severity> {
        check_redirect_uri(callback)
            .into_iter()
            .map(|finding| finding.severity)
            .collect()
    }

    #[test]
    fn redirect_uri_rules() {
        let cases: [(Option<&str>, Vec<Severity>); 9] = [
            (
                Some("https://psa.example.com/auth/oauth2/microsoft/callback"),
                vec![Severity::Ok],
            ),
            (
                Some("https://psa.example.com/auth/oauth2/microsoft/callback/"),
                vec![Severity::Ok],
            ),
            (
                Some("http://localhost:8080/auth/oauth2/microsoft/callback"),
                vec![Severity::Ok],
            ),
            (
                Some("http://127.0.0.1/auth/oauth2/microsoft/callback"),
                vec![Severity::Ok],
            ),
            (
                Some("http://[::1]:8080/auth/oauth2/microsoft/callback"),
                vec![Severity::Ok],
            ),
            (
                Some("http://psa.example.com/auth/oauth2/microsoft/callback"),
                vec![Severity::Error],
            ),
            (
                Some("https://psa.example.com/oauth/callback"),
                vec![Severity::Error],
            ),
            (Some("not a url"), vec![Severity::Error]),
            (None, vec![Severity::Warning]),
        ];
        for (callback, expected) in cases {
            assert_eq!(severities(callback), expected, "{callback:?}");
        }
        let mismatch = check_redirect_uri(Some("https://psa.example.com/callback"));
        assert!(mismatch[0].remediation.as_deref().is_some_and(
            |text| text.contains("https://psa.example.com/auth/oauth2/microsoft/callback")
        ));
    }

    #[test]
    fn a_guid_secret_is_flagged_without_printing_it() {
        let guid = "3f2b8c1e-6a4d-4e2f-9b1a-7c8d9e0f1a2b";
        let finding = check_client_secret("environment", guid);
        assert_eq!(finding.severity, Severity::Error);
        assert!(finding.message.contains("secret's ID"));
        assert!(!render(&[finding]).contains(guid));
        let fine = check_client_secret("environment", "Abc8Q~not-a-guid.value");
        assert_eq!(fine.severity, Severity::Ok);
        assert!(!render(&[fine]).contains("Abc8Q"));
    }

    #[tokio::test]
    async fn unreachable_services_are_reported_with_a_fix() {
        let environment: Vec<(String, String)> = [
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/postgres"),
            ("TEMPORAL_ADDRESS", "127.0.0.1:1"),
            ("MICROSOFT_CLIENT_ID", "app"),
            (
                "MICROSOFT_CLIENT_SECRET",
                "3f2b8c1e-6a4d-4e2f-9b1a-7c8d9e0f1a2b",
            ),
        ]
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
        let settings = Settings::load(None, &environment).expect("settings");
        let findings = run_checks(&settings).await;
        let failed: Vec<&str> = findings
            .iter()
            .filter(|finding| finding.severity == Severity::Error)
            .map(|finding| finding.check)
            .collect();
        for check in ["postgres", "temporal", "client secret", "encryption key"] {
            assert!(
                failed.contains(&check),
                "{check} not flagged: {}",
                render(&findings)
            );
        }
        assert!(findings
            .iter()
            .filter(|finding| finding.severity == Severity::Error)
            .all(|finding| finding.remediation.is_some()));
    }
}

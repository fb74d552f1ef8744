//! The one error type of the directory crate and the one function that classifies every
//! Microsoft identity platform, Graph and CIPP failure into it (MICROSOFT.md §5).
//!
//! Variants are named by what the caller does next, not by which system failed. Messages are
//! written here or copied from the provider's short error text; they never carry a token, a
//! secret, an authorization code or a URL that holds one.

use std::time::Duration;

use url::Url;

/// What the caller of a directory operation does next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The connection's grant is no longer usable (expired, revoked, MFA required): mark the
    /// connection `needs_reconnect` and stop syncing until a person reconnects.
    #[error("reconnect to Microsoft required ({code}): {message}")]
    ReauthRequired { code: String, message: String },
    /// One managed tenant lacks consent or a GDAP role; that tenant fails, others continue.
    #[error("no access to this managed tenant ({code}): {message}. Remediation: {remediation}")]
    TenantAccess {
        code: String,
        message: String,
        remediation: String,
    },
    /// The app registration or the service configuration is wrong; `setting` names what to fix.
    #[error("configuration error ({code}): {message}. Check the setting {setting}")]
    Config {
        code: String,
        message: String,
        setting: String,
    },
    /// Throttling, an outage or a timeout: retry later, not before `retry_after` when given.
    #[error("temporary provider failure ({code}): {message}")]
    Transient {
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The stored delta link is no longer accepted (410, `syncStateNotFound`, `resyncRequired`;
    /// MICROSOFT.md §3): restart with a full enumeration (`UsersCursor::Start` without a delta
    /// link). Not a failure of the tenant, so it has its own class.
    #[error("the delta link expired ({code}); a full enumeration is needed")]
    DeltaExpired { code: String },
    /// The provider answered something this client cannot use; retrying will not help.
    #[error("unusable provider response: {message}")]
    Invalid { message: String },
}

impl DirectoryError {
    /// The class name used in tenant results, metrics and the API (SPEC §2.3).
    pub fn class(&self) -> &'static str {
        match self {
            DirectoryError::ReauthRequired { .. } => "reauth_required",
            DirectoryError::TenantAccess { .. } => "tenant_access",
            DirectoryError::Config { .. } => "config",
            DirectoryError::Transient { .. } => "transient",
            DirectoryError::DeltaExpired { .. } => "delta_expired",
            DirectoryError::Invalid { .. } => "invalid",
        }
    }

    /// True only for failures that a later identical attempt can fix (Temporal retries these).
    pub fn is_retryable(&self) -> bool {
        matches!(self, DirectoryError::Transient { .. })
    }

    /// The provider's error code (`AADSTS70008`, `Authorization_RequestDenied`, `http_429`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            DirectoryError::ReauthRequired { code, .. }
            | DirectoryError::TenantAccess { code, .. }
            | DirectoryError::Config { code, .. }
            | DirectoryError::Transient { code, .. }
            | DirectoryError::DeltaExpired { code } => Some(code),
            DirectoryError::Invalid { .. } => None,
        }
    }

    /// The remediation text of a tenant-access failure (admin-consent URL or GDAP role).
    pub fn remediation(&self) -> Option<&str> {
        match self {
            DirectoryError::TenantAccess { remediation, .. } => Some(remediation),
            _ => None,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        DirectoryError::Invalid {
            message: message.into(),
        }
    }
}

/// Names of the settings a config error points at; they differ between the direct Microsoft
/// connection and a CIPP API client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingNames {
    pub client_id: &'static str,
    pub client_secret: &'static str,
    pub tenant_id: &'static str,
    pub callback_url: &'static str,
}

impl SettingNames {
    /// The environment variable names of SPEC §8.
    pub const MICROSOFT: SettingNames = SettingNames {
        client_id: "MICROSOFT_CLIENT_ID",
        client_secret: "MICROSOFT_CLIENT_SECRET",
        tenant_id: "MICROSOFT_TENANT_ID",
        callback_url: "MICROSOFT_OAUTH_CALLBACK_URL",
    };
    /// The fields of the CIPP connect body (SPEC §2.2).
    pub const CIPP: SettingNames = SettingNames {
        client_id: "CIPP client_id",
        client_secret: "CIPP client_secret",
        tenant_id: "CIPP tenant_id",
        callback_url: "CIPP base_url",
    };
}

/// What the classifier needs to write remediation text: where to send an admin for consent.
#[derive(Clone, Debug)]
pub struct ErrorContext {
    pub login_base_url: Url,
    pub client_id: String,
    pub redirect_uri: Option<String>,
    /// The managed tenant the failed call was for, when there is one.
    pub tenant_id: Option<String>,
    pub settings: SettingNames,
}

impl ErrorContext {
    /// `{login}/{tenant id}/adminconsent?client_id={app id}&redirect_uri=…` (MICROSOFT.md §1).
    pub fn admin_consent_url(&self) -> String {
        let tenant = self.tenant_id.as_deref().unwrap_or("organizations");
        let base = self.login_base_url.as_str().trim_end_matches('/');
        let mut url = format!(
            "{base}/{}/adminconsent?client_id={}",
            encode(tenant),
            encode(&self.client_id)
        );
        if let Some(redirect_uri) = &self.redirect_uri {
            url.push_str("&redirect_uri=");
            url.push_str(&encode(redirect_uri));
        }
        url
    }

    fn tenant_label(&self) -> &str {
        self.tenant_id.as_deref().unwrap_or("the customer tenant")
    }
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A provider failure reduced to the fields classification may branch on (MICROSOFT.md §1,
/// §4, §5a). `message` is already cut to the short, safe part of the provider's text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProviderFailure {
    pub status: Option<u16>,
    /// OAuth `error` (`invalid_grant`, `invalid_client`, …).
    pub oauth_error: Option<String>,
    /// OAuth `error_codes` (the numbers behind `AADSTS…`).
    pub error_codes: Vec<u64>,
    /// Graph `error.code` (`Authorization_RequestDenied`, `syncStateNotFound`, …).
    pub graph_code: Option<String>,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// True when no HTTP answer arrived in time.
    pub timed_out: bool,
}

const REAUTH_CODES: &[u64] = &[70008, 700082, 50173, 70043, 50076, 50079];
const CONFIG_CODES: &[u64] = &[50011, 700016, 7000215, 7000222, 90002];
const TENANT_ACCESS_CODES: &[u64] = &[65001, 90099];
const TRANSIENT_CODES: &[u64] = &[50196, 90055];

/// Classifies one failure (MICROSOFT.md §5). Order: the AADSTS numbers, then Graph's
/// `error.code`, then OAuth's `error`, then the HTTP status. Description text is never read.
pub fn classify(failure: &ProviderFailure, context: &ErrorContext) -> DirectoryError {
    for &number in &failure.error_codes {
        if let Some(error) = classify_aadsts(number, failure, context) {
            return error;
        }
    }
    if let Some(graph_code) = failure.graph_code.as_deref() {
        if let Some(error) = classify_graph_code(graph_code, failure, context) {
            return error;
        }
    }
    if let Some(oauth_error) = failure.oauth_error.as_deref() {
        if let Some(error) = classify_oauth_error(oauth_error, failure, context) {
            return error;
        }
    }
    classify_status(failure, context)
}

fn message_or(failure: &ProviderFailure, fallback: &str) -> String {
    if failure.message.trim().is_empty() {
        fallback.to_owned()
    } else {
        failure.message.clone()
    }
}

fn consent_remediation(context: &ErrorContext) -> String {
    format!(
        "an administrator of {} must grant admin consent to the app at {}",
        context.tenant_label(),
        context.admin_consent_url()
    )
}

fn gdap_remediation(context: &ErrorContext) -> String {
    format!(
        "give the GDAP relationship with {} a role that can read the directory (Directory Readers, or Global Reader), \
         assigned to a security group the connecting user belongs to",
        context.tenant_label()
    )
}

fn classify_aadsts(
    number: u64,
    failure: &ProviderFailure,
    context: &ErrorContext,
) -> Option<DirectoryError> {
    let code = format!("AADSTS{number}");
    let settings = context.settings;
    if REAUTH_CODES.contains(&number) {
        let fallback = match number {
            50076 | 50079 => "multi-factor authentication is required; reconnect",
            _ => "the refresh token expired or was revoked; reconnect",
        };
        return Some(DirectoryError::ReauthRequired {
            code,
            message: message_or(failure, fallback),
        });
    }
    if CONFIG_CODES.contains(&number) {
        let (setting, fallback) = match number {
            50011 => (
                settings.callback_url,
                "the redirect URI does not match one registered on the app",
            ),
            700016 => (
                settings.client_id,
                "the application was not found in the tenant",
            ),
            7000215 => (
                settings.client_secret,
                "the client secret is invalid (use the secret's value, not its id)",
            ),
            7000222 => (settings.client_secret, "the client secret has expired"),
            _ => (settings.tenant_id, "the tenant was not found"),
        };
        return Some(DirectoryError::Config {
            code,
            message: message_or(failure, fallback),
            setting: setting.to_owned(),
        });
    }
    if TENANT_ACCESS_CODES.contains(&number) {
        let fallback = if number == 65001 {
            "the app has not been consented in this tenant"
        } else {
            "the app is not authorized in this customer tenant"
        };
        return Some(DirectoryError::TenantAccess {
            code,
            message: message_or(failure, fallback),
            remediation: consent_remediation(context),
        });
    }
    if TRANSIENT_CODES.contains(&number) {
        let fallback = if number == 50196 {
            "sign-in loop detected; tokens must be cached"
        } else {
            "the tenant is throttled"
        };
        return Some(DirectoryError::Transient {
            code,
            message: message_or(failure, fallback),
            retry_after: failure.retry_after,
        });
    }
    None
}

fn classify_graph_code(
    graph_code: &str,
    failure: &ProviderFailure,
    context: &ErrorContext,
) -> Option<DirectoryError> {
    let code = graph_code.to_owned();
    if graph_code.eq_ignore_ascii_case("syncStateNotFound")
        || graph_code.eq_ignore_ascii_case("resyncRequired")
    {
        return Some(DirectoryError::DeltaExpired { code });
    }
    if graph_code.eq_ignore_ascii_case("Authorization_IdentityNotFound") {
        return Some(DirectoryError::TenantAccess {
            code,
            message: message_or(failure, "the app is not consented in this customer tenant"),
            remediation: consent_remediation(context),
        });
    }
    if graph_code.eq_ignore_ascii_case("Authorization_RequestDenied") {
        return Some(DirectoryError::TenantAccess {
            code,
            message: message_or(failure, "insufficient privileges to read this tenant"),
            remediation: gdap_remediation(context),
        });
    }
    None
}

fn classify_oauth_error(
    oauth_error: &str,
    failure: &ProviderFailure,
    context: &ErrorContext,
) -> Option<DirectoryError> {
    let code = oauth_error.to_owned();
    let settings = context.settings;
    match oauth_error {
        "invalid_client" => Some(DirectoryError::Config {
            code,
            message: message_or(failure, "the client credentials were rejected"),
            setting: settings.client_secret.to_owned(),
        }),
        "unauthorized_client" | "invalid_scope" => Some(DirectoryError::Config {
            code,
            message: message_or(failure, "the app may not use this grant or scope"),
            setting: settings.client_id.to_owned(),
        }),
        "invalid_grant" | "interaction_required" | "login_required" => {
            Some(DirectoryError::ReauthRequired {
                code,
                message: message_or(failure, "the grant is no longer valid; reconnect"),
            })
        }
        "consent_required" => Some(DirectoryError::TenantAccess {
            code,
            message: message_or(failure, "the app has not been consented in this tenant"),
            remediation: consent_remediation(context),
        }),
        "temporarily_unavailable" | "server_error" => Some(DirectoryError::Transient {
            code,
            message: message_or(failure, "the identity platform is temporarily unavailable"),
            retry_after: failure.retry_after,
        }),
        _ => None,
    }
}

fn classify_status(failure: &ProviderFailure, context: &ErrorContext) -> DirectoryError {
    if failure.timed_out {
        return DirectoryError::Transient {
            code: "timeout".to_owned(),
            message: message_or(failure, "the provider did not answer in time"),
            retry_after: None,
        };
    }
    let Some(status) = failure.status else {
        return DirectoryError::Transient {
            code: "connection".to_owned(),
            message: message_or(failure, "the provider could not be reached"),
            retry_after: None,
        };
    };
    let code = failure
        .graph_code
        .clone()
        .or_else(|| failure.oauth_error.clone())
        .unwrap_or_else(|| format!("http_{status}"));
    match status {
        410 => DirectoryError::DeltaExpired { code },
        429 | 500 | 502 | 503 | 504 => DirectoryError::Transient {
            code,
            message: message_or(failure, "the provider is throttling or unavailable"),
            retry_after: failure.retry_after,
        },
        401 => DirectoryError::ReauthRequired {
            code,
            message: message_or(failure, "the access token was rejected; reconnect"),
        },
        403 => DirectoryError::TenantAccess {
            code,
            message: message_or(failure, "access to this tenant was denied"),
            remediation: gdap_remediation(context),
        },
        _ => DirectoryError::Invalid {
            message: format!(
                "{code}: {}",
                message_or(failure, "unexpected provider answer")
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> ErrorContext {
        ErrorContext {
            login_base_url: Url::parse("https://login.microsoftonline.com").expect("url"),
            client_id: "app-id".to_owned(),
            redirect_uri: Some(
                "https://sync.example.com/auth/oauth2/microsoft/callback".to_owned(),
            ),
            tenant_id: Some("tenant-1".to_owned()),
            settings: SettingNames::MICROSOFT,
        }
    }

    fn oauth(error: &str, code: u64, status: u16) -> ProviderFailure {
        ProviderFailure {
            status: Some(status),
            oauth_error: Some(error.to_owned()),
            error_codes: vec![code],
            message: "AADSTS text".to_owned(),
            ..ProviderFailure::default()
        }
    }

    fn graph(code: &str, status: u16) -> ProviderFailure {
        ProviderFailure {
            status: Some(status),
            graph_code: Some(code.to_owned()),
            message: "graph text".to_owned(),
            ..ProviderFailure::default()
        }
    }

    fn status(status: u16) -> ProviderFailure {
        ProviderFailure {
            status: Some(status),
            ..ProviderFailure::default()
        }
    }

    /// Expected class, and for config the setting, for tenant access a piece of the remediation.
    fn check(failure: ProviderFailure, class: &str, detail: Option<&str>) {
        let error = classify(&failure, &context());
        assert_eq!(error.class(), class, "{failure:?} → {error:?}");
        assert_eq!(error.is_retryable(), class == "transient", "{error:?}");
        if let Some(detail) = detail {
            match &error {
                DirectoryError::Config { setting, .. } => assert_eq!(setting, detail),
                DirectoryError::TenantAccess { remediation, .. } => {
                    assert!(remediation.contains(detail), "{remediation} lacks {detail}")
                }
                DirectoryError::Transient { retry_after, .. } => {
                    assert_eq!(format!("{retry_after:?}"), detail)
                }
                other => assert_eq!(other.code(), Some(detail)),
            }
        }
    }

    const CONSENT_URL: &str = "https://login.microsoftonline.com/tenant-1/adminconsent?client_id=app-id&redirect_uri=https%3A%2F%2Fsync.example.com%2Fauth%2Foauth2%2Fmicrosoft%2Fcallback";

    #[test]
    fn every_code_of_microsoft_section_5_is_classified() {
        let table: Vec<(ProviderFailure, &str, Option<&str>)> = vec![
            (
                oauth("invalid_grant", 70008, 400),
                "reauth_required",
                Some("AADSTS70008"),
            ),
            (
                oauth("invalid_grant", 700082, 400),
                "reauth_required",
                Some("AADSTS700082"),
            ),
            (
                oauth("invalid_grant", 50173, 400),
                "reauth_required",
                Some("AADSTS50173"),
            ),
            (
                oauth("invalid_grant", 70043, 400),
                "reauth_required",
                Some("AADSTS70043"),
            ),
            (
                oauth("invalid_grant", 50076, 400),
                "reauth_required",
                Some("AADSTS50076"),
            ),
            (
                oauth("interaction_required", 50079, 400),
                "reauth_required",
                Some("AADSTS50079"),
            ),
            (
                oauth("invalid_request", 50011, 400),
                "config",
                Some("MICROSOFT_OAUTH_CALLBACK_URL"),
            ),
            (
                oauth("unauthorized_client", 700016, 400),
                "config",
                Some("MICROSOFT_CLIENT_ID"),
            ),
            (
                oauth("invalid_client", 7000215, 401),
                "config",
                Some("MICROSOFT_CLIENT_SECRET"),
            ),
            (
                oauth("invalid_client", 7000222, 401),
                "config",
                Some("MICROSOFT_CLIENT_SECRET"),
            ),
            (
                oauth("invalid_request", 90002, 400),
                "config",
                Some("MICROSOFT_TENANT_ID"),
            ),
            (
                ProviderFailure {
                    status: Some(401),
                    oauth_error: Some("invalid_client".to_owned()),
                    ..ProviderFailure::default()
                },
                "config",
                Some("MICROSOFT_CLIENT_SECRET"),
            ),
            (
                oauth("invalid_grant", 65001, 400),
                "tenant_access",
                Some(CONSENT_URL),
            ),
            (
                oauth("invalid_grant", 90099, 400),
                "tenant_access",
                Some(CONSENT_URL),
            ),
            (
                graph("Authorization_IdentityNotFound", 401),
                "tenant_access",
                Some(CONSENT_URL),
            ),
            (
                graph("Authorization_RequestDenied", 403),
                "tenant_access",
                Some("GDAP relationship with tenant-1"),
            ),
            (status(429), "transient", None),
            (
                ProviderFailure {
                    status: Some(429),
                    retry_after: Some(Duration::from_secs(7)),
                    ..ProviderFailure::default()
                },
                "transient",
                Some("Some(7s)"),
            ),
            (status(503), "transient", None),
            (status(504), "transient", None),
            (
                ProviderFailure {
                    timed_out: true,
                    ..ProviderFailure::default()
                },
                "transient",
                None,
            ),
            (ProviderFailure::default(), "transient", None),
            (
                oauth("invalid_request", 50196, 400),
                "transient",
                Some("None"),
            ),
            (
                oauth("invalid_request", 90055, 400),
                "transient",
                Some("None"),
            ),
            (graph("syncStateNotFound", 400), "delta_expired", None),
            (graph("SyncStateNotFound", 400), "delta_expired", None),
            (graph("resyncRequired", 400), "delta_expired", None),
            (status(410), "delta_expired", None),
            (status(401), "reauth_required", None),
            (status(404), "invalid", None),
        ];
        for (failure, class, detail) in table {
            check(failure, class, detail);
        }
    }

    #[test]
    fn description_text_never_decides_the_class() {
        // A description that mentions a reauth code must not win over the structured code.
        let mut failure = oauth("invalid_client", 7000215, 401);
        failure.message = "AADSTS70008: looks like reauth".to_owned();
        assert_eq!(classify(&failure, &context()).class(), "config");
    }

    #[test]
    fn cipp_setting_names_are_used_in_cipp_context() {
        let mut context = context();
        context.settings = SettingNames::CIPP;
        let error = classify(&oauth("invalid_client", 7000215, 401), &context);
        assert_eq!(
            error,
            DirectoryError::Config {
                code: "AADSTS7000215".to_owned(),
                message: "AADSTS text".to_owned(),
                setting: "CIPP client_secret".to_owned(),
            }
        );
    }

    #[test]
    fn admin_consent_url_without_redirect() {
        let mut context = context();
        context.redirect_uri = None;
        assert_eq!(
            context.admin_consent_url(),
            "https://login.microsoftonline.com/tenant-1/adminconsent?client_id=app-id"
        );
    }
}

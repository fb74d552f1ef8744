//! Connection work done while a person waits on an API request: validating CIPP credentials
//! before saving them, probing Graph with a fresh token, the authorization-code flow's OAuth
//! client. Every call here makes one attempt bounded by the request timeout, rather than
//! retrying for minutes as a background sync does, and is not marked as background traffic.

use std::sync::Arc;
use std::time::Duration;

use entra_sync_directory::cipp::{CippAuth, CippClient, CippConfig};
use entra_sync_directory::error::{DirectoryError, ErrorContext, SettingNames};
use entra_sync_directory::http::{HttpSettings, ThrottleStats};
use entra_sync_directory::oauth::{AppCredential, OAuthClient, OAuthConfig};
use entra_sync_secrets::AppCredentialResolver;
use entra_sync_store::connection::CippCredentialsRecord;
use secrecy::SecretString;
use url::Url;
use uuid::Uuid;

/// HTTP behaviour for a call a person waits on: `attempts` tries within `timeout` each.
pub fn interactive_http(timeout: Duration, attempts: usize) -> HttpSettings {
    HttpSettings {
        request_timeout: timeout,
        connect_timeout: timeout.min(Duration::from_secs(10)),
        max_attempts: attempts.max(1),
        background: false,
        ..HttpSettings::default()
    }
}

/// True when the failure is the provider's (unreachable, throttling, an unusable answer)
/// rather than the caller's credentials or configuration: the API answers 502 for these.
pub fn is_provider_fault(error: &DirectoryError) -> bool {
    matches!(
        error,
        DirectoryError::Transient { .. } | DirectoryError::Invalid { .. }
    )
}

/// A CIPP client for `credentials` at `base_url`, for one interactive call. Unless
/// `allow_private_endpoints`, a base URL that is or resolves to a non-public address is
/// refused (the outbound policy, `entra_sync_directory::outbound`).
pub fn cipp_client(
    login_base_url: &Url,
    base_url: Url,
    credentials: &CippCredentialsRecord,
    timeout: Duration,
    allow_private_endpoints: bool,
) -> Result<CippClient, DirectoryError> {
    let auth = match credentials {
        CippCredentialsRecord::ApiToken { api_token } => {
            CippAuth::ApiToken(SecretString::from(api_token.clone()))
        }
        CippCredentialsRecord::ApiClient {
            client_id,
            client_secret,
            tenant_id,
        } => CippAuth::ClientCredentials {
            client_id: client_id.clone(),
            client_secret: SecretString::from(client_secret.clone()),
            tenant_id: tenant_id.clone(),
        },
    };
    CippClient::new(
        CippConfig {
            base_url,
            auth,
            login_base_url: login_base_url.clone(),
        },
        HttpSettings {
            allow_private_endpoints,
            ..interactive_http(timeout, 1)
        },
        Arc::new(ThrottleStats::default()),
    )
}

/// Lists the customer tenants CIPP shows for `credentials`: the check made before a CIPP
/// connection is saved, and by "validate". Returns how many there are.
pub async fn cipp_tenants_visible(
    login_base_url: &Url,
    base_url: Url,
    credentials: &CippCredentialsRecord,
    timeout: Duration,
    allow_private_endpoints: bool,
) -> Result<usize, DirectoryError> {
    let client = cipp_client(
        login_base_url,
        base_url,
        credentials,
        timeout,
        allow_private_endpoints,
    )?;
    Ok(client.list_tenants().await?.len())
}

/// Where Microsoft lives and which app registration is used, for interactive direct calls.
#[derive(Clone, Debug)]
pub struct MicrosoftEndpoints {
    pub login_base_url: Url,
    pub graph_base_url: Url,
    /// The app registration's client id, for the admin-consent link in remediation text.
    pub client_id: Option<String>,
    /// `MICROSOFT_OAUTH_CALLBACK_URL`.
    pub redirect_uri: Option<String>,
}

/// Reads `/v1.0/organization` with `access_token`: proves a token works before a connection
/// is saved or when it is validated, and answers the signed-in tenant's id and display name
/// (the partner tenant, for a direct connection) when Graph lists them. Never refreshes (that
/// happens under the connection's lock, in the factory).
pub async fn probe_graph(
    endpoints: &MicrosoftEndpoints,
    access_token: &SecretString,
    timeout: Duration,
    attempts: usize,
) -> Result<Option<(String, String)>, DirectoryError> {
    let context = ErrorContext {
        login_base_url: endpoints.login_base_url.clone(),
        client_id: endpoints.client_id.clone().unwrap_or_default(),
        redirect_uri: endpoints.redirect_uri.clone(),
        tenant_id: None,
        settings: SettingNames::MICROSOFT,
    };
    entra_sync_directory::graph::probe_organization(
        &endpoints.graph_base_url,
        access_token,
        &context,
        interactive_http(timeout, attempts),
        Arc::new(ThrottleStats::default()),
    )
    .await
}

/// The app registration for a PSA tenant (SPEC §2.1: its own secrets, the environment, the
/// application's secrets): its client id and credential, or `None` when none is configured.
pub async fn app_registration(
    resolver: &AppCredentialResolver,
    tenant_id: Uuid,
) -> Result<Option<(String, AppCredential)>, DirectoryError> {
    let app = resolver
        .resolve(tenant_id)
        .await
        .map_err(|error| crate::error::secrets_failure(&error))?;
    Ok(app.map(|app| (app.client_id, app.credential)))
}

/// The OAuth client of the authorization-code flow (connect direct and its callback).
pub fn authorization_client(
    login_base_url: &Url,
    client_id: String,
    credential: AppCredential,
    redirect_uri: String,
    timeout: Duration,
) -> Result<OAuthClient, DirectoryError> {
    OAuthClient::new(
        OAuthConfig {
            login_base_url: login_base_url.clone(),
            client_id,
            credential,
            redirect_uri: Some(redirect_uri),
            settings: SettingNames::MICROSOFT,
        },
        interactive_http(timeout, 2),
        Arc::new(ThrottleStats::default()),
    )
}

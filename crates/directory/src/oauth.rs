//! The Microsoft identity platform client (MICROSOFT.md §1): the authorize URL with PKCE,
//! the authorization-code, refresh-token and client-credentials grants, app credentials
//! (secret, certificate, federated token file), and the per-customer-tenant token cache of the
//! Secure Application Model (SPEC §2.1).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tracing::instrument;
use url::Url;

use crate::error::{classify, DirectoryError, ErrorContext, SettingNames};
use crate::http::{read_json, HttpCore, HttpSettings, ThrottleStats};

/// Scope for a Graph token in a customer tenant (the Secure Application Model, §1).
pub const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";

/// The delegated scopes the MSP consents to (SPEC §2.1). `offline_access` yields the refresh
/// token; `DelegatedAdminRelationship.Read.All` lists GDAP customers (§2);
/// `Directory.Read.All` reads customers' users and domains (§2, §3).
pub const DELEGATED_SCOPES: &str = "offline_access https://graph.microsoft.com/DelegatedAdminRelationship.Read.All https://graph.microsoft.com/Directory.Read.All";

/// Tokens are treated as expired this long before their real expiry (SPEC §2.1).
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the app proves its identity at the token endpoint.
pub enum AppCredential {
    ClientSecret(SecretString),
    /// A certificate registered on the app; requests carry an RS256 client assertion whose
    /// header names the certificate by `x5t#S256`.
    Certificate {
        certificate_pem: String,
        private_key_pem: SecretString,
    },
    /// Workload identity: a file holding a federated token, read again for every request
    /// because the platform rotates it.
    FederatedTokenFile(PathBuf),
}

impl fmt::Debug for AppCredential {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppCredential::ClientSecret(_) => formatter.write_str("ClientSecret(<redacted>)"),
            AppCredential::Certificate { .. } => formatter.write_str("Certificate(<redacted>)"),
            AppCredential::FederatedTokenFile(path) => formatter
                .debug_tuple("FederatedTokenFile")
                .field(path)
                .finish(),
        }
    }
}

/// The app registration as the identity platform knows it.
#[derive(Debug)]
pub struct OAuthConfig {
    /// `MICROSOFT_LOGIN_BASE_URL`, e.g. `https://login.microsoftonline.com`.
    pub login_base_url: Url,
    pub client_id: String,
    pub credential: AppCredential,
    /// `MICROSOFT_OAUTH_CALLBACK_URL`; needed for the authorization-code flow only.
    pub redirect_uri: Option<String>,
    /// Which settings config errors point at.
    pub settings: SettingNames,
}

/// One token response. `Debug` never shows a token.
#[derive(Clone)]
pub struct TokenSet {
    pub access_token: SecretString,
    /// A new refresh token comes with every refresh (§1): the caller must store it before the
    /// old one is used again.
    pub refresh_token: Option<SecretString>,
    pub expires_at: DateTime<Utc>,
    pub scope: String,
}

impl TokenSet {
    /// True when the access token expires within `margin` from now.
    pub fn expires_within(&self, margin: Duration) -> bool {
        let margin = chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::zero());
        self.expires_at - margin <= Utc::now()
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TokenSet")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

/// What a caller keeps server-side while the browser is at Microsoft (SPEC §2.1): the state
/// and the PKCE verifier are secrets; only the URL goes to the browser.
pub struct AuthorizationRequest {
    pub url: Url,
    pub state: SecretString,
    pub code_verifier: SecretString,
}

impl fmt::Debug for AuthorizationRequest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AuthorizationRequest")
            .field("state", &"<redacted>")
            .field("code_verifier", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A PKCE pair (S256).
pub struct Pkce {
    pub code_verifier: SecretString,
    pub code_challenge: String,
}

impl Pkce {
    /// 32 random bytes, base64url: a 43-character verifier, as RFC 7636 recommends.
    pub fn generate() -> Pkce {
        let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
        Pkce {
            code_verifier: SecretString::from(verifier.into_secret()),
            code_challenge: challenge.as_str().to_owned(),
        }
    }
}

/// A fresh `state`: 32 random bytes, base64url without padding (SPEC §2.1).
pub fn new_state() -> SecretString {
    SecretString::from(oauth2::CsrfToken::new_random_len(32).into_secret())
}

/// The identity platform client for one app registration.
#[derive(Debug)]
pub struct OAuthClient {
    http: HttpCore,
    config: OAuthConfig,
}

impl OAuthClient {
    pub fn new(
        config: OAuthConfig,
        settings: HttpSettings,
        stats: Arc<ThrottleStats>,
    ) -> Result<Self, DirectoryError> {
        // The throttle-priority header is a Graph notion (§4); sign-in requests go plain.
        let settings = HttpSettings {
            background: false,
            ..settings
        };
        Ok(OAuthClient {
            http: HttpCore::new(settings, stats)?,
            config,
        })
    }

    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    /// The context for classifying a failure that concerns `tenant`.
    pub fn error_context(&self, tenant: Option<&str>) -> ErrorContext {
        ErrorContext {
            login_base_url: self.config.login_base_url.clone(),
            client_id: self.config.client_id.clone(),
            redirect_uri: self.config.redirect_uri.clone(),
            tenant_id: tenant.map(str::to_owned),
            settings: self.config.settings,
        }
    }

    fn endpoint(&self, tenant: &str, leaf: &str) -> Result<Url, DirectoryError> {
        let base = self.config.login_base_url.as_str().trim_end_matches('/');
        let tenant: String = url::form_urlencoded::byte_serialize(tenant.as_bytes()).collect();
        Url::parse(&format!("{base}/{tenant}/oauth2/v2.0/{leaf}")).map_err(|_| {
            DirectoryError::Config {
                code: "login_base_url".to_owned(),
                message: "the login base URL is not a valid URL".to_owned(),
                setting: "MICROSOFT_LOGIN_BASE_URL".to_owned(),
            }
        })
    }

    fn redirect_uri(&self) -> Result<&str, DirectoryError> {
        self.config
            .redirect_uri
            .as_deref()
            .ok_or_else(|| DirectoryError::Config {
                code: "missing_redirect_uri".to_owned(),
                message: "no OAuth callback URL is configured".to_owned(),
                setting: self.config.settings.callback_url.to_owned(),
            })
    }

    /// `{login}/organizations/oauth2/v2.0/authorize?…` (§1, SPEC §2.1).
    pub fn authorize_url(
        &self,
        state: &SecretString,
        code_challenge: &str,
        login_hint: Option<&str>,
    ) -> Result<Url, DirectoryError> {
        let mut url = self.endpoint("organizations", "authorize")?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("client_id", &self.config.client_id)
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", self.redirect_uri()?)
                .append_pair("response_mode", "query")
                .append_pair("scope", DELEGATED_SCOPES)
                .append_pair("state", state.expose_secret())
                .append_pair("code_challenge", code_challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("prompt", "select_account");
            if let Some(login_hint) = login_hint {
                query.append_pair("login_hint", login_hint);
            }
        }
        Ok(url)
    }

    /// A new state and PKCE pair and the URL that carries them.
    pub fn begin_authorization(
        &self,
        login_hint: Option<&str>,
    ) -> Result<AuthorizationRequest, DirectoryError> {
        let state = new_state();
        let pkce = Pkce::generate();
        let url = self.authorize_url(&state, &pkce.code_challenge, login_hint)?;
        Ok(AuthorizationRequest {
            url,
            state,
            code_verifier: pkce.code_verifier,
        })
    }

    /// The authorization-code grant at the `organizations` endpoint the code came from.
    #[instrument(skip_all)]
    pub async fn exchange_code(
        &self,
        code: &SecretString,
        code_verifier: &SecretString,
    ) -> Result<TokenSet, DirectoryError> {
        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.expose_secret().to_owned()),
            ("redirect_uri", self.redirect_uri()?.to_owned()),
            ("code_verifier", code_verifier.expose_secret().to_owned()),
            ("scope", DELEGATED_SCOPES.to_owned()),
        ];
        self.token_request("organizations", form).await
    }

    /// The refresh-token grant in `tenant`. The answer carries the new refresh token.
    #[instrument(skip_all, fields(entra_tenant_id = %tenant, scope = %scope))]
    pub async fn refresh(
        &self,
        tenant: &str,
        refresh_token: &SecretString,
        scope: &str,
    ) -> Result<TokenSet, DirectoryError> {
        let form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose_secret().to_owned()),
            ("scope", scope.to_owned()),
        ];
        let refreshed = self.token_request(tenant, form).await;
        if refreshed.is_err() {
            metrics::counter!("entra_sync_token_refresh_failures_total").increment(1);
        }
        refreshed
    }

    /// The client-credentials grant in `tenant` for `{resource}/.default`.
    #[instrument(skip_all, fields(entra_tenant_id = %tenant, resource = %resource))]
    pub async fn client_credentials(
        &self,
        tenant: &str,
        resource: &str,
    ) -> Result<TokenSet, DirectoryError> {
        let scope = format!("{}/.default", resource.trim_end_matches('/'));
        let form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("scope", scope),
        ];
        self.token_request(tenant, form).await
    }

    async fn token_request(
        &self,
        tenant: &str,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<TokenSet, DirectoryError> {
        let endpoint = self.endpoint(tenant, "token")?;
        form.push(("client_id", self.config.client_id.clone()));
        form.extend(self.credential_fields(&endpoint).await?);
        let context = self.error_context(Some(tenant));
        let response = self
            .http
            .send(
                None,
                |client| client.post(endpoint.clone()).form(&form),
                |failed| classify(&failed.provider_failure(), &context),
            )
            .await?;
        parse_token_response(&read_json(response).await?)
    }

    async fn credential_fields(
        &self,
        endpoint: &Url,
    ) -> Result<Vec<(&'static str, String)>, DirectoryError> {
        match &self.config.credential {
            AppCredential::ClientSecret(secret) => {
                Ok(vec![("client_secret", secret.expose_secret().to_owned())])
            }
            AppCredential::Certificate {
                certificate_pem,
                private_key_pem,
            } => {
                let assertion = certificate_assertion(
                    &self.config.client_id,
                    endpoint.as_str(),
                    certificate_pem,
                    private_key_pem,
                    self.config.settings,
                )?;
                Ok(vec![
                    ("client_assertion_type", CLIENT_ASSERTION_TYPE.to_owned()),
                    ("client_assertion", assertion),
                ])
            }
            AppCredential::FederatedTokenFile(path) => {
                let token = tokio::fs::read_to_string(path).await.map_err(|error| {
                    DirectoryError::Config {
                        code: "federated_token_file".to_owned(),
                        message: format!(
                            "cannot read the federated token file {}: {}",
                            path.display(),
                            error.kind()
                        ),
                        setting: "AZURE_FEDERATED_TOKEN_FILE".to_owned(),
                    }
                })?;
                Ok(vec![
                    ("client_assertion_type", CLIENT_ASSERTION_TYPE.to_owned()),
                    ("client_assertion", token.trim().to_owned()),
                ])
            }
        }
    }
}

pub(crate) fn parse_token_response(value: &serde_json::Value) -> Result<TokenSet, DirectoryError> {
    let access_token = value
        .get("access_token")
        .and_then(|token| token.as_str())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| DirectoryError::invalid("the token response has no access_token"))?;
    // `expires_in` is a number in v2 answers; some proxies send it as a string.
    let expires_in = match value.get("expires_in") {
        Some(serde_json::Value::Number(number)) => number.as_i64(),
        Some(serde_json::Value::String(text)) => text.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| DirectoryError::invalid("the token response has no expires_in"))?;
    // A lifetime outside what Microsoft issues (minutes to a day) is clamped, so an odd or
    // hostile answer cannot overflow the expiry time (found by the fuzz targets).
    let expires_in = expires_in.clamp(0, 7 * 24 * 3600);
    Ok(TokenSet {
        access_token: SecretString::from(access_token.to_owned()),
        refresh_token: value
            .get("refresh_token")
            .and_then(|token| token.as_str())
            .filter(|token| !token.is_empty())
            .map(|token| SecretString::from(token.to_owned())),
        expires_at: Utc::now() + chrono::Duration::seconds(expires_in),
        scope: value
            .get("scope")
            .and_then(|scope| scope.as_str())
            .unwrap_or_default()
            .to_owned(),
    })
}

/// The DER bytes of the first certificate in a PEM text.
fn certificate_der(certificate_pem: &str) -> Option<Vec<u8>> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = certificate_pem.find(begin)? + begin.len();
    let end = certificate_pem[start..].find("-----END CERTIFICATE-----")? + start;
    let body: String = certificate_pem[start..end]
        .chars()
        .filter(|character| !character.is_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}

#[derive(serde::Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

/// A client assertion for certificate credentials: RS256, `x5t#S256` = base64url(SHA-256 of
/// the certificate's DER), audience = the token endpoint, valid ten minutes.
fn certificate_assertion(
    client_id: &str,
    audience: &str,
    certificate_pem: &str,
    private_key_pem: &SecretString,
    settings: SettingNames,
) -> Result<String, DirectoryError> {
    let certificate_error = |message: &str| DirectoryError::Config {
        code: "certificate".to_owned(),
        message: message.to_owned(),
        setting: format!("{} certificate", settings.client_id),
    };
    let der = certificate_der(certificate_pem)
        .ok_or_else(|| certificate_error("the certificate is not a PEM certificate"))?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&der)));
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes())
        .map_err(|_| certificate_error("the private key is not an RSA key in PEM form"))?;
    let now = Utc::now().timestamp();
    let claims = AssertionClaims {
        aud: audience,
        iss: client_id,
        sub: client_id,
        jti: uuid::Uuid::new_v4().to_string(),
        nbf: now,
        iat: now,
        exp: now + 600,
    };
    jsonwebtoken::encode(&header, &claims, &key)
        .map_err(|_| certificate_error("the client assertion could not be signed"))
}

/// Where customer-tenant tokens get the MSP's refresh token, and where rotated ones go.
/// Persistence and the cross-process, per-connection lock are the store's job (SPEC §2.1).
#[async_trait]
pub trait RefreshTokenSource: Send + Sync {
    /// The connection's current refresh token.
    async fn current_refresh_token(&self) -> Result<SecretString, DirectoryError>;
    /// The refresh token that replaced the one just redeemed (§1: every refresh returns a new
    /// one). Called before the new token can be used again; the access token that came with
    /// it belongs to a customer tenant, so it is not passed on.
    async fn store_rotated(&self, new_refresh_token: SecretString) -> Result<(), DirectoryError>;
    /// The redemption that followed `current_refresh_token` failed or returned no new token:
    /// give up whatever `current_refresh_token` holds (a store-backed source holds a lock).
    async fn abandon(&self) {}
}

/// The longest a refresh-token redemption made while a [`RefreshTokenSource`] holds its lock may
/// take (a single attempt). The store's lease frees itself after 120 s idle; this stays far
/// inside that, so a rotated refresh token is always stored before the lock can lapse.
pub const LEASED_REFRESH_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls [`RefreshTokenSource::abandon`] when dropped armed: a cancelled redemption releases
/// the lease at once (on a spawned task, since dropping cannot wait).
struct AbandonOnDrop(Option<Arc<dyn RefreshTokenSource>>);

impl AbandonOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(source) = self.0.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { source.abandon().await });
            }
        }
    }
}

type TokenSlot = Arc<tokio::sync::Mutex<Option<TokenSet>>>;

/// Access tokens per (tenant, scope), minted by the refresh-token grant in that tenant, kept
/// until [`EXPIRY_MARGIN`] before expiry. Concurrent callers for one key wait for a single
/// request (single flight). Redemptions for different keys are serialized in this process,
/// because they all spend the one refresh token of the connection and each returns its
/// successor (§1).
pub struct CustomerTokenCache {
    oauth: Arc<OAuthClient>,
    refresh_tokens: Arc<dyn RefreshTokenSource>,
    slots: Mutex<HashMap<(String, String), TokenSlot>>,
    rotation: tokio::sync::Mutex<()>,
}

impl fmt::Debug for CustomerTokenCache {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CustomerTokenCache")
            .finish_non_exhaustive()
    }
}

impl CustomerTokenCache {
    pub fn new(oauth: Arc<OAuthClient>, refresh_tokens: Arc<dyn RefreshTokenSource>) -> Self {
        CustomerTokenCache {
            oauth,
            refresh_tokens,
            slots: Mutex::new(HashMap::new()),
            rotation: tokio::sync::Mutex::new(()),
        }
    }

    pub fn oauth(&self) -> &Arc<OAuthClient> {
        &self.oauth
    }

    fn slot(&self, tenant: &str, scope: &str) -> Result<TokenSlot, DirectoryError> {
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| DirectoryError::invalid("the token cache lock is poisoned"))?;
        Ok(slots
            .entry((tenant.to_owned(), scope.to_owned()))
            .or_default()
            .clone())
    }

    /// An access token for `tenant` and `scope`, from the cache or one refresh-token grant.
    #[instrument(skip_all, fields(entra_tenant_id = %tenant))]
    pub async fn access_token(
        &self,
        tenant: &str,
        scope: &str,
    ) -> Result<SecretString, DirectoryError> {
        let slot = self.slot(tenant, scope)?;
        let mut cached = slot.lock().await;
        if let Some(token_set) = cached.as_ref() {
            if !token_set.expires_within(EXPIRY_MARGIN) {
                return Ok(token_set.access_token.clone());
            }
        }
        let redeemed = {
            let _rotation = self.rotation.lock().await;
            let refresh_token = self.refresh_tokens.current_refresh_token().await?;
            // From here the source may hold a lock (a store lease): if this future is dropped
            // (the activity was cancelled), the guard gives it up at once instead of leaving it
            // until the database's idle timeout.
            let guard = AbandonOnDrop(Some(self.refresh_tokens.clone()));
            // One attempt with a deadline well inside the lease's own timeout.
            let redeemed = tokio::time::timeout(
                LEASED_REFRESH_TIMEOUT,
                self.oauth.refresh(tenant, &refresh_token, scope),
            )
            .await
            .unwrap_or_else(|_| {
                Err(DirectoryError::Transient {
                    code: "token_refresh_timeout".to_owned(),
                    message: "the identity platform did not answer the token refresh in time"
                        .to_owned(),
                    retry_after: None,
                })
            });
            guard.disarm();
            if let Ok(TokenSet {
                refresh_token: Some(new_refresh_token),
                ..
            }) = &redeemed
            {
                self.refresh_tokens
                    .store_rotated(new_refresh_token.clone())
                    .await?;
            } else {
                self.refresh_tokens.abandon().await;
            }
            redeemed
        };
        let mut token_set = match redeemed {
            Ok(token_set) => token_set,
            Err(error) => {
                drop(cached);
                self.forget_on(tenant, &error);
                return Err(error);
            }
        };
        // The cache keeps access tokens only; the refresh token lives in the store.
        token_set.refresh_token = None;
        let access_token = token_set.access_token.clone();
        *cached = Some(token_set);
        Ok(access_token)
    }

    /// Drops every cached token of `tenant`, so a consent or role fix needs no restart.
    pub fn invalidate(&self, tenant: &str) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.retain(|(slot_tenant, _), _| slot_tenant != tenant);
        }
    }

    /// Drops the tenant's tokens when `error` says they are no good (tenant access, or a
    /// token the provider no longer accepts).
    pub fn forget_on(&self, tenant: &str, error: &DirectoryError) {
        if matches!(
            error,
            DirectoryError::TenantAccess { .. } | DirectoryError::ReauthRequired { .. }
        ) {
            self.invalidate(tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(credential: AppCredential) -> OAuthClient {
        OAuthClient::new(
            OAuthConfig {
                login_base_url: Url::parse("https://login.example.test/base").expect("url"),
                client_id: "app-id".to_owned(),
                credential,
                redirect_uri: Some(
                    "https://sync.example.com/auth/oauth2/microsoft/callback".to_owned(),
                ),
                settings: SettingNames::MICROSOFT,
            },
            HttpSettings::default(),
            Arc::default(),
        )
        .expect("client")
    }

    #[test]
    fn authorize_url_carries_every_parameter() {
        let client = client(AppCredential::ClientSecret(SecretString::from(
            "s".to_owned(),
        )));
        let request = client.begin_authorization(None).expect("url");
        assert_eq!(
            request.url.path(),
            "/base/organizations/oauth2/v2.0/authorize"
        );
        let query: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
        assert_eq!(query["client_id"], "app-id");
        assert_eq!(query["response_type"], "code");
        assert_eq!(query["response_mode"], "query");
        assert_eq!(query["prompt"], "select_account");
        assert_eq!(query["scope"], DELEGATED_SCOPES);
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(
            query["redirect_uri"],
            "https://sync.example.com/auth/oauth2/microsoft/callback"
        );
        assert_eq!(query["state"], request.state.expose_secret());
        assert!(request.state.expose_secret().len() >= 43);
        let expected_challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(
            request.code_verifier.expose_secret().as_bytes(),
        ));
        assert_eq!(query["code_challenge"], expected_challenge);
    }

    #[test]
    fn debug_output_redacts_tokens() {
        let token_set = TokenSet {
            access_token: SecretString::from("access-secret".to_owned()),
            refresh_token: Some(SecretString::from("refresh-secret".to_owned())),
            expires_at: Utc::now(),
            scope: "x".to_owned(),
        };
        let text = format!("{token_set:?}");
        assert!(
            !text.contains("access-secret") && !text.contains("refresh-secret"),
            "{text}"
        );
        let credential = AppCredential::ClientSecret(SecretString::from("hunter2".to_owned()));
        assert!(!format!("{credential:?}").contains("hunter2"));
    }

    /// A throwaway key pair and self-signed certificate made for this test only.
    const TEST_CERTIFICATE: &str = include_str!("../tests/fixtures/test-app-cert.pem");
    const TEST_PRIVATE_KEY: &str = include_str!("../tests/fixtures/test-app-key.pem");
    const TEST_PUBLIC_KEY: &str = include_str!("../tests/fixtures/test-app-public.pem");

    #[test]
    fn certificate_assertion_is_signed_rs256_with_the_thumbprint_header() {
        let audience = "https://login.example.test/tenant/oauth2/v2.0/token";
        let assertion = certificate_assertion(
            "app-id",
            audience,
            TEST_CERTIFICATE,
            &SecretString::from(TEST_PRIVATE_KEY.to_owned()),
            SettingNames::MICROSOFT,
        )
        .expect("assertion");
        let header = jsonwebtoken::decode_header(&assertion).expect("header");
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
        let der = certificate_der(TEST_CERTIFICATE).expect("der");
        assert_eq!(
            header.x5t_s256,
            Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&der)))
        );
        let raw_header = assertion.split('.').next().expect("segment");
        let raw_header = URL_SAFE_NO_PAD.decode(raw_header).expect("base64");
        assert!(String::from_utf8_lossy(&raw_header).contains("\"x5t#S256\""));
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&["app-id"]);
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY.as_bytes()).expect("key");
        let claims = jsonwebtoken::decode::<serde_json::Value>(&assertion, &key, &validation)
            .expect("a valid signature")
            .claims;
        assert_eq!(claims["sub"], "app-id");
        assert!(claims["jti"].as_str().is_some_and(|jti| !jti.is_empty()));
        let broken = certificate_assertion(
            "app-id",
            audience,
            "not a certificate",
            &SecretString::from(TEST_PRIVATE_KEY.to_owned()),
            SettingNames::MICROSOFT,
        );
        assert_eq!(broken.expect_err("an error").class(), "config");
    }

    #[test]
    fn token_response_is_parsed() {
        let value = serde_json::json!({"token_type":"Bearer","scope":"a b","expires_in":3599,"access_token":"at","refresh_token":"rt"});
        let token_set = parse_token_response(&value).expect("tokens");
        assert_eq!(token_set.access_token.expose_secret(), "at");
        assert_eq!(
            token_set
                .refresh_token
                .as_ref()
                .map(|token| token.expose_secret()),
            Some("rt")
        );
        assert!(!token_set.expires_within(EXPIRY_MARGIN));
        let short = serde_json::json!({"access_token":"at","expires_in":"120"});
        assert!(parse_token_response(&short)
            .expect("tokens")
            .expires_within(EXPIRY_MARGIN));
        assert!(parse_token_response(&serde_json::json!({"expires_in":1})).is_err());
    }
}

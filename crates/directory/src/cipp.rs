//! The CIPP API client (MICROSOFT.md §5a): tenants from `ListTenants`, users from
//! `ListGraphRequest` page by page (falling back to `ListUsers`), and CIPP's own error
//! shapes classified into [`DirectoryError`].

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tracing::instrument;
use url::Url;

use crate::error::{classify, DirectoryError, ErrorContext, ProviderFailure, SettingNames};
use crate::http::{
    read_json, short_description, FailedResponse, HttpCore, HttpSettings, ThrottleStats,
};
use crate::oauth::{AppCredential, OAuthClient, OAuthConfig, TokenSet, EXPIRY_MARGIN};
use crate::source::{
    checked_group_id, member_ids, DirectorySource, DiscoveredTenant, TenantDomain, UsersCursor,
    UsersPage, MAX_GROUP_MEMBER_PAGES,
};
use crate::users::{parse_entry, USER_SELECT};

/// How the service authenticates to CIPP (SPEC §2.2).
pub enum CippAuth {
    /// A bearer token issued beforehand.
    ApiToken(SecretString),
    /// A CIPP API client: tokens for `api://{client_id}/.default` are minted by client
    /// credentials in the MSP's tenant and refreshed before they expire.
    ClientCredentials {
        client_id: String,
        client_secret: SecretString,
        tenant_id: String,
    },
}

impl std::fmt::Debug for CippAuth {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CippAuth::ApiToken(_) => formatter.write_str("ApiToken(<redacted>)"),
            CippAuth::ClientCredentials {
                client_id,
                tenant_id,
                ..
            } => formatter
                .debug_struct("ClientCredentials")
                .field("client_id", client_id)
                .field("tenant_id", tenant_id)
                .finish_non_exhaustive(),
        }
    }
}

/// A CIPP connection.
#[derive(Debug)]
pub struct CippConfig {
    /// The CIPP instance, e.g. `https://cipp.example.com` (API calls go to `{base}/api/…`).
    pub base_url: Url,
    pub auth: CippAuth,
    /// `MICROSOFT_LOGIN_BASE_URL`, where API-client tokens are minted.
    pub login_base_url: Url,
}

enum Credentials {
    ApiToken(SecretString),
    Minted {
        oauth: Box<OAuthClient>,
        client_id: String,
        tenant_id: String,
    },
}

/// The CIPP client. Cheap to share behind an `Arc`.
pub struct CippClient {
    http: HttpCore,
    base_url: String,
    login_base_url: Url,
    credentials: Credentials,
    minted: tokio::sync::Mutex<Option<TokenSet>>,
}

impl std::fmt::Debug for CippClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CippClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// `ListGraphRequest` answers with these statuses make the client try `ListUsers` (§5a).
const FALLBACK_STATUSES: [u16; 3] = [403, 404, 503];

impl CippClient {
    pub fn new(
        config: CippConfig,
        settings: HttpSettings,
        stats: Arc<ThrottleStats>,
    ) -> Result<Self, DirectoryError> {
        let credentials = match config.auth {
            CippAuth::ApiToken(token) => Credentials::ApiToken(token),
            CippAuth::ClientCredentials {
                client_id,
                client_secret,
                tenant_id,
            } => {
                let oauth = OAuthClient::new(
                    OAuthConfig {
                        login_base_url: config.login_base_url.clone(),
                        client_id: client_id.clone(),
                        credential: AppCredential::ClientSecret(client_secret),
                        redirect_uri: None,
                        settings: SettingNames::CIPP,
                    },
                    settings.clone(),
                    stats.clone(),
                )?;
                Credentials::Minted {
                    oauth: Box::new(oauth),
                    client_id,
                    tenant_id,
                }
            }
        };
        if !settings.allow_private_endpoints {
            crate::outbound::check_url(&config.base_url).map_err(|refusal| {
                DirectoryError::Config {
                    code: "private_endpoint".to_owned(),
                    message: refusal.to_string(),
                    setting: "ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS".to_owned(),
                }
            })?;
        }
        Ok(CippClient {
            http: HttpCore::for_configured_endpoint(settings, stats)?,
            base_url: config.base_url.as_str().trim_end_matches('/').to_owned(),
            login_base_url: config.login_base_url,
            credentials,
            minted: tokio::sync::Mutex::new(None),
        })
    }

    /// Proves the credentials by listing tenants (SPEC §2.2: connect validates first).
    #[instrument(skip_all)]
    pub async fn validate(&self) -> Result<(), DirectoryError> {
        self.list_tenants().await.map(|_| ())
    }

    async fn bearer(&self) -> Result<SecretString, DirectoryError> {
        match &self.credentials {
            Credentials::ApiToken(token) => Ok(token.clone()),
            Credentials::Minted {
                oauth,
                client_id,
                tenant_id,
            } => {
                // One lock: concurrent callers wait for a single mint.
                let mut minted = self.minted.lock().await;
                if let Some(token_set) = minted.as_ref() {
                    if !token_set.expires_within(EXPIRY_MARGIN) {
                        return Ok(token_set.access_token.clone());
                    }
                }
                let token_set = oauth
                    .client_credentials(tenant_id, &format!("api://{client_id}"))
                    .await?;
                let access_token = token_set.access_token.clone();
                *minted = Some(token_set);
                Ok(access_token)
            }
        }
    }

    async fn forget_minted(&self) {
        *self.minted.lock().await = None;
    }

    fn endpoint(&self, function: &str) -> Result<Url, DirectoryError> {
        Url::parse(&format!("{}/api/{function}", self.base_url)).map_err(|_| {
            DirectoryError::Config {
                code: "cipp_base_url".to_owned(),
                message: "the CIPP base URL is not a valid URL".to_owned(),
                setting: "CIPP base_url".to_owned(),
            }
        })
    }

    fn error_context(&self, tenant: Option<&str>) -> ErrorContext {
        let client_id = match &self.credentials {
            Credentials::Minted { client_id, .. } => client_id.clone(),
            Credentials::ApiToken(_) => String::new(),
        };
        ErrorContext {
            login_base_url: self.login_base_url.clone(),
            client_id,
            redirect_uri: None,
            tenant_id: tenant.map(str::to_owned),
            settings: SettingNames::CIPP,
        }
    }

    /// GET `url` with the bearer. A 401 with a minted token (expired or revoked early) drops
    /// it and tries once more with a new one; a rejected pre-issued token cannot be renewed.
    async fn get(
        &self,
        url: Url,
        tenant: Option<&str>,
        last_status: &AtomicU16,
    ) -> Result<Value, DirectoryError> {
        let context = self.error_context(tenant);
        let api_token = matches!(self.credentials, Credentials::ApiToken(_));
        let mut minted_again = false;
        loop {
            let bearer = self.bearer().await?;
            last_status.store(0, Ordering::Relaxed);
            let result = self
                .http
                .send(
                    tenant,
                    |client| client.get(url.clone()).bearer_auth(bearer.expose_secret()),
                    |failed| {
                        last_status.store(failed.status, Ordering::Relaxed);
                        classify_cipp(failed, &context, api_token)
                    },
                )
                .await;
            match result {
                Ok(response) => return read_json(response).await,
                Err(error) if last_status.load(Ordering::Relaxed) == 401 && !api_token => {
                    self.forget_minted().await;
                    if minted_again {
                        return Err(error);
                    }
                    minted_again = true;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Every customer tenant CIPP manages (§5a `ListTenants`).
    #[instrument(skip_all)]
    pub async fn list_tenants(&self) -> Result<Vec<DiscoveredTenant>, DirectoryError> {
        let url = self.endpoint("ListTenants")?;
        let body = self.get(url, None, &AtomicU16::new(0)).await?;
        let mut tenants = parse_tenants(&body, &self.error_context(None))?;
        // ListTenants rows carry only the default and initial domain: CIPP-API's
        // `Get-Tenants` (Modules/CIPPCore/Public/GraphHelper/Get-Tenants.ps1) reads the
        // customer's `beta/domains` but stores just `defaultDomainName`/`initialDomainName`
        // (its `domains` field is left empty). Every verified domain comes from Graph's
        // `domains` through CIPP's Graph proxy instead (`ListGraphRequest?Endpoint=domains`,
        // which CIPP-API's `Get-GraphRequestList` sends as `{Version}/{Endpoint}` in the
        // tenantFilter's tenant). A tenant whose domains cannot be read keeps the two it has.
        for tenant in &mut tenants {
            match self.verified_domains(&tenant.entra_tenant_id).await {
                Ok(domains) => merge_domains(&mut tenant.domains, domains),
                Err(error) => tracing::warn!(
                    tenant_id = %tenant.entra_tenant_id,
                    class = error.class(),
                    "cannot read the customer's verified domains through CIPP"
                ),
            }
        }
        Ok(tenants)
    }

    /// The customer's verified domains: Graph `GET /v1.0/domains` (MICROSOFT.md §1: `value[]`
    /// of `{id, isDefault, isInitial, isVerified}`) relayed by `ListGraphRequest`.
    async fn verified_domains(&self, tenant: &str) -> Result<Vec<TenantDomain>, DirectoryError> {
        let mut url = self.endpoint("ListGraphRequest")?;
        url.query_pairs_mut()
            .append_pair("Endpoint", "domains")
            .append_pair("tenantFilter", tenant)
            .append_pair("Version", "v1.0")
            .append_pair("$select", "id,isDefault,isInitial,isVerified");
        let body = self.get(url, Some(tenant), &AtomicU16::new(0)).await?;
        let (results, _) = graph_request_results(&body)?;
        Ok(results
            .iter()
            .filter(|domain| domain.get("isVerified").and_then(Value::as_bool) == Some(true))
            .filter_map(|domain| {
                let name = domain.get("id")?.as_str()?.trim().to_ascii_lowercase();
                (!name.is_empty()).then(|| TenantDomain {
                    name,
                    is_default: domain.get("isDefault").and_then(Value::as_bool) == Some(true),
                    is_initial: domain.get("isInitial").and_then(Value::as_bool) == Some(true),
                })
            })
            .collect())
    }

    /// One page of a tenant's users: `ListGraphRequest` with manual pagination (never
    /// `$count`, §5a), or `ListUsers` in one answer when `ListGraphRequest` is unavailable.
    /// `cursor` is the previous page's `next_cursor` (CIPP's `Metadata.nextLink`).
    #[instrument(skip_all, fields(entra_tenant_id = %tenant, continued = cursor.is_some()))]
    pub async fn users_page(
        &self,
        tenant: &str,
        cursor: Option<String>,
    ) -> Result<UsersPage, DirectoryError> {
        let mut url = self.endpoint("ListGraphRequest")?;
        url.query_pairs_mut()
            .append_pair("Endpoint", "users")
            .append_pair("tenantFilter", tenant)
            .append_pair("Version", "v1.0")
            .append_pair("manualPagination", "true")
            .append_pair("$top", "999")
            .append_pair("$select", USER_SELECT);
        if let Some(next_link) = &cursor {
            url.query_pairs_mut().append_pair("nextLink", next_link);
        }
        let last_status = AtomicU16::new(0);
        match self.get(url, Some(tenant), &last_status).await {
            Ok(body) => parse_graph_request_page(&body),
            Err(error) if FALLBACK_STATUSES.contains(&last_status.load(Ordering::Relaxed)) => {
                tracing::info!(
                    class = error.class(),
                    "ListGraphRequest unavailable; using ListUsers"
                );
                self.list_users(tenant).await
            }
            Err(error) => Err(error),
        }
    }

    /// Every user that is a direct or nested member of a group, through `ListGraphRequest`
    /// on Graph's `groups/{id}/transitiveMembers/microsoft.graph.user` (MICROSOFT.md §5a;
    /// https://learn.microsoft.com/en-us/graph/api/group-list-transitivemembers), paged by
    /// `Metadata.nextLink` like the users listing. There is no `ListUsers`-style fallback.
    #[instrument(skip_all, fields(entra_tenant_id = %tenant))]
    pub async fn group_member_ids(
        &self,
        tenant: &str,
        group_id: &str,
    ) -> Result<Vec<String>, DirectoryError> {
        let group_id = checked_group_id(group_id)?;
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_GROUP_MEMBER_PAGES {
            let mut url = self.endpoint("ListGraphRequest")?;
            url.query_pairs_mut()
                .append_pair(
                    "Endpoint",
                    &format!("groups/{group_id}/transitiveMembers/microsoft.graph.user"),
                )
                .append_pair("tenantFilter", tenant)
                .append_pair("Version", "v1.0")
                .append_pair("manualPagination", "true")
                .append_pair("$select", "id")
                .append_pair("$top", "999");
            if let Some(next_link) = &cursor {
                url.query_pairs_mut().append_pair("nextLink", next_link);
            }
            let body = self.get(url, Some(tenant), &AtomicU16::new(0)).await?;
            let (results, next_cursor) = graph_request_results(&body)?;
            ids.extend(member_ids(results));
            match next_cursor {
                Some(next_link) => cursor = Some(next_link),
                None => return Ok(ids),
            }
        }
        Err(DirectoryError::invalid(
            "a filter group has more members than the sync reads",
        ))
    }

    /// `ListUsers?tenantFilter=`: every user in one answer (§5a), so a single last page.
    async fn list_users(&self, tenant: &str) -> Result<UsersPage, DirectoryError> {
        let mut url = self.endpoint("ListUsers")?;
        url.query_pairs_mut().append_pair("tenantFilter", tenant);
        let body = self.get(url, Some(tenant), &AtomicU16::new(0)).await?;
        let users = body
            .as_array()
            .ok_or_else(|| DirectoryError::invalid("ListUsers did not answer with an array"))?;
        Ok(UsersPage {
            entries: users.iter().map(parse_entry).collect(),
            next_cursor: None,
            delta_link: None,
        })
    }
}

#[async_trait]
impl DirectorySource for CippClient {
    async fn list_tenants(&self) -> Result<Vec<DiscoveredTenant>, DirectoryError> {
        CippClient::list_tenants(self).await
    }

    /// CIPP passes no delta links through (§5a): every start is a full enumeration.
    async fn users_page(
        &self,
        tenant: &str,
        cursor: UsersCursor,
    ) -> Result<UsersPage, DirectoryError> {
        let cursor = match cursor {
            UsersCursor::Start { .. } => None,
            UsersCursor::Next(next_link) => Some(next_link),
        };
        CippClient::users_page(self, tenant, cursor).await
    }

    async fn group_member_ids(
        &self,
        tenant: &str,
        group_id: &str,
    ) -> Result<Vec<String>, DirectoryError> {
        CippClient::group_member_ids(self, tenant, group_id).await
    }
}

pub(crate) fn parse_graph_request_page(body: &Value) -> Result<UsersPage, DirectoryError> {
    let (results, next_cursor) = graph_request_results(body)?;
    Ok(UsersPage {
        entries: results.iter().map(parse_entry).collect(),
        next_cursor,
        delta_link: None,
    })
}

/// A `ListGraphRequest` answer with manual pagination: its `Results` and `Metadata.nextLink`.
fn graph_request_results(body: &Value) -> Result<(&[Value], Option<String>), DirectoryError> {
    let metadata = body.get("Metadata");
    if metadata
        .and_then(|metadata| metadata.get("Queued"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        // Only `$count` makes CIPP queue (§5a), and it is never sent; say so if it happens.
        return Err(DirectoryError::Transient {
            code: "cipp_queued".to_owned(),
            message: "CIPP queued the request instead of answering it".to_owned(),
            retry_after: None,
        });
    }
    // A 200 without its array (`{}`, `{"Results":null}`, a proxy's page) is not an empty
    // list: taking it as the end of the enumeration would inactivate every user not read yet.
    let results = match body.get("Results") {
        Some(Value::Array(results)) => results.as_slice(),
        _ => {
            return Err(DirectoryError::invalid(
                "ListGraphRequest answered without a Results array",
            ))
        }
    };
    let next_cursor = metadata
        .and_then(|metadata| metadata.get("nextLink"))
        .and_then(Value::as_str)
        .filter(|next_link| !next_link.is_empty())
        .map(str::to_owned);
    Ok((results, next_cursor))
}

pub(crate) fn parse_tenants(
    body: &Value,
    context: &ErrorContext,
) -> Result<Vec<DiscoveredTenant>, DirectoryError> {
    let rows = body
        .as_array()
        .ok_or_else(|| DirectoryError::invalid("ListTenants did not answer with an array"))?;
    let mut tenants: Vec<DiscoveredTenant> = Vec::with_capacity(rows.len());
    for row in rows {
        let text = |field: &str| {
            row.get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim()
        };
        let customer_id = text("customerId");
        if customer_id.eq_ignore_ascii_case("AllTenants") {
            continue;
        }
        if customer_id.is_empty() {
            // §5a: a failed listing is a 200 with one row whose customerId is empty.
            return Err(tenant_list_failure(text("displayName"), context));
        }
        if tenants
            .iter()
            .any(|tenant| tenant.entra_tenant_id.eq_ignore_ascii_case(customer_id))
        {
            continue;
        }
        let default_domain = text("defaultDomainName").to_ascii_lowercase();
        let initial_domain = text("initialDomainName").to_ascii_lowercase();
        let mut domains = Vec::new();
        if !default_domain.is_empty() {
            domains.push(TenantDomain {
                name: default_domain.clone(),
                is_default: true,
                is_initial: default_domain == initial_domain,
            });
        }
        if !initial_domain.is_empty() && initial_domain != default_domain {
            domains.push(TenantDomain {
                name: initial_domain,
                is_default: false,
                is_initial: true,
            });
        }
        let display_name = match text("displayName") {
            "" => default_domain,
            name => name.to_owned(),
        };
        tenants.push(DiscoveredTenant {
            entra_tenant_id: customer_id.to_owned(),
            display_name,
            domains,
            domains_error: None,
        });
    }
    Ok(tenants)
}

/// Adds the verified domains Graph listed to the ones ListTenants gave, each name once; Graph's
/// flags win for a name both have.
fn merge_domains(domains: &mut Vec<TenantDomain>, verified: Vec<TenantDomain>) {
    for domain in verified {
        match domains.iter_mut().find(|known| known.name == domain.name) {
            Some(known) => *known = domain,
            None => domains.push(domain),
        }
    }
}

/// The code of CIPP's "Failed to retrieve tenants" error row when it carries no Microsoft error
/// code (MICROSOFT.md §5a; CIPP's usual text is "Failed to retrieve tenants. Perform a
/// permission check."): CIPP itself cannot list the partner's tenants, which no retry fixes.
pub const CIPP_PERMISSION_CHECK: &str = "cipp_permission_check";

/// CIPP's error row carries only text. The AADSTS numbers in it are Microsoft's structured
/// codes, so they are used; otherwise it is a configuration failure of the CIPP instance or
/// its API client (`config`, code [`CIPP_PERMISSION_CHECK`]): retrying would only keep the
/// run waiting while nothing changes.
fn tenant_list_failure(display_name: &str, context: &ErrorContext) -> DirectoryError {
    let message = short_description(display_name);
    let failure = ProviderFailure {
        status: Some(200),
        error_codes: aadsts_codes(display_name),
        message: message.clone(),
        ..ProviderFailure::default()
    };
    if !failure.error_codes.is_empty() {
        let classified = classify(&failure, context);
        if !matches!(classified, DirectoryError::Invalid { .. }) {
            return classified;
        }
    }
    DirectoryError::Config {
        code: CIPP_PERMISSION_CHECK.to_owned(),
        message: if message.is_empty() {
            "CIPP could not list tenants".to_owned()
        } else {
            message
        },
        setting: "the CIPP API client's role and CIPP's permission check".to_owned(),
    }
}

/// `AADSTS` followed by digits, anywhere in a text.
fn aadsts_codes(text: &str) -> Vec<u64> {
    text.match_indices("AADSTS")
        .filter_map(|(index, prefix)| {
            let digits: String = text[index + prefix.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// Graph error codes that CIPP's "Graph Error: …" text can carry.
const GRAPH_CODES_IN_TEXT: [&str; 4] = [
    "Authorization_IdentityNotFound",
    "Authorization_RequestDenied",
    "syncStateNotFound",
    "resyncRequired",
];

/// CIPP's failures (§5a): a platform 401, a 403 with plain text (the API client's role or
/// IP range), a 503 for a disabled feature, a 400 "Graph Error: …" for a failed Graph call in
/// the customer tenant, and Graph-like throttling.
fn classify_cipp(
    failed: &FailedResponse,
    context: &ErrorContext,
    api_token: bool,
) -> DirectoryError {
    // CIPP answers plain text, or a JSON string ("Graph Error: …").
    let text = match serde_json::from_str::<Value>(&failed.body) {
        Ok(Value::String(text)) => short_description(&text),
        _ => short_description(&failed.body),
    };
    let message = |fallback: &str| {
        if text.is_empty() {
            fallback.to_owned()
        } else {
            text.clone()
        }
    };
    match failed.status {
        401 if api_token => DirectoryError::ReauthRequired {
            code: "cipp_unauthorized".to_owned(),
            message: "CIPP rejected the API token; reconnect with a new one".to_owned(),
        },
        401 => DirectoryError::Config {
            code: "cipp_unauthorized".to_owned(),
            message: "CIPP rejected the API client's token".to_owned(),
            setting: context.settings.client_id.to_owned(),
        },
        403 => DirectoryError::Config {
            code: "cipp_forbidden".to_owned(),
            message: message("CIPP refused the request"),
            setting: "CIPP API client role and allowed IP ranges".to_owned(),
        },
        503 if failed.body.contains("This feature has been disabled") => DirectoryError::Config {
            code: "cipp_feature_disabled".to_owned(),
            message: message("the CIPP feature is disabled"),
            setting: "CIPP feature settings".to_owned(),
        },
        400 if failed.body.contains("Graph Error") => {
            let failure = ProviderFailure {
                status: Some(400),
                error_codes: aadsts_codes(&failed.body),
                graph_code: GRAPH_CODES_IN_TEXT
                    .iter()
                    .find(|code| failed.body.contains(**code))
                    .map(|code| (*code).to_owned()),
                message: text.clone(),
                ..ProviderFailure::default()
            };
            // A per-tenant Graph failure inside CIPP is fixed in CIPP (its GDAP roles, or a CPP
            // refresh for its SAM app), whatever Microsoft code it carries; only CIPP's own
            // expired grant (reauth) and throttling keep their class.
            let remediation = format!(
                "check in CIPP that it can read {} (its GDAP relationship and roles, and CIPP's SAM app consent in that tenant; a CPV refresh for the tenant grants it)",
                context.tenant_id.as_deref().unwrap_or("the tenant")
            );
            match classify(&failure, context) {
                DirectoryError::TenantAccess { code, message, .. }
                | DirectoryError::Config { code, message, .. } => DirectoryError::TenantAccess {
                    code,
                    message,
                    remediation,
                },
                DirectoryError::Invalid { .. } => DirectoryError::TenantAccess {
                    code: "cipp_graph_error".to_owned(),
                    message: message("CIPP's Graph call failed"),
                    remediation,
                },
                classified => classified,
            }
        }
        _ => {
            let mut failure = failed.provider_failure();
            if failure.message.is_empty() {
                failure.message = text.clone();
            }
            classify(&failure, context)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;
    use serde_json::json;

    fn context() -> ErrorContext {
        ErrorContext {
            login_base_url: Url::parse("https://login.microsoftonline.com").expect("url"),
            client_id: "cipp-app".to_owned(),
            redirect_uri: None,
            tenant_id: Some("t1".to_owned()),
            settings: SettingNames::CIPP,
        }
    }

    fn failed(status: u16, body: &str) -> FailedResponse {
        FailedResponse {
            status,
            headers: HeaderMap::new(),
            body: body.to_owned(),
        }
    }

    #[test]
    fn cipp_failures_are_classified() {
        let table = [
            (failed(401, ""), true, "reauth_required"),
            (failed(401, ""), false, "config"),
            (
                failed(403, "Access denied: your IP range is not allowed"),
                false,
                "config",
            ),
            (
                failed(503, "This feature has been disabled"),
                false,
                "config",
            ),
            (failed(503, "busy"), false, "transient"),
            (failed(429, ""), false, "transient"),
            (
                failed(
                    400,
                    "Graph Error: Insufficient privileges - Endpoint: users",
                ),
                false,
                "tenant_access",
            ),
            (
                failed(
                    400,
                    "Graph Error: AADSTS700082: The refresh token has expired - Endpoint: users",
                ),
                false,
                "reauth_required",
            ),
            (
                failed(
                    400,
                    "\"Graph Error: AADSTS90002: Tenant 'x' not found. - Endpoint: users\"",
                ),
                false,
                "tenant_access",
            ),
            (
                failed(
                    400,
                    "Graph Error: AADSTS90099: not authorized - Endpoint: users",
                ),
                false,
                "tenant_access",
            ),
        ];
        for (response, api_token, class) in table {
            let error = classify_cipp(&response, &context(), api_token);
            assert_eq!(error.class(), class, "{response:?} → {error:?}");
        }
    }

    #[test]
    fn tenants_skip_the_pseudo_row_and_read_domains() {
        let body = json!([
            {"customerId": "AllTenants", "displayName": "*All Tenants", "defaultDomainName": "AllTenants"},
            {"customerId": "t1", "displayName": "Contoso", "defaultDomainName": "Contoso.com", "initialDomainName": "contoso.onmicrosoft.com"},
            {"customerId": "t2", "displayName": "Fabrikam", "defaultDomainName": "fabrikam.onmicrosoft.com", "initialDomainName": "fabrikam.onmicrosoft.com"}
        ]);
        let tenants = parse_tenants(&body, &context()).expect("tenants");
        assert_eq!(tenants.len(), 2);
        assert_eq!(tenants[0].entra_tenant_id, "t1");
        assert_eq!(
            tenants[0].domains,
            vec![
                TenantDomain {
                    name: "contoso.com".to_owned(),
                    is_default: true,
                    is_initial: false
                },
                TenantDomain {
                    name: "contoso.onmicrosoft.com".to_owned(),
                    is_default: false,
                    is_initial: true
                },
            ]
        );
        assert_eq!(
            tenants[1].domains,
            vec![TenantDomain {
                name: "fabrikam.onmicrosoft.com".to_owned(),
                is_default: true,
                is_initial: true
            }]
        );
    }

    #[test]
    fn the_error_row_is_an_error_not_an_empty_list() {
        let body = json!([{"customerId": "", "displayName": "Failed to retrieve tenants. Perform a permission check.", "defaultDomainName": "Invalid"}]);
        let error = parse_tenants(&body, &context()).expect_err("an error");
        assert_eq!(error.class(), "config");
        assert_eq!(error.code(), Some(CIPP_PERMISSION_CHECK));
        assert!(!error.is_retryable());
        let body = json!([{"customerId": "", "displayName": "Failed to retrieve tenants. AADSTS700082: expired"}]);
        assert_eq!(
            parse_tenants(&body, &context())
                .expect_err("an error")
                .class(),
            "reauth_required"
        );
        assert_eq!(
            parse_tenants(&json!([]), &context()).expect("empty list"),
            Vec::new()
        );
    }

    #[test]
    fn verified_domains_join_the_listed_ones_once_each() {
        let mut domains = vec![
            TenantDomain {
                name: "contoso.com".to_owned(),
                is_default: true,
                is_initial: false,
            },
            TenantDomain {
                name: "contoso.onmicrosoft.com".to_owned(),
                is_default: false,
                is_initial: true,
            },
        ];
        merge_domains(
            &mut domains,
            vec![
                TenantDomain {
                    name: "contoso.com".to_owned(),
                    is_default: true,
                    is_initial: false,
                },
                TenantDomain {
                    name: "contoso.co.uk".to_owned(),
                    is_default: false,
                    is_initial: false,
                },
            ],
        );
        let names: Vec<&str> = domains.iter().map(|domain| domain.name.as_str()).collect();
        assert_eq!(
            names,
            ["contoso.com", "contoso.onmicrosoft.com", "contoso.co.uk"]
        );
    }

    #[test]
    fn aadsts_codes_are_found_in_text() {
        assert_eq!(
            aadsts_codes("x AADSTS700082: y AADSTS50076"),
            vec![700082, 50076]
        );
        assert!(aadsts_codes("AADSTS: none").is_empty());
    }
}

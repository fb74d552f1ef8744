//! The Microsoft Graph client for a direct connection: GDAP customers (MICROSOFT.md §2),
//! customer domains, and users by full listing or delta (§3), each customer read with its own
//! token from the Secure Application Model (§1).

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tracing::instrument;
use url::Url;

use crate::error::{classify, DirectoryError, ErrorContext};
use crate::http::{read_json, HttpCore, HttpSettings, ThrottleStats};
use crate::oauth::{CustomerTokenCache, GRAPH_DEFAULT_SCOPE};
use crate::source::{
    checked_group_id, member_ids, DirectorySource, DiscoveredTenant, TenantDomain, UsersCursor,
    UsersPage, MAX_GROUP_MEMBER_PAGES,
};
use crate::users::{parse_entry, USER_SELECT};

/// Where Graph is and whom the partner-level calls run as.
#[derive(Clone, Debug)]
pub struct GraphConfig {
    /// `MICROSOFT_GRAPH_BASE_URL`, e.g. `https://graph.microsoft.com`.
    pub graph_base_url: Url,
    /// The scope of customer tokens; `https://graph.microsoft.com/.default` in the public
    /// cloud (the resource id, which is not the base URL under test or in sovereign clouds).
    pub graph_scope: String,
    /// The tenant the MSP's own calls (GDAP listings) get tokens in: the partner tenant id,
    /// or `organizations`.
    pub partner_tenant: String,
    /// How many customers' domains discovery reads at once.
    pub discovery_concurrency: usize,
}

impl GraphConfig {
    pub fn new(graph_base_url: Url, partner_tenant: impl Into<String>) -> Self {
        GraphConfig {
            graph_base_url,
            graph_scope: GRAPH_DEFAULT_SCOPE.to_owned(),
            partner_tenant: partner_tenant.into(),
            discovery_concurrency: 4,
        }
    }
}

/// The Graph client. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct GraphClient {
    http: HttpCore,
    base: Url,
    config: GraphConfig,
    tokens: Arc<CustomerTokenCache>,
}

/// A Graph collection page as far as this client reads it.
struct CollectionPage {
    values: Vec<Value>,
    next_link: Option<String>,
    delta_link: Option<String>,
}

impl GraphClient {
    pub fn new(
        config: GraphConfig,
        tokens: Arc<CustomerTokenCache>,
        settings: HttpSettings,
        stats: Arc<ThrottleStats>,
    ) -> Result<Self, DirectoryError> {
        let mut base = config.graph_base_url.clone();
        let trimmed = base.path().trim_end_matches('/').to_owned();
        base.set_path(&trimmed);
        Ok(GraphClient {
            http: HttpCore::new(settings, stats)?,
            base,
            config,
            tokens,
        })
    }

    pub fn tokens(&self) -> &Arc<CustomerTokenCache> {
        &self.tokens
    }

    fn url(&self, path_and_query: &str) -> Result<Url, DirectoryError> {
        Url::parse(&format!(
            "{}{path_and_query}",
            self.base.as_str().trim_end_matches('/')
        ))
        .map_err(|_| DirectoryError::Config {
            code: "graph_base_url".to_owned(),
            message: "the Graph base URL is not a valid URL".to_owned(),
            setting: "MICROSOFT_GRAPH_BASE_URL".to_owned(),
        })
    }

    /// A nextLink or deltaLink from Graph, accepted only when it points at the configured
    /// Graph base: a token is never sent anywhere else.
    fn check_link(&self, link: &str) -> Result<Url, DirectoryError> {
        let url = Url::parse(link)
            .map_err(|_| DirectoryError::invalid("a paging link is not a valid URL"))?;
        let base_path = self.base.path().trim_end_matches('/');
        let same_origin = url.scheme() == self.base.scheme()
            && url.host_str().map(str::to_ascii_lowercase)
                == self.base.host_str().map(str::to_ascii_lowercase)
            && url.port_or_known_default() == self.base.port_or_known_default();
        let under_base =
            url.path() == base_path || url.path().starts_with(&format!("{base_path}/"));
        if same_origin && under_base {
            Ok(url)
        } else {
            Err(DirectoryError::invalid(
                "a paging link points outside the configured Graph base URL",
            ))
        }
    }

    /// GETs `url` with a token for `tenant`. A 401 (the cached token went stale) drops the
    /// tenant's tokens and tries once more with a fresh one; tenant-access failures drop them
    /// too, so a consent or role fix takes effect on the next call.
    async fn get(&self, tenant: &str, url: &Url) -> Result<Value, DirectoryError> {
        let mut fresh_token_tried = false;
        loop {
            let token = self
                .tokens
                .access_token(tenant, &self.config.graph_scope)
                .await?;
            match self.get_once(tenant, url, &token).await {
                Ok(value) => return Ok(value),
                Err((error, status)) => {
                    self.tokens.forget_on(tenant, &error);
                    let stale_token = status == Some(401)
                        && matches!(error, DirectoryError::ReauthRequired { .. });
                    if stale_token && !fresh_token_tried {
                        fresh_token_tried = true;
                        continue;
                    }
                    // A fresh customer-tenant token refused by that tenant is about that
                    // tenant (consent or role), not the MSP's grant: the grant itself was just
                    // accepted by the token endpoint. Only the partner's own calls can say
                    // "reconnect" (SPEC §2.3).
                    if stale_token && tenant != self.config.partner_tenant {
                        return Err(customer_refused_token(
                            &error,
                            &self.tokens.oauth().error_context(Some(tenant)),
                        ));
                    }
                    return Err(error);
                }
            }
        }
    }

    async fn get_once(
        &self,
        tenant: &str,
        url: &Url,
        token: &SecretString,
    ) -> Result<Value, (DirectoryError, Option<u16>)> {
        let context = self.tokens.oauth().error_context(Some(tenant));
        let status = std::sync::atomic::AtomicU16::new(0);
        let response = self
            .http
            .send(
                Some(tenant),
                |client| client.get(url.clone()).bearer_auth(token.expose_secret()),
                |failed| {
                    status.store(failed.status, std::sync::atomic::Ordering::Relaxed);
                    classify(&failed.provider_failure(), &context)
                },
            )
            .await
            .map_err(|error| {
                let status = status.load(std::sync::atomic::Ordering::Relaxed);
                (error, (status != 0).then_some(status))
            })?;
        read_json(response).await.map_err(|error| (error, None))
    }

    async fn collection_page(
        &self,
        tenant: &str,
        url: &Url,
    ) -> Result<CollectionPage, DirectoryError> {
        let mut body = self.get(tenant, url).await?;
        let values = match body.get_mut("value").map(Value::take) {
            Some(Value::Array(values)) => values,
            _ => {
                return Err(DirectoryError::invalid(
                    "a Graph collection answer has no value array",
                ))
            }
        };
        let link = |name: &str| -> Result<Option<String>, DirectoryError> {
            match body.get(name).and_then(Value::as_str) {
                Some(link) => self.check_link(link).map(|_| Some(link.to_owned())),
                None => Ok(None),
            }
        };
        Ok(CollectionPage {
            values,
            next_link: link("@odata.nextLink")?,
            delta_link: link("@odata.deltaLink")?,
        })
    }

    async fn collect_all(&self, tenant: &str, first: Url) -> Result<Vec<Value>, DirectoryError> {
        let mut values = Vec::new();
        let mut url = first;
        loop {
            let page = self.collection_page(tenant, &url).await?;
            values.extend(page.values);
            match page.next_link {
                Some(next_link) => url = self.check_link(&next_link)?,
                None => return Ok(values),
            }
        }
    }

    /// The MSP's GDAP customers (§2): active `delegatedAdminRelationships`, several per
    /// customer collapsed to one tenant; if that listing is refused or missing,
    /// `delegatedAdminCustomers`. Domains are not filled in here (see `customer_domains`).
    #[instrument(skip_all)]
    pub async fn list_gdap_customers(&self) -> Result<Vec<DiscoveredTenant>, DirectoryError> {
        let partner = self.config.partner_tenant.clone();
        let relationships_url = self.url(
            "/v1.0/tenantRelationships/delegatedAdminRelationships?$filter=status%20eq%20%27active%27&$top=300",
        )?;
        let rows = match self.collect_all(&partner, relationships_url).await {
            Ok(relationships) => relationships
                .iter()
                .filter_map(|relationship| {
                    let customer = relationship.get("customer")?;
                    Some((
                        customer.get("tenantId")?.as_str()?.to_owned(),
                        customer
                            .get("displayName")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    ))
                })
                .collect::<Vec<_>>(),
            Err(error @ (DirectoryError::TenantAccess { .. } | DirectoryError::Invalid { .. })) => {
                tracing::info!(
                    class = error.class(),
                    "GDAP relationships unavailable; listing delegatedAdminCustomers"
                );
                let customers_url =
                    self.url("/v1.0/tenantRelationships/delegatedAdminCustomers?$top=300")?;
                self.collect_all(&partner, customers_url)
                    .await?
                    .iter()
                    .filter_map(|customer| {
                        Some((
                            customer.get("tenantId")?.as_str()?.to_owned(),
                            customer
                                .get("displayName")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                        ))
                    })
                    .collect()
            }
            Err(error) => return Err(error),
        };
        let mut tenants: Vec<DiscoveredTenant> = Vec::new();
        for (tenant_id, display_name) in rows {
            if tenant_id.is_empty()
                || tenants
                    .iter()
                    .any(|tenant| tenant.entra_tenant_id.eq_ignore_ascii_case(&tenant_id))
            {
                continue;
            }
            tenants.push(DiscoveredTenant {
                entra_tenant_id: tenant_id,
                display_name,
                domains: Vec::new(),
                domains_error: None,
            });
        }
        Ok(tenants)
    }

    /// A customer's default, initial and verified domains (§2 `GET /v1.0/domains`, with a
    /// customer-tenant token).
    #[instrument(skip_all, fields(entra_tenant_id = %tenant))]
    pub async fn customer_domains(
        &self,
        tenant: &str,
    ) -> Result<Vec<TenantDomain>, DirectoryError> {
        let url = self.url("/v1.0/domains")?;
        let domains = self.collect_all(tenant, url).await?;
        Ok(domains
            .iter()
            .filter_map(|domain| {
                let flag = |name: &str| domain.get(name).and_then(Value::as_bool).unwrap_or(false);
                let (is_default, is_initial) = (flag("isDefault"), flag("isInitial"));
                // Unverified domains are claims anyone can make; they must not steer mapping.
                if !(flag("isVerified") || is_default || is_initial) {
                    return None;
                }
                Some(TenantDomain {
                    name: domain.get("id")?.as_str()?.to_ascii_lowercase(),
                    is_default,
                    is_initial,
                })
            })
            .collect())
    }

    /// One page of `users/delta` (§3). `cursor` is `None` to start from scratch, else a stored
    /// deltaLink or the previous page's nextLink (whole URLs). An expired link is
    /// `Err(DirectoryError::DeltaExpired)`: start again with `None`. So is a stored link that
    /// no longer points at the configured Graph base (the base URL was changed): it is never
    /// called, and a fresh round replaces it.
    #[instrument(skip_all, fields(entra_tenant_id = %tenant, continued = cursor.is_some()))]
    pub async fn users_delta_page(
        &self,
        tenant: &str,
        cursor: Option<String>,
    ) -> Result<UsersPage, DirectoryError> {
        let url = match cursor {
            Some(link) => self.check_link(&link).map_err(|_| {
                tracing::warn!("the stored delta link is not on the configured Graph base");
                DirectoryError::DeltaExpired {
                    code: "delta_link_foreign".to_owned(),
                }
            })?,
            None => self.url(&format!("/v1.0/users/delta?$select={USER_SELECT}"))?,
        };
        self.users_from(tenant, &url).await
    }

    /// One page of `GET /users?$select=…&$top=999` (§3); `cursor` is the previous nextLink.
    #[instrument(skip_all, fields(entra_tenant_id = %tenant, continued = cursor.is_some()))]
    pub async fn users_page(
        &self,
        tenant: &str,
        cursor: Option<String>,
    ) -> Result<UsersPage, DirectoryError> {
        let url = match cursor {
            Some(link) => self.check_link(&link)?,
            None => self.url(&format!("/v1.0/users?$select={USER_SELECT}&$top=999"))?,
        };
        self.users_from(tenant, &url).await
    }

    /// Every user that is a direct or nested member of a group. Graph's "List group
    /// transitive members" (https://learn.microsoft.com/en-us/graph/api/group-list-transitivemembers):
    /// `GET /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user?$select=id&$top=999`, the
    /// OData cast keeping only users; pages of at most 999 follow `@odata.nextLink`
    /// (MICROSOFT.md §3's paging rules).
    #[instrument(skip_all, fields(entra_tenant_id = %tenant))]
    pub async fn group_member_ids(
        &self,
        tenant: &str,
        group_id: &str,
    ) -> Result<Vec<String>, DirectoryError> {
        let group_id = checked_group_id(group_id)?;
        let mut url = self.url(&format!(
            "/v1.0/groups/{group_id}/transitiveMembers/microsoft.graph.user?$select=id&$top=999"
        ))?;
        let mut ids = Vec::new();
        for _ in 0..MAX_GROUP_MEMBER_PAGES {
            let page = self.collection_page(tenant, &url).await?;
            ids.extend(member_ids(&page.values));
            match page.next_link {
                Some(next_link) => url = self.check_link(&next_link)?,
                None => return Ok(ids),
            }
        }
        Err(DirectoryError::invalid(
            "a filter group has more members than the sync reads",
        ))
    }

    async fn users_from(&self, tenant: &str, url: &Url) -> Result<UsersPage, DirectoryError> {
        let page = self.collection_page(tenant, url).await?;
        Ok(UsersPage {
            entries: page.values.iter().map(parse_entry).collect(),
            next_cursor: page.next_link,
            delta_link: page.delta_link,
        })
    }
}

/// Checks that a freshly exchanged delegated access token works on Graph before the caller
/// persists the token set (SPEC §2.1: "the code is exchanged, then Graph is probed"). Reads
/// A 401 from a customer tenant for a token its authority just issued: that tenant refuses
/// the app (consent withdrawn, the service principal removed, Conditional Access), which is a
/// `tenant_access` failure of that tenant with the admin-consent remediation.
fn customer_refused_token(error: &DirectoryError, context: &ErrorContext) -> DirectoryError {
    let (code, message) = match error {
        DirectoryError::ReauthRequired { code, message } => (code.clone(), message.clone()),
        other => ("http_401".to_owned(), other.to_string()),
    };
    DirectoryError::TenantAccess {
        code,
        message,
        remediation: format!(
            "the customer tenant refused the app's token: an administrator of {} must grant admin consent to the app at {} (or restore its GDAP role); the other tenants are not affected",
            context.tenant_id.as_deref().unwrap_or("the customer tenant"),
            context.admin_consent_url()
        ),
    }
}

/// `GET /v1.0/organization` of the signed-in (partner) tenant; returns its display name.
#[instrument(skip_all)]
pub async fn probe(
    graph_base_url: &Url,
    access_token: &SecretString,
    context: &ErrorContext,
    settings: HttpSettings,
    stats: Arc<ThrottleStats>,
) -> Result<Option<String>, DirectoryError> {
    probe_organization(graph_base_url, access_token, context, settings, stats)
        .await
        .map(|organization| organization.map(|(_, name)| name))
}

/// Like [`probe`], answering the signed-in organization's id and display name (the partner
/// tenant for a partner token): `GET /v1.0/organization` (MICROSOFT.md §2).
#[instrument(skip_all)]
pub async fn probe_organization(
    graph_base_url: &Url,
    access_token: &SecretString,
    context: &ErrorContext,
    settings: HttpSettings,
    stats: Arc<ThrottleStats>,
) -> Result<Option<(String, String)>, DirectoryError> {
    let http = HttpCore::new(
        HttpSettings {
            background: false,
            ..settings
        },
        stats,
    )?;
    let url = Url::parse(&format!(
        "{}/v1.0/organization",
        graph_base_url.as_str().trim_end_matches('/')
    ))
    .map_err(|_| DirectoryError::Config {
        code: "graph_base_url".to_owned(),
        message: "the Graph base URL is not a valid URL".to_owned(),
        setting: "MICROSOFT_GRAPH_BASE_URL".to_owned(),
    })?;
    let response = http
        .send(
            None,
            |client| {
                client
                    .get(url.clone())
                    .bearer_auth(access_token.expose_secret())
            },
            |failed| classify(&failed.provider_failure(), context),
        )
        .await?;
    let body = read_json(response).await?;
    let organization = body
        .get("value")
        .and_then(Value::as_array)
        .and_then(|organizations| organizations.first());
    let text = |key: &str| {
        organization
            .and_then(|organization| organization.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Ok(text("id").map(|id| (id, text("displayName").unwrap_or_default())))
}

#[async_trait]
impl DirectorySource for GraphClient {
    /// GDAP customers with their domains. A customer whose domains cannot be read for lack of
    /// access is still listed (with no domains) so discovery shows it; connection-level and
    /// transient failures fail the listing.
    async fn list_tenants(&self) -> Result<Vec<DiscoveredTenant>, DirectoryError> {
        let customers = self.list_gdap_customers().await?;
        stream::iter(customers)
            .map(|mut tenant| async move {
                match self.customer_domains(&tenant.entra_tenant_id).await {
                    Ok(domains) => tenant.domains = domains,
                    Err(
                        error @ (DirectoryError::TenantAccess { .. }
                        | DirectoryError::Invalid { .. }),
                    ) => {
                        tracing::warn!(
                            tenant_id = %tenant.entra_tenant_id,
                            class = error.class(),
                            code = error.code().unwrap_or_default(),
                            "cannot read the customer's domains"
                        );
                        tenant.domains_error = Some(error.class().to_owned());
                    }
                    Err(error) => return Err(error),
                }
                Ok(tenant)
            })
            .buffered(self.config.discovery_concurrency.max(1))
            .try_collect()
            .await
    }

    async fn users_page(
        &self,
        tenant: &str,
        cursor: UsersCursor,
    ) -> Result<UsersPage, DirectoryError> {
        match cursor {
            UsersCursor::Start {
                prefer_delta: true,
                delta_link,
            } => self.users_delta_page(tenant, delta_link).await,
            UsersCursor::Start {
                prefer_delta: false,
                ..
            } => GraphClient::users_page(self, tenant, None).await,
            // A nextLink of either enumeration is a whole URL of the same shape of answer.
            UsersCursor::Next(next_link) => {
                let url = self.check_link(&next_link)?;
                self.users_from(tenant, &url).await
            }
        }
    }

    async fn group_member_ids(
        &self,
        tenant: &str,
        group_id: &str,
    ) -> Result<Vec<String>, DirectoryError> {
        GraphClient::group_member_ids(self, tenant, group_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SettingNames;
    use crate::oauth::{AppCredential, OAuthClient, OAuthConfig, RefreshTokenSource};

    struct NoTokens;

    #[async_trait]
    impl RefreshTokenSource for NoTokens {
        async fn current_refresh_token(&self) -> Result<SecretString, DirectoryError> {
            Err(DirectoryError::invalid("none"))
        }
        async fn store_rotated(&self, _: SecretString) -> Result<(), DirectoryError> {
            Ok(())
        }
    }

    fn client(base: &str) -> GraphClient {
        let oauth = OAuthClient::new(
            OAuthConfig {
                login_base_url: Url::parse("https://login.example.test").expect("url"),
                client_id: "app".to_owned(),
                credential: AppCredential::ClientSecret(SecretString::from("s".to_owned())),
                redirect_uri: None,
                settings: SettingNames::MICROSOFT,
            },
            HttpSettings::default(),
            Arc::default(),
        )
        .expect("oauth");
        let tokens = Arc::new(CustomerTokenCache::new(Arc::new(oauth), Arc::new(NoTokens)));
        GraphClient::new(
            GraphConfig::new(Url::parse(base).expect("url"), "organizations"),
            tokens,
            HttpSettings::default(),
            Arc::default(),
        )
        .expect("client")
    }

    #[test]
    fn paging_links_must_stay_on_the_graph_base() {
        let local = client("http://127.0.0.1:4000/graph/");
        assert!(local
            .check_link("http://127.0.0.1:4000/graph/v1.0/users?$skiptoken=x")
            .is_ok());
        for link in [
            "http://evil.example/graph/v1.0/users",
            "https://127.0.0.1:4000/graph/v1.0/users",
            "http://127.0.0.1:4001/graph/v1.0/users",
            "http://127.0.0.1:4000/graphx/v1.0/users",
            "http://127.0.0.1:4000/cipp/api/ListUsers",
            "not a url",
        ] {
            assert!(local.check_link(link).is_err(), "{link} accepted");
        }
        let public = client("https://graph.microsoft.com");
        assert!(public
            .check_link("https://graph.microsoft.com/v1.0/users/delta?$deltatoken=x")
            .is_ok());
        assert!(public
            .check_link("https://graph.microsoft.com.evil.example/v1.0/users")
            .is_err());
    }

    #[tokio::test]
    async fn a_stored_delta_link_elsewhere_asks_for_a_fresh_round() {
        let graph = client("https://graph.microsoft.com");
        let error = graph
            .users_delta_page(
                "tenant",
                Some("https://graph.example.test/v1.0/users/delta?$deltatoken=x".to_owned()),
            )
            .await
            .expect_err("refused");
        assert_eq!(error.class(), "delta_expired");
    }
}

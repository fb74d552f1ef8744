//! Building the directory source for a PSA tenant from its stored connection: a CIPP client
//! for `cipp` connections, the Graph client for `direct` ones.
//!
//! Direct clients are cached per PSA tenant, so customer-tenant tokens are reused across
//! activities of one worker. The app registration is resolved again on every call (the
//! tenant's secrets, the environment, the application's secrets); a changed credential or a
//! reconnect builds a new client, so a rotated secret needs no restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use entra_sync_directory::cipp::{CippAuth, CippClient, CippConfig};
use entra_sync_directory::error::{DirectoryError, SettingNames};
use entra_sync_directory::graph::{GraphClient, GraphConfig};
use entra_sync_directory::http::{HttpSettings, ThrottleStats};
use entra_sync_directory::oauth::{CustomerTokenCache, OAuthClient, OAuthConfig};
use entra_sync_directory::source::DirectorySource;
use entra_sync_secrets::{AppCredentialResolver, SecretsError};
use entra_sync_store::connection::{
    CippCredentialsRecord, ConnectionCredentials, ConnectionKind, ConnectionStatus,
};
use entra_sync_store::Store;
use secrecy::SecretString;
use temporalio_sdk::activities::ActivityError;
use url::Url;
use uuid::Uuid;

use crate::direct::StoredRefreshTokens;
use crate::errors::{from_directory, from_store, invalid, reauth};

/// Where Microsoft lives (configurable for sovereign clouds and the simulator) and how the
/// HTTP clients behave.
#[derive(Clone, Debug)]
pub struct DirectorySettings {
    pub login_base_url: Url,
    pub graph_base_url: Url,
    pub http: HttpSettings,
    /// Where direct connections get the app registration; `None` refuses direct connections
    /// with a configuration error.
    pub app_registrations: Option<Arc<AppCredentialResolver>>,
    /// `MICROSOFT_OAUTH_CALLBACK_URL`, for the admin-consent links in remediation text.
    pub redirect_uri: Option<String>,
}

/// A direct connection's clients, kept while the app credential and the grant stay the same.
struct CachedDirect {
    fingerprint: [u8; 32],
    connected_at: Option<DateTime<Utc>>,
    graph: Arc<GraphClient>,
    tokens: Arc<StoredRefreshTokens>,
}

/// A directory source and the kind of connection behind it (which decides delta or full).
pub struct ConnectedSource {
    pub source: Arc<dyn DirectorySource>,
    pub kind: ConnectionKind,
}

/// Makes directory sources; shares the throttle counters across all of them for metrics.
pub struct DirectoryFactory {
    settings: DirectorySettings,
    stats: Arc<ThrottleStats>,
    direct: Mutex<HashMap<Uuid, Arc<CachedDirect>>>,
}

impl DirectoryFactory {
    pub fn new(settings: DirectorySettings) -> Self {
        DirectoryFactory {
            settings,
            stats: Arc::new(ThrottleStats::default()),
            direct: Mutex::new(HashMap::new()),
        }
    }

    pub fn throttle_stats(&self) -> Arc<ThrottleStats> {
        self.stats.clone()
    }

    /// The source for a PSA tenant's current connection. A connection that needs reconnecting
    /// stops the sync with a message saying so (SPEC §2.3).
    pub async fn for_tenant(
        &self,
        store: &Store,
        tenant_id: Uuid,
    ) -> Result<ConnectedSource, ActivityError> {
        let connection = store
            .get_connection(tenant_id)
            .await
            .map_err(from_store)?
            .ok_or_else(|| invalid("no connection to Microsoft is configured; connect first"))?;
        if connection.status == ConnectionStatus::NeedsReconnect {
            return Err(reauth(
                "the Microsoft connection needs to be reconnected before syncing",
            ));
        }
        match connection.credentials {
            Some(ConnectionCredentials::Cipp(credentials)) => {
                let base_url = connection
                    .cipp_base_url
                    .as_deref()
                    .and_then(|url| Url::parse(url).ok())
                    .ok_or_else(|| invalid("the CIPP connection has no valid base URL"))?;
                let auth = match credentials {
                    CippCredentialsRecord::ApiToken { api_token } => {
                        CippAuth::ApiToken(SecretString::from(api_token))
                    }
                    CippCredentialsRecord::ApiClient {
                        client_id,
                        client_secret,
                        tenant_id,
                    } => CippAuth::ClientCredentials {
                        client_id,
                        client_secret: SecretString::from(client_secret),
                        tenant_id,
                    },
                };
                let client = CippClient::new(
                    CippConfig {
                        base_url,
                        auth,
                        login_base_url: self.settings.login_base_url.clone(),
                    },
                    self.settings.http.clone(),
                    self.stats.clone(),
                )
                .map_err(|error| crate::errors::from_directory(&error))?;
                Ok(ConnectedSource {
                    source: Arc::new(client),
                    kind: ConnectionKind::Cipp,
                })
            }
            Some(ConnectionCredentials::Direct(_)) => {
                let cached = self
                    .direct_clients(store, tenant_id, connection.connected_at)
                    .await?;
                // The grant itself is checked (and refreshed within five minutes of expiry)
                // before any work starts, so a revoked grant stops the run with "reconnect".
                cached
                    .tokens
                    .partner_access_token()
                    .await
                    .map_err(|error| from_directory(&error))?;
                Ok(ConnectedSource {
                    source: cached.graph.clone(),
                    kind: ConnectionKind::Direct,
                })
            }
            None => Err(invalid("the connection has no credentials; connect first")),
        }
    }

    /// The cached Graph client of a direct connection, rebuilt when the app credential or
    /// the grant (a reconnect) changed.
    async fn direct_clients(
        &self,
        store: &Store,
        tenant_id: Uuid,
        connected_at: Option<DateTime<Utc>>,
    ) -> Result<Arc<CachedDirect>, ActivityError> {
        let resolver = self.settings.app_registrations.as_ref().ok_or_else(|| {
            invalid("no app registration is configured for direct connections: set MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET")
        })?;
        let app = resolver
            .resolve(tenant_id)
            .await
            .map_err(|error| from_directory(&secrets_failure(error)))?
            .ok_or_else(|| {
                invalid("no app registration is configured for direct connections: set MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET")
            })?;
        if let Ok(cache) = self.direct.lock() {
            if let Some(cached) = cache.get(&tenant_id) {
                if cached.fingerprint == app.fingerprint && cached.connected_at == connected_at {
                    return Ok(cached.clone());
                }
            }
        }
        let partner_tenant = app
            .tenant_id
            .clone()
            .unwrap_or_else(|| "organizations".to_owned());
        let oauth = Arc::new(
            OAuthClient::new(
                OAuthConfig {
                    login_base_url: self.settings.login_base_url.clone(),
                    client_id: app.client_id.clone(),
                    credential: app.credential,
                    redirect_uri: self.settings.redirect_uri.clone(),
                    settings: SettingNames::MICROSOFT,
                },
                self.settings.http.clone(),
                self.stats.clone(),
            )
            .map_err(|error| from_directory(&error))?,
        );
        let tokens = Arc::new(StoredRefreshTokens::new(
            store.clone(),
            tenant_id,
            oauth.clone(),
            partner_tenant.clone(),
        ));
        let cache = Arc::new(CustomerTokenCache::new(oauth, tokens.clone()));
        let graph = GraphClient::new(
            GraphConfig::new(self.settings.graph_base_url.clone(), partner_tenant),
            cache,
            self.settings.http.clone(),
            self.stats.clone(),
        )
        .map_err(|error| from_directory(&error))?;
        let cached = Arc::new(CachedDirect {
            fingerprint: app.fingerprint,
            connected_at,
            graph: Arc::new(graph),
            tokens,
        });
        if let Ok(mut cache) = self.direct.lock() {
            cache.insert(tenant_id, cached.clone());
        }
        tracing::info!(%tenant_id, source = %app.source, "direct connection client built");
        Ok(cached)
    }
}

/// A secret-provider failure in the directory crate's classes: an unreachable provider is
/// transient (Temporal retries), anything else is configuration.
fn secrets_failure(error: SecretsError) -> DirectoryError {
    match error {
        SecretsError::Unavailable { provider, message } => DirectoryError::Transient {
            code: format!("secrets_{provider}"),
            message,
            retry_after: None,
        },
        SecretsError::Config {
            provider,
            message,
            setting,
        } => DirectoryError::Config {
            code: format!("secrets_{provider}"),
            message,
            setting,
        },
    }
}

//! Building the directory source for a PSA tenant from its stored connection: a CIPP client
//! for `cipp` connections, the Graph client for `direct` ones. The worker's activities and the
//! API (preflight) both get their sources here, so there is one way to read a connection.
//!
//! Clients are cached per PSA tenant, so connections, customer-tenant tokens and minted CIPP
//! tokens are reused across activities of one worker; a CIPP client is kept while its URL
//! and credentials stay exactly the same. The app registration is resolved again on every
//! call (the tenant's secrets, the environment, the application's secrets); a changed
//! credential or a reconnect builds a new client, so a rotated secret needs no restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use entra_sync_directory::cipp::{CippAuth, CippClient, CippConfig};
use entra_sync_directory::error::{DirectoryError, SettingNames};
use entra_sync_directory::graph::{GraphClient, GraphConfig};
use entra_sync_directory::http::{HttpSettings, ThrottleStats};
use entra_sync_directory::oauth::{CustomerTokenCache, OAuthClient, OAuthConfig};
use entra_sync_directory::source::DirectorySource;
use entra_sync_secrets::AppCredentialResolver;
use entra_sync_store::connection::{
    CippCredentialsRecord, ConnectionCredentials, ConnectionKind, ConnectionStatus,
};
use entra_sync_store::Store;
use secrecy::SecretString;
use url::Url;
use uuid::Uuid;

use crate::capped::CappedSource;
use crate::direct::StoredRefreshTokens;
use crate::error::{secrets_failure, store_failure};

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
    /// The longest `Retry-After` obeyed (`ENTRA_SYNC__WORKER__RETRY_AFTER_CAP_SECONDS`,
    /// default 10 minutes): a provider asking for a day is retried after this instead, and
    /// the capping is counted (`entra_sync_retry_after_capped_total`).
    pub retry_after_cap: std::time::Duration,
}

/// The default cap on an obeyed `Retry-After`.
pub const DEFAULT_RETRY_AFTER_CAP: std::time::Duration = std::time::Duration::from_secs(600);

impl DirectorySettings {
    /// Settings for Microsoft's public cloud with default HTTP behaviour.
    pub fn new(login_base_url: Url, graph_base_url: Url) -> Self {
        DirectorySettings {
            login_base_url,
            graph_base_url,
            http: HttpSettings::default(),
            app_registrations: None,
            redirect_uri: None,
            retry_after_cap: DEFAULT_RETRY_AFTER_CAP,
        }
    }
}

fn invalid(message: &str) -> DirectoryError {
    DirectoryError::Invalid {
        message: message.to_owned(),
    }
}

fn not_connected(message: &str) -> DirectoryError {
    DirectoryError::Config {
        code: "not_connected".to_owned(),
        message: message.to_owned(),
        setting: "the connection (connect Microsoft or CIPP)".to_owned(),
    }
}

fn no_app_registration() -> DirectoryError {
    DirectoryError::Config {
        code: "no_app_registration".to_owned(),
        message: "no app registration is configured for direct connections".to_owned(),
        setting: "MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET".to_owned(),
    }
}

/// A direct connection's clients, kept while the app credential and the grant stay the same.
struct CachedDirect {
    fingerprint: [u8; 32],
    connected_at: Option<DateTime<Utc>>,
    graph: Arc<GraphClient>,
    tokens: Arc<StoredRefreshTokens>,
}

/// A CIPP connection's source, kept while its URL and credentials stay the same.
struct CachedCipp {
    base_url: String,
    credentials: CippCredentialsRecord,
    source: Arc<dyn DirectorySource>,
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
    cipp: Mutex<HashMap<Uuid, CachedCipp>>,
}

impl DirectoryFactory {
    pub fn new(mut settings: DirectorySettings) -> Self {
        // A wait longer than the cap is never slept through inside one call either.
        settings.http.max_retry_after = settings.http.max_retry_after.min(settings.retry_after_cap);
        DirectoryFactory {
            settings,
            stats: Arc::new(ThrottleStats::default()),
            direct: Mutex::new(HashMap::new()),
            cipp: Mutex::new(HashMap::new()),
        }
    }

    pub fn throttle_stats(&self) -> Arc<ThrottleStats> {
        self.stats.clone()
    }

    pub fn settings(&self) -> &DirectorySettings {
        &self.settings
    }

    /// The source for a PSA tenant's current connection. A connection that needs reconnecting
    /// stops the sync with a message saying so (SPEC §2.3).
    pub async fn for_tenant(
        &self,
        store: &Store,
        tenant_id: Uuid,
    ) -> Result<ConnectedSource, DirectoryError> {
        let connection = store
            .get_connection(tenant_id)
            .await
            .map_err(|error| store_failure(&error))?
            .ok_or_else(|| {
                not_connected("no connection to Microsoft is configured; connect first")
            })?;
        if connection.status == ConnectionStatus::NeedsReconnect {
            return Err(DirectoryError::ReauthRequired {
                code: "needs_reconnect".to_owned(),
                message: "the connection needs to be reconnected before syncing".to_owned(),
            });
        }
        match connection.credentials {
            Some(ConnectionCredentials::Cipp(credentials)) => {
                let base_url = connection.cipp_base_url.unwrap_or_default();
                Ok(ConnectedSource {
                    source: self.cipp_source(tenant_id, base_url, credentials)?,
                    kind: ConnectionKind::Cipp,
                })
            }
            Some(ConnectionCredentials::Direct(_)) => {
                let cached = self
                    .direct_clients(store, tenant_id, connection.connected_at)
                    .await?;
                // The grant itself is checked (and refreshed within five minutes of expiry)
                // before any work starts, so a revoked grant stops the run with "reconnect".
                cached.tokens.partner_access_token().await?;
                Ok(ConnectedSource {
                    source: Arc::new(CappedSource::new(
                        cached.graph.clone(),
                        self.settings.retry_after_cap,
                    )),
                    kind: ConnectionKind::Direct,
                })
            }
            None => Err(not_connected(
                "the connection has no credentials; connect first",
            )),
        }
    }

    /// The CIPP source of a PSA tenant: the cached one while the URL and credentials are
    /// unchanged (its HTTP connections and minted token are reused), else a new one.
    fn cipp_source(
        &self,
        tenant_id: Uuid,
        base_url: String,
        credentials: CippCredentialsRecord,
    ) -> Result<Arc<dyn DirectorySource>, DirectoryError> {
        if let Ok(cache) = self.cipp.lock() {
            if let Some(cached) = cache.get(&tenant_id) {
                if cached.base_url == base_url && cached.credentials == credentials {
                    return Ok(cached.source.clone());
                }
            }
        }
        let url = Url::parse(&base_url)
            .map_err(|_| invalid("the CIPP connection has no valid base URL"))?;
        let auth = match credentials.clone() {
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
                base_url: url,
                auth,
                login_base_url: self.settings.login_base_url.clone(),
            },
            self.settings.http.clone(),
            self.stats.clone(),
        )?;
        let source: Arc<dyn DirectorySource> = Arc::new(CappedSource::new(
            Arc::new(client),
            self.settings.retry_after_cap,
        ));
        if let Ok(mut cache) = self.cipp.lock() {
            cache.insert(
                tenant_id,
                CachedCipp {
                    base_url,
                    credentials,
                    source: source.clone(),
                },
            );
        }
        Ok(source)
    }

    /// The cached Graph client of a direct connection, rebuilt when the app credential or
    /// the grant (a reconnect) changed.
    async fn direct_clients(
        &self,
        store: &Store,
        tenant_id: Uuid,
        connected_at: Option<DateTime<Utc>>,
    ) -> Result<Arc<CachedDirect>, DirectoryError> {
        let resolver = self
            .settings
            .app_registrations
            .as_ref()
            .ok_or_else(no_app_registration)?;
        let app = resolver
            .resolve(tenant_id)
            .await
            .map_err(|error| secrets_failure(&error))?
            .ok_or_else(no_app_registration)?;
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
        let oauth = Arc::new(OAuthClient::new(
            OAuthConfig {
                login_base_url: self.settings.login_base_url.clone(),
                client_id: app.client_id.clone(),
                credential: app.credential,
                redirect_uri: self.settings.redirect_uri.clone(),
                settings: SettingNames::MICROSOFT,
            },
            // Every redemption happens under the connection's row lock: one attempt,
            // bounded well inside the lock's timeout (see `direct`).
            HttpSettings {
                max_attempts: 1,
                request_timeout: self
                    .settings
                    .http
                    .request_timeout
                    .min(crate::direct::LEASE_REFRESH_TIMEOUT),
                ..self.settings.http.clone()
            },
            self.stats.clone(),
        )?);
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
        )?;
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

//! Building the directory source for a PSA tenant from its stored connection: a CIPP client
//! for `cipp` connections, the Graph client for `direct` ones.

use std::sync::Arc;

use entra_sync_directory::cipp::{CippAuth, CippClient, CippConfig};
use entra_sync_directory::http::{HttpSettings, ThrottleStats};
use entra_sync_directory::source::DirectorySource;
use entra_sync_store::connection::{
    CippCredentialsRecord, ConnectionCredentials, ConnectionKind, ConnectionStatus,
};
use entra_sync_store::Store;
use secrecy::SecretString;
use temporalio_sdk::activities::ActivityError;
use url::Url;
use uuid::Uuid;

use crate::errors::{from_store, invalid, reauth};

/// Where Microsoft lives (configurable for sovereign clouds and the simulator) and how the
/// HTTP clients behave.
#[derive(Clone, Debug)]
pub struct DirectorySettings {
    pub login_base_url: Url,
    pub graph_base_url: Url,
    pub http: HttpSettings,
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
}

impl DirectoryFactory {
    pub fn new(settings: DirectorySettings) -> Self {
        DirectoryFactory {
            settings,
            stats: Arc::new(ThrottleStats::default()),
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
            Some(ConnectionCredentials::Direct(_)) => Err(invalid(
                "direct connections are not supported by this worker yet; connect through CIPP",
            )),
            None => Err(invalid("the connection has no credentials; connect first")),
        }
    }
}

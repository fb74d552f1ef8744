//! Vault / OpenBao KV version 2 over HTTP: `GET {address}/v1/{mount}/data/{path}` with the
//! `X-Vault-Token` header answers `{"data":{"data":{KEY: value, …},"metadata":{…}}}`; 404 means
//! no such secret. The application's secrets live at `{prefix}/app`, a PSA tenant's at
//! `{prefix}/tenants/{tenant id}`. Each secret document is read again after `cache_ttl`, so a
//! new version written to Vault takes effect without a restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use crate::{SecretProvider, SecretScope, SecretsError};

/// Where the KV v2 engine is and how to authenticate.
#[derive(Clone)]
pub struct VaultConfig {
    /// `https://vault.example.com:8200`.
    pub address: Url,
    pub token: SecretString,
    /// The KV v2 mount, `secret` by default.
    pub mount: String,
    /// The folder under the mount, `entra-sync` by default.
    pub prefix: String,
    /// How long a read document is reused. Zero reads Vault on every lookup.
    pub cache_ttl: Duration,
    pub request_timeout: Duration,
    /// Lets the address be (or resolve to) a loopback, private or link-local address
    /// (`ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS`); otherwise such an address is refused, checked
    /// on every connection.
    pub allow_private_endpoints: bool,
}

/// The largest Vault answer read; a KV document holding a few credentials is a few KiB.
const MAX_VAULT_BODY_BYTES: usize = 1024 * 1024;

impl std::fmt::Debug for VaultConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("VaultConfig")
            .field("address", &self.address.as_str())
            .field("token", &"<redacted>")
            .field("mount", &self.mount)
            .field("prefix", &self.prefix)
            .field("cache_ttl", &self.cache_ttl)
            .field("allow_private_endpoints", &self.allow_private_endpoints)
            .finish()
    }
}

type Document = HashMap<String, SecretString>;

/// Secrets read from a KV v2 engine.
pub struct VaultProvider {
    config: VaultConfig,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, (Instant, Option<Document>)>>,
}

impl std::fmt::Debug for VaultProvider {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("VaultProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn unavailable(message: impl Into<String>) -> SecretsError {
    SecretsError::Unavailable {
        provider: "vault",
        message: message.into(),
    }
}

impl VaultProvider {
    pub fn new(config: VaultConfig) -> Result<Self, SecretsError> {
        use entra_sync_directory::outbound;
        if !config.allow_private_endpoints {
            outbound::check_url(&config.address).map_err(|refusal| private_endpoint(&refusal))?;
        }
        let builder = reqwest::Client::builder()
            .timeout(config.request_timeout)
            // A redirect could carry the token to another host; Vault's API does not need them.
            .redirect(reqwest::redirect::Policy::none());
        let http = outbound::apply(builder, config.allow_private_endpoints)
            .build()
            .map_err(|_| unavailable("the HTTP client could not be built"))?;
        Ok(VaultProvider {
            config,
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn secret_path(&self, scope: SecretScope) -> String {
        let prefix = self.config.prefix.trim_matches('/');
        match scope {
            SecretScope::Application => format!("{prefix}/app"),
            SecretScope::Tenant(tenant_id) => format!("{prefix}/tenants/{tenant_id}"),
        }
    }

    async fn document(&self, path: &str) -> Result<Option<Document>, SecretsError> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((read_at, document)) = cache.get(path) {
                if read_at.elapsed() < self.config.cache_ttl {
                    return Ok(document.clone());
                }
            }
        }
        let document = self.fetch(path).await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(path.to_owned(), (Instant::now(), document.clone()));
        }
        Ok(document)
    }

    async fn fetch(&self, path: &str) -> Result<Option<Document>, SecretsError> {
        let base = self.config.address.as_str().trim_end_matches('/');
        let mount = self.config.mount.trim_matches('/');
        let url = Url::parse(&format!("{base}/v1/{mount}/data/{path}"))
            .map_err(|_| config("the Vault address does not form a valid URL"))?;
        let response = self
            .http
            .get(url)
            .header("X-Vault-Token", self.config.token.expose_secret())
            .send()
            .await
            .map_err(|error| {
                if let Some(refusal) = entra_sync_directory::outbound::refused(&error) {
                    return private_endpoint(&refusal);
                }
                unavailable(if error.is_timeout() {
                    "the request timed out"
                } else {
                    "the server cannot be reached"
                })
            })?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            404 => return Ok(None),
            401 | 403 => return Err(config(
                "Vault refused the token (expired, or its policy does not allow reading the path)",
            )),
            // A redirect is not followed (and what it points at is not repeated).
            _ => return Err(unavailable(format!("Vault answered HTTP {status}"))),
        }
        use entra_sync_directory::http::{read_capped, Capped};
        let bytes = match read_capped(response, MAX_VAULT_BODY_BYTES).await {
            Ok(Capped::Complete(bytes)) => bytes,
            Ok(Capped::Truncated(_)) => {
                return Err(unavailable(format!(
                    "Vault answered more than {MAX_VAULT_BODY_BYTES} bytes"
                )))
            }
            Err(_) => return Err(unavailable("the answer was cut off")),
        };
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|_| unavailable("Vault answered something that is not JSON"))?;
        let Some(data) = body
            .get("data")
            .and_then(|data| data.get("data"))
            .and_then(Value::as_object)
        else {
            // A deleted latest version answers `data: null`.
            return Ok(None);
        };
        Ok(Some(
            data.iter()
                .filter_map(|(key, value)| {
                    value
                        .as_str()
                        .filter(|text| !text.is_empty())
                        .map(|text| (key.clone(), SecretString::from(text.to_owned())))
                })
                .collect(),
        ))
    }
}

fn private_endpoint(refusal: &entra_sync_directory::outbound::PrivateEndpoint) -> SecretsError {
    SecretsError::Config {
        provider: "vault",
        message: refusal.to_string(),
        setting: "ENTRA_SYNC__SECRETS__VAULT_ADDRESS (or ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS)"
            .to_owned(),
    }
}

fn config(message: &str) -> SecretsError {
    SecretsError::Config {
        provider: "vault",
        message: message.to_owned(),
        setting: "ENTRA_SYNC__SECRETS__VAULT_ADDRESS and ENTRA_SYNC__SECRETS__VAULT_TOKEN"
            .to_owned(),
    }
}

#[async_trait]
impl SecretProvider for VaultProvider {
    fn name(&self) -> &'static str {
        "vault"
    }

    async fn get(
        &self,
        scope: SecretScope,
        key: &str,
    ) -> Result<Option<SecretString>, SecretsError> {
        let path = self.secret_path(scope);
        Ok(self
            .document(&path)
            .await?
            .and_then(|document| document.get(key).cloned()))
    }
}

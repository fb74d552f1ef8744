//! Resolving the Microsoft app registration for one PSA tenant (SPEC §2.1): the first layer
//! that names a client id wins — the tenant's own secrets (in each configured provider), then
//! the environment, then the application's secrets — and the credential must come from that
//! same layer, so one tenant's client id is never paired with another registration's secret.

use std::path::PathBuf;
use std::sync::Arc;

use entra_sync_directory::oauth::AppCredential;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{EnvironmentProvider, SecretProvider, SecretScope, SecretsError};

/// The key names, the same in every provider (and as environment variables, SPEC §8).
pub const KEYS: &[&str] = &[
    CLIENT_ID,
    CLIENT_SECRET,
    TENANT_ID,
    CLIENT_CERTIFICATE,
    CLIENT_CERTIFICATE_KEY,
    FEDERATED_TOKEN_FILE,
    AZURE_FEDERATED_TOKEN_FILE,
];
const CLIENT_ID: &str = "MICROSOFT_CLIENT_ID";
const CLIENT_SECRET: &str = "MICROSOFT_CLIENT_SECRET";
const TENANT_ID: &str = "MICROSOFT_TENANT_ID";
/// The certificate (PEM) registered on the app, and its private key (PEM).
const CLIENT_CERTIFICATE: &str = "MICROSOFT_CLIENT_CERTIFICATE";
const CLIENT_CERTIFICATE_KEY: &str = "MICROSOFT_CLIENT_CERTIFICATE_KEY";
/// The path of a federated (workload identity) token file.
const FEDERATED_TOKEN_FILE: &str = "MICROSOFT_FEDERATED_TOKEN_FILE";
/// The name Azure workload identity injects.
const AZURE_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";

/// An app registration as resolved for one PSA tenant. `Debug` shows no secret.
pub struct ResolvedApp {
    pub client_id: String,
    /// The MSP's own tenant (`MICROSOFT_TENANT_ID`), when configured.
    pub tenant_id: Option<String>,
    pub credential: AppCredential,
    /// Which layer it came from, e.g. `vault (tenant)` or `environment`.
    pub source: String,
    /// SHA-256 over the client id and the credential material: equal fingerprints mean the
    /// same registration and credential, so a cached client can be kept; a rotated secret
    /// changes it.
    pub fingerprint: [u8; 32],
}

impl std::fmt::Debug for ResolvedApp {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ResolvedApp")
            .field("client_id", &self.client_id)
            .field("tenant_id", &self.tenant_id)
            .field("credential", &self.credential)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The resolution order over the configured providers.
#[derive(Debug)]
pub struct AppCredentialResolver {
    providers: Vec<Arc<dyn SecretProvider>>,
    environment: EnvironmentProvider,
}

impl AppCredentialResolver {
    /// `providers` are asked in order within each layer (e.g. the folder, then Vault).
    pub fn new(providers: Vec<Arc<dyn SecretProvider>>, environment: EnvironmentProvider) -> Self {
        AppCredentialResolver {
            providers,
            environment,
        }
    }

    /// The app registration for `tenant_id`, or `None` when no layer names a client id.
    pub async fn resolve(&self, tenant_id: Uuid) -> Result<Option<ResolvedApp>, SecretsError> {
        let mut layers: Vec<(&dyn SecretProvider, SecretScope, &'static str)> = Vec::new();
        for provider in &self.providers {
            layers.push((provider.as_ref(), SecretScope::Tenant(tenant_id), "tenant"));
        }
        layers.push((&self.environment, SecretScope::Application, "application"));
        for provider in &self.providers {
            layers.push((provider.as_ref(), SecretScope::Application, "application"));
        }
        for (provider, scope, scope_name) in layers {
            if let Some(app) = resolve_layer(provider, scope, scope_name).await? {
                tracing::debug!(source = %app.source, "app registration resolved");
                return Ok(Some(app));
            }
        }
        Ok(None)
    }
}

async fn resolve_layer(
    provider: &dyn SecretProvider,
    scope: SecretScope,
    scope_name: &str,
) -> Result<Option<ResolvedApp>, SecretsError> {
    let Some(client_id) = provider.get(scope, CLIENT_ID).await? else {
        return Ok(None);
    };
    let client_id = client_id.expose_secret().trim().to_owned();
    let source = if provider.name() == "environment" {
        "environment".to_owned()
    } else {
        format!("{} ({scope_name})", provider.name())
    };
    let tenant_id = provider
        .get(scope, TENANT_ID)
        .await?
        .map(|value| value.expose_secret().trim().to_owned());
    let mut fingerprint = Sha256::new();
    fingerprint.update(client_id.as_bytes());
    let credential = if let Some(secret) = provider.get(scope, CLIENT_SECRET).await? {
        fingerprint.update(b"\0secret\0");
        fingerprint.update(secret.expose_secret().as_bytes());
        AppCredential::ClientSecret(secret)
    } else if let Some(certificate) = provider.get(scope, CLIENT_CERTIFICATE).await? {
        let key = provider
            .get(scope, CLIENT_CERTIFICATE_KEY)
            .await?
            .ok_or_else(|| SecretsError::Config {
                provider: provider.name(),
                message: format!("{source} has a certificate but no private key"),
                setting: CLIENT_CERTIFICATE_KEY.to_owned(),
            })?;
        fingerprint.update(b"\0certificate\0");
        fingerprint.update(certificate.expose_secret().as_bytes());
        fingerprint.update(key.expose_secret().as_bytes());
        AppCredential::Certificate {
            certificate_pem: certificate.expose_secret().to_owned(),
            private_key_pem: key,
        }
    } else if let Some(path) = first(provider, scope, FEDERATED_TOKEN_FILE).await? {
        fingerprint.update(b"\0federated\0");
        fingerprint.update(path.expose_secret().as_bytes());
        AppCredential::FederatedTokenFile(PathBuf::from(path.expose_secret().trim()))
    } else {
        return Err(SecretsError::Config {
            provider: provider.name(),
            message: format!(
                "{source} names a client id but no credential (a client secret, a certificate with its key, or a federated token file)"
            ),
            setting: CLIENT_SECRET.to_owned(),
        });
    };
    Ok(Some(ResolvedApp {
        client_id,
        tenant_id,
        credential,
        source,
        fingerprint: fingerprint.finalize().into(),
    }))
}

async fn first(
    provider: &dyn SecretProvider,
    scope: SecretScope,
    key: &str,
) -> Result<Option<SecretString>, SecretsError> {
    if let Some(value) = provider.get(scope, key).await? {
        return Ok(Some(value));
    }
    if key == FEDERATED_TOKEN_FILE {
        return provider.get(scope, AZURE_FEDERATED_TOKEN_FILE).await;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An in-memory provider: (scope, key) → value.
    #[derive(Debug, Default)]
    struct Fixed(HashMap<(Option<Uuid>, String), String>);

    #[async_trait::async_trait]
    impl SecretProvider for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        async fn get(
            &self,
            scope: SecretScope,
            key: &str,
        ) -> Result<Option<SecretString>, SecretsError> {
            let scope = match scope {
                SecretScope::Tenant(id) => Some(id),
                SecretScope::Application => None,
            };
            Ok(self
                .0
                .get(&(scope, key.to_owned()))
                .map(|value| SecretString::from(value.clone())))
        }
    }

    fn fixed(entries: &[(Option<Uuid>, &str, &str)]) -> Arc<dyn SecretProvider> {
        Arc::new(Fixed(
            entries
                .iter()
                .map(|(scope, key, value)| ((*scope, (*key).to_owned()), (*value).to_owned()))
                .collect(),
        ))
    }

    fn secret_of(app: &ResolvedApp) -> String {
        match &app.credential {
            AppCredential::ClientSecret(secret) => secret.expose_secret().to_owned(),
            other => format!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn tenant_secrets_then_environment_then_application_secrets() {
        let tenant = Uuid::new_v4();
        let other_tenant = Uuid::new_v4();
        let provider = fixed(&[
            (Some(tenant), CLIENT_ID, "tenant-app"),
            (Some(tenant), CLIENT_SECRET, "tenant-secret"),
            (None, CLIENT_ID, "shared-app"),
            (None, CLIENT_SECRET, "shared-secret"),
        ]);
        let environment = EnvironmentProvider::from_pairs([
            (CLIENT_ID, "env-app"),
            (CLIENT_SECRET, "env-secret"),
        ]);
        let resolver = AppCredentialResolver::new(vec![provider.clone()], environment);
        let own = resolver.resolve(tenant).await.expect("ok").expect("app");
        assert_eq!(
            (own.client_id.as_str(), secret_of(&own).as_str()),
            ("tenant-app", "tenant-secret")
        );
        assert_eq!(own.source, "fixed (tenant)");
        let other = resolver
            .resolve(other_tenant)
            .await
            .expect("ok")
            .expect("app");
        assert_eq!(
            (other.client_id.as_str(), secret_of(&other).as_str()),
            ("env-app", "env-secret")
        );
        assert_eq!(other.source, "environment");

        let without_environment =
            AppCredentialResolver::new(vec![provider], EnvironmentProvider::default());
        let shared = without_environment
            .resolve(other_tenant)
            .await
            .expect("ok")
            .expect("app");
        assert_eq!(shared.client_id, "shared-app");
        assert_eq!(shared.source, "fixed (application)");
        assert_ne!(shared.fingerprint, own.fingerprint);

        let nothing = AppCredentialResolver::new(Vec::new(), EnvironmentProvider::default());
        assert!(nothing.resolve(tenant).await.expect("ok").is_none());
    }

    #[tokio::test]
    async fn a_layer_must_bring_its_own_credential() {
        let tenant = Uuid::new_v4();
        let provider = fixed(&[
            (Some(tenant), CLIENT_ID, "tenant-app"),
            (None, CLIENT_SECRET, "s"),
        ]);
        let resolver = AppCredentialResolver::new(vec![provider], EnvironmentProvider::default());
        let error = resolver.resolve(tenant).await.expect_err("incomplete");
        assert!(error.to_string().contains("no credential"), "{error}");
    }

    #[tokio::test]
    async fn certificate_and_federated_credentials_are_recognised() {
        let tenant = Uuid::new_v4();
        let provider = fixed(&[
            (Some(tenant), CLIENT_ID, "cert-app"),
            (
                Some(tenant),
                CLIENT_CERTIFICATE,
                "-----BEGIN CERTIFICATE-----",
            ),
            (Some(tenant), CLIENT_CERTIFICATE_KEY, "private-key-pem"),
            (None, CLIENT_ID, "wi-app"),
            (
                None,
                AZURE_FEDERATED_TOKEN_FILE,
                "/var/run/secrets/azure/tokens/token",
            ),
        ]);
        let resolver = AppCredentialResolver::new(vec![provider], EnvironmentProvider::default());
        let certificate = resolver.resolve(tenant).await.expect("ok").expect("app");
        assert!(matches!(
            certificate.credential,
            AppCredential::Certificate { .. }
        ));
        assert!(!format!("{certificate:?}").contains("private-key-pem"));
        let federated = resolver
            .resolve(Uuid::new_v4())
            .await
            .expect("ok")
            .expect("app");
        assert!(matches!(
            federated.credential,
            AppCredential::FederatedTokenFile(ref path) if path.ends_with("token")
        ));
    }
}

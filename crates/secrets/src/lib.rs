//! Where the Microsoft app registration's credentials come from (SPEC §2.1): secret providers
//! (the environment, a folder of files re-read when its files change, Vault/OpenBao KV v2)
//! and the resolution order — the PSA tenant's own secrets, then the environment, then the
//! application's secrets — that turns them into an `AppCredential`.
//!
//! Secret values are `SecretString`s from the moment they are read; nothing here logs one, and
//! errors name keys, paths and providers, never values.

mod app;
mod folder;
mod vault;

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use secrecy::SecretString;
use uuid::Uuid;

pub use app::{AppCredentialResolver, ResolvedApp, KEYS};
pub use folder::FolderProvider;
pub use vault::{VaultConfig, VaultProvider};

/// Whose secret is asked for: one PSA tenant's own, or the application's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretScope {
    Tenant(Uuid),
    Application,
}

/// Why a secret could not be read. Never carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The provider could not be reached or answered an error; a later attempt may work.
    #[error("secret provider {provider} is unavailable: {message}")]
    Unavailable {
        provider: &'static str,
        message: String,
    },
    /// The provider's configuration or content is wrong (bad token, unreadable file, a client
    /// id without a credential); `setting` names what to fix.
    #[error("secret configuration error in {provider}: {message}. Check {setting}")]
    Config {
        provider: &'static str,
        message: String,
        setting: String,
    },
}

/// A source of named secrets.
#[async_trait]
pub trait SecretProvider: Send + Sync + fmt::Debug {
    /// A short name for messages (`environment`, `folder`, `vault`).
    fn name(&self) -> &'static str;

    /// The secret `key` in `scope`, or `None` when this provider does not have it.
    async fn get(
        &self,
        scope: SecretScope,
        key: &str,
    ) -> Result<Option<SecretString>, SecretsError>;
}

/// The process environment, captured once at start (libraries never read `std::env`). It has
/// only application-wide values.
#[derive(Default)]
pub struct EnvironmentProvider {
    values: HashMap<String, SecretString>,
}

impl fmt::Debug for EnvironmentProvider {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort();
        formatter
            .debug_struct("EnvironmentProvider")
            .field("names", &names)
            .finish()
    }
}

impl EnvironmentProvider {
    /// Keeps the non-empty values of the variables named in [`KEYS`].
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        EnvironmentProvider {
            values: pairs
                .into_iter()
                .filter(|(name, value)| KEYS.contains(name) && !value.trim().is_empty())
                .map(|(name, value)| (name.to_owned(), SecretString::from(value.to_owned())))
                .collect(),
        }
    }
}

#[async_trait]
impl SecretProvider for EnvironmentProvider {
    fn name(&self) -> &'static str {
        "environment"
    }

    async fn get(
        &self,
        scope: SecretScope,
        key: &str,
    ) -> Result<Option<SecretString>, SecretsError> {
        Ok(match scope {
            SecretScope::Application => self.values.get(key).cloned(),
            SecretScope::Tenant(_) => None,
        })
    }
}

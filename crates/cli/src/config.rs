//! Configuration: `config/default.toml` (or the file named by `--config`), then environment
//! variables `ENTRA_SYNC__SECTION__KEY`, then the contract variable names of SPEC §8. Loaded
//! once in `main` and passed down typed; libraries never read the environment.

use std::path::Path;

use anyhow::{Context, Result};
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub temporal: TemporalSettings,
    pub api: ApiSettings,
    #[serde(default)]
    pub encryption_key: Option<SecretString>,
    pub microsoft: MicrosoftSettings,
    pub sync: SyncSettings,
    #[serde(default)]
    pub secrets: SecretSettings,
    #[serde(default)]
    pub worker: WorkerSettings,
}

/// Secret providers for the app registration (SPEC §2.1), besides the environment: a directory
/// of files (`{directory}/MICROSOFT_CLIENT_SECRET`, `{directory}/tenants/{tenant id}/…`) and
/// Vault/OpenBao KV v2 (`{vault_mount}/{vault_prefix}/app`, `…/tenants/{tenant id}`).
#[derive(Debug, Default, Deserialize, Clone)]
pub struct SecretSettings {
    #[serde(default)]
    pub directory: Option<String>,
    #[serde(default)]
    pub vault_address: Option<String>,
    #[serde(default)]
    pub vault_token: Option<SecretString>,
    #[serde(default)]
    pub vault_mount: Option<String>,
    #[serde(default)]
    pub vault_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Deserialize, Clone)]
pub struct TemporalSettings {
    pub address: String,
    pub namespace: String,
    pub task_queue: String,
}

#[derive(Debug, Deserialize)]
pub struct ApiSettings {
    pub listen: String,
    #[serde(default)]
    pub master_key: Option<SecretString>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct MicrosoftSettings {
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub oauth_callback_url: Option<String>,
    /// A certificate (PEM) registered on the app and its private key (PEM), instead of a secret.
    #[serde(default)]
    pub client_certificate: Option<SecretString>,
    #[serde(default)]
    pub client_certificate_key: Option<SecretString>,
    /// Workload identity: a file holding a federated token, instead of a secret.
    #[serde(default)]
    pub federated_token_file: Option<String>,
    pub login_base_url: String,
    pub graph_base_url: String,
}

#[derive(Debug, Deserialize)]
pub struct SyncSettings {
    pub max_parallel_tenants: u32,
    /// Users reconciled per transaction (provider pages are accumulated up to this).
    #[serde(default = "default_batch_users")]
    pub batch_users: usize,
}

fn default_batch_users() -> usize {
    entra_sync_activities::DEFAULT_BATCH_USERS
}

#[derive(Debug, Deserialize, Default)]
pub struct WorkerSettings {
    /// Where a worker serves `/metrics` (e.g. `127.0.0.1:9464`); unset means nowhere.
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

/// The contract variable names (SPEC §8) and the keys they set.
const CONTRACT_VARIABLES: [(&str, &str); 19] = [
    ("DATABASE_URL", "database.url"),
    ("TEMPORAL_ADDRESS", "temporal.address"),
    ("TEMPORAL_NAMESPACE", "temporal.namespace"),
    ("TEMPORAL_TASK_QUEUE", "temporal.task_queue"),
    ("ENTRA_SYNC_LISTEN", "api.listen"),
    ("ENTRA_SYNC_MASTER_KEY", "api.master_key"),
    ("ENTRA_SYNC_ENCRYPTION_KEY", "encryption_key"),
    ("MICROSOFT_CLIENT_ID", "microsoft.client_id"),
    ("MICROSOFT_CLIENT_SECRET", "microsoft.client_secret"),
    ("MICROSOFT_TENANT_ID", "microsoft.tenant_id"),
    (
        "MICROSOFT_OAUTH_CALLBACK_URL",
        "microsoft.oauth_callback_url",
    ),
    ("MICROSOFT_LOGIN_BASE_URL", "microsoft.login_base_url"),
    ("MICROSOFT_GRAPH_BASE_URL", "microsoft.graph_base_url"),
    (
        "MICROSOFT_CLIENT_CERTIFICATE",
        "microsoft.client_certificate",
    ),
    (
        "MICROSOFT_CLIENT_CERTIFICATE_KEY",
        "microsoft.client_certificate_key",
    ),
    (
        "AZURE_FEDERATED_TOKEN_FILE",
        "microsoft.federated_token_file",
    ),
    (
        "MICROSOFT_FEDERATED_TOKEN_FILE",
        "microsoft.federated_token_file",
    ),
    ("VAULT_ADDR", "secrets.vault_address"),
    ("VAULT_TOKEN", "secrets.vault_token"),
];

const DEFAULTS: &str = include_str!("../../../config/default.toml");

impl Settings {
    /// Loads the settings from the built-in defaults, an optional file, and `environment`
    /// (passed in rather than read here so tests can give their own).
    pub fn load(file: Option<&Path>, environment: &[(String, String)]) -> Result<Settings> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        let mut prefixed = config::Map::new();
        for (name, value) in environment {
            if let Some(rest) = name.strip_prefix("ENTRA_SYNC__") {
                let key = rest.to_ascii_lowercase().replace("__", ".");
                prefixed.insert(key, value.clone());
            }
        }
        for (key, value) in prefixed {
            builder = builder
                .set_override(key, value)
                .context("invalid ENTRA_SYNC__ variable")?;
        }
        for (variable, key) in CONTRACT_VARIABLES {
            if let Some((_, value)) = environment.iter().find(|(name, _)| name == variable) {
                if !value.is_empty() {
                    builder = builder
                        .set_override(key, value.clone())
                        .with_context(|| format!("invalid value of {variable}"))?;
                }
            }
        }
        builder
            .build()
            .context("reading configuration")?
            .try_deserialize()
            .context("configuration has a missing or mistyped value")
    }

    /// The 32-byte key for secrets at rest, from base64 `ENTRA_SYNC_ENCRYPTION_KEY`.
    pub fn encryption_key(&self) -> Result<[u8; 32]> {
        use base64::Engine;
        use secrecy::ExposeSecret;
        let encoded = self
            .encryption_key
            .as_ref()
            .context("ENTRA_SYNC_ENCRYPTION_KEY is not set (base64 of 32 random bytes)")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.expose_secret().trim())
            .context("ENTRA_SYNC_ENCRYPTION_KEY is not valid base64")?;
        bytes.try_into().map_err(|_| {
            anyhow::anyhow!("ENTRA_SYNC_ENCRYPTION_KEY must decode to exactly 32 bytes")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn contract_variables_override_prefixed_ones_which_override_defaults() {
        let settings = Settings::load(
            None,
            &env(&[
                ("ENTRA_SYNC__TEMPORAL__TASK_QUEUE", "from-prefixed"),
                ("ENTRA_SYNC__SYNC__MAX_PARALLEL_TENANTS", "9"),
                ("TEMPORAL_TASK_QUEUE", "from-contract"),
                ("DATABASE_URL", "postgres://example/db"),
            ]),
        )
        .expect("settings load");
        assert_eq!(settings.temporal.task_queue, "from-contract");
        assert_eq!(settings.sync.max_parallel_tenants, 9);
        assert_eq!(settings.database.url, "postgres://example/db");
        assert_eq!(settings.temporal.namespace, "default");
    }

    #[test]
    fn encryption_key_must_be_32_bytes_of_base64() {
        let short =
            Settings::load(None, &env(&[("ENTRA_SYNC_ENCRYPTION_KEY", "c2hvcnQ=")])).expect("load");
        assert!(short.encryption_key().is_err());
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let good = Settings::load(None, &env(&[("ENTRA_SYNC_ENCRYPTION_KEY", key)])).expect("load");
        assert_eq!(good.encryption_key().expect("key")[31], 31);
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let settings = Settings::load(
            None,
            &env(&[
                ("ENTRA_SYNC_MASTER_KEY", "master-secret-value"),
                ("MICROSOFT_CLIENT_SECRET", "client-secret-value"),
            ]),
        )
        .expect("load");
        let printed = format!("{settings:?}");
        assert!(!printed.contains("master-secret-value"));
        assert!(!printed.contains("client-secret-value"));
    }
}

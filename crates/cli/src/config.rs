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
    /// `ENTRA_SYNC_PREVIOUS_ENCRYPTION_KEYS`: keys that were current before, comma-separated
    /// base64; values sealed under them still open (and are re-sealed under the current key
    /// when rewritten, or by `entra-sync rekey`).
    #[serde(default)]
    pub previous_encryption_keys: Option<SecretString>,
    /// `ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS`: lets CIPP base URLs and the Vault address reach
    /// loopback, private and link-local addresses. Off by default; the demo and the tests
    /// turn it on because their CIPP and Vault listen on 127.0.0.1.
    #[serde(default)]
    pub allow_private_endpoints: bool,
    pub microsoft: MicrosoftSettings,
    pub sync: SyncSettings,
    #[serde(default)]
    pub secrets: SecretSettings,
    #[serde(default)]
    pub worker: WorkerSettings,
    #[serde(default)]
    pub metrics: MetricsSettings,
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

#[derive(Deserialize)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
}

/// The URL without its password, for `Debug` and messages.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() && parsed.set_password(Some("redacted")).is_err() {
                return "<unprintable URL>".to_owned();
            }
            // A password can also ride in the query (`?password=`), as libpq allows.
            if parsed.query_pairs().any(|(key, _)| key == "password") {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(key, value)| {
                        let value = if key == "password" {
                            "redacted".to_owned()
                        } else {
                            value.into_owned()
                        };
                        (key.into_owned(), value)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DatabaseSettings")
            .field("url", &redacted_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
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
    /// `ENTRA_SYNC_OAUTH_STATE_TTL_SECONDS`: how long a started direct connection's sign-in
    /// may take.
    #[serde(default = "default_oauth_state_ttl_seconds")]
    pub oauth_state_ttl_seconds: u64,
}

fn default_oauth_state_ttl_seconds() -> u64 {
    600
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
    /// Managed tenants per page of a run's targets (`ENTRA_SYNC__SYNC__BATCH_TENANTS`): a run
    /// of more tenants syncs each page in a child workflow, so no workflow history grows with
    /// the number of tenants.
    #[serde(default = "default_batch_tenants")]
    pub batch_tenants: usize,
}

fn default_batch_users() -> usize {
    entra_sync_activities::DEFAULT_BATCH_USERS
}

fn default_batch_tenants() -> usize {
    entra_sync_activities::DEFAULT_BATCH_TENANTS
}

#[derive(Debug, Deserialize, Default)]
pub struct WorkerSettings {
    /// Where a worker serves `/metrics` (e.g. `127.0.0.1:9464`); unset means nowhere. Kept for
    /// existing deployments: `metrics.listen` is the same for every subcommand.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// On SIGTERM: how long a worker lets running activities go on before it cancels them at
    /// their next page boundary and exits (`ENTRA_SYNC__WORKER__SHUTDOWN_GRACE_SECONDS`).
    /// Unset: 30 seconds.
    #[serde(default)]
    pub shutdown_grace_seconds: Option<u64>,
    /// The longest `Retry-After` a worker obeys (`ENTRA_SYNC__WORKER__RETRY_AFTER_CAP_SECONDS`,
    /// default 600); a longer one is capped and counted.
    #[serde(default)]
    pub retry_after_cap_seconds: Option<u64>,
    /// The longest a sync run may stay `running` (`ENTRA_SYNC__WORKER__MAX_RUN_SECONDS`,
    /// default 21600 = 6 h): tenants still syncing or retrying then fail with the limit as
    /// their cause and the run ends `partial` or `failed`.
    #[serde(default)]
    pub max_run_seconds: Option<u64>,
}

impl WorkerSettings {
    pub fn max_run(&self) -> std::time::Duration {
        self.max_run_seconds
            .map(|seconds| std::time::Duration::from_secs(seconds.max(1)))
            .unwrap_or(entra_sync_activities::DEFAULT_MAX_RUN)
    }

    pub fn retry_after_cap(&self) -> std::time::Duration {
        self.retry_after_cap_seconds
            .map(|seconds| std::time::Duration::from_secs(seconds.max(1)))
            .unwrap_or(entra_sync_connection::DEFAULT_RETRY_AFTER_CAP)
    }
}

/// The operations listener (`ENTRA_SYNC__METRICS__LISTEN`, e.g. `0.0.0.0:9464`): `/metrics`,
/// `/healthz` and `/readyz` on their own port, off the public API, for `serve` and `worker`.
#[derive(Debug, Deserialize, Default, Clone)]
pub struct MetricsSettings {
    #[serde(default)]
    pub listen: Option<String>,
}

/// The contract variable names (SPEC §8) and the keys they set.
const CONTRACT_VARIABLES: [(&str, &str); 22] = [
    ("DATABASE_URL", "database.url"),
    ("TEMPORAL_ADDRESS", "temporal.address"),
    ("TEMPORAL_NAMESPACE", "temporal.namespace"),
    ("TEMPORAL_TASK_QUEUE", "temporal.task_queue"),
    ("ENTRA_SYNC_LISTEN", "api.listen"),
    ("ENTRA_SYNC_MASTER_KEY", "api.master_key"),
    (
        "ENTRA_SYNC_OAUTH_STATE_TTL_SECONDS",
        "api.oauth_state_ttl_seconds",
    ),
    ("ENTRA_SYNC_ENCRYPTION_KEY", "encryption_key"),
    (
        "ENTRA_SYNC_PREVIOUS_ENCRYPTION_KEYS",
        "previous_encryption_keys",
    ),
    (
        "ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS",
        "allow_private_endpoints",
    ),
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

    /// The keys of `ENTRA_SYNC_PREVIOUS_ENCRYPTION_KEYS` (comma-separated base64, each 32
    /// bytes), newest first as written; empty when unset.
    pub fn previous_encryption_keys(&self) -> Result<Vec<[u8; 32]>> {
        use base64::Engine;
        use secrecy::ExposeSecret;
        let Some(list) = self.previous_encryption_keys.as_ref() else {
            return Ok(Vec::new());
        };
        list.expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .enumerate()
            .map(|(index, entry)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(entry)
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "ENTRA_SYNC_PREVIOUS_ENCRYPTION_KEYS entry {} is not valid base64",
                            index + 1
                        )
                    })?;
                bytes.try_into().map_err(|_| {
                    anyhow::anyhow!(
                        "ENTRA_SYNC_PREVIOUS_ENCRYPTION_KEYS entry {} must decode to exactly 32 bytes",
                        index + 1
                    )
                })
            })
            .collect()
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
        assert_eq!(settings.api.oauth_state_ttl_seconds, 600);
        assert_eq!(
            settings.worker.retry_after_cap(),
            std::time::Duration::from_secs(600)
        );
        assert_eq!(
            settings.worker.max_run(),
            std::time::Duration::from_secs(6 * 60 * 60)
        );
    }

    #[test]
    fn oauth_state_ttl_and_retry_after_cap_are_read() {
        let settings = Settings::load(
            None,
            &env(&[
                ("ENTRA_SYNC_OAUTH_STATE_TTL_SECONDS", "120"),
                ("ENTRA_SYNC__WORKER__RETRY_AFTER_CAP_SECONDS", "5"),
                ("ENTRA_SYNC__WORKER__MAX_RUN_SECONDS", "90"),
                ("ENTRA_SYNC__DATABASE__MAX_CONNECTIONS", "7"),
            ]),
        )
        .expect("settings load");
        assert_eq!(
            settings.worker.max_run(),
            std::time::Duration::from_secs(90)
        );
        assert_eq!(settings.api.oauth_state_ttl_seconds, 120);
        assert_eq!(
            settings.worker.retry_after_cap(),
            std::time::Duration::from_secs(5)
        );
        assert_eq!(settings.database.max_connections, 7);
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

    #[test]
    fn database_password_and_every_secret_are_redacted_in_debug_output() {
        let settings = Settings::load(
            None,
            &env(&[
                (
                    "DATABASE_URL",
                    "postgres://app:db-password-value@db.internal:5432/entra?sslmode=require",
                ),
                ("ENTRA_SYNC_ENCRYPTION_KEY", "ZW5jcnlwdGlvbi1rZXktdmFsdWU="),
                ("VAULT_TOKEN", "vault-token-value"),
                ("MICROSOFT_CLIENT_CERTIFICATE_KEY", "certificate-key-value"),
                (
                    "ENTRA_SYNC_PREVIOUS_ENCRYPTION_KEYS",
                    "cHJldmlvdXMta2V5LXZhbHVl",
                ),
            ]),
        )
        .expect("load");
        let printed = format!("{settings:?}");
        for secret in [
            "db-password-value",
            "ZW5jcnlwdGlvbi1rZXktdmFsdWU=",
            "vault-token-value",
            "certificate-key-value",
            "cHJldmlvdXMta2V5LXZhbHVl",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("db.internal:5432"), "{printed}");
        let in_query = redacted_url("postgres://db.internal/entra?user=app&password=query-secret");
        assert!(!in_query.contains("query-secret"), "{in_query}");
        assert_eq!(redacted_url("not a url"), "<unparsable URL>");
    }
}

//! Tokens and secrets never reach the logs on the *successful* paths: an authorization-code
//! exchange, a refresh, a customer-tenant token redemption and a CIPP API-client token mint,
//! all against the simulator over real HTTP with every DEBUG event captured. In its own test
//! binary because it installs a thread-local tracing subscriber (tracing's per-callsite
//! interest cache is shared with whatever else runs in the same process).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use entra_sync_directory::cipp::{CippAuth, CippClient, CippConfig};
use entra_sync_directory::error::{DirectoryError, SettingNames};
use entra_sync_directory::http::{HttpSettings, ThrottleStats};
use entra_sync_directory::oauth::{
    AppCredential, CustomerTokenCache, OAuthClient, OAuthConfig, RefreshTokenSource,
    GRAPH_DEFAULT_SCOPE,
};
use entra_sync_simulator::{Simulator, SimulatorConfig};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct OneRefreshToken(Mutex<SecretString>);

#[async_trait]
impl RefreshTokenSource for OneRefreshToken {
    async fn current_refresh_token(&self) -> Result<SecretString, DirectoryError> {
        Ok(self.0.lock().expect("lock").clone())
    }

    async fn store_rotated(&self, new_refresh_token: SecretString) -> Result<(), DirectoryError> {
        *self.0.lock().expect("lock") = new_refresh_token;
        Ok(())
    }
}

fn url(text: &str) -> Url {
    Url::parse(text).expect("a URL")
}

fn settings() -> HttpSettings {
    HttpSettings {
        request_timeout: Duration::from_secs(10),
        max_attempts: 2,
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        // The simulator listens on loopback.
        allow_private_endpoints: true,
        ..HttpSettings::default()
    }
}

#[tokio::test]
async fn successful_token_flows_log_no_secret() {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let simulator = Simulator::start(SimulatorConfig {
        tenants: 2,
        users: 40,
        ..SimulatorConfig::default()
    })
    .await
    .expect("simulator");
    let config = simulator.config().clone();
    let oauth = Arc::new(
        OAuthClient::new(
            OAuthConfig {
                login_base_url: url(&simulator.login_base_url()),
                client_id: config.app_client_id.clone(),
                credential: AppCredential::ClientSecret(SecretString::from(
                    config.app_client_secret.clone(),
                )),
                redirect_uri: Some(
                    "http://localhost:8080/auth/oauth2/microsoft/callback".to_owned(),
                ),
                settings: SettingNames::MICROSOFT,
            },
            settings(),
            Arc::new(ThrottleStats::default()),
        )
        .expect("oauth client"),
    );

    // 1. The authorization-code exchange, as the callback does it.
    let request = oauth.begin_authorization(None).expect("authorize URL");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let answer = browser
        .get(request.url.clone())
        .send()
        .await
        .expect("authorize answers");
    let location = answer
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .map(url)
        .expect("redirected back");
    let code = location
        .query_pairs()
        .find(|(key, _)| key == "code")
        .map(|(_, value)| value.into_owned())
        .expect("a code");
    let exchanged = oauth
        .exchange_code(&SecretString::from(code.clone()), &request.code_verifier)
        .await
        .expect("code exchange");
    let first_refresh = exchanged.refresh_token.clone().expect("a refresh token");

    // 2. A refresh at the partner tenant.
    let partner = config.partner_tenant_id.clone();
    let refreshed = oauth
        .refresh(&partner, &first_refresh, GRAPH_DEFAULT_SCOPE)
        .await
        .expect("refresh");
    let second_refresh = refreshed.refresh_token.clone().expect("rotated");

    // 3. A customer-tenant token redeemed from the refresh token.
    let customer = simulator.msp().tenants[0].tenant_id.clone();
    let cache = CustomerTokenCache::new(
        oauth.clone(),
        Arc::new(OneRefreshToken(Mutex::new(second_refresh.clone()))),
    );
    let customer_token = cache
        .access_token(&customer, GRAPH_DEFAULT_SCOPE)
        .await
        .expect("customer token");

    // 4. A CIPP API-client token minted by client credentials, then used.
    let cipp = CippClient::new(
        CippConfig {
            base_url: url(&simulator.cipp_base_url()),
            auth: CippAuth::ClientCredentials {
                client_id: config.cipp_client_id.clone(),
                client_secret: SecretString::from(config.cipp_client_secret.clone()),
                tenant_id: partner.clone(),
            },
            login_base_url: url(&simulator.login_base_url()),
        },
        settings(),
        Arc::new(ThrottleStats::default()),
    )
    .expect("cipp client");
    assert!(!cipp.list_tenants().await.expect("tenants").is_empty());

    let logs = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(!logs.is_empty(), "nothing was logged at all");
    let secrets = [
        code.as_str(),
        request.code_verifier.expose_secret(),
        exchanged.access_token.expose_secret(),
        first_refresh.expose_secret(),
        refreshed.access_token.expose_secret(),
        second_refresh.expose_secret(),
        customer_token.expose_secret(),
        config.app_client_secret.as_str(),
        config.cipp_client_secret.as_str(),
        // Every token the simulator issues carries one of these prefixes, the CIPP token
        // minted inside the client included.
        "sim-at.",
        "sim-rt.",
        "sim-code.",
    ];
    for secret in secrets {
        assert!(
            !logs.contains(secret),
            "a secret ({}…) was logged",
            &secret[..secret.len().min(8)]
        );
    }
}

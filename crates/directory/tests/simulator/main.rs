//! The directory clients against the Microsoft and CIPP simulator over real HTTP: one test
//! binary, one module per client, each test with its own simulator on a free port.

mod cipp;
mod graph;
mod http;
mod oauth;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use entra_sync_directory::error::{DirectoryError, SettingNames};
use entra_sync_directory::graph::{GraphClient, GraphConfig};
use entra_sync_directory::http::{HttpSettings, ThrottleStats};
use entra_sync_directory::oauth::{
    AppCredential, CustomerTokenCache, OAuthClient, OAuthConfig, RefreshTokenSource, TokenSet,
};
use entra_sync_simulator::{CustomerTenant, LoggedRequest, Simulator, SimulatorConfig};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub const REDIRECT_URI: &str = "http://localhost:8080/auth/oauth2/microsoft/callback";

/// A small directory: the defaults' paging behaviour (a tenant above 999 users) with fewer
/// tenants, so each test starts quickly.
pub async fn start_simulator() -> Simulator {
    Simulator::start(SimulatorConfig {
        tenants: 4,
        users: 2_400,
        ..SimulatorConfig::default()
    })
    .await
    .expect("simulator starts")
}

/// Short waits so retry tests stay fast; the Retry-After floor is still the simulator's.
pub fn fast_settings() -> HttpSettings {
    HttpSettings {
        request_timeout: Duration::from_secs(10),
        max_attempts: 4,
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        per_tenant_concurrency: 4,
        background: true,
        // The simulator listens on loopback.
        allow_private_endpoints: true,
        ..HttpSettings::default()
    }
}

pub fn url(text: &str) -> Url {
    Url::parse(text).expect("a URL")
}

pub fn largest_tenant(simulator: &Simulator) -> CustomerTenant {
    let msp = simulator.msp();
    msp.tenants
        .into_iter()
        .max_by_key(|tenant| tenant.users.len())
        .expect("a tenant")
}

pub fn smallest_tenant(simulator: &Simulator) -> CustomerTenant {
    let msp = simulator.msp();
    msp.tenants
        .into_iter()
        .min_by_key(|tenant| tenant.users.len())
        .expect("a tenant")
}

pub fn listed_user_count(tenant: &CustomerTenant) -> usize {
    tenant.users.iter().filter(|user| !user.deleted).count()
}

pub fn app_oauth_config(simulator: &Simulator, credential: AppCredential) -> OAuthConfig {
    OAuthConfig {
        login_base_url: url(&simulator.login_base_url()),
        client_id: simulator.config().app_client_id.clone(),
        credential,
        redirect_uri: Some(REDIRECT_URI.to_owned()),
        settings: SettingNames::MICROSOFT,
    }
}

pub fn app_secret(simulator: &Simulator) -> AppCredential {
    AppCredential::ClientSecret(SecretString::from(
        simulator.config().app_client_secret.clone(),
    ))
}

pub fn oauth_client(simulator: &Simulator, stats: Arc<ThrottleStats>) -> OAuthClient {
    OAuthClient::new(
        app_oauth_config(simulator, app_secret(simulator)),
        fast_settings(),
        stats,
    )
    .expect("oauth client")
}

/// The refresh-token store of a test: the current token, and every rotation it was told of.
pub struct MemoryRefreshTokens {
    current: Mutex<SecretString>,
    pub rotations: Mutex<Vec<String>>,
}

impl MemoryRefreshTokens {
    pub fn new(refresh_token: SecretString) -> Self {
        MemoryRefreshTokens {
            current: Mutex::new(refresh_token),
            rotations: Mutex::new(Vec::new()),
        }
    }

    pub fn current(&self) -> String {
        self.current
            .lock()
            .expect("lock")
            .expose_secret()
            .to_owned()
    }

    pub fn rotation_count(&self) -> usize {
        self.rotations.lock().expect("lock").len()
    }
}

#[async_trait]
impl RefreshTokenSource for MemoryRefreshTokens {
    async fn current_refresh_token(&self) -> Result<SecretString, DirectoryError> {
        Ok(self.current.lock().expect("lock").clone())
    }

    async fn store_rotated(&self, new_refresh_token: SecretString) -> Result<(), DirectoryError> {
        self.rotations
            .lock()
            .expect("lock")
            .push(new_refresh_token.expose_secret().to_owned());
        *self.current.lock().expect("lock") = new_refresh_token;
        Ok(())
    }
}

/// Runs the authorization-code flow against the simulator as a browser would (the simulator
/// consents at once and redirects back with a code) and returns the refresh token.
pub async fn connect(simulator: &Simulator, oauth: &OAuthClient) -> SecretString {
    connect_token_set(simulator, oauth)
        .await
        .refresh_token
        .expect("offline_access yields a refresh token")
}

/// The whole token set of the authorization-code flow.
pub async fn connect_token_set(simulator: &Simulator, oauth: &OAuthClient) -> TokenSet {
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
    assert_eq!(answer.status().as_u16(), 302, "authorize redirects back");
    let location = answer
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .expect("a Location header");
    let location = url(location);
    let query: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(
        query.get("state").map(String::as_str),
        Some(request.state.expose_secret())
    );
    let code = SecretString::from(query.get("code").expect("a code").clone());
    let _ = simulator;
    oauth
        .exchange_code(&code, &request.code_verifier)
        .await
        .expect("code exchange")
}

/// A connected Graph client and the refresh-token store behind it.
pub struct GraphSetup {
    pub graph: Arc<GraphClient>,
    pub refresh_tokens: Arc<MemoryRefreshTokens>,
    pub stats: Arc<ThrottleStats>,
}

pub async fn graph_setup(simulator: &Simulator, settings: HttpSettings) -> GraphSetup {
    graph_setup_at(simulator, settings, url(&simulator.graph_base_url())).await
}

pub async fn graph_setup_at(
    simulator: &Simulator,
    settings: HttpSettings,
    graph_base: Url,
) -> GraphSetup {
    let stats = Arc::new(ThrottleStats::default());
    let oauth = Arc::new(oauth_client(simulator, stats.clone()));
    let refresh_token = connect(simulator, &oauth).await;
    let refresh_tokens = Arc::new(MemoryRefreshTokens::new(refresh_token));
    let tokens = Arc::new(CustomerTokenCache::new(oauth, refresh_tokens.clone()));
    let graph = GraphClient::new(
        GraphConfig::new(graph_base, simulator.config().partner_tenant_id.clone()),
        tokens,
        settings,
        stats.clone(),
    )
    .expect("graph client");
    GraphSetup {
        graph: Arc::new(graph),
        refresh_tokens,
        stats,
    }
}

/// Token requests made at `tenant`'s token endpoint.
pub fn token_requests(simulator: &Simulator, tenant: &str) -> usize {
    let path = format!("/login/{tenant}/oauth2/v2.0/token");
    simulator
        .request_log()
        .iter()
        .filter(|request| request.path == path)
        .count()
}

pub fn requests_to(simulator: &Simulator, path: &str) -> Vec<LoggedRequest> {
    simulator
        .request_log()
        .into_iter()
        .filter(|request| request.path == path)
        .collect()
}

/// The time from a throttled answer to the next request on the same path.
pub fn gap_after_status(requests: &[LoggedRequest], status: u16) -> Duration {
    let position = requests
        .iter()
        .position(|request| request.status == status)
        .expect("a throttled request");
    let next: Instant = requests.get(position + 1).expect("a retry").at;
    next.duration_since(requests[position].at)
}

pub fn assert_class(
    result: Result<impl std::fmt::Debug, DirectoryError>,
    class: &str,
) -> DirectoryError {
    match result {
        Ok(value) => panic!("expected a {class} error, got {value:?}"),
        Err(error) => {
            assert_eq!(error.class(), class, "{error:?}");
            error
        }
    }
}

//! A simulator of the Microsoft identity platform, Microsoft Graph and a CIPP instance, for entra-sync's tests, demo and benchmarks.
//!
//! Every behaviour follows `design/MICROSOFT.md` (the wire contract) and names its section in a comment.
//! Start one with [`Simulator::start`]; it serves real HTTP on a loopback port:
//!
//! | prefix | stands in for |
//! |---|---|
//! | `{base}/login` | `https://login.microsoftonline.com` (authorize and token endpoints, MICROSOFT.md §1) |
//! | `{base}/graph` | `https://graph.microsoft.com` (`/v1.0/users`, `/v1.0/users/delta`, `/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user`, GDAP, `domains`, `organization`; §2–§4) |
//! | `{base}/cipp` | a CIPP instance (`/api/ListTenants`, `/api/ListUsers`, `/api/ListGraphRequest`; §5a) |
//! | `{base}/_admin` | the simulator's own admin API (directory changes, faults, clock, settings) |
//!
//! # Generated data
//! [`generate`] is pure and deterministic from the seed and sizes. With the defaults (seed 42, 20 tenants,
//! 5,000 users):
//! - tenants have company-like names (`Contoso Dental`, `Northwind Logistics LLC`, `Fabrikam Legal GmbH`; about
//!   three in four carry a legal suffix such as Inc, LLC, Ltd, GmbH, Pty Ltd), an initial `xxx.onmicrosoft.com`
//!   domain, a default custom domain (`contoso-dental.com`) and, for about a third, an extra verified domain
//!   (`contoso-dental.co.uk`);
//! - users are spread unevenly (every tenant has at least one); when there are enough users two tenants get
//!   at least 1,000 (about 1,500 and 1,400 with the defaults), so `$top=999` paging spans several pages;
//! - positions 1 to 6 of each tenant are, in order, a guest (`userType` Guest, `creationType` Invitation, UPN
//!   `alice.smith_gmail.com#EXT#@contosodental.onmicrosoft.com`, the real address in `mail` and `otherMails`),
//!   an external member (`userType` Member with an `#EXT#` UPN), a disabled user, a shared-mailbox-like user
//!   (display name such as "Accounts Payable", no given name, unlicensed, `accountEnabled` false), a user with
//!   null `mail` whose UPN is their address, and a user whose only usable address is a `smtp:` alias on the
//!   custom domain (null `mail`, UPN on the onmicrosoft.com domain);
//! - the rest are drawn at random: about 6% guests, 2% external members, 4% disabled, 2% shared mailboxes,
//!   8% null mail, 3% alias-only, and regular licensed members otherwise;
//! - regular members have `mail` = UPN = `given.surname@custom`, `proxyAddresses` with the primary `SMTP:`
//!   and an `smtp:` alias on the initial (sometimes also the extra) domain, sometimes `otherMails`; about 80%
//!   have a job title, half a mobile phone, 60% one business phone (never more than one).
//!
//! Groups: every tenant has three security groups, derived from its users without drawing randomness (so
//! they changed no other generated data): "All Staff" (every `userType` Member), "Sales" (positions divisible
//! by 3) and "Contractors" (positions 1, 6, 11, …). Ids are GUIDs `0000000n-6e0a-4b1c-9d2e-{tenant id's last
//! part}`. `transitiveMembers/microsoft.graph.user` lists the listed (not deleted) members as
//! `{"@odata.type":"#microsoft.graph.user","id":…}` with `$select`/`$top` paging like `users`; CIPP's
//! `ListGraphRequest` serves the same endpoint. An unknown group answers 404 `Request_ResourceNotFound`.
//!
//! GDAP: every tenant has an active relationship; every fourth a second active one; every fifth (from the
//! third) an expired one; and a former customer has only a terminated one, so `$filter=status eq 'active'`
//! matters.
//!
//! Also served: `GET {login}/{tenant}/adminconsent` (MICROSOFT.md §1 admin consent URL; it clears the tenant's
//! consent problem and redirects with `admin_consent=True&tenant=…&state=…`) and `GET {graph}/v1.0/contracts`
//! (MICROSOFT.md §2, the older DAP view).
//!
//! # Choices where MICROSOFT.md is silent
//! - `common` and `organizations` in a login path resolve to the partner tenant, where the MSP admin signs in.
//!   An unknown tenant id or domain answers AADSTS90002.
//! - The partner tenant has no simulated users: `users` and `users/delta` with a partner token answer empty.
//! - Delta expiry: `Gone` (the default) answers 410 with `Location` and a `resyncRequired` body; the code-only
//!   modes (`syncStateNotFound`, `SyncStateNotFound`, `resyncRequired`) answer 400 without `Location`, so a
//!   client must branch on the error code and not only on 410. An unreadable delta token counts as expired.
//! - `$filter`, `$orderby`, `$expand`, `$search` and `$count` on `users` are refused with a 400
//!   `Request_UnsupportedQuery` rather than silently ignored.
//! - Client assertions (certificate or federated credentials) are accepted without checking their signature;
//!   `client_secret_basic` is accepted like a `client_secret` form field.
//! - The CIPP 400 body is a JSON string (`"Graph Error: … - Endpoint: users"`); 401, 403 and 503 are plain text;
//!   `Metadata` is `{}` on the last ListGraphRequest page.
//!
//! # Admin API
//! Every admin operation also has a Rust method on [`Simulator`] (e.g. [`Simulator::soft_delete_user`],
//! [`Simulator::add_fault`], [`Simulator::advance_clock`]), so tests need not go over HTTP.
//!
//! `{tenant}` is a tenant id or any of its domains; `{user}` an object id. Errors answer
//! `{"error":"…"}` with 404 (unknown tenant or user), 409 (wrong state, e.g. restoring a live user) or 400.
//! Admin requests are not recorded in the request log.
//!
//! | method and path | body (example) | effect |
//! |---|---|---|
//! | `GET /_admin/state` | | summary: tenants with user counts, version, consent fault; settings; faults; token counts |
//! | `POST /_admin/reset` | | regenerate from the config; forget tokens, faults, settings, clock, request log |
//! | `GET /_admin/tenants/{tenant}/users` | | every user (soft-deleted included, `deleted: true`), snake_case fields |
//! | `POST /_admin/tenants/{tenant}/users` | `{"given_name":"Ada","surname":"Lovelace","job_title":"Analyst","mail":"ada@contoso-dental.com"}` | add a member (mail and UPN default to `given.surname@{default domain}`) |
//! | `PATCH /_admin/tenants/{tenant}/users/{user}` | `{"display_name":"Ada King","given_name":"Ada","surname":"King","mail":null,"job_title":"CTO","mobile_phone":"+1 …"}` | rename, change or clear mail (`null`), job title, mobile |
//! | `POST /_admin/tenants/{tenant}/users/{user}/{action}` | | `disable`, `enable`, `soft-delete` (delta `@removed` reason `changed`), `hard-delete` (reason `deleted`), `restore` |
//! | `POST /_admin/tenants/{tenant}/consent` | `{"fault":"aadsts65001"}` (or `aadsts90099`, `graph_request_denied`, `graph_identity_not_found`, `null` to clear) | per-tenant consent or role problem |
//! | `POST /_admin/tenants/{tenant}/delta/expire` | | every delta link and delta skip token issued so far answers as expired |
//! | `GET /_admin/faults` | | active faults with ids and remaining counts |
//! | `POST /_admin/faults` | `{"kind":"throttle","retry_after_secs":2,"path_prefix":"/graph/v1.0/users","tenant":"contoso-dental.com","count":3}` | add a fault; answers `{"id":n}` |
//! | `DELETE /_admin/faults`, `DELETE /_admin/faults/{id}` | | clear all faults / one |
//! | `POST /_admin/clock` | `{"advance_secs":691200}` or `{"offset_secs":0}` | move the simulator clock (token, code, delta-token ages) |
//! | `GET /_admin/settings`, `POST /_admin/settings` | `{"access_token_lifetime_secs":60,"delta_page_size":50,"delta_duplicates":true,"empty_pages":false,"delta_expiry":"sync_state_not_found","resource_unit_throttling":true,"resource_unit_limit":100,"redirect_uris":["https://psa.example.com/auth/oauth2/microsoft/callback"]}` | read / partially update [`Settings`] |
//! | `POST /_admin/tokens/revoke` | | forget every issued access token |
//!
//! Fault kinds (`"kind"`): `throttle` (`retry_after_secs`), `unavailable` (optional `retry_after_secs`),
//! `gateway_timeout`, `unauthorized`, `delay` (`ms`), `malformed_json`, `cipp_tenants_error_row`, `cipp_tenants_permission_row`, `cipp_forbidden`,
//! `cipp_disabled`, `cipp_graph_error`, `token_error` (`aadsts`, e.g. 70008, 50173, 7000215, 700016, 90002),
//! `authorize_denied`. `path_prefix` defaults to `/`; `tenant` and `count` are optional (no count: until cleared).
//!
//! # Binary
//! `entra-sync-simulator --seed N --tenants N --users N --listen 127.0.0.1:PORT` (also `SIMULATOR_SEED`,
//! `SIMULATOR_TENANTS`, `SIMULATOR_USERS`, `SIMULATOR_LISTEN`, `--size-median N` (`SIMULATOR_SIZE_MEDIAN`: log-normal
//! tenant sizes with that median, for benchmarks), and `SIMULATOR_APP_CLIENT_ID`, …
//! `SIMULATOR_PARTNER_TENANT_ID` for the credentials) prints `simulator listening on http://…` and serves
//! until killed.

// Handlers return `Result<_, Response>` so an early answer (an error body) reads as `?`-style control flow;
// boxing every response to satisfy this lint would only add noise on a test tool's hot path.
#![allow(clippy::result_large_err)]

mod admin;
mod cipp;
mod data;
mod graph;
mod login;
mod server;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;

pub use data::{generate, CustomerTenant, Domain, Msp, SimGroup, SimUser};
pub use server::LoggedRequest;
pub use state::{
    AdminError, ConsentFault, DeltaExpiry, FaultKind, FaultSpec, NewUser, Settings, TokenKind,
    UserPatch,
};

use server::Shared;

/// How to build and serve a simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatorConfig {
    pub seed: u64,
    /// Managed customer tenants.
    pub tenants: usize,
    /// Total users across tenants.
    pub users: usize,
    /// `None` binds `127.0.0.1:0`.
    pub listen: Option<SocketAddr>,
    /// The MSP's multi-tenant Entra app (direct connection).
    pub app_client_id: String,
    pub app_client_secret: String,
    /// The CIPP API client.
    pub cipp_client_id: String,
    pub cipp_client_secret: String,
    /// A pre-issued CIPP bearer token that is always accepted.
    pub cipp_api_token: String,
    /// The MSP's own tenant id (GUID).
    pub partner_tenant_id: String,
    /// When set, tenant sizes are drawn log-normally with about this median (the mean being
    /// `users / tenants`), as a real MSP's customer base is: many small tenants, a few large
    /// ones. `None` keeps the default spread. For benchmarks.
    pub size_median: Option<usize>,
}

/// Default app (direct connection) client id.
pub const DEFAULT_APP_CLIENT_ID: &str = "5a1e0000-0000-4000-8000-00000000a001";
/// Default app client secret.
pub const DEFAULT_APP_CLIENT_SECRET: &str = "sim-app-secret-value";
/// Default CIPP API client id.
pub const DEFAULT_CIPP_CLIENT_ID: &str = "c1bb0000-0000-4000-8000-00000000c001";
/// Default CIPP API client secret.
pub const DEFAULT_CIPP_CLIENT_SECRET: &str = "sim-cipp-secret-value";
/// Default pre-issued CIPP bearer token.
pub const DEFAULT_CIPP_API_TOKEN: &str = "sim-cipp-api-token";
/// Default partner (MSP) tenant id.
pub const DEFAULT_PARTNER_TENANT_ID: &str = "9a57e000-0000-4000-8000-0000000000f1";

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            tenants: 20,
            users: 5_000,
            listen: None,
            app_client_id: DEFAULT_APP_CLIENT_ID.to_string(),
            app_client_secret: DEFAULT_APP_CLIENT_SECRET.to_string(),
            cipp_client_id: DEFAULT_CIPP_CLIENT_ID.to_string(),
            cipp_client_secret: DEFAULT_CIPP_CLIENT_SECRET.to_string(),
            cipp_api_token: DEFAULT_CIPP_API_TOKEN.to_string(),
            partner_tenant_id: DEFAULT_PARTNER_TENANT_ID.to_string(),
            size_median: None,
        }
    }
}

/// A running simulator. Dropping it stops the server.
pub struct Simulator {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Simulator {
    /// Generates the data and serves it in a background tokio task.
    pub async fn start(config: SimulatorConfig) -> anyhow::Result<Simulator> {
        let listen = config
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("bind simulator to {listen}"))?;
        let address = listener.local_addr().context("read simulator address")?;
        let shared = Arc::new(Shared {
            state: Mutex::new(state::State::new(&config)),
            config,
            base_url: format!("http://{address}"),
            log: Mutex::new(Vec::new()),
        });
        tracing::info!(base_url = %shared.base_url, "simulator listening");
        let app = server::router(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "simulator server stopped");
            }
        });
        Ok(Simulator { shared, server })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Stands in for `https://login.microsoftonline.com`.
    pub fn login_base_url(&self) -> String {
        format!("{}/login", self.shared.base_url)
    }

    /// Stands in for `https://graph.microsoft.com`.
    pub fn graph_base_url(&self) -> String {
        self.shared.graph_base()
    }

    /// A CIPP instance's base URL (`{cipp}/api/ListTenants`).
    pub fn cipp_base_url(&self) -> String {
        format!("{}/cipp", self.shared.base_url)
    }

    /// The current directory state, after admin changes. Hard-deleted users are absent; soft-deleted ones
    /// have `deleted: true`.
    pub fn msp(&self) -> Msp {
        self.shared
            .lock()
            .snapshot(&self.shared.config.partner_tenant_id)
    }

    pub fn config(&self) -> &SimulatorConfig {
        &self.shared.config
    }

    /// Every request served so far (admin requests excluded), oldest first. Past 200,000 entries the
    /// oldest half is dropped.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.lock_log().clone()
    }

    pub fn clear_request_log(&self) {
        self.shared.lock_log().clear();
    }

    /// The JSON summary `GET /_admin/state` answers.
    pub fn state_summary(&self) -> serde_json::Value {
        admin::summary(&self.shared)
    }

    /// Regenerates the data from the config and forgets tokens, faults, settings, clock and request log.
    pub fn reset(&self) {
        admin::reset_shared(&self.shared);
    }

    pub fn add_user(&self, tenant: &str, new_user: NewUser) -> Result<SimUser, AdminError> {
        self.shared.lock().add_user(tenant, new_user)
    }

    pub fn disable_user(&self, tenant: &str, user_id: &str) -> Result<SimUser, AdminError> {
        self.shared.lock().set_enabled(tenant, user_id, false)
    }

    pub fn enable_user(&self, tenant: &str, user_id: &str) -> Result<SimUser, AdminError> {
        self.shared.lock().set_enabled(tenant, user_id, true)
    }

    /// Soft delete: delta reports `@removed` reason `changed`; the users list omits the user.
    pub fn soft_delete_user(&self, tenant: &str, user_id: &str) -> Result<(), AdminError> {
        self.shared.lock().soft_delete(tenant, user_id)
    }

    /// Hard delete: delta reports `@removed` reason `deleted`.
    pub fn hard_delete_user(&self, tenant: &str, user_id: &str) -> Result<(), AdminError> {
        self.shared.lock().hard_delete(tenant, user_id)
    }

    /// Restores a soft-deleted user; delta reports it again with no annotation.
    pub fn restore_user(&self, tenant: &str, user_id: &str) -> Result<SimUser, AdminError> {
        self.shared.lock().restore(tenant, user_id)
    }

    /// Renames a user; `None` leaves a name part unchanged.
    pub fn rename_user(
        &self,
        tenant: &str,
        user_id: &str,
        display_name: Option<&str>,
        given_name: Option<&str>,
        surname: Option<&str>,
    ) -> Result<SimUser, AdminError> {
        let patch = UserPatch {
            display_name: display_name.map(str::to_string),
            given_name: given_name.map(str::to_string),
            surname: surname.map(str::to_string),
            ..UserPatch::default()
        };
        self.shared.lock().update_user(tenant, user_id, patch)
    }

    /// Sets or clears `mail`; a new address becomes the primary `SMTP:` proxy address.
    pub fn change_mail(
        &self,
        tenant: &str,
        user_id: &str,
        mail: Option<&str>,
    ) -> Result<SimUser, AdminError> {
        let patch = UserPatch {
            mail: Some(mail.map(str::to_string)),
            ..UserPatch::default()
        };
        self.shared.lock().update_user(tenant, user_id, patch)
    }

    /// Any combination of field changes at once.
    pub fn update_user(
        &self,
        tenant: &str,
        user_id: &str,
        patch: UserPatch,
    ) -> Result<SimUser, AdminError> {
        self.shared.lock().update_user(tenant, user_id, patch)
    }

    /// Adds a fault and returns its id.
    pub fn add_fault(&self, fault: FaultSpec) -> Result<u64, AdminError> {
        self.shared.lock().add_fault(fault)
    }

    /// Removes one fault; false if it was gone (used up or never added).
    pub fn remove_fault(&self, id: u64) -> bool {
        let mut state = self.shared.lock();
        let before = state.faults.len();
        state.faults.retain(|fault| fault.id != id);
        before != state.faults.len()
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Sets (or with `None` clears) a customer tenant's consent or role problem.
    pub fn set_consent_fault(
        &self,
        tenant: &str,
        fault: Option<ConsentFault>,
    ) -> Result<(), AdminError> {
        self.shared.lock().set_consent_fault(tenant, fault)
    }

    /// Invalidates every delta link and delta skip token issued so far for the tenant.
    pub fn expire_delta_tokens(&self, tenant: &str) -> Result<(), AdminError> {
        self.shared.lock().expire_delta_tokens(tenant)
    }

    /// Moves the simulator clock (token, code and delta-token ages) forward by `seconds`.
    pub fn advance_clock(&self, seconds: i64) {
        self.shared.lock().advance_clock(seconds);
    }

    pub fn settings(&self) -> Settings {
        self.shared.lock().settings.clone()
    }

    pub fn set_settings(&self, settings: Settings) {
        self.shared.lock().settings = settings;
    }

    /// Forgets every issued access token (refresh tokens stay valid).
    pub fn revoke_access_tokens(&self) {
        self.shared.lock().revoke_access_tokens();
    }
}

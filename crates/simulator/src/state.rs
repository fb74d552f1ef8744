//! The simulator's mutable state: directories with their change log, issued credentials, faults and settings.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{self, CustomerTenant, Domain, Msp, SimGroup, SimUser};
use crate::SimulatorConfig;

/// Why an admin operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("unknown tenant {0}")]
    UnknownTenant(String),
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("user {0} is not in a state that allows this operation")]
    WrongState(String),
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// A fault to inject, scoped by request path prefix and optionally by tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultSpec {
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Only requests whose path starts with this prefix (e.g. `/graph/v1.0/users`, `/login`, `/cipp/api/ListTenants`).
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Only requests for this tenant (tenant id or domain): the token's tenant for Graph, the path tenant for
    /// login, `tenantFilter` for CIPP. `None` matches every request.
    #[serde(default)]
    pub tenant: Option<String>,
    /// How many matching requests get the fault; `None` until cleared.
    #[serde(default)]
    pub count: Option<u32>,
}

impl FaultSpec {
    /// A fault on every request whose path starts with `path_prefix`, whatever its tenant,
    /// until it is removed.
    pub fn everywhere(kind: FaultKind, path_prefix: impl Into<String>) -> Self {
        FaultSpec {
            kind,
            path_prefix: path_prefix.into(),
            tenant: None,
            count: None,
        }
    }
}

fn default_prefix() -> String {
    "/".to_string()
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// MICROSOFT.md §4: 429 with `Retry-After` seconds.
    Throttle { retry_after_secs: u64 },
    /// MICROSOFT.md §4: 503, possibly with `Retry-After`.
    Unavailable {
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// MICROSOFT.md §4: 504.
    GatewayTimeout,
    /// A 401 `InvalidAuthenticationToken` for a token the tenant no longer accepts (Microsoft
    /// Graph "Resolve authorization errors", https://learn.microsoft.com/en-us/graph/resolve-auth-errors:
    /// a 401 means the presented token is missing, invalid or expired for the resource).
    Unauthorized,
    /// A slow response: the request is answered normally after this delay.
    Delay { ms: u64 },
    /// A 200 whose JSON body is cut off mid-way.
    MalformedJson,
    /// A 200 with this body instead of the documented collection: `{}`, `{"Results":null}`, or
    /// a proxy's or captive portal's HTML page (`content_type` `text/html`). MICROSOFT.md §5
    /// and §5a document the collection shapes (`value`, `Results`); anything else answering
    /// 200 on the way is what this stands for.
    OkBody {
        body: String,
        #[serde(default)]
        content_type: Option<String>,
    },
    /// A 200 whose body stops part-way and whose connection is then dropped (the chunked
    /// framing never ends): what a reset connection or a proxy timing out mid-answer looks like
    /// to the client, which can only see that the answer was cut off.
    CutOff,
    /// Chaos: each matching request independently gets a 429 with `Retry-After`
    /// (MICROSOFT.md §4), a 503 (§4), a cut-off answer ([`FaultKind::CutOff`]) or its normal
    /// answer, with these percentages drawn from the simulator's seeded generator.
    Mix {
        throttle_percent: u8,
        unavailable_percent: u8,
        cut_off_percent: u8,
        retry_after_secs: u64,
    },
    /// MICROSOFT.md §5a: ListTenants answers 200 with the one error row.
    CippTenantsErrorRow,
    /// MICROSOFT.md §5a: the same 200 error row without a Microsoft error code, with CIPP's text
    /// "Failed to retrieve tenants. Perform a permission check." (what CIPP answers when its
    /// API client or its own access to the partner tenant lacks permission).
    CippTenantsPermissionRow,
    /// MICROSOFT.md §5a: 403 with a plain-text body.
    CippForbidden,
    /// MICROSOFT.md §5a: 503 "This feature has been disabled".
    CippDisabled,
    /// MICROSOFT.md §5a: 400 "Graph Error: … - Endpoint: …".
    CippGraphError,
    /// MICROSOFT.md §1: the token endpoint answers this AADSTS error (e.g. 70008, 50173, 7000215, 700016, 90002).
    TokenError { aadsts: u32 },
    /// MICROSOFT.md §1: the authorize endpoint redirects back with `error=access_denied`.
    AuthorizeDenied,
}

/// A per-customer-tenant consent or role problem (MICROSOFT.md §1 and §5 `tenant_access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentFault {
    /// Token endpoint at the tenant: invalid_grant AADSTS65001 (consent missing).
    Aadsts65001,
    /// Token endpoint at the tenant: invalid_grant AADSTS90099 (app not authorized in the tenant).
    Aadsts90099,
    /// Graph: 403 `Authorization_RequestDenied`.
    GraphRequestDenied,
    /// Graph: 401 `Authorization_IdentityNotFound`.
    GraphIdentityNotFound,
}

/// How an expired or invalidated delta token is answered (MICROSOFT.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaExpiry {
    /// 410 Gone with a `Location` header (and a `resyncRequired` error body).
    Gone,
    /// Error code `syncStateNotFound`.
    SyncStateNotFound,
    /// Error code `SyncStateNotFound`, as seen in the wild.
    SyncStateNotFoundPascal,
    /// Error code `resyncRequired`.
    ResyncRequired,
}

/// Behaviour switches that tests and the admin API can change at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// MICROSOFT.md §1: `expires_in` 3599 by default; shorter for tests.
    pub access_token_lifetime_secs: u64,
    /// Graph chooses the delta page size itself (MICROSOFT.md §3 forbids `$top` on delta).
    pub delta_page_size: usize,
    /// MICROSOFT.md §3: entries can repeat; when on, every non-empty delta page repeats its first entry.
    pub delta_duplicates: bool,
    /// MICROSOFT.md §3: entries can come in any order; when on, every delta page lists its entries in reverse.
    pub delta_reorder: bool,
    /// MICROSOFT.md §3: a page can be empty and still carry a nextLink; when on, every fourth tenant's
    /// listings answer one empty page after the first one.
    pub empty_pages: bool,
    pub delta_expiry: DeltaExpiry,
    /// MICROSOFT.md §3: directory delta tokens last 7 days.
    pub delta_token_max_age_secs: i64,
    /// MICROSOFT.md §1: codes live about 10 minutes.
    pub authorization_code_lifetime_secs: i64,
    /// MICROSOFT.md §1: the redirect URI must exactly match a registered one; empty accepts any http(s) URI.
    pub redirect_uris: Vec<String>,
    /// MICROSOFT.md §4: enforce the identity resource-unit budget per app per tenant per 10 seconds
    /// (3,500 / 5,000 / 8,000 for tenants with < 50 / 50–500 / > 500 users; `GET users` costs 2 units,
    /// 1 with `$select`) and answer 429 with `Retry-After` when it is spent. Off by default.
    pub resource_unit_throttling: bool,
    /// Replaces the size-based budget, so tests can hit the limit with few requests.
    pub resource_unit_limit: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            access_token_lifetime_secs: 3599,
            delta_page_size: 200,
            delta_duplicates: false,
            delta_reorder: false,
            empty_pages: true,
            delta_expiry: DeltaExpiry::Gone,
            delta_token_max_age_secs: 7 * 24 * 3600,
            authorization_code_lifetime_secs: 600,
            redirect_uris: Vec::new(),
            resource_unit_throttling: false,
            resource_unit_limit: None,
        }
    }
}

/// Who an access token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Delegated token of the MSP's admin in the partner tenant.
    PartnerDelegated,
    /// Delegated token for a customer tenant (MICROSOFT.md §1 Secure Application Model).
    CustomerDelegated,
    /// App-only Graph token (client credentials) for the partner or a customer tenant.
    App,
    /// CIPP API token (client credentials with `api://{cipp client id}/.default`).
    Cipp,
}

#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub tenant_id: String,
    pub kind: TokenKind,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct RefreshRecord {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub last_used: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scopes: Vec<String>,
    pub issued_at: DateTime<Utc>,
    pub redeemed: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct ActiveFault {
    pub id: u64,
    pub spec: FaultSpec,
}

/// A GDAP relationship (MICROSOFT.md §2).
#[derive(Debug, Clone)]
pub(crate) struct Relationship {
    pub id: String,
    pub display_name: String,
    pub customer_tenant_id: String,
    pub customer_display_name: String,
    pub status: &'static str,
    pub end_date_time: DateTime<Utc>,
    pub auto_extend_duration: &'static str,
    pub role_definition_ids: Vec<&'static str>,
}

/// One user plus the change log the delta query reads.
#[derive(Debug, Clone)]
pub(crate) struct UserRecord {
    /// Boxed, so that a delta round's pass over a large tenant's records (which reads only
    /// the versions below) walks a few megabytes instead of every user's fields.
    pub user: Box<SimUser>,
    pub hard_deleted: bool,
    /// Version of the last create, soft delete, hard delete or restore.
    pub lifecycle_version: u64,
    /// Version of the last change per Graph property name.
    pub property_versions: HashMap<&'static str, u64>,
}

impl UserRecord {
    pub fn is_listed(&self) -> bool {
        !self.hard_deleted && !self.user.deleted
    }

    /// The latest version at which anything visible through `select` changed (MICROSOFT.md §3: with
    /// `$select`, a change to an unselected property is not reported).
    /// Walks the user's changed properties (none for most users), not the selection, so a
    /// delta round passes over a large tenant's unchanged users without lookups.
    pub fn relevant_version(&self, select: &[&'static str]) -> u64 {
        self.property_versions
            .iter()
            .filter(|(property, _)| select.contains(property))
            .map(|(_, &version)| version)
            .fold(self.lifecycle_version, u64::max)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TenantState {
    pub tenant_id: String,
    pub display_name: String,
    pub domains: Vec<Domain>,
    pub records: Vec<UserRecord>,
    pub groups: Vec<SimGroup>,
    pub index: HashMap<String, usize>,
    /// Bumped by every directory change.
    pub version: u64,
    /// Bumped when delta tokens are invalidated; tokens carry the epoch they were issued in.
    pub delta_epoch: u64,
    pub consent_fault: Option<ConsentFault>,
    /// Position in the tenant list; decides the empty-page quirk.
    pub position: usize,
}

impl TenantState {
    fn touch(&mut self, user_id: &str, properties: &[&'static str]) -> Result<(), AdminError> {
        let position = *self
            .index
            .get(user_id)
            .ok_or_else(|| AdminError::UnknownUser(user_id.to_string()))?;
        self.version += 1;
        let version = self.version;
        let record = &mut self.records[position];
        for property in properties {
            record.property_versions.insert(property, version);
        }
        Ok(())
    }

    fn record_mut(&mut self, user_id: &str) -> Result<&mut UserRecord, AdminError> {
        let position = *self
            .index
            .get(user_id)
            .ok_or_else(|| AdminError::UnknownUser(user_id.to_string()))?;
        let record = &mut self.records[position];
        if record.hard_deleted {
            return Err(AdminError::UnknownUser(user_id.to_string()));
        }
        Ok(record)
    }

    pub fn to_customer_tenant(&self) -> CustomerTenant {
        CustomerTenant {
            tenant_id: self.tenant_id.clone(),
            display_name: self.display_name.clone(),
            domains: self.domains.clone(),
            users: self
                .records
                .iter()
                .filter(|record| !record.hard_deleted)
                .map(|record| (*record.user).clone())
                .collect(),
            groups: self.groups.clone(),
        }
    }

    pub fn listed_user_count(&self) -> usize {
        self.records
            .iter()
            .filter(|record| record.is_listed())
            .count()
    }
}

/// A user to add through the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NewUser {
    pub given_name: String,
    pub surname: String,
    /// Defaults to "{given_name} {surname}".
    pub display_name: Option<String>,
    /// Defaults to `given.surname@{default domain}`; set to override both mail and UPN.
    pub mail: Option<String>,
    pub job_title: Option<String>,
    pub mobile_phone: Option<String>,
    pub business_phone: Option<String>,
    pub account_enabled: Option<bool>,
}

/// A change to an existing user (rename, change mail, job title, phones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserPatch {
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    /// `Some(None)` (JSON `null`) clears mail; absent leaves it.
    #[serde(
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub mail: Option<Option<String>>,
    pub job_title: Option<String>,
    pub mobile_phone: Option<String>,
}

fn double_option<'de, D>(deserializer: D) -> Result<Option<Option<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<String>::deserialize(deserializer).map(Some)
}

pub(crate) struct State {
    pub settings: Settings,
    pub tenants: Vec<TenantState>,
    pub tenant_index: HashMap<String, usize>,
    pub relationships: Vec<Relationship>,
    pub access_tokens: HashMap<String, AccessToken>,
    pub refresh_tokens: HashMap<String, RefreshRecord>,
    pub rotated_refresh_tokens: HashSet<String>,
    pub codes: HashMap<String, CodeRecord>,
    pub faults: Vec<ActiveFault>,
    pub next_fault_id: u64,
    pub clock_offset: Duration,
    pub rng: ChaCha8Rng,
    /// Resource units spent per tenant: (time, cost), oldest first.
    pub resource_units: HashMap<String, std::collections::VecDeque<(DateTime<Utc>, u32)>>,
}

/// A duration of `seconds`, clamped to a century either way so arithmetic on dates cannot overflow.
pub(crate) fn clamp_seconds(seconds: i64) -> Duration {
    const CENTURY: i64 = 100 * 365 * 24 * 3600;
    Duration::try_seconds(seconds.clamp(-CENTURY, CENTURY)).unwrap_or_else(Duration::zero)
}

/// Well-known Entra role ids used in GDAP access details: Directory Readers, User Administrator, Helpdesk Administrator.
const ROLE_IDS: [&str; 3] = [
    "88d8e3e3-8f55-4a1e-953a-9b9898b8876b",
    "fe930be7-5e62-47db-91af-98c3a49a38b1",
    "729827e3-9c14-49f7-bb1b-9608f156bbb8",
];

fn generate_relationships(msp: &Msp, seed: u64) -> Vec<Relationship> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6DA9_0000_0000_0001);
    // Fixed reference date so the data stays deterministic.
    let base = DateTime::parse_from_rfc3339("2027-06-01T00:00:00Z")
        .map(|date| date.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now());
    let mut relationships = Vec::new();
    let new_id =
        |rng: &mut ChaCha8Rng| format!("{}-{}", data::random_guid(rng), data::random_guid(rng));
    for (position, tenant) in msp.tenants.iter().enumerate() {
        relationships.push(Relationship {
            id: new_id(&mut rng),
            display_name: format!("GDAP {} standard", tenant.display_name),
            customer_tenant_id: tenant.tenant_id.clone(),
            customer_display_name: tenant.display_name.clone(),
            status: "active",
            end_date_time: base + Duration::days(rng.gen_range(30..700)),
            auto_extend_duration: "P180D",
            role_definition_ids: vec![ROLE_IDS[0], ROLE_IDS[1]],
        });
        // MICROSOFT.md §2: several relationships can share one customer.
        if position % 4 == 0 {
            relationships.push(Relationship {
                id: new_id(&mut rng),
                display_name: format!("GDAP {} helpdesk", tenant.display_name),
                customer_tenant_id: tenant.tenant_id.clone(),
                customer_display_name: tenant.display_name.clone(),
                status: "active",
                end_date_time: base + Duration::days(rng.gen_range(30..700)),
                auto_extend_duration: "PT0S",
                role_definition_ids: vec![ROLE_IDS[2]],
            });
        }
        if position % 5 == 2 {
            relationships.push(Relationship {
                id: new_id(&mut rng),
                display_name: format!("GDAP {} 2024", tenant.display_name),
                customer_tenant_id: tenant.tenant_id.clone(),
                customer_display_name: tenant.display_name.clone(),
                status: "expired",
                end_date_time: base - Duration::days(rng.gen_range(200..400)),
                auto_extend_duration: "PT0S",
                role_definition_ids: vec![ROLE_IDS[0]],
            });
        }
    }
    // A former customer whose only relationship was terminated: `$filter=status eq 'active'` drops it.
    relationships.push(Relationship {
        id: new_id(&mut rng),
        display_name: "GDAP Former Customer Holdings Ltd".to_string(),
        customer_tenant_id: data::random_guid(&mut rng),
        customer_display_name: "Former Customer Holdings Ltd".to_string(),
        status: "terminated",
        end_date_time: base - Duration::days(90),
        auto_extend_duration: "PT0S",
        role_definition_ids: vec![ROLE_IDS[0]],
    });
    relationships
}

impl State {
    pub fn new(config: &SimulatorConfig) -> Self {
        let msp = data::generate(config);
        let relationships = generate_relationships(&msp, config.seed);
        let mut tenant_index = HashMap::new();
        let tenants: Vec<TenantState> = msp
            .tenants
            .into_iter()
            .enumerate()
            .map(|(position, tenant)| {
                tenant_index.insert(tenant.tenant_id.to_lowercase(), position);
                for domain in &tenant.domains {
                    tenant_index.insert(domain.id.to_lowercase(), position);
                }
                let index = tenant
                    .users
                    .iter()
                    .enumerate()
                    .map(|(offset, user)| (user.id.clone(), offset))
                    .collect();
                TenantState {
                    tenant_id: tenant.tenant_id,
                    display_name: tenant.display_name,
                    domains: tenant.domains,
                    records: tenant
                        .users
                        .into_iter()
                        .map(|user| UserRecord {
                            user: Box::new(user),
                            hard_deleted: false,
                            lifecycle_version: 0,
                            property_versions: HashMap::new(),
                        })
                        .collect(),
                    groups: tenant.groups,
                    index,
                    version: 0,
                    delta_epoch: 0,
                    consent_fault: None,
                    position,
                }
            })
            .collect();
        Self {
            settings: Settings::default(),
            tenants,
            tenant_index,
            relationships,
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            rotated_refresh_tokens: HashSet::new(),
            codes: HashMap::new(),
            faults: Vec::new(),
            next_fault_id: 1,
            clock_offset: Duration::zero(),
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ 0x7011_E000_0000_0002),
            resource_units: HashMap::new(),
        }
    }

    /// The simulator's clock: wall time plus an offset tests can move forward.
    pub fn now(&self) -> DateTime<Utc> {
        let wall = Utc::now();
        wall.checked_add_signed(self.clock_offset).unwrap_or(wall)
    }

    /// Moves the clock offset by `seconds`, within a century either way.
    pub fn advance_clock(&mut self, seconds: i64) {
        self.clock_offset = clamp_seconds(self.clock_offset.num_seconds().saturating_add(seconds));
    }

    pub fn random_token(&mut self, prefix: &str) -> String {
        use base64::Engine;
        let mut bytes = [0u8; 32];
        self.rng.fill(&mut bytes);
        format!(
            "{prefix}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// Finds a customer tenant by id or domain, case-insensitively.
    pub fn tenant_position(&self, id_or_domain: &str) -> Option<usize> {
        self.tenant_index
            .get(&id_or_domain.trim().to_lowercase())
            .copied()
    }

    fn tenant_mut(&mut self, id_or_domain: &str) -> Result<&mut TenantState, AdminError> {
        let position = self
            .tenant_position(id_or_domain)
            .ok_or_else(|| AdminError::UnknownTenant(id_or_domain.to_string()))?;
        Ok(&mut self.tenants[position])
    }

    pub fn snapshot(&self, partner_tenant_id: &str) -> Msp {
        Msp {
            partner_tenant_id: partner_tenant_id.to_string(),
            tenants: self
                .tenants
                .iter()
                .map(TenantState::to_customer_tenant)
                .collect(),
        }
    }

    /// Charges `cost` resource units to the tenant's 10-second window (MICROSOFT.md §4). Returns the seconds
    /// to wait when the budget is spent.
    pub fn charge_resource_units(&mut self, tenant_id: &str, cost: u32) -> Result<(), u64> {
        if !self.settings.resource_unit_throttling {
            return Ok(());
        }
        let limit = self.resource_unit_limit(tenant_id);
        let now = self.now();
        let window = Duration::seconds(10);
        let spent = self
            .resource_units
            .entry(tenant_id.to_lowercase())
            .or_default();
        while spent.front().is_some_and(|(at, _)| now - *at >= window) {
            spent.pop_front();
        }
        let used: u32 = spent.iter().map(|(_, cost)| cost).sum();
        if used + cost > limit {
            let oldest = spent.front().map_or(now, |(at, _)| *at);
            let wait = (oldest + window - now).num_milliseconds().max(0);
            return Err(((wait + 999) / 1000).max(1) as u64);
        }
        spent.push_back((now, cost));
        Ok(())
    }

    fn resource_unit_limit(&self, tenant_id: &str) -> u32 {
        self.settings.resource_unit_limit.unwrap_or_else(|| {
            let users = self
                .tenant_position(tenant_id)
                .map_or(0, |position| self.tenants[position].listed_user_count());
            match users {
                0..=49 => 3_500,
                50..=500 => 5_000,
                _ => 8_000,
            }
        })
    }

    /// The share of the tenant's resource-unit budget spent in the current window, when throttling is on.
    pub fn resource_unit_usage(&self, tenant_id: &str) -> Option<f64> {
        if !self.settings.resource_unit_throttling {
            return None;
        }
        let now = self.now();
        let used: u32 = self
            .resource_units
            .get(&tenant_id.to_lowercase())?
            .iter()
            .filter(|(at, _)| now - *at < Duration::seconds(10))
            .map(|(_, cost)| cost)
            .sum();
        Some(f64::from(used) / f64::from(self.resource_unit_limit(tenant_id).max(1)))
    }

    /// Returns and consumes the first fault matching the path and tenant.
    pub fn take_fault(&mut self, path: &str, tenant_id: Option<&str>) -> Option<FaultKind> {
        let tenant_position = tenant_id.and_then(|tenant| self.tenant_position(tenant));
        let found = self.faults.iter().position(|fault| {
            path.starts_with(&fault.spec.path_prefix)
                && match (&fault.spec.tenant, tenant_id) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(wanted), Some(actual)) => {
                        wanted.eq_ignore_ascii_case(actual)
                            || (tenant_position.is_some()
                                && self.tenant_position(wanted) == tenant_position)
                    }
                }
        })?;
        let kind = self.faults[found].spec.kind.clone();
        if let Some(count) = self.faults[found].spec.count.as_mut() {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.faults.remove(found);
            }
        }
        match kind {
            FaultKind::Mix {
                throttle_percent,
                unavailable_percent,
                cut_off_percent,
                retry_after_secs,
            } => {
                let draw: u32 = self.rng.gen_range(0..100);
                let throttle = u32::from(throttle_percent);
                let unavailable = throttle + u32::from(unavailable_percent);
                let cut_off = unavailable + u32::from(cut_off_percent);
                if draw < throttle {
                    Some(FaultKind::Throttle { retry_after_secs })
                } else if draw < unavailable {
                    Some(FaultKind::Unavailable {
                        retry_after_secs: None,
                    })
                } else if draw < cut_off {
                    Some(FaultKind::CutOff)
                } else {
                    None
                }
            }
            kind => Some(kind),
        }
    }

    pub fn add_fault(&mut self, spec: FaultSpec) -> Result<u64, AdminError> {
        if spec.count == Some(0) {
            return Err(AdminError::Invalid("count must be at least 1".to_string()));
        }
        let id = self.next_fault_id;
        self.next_fault_id += 1;
        self.faults.push(ActiveFault { id, spec });
        Ok(id)
    }

    pub fn add_user(&mut self, tenant: &str, new_user: NewUser) -> Result<SimUser, AdminError> {
        if new_user.given_name.trim().is_empty() || new_user.surname.trim().is_empty() {
            return Err(AdminError::Invalid(
                "given_name and surname are required".to_string(),
            ));
        }
        let id = {
            let mut bytes = [0u8; 16];
            self.rng.fill(&mut bytes);
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .to_string()
        };
        let tenant = self.tenant_mut(tenant)?;
        let customer = tenant.to_customer_tenant();
        let mut user = data::new_member(id, &new_user.given_name, &new_user.surname, &customer);
        if let Some(mail) = new_user.mail {
            user.mail = Some(mail.clone());
            user.user_principal_name = mail.clone();
            user.proxy_addresses = vec![format!("SMTP:{mail}")];
        }
        let taken = tenant.records.iter().any(|record| {
            !record.hard_deleted
                && record
                    .user
                    .user_principal_name
                    .eq_ignore_ascii_case(&user.user_principal_name)
        });
        if taken {
            return Err(AdminError::Invalid(format!(
                "userPrincipalName {} is taken",
                user.user_principal_name
            )));
        }
        if let Some(display_name) = new_user.display_name {
            user.display_name = display_name;
        }
        user.job_title = new_user.job_title;
        user.mobile_phone = new_user.mobile_phone;
        user.business_phones = new_user.business_phone.into_iter().collect();
        user.account_enabled = new_user.account_enabled.unwrap_or(true);
        tenant.version += 1;
        tenant.index.insert(user.id.clone(), tenant.records.len());
        tenant.records.push(UserRecord {
            user: Box::new(user.clone()),
            hard_deleted: false,
            lifecycle_version: tenant.version,
            property_versions: HashMap::new(),
        });
        Ok(user)
    }

    pub fn set_enabled(
        &mut self,
        tenant: &str,
        user_id: &str,
        enabled: bool,
    ) -> Result<SimUser, AdminError> {
        let tenant = self.tenant_mut(tenant)?;
        tenant.record_mut(user_id)?.user.account_enabled = enabled;
        tenant.touch(user_id, &["accountEnabled"])?;
        Ok((*tenant.record_mut(user_id)?.user).clone())
    }

    pub fn soft_delete(&mut self, tenant: &str, user_id: &str) -> Result<(), AdminError> {
        let tenant = self.tenant_mut(tenant)?;
        let record = tenant.record_mut(user_id)?;
        if record.user.deleted {
            return Err(AdminError::WrongState(user_id.to_string()));
        }
        record.user.deleted = true;
        tenant.version += 1;
        let version = tenant.version;
        tenant.record_mut(user_id)?.lifecycle_version = version;
        Ok(())
    }

    pub fn hard_delete(&mut self, tenant: &str, user_id: &str) -> Result<(), AdminError> {
        let tenant = self.tenant_mut(tenant)?;
        tenant.record_mut(user_id)?.hard_deleted = true;
        tenant.version += 1;
        let version = tenant.version;
        if let Some(position) = tenant.index.get(user_id).copied() {
            tenant.records[position].lifecycle_version = version;
        }
        Ok(())
    }

    pub fn restore(&mut self, tenant: &str, user_id: &str) -> Result<SimUser, AdminError> {
        let tenant = self.tenant_mut(tenant)?;
        let record = tenant.record_mut(user_id)?;
        if !record.user.deleted {
            return Err(AdminError::WrongState(user_id.to_string()));
        }
        record.user.deleted = false;
        tenant.version += 1;
        let version = tenant.version;
        let record = tenant.record_mut(user_id)?;
        record.lifecycle_version = version;
        Ok((*record.user).clone())
    }

    pub fn update_user(
        &mut self,
        tenant: &str,
        user_id: &str,
        patch: UserPatch,
    ) -> Result<SimUser, AdminError> {
        let tenant = self.tenant_mut(tenant)?;
        let record = tenant.record_mut(user_id)?;
        let mut touched: Vec<&'static str> = Vec::new();
        if let Some(display_name) = patch.display_name {
            record.user.display_name = display_name;
            touched.push("displayName");
        }
        if let Some(given_name) = patch.given_name {
            record.user.given_name = Some(given_name);
            touched.push("givenName");
        }
        if let Some(surname) = patch.surname {
            record.user.surname = Some(surname);
            touched.push("surname");
        }
        if let Some(job_title) = patch.job_title {
            record.user.job_title = Some(job_title);
            touched.push("jobTitle");
        }
        if let Some(mobile_phone) = patch.mobile_phone {
            record.user.mobile_phone = Some(mobile_phone);
            touched.push("mobilePhone");
        }
        if let Some(mail) = patch.mail {
            // A new primary address becomes the upper-case `SMTP:` entry and the old primary an alias
            // (MICROSOFT.md §3: upper-case `SMTP:` is the primary).
            if let Some(new_mail) = &mail {
                let mut proxies: Vec<String> = record
                    .user
                    .proxy_addresses
                    .iter()
                    .filter(|proxy| {
                        proxy
                            .split_once(':')
                            .is_none_or(|(_, address)| !address.eq_ignore_ascii_case(new_mail))
                    })
                    .map(|proxy| match proxy.strip_prefix("SMTP:") {
                        Some(address) => format!("smtp:{address}"),
                        None => proxy.clone(),
                    })
                    .collect();
                proxies.insert(0, format!("SMTP:{new_mail}"));
                record.user.proxy_addresses = proxies;
                touched.push("proxyAddresses");
            }
            record.user.mail = mail;
            touched.push("mail");
        }
        let user = (*record.user).clone();
        if !touched.is_empty() {
            tenant.touch(user_id, &touched)?;
        }
        Ok(user)
    }

    pub fn set_consent_fault(
        &mut self,
        tenant: &str,
        fault: Option<ConsentFault>,
    ) -> Result<(), AdminError> {
        self.tenant_mut(tenant)?.consent_fault = fault;
        Ok(())
    }

    /// Invalidates every delta and skip token issued so far for the tenant (MICROSOFT.md §3: 410 / resync).
    pub fn expire_delta_tokens(&mut self, tenant: &str) -> Result<(), AdminError> {
        self.tenant_mut(tenant)?.delta_epoch += 1;
        Ok(())
    }

    /// Drops every issued access token, so the next Graph or CIPP call with one answers 401.
    pub fn revoke_access_tokens(&mut self) {
        self.access_tokens.clear();
    }
}

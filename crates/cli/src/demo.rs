//! The demo scenario, driven through the public HTTP API exactly as an MSP admin's wizard would:
//! create a PSA tenant and an admin, seed clients and contacts that relate to the simulated
//! MSP in known ways, connect through CIPP, discover, preview, confirm the auto-matched tenants
//! with an initial sync, and print a per-tenant summary.
//!
//! The end-to-end tests run the same scenario and check the database against [`Seeded`], the
//! numbers the seeding implies.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub use crate::api_client::ApiClient;
use entra_sync_simulator::{CustomerTenant, Msp, SimUser, SimulatorConfig};
use serde_json::{json, Value};

/// Permissions of the demo's MSP admin: everything the wizard needs.
pub const ADMIN_PERMISSIONS: [&str; 7] = [
    "system_settings.read",
    "system_settings.update",
    "client.read",
    "client.create",
    "contact.read",
    "contact.create",
    "contact.update",
];

/// The feature flags of phase 1 (SPEC §7), all enabled for the demo tenant.
pub const FLAGS: [&str; 5] = [
    "entra-integration-ui",
    "entra-integration-client-sync-action",
    "entra-integration-cipp",
    "entra-integration-field-sync",
    "entra-integration-ambiguous-queue",
];

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// The platform master key the API was started with.
    #[arg(long, env = "ENTRA_SYNC_MASTER_KEY", hide_env_values = true)]
    pub master_key: String,
    /// The simulator's CIPP base URL (`{simulator}/cipp`).
    #[arg(long, env = "ENTRA_SYNC_DEMO_CIPP_URL")]
    pub cipp_url: String,
    /// Seed and size the simulator was started with, so the seeding matches its data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 20)]
    pub tenants: usize,
    #[arg(long, default_value_t = 5000)]
    pub users: usize,
}

/// How the scenario relates a managed tenant to the PSA's clients (by its index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantRole {
    /// One client whose primary domains hold the tenant's default domain.
    AutoMatched,
    /// A client that has the domain only as a secondary domain.
    SecondaryDomain,
    /// Two clients claim the domain.
    TwoClients,
    /// A client with a similar name and no domain.
    SimilarName,
    /// No related client.
    Unrelated,
}

pub fn tenant_role(index: usize) -> TenantRole {
    match index % 10 {
        4 => TenantRole::SecondaryDomain,
        8 => TenantRole::TwoClients,
        9 if index % 20 == 9 => TenantRole::SimilarName,
        9 => TenantRole::Unrelated,
        _ => TenantRole::AutoMatched,
    }
}

/// What the seeding implies for one auto-matched tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeededTenant {
    pub entra_tenant_id: String,
    pub display_name: String,
    /// Enabled members: every one has a usable address (at least the UPN).
    pub eligible: u64,
    /// Contacts seeded with one of a user's addresses in the mapped client.
    pub linked: u64,
    /// Users whose address two contacts of the mapped client share.
    pub multiple_candidates: u64,
    /// Users whose address only a contact of another client has.
    pub other_client: u64,
    pub guests: u64,
    pub disabled: u64,
}

impl SeededTenant {
    pub fn created(&self) -> u64 {
        self.eligible - self.linked - self.multiple_candidates - self.other_client
    }

    pub fn queued(&self) -> u64 {
        self.multiple_candidates + self.other_client
    }
}

/// The numbers the seeding implies, per auto-matched tenant, by Entra tenant id.
#[derive(Clone, Debug, Default)]
pub struct Seeded {
    pub tenants: BTreeMap<String, SeededTenant>,
    pub contacts_seeded: u64,
}

fn is_guest(user: &SimUser) -> bool {
    user.user_type.eq_ignore_ascii_case("guest") || user.user_principal_name.contains("#EXT#")
}

fn is_eligible(user: &SimUser) -> bool {
    !is_guest(user) && user.account_enabled && !user.deleted
}

/// The address a seeded contact carries for `user`, rotating through the ways a match can be
/// found: a `proxyAddresses` alias, `mail`, and the UPN.
fn seeded_address(user: &SimUser, index: usize) -> String {
    let alias = user
        .proxy_addresses
        .iter()
        .find(|address| address.starts_with("smtp:"))
        .map(|address| address["smtp:".len()..].to_owned());
    let choice = match index % 3 {
        0 => alias.or_else(|| user.mail.clone()),
        1 => user.mail.clone(),
        _ => None,
    };
    choice
        .unwrap_or_else(|| user.user_principal_name.clone())
        .to_uppercase()
}

/// A contact to create.
#[derive(Clone, Debug)]
struct ContactSeed {
    client_key: String,
    full_name: String,
    email: String,
}

/// A client to create, keyed so contacts can refer to it before it has an id.
#[derive(Clone, Debug)]
struct ClientSeed {
    key: String,
    name: String,
    domains: Vec<String>,
    secondary_domains: Vec<String>,
}

/// The PSA data for `msp`, and what it implies.
fn seed_plan(msp: &Msp) -> (Vec<ClientSeed>, Vec<ContactSeed>, Seeded) {
    let mut clients = vec![ClientSeed {
        key: "elsewhere".into(),
        name: "Elsewhere Consulting Partners".into(),
        domains: vec!["elsewhere-consulting.example".into()],
        secondary_domains: vec![],
    }];
    let mut contacts = Vec::new();
    let mut seeded = Seeded::default();
    for (index, tenant) in msp.tenants.iter().enumerate() {
        let domain = tenant.default_domain().to_owned();
        let key = format!("tenant-{index}");
        match tenant_role(index) {
            TenantRole::AutoMatched => {
                clients.push(ClientSeed {
                    key: key.clone(),
                    name: tenant.display_name.clone(),
                    domains: vec![domain],
                    secondary_domains: vec![],
                });
                let expected = seed_contacts(tenant, &key, &mut contacts);
                seeded.tenants.insert(tenant.tenant_id.clone(), expected);
            }
            TenantRole::SecondaryDomain => clients.push(ClientSeed {
                key,
                name: format!("{} Group", tenant.display_name),
                domains: vec![],
                secondary_domains: vec![domain],
            }),
            TenantRole::TwoClients => {
                clients.push(ClientSeed {
                    key: format!("{key}-a"),
                    name: tenant.display_name.clone(),
                    domains: vec![domain.clone()],
                    secondary_domains: vec![],
                });
                clients.push(ClientSeed {
                    key: format!("{key}-b"),
                    name: format!("{} Services", tenant.display_name),
                    domains: vec![domain],
                    secondary_domains: vec![],
                });
            }
            TenantRole::SimilarName => clients.push(ClientSeed {
                key,
                name: format!("{}.", tenant.display_name.to_uppercase()),
                domains: vec![],
                secondary_domains: vec![],
            }),
            TenantRole::Unrelated => {}
        }
    }
    seeded.contacts_seeded = contacts.len() as u64;
    (clients, contacts, seeded)
}

fn seed_contacts(
    tenant: &CustomerTenant,
    client_key: &str,
    contacts: &mut Vec<ContactSeed>,
) -> SeededTenant {
    let mut expected = SeededTenant {
        entra_tenant_id: tenant.tenant_id.clone(),
        display_name: tenant.display_name.clone(),
        ..SeededTenant::default()
    };
    for (index, user) in tenant.users.iter().enumerate() {
        if user.deleted {
            continue;
        }
        if is_guest(user) {
            expected.guests += 1;
            continue;
        }
        if !user.account_enabled {
            expected.disabled += 1;
            continue;
        }
        debug_assert!(is_eligible(user));
        expected.eligible += 1;
        let contact = |client_key: &str| ContactSeed {
            client_key: client_key.to_owned(),
            full_name: user.display_name.clone(),
            email: seeded_address(user, index),
        };
        if index % 20 == 0 {
            contacts.push(contact(client_key));
            expected.linked += 1;
        } else if index % 97 == 1 {
            contacts.push(contact(client_key));
            contacts.push(contact(client_key));
            expected.multiple_candidates += 1;
        } else if index % 89 == 2 {
            contacts.push(contact("elsewhere"));
            expected.other_client += 1;
        }
    }
    expected
}

/// Creates a PSA tenant with the master key, an internal admin user holding
/// [`ADMIN_PERMISSIONS`], and every phase-1 feature flag enabled for it; returns the tenant id
/// and the admin's API key.
pub async fn create_psa_tenant(
    master: &ApiClient,
    name: &str,
    admin_email: &str,
) -> Result<(String, String)> {
    let tenant = master
        .post("/api/v1/platform/tenants", json!({"name": name}))
        .await?;
    let tenant_id = tenant["tenant_id"]
        .as_str()
        .context("tenant_id")?
        .to_owned();
    let user = master
        .post(
            &format!("/api/v1/platform/tenants/{tenant_id}/users"),
            json!({"email": admin_email, "user_type": "internal", "permissions": ADMIN_PERMISSIONS}),
        )
        .await?;
    let admin_key = user["api_key"].as_str().context("api_key")?.to_owned();
    master
        .post(
            "/api/v1/platform-feature-flags",
            json!({"__action": "ensure_entra_phase1_flags"}),
        )
        .await?;
    for flag in FLAGS {
        master
            .post(
                &format!("/api/v1/platform-feature-flags/{flag}/tenants"),
                json!({"__action": "add", "tenantId": tenant_id}),
            )
            .await?;
    }
    Ok((tenant_id, admin_key))
}

/// Creates the demo's PSA tenant (admin user, feature flags) and seeds its clients and
/// contacts from the simulator's data, without connecting anything: what the console's setup
/// wizard starts from. Returns the tenant id, the admin's API key and what the seeding implies.
pub async fn seed_psa_tenant(
    master: &ApiClient,
    simulator: &SimulatorConfig,
    mut say: impl FnMut(String),
) -> Result<(String, String, Seeded)> {
    let msp = entra_sync_simulator::generate(simulator);
    let (clients, contacts, seeded) = seed_plan(&msp);

    let (tenant_id, admin_key) =
        create_psa_tenant(master, "Demo MSP", "admin@demo-msp.example").await?;
    say(format!(
        "created PSA tenant {tenant_id} with an admin user and the five Entra feature flags"
    ));

    let admin = master.with_key(&admin_key);
    let mut client_ids = BTreeMap::new();
    for client in &clients {
        let created = admin
            .post("/api/v1/clients", json!({"name": client.name, "domains": client.domains, "secondary_domains": client.secondary_domains}))
            .await?;
        client_ids.insert(
            client.key.clone(),
            created["client_id"]
                .as_str()
                .context("client_id")?
                .to_owned(),
        );
    }
    for contact in &contacts {
        admin
            .post("/api/v1/contacts", json!({"client_id": client_ids[&contact.client_key], "full_name": contact.full_name, "email": contact.email}))
            .await?;
    }
    say(format!(
        "seeded {} clients and {} existing contacts",
        clients.len(),
        contacts.len()
    ));

    Ok((tenant_id, admin_key, seeded))
}

/// What the scenario did, for printing and for the end-to-end tests' assertions.
#[derive(Debug)]
pub struct DemoOutcome {
    pub tenant_id: String,
    pub admin_key: String,
    pub discovery_run: Value,
    pub preview: Value,
    pub sync_run: Value,
    pub seeded: Seeded,
}

/// Runs the scenario against an API at `api.base` whose workers reach the simulator at
/// `cipp_url`, for a simulator generated from `simulator`.
pub async fn run_scenario(
    master: &ApiClient,
    cipp_url: &str,
    cipp_token: &str,
    simulator: &SimulatorConfig,
    mut say: impl FnMut(String),
) -> Result<DemoOutcome> {
    let (tenant_id, admin_key, seeded) = seed_psa_tenant(master, simulator, &mut say).await?;
    let admin = master.with_key(&admin_key);
    admin
        .post(
            "/api/v1/integrations/entra/connect/cipp",
            json!({"base_url": cipp_url, "api_token": cipp_token}),
        )
        .await?;
    say("connected through CIPP (credentials validated by listing tenants first)".into());

    let started = admin
        .post("/api/v1/integrations/entra/discovery", json!({}))
        .await?;
    let discovery_run_id = started["run_id"]
        .as_str()
        .context("discovery run_id")?
        .to_owned();
    let discovery_run = admin
        .wait_for_run(&discovery_run_id, Duration::from_secs(120), |_| {})
        .await?;
    if discovery_run["status"] != "completed" {
        bail!(
            "discovery ended {}: {}",
            discovery_run["status"],
            discovery_run["error"]
        );
    }
    let managed = admin
        .get("/api/v1/integrations/entra/managed-tenants")
        .await?;
    say(format!(
        "discovery found {} managed tenants",
        managed["items"].as_array().map_or(0, Vec::len)
    ));

    let preview = admin
        .get("/api/v1/integrations/entra/mappings/preview")
        .await?;
    let items = preview["items"].as_array().cloned().unwrap_or_default();
    say(render_preview(&items));

    let decisions: Vec<Value> = items
        .iter()
        .filter(|item| item["state"] == "auto_matched")
        .filter_map(|item| {
            let client_id = item["candidates"][0]["client_id"].as_str()?;
            Some(json!({"managed_tenant_id": item["managed_tenant_id"], "action": "map", "client_id": client_id}))
        })
        .collect();
    let confirmed = admin
        .post(
            "/api/v1/integrations/entra/mappings/confirm",
            json!({"decisions": decisions, "start_initial_sync": true}),
        )
        .await?;
    let run_id = confirmed["run_id"]
        .as_str()
        .context("confirm returned no run_id")?
        .to_owned();
    say(format!(
        "confirmed {} auto-matched tenants; initial sync run {run_id} started",
        decisions.len()
    ));

    let mut last_line = String::new();
    let sync_run = admin
        .wait_for_run(&run_id, Duration::from_secs(600), |run| {
            let tenants = run["tenants"].as_array().map_or(&[][..], Vec::as_slice);
            let done = tenants
                .iter()
                .filter(|tenant| tenant["status"] != "running")
                .count();
            let line = format!(
                "sync {}: {done}/{} tenants finished",
                run["status"].as_str().unwrap_or("?"),
                decisions.len()
            );
            if line != last_line {
                last_line = line.clone();
                say(line);
            }
        })
        .await?;
    Ok(DemoOutcome {
        tenant_id,
        admin_key,
        discovery_run,
        preview,
        sync_run,
        seeded,
    })
}

fn render_preview(items: &[Value]) -> String {
    let mut out = String::from("mapping preview:\n");
    out.push_str(&format!(
        "  {:<40} {:<14} {}\n",
        "managed tenant", "state", "best candidate"
    ));
    for item in items {
        let candidate = &item["candidates"][0];
        let best = if candidate.is_null() {
            "-".to_owned()
        } else {
            format!(
                "{} ({}, score {:.2})",
                candidate["name"].as_str().unwrap_or("?"),
                candidate["reason"].as_str().unwrap_or("?"),
                candidate["score"].as_f64().unwrap_or(0.0)
            )
        };
        out.push_str(&format!(
            "  {:<40} {:<14} {}\n",
            truncate(item["display_name"].as_str().unwrap_or("?"), 40),
            item["state"].as_str().unwrap_or("?"),
            best
        ));
    }
    out
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

fn truncate(value: &str, width: usize) -> String {
    value.chars().take(width).collect()
}

/// The per-tenant summary table of a finished sync run.
pub fn render_summary(run: &Value, names: &BTreeMap<String, String>) -> String {
    let mut out = format!("initial sync {}\n", run["status"].as_str().unwrap_or("?"));
    out.push_str(&format!(
        "  {:<36} {:<10} {:>6} {:>8} {:>7} {:>7} {:>7}  {}\n",
        "managed tenant",
        "status",
        "seen",
        "created",
        "linked",
        "queued",
        "errors",
        "skipped by reason"
    ));
    for tenant in run["tenants"].as_array().map_or(&[][..], Vec::as_slice) {
        let counts = &tenant["counts"];
        let skipped = counts["skipped"]
            .as_object()
            .map(|reasons| {
                reasons
                    .iter()
                    .map(|(reason, count)| format!("{reason}={count}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let id = tenant["managed_tenant_id"].as_str().unwrap_or("?");
        out.push_str(&format!(
            "  {:<36} {:<10} {:>6} {:>8} {:>7} {:>7} {:>7}  {}\n",
            truncate(names.get(id).map_or(id, String::as_str), 36),
            tenant["status"].as_str().unwrap_or("?"),
            number(&counts["seen"]),
            number(&counts["created"]),
            number(&counts["linked"]),
            number(&counts["queued"]),
            number(&counts["errors"]),
            skipped
        ));
        if !tenant["error"].is_null() {
            out.push_str(&format!(
                "      error: {}\n",
                tenant["error"]["message"].as_str().unwrap_or("?")
            ));
        }
    }
    let totals = &run["totals"];
    out.push_str(&format!(
        "  totals: seen={} created={} linked={} queued={} errors={}\n",
        totals["seen"], totals["created"], totals["linked"], totals["queued"], totals["errors"]
    ));
    out
}

/// `entra-sync demo`: the scenario against a running API, printed for a person.
pub async fn run(args: &DemoArgs, api_url: &str) -> Result<()> {
    let simulator = SimulatorConfig {
        seed: args.seed,
        tenants: args.tenants,
        users: args.users,
        ..SimulatorConfig::default()
    };
    let master = ApiClient::new(api_url, &args.master_key)?;
    let outcome = run_scenario(
        &master,
        &args.cipp_url,
        &simulator.cipp_api_token,
        &simulator,
        |line| println!("{line}"),
    )
    .await?;
    let admin = master.with_key(&outcome.admin_key);
    let managed = admin
        .get("/api/v1/integrations/entra/managed-tenants")
        .await?;
    let names: BTreeMap<String, String> = managed["items"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|item| {
            Some((
                item["managed_tenant_id"].as_str()?.to_owned(),
                item["display_name"].as_str()?.to_owned(),
            ))
        })
        .collect();
    println!("{}", render_summary(&outcome.sync_run, &names));
    let queue = admin
        .get("/api/v1/integrations/entra/reconciliation-queue?status=open&limit=5")
        .await;
    if let Ok(queue) = queue {
        println!("review queue (first items):");
        for item in queue["items"].as_array().map_or(&[][..], Vec::as_slice) {
            println!(
                "  {:<28} {:<34} {}",
                item["reason"].as_str().unwrap_or("?"),
                item["email"].as_str().unwrap_or("-"),
                item["display_name"].as_str().unwrap_or("?")
            );
        }
    }
    println!();
    println!("The API stays up at {} — try:", api_url);
    println!(
        "  curl -s -H 'x-api-key: {}' {}/api/v1/integrations/entra/sync/runs",
        outcome.admin_key, api_url
    );
    println!();
    println!(
        "Open the web console: {}/console",
        api_url.trim_end_matches('/')
    );
    println!(
        "  sign in with the API key {} (the demo admin, user admin@demo-msp.example)",
        outcome.admin_key
    );
    println!("Stop everything with: make stop");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_covers_every_mapping_role_and_match_kind() {
        let config = SimulatorConfig::default();
        let msp = entra_sync_simulator::generate(&config);
        let (clients, contacts, seeded) = seed_plan(&msp);
        let roles: Vec<TenantRole> = (0..msp.tenants.len()).map(tenant_role).collect();
        for role in [
            TenantRole::AutoMatched,
            TenantRole::SecondaryDomain,
            TenantRole::TwoClients,
            TenantRole::SimilarName,
            TenantRole::Unrelated,
        ] {
            assert!(roles.contains(&role), "no tenant plays {role:?}");
        }
        assert!(clients.len() > msp.tenants.len() / 2);
        let linked: u64 = seeded.tenants.values().map(|tenant| tenant.linked).sum();
        let multiple: u64 = seeded
            .tenants
            .values()
            .map(|tenant| tenant.multiple_candidates)
            .sum();
        let other: u64 = seeded
            .tenants
            .values()
            .map(|tenant| tenant.other_client)
            .sum();
        assert!(
            linked > 50 && multiple > 3 && other > 3,
            "linked {linked} multiple {multiple} other {other}"
        );
        assert_eq!(contacts.len() as u64, linked + 2 * multiple + other);
        let aliases = contacts
            .iter()
            .filter(|contact| {
                msp.tenants.iter().any(|tenant| {
                    tenant.users.iter().any(|user| {
                        user.mail.is_none()
                            && user
                                .proxy_addresses
                                .iter()
                                .any(|a| a.eq_ignore_ascii_case(&format!("smtp:{}", contact.email)))
                    })
                })
            })
            .count();
        assert!(
            aliases > 0,
            "no seeded contact is reachable only through a proxy address"
        );
    }
}

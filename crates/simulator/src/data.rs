//! The simulated directory data: the MSP, its customer tenants and their users, generated deterministically from a seed.

use std::collections::HashSet;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::SimulatorConfig;

/// The MSP (partner) and the customer tenants it manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msp {
    pub partner_tenant_id: String,
    pub tenants: Vec<CustomerTenant>,
}

/// One managed customer's Entra directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerTenant {
    /// The Entra tenant id (a GUID).
    pub tenant_id: String,
    /// The organization's display name, as Graph `organization.displayName` and GDAP `customer.displayName` show it.
    pub display_name: String,
    /// Every domain of the tenant; MICROSOFT.md §2 `GET /v1.0/domains`.
    pub domains: Vec<Domain>,
    /// The users, in a stable order (the order the users list pages through).
    /// Soft-deleted users are kept with `deleted: true`; hard-deleted users are gone.
    pub users: Vec<SimUser>,
    /// The tenant's security groups (for the include/exclude group filters), in a stable order.
    pub groups: Vec<SimGroup>,
}

/// A security group with its flattened (transitive) user membership, as Graph's
/// `GET /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimGroup {
    /// Object id (a lowercase GUID).
    pub id: String,
    pub display_name: String,
    /// Object ids of the member users, direct or through nested groups, in user order.
    pub member_ids: Vec<String>,
}

/// Whether the user at a position in the tenant's user list belongs to a group.
type GroupRule = fn(usize, &SimUser) -> bool;

/// The groups every tenant has, by name and by which user positions belong to them.
const GROUP_SPECS: [(&str, GroupRule); 3] = [
    ("All Staff", |_, user| user.user_type == "Member"),
    ("Sales", |position, _| position % 3 == 0),
    ("Contractors", |position, _| position % 5 == 1),
];

/// Groups derived from the tenant id and its users alone (no randomness is drawn, so adding
/// groups did not change any generated tenant or user). Ids embed the tenant id's last part,
/// so they differ between tenants.
pub(crate) fn generate_groups(tenant_id: &str, users: &[SimUser]) -> Vec<SimGroup> {
    let tenant_part = tenant_id.rsplit('-').next().unwrap_or_default();
    GROUP_SPECS
        .iter()
        .enumerate()
        .map(|(index, (display_name, is_member))| SimGroup {
            id: format!("{:08x}-6e0a-4b1c-9d2e-{tenant_part}", index + 1).to_lowercase(),
            display_name: (*display_name).to_string(),
            member_ids: users
                .iter()
                .enumerate()
                .filter(|(position, user)| is_member(*position, user))
                .map(|(_, user)| user.id.clone())
                .collect(),
        })
        .collect()
}

impl CustomerTenant {
    /// The `xxx.onmicrosoft.com` domain every tenant has.
    pub fn initial_domain(&self) -> &str {
        self.domains
            .iter()
            .find(|domain| domain.is_initial)
            .map(|domain| domain.id.as_str())
            .unwrap_or_default()
    }

    /// The default (custom) domain.
    pub fn default_domain(&self) -> &str {
        self.domains
            .iter()
            .find(|domain| domain.is_default)
            .map(|domain| domain.id.as_str())
            .unwrap_or_default()
    }
}

/// A domain, with the fields of MICROSOFT.md §2 `GET /v1.0/domains`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub id: String,
    pub is_default: bool,
    pub is_initial: bool,
    pub is_verified: bool,
}

/// A directory user with every field of the MICROSOFT.md §3 `$select` list plus the rest of the default property set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimUser {
    /// Object id (a GUID).
    pub id: String,
    pub display_name: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    /// MICROSOFT.md §3: `mail` is often null.
    pub mail: Option<String>,
    pub user_principal_name: String,
    pub other_mails: Vec<String>,
    /// MICROSOFT.md §3: upper-case `SMTP:` is the primary address, lower-case `smtp:` an alias.
    pub proxy_addresses: Vec<String>,
    pub account_enabled: bool,
    /// `Member` or `Guest`.
    pub user_type: String,
    /// `Some("Invitation")` for invited (B2B) users, otherwise `None`.
    pub creation_type: Option<String>,
    pub job_title: Option<String>,
    pub mobile_phone: Option<String>,
    /// MICROSOFT.md §3: an array with at most one number.
    pub business_phones: Vec<String>,
    /// License SKU ids (`assignedLicenses[].skuId`).
    pub assigned_licenses: Vec<String>,
    pub office_location: Option<String>,
    pub preferred_language: Option<String>,
    /// Soft-deleted: in the recycle bin, restorable (MICROSOFT.md §3 delta `@removed` reason `changed`).
    pub deleted: bool,
}

/// Well-known license SKU ids (Microsoft 365 Business Standard, Business Premium, Exchange Online Plan 1).
const SKU_IDS: [&str; 3] = [
    "f245ecc8-75af-4f8e-b61f-27d8114de5f3",
    "cbdc14ab-d96c-4c30-b9f4-6ada7cdc1d46",
    "4b9405b0-7788-4568-add1-99614e613b69",
];

const NAME_STEMS: [&str; 40] = [
    "Contoso",
    "Fabrikam",
    "Northwind",
    "Tailspin",
    "Adventure Works",
    "Litware",
    "Proseware",
    "Wingtip",
    "Woodgrove",
    "Alpine Ski",
    "Blue Yonder",
    "Coho",
    "Fourth Coffee",
    "Graphic Design",
    "Humongous",
    "Lucerne",
    "Margie's",
    "Nod",
    "Relecloud",
    "Southridge",
    "Trey",
    "Wide World",
    "Bellows",
    "Cedar Ridge",
    "Harbor Point",
    "Silver Creek",
    "Oakmont",
    "Red Rock",
    "Lakeside",
    "Granite",
    "Summit",
    "Evergreen",
    "Brightwater",
    "Ironwood",
    "Maple Leaf",
    "Pinnacle",
    "Riverbend",
    "Stonebridge",
    "Westfield",
    "Keystone",
];

const NAME_INDUSTRIES: [&str; 16] = [
    "Dental",
    "Logistics",
    "Legal",
    "Accounting",
    "Manufacturing",
    "Pharmaceuticals",
    "Travel",
    "Consulting",
    "Engineering",
    "Realty",
    "Insurance",
    "Bakery",
    "Veterinary",
    "Construction",
    "Architects",
    "Solutions",
];

/// Fuzzy PSA name scoring ignores legal suffixes (SPEC.md §4), so some names carry one.
const LEGAL_SUFFIXES: [&str; 8] = ["", "", "Inc", "Inc.", "LLC", "Ltd", "GmbH", "Pty Ltd"];

const GIVEN_NAMES: [&str; 40] = [
    "Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Isabel", "Jack", "Karen",
    "Liam", "Maria", "Noah", "Olivia", "Peter", "Quinn", "Rachel", "Samuel", "Tara", "Umar",
    "Vera", "William", "Xena", "Yusuf", "Zoe", "Aisha", "Bruno", "Chloe", "Diego", "Elena",
    "Farah", "Gustav", "Hana", "Ivan", "Julia", "Kenji", "Lena", "Mateo", "Nina",
];

const SURNAMES: [&str; 40] = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
];

const JOB_TITLES: [&str; 14] = [
    "Office Manager",
    "Accountant",
    "Sales Representative",
    "Operations Director",
    "Receptionist",
    "IT Coordinator",
    "Chief Executive Officer",
    "Project Manager",
    "Paralegal",
    "Engineer",
    "HR Generalist",
    "Marketing Specialist",
    "Warehouse Lead",
    "Customer Success Manager",
];

const SHARED_MAILBOXES: [&str; 8] = [
    "Sales",
    "Accounts Payable",
    "Reception",
    "Support",
    "Info",
    "Bookings",
    "HR",
    "Scanner",
];

const PERSONAL_DOMAINS: [&str; 5] = [
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "icloud.com",
    "partnerfirm.example",
];

/// The kinds of user the generator mixes; documented in the crate docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UserKind {
    Regular,
    Guest,
    ExternalMember,
    Disabled,
    SharedMailbox,
    NullMail,
    AliasOnly,
}

/// Positions 1..=6 of every tenant with enough users get one of each special kind, so even small configurations contain them.
fn user_kind(position: usize, rng: &mut ChaCha8Rng) -> UserKind {
    match position {
        1 => UserKind::Guest,
        2 => UserKind::ExternalMember,
        3 => UserKind::Disabled,
        4 => UserKind::SharedMailbox,
        5 => UserKind::NullMail,
        6 => UserKind::AliasOnly,
        _ => match rng.gen_range(0..100) {
            0..=5 => UserKind::Guest,
            6..=7 => UserKind::ExternalMember,
            8..=11 => UserKind::Disabled,
            12..=13 => UserKind::SharedMailbox,
            14..=21 => UserKind::NullMail,
            22..=24 => UserKind::AliasOnly,
            _ => UserKind::Regular,
        },
    }
}

pub(crate) fn random_guid(rng: &mut ChaCha8Rng) -> String {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn slug(name: &str) -> String {
    let mut slug = String::new();
    for character in name.chars() {
        if character.is_ascii_alphanumeric() {
            slug.push(character.to_ascii_lowercase());
        } else if (character == ' ' || character == '-') && !slug.ends_with('-') && !slug.is_empty()
        {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_string()
}

/// Splits `users` across `tenants`: every tenant gets at least one, sizes are uneven, and when there are
/// enough users two tenants get at least 1,000 so `$top=999` paging spans several pages (MICROSOFT.md §3).
fn tenant_sizes(tenants: usize, users: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    if tenants == 0 {
        return Vec::new();
    }
    let users = users.max(tenants);
    let mut sizes = vec![1usize; tenants];
    let mut remaining = users - tenants;
    let mut big_positions: Vec<usize> = (0..tenants).collect();
    big_positions.shuffle(rng);
    for (which, share) in [(0usize, 3usize), (1, 2)] {
        if tenants < 3 && which == 1 {
            break;
        }
        let wanted = (users * share / 10).max(1_050 + which * 150);
        if tenants >= 2 && remaining >= wanted + (tenants - 1) * 5 {
            sizes[big_positions[which]] += wanted - 1;
            remaining -= wanted - 1;
        }
    }
    let weights: Vec<f64> = (0..tenants)
        .map(|_| {
            let draw: f64 = rng.gen();
            0.2 + draw * draw * draw * 6.0
        })
        .collect();
    let total_weight: f64 = weights.iter().sum();
    let to_spread = remaining;
    for (size, weight) in sizes.iter_mut().zip(&weights) {
        let share = ((to_spread as f64) * weight / total_weight).floor() as usize;
        let share = share.min(remaining);
        *size += share;
        remaining -= share;
    }
    // Rounding leftovers go to the first tenants, one each, round robin.
    let mut position = 0;
    while remaining > 0 {
        sizes[position % tenants] += 1;
        remaining -= 1;
        position += 1;
    }
    sizes
}

/// Splits `users` across `tenants` with log-normal sizes of about `median` (every tenant at
/// least one user): the spread σ follows from the mean `users / tenants` and the median
/// (mean = median · e^(σ²/2)); the draws are scaled to add up to `users` exactly.
fn log_normal_sizes(
    tenants: usize,
    users: usize,
    median: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    if tenants == 0 {
        return Vec::new();
    }
    let users = users.max(tenants);
    let mean = users as f64 / tenants as f64;
    let ratio = (mean / median.max(1) as f64).max(1.0);
    let sigma = (2.0 * ratio.ln()).sqrt();
    // Box–Muller: one standard normal draw per tenant.
    let weights: Vec<f64> = (0..tenants)
        .map(|_| {
            let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
            let u2: f64 = rng.gen();
            let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (sigma * normal).exp()
        })
        .collect();
    let total_weight: f64 = weights.iter().sum();
    let spread = users - tenants;
    let mut sizes: Vec<usize> = weights
        .iter()
        .map(|weight| 1 + (spread as f64 * weight / total_weight).floor() as usize)
        .collect();
    let mut remaining = users.saturating_sub(sizes.iter().sum());
    let mut position = 0;
    while remaining > 0 {
        sizes[position % tenants] += 1;
        remaining -= 1;
        position += 1;
    }
    sizes
}

fn phone(rng: &mut ChaCha8Rng) -> String {
    format!(
        "+1 {} 555 {:04}",
        rng.gen_range(201..990),
        rng.gen_range(100..10_000)
    )
}

fn unique_local_part(wanted: &str, taken: &mut HashSet<String>) -> String {
    if taken.insert(wanted.to_string()) {
        return wanted.to_string();
    }
    let mut counter = 2;
    loop {
        let candidate = format!("{wanted}{counter}");
        if taken.insert(candidate.clone()) {
            return candidate;
        }
        counter += 1;
    }
}

struct TenantNames {
    custom_domain: String,
    initial_domain: String,
    extra_domain: Option<String>,
}

fn generate_user(
    position: usize,
    names: &TenantNames,
    taken: &mut HashSet<String>,
    rng: &mut ChaCha8Rng,
) -> SimUser {
    let kind = user_kind(position, rng);
    let given = GIVEN_NAMES[rng.gen_range(0..GIVEN_NAMES.len())].to_string();
    let family = SURNAMES[rng.gen_range(0..SURNAMES.len())].to_string();
    let id = random_guid(rng);
    let job_title = (rng.gen_range(0..10) < 8)
        .then(|| JOB_TITLES[rng.gen_range(0..JOB_TITLES.len())].to_string());
    let mobile_phone = rng.gen_bool(0.5).then(|| phone(rng));
    let business_phones = if rng.gen_bool(0.6) {
        vec![phone(rng)]
    } else {
        Vec::new()
    };
    let license = vec![SKU_IDS[rng.gen_range(0..SKU_IDS.len())].to_string()];
    let custom = &names.custom_domain;
    let initial = &names.initial_domain;
    let base_local = format!("{}.{}", given.to_lowercase(), family.to_lowercase());
    let mut user = SimUser {
        id,
        display_name: format!("{given} {family}"),
        given_name: Some(given.clone()),
        surname: Some(family.clone()),
        mail: None,
        user_principal_name: String::new(),
        other_mails: Vec::new(),
        proxy_addresses: Vec::new(),
        account_enabled: true,
        user_type: "Member".to_string(),
        creation_type: None,
        job_title,
        mobile_phone,
        business_phones,
        assigned_licenses: license,
        office_location: rng
            .gen_bool(0.3)
            .then(|| format!("Building {}", rng.gen_range(1..6))),
        preferred_language: rng.gen_bool(0.4).then(|| "en-US".to_string()),
        deleted: false,
    };
    match kind {
        UserKind::Regular | UserKind::Disabled => {
            let local = unique_local_part(&base_local, taken);
            let address = format!("{local}@{custom}");
            user.mail = Some(address.clone());
            user.user_principal_name = address.clone();
            user.proxy_addresses =
                vec![format!("SMTP:{address}"), format!("smtp:{local}@{initial}")];
            if let Some(extra) = &names.extra_domain {
                if rng.gen_bool(0.5) {
                    user.proxy_addresses.push(format!("smtp:{local}@{extra}"));
                }
            }
            if rng.gen_bool(0.15) {
                let personal = PERSONAL_DOMAINS[rng.gen_range(0..4)];
                user.other_mails = vec![format!("{local}@{personal}")];
            }
            if kind == UserKind::Disabled {
                user.account_enabled = false;
                if rng.gen_bool(0.5) {
                    user.assigned_licenses.clear();
                }
            }
        }
        UserKind::Guest | UserKind::ExternalMember => {
            // MICROSOFT.md §3: guests have userType Guest, creationType Invitation, a `#EXT#` UPN on the
            // initial domain and the real address in mail/otherMails; external members are userType Member
            // with the same `#EXT#` UPN.
            let personal = PERSONAL_DOMAINS[rng.gen_range(0..PERSONAL_DOMAINS.len())];
            let real = format!("{base_local}@{personal}");
            let ext_local = unique_local_part(&format!("{}_{}", base_local, personal), taken);
            user.user_principal_name = format!("{ext_local}#EXT#@{initial}");
            user.mail = Some(real.clone());
            user.other_mails = vec![real.clone()];
            user.proxy_addresses = vec![format!("SMTP:{real}")];
            user.creation_type = Some("Invitation".to_string());
            user.user_type = if kind == UserKind::Guest {
                "Guest"
            } else {
                "Member"
            }
            .to_string();
            user.assigned_licenses.clear();
            user.display_name = format!("{given} {family} (External)");
        }
        UserKind::SharedMailbox => {
            // MICROSOFT.md §3: shared mailboxes cannot be told apart in a list call (usually unlicensed, disabled).
            let name = SHARED_MAILBOXES[rng.gen_range(0..SHARED_MAILBOXES.len())];
            let local = unique_local_part(&slug(name).replace('-', ""), taken);
            let address = format!("{local}@{custom}");
            user.display_name = name.to_string();
            user.given_name = None;
            user.surname = None;
            user.job_title = None;
            user.mobile_phone = None;
            user.business_phones.clear();
            user.mail = Some(address.clone());
            user.user_principal_name = address.clone();
            user.proxy_addresses =
                vec![format!("SMTP:{address}"), format!("smtp:{local}@{initial}")];
            user.account_enabled = false;
            user.assigned_licenses.clear();
        }
        UserKind::NullMail => {
            // MICROSOFT.md §3: `mail` is often null; the UPN is then the address.
            let local = unique_local_part(&base_local, taken);
            user.user_principal_name = format!("{local}@{custom}");
            user.assigned_licenses.clear();
        }
        UserKind::AliasOnly => {
            // MICROSOFT.md §3: use proxyAddresses; here an `smtp:` alias on the custom domain is the only
            // usable address, because mail is null and the UPN is on the onmicrosoft.com domain.
            let short = unique_local_part(
                &format!(
                    "{}{}",
                    given.to_lowercase().chars().next().unwrap_or('x'),
                    family.to_lowercase()
                ),
                taken,
            );
            let alias_local = unique_local_part(&base_local, taken);
            user.user_principal_name = format!("{short}@{initial}");
            user.proxy_addresses = vec![
                format!("SMTP:{short}@{initial}"),
                format!("smtp:{alias_local}@{custom}"),
            ];
        }
    }
    user
}

/// Generates the MSP's directory data. Pure and deterministic: the same seed and sizes give the same data.
pub fn generate(config: &SimulatorConfig) -> Msp {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let sizes = match config.size_median {
        Some(median) => log_normal_sizes(config.tenants, config.users, median, &mut rng),
        None => tenant_sizes(config.tenants, config.users, &mut rng),
    };
    let mut used_names = HashSet::new();
    let mut used_slugs = HashSet::new();
    let mut tenants = Vec::with_capacity(config.tenants);
    for (index, size) in sizes.into_iter().enumerate() {
        let tenant_id = random_guid(&mut rng);
        let mut display_name;
        let mut attempts = 0;
        loop {
            let stem = NAME_STEMS[rng.gen_range(0..NAME_STEMS.len())];
            let industry = NAME_INDUSTRIES[rng.gen_range(0..NAME_INDUSTRIES.len())];
            let suffix = LEGAL_SUFFIXES[rng.gen_range(0..LEGAL_SUFFIXES.len())];
            display_name = format!("{stem} {industry}");
            let key = display_name.clone();
            if !suffix.is_empty() {
                display_name = format!("{display_name} {suffix}");
            }
            attempts += 1;
            if used_names.insert(key) || attempts > 20 {
                break;
            }
        }
        let base_slug = slug(
            display_name
                .split_whitespace()
                .filter(|word| !["Inc", "Inc.", "LLC", "Ltd", "GmbH", "Pty"].contains(word))
                .collect::<Vec<_>>()
                .join(" ")
                .as_str(),
        );
        let mut domain_slug = base_slug.clone();
        if !used_slugs.insert(domain_slug.clone()) {
            domain_slug = format!("{base_slug}-{index}");
            used_slugs.insert(domain_slug.clone());
        }
        let custom_domain = format!("{domain_slug}.com");
        let initial_domain = format!("{}.onmicrosoft.com", domain_slug.replace('-', ""));
        let extra_domain = rng.gen_bool(0.35).then(|| format!("{domain_slug}.co.uk"));
        let mut domains = vec![
            Domain {
                id: custom_domain.clone(),
                is_default: true,
                is_initial: false,
                is_verified: true,
            },
            Domain {
                id: initial_domain.clone(),
                is_default: false,
                is_initial: true,
                is_verified: true,
            },
        ];
        if let Some(extra) = &extra_domain {
            domains.push(Domain {
                id: extra.clone(),
                is_default: false,
                is_initial: false,
                is_verified: true,
            });
        }
        let names = TenantNames {
            custom_domain,
            initial_domain,
            extra_domain,
        };
        let mut taken = HashSet::new();
        let users: Vec<SimUser> = (0..size)
            .map(|position| generate_user(position, &names, &mut taken, &mut rng))
            .collect();
        let groups = generate_groups(&tenant_id, &users);
        tenants.push(CustomerTenant {
            tenant_id,
            display_name,
            domains,
            users,
            groups,
        });
    }
    Msp {
        partner_tenant_id: config.partner_tenant_id.clone(),
        tenants,
    }
}

/// Builds a user for the admin "add user" operation, shaped like a regular generated member.
pub(crate) fn new_member(
    id: String,
    given_name: &str,
    surname: &str,
    tenant: &CustomerTenant,
) -> SimUser {
    let local = format!(
        "{}.{}",
        slug(given_name).replace('-', ""),
        slug(surname).replace('-', "")
    );
    let address = format!("{local}@{}", tenant.default_domain());
    SimUser {
        id,
        display_name: format!("{given_name} {surname}"),
        given_name: Some(given_name.to_string()),
        surname: Some(surname.to_string()),
        mail: Some(address.clone()),
        user_principal_name: address.clone(),
        other_mails: Vec::new(),
        proxy_addresses: vec![format!("SMTP:{address}")],
        account_enabled: true,
        user_type: "Member".to_string(),
        creation_type: None,
        job_title: None,
        mobile_phone: None,
        business_phones: Vec::new(),
        assigned_licenses: vec![SKU_IDS[0].to_string()],
        office_location: None,
        preferred_language: None,
        deleted: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_sized() {
        let config = SimulatorConfig::default();
        let first = generate(&config);
        let second = generate(&config);
        assert_eq!(first, second);
        assert_eq!(first.tenants.len(), 20);
        let total: usize = first.tenants.iter().map(|tenant| tenant.users.len()).sum();
        assert_eq!(total, 5_000);
        assert!(first.tenants.iter().all(|tenant| !tenant.users.is_empty()));
        let big = first
            .tenants
            .iter()
            .filter(|tenant| tenant.users.len() >= 1_000)
            .count();
        assert!(big >= 2, "two tenants should need several $top=999 pages");
        let other = generate(&SimulatorConfig {
            seed: 7,
            ..SimulatorConfig::default()
        });
        assert_ne!(first, other);
    }

    #[test]
    fn every_tenant_has_distinct_groups_of_its_own_users() {
        let msp = generate(&SimulatorConfig::default());
        let mut ids = HashSet::new();
        for tenant in &msp.tenants {
            assert_eq!(tenant.groups.len(), GROUP_SPECS.len());
            for group in &tenant.groups {
                assert!(
                    ids.insert(group.id.clone()),
                    "group id {} repeats",
                    group.id
                );
                assert!(group
                    .member_ids
                    .iter()
                    .all(|id| tenant.users.iter().any(|user| &user.id == id)));
            }
        }
        let largest = msp
            .tenants
            .iter()
            .max_by_key(|tenant| tenant.users.len())
            .expect("tenants");
        assert!(
            largest.groups[0].member_ids.len() > 999,
            "one group should need several $top=999 pages"
        );
    }

    #[test]
    fn log_normal_sizes_add_up_and_have_about_the_median() {
        let msp = generate(&SimulatorConfig {
            tenants: 200,
            users: 40_000,
            size_median: Some(61),
            ..SimulatorConfig::default()
        });
        let mut sizes: Vec<usize> = msp
            .tenants
            .iter()
            .map(|tenant| tenant.users.len())
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 40_000);
        assert!(sizes.iter().all(|size| *size >= 1));
        sizes.sort_unstable();
        let median = sizes[sizes.len() / 2];
        assert!((30..=120).contains(&median), "median {median}");
        assert!(sizes[sizes.len() - 1] > 1_000, "a few large tenants");
    }

    #[test]
    fn every_tenant_gets_a_user_even_when_users_are_scarce() {
        let msp = generate(&SimulatorConfig {
            tenants: 5,
            users: 2,
            ..SimulatorConfig::default()
        });
        assert!(msp.tenants.iter().all(|tenant| tenant.users.len() == 1));
    }

    #[test]
    fn the_mix_contains_every_kind() {
        let msp = generate(&SimulatorConfig::default());
        let users: Vec<&SimUser> = msp.tenants.iter().flat_map(|t| &t.users).collect();
        assert!(users
            .iter()
            .any(|u| u.user_type == "Guest" && u.user_principal_name.contains("#EXT#")));
        assert!(users
            .iter()
            .any(|u| u.user_type == "Member" && u.user_principal_name.contains("#EXT#")));
        assert!(users.iter().any(|u| !u.account_enabled));
        assert!(users
            .iter()
            .any(|u| u.mail.is_none() && !u.user_principal_name.contains(".onmicrosoft.com")));
        assert!(users.iter().any(|u| u.mail.is_none()
            && u.user_principal_name.ends_with(".onmicrosoft.com")
            && u.proxy_addresses.iter().any(|p| p.starts_with("smtp:"))));
        assert!(users.iter().all(|u| u.business_phones.len() <= 1));
        assert!(msp.tenants.iter().any(|t| ["Inc", "LLC", "Ltd", "GmbH"]
            .iter()
            .any(|suffix| t.display_name.ends_with(suffix))));
    }
}

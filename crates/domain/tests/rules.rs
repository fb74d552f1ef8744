//! The domain rules as one data-driven table: every row is a rule from the spec with its input
//! and the expected outcome, rendered as short lines so a failure reads as a diff.

use entra_sync_domain::email::{primary_email, user_emails};
use entra_sync_domain::filter::{filter_user, validate_filters};
use entra_sync_domain::mapping::{
    normalize_company_name, preview_state, score_name, ClientForMapping, MappingIndex,
};
use entra_sync_domain::model::{
    Action, Contact, ContactField, ContactFields, DirectoryEntry, DirectoryUser, FieldPolicy,
    FilterOverride, Filters, InactiveReason, Link, PageContext, Plan, ReviewState, SkipReason,
    SyncSettings,
};
use entra_sync_domain::plan::{inactivation_guard_trips, page_keys, plan_absent, plan_page, tally};
use entra_sync_domain::validate::validate_user;
use std::collections::BTreeMap;
use uuid::Uuid;

const MAPPED_CLIENT: u128 = 1000;
const OTHER_CLIENT: u128 = 2000;
const MANAGED_TENANT: u128 = 1;
const OTHER_TENANT: u128 = 2;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

// ---- builders -------------------------------------------------------------------------------

fn user(object_id: &str) -> DirectoryUser {
    DirectoryUser {
        object_id: object_id.to_string(),
        display_name: Some(format!("User {object_id}")),
        account_enabled: Some(true),
        user_type: Some("Member".to_string()),
        assigned_license_count: 1,
        ..DirectoryUser::default()
    }
}

trait UserBuilder {
    fn mail(self, mail: &str) -> Self;
    fn upn(self, upn: &str) -> Self;
    fn proxies(self, proxies: &[&str]) -> Self;
    fn other_mails(self, other_mails: &[&str]) -> Self;
    fn enabled(self, enabled: Option<bool>) -> Self;
    fn user_type(self, user_type: &str) -> Self;
    fn name(self, display_name: Option<&str>) -> Self;
    fn given_surname(self, given: &str, surname: &str) -> Self;
    fn phones(self, business: &[&str], mobile: Option<&str>) -> Self;
    fn job(self, job_title: &str) -> Self;
    fn licenses(self, count: usize) -> Self;
    fn groups(self, group_ids: &[&str]) -> Self;
}

impl UserBuilder for DirectoryUser {
    fn mail(mut self, mail: &str) -> Self {
        self.mail = Some(mail.to_string());
        self
    }
    fn upn(mut self, upn: &str) -> Self {
        self.user_principal_name = Some(upn.to_string());
        self
    }
    fn proxies(mut self, proxies: &[&str]) -> Self {
        self.proxy_addresses = proxies.iter().map(|p| p.to_string()).collect();
        self
    }
    fn other_mails(mut self, other_mails: &[&str]) -> Self {
        self.other_mails = other_mails.iter().map(|m| m.to_string()).collect();
        self
    }
    fn enabled(mut self, enabled: Option<bool>) -> Self {
        self.account_enabled = enabled;
        self
    }
    fn user_type(mut self, user_type: &str) -> Self {
        self.user_type = Some(user_type.to_string());
        self
    }
    fn name(mut self, display_name: Option<&str>) -> Self {
        self.display_name = display_name.map(str::to_string);
        self
    }
    fn given_surname(mut self, given: &str, surname: &str) -> Self {
        self.given_name = Some(given.to_string());
        self.surname = Some(surname.to_string());
        self
    }
    fn phones(mut self, business: &[&str], mobile: Option<&str>) -> Self {
        self.business_phones = business.iter().map(|p| p.to_string()).collect();
        self.mobile_phone = mobile.map(str::to_string);
        self
    }
    fn job(mut self, job_title: &str) -> Self {
        self.job_title = Some(job_title.to_string());
        self
    }
    fn licenses(mut self, count: usize) -> Self {
        self.assigned_license_count = count;
        self
    }
    fn groups(mut self, group_ids: &[&str]) -> Self {
        self.group_ids = Some(group_ids.iter().map(|g| g.to_string()).collect());
        self
    }
}

const SALES: &str = "5b0e6c5e-0000-4000-8000-000000000001";
const CONTRACTORS: &str = "5b0e6c5e-0000-4000-8000-000000000002";

fn present(user: DirectoryUser) -> DirectoryEntry {
    DirectoryEntry::Present(user)
}

fn removed(object_id: &str) -> DirectoryEntry {
    DirectoryEntry::Removed {
        object_id: object_id.to_string(),
        permanent: false,
    }
}

fn contact(n: u128, email: &str) -> Contact {
    Contact {
        contact_id: id(n),
        client_id: id(MAPPED_CLIENT),
        fields: ContactFields {
            full_name: format!("Contact {n}"),
            email: Some(email.to_string()),
            ..ContactFields::default()
        },
        is_active: true,
        inactive_reason: None,
        sync_locked: false,
    }
}

trait ContactBuilder {
    fn in_other_client(self) -> Self;
    fn inactive(self, reason: Option<InactiveReason>) -> Self;
    fn locked(self) -> Self;
    fn with(self, edit: impl FnOnce(&mut ContactFields)) -> Self;
}

impl ContactBuilder for Contact {
    fn in_other_client(mut self) -> Self {
        self.client_id = id(OTHER_CLIENT);
        self
    }
    fn inactive(mut self, reason: Option<InactiveReason>) -> Self {
        self.is_active = false;
        self.inactive_reason = reason;
        self
    }
    fn locked(mut self) -> Self {
        self.sync_locked = true;
        self
    }
    fn with(mut self, edit: impl FnOnce(&mut ContactFields)) -> Self {
        edit(&mut self.fields);
        self
    }
}

/// One page to plan, with what the store would have loaded for it.
struct Page {
    entries: Vec<DirectoryEntry>,
    contacts: Vec<Contact>,
    /// (object id, contact) links of the managed tenant being synced.
    links: Vec<(&'static str, u128)>,
    /// (contact, object id) links held by a user of another managed tenant.
    foreign_links: Vec<(u128, &'static str)>,
    reviews: Vec<(&'static str, ReviewState)>,
    settings: SyncSettings,
}

fn page(entries: Vec<DirectoryEntry>) -> Page {
    Page {
        entries,
        contacts: Vec::new(),
        links: Vec::new(),
        foreign_links: Vec::new(),
        reviews: Vec::new(),
        settings: SyncSettings::default(),
    }
}

impl Page {
    fn contacts(mut self, contacts: Vec<Contact>) -> Self {
        self.contacts = contacts;
        self
    }
    fn link(mut self, object_id: &'static str, contact: u128) -> Self {
        self.links.push((object_id, contact));
        self
    }
    fn foreign_link(mut self, contact: u128, object_id: &'static str) -> Self {
        self.foreign_links.push((contact, object_id));
        self
    }
    fn review(mut self, object_id: &'static str, state: ReviewState) -> Self {
        self.reviews.push((object_id, state));
        self
    }
    fn policy(mut self, field: ContactField, policy: FieldPolicy) -> Self {
        self.settings.field_policy.insert(field, policy);
        self
    }
    fn all_policies(mut self, policy: FieldPolicy) -> Self {
        for field in ContactField::ALL {
            self.settings.field_policy.insert(field, policy);
        }
        self
    }
    fn settings(mut self, edit: impl FnOnce(&mut SyncSettings)) -> Self {
        edit(&mut self.settings);
        self
    }

    fn context(&self) -> PageContext {
        let mut context = PageContext {
            managed_tenant_id: id(MANAGED_TENANT),
            mapped_client_id: id(MAPPED_CLIENT),
            ..PageContext::default()
        };
        for contact in &self.contacts {
            context.contacts.insert(contact.contact_id, contact.clone());
        }
        for (object_id, contact) in &self.links {
            context
                .links_by_object_id
                .insert(object_id.to_string(), id(*contact));
            context.link_by_contact_id.insert(
                id(*contact),
                Link {
                    managed_tenant_id: id(MANAGED_TENANT),
                    object_id: object_id.to_string(),
                    contact_id: id(*contact),
                },
            );
        }
        for (contact, object_id) in &self.foreign_links {
            context.link_by_contact_id.insert(
                id(*contact),
                Link {
                    managed_tenant_id: id(OTHER_TENANT),
                    object_id: object_id.to_string(),
                    contact_id: id(*contact),
                },
            );
        }
        for (object_id, state) in &self.reviews {
            context
                .review_state_by_object_id
                .insert(object_id.to_string(), state.clone());
        }
        context
    }
}

// ---- rendering ------------------------------------------------------------------------------

fn uuid_name(uuid: Uuid) -> String {
    match uuid.as_u128() {
        MAPPED_CLIENT => "mapped".to_string(),
        OTHER_CLIENT => "other".to_string(),
        n => format!("c{n}"),
    }
}

fn optional(value: &Option<String>) -> String {
    value
        .as_deref()
        .map_or("-".to_string(), |value| format!("{value:?}"))
}

fn render_fields(fields: &ContactFields) -> String {
    format!(
        "name={:?} email={} phone={} mobile={} job={}",
        fields.full_name,
        optional(&fields.email),
        optional(&fields.phone),
        optional(&fields.mobile),
        optional(&fields.job_title)
    )
}

fn render_changes(before: &ContactFields, after: &ContactFields) -> String {
    let mut changes = Vec::new();
    if before.full_name != after.full_name {
        changes.push(format!(
            "name {:?}->{:?}",
            before.full_name, after.full_name
        ));
    }
    for (label, old, new) in [
        ("email", &before.email, &after.email),
        ("phone", &before.phone, &after.phone),
        ("mobile", &before.mobile, &after.mobile),
        ("job", &before.job_title, &after.job_title),
    ] {
        if old != new {
            changes.push(format!("{label} {}->{}", optional(old), optional(new)));
        }
    }
    changes.join(" ")
}

fn render(action: &Action) -> String {
    match action {
        Action::Link {
            object_id,
            contact_id,
        } => format!("link {object_id} {}", uuid_name(*contact_id)),
        Action::Create {
            object_id,
            client_id,
            fields,
        } => {
            format!(
                "create {object_id} in {} {}",
                uuid_name(*client_id),
                render_fields(fields)
            )
        }
        Action::Update {
            object_id,
            contact_id,
            before,
            after,
        } => {
            format!(
                "update {object_id} {} {}",
                uuid_name(*contact_id),
                render_changes(before, after)
            )
        }
        Action::Inactivate {
            object_id,
            contact_id,
            reason,
        } => {
            format!(
                "inactivate {object_id} {} {}",
                uuid_name(*contact_id),
                reason.as_str()
            )
        }
        Action::Reactivate {
            object_id,
            contact_id,
        } => format!("reactivate {object_id} {}", uuid_name(*contact_id)),
        Action::Queue {
            object_id,
            reason,
            email,
            candidates,
            ..
        } => {
            let candidates: Vec<String> = candidates.iter().map(|c| uuid_name(*c)).collect();
            format!(
                "queue {object_id} {} [{}] email={}",
                reason.as_str(),
                candidates.join(","),
                optional(email)
            )
        }
        Action::Skip {
            object_id,
            reason,
            detail,
        } => {
            let mut line = format!(
                "skip {} {}",
                object_id.as_deref().unwrap_or("?"),
                reason.as_str()
            );
            if let Some(detail) = detail {
                line.push_str(&format!(" ({detail})"));
            }
            line
        }
    }
}

fn render_plan(plan: &Plan) -> Vec<String> {
    plan.actions.iter().map(render).collect()
}

// ---- the table ------------------------------------------------------------------------------

enum Rule {
    /// Plan one page; expect these actions.
    Plan(Page, &'static [&'static str]),
    /// Plan the links absent from a complete enumeration.
    Absent(
        Vec<(&'static str, u128)>,
        Vec<Contact>,
        &'static [&'static str],
    ),
    /// `inactivation_guard_trips(pending, linked)`.
    Guard(usize, usize, bool),
    /// `user_emails` of a user, in order.
    Emails(DirectoryUser, &'static [&'static str]),
    /// `filter_user` with these filters.
    Filter(Filters, DirectoryUser, Option<SkipReason>),
    /// `validate_filters` accepts (true) or refuses (false).
    ValidFilters(Filters, bool),
    /// `validate_user` accepts (true) or refuses (false).
    ValidUser(DirectoryUser, bool),
    /// `preview_state` of a tenant (name, domains) against clients: state, then candidates as
    /// `client reason`.
    Mapping(
        &'static str,
        &'static [&'static str],
        Vec<ClientForMapping>,
        &'static [&'static str],
    ),
    /// `normalize_company_name(a) == b`.
    CompanyName(&'static str, &'static str),
    /// Tally of the plan of a page: rendered counts.
    Tally(Page, &'static str),
}

fn lines(expected: &[&str]) -> Vec<String> {
    expected.iter().map(|line| line.to_string()).collect()
}

fn compare<T: std::fmt::Debug + PartialEq>(actual: T, expected: T) -> Result<(), String> {
    if actual == expected {
        Ok(())
    } else {
        Err(format!("expected {expected:#?}\n  actual {actual:#?}"))
    }
}

fn client(n: u128, name: &str, domains: &[&str], secondary: &[&str]) -> ClientForMapping {
    ClientForMapping {
        client_id: id(n),
        name: name.to_string(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        secondary_domains: secondary.iter().map(|d| d.to_string()).collect(),
    }
}

/// The single helper every row goes through.
fn check(rule: &Rule) -> Result<(), String> {
    match rule {
        Rule::Plan(page, expected) => {
            let plan = plan_page(&page.context(), &page.entries, &page.settings);
            compare(render_plan(&plan), lines(expected))
        }
        Rule::Absent(links, contacts, expected) => {
            let links: Vec<Link> = links
                .iter()
                .map(|(object_id, contact)| Link {
                    managed_tenant_id: id(MANAGED_TENANT),
                    object_id: object_id.to_string(),
                    contact_id: id(*contact),
                })
                .collect();
            let contacts: BTreeMap<Uuid, Contact> =
                contacts.iter().map(|c| (c.contact_id, c.clone())).collect();
            compare(
                render_plan(&plan_absent(&links, &contacts)),
                lines(expected),
            )
        }
        Rule::Guard(pending, linked, trips) => {
            compare(inactivation_guard_trips(*pending, *linked), *trips)
        }
        Rule::Emails(user, expected) => {
            compare(primary_email(user), expected.first().map(|e| e.to_string()))?;
            compare(user_emails(user), lines(expected))
        }
        Rule::Filter(filters, user, expected) => compare(filter_user(user, filters), *expected),
        Rule::ValidFilters(filters, valid) => compare(validate_filters(filters).is_ok(), *valid),
        Rule::ValidUser(user, valid) => compare(validate_user(user).is_ok(), *valid),
        Rule::Mapping(tenant_name, tenant_domains, clients, expected) => {
            let domains: Vec<String> = tenant_domains.iter().map(|d| d.to_string()).collect();
            let preview = preview_state(tenant_name, &domains, clients);
            // The indexed preview the API serves must agree with the reference on every row.
            compare(
                &MappingIndex::new(clients).preview(tenant_name, &domains),
                &preview,
            )?;
            let mut actual = vec![match preview.state {
                entra_sync_domain::mapping::MappingState::AutoMatched { client_id } => {
                    format!("auto_matched {}", uuid_name(client_id))
                }
                ref state => state.as_str().to_string(),
            }];
            actual.extend(preview.candidates.iter().map(|c| {
                format!(
                    "{} {} {:.2}",
                    uuid_name(c.client_id),
                    c.reason.as_str(),
                    c.score
                )
            }));
            compare(actual, lines(expected))
        }
        Rule::CompanyName(raw, normalized) => {
            compare(normalize_company_name(raw).as_str(), *normalized)
        }
        Rule::Tally(page, expected) => {
            let plan = plan_page(&page.context(), &page.entries, &page.settings);
            let t = tally(&plan, page.entries.len());
            let skipped: Vec<String> = t
                .skipped
                .iter()
                .map(|(r, n)| format!("{}={n}", r.as_str()))
                .collect();
            let actual = format!(
                "seen={} eligible={} created={} linked={} updated={} inactivated={} reactivated={} queued={} skipped[{}]",
                t.seen, t.eligible, t.created, t.linked, t.updated, t.inactivated, t.reactivated, t.queued,
                skipped.join(",")
            );
            compare(actual.as_str(), *expected)
        }
    }
}

fn bob() -> DirectoryUser {
    user("u1").mail("bob@contoso.com").upn("bob@contoso.com")
}

fn filters(edit: impl FnOnce(&mut Filters)) -> Filters {
    let mut filters = Filters::default();
    edit(&mut filters);
    filters
}

// Rows are laid out by hand, one rule per row, so the table reads like the spec.
#[rustfmt::skip]
fn rules() -> Vec<(&'static str, Rule)> {
    use ContactField::*;
    use FieldPolicy::*;
    use InactiveReason::*;
    vec![
        // ---- candidate addresses ----
        ("emails: mail, SMTP primary, UPN, smtp secondaries, otherMails; normalized, deduplicated", Rule::Emails(
            user("u1").mail(" Bob@Contoso.com ").upn("bob.upn@contoso.com")
                .proxies(&["smtp:bob@sales.contoso.com", "SMTP:Robert@contoso.com", "x500:/o=Org/cn=bob", "sip:bob@contoso.com", "SMTP:bob@contoso.com"])
                .other_mails(&["bob@gmail.com", "BOB@GMAIL.COM", "not an email"]),
            &["bob@contoso.com", "robert@contoso.com", "bob.upn@contoso.com", "bob@sales.contoso.com", "bob@gmail.com"],
        )),
        ("emails: mail often null, UPN is used", Rule::Emails(user("u1").upn("Bob@Contoso.com"), &["bob@contoso.com"])),
        ("emails: guest's mangled UPN never used", Rule::Emails(
            user("u1").user_type("Guest").upn("alice_gmail.com#EXT#@contoso.onmicrosoft.com").other_mails(&["alice@gmail.com"]),
            &["alice@gmail.com"],
        )),
        ("emails: external member (#EXT# UPN, userType Member) UPN never used", Rule::Emails(
            user("u1").upn("alice_fabrikam.com#EXT#@contoso.onmicrosoft.com").mail("alice@fabrikam.com"),
            &["alice@fabrikam.com"],
        )),
        ("emails: none usable", Rule::Emails(user("u1").proxies(&["x500:/o=Org", "SMTP:"]), &[])),

        // ---- link first ----
        ("link first: linked contact is the match even after the user's email changed", Rule::Plan(
            page(vec![present(user("u1").mail("new@contoso.com"))])
                .contacts(vec![contact(1, "old@contoso.com"), contact(2, "new@contoso.com")])
                .link("u1", 1),
            &[],
        )),
        ("link first: email change flows to the linked contact under overwrite", Rule::Plan(
            page(vec![present(user("u1").mail("new@contoso.com").name(Some("Contact 1")))])
                .contacts(vec![contact(1, "old@contoso.com")])
                .link("u1", 1)
                .policy(Email, Overwrite),
            &["update u1 c1 email \"old@contoso.com\"->\"new@contoso.com\""],
        )),

        // ---- the page's email index follows the page's own updates ----
        ("email index: a linked user's new address moves its contact for the users after it", Rule::Plan(
            page(vec![
                present(user("u1").mail("new@contoso.com").name(Some("Contact 1"))),
                present(user("u2").mail("old@contoso.com").name(Some("Two"))),
                present(user("u3").mail("new@contoso.com").name(Some("Three"))),
            ])
                .contacts(vec![contact(1, "old@contoso.com")])
                .link("u1", 1)
                .policy(Email, Overwrite),
            &[
                "update u1 c1 email \"old@contoso.com\"->\"new@contoso.com\"",
                "create u2 in mapped name=\"Two\" email=\"old@contoso.com\" phone=- mobile=- job=-",
                "queue u3 candidate_linked_to_other_user [c1] email=\"new@contoso.com\"",
            ],
        )),
        ("email index: the same when an unlinked user built the index before the update", Rule::Plan(
            page(vec![
                present(user("u0").mail("zero@contoso.com").name(Some("Zero"))),
                present(user("u1").mail("new@contoso.com").name(Some("Contact 1"))),
                present(user("u2").mail("old@contoso.com").name(Some("Two"))),
                present(user("u3").mail("new@contoso.com").name(Some("Three"))),
            ])
                .contacts(vec![contact(1, "old@contoso.com")])
                .link("u1", 1)
                .policy(Email, Overwrite),
            &[
                "create u0 in mapped name=\"Zero\" email=\"zero@contoso.com\" phone=- mobile=- job=-",
                "update u1 c1 email \"old@contoso.com\"->\"new@contoso.com\"",
                "create u2 in mapped name=\"Two\" email=\"old@contoso.com\" phone=- mobile=- job=-",
                "queue u3 candidate_linked_to_other_user [c1] email=\"new@contoso.com\"",
            ],
        )),

        // ---- matching by email ----
        ("match via mail: one candidate in the mapped client is linked", Rule::Plan(
            page(vec![present(bob())]).contacts(vec![contact(1, "bob@contoso.com")]),
            &["link u1 c1"],
        )),
        ("match via UPN when mail is null", Rule::Plan(
            page(vec![present(user("u1").upn("bob@contoso.com"))]).contacts(vec![contact(1, "bob@contoso.com")]),
            &["link u1 c1"],
        )),
        ("match via proxyAddresses smtp: secondary", Rule::Plan(
            page(vec![present(user("u1").upn("bob@contoso.onmicrosoft.com").proxies(&["SMTP:bob@contoso.com", "smtp:bob@sales.contoso.com"]))])
                .contacts(vec![contact(1, "bob@sales.contoso.com")]),
            &["link u1 c1"],
        )),
        ("match via proxyAddresses SMTP: primary, prefix in any case", Rule::Plan(
            page(vec![present(user("u1").proxies(&["Smtp:bob@contoso.com"]))]).contacts(vec![contact(1, "bob@contoso.com")]),
            &["link u1 c1"],
        )),
        ("match via otherMails", Rule::Plan(
            page(vec![present(user("u1").upn("x@contoso.onmicrosoft.com").other_mails(&["bob@home.example.com"]))])
                .contacts(vec![contact(1, "bob@home.example.com")]),
            &["link u1 c1"],
        )),
        ("match is case-insensitive and trimmed on both sides", Rule::Plan(
            page(vec![present(user("u1").mail("  BOB@contoso.COM "))]).contacts(vec![contact(1, " Bob@Contoso.com  ")]),
            &["link u1 c1"],
        )),
        ("guest mangled UPN never matches a contact holding that string", Rule::Plan(
            page(vec![present(user("u1").user_type("Guest").upn("alice_gmail.com#EXT#@contoso.onmicrosoft.com").mail("alice@gmail.com").name(Some("Alice")))])
                .contacts(vec![contact(1, "alice_gmail.com#EXT#@contoso.onmicrosoft.com")])
                .settings(|s| s.filters.exclude_guests = false),
            &["create u1 in mapped name=\"Alice\" email=\"alice@gmail.com\" phone=- mobile=- job=-"],
        )),
        ("no candidate anywhere: create under the mapped client with every field", Rule::Plan(
            page(vec![present(bob().name(Some(" Bob Smith ")).phones(&["", "+1 555 0100"], Some("+1 555 0199")).job("Engineer"))]),
            &["create u1 in mapped name=\"Bob Smith\" email=\"bob@contoso.com\" phone=\"+1 555 0100\" mobile=\"+1 555 0199\" job=\"Engineer\""],
        )),
        ("create: name from given name and surname when displayName is missing", Rule::Plan(
            page(vec![present(bob().name(None).given_surname("Bob", "Smith"))]),
            &["create u1 in mapped name=\"Bob Smith\" email=\"bob@contoso.com\" phone=- mobile=- job=-"],
        )),
        ("create: no name at all is named by its email", Rule::Plan(
            page(vec![present(bob().name(Some("  ")))]),
            &["create u1 in mapped name=\"bob@contoso.com\" email=\"bob@contoso.com\" phone=- mobile=- job=-"],
        )),
        ("one candidate in another client: review candidate_in_other_client", Rule::Plan(
            page(vec![present(bob())]).contacts(vec![contact(1, "bob@contoso.com").in_other_client()]),
            &["queue u1 candidate_in_other_client [c1] email=\"bob@contoso.com\""],
        )),
        ("several candidates: review multiple_candidates", Rule::Plan(
            page(vec![present(bob().other_mails(&["bob@home.example.com"]))])
                .contacts(vec![contact(1, "bob@contoso.com"), contact(2, "bob@home.example.com"), contact(3, "eve@contoso.com")]),
            &["queue u1 multiple_candidates [c1,c2] email=\"bob@contoso.com\""],
        )),
        ("several candidates, same address, mixed clients: multiple_candidates", Rule::Plan(
            page(vec![present(bob())]).contacts(vec![contact(1, "bob@contoso.com"), contact(2, "bob@contoso.com").in_other_client()]),
            &["queue u1 multiple_candidates [c1,c2] email=\"bob@contoso.com\""],
        )),
        ("candidate linked to another user: review candidate_linked_to_other_user", Rule::Plan(
            page(vec![present(bob())]).contacts(vec![contact(1, "bob@contoso.com")]).link("u9", 1),
            &["queue u1 candidate_linked_to_other_user [c1] email=\"bob@contoso.com\""],
        )),
        ("candidate linked to a user of another managed tenant: candidate_linked_to_other_user", Rule::Plan(
            page(vec![present(bob())]).contacts(vec![contact(1, "bob@contoso.com")]).foreign_link(1, "u1"),
            &["queue u1 candidate_linked_to_other_user [c1] email=\"bob@contoso.com\""],
        )),
        ("two users of a page want the same contact: first links, second is queued", Rule::Plan(
            page(vec![present(bob()), present(user("u2").other_mails(&["bob@contoso.com"]))])
                .contacts(vec![contact(1, "bob@contoso.com")]),
            &["link u1 c1", "queue u2 candidate_linked_to_other_user [c1] email=\"bob@contoso.com\""],
        )),
        ("a user whose other address is the email of a contact created earlier on the page: queued", Rule::Plan(
            page(vec![present(bob().name(Some("Bob"))), present(user("u2").upn("bob2@contoso.com").other_mails(&["bob@contoso.com"]))]),
            &[
                "create u1 in mapped name=\"Bob\" email=\"bob@contoso.com\" phone=- mobile=- job=-",
                "queue u2 candidate_linked_to_other_user [] email=\"bob2@contoso.com\"",
            ],
        )),
        ("only the created contact's email collides: sharing a secondary address is no duplicate", Rule::Plan(
            page(vec![present(bob().name(Some("Bob")).other_mails(&["shared@contoso.com"])), present(user("u2").mail("shared@contoso.com"))]),
            &[
                "create u1 in mapped name=\"Bob\" email=\"bob@contoso.com\" phone=- mobile=- job=-",
                "create u2 in mapped name=\"User u2\" email=\"shared@contoso.com\" phone=- mobile=- job=-",
            ],
        )),
        ("two users of a page would create the same primary email: second is queued", Rule::Plan(
            page(vec![present(bob().name(Some("Bob"))), present(user("u2").mail("Bob@contoso.com"))]),
            &[
                "create u1 in mapped name=\"Bob\" email=\"bob@contoso.com\" phone=- mobile=- job=-",
                "queue u2 candidate_linked_to_other_user [] email=\"bob@contoso.com\"",
            ],
        )),
        ("same object id twice on a page (delta replay): acted on once", Rule::Plan(
            page(vec![present(bob().name(Some("Old"))), present(bob().name(Some("Bob")))]),
            &["create u1 in mapped name=\"Bob\" email=\"bob@contoso.com\" phone=- mobile=- job=-"],
        )),
        ("present then removed on one page: the last state wins", Rule::Plan(
            page(vec![present(bob()), removed("u1")]).contacts(vec![contact(1, "bob@contoso.com")]).link("u1", 1),
            &["inactivate u1 c1 deleted_upstream"],
        )),
        ("dismissed user is not queued again", Rule::Plan(
            page(vec![present(bob())]).contacts(vec![contact(1, "bob@contoso.com").in_other_client()]).review("u1", ReviewState::Dismissed),
            &["skip u1 dismissed"],
        )),
        ("open item: user is not queued twice", Rule::Plan(
            page(vec![present(bob())]).contacts(vec![contact(1, "bob@contoso.com"), contact(2, "bob@contoso.com")]).review("u1", ReviewState::Open),
            &["skip u1 already_queued"],
        )),
        ("review resolved as create-new: create despite the candidate", Rule::Plan(
            page(vec![present(bob().name(Some("Bob")))]).contacts(vec![contact(1, "bob@contoso.com").in_other_client()]).review("u1", ReviewState::CreateNew),
            &["create u1 in mapped name=\"Bob\" email=\"bob@contoso.com\" phone=- mobile=- job=-"],
        )),
        ("name similarity never links", Rule::Plan(
            page(vec![present(bob().name(Some("Contact 1")))]).contacts(vec![contact(1, "robert.smith@contoso.com")]),
            &["create u1 in mapped name=\"Contact 1\" email=\"bob@contoso.com\" phone=- mobile=- job=-"],
        )),
        ("link: field policy applies in the same plan", Rule::Plan(
            page(vec![present(bob().name(Some("Bob Smith")).job("Engineer"))]).contacts(vec![contact(1, "bob@contoso.com")])
                .policy(Name, Overwrite).policy(JobTitle, FillBlank),
            &["link u1 c1", "update u1 c1 name \"Contact 1\"->\"Bob Smith\" job -->\"Engineer\""],
        )),
        ("link: contact inactive for a sync reason is reactivated", Rule::Plan(
            page(vec![present(bob())]).contacts(vec![contact(1, "bob@contoso.com").inactive(Some(DeletedUpstream))]),
            &["link u1 c1", "reactivate u1 c1"],
        )),
        ("link: contact inactive by hand stays inactive", Rule::Plan(
            page(vec![present(bob())]).contacts(vec![contact(1, "bob@contoso.com").inactive(Some(Manual))]),
            &["link u1 c1"],
        )),
        ("link: locked contact is linked, nothing else", Rule::Plan(
            page(vec![present(bob().name(Some("Bob")))]).contacts(vec![contact(1, "bob@contoso.com").locked().inactive(Some(DisabledUpstream))]).all_policies(Overwrite),
            &["link u1 c1"],
        )),

        // ---- field policy ----
        ("field policy off (default): PSA value is authoritative", Rule::Plan(
            page(vec![present(bob().name(Some("Bob")).phones(&["+1"], Some("+2")).job("CEO"))])
                .contacts(vec![contact(1, "bob@contoso.com").with(|f| f.phone = Some("+9".into()))]).link("u1", 1),
            &[],
        )),
        ("fill_blank fills blanks only", Rule::Plan(
            page(vec![present(bob().name(Some("Bob")).phones(&["+1"], Some("+2")).job("CEO"))])
                .contacts(vec![contact(1, "bob@contoso.com").with(|f| { f.phone = Some(" ".into()); f.job_title = Some("CTO".into()) })])
                .link("u1", 1).all_policies(FillBlank),
            &["update u1 c1 phone \" \"->\"+1\" mobile -->\"+2\""],
        )),
        ("overwrite replaces differing values", Rule::Plan(
            page(vec![present(bob().name(Some("Bob")).phones(&["+1"], Some("+2")).job("CEO"))])
                .contacts(vec![contact(1, "bob@contoso.com").with(|f| { f.phone = Some("+9".into()); f.job_title = Some("CTO".into()) })])
                .link("u1", 1).all_policies(Overwrite),
            &["update u1 c1 name \"Contact 1\"->\"Bob\" phone \"+9\"->\"+1\" mobile -->\"+2\" job \"CTO\"->\"CEO\""],
        )),
        ("policy is per field: name overwrite, phone off, mobile fill_blank, job fill_blank", Rule::Plan(
            page(vec![present(bob().name(Some("Bob")).phones(&["+1"], Some("+2")).job("CEO"))])
                .contacts(vec![contact(1, "bob@contoso.com").with(|f| f.job_title = Some("CTO".into()))])
                .link("u1", 1).policy(Name, Overwrite).policy(Phone, Off).policy(Mobile, FillBlank).policy(JobTitle, FillBlank),
            &["update u1 c1 name \"Contact 1\"->\"Bob\" mobile -->\"+2\""],
        )),
        ("field sync flag off: no overwrites, blanks still filled", Rule::Plan(
            page(vec![present(bob().name(Some("Bob")).phones(&["+1"], None).job("CEO"))])
                .contacts(vec![contact(1, "bob@contoso.com").with(|f| f.job_title = Some("CTO".into()))])
                .link("u1", 1).all_policies(Overwrite).settings(|s| s.field_sync_enabled = false),
            &["update u1 c1 phone -->\"+1\""],
        )),
        ("empty or null upstream never clears or overwrites", Rule::Plan(
            page(vec![present(user("u1").upn("bob@contoso.com").name(Some("  ")).phones(&[""], Some("")).job(" "))])
                .contacts(vec![contact(1, "bob@contoso.com").with(|f| { f.phone = Some("+9".into()); f.mobile = Some("+8".into()); f.job_title = Some("CTO".into()) })])
                .link("u1", 1).all_policies(Overwrite),
            &[],
        )),
        ("email differing only in case is not rewritten", Rule::Plan(
            page(vec![present(bob().name(Some("Contact 1")))]).contacts(vec![contact(1, "Bob@Contoso.com")]).link("u1", 1).all_policies(Overwrite),
            &[],
        )),

        // ---- locks and active state ----
        ("locked contact is left entirely alone", Rule::Plan(
            page(vec![present(bob().name(Some("Bob")).enabled(Some(false)))]).contacts(vec![contact(1, "x@contoso.com").locked()]).link("u1", 1).all_policies(Overwrite),
            &[],
        )),
        ("locked contact is not inactivated on removal", Rule::Plan(
            page(vec![removed("u1")]).contacts(vec![contact(1, "bob@contoso.com").locked()]).link("u1", 1),
            &[],
        )),
        ("locked inactive contact is not reactivated", Rule::Plan(
            page(vec![present(bob())]).contacts(vec![contact(1, "bob@contoso.com").locked().inactive(Some(DisabledUpstream))]).link("u1", 1),
            &[],
        )),
        ("disabled upstream: linked contact inactive when the setting is on", Rule::Plan(
            page(vec![present(bob().enabled(Some(false)))]).contacts(vec![contact(1, "bob@contoso.com")]).link("u1", 1),
            &["inactivate u1 c1 disabled_upstream"],
        )),
        ("disabled upstream: nothing when the setting is off", Rule::Plan(
            page(vec![present(bob().enabled(Some(false)))]).contacts(vec![contact(1, "bob@contoso.com")]).link("u1", 1)
                .settings(|s| s.mark_inactive_when_disabled = false),
            &[],
        )),
        ("disabled upstream: field updates still flow, then inactive", Rule::Plan(
            page(vec![present(bob().enabled(Some(false)).job("CEO"))]).contacts(vec![contact(1, "bob@contoso.com")]).link("u1", 1).policy(JobTitle, FillBlank),
            &["update u1 c1 job -->\"CEO\"", "inactivate u1 c1 disabled_upstream"],
        )),
        ("disabled linked user excluded by filters still inactivates (filters gate new links only)", Rule::Plan(
            page(vec![present(bob().enabled(Some(false)).user_type("Guest"))]).contacts(vec![contact(1, "bob@contoso.com")]).link("u1", 1)
                .settings(|s| s.filters.exclusion_patterns = vec!["bob".into()]),
            &["inactivate u1 c1 disabled_upstream"],
        )),
        ("removed upstream (delta @removed): deleted_upstream", Rule::Plan(
            page(vec![removed("u1")]).contacts(vec![contact(1, "bob@contoso.com")]).link("u1", 1),
            &["inactivate u1 c1 deleted_upstream"],
        )),
        ("removed upstream, contact already inactive: nothing", Rule::Plan(
            page(vec![removed("u1")]).contacts(vec![contact(1, "bob@contoso.com").inactive(Some(Manual))]).link("u1", 1),
            &[],
        )),
        ("removed upstream without a link: nothing", Rule::Plan(
            page(vec![removed("u1")]).contacts(vec![contact(1, "bob@contoso.com")]),
            &[],
        )),
        ("re-enabled: reactivated when the sync disabled it", Rule::Plan(
            page(vec![present(bob())]).contacts(vec![contact(1, "bob@contoso.com").inactive(Some(DisabledUpstream))]).link("u1", 1),
            &["reactivate u1 c1"],
        )),
        ("restored: reactivated when the sync marked it deleted", Rule::Plan(
            page(vec![present(bob())]).contacts(vec![contact(1, "bob@contoso.com").inactive(Some(DeletedUpstream))]).link("u1", 1),
            &["reactivate u1 c1"],
        )),
        ("restored without accountEnabled: deletion undone", Rule::Plan(
            page(vec![present(bob().enabled(None))]).contacts(vec![contact(1, "bob@contoso.com").inactive(Some(DeletedUpstream))]).link("u1", 1),
            &["reactivate u1 c1"],
        )),
        ("accountEnabled unknown: a disabled mark stays", Rule::Plan(
            page(vec![present(bob().enabled(None))]).contacts(vec![contact(1, "bob@contoso.com").inactive(Some(DisabledUpstream))]).link("u1", 1),
            &[],
        )),
        ("re-enabled: never reactivated when made inactive by hand", Rule::Plan(
            page(vec![present(bob())]).contacts(vec![contact(1, "bob@contoso.com").inactive(Some(Manual))]).link("u1", 1),
            &[],
        )),
        ("re-enabled: never reactivated when inactive with no recorded reason", Rule::Plan(
            page(vec![present(bob())]).contacts(vec![contact(1, "bob@contoso.com").inactive(None)]).link("u1", 1),
            &[],
        )),
        ("disabled user without a link is never created", Rule::Plan(
            page(vec![present(bob().enabled(Some(false)))]),
            &["skip u1 disabled"],
        )),
        ("disabled user without a link is not linked to a matching contact either", Rule::Plan(
            page(vec![present(bob().enabled(Some(false)))]).contacts(vec![contact(1, "bob@contoso.com")]),
            &["skip u1 disabled"],
        )),
        ("disabled filter off, disabled users mark contacts inactive: still no new contact", Rule::Plan(
            page(vec![present(bob().enabled(Some(false)))]).contacts(vec![contact(2, "x@contoso.com")])
                .settings(|s| s.filters.exclude_disabled_on_create = false),
            &["skip u1 disabled"],
        )),
        ("disabled filter off and inactivation off: disabled user is created", Rule::Plan(
            page(vec![present(bob().enabled(Some(false)).name(Some("Bob")))])
                .settings(|s| { s.filters.exclude_disabled_on_create = false; s.mark_inactive_when_disabled = false }),
            &["create u1 in mapped name=\"Bob\" email=\"bob@contoso.com\" phone=- mobile=- job=-"],
        )),
        ("disabled filter off and inactivation off: disabled user is linked", Rule::Plan(
            page(vec![present(bob().enabled(Some(false)))]).contacts(vec![contact(1, "bob@contoso.com")])
                .settings(|s| { s.filters.exclude_disabled_on_create = false; s.mark_inactive_when_disabled = false }),
            &["link u1 c1"],
        )),
        ("stale link to a contact the store no longer has: nothing, and no second contact", Rule::Plan(
            page(vec![present(bob())]).link("u1", 7),
            &[],
        )),
        ("absent from a complete enumeration: inactive", Rule::Absent(
            vec![("u1", 1), ("u2", 2), ("u3", 3), ("u4", 4)],
            vec![contact(1, "a@x.com"), contact(2, "b@x.com").locked(), contact(3, "c@x.com").inactive(Some(Manual))],
            &["inactivate u1 c1 deleted_upstream"],
        )),

        // ---- mass-inactivation guard ----
        ("guard: 10 of 40 (25% but not more than 10) holds nothing", Rule::Guard(10, 40, false)),
        ("guard: 11 of 50 trips", Rule::Guard(11, 50, true)),
        ("guard: 11 of 55 (exactly 20%) does not trip", Rule::Guard(11, 55, false)),
        ("guard: 11 of 54 trips", Rule::Guard(11, 54, true)),
        ("guard: 11 of 60 does not trip", Rule::Guard(11, 60, false)),
        ("guard: 9 of 20 does not trip", Rule::Guard(9, 20, false)),
        ("guard: nothing linked", Rule::Guard(0, 0, false)),
        ("guard: all of 500", Rule::Guard(500, 500, true)),

        // ---- invalid records ----
        ("unreadable record: skipped with its reason", Rule::Plan(
            page(vec![DirectoryEntry::Invalid { object_id: Some("u1".into()), reason: "unexpected JSON".into() }]),
            &["skip u1 invalid_record (unexpected JSON)"],
        )),
        ("oversized display name: invalid_record, even when linked", Rule::Plan(
            page(vec![present(bob().name(Some(&"x".repeat(1025))))]).contacts(vec![contact(1, "bob@contoso.com")]).link("u1", 1),
            &["skip u1 invalid_record (displayName is 1025 characters long (at most 1024))"],
        )),
        ("invalid mail: invalid_record", Rule::Plan(
            page(vec![present(user("u1").mail("bob at contoso"))]),
            &["skip u1 invalid_record (mail is not a valid email address)"],
        )),
        ("validate: name of 1024 characters is fine", Rule::ValidUser(bob().name(Some(&"x".repeat(1024))), true)),
        ("validate: NUL in a name", Rule::ValidUser(bob().name(Some("Bob\u{0}")), false)),
        ("validate: mail over 254", Rule::ValidUser(user("u1").mail(&format!("{}@contoso.com", "a".repeat(250))), false)),
        ("validate: empty object id", Rule::ValidUser(user(" "), false)),
        ("validate: thousands of proxy addresses", Rule::ValidUser(DirectoryUser { proxy_addresses: vec!["smtp:a@b.com".into(); 1001], ..bob() }, false)),

        // ---- filters through the planner ----
        ("filter: guest (userType Guest, any case)", Rule::Plan(page(vec![present(bob().user_type("guest"))]), &["skip u1 guest"])),
        ("filter: guest (#EXT# UPN on a Member)", Rule::Plan(
            page(vec![present(user("u1").upn("bob_x.com#EXT#@contoso.onmicrosoft.com").mail("bob@x.com"))]),
            &["skip u1 guest"],
        )),
        ("filter: no usable email", Rule::Plan(page(vec![present(user("u1").proxies(&["x500:/o=x"]))]), &["skip u1 no_usable_email"])),
        ("filter: licensed only skips the unlicensed", Rule::Plan(
            page(vec![present(bob().licenses(0))]).settings(|s| s.filters.licensed_only = true),
            &["skip u1 unlicensed"],
        )),
        ("filter: domain not in the allow list", Rule::Plan(
            page(vec![present(bob())]).settings(|s| s.filters.domain_allow = vec!["fabrikam.com".into()]),
            &["skip u1 domain_not_allowed (contoso.com)"],
        )),
        ("filter: denied domain (deny wins over allow)", Rule::Plan(
            page(vec![present(bob())]).settings(|s| { s.filters.domain_allow = vec!["contoso.com".into()]; s.filters.domain_deny = vec!["@Contoso.com".into()] }),
            &["skip u1 domain_denied (contoso.com)"],
        )),
        ("filter: exclusion pattern on UPN, case-insensitive", Rule::Plan(
            page(vec![present(user("u1").upn("svc-backup@contoso.com"))]).settings(|s| s.filters.exclusion_patterns = vec!["^SVC-".into()]),
            &["skip u1 excluded_by_pattern (^SVC-)"],
        )),
        ("filter: a broken saved pattern fails closed", Rule::Plan(
            page(vec![present(bob())]).settings(|s| s.filters.exclusion_patterns = vec!["(".into()]),
            &["skip u1 excluded_by_pattern (invalid exclusion pattern: regex parse error:\n    (\n    ^\nerror: unclosed group)"],
        )),
        ("filter: guest", Rule::Filter(Filters::default(), bob().user_type("Guest"), Some(SkipReason::Guest))),
        ("filter: guests allowed when the filter is off", Rule::Filter(filters(|f| f.exclude_guests = false), bob().user_type("Guest"), None)),
        ("filter: disabled", Rule::Filter(Filters::default(), bob().enabled(Some(false)), Some(SkipReason::Disabled))),
        ("filter: disabled allowed when the filter is off", Rule::Filter(filters(|f| f.exclude_disabled_on_create = false), bob().enabled(Some(false)), None)),
        ("filter: no email", Rule::Filter(Filters::default(), user("u1"), Some(SkipReason::NoUsableEmail))),
        ("filter: licensed only, licensed user passes", Rule::Filter(filters(|f| f.licensed_only = true), bob().licenses(2), None)),
        ("filter: licensed only, unlicensed", Rule::Filter(filters(|f| f.licensed_only = true), bob().licenses(0), Some(SkipReason::Unlicensed))),
        ("filter: allow list covers subdomains", Rule::Filter(filters(|f| f.domain_allow = vec!["contoso.com".into()]), user("u1").mail("bob@sales.contoso.com"), None)),
        ("filter: allow list does not cover look-alike domains", Rule::Filter(filters(|f| f.domain_allow = vec!["contoso.com".into()]), user("u1").mail("bob@evilcontoso.com"), Some(SkipReason::DomainNotAllowed))),
        ("filter: deny list", Rule::Filter(filters(|f| f.domain_deny = vec!["contoso.com".into()]), bob(), Some(SkipReason::DomainDenied))),
        ("filter: pattern on display name", Rule::Filter(filters(|f| f.exclusion_patterns = vec!["(?:room|shared) mailbox".into()]), bob().name(Some("Board Room Mailbox")), Some(SkipReason::ExcludedByPattern))),
        ("filter: pattern on mail", Rule::Filter(filters(|f| f.exclusion_patterns = vec!["^noreply@".into()]), user("u1").mail("noreply@contoso.com"), Some(SkipReason::ExcludedByPattern))),
        ("filter: pattern that matches nothing", Rule::Filter(filters(|f| f.exclusion_patterns = vec!["^svc-".into()]), bob(), None)),
        ("filter: managed-tenant override replaces defaults field by field", Rule::Filter(
            Filters::merged(&filters(|f| f.domain_deny = vec!["contoso.com".into()]), &FilterOverride { domain_deny: Some(Vec::new()), licensed_only: Some(true), ..FilterOverride::default() }),
            bob().licenses(0),
            Some(SkipReason::Unlicensed),
        )),
        ("filter: include groups, member passes", Rule::Filter(filters(|f| f.include_groups = vec![SALES.into()]), bob().groups(&[SALES]), None)),
        ("filter: include groups, non-member skipped", Rule::Filter(filters(|f| f.include_groups = vec![SALES.into()]), bob().groups(&[CONTRACTORS]), Some(SkipReason::NotInIncludedGroup))),
        ("filter: include groups, member of one of several passes", Rule::Filter(filters(|f| f.include_groups = vec![SALES.into(), CONTRACTORS.into()]), bob().groups(&[CONTRACTORS]), None)),
        ("filter: include groups compare case-insensitively", Rule::Filter(filters(|f| f.include_groups = vec![SALES.to_uppercase()]), bob().groups(&[SALES]), None)),
        ("filter: include groups, membership not loaded fails closed", Rule::Filter(filters(|f| f.include_groups = vec![SALES.into()]), bob(), Some(SkipReason::NotInIncludedGroup))),
        ("filter: exclude groups, member skipped", Rule::Filter(filters(|f| f.exclude_groups = vec![CONTRACTORS.into()]), bob().groups(&[CONTRACTORS]), Some(SkipReason::InExcludedGroup))),
        ("filter: exclude groups, non-member passes", Rule::Filter(filters(|f| f.exclude_groups = vec![CONTRACTORS.into()]), bob().groups(&[]), None)),
        ("filter: exclude groups, membership not loaded fails closed", Rule::Filter(filters(|f| f.exclude_groups = vec![CONTRACTORS.into()]), bob(), Some(SkipReason::InExcludedGroup))),
        ("filter: no groups named, membership ignored", Rule::Filter(Filters::default(), bob(), None)),
        ("filter: both, exclusion wins over inclusion", Rule::Filter(filters(|f| { f.include_groups = vec![SALES.into()]; f.exclude_groups = vec![CONTRACTORS.into()] }), bob().groups(&[SALES, CONTRACTORS]), Some(SkipReason::InExcludedGroup))),
        ("filter: both, included and not excluded passes", Rule::Filter(filters(|f| { f.include_groups = vec![SALES.into()]; f.exclude_groups = vec![CONTRACTORS.into()] }), bob().groups(&[SALES]), None)),
        ("filter: both, in neither is not included", Rule::Filter(filters(|f| { f.include_groups = vec![SALES.into()]; f.exclude_groups = vec![CONTRACTORS.into()] }), bob().groups(&[]), Some(SkipReason::NotInIncludedGroup))),
        ("filter: earlier rules win over groups (guest before group)", Rule::Filter(filters(|f| f.include_groups = vec![SALES.into()]), bob().user_type("Guest").groups(&[]), Some(SkipReason::Guest))),
        ("filter: override clears the default include groups", Rule::Filter(
            Filters::merged(&filters(|f| f.include_groups = vec![SALES.into()]), &FilterOverride { include_groups: Some(Vec::new()), ..FilterOverride::default() }),
            bob().groups(&[]),
            None,
        )),
        ("filter: override sets exclude groups, default include groups kept", Rule::Filter(
            Filters::merged(&filters(|f| f.include_groups = vec![SALES.into()]), &FilterOverride { exclude_groups: Some(vec![CONTRACTORS.into()]), ..FilterOverride::default() }),
            bob().groups(&[SALES, CONTRACTORS]),
            Some(SkipReason::InExcludedGroup),
        )),
        ("filter: group through the planner, with the reason counted", Rule::Plan(
            page(vec![present(bob().groups(&[]))]).settings(|s| s.filters.include_groups = vec![SALES.into()]),
            &["skip u1 not_in_included_group"],
        )),
        ("filter: excluded group through the planner names the group", Rule::Plan(
            page(vec![present(bob().groups(&[CONTRACTORS]))]).settings(|s| s.filters.exclude_groups = vec![CONTRACTORS.into()]),
            &["skip u1 in_excluded_group (5b0e6c5e-0000-4000-8000-000000000002)"],
        )),
        ("filter: linked user bypasses group filters", Rule::Plan(
            page(vec![present(bob().groups(&[]).job("CEO"))]).contacts(vec![contact(1, "bob@contoso.com")]).link("u1", 1).policy(JobTitle, FillBlank)
                .settings(|s| s.filters.include_groups = vec![SALES.into()]),
            &["update u1 c1 job -->\"CEO\""],
        )),
        ("validate filters: defaults", Rule::ValidFilters(Filters::default(), true)),
        ("validate filters: good patterns and domains", Rule::ValidFilters(filters(|f| { f.exclusion_patterns = vec!["^svc-".into()]; f.domain_allow = vec!["*.Contoso.com".into(), "@fabrikam.co.uk".into()] }), true)),
        ("validate filters: pattern that does not compile", Rule::ValidFilters(filters(|f| f.exclusion_patterns = vec!["[a-".into()]), false)),
        ("validate filters: domain without a dot", Rule::ValidFilters(filters(|f| f.domain_deny = vec!["contoso".into()]), false)),
        ("validate filters: domain with a space", Rule::ValidFilters(filters(|f| f.domain_allow = vec!["con toso.com".into()]), false)),
        ("validate filters: group ids that are GUIDs, any case", Rule::ValidFilters(filters(|f| { f.include_groups = vec![SALES.into()]; f.exclude_groups = vec![CONTRACTORS.to_uppercase()] }), true)),
        ("validate filters: include group that is not a GUID", Rule::ValidFilters(filters(|f| f.include_groups = vec!["Sales Team".into()]), false)),
        ("validate filters: exclude group with a missing digit", Rule::ValidFilters(filters(|f| f.exclude_groups = vec!["5b0e6c5e-0000-4000-8000-00000000000".into()]), false)),
        ("validate filters: too many groups", Rule::ValidFilters(filters(|f| f.include_groups = (0..51).map(|n| format!("5b0e6c5e-0000-4000-8000-{n:012}")).collect()), false)),

        // ---- tally ----
        ("tally: counts per action and skip reason; eligible excludes filtered users", Rule::Tally(
            page(vec![
                present(bob()),
                present(user("u2").mail("eve@contoso.com")),
                present(user("u3").mail("guest@x.com").user_type("Guest")),
                present(user("u4").mail("dup@contoso.com")),
                removed("u5"),
                present(user("u6").mail("q@contoso.com")),
            ])
            .contacts(vec![contact(1, "bob@contoso.com"), contact(4, "dup@contoso.com"), contact(5, "z@x.com"), contact(6, "q@contoso.com").in_other_client()])
            .link("u5", 5)
            .review("u4", ReviewState::Open),
            "seen=6 eligible=5 created=1 linked=1 updated=0 inactivated=1 reactivated=0 queued=1 skipped[guest=1,already_queued=1]",
        )),

        // ---- mapping ----
        ("mapping: exactly one client with the domain in its primary domains: auto_matched", Rule::Mapping(
            "Contoso", &["contoso.onmicrosoft.com", "Contoso.com"],
            vec![client(1, "Contoso Ltd", &["contoso.com"], &[]), client(2, "Fabrikam", &["fabrikam.com"], &[])],
            &["auto_matched c1", "c1 primary_domain 1.00"],
        )),
        ("mapping: primary domain match wins over another client's name match", Rule::Mapping(
            "Contoso", &["contoso.com"],
            vec![client(1, "Totally Different", &["CONTOSO.COM."], &[]), client(2, "Contoso", &[], &[])],
            &["auto_matched c1", "c1 primary_domain 1.00", "c2 name 1.00"],
        )),
        ("mapping: two clients with the primary domain: needs_review", Rule::Mapping(
            "Contoso", &["contoso.com"],
            vec![client(1, "Contoso East", &["contoso.com"], &[]), client(2, "Contoso West", &["contoso.com"], &[])],
            &["needs_review", "c1 primary_domain 1.00", "c2 primary_domain 1.00"],
        )),
        ("mapping: secondary domain only: needs_review", Rule::Mapping(
            "Contoso", &["contoso.com"],
            vec![client(1, "Acme", &["acme.com"], &["contoso.com"])],
            &["needs_review", "c1 secondary_domain 0.90"],
        )),
        ("mapping: name match ignoring case, punctuation and legal suffix never auto-maps", Rule::Mapping(
            "CONTOSO, Inc.", &["contoso.onmicrosoft.com"],
            vec![client(1, "Contoso GmbH", &["contoso.de"], &[]), client(2, "Fabrikam", &["fabrikam.com"], &[])],
            &["needs_review", "c1 name 1.00"],
        )),
        ("mapping: nothing similar: unmatched", Rule::Mapping(
            "Northwind Traders", &["northwind.com"],
            vec![client(1, "Contoso", &["contoso.com"], &[]), client(2, "Fabrikam", &["fabrikam.com"], &[])],
            &["unmatched"],
        )),
        ("mapping: at most five candidates, domains first", Rule::Mapping(
            "Contoso", &["contoso.com"],
            vec![
                client(1, "Contoso", &[], &[]), client(2, "Contoso", &[], &[]), client(3, "Contoso", &[], &[]),
                client(4, "Contoso", &[], &[]), client(5, "Contoso", &[], &[]), client(6, "Other", &[], &["contoso.com"]),
            ],
            &["needs_review", "c6 secondary_domain 0.90", "c1 name 1.00", "c2 name 1.00", "c3 name 1.00", "c4 name 1.00"],
        )),
        ("company name: legal suffixes and punctuation", Rule::CompanyName("Contoso Pty. Ltd.", "contoso")),
        ("company name: G.m.b.H.", Rule::CompanyName("Müller G.m.b.H.", "müller")),
        ("company name: PLC with comma", Rule::CompanyName("Fabrikam, PLC", "fabrikam")),
        ("company name: suffix word alone is kept", Rule::CompanyName("Co", "co")),
        ("company name: suffix word in the middle is kept", Rule::CompanyName("AG Barr Co", "ag barr")),
    ]
}

#[test]
fn rule_table() {
    let failures: Vec<String> = rules()
        .iter()
        .filter_map(|(name, rule)| check(rule).err().map(|diff| format!("--- {name}\n{diff}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} rule(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn name_scores_are_symmetric_and_bounded() {
    assert!((score_name("Contoso Ltd", "contoso") - 1.0).abs() < f64::EPSILON);
    assert!(score_name("Contoso", "Contosso") >= 0.85);
    assert!(score_name("Contoso", "Fabrikam") < 0.85);
    assert!(score_name("Stonebridge Dental LLC", "Stonebridge Architects Pty Ltd") < 0.85);
    assert!(score_name("Red Rock Accounting Ltd", "Red Rock Engineering Inc.") < 0.85);
    assert!(score_name("LUCERNE SOLUTIONS.", "Lucerne Solutions") >= 0.85);
    assert_eq!(score_name("", "Contoso"), 0.0);
    assert_eq!(
        score_name("Contoso", "Contosso"),
        score_name("Contosso", "Contoso")
    );
}

#[test]
fn page_keys_cover_every_object_id_and_email_once() {
    let entries = vec![
        present(bob().other_mails(&["BOB@contoso.com", "bob@home.example.com"])),
        removed("u2"),
        present(user("u1").mail("bob@contoso.com")),
    ];
    let keys = page_keys(&entries);
    assert_eq!(keys.object_ids, vec!["u1", "u2"]);
    assert_eq!(keys.emails, vec!["bob@contoso.com", "bob@home.example.com"]);
}

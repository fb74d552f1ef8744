//! The planner: turns one page of directory entries plus what the store knows about them into
//! the actions that bring the PSA contacts in step (SPEC §5.3–§5.5). Pure and deterministic:
//! the same page and context always give the same plan, and a plan never deletes.

use crate::email::{normalize_email, primary_email, user_emails};
use crate::filter::CompiledFilters;
use crate::model::{
    Action, Contact, ContactField, ContactFields, DirectoryEntry, DirectoryUser, FieldPolicy,
    InactiveReason, Link, PageContext, Plan, ReviewReason, ReviewState, SkipReason, SyncSettings,
    Tally,
};
use crate::validate::storable_entries;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use uuid::Uuid;

/// What the store must load before planning a page: the links of these object ids, and every
/// contact of the PSA tenant whose normalized email (lowercased, trimmed) is one of `emails`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageKeys {
    pub object_ids: Vec<String>,
    pub emails: Vec<String>,
}

/// The keys of a page, deduplicated, in first-seen order.
pub fn page_keys(entries: &[DirectoryEntry]) -> PageKeys {
    let page = PreparedPage::new(entries);
    PageKeys {
        object_ids: page.object_ids(),
        emails: page.unlinked_emails(|_| false),
    }
}

/// The object ids of a page, deduplicated, in first-seen order: the links to load.
pub fn page_object_ids(entries: &[DirectoryEntry]) -> Vec<String> {
    let mut seen = HashSet::new();
    entries
        .iter()
        .filter_map(entry_object_id)
        .filter(|object_id| seen.insert(*object_id))
        .map(str::to_owned)
        .collect()
}

/// A page ready to plan: its entries as the store may bind them (`storable_entries`: a record
/// that fails `validate_user` is an `Invalid` entry with the reason), and every present user's
/// addresses (`user_emails`), worked out once for each step that needs them: the contacts
/// read by address, matching, and a created contact's address. Every present entry of a
/// prepared page is valid, so the planner does not check again.
pub struct PreparedPage<'a> {
    entries: Cow<'a, [DirectoryEntry]>,
    /// By entry: a present user's addresses, most authoritative first; empty for others.
    emails: Vec<Vec<String>>,
}

impl<'a> PreparedPage<'a> {
    pub fn new(entries: &'a [DirectoryEntry]) -> Self {
        let entries = storable_entries(entries);
        let emails = entries
            .iter()
            .map(|entry| match entry {
                DirectoryEntry::Present(user) => user_emails(user),
                DirectoryEntry::Removed { .. } | DirectoryEntry::Invalid { .. } => Vec::new(),
            })
            .collect();
        PreparedPage { entries, emails }
    }

    /// The entries, with unstorable ones replaced (`storable_entries`).
    pub fn entries(&self) -> &[DirectoryEntry] {
        &self.entries
    }

    /// The page's object ids, deduplicated, in first-seen order: the links to load.
    pub fn object_ids(&self) -> Vec<String> {
        page_object_ids(&self.entries)
    }

    /// The addresses contacts must be looked up by once the page's links are known: those of
    /// the users without a link (`linked` says which object ids have one), deduplicated, in
    /// first-seen order. A linked user's contact is loaded through its link, and the planner
    /// never matches a linked user by address (`plan_linked`), so its addresses matter only
    /// where they are also an unlinked user's — and then they are in this list. A re-run of a
    /// fully linked tenant thus reads its contacts once, by id, instead of once by id and again
    /// by address.
    pub fn unlinked_emails(&self, linked: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut emails = Vec::new();
        for (entry, addresses) in self.entries.iter().zip(&self.emails) {
            if let DirectoryEntry::Present(user) = entry {
                if linked(&user.object_id) {
                    continue;
                }
                for email in addresses {
                    if seen.insert(email.as_str()) {
                        emails.push(email.clone());
                    }
                }
            }
        }
        emails
    }
}

fn entry_object_id(entry: &DirectoryEntry) -> Option<&str> {
    match entry {
        DirectoryEntry::Present(user) => Some(&user.object_id),
        DirectoryEntry::Removed { object_id, .. } => Some(object_id),
        DirectoryEntry::Invalid { object_id, .. } => object_id.as_deref(),
    }
}

/// Plans one page: [`plan_prepared`] of the page prepared ([`PreparedPage::new`]).
pub fn plan_page(
    context: &PageContext,
    entries: &[DirectoryEntry],
    settings: &SyncSettings,
) -> Plan {
    plan_prepared(context, &PreparedPage::new(entries), settings)
}

/// Plans one prepared page. Entries are handled in page order; when an object id occurs more
/// than once (delta replays), only its last occurrence is acted on, since delta reports
/// changes in order and the last one is the newest state.
pub fn plan_prepared(context: &PageContext, page: &PreparedPage, settings: &SyncSettings) -> Plan {
    let entries = page.entries();
    let mut last_position: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    for (position, entry) in entries.iter().enumerate() {
        if let Some(object_id) = entry_object_id(entry) {
            last_position.insert(object_id, position);
        }
    }
    let mut planner = PagePlanner::new(context, settings);
    for (position, (entry, emails)) in entries.iter().zip(&page.emails).enumerate() {
        let is_last = entry_object_id(entry)
            .is_none_or(|object_id| last_position.get(object_id) == Some(&position));
        if is_last {
            planner.plan_entry(entry, emails);
        }
    }
    planner.plan
}

/// The working state of one page: the email index (kept current as the plan changes emails),
/// which contacts this page has already claimed, and which emails it is about to create.
struct PagePlanner<'a> {
    context: &'a PageContext,
    settings: &'a SyncSettings,
    filters: CompiledFilters,
    /// The loaded contacts by normalized email, each list sorted by contact id. Built when an
    /// unlinked user first needs it: a page of linked users (a re-run) never does, and then
    /// pays for no index of every contact's address.
    contacts_by_email: Option<HashMap<String, Vec<Uuid>>>,
    /// Until the index is built: the normalized email each contact updated by this page now
    /// has, which the index takes instead of the loaded one.
    reindexed: HashMap<Uuid, Option<String>>,
    claimed_by: HashMap<Uuid, &'a str>,
    creating: HashMap<String, &'a str>,
    plan: Plan,
}

impl<'a> PagePlanner<'a> {
    fn new(context: &'a PageContext, settings: &'a SyncSettings) -> Self {
        PagePlanner {
            context,
            settings,
            filters: CompiledFilters::new(&settings.filters),
            contacts_by_email: None,
            reindexed: HashMap::new(),
            claimed_by: HashMap::new(),
            creating: HashMap::new(),
            plan: Plan::default(),
        }
    }

    /// The email index, built on first use from the loaded contacts as this page has changed
    /// them so far.
    fn contacts_by_email(&mut self) -> &HashMap<String, Vec<Uuid>> {
        let context = self.context;
        let reindexed = &self.reindexed;
        self.contacts_by_email.get_or_insert_with(|| {
            let mut index: HashMap<String, Vec<Uuid>> =
                HashMap::with_capacity(context.contacts.len());
            // BTreeMap order makes every candidate list sorted by contact id, so plans are
            // stable.
            for contact in context.contacts.values() {
                let email = match reindexed.get(&contact.contact_id) {
                    Some(email) => email.clone(),
                    None => contact.fields.email.as_deref().and_then(normalize_email),
                };
                if let Some(email) = email {
                    index.entry(email).or_default().push(contact.contact_id);
                }
            }
            index
        })
    }

    fn push(&mut self, action: Action) {
        self.plan.actions.push(action);
    }

    /// Plans one entry of a prepared page; `emails` are the user's addresses.
    fn plan_entry(&mut self, entry: &'a DirectoryEntry, emails: &[String]) {
        match entry {
            DirectoryEntry::Invalid { object_id, reason } => self.push(Action::Skip {
                object_id: object_id.clone(),
                reason: SkipReason::InvalidRecord,
                detail: Some(reason.clone()),
            }),
            DirectoryEntry::Removed { object_id, .. } => self.plan_removed(object_id),
            DirectoryEntry::Present(user) => {
                match self.context.links_by_object_id.get(&user.object_id) {
                    Some(contact_id) => {
                        self.plan_linked(user, *contact_id, emails.first().cloned())
                    }
                    None => self.plan_unlinked(user, emails),
                }
            }
        }
    }

    /// Whether this page already gave the contact to a different directory user; claiming it
    /// for `object_id` when it is free.
    fn claim(&mut self, contact_id: Uuid, object_id: &'a str) -> bool {
        match self.claimed_by.get(&contact_id) {
            Some(owner) => *owner == object_id,
            None => {
                self.claimed_by.insert(contact_id, object_id);
                true
            }
        }
    }

    fn plan_removed(&mut self, object_id: &'a str) {
        // A removal of a user we never linked changes nothing (and creates nothing).
        let Some(contact_id) = self.context.links_by_object_id.get(object_id).copied() else {
            return;
        };
        let Some(contact) = self.context.contacts.get(&contact_id) else {
            return;
        };
        if !self.claim(contact_id, object_id) || contact.sync_locked || !contact.is_active {
            return;
        }
        self.push(Action::Inactivate {
            object_id: object_id.to_string(),
            contact_id,
            reason: InactiveReason::DeletedUpstream,
        });
    }

    /// A linked user: the link decides the contact whatever the user's emails now are. Filters
    /// do not apply; they decide who becomes a contact, not whether a contact stays in step.
    fn plan_linked(&mut self, user: &'a DirectoryUser, contact_id: Uuid, primary: Option<String>) {
        // A link whose contact the store did not load (removed in the PSA by hand) is left for
        // a person; matching again by email could tie the user to a second contact.
        let Some(contact) = self.context.contacts.get(&contact_id) else {
            return;
        };
        if !self.claim(contact_id, &user.object_id) || contact.sync_locked {
            return;
        }
        let after = apply_field_policy(
            &contact.fields,
            &upstream_fields(user, primary),
            self.settings,
        );
        if after != contact.fields {
            self.reindex_email(contact_id, &contact.fields, &after);
            self.push(Action::Update {
                object_id: user.object_id.clone(),
                contact_id,
                before: contact.fields.clone(),
                after,
            });
        }
        if let Some(action) = active_state_action(user, contact, self.settings) {
            self.push(action);
        }
    }

    fn reindex_email(&mut self, contact_id: Uuid, before: &ContactFields, after: &ContactFields) {
        let old = before.email.as_deref().and_then(normalize_email);
        let new = after.email.as_deref().and_then(normalize_email);
        if old == new {
            return;
        }
        let Some(contacts_by_email) = &mut self.contacts_by_email else {
            self.reindexed.insert(contact_id, new);
            return;
        };
        if let Some(old) = old {
            if let Some(ids) = contacts_by_email.get_mut(&old) {
                ids.retain(|id| *id != contact_id);
            }
        }
        if let Some(new) = new {
            let ids = contacts_by_email.entry(new).or_default();
            if let Err(position) = ids.binary_search(&contact_id) {
                ids.insert(position, contact_id);
            }
        }
    }

    fn plan_unlinked(&mut self, user: &'a DirectoryUser, emails: &[String]) {
        let object_id = user.object_id.as_str();
        let primary = emails.first().map(String::as_str);
        if let Some((reason, detail)) = self.filters.skip_reason(user, primary) {
            self.push(Action::Skip {
                object_id: Some(object_id.to_string()),
                reason,
                detail,
            });
            return;
        }
        // With the disabled filter switched off, a disabled user still gets no new contact
        // while disabled users mark contacts inactive: a create carries no active state, so the
        // contact would be active for one run, and linking would inactivate a contact the sync
        // never managed. Deciding this before matching keeps the outcome independent of the
        // other users of the page.
        if user.account_enabled == Some(false) && self.settings.mark_inactive_when_disabled {
            return self.skip(object_id, SkipReason::Disabled);
        }
        match self.context.review_state_by_object_id.get(object_id) {
            Some(ReviewState::Dismissed) => {
                return self.skip(object_id, SkipReason::Dismissed);
            }
            Some(ReviewState::Open) => {
                return self.skip(object_id, SkipReason::AlreadyQueued);
            }
            Some(ReviewState::CreateNew) => {
                return self.create(user, primary);
            }
            None => {}
        }
        let contacts_by_email = self.contacts_by_email();
        let candidates: BTreeSet<Uuid> = emails
            .iter()
            .filter_map(|email| contacts_by_email.get(email))
            .flatten()
            .copied()
            .collect();
        let mut candidates = candidates.into_iter();
        match (candidates.next(), candidates.next()) {
            (None, _) => {
                // Another user of this page is about to create a contact with this address: a
                // second contact would be a duplicate, so this user waits for a person, exactly
                // as it would on the next run once that contact exists and is linked.
                let taken = emails.iter().any(|email| {
                    self.creating
                        .get(email)
                        .is_some_and(|owner| *owner != object_id)
                });
                if taken {
                    self.queue(
                        user,
                        emails,
                        ReviewReason::CandidateLinkedToOtherUser,
                        Vec::new(),
                    );
                } else {
                    self.create(user, primary);
                }
            }
            (Some(contact_id), None) => self.plan_single_candidate(user, emails, contact_id),
            (Some(first), Some(second)) => {
                let all: Vec<Uuid> = [first, second].into_iter().chain(candidates).collect();
                self.queue(user, emails, ReviewReason::MultipleCandidates, all);
            }
        }
    }

    fn plan_single_candidate(
        &mut self,
        user: &'a DirectoryUser,
        emails: &[String],
        contact_id: Uuid,
    ) {
        let Some(contact) = self.context.contacts.get(&contact_id) else {
            return;
        };
        let linked_elsewhere = self
            .context
            .link_by_contact_id
            .get(&contact_id)
            .is_some_and(|link| {
                link.managed_tenant_id != self.context.managed_tenant_id
                    || link.object_id != user.object_id
            });
        let claimed_elsewhere = self
            .claimed_by
            .get(&contact_id)
            .is_some_and(|owner| *owner != user.object_id);
        if linked_elsewhere || claimed_elsewhere {
            self.queue(
                user,
                emails,
                ReviewReason::CandidateLinkedToOtherUser,
                vec![contact_id],
            );
        } else if contact.client_id != self.context.mapped_client_id {
            self.queue(
                user,
                emails,
                ReviewReason::CandidateInOtherClient,
                vec![contact_id],
            );
        } else {
            self.push(Action::Link {
                object_id: user.object_id.clone(),
                contact_id,
            });
            // The rest is what the next run would do for the now-linked user; doing it in the
            // same plan keeps plans idempotent.
            self.plan_linked(user, contact_id, emails.first().cloned());
        }
    }

    fn skip(&mut self, object_id: &str, reason: SkipReason) {
        self.push(Action::Skip {
            object_id: Some(object_id.to_string()),
            reason,
            detail: None,
        });
    }

    fn queue(
        &mut self,
        user: &DirectoryUser,
        emails: &[String],
        reason: ReviewReason,
        candidates: Vec<Uuid>,
    ) {
        self.push(Action::Queue {
            object_id: user.object_id.clone(),
            reason,
            display_name: non_blank(user.display_name.as_deref()),
            email: emails.first().cloned(),
            candidates,
        });
    }

    fn create(&mut self, user: &'a DirectoryUser, primary: Option<&str>) {
        let fields = fields_for_create(user, primary.map(str::to_string));
        if let Some(email) = &fields.email {
            self.creating
                .entry(email.clone())
                .or_insert(user.object_id.as_str());
        }
        self.push(Action::Create {
            object_id: user.object_id.clone(),
            client_id: self.context.mapped_client_id,
            fields,
        });
    }
}

/// Whether a linked contact's active state follows the user (SPEC §5.5). Only the sync's own
/// reasons are ever undone; a contact made inactive by a person, or inactive with no recorded
/// reason, stays inactive.
fn active_state_action(
    user: &DirectoryUser,
    contact: &Contact,
    settings: &SyncSettings,
) -> Option<Action> {
    let object_id = user.object_id.clone();
    let contact_id = contact.contact_id;
    match (
        user.account_enabled,
        contact.is_active,
        contact.inactive_reason,
    ) {
        (Some(false), true, _) if settings.mark_inactive_when_disabled => {
            Some(Action::Inactivate {
                object_id,
                contact_id,
                reason: InactiveReason::DisabledUpstream,
            })
        }
        (
            Some(true),
            false,
            Some(InactiveReason::DisabledUpstream | InactiveReason::DeletedUpstream),
        ) => Some(Action::Reactivate {
            object_id,
            contact_id,
        }),
        // A user present again without an enabled flag was at least restored, which undoes a
        // deletion; whether it was re-enabled is unknown, so a disabled mark stays.
        (None, false, Some(InactiveReason::DeletedUpstream)) => Some(Action::Reactivate {
            object_id,
            contact_id,
        }),
        _ => None,
    }
}

fn non_blank(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_string)
}

/// The user's values for the contact fields, each `None` when Microsoft has nothing usable.
struct UpstreamFields {
    full_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    mobile: Option<String>,
    job_title: Option<String>,
}

/// `primary` is the user's primary email, passed in because the planner has it already.
fn upstream_fields(user: &DirectoryUser, primary: Option<String>) -> UpstreamFields {
    let full_name = non_blank(user.display_name.as_deref()).or_else(|| {
        let given = non_blank(user.given_name.as_deref());
        let surname = non_blank(user.surname.as_deref());
        match (given, surname) {
            (Some(given), Some(surname)) => Some(format!("{given} {surname}")),
            (given, surname) => given.or(surname),
        }
    });
    UpstreamFields {
        full_name,
        email: primary,
        phone: user
            .business_phones
            .iter()
            .find_map(|phone| non_blank(Some(phone))),
        mobile: non_blank(user.mobile_phone.as_deref()),
        job_title: non_blank(user.job_title.as_deref()),
    }
}

/// The fields of a contact created for `user`: every available value. A user with no name at
/// all is named by its email, because a contact needs a name.
pub fn new_contact_fields(user: &DirectoryUser) -> ContactFields {
    fields_for_create(user, primary_email(user))
}

fn fields_for_create(user: &DirectoryUser, primary: Option<String>) -> ContactFields {
    let upstream = upstream_fields(user, primary);
    let full_name = upstream
        .full_name
        .or_else(|| upstream.email.clone())
        .unwrap_or_else(|| user.object_id.clone());
    ContactFields {
        full_name,
        email: upstream.email,
        phone: upstream.phone,
        mobile: upstream.mobile,
        job_title: upstream.job_title,
    }
}

/// The policy that actually applies: with field sync switched off nothing is overwritten, but
/// filling a blank overwrites nothing, so `overwrite` falls back to `fill_blank`.
fn effective_policy(settings: &SyncSettings, field: ContactField) -> FieldPolicy {
    match settings.policy(field) {
        FieldPolicy::Overwrite if !settings.field_sync_enabled => FieldPolicy::FillBlank,
        policy => policy,
    }
}

/// The new value of one field, or `None` to keep the PSA's. An absent upstream value never
/// clears or replaces anything.
fn merged_value(
    policy: FieldPolicy,
    current: Option<&str>,
    upstream: Option<&String>,
    same: fn(&str, &str) -> bool,
) -> Option<String> {
    let upstream = upstream?;
    let current_blank = current.is_none_or(|value| value.trim().is_empty());
    let changes = match policy {
        FieldPolicy::Off => false,
        FieldPolicy::FillBlank => current_blank,
        FieldPolicy::Overwrite => current.is_none_or(|value| !same(value, upstream)),
    };
    changes.then(|| upstream.clone())
}

fn same_text(current: &str, upstream: &str) -> bool {
    current == upstream
}

/// Emails differing only in case or surrounding space are the same address; rewriting one
/// into the other would be noise in the change history.
fn same_email(current: &str, upstream: &str) -> bool {
    normalize_email(current).is_some_and(|current| current == upstream)
}

/// The contact's fields after the field policy is applied to the user's values.
fn apply_field_policy(
    current: &ContactFields,
    upstream: &UpstreamFields,
    settings: &SyncSettings,
) -> ContactFields {
    let mut after = current.clone();
    if let Some(name) = merged_value(
        effective_policy(settings, ContactField::Name),
        Some(&current.full_name),
        upstream.full_name.as_ref(),
        same_text,
    ) {
        after.full_name = name;
    }
    let policy = |field| effective_policy(settings, field);
    let merge = |value: &mut Option<String>, field, upstream: &Option<String>, same| {
        if let Some(new_value) =
            merged_value(policy(field), value.as_deref(), upstream.as_ref(), same)
        {
            *value = Some(new_value);
        }
    };
    merge(
        &mut after.email,
        ContactField::Email,
        &upstream.email,
        same_email,
    );
    merge(
        &mut after.phone,
        ContactField::Phone,
        &upstream.phone,
        same_text,
    );
    merge(
        &mut after.mobile,
        ContactField::Mobile,
        &upstream.mobile,
        same_text,
    );
    merge(
        &mut after.job_title,
        ContactField::JobTitle,
        &upstream.job_title,
        same_text,
    );
    after
}

/// Inactivates the contacts of users missing from a *complete* full enumeration (SPEC §5.5).
/// `absent_links` are the links of the managed tenant whose object ids the enumeration did not
/// return; the caller must not call this for an enumeration that did not finish.
pub fn plan_absent(absent_links: &[Link], contacts: &BTreeMap<Uuid, Contact>) -> Plan {
    let mut planned = HashSet::new();
    let actions = absent_links
        .iter()
        .filter_map(|link| {
            let contact = contacts.get(&link.contact_id)?;
            let eligible =
                contact.is_active && !contact.sync_locked && planned.insert(link.contact_id);
            eligible.then(|| Action::Inactivate {
                object_id: link.object_id.clone(),
                contact_id: link.contact_id,
                reason: InactiveReason::DeletedUpstream,
            })
        })
        .collect();
    Plan { actions }
}

/// The mass-inactivation guard (SPEC §5.5): one run inactivating more than 20% and more than
/// 10 of a tenant's linked contacts is held for an admin's confirmation.
pub fn inactivation_guard_trips(pending_inactivations: usize, linked_contacts: usize) -> bool {
    // Integer arithmetic: "more than 20%" is pending * 5 > linked, with no rounding.
    pending_inactivations > 10 && pending_inactivations.saturating_mul(5) > linked_contacts
}

/// Skip reasons that mean the user did not pass the filters or could not be read, as opposed
/// to users that are eligible but waiting on a person.
fn is_ineligible(reason: SkipReason) -> bool {
    !matches!(reason, SkipReason::Dismissed | SkipReason::AlreadyQueued)
}

/// The counts of a plan. `seen` is every entry of the page (removals and replays included);
/// `eligible` is `seen` minus users skipped by a filter or as invalid; `errors` counts users
/// that failed processing: records the provider sent that could not be read or validated
/// (skipped as `invalid_record`, SPEC §5.6).
pub fn tally(plan: &Plan, entries_seen: usize) -> Tally {
    let mut tally = Tally {
        seen: entries_seen as u64,
        ..Tally::default()
    };
    let mut ineligible = 0u64;
    for action in &plan.actions {
        match action {
            Action::Link { .. } => tally.linked += 1,
            Action::Create { .. } => tally.created += 1,
            Action::Update { .. } => tally.updated += 1,
            Action::Inactivate { .. } => tally.inactivated += 1,
            Action::Reactivate { .. } => tally.reactivated += 1,
            Action::Queue { .. } => tally.queued += 1,
            Action::Skip { reason, .. } => {
                *tally.skipped.entry(*reason).or_default() += 1;
                if is_ineligible(*reason) {
                    ineligible += 1;
                }
                if *reason == SkipReason::InvalidRecord {
                    tally.errors += 1;
                }
            }
        }
    }
    tally.eligible = tally.seen.saturating_sub(ineligible);
    tally
}

#[cfg(test)]
mod tally_tests {
    use super::*;

    #[test]
    fn invalid_records_count_as_errors_and_filter_skips_do_not() {
        let plan = Plan {
            actions: vec![
                Action::Skip {
                    object_id: Some("a".to_owned()),
                    reason: SkipReason::InvalidRecord,
                    detail: Some("bad email".to_owned()),
                },
                Action::Skip {
                    object_id: None,
                    reason: SkipReason::InvalidRecord,
                    detail: Some("unreadable".to_owned()),
                },
                Action::Skip {
                    object_id: Some("b".to_owned()),
                    reason: SkipReason::Dismissed,
                    detail: None,
                },
            ],
        };
        let counted = tally(&plan, 3);
        assert_eq!(counted.errors, 2);
        assert_eq!(counted.seen, 3);
    }
}

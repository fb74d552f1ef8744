//! Invariants of the planner over generated pages: a plan applied to a model of the store
//! leaves nothing to do on the same page (idempotence), never removes a contact, and never
//! opens a second review item for a user; and what the store loads for a page may leave out
//! contacts found only by a linked user's addresses without changing the plan.

use entra_sync_domain::email::email_key;
use entra_sync_domain::model::{
    Action, Contact, ContactField, ContactFields, DirectoryEntry, DirectoryUser, FieldPolicy,
    InactiveReason, Link, PageContext, Plan, ReviewState, SyncSettings,
};
use entra_sync_domain::plan::{page_keys, plan_page, PreparedPage};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

const MAPPED_CLIENT: Uuid = Uuid::from_u128(1000);
const OTHER_CLIENT: Uuid = Uuid::from_u128(2000);
const MANAGED_TENANT: Uuid = Uuid::from_u128(1);
const OTHER_TENANT: Uuid = Uuid::from_u128(2);

/// A small pool so that collisions (shared addresses, case variants) are common.
const EMAILS: &[&str] = &[
    "a@contoso.com",
    "b@contoso.com",
    " A@Contoso.COM ",
    "c@fabrikam.com",
    "d@fabrikam.com",
    "not-an-email",
];
const OBJECT_IDS: &[&str] = &["u0", "u1", "u2", "u3", "u4", "u5"];

/// The review items of the model store, in the order they were opened.
#[derive(Clone, Debug)]
struct ReviewItem {
    object_id: String,
    state: ReviewState,
}

/// The store as the planner's contract sees it: contacts, links and review items.
#[derive(Clone, Debug, Default)]
struct Store {
    contacts: BTreeMap<Uuid, Contact>,
    links: BTreeMap<(Uuid, String), Uuid>,
    reviews: Vec<ReviewItem>,
    next_contact: u128,
}

impl Store {
    fn context(&self) -> PageContext {
        let mut context = PageContext {
            managed_tenant_id: MANAGED_TENANT,
            mapped_client_id: MAPPED_CLIENT,
            contacts: self.contacts.clone(),
            ..PageContext::default()
        };
        for ((tenant, object_id), contact_id) in &self.links {
            if *tenant == MANAGED_TENANT {
                context
                    .links_by_object_id
                    .insert(object_id.clone(), *contact_id);
            }
            context.link_by_contact_id.insert(
                *contact_id,
                Link {
                    managed_tenant_id: *tenant,
                    object_id: object_id.clone(),
                    contact_id: *contact_id,
                },
            );
        }
        for item in &self.reviews {
            let state = context
                .review_state_by_object_id
                .entry(item.object_id.clone())
                .or_insert(item.state.clone());
            // An open item outranks anything decided earlier.
            if item.state == ReviewState::Open {
                *state = ReviewState::Open;
            }
        }
        context
    }

    fn linked_contact_ids(&self) -> BTreeSet<Uuid> {
        self.links.values().copied().collect()
    }

    fn contact(&mut self, contact_id: Uuid) -> Result<&mut Contact, String> {
        self.contacts
            .get_mut(&contact_id)
            .ok_or(format!("no contact {contact_id}"))
    }

    fn add_link(&mut self, object_id: &str, contact_id: Uuid) -> Result<(), String> {
        if self
            .links
            .contains_key(&(MANAGED_TENANT, object_id.to_string()))
        {
            return Err(format!("{object_id} is already linked"));
        }
        if self.linked_contact_ids().contains(&contact_id) {
            return Err(format!("contact {contact_id} is already linked"));
        }
        self.links
            .insert((MANAGED_TENANT, object_id.to_string()), contact_id);
        Ok(())
    }

    /// Applies a plan the way the store would, refusing anything the store's constraints or
    /// the plan's own preconditions would refuse.
    fn apply(&mut self, plan: &Plan) -> Result<(), String> {
        for action in &plan.actions {
            match action {
                Action::Link {
                    object_id,
                    contact_id,
                } => {
                    self.contact(*contact_id)?;
                    self.add_link(object_id, *contact_id)?;
                }
                Action::Create {
                    object_id,
                    client_id,
                    fields,
                } => {
                    self.next_contact += 1;
                    let contact_id = Uuid::from_u128(100_000 + self.next_contact);
                    self.contacts.insert(
                        contact_id,
                        Contact {
                            contact_id,
                            client_id: *client_id,
                            fields: fields.clone(),
                            is_active: true,
                            inactive_reason: None,
                            sync_locked: false,
                        },
                    );
                    self.add_link(object_id, contact_id)?;
                }
                Action::Update {
                    contact_id,
                    before,
                    after,
                    ..
                } => {
                    let contact = self.contact(*contact_id)?;
                    if contact.sync_locked || &contact.fields != before {
                        return Err(format!("update of locked or changed contact {contact_id}"));
                    }
                    contact.fields = after.clone();
                }
                Action::Inactivate {
                    contact_id, reason, ..
                } => {
                    let contact = self.contact(*contact_id)?;
                    if contact.sync_locked || !contact.is_active {
                        return Err(format!(
                            "inactivation of locked or inactive contact {contact_id}"
                        ));
                    }
                    contact.is_active = false;
                    contact.inactive_reason = Some(*reason);
                }
                Action::Reactivate { contact_id, .. } => {
                    let contact = self.contact(*contact_id)?;
                    let by_sync = matches!(
                        contact.inactive_reason,
                        Some(InactiveReason::DisabledUpstream | InactiveReason::DeletedUpstream)
                    );
                    if contact.sync_locked || contact.is_active || !by_sync {
                        return Err(format!("reactivation not allowed for contact {contact_id}"));
                    }
                    contact.is_active = true;
                    contact.inactive_reason = None;
                }
                Action::Queue { object_id, .. } => {
                    self.reviews.push(ReviewItem {
                        object_id: object_id.clone(),
                        state: ReviewState::Open,
                    });
                }
                Action::Skip { .. } => {}
            }
        }
        Ok(())
    }
}

fn is_change(action: &Action) -> bool {
    !matches!(action, Action::Skip { .. })
}

fn object_id_of(action: &Action) -> Option<&str> {
    match action {
        Action::Link { object_id, .. }
        | Action::Create { object_id, .. }
        | Action::Update { object_id, .. }
        | Action::Inactivate { object_id, .. }
        | Action::Reactivate { object_id, .. }
        | Action::Queue { object_id, .. } => Some(object_id),
        Action::Skip { object_id, .. } => object_id.as_deref(),
    }
}

// ---- generators -----------------------------------------------------------------------------

fn email() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(proptest::sample::select(EMAILS).prop_map(str::to_string))
}

fn text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(
        proptest::sample::select(
            &["", "  ", "Bob", "Alice Smith", "+1 555 0100", "+1 555 0199"][..],
        )
        .prop_map(str::to_string),
    )
}

fn policy() -> impl Strategy<Value = FieldPolicy> {
    proptest::sample::select(
        &[
            FieldPolicy::Off,
            FieldPolicy::FillBlank,
            FieldPolicy::Overwrite,
        ][..],
    )
}

fn settings() -> impl Strategy<Value = SyncSettings> {
    (
        proptest::collection::vec(policy(), 5),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(policies, field_sync_enabled, mark_inactive, exclude_guests, exclude_disabled)| {
                let mut settings = SyncSettings {
                    field_sync_enabled,
                    mark_inactive_when_disabled: mark_inactive,
                    ..SyncSettings::default()
                };
                settings.filters.exclude_guests = exclude_guests;
                settings.filters.exclude_disabled_on_create = exclude_disabled;
                for (field, policy) in ContactField::ALL.into_iter().zip(policies) {
                    settings.field_policy.insert(field, policy);
                }
                settings
            },
        )
}

fn state() -> impl Strategy<Value = (bool, Option<InactiveReason>)> {
    prop_oneof![
        Just((true, None)),
        Just((false, Some(InactiveReason::DisabledUpstream))),
        Just((false, Some(InactiveReason::DeletedUpstream))),
        Just((false, Some(InactiveReason::Manual))),
        Just((false, None)),
    ]
}

fn contact(n: usize) -> impl Strategy<Value = Contact> {
    (
        email(),
        any::<bool>(),
        state(),
        proptest::bool::weighted(0.15),
        text(),
        text(),
        text(),
    )
        .prop_map(
            move |(email, mapped, (is_active, inactive_reason), sync_locked, name, phone, job)| {
                Contact {
                    contact_id: Uuid::from_u128(n as u128 + 1),
                    client_id: if mapped { MAPPED_CLIENT } else { OTHER_CLIENT },
                    fields: ContactFields {
                        full_name: name.unwrap_or_default(),
                        email,
                        phone,
                        mobile: None,
                        job_title: job,
                    },
                    is_active,
                    inactive_reason,
                    sync_locked,
                }
            },
        )
}

fn user() -> impl Strategy<Value = DirectoryUser> {
    (
        proptest::sample::select(OBJECT_IDS),
        (email(), email(), email(), email()),
        proptest::option::of(any::<bool>()),
        proptest::bool::weighted(0.15),
        (text(), text(), text(), text()),
    )
        .prop_map(
            |(
                object_id,
                (mail, upn, proxy, other),
                account_enabled,
                guest,
                (name, phone, mobile, job),
            )| {
                DirectoryUser {
                    object_id: object_id.to_string(),
                    display_name: name,
                    mail,
                    user_principal_name: upn,
                    proxy_addresses: proxy.map(|p| vec![format!("smtp:{p}")]).unwrap_or_default(),
                    other_mails: other.into_iter().collect(),
                    account_enabled,
                    user_type: Some(if guest { "Guest" } else { "Member" }.to_string()),
                    business_phones: phone.into_iter().collect(),
                    mobile_phone: mobile,
                    job_title: job,
                    ..DirectoryUser::default()
                }
            },
        )
}

fn entry() -> impl Strategy<Value = DirectoryEntry> {
    prop_oneof![
        6 => user().prop_map(DirectoryEntry::Present),
        2 => proptest::sample::select(OBJECT_IDS)
            .prop_map(|id| DirectoryEntry::Removed { object_id: id.to_string(), permanent: false }),
        1 => Just(DirectoryEntry::Invalid { object_id: None, reason: "unexpected JSON".to_string() }),
    ]
}

fn review_state() -> impl Strategy<Value = Option<ReviewState>> {
    proptest::option::of(prop_oneof![
        Just(ReviewState::Open),
        Just(ReviewState::Dismissed),
        Just(ReviewState::CreateNew)
    ])
}

/// A store with up to six contacts, links of this and another managed tenant (each contact and
/// each user linked at most once), and earlier review decisions.
fn store() -> impl Strategy<Value = Store> {
    (0usize..7)
        .prop_flat_map(|count| {
            (
                (0..count).map(contact).collect::<Vec<_>>(),
                proptest::collection::vec(proptest::option::of(0usize..7), OBJECT_IDS.len()),
                proptest::collection::vec(any::<bool>(), count),
                proptest::collection::vec(review_state(), OBJECT_IDS.len()),
            )
        })
        .prop_map(|(contacts, link_targets, foreign, reviews)| {
            let mut store = Store::default();
            for contact in contacts {
                store.contacts.insert(contact.contact_id, contact);
            }
            for (object_id, target) in OBJECT_IDS.iter().zip(link_targets) {
                let Some(target) = target else { continue };
                let contact_id = Uuid::from_u128(target as u128 + 1);
                // A link may point at a contact the store no longer has (deleted by hand).
                if !store.linked_contact_ids().contains(&contact_id) {
                    store
                        .links
                        .insert((MANAGED_TENANT, object_id.to_string()), contact_id);
                }
            }
            for (index, foreign) in foreign.into_iter().enumerate() {
                let contact_id = Uuid::from_u128(index as u128 + 1);
                if foreign && !store.linked_contact_ids().contains(&contact_id) {
                    store
                        .links
                        .insert((OTHER_TENANT, format!("f{index}")), contact_id);
                }
            }
            for (object_id, state) in OBJECT_IDS.iter().zip(reviews) {
                if let Some(state) = state {
                    store.reviews.push(ReviewItem {
                        object_id: object_id.to_string(),
                        state,
                    });
                }
            }
            store
        })
}

fn planner_cases() -> u32 {
    std::env::var("ENTRA_SYNC_FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    // Failures are kept as rows of the rule table rather than in a persistence file.
    // `ENTRA_SYNC_FUZZ_CASES` raises the case count for a long fuzzing run (README).
    #![proptest_config(ProptestConfig { cases: planner_cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_idempotent_never_delete_and_never_double_queue(
        mut store in store(),
        entries in proptest::collection::vec(entry(), 0..10),
        settings in settings(),
    ) {
        let before = store.clone();
        let plan = plan_page(&store.context(), &entries, &settings);
        prop_assert_eq!(store.apply(&plan), Ok(()), "plan {:#?}", plan);

        // (b) No contact is ever removed, and contacts the plan does not name stay unchanged.
        prop_assert!(store.contacts.len() >= before.contacts.len());
        let touched: BTreeSet<Uuid> = plan.actions.iter().filter_map(|action| match action {
            Action::Update { contact_id, .. }
            | Action::Inactivate { contact_id, .. }
            | Action::Reactivate { contact_id, .. } => Some(*contact_id),
            _ => None,
        }).collect();
        for (contact_id, contact) in &before.contacts {
            let after = store.contacts.get(contact_id);
            prop_assert!(after.is_some(), "contact {} disappeared", contact_id);
            if contact.sync_locked || !touched.contains(contact_id) {
                prop_assert_eq!(after, Some(contact));
            }
        }

        // (c) At most one open review item per directory user.
        let mut open = BTreeSet::new();
        for item in store.reviews.iter().filter(|item| item.state == ReviewState::Open) {
            prop_assert!(open.insert(item.object_id.clone()), "second open item for {}", item.object_id);
        }

        // Each user gets at most one decision (link, create, queue) per plan.
        let mut decided = BTreeSet::new();
        for action in &plan.actions {
            if matches!(action, Action::Link { .. } | Action::Create { .. } | Action::Queue { .. }) {
                prop_assert!(decided.insert(object_id_of(action)), "two decisions for {:?}", object_id_of(action));
            }
        }

        // (a) The same page planned again against the updated store changes nothing.
        let again = plan_page(&store.context(), &entries, &settings);
        let changes: Vec<&Action> = again.actions.iter().filter(|action| is_change(action)).collect();
        prop_assert!(changes.is_empty(), "second plan still changes {:#?}\nfirst plan {:#?}", changes, plan);
    }

    /// The store looks contacts up by the addresses of the page's unlinked users only
    /// (`PreparedPage::unlinked_emails`); the plan is the one it would get looking them up by every
    /// address on the page.
    #[test]
    fn contacts_by_unlinked_addresses_plan_as_by_every_address(
        store in store(),
        entries in proptest::collection::vec(entry(), 0..10),
        settings in settings(),
    ) {
        let every = loaded(&store, &entries, &page_keys(&entries).emails);
        let unlinked = PreparedPage::new(&entries).unlinked_emails(|object_id| every.links_by_object_id.contains_key(object_id));
        let fewer = loaded(&store, &entries, &unlinked);
        prop_assert_eq!(plan_page(&fewer, &entries, &settings), plan_page(&every, &entries, &settings));
    }
}

/// What the store loads for a page (`Store::reconcile_page`): the links of the page's object
/// ids, and the contacts they link to or whose address is one of `emails`.
fn loaded(store: &Store, entries: &[DirectoryEntry], emails: &[String]) -> PageContext {
    let mut context = store.context();
    let object_ids: BTreeSet<&str> = entries
        .iter()
        .filter_map(|entry| match entry {
            DirectoryEntry::Present(user) => Some(user.object_id.as_str()),
            DirectoryEntry::Removed { object_id, .. } => Some(object_id.as_str()),
            DirectoryEntry::Invalid { object_id, .. } => object_id.as_deref(),
        })
        .collect();
    context
        .links_by_object_id
        .retain(|object_id, _| object_ids.contains(object_id.as_str()));
    let linked: BTreeSet<Uuid> = context.links_by_object_id.values().copied().collect();
    context.contacts.retain(|contact_id, contact| {
        linked.contains(contact_id)
            || contact
                .fields
                .email
                .as_deref()
                .and_then(email_key)
                .is_some_and(|email| emails.contains(&email))
    });
    let contacts = context.contacts.clone();
    context
        .link_by_contact_id
        .retain(|contact_id, _| contacts.contains_key(contact_id));
    context
}

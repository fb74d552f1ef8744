//! The core types every other crate speaks: directory users as read from Microsoft or CIPP,
//! PSA contacts and links as stored, the settings that steer a sync, and the plan of actions
//! the planner produces for one page of users.

use std::collections::BTreeMap;
use uuid::Uuid;

/// A user object read from Graph or CIPP, already mapped out of the provider's JSON by the
/// directory crate. Every field but `object_id` may be missing upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryUser {
    pub object_id: String,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub mail: Option<String>,
    pub user_principal_name: Option<String>,
    pub other_mails: Vec<String>,
    /// Raw entries such as `SMTP:bob@contoso.com` or `smtp:bob@sales.contoso.com`.
    pub proxy_addresses: Vec<String>,
    pub account_enabled: Option<bool>,
    /// `Member` or `Guest` as Graph spells it.
    pub user_type: Option<String>,
    pub creation_type: Option<String>,
    pub job_title: Option<String>,
    pub mobile_phone: Option<String>,
    pub business_phones: Vec<String>,
    pub assigned_license_count: usize,
    /// Object ids of the filter's named security groups this user is a (transitive) member
    /// of. `None` means membership was not loaded; the group filters then fail closed.
    pub group_ids: Option<Vec<String>>,
}

/// One entry of a users page: a present user, a removal reported by delta (`@removed`), or a
/// record the provider could not read (skipped and counted, never fatal for the page).
// Boxing the user would shrink the enum but change the contract every crate codes against; a
// page holds at most 999 entries, so the padding costs little.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectoryEntry {
    Present(DirectoryUser),
    Removed {
        object_id: String,
        permanent: bool,
    },
    Invalid {
        object_id: Option<String>,
        reason: String,
    },
}

/// Why a contact was made inactive. Only the sync's own reasons allow the sync to reactivate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InactiveReason {
    DisabledUpstream,
    DeletedUpstream,
    /// Set by a person through the PSA; the sync never reactivates such a contact.
    Manual,
}

impl InactiveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            InactiveReason::DisabledUpstream => "disabled_upstream",
            InactiveReason::DeletedUpstream => "deleted_upstream",
            InactiveReason::Manual => "manual",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "disabled_upstream" => Some(InactiveReason::DisabledUpstream),
            "deleted_upstream" => Some(InactiveReason::DeletedUpstream),
            "manual" => Some(InactiveReason::Manual),
            _ => None,
        }
    }
}

/// The contact fields the sync can write, in the order the field policy lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactFields {
    pub full_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub mobile: Option<String>,
    pub job_title: Option<String>,
}

/// A PSA contact as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub contact_id: Uuid,
    pub client_id: Uuid,
    pub fields: ContactFields,
    pub is_active: bool,
    pub inactive_reason: Option<InactiveReason>,
    pub sync_locked: bool,
}

/// The durable association (managed tenant, object id) ↔ contact.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Link {
    pub managed_tenant_id: Uuid,
    pub object_id: String,
    pub contact_id: Uuid,
}

/// Field names the field policy knows, as they appear in settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContactField {
    Name,
    Email,
    Phone,
    Mobile,
    JobTitle,
}

impl ContactField {
    pub const ALL: [ContactField; 5] = [
        ContactField::Name,
        ContactField::Email,
        ContactField::Phone,
        ContactField::Mobile,
        ContactField::JobTitle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ContactField::Name => "name",
            ContactField::Email => "email",
            ContactField::Phone => "phone",
            ContactField::Mobile => "mobile",
            ContactField::JobTitle => "job_title",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        ContactField::ALL
            .into_iter()
            .find(|field| field.as_str() == value)
    }
}

/// What the sync may do to one field of an existing contact (SPEC §5.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldPolicy {
    /// The PSA value is authoritative.
    #[default]
    Off,
    FillBlank,
    Overwrite,
}

impl FieldPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldPolicy::Off => "off",
            FieldPolicy::FillBlank => "fill_blank",
            FieldPolicy::Overwrite => "overwrite",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "off" => Some(FieldPolicy::Off),
            "fill_blank" => Some(FieldPolicy::FillBlank),
            "overwrite" => Some(FieldPolicy::Overwrite),
            _ => None,
        }
    }
}

/// User filters (SPEC §5.2): PSA-tenant defaults, optionally overridden per managed tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filters {
    pub exclude_guests: bool,
    pub exclude_disabled_on_create: bool,
    pub licensed_only: bool,
    /// Lowercase domains; empty means every domain is allowed.
    pub domain_allow: Vec<String>,
    pub domain_deny: Vec<String>,
    /// Regular expressions matched against the user's UPN, mail and display name.
    pub exclusion_patterns: Vec<String>,
    /// Security group object ids (lowercase GUIDs); when non-empty, only (transitive) members
    /// of at least one of them may become contacts.
    pub include_groups: Vec<String>,
    /// Security group object ids whose (transitive) members never become contacts.
    pub exclude_groups: Vec<String>,
}

impl Filters {
    /// Every group the filters name, include groups first, without duplicates.
    pub fn named_groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = Vec::new();
        for group in self.include_groups.iter().chain(&self.exclude_groups) {
            let group = group.trim().to_lowercase();
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        groups
    }
}

impl Default for Filters {
    fn default() -> Self {
        Filters {
            exclude_guests: true,
            exclude_disabled_on_create: true,
            licensed_only: false,
            domain_allow: Vec::new(),
            domain_deny: Vec::new(),
            exclusion_patterns: Vec::new(),
            include_groups: Vec::new(),
            exclude_groups: Vec::new(),
        }
    }
}

/// Everything about a PSA tenant's settings the planner needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSettings {
    pub field_policy: BTreeMap<ContactField, FieldPolicy>,
    /// False when the `entra-integration-field-sync` flag is off: no field overwrites apply.
    pub field_sync_enabled: bool,
    pub mark_inactive_when_disabled: bool,
    pub filters: Filters,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            field_policy: BTreeMap::new(),
            field_sync_enabled: true,
            mark_inactive_when_disabled: true,
            filters: Filters::default(),
        }
    }
}

impl SyncSettings {
    pub fn policy(&self, field: ContactField) -> FieldPolicy {
        self.field_policy.get(&field).copied().unwrap_or_default()
    }
}

/// Why a user was not synced. Counted per reason in tenant results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    Guest,
    Disabled,
    NoUsableEmail,
    Unlicensed,
    DomainNotAllowed,
    DomainDenied,
    ExcludedByPattern,
    NotInIncludedGroup,
    InExcludedGroup,
    InvalidRecord,
    Dismissed,
    AlreadyQueued,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Guest => "guest",
            SkipReason::Disabled => "disabled",
            SkipReason::NoUsableEmail => "no_usable_email",
            SkipReason::Unlicensed => "unlicensed",
            SkipReason::DomainNotAllowed => "domain_not_allowed",
            SkipReason::DomainDenied => "domain_denied",
            SkipReason::ExcludedByPattern => "excluded_by_pattern",
            SkipReason::NotInIncludedGroup => "not_in_included_group",
            SkipReason::InExcludedGroup => "in_excluded_group",
            SkipReason::InvalidRecord => "invalid_record",
            SkipReason::Dismissed => "dismissed",
            SkipReason::AlreadyQueued => "already_queued",
        }
    }
}

/// Why a user went to the review queue (SPEC §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReviewReason {
    MultipleCandidates,
    CandidateInOtherClient,
    CandidateLinkedToOtherUser,
}

impl ReviewReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewReason::MultipleCandidates => "multiple_candidates",
            ReviewReason::CandidateInOtherClient => "candidate_in_other_client",
            ReviewReason::CandidateLinkedToOtherUser => "candidate_linked_to_other_user",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "multiple_candidates" => Some(ReviewReason::MultipleCandidates),
            "candidate_in_other_client" => Some(ReviewReason::CandidateInOtherClient),
            "candidate_linked_to_other_user" => Some(ReviewReason::CandidateLinkedToOtherUser),
            _ => None,
        }
    }
}

/// How a person resolved a review item earlier; the planner honours it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewState {
    /// An open item exists: do not queue again, do not act.
    Open,
    /// Dismissed: skip this user until a person re-opens the item.
    Dismissed,
    /// Resolved as "create a new contact" for this user.
    CreateNew,
}

/// Everything the planner knows for one page, loaded by the store in bulk.
#[derive(Clone, Debug, Default)]
pub struct PageContext {
    pub managed_tenant_id: Uuid,
    pub mapped_client_id: Uuid,
    /// Links of this managed tenant for the object ids on the page.
    pub links_by_object_id: BTreeMap<String, Uuid>,
    /// Every contact of the PSA tenant that is linked from the page or whose email is one of
    /// the page's normalized emails, by id.
    pub contacts: BTreeMap<Uuid, Contact>,
    /// For each contact in `contacts` that is linked to any directory user, that link.
    pub link_by_contact_id: BTreeMap<Uuid, Link>,
    /// Review decisions for object ids on the page.
    pub review_state_by_object_id: BTreeMap<String, ReviewState>,
}

/// One thing the sync will do. Plans never contain a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Link {
        object_id: String,
        contact_id: Uuid,
    },
    Create {
        object_id: String,
        client_id: Uuid,
        fields: ContactFields,
    },
    Update {
        object_id: String,
        contact_id: Uuid,
        before: ContactFields,
        after: ContactFields,
    },
    Inactivate {
        object_id: String,
        contact_id: Uuid,
        reason: InactiveReason,
    },
    Reactivate {
        object_id: String,
        contact_id: Uuid,
    },
    Queue {
        object_id: String,
        reason: ReviewReason,
        display_name: Option<String>,
        email: Option<String>,
        candidates: Vec<Uuid>,
    },
    Skip {
        object_id: Option<String>,
        reason: SkipReason,
        detail: Option<String>,
    },
}

/// The actions for one page, in page order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
}

/// Counts of one page or one tenant, as reported in tenant results (SPEC §5.7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub seen: u64,
    pub eligible: u64,
    pub created: u64,
    pub linked: u64,
    pub updated: u64,
    pub inactivated: u64,
    pub reactivated: u64,
    pub queued: u64,
    pub errors: u64,
    pub skipped: BTreeMap<SkipReason, u64>,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.seen += other.seen;
        self.eligible += other.eligible;
        self.created += other.created;
        self.linked += other.linked;
        self.updated += other.updated;
        self.inactivated += other.inactivated;
        self.reactivated += other.reactivated;
        self.queued += other.queued;
        self.errors += other.errors;
        for (reason, count) in &other.skipped {
            *self.skipped.entry(*reason).or_default() += count;
        }
    }
}

/// A managed tenant's override of the PSA tenant's default filters: each field that is set
/// replaces the default's value as a whole (lists are not concatenated).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterOverride {
    pub exclude_guests: Option<bool>,
    pub exclude_disabled_on_create: Option<bool>,
    pub licensed_only: Option<bool>,
    pub domain_allow: Option<Vec<String>>,
    pub domain_deny: Option<Vec<String>>,
    pub exclusion_patterns: Option<Vec<String>>,
    pub include_groups: Option<Vec<String>>,
    pub exclude_groups: Option<Vec<String>>,
}

impl Filters {
    /// The filters for one managed tenant: `defaults` with the override's set fields applied.
    pub fn merged(defaults: &Filters, filter_override: &FilterOverride) -> Filters {
        Filters {
            exclude_guests: filter_override
                .exclude_guests
                .unwrap_or(defaults.exclude_guests),
            exclude_disabled_on_create: filter_override
                .exclude_disabled_on_create
                .unwrap_or(defaults.exclude_disabled_on_create),
            licensed_only: filter_override
                .licensed_only
                .unwrap_or(defaults.licensed_only),
            domain_allow: filter_override
                .domain_allow
                .clone()
                .unwrap_or_else(|| defaults.domain_allow.clone()),
            domain_deny: filter_override
                .domain_deny
                .clone()
                .unwrap_or_else(|| defaults.domain_deny.clone()),
            exclusion_patterns: filter_override
                .exclusion_patterns
                .clone()
                .unwrap_or_else(|| defaults.exclusion_patterns.clone()),
            include_groups: filter_override
                .include_groups
                .clone()
                .unwrap_or_else(|| defaults.include_groups.clone()),
            exclude_groups: filter_override
                .exclude_groups
                .clone()
                .unwrap_or_else(|| defaults.exclude_groups.clone()),
        }
    }
}

impl SkipReason {
    pub const ALL: [SkipReason; 12] = [
        SkipReason::Guest,
        SkipReason::Disabled,
        SkipReason::NoUsableEmail,
        SkipReason::Unlicensed,
        SkipReason::DomainNotAllowed,
        SkipReason::DomainDenied,
        SkipReason::ExcludedByPattern,
        SkipReason::NotInIncludedGroup,
        SkipReason::InExcludedGroup,
        SkipReason::InvalidRecord,
        SkipReason::Dismissed,
        SkipReason::AlreadyQueued,
    ];

    pub fn parse(value: &str) -> Option<Self> {
        SkipReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == value)
    }
}

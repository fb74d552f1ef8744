//! User filters (SPEC §5.2): which directory users may become new contacts, and the check
//! run when an admin saves filter settings.
//!
//! Only unlinked users are filtered (a link decides its contact whatever the filters say). The
//! first matching rule gives the skip reason, in this order: guest, disabled, no usable email,
//! unlicensed, denied domain, domain not allowed, exclusion pattern, excluded group, not in an
//! included group.

use crate::email::{email_domain, is_domain, is_guest, primary_email};
use crate::model::{DirectoryUser, Filters, SkipReason};
use regex::{RegexSet, RegexSetBuilder};

/// Compiled regexes may not grow beyond this, so a hostile pattern cannot exhaust memory.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// At most this many exclusion patterns are accepted on save.
pub const MAX_EXCLUSION_PATTERNS: usize = 100;

/// Why saved filter settings were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("exclusion pattern {pattern:?} is not a valid regular expression: {message}")]
    InvalidPattern { pattern: String, message: String },
    #[error("{domain:?} is not a domain name")]
    InvalidDomain { domain: String },
    #[error("at most {MAX_EXCLUSION_PATTERNS} exclusion patterns are allowed")]
    TooManyPatterns,
    #[error("{group:?} is not a group object id (a GUID)")]
    InvalidGroup { group: String },
    #[error("at most {MAX_FILTER_GROUPS} include and exclude groups are allowed")]
    TooManyGroups,
}

/// At most this many distinct groups (include and exclude together) are accepted on save, so
/// loading their members at the start of a sync stays bounded.
pub const MAX_FILTER_GROUPS: usize = 50;

/// Whether `value` looks like a group object id: a GUID in its 8-4-4-4-12 hex form.
pub fn is_group_id(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(part, len)| part.len() == len && part.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Checks filters before they are saved: every pattern compiles, every domain looks like one.
pub fn validate_filters(filters: &Filters) -> Result<(), FilterError> {
    for domain in filters.domain_allow.iter().chain(&filters.domain_deny) {
        if !is_domain(&normalize_filter_domain(domain)) {
            return Err(FilterError::InvalidDomain {
                domain: domain.clone(),
            });
        }
    }
    for group in filters.include_groups.iter().chain(&filters.exclude_groups) {
        if !is_group_id(group.trim()) {
            return Err(FilterError::InvalidGroup {
                group: group.clone(),
            });
        }
    }
    if filters.named_groups().len() > MAX_FILTER_GROUPS {
        return Err(FilterError::TooManyGroups);
    }
    if filters.exclusion_patterns.len() > MAX_EXCLUSION_PATTERNS {
        return Err(FilterError::TooManyPatterns);
    }
    for pattern in &filters.exclusion_patterns {
        if let Err(error) = build_pattern_set(std::slice::from_ref(pattern)) {
            return Err(FilterError::InvalidPattern {
                pattern: pattern.clone(),
                message: error.to_string(),
            });
        }
    }
    Ok(())
}

/// Admins type domains as `Contoso.com`, `@contoso.com` or `*.contoso.com`; all mean the same.
pub fn normalize_filter_domain(domain: &str) -> String {
    let lowered = domain.trim().to_lowercase();
    let without_prefix = lowered
        .strip_prefix("*.")
        .or_else(|| lowered.strip_prefix('@'))
        .unwrap_or(&lowered);
    without_prefix.trim_end_matches('.').to_string()
}

fn build_pattern_set(patterns: &[String]) -> Result<RegexSet, regex::Error> {
    // Case-insensitive because the strings matched (UPN, mail) are case-insensitive upstream.
    RegexSetBuilder::new(patterns)
        .case_insensitive(true)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
}

/// Filters prepared once per page: domains normalized, patterns compiled into one set.
#[derive(Clone, Debug)]
pub struct CompiledFilters {
    exclude_guests: bool,
    exclude_disabled_on_create: bool,
    licensed_only: bool,
    domain_allow: Vec<String>,
    domain_deny: Vec<String>,
    patterns: Option<RegexSet>,
    include_groups: Vec<String>,
    exclude_groups: Vec<String>,
    /// Set when a saved pattern does not compile (settings written around the validation).
    /// The planner then fails closed: it excludes every user the patterns would have been
    /// checked against, rather than syncing users an admin meant to exclude.
    broken_pattern: Option<String>,
}

impl CompiledFilters {
    pub fn new(filters: &Filters) -> CompiledFilters {
        let (patterns, broken_pattern) = if filters.exclusion_patterns.is_empty() {
            (None, None)
        } else {
            match build_pattern_set(&filters.exclusion_patterns) {
                Ok(set) => (Some(set), None),
                Err(error) => (None, Some(error.to_string())),
            }
        };
        CompiledFilters {
            exclude_guests: filters.exclude_guests,
            exclude_disabled_on_create: filters.exclude_disabled_on_create,
            licensed_only: filters.licensed_only,
            domain_allow: filters
                .domain_allow
                .iter()
                .map(|d| normalize_filter_domain(d))
                .collect(),
            domain_deny: filters
                .domain_deny
                .iter()
                .map(|d| normalize_filter_domain(d))
                .collect(),
            patterns,
            broken_pattern,
            include_groups: normalize_groups(&filters.include_groups),
            exclude_groups: normalize_groups(&filters.exclude_groups),
        }
    }

    /// Why `user` may not be linked or created, if it may not. `primary` is the user's primary
    /// normalized email (passed in because the planner has already computed it).
    pub fn skip_reason(
        &self,
        user: &DirectoryUser,
        primary: Option<&str>,
    ) -> Option<(SkipReason, Option<String>)> {
        if self.exclude_guests && is_guest(user) {
            return Some((SkipReason::Guest, None));
        }
        // Only an explicit `accountEnabled: false` counts: a missing value is not evidence
        // that the account is disabled.
        if self.exclude_disabled_on_create && user.account_enabled == Some(false) {
            return Some((SkipReason::Disabled, None));
        }
        let Some(primary) = primary else {
            return Some((SkipReason::NoUsableEmail, None));
        };
        if self.licensed_only && user.assigned_license_count == 0 {
            return Some((SkipReason::Unlicensed, None));
        }
        let domain = email_domain(primary).unwrap_or_default();
        // Deny wins over allow, so listing a domain in both excludes it.
        if let Some(denied) = self.domain_deny.iter().find(|d| domain_matches(domain, d)) {
            return Some((SkipReason::DomainDenied, Some(denied.clone())));
        }
        if !self.domain_allow.is_empty()
            && !self.domain_allow.iter().any(|d| domain_matches(domain, d))
        {
            return Some((SkipReason::DomainNotAllowed, Some(domain.to_string())));
        }
        if let Some(message) = &self.broken_pattern {
            return Some((
                SkipReason::ExcludedByPattern,
                Some(format!("invalid exclusion pattern: {message}")),
            ));
        }
        if let Some(patterns) = &self.patterns {
            let fields = [
                user.user_principal_name.as_deref(),
                user.mail.as_deref(),
                user.display_name.as_deref(),
            ];
            for field in fields.into_iter().flatten() {
                if let Some(index) = patterns.matches(field).iter().next() {
                    let pattern = patterns.patterns().get(index).cloned();
                    return Some((SkipReason::ExcludedByPattern, pattern));
                }
            }
        }
        self.group_skip_reason(user)
    }

    /// The group rules. Exclusion wins over inclusion, like deny over allow for domains. When
    /// membership was not loaded (`group_ids` is `None`) they fail closed, as broken patterns do.
    fn group_skip_reason(&self, user: &DirectoryUser) -> Option<(SkipReason, Option<String>)> {
        if self.include_groups.is_empty() && self.exclude_groups.is_empty() {
            return None;
        }
        let Some(group_ids) = &user.group_ids else {
            let reason = if self.exclude_groups.is_empty() {
                SkipReason::NotInIncludedGroup
            } else {
                SkipReason::InExcludedGroup
            };
            return Some((reason, Some("group membership not loaded".to_string())));
        };
        let is_member = |group: &String| group_ids.iter().any(|id| id.eq_ignore_ascii_case(group));
        if let Some(excluded) = self.exclude_groups.iter().find(|g| is_member(g)) {
            return Some((SkipReason::InExcludedGroup, Some(excluded.clone())));
        }
        if !self.include_groups.is_empty() && !self.include_groups.iter().any(is_member) {
            return Some((SkipReason::NotInIncludedGroup, None));
        }
        None
    }
}

fn normalize_groups(groups: &[String]) -> Vec<String> {
    groups.iter().map(|g| g.trim().to_lowercase()).collect()
}

/// A filter domain covers itself and its subdomains (`contoso.com` covers `sales.contoso.com`).
fn domain_matches(domain: &str, filter_domain: &str) -> bool {
    domain == filter_domain
        || domain
            .strip_suffix(filter_domain)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// The filter verdict for one user, compiling the filters on the spot (for callers outside
/// the planner, such as a settings preview).
pub fn filter_user(user: &DirectoryUser, filters: &Filters) -> Option<SkipReason> {
    let primary = primary_email(user);
    CompiledFilters::new(filters)
        .skip_reason(user, primary.as_deref())
        .map(|(reason, _)| reason)
}

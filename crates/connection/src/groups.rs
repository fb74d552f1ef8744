//! The group filters' membership (SPEC §5.2): each named group's member users, read once
//! before the first page so every page is judged against the same membership, and set on each
//! user as `group_ids`. Used by the sync activity and the preflight alike.

use std::collections::BTreeMap;

use entra_sync_directory::error::DirectoryError;
use entra_sync_directory::source::DirectorySource;
use entra_sync_domain::filter::MAX_FILTER_GROUPS;
use entra_sync_domain::model::DirectoryEntry;

/// Which of the filters' named groups each user (by lowercase object id) belongs to. Empty,
/// and leaving users untouched, when the filters name no groups.
#[derive(Debug, Default)]
pub struct GroupMembers {
    loaded: bool,
    groups_by_user: BTreeMap<String, Vec<String>>,
}

impl GroupMembers {
    /// Sets `group_ids` on every present user: the named groups it is a member of, or none.
    pub fn annotate(&self, entries: &mut [DirectoryEntry]) {
        if !self.loaded {
            return;
        }
        for entry in entries {
            if let DirectoryEntry::Present(user) = entry {
                let groups = self
                    .groups_by_user
                    .get(&user.object_id.to_ascii_lowercase())
                    .cloned()
                    .unwrap_or_default();
                user.group_ids = Some(groups);
            }
        }
    }
}

/// Reads the members of each named group. More groups than validation allows (settings
/// written around it) is refused rather than read partially, since skipping an exclude group
/// would sync users an admin meant to exclude.
pub async fn load_group_members(
    source: &dyn DirectorySource,
    entra_tenant_id: &str,
    groups: &[String],
) -> Result<GroupMembers, DirectoryError> {
    if groups.is_empty() {
        return Ok(GroupMembers::default());
    }
    if groups.len() > MAX_FILTER_GROUPS {
        return Err(DirectoryError::Invalid {
            message: format!("the filters name more than {MAX_FILTER_GROUPS} groups"),
        });
    }
    let mut members = GroupMembers {
        loaded: true,
        groups_by_user: BTreeMap::new(),
    };
    for group in groups {
        for user_id in source.group_member_ids(entra_tenant_id, group).await? {
            let user_groups = members
                .groups_by_user
                .entry(user_id.to_ascii_lowercase())
                .or_default();
            if !user_groups.contains(group) {
                user_groups.push(group.clone());
            }
        }
    }
    tracing::info!(groups = groups.len(), "filter group members loaded");
    Ok(members)
}

//! Sync settings: one JSON document per PSA tenant (field policy, filters, inactivation,
//! schedule, discovery before sync), and per managed tenant filter overrides merged over it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use entra_sync_domain::filter::validate_filters;
use entra_sync_domain::model::{ContactField, FieldPolicy, Filters, SyncSettings};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::StoreError;
use crate::flags::FIELD_SYNC_FLAG;
use crate::{Result, Store};

/// Shortest schedule interval: 15 minutes.
pub const MIN_SCHEDULE_INTERVAL_SECONDS: u64 = 15 * 60;
/// Longest schedule interval: 30 days.
pub const MAX_SCHEDULE_INTERVAL_SECONDS: u64 = 30 * 24 * 60 * 60;
/// Default schedule interval: daily.
pub const DEFAULT_SCHEDULE_INTERVAL_SECONDS: u64 = 24 * 60 * 60;

/// The filters of §5.2 as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterSettings {
    pub exclude_guests: bool,
    pub exclude_disabled_on_create: bool,
    pub licensed_only: bool,
    pub domain_allow: Vec<String>,
    pub domain_deny: Vec<String>,
    pub exclusion_patterns: Vec<String>,
    /// Security group object ids (GUIDs); when any are set, only their members are synced.
    pub include_groups: Vec<String>,
    /// Security group object ids whose members are never synced.
    pub exclude_groups: Vec<String>,
}

impl Default for FilterSettings {
    fn default() -> FilterSettings {
        FilterSettings::from(&Filters::default())
    }
}

impl From<&Filters> for FilterSettings {
    fn from(filters: &Filters) -> FilterSettings {
        FilterSettings {
            exclude_guests: filters.exclude_guests,
            exclude_disabled_on_create: filters.exclude_disabled_on_create,
            licensed_only: filters.licensed_only,
            domain_allow: filters.domain_allow.clone(),
            domain_deny: filters.domain_deny.clone(),
            exclusion_patterns: filters.exclusion_patterns.clone(),
            include_groups: filters.include_groups.clone(),
            exclude_groups: filters.exclude_groups.clone(),
        }
    }
}

impl From<&FilterSettings> for Filters {
    fn from(settings: &FilterSettings) -> Filters {
        Filters {
            exclude_guests: settings.exclude_guests,
            exclude_disabled_on_create: settings.exclude_disabled_on_create,
            licensed_only: settings.licensed_only,
            domain_allow: settings.domain_allow.clone(),
            domain_deny: settings.domain_deny.clone(),
            exclusion_patterns: settings.exclusion_patterns.clone(),
            include_groups: settings.include_groups.clone(),
            exclude_groups: settings.exclude_groups.clone(),
        }
    }
}

/// A managed tenant's overrides: each `Some` replaces the PSA tenant's value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
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

impl FilterOverride {
    pub fn apply(&self, base: &FilterSettings) -> FilterSettings {
        FilterSettings {
            exclude_guests: self.exclude_guests.unwrap_or(base.exclude_guests),
            exclude_disabled_on_create: self
                .exclude_disabled_on_create
                .unwrap_or(base.exclude_disabled_on_create),
            licensed_only: self.licensed_only.unwrap_or(base.licensed_only),
            domain_allow: self
                .domain_allow
                .clone()
                .unwrap_or_else(|| base.domain_allow.clone()),
            domain_deny: self
                .domain_deny
                .clone()
                .unwrap_or_else(|| base.domain_deny.clone()),
            exclusion_patterns: self
                .exclusion_patterns
                .clone()
                .unwrap_or_else(|| base.exclusion_patterns.clone()),
            include_groups: self
                .include_groups
                .clone()
                .unwrap_or_else(|| base.include_groups.clone()),
            exclude_groups: self
                .exclude_groups
                .clone()
                .unwrap_or_else(|| base.exclude_groups.clone()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScheduleSettings {
    /// Off by default.
    pub enabled: bool,
    pub interval_seconds: u64,
}

impl Default for ScheduleSettings {
    fn default() -> ScheduleSettings {
        ScheduleSettings {
            enabled: false,
            interval_seconds: DEFAULT_SCHEDULE_INTERVAL_SECONDS,
        }
    }
}

/// A PSA tenant's settings document, as `GET/PUT …/settings` shows it. Missing keys take
/// their defaults, so older documents stay readable as fields are added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantSettings {
    /// Field name (`name`, `email`, `phone`, `mobile`, `job_title`) to policy (`off`,
    /// `fill_blank`, `overwrite`). A field not listed is `off`.
    pub field_policy: BTreeMap<String, String>,
    pub filters: FilterSettings,
    pub mark_inactive_when_disabled: bool,
    pub schedule: ScheduleSettings,
    pub discovery_before_sync: bool,
}

impl Default for TenantSettings {
    fn default() -> TenantSettings {
        TenantSettings {
            field_policy: ContactField::ALL
                .into_iter()
                .map(|field| {
                    (
                        field.as_str().to_owned(),
                        FieldPolicy::Off.as_str().to_owned(),
                    )
                })
                .collect(),
            filters: FilterSettings::default(),
            mark_inactive_when_disabled: true,
            schedule: ScheduleSettings::default(),
            discovery_before_sync: false,
        }
    }
}

impl TenantSettings {
    /// Checks a document before it is saved; the error names the offending setting.
    pub fn validate(&self) -> Result<()> {
        for (field, policy) in &self.field_policy {
            if ContactField::parse(field).is_none() {
                return Err(StoreError::Invalid(format!(
                    "unknown field_policy field {field:?}"
                )));
            }
            if FieldPolicy::parse(policy).is_none() {
                return Err(StoreError::Invalid(format!(
                    "field_policy {field:?}: {policy:?} is not off, fill_blank or overwrite"
                )));
            }
        }
        validate_filters(&Filters::from(&self.filters))
            .map_err(|error| StoreError::Invalid(format!("filters: {error}")))?;
        let interval = self.schedule.interval_seconds;
        if !(MIN_SCHEDULE_INTERVAL_SECONDS..=MAX_SCHEDULE_INTERVAL_SECONDS).contains(&interval) {
            return Err(StoreError::Invalid(format!(
                "schedule.interval_seconds must be between {MIN_SCHEDULE_INTERVAL_SECONDS} and {MAX_SCHEDULE_INTERVAL_SECONDS}"
            )));
        }
        Ok(())
    }

    /// The planner's view of these settings with `filters` in place of the tenant's own.
    pub fn to_sync_settings(
        &self,
        filters: &FilterSettings,
        field_sync_enabled: bool,
    ) -> SyncSettings {
        SyncSettings {
            field_policy: self
                .field_policy
                .iter()
                .filter_map(|(field, policy)| {
                    Some((ContactField::parse(field)?, FieldPolicy::parse(policy)?))
                })
                .collect(),
            field_sync_enabled,
            mark_inactive_when_disabled: self.mark_inactive_when_disabled,
            filters: Filters::from(filters),
        }
    }
}

/// A PSA tenant's schedule as the worker reconciles Temporal Schedules from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantSchedule {
    pub tenant_id: Uuid,
    pub schedule: ScheduleSettings,
    pub discovery_before_sync: bool,
    /// A schedule only runs while the tenant is connected.
    pub connected: bool,
}

impl Store {
    /// Every PSA tenant with saved settings or a connection, with its schedule: what a worker
    /// reconciles its Temporal Schedules against when it starts.
    pub async fn tenant_schedules(&self) -> Result<Vec<TenantSchedule>> {
        let rows: Vec<(Uuid, Option<serde_json::Value>, Option<String>)> = sqlx::query_as(
            "SELECT t.tenant_id, s.document, c.status
             FROM psa_tenants t
             LEFT JOIN settings s ON s.tenant_id = t.tenant_id
             LEFT JOIN connections c ON c.tenant_id = t.tenant_id
             WHERE s.tenant_id IS NOT NULL OR c.tenant_id IS NOT NULL
             ORDER BY t.tenant_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(tenant_id, document, status)| {
                let settings: TenantSettings = match document {
                    None => TenantSettings::default(),
                    Some(document) => serde_json::from_value(document).map_err(|error| {
                        StoreError::Invalid(format!("stored settings: {error}"))
                    })?,
                };
                Ok(TenantSchedule {
                    tenant_id,
                    schedule: settings.schedule,
                    discovery_before_sync: settings.discovery_before_sync,
                    connected: status.as_deref() == Some("connected"),
                })
            })
            .collect()
    }

    /// The tenant's settings, or the defaults when none were saved.
    pub async fn load_settings(&self, tenant_id: Uuid) -> Result<TenantSettings> {
        let document: Option<serde_json::Value> =
            sqlx::query_scalar("SELECT document FROM settings WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await?;
        settings_from(document)
    }

    /// Validates and saves the tenant's settings document.
    pub async fn save_settings(
        &self,
        tenant_id: Uuid,
        settings: &TenantSettings,
        updated_by: &str,
    ) -> Result<()> {
        settings.validate()?;
        let document = serde_json::to_value(settings)
            .map_err(|error| StoreError::Invalid(error.to_string()))?;
        sqlx::query(
            "INSERT INTO settings (tenant_id, document, updated_by) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE SET document = excluded.document,
                 updated_by = excluded.updated_by, updated_at = now()",
        )
        .bind(tenant_id)
        .bind(document)
        .bind(updated_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn load_filter_override(
        &self,
        tenant_id: Uuid,
        managed_tenant_id: Uuid,
    ) -> Result<FilterOverride> {
        let filters: Option<serde_json::Value> = sqlx::query_scalar(
            "SELECT filters FROM managed_tenant_settings WHERE tenant_id = $1 AND managed_tenant_id = $2",
        )
        .bind(tenant_id)
        .bind(managed_tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        filter_override_from(filters)
    }

    /// Validates (merged over the tenant's filters) and saves a managed tenant's overrides.
    pub async fn save_filter_override(
        &self,
        tenant_id: Uuid,
        managed_tenant_id: Uuid,
        filter_override: &FilterOverride,
        updated_by: &str,
    ) -> Result<()> {
        let base = self.load_settings(tenant_id).await?;
        validate_filters(&Filters::from(&filter_override.apply(&base.filters)))
            .map_err(|error| StoreError::Invalid(format!("filters: {error}")))?;
        let filters = serde_json::to_value(filter_override)
            .map_err(|error| StoreError::Invalid(error.to_string()))?;
        sqlx::query(
            "INSERT INTO managed_tenant_settings (tenant_id, managed_tenant_id, filters, updated_by)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, managed_tenant_id) DO UPDATE SET filters = excluded.filters,
                 updated_by = excluded.updated_by, updated_at = now()",
        )
        .bind(tenant_id)
        .bind(managed_tenant_id)
        .bind(filters)
        .bind(updated_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What the planner needs for one managed tenant: the tenant's settings (defaults when
    /// none), its filter overrides merged in, and `field_sync_enabled` from the
    /// `entra-integration-field-sync` flag (off unless the flag is enabled for the tenant).
    pub async fn load_sync_settings(
        &self,
        tenant_id: Uuid,
        managed_tenant_id: Uuid,
    ) -> Result<SyncSettings> {
        Ok(self
            .load_sync_start(tenant_id, managed_tenant_id)
            .await?
            .settings)
    }

    /// What a managed tenant's sync starts from, in one statement: its sync settings (as
    /// [`Store::load_sync_settings`]) and its saved delta link with the time it was issued.
    pub async fn load_sync_start(
        &self,
        tenant_id: Uuid,
        managed_tenant_id: Uuid,
    ) -> Result<SyncStart> {
        self.load_sync_starts(tenant_id, &[managed_tenant_id])
            .await?
            .remove(&managed_tenant_id)
            .ok_or_else(|| StoreError::Invalid("no sync start was read".to_owned()))
    }

    /// [`Store::load_sync_start`] for several managed tenants in one statement (a group of
    /// small tenants one activity syncs), keyed by managed tenant id; the settings document is
    /// parsed once.
    pub async fn load_sync_starts(
        &self,
        tenant_id: Uuid,
        managed_tenant_ids: &[Uuid],
    ) -> Result<BTreeMap<Uuid, SyncStart>> {
        let rows: Vec<SyncStartRow> = sqlx::query_as(
            "SELECT k.managed_tenant_id,
                    (SELECT document FROM settings WHERE tenant_id = $1) AS document,
                    (SELECT filters FROM managed_tenant_settings f
                     WHERE f.tenant_id = $1 AND f.managed_tenant_id = k.managed_tenant_id)
                        AS filters,
                    coalesce((SELECT enabled FROM feature_flag_tenants
                              WHERE tenant_id = $1 AND flag = $3), false) AS field_sync_enabled,
                    d.delta_link, d.issued_at
             FROM unnest($2::uuid[]) AS k(managed_tenant_id)
             LEFT JOIN delta_state d
                    ON d.tenant_id = $1 AND d.managed_tenant_id = k.managed_tenant_id",
        )
        .bind(tenant_id)
        .bind(managed_tenant_ids)
        .bind(FIELD_SYNC_FLAG)
        .fetch_all(&self.pool)
        .await?;
        let mut settings: Option<TenantSettings> = None;
        let mut starts = BTreeMap::new();
        for row in rows {
            let tenant_settings = match &settings {
                Some(parsed) => parsed,
                None => settings.insert(settings_from(row.document)?),
            };
            let filter_override = filter_override_from(row.filters)?;
            starts.insert(
                row.managed_tenant_id,
                SyncStart {
                    settings: tenant_settings.to_sync_settings(
                        &filter_override.apply(&tenant_settings.filters),
                        row.field_sync_enabled,
                    ),
                    delta_link: row.delta_link.zip(row.issued_at),
                },
            );
        }
        Ok(starts)
    }
}

/// What a managed tenant's sync starts from ([`Store::load_sync_start`]).
#[derive(Clone, Debug)]
pub struct SyncStart {
    pub settings: SyncSettings,
    /// The saved delta link and when Microsoft issued it, if any.
    pub delta_link: Option<(String, DateTime<Utc>)>,
}

/// A stored settings document, or the defaults when there is none.
fn settings_from(document: Option<serde_json::Value>) -> Result<TenantSettings> {
    match document {
        None => Ok(TenantSettings::default()),
        Some(document) => serde_json::from_value(document)
            .map_err(|error| StoreError::Invalid(format!("stored settings: {error}"))),
    }
}

/// A stored filter override, or the empty one when there is none.
fn filter_override_from(filters: Option<serde_json::Value>) -> Result<FilterOverride> {
    match filters {
        None => Ok(FilterOverride::default()),
        Some(filters) => serde_json::from_value(filters)
            .map_err(|error| StoreError::Invalid(format!("stored filter override: {error}"))),
    }
}

#[derive(sqlx::FromRow)]
struct SyncStartRow {
    managed_tenant_id: Uuid,
    document: Option<serde_json::Value>,
    filters: Option<serde_json::Value>,
    field_sync_enabled: bool,
    delta_link: Option<String>,
    issued_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_saved_before_group_filters_still_load() {
        let settings: TenantSettings = serde_json::from_value(serde_json::json!({
            "filters": {"exclude_guests": true, "domain_deny": ["contoso.com"]}
        }))
        .expect("an older document");
        assert!(settings.filters.include_groups.is_empty());
        assert!(settings.filters.exclude_groups.is_empty());
        let filter_override: FilterOverride =
            serde_json::from_value(serde_json::json!({"licensed_only": true}))
                .expect("an older override");
        assert_eq!(filter_override.include_groups, None);
        assert_eq!(filter_override.exclude_groups, None);
    }
}

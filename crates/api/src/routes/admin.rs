//! Integration settings (field policy, filters, schedule), the review queue of ambiguous
//! matches, and the API audit log.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use entra_sync_store::flags::AMBIGUOUS_QUEUE_FLAG;
use entra_sync_store::psa::PsaUserType;
use entra_sync_store::review::ReviewItemRecord;
use entra_sync_store::settings::{FilterOverride, TenantSettings};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{ListResponse, PageQuery};
use crate::app::Caller;
use crate::auth::{AuditRead, Authorized, EntraRead, EntraUpdate};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(list_review_items))
        .routes(routes!(resolve_review_item))
        .routes(routes!(reopen_review_item))
        .routes(routes!(get_filter_override, put_filter_override))
        .routes(routes!(list_audit))
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FieldPolicyValue {
    /// The PSA value is authoritative (default).
    Off,
    FillBlank,
    Overwrite,
}

impl FieldPolicyValue {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FieldPolicyValue::Off => "off",
            FieldPolicyValue::FillBlank => "fill_blank",
            FieldPolicyValue::Overwrite => "overwrite",
        }
    }

    pub(crate) fn parse(value: &str) -> FieldPolicyValue {
        match value {
            "fill_blank" => FieldPolicyValue::FillBlank,
            "overwrite" => FieldPolicyValue::Overwrite,
            _ => FieldPolicyValue::Off,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FiltersDocument {
    pub(crate) exclude_guests: Option<bool>,
    pub(crate) exclude_disabled_on_create: Option<bool>,
    pub(crate) licensed_only: Option<bool>,
    pub(crate) domain_allow: Option<Vec<String>>,
    pub(crate) domain_deny: Option<Vec<String>>,
    /// Regular expressions matched against UPN, mail and display name.
    pub(crate) exclusion_patterns: Option<Vec<String>>,
    /// Security group object ids (GUIDs): when any are set, only their direct or nested
    /// member users become contacts. Skipped users count as `not_in_included_group`.
    pub(crate) include_groups: Option<Vec<String>>,
    /// Security group object ids (GUIDs) whose direct or nested member users never become
    /// contacts; exclusion wins over inclusion. Skipped users count as `in_excluded_group`.
    pub(crate) exclude_groups: Option<Vec<String>>,
}

/// Group ids are stored as Graph returns them, lowercase and without spaces; any other text is
/// kept as typed so validation can name it.
pub(crate) fn normalize_group_ids(groups: Vec<String>) -> Vec<String> {
    groups
        .into_iter()
        .map(|group| {
            let trimmed = group.trim();
            if entra_sync_domain::filter::is_group_id(trimmed) {
                trimmed.to_ascii_lowercase()
            } else {
                group
            }
        })
        .collect()
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleDocument {
    /// Recurring sync on or off (off by default).
    pub(crate) enabled: Option<bool>,
    /// 900 (15 minutes) to 2592000 (30 days); default 86400.
    #[serde(default, deserialize_with = "whole_seconds")]
    pub(crate) interval_seconds: Option<u64>,
}

/// A JSON number that is a whole count of seconds: `86400` and `86400.0` alike, as JSON Schema's
/// `integer` reads them; a fraction or a negative number is refused.
fn whole_seconds<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(whole) = number.as_u64() {
        return Ok(Some(whole));
    }
    match number.as_f64() {
        Some(value) if value >= 0.0 && value.fract() == 0.0 && value < u64::MAX as f64 => {
            Ok(Some(value as u64))
        }
        _ => Err(D::Error::custom(format!(
            "interval_seconds must be a whole, non-negative number of seconds, not {number}"
        ))),
    }
}

/// The settings document. On PUT, omitted keys take their defaults.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsBody {
    /// Field (`name`, `email`, `phone`, `mobile`, `job_title`) to policy.
    pub(crate) field_policy: Option<BTreeMap<String, FieldPolicyValue>>,
    #[serde(default, deserialize_with = "super::object_or_null")]
    pub(crate) filters: Option<FiltersDocument>,
    pub(crate) mark_inactive_when_disabled: Option<bool>,
    #[serde(default, deserialize_with = "super::object_or_null")]
    pub(crate) schedule: Option<ScheduleDocument>,
    pub(crate) discovery_before_sync: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SettingsView {
    pub(crate) field_policy: BTreeMap<String, FieldPolicyValue>,
    pub(crate) filters: FiltersDocument,
    pub(crate) mark_inactive_when_disabled: bool,
    pub(crate) schedule: ScheduleDocument,
    pub(crate) discovery_before_sync: bool,
    /// The `entra-integration-field-sync` flag: off means no field overwrites are applied
    /// whatever the field policy says.
    pub(crate) field_sync_enabled: bool,
}

pub(crate) fn settings_view(settings: TenantSettings, field_sync_enabled: bool) -> SettingsView {
    SettingsView {
        field_policy: settings
            .field_policy
            .iter()
            .map(|(field, policy)| (field.clone(), FieldPolicyValue::parse(policy)))
            .collect(),
        filters: FiltersDocument {
            exclude_guests: Some(settings.filters.exclude_guests),
            exclude_disabled_on_create: Some(settings.filters.exclude_disabled_on_create),
            licensed_only: Some(settings.filters.licensed_only),
            domain_allow: Some(settings.filters.domain_allow),
            domain_deny: Some(settings.filters.domain_deny),
            exclusion_patterns: Some(settings.filters.exclusion_patterns),
            include_groups: Some(settings.filters.include_groups),
            exclude_groups: Some(settings.filters.exclude_groups),
        },
        mark_inactive_when_disabled: settings.mark_inactive_when_disabled,
        schedule: ScheduleDocument {
            enabled: Some(settings.schedule.enabled),
            interval_seconds: Some(settings.schedule.interval_seconds),
        },
        discovery_before_sync: settings.discovery_before_sync,
        field_sync_enabled,
    }
}

/// Field policy, filters and schedule.
#[utoipa::path(get, path = "/api/v1/integrations/entra/settings", tag = "entra",
    responses((status = 200, body = SettingsView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_settings(
    caller: Authorized<EntraRead>,
    State(state): State<AppState>,
) -> Result<Json<SettingsView>, ApiError> {
    crate::app::admin::get_settings(&state, &Caller::from(caller))
        .await
        .map(Json)
}

/// Replaces the settings (validated: known fields, compiling patterns, domains, interval
/// 15 minutes to 30 days) and updates the recurring schedule.
#[utoipa::path(put, path = "/api/v1/integrations/entra/settings", tag = "entra",
    request_body = SettingsBody,
    responses((status = 200, body = SettingsView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn put_settings(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SettingsBody>,
) -> Result<Json<SettingsView>, ApiError> {
    crate::app::admin::put_settings(&state, &Caller::from(caller), body)
        .await
        .map(Json)
}

pub(crate) async fn require_queue(state: &AppState, tenant_id: Uuid) -> Result<(), ApiError> {
    if state
        .store
        .flag_enabled(AMBIGUOUS_QUEUE_FLAG, tenant_id)
        .await?
    {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "feature_disabled",
            "the review queue is not enabled for this tenant",
        ))
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReviewStatusFilter {
    Open,
    Resolved,
    Dismissed,
}

/// Why an item was queued (SPEC §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReviewReasonFilter {
    MultipleCandidates,
    CandidateInOtherClient,
    CandidateLinkedToOtherUser,
}

impl ReviewReasonFilter {
    pub(crate) const ALL: [ReviewReasonFilter; 3] = [
        ReviewReasonFilter::MultipleCandidates,
        ReviewReasonFilter::CandidateInOtherClient,
        ReviewReasonFilter::CandidateLinkedToOtherUser,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReviewReasonFilter::MultipleCandidates => "multiple_candidates",
            ReviewReasonFilter::CandidateInOtherClient => "candidate_in_other_client",
            ReviewReasonFilter::CandidateLinkedToOtherUser => "candidate_linked_to_other_user",
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReviewQuery {
    #[param(inline)]
    pub(crate) status: Option<ReviewStatusFilter>,
    pub(crate) client_id: Option<Uuid>,
    /// Only items queued for this reason.
    #[param(inline)]
    #[serde(default)]
    pub(crate) reason: Option<ReviewReasonFilter>,
    pub(crate) managed_tenant_id: Option<Uuid>,
    pub(crate) limit: Option<u32>,
    pub(crate) cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReviewCandidateView {
    pub(crate) contact_id: Option<Uuid>,
    pub(crate) client_id: Option<Uuid>,
    pub(crate) full_name: Option<String>,
    pub(crate) email: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReviewItemView {
    pub(crate) item_id: Uuid,
    /// `open`, `resolved` or `dismissed`.
    pub(crate) status: String,
    /// `multiple_candidates`, `candidate_in_other_client` or `candidate_linked_to_other_user`.
    pub(crate) reason: String,
    pub(crate) managed_tenant_id: Uuid,
    pub(crate) client_id: Option<Uuid>,
    pub(crate) object_id: String,
    pub(crate) display_name: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) candidates: Vec<ReviewCandidateView>,
    #[schema(value_type = Option<Object>)]
    pub(crate) resolution: Option<serde_json::Value>,
    pub(crate) note: Option<String>,
    pub(crate) created_at: chrono::DateTime<chrono::Utc>,
    pub(crate) updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<ReviewItemRecord> for ReviewItemView {
    fn from(record: ReviewItemRecord) -> Self {
        let text = |value: &serde_json::Value, key: &str| {
            value.get(key).and_then(|v| v.as_str()).map(str::to_owned)
        };
        let id = |value: &serde_json::Value, key: &str| {
            value
                .get(key)
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse().ok())
        };
        let candidates = record
            .candidates
            .as_array()
            .map(|candidates| {
                candidates
                    .iter()
                    .map(|candidate| ReviewCandidateView {
                        contact_id: id(candidate, "contact_id"),
                        client_id: id(candidate, "client_id"),
                        full_name: text(candidate, "full_name"),
                        email: text(candidate, "email"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        ReviewItemView {
            item_id: record.item_id,
            status: record.status.as_str().to_owned(),
            reason: record.reason,
            managed_tenant_id: record.managed_tenant_id,
            client_id: record.client_id,
            object_id: record.object_id,
            display_name: record.display_name,
            email: record.email,
            candidates,
            resolution: record.resolution,
            note: record.note,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// Review items of ambiguous matches, newest first.
#[utoipa::path(get, path = "/api/v1/integrations/entra/reconciliation-queue", tag = "review",
    params(ReviewQuery),
    responses((status = 200, body = ListResponse<ReviewItemView>),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_review_items(
    caller: Authorized<EntraRead>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ReviewQuery>,
) -> Result<Json<ListResponse<ReviewItemView>>, ApiError> {
    crate::app::admin::list_review_items(&state, &Caller::from(caller), query)
        .await
        .map(Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ResolveBody {
    /// Link the user to this contact now; a contact of another client needs
    /// `allow_other_client: true`.
    LinkExisting {
        contact_id: Uuid,
        #[serde(default)]
        allow_other_client: bool,
    },
    /// The next sync creates a new contact.
    CreateNew {},
    /// Leave the user alone until the item is re-opened.
    Dismiss { note: Option<String> },
}

/// Resolves a review item; the next sync honours the resolution.
#[utoipa::path(post,
    path = "/api/v1/integrations/entra/reconciliation-queue/{item_id}/resolve", tag = "review",
    params(("item_id" = Uuid, Path, description = "review item")),
    request_body = ResolveBody,
    responses((status = 200, body = ReviewItemView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn resolve_review_item(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
    ApiPath(item_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Json<ReviewItemView>, ApiError> {
    crate::app::admin::resolve_review_item(&state, &Caller::from(caller), item_id, body)
        .await
        .map(Json)
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditEntryView {
    pub(crate) audit_id: Uuid,
    /// `user:<id>` or `platform`.
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) target: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub(crate) detail: Option<serde_json::Value>,
    pub(crate) at: chrono::DateTime<chrono::Utc>,
}

/// Every change made through the API in the caller's tenant (who, what, when), newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(PageQuery),
    responses((status = 200, body = ListResponse<AuditEntryView>),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
async fn list_audit(
    caller: Authorized<AuditRead>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ListResponse<AuditEntryView>>, ApiError> {
    if caller.user.user_type == PsaUserType::Client {
        return Err(ApiError::forbidden(
            "client-portal users cannot read the audit log",
        ));
    }
    let page = state
        .store
        .list_api_audit(caller.user.tenant_id, &query.page_request()?)
        .await?;
    Ok(Json(ListResponse::from_page(page, |entry| {
        AuditEntryView {
            audit_id: entry.audit_id,
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
            detail: entry.detail,
            at: entry.at,
        }
    })))
}

/// Re-opens a dismissed review item: the next sync considers the user again.
#[utoipa::path(post,
    path = "/api/v1/integrations/entra/reconciliation-queue/{item_id}/reopen", tag = "review",
    params(("item_id" = Uuid, Path, description = "review item")),
    responses((status = 200, body = ReviewItemView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn reopen_review_item(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
    ApiPath(item_id): ApiPath<Uuid>,
) -> Result<Json<ReviewItemView>, ApiError> {
    crate::app::admin::reopen_review_item(&state, &Caller::from(caller), item_id)
        .await
        .map(Json)
}

pub(crate) fn filter_override_view(filter_override: FilterOverride) -> FiltersDocument {
    FiltersDocument {
        exclude_guests: filter_override.exclude_guests,
        exclude_disabled_on_create: filter_override.exclude_disabled_on_create,
        licensed_only: filter_override.licensed_only,
        domain_allow: filter_override.domain_allow,
        domain_deny: filter_override.domain_deny,
        exclusion_patterns: filter_override.exclusion_patterns,
        include_groups: filter_override.include_groups,
        exclude_groups: filter_override.exclude_groups,
    }
}

/// A managed tenant's filter overrides: each key set replaces the PSA tenant's filter.
#[utoipa::path(get,
    path = "/api/v1/integrations/entra/managed-tenants/{managed_tenant_id}/filters", tag = "entra",
    params(("managed_tenant_id" = Uuid, Path, description = "managed tenant")),
    responses((status = 200, body = FiltersDocument), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn get_filter_override(
    caller: Authorized<EntraRead>,
    State(state): State<AppState>,
    ApiPath(managed_tenant_id): ApiPath<Uuid>,
) -> Result<Json<FiltersDocument>, ApiError> {
    crate::app::admin::get_filter_override(&state, &Caller::from(caller), managed_tenant_id)
        .await
        .map(Json)
}

/// Replaces a managed tenant's filter overrides (validated merged over the tenant's filters);
/// omitted keys follow the PSA tenant's settings.
#[utoipa::path(put,
    path = "/api/v1/integrations/entra/managed-tenants/{managed_tenant_id}/filters", tag = "entra",
    params(("managed_tenant_id" = Uuid, Path, description = "managed tenant")),
    request_body = FiltersDocument,
    responses((status = 200, body = FiltersDocument), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_filter_override(
    caller: Authorized<EntraUpdate>,
    State(state): State<AppState>,
    ApiPath(managed_tenant_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<FiltersDocument>,
) -> Result<Json<FiltersDocument>, ApiError> {
    crate::app::admin::put_filter_override(&state, &Caller::from(caller), managed_tenant_id, body)
        .await
        .map(Json)
}

#[cfg(test)]
mod schedule_tests {
    use super::ScheduleDocument;

    fn interval(body: &str) -> Result<Option<u64>, String> {
        serde_json::from_str::<ScheduleDocument>(body)
            .map(|document| document.interval_seconds)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn an_interval_is_any_whole_number_of_seconds() {
        assert_eq!(interval(r#"{"interval_seconds": 86400}"#), Ok(Some(86400)));
        assert_eq!(
            interval(r#"{"interval_seconds": 47828.0}"#),
            Ok(Some(47828))
        );
        assert_eq!(interval(r#"{"interval_seconds": null}"#), Ok(None));
        assert_eq!(interval(r#"{}"#), Ok(None));
        for refused in ["1.5", "-1", "-900.0", "1e300", "\"900\""] {
            let body = format!(r#"{{"interval_seconds": {refused}}}"#);
            assert!(interval(&body).is_err(), "{refused} was accepted");
        }
    }
}

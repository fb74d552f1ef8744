//! Settings (field policy, filters, schedule) and the review queue.

use entra_sync_store::error::StoreError;
use entra_sync_store::flags::FIELD_SYNC_FLAG;
use entra_sync_store::review::{ReviewFilter, ReviewResolution, ReviewStatus};
use entra_sync_store::settings::{FilterOverride, TenantSettings};
use uuid::Uuid;

use super::Caller;
use crate::error::ApiError;
use crate::routes::admin::{
    normalize_group_ids, require_queue, settings_view, FiltersDocument, ResolveBody,
    ReviewItemView, ReviewQuery, ReviewStatusFilter, SettingsBody, SettingsView,
};
use crate::routes::{audit, check_text, ListResponse, PageQuery};
use crate::AppState;

/// Field policy, filters and schedule.
pub(crate) async fn get_settings(
    state: &AppState,
    caller: &Caller,
) -> Result<SettingsView, ApiError> {
    let tenant_id = caller.user.tenant_id;
    let settings = state.store.load_settings(tenant_id).await?;
    let field_sync = state.store.flag_enabled(FIELD_SYNC_FLAG, tenant_id).await?;
    Ok(settings_view(settings, field_sync))
}

/// Replaces the settings (validated) and updates the recurring schedule.
pub(crate) async fn put_settings(
    state: &AppState,
    caller: &Caller,
    body: SettingsBody,
) -> Result<SettingsView, ApiError> {
    let tenant_id = caller.user.tenant_id;
    let mut settings = TenantSettings::default();
    if let Some(field_policy) = body.field_policy {
        for (field, policy) in field_policy {
            check_text("field_policy", &field, 64)?;
            settings
                .field_policy
                .insert(field, policy.as_str().to_owned());
        }
    }
    if let Some(filters) = body.filters {
        let target = &mut settings.filters;
        if let Some(value) = filters.exclude_guests {
            target.exclude_guests = value;
        }
        if let Some(value) = filters.exclude_disabled_on_create {
            target.exclude_disabled_on_create = value;
        }
        if let Some(value) = filters.licensed_only {
            target.licensed_only = value;
        }
        for (name, list) in [
            ("filters.domain_allow", &filters.domain_allow),
            ("filters.domain_deny", &filters.domain_deny),
            ("filters.exclusion_patterns", &filters.exclusion_patterns),
            ("filters.include_groups", &filters.include_groups),
            ("filters.exclude_groups", &filters.exclude_groups),
        ] {
            for entry in list.iter().flatten() {
                check_text(name, entry, 1024)?;
            }
        }
        if let Some(value) = filters.domain_allow {
            target.domain_allow = value;
        }
        if let Some(value) = filters.domain_deny {
            target.domain_deny = value;
        }
        if let Some(value) = filters.exclusion_patterns {
            target.exclusion_patterns = value;
        }
        if let Some(value) = filters.include_groups {
            target.include_groups = normalize_group_ids(value);
        }
        if let Some(value) = filters.exclude_groups {
            target.exclude_groups = normalize_group_ids(value);
        }
    }
    if let Some(value) = body.mark_inactive_when_disabled {
        settings.mark_inactive_when_disabled = value;
    }
    if let Some(schedule) = body.schedule {
        if let Some(enabled) = schedule.enabled {
            settings.schedule.enabled = enabled;
        }
        if let Some(interval_seconds) = schedule.interval_seconds {
            settings.schedule.interval_seconds = interval_seconds;
        }
    }
    if let Some(value) = body.discovery_before_sync {
        settings.discovery_before_sync = value;
    }
    settings.validate().map_err(|error| match error {
        StoreError::Invalid(message) => ApiError::unprocessable("invalid_settings", message),
        other => ApiError::from(other),
    })?;
    state
        .store
        .save_settings(tenant_id, &settings, &caller.actor())
        .await
        .map_err(|error| match error {
            StoreError::Invalid(message) => ApiError::unprocessable("invalid_settings", message),
            other => ApiError::from(other),
        })?;
    crate::routes::refresh_schedule(state, tenant_id).await;
    audit(
        state,
        tenant_id,
        &caller.actor(),
        "entra.settings.update",
        Some("settings".to_owned()),
        serde_json::to_value(&settings).unwrap_or_default(),
    )
    .await?;
    let field_sync = state.store.flag_enabled(FIELD_SYNC_FLAG, tenant_id).await?;
    Ok(settings_view(settings, field_sync))
}

/// Review items of ambiguous matches, newest first.
pub(crate) async fn list_review_items(
    state: &AppState,
    caller: &Caller,
    query: ReviewQuery,
) -> Result<ListResponse<ReviewItemView>, ApiError> {
    let tenant_id = caller.user.tenant_id;
    require_queue(state, tenant_id).await?;
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .page_request()?;
    let filter = ReviewFilter {
        status: query.status.map(|status| match status {
            ReviewStatusFilter::Open => ReviewStatus::Open,
            ReviewStatusFilter::Resolved => ReviewStatus::Resolved,
            ReviewStatusFilter::Dismissed => ReviewStatus::Dismissed,
        }),
        client_id: query.client_id,
        managed_tenant_id: query.managed_tenant_id,
        reason: query.reason.map(|reason| reason.as_str().to_owned()),
    };
    let items = state
        .store
        .list_review_items(tenant_id, &filter, &page)
        .await?;
    Ok(ListResponse::from_page(items, ReviewItemView::from))
}

/// Resolves a review item; the next sync honours the resolution.
pub(crate) async fn resolve_review_item(
    state: &AppState,
    caller: &Caller,
    item_id: Uuid,
    body: ResolveBody,
) -> Result<ReviewItemView, ApiError> {
    let tenant_id = caller.user.tenant_id;
    require_queue(state, tenant_id).await?;
    let resolution = match body {
        ResolveBody::LinkExisting {
            contact_id,
            allow_other_client,
        } => ReviewResolution::LinkExisting {
            contact_id,
            allow_other_client,
        },
        ResolveBody::CreateNew {} => ReviewResolution::CreateNew,
        ResolveBody::Dismiss { note } => {
            if let Some(note) = &note {
                check_text("note", note, 2000)?;
            }
            ReviewResolution::Dismiss { note }
        }
    };
    let record = state
        .store
        .resolve_review_item(tenant_id, item_id, &resolution, &caller.actor())
        .await?;
    let (action, detail) = match &resolution {
        ReviewResolution::LinkExisting {
            contact_id,
            allow_other_client,
        } => (
            "link_existing",
            serde_json::json!({"contact_id": contact_id, "allow_other_client": allow_other_client}),
        ),
        ReviewResolution::CreateNew => ("create_new", serde_json::json!({})),
        ReviewResolution::Dismiss { .. } => ("dismiss", serde_json::json!({})),
    };
    audit(
        state,
        tenant_id,
        &caller.actor(),
        &format!("entra.review.{action}"),
        Some(format!("review_item:{item_id}")),
        detail,
    )
    .await?;
    Ok(record.into())
}

/// Re-opens a dismissed review item.
pub(crate) async fn reopen_review_item(
    state: &AppState,
    caller: &Caller,
    item_id: Uuid,
) -> Result<ReviewItemView, ApiError> {
    let tenant_id = caller.user.tenant_id;
    require_queue(state, tenant_id).await?;
    let record = state
        .store
        .reopen_review_item(tenant_id, item_id)
        .await
        .map_err(|error| match error {
            StoreError::Conflict(code) if code == "review_item_not_dismissed" => {
                ApiError::conflict(
                    "review_item_not_dismissed",
                    "only a dismissed item can be re-opened (or the user already has an open item)",
                )
            }
            other => ApiError::from(other),
        })?;
    audit(
        state,
        tenant_id,
        &caller.actor(),
        "entra.review.reopen",
        Some(format!("review_item:{item_id}")),
        serde_json::json!({}),
    )
    .await?;
    Ok(record.into())
}

/// A managed tenant's filter overrides: each key set replaces the PSA tenant's filter.
pub(crate) async fn get_filter_override(
    state: &AppState,
    caller: &Caller,
    managed_tenant_id: Uuid,
) -> Result<FiltersDocument, ApiError> {
    let tenant_id = caller.user.tenant_id;
    state
        .store
        .get_managed_tenant(tenant_id, managed_tenant_id)
        .await?;
    let filter_override = state
        .store
        .load_filter_override(tenant_id, managed_tenant_id)
        .await?;
    Ok(crate::routes::admin::filter_override_view(filter_override))
}

/// Replaces a managed tenant's filter overrides (validated merged over the tenant's filters).
pub(crate) async fn put_filter_override(
    state: &AppState,
    caller: &Caller,
    managed_tenant_id: Uuid,
    body: FiltersDocument,
) -> Result<FiltersDocument, ApiError> {
    let tenant_id = caller.user.tenant_id;
    state
        .store
        .get_managed_tenant(tenant_id, managed_tenant_id)
        .await?;
    for (name, list) in [
        ("domain_allow", &body.domain_allow),
        ("domain_deny", &body.domain_deny),
        ("exclusion_patterns", &body.exclusion_patterns),
        ("include_groups", &body.include_groups),
        ("exclude_groups", &body.exclude_groups),
    ] {
        for entry in list.iter().flatten() {
            check_text(name, entry, 1024)?;
        }
    }
    let filter_override = FilterOverride {
        exclude_guests: body.exclude_guests,
        exclude_disabled_on_create: body.exclude_disabled_on_create,
        licensed_only: body.licensed_only,
        domain_allow: body.domain_allow,
        domain_deny: body.domain_deny,
        exclusion_patterns: body.exclusion_patterns,
        include_groups: body.include_groups.map(normalize_group_ids),
        exclude_groups: body.exclude_groups.map(normalize_group_ids),
    };
    state
        .store
        .save_filter_override(
            tenant_id,
            managed_tenant_id,
            &filter_override,
            &caller.actor(),
        )
        .await
        .map_err(|error| match error {
            StoreError::Invalid(message) => ApiError::unprocessable("invalid_settings", message),
            other => ApiError::from(other),
        })?;
    audit(
        state,
        tenant_id,
        &caller.actor(),
        "entra.managed_tenant.filters.update",
        Some(format!("managed_tenant:{managed_tenant_id}")),
        serde_json::to_value(&filter_override).unwrap_or_default(),
    )
    .await?;
    Ok(crate::routes::admin::filter_override_view(filter_override))
}

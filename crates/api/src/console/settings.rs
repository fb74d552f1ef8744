//! Settings: field policy, filters, schedule. A rejected value is shown beside its field;
//! saving applies the recurring schedule at once (through the application layer).

use std::collections::BTreeMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use minijinja::{context, Value};
use uuid::Uuid;

use super::{field, render, see_other, Console, PageResult};
use crate::auth::{EntraRead, EntraUpdate};
use crate::routes::admin::{FieldPolicyValue, FiltersDocument, ScheduleDocument, SettingsBody};
use crate::AppState;

const FIELDS: &[(&str, &str)] = &[
    ("name", "Name"),
    ("email", "Email"),
    ("phone", "Phone"),
    ("mobile", "Mobile"),
    ("job_title", "Job title"),
];

fn lines(form: &[(String, String)], name: &str) -> Vec<String> {
    field(form, name)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

fn checked(form: &[(String, String)], name: &str) -> bool {
    field(form, name) == Some("on")
}

/// Which form field an application-layer validation message is about.
fn field_of(message: &str) -> &'static str {
    let lower = message.to_lowercase();
    if lower.contains("interval") {
        "interval_minutes"
    } else if lower.contains("pattern") || lower.contains("regex") {
        "exclusion_patterns"
    } else if lower.contains("deny") {
        "domain_deny"
    } else if lower.contains("allow") || lower.contains("domain") {
        "domain_allow"
    } else if lower.contains("exclude_groups") {
        "exclude_groups"
    } else if lower.contains("group") {
        "include_groups"
    } else if lower.contains("field_policy") {
        "field_policy"
    } else {
        "form"
    }
}

async fn show(
    console: &Console,
    state: &AppState,
    status: StatusCode,
    values: Value,
    errors: BTreeMap<&'static str, String>,
    saved: bool,
) -> PageResult {
    let layout = console.layout(state, "settings").await?;
    let caller = console.caller::<EntraRead>(state).await?;
    let (tenant_names, _) = crate::app::overview::names(state, &caller).await?;
    let tenants: Vec<Value> = tenant_names
        .iter()
        .map(|(managed_tenant_id, name)| context! { managed_tenant_id, name })
        .collect();
    let fields: Vec<Value> = FIELDS
        .iter()
        .map(|(key, label)| context! { key, label })
        .collect();
    Ok(render(
        status,
        "settings.html",
        context! { settings => values, errors, saved, fields, tenants, ..layout },
    ))
}

pub(crate) async fn page(
    console: Console,
    State(state): State<AppState>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> PageResult {
    console.require_entra(&state).await?;
    let caller = console.caller::<EntraRead>(&state).await?;
    let settings = crate::app::admin::get_settings(&state, &caller).await?;
    show(
        &console,
        &state,
        StatusCode::OK,
        Value::from_serialize(&settings),
        BTreeMap::new(),
        query.contains_key("saved"),
    )
    .await
}

pub(crate) async fn save(
    console: Console,
    headers: HeaderMap,
    State(state): State<AppState>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    console.verify(&form)?;
    let caller = console.caller::<EntraUpdate>(&state).await?;
    let mut errors = BTreeMap::new();
    let field_policy: BTreeMap<String, FieldPolicyValue> = FIELDS
        .iter()
        .map(|(key, _)| {
            let value = field(&form, &format!("field_policy.{key}")).unwrap_or("off");
            ((*key).to_owned(), FieldPolicyValue::parse(value))
        })
        .collect();
    let interval_text = field(&form, "interval_minutes")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let interval_seconds = match interval_text.parse::<u64>() {
        Ok(minutes) => Some(minutes.saturating_mul(60)),
        Err(_) => {
            errors.insert(
                "interval_minutes",
                "Enter a whole number of minutes, from 15 to 43200 (30 days).".to_owned(),
            );
            None
        }
    };
    let body = SettingsBody {
        field_policy: Some(field_policy),
        filters: Some(FiltersDocument {
            exclude_guests: Some(checked(&form, "exclude_guests")),
            exclude_disabled_on_create: Some(checked(&form, "exclude_disabled_on_create")),
            licensed_only: Some(checked(&form, "licensed_only")),
            domain_allow: Some(lines(&form, "domain_allow")),
            domain_deny: Some(lines(&form, "domain_deny")),
            exclusion_patterns: Some(lines(&form, "exclusion_patterns")),
            include_groups: Some(lines(&form, "include_groups")),
            exclude_groups: Some(lines(&form, "exclude_groups")),
        }),
        mark_inactive_when_disabled: Some(checked(&form, "mark_inactive_when_disabled")),
        schedule: Some(ScheduleDocument {
            enabled: Some(checked(&form, "schedule_enabled")),
            interval_seconds,
        }),
        discovery_before_sync: Some(checked(&form, "discovery_before_sync")),
    };
    // What the form showed, so a rejected form keeps the admin's input.
    let echoed = serde_json::json!({
        "field_policy": body.field_policy,
        "filters": body.filters,
        "mark_inactive_when_disabled": body.mark_inactive_when_disabled,
        "schedule": {"enabled": checked(&form, "schedule_enabled"), "interval_text": interval_text},
        "discovery_before_sync": body.discovery_before_sync,
    });
    if !errors.is_empty() {
        return show(
            &console,
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            Value::from_serialize(&echoed),
            errors,
            false,
        )
        .await;
    }
    match crate::app::admin::put_settings(&state, &caller, body).await {
        Ok(_) => Ok(see_other(&headers, "/console/settings?saved=1")),
        Err(error) if error.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let message = if field_of(&error.message) == "interval_minutes" {
                "Choose an interval from 15 minutes to 30 days (43200 minutes).".to_owned()
            } else {
                error.message.clone()
            };
            errors.insert(field_of(&error.message), message);
            show(
                &console,
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                Value::from_serialize(&echoed),
                errors,
                false,
            )
            .await
        }
        Err(error) => Err(error.into()),
    }
}

/// `Follow` (None), `on` or `off` of a per-tenant yes/no override.
fn tri(form: &[(String, String)], name: &str) -> Option<bool> {
    match field(form, name) {
        Some("on") => Some(true),
        Some("off") => Some(false),
        _ => None,
    }
}

/// A per-tenant list override: None (follow the workspace) when left empty.
fn override_lines(form: &[(String, String)], name: &str) -> Option<Vec<String>> {
    Some(lines(form, name)).filter(|lines| !lines.is_empty())
}

async fn show_override(
    console: &Console,
    state: &AppState,
    status: StatusCode,
    managed_tenant_id: Uuid,
    values: Value,
    error: Option<String>,
    saved: bool,
) -> PageResult {
    let layout = console.layout(state, "settings").await?;
    let caller = console.caller::<EntraRead>(state).await?;
    let (tenant_names, _) = crate::app::overview::names(state, &caller).await?;
    let name = tenant_names
        .get(&managed_tenant_id.to_string())
        .cloned()
        .unwrap_or_else(|| managed_tenant_id.to_string());
    Ok(render(
        status,
        "tenant_filters.html",
        context! {
            filters => values,
            error,
            saved,
            tenant_name => name,
            managed_tenant_id => managed_tenant_id.to_string(),
            ..layout
        },
    ))
}

pub(crate) async fn tenant_page(
    console: Console,
    State(state): State<AppState>,
    Path(managed_tenant_id): Path<Uuid>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> PageResult {
    console.require_entra(&state).await?;
    let caller = console.caller::<EntraRead>(&state).await?;
    let filters =
        crate::app::admin::get_filter_override(&state, &caller, managed_tenant_id).await?;
    show_override(
        &console,
        &state,
        StatusCode::OK,
        managed_tenant_id,
        Value::from_serialize(&filters),
        None,
        query.contains_key("saved"),
    )
    .await
}

pub(crate) async fn tenant_save(
    console: Console,
    headers: HeaderMap,
    State(state): State<AppState>,
    Path(managed_tenant_id): Path<Uuid>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    console.verify(&form)?;
    let caller = console.caller::<EntraUpdate>(&state).await?;
    let body = FiltersDocument {
        exclude_guests: tri(&form, "exclude_guests"),
        exclude_disabled_on_create: tri(&form, "exclude_disabled_on_create"),
        licensed_only: tri(&form, "licensed_only"),
        domain_allow: override_lines(&form, "domain_allow"),
        domain_deny: override_lines(&form, "domain_deny"),
        exclusion_patterns: override_lines(&form, "exclusion_patterns"),
        include_groups: override_lines(&form, "include_groups"),
        exclude_groups: override_lines(&form, "exclude_groups"),
    };
    let echoed = Value::from_serialize(&body);
    match crate::app::admin::put_filter_override(&state, &caller, managed_tenant_id, body).await {
        Ok(_) => Ok(see_other(
            &headers,
            &format!("/console/settings/tenants/{managed_tenant_id}?saved=1"),
        )),
        Err(error) if error.status == StatusCode::UNPROCESSABLE_ENTITY => {
            show_override(
                &console,
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                managed_tenant_id,
                echoed,
                Some(error.message),
                false,
            )
            .await
        }
        Err(error) => Err(error.into()),
    }
}

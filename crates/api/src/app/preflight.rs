//! The preflight: a dry run that reads users and plans exactly as a sync would (through the
//! same connection layer, page loop and group filters) and writes nothing; the planner's
//! statements run in a transaction that is rolled back.

use entra_sync_connection::{load_group_members, ConnectionKind, DirectoryError, PageLoop};
use entra_sync_store::reconcile::PageScope;
use entra_sync_store::runs::TallyCounts;
use uuid::Uuid;

use super::Caller;
use crate::error::ApiError;
use crate::routes::runs::{
    CountsView, InactivationPreviewView, PreflightTenantView, PreflightView, RunErrorView, SyncBody,
};
use crate::AppState;

/// Pages read per managed tenant by a preflight (up to about 20,000 users at Graph's 999 per
/// page): enough to show what a sync would do, absent users included, for most tenants, while
/// the request timeout below bounds the whole answer.
const PREFLIGHT_MAX_PAGES: usize = 20;
/// Managed tenants a preflight looks at.
const PREFLIGHT_MAX_TENANTS: usize = 25;
/// The whole preflight answers within this (tenants not reached are counted as not checked).
const PREFLIGHT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a sync of `body`'s scope would do now.
pub(crate) async fn preflight(
    state: &AppState,
    caller: &Caller,
    body: &SyncBody,
) -> Result<PreflightView, ApiError> {
    let tenant_id = caller.user.tenant_id;
    let scope = super::runs::sync_scope(state, tenant_id, body).await?;
    let summary = state.store.connection_summary(tenant_id).await?;
    if !summary.has_credentials {
        return Err(ApiError::conflict(
            "not_connected",
            "connect to Microsoft or CIPP first",
        ));
    }
    let connected = state
        .connections
        .for_tenant(&state.store, tenant_id)
        .await
        .map_err(|error| {
            let provider = if summary.kind.as_deref() == Some("direct") {
                "Microsoft"
            } else {
                "CIPP"
            };
            ApiError::provider(provider, &error)
        })?;
    let prefer_delta = connected.kind == ConnectionKind::Direct;
    let targets = state.store.sync_targets(tenant_id, scope).await?;
    let mut tenants_not_checked = targets.len().saturating_sub(PREFLIGHT_MAX_TENANTS);
    // A run id that names no run: the dry run's statements need one, and it is rolled back.
    let preflight_run_id = Uuid::now_v7();
    let deadline = tokio::time::Instant::now() + PREFLIGHT_TIMEOUT;
    let mut totals = TallyCounts::default();
    let mut tenants = Vec::new();
    let error_of = |failure: &DirectoryError| {
        let record = entra_sync_connection::ErrorRecord::from_directory(failure);
        RunErrorView {
            class: Some(record.class.as_str().to_owned()),
            code: Some(record.code),
            message: Some(record.message),
            remediation: Some(record.remediation),
        }
    };
    let chosen: Vec<_> = targets.into_iter().take(PREFLIGHT_MAX_TENANTS).collect();
    let chosen_count = chosen.len();
    for (index, target) in chosen.into_iter().enumerate() {
        if tokio::time::Instant::now() >= deadline {
            tenants_not_checked += chosen_count - index;
            break;
        }
        let settings = state
            .store
            .load_sync_settings(tenant_id, target.managed_tenant_id)
            .await?;
        let mut counts = TallyCounts::default();
        let mut error = None;
        let mut seen_object_ids: Vec<String> = Vec::new();
        // A full enumeration (no delta link), so absent users can be shown.
        let mut pages = PageLoop::new(target.entra_tenant_id.clone(), prefer_delta, None, None);
        let source = connected.source.as_ref();
        let groups = settings.filters.named_groups();
        let read = async {
            let members = load_group_members(source, &target.entra_tenant_id, &groups).await?;
            let mut read_pages = Vec::new();
            for _ in 0..PREFLIGHT_MAX_PAGES {
                let mut fetched = pages.next_page(source).await?;
                members.annotate(&mut fetched.page.entries);
                let last = fetched.page.is_last();
                read_pages.push(fetched.page);
                if last {
                    break;
                }
            }
            Ok::<_, DirectoryError>(read_pages)
        };
        let read = match tokio::time::timeout_at(deadline, read).await {
            Ok(read) => read,
            Err(_) => Err(DirectoryError::Transient {
                code: "preflight_timeout".to_owned(),
                message: "the directory did not answer within the preflight's time".to_owned(),
                retry_after: None,
            }),
        };
        match read {
            Ok(read_pages) => {
                for page in read_pages {
                    for entry in &page.entries {
                        if let entra_sync_domain::model::DirectoryEntry::Present(user) = entry {
                            seen_object_ids.push(user.object_id.clone());
                        }
                    }
                    let outcome = state
                        .store
                        .reconcile_page(
                            &PageScope {
                                tenant_id,
                                run_id: preflight_run_id,
                                managed_tenant_id: target.managed_tenant_id,
                                mapped_client_id: target.client_id,
                                next_cursor: None,
                            },
                            &page.entries,
                            &settings,
                            true,
                        )
                        .await?;
                    counts.add(&TallyCounts::from(&outcome.tally));
                }
            }
            Err(failure) => error = Some(error_of(&failure)),
        }
        let complete = error.is_none() && pages.is_complete_enumeration();
        let inactivations = if error.is_none() {
            let absent = if complete {
                Some(
                    state
                        .store
                        .preview_absent_inactivations(
                            tenant_id,
                            target.managed_tenant_id,
                            &seen_object_ids,
                        )
                        .await?,
                )
            } else {
                None
            };
            let linked = match absent {
                Some(preview) => preview.linked,
                None => {
                    state
                        .store
                        .preview_absent_inactivations(tenant_id, target.managed_tenant_id, &[])
                        .await?
                        .linked
                }
            };
            let absent_users = absent.map(|preview| preview.would_inactivate);
            let would_inactivate = counts.inactivated + absent_users.unwrap_or_default();
            Some(InactivationPreviewView {
                would_inactivate,
                absent_users,
                linked_contacts: linked,
                guard_would_hold: entra_sync_domain::plan::inactivation_guard_trips(
                    usize::try_from(would_inactivate).unwrap_or(usize::MAX),
                    usize::try_from(linked).unwrap_or(usize::MAX),
                ),
            })
        } else {
            None
        };
        totals.add(&counts);
        tenants.push(PreflightTenantView {
            managed_tenant_id: target.managed_tenant_id,
            entra_tenant_id: target.entra_tenant_id,
            client_id: target.client_id,
            complete,
            counts: CountsView::from(&counts),
            inactivations,
            error,
        });
    }
    Ok(PreflightView {
        tenants,
        totals: CountsView::from(&totals),
        tenants_not_checked,
    })
}

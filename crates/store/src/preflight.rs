//! Read-only questions the preflight asks: which linked contacts a complete enumeration that
//! saw exactly these users would inactivate as absent (SPEC §5.5), out of how many links — so
//! the preflight can show what the absent-user rule and the mass-inactivation guard would do
//! without writing anything.

use uuid::Uuid;

use crate::{Result, Store};

/// What the absent-user rule would do for one managed tenant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AbsentPreview {
    /// Active, unlocked contacts linked to users the enumeration did not return.
    pub would_inactivate: u64,
    /// Every link of the managed tenant (the guard's denominator).
    pub linked: u64,
}

/// `preview_absent_inactivations`' statement (`$1` tenant, `$2` managed tenant, `$3` the ids a
/// complete enumeration would return). The ids are one hashed set (`NOT IN` over their
/// unnesting; none is NULL): `NOT (… = ANY($3))` is hashed only in a custom plan, and a
/// prepared statement's generic plan would scan every id for each link.
pub(crate) const ABSENT_PREVIEW: &str = "SELECT
         (SELECT count(DISTINCT c.contact_id)
          FROM links l
          JOIN contacts c ON c.tenant_id = l.tenant_id AND c.contact_id = l.contact_id
          WHERE l.tenant_id = $1 AND l.managed_tenant_id = $2
            AND l.object_id NOT IN (SELECT unnest($3::text[]))
            AND c.is_active AND NOT c.sync_locked),
         (SELECT count(*) FROM links WHERE tenant_id = $1 AND managed_tenant_id = $2)";

impl Store {
    /// The absent-user inactivations a complete enumeration that returned `seen_object_ids`
    /// would queue for `managed_tenant_id` (the same rule `finish_tenant_inactivations`
    /// applies: active contacts not locked against sync, each contact once).
    pub async fn preview_absent_inactivations(
        &self,
        tenant_id: Uuid,
        managed_tenant_id: Uuid,
        seen_object_ids: &[String],
    ) -> Result<AbsentPreview> {
        let (would_inactivate, linked): (i64, i64) = sqlx::query_as(ABSENT_PREVIEW)
            .bind(tenant_id)
            .bind(managed_tenant_id)
            .bind(seen_object_ids)
            .fetch_one(&self.pool)
            .await?;
        Ok(AbsentPreview {
            would_inactivate: u64::try_from(would_inactivate).unwrap_or_default(),
            linked: u64::try_from(linked).unwrap_or_default(),
        })
    }
}

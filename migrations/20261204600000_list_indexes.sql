-- Indexes in the order of each keyset-paged list, tenant_id leading, so that every page of
-- GET /contacts, /sync/runs, /reconciliation-queue and /audit is read from an index in order
-- (no sort of the tenant's rows, no scan from the start of the tenant for a later page).
-- The statements that use them are built in crates/store/src/api_queries.rs.

-- Contacts by name, and by client then name (the client filter); the latter also serves every
-- lookup by (tenant_id, client_id), so it replaces contacts_by_client.
CREATE INDEX contacts_by_name ON contacts (tenant_id, full_name, contact_id);
CREATE INDEX contacts_by_client_name ON contacts (tenant_id, client_id, full_name, contact_id);
DROP INDEX contacts_by_client;

-- Runs of one kind newest first (runs_newest_first serves the list without a kind).
CREATE INDEX runs_by_kind_newest_first ON runs (tenant_id, kind, started_at DESC, run_id DESC);

-- Review items newest first without a status filter (review_items_listing has status second).
CREATE INDEX review_items_newest_first ON review_items (tenant_id, created_at DESC, item_id DESC);

-- The audit list's full keyset; replaces the index on (tenant_id, at DESC), its prefix.
CREATE INDEX api_audit_by_time_and_id ON api_audit (tenant_id, at DESC, audit_id DESC);
DROP INDEX api_audit_newest_first;

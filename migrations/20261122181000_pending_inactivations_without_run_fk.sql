-- A preflight (dry run) plans a page under a run id that has no runs row and rolls back; the
-- pending-inactivation insert of that plan must not fail on a foreign key. Pending
-- inactivations are still scoped by tenant and keyed by run id; the run id is a plain column,
-- like links.last_seen_run_id.
ALTER TABLE pending_inactivations DROP CONSTRAINT pending_inactivations_tenant_id_run_id_fkey;

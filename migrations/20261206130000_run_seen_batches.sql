-- What a run saw, one row per reconciled batch instead of one per user.
--
-- A row per user cost one unique-index insert per user: 0.1 s of a 50,000-user re-run that
-- otherwise mostly reads, two thirds of it the index. A batch's object ids are now one sorted,
-- de-duplicated array, stored uncompressed and out of line (STORAGE EXTERNAL: object ids are
-- GUIDs, which compress poorly and would cost the compressor's time on every batch), in one
-- row: a 50,000-user run writes about fifty rows.
--
-- Without a unique key per user, an entry Graph sends twice in two batches of one run (or a
-- batch replayed) is recorded twice. `seen` stays true all the same: a page's count is the
-- users it carried, and when the tenant result ends (the only move out of `running`) the
-- trigger below replaces it with the run's distinct object ids plus the entries that had none,
-- and takes the same number of duplicates off `eligible` (as a page did when its insert found
-- a user the run had already recorded).
--
-- A batch replayed exactly (an activity retried after its commit) is recorded once: a row's
-- key ends with the md5 of its ids and its count of entries without one.
--
-- Readers unnest the arrays: the absent-user pass hashes the run's ids once and anti-joins the
-- tenant's links with them; the re-check of held inactivations hashes the later runs' ids. A
-- run's rows are removed when the next run takes the tenant's lease, as before.
CREATE TABLE run_seen_batches (
    tenant_id          uuid    NOT NULL,
    managed_tenant_id  uuid    NOT NULL,
    run_id             uuid    NOT NULL,
    object_ids         text[]  NOT NULL,
    -- Entries of the batch without a usable object id: seen, but not recordable by id.
    without_id         integer NOT NULL DEFAULT 0,
    digest             uuid    NOT NULL,
    PRIMARY KEY (tenant_id, managed_tenant_id, run_id, digest)
);
ALTER TABLE run_seen_batches ALTER COLUMN object_ids SET STORAGE EXTERNAL;

-- The digest of a batch (the application computes it the same way when it records one).
CREATE FUNCTION run_seen_digest(object_ids text[], without_id integer) RETURNS uuid
    LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT md5(without_id || ':' || array_to_string(object_ids, ','))::uuid $$;

INSERT INTO run_seen_batches (tenant_id, managed_tenant_id, run_id, object_ids, digest)
SELECT tenant_id, managed_tenant_id, run_id, ids, run_seen_digest(ids, 0)
FROM (SELECT tenant_id, managed_tenant_id, run_id, array_agg(object_id ORDER BY object_id) AS ids
      FROM run_seen
      GROUP BY tenant_id, managed_tenant_id, run_id) AS runs;

DROP TABLE run_seen;
ALTER TABLE run_seen_batches RENAME TO run_seen;
ALTER TABLE run_seen RENAME CONSTRAINT run_seen_batches_pkey TO run_seen_pkey;

-- Makes a tenant result's `seen` exact as it ends (see above). A result whose run recorded
-- nothing is left as it is.
CREATE FUNCTION run_tenant_results_count_seen_once() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    recorded bigint;
    seen bigint;
    counted bigint := coalesce((NEW.counts->>'seen')::bigint, 0);
BEGIN
    SELECT count(*), coalesce(sum(without_id), 0) INTO recorded, seen
    FROM run_seen
    WHERE tenant_id = NEW.tenant_id AND managed_tenant_id = NEW.managed_tenant_id
      AND run_id = NEW.run_id;
    IF recorded = 0 THEN
        RETURN NEW;
    END IF;
    seen := seen + (SELECT count(*) FROM (
        SELECT DISTINCT object_id
        FROM run_seen s CROSS JOIN LATERAL unnest(s.object_ids) AS object_id
        WHERE s.tenant_id = NEW.tenant_id AND s.managed_tenant_id = NEW.managed_tenant_id
          AND s.run_id = NEW.run_id) AS distinct_ids);
    IF seen <> counted THEN
        NEW.counts := NEW.counts || jsonb_build_object('seen', seen);
        IF NEW.counts ? 'eligible' THEN
            NEW.counts := NEW.counts || jsonb_build_object('eligible',
                greatest(0, coalesce((NEW.counts->>'eligible')::bigint, 0) - (counted - seen)));
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER run_tenant_results_count_seen_once BEFORE UPDATE OF status ON run_tenant_results
    FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running')
    EXECUTE FUNCTION run_tenant_results_count_seen_once();

-- Every recorded failure is one record {class, code, message, remediation} (SPEC §5.7): class
-- one of reauth_required, tenant_access, config, transient, invalid, and a non-empty
-- remediation. Rows written before this rule are brought into it first, then CHECK
-- constraints make the database refuse any other shape on runs, tenant results and
-- connections.

CREATE FUNCTION entra_sync_is_error_record(record jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS $$
    SELECT record IS NULL OR (
        jsonb_typeof(record) = 'object'
        AND record->>'class' IN ('reauth_required', 'tenant_access', 'config', 'transient', 'invalid')
        AND coalesce(btrim(record->>'remediation'), '') <> ''
        AND coalesce(btrim(record->>'code'), '') <> ''
    )
$$;

CREATE FUNCTION entra_sync_as_error_record(record jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN record IS NULL OR entra_sync_is_error_record(record) THEN record
        WHEN record->>'class' = 'cancelled' THEN NULL
        ELSE jsonb_build_object(
            'class', CASE WHEN record->>'class' IN ('reauth_required', 'tenant_access', 'config', 'transient', 'invalid')
                          THEN record->>'class' ELSE 'transient' END,
            'code', coalesce(nullif(btrim(record->>'code'), ''), 'unclassified'),
            'message', coalesce(record->>'message', 'the failure was recorded without details'),
            'remediation', coalesce(nullif(btrim(record->>'remediation'), ''), 'run it again; if it fails again, check the worker logs'))
    END
$$;

UPDATE runs SET error = entra_sync_as_error_record(error) WHERE NOT entra_sync_is_error_record(error);
UPDATE run_tenant_results SET error = entra_sync_as_error_record(error) WHERE NOT entra_sync_is_error_record(error);
UPDATE connections SET last_error = entra_sync_as_error_record(last_error) WHERE NOT entra_sync_is_error_record(last_error);

ALTER TABLE runs ADD CONSTRAINT runs_error_is_record CHECK (entra_sync_is_error_record(error));
ALTER TABLE run_tenant_results ADD CONSTRAINT run_tenant_results_error_is_record CHECK (entra_sync_is_error_record(error));
ALTER TABLE connections ADD CONSTRAINT connections_last_error_is_record CHECK (entra_sync_is_error_record(last_error));

-- A tenant waiting for its next attempt (SPEC §5.7 `retrying`): the attempt that failed and when
-- the next one starts; the error column holds that attempt's record.
ALTER TABLE run_tenant_results ADD COLUMN retry_attempt integer CHECK (retry_attempt IS NULL OR retry_attempt >= 1);
ALTER TABLE run_tenant_results ADD COLUMN next_attempt_at timestamptz;

DROP FUNCTION entra_sync_as_error_record(jsonb);

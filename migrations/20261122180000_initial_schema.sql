-- entra-sync: the whole data model, first version.
--
-- Conventions kept by every table below (and by every later migration; migrations are
-- append-only, never edit a file once committed):
--   * tenant_id (the PSA tenant) leads every primary key, and every foreign key between
--     tenant-scoped tables includes it, so rows of one PSA tenant can never reference rows of
--     another and the schema can be distributed by tenant_id (Citus).
--   * Enumerations are text with CHECK constraints, so adding a value is a plain migration.
--   * Nothing here cascades deletes into contacts: the sync never deletes a contact.
--   * Ids are UUIDs generated in Rust (v7 where ordering helps) or by gen_random_uuid().

-- ---------------------------------------------------------------------------------------
-- PSA side: tenants, users, API keys, clients, contacts
-- ---------------------------------------------------------------------------------------

CREATE TABLE psa_tenants (
    tenant_id   uuid        NOT NULL DEFAULT gen_random_uuid(),
    name        text        NOT NULL CHECK (length(btrim(name)) > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id)
);

CREATE TABLE psa_users (
    tenant_id    uuid        NOT NULL REFERENCES psa_tenants (tenant_id),
    user_id      uuid        NOT NULL DEFAULT gen_random_uuid(),
    email        text        NOT NULL,
    user_type    text        NOT NULL CHECK (user_type IN ('internal', 'client')),
    permissions  text[]      NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE UNIQUE INDEX psa_users_email_unique ON psa_users (tenant_id, lower(email));

-- Only the SHA-256 of a key is stored; key_prefix is the first characters of the key, kept so
-- a person can tell keys apart in a list.
CREATE TABLE api_keys (
    tenant_id     uuid        NOT NULL,
    key_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    user_id       uuid        NOT NULL,
    key_hash      bytea       NOT NULL CHECK (length(key_hash) = 32),
    key_prefix    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    PRIMARY KEY (tenant_id, key_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES psa_users (tenant_id, user_id),
    UNIQUE (tenant_id, key_hash)
);
-- Authentication looks a key up by its hash alone (the key does not name its tenant).
CREATE INDEX api_keys_by_hash ON api_keys (key_hash);

CREATE TABLE clients (
    tenant_id          uuid        NOT NULL REFERENCES psa_tenants (tenant_id),
    client_id          uuid        NOT NULL DEFAULT gen_random_uuid(),
    name               text        NOT NULL CHECK (length(btrim(name)) > 0),
    domains            text[]      NOT NULL DEFAULT '{}',
    secondary_domains  text[]      NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, client_id)
);
CREATE INDEX clients_domains ON clients USING gin (domains);

-- email_normalized is derived by the database so that every writer (API, sync, seeding)
-- agrees on it; the sync looks contacts up by it across the whole PSA tenant.
CREATE TABLE contacts (
    tenant_id         uuid        NOT NULL,
    contact_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    client_id         uuid        NOT NULL,
    full_name         text        NOT NULL,
    email             text,
    email_normalized  text GENERATED ALWAYS AS (lower(btrim(email))) STORED,
    phone             text,
    mobile            text,
    job_title         text,
    is_active         boolean     NOT NULL DEFAULT true,
    inactive_reason   text        CHECK (inactive_reason IN ('disabled_upstream', 'deleted_upstream', 'manual')),
    sync_locked       boolean     NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, contact_id),
    FOREIGN KEY (tenant_id, client_id) REFERENCES clients (tenant_id, client_id),
    -- An active contact carries no inactive reason.
    CHECK (NOT is_active OR inactive_reason IS NULL)
);
CREATE INDEX contacts_by_email ON contacts (tenant_id, email_normalized);
CREATE INDEX contacts_by_client ON contacts (tenant_id, client_id);

-- ---------------------------------------------------------------------------------------
-- Connection to Microsoft (direct OAuth) or CIPP
-- ---------------------------------------------------------------------------------------

-- One row per PSA tenant. The credentials of the active kind are one AES-256-GCM record
-- (credentials_ciphertext + credentials_nonce) that is replaced as a whole in one UPDATE, so
-- switching kind clears the other kind's credentials in the same commit that saves the new
-- ones. credentials_version increases on every replacement (refresh-token rotation uses it
-- as a compare-and-swap guard).
CREATE TABLE connections (
    tenant_id               uuid        NOT NULL REFERENCES psa_tenants (tenant_id),
    kind                    text        CHECK (kind IN ('direct', 'cipp')),
    status                  text        NOT NULL DEFAULT 'disconnected'
                                        CHECK (status IN ('disconnected', 'connected', 'needs_reconnect', 'validation_failed')),
    credentials_ciphertext  bytea,
    credentials_nonce       bytea       CHECK (credentials_nonce IS NULL OR length(credentials_nonce) = 12),
    credentials_version     bigint      NOT NULL DEFAULT 0,
    cipp_base_url           text,
    last_error              jsonb,
    connected_at            timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id),
    CHECK ((credentials_ciphertext IS NULL) = (credentials_nonce IS NULL)),
    CHECK (kind = 'cipp' OR cipp_base_url IS NULL)
);

-- OAuth authorization-code flow state: stored hashed, bound to the PSA tenant and the user
-- who started the flow, single use (used_at), expiring.
CREATE TABLE oauth_states (
    tenant_id                    uuid        NOT NULL,
    state_id                     uuid        NOT NULL DEFAULT gen_random_uuid(),
    state_hash                   bytea       NOT NULL CHECK (length(state_hash) = 32),
    user_id                      uuid        NOT NULL,
    code_verifier_ciphertext     bytea       NOT NULL,
    code_verifier_nonce          bytea       NOT NULL CHECK (length(code_verifier_nonce) = 12),
    created_at                   timestamptz NOT NULL DEFAULT now(),
    expires_at                   timestamptz NOT NULL,
    used_at                      timestamptz,
    PRIMARY KEY (tenant_id, state_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES psa_users (tenant_id, user_id),
    UNIQUE (tenant_id, state_hash)
);
-- The callback knows only the state, not the tenant.
CREATE INDEX oauth_states_by_hash ON oauth_states (state_hash);

-- ---------------------------------------------------------------------------------------
-- Runs (discovery and sync) and their per-managed-tenant results
-- ---------------------------------------------------------------------------------------

CREATE TABLE runs (
    tenant_id            uuid        NOT NULL REFERENCES psa_tenants (tenant_id),
    run_id               uuid        NOT NULL,
    kind                 text        NOT NULL CHECK (kind IN ('discovery', 'sync')),
    trigger              text        NOT NULL CHECK (trigger IN ('initial', 'manual', 'scheduled')),
    scope                text        NOT NULL CHECK (scope IN ('all', 'client')),
    client_id            uuid,
    status               text        NOT NULL DEFAULT 'running'
                                     CHECK (status IN ('running', 'completed', 'partial', 'failed', 'cancelled')),
    requested_by         text,
    workflow_id          text,
    cancel_requested_at  timestamptz,
    started_at           timestamptz NOT NULL DEFAULT now(),
    finished_at          timestamptz,
    totals               jsonb,
    error                jsonb,
    PRIMARY KEY (tenant_id, run_id),
    FOREIGN KEY (tenant_id, client_id) REFERENCES clients (tenant_id, client_id),
    CHECK ((scope = 'client') = (client_id IS NOT NULL)),
    CHECK ((status = 'running') = (finished_at IS NULL))
);
-- At most one running run per (tenant, kind, scope, client): pressing "Sync All Tenants Now"
-- twice finds the first run instead of starting a second one.
CREATE UNIQUE INDEX runs_one_running_per_scope ON runs
    (tenant_id, kind, scope, coalesce(client_id, '00000000-0000-0000-0000-000000000000'::uuid))
    WHERE status = 'running';
CREATE INDEX runs_newest_first ON runs (tenant_id, started_at DESC, run_id DESC);

CREATE TABLE run_tenant_results (
    tenant_id          uuid        NOT NULL,
    run_id             uuid        NOT NULL,
    managed_tenant_id  uuid        NOT NULL,
    status             text        NOT NULL DEFAULT 'running'
                                   CHECK (status IN ('running', 'completed', 'failed', 'needs_confirmation', 'cancelled')),
    mode               text        NOT NULL CHECK (mode IN ('delta', 'full')),
    counts             jsonb       NOT NULL DEFAULT '{}',
    error              jsonb,
    cursor             text,
    started_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    PRIMARY KEY (tenant_id, run_id, managed_tenant_id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs (tenant_id, run_id)
);

-- ---------------------------------------------------------------------------------------
-- Managed tenants (discovery) and mappings
-- ---------------------------------------------------------------------------------------

-- domains: [{"name": "contoso.com", "is_default": true, "is_initial": false}, ...]
CREATE TABLE managed_tenants (
    tenant_id               uuid        NOT NULL REFERENCES psa_tenants (tenant_id),
    managed_tenant_id       uuid        NOT NULL DEFAULT gen_random_uuid(),
    entra_tenant_id         text        NOT NULL,
    display_name            text        NOT NULL,
    domains                 jsonb       NOT NULL DEFAULT '[]',
    status                  text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'missing')),
    first_seen_at           timestamptz NOT NULL DEFAULT now(),
    last_seen_at            timestamptz NOT NULL DEFAULT now(),
    missing_since           timestamptz,
    last_discovery_run_id   uuid,
    PRIMARY KEY (tenant_id, managed_tenant_id),
    -- One row per Entra directory per PSA tenant; discovery upserts on this key.
    UNIQUE (tenant_id, entra_tenant_id),
    CHECK ((status = 'missing') = (missing_since IS NOT NULL))
);

-- The current decision per managed tenant. The primary key makes "one managed tenant maps to
-- at most one client" a database invariant. create_client carries the client it created.
CREATE TABLE mappings (
    tenant_id          uuid        NOT NULL,
    managed_tenant_id  uuid        NOT NULL,
    decision           text        NOT NULL CHECK (decision IN ('mapped', 'skipped', 'create_client')),
    client_id          uuid,
    decided_by         text,
    decided_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, managed_tenant_id),
    FOREIGN KEY (tenant_id, managed_tenant_id) REFERENCES managed_tenants (tenant_id, managed_tenant_id),
    FOREIGN KEY (tenant_id, client_id) REFERENCES clients (tenant_id, client_id),
    CHECK ((decision = 'skipped') = (client_id IS NULL))
);
CREATE INDEX mappings_by_client ON mappings (tenant_id, client_id);

-- Every decision ever taken, including unmapping; append-only.
CREATE TABLE mapping_decisions (
    tenant_id          uuid        NOT NULL,
    decision_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    managed_tenant_id  uuid        NOT NULL,
    decision           text        NOT NULL CHECK (decision IN ('mapped', 'skipped', 'create_client', 'unmapped')),
    client_id          uuid,
    decided_by         text,
    decided_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, decision_id),
    FOREIGN KEY (tenant_id, managed_tenant_id) REFERENCES managed_tenants (tenant_id, managed_tenant_id)
);
CREATE INDEX mapping_decisions_by_tenant ON mapping_decisions (tenant_id, managed_tenant_id, decided_at);

-- ---------------------------------------------------------------------------------------
-- Links: (managed tenant, object id) <-> contact
-- ---------------------------------------------------------------------------------------

CREATE TABLE links (
    tenant_id          uuid        NOT NULL,
    managed_tenant_id  uuid        NOT NULL,
    object_id          text        NOT NULL,
    contact_id         uuid        NOT NULL,
    created_by_run_id  uuid,
    last_seen_run_id   uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, managed_tenant_id, object_id),
    FOREIGN KEY (tenant_id, managed_tenant_id) REFERENCES managed_tenants (tenant_id, managed_tenant_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, contact_id)
);
-- A contact is linked to at most one directory user.
CREATE UNIQUE INDEX links_one_per_contact ON links (tenant_id, contact_id);

-- ---------------------------------------------------------------------------------------
-- Review queue
-- ---------------------------------------------------------------------------------------

-- candidates: [{"contact_id", "client_id", "full_name", "email"}, ...]
-- resolution: {"action": "link_existing"|"create_new"|"dismiss", "contact_id"?, "allow_other_client"?, "by", "at"}
CREATE TABLE review_items (
    tenant_id          uuid        NOT NULL,
    item_id            uuid        NOT NULL DEFAULT gen_random_uuid(),
    status             text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved', 'dismissed')),
    reason             text        NOT NULL CHECK (reason IN ('multiple_candidates', 'candidate_in_other_client', 'candidate_linked_to_other_user')),
    managed_tenant_id  uuid        NOT NULL,
    client_id          uuid,
    object_id          text        NOT NULL,
    display_name       text,
    email              text,
    candidates         jsonb       NOT NULL DEFAULT '[]',
    resolution         jsonb,
    note               text,
    created_by_run_id  uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    resolved_by        text,
    resolved_at        timestamptz,
    PRIMARY KEY (tenant_id, item_id),
    FOREIGN KEY (tenant_id, managed_tenant_id) REFERENCES managed_tenants (tenant_id, managed_tenant_id),
    FOREIGN KEY (tenant_id, client_id) REFERENCES clients (tenant_id, client_id),
    CHECK ((status = 'open') = (resolved_at IS NULL))
);
-- One open review item per directory user at most.
CREATE UNIQUE INDEX review_items_one_open_per_user ON review_items (tenant_id, managed_tenant_id, object_id)
    WHERE status = 'open';
CREATE INDEX review_items_by_user ON review_items (tenant_id, managed_tenant_id, object_id, updated_at DESC);
CREATE INDEX review_items_listing ON review_items (tenant_id, status, created_at DESC, item_id DESC);

-- ---------------------------------------------------------------------------------------
-- Inactivations waiting for the end of a tenant's sync (and the mass-inactivation guard)
-- ---------------------------------------------------------------------------------------

CREATE TABLE pending_inactivations (
    tenant_id          uuid        NOT NULL,
    run_id             uuid        NOT NULL,
    managed_tenant_id  uuid        NOT NULL,
    contact_id         uuid        NOT NULL,
    object_id          text        NOT NULL,
    reason             text        NOT NULL CHECK (reason IN ('disabled_upstream', 'deleted_upstream')),
    state              text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'held', 'applied', 'discarded')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    decided_at         timestamptz,
    decided_by         text,
    PRIMARY KEY (tenant_id, run_id, managed_tenant_id, contact_id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs (tenant_id, run_id),
    FOREIGN KEY (tenant_id, managed_tenant_id) REFERENCES managed_tenants (tenant_id, managed_tenant_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, contact_id)
);

-- ---------------------------------------------------------------------------------------
-- Settings, delta state, feature flags
-- ---------------------------------------------------------------------------------------

-- document: {"field_policy": {"name": "off"|"fill_blank"|"overwrite", ...},
--            "filters": {...}, "mark_inactive_when_disabled": bool,
--            "schedule": {"enabled": bool, "interval_seconds": int},
--            "discovery_before_sync": bool}
CREATE TABLE settings (
    tenant_id   uuid        NOT NULL REFERENCES psa_tenants (tenant_id),
    document    jsonb       NOT NULL,
    updated_by  text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id)
);

-- Per managed tenant filter overrides, merged over the PSA tenant's filters key by key.
CREATE TABLE managed_tenant_settings (
    tenant_id          uuid        NOT NULL,
    managed_tenant_id  uuid        NOT NULL,
    filters            jsonb       NOT NULL DEFAULT '{}',
    updated_by         text,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, managed_tenant_id),
    FOREIGN KEY (tenant_id, managed_tenant_id) REFERENCES managed_tenants (tenant_id, managed_tenant_id)
);

-- A Graph deltaLink carries no secret (the token travels in the Authorization header), so it
-- is stored in plain text.
CREATE TABLE delta_state (
    tenant_id          uuid        NOT NULL,
    managed_tenant_id  uuid        NOT NULL,
    delta_link         text        NOT NULL,
    issued_at          timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, managed_tenant_id),
    FOREIGN KEY (tenant_id, managed_tenant_id) REFERENCES managed_tenants (tenant_id, managed_tenant_id)
);

-- Flags are platform-wide definitions (a reference table: the one table without tenant_id);
-- feature_flag_tenants targets a flag at a PSA tenant.
CREATE TABLE feature_flags (
    flag        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flag)
);

CREATE TABLE feature_flag_tenants (
    tenant_id   uuid        NOT NULL REFERENCES psa_tenants (tenant_id),
    flag        text        NOT NULL REFERENCES feature_flags (flag),
    enabled     boolean     NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, flag)
);

-- ---------------------------------------------------------------------------------------
-- Audit
-- ---------------------------------------------------------------------------------------

-- Every change the sync made to a contact or link: "why did it do that?".
CREATE TABLE contact_changes (
    tenant_id          uuid        NOT NULL,
    change_id          uuid        NOT NULL DEFAULT gen_random_uuid(),
    run_id             uuid,
    managed_tenant_id  uuid,
    object_id          text,
    contact_id         uuid        NOT NULL,
    action             text        NOT NULL CHECK (action IN ('create', 'link', 'update', 'inactivate', 'reactivate', 'review_link')),
    before             jsonb,
    after              jsonb,
    at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, change_id)
);
CREATE INDEX contact_changes_by_contact ON contact_changes (tenant_id, contact_id, at DESC);
CREATE INDEX contact_changes_by_run ON contact_changes (tenant_id, run_id);

-- Every change made through the API (who, what, when).
CREATE TABLE api_audit (
    tenant_id  uuid        NOT NULL,
    audit_id   uuid        NOT NULL DEFAULT gen_random_uuid(),
    actor      text        NOT NULL,
    action     text        NOT NULL,
    target     text,
    detail     jsonb,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, audit_id)
);
CREATE INDEX api_audit_newest_first ON api_audit (tenant_id, at DESC);

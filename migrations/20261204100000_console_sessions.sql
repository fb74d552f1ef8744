-- Console sign-in sessions (SPEC §10) and the binding of an OAuth state to the console session
-- that started it.
--
-- A session's id is a random 32-byte token held only by the browser (in an HttpOnly cookie);
-- the table keeps its SHA-256, so a leaked table row cannot be replayed as a cookie. The CSRF
-- token is per session and compared on every state-changing request.
CREATE TABLE console_sessions (
    session_hash   bytea       PRIMARY KEY CHECK (length(session_hash) = 32),
    tenant_id      uuid        NOT NULL,
    user_id        uuid        NOT NULL,
    csrf_token     text        NOT NULL CHECK (length(csrf_token) >= 43),
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    FOREIGN KEY (tenant_id, user_id) REFERENCES psa_users (tenant_id, user_id)
);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);

-- Set when the direct connection was started from the console: the callback then completes
-- only when it arrives with that same session's cookie.
ALTER TABLE oauth_states ADD COLUMN console_session_hash bytea
    CHECK (console_session_hash IS NULL OR length(console_session_hash) = 32);

-- The Microsoft partner tenant the direct connection signed in to (Graph /organization),
-- shown on the console's overview.
ALTER TABLE connections ADD COLUMN partner_tenant_id text;
ALTER TABLE connections ADD COLUMN partner_tenant_name text;

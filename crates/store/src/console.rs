//! Console sign-in sessions: created at sign-in, looked up on every console request, deleted at
//! sign-out. Only the SHA-256 of a session id is stored; the id itself lives in the browser's
//! cookie.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::crypto::{random_token, sha256};
use crate::psa::{PsaUser, PsaUserRow};
use crate::{Result, Store};

/// A session just created: the id goes into the cookie, the CSRF token into every form.
/// `Debug` prints neither.
pub struct NewConsoleSession {
    pub session_id: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for NewConsoleSession {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NewConsoleSession")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A live session: who is signed in and the session's CSRF token.
#[derive(Clone)]
pub struct ConsoleSession {
    pub user: PsaUser,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for ConsoleSession {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ConsoleSession")
            .field("user", &self.user)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    csrf_token: String,
    expires_at: DateTime<Utc>,
    tenant_id: Uuid,
    user_id: Uuid,
    email: String,
    user_type: String,
    permissions: Vec<String>,
    created_at: DateTime<Utc>,
}

/// The stored form of a session id (what the oauth_states binding compares).
pub fn session_hash(session_id: &str) -> Vec<u8> {
    sha256(session_id)
}

impl Store {
    /// Opens a session for `user` lasting `lifetime`: 32 random bytes of id, 32 of CSRF token.
    pub async fn create_console_session(
        &self,
        user: &PsaUser,
        lifetime: std::time::Duration,
    ) -> Result<NewConsoleSession> {
        let session_id = random_token(32);
        let csrf_token = random_token(32);
        let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(8));
        let expires_at = Utc::now() + lifetime;
        sqlx::query(
            "INSERT INTO console_sessions (session_hash, tenant_id, user_id, csrf_token, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(sha256(&session_id))
        .bind(user.tenant_id)
        .bind(user.user_id)
        .bind(&csrf_token)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        // Expired sessions are swept on sign-in, so the table does not grow without bound.
        sqlx::query("DELETE FROM console_sessions WHERE expires_at < now()")
            .execute(&self.pool)
            .await?;
        Ok(NewConsoleSession {
            session_id,
            csrf_token,
            expires_at,
        })
    }

    /// The live session with this id, or None (unknown or expired).
    pub async fn console_session(&self, session_id: &str) -> Result<Option<ConsoleSession>> {
        let row: Option<SessionRow> = sqlx::query_as(
            "SELECT s.csrf_token, s.expires_at, u.tenant_id, u.user_id, u.email, u.user_type,
                    u.permissions, u.created_at
             FROM console_sessions s JOIN psa_users u USING (tenant_id, user_id)
             WHERE s.session_hash = $1 AND s.expires_at > now()",
        )
        .bind(sha256(session_id))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let csrf_token = row.csrf_token;
        let expires_at = row.expires_at;
        let user = PsaUserRow {
            tenant_id: row.tenant_id,
            user_id: row.user_id,
            email: row.email,
            user_type: row.user_type,
            permissions: row.permissions,
            created_at: row.created_at,
        }
        .into_user()?;
        Ok(Some(ConsoleSession {
            user,
            csrf_token,
            expires_at,
        }))
    }

    /// Ends a session (sign-out). Unknown ids are ignored.
    pub async fn delete_console_session(&self, session_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE session_hash = $1")
            .bind(sha256(session_id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Binds an OAuth state (not yet used) to the console session that started the flow.
    pub async fn bind_oauth_state_to_console_session(
        &self,
        tenant_id: Uuid,
        state: &str,
        session_id: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE oauth_states SET console_session_hash = $3
             WHERE tenant_id = $1 AND state_hash = $2 AND used_at IS NULL",
        )
        .bind(tenant_id)
        .bind(sha256(state))
        .bind(sha256(session_id))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The console session hash an unused, unexpired state is bound to: `None` when the state
    /// is unknown, used or expired; `Some(None)` when it was started outside the console.
    pub async fn oauth_state_console_binding(
        &self,
        state: &str,
    ) -> Result<Option<Option<Vec<u8>>>> {
        let row: Option<(Option<Vec<u8>>,)> = sqlx::query_as(
            "SELECT console_session_hash FROM oauth_states
             WHERE state_hash = $1 AND used_at IS NULL AND expires_at > now() LIMIT 1",
        )
        .bind(sha256(state))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(hash,)| hash))
    }

    /// Records the Microsoft partner tenant the direct connection signed in to.
    pub async fn set_partner_tenant(
        &self,
        tenant_id: Uuid,
        partner_id: &str,
        partner_name: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE connections SET partner_tenant_id = $2, partner_tenant_name = $3
             WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .bind(partner_id)
        .bind(partner_name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the partner tenant (on disconnect).
    pub async fn clear_partner_tenant(&self, tenant_id: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE connections SET partner_tenant_id = NULL, partner_tenant_name = NULL
             WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The partner tenant recorded on the connection: (id, name).
    pub async fn partner_tenant(&self, tenant_id: Uuid) -> Result<Option<(String, String)>> {
        let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT partner_tenant_id, partner_tenant_name FROM connections WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(id, name)| Some((id?, name.unwrap_or_default()))))
    }
}

//! The application layer: what the JSON handlers (`routes`) and the web console (`console`)
//! both do. Each function takes the state, an authorized [`Caller`] and typed input, and
//! returns a view or an [`ApiError`]; the transport (JSON body, HTML form) stays in the caller.
//! The console reaches the store and Microsoft only through these functions.

pub(crate) mod admin;
pub(crate) mod entra;
pub(crate) mod overview;
pub(crate) mod preflight;
pub(crate) mod psa;
pub(crate) mod runs;

use entra_sync_store::psa::PsaUser;

use crate::auth::Authorized;

/// The PSA user an action is performed for, after its permission was checked.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: PsaUser,
}

impl Caller {
    /// The audit actor string: `user:<id>`.
    pub fn actor(&self) -> String {
        format!("user:{}", self.user.user_id)
    }
}

impl<P> From<Authorized<P>> for Caller {
    fn from(authorized: Authorized<P>) -> Caller {
        Caller {
            user: authorized.user,
        }
    }
}

impl<P> From<&Authorized<P>> for Caller {
    fn from(authorized: &Authorized<P>) -> Caller {
        Caller {
            user: authorized.user.clone(),
        }
    }
}

//! Pure, synchronous rules of entra-sync: directory users, contacts, matching, the reconcile
//! plan for a page, field policy, filters and mapping scores. No I/O, no async, no serde.

pub mod email;
pub mod filter;
pub mod mapping;
pub mod model;
pub mod plan;
pub mod validate;

//! Readers of customer directories: the Microsoft identity platform (`oauth`), Microsoft
//! Graph (`graph`) and CIPP (`cipp`), behind one trait shaped for the activities
//! (`source::DirectorySource`). Provider JSON stays inside this crate; what comes out is
//! domain types (`DirectoryEntry`) and a classified `error::DirectoryError`.
//!
//! The wire contract is MICROSOFT.md; section numbers in comments refer to it.

pub mod cipp;
pub mod error;
pub mod graph;
pub mod http;
pub mod oauth;
pub mod outbound;
pub mod source;
pub mod users;

#[cfg(test)]
mod fuzz;

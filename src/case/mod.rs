//! Cases: the work order each call leaves for the intake backend, as a versioned JSON document.
//!
//! Pure parts only (no clock, no files, no sockets): the sortable [`id::CaseId`], the document
//! ([`skeleton`]) built from the call journal, the delivery [`retry`] policy and the body
//! [`signature`]. The spool and the HTTP delivery worker live in `runtime::outbox` and
//! `runtime::delivery`.

pub mod id;
pub mod retry;
pub mod rfc3339;
pub mod signature;
pub mod skeleton;

pub use id::{CaseId, CaseIdError};
pub use skeleton::{CallFacts, CaseSkeleton, SCHEMA_VERSION};

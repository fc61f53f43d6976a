//! Cases: the work orders ivrd hands to the intake backend after each call.
//!
//! Pure parts only (no clock, no files, no sockets): the sortable [`id::CaseId`], the delivery
//! [`retry`] policy and the body [`signature`]. The spool and the HTTP delivery worker that use them
//! live in `runtime::outbox` and `runtime::delivery`.

pub mod id;
pub mod retry;
pub mod signature;

pub use id::{CaseId, CaseIdError};

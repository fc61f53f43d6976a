//! Cases: the work order each call leaves for the intake backend, as a versioned JSON document.

pub mod rfc3339;
pub mod skeleton;

pub use skeleton::{CallFacts, CaseSkeleton, SCHEMA_VERSION};

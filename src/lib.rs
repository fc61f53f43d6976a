//! ivrd — a SIP/RTP IVR daemon for 12345 government service hotlines.
//!
//! Protocol and decision logic is sans-IO (events in, actions out, `now` passed in); the `runtime`
//! module holds the thin tokio drivers around it.

pub mod case;
pub mod config;
pub mod media;
pub mod runtime;
pub mod sip;

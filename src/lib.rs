//! ivrd — a SIP/RTP IVR daemon for 12345 government service hotlines.
//!
//! Protocol and decision logic is sans-IO (events in, actions out, `now` passed in); the `runtime`
//! module holds the thin tokio drivers around it.

pub mod case;
pub mod config;
pub mod dialplan;
pub mod loadgen;
pub mod media;
pub mod metrics;
pub mod runtime;
pub mod sip;
pub mod udp_batch;

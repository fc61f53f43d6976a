//! The tokio drivers around the sans-IO core: sockets, timers, tasks.

pub mod call;
pub mod call_marker;
pub mod case_writer;
pub mod delivery;
pub mod fd_limit;
pub(crate) mod group_commit;
pub mod http;
pub mod marker_slots;
pub mod media_call;
pub mod media_clock;
pub mod outbox;
pub mod outbox_metrics;
pub mod plans;
pub mod ports;
pub mod recorder;
pub mod recording_repair;
pub mod server;
pub mod thread_priority;
pub mod transport;

pub use server::{Server, ServerError};

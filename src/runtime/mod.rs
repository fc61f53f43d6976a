//! The tokio drivers around the sans-IO core: sockets, timers, tasks.

pub mod call;
pub mod delivery;
pub mod outbox;
pub mod ports;
pub mod server;
pub mod transport;

pub use server::{Server, ServerError};

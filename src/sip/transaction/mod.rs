//! RFC 3261 §17 transactions as sans-IO state machines. Each one holds the bytes it may have to
//! resend and a small timer table; the endpoint feeds it messages and `now`, and asks it for the
//! next deadline.

pub mod client_non_invite;
pub mod server_invite;
pub mod server_non_invite;
pub mod timers;

pub use client_non_invite::{NonInviteClientEvent, NonInviteClientState, NonInviteClientTxn};
pub use server_invite::{InviteServerEvent, InviteServerState, InviteServerTxn};
pub use server_non_invite::{NonInviteServerState, NonInviteServerTxn};
pub use timers::{TimerConfig, TimerTable};

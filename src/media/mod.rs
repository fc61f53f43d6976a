//! Media: everything between the RTP socket and the dialplan engine, as pure state machines.
//! The tokio drivers in `runtime` own the sockets, clocks and files.

pub mod digit;
pub mod dtmf;
pub mod g711;
pub mod playout;
pub mod prompt;
pub mod rtcp;
pub mod rtp;
pub mod session;

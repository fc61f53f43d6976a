//! SIP signalling, sans-IO: message framing, header interpretation, SDP offer/answer,
//! transactions (RFC 3261 §17), dialogs (§12) and the UAS core that ties them together.

pub mod dialog;
pub mod header;
pub mod message;
pub mod method;
pub mod response;
pub mod sdp;
pub mod transaction;
pub mod uas;
pub mod uri;

//! DTMF detection: RFC 4733 telephone-events, SIP INFO bodies and in-band tones, merged into one
//! stream of key presses for the dialplan engine. Everything here is sans-IO: the caller passes
//! `now` and the data; nothing reads a clock, a socket or allocates per packet or frame.
//!
//! How the per-call driver wires it (one of each per call):
//! - RTP packets with the negotiated `telephone-event` payload type →
//!   [`Rfc4733Decoder::handle_packet`] → [`DtmfStream::on_rfc4733`]; arm a timer at
//!   [`Rfc4733Decoder::poll_timeout`] and call [`Rfc4733Decoder::handle_timeout`] when it fires.
//! - Decoded audio frames (8 kHz linear, 20 ms) → [`GoertzelDetector::push`], then
//!   [`GoertzelDetector::poll`] until `None` → [`DtmfStream::on_inband`].
//! - In-dialog INFO requests → [`parse_info_body`] (Content-Type, body) → [`DtmfStream::on_info`].
//!
//! Every `DtmfStream::on_*` returns `Some(DigitEvent)` for a new press and `None` for a duplicate
//! of a press already reported by another method.

pub mod goertzel;
pub mod info;
pub mod merge;
pub mod rfc4733;

#[cfg(test)]
mod pcap_tests;

pub use goertzel::{GoertzelDetector, InbandDigit};
pub use info::{InfoDtmfError, parse_info_body};
pub use merge::{DEFAULT_MERGE_WINDOW, DtmfStream};
pub use rfc4733::{EncodedPacket, Rfc4733Decoder, Rfc4733Encoder, Rfc4733Error, TelephoneEvent};

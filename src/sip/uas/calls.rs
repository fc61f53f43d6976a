//! Per-call state held by the UAS core, and what it tells the call drivers about a call.

use crate::sip::dialog::Dialog;
use crate::sip::message::Request;
use crate::sip::sdp::{Direction, LocalMedia, NegotiatedAudio, OfferAnswer};
use crate::sip::uas::Destination;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The endpoint's handle for one call; stable for the call's life, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(pub u64);

impl fmt::Display for CallHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call#{}", self.0)
    }
}

/// What a call driver needs to run the call's media and record its case.
#[derive(Debug, Clone, PartialEq)]
pub struct CallInfo {
    pub call_id: String,
    /// When the INVITE arrived.
    pub received: std::time::Instant,
    /// The calling party's URI as received in From (masked before logging).
    pub caller: String,
    /// The Request-URI: the service number dialled.
    pub called: String,
    /// The trunk's address.
    pub trunk: IpAddr,
    /// Our RTP port for this call, reserved from the pool.
    pub rtp_port: u16,
    /// Our address as advertised in SDP.
    pub local_ip: IpAddr,
    /// The agreed audio; `None` until the ACK brings the answer to a late offer.
    pub audio: Option<NegotiatedAudio>,
    pub our_direction: Direction,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    RemoteBye,
    /// The caller cancelled before we answered.
    Cancelled,
    /// ivrd hung up (the dialplan ended, or the media layer asked).
    LocalHangup,
    /// The caller never acknowledged our 200.
    NoAck,
    /// The daemon is stopping.
    Shutdown,
    /// No RTP from the caller for the media timeout.
    MediaTimeout,
}

impl EndReason {
    /// Stable label for logs, cases and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::RemoteBye => "remote_bye",
            EndReason::Cancelled => "cancelled",
            EndReason::LocalHangup => "local_hangup",
            EndReason::NoAck => "no_ack",
            EndReason::Shutdown => "shutdown",
            EndReason::MediaTimeout => "media_timeout",
        }
    }
}

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallState {
    /// 180 sent; the answer timer runs.
    Ringing,
    /// 200 sent.
    Answered,
}

/// The UAS core's record of one call.
pub(super) struct Call {
    pub dialog: Dialog,
    pub state: CallState,
    /// Key of the dialog-creating INVITE's server transaction.
    pub invite_key: String,
    /// The dialog-creating INVITE (needed to build the 200 when the answer timer fires).
    pub invite: Request,
    /// Where in-dialog requests go when the remote target is not an IP literal.
    pub peer: Destination,
    pub local_sip: SocketAddr,
    pub local_media: LocalMedia,
    /// The offer/answer state; `None` while our late offer awaits its answer.
    pub offer: Option<OfferAnswer>,
    pub our_direction: Direction,
    /// A re-INVITE is awaiting its ACK (another one gets 491, RFC 3261 §14.2).
    pub reinvite_pending: bool,
    /// A REFER in progress (RFC 3515).
    pub transfer: Option<super::transfer::PendingTransfer>,
    pub info: CallInfo,
    pub span: tracing::Span,
}

/// Masks a phone number for logs (STYLE.md: caller numbers never appear in clear): keeps a
/// leading `+`, the first three and the last two digits.
pub fn mask_number(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    let lead = usize::from(chars.first() == Some(&'+'));
    if chars.len() <= lead + 5 {
        return "*".repeat(chars.len());
    }
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < lead + 3 || i >= chars.len() - 2 {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::mask_number;

    #[test]
    fn numbers_are_masked_in_the_middle() {
        assert_eq!(mask_number("+8613812345678"), "+861********78");
        assert_eq!(mask_number("12345"), "*****");
        assert_eq!(mask_number(""), "");
    }
}

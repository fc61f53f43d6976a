//! The SIP requests a load-generator caller sends, written as text (RFC 3261 §8.1.1, §12.2.1.1):
//! INVITE with a PCMU + telephone-event offer, ACK, BYE and the NOTIFY that reports a REFER's
//! outcome (RFC 3515 §2.4.4). Called once per request, never per RTP packet.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// What every request of one call shares.
#[derive(Debug, Clone)]
pub struct CallIds<'a> {
    /// Our SIP socket (Via sent-by and Contact).
    pub local: SocketAddr,
    /// ivrd's SIP address.
    pub target: SocketAddr,
    pub call_id: &'a str,
    /// Our From-tag.
    pub from_tag: &'a str,
    /// The calling number.
    pub caller: &'a str,
    /// The called number (DNIS).
    pub called: &'a str,
}

/// The dialog state the in-dialog requests need (RFC 3261 §12.2.1.1).
#[derive(Debug, Clone)]
pub struct DialogIds<'a> {
    /// ivrd's To-tag from the 2xx.
    pub remote_tag: &'a str,
    /// ivrd's Contact URI: the Request-URI of our in-dialog requests.
    pub remote_target: &'a str,
}

fn head(out: &mut String, method: &str, uri: &str, ids: &CallIds<'_>, branch: &str) {
    let _ = write!(
        out,
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{}@{}>;tag={}\r\n",
        ids.local,
        ids.caller,
        ids.local.ip(),
        ids.from_tag
    );
}

fn to(out: &mut String, ids: &CallIds<'_>, remote_tag: Option<&str>) {
    let _ = write!(out, "To: <sip:{}@{}>", ids.called, ids.target.ip());
    if let Some(tag) = remote_tag {
        let _ = write!(out, ";tag={tag}");
    }
    out.push_str("\r\n");
}

fn tail(out: &mut String, ids: &CallIds<'_>, cseq: u32, method: &str) {
    let _ = write!(out, "Call-ID: {}\r\nCSeq: {cseq} {method}\r\n", ids.call_id);
}

/// The INVITE with an SDP offer of PCMU (0) and telephone-event (101) on `rtp_port`.
pub fn invite(ids: &CallIds<'_>, branch: &str, rtp_port: u16) -> String {
    let ip = ids.local.ip();
    let sdp = format!(
        "v=0\r\no=loadgen 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    );
    let mut out = String::with_capacity(700);
    let uri = format!("sip:{}@{}", ids.called, ids.target);
    head(&mut out, "INVITE", &uri, ids, branch);
    to(&mut out, ids, None);
    tail(&mut out, ids, 1, "INVITE");
    let _ = write!(
        out,
        "Contact: <sip:caller@{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        ids.local,
        sdp.len()
    );
    out
}

/// The ACK of a 2xx: a new transaction with its own branch, sent to the remote target
/// (RFC 3261 §13.2.2.4).
pub fn ack_2xx(ids: &CallIds<'_>, dialog: &DialogIds<'_>, branch: &str) -> String {
    let mut out = String::with_capacity(400);
    head(&mut out, "ACK", dialog.remote_target, ids, branch);
    to(&mut out, ids, Some(dialog.remote_tag));
    tail(&mut out, ids, 1, "ACK");
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// The ACK of a non-2xx final response: same branch as the INVITE, To as in the response
/// (RFC 3261 §17.1.1.3).
pub fn ack_failure(ids: &CallIds<'_>, invite_branch: &str, remote_tag: Option<&str>) -> String {
    let mut out = String::with_capacity(400);
    let uri = format!("sip:{}@{}", ids.called, ids.target);
    head(&mut out, "ACK", &uri, ids, invite_branch);
    to(&mut out, ids, remote_tag);
    tail(&mut out, ids, 1, "ACK");
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// Our BYE.
pub fn bye(ids: &CallIds<'_>, dialog: &DialogIds<'_>, branch: &str, cseq: u32) -> String {
    let mut out = String::with_capacity(400);
    head(&mut out, "BYE", dialog.remote_target, ids, branch);
    to(&mut out, ids, Some(dialog.remote_tag));
    tail(&mut out, ids, cseq, "BYE");
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// The final NOTIFY of the implicit `refer` subscription, carrying `status` as a
/// `message/sipfrag` status line (RFC 3515 §2.4.5).
pub fn notify_sipfrag(
    ids: &CallIds<'_>,
    dialog: &DialogIds<'_>,
    branch: &str,
    cseq: u32,
    status: &str,
) -> String {
    let body = format!("SIP/2.0 {status}\r\n");
    let mut out = String::with_capacity(500);
    head(&mut out, "NOTIFY", dialog.remote_target, ids, branch);
    to(&mut out, ids, Some(dialog.remote_tag));
    tail(&mut out, ids, cseq, "NOTIFY");
    let _ = write!(
        out,
        "Contact: <sip:caller@{}>\r\nEvent: refer\r\nSubscription-State: terminated;reason=noresource\r\n\
         Content-Type: message/sipfrag\r\nContent-Length: {}\r\n\r\n{body}",
        ids.local,
        body.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::header::NameAddr;
    use crate::sip::message::{Message, parse};
    use crate::sip::method::Method;
    use crate::sip::sdp::{AudioCodec, answer_offer};

    fn ids() -> CallIds<'static> {
        CallIds {
            local: "127.0.0.1:40000".parse().unwrap(),
            target: "127.0.0.1:5060".parse().unwrap(),
            call_id: "lg-7@127.0.0.1",
            from_tag: "t7",
            caller: "13800000007",
            called: "1234501",
        }
    }

    #[test]
    fn invite_parses_and_offers_pcmu_with_telephone_event() {
        let text = invite(&ids(), "b1", 30002);
        let Ok(Message::Request(req)) = parse(text.as_bytes()) else {
            panic!("INVITE must parse: {text}");
        };
        assert_eq!(req.method, Method::Invite);
        assert_eq!(req.headers.get("Call-ID"), Some("lg-7@127.0.0.1"));
        let oa = answer_offer(&req.body, &[AudioCodec::Pcmu]).unwrap();
        assert_eq!(oa.audio.dtmf_pt, Some(101));
        assert_eq!(oa.audio.remote.map(|a| a.port()), Some(30002));
    }

    #[test]
    fn in_dialog_requests_carry_the_remote_tag_and_target() {
        let d = DialogIds {
            remote_tag: "ivr9",
            remote_target: "sip:ivrd@127.0.0.1:5060",
        };
        let text = notify_sipfrag(&ids(), &d, "b3", 2, "486 Busy Here");
        let Ok(Message::Request(req)) = parse(text.as_bytes()) else {
            panic!("NOTIFY must parse: {text}");
        };
        assert_eq!(req.uri, "sip:ivrd@127.0.0.1:5060");
        let to = NameAddr::parse(req.headers.get("To").unwrap(), "To").unwrap();
        assert_eq!(to.tag(), Some("ivr9"));
        assert_eq!(&req.body[..], b"SIP/2.0 486 Busy Here\r\n");
        let Ok(Message::Request(bye)) = parse(bye(&ids(), &d, "b4", 3).as_bytes()) else {
            panic!("BYE must parse");
        };
        assert_eq!(bye.headers.get("CSeq"), Some("3 BYE"));
    }
}

//! Nothing the caller's side sends can choose or fake a transfer: the Refer-To comes from the
//! dialplan alone, whatever the INVITE carried (Referred-By, Diversion, Refer-To, custom
//! headers, a Contact elsewhere); a REFER from the caller is refused; strangers cannot touch
//! the dialog. Endpoint-level, on a fake clock.

use super::tests::{
    Harness, codes, in_dialog, invite, notify, requests, respond_to, responses, to_tag,
    transfer_outcome,
};
use super::*;
use crate::sip::method::Method;

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
const EVIL: &str = "sip:4000000000@203.0.113.66";
const PLAN_TARGET: &str = "sip:queue-complaint@127.0.0.1:5090";

/// An INVITE whose caller side tries every header that some PBX would take as a redirection.
fn hostile_invite(call_id: &str) -> String {
    invite("z9hG4bKh1", call_id, OFFER)
        .replace(
            "Contact: <sip:caller@127.0.0.1:5061>",
            "Contact: <sip:caller@203.0.113.66:5060>",
        )
        .replace(
            "Max-Forwards: 70\r\n",
            &format!(
                "Max-Forwards: 70\r\nReferred-By: <{EVIL}>\r\nDiversion: <{EVIL}>;reason=unconditional\r\n\
                 Refer-To: <{EVIL}>\r\nX-Transfer-Target: {EVIL}\r\nHistory-Info: <{EVIL}>;index=1\r\n"
            ),
        )
}

#[test]
fn the_refer_target_comes_from_the_plan_whatever_the_caller_sent() {
    let mut h = Harness::new(EndpointConfig::default());
    let out = h.send(&hostile_invite("x1"));
    assert_eq!(codes(&out), [100, 200]);
    let tag = to_tag(&responses(&out)[1]);
    h.send(&in_dialog("ACK", "z9hG4bKa", "x1", &tag, 1, ""));

    // A REFER from the caller's side is not a method ivrd accepts (no transfer by the caller).
    let refer_in = in_dialog("REFER", "z9hG4bKr", "x1", &tag, 2, "").replace(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\nRefer-To: <{EVIL}>\r\n"),
    );
    let out = h.send(&refer_in);
    assert_eq!(codes(&out), [405]);
    assert!(requests(&out).is_empty() && transfer_outcome(&out).is_none());
    // Nor can the caller's side report a transfer that ivrd never started.
    let out = h.send(&notify("x1", &tag, 3, "SIP/2.0 200 OK"));
    assert_eq!(codes(&out), [481]);
    assert!(transfer_outcome(&out).is_none());

    let request = TransferRequest {
        target: PLAN_TARGET.into(),
        headers: vec![("X-Case-Id".into(), "C9".into())],
        user_to_user: b"type=complaint".to_vec(),
    };
    assert!(h.ep.transfer(h.now, CallHandle(1), &request));
    let out = h.drain();
    let to = out
        .iter()
        .find_map(|o| match o {
            Output::Transmit { to, .. } => Some(to.clone()),
            _ => None,
        })
        .expect("REFER sent");
    let refer = requests(&out).pop().expect("REFER");
    assert_eq!(refer.method, Method::Refer);
    let refer_to = refer.headers.get("Refer-To").expect("Refer-To");
    assert!(
        refer_to.starts_with(&format!("<{PLAN_TARGET}?")),
        "{refer_to}"
    );
    assert_eq!(refer.headers.get_all("Refer-To").count(), 1);
    assert_eq!(
        refer.headers.get("Referred-By"),
        Some("<sip:ivrd@127.0.0.1:5060>"),
        "ivrd refers, not the caller"
    );
    // The Request-URI is the caller's Contact (RFC 3261 §12.2.1.1); no header carries it.
    let headers = format!("{:?}", refer.headers);
    assert!(
        !headers.contains("203.0.113.66"),
        "nothing of the caller's: {headers}"
    );
    // The caller's Contact names an untrusted host: the REFER goes to the trunk it came from.
    assert_eq!(to.addr, "127.0.0.1:5061".parse().expect("addr"));

    // Only the trunk's NOTIFY counts, and it reports on the plan's target.
    assert!(transfer_outcome(&h.send(&respond_to(&refer, 202, "caller"))).is_none());
    let out = h.send(&notify("x1", &tag, 4, "SIP/2.0 200 OK"));
    assert_eq!(transfer_outcome(&out), Some(TransferOutcome::Succeeded));
}

#[test]
fn a_stranger_who_knows_the_dialog_cannot_end_it_nor_fake_a_transfer() {
    let mut h = Harness::new(EndpointConfig::default());
    let tag = h.answered_call("s1");
    let request = TransferRequest {
        target: PLAN_TARGET.into(),
        headers: vec![],
        user_to_user: vec![],
    };
    assert!(h.ep.transfer(h.now, CallHandle(1), &request));
    h.drain();
    // The INVITE's (accepted, RFC 6026 Timer L) and our REFER's.
    let transactions = h.ep.transaction_count();
    let stranger = "198.51.100.7:5060";
    let out = h.send_from(stranger, &notify("s1", &tag, 2, "SIP/2.0 200 OK"));
    assert_eq!(codes(&out), [403]);
    assert!(
        transfer_outcome(&out).is_none(),
        "a stranger's NOTIFY is no outcome"
    );
    let out = h.send_from(stranger, &in_dialog("BYE", "z9hG4bK3", "s1", &tag, 3, ""));
    assert_eq!(codes(&out), [403]);
    assert_eq!(h.ep.active_calls(), 1, "the call goes on");
    // Strangers' requests hold no transaction, and beyond a burst get no answer at all.
    assert_eq!(
        h.ep.transaction_count(),
        transactions,
        "none for the stranger"
    );
    let answered: usize = (0..100)
        .map(|i| {
            let opts = in_dialog(
                "OPTIONS",
                &format!("z9hG4bKo{i}"),
                &format!("o{i}"),
                "x",
                1,
                "",
            );
            codes(&h.send_from(stranger, &opts)).len()
        })
        .sum();
    assert!(
        answered < 20,
        "{answered} answers to a stranger's OPTIONS flood"
    );
    assert_eq!(h.ep.transaction_count(), transactions);
}

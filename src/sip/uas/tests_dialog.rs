//! Scenario tests of everything but setting up a call, on the Endpoint with a fake clock: requests
//! outside any call (malformed, OPTIONS, unsupported methods), requests inside an answered call
//! (re-INVITE, UPDATE, our BYE, REFER and its NOTIFYs), and the per-method request/response tally.

use super::tests::{
    Harness, OFFER, codes, in_dialog, invite, notify, requests, respond_to, responses, to_tag,
    transfer_outcome,
};
use super::*;
use crate::sip::method::Method;
use std::time::Duration;

#[test]
fn malformed_and_unsupported_requests() {
    let mut h = Harness::new(EndpointConfig::default());
    let no_callid = invite("z9hG4bK1", "c", OFFER).replace("Call-ID: c\r\n", "");
    let out = h.send(&no_callid);
    assert_eq!(codes(&out), [400]);
    assert_eq!(responses(&out)[0].reason, "missing Call-ID header");
    // Stateless or not, a final response carries a To tag (RFC 3261 §8.2.6.2).
    assert!(!to_tag(&responses(&out)[0]).is_empty());
    let bad_len = invite("z9hG4bK2", "c", OFFER).replace(
        &format!("Content-Length: {}", OFFER.len()),
        "Content-Length: 9999",
    );
    assert_eq!(codes(&h.send(&bad_len)), [400]);
    assert!(h.send("garbage\r\n\r\n").is_empty());
    assert_eq!(h.ep.counters().parse_errors, 3);
    assert_eq!(h.ep.counters().dropped, 1);
    let opts = in_dialog("OPTIONS", "z9hG4bK3", "o", "x", 1, "").replace(";tag=x", "");
    let out = h.send(&opts);
    assert_eq!(codes(&out), [200]);
    assert!(
        responses(&out)[0]
            .headers
            .get("Allow")
            .is_some_and(|a| a.contains("INVITE"))
    );
    assert_eq!(
        codes(
            &h.send(
                &opts
                    .replace("OPTIONS", "REGISTER")
                    .replace("z9hG4bK3", "z9hG4bK4")
            )
        ),
        [405]
    );
    assert_eq!(
        codes(
            &h.send(
                &opts
                    .replace("OPTIONS", "FROB")
                    .replace("z9hG4bK3", "z9hG4bK5")
            )
        ),
        [501]
    );
    assert_eq!(
        codes(&h.send(&in_dialog("BYE", "z9hG4bK6", "nope", "t", 2, ""))),
        [481]
    );
    assert_eq!(
        codes(&h.send(&in_dialog("INVITE", "z9hG4bK7", "nope", "t", 2, OFFER))),
        [481]
    );
}

#[test]
fn reinvite_hold_and_unhold_answer_with_direction() {
    let mut h = Harness::new(EndpointConfig::default());
    let tag = h.answered_call("h1");
    let hold = format!("{OFFER}a=sendonly\r\n");
    let out = h.send(&in_dialog("INVITE", "z9hG4bK3", "h1", &tag, 2, &hold));
    let ok = &responses(&out)[0];
    assert_eq!(ok.code, 200);
    let body = String::from_utf8_lossy(&ok.body).to_string();
    assert!(
        body.contains("a=recvonly") && body.contains("o=ivrd ") && body.contains(" 2 IN IP4"),
        "{body}"
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::MediaChanged {
            our_direction: crate::sip::sdp::Direction::RecvOnly,
            ..
        }
    )));
    // A second re-INVITE before the ACK of the first: 491 (§14.2).
    assert_eq!(
        codes(&h.send(&in_dialog("INVITE", "z9hG4bK4", "h1", &tag, 3, OFFER))),
        [491]
    );
    h.send(&in_dialog("ACK", "z9hG4bK5", "h1", &tag, 2, ""));
    let out = h.send(&in_dialog("UPDATE", "z9hG4bK6", "h1", &tag, 4, OFFER));
    assert!(String::from_utf8_lossy(&responses(&out)[0].body).contains("a=sendrecv"));
    // Lower CSeq than the last: 500.
    assert_eq!(
        codes(&h.send(&in_dialog("INFO", "z9hG4bK7", "h1", &tag, 3, ""))),
        [500]
    );
}

#[test]
fn hang_up_sends_bye_that_retransmits_until_answered() {
    let mut h = Harness::new(EndpointConfig::default());
    let tag = h.answered_call("b1");
    h.ep.hang_up(h.now, CallHandle(1), EndReason::LocalHangup, &mut h.pool);
    let out = h.drain();
    let bye = requests(&out).pop().expect("BYE");
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.uri, "sip:caller@127.0.0.1:5061");
    assert!(matches!(
        out.last(),
        Some(Output::CallEnded {
            reason: EndReason::LocalHangup,
            ..
        })
    ));
    let resent = requests(&h.advance(Duration::from_millis(1600)));
    assert_eq!(resent.len(), 2, "Timer E at 500 ms and 1.5 s");
    let branch = bye
        .headers
        .get("Via")
        .and_then(|v| crate::sip::header::Via::parse(v).ok())
        .and_then(|v| v.branch)
        .expect("branch");
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\nFrom: <sip:12345@127.0.0.1>;tag={tag}\r\n\
         To: <sip:+8613800000000@127.0.0.1>;tag=caller\r\nCall-ID: b1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    h.send(&ok);
    assert!(requests(&h.advance(Duration::from_secs(10))).is_empty());
    assert_eq!(
        h.ep.transaction_count(),
        1,
        "only the INVITE transaction lingers (Timer L)"
    );
}

#[test]
fn refer_then_notify_sipfrag_reports_the_transfer() {
    let mut h = Harness::new(EndpointConfig::default());
    let tag = h.answered_call("t1");
    let request = TransferRequest {
        target: "sip:queue-help@127.0.0.1:5090".into(),
        headers: vec![("X-Case-Id".into(), "C1".into())],
        user_to_user: b"H".to_vec(),
    };
    assert!(h.ep.transfer(h.now, CallHandle(1), &request));
    assert!(
        !h.ep.transfer(h.now, CallHandle(1), &request),
        "one transfer at a time"
    );
    let refer = requests(&h.drain()).pop().expect("REFER");
    assert_eq!(refer.method, Method::Refer);
    assert_eq!(refer.headers.get("X-Case-Id"), Some("C1"));
    assert_eq!(
        refer.headers.get("Refer-To"),
        Some("<sip:queue-help@127.0.0.1:5090?X-Case-Id=C1&User-to-User=48%3Bencoding%3Dhex>")
    );
    assert!(transfer_outcome(&h.send(&respond_to(&refer, 202, "caller"))).is_none());
    let out = h.send(&notify("t1", &tag, 2, "SIP/2.0 180 Ringing"));
    assert_eq!((codes(&out), transfer_outcome(&out)), (vec![200], None));
    let out = h.send(&notify("t1", &tag, 3, "SIP/2.0 200 OK"));
    assert_eq!(transfer_outcome(&out), Some(TransferOutcome::Succeeded));
    // A NOTIFY after the transfer ended belongs to no subscription.
    assert_eq!(
        codes(&h.send(&notify("t1", &tag, 4, "SIP/2.0 200 OK"))),
        [481]
    );
}

#[test]
fn refused_or_unanswered_refer_fails_the_transfer() {
    let mut h = Harness::new(EndpointConfig::default());
    h.answered_call("t2");
    let request = TransferRequest {
        target: "sip:110@127.0.0.1".into(),
        headers: vec![],
        user_to_user: vec![],
    };
    h.ep.transfer(h.now, CallHandle(1), &request);
    let refer = requests(&h.drain()).pop().expect("REFER");
    let out = h.send(&respond_to(&refer, 603, "caller"));
    assert_eq!(
        transfer_outcome(&out),
        Some(TransferOutcome::Failed { code: Some(603) })
    );
    // No answer at all: Timer F (64*T1) fails it.
    h.ep.transfer(h.now, CallHandle(1), &request);
    h.drain();
    let out = h.advance(Duration::from_secs(33));
    assert_eq!(
        transfer_outcome(&out),
        Some(TransferOutcome::Failed { code: None })
    );
}

#[test]
fn requests_and_responses_are_tallied_by_method_and_code() {
    let mut h = Harness::new(EndpointConfig::default());
    let out = h.send(&invite("z9hG4bK1", "c1", OFFER));
    let tag = to_tag(&responses(&out)[1]);
    h.advance(Duration::from_millis(500)); // one 200 retransmission: not a new response
    h.send(&in_dialog("ACK", "z9hG4bK2", "c1", &tag, 1, ""));
    h.send(&in_dialog("BYE", "z9hG4bK3", "c1", &tag, 2, ""));
    h.send(&in_dialog("BYE", "z9hG4bK3", "c1", &tag, 2, "")); // retransmitted request
    h.send_from("192.0.2.9:5060", &invite("z9hG4bKa", "x1", OFFER));
    let options = invite("z9hG4bKo", "o1", "").replace("INVITE", "OPTIONS");
    assert_eq!(codes(&h.send(&options)), [200]);
    let foo = invite("z9hG4bKf", "f1", "").replace("INVITE", "FOO");
    assert_eq!(codes(&h.send(&foo)), [501]);
    let c = h.ep.counters();
    let req: Vec<(&str, u64)> = c.requests.iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(
        req,
        [
            ("other", 1),
            ("INVITE", 2),
            ("ACK", 1),
            ("BYE", 2),
            ("OPTIONS", 1)
        ]
    );
    let resp: Vec<(&str, u16, u64)> = c.responses.iter().filter(|r| r.2 > 0).collect();
    assert_eq!(
        resp,
        [
            // The untrusted INVITE gets a stateless 403 and no 100 Trying.
            ("INVITE", 100, 1),
            ("INVITE", 200, 1),
            ("BYE", 200, 1),
            ("INVITE", 403, 1),
            ("OPTIONS", 200, 1),
            ("other", 501, 1)
        ]
    );
    assert_eq!(c.retransmissions_sent, 2, "the 200 to INVITE and to BYE");
}

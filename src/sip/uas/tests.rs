//! Scenario tests of the UAS core on a fake clock: raw SIP in, outputs checked. This file holds
//! the harness the other `tests_*` modules share, and the tests of setting up a call: the INVITE
//! server transaction from 100 Trying to the answer or a refusal, CANCEL, late offer, and the 2xx
//! that goes unacknowledged.

use super::*;
use crate::sip::message::{Message, Response, parse};
use crate::sip::method::Method;
use std::time::Duration;

pub(super) struct Pool {
    pub(super) free: Vec<u16>,
    pub(super) released: Vec<u16>,
}

impl RtpPortSource for Pool {
    fn reserve(&mut self) -> Option<u16> {
        self.free.pop()
    }
    fn release(&mut self, port: u16) {
        self.released.push(port);
    }
}

pub(super) struct Harness {
    pub(super) ep: Endpoint,
    pub(super) pool: Pool,
    pub(super) now: Instant,
}

const PEER: &str = "127.0.0.1:5061";
const LOCAL: &str = "127.0.0.1:5060";
pub(super) const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

impl Harness {
    pub(super) fn new(cfg: EndpointConfig) -> Harness {
        let t0 = Instant::now();
        Harness {
            ep: Endpoint::new(cfg),
            pool: Pool {
                free: vec![20002, 20000],
                released: vec![],
            },
            now: t0,
        }
    }

    pub(super) fn send_from(&mut self, source: &str, text: &str) -> Vec<Output> {
        let inbound = Inbound {
            transport: Transport::Udp,
            source: source.parse().expect("addr"),
            local: LOCAL.parse().expect("addr"),
            conn: None,
            data: text.as_bytes(),
        };
        self.ep.handle_inbound(self.now, inbound, &mut self.pool);
        self.drain()
    }

    pub(super) fn send(&mut self, text: &str) -> Vec<Output> {
        self.send_from(PEER, text)
    }

    pub(super) fn advance(&mut self, by: Duration) -> Vec<Output> {
        let target = self.now + by;
        let mut out = Vec::new();
        while let Some(at) = self.ep.poll_timeout().filter(|at| *at <= target) {
            self.now = at.max(self.now);
            self.ep.handle_timeout(self.now, &mut self.pool);
            out.extend(self.drain());
        }
        self.now = target;
        out
    }

    pub(super) fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.ep.poll_output()).collect()
    }

    /// A call `call_id` offered with [`OFFER`], answered and acknowledged; returns our To tag.
    pub(super) fn answered_call(&mut self, call_id: &str) -> String {
        let out = self.send(&invite("z9hG4bK1", call_id, OFFER));
        let tag = to_tag(&responses(&out)[1]);
        self.send(&in_dialog("ACK", "z9hG4bK2", call_id, &tag, 1, ""));
        tag
    }
}

pub(super) fn responses(out: &[Output]) -> Vec<Response> {
    out.iter()
        .filter_map(|o| match parse(o.transmission()?.1) {
            Ok(Message::Response(r)) => Some(r),
            _ => None,
        })
        .collect()
}

pub(super) fn codes(out: &[Output]) -> Vec<u16> {
    responses(out).iter().map(|r| r.code).collect()
}

pub(super) fn requests(out: &[Output]) -> Vec<crate::sip::message::Request> {
    out.iter()
        .filter_map(|o| match parse(o.transmission()?.1) {
            Ok(Message::Request(r)) => Some(r),
            _ => None,
        })
        .collect()
}

pub(super) fn invite(branch: &str, call_id: &str, body: &str) -> String {
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "INVITE sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch={branch}\r\n\
         From: <sip:+8613800000000@127.0.0.1>;tag=caller\r\nTo: <sip:12345@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:5061>\r\nMax-Forwards: 70\r\n\
         {ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

pub(super) fn in_dialog(
    method: &str,
    branch: &str,
    call_id: &str,
    to_tag: &str,
    cseq: u32,
    body: &str,
) -> String {
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:ivrd@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch={branch}\r\n\
         From: <sip:+8613800000000@127.0.0.1>;tag=caller\r\nTo: <sip:12345@127.0.0.1>;tag={to_tag}\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

pub(super) fn to_tag(resp: &Response) -> String {
    let to = resp.headers.get("To").expect("To");
    crate::sip::header::NameAddr::parse(to, "To")
        .expect("to")
        .tag()
        .expect("tag")
        .to_string()
}

pub(super) fn started(out: &[Output]) -> Option<CallInfo> {
    out.iter().find_map(|o| match o {
        Output::CallStarted { info, .. } => Some(info.clone()),
        _ => None,
    })
}

pub(super) fn respond_to(req: &crate::sip::message::Request, code: u16, to_tag: &str) -> String {
    format!(
        "SIP/2.0 {code} X\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag={to_tag}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        req.headers.get("Via").expect("via"),
        req.headers.get("From").expect("from"),
        req.headers
            .get("To")
            .expect("to")
            .split(";tag=")
            .next()
            .expect("to"),
        req.headers.get("Call-ID").expect("cid"),
        req.headers.get("CSeq").expect("cseq"),
    )
}

pub(super) fn notify(call_id: &str, tag: &str, cseq: u32, frag: &str) -> String {
    let body = format!("{frag}\r\n");
    in_dialog("NOTIFY", &format!("z9hG4bKn{cseq}"), call_id, tag, cseq, "")
        .replace("Content-Length: 0\r\n", &format!("Event: refer\r\nSubscription-State: active\r\nContent-Type: message/sipfrag\r\nContent-Length: {}\r\n", body.len()))
        + &body
}

pub(super) fn transfer_outcome(out: &[Output]) -> Option<TransferOutcome> {
    out.iter().find_map(|o| match o {
        Output::Transfer { outcome, .. } => Some(*outcome),
        _ => None,
    })
}

#[test]
fn basic_call_answer_ack_bye() {
    let mut h = Harness::new(EndpointConfig::default());
    let out = h.send(&invite("z9hG4bK1", "c1", OFFER));
    assert_eq!(codes(&out), [100, 200]);
    let ok = &responses(&out)[1];
    let body = String::from_utf8_lossy(&ok.body).to_string();
    assert!(body.contains("m=audio 20000 RTP/AVP 0 101"), "{body}");
    assert!(
        ok.headers
            .get("Contact")
            .is_some_and(|c| c.contains("sip:ivrd@127.0.0.1:5060"))
    );
    let info = started(&out).expect("call started");
    assert_eq!(
        (info.rtp_port, info.called.as_str()),
        (20000, "sip:12345@127.0.0.1")
    );
    // The first 200 is not sent directly: it travels with the call, for the driver to send
    // once the call's crash marker is durable.
    let direct: Vec<_> = out
        .iter()
        .filter(|o| matches!(o, Output::Transmit { .. }))
        .collect();
    assert_eq!(
        codes(&direct.into_iter().cloned().collect::<Vec<_>>()),
        [100]
    );
    assert!(matches!(
        out.iter().find(|o| matches!(o, Output::CallStarted { .. })),
        Some(Output::CallStarted {
            answer: Some(_),
            ..
        })
    ));
    // The 200 is retransmitted at T1 until the ACK arrives (§13.3.1.4).
    assert_eq!(codes(&h.advance(Duration::from_millis(500))), [200]);
    let tag = to_tag(ok);
    assert!(
        h.send(&in_dialog("ACK", "z9hG4bK2", "c1", &tag, 1, ""))
            .is_empty()
    );
    assert!(
        codes(&h.advance(Duration::from_secs(10))).is_empty(),
        "no retransmission after ACK"
    );
    let out = h.send(&in_dialog("BYE", "z9hG4bK3", "c1", &tag, 2, ""));
    assert_eq!(codes(&out), [200]);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::CallEnded {
            reason: EndReason::RemoteBye,
            ..
        }
    )));
    assert_eq!(h.pool.released, [20000]);
    assert_eq!(h.ep.active_calls(), 0);
    // Retransmitted BYE: same 200 again, no second end.
    let again = h.send(&in_dialog("BYE", "z9hG4bK3", "c1", &tag, 2, ""));
    assert_eq!(codes(&again), [200]);
    h.advance(Duration::from_secs(40));
    assert_eq!(h.ep.transaction_count(), 0, "every transaction ends");
}

#[test]
fn invite_retransmission_is_absorbed_after_answer() {
    let cfg = EndpointConfig {
        answer_delay: Duration::from_secs(2),
        ..Default::default()
    };
    let mut h = Harness::new(cfg);
    assert_eq!(codes(&h.send(&invite("z9hG4bK1", "c1", OFFER))), [100, 180]);
    assert_eq!(
        codes(&h.send(&invite("z9hG4bK1", "c1", OFFER))),
        [180],
        "Proceeding resends the last provisional"
    );
    let out = h.advance(Duration::from_secs(2));
    assert_eq!(codes(&out), [200]);
    assert!(started(&out).is_some());
    assert!(
        codes(&h.send(&invite("z9hG4bK1", "c1", OFFER))).is_empty(),
        "Accepted absorbs (RFC 6026)"
    );
    assert_eq!(h.ep.counters().calls_answered, 1);
}

#[test]
fn cancel_before_answer_gets_200_and_487() {
    let cfg = EndpointConfig {
        answer_delay: Duration::from_secs(5),
        ..Default::default()
    };
    let mut h = Harness::new(cfg);
    let ringing = h.send(&invite("z9hG4bKc", "c2", OFFER));
    let tag = to_tag(&responses(&ringing)[1]);
    let cancel = "CANCEL sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKc\r\n\
        From: <sip:+8613800000000@127.0.0.1>;tag=caller\r\nTo: <sip:12345@127.0.0.1>\r\n\
        Call-ID: c2\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
    let out = h.send(cancel);
    let resps = responses(&out);
    assert_eq!(codes(&out), [200, 487]);
    assert!(
        resps[0]
            .headers
            .get("CSeq")
            .is_some_and(|c| c.ends_with("CANCEL"))
    );
    assert_eq!(to_tag(&resps[1]), tag, "487 carries the dialog's tag");
    assert_eq!(
        to_tag(&resps[0]),
        tag,
        "so does the 200 to the CANCEL (RFC 3261 §9.2)"
    );
    assert_eq!(h.pool.released, [20000]);
    // The ACK for the 487 matches the INVITE transaction; no answer comes later.
    let ack = format!(
        "ACK sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKc\r\n\
         From: <sip:+8613800000000@127.0.0.1>;tag=caller\r\nTo: <sip:12345@127.0.0.1>;tag={tag}\r\n\
         Call-ID: c2\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    assert!(h.send(&ack).is_empty());
    assert!(codes(&h.advance(Duration::from_secs(10))).is_empty());
    // CANCEL for nothing: 481.
    assert_eq!(
        codes(&h.send(&cancel.replace("z9hG4bKc", "z9hG4bKzz"))),
        [481]
    );
}

#[test]
fn late_offer_is_answered_in_the_ack() {
    let mut h = Harness::new(EndpointConfig::default());
    let out = h.send(&invite("z9hG4bK1", "late", ""));
    let ok = &responses(&out)[1];
    assert!(String::from_utf8_lossy(&ok.body).contains("m=audio 20000 RTP/AVP 0 8 101"));
    assert_eq!(started(&out).and_then(|i| i.audio), None);
    let answer = OFFER.replace("m=audio 6000 RTP/AVP 0 101", "m=audio 6100 RTP/AVP 8 101");
    let out = h.send(&in_dialog(
        "ACK",
        "z9hG4bK2",
        "late",
        &to_tag(ok),
        1,
        &answer,
    ));
    let changed = out.iter().find_map(|o| match o {
        Output::MediaChanged { audio, .. } => Some(audio.clone()),
        _ => None,
    });
    let audio = changed.expect("media from the ACK");
    assert_eq!(audio.codec, crate::sip::sdp::AudioCodec::Pcma);
    assert_eq!(audio.remote, Some("127.0.0.1:6100".parse().expect("addr")));
}

#[test]
fn policy_refusals_403_488_503_415() {
    let cfg = EndpointConfig {
        max_calls: 1,
        ..Default::default()
    };
    let mut h = Harness::new(cfg);
    let out = h.send_from("192.0.2.9:5060", &invite("z9hG4bKa", "x1", OFFER));
    assert_eq!(codes(&out), [403], "stateless: no 100, no transaction");
    assert_eq!(h.ep.counters().acl_rejected, 1);
    assert_eq!(h.ep.transaction_count(), 0);
    let opus = OFFER
        .replace("RTP/AVP 0 101", "RTP/AVP 96")
        .replace("telephone-event", "opus");
    let out = h.send(&invite("z9hG4bKb", "x2", &opus));
    assert_eq!(codes(&out), [100, 488]);
    assert!(
        responses(&out)[1]
            .headers
            .get("Warning")
            .is_some_and(|w| w.starts_with("305 "))
    );
    assert_eq!(codes(&h.send(&invite("z9hG4bKc", "x3", OFFER))), [100, 200]);
    let out = h.send(&invite("z9hG4bKd", "x4", OFFER));
    assert_eq!(codes(&out), [100, 503]);
    assert_eq!(responses(&out)[1].headers.get("Retry-After"), Some("30"));
    let xml = invite("z9hG4bKe", "x5", OFFER).replace("application/sdp", "application/xml");
    h.ep.max_calls_for_test(5);
    assert_eq!(codes(&h.send(&xml)), [100, 415]);
    h.ep.begin_drain();
    assert_eq!(codes(&h.send(&invite("z9hG4bKf", "x6", OFFER))), [100, 503]);
    // Refused INVITEs' finals are retransmitted until ACKed (Timer G), then end (Timer H).
    assert!(codes(&h.advance(Duration::from_millis(500))).contains(&503));
}

#[test]
fn an_untrusted_flood_creates_nothing_and_is_rate_limited() {
    let mut h = Harness::new(EndpointConfig::default());
    let mut answered = 0;
    for i in 0..1000 {
        let out = h.send_from(
            "203.0.113.7:5060",
            &invite(&format!("z9hG4bKf{i}"), &format!("f{i}"), OFFER),
        );
        answered += codes(&out).len();
        assert!(
            out.iter().all(|o| matches!(o, Output::Transmit { .. })),
            "never a call"
        );
    }
    assert_eq!(h.ep.active_calls(), 0);
    assert_eq!(h.ep.transaction_count(), 0);
    assert_eq!(answered, 20, "a burst of refusals, then silence");
    assert_eq!(h.ep.counters().acl_rejected, 1000);
    assert_eq!(h.ep.counters().dropped, 980);
    // A trusted trunk is unaffected, but only for the numbers ivrd serves (no open relay).
    let relay = invite("z9hG4bKr", "r", OFFER).replace("sip:12345@", "sip:0085212345678@");
    assert_eq!(codes(&h.send(&relay)), [100, 404]);
    assert_eq!(
        codes(&h.send(&invite("z9hG4bKok", "ok", OFFER))),
        [100, 200]
    );
}
#[test]
fn missing_ack_ends_the_call_with_bye_after_64_t1() {
    let mut h = Harness::new(EndpointConfig::default());
    h.send(&invite("z9hG4bK1", "n1", OFFER));
    let out = h.advance(Duration::from_secs(33));
    assert_eq!(
        codes(&out).len(),
        10,
        "200 resent at 0.5,1.5,3.5,7.5..31.5 s"
    );
    assert!(requests(&out).iter().any(|r| r.method == Method::Bye));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::CallEnded {
            reason: EndReason::NoAck,
            ..
        }
    )));
}

/// Fuzz finding (sip_endpoint): an INVITE whose Contact could not be parsed was answered 400
/// after its RTP port had been reserved, and the port never went back to the pool; enough such
/// INVITEs exhaust the pool and every later call gets 503.
#[test]
fn invite_with_a_malformed_contact_returns_its_port() {
    let mut h = Harness::new(EndpointConfig::default());
    let bad = invite("z9hG4bKbadc", "badc", OFFER).replace(
        "Contact: <sip:caller@127.0.0.1:5061>",
        "Contact: <sip:caller@127.0.0.1:5061",
    );
    let out = h.send(&bad);
    assert_eq!(codes(&out), [100, 400]);
    assert_eq!(h.pool.released, [20000]);
    assert_eq!(h.ep.active_calls(), 0);
}

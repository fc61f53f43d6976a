//! Black-box tests: the real server on 127.0.0.1 port 0, spoken to in raw SIP over UDP and TCP.
//! Each test starts its own server, so tests are independent and run in parallel.

mod common;

use common::{Leg, Msg, TcpPeer, TestServer, UdpPeer, branch, respond, sdp_offer, test_config};
use std::io::Write as _;
use std::time::Duration;

/// The `a=` direction attribute of an SDP body.
fn direction(sdp: &str) -> Option<&str> {
    sdp.lines()
        .map(str::trim)
        .find(|l| ["a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"].contains(l))
}

/// The session version of an SDP body's `o=` line (RFC 4566 §5.2).
fn session_version(sdp: &str) -> u64 {
    let o = sdp.lines().find(|l| l.starts_with("o=")).expect("o= line");
    o.split_whitespace()
        .nth(2)
        .expect("version")
        .parse()
        .expect("number")
}

/// INVITE with `body` (or none), through 200; returns the 200 with the leg updated.
fn call_up(peer: &UdpPeer, leg: &mut Leg, body: Option<&str>) -> Msg {
    peer.send(&leg.request("INVITE", &branch(), leg.cseq, "INVITE", &[], body));
    let ok = peer.expect(200, "INVITE");
    leg.learn(&ok);
    ok
}

fn ack(peer: &UdpPeer, leg: &Leg, cseq: u32, body: Option<&str>) {
    peer.send(&leg.request("ACK", &branch(), cseq, "ACK", &[], body));
}

fn bye(peer: &UdpPeer, leg: &mut Leg) -> Msg {
    let cseq = leg.next_cseq();
    peer.send(&leg.request("BYE", &branch(), cseq, "BYE", &[], None));
    peer.recv_final("BYE")
}

#[test]
fn basic_call_over_udp() {
    let srv = TestServer::start(test_config());
    let peer = UdpPeer::new(srv.udp);
    let mut leg = Leg::new(peer.local(), "UDP");
    let offer = sdp_offer("127.0.0.1:40000".parse().unwrap(), &[0, 8, 101], None);
    peer.send(&leg.request("INVITE", &branch(), 1, "INVITE", &[], Some(&offer)));

    let trying = peer.recv();
    assert_eq!(trying.code(), Some(100));
    assert_eq!(trying.to_tag(), None, "100 Trying carries no To-tag");
    let via = trying.header("Via").unwrap();
    assert!(
        via.contains(&format!("rport={}", peer.local().port())),
        "rport filled in (RFC 3581): {via}"
    );

    let ok = peer.expect(200, "INVITE");
    assert!(ok.to_tag().is_some());
    assert_eq!(ok.header("Call-ID"), Some(leg.call_id.as_str()));
    assert!(ok.contact_uri().unwrap().starts_with("sip:"));
    assert_eq!(ok.header("Content-Type"), Some("application/sdp"));
    assert!(ok.body.contains("c=IN IP4 127.0.0.1"), "{}", ok.body);
    assert!(ok.body.contains("m=audio "), "{}", ok.body);
    assert!(
        ok.body.contains("a=rtpmap:0 PCMU/8000"),
        "PCMU preferred: {}",
        ok.body
    );
    assert!(ok.body.contains("telephone-event/8000"), "{}", ok.body);
    assert!(ok.body.contains("a=ptime:20"), "{}", ok.body);
    assert_eq!(direction(&ok.body), Some("a=sendrecv"));
    leg.learn(&ok);

    ack(&peer, &leg, 1, None);
    assert_eq!(bye(&peer, &mut leg).code(), Some(200));
    // The dialog is gone: a second BYE matches nothing.
    assert_eq!(bye(&peer, &mut leg).code(), Some(481));
}

#[test]
fn basic_call_over_ipv6() {
    let mut cfg = test_config();
    cfg.sip.listen = vec!["[::1]:0".parse().unwrap()];
    let srv = TestServer::start(cfg);
    let peer = UdpPeer::new(srv.udp);
    let mut leg = Leg::new(peer.local(), "UDP");
    leg.remote_target = Some(format!("sip:12345@{}", srv.udp));
    let offer = sdp_offer("[::1]:40022".parse().unwrap(), &[0], None);
    let ok = call_up(&peer, &mut leg, Some(&offer));
    assert!(ok.body.contains("c=IN IP6 ::1"), "{}", ok.body);
    let contact = ok.contact_uri().unwrap();
    assert!(contact.contains("[::1]:"), "{contact}");
    ack(&peer, &leg, 1, None);
    assert_eq!(bye(&peer, &mut leg).code(), Some(200));
}

#[test]
fn tel_uris_are_accepted() {
    let srv = TestServer::start(test_config());
    let peer = UdpPeer::new(srv.udp);
    let mut leg = Leg::new(peer.local(), "UDP");
    leg.remote_target = Some("tel:12345;phone-context=+86-898".into());
    let offer = sdp_offer("127.0.0.1:40024".parse().unwrap(), &[0], None);
    let ok = call_up(&peer, &mut leg, Some(&offer));
    assert!(ok.to_tag().is_some());
    ack(&peer, &leg, 1, None);
    assert_eq!(bye(&peer, &mut leg).code(), Some(200));
}

#[test]
fn compact_headers_folded_lines_and_multiple_vias() {
    let srv = TestServer::start(test_config());
    let peer = UdpPeer::new(srv.udp);
    let mut leg = Leg::new(peer.local(), "UDP");
    let body = sdp_offer("127.0.0.1:40002".parse().unwrap(), &[8], None);
    let b = branch();
    let invite = format!(
        "INVITE sip:12345@127.0.0.1 SIP/2.0\r\n\
         v: SIP/2.0/UDP {local};branch={b};rport, SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKproxy\r\n\
         f: \"Caller\"\r\n <sip:13800138000@127.0.0.1>;tag={ft}\r\n\
         t: <sip:12345@127.0.0.1>\r\n\
         i: {cid}\r\n\
         CSeq: 1\r\n\tINVITE\r\n\
         m: <sip:caller@{local}>\r\n\
         Subject: a subject\r\n  folded over two lines\r\n\
         Max-Forwards: 70\r\n\
         c: application/sdp\r\n\
         l: {len}\r\n\r\n{body}",
        local = leg.local,
        ft = leg.from_tag,
        cid = leg.call_id,
        len = body.len(),
    );
    peer.send(&invite);
    let ok = peer.expect(200, "INVITE");
    assert_eq!(ok.header("Call-ID"), Some(leg.call_id.as_str()));
    let vias = ok.all("Via");
    assert_eq!(vias.len(), 2, "both Via values come back: {vias:?}");
    assert!(vias[0].contains(&b) && vias[1].contains("z9hG4bKproxy"));
    assert!(ok.header("From").unwrap().contains(&leg.from_tag));
    assert!(ok.body.contains("a=rtpmap:8 PCMA/8000"), "{}", ok.body);
    leg.learn(&ok);
    ack(&peer, &leg, 1, None);
    assert_eq!(bye(&peer, &mut leg).code(), Some(200));
}

#[test]
fn invite_retransmission_is_absorbed_and_answered_again() {
    let mut cfg = test_config();
    // One call only: a retransmission taken for a new call would get 503.
    cfg.sip.max_calls = 1;
    // A long T1 keeps our own 2xx retransmission schedule out of the silence window below.
    cfg.sip.t1_ms = 1000;
    cfg.sip.t2_ms = 4000;
    let srv = TestServer::start(cfg);
    let peer = UdpPeer::new(srv.udp);
    let mut leg = Leg::new(peer.local(), "UDP");
    let b = branch();
    let offer = sdp_offer("127.0.0.1:40004".parse().unwrap(), &[0], None);
    let invite = leg.request("INVITE", &b, 1, "INVITE", &[], Some(&offer));
    peer.send(&invite);
    let first = peer.expect(200, "INVITE");
    peer.send(&invite);
    let again = peer.expect(200, "INVITE");
    assert_eq!(
        first.to_tag(),
        again.to_tag(),
        "same transaction, same dialog"
    );
    assert_eq!(first.body, again.body, "the same 200 is sent again");
    leg.learn(&first);
    ack(&peer, &leg, 1, None);
    peer.expect_silence(
        Duration::from_millis(1500),
        "200 retransmission after the ACK",
    );
    assert_eq!(bye(&peer, &mut leg).code(), Some(200));
}

#[test]
fn unacknowledged_200_is_retransmitted_then_the_call_is_hung_up() {
    let mut cfg = test_config();
    // 64*T1 = 1.28 s until ivrd gives up on the ACK (RFC 3261 §13.3.1.4).
    cfg.sip.t1_ms = 20;
    cfg.sip.t2_ms = 80;
    let srv = TestServer::start(cfg);
    let peer = UdpPeer::new(srv.udp);
    let mut leg = Leg::new(peer.local(), "UDP");
    let ok = call_up(&peer, &mut leg, None);
    let again = peer.expect(200, "INVITE");
    assert_eq!(ok.to_tag(), again.to_tag());
    let bye = loop {
        let m = peer.recv();
        if m.method().is_some() {
            break m;
        }
        assert_eq!(
            m.code(),
            Some(200),
            "only 200 retransmissions before the BYE"
        );
    };
    assert_eq!(bye.method(), Some("BYE"));
    assert_eq!(bye.header("Call-ID"), Some(leg.call_id.as_str()));
    assert!(bye.header("To").unwrap().contains(&leg.from_tag));
    peer.send(&respond(&bye, 200, "OK"));
}

#[test]
fn cancel_before_answer_gives_200_and_487() {
    let mut cfg = test_config();
    cfg.sip.answer_delay_ms = 1000;
    cfg.sip.t1_ms = 500;
    cfg.sip.t2_ms = 4000;
    let srv = TestServer::start(cfg);
    let peer = UdpPeer::new(srv.udp);
    let leg = Leg::new(peer.local(), "UDP");
    let b = branch();
    let offer = sdp_offer("127.0.0.1:40006".parse().unwrap(), &[0], None);
    peer.send(&leg.request("INVITE", &b, 1, "INVITE", &[], Some(&offer)));
    assert_eq!(peer.recv().code(), Some(100));
    let ringing = peer.recv();
    assert_eq!(ringing.code(), Some(180));
    assert!(ringing.to_tag().is_some());

    // §9.1: CANCEL carries the INVITE's branch, Call-ID, From, To and CSeq number.
    peer.send(&leg.request("CANCEL", &b, 1, "CANCEL", &[], None));
    let got = peer.expect_all(&[(200, "CANCEL"), (487, "INVITE")]);
    let terminated = &got[1];
    assert_eq!(terminated.to_tag(), ringing.to_tag());
    let mut acked = leg.clone();
    acked.to_tag = terminated.to_tag();
    // §17.1.1.3: the ACK for a non-2xx final uses the INVITE's branch.
    peer.send(&acked.request("ACK", &b, 1, "ACK", &[], None));
    // Past the answer delay: neither a 200 for the cancelled call nor a 487 retransmission.
    peer.expect_silence(Duration::from_millis(1300), "answer or 487 after CANCEL");

    let stray = Leg::new(peer.local(), "UDP");
    peer.send(&stray.request("CANCEL", &branch(), 1, "CANCEL", &[], None));
    peer.expect(481, "CANCEL");
}

#[test]
fn late_offer_is_answered_with_an_offer_and_takes_the_answer_in_ack() {
    let srv = TestServer::start(test_config());
    let peer = UdpPeer::new(srv.udp);
    let mut leg = Leg::new(peer.local(), "UDP");
    let ok = call_up(&peer, &mut leg, None);
    assert_eq!(ok.header("Content-Type"), Some("application/sdp"));
    let m = ok.body.lines().find(|l| l.starts_with("m=audio")).unwrap();
    assert!(
        m.ends_with("RTP/AVP 0 8 101"),
        "offer lists every codec: {m}"
    );
    assert_eq!(direction(&ok.body), Some("a=sendrecv"));
    let answer = sdp_offer("127.0.0.1:40008".parse().unwrap(), &[8], None);
    ack(&peer, &leg, 1, Some(&answer));
    // The answer is taken silently; the call goes on until BYE.
    peer.expect_silence(Duration::from_millis(300), "response to ACK");
    assert_eq!(bye(&peer, &mut leg).code(), Some(200));
}

#[test]
fn no_common_codec_gives_488_with_warning() {
    let srv = TestServer::start(test_config());
    let peer = UdpPeer::new(srv.udp);
    let mut leg = Leg::new(peer.local(), "UDP");
    let offer = sdp_offer("127.0.0.1:40010".parse().unwrap(), &[18], None);
    peer.send(&leg.request("INVITE", &branch(), 1, "INVITE", &[], Some(&offer)));
    let refused = peer.expect(488, "INVITE");
    let warning = refused.header("Warning").expect("Warning header");
    assert!(warning.starts_with("305 "), "{warning}");
    leg.to_tag = refused.to_tag();
    assert!(leg.to_tag.is_some());
}

#[test]
fn untrusted_source_gets_403() {
    let mut cfg = test_config();
    cfg.sip.trusted = vec!["10.0.0.0/8".parse().unwrap()];
    let srv = TestServer::start(cfg);
    let peer = UdpPeer::new(srv.udp);
    let leg = Leg::new(peer.local(), "UDP");
    let offer = sdp_offer("127.0.0.1:40012".parse().unwrap(), &[0], None);
    peer.send(&leg.request("INVITE", &branch(), 1, "INVITE", &[], Some(&offer)));
    peer.expect(403, "INVITE");
}

#[test]
fn call_limit_gives_503_with_retry_after_until_a_call_ends() {
    let mut cfg = test_config();
    cfg.sip.max_calls = 1;
    cfg.sip.retry_after_secs = 17;
    let srv = TestServer::start(cfg);
    let peer = UdpPeer::new(srv.udp);
    let offer = sdp_offer("127.0.0.1:40014".parse().unwrap(), &[0], None);
    let mut first = Leg::new(peer.local(), "UDP");
    call_up(&peer, &mut first, Some(&offer));
    ack(&peer, &first, 1, None);

    let second = Leg::new(peer.local(), "UDP");
    peer.send(&second.request("INVITE", &branch(), 1, "INVITE", &[], Some(&offer)));
    let busy = peer.expect(503, "INVITE");
    assert_eq!(busy.header("Retry-After"), Some("17"));

    assert_eq!(bye(&peer, &mut first).code(), Some(200));
    let mut third = Leg::new(peer.local(), "UDP");
    call_up(&peer, &mut third, Some(&offer));
}

#[test]
fn malformed_requests_get_400() {
    let srv = TestServer::start(test_config());
    let peer = UdpPeer::new(srv.udp);
    let local = peer.local();
    let no_call_id = format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={}\r\n\
         From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        branch()
    );
    peer.send(&no_call_id);
    peer.expect(400, "OPTIONS");

    for length in ["abc", "500"] {
        let call_id = common::unique("cl-");
        let bad_length = format!(
            "INVITE sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={}\r\n\
             From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {length}\r\n\r\nv=0\r\n",
            branch()
        );
        peer.send(&bad_length);
        let resp = peer.recv();
        assert_eq!(resp.code(), Some(400), "Content-Length {length}");
        assert_eq!(resp.header("Call-ID"), Some(call_id.as_str()));
    }
}

#[test]
fn out_of_dialog_requests_get_481_501_405_and_options_200() {
    let srv = TestServer::start(test_config());
    let peer = UdpPeer::new(srv.udp);
    let mut leg = Leg::new(peer.local(), "UDP");
    leg.to_tag = Some("nosuchdialog".into());
    peer.send(&leg.request("BYE", &branch(), 2, "BYE", &[], None));
    peer.expect(481, "BYE");

    let leg = Leg::new(peer.local(), "UDP");
    peer.send(&leg.request("FOO", &branch(), 1, "FOO", &[], None));
    peer.expect(501, "FOO");

    peer.send(&leg.request("REGISTER", &branch(), 1, "REGISTER", &[], None));
    let refused = peer.expect(405, "REGISTER");
    let allow = refused
        .header("Allow")
        .expect("Allow on 405 (RFC 3261 §21.4.6)");
    assert!(allow.contains("INVITE") && allow.contains("BYE"), "{allow}");
    assert!(!allow.contains("REGISTER"), "{allow}");

    peer.send(&leg.request("OPTIONS", &branch(), 1, "OPTIONS", &[], None));
    let ok = peer.expect(200, "OPTIONS");
    let allow = ok.header("Allow").expect("Allow");
    for m in ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"] {
        assert!(allow.contains(m), "{m} in {allow}");
    }
    assert!(
        ok.header("Accept")
            .expect("Accept")
            .contains("application/sdp")
    );
    assert!(ok.header("Supported").is_some());
}

#[test]
fn reinvite_to_hold_is_answered_recvonly_and_back() {
    let srv = TestServer::start(test_config());
    let peer = UdpPeer::new(srv.udp);
    let mut leg = Leg::new(peer.local(), "UDP");
    let rtp = "127.0.0.1:40016".parse().unwrap();
    let ok = call_up(&peer, &mut leg, Some(&sdp_offer(rtp, &[0, 101], None)));
    ack(&peer, &leg, 1, None);

    let hold = sdp_offer(rtp, &[0, 101], Some("sendonly"));
    let cseq = leg.next_cseq();
    peer.send(&leg.request("INVITE", &branch(), cseq, "INVITE", &[], Some(&hold)));
    let held = peer.expect(200, "INVITE");
    assert_eq!(held.to_tag(), ok.to_tag());
    assert_eq!(direction(&held.body), Some("a=recvonly"), "{}", held.body);
    assert!(session_version(&held.body) > session_version(&ok.body));
    ack(&peer, &leg, cseq, None);

    let resume = sdp_offer(rtp, &[0, 101], Some("sendrecv"));
    let cseq = leg.next_cseq();
    peer.send(&leg.request("INVITE", &branch(), cseq, "INVITE", &[], Some(&resume)));
    let resumed = peer.expect(200, "INVITE");
    assert_eq!(direction(&resumed.body), Some("a=sendrecv"));
    assert!(session_version(&resumed.body) > session_version(&held.body));
    ack(&peer, &leg, cseq, None);
    assert_eq!(bye(&peer, &mut leg).code(), Some(200));
}

#[test]
fn drain_refuses_new_calls_and_hangs_up_active_ones() {
    let mut cfg = test_config();
    cfg.sip.drain_secs = 1;
    let mut srv = TestServer::start(cfg);
    let peer = UdpPeer::new(srv.udp);
    let offer = sdp_offer("127.0.0.1:40018".parse().unwrap(), &[0], None);
    let mut legs = vec![Leg::new(peer.local(), "UDP")];
    call_up(&peer, &mut legs[0], Some(&offer));
    ack(&peer, &legs[0], 1, None);

    srv.shutdown.cancel();
    // The driver may take one INVITE already queued before it sees the token; the one after it
    // must be refused. Two tries at most, then, and every accepted call must be hung up.
    let mut refused = false;
    for _ in 0..2 {
        let mut leg = Leg::new(peer.local(), "UDP");
        peer.send(&leg.request("INVITE", &branch(), 1, "INVITE", &[], Some(&offer)));
        let resp = peer.recv_final("INVITE");
        match resp.code() {
            Some(503) => {
                assert!(resp.header("Retry-After").is_some());
                refused = true;
                break;
            }
            Some(200) => {
                leg.learn(&resp);
                ack(&peer, &leg, 1, None);
                legs.push(leg);
            }
            other => panic!("unexpected {other:?} during the drain"),
        }
    }
    assert!(refused, "new calls get 503 during the drain");

    let mut hung_up = Vec::new();
    while hung_up.len() < legs.len() {
        let m = peer.recv();
        if m.method() == Some("BYE") {
            peer.send(&respond(&m, 200, "OK"));
            hung_up.push(m.header("Call-ID").unwrap().to_string());
        }
    }
    for leg in &legs {
        assert!(hung_up.contains(&leg.call_id), "{} got a BYE", leg.call_id);
    }
    assert!(
        srv.wait_finished(Duration::from_secs(5)),
        "server stops after the drain"
    );
}

#[test]
fn basic_call_over_tcp_with_content_length_framing() {
    let srv = TestServer::start(test_config());
    let mut peer = TcpPeer::connect(srv.tcp);
    let mut leg = Leg::new(peer.local(), "TCP");
    let offer = sdp_offer("127.0.0.1:40020".parse().unwrap(), &[0, 101], None);
    let invite = leg.request("INVITE", &branch(), 1, "INVITE", &[], Some(&offer));
    // One message over two writes: the reader must wait for the whole body.
    let (head, tail) = invite.split_at(invite.len() - 10);
    peer.send(head);
    peer.stream.flush().unwrap();
    std::thread::yield_now();
    peer.send(tail);
    let ok = peer.expect(200, "INVITE");
    assert!(ok.body.contains("m=audio "), "{}", ok.body);
    let contact = ok.contact_uri().unwrap();
    assert!(contact.ends_with(";transport=tcp"), "{contact}");
    leg.learn(&ok);

    // Two messages in one write: ACK and BYE.
    let ack = leg.request("ACK", &branch(), 1, "ACK", &[], None);
    let bye = leg.request("BYE", &branch(), 2, "BYE", &[], None);
    peer.send(&format!("{ack}{bye}"));
    let done = peer.expect(200, "BYE");
    assert_eq!(done.header("Call-ID"), Some(leg.call_id.as_str()));
}

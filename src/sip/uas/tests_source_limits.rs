//! Per-source limits of trusted trunks, and the bound on half-open INVITE transactions, on the
//! Endpoint with a fake clock.

use super::tests::{Harness, codes, in_dialog, invite, responses, started, to_tag};
use super::*;
use std::time::Duration;

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";

fn harness(cfg: EndpointConfig) -> Harness {
    let mut h = Harness::new(cfg);
    h.pool.free = (0..200u16).map(|i| 20000 + 2 * i).collect();
    h
}

fn refused_case(out: &[Output]) -> bool {
    out.iter().any(|o| matches!(o, Output::CallRefused { .. }))
}

#[test]
fn a_source_over_its_call_cap_gets_503_with_retry_after_and_others_do_not() {
    let mut h = harness(EndpointConfig {
        max_calls_per_source: 2,
        ..Default::default()
    });
    let trunk = "127.0.0.1:5061";
    let first = h.send_from(trunk, &invite("z9hG4bKc1", "c1", OFFER));
    assert_eq!(codes(&first), [100, 200]);
    assert_eq!(
        codes(&h.send_from(trunk, &invite("z9hG4bKc2", "c2", OFFER))),
        [100, 200]
    );
    let out = h.send_from(trunk, &invite("z9hG4bKc3", "c3", OFFER));
    assert_eq!(codes(&out), [100, 503]);
    assert_eq!(responses(&out)[1].headers.get("Retry-After"), Some("30"));
    assert!(
        refused_case(&out),
        "a trunk's refused caller is a missed call with a case"
    );
    assert_eq!(h.ep.counters().overload_rejected, 1);
    assert_eq!(h.ep.counters().source_limited_calls, 1);
    // Another trunk address has its own share.
    let other = h.send_from("127.0.0.2:5061", &invite("z9hG4bKo1", "o1", OFFER));
    assert_eq!(codes(&other), [100, 200]);
    // When one of the first trunk's calls ends, it may place another.
    let tag = to_tag(&responses(&first)[1]);
    assert!(started(&first).is_some());
    let bye = in_dialog("BYE", "z9hG4bKb1", "c1", &tag, 2, "");
    assert_eq!(codes(&h.send_from(trunk, &bye)), [200]);
    assert_eq!(
        codes(&h.send_from(trunk, &invite("z9hG4bKc4", "c4", OFFER))),
        [100, 200]
    );
    assert_eq!(h.ep.active_calls(), 3);
}

#[test]
fn a_source_over_its_invite_rate_gets_a_stateless_503_and_creates_nothing() {
    let mut h = harness(EndpointConfig {
        invites_per_sec_per_source: 10,
        invite_burst_per_source: 5,
        ..Default::default()
    });
    let trunk = "127.0.0.1:5061";
    let mut answered = 0;
    let mut limited = 0;
    for i in 0..50 {
        let out = h.send_from(
            trunk,
            &invite(&format!("z9hG4bKr{i}"), &format!("r{i}"), OFFER),
        );
        match codes(&out).as_slice() {
            [100, 200] => answered += 1,
            [503] => {
                limited += 1;
                assert_eq!(responses(&out)[0].headers.get("Retry-After"), Some("30"));
                assert!(!refused_case(&out), "no case per flooded INVITE");
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((answered, limited), (5, 45), "the burst, then 503");
    assert_eq!(h.ep.active_calls(), 5);
    assert_eq!(h.ep.transaction_count(), 5, "503s are stateless");
    assert_eq!(h.ep.counters().source_limited_invite_rate, 45);
    assert_eq!(h.ep.counters().overload_rejected, 45);
    assert_eq!(h.ep.counters().calls_offered, 50);
    // A retransmission of an admitted INVITE is absorbed by its transaction, not rate-limited.
    let again = h.send_from(trunk, &invite("z9hG4bKr0", "r0", OFFER));
    assert!(
        !codes(&again).contains(&503),
        "absorbed (RFC 6026: the 2xx is retransmitted by its timer), not refused"
    );
    assert_eq!(h.ep.counters().source_limited_invite_rate, 45);
    // Another trusted source is not slowed by this one.
    let other = h.send_from("127.0.0.2:5061", &invite("z9hG4bKo", "o", OFFER));
    assert_eq!(codes(&other), [100, 200]);
    // The bucket refills at the configured rate.
    h.advance(Duration::from_millis(100));
    let out = h.send_from(trunk, &invite("z9hG4bKlate", "late", OFFER));
    assert_eq!(codes(&out), [100, 200]);
}

/// INVITEs that are answered but never ACKed keep a transaction until Timer H (64*T1). With a
/// trusted source sending refused INVITEs (here: numbers ivrd does not serve, 404) as fast as it
/// can, the live transactions stay below burst + rate * 64*T1; answered calls without ACK are
/// also bounded by the call caps. Untrusted INVITEs create none (stateless 403).
#[test]
fn half_open_invite_transactions_are_bounded_by_the_per_source_rate() {
    let (rate, burst) = (20u32, 10u32);
    let mut h = harness(EndpointConfig {
        invites_per_sec_per_source: rate,
        invite_burst_per_source: burst,
        ..Default::default()
    });
    let timer_h = h.ep.cfg.timers.t1 * 64;
    let bound = burst as usize + (f64::from(rate) * timer_h.as_secs_f64()).ceil() as usize;
    let mut peak = 0;
    for i in 0..20_000 {
        let wrong = invite(&format!("z9hG4bKh{i}"), &format!("h{i}"), OFFER)
            .replace("sip:12345@", "sip:110@");
        h.send_from("127.0.0.1:5061", &wrong);
        // 1,000 INVITEs a second for 20 s of fake time.
        h.advance(Duration::from_millis(1));
        peak = peak.max(h.ep.transaction_count());
    }
    assert!(
        peak > burst as usize,
        "refusals do hold transactions ({peak})"
    );
    assert!(
        peak <= bound,
        "peak {peak} transactions above the bound {bound}"
    );
}

/// An out-of-dialog request (no To tag) of `method` from the trunk.
fn out_of_dialog(method: &str, branch: &str, call_id: &str) -> String {
    format!(
        "{method} sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch={branch}\r\n\
         From: <sip:+8613800000000@127.0.0.1>;tag=caller\r\nTo: <sip:12345@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn request_limited(rate: u32, burst: u32) -> Harness {
    harness(EndpointConfig {
        other_requests_per_sec_per_source: rate,
        other_request_burst_per_source: burst,
        ..Default::default()
    })
}

#[test]
fn out_of_dialog_requests_over_the_source_rate_get_a_stateless_503() {
    let mut h = request_limited(2, 3);
    let trunk = "127.0.0.1:5061";
    let mut answers = Vec::new();
    for (i, method) in [
        "OPTIONS",
        "REGISTER",
        "MESSAGE",
        "OPTIONS",
        "SUBSCRIBE",
        "BYE",
    ]
    .into_iter()
    .enumerate()
    {
        let out = h.send_from(trunk, &out_of_dialog(method, &format!("z9hG4bKq{i}"), "q"));
        answers.push(codes(&out));
        if codes(&out) == [503] {
            let r = &responses(&out)[0];
            assert_eq!(r.headers.get("Retry-After"), Some("30"));
            assert!(r.headers.get("To").is_some_and(|t| t.contains("tag=")));
        }
    }
    assert_eq!(
        answers,
        [
            vec![200],
            vec![405],
            vec![405],
            vec![503],
            vec![503],
            vec![503]
        ],
        "the burst is answered as usual, then 503"
    );
    assert_eq!(h.ep.transaction_count(), 3, "the 503s hold no transaction");
    let c = h.ep.counters();
    assert_eq!(
        (
            c.source_limited_requests,
            c.source_limited_invite_rate,
            c.overload_rejected
        ),
        (3, 0, 0),
        "counted under their own limit, not as refused calls"
    );
    // Another trusted source has its own bucket; INVITEs are not charged to this one.
    let other = h.send_from("127.0.0.2:5061", &out_of_dialog("OPTIONS", "z9hG4bKo", "o"));
    assert_eq!(codes(&other), [200]);
    let call = h.send_from(trunk, &invite("z9hG4bKi", "i", OFFER));
    assert_eq!(codes(&call), [100, 200]);
    // The bucket refills at the configured rate: one request per 500 ms at 2/s.
    h.advance(Duration::from_millis(499));
    let early = h.send_from(trunk, &out_of_dialog("OPTIONS", "z9hG4bKe", "e"));
    assert_eq!(codes(&early), [503]);
    h.advance(Duration::from_millis(501));
    let late = h.send_from(trunk, &out_of_dialog("OPTIONS", "z9hG4bKl", "l"));
    assert_eq!(codes(&late), [200]);
}

#[test]
fn retransmissions_and_in_dialog_requests_are_not_charged() {
    let mut h = request_limited(1, 1);
    let trunk = "127.0.0.1:5061";
    let options = out_of_dialog("OPTIONS", "z9hG4bKr", "r");
    assert_eq!(codes(&h.send_from(trunk, &options)), [200]);
    // The bucket is empty now; a retransmission is answered again by its transaction.
    assert_eq!(
        codes(&h.send_from(trunk, &options)),
        [200],
        "absorbed by the transaction (RFC 3261 §17.2.2), not refused"
    );
    let out = h.send_from(trunk, &invite("z9hG4bKc", "c", OFFER));
    assert_eq!(codes(&out), [100, 200]);
    let tag = to_tag(&responses(&out)[1]);
    for cseq in 2..6 {
        let info = in_dialog("INFO", &format!("z9hG4bKn{cseq}"), "c", &tag, cseq, "");
        assert_eq!(
            codes(&h.send_from(trunk, &info)),
            [200],
            "a call's INFO keys"
        );
    }
    let bye = in_dialog("BYE", "z9hG4bKb", "c", &tag, 6, "");
    assert_eq!(codes(&h.send_from(trunk, &bye)), [200]);
    assert_eq!(h.ep.counters().source_limited_requests, 0);
    // A request for a dialog that does not exist is out of dialog: it is charged.
    let stale = in_dialog("BYE", "z9hG4bKs", "gone", "x", 2, "");
    assert_eq!(codes(&h.send_from(trunk, &stale)), [503]);
    assert_eq!(h.ep.counters().source_limited_requests, 1);
}

#[test]
fn the_default_request_rate_never_bothers_a_trunks_keep_alives() {
    let mut h = harness(EndpointConfig::default());
    // Three trunks' worth of OPTIONS every 100 ms from one address for a minute of fake time:
    // far more than a real trunk's keep-alive (one every few seconds to a minute).
    for i in 0..600 {
        for t in 0..3 {
            let out = h.send_from(
                "127.0.0.1:5061",
                &out_of_dialog("OPTIONS", &format!("z9hG4bKk{i}-{t}"), "k"),
            );
            assert_eq!(codes(&out), [200]);
        }
        h.advance(Duration::from_millis(100));
    }
    assert_eq!(h.ep.counters().source_limited_requests, 0);
}

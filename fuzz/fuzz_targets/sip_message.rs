//! SIP message parser: bytes → `Message`, then the invariants the endpoint relies on.
//!
//! - Header helpers (Via, NameAddr, CSeq, SipUri) never panic on any parsed value.
//! - A response built for a parsed request parses again and copies the dialog-identifying headers.
//! - Stream framing agrees with datagram parsing: for a datagram that parses and carries a
//!   Content-Length, `frame_len` finds a complete frame no longer than the input, and that frame
//!   parses to the same message (a disagreement is request smuggling on TCP).

#![no_main]

use ivrd::sip::header::{CSeq, NameAddr, Via, split_list};
use ivrd::sip::message::{MAX_HEADERS, Message, ParseError, Request, frame_len, parse};
use ivrd::sip::response::{ResponseParts, build_response};
use ivrd::sip::uri::SipUri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = parse(data) else {
        let _ = frame_len(data);
        return;
    };
    let headers = match &msg {
        Message::Request(r) => {
            let _ = SipUri::parse(&r.uri).map(|u| u.number());
            &r.headers
        }
        Message::Response(r) => &r.headers,
    };
    for via in headers.get_all("Via").flat_map(split_list) {
        let _ = Via::parse(via).map(|v| v.has_rfc3261_branch());
    }
    for name in ["From", "To", "Contact", "Refer-To"] {
        if let Some(v) = headers.get(name) {
            let _ = NameAddr::parse(v, "From").map(|n| n.tag().map(str::len));
        }
    }
    if let Some(c) = headers.get("CSeq") {
        let _ = CSeq::parse(c);
    }
    if let Message::Request(req) = &msg {
        response_round_trip(req);
    }
    framing_agrees(data, &msg);
});

fn response_round_trip(req: &Request) {
    let parts = ResponseParts {
        to_tag: Some("fuzz"),
        source: Some("192.0.2.7:5999".parse().expect("literal")),
        body: Some(("application/sdp", b"v=0\r\n")),
        ..Default::default()
    };
    let bytes = build_response(req, 200, "OK", &parts);
    // No amplification: what we copy is bounded by what arrived.
    let wire: usize = req.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    assert!(
        bytes.len() <= wire + 512,
        "{} response bytes for {wire}",
        bytes.len()
    );
    let resp = match parse(&bytes) {
        Ok(Message::Response(r)) => r,
        // Copying Via, From, To, Call-ID and CSeq of a request already near the header limit
        // and adding our own fields may pass it; that is the peer's problem, not a bug.
        Err(ParseError::TooManyHeaders) if req.headers.len() > MAX_HEADERS - 10 => return,
        other => panic!(
            "our response does not parse: {other:?}\n{}",
            String::from_utf8_lossy(&bytes)
        ),
    };
    assert_eq!(resp.code, 200);
    assert_eq!(&resp.body[..], b"v=0\r\n");
    for name in ["Call-ID", "CSeq", "From"] {
        assert_eq!(
            resp.headers.get(name),
            req.headers.get(name),
            "{name} not copied"
        );
    }
    // The top Via comes back first, extended only by received/rport (§18.2.1); the others are
    // copied field by field (their value count can differ only for unbalanced `<>` garbage).
    let top_in = req.headers.get_all("Via").flat_map(split_list).next();
    let top_out = resp.headers.get_all("Via").flat_map(split_list).next();
    if let Some(top_in) = top_in {
        let top_out = top_out.expect("the top Via is copied");
        let before_rport = top_in.split(";rport").next().unwrap_or(top_in);
        assert!(
            top_out.starts_with(before_rport),
            "top Via changed: {top_in:?} -> {top_out:?}"
        );
    }
}

fn framing_agrees(data: &[u8], msg: &Message) {
    let (headers, body) = match msg {
        Message::Request(r) => (&r.headers, &r.body),
        Message::Response(r) => (&r.headers, &r.body),
    };
    if headers.get("Content-Length").is_none() {
        return;
    }
    let n = match frame_len(data) {
        Ok(Some(n)) => n,
        other => panic!(
            "datagram parsed with body {} but frame_len says {other:?}",
            body.len()
        ),
    };
    assert!(
        n <= data.len(),
        "frame_len {n} exceeds input {}",
        data.len()
    );
    assert_eq!(
        parse(&data[..n]).as_ref(),
        Ok(msg),
        "the stream frame parses differently from the datagram"
    );
}

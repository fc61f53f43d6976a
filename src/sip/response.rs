//! Building responses to a received request (RFC 3261 §8.2.6) as wire bytes.
//!
//! Via, From, To, Call-ID and CSeq are copied verbatim (§8.2.6.2); the UAS adds its To-tag, and the
//! top Via learns `received`/`rport` (§18.2.1, RFC 3581 §4) so replies cross NAT.

use crate::sip::header::{Via, split_list};
use crate::sip::message::Request;
use bytes::Bytes;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// The product token we send in `Server` and `User-Agent`.
pub const PRODUCT: &str = concat!("ivrd/", env!("CARGO_PKG_VERSION"));

/// Everything a response adds beyond what it copies from the request.
#[derive(Debug, Default, Clone)]
pub struct ResponseParts<'a> {
    /// The UAS's To-tag; added when the request's To has none (§8.2.6.2; not on 100).
    pub to_tag: Option<&'a str>,
    /// Where the request came from, for `received`/`rport` on the top Via.
    pub source: Option<SocketAddr>,
    /// Our Contact URI (for dialog-creating responses and OPTIONS).
    pub contact: Option<&'a str>,
    /// Copy Record-Route (a dialog-creating response, §12.1.1).
    pub record_route: bool,
    /// Further header fields, e.g. `Allow`, `Retry-After`, `Warning`.
    pub extra: &'a [(&'a str, &'a str)],
    /// Content type and body.
    pub body: Option<(&'a str, &'a [u8])>,
}

/// The canonical reason phrase for the codes ivrd sends.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        _ => "Unknown",
    }
}

/// Serialises a response to `req` with status `code` and reason `reason`.
pub fn build_response(req: &Request, code: u16, reason: &str, parts: &ResponseParts<'_>) -> Bytes {
    let mut out = String::with_capacity(512 + parts.body.map_or(0, |(_, b)| b.len()));
    let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
    // Only the top Via gets a line of its own (it is annotated); the others are copied as the
    // fields they arrived in. One line per comma-separated value would let a request of many
    // short Via values ("Via: a,a,a…") draw a response several times its size.
    let mut top_done = false;
    for field in req.headers.get_all("Via") {
        if top_done {
            let _ = write!(out, "Via: {field}\r\n");
            continue;
        }
        let Some(top) = split_list(field).next() else {
            continue;
        };
        out.push_str("Via: ");
        out.push_str(top);
        annotate_top_via(&mut out, top, parts.source);
        out.push_str("\r\n");
        top_done = true;
        // Only blanks and commas can precede the first value, so its first occurrence is it.
        let after_top = field.find(top).map_or("", |at| &field[at + top.len()..]);
        let rest = after_top.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if !rest.is_empty() {
            let _ = write!(out, "Via: {rest}\r\n");
        }
    }
    copy(&mut out, req, "From");
    if let Some(to) = req.headers.get("To") {
        out.push_str("To: ");
        out.push_str(to);
        let has_tag =
            crate::sip::header::NameAddr::parse(to, "To").is_ok_and(|n| n.tag().is_some());
        if let (false, Some(tag), false) = (has_tag, parts.to_tag, code == 100) {
            let _ = write!(out, ";tag={tag}");
        }
        out.push_str("\r\n");
    }
    copy(&mut out, req, "Call-ID");
    copy(&mut out, req, "CSeq");
    if parts.record_route {
        for rr in req.headers.get_all("Record-Route") {
            let _ = write!(out, "Record-Route: {rr}\r\n");
        }
    }
    if let Some(contact) = parts.contact {
        let _ = write!(out, "Contact: <{contact}>\r\n");
    }
    for (name, value) in parts.extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(out, "Server: {PRODUCT}\r\n");
    let mut bytes = out.into_bytes();
    match parts.body {
        Some((ctype, body)) => {
            let _ = write_tail(&mut bytes, Some(ctype), body.len());
            bytes.extend_from_slice(body);
        }
        None => {
            let _ = write_tail(&mut bytes, None, 0);
        }
    }
    Bytes::from(bytes)
}

fn write_tail(bytes: &mut Vec<u8>, ctype: Option<&str>, len: usize) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(ctype) = ctype {
        write!(bytes, "Content-Type: {ctype}\r\n")?;
    }
    write!(bytes, "Content-Length: {len}\r\n\r\n")
}

fn copy(out: &mut String, req: &Request, name: &str) {
    for value in req.headers.get_all(name) {
        let _ = write!(out, "{name}: {value}\r\n");
    }
}

/// RFC 3261 §18.2.1: add `received` when sent-by differs from the source address; RFC 3581 §4:
/// fill an empty `rport` with the source port (and then always add `received`).
fn annotate_top_via(out: &mut String, via: &str, source: Option<SocketAddr>) {
    let (Some(source), Ok(parsed)) = (source, Via::parse(via)) else {
        return;
    };
    // `;received=<IPv6>` and `=<port>` add at most ~60 bytes. A Via that close to the limit
    // is answered as it came, so our own response never exceeds what a parser accepts.
    if "Via: ".len() + via.len() + 64 > crate::sip::message::MAX_HEADER_LINE {
        return;
    }
    let ip = source.ip().to_string();
    let sent_by_ip = crate::sip::header::host_ip(&parsed.host);
    let rport_empty = crate::sip::header::param(via, "rport") == Some("");
    if parsed.received.is_none() && (sent_by_ip != Some(source.ip()) || rport_empty) {
        let _ = write!(out, ";received={ip}");
    }
    if rport_empty {
        // Rewrite the bare `rport` in place so the parameter appears once.
        if let Some(pos) = find_bare_rport(out) {
            out.insert_str(pos + ";rport".len(), &format!("={}", source.port()));
        }
    }
}

fn find_bare_rport(line_so_far: &str) -> Option<usize> {
    let start = line_so_far.rfind("Via: ")?;
    let line = &line_so_far[start..];
    line.match_indices(";rport")
        .find(|(i, _)| {
            let after = &line[i + ";rport".len()..];
            after.is_empty() || after.starts_with(';')
        })
        .map(|(i, _)| start + i)
}

#[cfg(test)]
mod long_via_tests {
    use super::*;
    use crate::sip::message::{MAX_HEADER_LINE, Message, parse};

    /// Fuzz finding (sip_message): a top Via just under the header-line limit grew past it when
    /// `received`/`rport` were added, so ivrd's own response did not parse.
    #[test]
    fn a_via_near_the_line_limit_is_copied_unannotated() {
        let filler = "x".repeat(MAX_HEADER_LINE - 60);
        let text = format!(
            "OPTIONS sip:12345@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport;f={filler}\r\n\
             From: <sip:a@h>;tag=1\r\nTo: <sip:12345@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
        );
        let Ok(Message::Request(req)) = parse(text.as_bytes()) else {
            panic!("request parses")
        };
        let source: SocketAddr = "[2001:db8::1234:5678:9abc:def0]:65535"
            .parse()
            .expect("addr");
        let parts = ResponseParts {
            source: Some(source),
            ..Default::default()
        };
        let out = build_response(&req, 200, "OK", &parts);
        assert!(
            matches!(parse(&out), Ok(Message::Response(_))),
            "our response parses"
        );
    }
}

#[cfg(test)]
mod folded_via_tests {
    use super::*;
    use crate::sip::message::{MAX_HEADER_LINE, Message, ParseError, parse};

    fn folded_via_request(value_len: usize) -> String {
        let head = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;f=";
        let filler = "x".repeat(value_len - head.len() - ";y".len() - 1);
        // One physical line per part, all well under the limit; unfolded, one SP joins them
        // (the blank continuation adds nothing), so the value is `value_len` bytes.
        let (a, b) = filler.split_at(filler.len() / 2);
        format!(
            "OPTIONS sip:12345@h SIP/2.0\r\nv: {head}{a}\r\n \r\n  {b};y\r\n\
             From: <sip:a@h>;tag=1\r\nTo: <sip:12345@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
        )
    }

    /// Fuzz finding (sip_message): a folded (and compact) Via whose parts each fit the line
    /// limit came back in our response as one `Via: ` line 3 bytes over it, which our own
    /// parser refused. The limit now holds for the field as it is written back.
    #[test]
    fn a_folded_via_is_accepted_only_if_it_fits_on_one_line_written_back() {
        let fits = MAX_HEADER_LINE - "Via: ".len();
        let Ok(Message::Request(req)) = parse(folded_via_request(fits).as_bytes()) else {
            panic!("a Via that fits on one line parses")
        };
        assert_eq!(req.headers.get("Via").map(str::len), Some(fits));
        let out = build_response(&req, 200, "OK", &ResponseParts::default());
        assert!(
            matches!(parse(&out), Ok(Message::Response(_))),
            "our response parses"
        );
        assert!(matches!(
            parse(folded_via_request(fits + 1).as_bytes()),
            Err(ParseError::HeaderLineTooLong { .. })
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Message, parse};

    fn request(text: &str) -> Request {
        match parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    const INVITE: &str = "INVITE sip:12345@127.0.0.1 SIP/2.0\r\n\
        v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK0\r\n\
        Via: SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKz\r\n\
        Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n\
        f: <sip:caller@h>;tag=ft\r\nt: <sip:12345@h>\r\ni: cid\r\nCSeq: 7 INVITE\r\n\r\n";

    /// Fuzz finding (sip_message): every comma-separated Via value got a line of its own, so a
    /// request of many short values drew a response several times its size (a reflection
    /// amplifier over UDP) with more header lines than our own parser accepts.
    #[test]
    fn many_via_values_do_not_amplify_the_response() {
        let mut text = String::from("OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1");
        for _ in 0..3000 {
            text.push_str(",a");
        }
        text.push_str("\r\nVia: b, c\r\nFrom: <sip:x@h>;tag=1\r\nTo: <sip:h>\r\nCall-ID: v\r\nCSeq: 1 OPTIONS\r\n\r\n");
        let req = request(&text);
        let src: SocketAddr = "192.0.2.7:31000".parse().expect("addr");
        let parts = ResponseParts {
            source: Some(src),
            ..Default::default()
        };
        let bytes = build_response(&req, 200, "OK", &parts);
        assert!(
            bytes.len() < text.len() + 256,
            "{} bytes for {}",
            bytes.len(),
            text.len()
        );
        let Ok(Message::Response(resp)) = parse(&bytes) else {
            panic!("response does not parse");
        };
        let vias: Vec<&str> = resp.headers.get_all("Via").flat_map(split_list).collect();
        assert_eq!(vias.len(), 3003);
        assert!(vias[0].ends_with(";received=192.0.2.7"));
        assert_eq!(vias[3002], "c");
    }

    #[test]
    fn copies_headers_adds_tag_and_fixes_top_via() {
        let req = request(INVITE);
        let src: SocketAddr = "192.0.2.7:31000".parse().expect("addr");
        let parts = ResponseParts {
            to_tag: Some("ivr1"),
            source: Some(src),
            contact: Some("sip:ivrd@192.0.2.1:5060"),
            record_route: true,
            ..Default::default()
        };
        let text =
            String::from_utf8(build_response(&req, 200, "OK", &parts).to_vec()).expect("utf8");
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], "SIP/2.0 200 OK");
        assert_eq!(
            lines[1],
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=31000;received=192.0.2.7"
        );
        assert_eq!(lines[2], "Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK0");
        assert_eq!(lines[3], "Via: SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKz");
        assert!(text.contains("To: <sip:12345@h>;tag=ivr1\r\n"));
        assert!(text.contains("Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n"));
        assert!(text.contains("CSeq: 7 INVITE\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        // The result parses back as a response.
        assert!(matches!(parse(text.as_bytes()), Ok(Message::Response(r)) if r.code == 200));
    }

    #[test]
    fn trying_carries_no_tag_and_bodies_are_counted() {
        let req = request(INVITE);
        let parts = ResponseParts {
            to_tag: Some("x"),
            ..Default::default()
        };
        let trying = build_response(&req, 100, "Trying", &parts);
        assert!(!String::from_utf8_lossy(&trying).contains("tag=x"));
        let body = b"v=0\r\n";
        let parts = ResponseParts {
            body: Some(("application/sdp", body)),
            ..Default::default()
        };
        let ok = String::from_utf8(build_response(&req, 200, "OK", &parts).to_vec()).expect("utf8");
        assert!(ok.ends_with("Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"));
    }
}

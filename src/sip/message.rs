//! SIP message framing and header access (RFC 3261 §7, §18.3, §20).
//!
//! Sits right behind the transport: bytes in, a [`Message`] out, or a [`ParseError`] that says why the
//! endpoint must answer `400` or drop the datagram. Header values are kept as text and interpreted on
//! demand by [`crate::sip::header`]; URIs by [`crate::sip::uri`].
//!
//! We frame messages ourselves rather than with the parser crate because the decisions made here are
//! protocol decisions: an unknown method must still parse so that it can be answered `501`
//! (§8.2.1), method names are case-sensitive (§7.1), and a Content-Length that is not a number or
//! that claims more bytes than a datagram holds is a `400` (§18.3), not a silent zero.

use crate::sip::method::Method;
use bytes::Bytes;
use std::borrow::Cow;

/// Largest message accepted on any transport: a UDP datagram's maximum (issue: "UDP up to 64 KiB").
pub const MAX_MESSAGE_BYTES: usize = 65_535;
/// Header fields beyond this count make the message a `400`: a bound on per-message work and memory.
pub const MAX_HEADERS: usize = 100;
/// Longest header line (after unfolding) we accept.
pub const MAX_HEADER_LINE: usize = 8_192;

/// Why bytes could not be turned into a SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message of {len} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge { len: usize },
    #[error("no empty line ends the header section")]
    NoHeaderEnd,
    #[error("message is not UTF-8 in its start line or headers")]
    NotText,
    #[error("malformed start line {line:?}")]
    BadStartLine { line: String },
    #[error("unsupported SIP version {version:?}")]
    BadVersion { version: String },
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("header line {line_no} is longer than {MAX_HEADER_LINE} bytes")]
    HeaderLineTooLong { line_no: usize },
    #[error("header line {line_no} has no colon")]
    MalformedHeader { line_no: usize },
    #[error("Content-Length {value:?} is not a number")]
    BadContentLength { value: String },
    #[error("Content-Length given twice, as {first} and {second}")]
    ConflictingContentLength { first: usize, second: usize },
    #[error("Content-Length says {declared} bytes but {available} arrived")]
    BodyTooShort { declared: usize, available: usize },
}

impl ParseError {
    /// Reason phrase for the `400` this error deserves, or a `505` for a version mismatch.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            ParseError::BadVersion { .. } => (505, "Version Not Supported"),
            ParseError::TooLarge { .. } => (513, "Message Too Large"),
            ParseError::BadContentLength { .. }
            | ParseError::ConflictingContentLength { .. }
            | ParseError::BodyTooShort { .. } => (400, "Bad Content-Length"),
            ParseError::TooManyHeaders | ParseError::HeaderLineTooLong { .. } => {
                (400, "Header Too Large")
            }
            _ => (400, "Bad Request"),
        }
    }
}

/// The header fields of one message, in wire order, with compact names expanded (RFC 3261 §7.3.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<(Cow<'static, str>, String)>,
}

impl Headers {
    /// Appends one field; known names are canonicalised so every lookup sees one spelling.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        let name = match canonical_name(name) {
            Some(canon) => Cow::Borrowed(canon),
            None => Cow::Owned(name.to_string()),
        };
        self.fields.push((name, value.into()));
    }

    /// The first value of a header, by canonical or compact name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// Every field value of a header, in order. A field that lists several values separated by
    /// commas is returned as one string; see [`crate::sip::header::split_list`].
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let wanted: Cow<'static, str> = match canonical_name(name) {
            Some(canon) => Cow::Borrowed(canon),
            None => Cow::Owned(name.to_string()),
        };
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(&wanted))
            .map(|(_, v)| v.as_str())
    }

    /// Every field as (name, value), in wire order, with canonical names.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(n, v)| (n.as_ref(), v.as_str()))
    }

    /// Number of header fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when there are no header fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// The canonical spelling of headers ivrd interprets, from either long or compact form.
fn canonical_name(name: &str) -> Option<&'static str> {
    const KNOWN: [(&str, &str); 28] = [
        ("via", "Via"),
        ("v", "Via"),
        ("from", "From"),
        ("f", "From"),
        ("to", "To"),
        ("t", "To"),
        ("call-id", "Call-ID"),
        ("i", "Call-ID"),
        ("cseq", "CSeq"),
        ("contact", "Contact"),
        ("m", "Contact"),
        ("content-length", "Content-Length"),
        ("l", "Content-Length"),
        ("content-type", "Content-Type"),
        ("c", "Content-Type"),
        ("max-forwards", "Max-Forwards"),
        ("record-route", "Record-Route"),
        ("route", "Route"),
        ("supported", "Supported"),
        ("k", "Supported"),
        ("require", "Require"),
        ("event", "Event"),
        ("o", "Event"),
        ("refer-to", "Refer-To"),
        ("r", "Refer-To"),
        ("subscription-state", "Subscription-State"),
        ("content-encoding", "Content-Encoding"),
        ("e", "Content-Encoding"),
    ];
    KNOWN
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The Request-URI as received; interpreted by [`crate::sip::uri::SipUri::parse`].
    pub uri: String,
    pub headers: Headers,
    pub body: Bytes,
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Bytes,
}

/// Either kind of SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// Parses one complete message from a datagram (or one frame cut by [`frame_len`]).
///
/// RFC 3261 §18.3: on a datagram, bytes beyond Content-Length are discarded and a Content-Length
/// larger than what arrived is an error; with no Content-Length the body runs to the end.
pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
    if buf.len() > MAX_MESSAGE_BYTES {
        return Err(ParseError::TooLarge { len: buf.len() });
    }
    let buf = skip_leading_crlf(buf);
    let (head_len, body_start) = find_header_end(buf).ok_or(ParseError::NoHeaderEnd)?;
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| ParseError::NotText)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next().unwrap_or_default();
    let headers = parse_headers(lines)?;
    let available = buf.len() - body_start;
    let body_len = match declared_length(&headers)? {
        Some(declared) => {
            if declared > available {
                return Err(ParseError::BodyTooShort {
                    declared,
                    available,
                });
            }
            declared
        }
        None => available,
    };
    let body = Bytes::copy_from_slice(&buf[body_start..body_start + body_len]);
    parse_start_line(start, headers, body)
}

/// For stream transports: the length of the first complete message in `buf`, counting leading
/// CRLF keep-alives, or `None` if more bytes are needed. RFC 3261 §18.3: on a stream,
/// Content-Length frames the body and its absence means zero.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let lead = buf.len() - skip_leading_crlf(buf).len();
    let rest = &buf[lead..];
    let Some((head_len, body_start)) = find_header_end(rest) else {
        if rest.len() > MAX_MESSAGE_BYTES {
            return Err(ParseError::TooLarge { len: rest.len() });
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&rest[..head_len]).map_err(|_| ParseError::NotText)?;
    // The same header parsing as `parse`: a framer that read Content-Length differently (a folded
    // line, a repeated field) would cut the stream where the parser does not expect it.
    let lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let declared = declared_length(&parse_headers(lines.skip(1))?)?.unwrap_or(0);
    let total = body_start + declared;
    if total > MAX_MESSAGE_BYTES {
        return Err(ParseError::TooLarge { len: total });
    }
    Ok((rest.len() >= total).then_some(lead + total))
}

fn skip_leading_crlf(mut buf: &[u8]) -> &[u8] {
    while let [b'\r' | b'\n', rest @ ..] = buf {
        buf = rest;
    }
    buf
}

/// Finds the empty line: returns (end of header text, start of body). Accepts bare LF line ends,
/// which some devices send, as well as CRLF.
fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// The body length the headers declare, if any. Repeated Content-Length fields must agree: a
/// stream framer and a parser that each picked a different one would disagree on where the next
/// message starts (request smuggling), so a conflict is a `400`.
fn declared_length(headers: &Headers) -> Result<Option<usize>, ParseError> {
    let mut declared = None;
    for value in headers.get_all("Content-Length") {
        let n = parse_content_length(value)?;
        match declared {
            Some(first) if first != n => {
                return Err(ParseError::ConflictingContentLength { first, second: n });
            }
            _ => declared = Some(n),
        }
    }
    Ok(declared)
}

fn parse_content_length(value: &str) -> Result<usize, ParseError> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 9 {
        return Err(ParseError::BadContentLength {
            value: v.to_string(),
        });
    }
    v.parse().map_err(|_| ParseError::BadContentLength {
        value: v.to_string(),
    })
}

/// The field as ivrd writes it when it copies it (Via, From, To… into a response): the
/// canonical name, ": ", the unfolded value. Held to [`MAX_HEADER_LINE`] like a physical line,
/// so that whatever is accepted can be sent back on one line that a parser accepts (fuzz
/// finding: a folded Via of 8,190 bytes came back as an 8,195-byte line).
fn logical_line_len(name: &str, value: &str) -> usize {
    canonical_name(name).unwrap_or(name).len() + 2 + value.len()
}

/// Unfolds continuation lines (RFC 3261 §7.3.1) and splits `name: value`.
fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Headers, ParseError> {
    let mut headers = Headers::default();
    let mut pending: Option<(usize, &str, String)> = None;
    for (idx, line) in lines.enumerate() {
        let line_no = idx + 2;
        if line.starts_with([' ', '\t']) {
            let Some((_, name, value)) = pending.as_mut() else {
                return Err(ParseError::MalformedHeader { line_no });
            };
            // §7.3.1: the fold is one SP between value parts; a value that starts on the
            // continuation line gets no leading space, a blank continuation adds nothing.
            let part = line.trim();
            if !value.is_empty() && !part.is_empty() {
                value.push(' ');
            }
            value.push_str(part);
            if logical_line_len(name, value) > MAX_HEADER_LINE {
                return Err(ParseError::HeaderLineTooLong { line_no });
            }
            continue;
        }
        if let Some((_, name, value)) = pending.take() {
            headers.push(name, value);
        }
        if line.len() > MAX_HEADER_LINE {
            return Err(ParseError::HeaderLineTooLong { line_no });
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(ParseError::MalformedHeader { line_no })?;
        let name = name.trim_end();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(ParseError::MalformedHeader { line_no });
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
        let value = value.trim().to_string();
        if logical_line_len(name, &value) > MAX_HEADER_LINE {
            return Err(ParseError::HeaderLineTooLong { line_no });
        }
        pending = Some((line_no, name, value));
    }
    if let Some((_, name, value)) = pending {
        headers.push(name, value);
    }
    Ok(headers)
}

fn parse_start_line(line: &str, headers: Headers, body: Bytes) -> Result<Message, ParseError> {
    let bad = || ParseError::BadStartLine {
        line: line.chars().take(200).collect(),
    };
    if let Some(rest) = line.strip_prefix("SIP/") {
        let mut parts = rest.splitn(3, ' ');
        let version = parts.next().ok_or_else(bad)?;
        if version != "2.0" {
            return Err(ParseError::BadVersion {
                version: format!("SIP/{version}"),
            });
        }
        let code: u16 = parts.next().and_then(|c| c.parse().ok()).ok_or_else(bad)?;
        if !(100..=699).contains(&code) {
            return Err(bad());
        }
        let reason = parts.next().unwrap_or("").to_string();
        return Ok(Message::Response(Response {
            code,
            reason,
            headers,
            body,
        }));
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) || uri.is_empty() {
        return Err(bad());
    }
    if version != "SIP/2.0" {
        return Err(ParseError::BadVersion {
            version: version.to_string(),
        });
    }
    Ok(Message::Request(Request {
        method: Method::from_token(method),
        uri: uri.to_string(),
        headers,
        body,
    }))
}

/// RFC 3261 §25.1 `token` characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        match parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    const COMPACT: &str = "INVITE sip:12345@127.0.0.1 SIP/2.0\r\n\
        v: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK1, SIP/2.0/UDP 10.1.1.2;branch=z9hG4bK2\r\n\
        f: <tel:+8613800000000>;tag=a\r\nt: <sip:12345@h>\r\ni: abc\r\n\
        CSeq: 1\r\n INVITE\r\nl: 4\r\nc: application/sdp\r\n\r\nv=0\r\nTRAILING";

    #[test]
    fn compact_forms_and_folded_lines_are_expanded() {
        let r = req(COMPACT);
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.headers.get("Call-ID"), Some("abc"));
        assert_eq!(r.headers.get("i"), Some("abc"));
        assert_eq!(r.headers.get("CSeq"), Some("1 INVITE"));
        assert_eq!(r.headers.get("content-type"), Some("application/sdp"));
        assert!(r.headers.get("Via").is_some_and(|v| v.contains("10.1.1.2")));
        // Extra bytes beyond Content-Length on a datagram are discarded (RFC 3261 §18.3).
        assert_eq!(&r.body[..], b"v=0\r");
    }

    #[test]
    fn unknown_methods_parse_so_they_can_be_answered_501() {
        let r = req("FOOBAR sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\r\n");
        assert_eq!(r.method, Method::Other("FOOBAR".into()));
        // Method names are case-sensitive (RFC 3261 §7.1).
        let r = req("invite sip:x@h SIP/2.0\r\n\r\n");
        assert_eq!(r.method, Method::Other("invite".into()));
    }

    #[test]
    fn content_length_errors_are_reported() {
        let long = "OPTIONS sip:h SIP/2.0\r\nContent-Length: 50\r\n\r\nshort";
        assert_eq!(
            parse(long.as_bytes()),
            Err(ParseError::BodyTooShort {
                declared: 50,
                available: 5
            })
        );
        let nan = "OPTIONS sip:h SIP/2.0\r\nl: ten\r\n\r\n";
        assert!(matches!(
            parse(nan.as_bytes()),
            Err(ParseError::BadContentLength { .. })
        ));
        let neg = "OPTIONS sip:h SIP/2.0\r\nContent-Length: -1\r\n\r\n";
        assert!(matches!(
            parse(neg.as_bytes()),
            Err(ParseError::BadContentLength { .. })
        ));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"INVITE\r\n\r\n",
            b"INVITE sip:x SIP/3.0\r\n\r\n",
            b"SIP/2.0 99 Low\r\n\r\n",
            b"INVITE sip:x SIP/2.0\r\nNoColonHere\r\n\r\n",
            b"INVITE sip:x SIP/2.0\r\n folded-first: x\r\n\r\n",
            b"INVITE sip:x SIP/2.0\r\nVia: \xff\xfe\r\n\r\n",
        ] {
            assert!(
                parse(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse(b"INVITE sip:x SIP/3.0\r\n\r\n").map_err(|e| e.status().0),
            Err(505)
        );
    }

    #[test]
    fn header_count_is_bounded() {
        let mut text = String::from("OPTIONS sip:h SIP/2.0\r\n");
        for i in 0..=MAX_HEADERS {
            text.push_str(&format!("X-H{i}: v\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(parse(text.as_bytes()), Err(ParseError::TooManyHeaders));
    }

    #[test]
    fn responses_parse_with_reason_phrases() {
        match parse(b"SIP/2.0 487 Request Terminated\r\nCSeq: 1 INVITE\r\n\r\n") {
            Ok(Message::Response(r)) => {
                assert_eq!(r.code, 487);
                assert_eq!(r.reason, "Request Terminated");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stream_framing_waits_for_the_whole_body() {
        let msg = b"\r\n\r\nBYE sip:h SIP/2.0\r\nContent-Length: 3\r\n\r\nabcNEXT";
        assert_eq!(frame_len(&msg[..20]), Ok(None));
        let n = frame_len(msg).ok().flatten();
        assert_eq!(n, Some(msg.len() - 4));
        assert_eq!(
            frame_len(b"BYE sip:h SIP/2.0\r\nContent-Length: 5\r\n\r\nab"),
            Ok(None)
        );
        assert_eq!(
            frame_len(b"BYE sip:h SIP/2.0\r\nl: 100000\r\n\r\n"),
            Err(ParseError::TooLarge { len: 100_000 + 32 })
        );
    }

    /// Fuzz finding (sip_message): with two Content-Length fields the datagram parser took the
    /// first and the stream framer the last, so a TCP peer could make us cut the stream where the
    /// parser did not expect it. Both now read the fields one way and reject a conflict.
    #[test]
    fn framer_and_parser_agree_on_content_length() {
        let conflict = b"BYE sip:h SIP/2.0\r\nContent-Length: 5\r\nl: 4\r\n\r\nabcde";
        assert_eq!(
            parse(conflict),
            Err(ParseError::ConflictingContentLength {
                first: 5,
                second: 4
            })
        );
        assert!(frame_len(conflict).is_err());
        assert_eq!(parse(conflict).map_err(|e| e.status().0), Err(400));
        let repeated = b"BYE sip:h SIP/2.0\r\nContent-Length: 3\r\nl: 3\r\n\r\nabcNEXT";
        assert_eq!(frame_len(repeated), Ok(Some(repeated.len() - 4)));
        // A folded Content-Length is one field to both.
        let folded = b"BYE sip:h SIP/2.0\r\nContent-Length:\r\n 3\r\n\r\nabcNEXT";
        assert_eq!(frame_len(folded), Ok(Some(folded.len() - 4)));
        match parse(&folded[..folded.len() - 4]) {
            Ok(Message::Request(r)) => assert_eq!(&r.body[..], b"abc"),
            other => panic!("{other:?}"),
        }
        // A continuation line that merely looks like Content-Length is not one.
        let disguised = b"BYE sip:h SIP/2.0\r\nX-A: a\r\n Content-Length: 50\r\n\r\n";
        assert_eq!(frame_len(disguised), Ok(Some(disguised.len())));
    }

    /// Fuzz finding (sip_message): a header whose value starts on a continuation line kept a
    /// leading space (`Call-ID: \r\n abc` gave " abc"), so the Call-ID we copied into responses
    /// read back as a different value than the one our transactions were keyed by.
    #[test]
    fn value_starting_on_a_continuation_line_has_no_leading_space() {
        let r = req("OPTIONS sip:h SIP/2.0\r\nCall-ID:\r\n abc\r\nCSeq: 1\r\n\t OPTIONS\r\n\r\n");
        assert_eq!(r.headers.get("Call-ID"), Some("abc"));
        assert_eq!(r.headers.get("CSeq"), Some("1 OPTIONS"));
        // A second finding: a continuation line of only whitespace left a trailing space.
        let r = req("OPTIONS sip:h SIP/2.0\r\nFrom: <sip:a@h>\r\n \t\t\r\nTo: <sip:h>\r\n\r\n");
        assert_eq!(r.headers.get("From"), Some("<sip:a@h>"));
    }

    #[test]
    fn unknown_headers_are_kept_by_name() {
        let r = req("OPTIONS sip:h SIP/2.0\r\nX-Case-Id: 42\r\nUser-Agent: sipp\r\n\r\n");
        assert_eq!(r.headers.get("x-case-id"), Some("42"));
        let names: Vec<_> = r.headers.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["X-Case-Id", "User-Agent"]);
    }
}

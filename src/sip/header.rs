//! Interpretation of the header values the UAS core needs: Via, From/To/Contact (name-addr with
//! tag), CSeq and comma-separated lists (RFC 3261 §7.3.1, §20, §25.1).
//!
//! Values stay as received wherever they are copied into responses (§8.2.6.2 copies From, Call-ID,
//! CSeq and Via verbatim); these types only read what the state machines decide on.

use crate::sip::method::Method;
use std::net::{IpAddr, SocketAddr};

/// Why a header value could not be interpreted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {name} header: {value:?}")]
    Malformed { name: &'static str, value: String },
    #[error("more than one {0} header")]
    Repeated(&'static str),
}

/// Splits a header value that lists several elements with commas, ignoring commas inside quoted
/// strings and `<...>` (RFC 3261 §7.3.1: `Via: a, b` equals two Via fields).
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut escaped, mut start) = (0i32, false, false, 0);
    for (i, ch) in value.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty())
}

/// Looks up `;name=value` (or a bare `;name`) in a parameter list, case-insensitively.
/// Returns `Some("")` for a parameter without a value.
pub fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The transport named in a Via (or used to receive a message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// Upper-case name as in Via (`UDP`, `TCP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// Whether the transport is unreliable, which arms retransmission timers (RFC 3261 §17).
    pub fn is_unreliable(self) -> bool {
        self == Transport::Udp
    }
}

/// One Via value: `SIP/2.0/UDP host:port;branch=...;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub branch: Option<String>,
    /// RFC 3581 `rport` present (the client asks to be answered at the source port).
    pub rport: bool,
    pub received: Option<String>,
}

impl Via {
    /// Parses one Via value (not a comma list).
    pub fn parse(value: &str) -> Result<Via, HeaderError> {
        let bad = || HeaderError::Malformed {
            name: "Via",
            value: value.chars().take(120).collect(),
        };
        // RFC 3261 §25.1: SLASH = SWS "/" SWS, so `SIP / 2.0 / UDP` is the same protocol.
        let normalised = tighten_slashes(value);
        let (proto, rest) = normalised
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(bad)?;
        let mut proto_parts = proto.split('/');
        let (Some(name), Some(ver), Some(transport), None) = (
            proto_parts.next(),
            proto_parts.next(),
            proto_parts.next(),
            proto_parts.next(),
        ) else {
            return Err(bad());
        };
        if !name.trim().eq_ignore_ascii_case("SIP") || ver.trim() != "2.0" {
            return Err(bad());
        }
        let rest = rest.trim();
        let sent_by_end = rest.find(';').unwrap_or(rest.len());
        let (host, port) = split_host_port(rest[..sent_by_end].trim()).ok_or_else(bad)?;
        let params = &rest[sent_by_end..];
        Ok(Via {
            transport: transport.trim().to_ascii_uppercase(),
            host,
            port,
            branch: param(params, "branch")
                .filter(|b| !b.is_empty())
                .map(str::to_string),
            rport: param(params, "rport").is_some(),
            received: param(params, "received").map(str::to_string),
        })
    }

    /// True when the branch carries the RFC 3261 magic cookie (§8.1.1.7), which makes it a
    /// transaction id on its own.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch
            .as_deref()
            .is_some_and(|b| b.starts_with("z9hG4bK"))
    }
}

/// Removes the linear white space around each `/` (the sent-protocol separators of a Via).
fn tighten_slashes(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            // Look past this run of white space: drop it if a slash follows or preceded it.
            let mut run = String::from(c);
            while let Some(&n) = chars.peek().filter(|n| n.is_whitespace()) {
                run.push(n);
                chars.next();
            }
            if chars.peek() != Some(&'/') && !out.ends_with('/') {
                out.push_str(&run);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits `host[:port]` where host may be an `[IPv6]` reference.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((format!("[{host}]"), port));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok()?)),
        None => (s, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    host_ok.then(|| (host.to_string(), port))
}

/// Parses a host (as in Via or a URI) to an IP address when it is a literal.
pub fn host_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Where a response to a request with this top Via goes (RFC 3261 §18.2.2, RFC 3581 §4): over UDP
/// to the source address, at the source port when `rport` was asked for, else the sent-by port.
pub fn response_target(via: &Via, source: SocketAddr) -> SocketAddr {
    if via.rport {
        return source;
    }
    SocketAddr::new(source.ip(), via.port.unwrap_or(5060))
}

/// A name-addr or addr-spec with its header parameters: From, To, Contact, Route, Refer-To.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The URI text without the angle brackets.
    pub uri: String,
    /// Everything after the URI: `;tag=...;...`, as received.
    pub params: String,
}

impl NameAddr {
    /// Parses `"Name" <uri>;params` or `uri;params` (in the latter, params belong to the header,
    /// RFC 3261 §20.10).
    pub fn parse(value: &str, name: &'static str) -> Result<NameAddr, HeaderError> {
        let bad = || HeaderError::Malformed {
            name,
            value: value.chars().take(120).collect(),
        };
        let value = value.trim();
        if let Some(open) = find_unquoted(value, '<') {
            let close = value[open..].find('>').ok_or_else(bad)? + open;
            let uri = value[open + 1..close].trim();
            let params = value[close + 1..].trim();
            if !is_uri_text(uri) || !display_name_ok(&value[..open]) || !params_ok(params) {
                return Err(bad());
            }
            return Ok(NameAddr {
                uri: uri.to_string(),
                params: params.to_string(),
            });
        }
        let (uri, params) = match value.find(';') {
            Some(i) => (&value[..i], &value[i..]),
            None => (value, ""),
        };
        let uri = uri.trim_end();
        if !is_uri_text(uri) || !uri.contains(':') || !params_ok(params) {
            return Err(bad());
        }
        Ok(NameAddr {
            uri: uri.to_string(),
            params: params.to_string(),
        })
    }

    /// The `tag` parameter (RFC 3261 §19.3), if any.
    pub fn tag(&self) -> Option<&str> {
        param(&self.params, "tag").filter(|t| !t.is_empty())
    }
}

/// RFC 3261 §25.1: a URI holds no whitespace, control characters, `<`, `>` or `"`. A URI with
/// them would be written into our own request lines (a dialog's remote target) and break them.
fn is_uri_text(uri: &str) -> bool {
    !uri.is_empty()
        && !uri
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
}

fn find_unquoted(s: &str, target: char) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, ch) in s.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == target && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// RFC 3261 §25.1 `display-name = *(token LWS) / quoted-string`. Unquoted names may carry
/// non-ASCII text (trunks send UTF-8 names unquoted, and refusing a citizen's call over that
/// would be worse than accepting it); ASCII separators such as `,` `;` `"` must be quoted
/// (RFC 4475 §3.1.2.16 `baddn`).
fn display_name_ok(display: &str) -> bool {
    let d = display.trim();
    if d.is_empty() {
        return true;
    }
    if let Some(inner) = d.strip_prefix('"') {
        return inner.ends_with('"') && !inner.is_empty();
    }
    d.chars().all(|c| {
        !c.is_ascii()
            || c == ' '
            || c == '\t'
            || c.is_ascii_alphanumeric()
            || "-.!%*_+`'~".contains(c)
    })
}

/// Header parameters after a name-addr: each `;` must introduce a parameter (no `;;`, no
/// trailing `;`, RFC 4475 §3.1.2.1 `badinv01`).
fn params_ok(params: &str) -> bool {
    params.is_empty()
        || (params.starts_with(';') && params.split(';').skip(1).all(|p| !p.trim().is_empty()))
}

/// A CSeq value: sequence number and method (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    /// Parses `1 INVITE`. The number must fit 32 bits (§8.1.1.5 requires it below 2**31 when
    /// chosen, but a peer's larger value is still a valid 32-bit number).
    pub fn parse(value: &str) -> Result<CSeq, HeaderError> {
        let bad = || HeaderError::Malformed {
            name: "CSeq",
            value: value.chars().take(60).collect(),
        };
        let mut parts = value.split_whitespace();
        let (Some(seq), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let seq = seq.parse().map_err(|_| bad())?;
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_lists_split_and_parse() {
        let vias: Vec<_> = split_list(
            "SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKa;rport, SIP/2.0/TCP host.example;branch=x",
        )
        .map(Via::parse)
        .collect();
        let first = vias[0].clone().expect("first via");
        assert_eq!(first.host, "[2001:db8::9]");
        assert_eq!(first.port, Some(5070));
        assert!(first.rport && first.has_rfc3261_branch());
        let second = vias[1].clone().expect("second via");
        assert_eq!((second.transport.as_str(), second.port), ("TCP", None));
        assert!(!second.has_rfc3261_branch());
    }

    #[test]
    fn bad_vias_are_rejected() {
        for v in [
            "",
            "SIP/2.0/UDP",
            "HTTP/1.1/TCP h",
            "SIP/2.0/UDP h:99999",
            "SIP/2.0/UDP [zz]:1",
        ] {
            assert!(Via::parse(v).is_err(), "accepted {v:?}");
        }
    }

    #[test]
    fn responses_follow_rport() {
        let src: SocketAddr = "192.0.2.1:40000".parse().expect("addr");
        let mut via = Via::parse("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1").expect("via");
        assert_eq!(
            response_target(&via, src),
            "192.0.2.1:5062".parse().expect("addr")
        );
        via.rport = true;
        assert_eq!(response_target(&via, src), src);
    }

    #[test]
    fn name_addr_tags_and_quoted_commas() {
        let f = NameAddr::parse(r#""Doe, <John>" <sip:j@h;transport=tcp>;tag=abc"#, "From")
            .expect("from");
        assert_eq!(f.uri, "sip:j@h;transport=tcp");
        assert_eq!(f.tag(), Some("abc"));
        let t = NameAddr::parse("tel:+8612345;tag=9", "To").expect("to");
        assert_eq!((t.uri.as_str(), t.tag()), ("tel:+8612345", Some("9")));
        assert!(NameAddr::parse("<>", "To").is_err());
        assert_eq!(split_list(r#""a,b" <sip:x>, <sip:y,z>"#).count(), 2);
    }

    /// Fuzz finding (sip_endpoint): `Contact: <sip:a@h rom: <six:b@h>` gave a URI with a space
    /// and a `<`, which became the dialog's remote target; our BYE's request line then had four
    /// fields and no SIP parser (ours included) could read it.
    #[test]
    fn name_addr_rejects_uris_with_spaces_or_brackets() {
        assert!(NameAddr::parse("<sip:caller@12rom: <six:+86@h>;tag=a", "Contact").is_err());
        assert!(NameAddr::parse("<sip:a b@h>", "Contact").is_err());
        assert!(NameAddr::parse("sip:a\u{7}@h;tag=1", "From").is_err());
        // Padding around the URI is not part of it (RFC 4475 §3.1.1.1, §3.1.2.14).
        let t = NameAddr::parse("sip:vivek@example.com ;   tag = 19n", "To").expect("to");
        assert_eq!(t.uri, "sip:vivek@example.com");
        let t = NameAddr::parse("\"W\" < sip:t.watson@example.org >", "To").expect("to");
        assert_eq!(t.uri, "sip:t.watson@example.org");
    }

    #[test]
    fn cseq_parses_and_rejects() {
        assert_eq!(
            CSeq::parse("4711 INVITE"),
            Ok(CSeq {
                seq: 4711,
                method: Method::Invite
            })
        );
        assert!(CSeq::parse("x INVITE").is_err());
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("99999999999 BYE").is_err());
    }
}

#[cfg(test)]
mod rfc4475_rule_tests {
    use super::*;

    #[test]
    fn slashes_may_carry_white_space() {
        let via = Via::parse("SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw").expect("wsinv Via");
        assert_eq!(
            (via.transport.as_str(), via.host.as_str()),
            ("UDP", "192.0.2.2")
        );
        assert_eq!(tighten_slashes("SIP/2.0/TCP h"), "SIP/2.0/TCP h");
    }

    #[test]
    fn display_names_and_parameters_follow_the_grammar() {
        assert!(
            NameAddr::parse("Bell, Alexander <sip:a@b>;tag=1", "From").is_err(),
            "comma unquoted"
        );
        assert!(NameAddr::parse("\"Bell, Alexander\" <sip:a@b>;tag=1", "From").is_ok());
        assert!(NameAddr::parse("sipp <sip:sipp@127.0.0.1:5061>;tag=1", "From").is_ok());
        assert!(
            NameAddr::parse("张三 <sip:+8613800000000@t>;tag=1", "From").is_ok(),
            "UTF-8 names are tolerated"
        );
        assert!(
            NameAddr::parse("\"Joe\" <sip:joe@example.org>;;;;", "Contact").is_err(),
            "empty parameters"
        );
        assert!(
            NameAddr::parse("sip:joe@example.org;", "Contact").is_err(),
            "trailing semicolon"
        );
        assert!(NameAddr::parse("<sip:joe@example.org> ; tag = 9", "To").is_ok());
    }
}

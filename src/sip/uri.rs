//! A typed view of SIP and tel URIs (RFC 3261 §19.1, RFC 3966), parsed with the rsipstack parser
//! fork that handles IPv6 references and `tel:` (see DESIGN.md).

use std::fmt;

/// Why a URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("malformed URI {0:?}")]
    Malformed(String),
    #[error("unsupported URI scheme in {0:?}")]
    Scheme(String),
}

/// URI schemes ivrd accepts in a Request-URI, From or To.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
}

/// A parsed URI: the parts ivrd routes and records by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub scheme: Scheme,
    /// User part of a SIP URI, or the number of a tel URI (`+8689812345`).
    pub user: Option<String>,
    /// Host of a SIP URI (IPv6 in brackets); empty for tel URIs.
    pub host: String,
    pub port: Option<u16>,
    raw: String,
}

impl SipUri {
    /// Parses a URI as it appears in a Request-URI or inside `<...>`.
    pub fn parse(text: &str) -> Result<SipUri, UriError> {
        let parsed =
            rsipstack::sip::parse_uri(text).map_err(|_| UriError::Malformed(clip(text)))?;
        let scheme = match &parsed.scheme {
            Some(rsipstack::sip::Scheme::Sip) => Scheme::Sip,
            Some(rsipstack::sip::Scheme::Sips) => Scheme::Sips,
            Some(rsipstack::sip::Scheme::Other(s)) if s.eq_ignore_ascii_case("tel") => Scheme::Tel,
            _ => return Err(UriError::Scheme(clip(text))),
        };
        let host = parsed.host_with_port.host.to_string();
        if scheme == Scheme::Tel {
            let number = host;
            let digits_ok = !number.is_empty()
                && number.bytes().all(|b| {
                    b.is_ascii_digit() || b"+-.()*#".contains(&b) || b.is_ascii_hexdigit()
                });
            if !digits_ok {
                return Err(UriError::Malformed(clip(text)));
            }
            return Ok(SipUri {
                scheme,
                user: Some(number),
                host: String::new(),
                port: None,
                raw: text.trim().to_string(),
            });
        }
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(UriError::Malformed(clip(text)));
        }
        Ok(SipUri {
            scheme,
            user: parsed.auth.map(|a| a.user),
            host,
            port: parsed.host_with_port.port.map(|p| p.value()),
            raw: text.trim().to_string(),
        })
    }

    /// The URI as received.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The dialled or calling number: the user part without visual separators.
    pub fn number(&self) -> Option<String> {
        self.user
            .as_ref()
            .map(|u| u.chars().filter(|c| !"-.()".contains(*c)).collect())
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn clip(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_tel_and_ipv6_uris() {
        let u = SipUri::parse("sip:12345@[2001:db8::1]:5070;transport=udp").expect("ipv6");
        assert_eq!(
            (u.user.as_deref(), u.host.as_str(), u.port),
            (Some("12345"), "[2001:db8::1]", Some(5070))
        );
        let t = SipUri::parse("tel:+86-898-12345;phone-context=+86").expect("tel");
        assert_eq!(
            (t.scheme, t.number().as_deref()),
            (Scheme::Tel, Some("+8689812345"))
        );
        assert_eq!(
            SipUri::parse("sips:a@b").map(|u| u.scheme),
            Ok(Scheme::Sips)
        );
    }

    #[test]
    fn non_sip_uris_are_refused() {
        assert!(SipUri::parse("http://example.com").is_err());
        assert!(SipUri::parse("garbage").is_err());
        assert!(SipUri::parse("tel:").is_err());
    }
}

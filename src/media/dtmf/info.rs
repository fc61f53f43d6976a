//! DTMF carried in SIP INFO bodies.
//!
//! Data flow: the dialog layer answers an in-dialog INFO with 200 OK and hands its Content-Type and
//! body to [`parse_info_body`]; the digit goes to [`super::DtmfStream::on_info`].
//!
//! Two body formats are in use (neither is an RFC; both are de-facto):
//! - `application/dtmf-relay`: `Signal=5\r\nDuration=160\r\n` (Duration in milliseconds);
//! - `application/dtmf`: the body is just the key, e.g. `5`.

use std::time::Duration;

use crate::media::digit::Digit;

/// Why an INFO body did not yield a digit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoDtmfError {
    /// The INFO carries something other than DTMF (e.g. a media-control XML body).
    #[error("content type {content_type:?} is not a DTMF body")]
    UnsupportedContentType { content_type: String },
    /// An `application/dtmf-relay` body without a `Signal=` line.
    #[error("dtmf-relay body has no Signal line")]
    MissingSignal,
    /// The key is not one of 0–9, *, #, A–D (or 10/11 for * and #).
    #[error("unrecognised DTMF key {key:?}")]
    BadKey { key: String },
}

/// Which body format a Content-Type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Relay,
    Plain,
}

fn format_of(content_type: &str) -> Option<Format> {
    // Media type comparison is case-insensitive and parameters are not part of it (RFC 3261 §20.15).
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/dtmf-relay") {
        Some(Format::Relay)
    } else if media.eq_ignore_ascii_case("application/dtmf") {
        Some(Format::Plain)
    } else {
        None
    }
}

/// Parses a key as written in an INFO body: one key character, or `10`/`11` for `*`/`#` (some
/// gateways send the RFC 4733 event code instead of the character).
fn parse_key(text: &str) -> Result<Digit, InfoDtmfError> {
    let key = text.trim();
    let mut chars = key.chars();
    let parsed = match (chars.next(), chars.next()) {
        (Some(c), None) => Digit::from_char(c),
        _ => match key {
            "10" => Some(Digit::Star),
            "11" => Some(Digit::Pound),
            _ => None,
        },
    };
    parsed.ok_or_else(|| InfoDtmfError::BadKey {
        key: key.to_owned(),
    })
}

/// Parses an INFO body into the key and, for `dtmf-relay`, the press duration if one is given.
///
/// Tolerant of LF-only line ends, spaces around `=`, any letter case in the field names, and
/// trailing whitespace; strict about the key itself. A malformed `Duration` is ignored, since the
/// key is what matters.
pub fn parse_info_body(
    content_type: &str,
    body: &[u8],
) -> Result<(Digit, Option<Duration>), InfoDtmfError> {
    let format = format_of(content_type).ok_or_else(|| InfoDtmfError::UnsupportedContentType {
        content_type: content_type.to_owned(),
    })?;
    let text = String::from_utf8_lossy(body);
    match format {
        Format::Plain => Ok((parse_key(&text)?, None)),
        Format::Relay => parse_relay(&text),
    }
}

fn parse_relay(text: &str) -> Result<(Digit, Option<Duration>), InfoDtmfError> {
    let mut signal = None;
    let mut duration = None;
    for line in text.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("signal") {
            signal = Some(parse_key(value)?);
        } else if name.eq_ignore_ascii_case("duration") {
            duration = value.trim().parse::<u64>().ok().map(Duration::from_millis);
        }
    }
    let digit = signal.ok_or(InfoDtmfError::MissingSignal)?;
    Ok((digit, duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str = "application/dtmf-relay";

    #[test]
    fn relay_body_with_crlf() {
        assert_eq!(
            parse_info_body(RELAY, b"Signal=5\r\nDuration=160\r\n"),
            Ok((Digit::D5, Some(Duration::from_millis(160))))
        );
    }

    #[test]
    fn relay_body_tolerates_lf_spaces_case_and_missing_duration() {
        assert_eq!(
            parse_info_body("Application/DTMF-Relay", b"signal = #\nduration= 250\n"),
            Ok((Digit::Pound, Some(Duration::from_millis(250))))
        );
        assert_eq!(
            parse_info_body(RELAY, b"Signal= *\r\n"),
            Ok((Digit::Star, None))
        );
        assert_eq!(parse_info_body(RELAY, b"Signal=b"), Ok((Digit::B, None)));
        assert_eq!(
            parse_info_body(RELAY, b"Signal=1\nDuration=soon\n"),
            Ok((Digit::D1, None))
        );
    }

    #[test]
    fn relay_numeric_codes_for_star_and_pound() {
        assert_eq!(
            parse_info_body(RELAY, b"Signal=10\r\n"),
            Ok((Digit::Star, None))
        );
        assert_eq!(
            parse_info_body(RELAY, b"Signal=11\r\n"),
            Ok((Digit::Pound, None))
        );
        assert_eq!(
            parse_info_body(RELAY, b"Signal=12\r\n"),
            Err(InfoDtmfError::BadKey { key: "12".into() })
        );
    }

    #[test]
    fn relay_errors() {
        assert_eq!(
            parse_info_body(RELAY, b"Duration=160\r\n"),
            Err(InfoDtmfError::MissingSignal)
        );
        assert_eq!(
            parse_info_body(RELAY, b"Signal=x\r\n"),
            Err(InfoDtmfError::BadKey { key: "x".into() })
        );
        assert_eq!(
            parse_info_body(RELAY, b"Signal=\r\n"),
            Err(InfoDtmfError::BadKey { key: "".into() })
        );
    }

    #[test]
    fn plain_dtmf_body() {
        assert_eq!(
            parse_info_body("application/dtmf", b"5"),
            Ok((Digit::D5, None))
        );
        assert_eq!(
            parse_info_body("application/dtmf", b"*\r\n"),
            Ok((Digit::Star, None))
        );
        assert_eq!(
            parse_info_body("APPLICATION/DTMF ; charset=utf-8", b" # \n"),
            Ok((Digit::Pound, None))
        );
        assert_eq!(
            parse_info_body("application/dtmf", b"55"),
            Err(InfoDtmfError::BadKey { key: "55".into() })
        );
    }

    #[test]
    fn other_content_types_are_rejected() {
        assert_eq!(
            parse_info_body("application/media_control+xml", b"<x/>"),
            Err(InfoDtmfError::UnsupportedContentType {
                content_type: "application/media_control+xml".into()
            })
        );
        // A prefix match must not pass for the relay type.
        assert!(parse_info_body("application/dtmf-relayx", b"Signal=1").is_err());
    }
}

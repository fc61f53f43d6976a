//! DTMF digits as one typed value, shared by every detector (RFC 4733, SIP INFO, in-band) and by the
//! dialplan engine that consumes them.

use std::fmt;
use std::time::Instant;

/// One DTMF key: `0`–`9`, `*`, `#` and the rarely used `A`–`D`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Digit {
    D0,
    D1,
    D2,
    D3,
    D4,
    D5,
    D6,
    D7,
    D8,
    D9,
    Star,
    Pound,
    A,
    B,
    C,
    D,
}

impl Digit {
    /// All sixteen keys in RFC 4733 event-code order.
    pub const ALL: [Digit; 16] = [
        Digit::D0,
        Digit::D1,
        Digit::D2,
        Digit::D3,
        Digit::D4,
        Digit::D5,
        Digit::D6,
        Digit::D7,
        Digit::D8,
        Digit::D9,
        Digit::Star,
        Digit::Pound,
        Digit::A,
        Digit::B,
        Digit::C,
        Digit::D,
    ];

    /// The key for an RFC 4733 §3.2 event code (0–9 digits, 10 `*`, 11 `#`, 12–15 `A`–`D`).
    pub fn from_event_code(code: u8) -> Option<Digit> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// The RFC 4733 event code of this key.
    pub fn event_code(self) -> u8 {
        self as u8
    }

    /// Parses one key character, case-insensitive for `A`–`D`.
    pub fn from_char(c: char) -> Option<Digit> {
        match c.to_ascii_uppercase() {
            '0'..='9' => Self::from_event_code(c as u8 - b'0'),
            '*' => Some(Digit::Star),
            '#' => Some(Digit::Pound),
            'A'..='D' => Self::from_event_code(12 + (c.to_ascii_uppercase() as u8 - b'A')),
            _ => None,
        }
    }

    /// The key as the character printed on the keypad.
    pub fn as_char(self) -> char {
        b"0123456789*#ABCD"[self as usize] as char
    }
}

impl fmt::Display for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

/// How a digit reached us; kept in the call journal and the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfMethod {
    /// RTP telephone-event payload (RFC 4733).
    Rfc4733,
    /// SIP INFO in the dialog (`application/dtmf-relay` or `application/dtmf`).
    Info,
    /// Tones in the caller's audio, found by the Goertzel detector.
    Inband,
}

impl DtmfMethod {
    /// The stable lower-case name used in logs, cases and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DtmfMethod::Rfc4733 => "rfc4733",
            DtmfMethod::Info => "info",
            DtmfMethod::Inband => "inband",
        }
    }
}

/// A key press reported once, with the method that delivered it first and when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigitEvent {
    pub digit: Digit,
    pub method: DtmfMethod,
    pub at: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_codes_round_trip_for_all_keys() {
        for (code, d) in Digit::ALL.iter().enumerate() {
            assert_eq!(d.event_code() as usize, code);
            assert_eq!(Digit::from_event_code(code as u8), Some(*d));
            assert_eq!(Digit::from_char(d.as_char()), Some(*d));
        }
        assert_eq!(Digit::from_event_code(16), None);
        assert_eq!(Digit::from_char('x'), None);
        assert_eq!(Digit::from_char('b'), Some(Digit::B));
    }
}

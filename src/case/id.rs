//! `CaseId`: the sortable unique id every case carries and every spool file is named after.
//!
//! Format (our choice, ULID-shaped): 26 characters of Crockford base32 (`0-9A-Z` without `I L O U`,
//! upper case only) encoding 128 bits, most significant first: 48 bits of Unix time in milliseconds,
//! then 80 random bits. Because the encoding is fixed-width and the alphabet is in ASCII order, the
//! lexical order of two ids is their numeric order, so ids created in a later millisecond always sort
//! after earlier ones. Within one millisecond the order is random (not monotonic). 80 random bits make
//! a collision within one millisecond negligible (birthday bound ~2^40 ids per millisecond).
//!
//! The id is also a file name in the outbox spool: the parser accepts only the canonical form, so a
//! `CaseId` can never contain `/`, `.` or anything else that could escape the spool directory.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Crockford's base32 alphabet, in ASCII order (this is what makes lexical = numeric order).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Length of an encoded id: ceil(128 / 5).
pub const CASE_ID_LEN: usize = 26;
const TIME_BITS: u32 = 48;
const RANDOM_BITS: u32 = 80;

/// A case's sortable unique id (see the module documentation for the format).
///
/// Promises: always exactly 26 canonical Crockford base32 characters; `Ord` on `CaseId` and on its
/// string agree; safe to use as a file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CaseId(String);

/// Why a string is not a canonical `CaseId`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaseIdError {
    #[error("case id must be {CASE_ID_LEN} characters, got {len}")]
    Length { len: usize },
    #[error("case id has {found:?} at position {at}, outside upper-case Crockford base32")]
    Character { found: char, at: usize },
    #[error("case id starts with {found:?}: its value exceeds 128 bits")]
    Overflow { found: char },
}

impl CaseId {
    /// Builds the id for a case created at `now_unix_ms` (wall clock, passed in by the driver) with
    /// caller-supplied randomness (only the low 80 bits of `random` are used). Times beyond the 48-bit
    /// range (year 10889) wrap; that is the only way two different times can lose their order.
    pub fn new(now_unix_ms: u64, random: u128) -> CaseId {
        let time = u128::from(now_unix_ms) & ((1u128 << TIME_BITS) - 1);
        let value = (time << RANDOM_BITS) | (random & ((1u128 << RANDOM_BITS) - 1));
        let mut out = String::with_capacity(CASE_ID_LEN);
        for i in 0..CASE_ID_LEN {
            let shift = 5 * (CASE_ID_LEN - 1 - i);
            let digit = (value >> shift) & 0x1f;
            out.push(char::from(ALPHABET[digit as usize]));
        }
        CaseId(out)
    }

    /// Parses the canonical text form (upper case, exactly 26 characters).
    pub fn parse(text: &str) -> Result<CaseId, CaseIdError> {
        if text.len() != CASE_ID_LEN {
            return Err(CaseIdError::Length { len: text.len() });
        }
        for (at, found) in text.chars().enumerate() {
            if !found.is_ascii() || !ALPHABET.contains(&(found as u8)) {
                return Err(CaseIdError::Character { found, at });
            }
        }
        // 26 digits carry 130 bits; the first digit may only use the low 3.
        match text.chars().next() {
            Some(found) if found > '7' => Err(CaseIdError::Overflow { found }),
            _ => Ok(CaseId(text.to_owned())),
        }
    }

    /// The creation time in Unix milliseconds that was encoded by [`CaseId::new`].
    pub fn unix_ms(&self) -> u64 {
        let mut value: u128 = 0;
        for b in self.0.bytes() {
            let digit = ALPHABET.iter().position(|a| *a == b).unwrap_or(0);
            value = (value << 5) | digit as u128;
        }
        (value >> RANDOM_BITS) as u64
    }

    /// The canonical text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for CaseId {
    type Error = CaseIdError;
    fn try_from(text: String) -> Result<CaseId, CaseIdError> {
        CaseId::parse(&text)
    }
}

impl From<CaseId> for String {
    fn from(id: CaseId) -> String {
        id.0
    }
}

impl std::str::FromStr for CaseId {
    type Err = CaseIdError;
    fn from_str(text: &str) -> Result<CaseId, CaseIdError> {
        CaseId::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn known_values_encode_big_endian_crockford() {
        assert_eq!(CaseId::new(0, 0).as_str(), "00000000000000000000000000");
        // The lowest random bit is the last digit; the lowest time bit is bit 80 = digit 16 (0-based
        // from the end: 80 / 5 = 16), i.e. the character at index 25 - 16 = 9.
        assert_eq!(CaseId::new(0, 1).as_str(), "00000000000000000000000001");
        assert_eq!(CaseId::new(1, 0).as_str(), "00000000010000000000000000");
        assert_eq!(CaseId::new(0, 31).as_str(), "0000000000000000000000000Z");
        assert_eq!(
            CaseId::new(u64::MAX, u128::MAX).as_str(),
            "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
        );
    }

    #[test]
    fn time_round_trips() {
        let ms = 1_795_000_000_123; // 2026-11
        assert_eq!(CaseId::new(ms, 0xdead_beef).unix_ms(), ms);
    }

    #[test]
    fn lexical_order_is_time_order() {
        let mut ids = Vec::new();
        let mut seed: u128 = 0x1234_5678_9abc_def0_1122_3344_5566_7788;
        for step in 0..2000u64 {
            seed = seed
                .wrapping_mul(0x2545_f491_4f6c_dd1d)
                .wrapping_add(1442695040888963407);
            // Strictly increasing times, including neighbours one millisecond apart and big jumps.
            let ms = 1_700_000_000_000 + step * step;
            ids.push((ms, CaseId::new(ms, seed)));
        }
        for pair in ids.windows(2) {
            assert!(pair[0].0 < pair[1].0);
            assert!(pair[0].1.as_str() < pair[1].1.as_str(), "{pair:?}");
        }
    }

    #[test]
    fn same_millisecond_ids_are_unique_with_random_input() {
        let ms = 1_795_000_000_000;
        let ids: HashSet<CaseId> = (0..10_000)
            .map(|_| CaseId::new(ms, rand::random::<u128>()))
            .collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn parse_accepts_only_canonical_text() {
        let id = CaseId::new(1_795_000_000_000, 42);
        assert_eq!(CaseId::parse(id.as_str()), Ok(id.clone()));
        assert_eq!(CaseId::parse("short"), Err(CaseIdError::Length { len: 5 }));
        let lower = id.as_str().to_lowercase();
        assert!(matches!(
            CaseId::parse(&lower),
            Err(CaseIdError::Character { .. })
        ));
        assert_eq!(
            CaseId::parse("0000000000000000000000000U"),
            Err(CaseIdError::Character { found: 'U', at: 25 })
        );
        assert_eq!(
            CaseId::parse("../../etc/passwd0000000000"),
            Err(CaseIdError::Character { found: '.', at: 0 })
        );
        assert_eq!(
            CaseId::parse("80000000000000000000000000"),
            Err(CaseIdError::Overflow { found: '8' })
        );
    }

    #[test]
    fn serde_uses_the_text_form_and_validates() {
        let id = CaseId::new(5, 7);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<CaseId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<CaseId>("\"nope\"").is_err());
    }
}

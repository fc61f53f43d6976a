//! Where a recording lives under `[storage] dir`: a dated layout and a file name made safe.
//!
//! Call-IDs come from the network (RFC 3261 §8.1.1.4 only asks that they be unique), so one is
//! never used as a path as it stands: it is mapped onto a small alphabet, bounded in length and
//! followed by a short digest of the original, so two different Call-IDs that sanitise to the same
//! text still get different files.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Folder under `[storage] dir` that holds every recording (and the only one `repair_orphans`
/// scans).
pub const RECORDINGS_DIR: &str = "recordings";

/// Longest sanitised Call-ID kept in a file name, in bytes (the name also gets a digest suffix).
pub const MAX_SAFE_ID_LEN: usize = 64;

/// Hex digits of the Call-ID's SHA-256 appended to every name.
const DIGEST_HEX_LEN: usize = 12;

/// A calendar day, used for the `YYYY/MM/DD` folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordingDate {
    /// Proleptic Gregorian year.
    pub year: i32,
    /// 1–12.
    pub month: u8,
    /// 1–31.
    pub day: u8,
}

impl RecordingDate {
    /// The day that `unix_seconds` falls on at `utc_offset_secs` from UTC (China: +28,800).
    pub fn from_unix_seconds(unix_seconds: i64, utc_offset_secs: i32) -> Self {
        let local = unix_seconds.saturating_add(i64::from(utc_offset_secs));
        civil_from_days(local.div_euclid(86_400))
    }

    /// The day of a wall-clock time; times before 1970 are taken as 1970-01-01 (a broken clock).
    pub fn from_system_time(time: SystemTime, utc_offset_secs: i32) -> Self {
        let secs = time
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self::from_unix_seconds(secs, utc_offset_secs)
    }
}

fn civil_from_days(days_since_epoch: i64) -> RecordingDate {
    let (year, month, day) = crate::dialplan::calendar::civil_from_days(days_since_epoch);
    RecordingDate {
        year: i32::try_from(year).unwrap_or(i32::MAX),
        // Both are in range by construction (1..=12, 1..=31).
        month: month as u8,
        day: day as u8,
    }
}

/// The storage-relative name of one recording, without extension, e.g.
/// `recordings/2026/11/26/a84b4c76e66710_pc33.example.com-1f2e3d4c5b6a`.
///
/// Only the constructors below make one, so every value is a relative path of plain components:
/// no `/` inside a component, no `..`, no control characters, bounded length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingName {
    /// `recordings/YYYY/MM/DD`.
    dir: PathBuf,
    /// The sanitised stem; it may contain dots, so extensions are appended, never substituted.
    stem: String,
}

impl RecordingName {
    /// The whole-call recording of `call_id`, answered on `date`.
    pub fn for_call(call_id: &str, date: RecordingDate) -> Self {
        Self::dated(date, safe_file_stem(call_id))
    }

    /// The `index`-th caller message (1, 2, …) recorded during `call_id`.
    pub fn for_message(call_id: &str, date: RecordingDate, index: u32) -> Self {
        Self::dated(date, format!("{}-msg{index}", safe_file_stem(call_id)))
    }

    fn dated(date: RecordingDate, stem: String) -> Self {
        let mut relative = PathBuf::from(RECORDINGS_DIR);
        relative.push(format!("{:04}", date.year));
        relative.push(format!("{:02}", date.month));
        relative.push(format!("{:02}", date.day));
        RecordingName {
            dir: relative,
            stem,
        }
    }

    /// The finished file, relative to `[storage] dir` (what the case JSON records).
    pub fn relative_wav(&self) -> PathBuf {
        self.dir.join(format!("{}.wav", self.stem))
    }

    /// The file being written, relative to `[storage] dir`.
    pub fn relative_part(&self) -> PathBuf {
        self.dir.join(format!("{}.wav.part", self.stem))
    }
}

/// Maps a network-supplied Call-ID onto a safe file stem: `[A-Za-z0-9._@-]` kept, anything else
/// (including `/`, `\`, spaces, control and non-ASCII characters) becomes `_`, a leading `.` becomes
/// `_` (no hidden files, no `..`), the result is cut to [`MAX_SAFE_ID_LEN`] bytes, and `-` plus
/// the first 12 hex digits of the raw Call-ID's SHA-256 is appended.
pub fn safe_file_stem(call_id: &str) -> String {
    let mut out = String::with_capacity(MAX_SAFE_ID_LEN + 1 + DIGEST_HEX_LEN);
    for c in call_id.chars().take(MAX_SAFE_ID_LEN) {
        let keep = c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
        let leading_dot = out.is_empty() && c == '.';
        out.push(if keep && !leading_dot { c } else { '_' });
    }
    if out.is_empty() {
        out.push_str("no-call-id");
    }
    out.push('-');
    let digest = Sha256::digest(call_id.as_bytes());
    out.push_str(&hex(&digest)[..DIGEST_HEX_LEN]);
    out
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Component;

    fn date(year: i32, month: u8, day: u8) -> RecordingDate {
        RecordingDate { year, month, day }
    }

    #[test]
    fn dates_match_reference_calendar() {
        // Reference values from `date -u -d @SECONDS +%F`.
        assert_eq!(RecordingDate::from_unix_seconds(0, 0), date(1970, 1, 1));
        assert_eq!(
            RecordingDate::from_unix_seconds(-86_400, 0),
            date(1969, 12, 31)
        );
        assert_eq!(
            RecordingDate::from_unix_seconds(951_782_400, 0),
            date(2000, 2, 29)
        );
        assert_eq!(
            RecordingDate::from_unix_seconds(1_795_651_199, 0),
            date(2026, 11, 25)
        );
        assert_eq!(
            RecordingDate::from_unix_seconds(1_795_651_200, 0),
            date(2026, 11, 26)
        );
        assert_eq!(
            RecordingDate::from_unix_seconds(4_107_542_400, 0),
            date(2100, 3, 1)
        );
    }

    #[test]
    fn utc_offset_moves_the_day() {
        // 2026-11-25 16:30 UTC is 00:30 on the 26th in Beijing.
        assert_eq!(
            RecordingDate::from_unix_seconds(1_795_624_200, 0),
            date(2026, 11, 25)
        );
        assert_eq!(
            RecordingDate::from_unix_seconds(1_795_624_200, 8 * 3600),
            date(2026, 11, 26)
        );
    }

    #[test]
    fn call_name_uses_dated_layout() {
        let name = RecordingName::for_call("abc@host", date(2026, 11, 26));
        let rel = name.relative_wav();
        let parts: Vec<_> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(&parts[..4], &["recordings", "2026", "11", "26"]);
        assert!(parts[4].starts_with("abc@host-"), "{}", parts[4]);
        assert!(parts[4].ends_with(".wav"));
        assert_eq!(name.relative_part().extension().unwrap(), "part");
        let msg = RecordingName::for_message("abc@host", date(2026, 1, 2), 2).relative_wav();
        assert!(msg.to_string_lossy().contains("/01/02/abc@host-"));
        assert!(msg.to_string_lossy().ends_with("-msg2.wav"));
    }

    #[test]
    fn hostile_call_ids_stay_one_plain_component() {
        let hostile = [
            "../../etc/passwd",
            "..",
            ".",
            "",
            "a/b\\c",
            "line\nbreak\0nul\x1b[31m",
            "呼叫标识@例子",
            &"x".repeat(5000),
        ];
        for id in hostile {
            let stem = safe_file_stem(id);
            assert!(stem.len() <= MAX_SAFE_ID_LEN + 1 + DIGEST_HEX_LEN, "{stem}");
            assert!(!stem.starts_with('.'), "{stem}");
            assert!(
                stem.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b)),
                "{stem:?}"
            );
            let rel = RecordingName::for_call(id, date(2026, 11, 26)).relative_wav();
            assert_eq!(rel.components().count(), 5, "{rel:?}");
            assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
        }
    }

    #[test]
    fn distinct_ids_that_sanitise_alike_get_distinct_names() {
        assert_ne!(safe_file_stem("a/b"), safe_file_stem("a\\b"));
        assert!(safe_file_stem("a/b").starts_with("a_b-"));
        assert_eq!(safe_file_stem("same"), safe_file_stem("same"));
    }

    #[test]
    fn hex_encodes_lower_case() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}

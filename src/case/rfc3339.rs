//! RFC 3339 UTC timestamps for case documents, from Unix milliseconds (no time-zone database:
//! cases are in UTC; the plan's local time is only used for routing decisions).

use crate::dialplan::calendar::civil_from_days;

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_unix_ms(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let ms_of_day = unix_ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, rest) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
    let (min, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(format_unix_ms(0), "1970-01-01T00:00:00.000Z");
        // 2026-11-26T15:14:03.250Z
        assert_eq!(
            format_unix_ms(1_795_706_043_250),
            "2026-11-26T15:14:03.250Z"
        );
        // Leap day and the end of a century leap year.
        assert_eq!(format_unix_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_unix_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}

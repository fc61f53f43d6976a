//! Local wall-clock facts a dialplan branches on: date, weekday, minute of day, holidays.
//!
//! The driver turns "now" into a [`WallClock`] once per call (with [`WallClock::from_unix`] and the
//! plan's fixed UTC offset); the engine only compares values, so it never reads the clock.

use std::collections::BTreeSet;

use serde::Deserialize;

/// A calendar date in the plan's timezone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// Parses `YYYY-MM-DD`; `None` unless it is a real date.
    pub fn parse(s: &str) -> Option<Date> {
        let mut it = s.split('-');
        let year: i32 = it.next()?.parse().ok()?;
        let month: u8 = it.next()?.parse().ok()?;
        let day: u8 = it.next()?.parse().ok()?;
        if it.next().is_some() || !(1..=12).contains(&month) || day == 0 {
            return None;
        }
        (day <= days_in_month(year, month)).then_some(Date { year, month, day })
    }
}

fn days_in_month(year: i32, month: u8) -> u8 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The local time a call started at, as the branch rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    pub date: Date,
    /// ISO weekday, 1 = Monday … 7 = Sunday.
    pub weekday: u8,
    /// Minutes since local midnight, 0–1439.
    pub minute_of_day: u16,
}

impl WallClock {
    /// Converts Unix seconds to local time at a fixed offset (minutes east of UTC).
    /// Uses the days-to-civil conversion for the proleptic Gregorian calendar.
    pub fn from_unix(unix_seconds: i64, offset_minutes: i32) -> WallClock {
        let local = unix_seconds + i64::from(offset_minutes) * 60;
        let days = local.div_euclid(86_400);
        let secs = local.rem_euclid(86_400);
        // 1970-01-01 was a Thursday (ISO 4).
        let weekday = ((days + 3).rem_euclid(7) + 1) as u8;
        let (year, month, day) = civil_from_days(days);
        let (year, month, day) = (
            i32::try_from(year).unwrap_or(i32::MAX),
            month as u8,
            day as u8,
        );
        WallClock {
            date: Date { year, month, day },
            weekday,
            minute_of_day: (secs / 60) as u16,
        }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month 1–12, day 1–31), by the
/// well-known era-based conversion (400-year cycles of 146,097 days, years starting on 1 March
/// so the leap day comes last). The one copy: recordings and case times use it too.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Parses a fixed UTC offset `+HH:MM` / `-HH:MM` into minutes east of UTC.
pub fn parse_utc_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60 && rest.len() == 5).then_some(sign * (h * 60 + m))
}

/// A daily window `[start, end)` in minutes; `start > end` wraps past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub start: u16,
    pub end: u16,
}

impl TimeWindow {
    /// Parses `HH:MM-HH:MM` (`24:00` allowed as an end).
    pub fn parse(s: &str) -> Option<TimeWindow> {
        let (a, b) = s.split_once('-')?;
        let (start, end) = (parse_hhmm(a.trim())?, parse_hhmm(b.trim())?);
        (start < 1440 && start != end).then_some(TimeWindow { start, end })
    }

    /// Whether a minute of day falls inside the window.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
}

/// The holiday calendar file: public holidays and the weekend days made into workdays (调休).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolidayFile {
    #[serde(default)]
    pub holidays: Vec<String>,
    #[serde(default)]
    pub workdays: Vec<String>,
}

/// A validated holiday calendar.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holidays {
    holidays: BTreeSet<Date>,
    workdays: BTreeSet<Date>,
}

impl Holidays {
    /// Builds the calendar; returns the first string that is not a date on failure.
    pub fn from_file(file: &HolidayFile) -> Result<Holidays, String> {
        let parse = |v: &Vec<String>| -> Result<BTreeSet<Date>, String> {
            v.iter()
                .map(|s| Date::parse(s).ok_or_else(|| s.clone()))
                .collect()
        };
        Ok(Holidays {
            holidays: parse(&file.holidays)?,
            workdays: parse(&file.workdays)?,
        })
    }

    /// True on a listed holiday, and on a weekend that is not an adjusted workday.
    pub fn is_day_off(&self, clock: &WallClock) -> bool {
        if self.holidays.contains(&clock.date) {
            return true;
        }
        clock.weekday >= 6 && !self.workdays.contains(&clock.date)
    }

    /// True only on a listed public holiday.
    pub fn is_holiday(&self, date: Date) -> bool {
        self.holidays.contains(&date)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_to_local_wall_clock() {
        // 2026-11-26T15:17:46Z is a Thursday; at +08:00 it is 23:17 the same day.
        let c = WallClock::from_unix(1_795_706_266, 480);
        assert_eq!(c.date, Date::parse("2026-11-26").unwrap());
        assert_eq!(c.weekday, 4);
        assert_eq!(c.minute_of_day, 23 * 60 + 17);
        // One more hour crosses midnight into Friday.
        let c = WallClock::from_unix(1_795_706_266 + 3600, 480);
        assert_eq!((c.date.day, c.weekday, c.minute_of_day), (27, 5, 17));
        // Leap day before the epoch shift.
        let c = WallClock::from_unix(951_782_400, 0);
        assert_eq!(c.date, Date::parse("2000-02-29").unwrap());
    }

    #[test]
    fn offsets_windows_and_dates() {
        assert_eq!(parse_utc_offset("+08:00"), Some(480));
        assert_eq!(parse_utc_offset("-03:30"), Some(-210));
        assert_eq!(parse_utc_offset("08:00"), None);
        let w = TimeWindow::parse("22:00-08:00").unwrap();
        assert!(w.contains(23 * 60) && w.contains(7 * 60) && !w.contains(12 * 60));
        let d = TimeWindow::parse("08:30-18:00").unwrap();
        assert!(d.contains(510) && !d.contains(1080));
        assert!(TimeWindow::parse("25:00-26:00").is_none());
        assert!(Date::parse("2026-02-29").is_none());
        assert!(Date::parse("2028-02-29").is_some());
    }

    #[test]
    fn adjusted_workdays_are_not_days_off() {
        let h = Holidays::from_file(&HolidayFile {
            holidays: vec!["2026-10-01".into()],
            workdays: vec!["2026-09-27".into()],
        })
        .unwrap();
        let at = |d: &str, wd| WallClock {
            date: Date::parse(d).unwrap(),
            weekday: wd,
            minute_of_day: 600,
        };
        assert!(h.is_day_off(&at("2026-10-01", 4)));
        assert!(!h.is_day_off(&at("2026-09-27", 7)));
        assert!(h.is_day_off(&at("2026-10-04", 7)));
        assert!(!h.is_day_off(&at("2026-10-09", 5)));
    }
}

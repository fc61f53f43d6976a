//! One stream of digits from three detectors.
//!
//! Data flow: [`super::Rfc4733Decoder`], [`super::parse_info_body`] and [`super::GoertzelDetector`]
//! each report a key press once per method; many trunks send the same press two or three ways
//! (RFC 4733 *and* the tones left in the audio, or INFO as well). [`DtmfStream`] merges them so the
//! dialplan engine sees each press once, tagged with the method that delivered it first.

use std::time::{Duration, Instant};

use crate::media::digit::{Digit, DigitEvent, DtmfMethod};

/// Default time within which the same key from another method is taken as the same press. Long
/// enough for in-band detection (≈40 ms of tone) and INFO signalling delay, shorter than two real
/// presses of one key (press + pause ≥ ~100 ms for a human, usually far more).
pub const DEFAULT_MERGE_WINDOW: Duration = Duration::from_millis(250);

/// Presses remembered for de-duplication; more than this many within one window is not human.
const RECENT: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Press {
    digit: Digit,
    reported_at: Instant,
    /// Bit per [`DtmfMethod`] that has already delivered this press.
    methods: u8,
}

fn bit(method: DtmfMethod) -> u8 {
    match method {
        DtmfMethod::Rfc4733 => 1,
        DtmfMethod::Info => 2,
        DtmfMethod::Inband => 4,
    }
}

/// De-duplicates key presses across methods.
///
/// Promises: a key reported by one method is passed on at once; the same key from a *different*
/// method within the window of that report is the same press and is dropped; the same key from the
/// *same* method is always a new press (each detector already removes its own repeats). In-band
/// detection stays on after RFC 4733 was seen, because some trunks switch methods mid-call.
#[derive(Debug, Clone)]
pub struct DtmfStream {
    window: Duration,
    recent: [Option<Press>; RECENT],
    /// Index in `recent` to overwrite next when no slot has expired.
    next_slot: usize,
}

impl Default for DtmfStream {
    fn default() -> Self {
        Self::new(DEFAULT_MERGE_WINDOW)
    }
}

impl DtmfStream {
    /// A stream that treats the same key from another method within `window` as one press.
    pub fn new(window: Duration) -> Self {
        DtmfStream {
            window,
            recent: [None; RECENT],
            next_slot: 0,
        }
    }

    /// A digit from the RFC 4733 decoder, reported when its first packet arrived at `now`.
    pub fn on_rfc4733(&mut self, now: Instant, digit: Digit) -> Option<DigitEvent> {
        self.on_digit(now, digit, DtmfMethod::Rfc4733, now)
    }

    /// A digit from a SIP INFO received at `now`.
    pub fn on_info(&mut self, now: Instant, digit: Digit) -> Option<DigitEvent> {
        self.on_digit(now, digit, DtmfMethod::Info, now)
    }

    /// A digit from the in-band detector, confirmed at `now`, whose tone began at `started_at`.
    pub fn on_inband(
        &mut self,
        now: Instant,
        digit: Digit,
        started_at: Instant,
    ) -> Option<DigitEvent> {
        self.on_digit(now, digit, DtmfMethod::Inband, started_at)
    }

    fn on_digit(
        &mut self,
        now: Instant,
        digit: Digit,
        method: DtmfMethod,
        at: Instant,
    ) -> Option<DigitEvent> {
        let window = self.window;
        // The newest matching press wins: after "5 (rfc), 5 (rfc)" an in-band 5 belongs to the second.
        let newest = self
            .recent
            .iter_mut()
            .flatten()
            .filter(|p| p.digit == digit && now.saturating_duration_since(p.reported_at) <= window)
            .max_by_key(|p| p.reported_at);
        if let Some(press) = newest {
            if press.methods & bit(method) == 0 {
                press.methods |= bit(method);
                return None;
            }
        }
        self.remember(Press {
            digit,
            reported_at: now,
            methods: bit(method),
        });
        Some(DigitEvent { digit, method, at })
    }

    fn remember(&mut self, press: Press) {
        let window = self.window;
        let expired = self.recent.iter().position(|slot| {
            slot.is_none_or(|p| press.reported_at.saturating_duration_since(p.reported_at) > window)
        });
        let idx = expired.unwrap_or(self.next_slot);
        self.recent[idx] = Some(press);
        self.next_slot = (idx + 1) % RECENT;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn same_key_other_method_within_window_is_one_press() {
        let t0 = Instant::now();
        let mut s = DtmfStream::default();
        let first = s.on_rfc4733(t0, Digit::D5).unwrap();
        assert_eq!(
            first,
            DigitEvent {
                digit: Digit::D5,
                method: DtmfMethod::Rfc4733,
                at: t0
            }
        );
        assert_eq!(s.on_inband(t0 + ms(45), Digit::D5, t0 + ms(5)), None);
        assert_eq!(s.on_info(t0 + ms(120), Digit::D5), None);
    }

    #[test]
    fn inband_first_then_rfc4733_reports_inband_with_tone_start() {
        let t0 = Instant::now();
        let mut s = DtmfStream::default();
        let ev = s.on_inband(t0 + ms(40), Digit::D2, t0).unwrap();
        assert_eq!(
            ev,
            DigitEvent {
                digit: Digit::D2,
                method: DtmfMethod::Inband,
                at: t0
            }
        );
        assert_eq!(s.on_rfc4733(t0 + ms(60), Digit::D2), None);
    }

    #[test]
    fn same_method_repeats_are_new_presses() {
        let t0 = Instant::now();
        let mut s = DtmfStream::default();
        assert!(s.on_rfc4733(t0, Digit::D1).is_some());
        assert!(s.on_rfc4733(t0 + ms(90), Digit::D1).is_some());
        assert!(s.on_info(t0 + ms(100), Digit::D7).is_some());
        assert!(s.on_info(t0 + ms(110), Digit::D7).is_some());
    }

    #[test]
    fn other_method_after_the_window_is_a_new_press() {
        let t0 = Instant::now();
        let mut s = DtmfStream::default();
        assert!(s.on_rfc4733(t0, Digit::D3).is_some());
        assert!(s.on_inband(t0 + ms(251), Digit::D3, t0 + ms(200)).is_some());
        let mut short = DtmfStream::new(ms(50));
        assert!(short.on_rfc4733(t0, Digit::D3).is_some());
        assert!(
            short
                .on_inband(t0 + ms(60), Digit::D3, t0 + ms(10))
                .is_some()
        );
    }

    #[test]
    fn different_keys_are_never_merged() {
        let t0 = Instant::now();
        let mut s = DtmfStream::default();
        assert!(s.on_rfc4733(t0, Digit::D4).is_some());
        assert!(s.on_inband(t0 + ms(10), Digit::D6, t0).is_some());
    }

    #[test]
    fn inband_stays_on_after_rfc4733_but_duplicates_are_dropped() {
        let t0 = Instant::now();
        let mut s = DtmfStream::default();
        // Two quick presses of one key, each sent both ways; both reported once. The second in-band
        // report belongs to the second press, not to the first (which already had its in-band copy).
        assert!(s.on_rfc4733(t0, Digit::D8).is_some());
        assert_eq!(s.on_inband(t0 + ms(40), Digit::D8, t0), None);
        assert!(s.on_rfc4733(t0 + ms(150), Digit::D8).is_some());
        assert_eq!(s.on_inband(t0 + ms(190), Digit::D8, t0 + ms(150)), None);
        // The trunk drops RFC 4733: in-band alone still gets through.
        let ev = s
            .on_inband(t0 + ms(2000), Digit::D9, t0 + ms(1960))
            .unwrap();
        assert_eq!(ev.method, DtmfMethod::Inband);
        assert_eq!(ev.at, t0 + ms(1960));
    }

    #[test]
    fn three_methods_for_one_press_report_once_and_later_press_again() {
        let t0 = Instant::now();
        let mut s = DtmfStream::default();
        let mut out = Vec::new();
        let inputs = [
            (0, DtmfMethod::Info),
            (30, DtmfMethod::Rfc4733),
            (45, DtmfMethod::Inband),
            (600, DtmfMethod::Rfc4733),
            (640, DtmfMethod::Inband),
        ];
        for (t, m) in inputs {
            let now = t0 + ms(t);
            let ev = match m {
                DtmfMethod::Info => s.on_info(now, Digit::Pound),
                DtmfMethod::Rfc4733 => s.on_rfc4733(now, Digit::Pound),
                DtmfMethod::Inband => s.on_inband(now, Digit::Pound, now - ms(40)),
            };
            out.extend(ev.map(|e| e.method));
        }
        assert_eq!(out, vec![DtmfMethod::Info, DtmfMethod::Rfc4733]);
    }
}

//! Tests of the in-band detector with audio synthesised here: keypad tones at set levels, twist,
//! frequency offsets, noise, G.711 µ-law round trips, and speech-like signals that must not trigger.

use super::*;

const FS: f64 = 8000.0;

/// The keypad written out independently of the detector's table: (key, row Hz, column Hz).
fn keypad() -> Vec<(Digit, f64, f64)> {
    let rows = [697.0, 770.0, 852.0, 941.0];
    let cols = [1209.0, 1336.0, 1477.0, 1633.0];
    "123A456B789C*0#D"
        .chars()
        .enumerate()
        .map(|(i, ch)| (Digit::from_char(ch).unwrap(), rows[i / 4], cols[i % 4]))
        .collect()
}

/// Peak amplitude of a sine at `dbm0` (full-scale sine = +3.17 dBm0).
fn amp(dbm0: f64) -> f64 {
    32768.0 * 10f64.powf((dbm0 - 3.17) / 20.0)
}

fn ms(n: usize) -> usize {
    n * 8
}

/// A dual tone: (frequency, level in dBm0) for each, `n` samples.
fn dual(f1: f64, l1: f64, f2: f64, l2: f64, n: usize) -> Vec<f64> {
    let (a1, a2) = (amp(l1), amp(l2));
    (0..n)
        .map(|i| {
            let t = i as f64 / FS;
            a1 * (2.0 * std::f64::consts::PI * f1 * t).sin()
                + a2 * (2.0 * std::f64::consts::PI * f2 * t + 0.7).sin()
        })
        .collect()
}

fn silence(n: usize) -> Vec<f64> {
    vec![0.0; n]
}

fn cat(parts: &[Vec<f64>]) -> Vec<f64> {
    parts.concat()
}

fn to_i16(x: &[f64]) -> Vec<i16> {
    x.iter()
        .map(|v| v.round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// Feeds `x` in frames of `frame` samples with the matching times; returns every report.
fn detect_framed(x: &[f64], frame: usize, base: Instant) -> Vec<InbandDigit> {
    let pcm = to_i16(x);
    let mut det = GoertzelDetector::new();
    let mut out = Vec::new();
    for (k, chunk) in pcm.chunks(frame).enumerate() {
        let now = base + Duration::from_micros((k * frame) as u64 * 125);
        det.push(now, chunk);
        while let Some(d) = det.poll() {
            out.push(d);
        }
    }
    out
}

fn detect(x: &[f64]) -> Vec<Digit> {
    detect_framed(x, 160, Instant::now())
        .into_iter()
        .map(|d| d.digit)
        .collect()
}

/// A press of `key` with 100 ms of silence either side.
fn press(f1: f64, l1: f64, f2: f64, l2: f64, tone_ms: usize) -> Vec<f64> {
    cat(&[
        silence(ms(100)),
        dual(f1, l1, f2, l2, ms(tone_ms)),
        silence(ms(100)),
    ])
}

/// Deterministic white noise, uniform, with the given mean power.
fn noise(power: f64, n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed | 1;
    let a = (3.0 * power).sqrt(); // uniform on [-a, a] has power a²/3
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 * a - a
        })
        .collect()
}

#[test]
fn all_sixteen_keys_at_minus_25_dbm0() {
    for (key, fr, fc) in keypad() {
        let base = Instant::now();
        let found = detect_framed(&press(fr, -25.0, fc, -25.0, 100), 160, base);
        assert_eq!(found.len(), 1, "{key}: {found:?}");
        assert_eq!(found[0].digit, key);
        // The tone starts at 100 ms; the first hit block starts within one block of it.
        let start = found[0].started_at.duration_since(base);
        let block = Duration::from_micros(12_750);
        assert!(
            start + block >= Duration::from_millis(100),
            "{key}: {start:?}"
        );
        assert!(
            start <= Duration::from_millis(100) + block,
            "{key}: {start:?}"
        );
    }
}

#[test]
fn odd_frame_sizes_give_the_same_reports() {
    let base = Instant::now();
    let x = cat(&[
        press(852.0, -20.0, 1477.0, -20.0, 80),
        press(941.0, -20.0, 1633.0, -20.0, 80),
    ]);
    let a = detect_framed(&x, 160, base);
    let b = detect_framed(&x, 37, base);
    assert_eq!(a.len(), 2);
    assert_eq!(a, b);
}

#[test]
fn twist_limits() {
    // Normal twist: the low (row) group louder.
    assert_eq!(
        detect(&press(770.0, -10.0, 1336.0, -16.0, 100)),
        vec![Digit::D5]
    );
    assert!(detect(&press(770.0, -10.0, 1336.0, -20.0, 100)).is_empty());
    // Reverse twist: the high group louder; up to 4 dB is fine.
    assert_eq!(
        detect(&press(770.0, -13.0, 1336.0, -10.0, 100)),
        vec![Digit::D5]
    );
    assert!(detect(&press(770.0, -16.0, 1336.0, -10.0, 100)).is_empty());
    assert!(detect(&press(770.0, -20.0, 1336.0, -10.0, 100)).is_empty());
}

#[test]
fn minimum_level() {
    for (key, fr, fc) in keypad() {
        assert_eq!(
            detect(&press(fr, -28.0, fc, -28.0, 100)),
            vec![key],
            "{key}"
        );
        assert!(
            detect(&press(fr, -33.0, fc, -33.0, 100)).is_empty(),
            "{key}"
        );
        // Within the twist limits, but one tone below the minimum: rejected per tone.
        assert_eq!(
            detect(&press(fr, -24.0, fc, -29.0, 100)),
            vec![key],
            "{key}"
        );
        assert!(
            detect(&press(fr, -27.0, fc, -33.0, 100)).is_empty(),
            "{key}"
        );
    }
}

#[test]
fn a_second_tone_in_the_same_group_must_be_well_below() {
    let with_second_row = |level| {
        let x = dual(697.0, -15.0, 1209.0, -15.0, ms(100));
        let y = dual(852.0, level, 852.0, -90.0, ms(100));
        let mixed: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
        cat(&[silence(ms(50)), mixed, silence(ms(50))])
    };
    assert_eq!(detect(&with_second_row(-25.0)), vec![Digit::D1]);
    assert!(detect(&with_second_row(-19.0)).is_empty());
}

#[test]
fn frequency_offset_1_5_percent_accepted_3_5_percent_rejected() {
    for (key, fr, fc) in keypad() {
        for sign in [1.0, -1.0] {
            let k = 1.0 + sign * 0.015;
            assert_eq!(
                detect(&press(fr * k, -20.0, fc * k, -20.0, 100)),
                vec![key],
                "{key} {k}"
            );
            let k = 1.0 + sign * 0.035;
            assert!(
                detect(&press(fr * k, -20.0, fc * k, -20.0, 100)).is_empty(),
                "{key} {k}"
            );
            // One tone off is enough to reject.
            assert!(
                detect(&press(fr * k, -20.0, fc, -20.0, 100)).is_empty(),
                "{key} row {k}"
            );
            assert!(
                detect(&press(fr, -20.0, fc * k, -20.0, 100)).is_empty(),
                "{key} col {k}"
            );
        }
    }
}

#[test]
fn detected_in_white_noise_at_15_db_snr() {
    for (i, (key, fr, fc)) in keypad().into_iter().enumerate() {
        let x = press(fr, -20.0, fc, -20.0, 100);
        // Power of two tones at -20 dBm0 each, 15 dB above the noise.
        let tone_power = 2.0 * amp(-20.0).powi(2) / 2.0;
        let n = noise(tone_power / 10f64.powf(1.5), x.len(), 1 + i as u64);
        let noisy: Vec<f64> = x.iter().zip(&n).map(|(a, b)| a + b).collect();
        assert_eq!(detect(&noisy), vec![key], "{key}");
    }
}

#[test]
fn thirty_ms_rejected_fifty_ms_accepted_at_any_alignment() {
    for lead in 0..BLOCK {
        let shift = silence(lead);
        let short = cat(&[shift.clone(), press(852.0, -15.0, 1336.0, -15.0, 30)]);
        assert!(detect(&short).is_empty(), "30 ms at offset {lead}");
        let long = cat(&[shift, press(852.0, -15.0, 1336.0, -15.0, 50)]);
        assert_eq!(detect(&long), vec![Digit::D8], "50 ms at offset {lead}");
    }
}

#[test]
fn repeats_need_a_gap_and_short_dropouts_are_bridged() {
    let tone = |n| dual(697.0, -15.0, 1209.0, -15.0, ms(n));
    // 60 ms on, 40 ms off, 60 ms on: two presses.
    let twice = cat(&[
        silence(ms(50)),
        tone(60),
        silence(ms(40)),
        tone(60),
        silence(ms(50)),
    ]);
    assert_eq!(detect(&twice), vec![Digit::D1, Digit::D1]);
    // One long press: once.
    assert_eq!(detect(&cat(&[tone(600), silence(ms(50))])), vec![Digit::D1]);
    // A 5 ms dropout inside a long press, wherever it falls: still once.
    for at in (200..320).step_by(9) {
        let x = cat(&[tone(at), silence(40), tone(300), silence(ms(50))]);
        assert_eq!(detect(&x), vec![Digit::D1], "dropout at {at} ms");
    }
    // Key change without a gap: both reported.
    let x = cat(&[
        tone(100),
        dual(697.0, -15.0, 1336.0, -15.0, ms(100)),
        silence(ms(50)),
    ]);
    assert_eq!(detect(&x), vec![Digit::D1, Digit::D2]);
}

/// A voiced-speech-like signal: harmonics of a wandering fundamental near 150 Hz, shaped by two
/// formants sweeping across the DTMF band, at a loud talker's level.
fn speech_like(seconds: f64) -> Vec<f64> {
    let n = (seconds * FS) as usize;
    let mut phase = [0.0f64; 26];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = i as f64 / FS;
        let f0 = 150.0 + 25.0 * (2.0 * std::f64::consts::PI * 1.3 * t).sin();
        let f1 = 500.0 + 400.0 * (2.0 * std::f64::consts::PI * 0.37 * t).sin();
        let f2 = 1500.0 + 700.0 * (2.0 * std::f64::consts::PI * 0.23 * t).sin();
        let mut v = 0.0;
        for (k, ph) in phase.iter_mut().enumerate().skip(1) {
            let fk = f0 * k as f64;
            *ph += 2.0 * std::f64::consts::PI * fk / FS;
            let g =
                (-((fk - f1) / 120.0).powi(2)).exp() + 0.6 * (-((fk - f2) / 150.0).powi(2)).exp();
            v += (0.15 + g) * ph.sin();
        }
        out.push(v * amp(-22.0));
    }
    out
}

#[test]
fn speech_like_signal_gives_no_digit() {
    assert!(detect(&speech_like(6.0)).is_empty());
}

#[test]
fn chirp_gives_no_digit() {
    let n = ms(4000);
    let mut phase = 0.0;
    let x: Vec<f64> = (0..n)
        .map(|i| {
            let f = 300.0 + 3000.0 * i as f64 / n as f64;
            phase += 2.0 * std::f64::consts::PI * f / FS;
            amp(-10.0) * phase.sin()
        })
        .collect();
    assert!(detect(&x).is_empty());
}

/// A minimal G.711 µ-law codec for the round-trip test (the crate's own lives elsewhere).
fn ulaw_encode(s: i16) -> u8 {
    let mut x = i32::from(s);
    let sign = if x < 0 { 0x80 } else { 0 };
    x = x.abs().min(32635) + 0x84;
    let mut exp = 7;
    while exp > 0 && x & (0x80 << exp) == 0 {
        exp -= 1;
    }
    let mant = (x >> (exp + 3)) & 0x0F;
    !((sign | (exp << 4) | mant) as u8)
}

fn ulaw_decode(u: u8) -> i16 {
    let u = !u;
    let exp = (u >> 4) & 7;
    let mag = ((((i32::from(u) & 0x0F) << 3) + 0x84) << exp) - 0x84;
    (if u & 0x80 != 0 { -mag } else { mag }) as i16
}

#[test]
fn local_ulaw_matches_reference_values() {
    assert_eq!(ulaw_encode(0), 0xFF);
    assert_eq!(ulaw_encode(1000), 0xCE);
    assert_eq!(ulaw_decode(0xFF), 0);
}

#[test]
fn keys_survive_a_ulaw_round_trip() {
    for (key, fr, fc) in keypad() {
        for level in [-25.0, -5.0] {
            let x = press(fr, level, fc, level, 80);
            let coded: Vec<f64> = to_i16(&x)
                .into_iter()
                .map(|s| f64::from(ulaw_decode(ulaw_encode(s))))
                .collect();
            assert_eq!(detect(&coded), vec![key], "{key} at {level} dBm0");
        }
    }
}

/// The designed boundary (module docs): at most 32 ms never detected, at least 46 ms always, at
/// every alignment of the tone against the blocks.
#[test]
fn duration_boundaries_at_every_alignment() {
    let tone = |len| dual(852.0, -15.0, 1336.0, -15.0, len);
    for lead in 0..BLOCK {
        let lead_in = silence(ms(20) + lead);
        let short = cat(&[lead_in.clone(), tone(ms(32)), silence(ms(50))]);
        assert!(detect(&short).is_empty(), "32 ms at offset {lead}");
        let long = cat(&[lead_in, tone(ms(46)), silence(ms(50))]);
        assert_eq!(detect(&long), vec![Digit::D8], "46 ms at offset {lead}");
    }
}

#[test]
fn a_third_strong_tone_fails_the_energy_share() {
    let third = |level| {
        let x = dual(770.0, -15.0, 1477.0, -15.0, ms(100));
        let y = dual(2000.0, level, 2000.0, -90.0, ms(100));
        let mixed: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
        cat(&[silence(ms(50)), mixed, silence(ms(50))])
    };
    assert_eq!(detect(&third(-30.0)), vec![Digit::D6]);
    assert!(detect(&third(-14.0)).is_empty());
}

#[test]
fn strong_second_harmonics_are_rejected() {
    // `fund` is the tone whose harmonic is added: a column, and a row whose harmonic is clear of
    // its column (941 Hz → 1882 Hz, beside 1209 Hz for `*`).
    for (fr, fc, fund, key) in [
        (852.0, 1209.0, 1209.0, Digit::D7),
        (941.0, 1209.0, 941.0, Digit::Star),
    ] {
        let with_harmonic = |level| {
            let x = dual(fr, -15.0, fc, -15.0, ms(100));
            let h = dual(2.0 * fund, level, 2.0 * fund, -90.0, ms(100));
            let mixed: Vec<f64> = x.iter().zip(&h).map(|(a, b)| a + b).collect();
            cat(&[silence(ms(50)), mixed, silence(ms(50))])
        };
        assert_eq!(
            detect(&with_harmonic(-35.0)),
            vec![key],
            "{key} weak harmonic"
        );
        assert!(
            detect(&with_harmonic(-22.0)).is_empty(),
            "{key} strong harmonic"
        );
    }
}

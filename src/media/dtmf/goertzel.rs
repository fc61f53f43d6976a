//! In-band DTMF detection (ITU-T Q.23 tones, Q.24 receiver practice) with the Goertzel algorithm.
//!
//! Data flow: the media session decodes each caller RTP frame (G.711 → 8 kHz linear i16) and feeds
//! it to [`GoertzelDetector::push`]; each [`InbandDigit`] from [`GoertzelDetector::poll`] goes to
//! [`super::DtmfStream::on_inband`].
//!
//! Design (why the numbers are what they are):
//! - Blocks of 102 samples (12.75 ms): the bin width (78 Hz) separates neighbouring row tones (73 Hz
//!   apart land near the first null) while keeping a press short in blocks.
//! - A press needs 3 consecutive hit blocks (≈38 ms). A hit block must also have its energy spread
//!   evenly over both halves, so a block only partly filled with tone counts only when ≥ ~75 % of it
//!   is tone. Together: a tone of ≤ 32 ms can never make 3 hits, one of ≥ 46 ms always does
//!   (tested at every alignment), which brackets the 30 ms reject / 50 ms accept requirement.
//! - Frequency tolerance is relative, as Q.24 states it: besides the nominal frequency each winning
//!   tone is measured at ±5 %; the nominal must be the strongest of the three, i.e. the tone lies
//!   within ±2.5 %, between the ±1.5 % that must be accepted and the ±3.5 % that must be rejected.
//! - The two tones must carry most of the block's energy (SNR check), lie within the twist limits,
//!   dominate their group, be above −30 dBm0, and have weak second harmonics (speech and music have
//!   strong ones).
//! - Repeats: once a key is reported it must be absent for 2 blocks (≈25 ms) before it can be reported
//!   again. A single bad block inside a long tone (noise, a dropout under ~7 ms) is bridged, as Q.24
//!   asks for short interruptions; a real inter-digit pause (≥ 40 ms) always gives 2 such blocks.

use std::time::{Duration, Instant};

use crate::media::digit::Digit;

/// Sample rate of the audio this detector expects.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples per analysis block.
pub const BLOCK: usize = 102;
const _: () = assert!(
    BLOCK % 2 == 0,
    "all_tone_powers steps two samples at a time"
);
/// Consecutive hit blocks needed to report a press.
const HIT_BLOCKS: u8 = 3;
/// Consecutive blocks without the reported key before it may be reported again.
const GAP_BLOCKS: u8 = 2;

const ROW_HZ: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COL_HZ: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYPAD: [[Digit; 4]; 4] = [
    [Digit::D1, Digit::D2, Digit::D3, Digit::A],
    [Digit::D4, Digit::D5, Digit::D6, Digit::B],
    [Digit::D7, Digit::D8, Digit::D9, Digit::C],
    [Digit::Star, Digit::D0, Digit::Pound, Digit::D],
];

/// Level of a full-scale G.711 sine (ITU-T G.711: +3.17 dBm0), 16-bit full scale taken as 32768.
const FULL_SCALE_DBM0: f32 = 3.17;
/// Quietest accepted tone, per frequency.
const MIN_LEVEL_DBM0: f32 = -30.0;
/// Low group may exceed the high group by this much (normal twist; line loss rises with frequency).
const NORMAL_TWIST_DB: f32 = 8.0;
/// High group may exceed the low group by this much (reverse twist).
const REVERSE_TWIST_DB: f32 = 4.0;
/// The winning tone of a group must beat the others in that group by this much.
const GROUP_MARGIN_DB: f32 = 6.0;
/// Share of the block energy the two tones must carry.
const MIN_TONE_SHARE: f32 = 0.7;
/// Each half of the block must carry at least this fraction of the other half's energy.
const MIN_HALF_RATIO: f32 = 0.5;
/// Relative offset of the frequency probes either side of each nominal tone.
const PROBE_OFFSET: f32 = 0.05;
/// Largest accepted second-harmonic level relative to its fundamental.
const MAX_HARMONIC_DB: f32 = -12.0;
/// A row's second harmonic closer than this (in Hz) to the detected column is masked by it.
const HARMONIC_MASK_HZ: f32 = 1.5 * SAMPLE_RATE as f32 / BLOCK as f32;

fn db_to_power(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

fn coeff(hz: f32) -> f32 {
    2.0 * (2.0 * std::f32::consts::PI * hz / SAMPLE_RATE as f32).cos()
}

/// Mean power of a sinusoid at `hz` in `x` (A²/2 for amplitude A), by the Goertzel recurrence.
fn tone_power(x: &[f32; BLOCK], hz: f32) -> f32 {
    let c = coeff(hz);
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &v in x {
        let s = v + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    goertzel_power(s1, s2, c)
}

fn goertzel_power(s1: f32, s2: f32, c: f32) -> f32 {
    const NORM: f32 = 2.0 / (BLOCK * BLOCK) as f32;
    (s1 * s1 + s2 * s2 - c * s1 * s2) * NORM
}

/// A key press found in the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InbandDigit {
    /// The key.
    pub digit: Digit,
    /// When the first block of the press began (from the `now` of the frame that carried it).
    pub started_at: Instant,
}

/// Thresholds derived once from the constants above (powers, not dB).
#[derive(Debug, Clone)]
struct Limits {
    coeffs: [f32; 8],
    min_power: f32,
    normal_twist: f32,
    reverse_twist: f32,
    group_margin: f32,
    max_harmonic: f32,
}

impl Limits {
    fn new() -> Self {
        let mut coeffs = [0.0; 8];
        for (c, hz) in coeffs.iter_mut().zip(ROW_HZ.iter().chain(COL_HZ.iter())) {
            *c = coeff(*hz);
        }
        let full_scale_power = 32768f32 * 32768.0 / 2.0;
        Limits {
            coeffs,
            min_power: full_scale_power * db_to_power(MIN_LEVEL_DBM0 - FULL_SCALE_DBM0),
            normal_twist: db_to_power(NORMAL_TWIST_DB),
            reverse_twist: db_to_power(REVERSE_TWIST_DB),
            group_margin: db_to_power(GROUP_MARGIN_DB),
            max_harmonic: db_to_power(MAX_HARMONIC_DB),
        }
    }
}

/// The per-press decision state: which key the recent blocks showed and what was reported.
#[derive(Debug, Clone, Default)]
struct Debounce {
    candidate: Option<Digit>,
    run: u8,
    run_started_at: Option<Instant>,
    reported: Option<Digit>,
    gap: u8,
}

impl Debounce {
    /// Takes one block decision; returns a press to report.
    fn block(&mut self, hit: Option<Digit>, at: Instant) -> Option<InbandDigit> {
        if hit == self.candidate {
            self.run = self.run.saturating_add(1);
        } else {
            self.candidate = hit;
            self.run = 1;
            self.run_started_at = Some(at);
        }
        if hit.is_some() && hit == self.reported {
            self.gap = 0;
        } else {
            self.gap = self.gap.saturating_add(1);
            if self.gap >= GAP_BLOCKS {
                self.reported = None;
            }
        }
        let digit = self.candidate?;
        if self.run >= HIT_BLOCKS && self.reported != Some(digit) {
            self.reported = Some(digit);
            self.gap = 0;
            return Some(InbandDigit {
                digit,
                started_at: self.run_started_at.unwrap_or(at),
            });
        }
        None
    }
}

/// Capacity of the report queue; a press takes ≥ 3 blocks, so this covers ~1 s of audio per push.
const QUEUE: usize = 8;

/// Finds DTMF key presses in 8 kHz linear audio.
///
/// Promises: each press is reported once, with the start time of its first block; no allocation
/// after construction; state is ~0.5 KiB.
#[derive(Debug, Clone)]
pub struct GoertzelDetector {
    limits: Limits,
    block: [f32; BLOCK],
    fill: usize,
    block_started_at: Option<Instant>,
    debounce: Debounce,
    queue: [Option<InbandDigit>; QUEUE],
    queue_head: usize,
    queue_len: usize,
}

impl Default for GoertzelDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl GoertzelDetector {
    /// A detector with the thresholds described in the module documentation.
    pub fn new() -> Self {
        GoertzelDetector {
            limits: Limits::new(),
            block: [0.0; BLOCK],
            fill: 0,
            block_started_at: None,
            debounce: Debounce::default(),
            queue: [None; QUEUE],
            queue_head: 0,
            queue_len: 0,
        }
    }

    /// Feeds consecutive samples; `now` is the time of `samples[0]`. Usually one 20 ms frame
    /// (160 samples); leftover samples are carried into the next call. Call [`Self::poll`] after.
    pub fn push(&mut self, now: Instant, samples: &[i16]) {
        for (i, &s) in samples.iter().enumerate() {
            if self.fill == 0 {
                let offset = Duration::from_micros(i as u64 * 1_000_000 / u64::from(SAMPLE_RATE));
                self.block_started_at = Some(now + offset);
            }
            self.block[self.fill] = f32::from(s);
            self.fill += 1;
            if self.fill == BLOCK {
                self.fill = 0;
                let at = self.block_started_at.unwrap_or(now);
                let hit = self.classify();
                if let Some(found) = self.debounce.block(hit, at) {
                    self.enqueue(found);
                }
            }
        }
    }

    /// The next press found, oldest first.
    pub fn poll(&mut self) -> Option<InbandDigit> {
        if self.queue_len == 0 {
            return None;
        }
        let out = self.queue[self.queue_head].take();
        self.queue_head = (self.queue_head + 1) % QUEUE;
        self.queue_len -= 1;
        out
    }

    fn enqueue(&mut self, found: InbandDigit) {
        if self.queue_len == QUEUE {
            // Only reachable if a caller pushes seconds of audio without polling: keep the newest.
            self.queue_head = (self.queue_head + 1) % QUEUE;
            self.queue_len -= 1;
        }
        self.queue[(self.queue_head + self.queue_len) % QUEUE] = Some(found);
        self.queue_len += 1;
    }

    /// Decides which key, if any, the current block holds.
    fn classify(&self) -> Option<Digit> {
        let x = &self.block;
        let lim = &self.limits;
        let half = BLOCK / 2;
        let e1: f32 = x[..half].iter().map(|v| v * v).sum();
        let e2: f32 = x[half..].iter().map(|v| v * v).sum();
        let energy = (e1 + e2) / BLOCK as f32;
        // Cheap exit for silence and quiet speech: the common case costs two passes, not eight.
        if energy < 1.5 * lim.min_power || e1.min(e2) < MIN_HALF_RATIO * e1.max(e2) {
            return None;
        }
        let p = self.all_tone_powers();
        let (r, pr) = strongest(&p[..4])?;
        let (c, pc) = strongest(&p[4..])?;
        let dominant = |group: &[f32], best: usize, pb: f32| {
            group
                .iter()
                .enumerate()
                .all(|(i, &q)| i == best || q * lim.group_margin <= pb)
        };
        let ok = pr >= lim.min_power
            && pc >= lim.min_power
            && pr <= pc * lim.normal_twist
            && pc <= pr * lim.reverse_twist
            && dominant(&p[..4], r, pr)
            && dominant(&p[4..], c, pc)
            && pr + pc >= MIN_TONE_SHARE * energy
            && near_nominal(x, ROW_HZ[r], pr)
            && near_nominal(x, COL_HZ[c], pc)
            && self.harmonics_weak(r, pr, c, pc);
        ok.then_some(KEYPAD[r][c])
    }

    /// Powers of the eight DTMF frequencies, in one pass over the block.
    ///
    /// The recurrence s[n] = x[n] + c·s[n-1] − s[n-2] is latency-bound (each step waits for the
    /// previous one), so it advances two samples per step from the same (s[n-1], s[n-2]):
    /// s[n+1] = x[n+1] + c·x[n] + (c²−1)·s[n-1] − c·s[n-2]. The two new values no longer depend
    /// on each other, which halves the dependency chain (about 2× on a 20 ms frame; see
    /// `dtmf/goertzel_push_20ms` in benches/hot_paths.rs). BLOCK is even.
    fn all_tone_powers(&self) -> [f32; 8] {
        let c = &self.limits.coeffs;
        let c2m1 = c.map(|c| c * c - 1.0);
        let mut s1 = [0.0f32; 8];
        let mut s2 = [0.0f32; 8];
        for pair in self.block.chunks_exact(2) {
            let (x0, x1) = (pair[0], pair[1]);
            for k in 0..8 {
                let a = x0 + c[k] * s1[k] - s2[k];
                let b = x1 + c[k] * x0 + c2m1[k] * s1[k] - c[k] * s2[k];
                s2[k] = a;
                s1[k] = b;
            }
        }
        let mut p = [0.0f32; 8];
        for k in 0..8 {
            p[k] = goertzel_power(s1[k], s2[k], c[k]);
        }
        p
    }

    /// Second harmonics must be weak; a row's harmonic that falls next to the detected column is
    /// dominated by that column's leakage and cannot be measured, so it is skipped.
    fn harmonics_weak(&self, r: usize, pr: f32, c: usize, pc: f32) -> bool {
        let max = self.limits.max_harmonic;
        let col_ok = tone_power(&self.block, 2.0 * COL_HZ[c]) <= pc * max;
        let row_h = 2.0 * ROW_HZ[r];
        let row_ok = (row_h - COL_HZ[c]).abs() < HARMONIC_MASK_HZ
            || tone_power(&self.block, row_h) <= pr * max;
        col_ok && row_ok
    }
}

/// Index and power of the strongest entry.
fn strongest(p: &[f32]) -> Option<(usize, f32)> {
    p.iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// True if the tone near `hz` is closer to `hz` than to `hz`·(1 ± [`PROBE_OFFSET`]), i.e. within
/// ±2.5 % of nominal; the main lobe is symmetric, so this is a relative frequency test.
fn near_nominal(x: &[f32; BLOCK], hz: f32, p_nominal: f32) -> bool {
    tone_power(x, hz * (1.0 - PROBE_OFFSET)) < p_nominal
        && tone_power(x, hz * (1.0 + PROBE_OFFSET)) < p_nominal
}

#[cfg(test)]
#[path = "goertzel_tests.rs"]
mod tests;

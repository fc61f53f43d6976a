//! Media checks shared by the interop and crash tests: test audio made with sox at test time,
//! the case JSON a call leaves in the outbox, and analysis of the stereo call recording
//! (Goertzel power per channel, length, SHA-256).
//!
//! Everything here is the tests' own reading of ivrd's output, independent of ivrd's code.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Sample rate of every G.711 call and recording.
pub const RATE: u32 = 8000;

/// The keys the interop callers press (`#` ends the entry and is not part of the field).
pub const KEYS: &str = "1234567890#";

/// Points `config` at the digits test plan (`tests/dialplans/media/digits.toml`): a `collect`
/// node takes up to 20 keys ended by `#` into the field `digits`, then ivrd says goodbye and
/// hangs up; a silent caller is hung up after 30 s.
pub fn digits_plan(config: &mut ivrd::config::Config) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    config.dialplan.path = root.join("tests/dialplans/media/digits.toml");
    config.prompts.dir = root.join("prompts");
}

/// Runs sox with `args`; panics with its stderr when it fails.
pub fn sox(args: &[&str]) {
    let out = Command::new("sox")
        .args(args)
        .output()
        .expect("sox is installed (Debian package sox)");
    assert!(
        out.status.success(),
        "sox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `secs` of a sine at `freq` Hz, -10 dBFS, as headerless A-law (what SIPp's
/// `rtp_stream` sends as payload type 8).
pub fn tone_alaw(path: &Path, freq: u32, secs: f64) {
    let (f, s) = (freq.to_string(), secs.to_string());
    let p = path.to_str().expect("utf-8 path");
    sox(&[
        "-n", "-r", "8000", "-c", "1", "-e", "a-law", "-t", "raw", p, "synth", &s, "sine", &f,
        "gain", "-10",
    ]);
}

/// The two ITU-T Q.23 frequencies of a key.
pub fn dtmf_pair(key: char) -> (u32, u32) {
    const ROWS: [u32; 4] = [697, 770, 852, 941];
    const COLS: [u32; 4] = [1209, 1336, 1477, 1633];
    const PAD: [&str; 4] = ["123A", "456B", "789C", "*0#D"];
    for (r, row) in PAD.iter().enumerate() {
        if let Some(c) = row.find(key) {
            return (ROWS[r], COLS[c]);
        }
    }
    panic!("{key:?} is not a DTMF key");
}

/// Writes headerless A-law audio of `keys` as in-band DTMF: `lead` s of silence, then each key
/// as `on` s of its two tones (each at -10 dBFS) and `off` s of silence, then 1 s of silence.
pub fn dtmf_alaw(dir: &Path, path: &Path, keys: &str, lead: f64, on: f64, off: f64) {
    let mut parts: Vec<PathBuf> = Vec::new();
    let silence = |name: &str, secs: f64| {
        let p = dir.join(name);
        let s = secs.to_string();
        sox(&[
            "-n",
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed",
            p.to_str().expect("utf-8"),
            "trim",
            "0",
            &s,
        ]);
        p
    };
    parts.push(silence("lead.wav", lead));
    for (i, key) in keys.chars().enumerate() {
        let (low, high) = dtmf_pair(key);
        let p = dir.join(format!("key{i}.wav"));
        let (on, off, low, high) = (
            on.to_string(),
            off.to_string(),
            low.to_string(),
            high.to_string(),
        );
        // sox's synth gives one tone per channel: make two channels and mix them into one.
        sox(&[
            "-r",
            "8000",
            "-c",
            "2",
            "-n",
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed",
            p.to_str().expect("utf-8"),
            "synth",
            &on,
            "sine",
            &low,
            "sine",
            &high,
            "remix",
            "1,2",
            "gain",
            "-n",
            "-4",
            "pad",
            "0",
            &off,
        ]);
        parts.push(p);
    }
    parts.push(silence("tail.wav", 1.0));
    let mut args: Vec<&str> = parts.iter().map(|p| p.to_str().expect("utf-8")).collect();
    let out = path.to_str().expect("utf-8");
    args.extend(["-e", "a-law", "-t", "raw", out]);
    sox(&args);
}

/// Waits up to `timeout` for `n` case files in `<storage>/outbox/pending`, returns them parsed.
pub fn wait_for_cases(storage: &Path, n: usize, timeout: Duration) -> Vec<Value> {
    let dir = storage.join("outbox/pending");
    let deadline = Instant::now() + timeout;
    loop {
        let cases: Vec<Value> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .filter_map(|p| std::fs::read(p).ok())
                    .filter_map(|b| serde_json::from_slice(&b).ok())
                    .collect()
            })
            .unwrap_or_default();
        if cases.len() >= n {
            return cases;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} cases in {} after {timeout:?}",
            cases.len(),
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every key of the case's `ivr_path`, in order, with its method.
pub fn keys_of(case: &Value) -> Vec<(String, String)> {
    case["ivr_path"]
        .as_array()
        .expect("ivr_path is a list")
        .iter()
        .filter_map(|step| {
            let key = step.get("key")?.as_str()?.to_string();
            let method = step.get("method")?.as_str().unwrap_or("?").to_string();
            Some((key, method))
        })
        .collect()
}

/// `[(key, method)]` for every key of `keys` delivered by `method`.
pub fn expected_keys(keys: &str, method: &str) -> Vec<(String, String)> {
    keys.chars()
        .map(|k| (k.to_string(), method.to_string()))
        .collect()
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time as ivrd writes it
/// (`2026-11-26T16:04:07.102Z`).
pub fn unix_ms(text: &str) -> i64 {
    let num = |range: std::ops::Range<usize>| -> i64 {
        text.get(range)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad time {text:?}"))
    };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (hh, mm, ss) = (num(11..13), num(14..16), num(17..19));
    let frac = text.get(19..).unwrap_or("").trim_end_matches('Z');
    let ms = match frac.strip_prefix('.') {
        Some(f) => format!("{f:0<3}")[..3].parse::<i64>().expect("fraction"),
        None => 0,
    };
    // Days from the civil date (proleptic Gregorian), the usual era-based formula.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms
}

/// A stereo recording read back: format and both channels as f64 samples.
pub struct Stereo {
    pub spec: hound::WavSpec,
    pub left: Vec<f64>,
    pub right: Vec<f64>,
}

impl Stereo {
    /// Reads a WAV file; panics if hound cannot read it (an invalid WAV fails the test).
    pub fn read(path: &Path) -> Stereo {
        let mut reader = hound::WavReader::open(path)
            .unwrap_or_else(|e| panic!("{} is not a readable WAV: {e}", path.display()));
        let spec = reader.spec();
        let samples: Vec<i16> = reader
            .samples::<i16>()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{}: bad samples: {e}", path.display()));
        let channels = usize::from(spec.channels.max(1));
        let channel = |c: usize| -> Vec<f64> {
            samples
                .iter()
                .skip(c)
                .step_by(channels)
                .map(|s| f64::from(*s))
                .collect()
        };
        Stereo {
            spec,
            left: channel(0),
            right: channel(1.min(channels - 1)),
        }
    }

    /// Length in milliseconds (frames / rate).
    pub fn duration_ms(&self) -> f64 {
        self.left.len() as f64 * 1000.0 / f64::from(self.spec.sample_rate)
    }
}

/// Power of `freq` in `samples` by the Goertzel recurrence, normalised by the length so blocks
/// of different lengths compare.
pub fn goertzel(samples: &[f64], freq: f64, rate: f64) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for x in samples {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let n = samples.len().max(1) as f64;
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (n * n)
}

/// The frequency (on a 50 Hz grid from 200 to 3800 Hz) where `samples` has the most power.
pub fn peak_frequency(samples: &[f64]) -> f64 {
    (4..=76)
        .map(|i| f64::from(i) * 50.0)
        .map(|f| (f, goertzel(samples, f, f64::from(RATE))))
        .fold(
            (0.0, f64::MIN),
            |best, x| if x.1 > best.1 { x } else { best },
        )
        .0
}

/// Mean square of `samples` (0 for none).
pub fn mean_square(samples: &[f64]) -> f64 {
    samples.iter().map(|s| s * s).sum::<f64>() / samples.len().max(1) as f64
}

/// Lowercase hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read file");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The keys of the case, in order, are exactly `keys` by `method`, and the digits test plan
/// stored them (less the `#` that ends entry) in its field.
pub fn assert_keys(case: &Value, keys: &str, method: &str) {
    assert_eq!(
        keys_of(case),
        expected_keys(keys, method),
        "ivr_path of {case:#}"
    );
    let digits = keys.trim_end_matches('#');
    assert_eq!(case["fields"]["digits"], digits, "fields of {case:#}");
    assert_eq!(case["outcome"], "completed");
}

/// The whole-call recording: length, format, hash, and the caller's tone on the left only.
pub fn assert_recording(case: &Value, storage: &Path, tone_hz: u32) {
    let recs = case["recordings"].as_array().expect("recordings list");
    let rec = recs
        .iter()
        .find(|r| r["kind"] == "call")
        .unwrap_or_else(|| panic!("no call recording in {case:#}"));
    let path = storage.join(rec["path"].as_str().expect("path"));
    assert_eq!(
        rec["sha256"].as_str(),
        Some(sha256_file(&path).as_str()),
        "case sha256 of {}",
        path.display()
    );
    let bytes = std::fs::metadata(&path).expect("recording exists").len();
    assert_eq!(rec["bytes"].as_u64(), Some(bytes));

    let wav = Stereo::read(&path);
    assert_eq!(
        (
            wav.spec.channels,
            wav.spec.sample_rate,
            wav.spec.bits_per_sample
        ),
        (2, 8000, 16),
        "stereo 8 kHz 16-bit"
    );
    let answered = unix_ms(case["answered_at"].as_str().expect("answered_at"));
    let ended = unix_ms(case["ended_at"].as_str().expect("ended_at"));
    let call_ms = (ended - answered) as f64;
    assert!(
        (wav.duration_ms() - call_ms).abs() <= 100.0,
        "recording {} ms, call answered→ended {call_ms} ms",
        wav.duration_ms()
    );

    let tone = f64::from(tone_hz);
    let left_share = goertzel_share(&wav.left, tone);
    let right_share = goertzel_share(&wav.right, tone);
    assert!(
        left_share > 0.3,
        "left (caller) carries the {tone_hz} Hz tone: share {left_share:.3}"
    );
    assert_eq!(peak_frequency(&wav.left), tone, "left channel peak");
    assert!(
        right_share < 0.05,
        "right (ivrd) does not carry the caller's tone: share {right_share:.3}"
    );
    assert!(
        mean_square(&wav.right) > 1000.0,
        "right (ivrd) carries the prompts"
    );
}

/// The share of the channel's power at `freq`: 0.5 for a pure tone, near 0 without it.
/// Computed over 160 ms blocks (a whole number of cycles on the 50 Hz grid), so a phase
/// jump between packets does not matter.
pub fn goertzel_share(samples: &[f64], freq: f64) -> f64 {
    let blocks = samples.chunks_exact(1280);
    let (tone, total) = blocks.fold((0.0, 0.0), |(t, a), b| {
        (t + goertzel(b, freq, 8000.0), a + mean_square(b))
    });
    if total == 0.0 { 0.0 } else { tone / total }
}

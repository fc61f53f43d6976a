//! Media interop with SIPp against the real server started in-process: keys sent as RFC 4733
//! telephone-events (SIPp's own pcaps), as SIP INFO, and as in-band tones in the caller's audio
//! (made with sox at test time) must reach the dialplan exactly, in order, with their method;
//! the call recording must be as long as the call, stereo 8 kHz 16-bit, with the caller on the
//! left channel and its SHA-256 in the case. SIPp paces its audio at 20 ms, so the RFC 3550
//! jitter ivrd reports for it must be that of the loopback, not of ivrd's read cadence.
//!
//! The server runs `tests/dialplans/media/digits.toml`: a `collect` node takes up to 20 keys
//! ended by `#` into the field `digits`, then ivrd says goodbye and hangs up. The case in the
//! outbox is what the test reads: `ivr_path` (every key with its method) and `fields`.

mod common;

use common::media::{
    KEYS, assert_keys, assert_recording, digits_plan, dtmf_alaw, tone_alaw, wait_for_cases,
};
use common::sipp::{SIPP, finish_sipp, spawn_sipp, work_dir};
use common::{TestServer, test_config};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The caller's tone in the RFC 4733 and INFO calls, and the frequency the recording check seeks.
const CALLER_TONE_HZ: u32 = 1000;

/// Runs one SIPp call of `scenario` (with `caller.alaw` from `make_audio` in its working
/// directory) against a server on the digits test plan; returns the case, the storage dir and
/// the server's metrics after the call.
fn media_call(scenario: &str, make_audio: impl FnOnce(&Path)) -> (Value, PathBuf, String) {
    let _one_at_a_time = SIPP.lock().unwrap_or_else(|e| e.into_inner());
    let mut config = test_config();
    digits_plan(&mut config);
    let srv = TestServer::start(config);
    let dir = work_dir();
    make_audio(&dir);
    let child = spawn_sipp(scenario, srv.udp, 1, &dir, &[]);
    finish_sipp(child, 1, &dir);
    let mut cases = wait_for_cases(&srv.storage, 1, Duration::from_secs(10));
    assert_eq!(cases.len(), 1, "one call, one case");
    // The case is spooled after the call's media counters were exported.
    let metrics = srv.scrape();
    (cases.remove(0), srv.storage.clone(), metrics)
}

/// One series' value in a Prometheus text scrape.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics:\n{text}"))
}

#[test]
#[ignore = "needs sipp"]
fn rfc4733_keys_from_sipp_pcaps_and_the_recording() {
    let (case, storage, metrics) = media_call("media_rfc4733", |dir| {
        tone_alaw(&dir.join("caller.alaw"), CALLER_TONE_HZ, 10.0)
    });
    assert_keys(&case, KEYS, "rfc4733");
    assert_recording(&case, &storage, CALLER_TONE_HZ);
    // RFC 3550 A.8 over 10 s of SIPp's audio. Counted from when ivrd's clock read the packets
    // (every other tick, two at a time) it was |D| = 160 samples per packet: 20 ms.
    assert_eq!(metric(&metrics, "ivrd_rtp_jitter_seconds_count"), 1.0);
    let jitter = metric(&metrics, "ivrd_rtp_jitter_seconds_sum");
    assert!(jitter < 0.004, "jitter {jitter} s");
}

#[test]
#[ignore = "needs sipp"]
fn sip_info_keys() {
    let (case, storage, _) = media_call("media_info", |dir| {
        tone_alaw(&dir.join("caller.alaw"), CALLER_TONE_HZ, 10.0)
    });
    assert_keys(&case, KEYS, "info");
    assert_recording(&case, &storage, CALLER_TONE_HZ);
}

#[test]
#[ignore = "needs sipp"]
fn inband_keys_in_the_callers_audio() {
    let (case, _, _) = media_call("media_inband", |dir| {
        dtmf_alaw(dir, &dir.join("caller.alaw"), KEYS, 0.5, 0.1, 0.1)
    });
    assert_keys(&case, KEYS, "inband");
}

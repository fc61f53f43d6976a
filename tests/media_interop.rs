//! Media interop with SIPp against the real server started in-process: keys sent as RFC 4733
//! telephone-events (SIPp's own pcaps), as SIP INFO, and as in-band tones in the caller's audio
//! (made with sox at test time) must reach the dialplan exactly, in order, with their method;
//! the call recording must be as long as the call, stereo 8 kHz 16-bit, with the caller on the
//! left channel and its SHA-256 in the case. SIPp paces its audio at 20 ms, so the RFC 3550
//! jitter ivrd reports for it must be that of the loopback, not of ivrd's read cadence. What
//! ivrd sends to SIPp, captured with dumpcap and decoded by tshark, must be gapless RTP and
//! sender reports that count exactly the RTP sent before them.
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
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The caller's tone in the RFC 4733 and INFO calls, and the frequency the recording check seeks.
const CALLER_TONE_HZ: u32 = 1000;

/// Runs one SIPp call of `scenario` (with `caller.alaw` from `make_audio` in its working
/// directory) against a server on the digits test plan; returns the case, the storage dir and
/// the server's metrics after the call. With `capture`, what ivrd sent from its RTP port range
/// during the call is written there as a pcap.
fn media_call(
    scenario: &str,
    make_audio: impl FnOnce(&Path),
    capture: Option<&Path>,
) -> (Value, PathBuf, String) {
    let _one_at_a_time = SIPP.lock().unwrap_or_else(|e| e.into_inner());
    let mut config = test_config();
    digits_plan(&mut config);
    let filter = capture.map(|_| {
        let (low, high) = config.rtp_port_range().expect("valid range");
        format!("udp src portrange {low}-{high}")
    });
    let srv = TestServer::start(config);
    let dir = work_dir();
    make_audio(&dir);
    let dumpcap = capture
        .zip(filter)
        .map(|(file, filter)| Dumpcap::start(file, &filter));
    let child = spawn_sipp(scenario, srv.udp, 1, &dir, &[]);
    finish_sipp(child, 1, &dir);
    if let Some(dumpcap) = dumpcap {
        dumpcap.stop();
    }
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
    let (case, storage, metrics) = media_call(
        "media_rfc4733",
        |dir| tone_alaw(&dir.join("caller.alaw"), CALLER_TONE_HZ, 10.0),
        None,
    );
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
    let (case, storage, _) = media_call(
        "media_info",
        |dir| tone_alaw(&dir.join("caller.alaw"), CALLER_TONE_HZ, 10.0),
        None,
    );
    assert_keys(&case, KEYS, "info");
    assert_recording(&case, &storage, CALLER_TONE_HZ);
}

#[test]
#[ignore = "needs sipp"]
fn inband_keys_in_the_callers_audio() {
    let (case, _, _) = media_call(
        "media_inband",
        |dir| dtmf_alaw(dir, &dir.join("caller.alaw"), KEYS, 0.5, 0.1, 0.1),
        None,
    );
    assert_keys(&case, KEYS, "inband");
}

/// dumpcap on loopback, started and stopped on its own signals rather than on timers.
struct Dumpcap(Child);

impl Dumpcap {
    /// Starts a capture of `filter` into `file` and returns once dumpcap says it is capturing.
    fn start(file: &Path, filter: &str) -> Dumpcap {
        // Owned by the guard at once, so that it is killed and reaped however this ends.
        let mut capture = Dumpcap(
            Command::new("dumpcap")
                .args(["-i", "lo", "-f", filter, "-w"])
                .arg(file)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("dumpcap is installed (Debian package tshark)"),
        );
        let stderr = capture.0.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let mut said = String::new();
        for line in lines.by_ref() {
            let line = line.expect("dumpcap's stderr");
            said.push_str(&line);
            said.push('\n');
            if line.starts_with("Capturing on") {
                // Read on, or dumpcap's next report to a closed pipe kills it (SIGPIPE).
                std::thread::spawn(move || lines.for_each(drop));
                return capture;
            }
        }
        panic!("dumpcap ended before capturing:\n{said}");
    }

    /// SIGINT, on which dumpcap writes out what it holds and exits.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -INT dumpcap");
        self.0.wait().expect("dumpcap exits");
    }
}

impl Drop for Dumpcap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The RTP and RTCP that ivrd sent to a SIPp caller, decoded by tshark rather than by ivrd's
/// own parser: the frames leave in sequence with no gap (every tick's frame is sent, at the
/// next tick's start), and every sender report counts exactly the RTP packets that had left
/// before it (RFC 3550 §6.4.1: "the total number of RTP data packets transmitted by the sender
/// since starting transmission up until the time this SR packet was generated").
#[test]
#[ignore = "needs sipp and tshark"]
fn ivrds_rtp_to_sipp_is_gapless_and_each_sender_report_counts_what_had_left() {
    let pcap = work_dir().join("ivrd.pcap");
    let (case, _, _) = media_call(
        "media_rfc4733",
        |dir| tone_alaw(&dir.join("caller.alaw"), CALLER_TONE_HZ, 10.0),
        Some(&pcap),
    );
    assert_keys(&case, KEYS, "rfc4733");
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args([
            "-o",
            "rtp.heuristic_rtp:TRUE",
            "-o",
            "rtcp.heuristic_rtcp:TRUE",
        ])
        .args(["-T", "fields", "-E", "separator=,"])
        .args([
            "-e",
            "rtp.seq",
            "-e",
            "rtp.timestamp",
            "-e",
            "rtcp.sender.packetcount",
        ])
        .output()
        .expect("tshark is installed (Debian package tshark)");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rtp: Vec<(u16, u32)> = Vec::new();
    let mut reports = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split(',').collect();
        match fields.as_slice() {
            [seq, ts, ""] if !seq.is_empty() => {
                rtp.push((seq.parse().expect("seq"), ts.parse().expect("timestamp")));
            }
            ["", "", count] if !count.is_empty() => {
                let count: usize = count.parse().expect("packet count");
                assert_eq!(
                    count,
                    rtp.len(),
                    "SR #{} against the RTP before it",
                    reports + 1
                );
                reports += 1;
            }
            _ => {}
        }
    }
    assert!(rtp.len() > 100, "{} RTP packets from ivrd", rtp.len());
    assert!(reports >= 1, "no sender report in the call");
    for pair in rtp.windows(2) {
        let ((seq0, ts0), (seq1, ts1)) = (pair[0], pair[1]);
        assert_eq!(seq1, seq0.wrapping_add(1), "sequence after {seq0}");
        assert_eq!(ts1, ts0.wrapping_add(160), "timestamp after seq {seq0}");
    }
    let _ = std::fs::remove_dir_all(pcap.parent().expect("work dir"));
}

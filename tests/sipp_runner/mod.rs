//! SIPp runs for the dialplan end-to-end and hot-reload tests: a scenario template from
//! `tests/sipp/` is filled in (`@NAME@` placeholders) into a fresh work directory, SIPp runs it
//! as a UAC with its own `-timeout`, and the test kills SIPp if even that does not end it.
//!
//! SIPp exits 0 only when every call succeeded (sipp(1), "Exit codes"); the final statistics
//! (`-trace_stat`) give the counts a failure names. Traces stay on disk when a run fails.

#![allow(dead_code)] // Each test binary uses a different part.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One SIPp at a time in a test binary: the machine is small and media ports must not collide.
pub static SIPP: Mutex<()> = Mutex::new(());

/// A UDP port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind probe");
    s.local_addr().expect("addr").port()
}

/// A fresh directory for one run's scenario and traces.
pub fn work_dir(prefix: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create work dir");
    dir
}

/// `tests/sipp/NAME.xml` with every `@KEY@` replaced, written into `dir`. Fails the test when a
/// placeholder is left over, so a template and its test cannot drift apart silently.
pub fn instantiate(name: &str, subs: &[(&str, String)], dir: &Path) -> PathBuf {
    let template = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(format!("{name}.xml"));
    let mut text = std::fs::read_to_string(&template).expect("read scenario template");
    for (key, value) in subs {
        text = text.replace(&format!("@{key}@"), value);
    }
    let left = leftover_placeholder(&text);
    assert!(
        left.is_none(),
        "{name}.xml: placeholder {left:?} not filled"
    );
    let out = dir.join(format!("{name}.xml"));
    std::fs::write(&out, text).expect("write scenario");
    out
}

/// The first `@UPPER_CASE@` left in `text` (SIP URIs' `user@host` never match: hosts are lower case
/// or `[keyword]`).
fn leftover_placeholder(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('@') {
        let rest = &bytes[i + 1..];
        let len = rest
            .iter()
            .take_while(|b| b.is_ascii_uppercase() || **b == b'_')
            .count();
        if len > 0 && rest.get(len) == Some(&b'@') {
            return Some(text[i..i + len + 2].to_string());
        }
    }
    None
}

/// One SIPp run: how many calls, how fast, how long each pauses, and its overall bound.
pub struct Run {
    pub scenario: PathBuf,
    pub server: SocketAddr,
    pub dir: PathBuf,
    pub calls: u32,
    pub limit: u32,
    pub rate: u32,
    pub pause_ms: u32,
    /// SIPp's own `-timeout` (the whole run); the test kills it 15 s later.
    pub timeout: Duration,
}

impl Run {
    /// Starts SIPp; stdout/stderr go to files in the work directory.
    pub fn spawn(&self) -> Child {
        let dir = &self.dir;
        let out = std::fs::File::create(dir.join("sipp.out")).expect("sipp.out");
        let err = std::fs::File::create(dir.join("sipp.err")).expect("sipp.err");
        Command::new("sipp")
            .arg(self.server.to_string())
            .arg("-sf")
            .arg(&self.scenario)
            .args(["-i", "127.0.0.1", "-p", &free_port().to_string()])
            .args(["-mp", &free_port().to_string()])
            .args(["-m", &self.calls.to_string()])
            .args(["-l", &self.limit.to_string()])
            .args(["-r", &self.rate.to_string()])
            .args(["-d", &self.pause_ms.to_string()])
            .args(["-nostdin", "-timeout"])
            .arg(format!("{}s", self.timeout.as_secs()))
            .args(["-timeout_error", "-max_recv_loops", "100"])
            .args(["-trace_err", "-error_file"])
            .arg(dir.join("errors.log"))
            .args(["-trace_stat", "-stf"])
            .arg(dir.join("stat.csv"))
            .args(["-trace_msg", "-message_file"])
            .arg(dir.join("messages.log"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("sipp is installed (Debian package sip-tester)")
    }

    /// Waits for `child`, then requires exit 0 and `calls` successful, 0 failed calls; removes the
    /// work directory when they did.
    pub fn finish(&self, mut child: Child) {
        let hard = self.timeout + Duration::from_secs(15);
        let deadline = Instant::now() + hard;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for sipp") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sipp did not finish within {hard:?}; traces in {}",
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let errors = std::fs::read_to_string(self.dir.join("errors.log")).unwrap_or_default();
        let (ok, failed) = final_counts(&self.dir.join("stat.csv"));
        assert!(
            status.success() && failed == Some(0) && ok == Some(u64::from(self.calls)),
            "sipp exit {status}, successful {ok:?}, failed {failed:?} (traces in {}):\n{errors}",
            self.dir.display()
        );
        // Traces are kept only when a run fails.
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// [`Run::spawn`] then [`Run::finish`].
    pub fn run(&self) {
        let child = self.spawn();
        self.finish(child);
    }
}

/// SuccessfulCall(C) and FailedCall(C) from the last line of SIPp's statistics file.
pub fn final_counts(stat: &Path) -> (Option<u64>, Option<u64>) {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return (None, None);
    };
    let Some(last) = lines.next_back() else {
        return (None, None);
    };
    let fields: Vec<&str> = header.split(';').collect();
    let values: Vec<&str> = last.split(';').collect();
    let get = |name: &str| {
        let i = fields.iter().position(|f| *f == name)?;
        values.get(i)?.trim().parse().ok()
    };
    (get("SuccessfulCall(C)"), get("FailedCall(C)"))
}

/// Every case JSON in `<storage>/outbox/pending`, parsed.
pub fn pending_cases(storage: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(storage.join("outbox/pending")) else {
        return Vec::new();
    };
    let mut cases = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // `<case_id>.meta.json` is delivery bookkeeping, not a case.
        if name.ends_with(".json") && !name.ends_with(".meta.json") {
            // A case being written is renamed into place whole; a parse failure is a real bug.
            let text = std::fs::read_to_string(&path).expect("read case");
            cases.push(serde_json::from_str(&text).expect("case is JSON"));
        }
    }
    cases
}

/// Waits (bounded) until `<storage>/outbox/pending` holds `n` cases, and returns them.
pub fn wait_cases(storage: &Path, n: usize, within: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let cases = pending_cases(storage);
        if cases.len() >= n {
            return cases;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} cases in {} after {within:?}",
            cases.len(),
            storage.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Escapes a literal for a POSIX extended regular expression (SIPp's `ereg`).
pub fn ere_escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len() * 2);
    for c in literal.chars() {
        if ".[]{}()\\*+?^$|".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One key press as RFC 4733 telephone-events (PT 101) in a pcap file for SIPp's
/// `play_pcap_audio`: 7 packets 20 ms apart with a growing duration (the first with the marker
/// bit), then the end packet three times (§2.5.1.4). All packets of the press carry `timestamp`.
///
/// Why not the captures that come with SIPp: they are 12 key presses cut from one stream, with
/// one SSRC and timestamps in a fixed order (1, 0, 2 … 9, *, #). Played in any other order, a
/// later key carries an older timestamp than the one before, and a receiver rightly takes it
/// for a late copy of an old event (RFC 3550 timestamps only move forward within an SSRC).
/// A real phone's presses always move forward, so these files do too: the caller passes the
/// next `seq` and a `timestamp` later than the previous press.
pub fn write_rfc4733_pcap(path: &Path, event: u8, seq: u16, timestamp: u32) -> u16 {
    const SSRC: u32 = 0x1234_5678;
    let mut file = Vec::new();
    // libpcap global header: magic, version 2.4, zone, sigfigs, snaplen, Ethernet.
    file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    file.extend_from_slice(&2u16.to_le_bytes());
    file.extend_from_slice(&4u16.to_le_bytes());
    for word in [0u32, 0, 65_535, 1] {
        file.extend_from_slice(&word.to_le_bytes());
    }
    let mut packets: Vec<(u32, bool, bool, u16)> = (0..7u16)
        .map(|i| (u32::from(i) * 20_000, i == 0, false, 160 * (i + 1)))
        .collect();
    packets.extend((0..3).map(|i| (140_000 + i * 1_000, false, true, 1_280)));
    let mut seq = seq;
    for (usec, marker, end, duration) in packets {
        let mut rtp = vec![0x80, 101 | if marker { 0x80 } else { 0 }];
        rtp.extend_from_slice(&seq.to_be_bytes());
        rtp.extend_from_slice(&timestamp.to_be_bytes());
        rtp.extend_from_slice(&SSRC.to_be_bytes());
        rtp.extend_from_slice(&[event, if end { 0x80 | 10 } else { 10 }]);
        rtp.extend_from_slice(&duration.to_be_bytes());
        seq = seq.wrapping_add(1);
        let frame = ethernet_ipv4_udp(&rtp);
        file.extend_from_slice(&0u32.to_le_bytes());
        file.extend_from_slice(&usec.to_le_bytes());
        let len = u32::try_from(frame.len()).expect("small frame");
        file.extend_from_slice(&len.to_le_bytes());
        file.extend_from_slice(&len.to_le_bytes());
        file.extend_from_slice(&frame);
    }
    std::fs::write(path, file).expect("write pcap");
    seq
}

/// `payload` in UDP 10000 → 10000 in IPv4 127.0.0.1 → 127.0.0.1 in Ethernet (SIPp replaces the
/// addresses and ports with the call's own).
fn ethernet_ipv4_udp(payload: &[u8]) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).expect("small packet");
    let ip_len = 20 + udp_len;
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&ip_len.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&10_000u16.to_be_bytes());
    f.extend_from_slice(&10_000u16.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

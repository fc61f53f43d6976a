//! SIPp as a load and interop client for the end-to-end tests: one run of a scenario under
//! `tests/sipp/`, bounded in wall-clock time, with its final statistics read back.
//!
//! Every run has SIPp's own `-timeout` and a hard limit after which the test kills SIPp, so a test
//! can fail but never hang. Trace files go to a fresh directory kept only when the caller wants.

#![allow(dead_code)] // each test binary uses a different part

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How one SIPp run is shaped.
#[derive(Debug, Clone)]
pub struct SippRun {
    /// Scenario name: `tests/sipp/<name>.xml`.
    pub scenario: &'static str,
    /// Total calls (`-m`).
    pub calls: u32,
    /// New calls per second (`-r`).
    pub rate: u32,
    /// Concurrent call limit (`-l`).
    pub limit: u32,
    /// `<pause/>` length in milliseconds (`-d`).
    pub pause_ms: u64,
    /// SIPp's own global timeout.
    pub timeout: Duration,
}

impl SippRun {
    /// `calls` runs of `scenario`, 20 per second, 10 at once, 200 ms pauses, 30 s timeout.
    pub fn new(scenario: &'static str, calls: u32) -> SippRun {
        SippRun {
            scenario,
            calls,
            rate: 20,
            limit: 10,
            pause_ms: 200,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A running SIPp.
pub struct Sipp {
    child: Child,
    /// Where its traces go.
    pub dir: PathBuf,
    run: SippRun,
}

/// What a finished run reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SippResult {
    pub exit_ok: bool,
    pub successful: Option<u64>,
    pub failed: Option<u64>,
}

/// A UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind probe");
    s.local_addr().expect("addr").port()
}

/// A base for SIPp's `-mp`: SIPp binds four consecutive ports from it (audio RTP and RTCP,
/// video RTP and RTCP), so all four must be free, not just the first.
pub fn free_media_base() -> u16 {
    for _ in 0..200 {
        let base = free_udp_port() & !3;
        let held: Vec<_> = (base..base.saturating_add(4))
            .filter_map(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == 4 {
            return base;
        }
    }
    panic!("no block of four free UDP ports on loopback")
}

fn work_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ivrd-sipp-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create work dir");
    dir
}

impl Sipp {
    /// Starts SIPp as a UAC against `server`.
    pub fn start(server: SocketAddr, run: SippRun) -> Sipp {
        let dir = work_dir();
        let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sipp")
            .join(format!("{}.xml", run.scenario));
        let timeout = format!("{}s", run.timeout.as_secs().max(1));
        let child = Command::new("sipp")
            .arg(server.to_string())
            .arg("-sf")
            .arg(scenario)
            .args(["-i", "127.0.0.1"])
            .args(["-p", &free_udp_port().to_string()])
            .args(["-mp", &free_media_base().to_string()])
            .args(["-m", &run.calls.to_string()])
            .args(["-r", &run.rate.to_string()])
            .args(["-l", &run.limit.to_string()])
            .args(["-d", &run.pause_ms.to_string()])
            .args(["-nostdin", "-timeout", &timeout, "-timeout_error"])
            .args(["-max_recv_loops", "100"])
            .args(["-trace_err", "-error_file"])
            .arg(dir.join("errors.log"))
            .args(["-trace_stat", "-stf"])
            .arg(dir.join("stat.csv"))
            .args(["-trace_msg", "-message_file"])
            .arg(dir.join("messages.log"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp is installed (Debian package sip-tester)");
        Sipp { child, dir, run }
    }

    /// Number of ACKs SIPp has sent so far (one per answered call in `basic_call`).
    pub fn acks_sent(&self) -> usize {
        std::fs::read_to_string(self.dir.join("messages.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("ACK sip:"))
            .count()
    }

    /// True once SIPp has exited.
    pub fn finished(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for SIPp (killing it after its timeout plus 30 s) and reads its statistics.
    pub fn wait(mut self) -> SippResult {
        let deadline = Instant::now() + self.run.timeout + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for sipp") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().expect("reap sipp");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (successful, failed) = final_counts(&self.dir.join("stat.csv"));
        SippResult {
            exit_ok: status.success(),
            successful,
            failed,
        }
    }

    /// Waits and requires every call to have succeeded; traces are removed on success.
    pub fn expect_all_ok(self) {
        let dir = self.dir.clone();
        let calls = self.run.calls;
        let result = self.wait();
        let errors = std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default();
        assert!(
            result.exit_ok && result.failed == Some(0) && result.successful == Some(calls.into()),
            "sipp {result:?} for {calls} calls (traces in {}):\n{errors}",
            dir.display()
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Ends SIPp at once (calls in progress are left hanging, as when a caller's phone dies).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SuccessfulCall(C) and FailedCall(C) from the last line of SIPp's statistics file.
fn final_counts(stat: &Path) -> (Option<u64>, Option<u64>) {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let (Some(header), Some(last)) = (lines.next(), lines.next_back()) else {
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

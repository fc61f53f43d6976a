//! Interop with SIPp: each scenario under `tests/sipp/` runs against the real server started
//! in-process, and must finish with SIPp's exit status 0 and no failed call.
//!
//! SIPp exits 0 only when every call succeeded (sipp(1), "Exit codes"); we also read its final
//! statistics (`-trace_stat`) so a failure names the counts. `-timeout` with `-timeout_error`
//! bounds every run, and the test kills SIPp if even that does not end it.

mod common;

use common::{TestServer, test_config, unique};
use ivrd::config::Config;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One SIPp at a time: the machine is small, and SIPp's media ports must not collide.
static SIPP: Mutex<()> = Mutex::new(());

/// Wall-clock bound for one SIPp run, beyond SIPp's own `-timeout`.
const HARD_LIMIT: Duration = Duration::from_secs(60);

/// A UDP port that was free a moment ago (bound to port 0, then released).
fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind probe");
    s.local_addr().expect("addr").port()
}

/// A base for SIPp's `-mp`: SIPp binds four consecutive ports from it (audio RTP and RTCP,
/// video RTP and RTCP), so all four must be free, not just the first.
fn free_media_base() -> u16 {
    for _ in 0..200 {
        let base = free_port() & !3;
        let held: Vec<_> = (base..base.saturating_add(4))
            .filter_map(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == 4 {
            return base;
        }
    }
    panic!("no block of four free UDP ports on loopback")
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(format!("{name}.xml"))
}

/// A fresh directory for SIPp's trace files.
fn work_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("ivrd-sipp-"));
    std::fs::create_dir_all(&dir).expect("create work dir");
    dir
}

/// Starts SIPp as a UAC running `name` `calls` times against `server`.
fn spawn_sipp(name: &str, server: SocketAddr, calls: u32, dir: &Path, extra: &[&str]) -> Child {
    let calls = calls.to_string();
    let sip_port = free_port().to_string();
    let media_port = free_media_base().to_string();
    let mut cmd = Command::new("sipp");
    cmd.arg(server.to_string())
        .arg("-sf")
        .arg(scenario(name))
        .args(["-i", "127.0.0.1", "-p", &sip_port, "-mp", &media_port])
        .args(["-m", &calls, "-l", "10", "-r", "20", "-d", "200"])
        .args([
            "-nostdin",
            "-timeout",
            "30s",
            "-timeout_error",
            "-max_recv_loops",
            "100",
        ])
        .args(["-trace_err", "-error_file"])
        .arg(dir.join("errors.log"))
        .args(["-trace_stat", "-stf"])
        .arg(dir.join("stat.csv"))
        .args(["-trace_msg", "-message_file"])
        .arg(dir.join("messages.log"))
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.spawn()
        .expect("sipp is installed (Debian package sip-tester)")
}

/// Waits for SIPp, then requires exit status 0 and `calls` successful, 0 failed calls.
fn finish_sipp(mut child: Child, calls: u32, dir: &Path) {
    let deadline = Instant::now() + HARD_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for sipp") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sipp did not finish within {HARD_LIMIT:?}; traces in {}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let errors = std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default();
    let (ok, failed) = final_counts(&dir.join("stat.csv"));
    assert!(
        status.success() && failed == Some(0) && ok == Some(u64::from(calls)),
        "sipp exit {status}, successful {ok:?}, failed {failed:?} (traces in {}):\n{errors}",
        dir.display()
    );
    // Traces are kept only when a run fails.
    let _ = std::fs::remove_dir_all(dir);
}

/// SuccessfulCall(C) and FailedCall(C) from the last line of SIPp's statistics file.
fn final_counts(stat: &Path) -> (Option<u64>, Option<u64>) {
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

/// Runs scenario `name` `calls` times against a server started with `config`.
fn run_scenario(name: &str, config: Config, calls: u32) {
    let _one_at_a_time = SIPP.lock().unwrap_or_else(|e| e.into_inner());
    let srv = TestServer::start(config);
    let dir = work_dir();
    let child = spawn_sipp(name, srv.udp, calls, &dir, &[]);
    finish_sipp(child, calls, &dir);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_basic_call() {
    run_scenario("basic_call", test_config(), 20);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_cancel_before_answer() {
    let mut config = test_config();
    // Long enough that the CANCEL always lands while ivrd is still ringing.
    config.sip.answer_delay_ms = 2000;
    run_scenario("cancel", config, 5);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_late_offer() {
    run_scenario("late_offer", test_config(), 10);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_reinvite_hold() {
    run_scenario("reinvite_hold", test_config(), 10);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_no_common_codec_488() {
    run_scenario("codec_488", test_config(), 10);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_options_ping() {
    run_scenario("options", test_config(), 10);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_bye_from_ivrd_on_drain() {
    let _one_at_a_time = SIPP.lock().unwrap_or_else(|e| e.into_inner());
    let mut config = test_config();
    config.sip.drain_secs = 1;
    let mut srv = TestServer::start(config);
    let dir = work_dir();
    let calls = 3;
    let child = spawn_sipp("drain_bye", srv.udp, calls, &dir, &[]);
    // Stop the server once every call is up: SIPp has sent its last ACK (it logs each message
    // it sends as it sends it).
    let log = dir.join("messages.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_sent_acks(&log) < calls as usize {
        assert!(
            Instant::now() < deadline,
            "calls not up; traces in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    srv.shutdown.cancel();
    finish_sipp(child, calls, &dir);
    assert!(
        srv.wait_finished(Duration::from_secs(10)),
        "server stops after the drain"
    );
}

fn count_sent_acks(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("ACK sip:"))
        .count()
}

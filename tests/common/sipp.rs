//! Running SIPp from the interop tests: one run at a time, bounded by SIPp's own `-timeout` and
//! by a hard wall-clock limit, judged by its exit status and final statistics.
//!
//! SIPp exits 0 only when every call succeeded (sipp(1), "Exit codes"); we also read its final
//! statistics (`-trace_stat`) so a failure names the counts. Traces are kept only on failure.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One SIPp at a time: the machine is small, and SIPp's media ports must not collide.
pub static SIPP: Mutex<()> = Mutex::new(());

/// Wall-clock bound for one SIPp run, beyond SIPp's own `-timeout`.
pub const HARD_LIMIT: Duration = Duration::from_secs(60);

/// A UDP port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind probe");
    s.local_addr().expect("addr").port()
}

/// A base for SIPp's `-mp`: SIPp binds the audio port and the "video" port two above it (and
/// the RTCP ports between), so all four must be free, not just the first. Found by binding the
/// block, which is released again before SIPp starts.
pub fn free_media_port() -> u16 {
    for _ in 0..100 {
        let base = free_port() & !1;
        let Some(top) = base.checked_add(3) else {
            continue;
        };
        let held: Vec<UdpSocket> = (base..=top)
            .filter_map(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == 4 {
            return base;
        }
    }
    panic!("no block of 4 free UDP ports");
}

/// The path of `tests/sipp/<name>.xml`.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(format!("{name}.xml"))
}

/// A fresh directory for SIPp's trace files (and the audio a scenario streams: SIPp resolves
/// `rtp_stream` file names against its working directory, which is this one).
pub fn work_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(super::unique("ivrd-sipp-"));
    std::fs::create_dir_all(&dir).expect("create work dir");
    dir
}

/// Starts SIPp as a UAC running `name` `calls` times against `server`.
pub fn spawn_sipp(name: &str, server: SocketAddr, calls: u32, dir: &Path, extra: &[&str]) -> Child {
    let calls = calls.to_string();
    let sip_port = free_port().to_string();
    let media_port = free_media_port().to_string();
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
pub fn finish_sipp(mut child: Child, calls: u32, dir: &Path) {
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

/// How many requests starting with `prefix` (e.g. `"ACK sip:"`) SIPp has sent so far: it logs
/// each message it sends as it sends it.
pub fn count_sent(log: &Path, prefix: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}

//! A one-minute soak in CI (the short form of `bench/soak.sh`), with the real binaries: about 30
//! calls of the issue-7 workload (20 s each, caller audio, keys `2` and `#`, a voice message) kept
//! up by `ivrd-loadgen` for 40 s of call starts, cases delivered to a real HTTP receiver. Asserts
//! that no call failed and that once ivrd reports no call up and nothing pending in the outbox,
//! its open descriptors, UDP sockets and alive tokio tasks return to the idle baseline taken
//! before the load (a per-call leak would leave ~30 behind).
//!
//! Synchronisation is on `/metrics` (`ivrd_calls_active`, `ivrd_outbox_pending_cases`), the load
//! generator's exit and the counts themselves, each with a deadline. No timing is asserted.

mod common_daemon;
mod common_http;

use common_daemon::{Daemon, DaemonOptions, metric};
use common_http::Receiver;
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Calls up at once: RATE × 20 s.
const RATE: f64 = 1.5;
const START_SECS: f64 = 40.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    fds: usize,
    udp_sockets: usize,
    tasks_alive: u64,
}

/// Inodes of the UDP sockets on this host (IPv4 and IPv6 tables).
fn udp_inodes() -> HashSet<String> {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(9).map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn sample(daemon: &Daemon) -> Sample {
    let pid = daemon.pid().expect("ivrd runs");
    let udp = udp_inodes();
    let mut fds = 0;
    let mut udp_sockets = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc fd")
        .flatten()
    {
        fds += 1;
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
        {
            udp_sockets += usize::from(udp.contains(inode));
        }
    }
    let tasks = metric(&daemon.scrape(), "ivrd_runtime_tasks_alive").expect("task gauge");
    Sample {
        fds,
        udp_sockets,
        tasks_alive: tasks as u64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs release-like load: about 30 calls for a minute"]
async fn a_minute_of_calls_leaves_no_descriptors_sockets_or_tasks_behind() {
    let mut receiver = Receiver::start().await;
    let options = DaemonOptions::new("soak", receiver.url());
    let daemon = Daemon::start(&options);
    let idle = sample(&daemon);

    let calls = (RATE * START_SECS) as u32;
    let mut loadgen = Command::new(env!("CARGO_BIN_EXE_ivrd-loadgen"))
        .args(["--target", &daemon.sip.to_string()])
        .args(["--calls", &calls.to_string(), "--rate", &RATE.to_string()])
        .args(["--duration", "20s", "--keys", "2s:2,18s:#"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ivrd-loadgen");
    let mut peak = idle;
    let mut delivered = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while loadgen.try_wait().expect("poll loadgen").is_none() {
        assert!(Instant::now() < deadline, "ivrd-loadgen did not finish");
        let s = sample(&daemon);
        peak.fds = peak.fds.max(s.fds);
        peak.udp_sockets = peak.udp_sockets.max(s.udp_sockets);
        peak.tasks_alive = peak.tasks_alive.max(s.tasks_alive);
        while let Some(r) = receiver.try_next() {
            delivered.insert(r.header("idempotency-key").unwrap().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let output = loadgen.wait_with_output().expect("loadgen output");
    let summary = String::from_utf8_lossy(&output.stdout).trim().to_string();
    println!("loadgen: {summary}");
    assert!(
        output.status.success() && summary.contains("failed=0"),
        "no call failed: {summary}"
    );
    assert!(
        peak.udp_sockets >= idle.udp_sockets + 40,
        "the load did reach ivrd: peak {peak:?}, idle {idle:?}"
    );

    // Drained: no call up, nothing pending, every case delivered; then the counts must come back.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        while let Some(r) = receiver.try_next() {
            delivered.insert(r.header("idempotency-key").unwrap().to_owned());
        }
        let text = daemon.scrape();
        let drained = metric(&text, "ivrd_calls_active") == Some(0.0)
            && metric(&text, "ivrd_outbox_pending_cases") == Some(0.0)
            && delivered.len() == calls as usize;
        let s = sample(&daemon);
        if drained && s == idle {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "after the load: {s:?}, idle {idle:?}, {} of {calls} cases delivered\n{text}",
            delivered.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "idle {idle:?}, peak {peak:?}, after {after:?}, {calls} calls, {} cases",
        delivered.len()
    );
}

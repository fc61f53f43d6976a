//! Disk full, with the real binaries: ivrd's `[storage] dir` is a 16 MiB ext4 image mounted over
//! loop and filled to 0 bytes free by a filler file while ivrd runs. Five `ivrd-loadgen` calls
//! (caller audio, RFC 4733 keys, a voice message) go through the shipped dialplan. Then:
//! - every call is answered and completes (the caller notices nothing);
//! - the failures are logged and counted: the recordings fail (`ivrd_recording_failures_total`,
//!   "recording failed" in the log) — they cannot be written while the disk is full, which is the
//!   documented behaviour — and each case is refused by the disk and held in memory ("case NOT
//!   spooled; held in memory until the disk takes it"); the call markers are still written (their
//!   slots were allocated at start-up: no "call marker not written") and the cases name no
//!   recording;
//! - nothing reaches the intake receiver while the disk is full;
//! - once the filler is deleted, within the spool's retry interval (5 s) plus delivery, every case
//!   is spooled ("held case spooled after the disk recovered") and delivered to a real HTTP
//!   receiver, schema-valid, one per answered call.
//!
//! A second test answers two calls on the full disk, lets one caller hang up (its case can only
//! be held in memory) and kills the daemon with SIGKILL, frees the space and starts it again:
//! each call's marker, written while the disk was full, becomes one `abandoned` case that is
//! delivered and validates.
//!
//! Needs root (mount) and mkfs.ext4 (e2fsprogs). The image is unmounted in `Drop`, also when the
//! test fails; the config and the daemon's log live outside the full file system.

mod common;
mod common_daemon;
mod common_http;

use common::{Leg, UdpPeer, branch, sdp_offer};
use common_daemon::{Daemon, DaemonOptions, case_validator, check_case};
use common_http::Receiver;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CALLS: u32 = 5;
/// The spool's retry interval (src/runtime/case_writer.rs) plus room for delivery.
const RECOVERY: Duration = Duration::from_secs(15);

/// A loop-mounted ext4 image in a temp dir; unmounted and removed on drop.
struct SmallDisk {
    dir: PathBuf,
    mount: PathBuf,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a system command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SmallDisk {
    fn new(tag: &str, mib: u32) -> SmallDisk {
        let dir = std::env::temp_dir().join(format!("ivrd-diskfull-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount).expect("mount point");
        let image = dir.join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(u64::from(mib) << 20))
            .expect("image file");
        // -m 0: no blocks reserved for root, or root (ivrd here) could still write into them.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount));
        SmallDisk { dir, mount }
    }

    /// Writes a filler file until the file system refuses (ENOSPC), then syncs it.
    fn fill(&self) -> PathBuf {
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        for chunk in [1 << 20, 4096, 512] {
            let buf = vec![0u8; chunk];
            while file.write_all(&buf).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy unmount: a daemon killed a moment ago may still hold files open.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sum of every sample of `name` (all label sets) in a `/metrics` body.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Polls `check` every 50 ms until it holds; fails with `what` after `timeout`.
async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes")
}

/// A daemon's options with `[storage] dir` on `disk`; config and log stay off it.
fn options_on(disk: &SmallDisk, tag: &str, intake_url: String) -> DaemonOptions {
    let mut options = DaemonOptions::new(tag, intake_url);
    let run_dir = options.storage.clone();
    options.storage = disk.mount.join("var");
    std::fs::create_dir_all(&options.storage).expect("storage on the small disk");
    options.run_dir = run_dir;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (mount -o loop) and mkfs.ext4"]
async fn full_disk_holds_cases_in_memory_and_delivers_them_once_space_returns() {
    let disk = SmallDisk::new("held", 16);
    let mut receiver = Receiver::start().await;
    let options = options_on(&disk, "diskfull", receiver.url());
    let daemon = Daemon::start(&options);

    let filler = disk.fill();
    let free = free_bytes(&disk.mount);
    assert_eq!(free, 0, "the file system is full");

    let answered_file = options.run_dir.join("answered.txt");
    let output = tokio::task::spawn_blocking({
        let sip = daemon.sip.to_string();
        let answered_file = answered_file.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_ivrd-loadgen"))
                .args(["--target", &sip, "--calls", &CALLS.to_string()])
                .args(["--rate", "5", "--duration", "14s", "--keys", "2s:2,12s:#"])
                .arg("--answered-file")
                .arg(&answered_file)
                .stdin(Stdio::null())
                .output()
                .expect("run ivrd-loadgen")
        }
    })
    .await
    .unwrap();
    let summary = String::from_utf8_lossy(&output.stdout).trim().to_string();
    println!("loadgen: {summary}");
    assert!(
        output.status.success() && summary.contains(&format!("completed={CALLS} failed=0")),
        "every call answered and completed on a full disk: {summary}\n{}",
        daemon.log_text()
    );
    let answered: HashSet<String> = std::fs::read_to_string(&answered_file)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(answered.len(), CALLS as usize);

    // Every call has ended: its case went to the spool writer, which held it in memory.
    let held = "case NOT spooled; held in memory until the disk takes it";
    wait_until("every case held in memory", Duration::from_secs(20), || {
        count(&daemon.log_text(), held) == CALLS as usize
    })
    .await;
    let log = daemon.log_text();
    let metrics = daemon.scrape();
    let recording_failures = metric_sum(&metrics, "ivrd_recording_failures_total");
    println!(
        "while full: {} 'recording failed' log lines, ivrd_recording_failures_total {recording_failures}, \
         {} 'call marker not written', ivrd_calls_active {}",
        count(&log, "recording failed"),
        count(&log, "call marker not written"),
        metric_sum(&metrics, "ivrd_calls_active"),
    );
    assert!(
        recording_failures >= f64::from(CALLS),
        "each call's recording fails on a full disk and is counted\n{metrics}"
    );
    assert!(count(&log, "recording failed") >= CALLS as usize, "{log}");
    // The crash markers are written all the same: their slots were allocated at start-up.
    assert_eq!(count(&log, "call marker not written"), 0, "{log}");
    assert_eq!(metric_sum(&metrics, "ivrd_calls_active"), 0.0);
    assert!(
        receiver.try_next().is_none(),
        "nothing delivered while the disk is full"
    );

    // Space returns: the next retry spools every held case, and delivery sends them.
    std::fs::remove_file(&filler).expect("delete the filler");
    let freed = Instant::now();
    let mut bodies: Vec<(String, Vec<u8>)> = Vec::new();
    wait_until("every held case spooled and delivered", RECOVERY, || {
        while let Some(request) = receiver.try_next() {
            let key = request.header("idempotency-key").unwrap().to_owned();
            if !bodies.iter().any(|(k, _)| *k == key) {
                bodies.push((key, request.body));
            }
        }
        bodies.len() == CALLS as usize
    })
    .await;
    let took = freed.elapsed();
    let log = daemon.log_text();
    assert_eq!(
        count(&log, "held case spooled after the disk recovered"),
        CALLS as usize,
        "{log}"
    );
    let validator = case_validator();
    let mut calls = HashSet::new();
    let mut recordings = 0;
    for (key, body) in &bodies {
        assert_eq!(&check_case(&validator, &options.storage, body), key);
        let doc: serde_json::Value = serde_json::from_slice(body).unwrap();
        recordings += doc["recordings"].as_array().map_or(0, Vec::len);
        calls.insert(doc["call_id"].as_str().unwrap().to_string());
    }
    assert_eq!(calls, answered, "one case per answered call");
    assert_eq!(
        recordings, 0,
        "a recording that failed on the full disk is not named in the case"
    );
    println!(
        "after the filler was deleted: {CALLS} cases spooled and delivered in {took:?}, \
         naming {recordings} recordings"
    );
    let _ = std::fs::remove_dir_all(&options.run_dir);
}

/// One call answered over raw SIP (INVITE, 200, ACK) from `caller`; returns its leg.
fn place_call(caller: &UdpPeer, media: &std::net::UdpSocket) -> Leg {
    let offer = sdp_offer(media.local_addr().expect("addr"), &[8, 101], None);
    let mut leg = Leg::new(caller.local(), "UDP");
    caller.send(&leg.request("INVITE", &branch(), 1, "INVITE", &[], Some(&offer)));
    let ok = caller.expect(200, "INVITE");
    leg.learn(&ok);
    caller.send(&leg.request("ACK", &branch(), 1, "ACK", &[], None));
    leg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (mount -o loop) and mkfs.ext4"]
async fn calls_on_a_full_disk_killed_leave_abandoned_cases() {
    let disk = SmallDisk::new("kill", 16);
    let mut receiver = Receiver::start().await;
    let options = options_on(&disk, "diskfull-kill", receiver.url());
    let mut daemon = Daemon::start(&options);
    let filler = disk.fill();
    assert_eq!(free_bytes(&disk.mount), 0, "the file system is full");

    // Two calls answered and acknowledged on the full disk.
    let caller = UdpPeer::new(daemon.sip);
    let media = std::net::UdpSocket::bind("127.0.0.1:0").expect("media socket");
    let mut ended = place_call(&caller, &media);
    let up = place_call(&caller, &media);
    // A call task logs "IVR started" once its marker write has returned.
    wait_until("both calls' IVR started", Duration::from_secs(20), || {
        count(&daemon.log_text(), "IVR started") == 2
    })
    .await;
    let log = daemon.log_text();
    assert_eq!(
        count(&log, "call marker not written"),
        0,
        "the markers are written on the full disk\n{log}"
    );
    // The first caller hangs up: the case can only be held in memory, so its marker stays.
    let cseq = ended.next_cseq();
    caller.send(&ended.request("BYE", &branch(), cseq, "BYE", &[], None));
    caller.expect(200, "BYE");
    let held = "case NOT spooled; held in memory until the disk takes it";
    wait_until(
        "the ended call's case held",
        Duration::from_secs(20),
        || count(&daemon.log_text(), held) == 1,
    )
    .await;
    assert_eq!(
        free_bytes(&disk.mount),
        0,
        "still full when the daemon dies"
    );

    daemon.kill9();
    std::fs::remove_file(&filler).expect("delete the filler");
    daemon.restart(&options);

    let validator = case_validator();
    let mut delivered = HashSet::new();
    for _ in 0..2 {
        let request = receiver.next().await;
        let key = request.header("idempotency-key").unwrap().to_owned();
        assert_eq!(check_case(&validator, &options.storage, &request.body), key);
        let doc: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(doc["outcome"].as_str(), Some("abandoned"), "{doc:#}");
        assert_eq!(doc["hangup"]["reason"].as_str(), Some("ivrd_restart"));
        delivered.insert(doc["call_id"].as_str().unwrap().to_string());
    }
    let calls: HashSet<String> = [ended.call_id.clone(), up.call_id.clone()].into();
    assert_eq!(delivered, calls, "one case per call");
    let log = daemon.log_text();
    assert_eq!(
        count(&log, "call interrupted by a restart"),
        2,
        "one case for each call\n{log}"
    );
    println!(
        "after kill -9 on the full disk (one call up, one ended with its case held in memory) \
         and a restart with space: 2 abandoned cases delivered"
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(&options.run_dir);
}

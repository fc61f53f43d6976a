//! End to end, with the real `ivrd` binary: SIPp calls ─▶ cases ─▶ HTTP POSTs to a loopback
//! receiver. Every case arrives, once per `Idempotency-Key` (or again, recognisably, when a crash
//! came between the receiver's answer and the spool's cleanup), validates against
//! `schemas/case.v1.json`, and names recordings whose sha256 matches the file.
//!
//! Crash tests kill the daemon with SIGKILL (a) in the middle of a call, (b) while a case is being
//! delivered, (c) with 100 cases queued and the receiver down, then start it again on the same
//! storage.
//!
//! (a) also shows that the call *in progress* at the kill is not lost: its marker (written at
//! answer) becomes an `abandoned` case at the next start, with the repaired recording attached,
//! so the back office can call the citizen back.

mod common_daemon;
mod common_http;
mod common_sipp;

use common_daemon::{Daemon, DaemonOptions, case_validator, check_case, recordings_ending};
use common_http::{Received, Receiver, Reply};
use common_sipp::{Sipp, SippRun};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Requests grouped by idempotency key, in arrival order.
type ByKey = HashMap<String, Vec<Received>>;

/// Collects requests until `want` distinct keys have arrived; fails after `within`.
async fn collect(receiver: &mut Receiver, by_key: &mut ByKey, want: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while by_key.len() < want {
        match receiver.try_next() {
            Some(request) => {
                let key = request
                    .header("idempotency-key")
                    .expect("every POST has an Idempotency-Key")
                    .to_owned();
                by_key.entry(key).or_default().push(request);
            }
            None => {
                assert!(
                    Instant::now() < deadline,
                    "only {} of {want} cases arrived within {within:?}",
                    by_key.len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Waits until the spool has no pending case (every 2xx has been recorded on disk), then takes
/// whatever else the receiver got: after this, nothing more can arrive.
async fn settle(receiver: &mut Receiver, by_key: &mut ByKey, storage: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pending_files(storage).is_empty() {
        assert!(Instant::now() < deadline, "spool never emptied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while let Some(request) = receiver.try_next() {
        let key = request.header("idempotency-key").unwrap().to_owned();
        by_key.entry(key).or_default().push(request);
    }
}

fn pending_files(storage: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(storage.join("outbox/pending"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Checks every received request: its body is the case its key names, signed, schema-valid,
/// recordings matching; and that every key was delivered successfully exactly once.
fn check_all(by_key: &ByKey, storage: &Path) {
    let validator = case_validator();
    for (key, requests) in by_key {
        for request in requests {
            assert_eq!(request.method, "POST");
            let id = check_case(&validator, storage, &request.body);
            assert_eq!(&id, key, "Idempotency-Key is the case id");
            let signature = request.header("x-ivrd-signature").expect("signed");
            let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
            let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
            mac.update(&request.body);
            let expected: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(hex, expected, "HMAC over the body");
            // A repeat is byte-for-byte the same document.
            assert_eq!(request.body, requests[0].body, "repeat of {key} differs");
        }
        let accepted = requests
            .iter()
            .filter(|r| r.reply == Reply::Status(200))
            .count();
        assert_eq!(
            accepted,
            1,
            "{key} accepted once: {} requests",
            requests.len()
        );
    }
}

fn run_calls(daemon: &Daemon, calls: u32) -> Sipp {
    Sipp::start(daemon.sip, SippRun::new("basic_call", calls))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sipp"]
async fn sipp_calls_deliver_valid_cases_once_each() {
    let mut receiver = Receiver::start().await;
    let options = DaemonOptions::new("deliver", receiver.url());
    let daemon = Daemon::start(&options);
    let sipp = run_calls(&daemon, 10);
    tokio::task::spawn_blocking(move || sipp.expect_all_ok())
        .await
        .unwrap();
    let mut by_key = ByKey::new();
    collect(&mut receiver, &mut by_key, 10, Duration::from_secs(20)).await;
    settle(&mut receiver, &mut by_key, &options.storage).await;
    assert_eq!(by_key.len(), 10, "one case per call");
    assert!(by_key.values().all(|r| r.len() == 1), "no repeats");
    check_all(&by_key, &options.storage);
    for requests in by_key.values() {
        let doc: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
        let kinds: Vec<&str> = doc["recordings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["call"], "each answered call is recorded");
    }
    // The outbox is visible to operators: 10 deliveries counted, nothing pending (the gauges
    // refresh every second).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = daemon.scrape();
        let delivered = text
            .lines()
            .any(|l| l == r#"ivrd_outbox_deliveries_total{result="delivered"} 10"#);
        let latency = text
            .lines()
            .any(|l| l == "ivrd_outbox_delivery_latency_seconds_count 10");
        let idle = text.lines().any(|l| l == "ivrd_outbox_pending_cases 0");
        if delivered && latency && idle {
            break;
        }
        assert!(Instant::now() < deadline, "outbox metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sipp"]
async fn crash_in_a_call_keeps_every_case_and_repairs_the_recording() {
    let mut receiver = Receiver::start().await;
    // Down: the finished calls' cases are still in the spool when the daemon dies.
    receiver.down().await;
    let options = DaemonOptions::new("crash-call", receiver.url());
    let mut daemon = Daemon::start(&options);
    let sipp = run_calls(&daemon, 3);
    tokio::task::spawn_blocking(move || sipp.expect_all_ok())
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "3 cases spooled", || {
        common_daemon::spool_cases(&options.storage).len() == 3
    })
    .await;
    let mut held = SippRun::new("basic_call", 1);
    held.pause_ms = 60_000;
    held.timeout = Duration::from_secs(90);
    let held = Sipp::start(daemon.sip, held);
    wait_until(
        Duration::from_secs(10),
        "held call answered and recording",
        || held.acks_sent() == 1 && !recordings_ending(&options.storage, ".wav.part").is_empty(),
    )
    .await;
    // Let the recorder flush at least once (it does about every second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.kill9();
    held.kill();
    assert_eq!(recordings_ending(&options.storage, ".wav.part").len(), 1);
    let wavs_before = recordings_ending(&options.storage, ".wav").len();
    assert_eq!(common_daemon::spool_cases(&options.storage).len(), 3);

    receiver.up().await;
    let daemon = Daemon::start(&options);
    let mut by_key = ByKey::new();
    collect(&mut receiver, &mut by_key, 4, Duration::from_secs(20)).await;
    settle(&mut receiver, &mut by_key, &options.storage).await;
    assert_eq!(
        by_key.len(),
        4,
        "the 3 finished calls' cases and the interrupted call's"
    );
    check_all(&by_key, &options.storage);
    let interrupted: Vec<serde_json::Value> = by_key
        .values()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r[0].body).ok())
        .filter(|c| c["hangup"]["reason"] == "ivrd_restart")
        .collect();
    assert_eq!(
        interrupted.len(),
        1,
        "one case for the call the crash interrupted"
    );
    assert_eq!(interrupted[0]["outcome"], "abandoned");
    assert_eq!(
        interrupted[0]["recordings"].as_array().map(Vec::len),
        Some(1),
        "with its repaired recording"
    );
    assert!(recordings_ending(&options.storage, ".wav.part").is_empty());
    assert_eq!(
        recordings_ending(&options.storage, ".wav").len(),
        wavs_before + 1,
        "the interrupted call's recording was repaired into a .wav"
    );
    let scrape = daemon.scrape();
    assert!(
        scrape
            .lines()
            .any(|l| l == "ivrd_recording_repaired_total 1"),
        "repair counted:\n{scrape}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sipp"]
async fn crash_while_delivering_resends_with_the_same_key() {
    let mut receiver = Receiver::start().await;
    receiver.set_default(Reply::Stall);
    let options = DaemonOptions::new("crash-post", receiver.url());
    let mut daemon = Daemon::start(&options);
    let sipp = run_calls(&daemon, 1);
    tokio::task::spawn_blocking(move || sipp.expect_all_ok())
        .await
        .unwrap();
    let mut by_key = ByKey::new();
    collect(&mut receiver, &mut by_key, 1, Duration::from_secs(20)).await;
    // The POST is in the receiver's hands, unanswered: kill the sender now.
    daemon.kill9();
    assert_eq!(common_daemon::spool_cases(&options.storage).len(), 1);
    receiver.set_default(Reply::Status(200));
    let _daemon = Daemon::start(&options);
    let key = by_key.keys().next().unwrap().clone();
    wait_repeat(&mut receiver, &mut by_key, &key, Duration::from_secs(20)).await;
    settle(&mut receiver, &mut by_key, &options.storage).await;
    assert_eq!(by_key.len(), 1, "one case");
    let requests = &by_key[&key];
    assert_eq!(requests.len(), 2, "sent, crashed, sent again");
    assert_eq!(requests[0].reply, Reply::Stall);
    check_all(&by_key, &options.storage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sipp"]
async fn crash_with_100_queued_and_receiver_down_delivers_each_once() {
    let mut receiver = Receiver::start().await;
    receiver.down().await;
    let mut options = DaemonOptions::new("crash-100", receiver.url());
    options.max_calls = 1;
    let mut daemon = Daemon::start(&options);
    // One call holds the only slot; every other INVITE is refused with 503 and gets a case.
    let mut hold = SippRun::new("basic_call", 1);
    hold.pause_ms = 60_000;
    hold.timeout = Duration::from_secs(90);
    let held = Sipp::start(daemon.sip, hold);
    wait_until(Duration::from_secs(10), "held call answered", || {
        held.acks_sent() == 1
    })
    .await;
    let mut refused = SippRun::new("refused", 100);
    refused.rate = 200;
    refused.limit = 100;
    let refused = Sipp::start(daemon.sip, refused);
    tokio::task::spawn_blocking(move || refused.expect_all_ok())
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(20),
        "100 refused-call cases spooled",
        || common_daemon::spool_cases(&options.storage).len() == 100,
    )
    .await;
    daemon.kill9();
    held.kill();
    // Every spool file parses (spool_cases checks), and each is a refused-call case.
    let validator = case_validator();
    for path in common_daemon::spool_cases(&options.storage) {
        let body = std::fs::read(&path).unwrap();
        check_case(&validator, &options.storage, &body);
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["outcome"], "rejected", "{}", path.display());
    }

    receiver.up().await;
    let _daemon = Daemon::start(&options);
    let mut by_key = ByKey::new();
    // The 100 refused calls, and the held call the kill interrupted (recovered from its marker).
    collect(&mut receiver, &mut by_key, 101, Duration::from_secs(60)).await;
    settle(&mut receiver, &mut by_key, &options.storage).await;
    assert_eq!(by_key.len(), 101);
    assert!(
        by_key.values().all(|r| r.len() == 1),
        "no case was sent twice"
    );
    check_all(&by_key, &options.storage);
}

/// Polls `done` every 50 ms; fails with `what` after `within`.
async fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collects requests until `key` has arrived a second time; fails after `within`.
async fn wait_repeat(receiver: &mut Receiver, by_key: &mut ByKey, key: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while by_key.get(key).map_or(0, Vec::len) < 2 {
        match receiver.try_next() {
            Some(request) => {
                let k = request.header("idempotency-key").unwrap().to_owned();
                by_key.entry(k).or_default().push(request);
            }
            None => {
                assert!(Instant::now() < deadline, "{key} was not sent again");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

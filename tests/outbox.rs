//! Outbox scenarios against a real HTTP receiver on loopback: delivery, signatures, idempotency
//! keys, retries (500, 429 + Retry-After, stalls, receiver down), dead letters, restarts, and a
//! SIGKILL in the middle of enqueueing.

mod common_http;

use common_http::{Receiver, Reply};
use hmac::{Hmac, KeyInit, Mac};
use ivrd::case::CaseId;
use ivrd::case::retry::RetryPolicy;
use ivrd::runtime::delivery::{DeliveryConfig, run_delivery, spawn_delivery};
use ivrd::runtime::outbox::{Outbox, OutboxEvent, outbox_status, requeue};
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "s3cret";

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ivrd-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn new_id() -> CaseId {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    CaseId::new(ms, rand::random())
}

fn body(id: &CaseId) -> Vec<u8> {
    format!(r#"{{"schema_version":1,"case_id":"{id}"}}"#).into_bytes()
}

fn config(url: String) -> DeliveryConfig {
    DeliveryConfig {
        url,
        secret: Some(SECRET.into()),
        timeout: Duration::from_millis(500),
        concurrency: 4,
        retry: RetryPolicy {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(100),
            max_attempts: 50,
            max_age: Duration::from_secs(3600),
        },
        rescan_interval: Duration::from_secs(60),
    }
}

/// A running worker; stopping it waits for the task.
struct Worker {
    stop: CancellationToken,
    task: JoinHandle<Result<(), ivrd::runtime::delivery::DeliveryError>>,
}

impl Worker {
    fn start(outbox: &Outbox, config: DeliveryConfig) -> Worker {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_delivery(outbox.clone(), config, stop.clone()));
        Worker { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Waits for the next event that `pick` accepts (others are skipped); fails after 20 s.
async fn wait_for<T>(
    events: &mut broadcast::Receiver<OutboxEvent>,
    mut pick: impl FnMut(&OutboxEvent) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            let event = events.recv().await.expect("event stream ended");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("no matching outbox event within 20 s")
}

async fn wait_delivered(events: &mut broadcast::Receiver<OutboxEvent>) -> (CaseId, u32) {
    wait_for(events, |e| match e {
        OutboxEvent::Delivered { case_id, attempts } => Some((case_id.clone(), *attempts)),
        _ => None,
    })
    .await
}

fn verify_signature(body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(bytes) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

#[tokio::test]
async fn every_case_arrives_signed_with_its_idempotency_key() {
    let dir = TempDir::new("arrive");
    let mut receiver = Receiver::start().await;
    let outbox = Outbox::open(&dir.0).unwrap();
    let mut events = outbox.subscribe();
    let worker = Worker::start(&outbox, config(receiver.url()));
    let mut sent = HashMap::new();
    for _ in 0..20 {
        let id = new_id();
        outbox.enqueue_async(id.clone(), body(&id)).await.unwrap();
        sent.insert(id.to_string(), body(&id));
    }
    for _ in 0..20 {
        wait_delivered(&mut events).await;
    }
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let request = receiver.next().await;
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/cases");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let key = request.header("idempotency-key").unwrap().to_owned();
        assert_eq!(
            sent.get(&key),
            Some(&request.body),
            "body matches the case for {key}"
        );
        let signature = request.header("x-ivrd-signature").unwrap();
        assert!(verify_signature(&request.body, signature), "{signature}");
        assert!(!verify_signature(b"tampered", signature));
        assert!(seen.insert(key));
    }
    assert_eq!(seen.len(), 20);
    assert!(receiver.try_next().is_none(), "no extra requests");
    let counts = outbox.counts().unwrap();
    assert_eq!((counts.pending, counts.dead), (0, 0));
    worker.stop().await;
}

#[tokio::test]
async fn bad_request_is_dead_lettered_with_reason_then_requeued() {
    let dir = TempDir::new("dead");
    let mut receiver = Receiver::start().await;
    receiver.script(&[Reply::Status(400)]);
    let outbox = Outbox::open(&dir.0).unwrap();
    let mut events = outbox.subscribe();
    let worker = Worker::start(&outbox, config(receiver.url()));
    let id = new_id();
    outbox.enqueue(&id, &body(&id)).unwrap();
    let (dead_id, reason) = wait_for(&mut events, |e| match e {
        OutboxEvent::DeadLettered { case_id, reason } => Some((case_id.clone(), reason.clone())),
        _ => None,
    })
    .await;
    assert_eq!(dead_id, id);
    assert!(reason.contains("400"), "{reason}");
    assert_eq!(receiver.next().await.reply, Reply::Status(400));
    let dead = dir.0.join("outbox/dead");
    assert_eq!(
        std::fs::read(dead.join(format!("{id}.json"))).unwrap(),
        body(&id)
    );
    let text = std::fs::read_to_string(dead.join(format!("{id}.reason.txt"))).unwrap();
    assert!(
        text.starts_with("rejected: receiver answered HTTP 400"),
        "{text}"
    );
    let status = outbox_status(&dir.0).unwrap();
    assert_eq!((status.pending, status.dead), (0, 1));

    // The operator fixes the receiver and requeues; the same key arrives again.
    assert_eq!(outbox.requeue_dead().unwrap(), 1);
    assert_eq!(wait_delivered(&mut events).await.0, id);
    let again = receiver.next().await;
    assert_eq!(again.header("idempotency-key"), Some(id.as_str()));
    assert_eq!(outbox_status(&dir.0).unwrap().dead, 0);
    worker.stop().await;
}

#[tokio::test]
async fn server_errors_and_429_are_retried_honouring_retry_after() {
    let dir = TempDir::new("retry");
    let mut receiver = Receiver::start().await;
    receiver.script(&[
        Reply::Status(500),
        Reply::TooMany {
            retry_after_secs: 1,
        },
    ]);
    let outbox = Outbox::open(&dir.0).unwrap();
    let mut events = outbox.subscribe();
    let worker = Worker::start(&outbox, config(receiver.url()));
    let id = new_id();
    outbox.enqueue(&id, &body(&id)).unwrap();
    assert_eq!(wait_delivered(&mut events).await, (id.clone(), 3));
    let first = receiver.next().await;
    let second = receiver.next().await;
    let third = receiver.next().await;
    assert_eq!(first.reply, Reply::Status(500));
    assert_eq!(
        second.reply,
        Reply::TooMany {
            retry_after_secs: 1
        }
    );
    assert_eq!(third.reply, Reply::Status(200));
    for request in [&first, &second, &third] {
        assert_eq!(request.header("idempotency-key"), Some(id.as_str()));
    }
    // The backoff cap is 100 ms, so only Retry-After explains a gap of a second.
    let gap = third.at - second.at;
    assert!(gap >= Duration::from_millis(950), "{gap:?}");
    worker.stop().await;
}

#[tokio::test]
async fn stalled_receiver_times_out_and_is_retried() {
    let dir = TempDir::new("stall");
    let mut receiver = Receiver::start().await;
    receiver.script(&[Reply::Stall]);
    let outbox = Outbox::open(&dir.0).unwrap();
    let mut events = outbox.subscribe();
    let worker = Worker::start(&outbox, config(receiver.url()));
    let id = new_id();
    outbox.enqueue(&id, &body(&id)).unwrap();
    let error = wait_for(&mut events, |e| match e {
        OutboxEvent::RetryScheduled { error, .. } => Some(error.clone()),
        _ => None,
    })
    .await;
    assert!(error.contains("timed out"), "{error}");
    assert_eq!(wait_delivered(&mut events).await, (id.clone(), 2));
    assert_eq!(receiver.next().await.reply, Reply::Stall);
    let retried = receiver.next().await;
    assert_eq!(retried.header("idempotency-key"), Some(id.as_str()));
    worker.stop().await;
}

#[tokio::test]
async fn receiver_down_then_up_delivers_everything() {
    let dir = TempDir::new("down");
    let mut receiver = Receiver::start().await;
    receiver.down().await;
    let outbox = Outbox::open(&dir.0).unwrap();
    let mut events = outbox.subscribe();
    let worker = Worker::start(&outbox, config(receiver.url()));
    let ids: Vec<CaseId> = (0..5).map(|_| new_id()).collect();
    for id in &ids {
        outbox.enqueue(id, &body(id)).unwrap();
    }
    // Every case fails at least once while the receiver is down.
    let mut failed = HashSet::new();
    while failed.len() < ids.len() {
        let id = wait_for(&mut events, |e| match e {
            OutboxEvent::RetryScheduled { case_id, .. } => Some(case_id.clone()),
            _ => None,
        })
        .await;
        failed.insert(id);
    }
    receiver.up().await;
    let mut delivered = HashSet::new();
    while delivered.len() < ids.len() {
        delivered.insert(wait_delivered(&mut events).await.0);
    }
    assert_eq!(delivered, ids.iter().cloned().collect());
    worker.stop().await;
}

#[tokio::test]
async fn restart_resumes_pending_cases_and_their_attempt_counts() {
    let dir = TempDir::new("restart");
    let mut receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(503));
    let ids: Vec<CaseId> = (0..3).map(|_| new_id()).collect();
    {
        let outbox = Outbox::open(&dir.0).unwrap();
        let mut events = outbox.subscribe();
        let mut slow = config(receiver.url());
        slow.retry.base = Duration::from_secs(3600);
        slow.retry.cap = Duration::from_secs(3600);
        let worker = Worker::start(&outbox, slow);
        for id in &ids {
            outbox.enqueue(id, &body(id)).unwrap();
        }
        for _ in &ids {
            wait_for(&mut events, |e| {
                matches!(e, OutboxEvent::RetryScheduled { .. }).then_some(())
            })
            .await;
        }
        worker.stop().await;
    }
    // A fresh process: nothing in memory, only the spool.
    let outbox = Outbox::open(&dir.0).unwrap();
    let entries = outbox.pending_entries();
    assert_eq!(entries.len(), 3);
    assert!(
        entries.iter().all(|(_, meta)| meta.attempts == 1),
        "{entries:?}"
    );
    assert!(
        entries
            .iter()
            .all(|(_, m)| m.last_error.as_deref() == Some("HTTP 503"))
    );
    // Make the cases due now, as if the hour had passed, by editing their sidecars while stopped.
    receiver.set_default(Reply::Status(200));
    for (id, mut meta) in entries {
        meta.next_due_unix_ms = 0;
        let path = dir.0.join(format!("outbox/pending/{id}.meta.json"));
        std::fs::write(path, serde_json::to_vec(&meta).unwrap()).unwrap();
    }
    drop(outbox);
    let outbox = Outbox::open(&dir.0).unwrap();
    let mut events = outbox.subscribe();
    let worker = Worker::start(&outbox, config(receiver.url()));
    let mut delivered = HashMap::new();
    for _ in &ids {
        let (id, attempts) = wait_delivered(&mut events).await;
        delivered.insert(id, attempts);
    }
    for id in &ids {
        assert_eq!(
            delivered.get(id),
            Some(&2),
            "second attempt overall for {id}"
        );
    }
    worker.stop().await;
    let mut per_key: HashMap<String, Vec<Reply>> = HashMap::new();
    for _ in 0..6 {
        let request = receiver.next().await;
        let key = request.header("idempotency-key").unwrap().to_owned();
        per_key.entry(key).or_default().push(request.reply);
    }
    assert!(receiver.try_next().is_none());
    for id in &ids {
        let replies = per_key.get(id.as_str()).unwrap();
        assert_eq!(
            replies,
            &vec![Reply::Status(503), Reply::Status(200)],
            "{id}"
        );
    }
}

#[tokio::test]
async fn attempts_are_limited_then_dead_lettered() {
    let dir = TempDir::new("exhaust");
    let mut receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(502));
    let outbox = Outbox::open(&dir.0).unwrap();
    let mut events = outbox.subscribe();
    let mut cfg = config(receiver.url());
    cfg.retry.max_attempts = 3;
    let worker = Worker::start(&outbox, cfg);
    let id = new_id();
    outbox.enqueue(&id, &body(&id)).unwrap();
    let reason = wait_for(&mut events, |e| match e {
        OutboxEvent::DeadLettered { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reason, "gave up after 3 attempts; last: HTTP 502");
    for _ in 0..3 {
        assert_eq!(receiver.next().await.reply, Reply::Status(502));
    }
    // Requeue from "another process" (the CLI path), then the daemon's rescan finds it.
    receiver.set_default(Reply::Status(200));
    assert_eq!(requeue(&dir.0).unwrap(), 1);
    assert_eq!(outbox.rescan().unwrap(), 1);
    assert_eq!(wait_delivered(&mut events).await, (id, 1));
    worker.stop().await;
}

#[tokio::test]
async fn without_url_no_worker_runs_and_cases_stay_spooled() {
    let dir = TempDir::new("nourl");
    let outbox = Outbox::open(&dir.0).unwrap();
    assert!(spawn_delivery(outbox.clone(), None, CancellationToken::new()).is_none());
    let id = new_id();
    outbox.enqueue(&id, &body(&id)).unwrap();
    let spooled = outbox.pending_dir().join(format!("{id}.json"));
    assert_eq!(std::fs::read(spooled).unwrap(), body(&id));
}

const CHILD_ENV: &str = "IVRD_OUTBOX_CRASH_CHILD";

/// Child half of the crash test (does nothing unless started by the parent): runs a delivery
/// worker against a closed port, enqueues 100 cases, then keeps enqueueing bigger ones until killed.
/// Prints `ENQUEUED <id>` only after `enqueue` returned.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/cases", closed.local_addr().unwrap());
    drop(closed);
    let outbox = Outbox::open(Path::new(&dir)).unwrap();
    let _worker = runtime.spawn(run_delivery(
        outbox.clone(),
        config(url),
        CancellationToken::new(),
    ));
    for _ in 0..100 {
        let id = new_id();
        outbox.enqueue(&id, &body(&id)).unwrap();
        println!("ENQUEUED {id}");
    }
    println!("BATCH1 DONE");
    let padding = "x".repeat(256 * 1024);
    loop {
        let id = new_id();
        let big = format!(r#"{{"case_id":"{id}","padding":"{padding}"}}"#);
        outbox.enqueue(&id, big.as_bytes()).unwrap();
        println!("ENQUEUED {id}");
    }
}

#[tokio::test]
async fn sigkill_during_enqueue_loses_no_acknowledged_case() {
    let dir = TempDir::new("crash");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &dir.0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut after_batch = None;
        while let Some(Ok(line)) = lines.next() {
            if line == "BATCH1 DONE" {
                after_batch = Some(0);
            } else if let Some((_, id)) = line.split_once("ENQUEUED ") {
                // The harness's own "test crash_child ... " may share the first line.
                acknowledged.push(CaseId::parse(id).unwrap());
                if let Some(n) = after_batch.as_mut() {
                    *n += 1;
                    if *n == 3 {
                        child.kill().unwrap(); // SIGKILL, in the middle of the next enqueue
                    }
                }
            }
        }
        child.wait().unwrap();
        acknowledged
    });
    let acknowledged = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert!(acknowledged.len() >= 103, "{}", acknowledged.len());

    // Before anything repairs the spool: every complete file parses.
    let pending = dir.0.join("outbox/pending");
    for entry in std::fs::read_dir(&pending).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = std::fs::read(&path).unwrap();
            let parsed = serde_json::from_slice::<serde_json::Value>(&bytes);
            assert!(parsed.is_ok(), "truncated: {}", path.display());
        }
    }

    let mut receiver = Receiver::start().await;
    let outbox = Outbox::open(&dir.0).unwrap();
    let spooled: HashSet<CaseId> = outbox
        .pending_entries()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    for id in &acknowledged {
        assert!(
            spooled.contains(id),
            "acknowledged case {id} missing from the spool"
        );
    }
    let mut events = outbox.subscribe();
    let worker = Worker::start(&outbox, config(receiver.url()));
    let mut keys: HashMap<String, usize> = HashMap::new();
    for _ in 0..spooled.len() {
        wait_delivered(&mut events).await;
        let request = receiver.next().await;
        let key = request.header("idempotency-key").unwrap().to_owned();
        let value: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(value["case_id"], key.as_str());
        *keys.entry(key).or_default() += 1;
    }
    worker.stop().await;
    assert!(receiver.try_next().is_none(), "a case was delivered twice");
    assert!(keys.values().all(|n| *n == 1), "{keys:?}");
    for id in &acknowledged {
        assert_eq!(keys.get(id.as_str()), Some(&1), "{id}");
    }
    assert_eq!(outbox_status(&dir.0).unwrap().pending, 0);
}

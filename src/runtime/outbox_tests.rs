//! Unit tests for the spool: file layout, crash leftovers, bookkeeping, dead letters.

use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory per test (no tempfile crate in the tree); removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ivrd-outbox-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn id(n: u128) -> CaseId {
    CaseId::new(1_795_000_000_000 + n as u64, n)
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    out.sort();
    out
}

#[test]
fn enqueue_leaves_exactly_the_case_file_and_open_reloads_it() {
    let tmp = TempDir::new("enqueue");
    let outbox = Outbox::open(&tmp.0).unwrap();
    let body = br#"{"case_id":"x","n":1}"#;
    outbox.enqueue(&id(1), body).unwrap();
    outbox.enqueue(&id(2), b"[]").unwrap();
    let pending = tmp.0.join("outbox/pending");
    assert_eq!(
        names(&pending),
        vec![format!("{}.json", id(1)), format!("{}.json", id(2))]
    );
    assert_eq!(
        fs::read(pending.join(format!("{}.json", id(1)))).unwrap(),
        body
    );
    drop(outbox);
    let reopened = Outbox::open(&tmp.0).unwrap();
    let ids: Vec<CaseId> = reopened
        .pending_entries()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ids, vec![id(1), id(2)]);
    assert_eq!(reopened.counts().unwrap().pending, 2);
}

#[test]
fn enqueue_refuses_non_json_and_duplicates() {
    let tmp = TempDir::new("refuse");
    let outbox = Outbox::open(&tmp.0).unwrap();
    assert!(matches!(
        outbox.enqueue(&id(1), b"{\"truncated\":"),
        Err(OutboxError::NotJson { .. })
    ));
    outbox.enqueue(&id(1), b"{}").unwrap();
    assert!(matches!(
        outbox.enqueue(&id(1), b"{}"),
        Err(OutboxError::Duplicate { .. })
    ));
    assert_eq!(names(&tmp.0.join("outbox/pending")).len(), 1);
}

#[test]
fn open_deletes_interrupted_writes_and_orphans() {
    let tmp = TempDir::new("leftovers");
    drop(Outbox::open(&tmp.0).unwrap());
    let pending = tmp.0.join("outbox/pending");
    let dead = tmp.0.join("outbox/dead");
    // A crash mid-enqueue: a truncated temp file. A crash mid-delivery: a sidecar without its case.
    fs::write(pending.join(format!("{}.json.tmp", id(1))), b"{\"half").unwrap();
    fs::write(pending.join(format!("{}.meta.json", id(2))), b"{}").unwrap();
    fs::write(dead.join(format!("{}.reason.txt", id(3))), b"x").unwrap();
    fs::write(dead.join(format!("{}.reason.txt.tmp", id(4))), b"x").unwrap();
    fs::write(pending.join(format!("{}.json", id(5))), b"{}").unwrap();
    let outbox = Outbox::open(&tmp.0).unwrap();
    assert_eq!(names(&pending), vec![format!("{}.json", id(5))]);
    assert!(names(&dead).is_empty());
    assert_eq!(outbox.pending_entries().len(), 1);
}

#[test]
fn retry_bookkeeping_survives_a_restart() {
    let tmp = TempDir::new("retry");
    let outbox = Outbox::open(&tmp.0).unwrap();
    outbox.enqueue(&id(1), b"{}").unwrap();
    let due = outbox.take_due(u64::MAX, 4);
    assert_eq!(due.len(), 1);
    assert!(
        outbox.take_due(u64::MAX, 4).is_empty(),
        "in flight is not due twice"
    );
    let meta = DeliveryMeta {
        attempts: 3,
        first_enqueued_unix_ms: 1000,
        next_due_unix_ms: 5000,
        last_error: Some("HTTP 503".into()),
    };
    outbox.finish(&id(1), Finish::Retry(meta.clone())).unwrap();
    assert!(outbox.take_due(4999, 4).is_empty());
    assert_eq!(outbox.next_due(), Some(5000));
    drop(outbox);
    let reopened = Outbox::open(&tmp.0).unwrap();
    assert_eq!(reopened.pending_entries(), vec![(id(1), meta)]);
    assert_eq!(reopened.take_due(5000, 4).len(), 1);
}

#[test]
fn delivered_removes_case_and_sidecar() {
    let tmp = TempDir::new("delivered");
    let outbox = Outbox::open(&tmp.0).unwrap();
    outbox.enqueue(&id(1), b"{}").unwrap();
    let meta = DeliveryMeta::fresh(1);
    outbox.finish(&id(1), Finish::Retry(meta)).unwrap();
    assert_eq!(names(&tmp.0.join("outbox/pending")).len(), 2);
    outbox.finish(&id(1), Finish::Delivered).unwrap();
    assert!(names(&tmp.0.join("outbox/pending")).is_empty());
    assert_eq!(outbox.counts().unwrap().pending, 0);
}

#[test]
fn dead_letters_keep_body_and_reason_and_can_be_requeued() {
    let tmp = TempDir::new("dead");
    let outbox = Outbox::open(&tmp.0).unwrap();
    outbox.enqueue(&id(1), b"{\"a\":1}").unwrap();
    outbox.enqueue(&id(2), b"{}").unwrap();
    outbox
        .finish(
            &id(1),
            Finish::Dead("rejected: receiver answered HTTP 400".into()),
        )
        .unwrap();
    let dead = tmp.0.join("outbox/dead");
    assert_eq!(
        fs::read(dead.join(format!("{}.json", id(1)))).unwrap(),
        b"{\"a\":1}"
    );
    let reason = fs::read_to_string(dead.join(format!("{}.reason.txt", id(1)))).unwrap();
    assert!(reason.contains("HTTP 400"), "{reason}");
    let counts = outbox.counts().unwrap();
    assert_eq!((counts.pending, counts.dead), (1, 1));
    assert_eq!(outbox_status(&tmp.0).unwrap().dead, 1);

    assert_eq!(outbox.requeue_dead().unwrap(), 1);
    assert!(names(&dead).is_empty());
    let entries = outbox.pending_entries();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].0, id(1));
    assert_eq!(entries[0].1.attempts, 0);
    assert_eq!(outbox.requeue_dead().unwrap(), 0);
}

#[test]
fn status_and_offline_requeue_delete_nothing_in_flight() {
    let tmp = TempDir::new("offline");
    let outbox = Outbox::open(&tmp.0).unwrap();
    outbox.enqueue(&id(1), b"{}").unwrap();
    outbox
        .finish(&id(1), Finish::Dead("gave up".into()))
        .unwrap();
    // Another process is in the middle of an enqueue.
    let in_progress = tmp.0.join(format!("outbox/pending/{}.json.tmp", id(9)));
    fs::write(&in_progress, b"{").unwrap();

    let status = outbox_status(&tmp.0).unwrap();
    assert_eq!((status.pending, status.dead), (0, 1));
    assert_eq!(requeue(&tmp.0).unwrap(), 1);
    assert!(in_progress.exists());
    // The daemon has not seen the requeued case until it rescans.
    assert_eq!(outbox.counts().unwrap().pending, 0);
    assert_eq!(outbox.rescan().unwrap(), 1);
    assert_eq!(outbox.rescan().unwrap(), 0);
    assert_eq!(outbox.pending_entries()[0].0, id(1));
}

#[test]
fn status_of_a_missing_spool_is_empty() {
    let tmp = TempDir::new("missing");
    let status = outbox_status(&tmp.0.join("nowhere")).unwrap();
    assert_eq!(status.pending, 0);
    assert_eq!(status.oldest_pending_age, None);
    assert_eq!(requeue(&tmp.0.join("nowhere")).unwrap(), 0);
    assert_eq!(
        status.to_string(),
        "pending: 0\ndead: 0\noldest pending: -\n"
    );
}

#[test]
fn a_group_spools_each_good_case_and_refuses_only_the_bad_ones() {
    let tmp = TempDir::new("group");
    let outbox = Outbox::open(&tmp.0).unwrap();
    outbox.enqueue(&id(1), b"{}").unwrap();
    let (one, two, three) = (id(1), id(2), id(3));
    let cases: [(&CaseId, &[u8]); 4] = [
        (&two, b"{\"a\":2}"),
        (&one, b"{}"),
        (&three, b"{\"truncated\":"),
        (&two, b"{}"),
    ];
    let results = enqueue::enqueue_group(&outbox.inner, &cases);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(results[1], Err(OutboxError::Duplicate { .. })),
        "already spooled"
    );
    assert!(matches!(results[2], Err(OutboxError::NotJson { .. })));
    assert!(
        matches!(results[3], Err(OutboxError::Duplicate { .. })),
        "twice in one group"
    );
    assert_eq!(
        names(outbox.pending_dir()),
        [format!("{one}.json"), format!("{two}.json")],
        "no temp file left"
    );
    let body = fs::read(outbox.pending_dir().join(format!("{two}.json"))).unwrap();
    assert_eq!(body, b"{\"a\":2}", "the first copy is the one kept");
    let pending: Vec<CaseId> = outbox
        .pending_entries()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(pending, [one, two], "indexed for delivery");
}

#[tokio::test]
async fn cases_enqueued_together_are_all_spooled_and_announced() {
    let tmp = TempDir::new("together");
    let outbox = Outbox::open(&tmp.0).unwrap();
    let mut events = outbox.subscribe();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=20 {
        let outbox = outbox.clone();
        tasks.spawn(async move { outbox.enqueue_async(id(n), b"{}".to_vec()).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    assert_eq!(outbox.pending_entries().len(), 20);
    assert_eq!(names(outbox.pending_dir()).len(), 20);
    let mut announced = 0;
    while let Ok(OutboxEvent::Enqueued { .. }) = events.try_recv() {
        announced += 1;
    }
    assert_eq!(announced, 20);
    drop(outbox);
    let reopened = Outbox::open(&tmp.0).unwrap();
    assert_eq!(
        reopened.pending_entries().len(),
        20,
        "durable across a reopen"
    );
}

#[tokio::test]
async fn the_follow_up_of_an_enqueue_runs_once_the_case_is_on_disk_and_never_after_a_refusal() {
    let tmp = TempDir::new("then");
    let outbox = Outbox::open(&tmp.0).unwrap();
    let path = outbox.pending_dir().join(format!("{}.json", id(1)));
    let (tx, rx) = std::sync::mpsc::channel();
    let seen = tx.clone();
    outbox
        .enqueue_async_then(id(1), b"{}".to_vec(), move || {
            let _ = seen.send(path.exists());
        })
        .await
        .unwrap();
    assert_eq!(
        rx.try_recv(),
        Ok(true),
        "ran before the answer, case on disk"
    );
    let refused = outbox
        .enqueue_async_then(id(1), b"{}".to_vec(), move || {
            let _ = tx.send(true);
        })
        .await;
    assert!(matches!(refused, Err(OutboxError::Duplicate { .. })));
    assert!(rx.try_recv().is_err(), "no follow-up for a refused case");
}

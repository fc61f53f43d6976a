//! Markers on a real temp directory: recovery after a restart, the marker files of older
//! versions, oversize markers, group writes, and a call whose case is already spooled.

use super::*;

fn temp_storage() -> PathBuf {
    let storage = std::env::temp_dir().join(format!(
        "ivrd-marker-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&storage).expect("mkdir");
    storage
}

fn marker(id: &CaseId, call_id: &str, recording: Option<&str>) -> CallMarker {
    CallMarker {
        case_id: id.to_string(),
        call_id: call_id.into(),
        caller: "sip:+8613800000000@t".into(),
        called: "sip:12345@i".into(),
        trunk: "127.0.0.1".into(),
        received_unix_ms: 1_795_706_043_000,
        answered_unix_ms: 1_795_706_043_250,
        recording: recording.map(str::to_string),
        host: "test".into(),
    }
}

#[test]
fn a_leftover_marker_becomes_an_abandoned_case_with_its_recording() {
    let storage = temp_storage();
    let rel = "recordings/2026/11/26/x.wav";
    std::fs::create_dir_all(storage.join("recordings/2026/11/26")).expect("mkdir");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(storage.join(rel), spec).expect("wav");
    for _ in 0..(8000 * 2 * 3) {
        w.write_sample(0i16).expect("sample");
    }
    w.finalize().expect("finalize");
    let id = CaseId::new(1_795_706_043_250, 7);
    let (store, none) = MarkerStore::open(&storage, 4);
    assert!(none.is_empty());
    let place = store.write(&marker(&id, "c@x", Some(rel))).expect("write");
    assert!(matches!(place, MarkerPlace::Slot(_)), "{place:?}");
    drop(store);
    let (store, interrupted) = MarkerStore::open(&storage, 4);
    assert_eq!(interrupted.len(), 1);
    let call = &interrupted[0];
    assert_eq!((&call.case_id, &call.place), (&id, &place));
    let case = &call.case;
    assert_eq!(
        (case.outcome.as_str(), case.hangup.reason.as_str()),
        ("abandoned", "ivrd_restart")
    );
    assert_eq!(case.recordings.len(), 1);
    assert_eq!(case.recordings[0].duration_ms, 3000);
    let file = std::fs::read(storage.join(rel)).expect("read");
    let digest: String = Sha256::digest(&file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(case.recordings[0].sha256, digest);
    store.clear(&place).expect("clear");
    drop(store);
    let (store, interrupted) = MarkerStore::open(&storage, 4);
    assert!(interrupted.is_empty(), "a cleared marker is gone");
    store.clear(&place).expect("clearing twice is fine");
    let _ = std::fs::remove_dir_all(&storage);
}

#[test]
fn marker_files_of_older_versions_and_oversize_markers_are_recovered_and_cleared() {
    let storage = temp_storage();
    let old = CaseId::new(1_795_706_043_250, 1);
    std::fs::create_dir_all(marker_dir(&storage)).expect("mkdir");
    let json = serde_json::to_vec(&marker(&old, "old@x", None)).expect("json");
    std::fs::write(marker_path(&storage, &old.to_string()), json).expect("old marker");
    std::fs::write(marker_dir(&storage).join("x.json.tmp"), b"{").expect("a torn temp file");
    let (store, interrupted) = MarkerStore::open(&storage, 4);
    assert_eq!(interrupted.len(), 1);
    assert_eq!(interrupted[0].case.call_id, "old@x");
    assert_eq!(
        interrupted[0].place,
        MarkerPlace::File(old.to_string()),
        "the upgrade path: an older version's marker"
    );
    store.clear(&interrupted[0].place).expect("clear");
    let big = CaseId::new(1_795_706_043_250, 2);
    let long_call_id = format!("{}@x", "c".repeat(2000));
    let place = store
        .write(&marker(&big, &long_call_id, None))
        .expect("write");
    assert_eq!(
        place,
        MarkerPlace::File(big.to_string()),
        "too long for a slot"
    );
    drop(store);
    let (store, interrupted) = MarkerStore::open(&storage, 4);
    assert_eq!(interrupted.len(), 1);
    assert_eq!(interrupted[0].case.call_id, long_call_id);
    store.clear(&interrupted[0].place).expect("clear");
    assert!(!marker_dir(&storage).join("x.json.tmp").exists());
    drop(store);
    assert!(MarkerStore::open(&storage, 4).1.is_empty());
    let _ = std::fs::remove_dir_all(&storage);
}

#[tokio::test]
async fn markers_written_together_each_get_a_slot_and_are_found_after_a_restart() {
    let storage = temp_storage();
    let (store, _) = MarkerStore::open(&storage, 4);
    let store = Arc::new(store);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..12u128 {
        let store = store.clone();
        let id = CaseId::new(1_795_706_043_250, n);
        tasks.spawn(async move {
            let place = store
                .write_async(marker(&id, &format!("{n}@x"), None))
                .await;
            (id, place.expect("written"))
        });
    }
    let mut written = Vec::new();
    while let Some(done) = tasks.join_next().await {
        written.push(done.expect("task"));
    }
    let mut slots: Vec<_> = written
        .iter()
        .map(|(_, place)| match place {
            MarkerPlace::Slot(slot) => *slot,
            MarkerPlace::File(_) => panic!("{place:?}: a slot was expected"),
        })
        .collect();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), 12, "one slot each (the file grew past 4)");
    drop(store);
    let (_, interrupted) = MarkerStore::open(&storage, 4);
    let mut found: Vec<_> = interrupted.iter().map(|c| c.case_id.clone()).collect();
    let mut expected: Vec<_> = written.into_iter().map(|(id, _)| id).collect();
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
    let _ = std::fs::remove_dir_all(&storage);
}

#[tokio::test]
async fn a_call_whose_case_is_already_spooled_gets_no_second_case() {
    let storage = temp_storage();
    let outbox = crate::runtime::outbox::Outbox::open(&storage).expect("outbox");
    let cases = CaseSpool::new(&storage, Some(outbox.clone()));
    let (spooled, fresh) = (
        CaseId::new(1_795_706_043_250, 3),
        CaseId::new(1_795_706_043_250, 4),
    );
    let (store, _) = MarkerStore::open(&storage, 4);
    for id in [&spooled, &fresh] {
        store
            .write(&marker(id, &format!("{id}@x"), None))
            .expect("write");
    }
    // A crash after the call's own case was spooled, before its marker was cleared.
    outbox
        .enqueue(&spooled, b"{\"own\":true}")
        .expect("enqueue");
    drop(store);
    let (store, interrupted) = MarkerStore::open(&storage, 4);
    assert_eq!(interrupted.len(), 2);
    let store = Arc::new(store);
    spool_interrupted(&store, interrupted, &cases).await;
    let pending: Vec<CaseId> = outbox
        .pending_entries()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(pending.len(), 2, "{pending:?}");
    let own = std::fs::read(outbox.pending_dir().join(format!("{spooled}.json"))).expect("own");
    assert_eq!(
        own, b"{\"own\":true}",
        "the call's own case is kept, not replaced"
    );
    assert_eq!(cases.held(), 0, "nothing held in memory as a duplicate");
    drop(store);
    assert!(
        MarkerStore::open(&storage, 4).1.is_empty(),
        "both markers cleared"
    );
    let _ = std::fs::remove_dir_all(&storage);
}

//! The end of a call's life: its case is built, spooled durably in the outbox, and its metrics
//! recorded. A failure to spool is logged loudly; the case JSON is then written to the log so
//! nothing is lost without a trace.

use crate::case::skeleton::{Hangup, RecordingRef};
use crate::case::{CallFacts, CaseId, CaseSkeleton};
use crate::dialplan::journal::{CallJournal, Outcome};
use crate::metrics::{
    CallOutcome, Metrics, RecordingKind, TransferResult as MetricTransfer, TransferTarget,
};
use crate::runtime::call_marker::{MarkerPlace, MarkerStore};
use crate::runtime::outbox::Outbox;
use crate::runtime::recorder::RecordingSummary;
use crate::sip::uas::EndReason;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A new sortable case id for now.
pub fn new_case_id() -> CaseId {
    CaseId::new(unix_ms_now(), rand::random())
}

/// Milliseconds since the Unix epoch now.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Unix milliseconds of a past `Instant`.
pub fn unix_ms_of(at: Instant) -> i64 {
    let ago = Instant::now().saturating_duration_since(at);
    i64::try_from(unix_ms_now()).unwrap_or(i64::MAX) - i64::try_from(ago.as_millis()).unwrap_or(0)
}

/// Who hung up, for the case.
pub fn hangup_of(reason: EndReason) -> Hangup {
    let side = match reason {
        EndReason::RemoteBye | EndReason::Cancelled => "caller",
        _ => "ivrd",
    };
    Hangup {
        side: side.into(),
        reason: reason.as_str().into(),
    }
}

/// The case's view of a finished recording.
pub fn recording_ref(kind: &str, summary: &RecordingSummary) -> RecordingRef {
    RecordingRef {
        kind: kind.into(),
        path: summary.relative_path.to_string_lossy().into_owned(),
        format: summary.format.into(),
        duration_ms: summary.duration_ms,
        bytes: summary.bytes,
        sha256: summary.sha256.clone(),
    }
}

/// Cases held in memory at most while the disk refuses them; beyond this they go to the log only.
const MAX_HELD: usize = 100_000;

/// Where finished calls leave their cases: the durable outbox, or — while the disk refuses
/// writes (full, read-only, gone) — a bounded queue in memory that is written out as soon as the
/// disk takes it again (issue: "a case is never lost because the disk failed").
pub struct CaseSpool {
    storage_dir: std::path::PathBuf,
    outbox: std::sync::Mutex<Option<Outbox>>,
    held: std::sync::Mutex<std::collections::VecDeque<Held>>,
}

/// A call's crash marker, to clear once the call's case is on disk: while the case is only in
/// memory, the marker is what a kill would leave of the call.
pub type Marker = Option<(std::sync::Arc<MarkerStore>, MarkerPlace)>;

/// A case waiting in memory for the disk.
struct Held {
    case_id: CaseId,
    json: Vec<u8>,
    marker: Marker,
}

/// Enqueues a case; once it is durable the spool thread clears the call's marker in the same
/// hand-over, before this returns (so a call task that ends has its marker gone).
async fn enqueue_clearing(
    outbox: &Outbox,
    case_id: &CaseId,
    json: &[u8],
    marker: &Marker,
) -> Result<(), crate::runtime::outbox::OutboxError> {
    let (id, json) = (case_id.clone(), json.to_vec());
    match marker.clone() {
        Some((store, place)) => {
            let clear = move || {
                if let Err(e) = store.clear(&place) {
                    tracing::warn!(error = %e, "call marker not cleared; a restart will find it again");
                }
            };
            outbox.enqueue_async_then(id, json, clear).await
        }
        None => outbox.enqueue_async(id, json).await,
    }
}

impl CaseSpool {
    /// A spool over `outbox` (which may be missing if it could not be opened at start-up).
    pub fn new(storage_dir: &std::path::Path, outbox: Option<Outbox>) -> Self {
        CaseSpool {
            storage_dir: storage_dir.to_path_buf(),
            outbox: std::sync::Mutex::new(outbox),
            held: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Whether the outbox already has `case_id` (pending or dead).
    pub fn holds(&self, case_id: &CaseId) -> bool {
        self.outbox().is_some_and(|o| o.contains(case_id))
    }

    /// Cases waiting in memory for the disk.
    pub fn held(&self) -> usize {
        self.held.lock().map_or(0, |h| h.len())
    }

    fn outbox(&self) -> Option<Outbox> {
        let mut guard = self.outbox.lock().ok()?;
        if guard.is_none() {
            *guard = Outbox::open(&self.storage_dir).ok();
        }
        guard.clone()
    }

    /// Spools a case durably, or holds it in memory when the disk refuses it. Returns true when
    /// it is on disk.
    pub async fn spool(&self, case_id: CaseId, case: &CaseSkeleton) -> bool {
        self.spool_clearing(case_id, case, None).await
    }

    /// [`CaseSpool::spool`], then clears the call's `marker` once the case is on disk (now, or
    /// when a held case is written later). A case that never reaches the disk keeps its marker,
    /// so a restart still makes an `abandoned` case of the call.
    pub async fn spool_clearing(
        &self,
        case_id: CaseId,
        case: &CaseSkeleton,
        marker: Marker,
    ) -> bool {
        let json = match case.to_json() {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(case_id = %case_id, error = %e, "case could not be serialised");
                return false;
            }
        };
        let result = match self.outbox() {
            Some(outbox) => enqueue_clearing(&outbox, &case_id, &json, &marker)
                .await
                .map_err(|e| e.to_string()),
            None => Err("outbox unavailable".to_string()),
        };
        match result {
            Ok(()) => {
                tracing::info!(case_id = %case_id, outcome = %case.outcome, "case spooled");
                true
            }
            Err(error) => {
                self.hold(
                    Held {
                        case_id,
                        json,
                        marker,
                    },
                    &error,
                );
                false
            }
        }
    }

    fn hold(&self, case: Held, error: &str) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        let case_id = &case.case_id;
        if held.len() >= MAX_HELD {
            tracing::error!(case_id = %case_id, %error, case = %String::from_utf8_lossy(&case.json), "case NOT spooled and memory full; written to the log");
            return;
        }
        tracing::error!(case_id = %case_id, %error, held = held.len() + 1, "case NOT spooled; held in memory until the disk takes it");
        held.push_back(case);
    }

    /// Tries to write every held case; returns how many are still held.
    pub async fn retry_held(&self) -> usize {
        let batch: Vec<Held> = match self.held.lock() {
            Ok(mut held) => held.drain(..).collect(),
            Err(_) => return 0,
        };
        if batch.is_empty() {
            return 0;
        }
        let outbox = self.outbox();
        let mut still = Vec::new();
        for case in batch {
            let ok = match &outbox {
                Some(o) => enqueue_clearing(o, &case.case_id, &case.json, &case.marker)
                    .await
                    .is_ok(),
                None => false,
            };
            if ok {
                tracing::info!(case_id = %case.case_id, "held case spooled after the disk recovered");
            } else {
                still.push(case);
            }
        }
        let left = still.len();
        if let Ok(mut held) = self.held.lock() {
            for item in still.into_iter().rev() {
                held.push_front(item);
            }
        }
        left
    }

    /// Logs every case still held (the last resort at shutdown).
    pub fn log_held(&self) {
        if let Ok(held) = self.held.lock() {
            for case in held.iter() {
                tracing::error!(case_id = %case.case_id, case = %String::from_utf8_lossy(&case.json), "case never reached the disk; here it is");
            }
        }
    }
}

/// Retries held cases every `every` until `stop`; then one last try, and the log for the rest.
pub async fn run_retry(
    spool: std::sync::Arc<CaseSpool>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {
                spool.retry_held().await;
            }
        }
    }
    if spool.retry_held().await > 0 {
        spool.log_held();
    }
}

/// Builds the case of a refused (503) call.
pub fn refused_case(
    case_id: &CaseId,
    call_id: &str,
    caller: &str,
    called: &str,
    trunk: &str,
    received: Instant,
    host: &str,
) -> CaseSkeleton {
    let received_ms = unix_ms_of(received);
    let facts = CallFacts {
        case_id: case_id.to_string(),
        call_id: call_id.into(),
        caller: caller.into(),
        called: called.into(),
        trunk: trunk.into(),
        received_unix_ms: received_ms,
        answered_unix_ms: None,
        ended_unix_ms: received_ms,
        hangup: Hangup {
            side: "none".into(),
            reason: "overload".into(),
        },
        host: host.into(),
    };
    CaseSkeleton::rejected(&facts)
}

/// Records the IVR journey of a finished call in the metrics.
pub fn observe_journey(
    metrics: &Metrics,
    journal: &CallJournal,
    outcome: &str,
    duration: Duration,
) {
    for node in journal.nodes_visited() {
        metrics.ivr_node_entered(node);
    }
    for step in &journal.steps {
        use crate::dialplan::journal::StepKind;
        match &step.kind {
            StepKind::Timeout { .. } => metrics.ivr_node_timeout(step.node.as_str()),
            StepKind::Invalid { .. } => metrics.ivr_invalid_key(step.node.as_str()),
            StepKind::Key { method, .. } => metrics.digit_received(*method),
            _ => {}
        }
    }
    if let Some(Outcome::Abandoned { node }) = &journal.outcome {
        metrics.ivr_hangup(node.as_str());
    }
    if let Some(rt) = &journal.request_type {
        metrics.call_classified(
            &rt.code,
            journal.domain.first().map_or("", |d| d.code.as_str()),
        );
    }
    if let Some(t) = &journal.transfer {
        let class = if t.emergency.is_some() {
            TransferTarget::Emergency
        } else {
            TransferTarget::Queue
        };
        let result = match t.result {
            Some(Ok(())) => MetricTransfer::Succeeded,
            Some(Err(Some(_))) => MetricTransfer::Rejected,
            Some(Err(None)) => MetricTransfer::Timeout,
            None => MetricTransfer::Failed,
        };
        metrics.transfer_finished(class, result);
    }
    if let Some(ivr) = journal.ended_after {
        metrics.ivr_time(ivr);
        if matches!(
            journal.outcome,
            Some(Outcome::Transferred { .. } | Outcome::EmergencyHandoff { .. })
        ) {
            metrics.time_to_agent(ivr);
        }
    }
    metrics.call_ended(call_outcome(outcome), duration);
}

fn call_outcome(outcome: &str) -> CallOutcome {
    match outcome {
        "transferred" => CallOutcome::Transferred,
        "emergency_handoff" => CallOutcome::EmergencyHandoff,
        "message_left" => CallOutcome::MessageLeft,
        "completed" => CallOutcome::Completed,
        "abandoned" => CallOutcome::Abandoned,
        "media_timeout" => CallOutcome::MediaTimeout,
        _ => CallOutcome::Failed,
    }
}

/// Records a finished recording (or its failure) in the metrics.
pub fn observe_recording(
    metrics: &Metrics,
    kind: RecordingKind,
    result: &Result<RecordingSummary, crate::runtime::recorder::RecordingError>,
) {
    match result {
        Ok(s) => {
            metrics.recording_finished(kind, s.bytes, Duration::from_millis(s.duration_ms));
            if s.dropped_frames > 0 {
                let lost =
                    Duration::from_millis(s.dropped_frames * crate::runtime::recorder::FRAME_MS);
                tracing::warn!(path = %s.relative_path.display(), lost_ms = lost.as_millis(), "recording lacks audio: the writer fell behind");
                metrics.recording_dropped(kind, lost);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "recording failed");
            metrics.recording_failed(kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_case(id: &CaseId) -> CaseSkeleton {
        refused_case(
            id,
            "c@x",
            "sip:+8613800000000@t",
            "sip:12345@i",
            "127.0.0.1",
            Instant::now(),
            "test",
        )
    }

    #[tokio::test]
    async fn cases_wait_in_memory_while_the_disk_refuses_and_are_written_after() {
        let dir = std::env::temp_dir().join(format!(
            "ivrd-spool-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let outbox = Outbox::open(&dir).expect("outbox");
        let spool = CaseSpool::new(&dir, Some(outbox.clone()));
        // The disk "fails": the pending directory is replaced by a file.
        let pending = outbox.pending_dir().to_path_buf();
        std::fs::rename(&pending, dir.join("pending-away")).expect("move away");
        std::fs::write(&pending, b"not a directory").expect("block");
        let ids: Vec<CaseId> = (0..3).map(|_| new_case_id()).collect();
        for id in &ids {
            assert!(
                !spool.spool(id.clone(), &a_case(id)).await,
                "refused by the disk"
            );
        }
        assert_eq!(spool.held(), 3);
        assert_eq!(spool.retry_held().await, 3, "still failing: still held");
        // The disk recovers.
        std::fs::remove_file(&pending).expect("unblock");
        std::fs::rename(dir.join("pending-away"), &pending).expect("restore");
        assert_eq!(spool.retry_held().await, 0);
        assert_eq!(spool.held(), 0);
        for id in &ids {
            let file = pending.join(format!("{id}.json"));
            let text = std::fs::read_to_string(&file).expect("written after recovery");
            assert!(text.contains(id.as_str()));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_held_case_keeps_its_calls_marker_until_it_is_written() {
        let dir = std::env::temp_dir().join(format!(
            "ivrd-spool-marker-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let outbox = Outbox::open(&dir).expect("outbox");
        let spool = CaseSpool::new(&dir, Some(outbox.clone()));
        let (store, _) = MarkerStore::open(&dir, 4);
        let store = std::sync::Arc::new(store);
        let id = new_case_id();
        let case = a_case(&id);
        let marker = crate::runtime::call_marker::CallMarker {
            case_id: id.to_string(),
            call_id: case.call_id.clone(),
            caller: "sip:+8613800000000@t".into(),
            called: "sip:12345@i".into(),
            trunk: "127.0.0.1".into(),
            received_unix_ms: 1_795_706_043_000,
            answered_unix_ms: 1_795_706_043_250,
            recording: None,
            host: "test".into(),
        };
        let place = store.write(&marker).expect("marker");
        // What a restart would find in the marker store now (read through a second handle).
        let leftovers = || MarkerStore::open(&dir, 4).1.len();
        let pending = outbox.pending_dir().to_path_buf();
        std::fs::rename(&pending, dir.join("pending-away")).expect("move away");
        std::fs::write(&pending, b"not a directory").expect("block");
        let held = spool
            .spool_clearing(id.clone(), &case, Some((store.clone(), place)))
            .await;
        assert!(!held, "refused by the disk");
        assert_eq!(leftovers(), 1, "a kill now still leaves the call's marker");
        std::fs::remove_file(&pending).expect("unblock");
        std::fs::rename(dir.join("pending-away"), &pending).expect("restore");
        assert_eq!(spool.retry_held().await, 0);
        assert_eq!(leftovers(), 0, "cleared once the case is on disk");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn audio_a_finished_recording_lacks_is_counted_and_a_complete_one_adds_nothing() {
        let metrics = Metrics::new().unwrap();
        let summary = |dropped_frames| {
            Ok(RecordingSummary {
                path: "/s/recordings/r.wav".into(),
                relative_path: "recordings/r.wav".into(),
                duration_ms: 10_000,
                bytes: 320_044,
                sha256: String::new(),
                format: "wav",
                dropped_frames,
            })
        };
        observe_recording(&metrics, RecordingKind::Call, &summary(0));
        observe_recording(&metrics, RecordingKind::Call, &summary(25));
        let text = metrics.render().unwrap();
        let call = r#"ivrd_recording_dropped_seconds_total{kind="call"}"#;
        assert_eq!(
            crate::metrics::tests::value(&text, call),
            Some(0.5),
            "25 frames of 20 ms"
        );
        let files = r#"ivrd_recording_files_total{kind="call"}"#;
        assert_eq!(
            crate::metrics::tests::value(&text, files),
            Some(2.0),
            "both are still recordings"
        );
    }
}

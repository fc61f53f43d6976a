//! The end of a call's life: its case is built, spooled durably in the outbox, and its metrics
//! recorded. A failure to spool is logged loudly; the case JSON is then written to the log so
//! nothing is lost without a trace.

use crate::case::skeleton::{Hangup, RecordingRef};
use crate::case::{CallFacts, CaseId, CaseSkeleton};
use crate::dialplan::journal::{CallJournal, Outcome};
use crate::metrics::{
    CallOutcome, Metrics, RecordingKind, TransferResult as MetricTransfer, TransferTarget,
};
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

/// Spools a case; logs and returns false if the disk refused it.
pub async fn spool(outbox: Option<&Outbox>, case_id: CaseId, case: &CaseSkeleton) -> bool {
    let json = match case.to_json() {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(case_id = %case_id, error = %e, "case could not be serialised");
            return false;
        }
    };
    let Some(outbox) = outbox else {
        tracing::error!(case_id = %case_id, case = %String::from_utf8_lossy(&json), "no outbox; case only in the log");
        return false;
    };
    match outbox.enqueue_async(case_id.clone(), json.clone()).await {
        Ok(()) => {
            tracing::info!(case_id = %case_id, outcome = %case.outcome, "case spooled");
            true
        }
        Err(e) => {
            tracing::error!(case_id = %case_id, error = %e, case = %String::from_utf8_lossy(&json), "case NOT spooled; written to the log");
            false
        }
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
        Ok(s) => metrics.recording_finished(kind, s.bytes, Duration::from_millis(s.duration_ms)),
        Err(e) => {
            tracing::error!(error = %e, "recording failed");
            metrics.recording_failed(kind);
        }
    }
}

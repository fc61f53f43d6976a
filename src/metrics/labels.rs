//! The closed sets of label values the metrics use.
//!
//! Every label a metric carries is either one of these enums, a SIP method or response code (both
//! bounded by `Method::metric_label()` and the 100–699 range) or a name taken from the loaded
//! dialplan and taxonomy (node ids, request types, domain codes). Caller numbers and call ids never
//! become labels: none of these types can hold one.

/// Why a call was refused before it was answered (`ivrd_calls_rejected_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The source is not in `[sip] trusted` (403).
    Acl,
    /// The call limit, the RTP port pool or a drain refused it (503).
    Overload,
    /// No common codec in the offer (488).
    Codec,
    /// Any other refusal (unsupported URI scheme, `Require`, content type…).
    Other,
}

impl RejectReason {
    /// Every value, so each series exists at zero from the first scrape.
    pub const ALL: [RejectReason; 4] = [
        RejectReason::Acl,
        RejectReason::Overload,
        RejectReason::Codec,
        RejectReason::Other,
    ];

    /// The stable label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Acl => "acl",
            RejectReason::Overload => "overload",
            RejectReason::Codec => "codec",
            RejectReason::Other => "other",
        }
    }
}

/// How an answered call ended, as the case records it (`ivrd_calls_ended_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// Handed to an agent queue by REFER.
    Transferred,
    /// One-key hand-off to 110/119/120/122.
    EmergencyHandoff,
    /// The caller left a voice message.
    MessageLeft,
    /// The dialplan reached its end (e.g. information played, goodbye).
    Completed,
    /// The caller hung up in the menu: a missed call to call back.
    Abandoned,
    /// No RTP from the caller for the media timeout.
    MediaTimeout,
    /// The daemon stopped while the call was up.
    Shutdown,
    /// Something on our side broke the call (recorder, transport, internal error).
    Failed,
}

impl CallOutcome {
    /// Every value, so each series exists at zero from the first scrape.
    pub const ALL: [CallOutcome; 8] = [
        CallOutcome::Transferred,
        CallOutcome::EmergencyHandoff,
        CallOutcome::MessageLeft,
        CallOutcome::Completed,
        CallOutcome::Abandoned,
        CallOutcome::MediaTimeout,
        CallOutcome::Shutdown,
        CallOutcome::Failed,
    ];

    /// The stable label value (matches the case document's `outcome` names).
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Transferred => "transferred",
            CallOutcome::EmergencyHandoff => "emergency_handoff",
            CallOutcome::MessageLeft => "message_left",
            CallOutcome::Completed => "completed",
            CallOutcome::Abandoned => "abandoned",
            CallOutcome::MediaTimeout => "media_timeout",
            CallOutcome::Shutdown => "shutdown",
            CallOutcome::Failed => "failed",
        }
    }
}

/// What kind of party a transfer went to (`ivrd_ivr_transfers_total{target_class}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferTarget {
    /// An agent queue of the hotline.
    Queue,
    /// An emergency line: 110, 119, 120 or 122.
    Emergency,
    /// Anything else the dialplan names (another hotline, an interpreter line).
    Other,
}

impl TransferTarget {
    /// Every value, so each series exists at zero from the first scrape.
    pub const ALL: [TransferTarget; 3] = [
        TransferTarget::Queue,
        TransferTarget::Emergency,
        TransferTarget::Other,
    ];

    /// The stable label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferTarget::Queue => "queue",
            TransferTarget::Emergency => "emergency",
            TransferTarget::Other => "other",
        }
    }
}

/// How a REFER ended (`ivrd_ivr_transfers_total{result}`), per RFC 3515 §2.4.5 NOTIFY sipfrag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferResult {
    /// REFER accepted and the NOTIFY reported a 2xx.
    Succeeded,
    /// REFER refused with a final non-2xx response.
    Rejected,
    /// REFER accepted but the NOTIFY reported a failure.
    Failed,
    /// No final answer or NOTIFY in time.
    Timeout,
}

impl TransferResult {
    /// Every value, so each series exists at zero from the first scrape.
    pub const ALL: [TransferResult; 4] = [
        TransferResult::Succeeded,
        TransferResult::Rejected,
        TransferResult::Failed,
        TransferResult::Timeout,
    ];

    /// The stable label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferResult::Succeeded => "succeeded",
            TransferResult::Rejected => "rejected",
            TransferResult::Failed => "failed",
            TransferResult::Timeout => "timeout",
        }
    }
}

/// Which recording a figure belongs to (`ivrd_recording_*{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordingKind {
    /// The whole call, stereo.
    Call,
    /// The caller's voice message, mono.
    Message,
}

impl RecordingKind {
    /// Every value, so each series exists at zero from the first scrape.
    pub const ALL: [RecordingKind; 2] = [RecordingKind::Call, RecordingKind::Message];

    /// The stable label value (matches the case document's `recordings[].kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingKind::Call => "call",
            RecordingKind::Message => "message",
        }
    }
}

/// Why the outbox gave up on a case and moved it to the dead-letter directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// The intake backend answered a 4xx other than 429.
    Rejected,
    /// The attempt or age limit ran out.
    Expired,
}

impl DeadLetterReason {
    /// The `result` label value of `ivrd_outbox_deliveries_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::Expired => "expired",
        }
    }
}

//! The case skeleton (DOMAIN.md "The case skeleton"; schema `schemas/case.v1.json`): the work
//! order a call leaves for the back office, built from what the SIP layer knew, the dialplan
//! journal, and the finalised recordings. Pure: times and ids are passed in.

use crate::case::rfc3339::format_unix_ms;
use crate::dialplan::journal::{CallJournal, Outcome};
use crate::dialplan::taxonomy::CodeLabel;
use crate::sip::uas::calls::mask_number;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Version of the document layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// `{code, label}` of a classification axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coded {
    pub code: String,
    pub label: String,
}

/// One `ivr_path` element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStep {
    pub node: String,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A finalised recording referenced by the case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingRef {
    /// `call` (whole call, stereo) or `message` (the caller's message, mono).
    pub kind: String,
    /// Relative to the storage directory.
    pub path: String,
    pub format: String,
    pub duration_ms: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// The transfer attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRef {
    pub target: String,
    /// `accepted`, `failed` or `pending` (the call ended first).
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emergency: Option<String>,
}

/// Which plan served the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRef {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// Who ended the call and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hangup {
    /// `caller`, `ivrd` or `none` (a refused call).
    pub side: String,
    pub reason: String,
}

/// The case document, version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseSkeleton {
    pub schema_version: u32,
    pub case_id: String,
    pub call_id: String,
    pub channel: String,
    /// Calling number as received (E.164 where the trunk sends it).
    pub caller: String,
    pub caller_masked: String,
    pub called: String,
    pub trunk: String,
    pub received_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<String>,
    pub ended_at: String,
    pub ivr_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_agent_seconds: Option<f64>,
    pub language: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_type: Option<Coded>,
    pub domain: Vec<Coded>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<Coded>,
    pub confidence: String,
    /// `transferred`, `message_left`, `emergency_handoff`, `completed`, `abandoned`,
    /// `media_timeout` or `rejected`.
    pub outcome: String,
    /// Where in the menu an abandoned call left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abandoned_at: Option<String>,
    pub hangup: Hangup,
    pub ivr_path: Vec<PathStep>,
    pub retries: u32,
    pub timeouts: u32,
    pub fields: BTreeMap<String, String>,
    pub recordings: Vec<RecordingRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dialplan: Option<PlanRef>,
    pub ivrd: Provenance,
}

/// Which ivrd wrote the case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub version: String,
    pub host: String,
}

/// What the SIP side knew about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFacts {
    pub case_id: String,
    pub call_id: String,
    pub caller: String,
    pub called: String,
    pub trunk: String,
    pub received_unix_ms: i64,
    pub answered_unix_ms: Option<i64>,
    pub ended_unix_ms: i64,
    pub hangup: Hangup,
    pub host: String,
}

fn coded(c: &CodeLabel) -> Coded {
    Coded {
        code: c.code.clone(),
        label: c.label.clone(),
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl CaseSkeleton {
    /// A case for an answered call from its journal. Journal times are offsets from the answer.
    pub fn from_journal(
        facts: &CallFacts,
        journal: &CallJournal,
        recordings: Vec<RecordingRef>,
        media_timed_out: bool,
    ) -> CaseSkeleton {
        let start = facts.answered_unix_ms.unwrap_or(facts.received_unix_ms);
        let at = |d: Duration| format_unix_ms(start + ms(d));
        let ivr_path = journal
            .ivr_path()
            .into_iter()
            .map(|p| PathStep {
                node: p.node.to_string(),
                at: at(p.at),
                key: p.key.map(|k| k.to_string()),
                method: p.method.map(|m| m.as_str().to_string()),
            })
            .collect();
        let ivr_ms = journal.ended_after.map_or(facts.ended_unix_ms - start, ms);
        let outcome = match (&journal.outcome, media_timed_out) {
            (Some(Outcome::Abandoned { .. }) | None, true) => "media_timeout".to_string(),
            (Some(o), _) => o.as_str().to_string(),
            (None, false) => "abandoned".to_string(),
        };
        let abandoned_at = match &journal.outcome {
            Some(Outcome::Abandoned { node }) => Some(node.to_string()),
            _ => None,
        };
        let transfer = journal.transfer.as_ref().map(|t| TransferRef {
            target: t.target.clone(),
            result: match t.result {
                None => "pending",
                Some(Ok(())) => "accepted",
                Some(Err(_)) => "failed",
            }
            .to_string(),
            code: match t.result {
                Some(Err(code)) => code,
                _ => None,
            },
            emergency: t.emergency.clone(),
        });
        let reached_agent = matches!(
            journal.outcome,
            Some(Outcome::Transferred { .. } | Outcome::EmergencyHandoff { .. })
        );
        CaseSkeleton {
            ivr_seconds: ivr_ms as f64 / 1000.0,
            time_to_agent_seconds: reached_agent
                .then(|| (start + ivr_ms - facts.received_unix_ms) as f64 / 1000.0),
            language: journal.language.clone(),
            request_type: journal.request_type.as_ref().map(coded),
            domain: journal.domain.iter().map(coded).collect(),
            region: journal.region.as_ref().map(coded),
            confidence: journal.confidence.as_str().to_string(),
            outcome,
            abandoned_at,
            ivr_path,
            retries: journal.retries,
            timeouts: journal.timeouts,
            fields: journal.fields.clone(),
            recordings,
            transfer,
            dialplan: Some(PlanRef {
                name: journal.plan.name.clone(),
                version: journal.plan.version.clone(),
                sha256: journal.plan.sha256.clone(),
            }),
            ..CaseSkeleton::base(facts)
        }
    }

    /// A case for a call ivrd had to refuse (overload): the missed call the back office must
    /// call back (DOMAIN.md, 国办函〔2025〕66号).
    pub fn rejected(facts: &CallFacts) -> CaseSkeleton {
        CaseSkeleton::base(facts)
    }

    fn base(facts: &CallFacts) -> CaseSkeleton {
        let number = crate::sip::uri::SipUri::parse(&facts.caller)
            .ok()
            .and_then(|u| u.number())
            .unwrap_or_else(|| facts.caller.clone());
        CaseSkeleton {
            schema_version: SCHEMA_VERSION,
            case_id: facts.case_id.clone(),
            call_id: facts.call_id.clone(),
            channel: "voice".into(),
            caller_masked: mask_number(&number),
            caller: number,
            called: facts.called.clone(),
            trunk: facts.trunk.clone(),
            received_at: format_unix_ms(facts.received_unix_ms),
            answered_at: facts.answered_unix_ms.map(format_unix_ms),
            ended_at: format_unix_ms(facts.ended_unix_ms),
            ivr_seconds: 0.0,
            time_to_agent_seconds: None,
            language: String::new(),
            request_type: None,
            domain: Vec::new(),
            region: None,
            confidence: "default".into(),
            outcome: "rejected".into(),
            abandoned_at: None,
            hangup: facts.hangup.clone(),
            ivr_path: Vec::new(),
            retries: 0,
            timeouts: 0,
            fields: BTreeMap::new(),
            recordings: Vec::new(),
            transfer: None,
            dialplan: None,
            ivrd: Provenance {
                version: env!("CARGO_PKG_VERSION").into(),
                host: facts.host.clone(),
            },
        }
    }

    /// The JSON bytes written to the outbox.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }
}

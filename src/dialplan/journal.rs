//! The call journal: every step the engine takes, in order, plus the classification, fields,
//! recordings, transfer and outcome it arrived at.
//!
//! Written only by the engine; read by the case builder (issue 5), which turns it into the case
//! skeleton (`ivr_path`, `request_type`, `domain`, `region`, `language`, `fields`, `transfer`,
//! `outcome`, `dialplan`). Times are offsets from the call's start so the journal needs no clock;
//! the driver adds them to the wall-clock `received_at`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::dialplan::engine::PromptId;
use crate::dialplan::model::NodeId;
use crate::dialplan::taxonomy::CodeLabel;
use crate::media::digit::{Digit, DtmfMethod};

/// Which plan a call ran on, as cases record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanStamp {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// How the call's classification was arrived at (DOMAIN.md "confidence").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confidence {
    /// The caller chose it with a key.
    CallerSelected,
    /// The plan set it (defaults, region from the called number).
    Default,
    /// The caller said nothing and was passed on by the silence rule.
    Timeout,
}

impl Confidence {
    /// The stable name used in cases.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::CallerSelected => "caller-selected",
            Confidence::Default => "default",
            Confidence::Timeout => "timeout",
        }
    }
}

/// How a call left the IVR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Blind transfer accepted by the target.
    Transferred { target: String },
    /// Transfer to 110/119/120/122 accepted.
    EmergencyHandoff { number: String, target: String },
    /// The caller left a voice message.
    MessageLeft,
    /// The plan ended the call normally.
    Completed,
    /// The caller hung up in the IVR; `node` says where.
    Abandoned { node: NodeId },
}

impl Outcome {
    /// The stable name used in cases and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Transferred { .. } => "transferred",
            Outcome::EmergencyHandoff { .. } => "emergency_handoff",
            Outcome::MessageLeft => "message_left",
            Outcome::Completed => "completed",
            Outcome::Abandoned { .. } => "abandoned",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Transferred { target } => write!(f, "transferred to {target}"),
            Outcome::EmergencyHandoff { number, target } => {
                write!(f, "emergency hand-off {number} to {target}")
            }
            Outcome::Abandoned { node } => write!(f, "abandoned at {node}"),
            o => f.write_str(o.as_str()),
        }
    }
}

/// What happened at one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// The call entered the node.
    Enter,
    /// Prompts started playing.
    Prompts(Vec<PromptId>),
    /// A key arrived.
    Key {
        digit: Digit,
        method: DtmfMethod,
    },
    /// A menu choice or collected value was accepted.
    Chose {
        input: String,
    },
    /// No (complete) input in time; `attempt` counts from 1.
    Timeout {
        attempt: u32,
    },
    /// Input that matched nothing.
    Invalid {
        input: String,
        attempt: u32,
    },
    /// A plan-wide key acted.
    GlobalKey {
        digit: Digit,
    },
    /// A field or classification axis was set.
    Set {
        name: String,
        value: String,
    },
    RecordingStarted,
    RecordingDone {
        duration: Duration,
    },
    TransferStarted {
        target: String,
    },
    TransferFailed {
        code: Option<u16>,
    },
    /// `max_ivr_seconds` ran out.
    MaxIvrTime,
    /// The caller hung up.
    CallerHungUp,
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepKind::Enter => f.write_str("enter"),
            StepKind::Prompts(p) => {
                let names: Vec<String> = p.iter().map(|p| p.to_string()).collect();
                write!(f, "play {}", names.join(" + "))
            }
            StepKind::Key { digit, method } => write!(f, "key {digit} ({})", method.as_str()),
            StepKind::Chose { input } => write!(f, "accepted {input}"),
            StepKind::Timeout { attempt } => write!(f, "no input (attempt {attempt})"),
            StepKind::Invalid { input, attempt } => {
                write!(f, "invalid input {input:?} (attempt {attempt})")
            }
            StepKind::GlobalKey { digit } => write!(f, "global key {digit}"),
            StepKind::Set { name, value } => write!(f, "set {name} = {value}"),
            StepKind::RecordingStarted => f.write_str("recording started"),
            StepKind::RecordingDone { duration } => {
                write!(f, "recording done ({} ms)", duration.as_millis())
            }
            StepKind::TransferStarted { target } => write!(f, "transfer to {target}"),
            StepKind::TransferFailed { code: Some(c) } => write!(f, "transfer failed ({c})"),
            StepKind::TransferFailed { code: None } => f.write_str("transfer failed"),
            StepKind::MaxIvrTime => f.write_str("max IVR time reached"),
            StepKind::CallerHungUp => f.write_str("caller hung up"),
        }
    }
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Since the call started.
    pub at: Duration,
    pub node: NodeId,
    pub kind: StepKind,
}

/// One `ivr_path` element of the case: `{node, at, key?, method?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathEntry {
    pub node: NodeId,
    pub at: Duration,
    pub key: Option<Digit>,
    pub method: Option<DtmfMethod>,
}

/// A recording the plan asked for; the driver adds path, bytes and sha256 to the case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingNote {
    pub field: String,
    pub node: NodeId,
    pub duration: Duration,
}

/// The transfer attempt of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferNote {
    pub target: String,
    pub emergency: Option<String>,
    /// `None` while pending; `Ok(())` accepted; `Err(code)` failed.
    pub result: Option<Result<(), Option<u16>>>,
}

/// Everything the engine learnt about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallJournal {
    pub plan: PlanStamp,
    pub caller: String,
    pub called: String,
    pub trunk: Option<String>,
    pub steps: Vec<Step>,
    pub language: String,
    pub request_type: Option<CodeLabel>,
    pub domain: Vec<CodeLabel>,
    pub region: Option<CodeLabel>,
    pub confidence: Confidence,
    /// Collected values (callback number) and custom fields set by the plan.
    pub fields: BTreeMap<String, String>,
    pub recordings: Vec<RecordingNote>,
    pub transfer: Option<TransferNote>,
    pub outcome: Option<Outcome>,
    /// Time from call start to the end of the IVR part (transfer accepted or hang-up).
    pub ended_after: Option<Duration>,
    pub retries: u32,
    pub timeouts: u32,
}

impl CallJournal {
    /// An empty journal for a call on `plan`.
    pub fn new(
        plan: PlanStamp,
        caller: &str,
        called: &str,
        trunk: Option<&str>,
        lang: &str,
    ) -> Self {
        CallJournal {
            plan,
            caller: caller.to_owned(),
            called: called.to_owned(),
            trunk: trunk.map(str::to_owned),
            steps: Vec::new(),
            language: lang.to_owned(),
            request_type: None,
            domain: Vec::new(),
            region: None,
            confidence: Confidence::Default,
            fields: BTreeMap::new(),
            recordings: Vec::new(),
            transfer: None,
            outcome: None,
            ended_after: None,
            retries: 0,
            timeouts: 0,
        }
    }

    /// The case's `ivr_path`: each node entered and each key pressed, in order.
    pub fn ivr_path(&self) -> Vec<PathEntry> {
        let entry = |s: &Step, key, method| PathEntry {
            node: s.node.clone(),
            at: s.at,
            key,
            method,
        };
        self.steps
            .iter()
            .filter_map(|s| match &s.kind {
                StepKind::Enter => Some(entry(s, None, None)),
                StepKind::Key { digit, method } => Some(entry(s, Some(*digit), Some(*method))),
                _ => None,
            })
            .collect()
    }

    /// Node ids in the order they were entered (repeats kept).
    pub fn nodes_visited(&self) -> Vec<&str> {
        let entered = self.steps.iter().filter(|s| s.kind == StepKind::Enter);
        entered.map(|s| s.node.as_str()).collect()
    }

    /// Every prompt played, in order.
    pub fn prompts_played(&self) -> Vec<&PromptId> {
        let mut out = Vec::new();
        for s in &self.steps {
            if let StepKind::Prompts(p) = &s.kind {
                out.extend(p.iter());
            }
        }
        out
    }
}

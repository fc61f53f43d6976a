//! The dialplan file format as serde types: what `dialplans/*.toml` may contain, nothing more.
//!
//! Sits at the very start of the dialplan data flow: TOML text → these raw types (`load.rs`
//! validates them into a [`crate::dialplan::LoadedPlan`]) → the per-call engine. Every struct
//! refuses unknown keys so a typo in a plan is an error, not a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// The name of a node in a plan (`[nodes.<id>]`); the only thing a target may name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    /// The id as written in the plan.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A prompt as a plan names it (`welcome`), before the call's language picks the file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(transparent)]
pub struct PromptRef(pub String);

impl PromptRef {
    /// The prompt name as written in the plan (the file stem under `prompts/<lang>/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PromptRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A whole plan file: the `[plan]` header and the `[nodes.*]` tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub plan: PlanHeader,
    pub nodes: BTreeMap<NodeId, NodeDef>,
}

/// Plan-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanHeader {
    /// Stable plan name recorded in every case.
    pub name: String,
    /// Version string chosen by ops, recorded in every case.
    pub version: String,
    /// First node of every call.
    pub entry: NodeId,
    /// Fixed UTC offset for time-of-day branches, `+08:00` when absent.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Every language the plan speaks; each prompt must exist in each of them.
    pub languages: Vec<String>,
    /// Language of a call until something sets another one.
    pub default_language: String,
    /// Language whose prompt is played when the call's language is not one of `languages`.
    pub fallback_language: Option<String>,
    /// The node that reaches a person; where silence and exhausted menus go by default.
    pub person: NodeId,
    /// Keys that work in every play/menu/record prompt unless a node overrides them.
    #[serde(default)]
    pub global_keys: BTreeMap<String, GlobalAction>,
    /// Seconds a menu waits for a key when the node does not say, 1–30.
    #[serde(default = "default_silence")]
    pub silence_seconds: u32,
    /// Most seconds a caller may spend in the IVR before `on_max_ivr`.
    #[serde(default = "default_max_ivr")]
    pub max_ivr_seconds: u32,
    /// Where a call goes when `max_ivr_seconds` is over; `person` when absent.
    pub on_max_ivr: Option<NodeId>,
    /// Taxonomy data file, relative to the plan file.
    pub taxonomy: Option<String>,
    /// Holiday calendar file, relative to the plan file.
    pub holidays: Option<String>,
}

fn default_timezone() -> String {
    "+08:00".to_owned()
}
fn default_silence() -> u32 {
    8
}
fn default_max_ivr() -> u32 {
    300
}
fn default_true() -> bool {
    true
}

/// What a global key does.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GlobalAction {
    /// `"*" = "repeat"`: play the current node's prompt again.
    Repeat,
    /// `"0" = { goto = "agent" }`: leave for that node.
    Goto(NodeId),
}

/// One node; `kind` picks the variant.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeDef {
    /// Prompts, then the next node.
    Play(PlayNode),
    /// A key choice.
    Menu(MenuNode),
    /// A number typed by the caller.
    Collect(CollectNode),
    /// The caller's voice message.
    Record(RecordNode),
    /// Classification and fields, no audio.
    Set(SetNode),
    /// A decision on time, calendar, fields or numbers, no audio.
    Branch(BranchNode),
    /// Blind transfer to a target written in the plan.
    Transfer(TransferNode),
    /// Goodbye and BYE.
    Hangup(HangupNode),
}

impl NodeDef {
    /// The `kind` string as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeDef::Play(_) => "play",
            NodeDef::Menu(_) => "menu",
            NodeDef::Collect(_) => "collect",
            NodeDef::Record(_) => "record",
            NodeDef::Set(_) => "set",
            NodeDef::Branch(_) => "branch",
            NodeDef::Transfer(_) => "transfer",
            NodeDef::Hangup(_) => "hangup",
        }
    }
}

/// `kind = "play"`: prompts, then `next`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayNode {
    pub prompts: Vec<PromptRef>,
    pub next: NodeId,
    /// A key stops the prompt (the key is kept for the next node).
    #[serde(default = "default_true")]
    pub barge_in: bool,
    /// `false` turns the plan's global keys off here.
    #[serde(default = "default_true")]
    pub global_keys: bool,
}

/// `kind = "menu"`: a prompt and a key map.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuNode {
    pub prompts: Vec<PromptRef>,
    pub keys: BTreeMap<String, KeyChoice>,
    /// Seconds to wait for the first key after the prompt; plan `silence_seconds` when absent.
    pub timeout: Option<u32>,
    /// Seconds between keys of a multi-key choice.
    #[serde(default = "default_inter_digit")]
    pub inter_digit_timeout: u32,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    pub invalid_prompt: Option<PromptRef>,
    pub timeout_prompt: Option<PromptRef>,
    /// Where to go when attempts run out; the plan's `person` when absent.
    pub on_exhausted: Option<NodeId>,
    #[serde(default = "default_true")]
    pub barge_in: bool,
    #[serde(default = "default_true")]
    pub global_keys: bool,
}

fn default_inter_digit() -> u32 {
    3
}
fn default_attempts() -> u32 {
    3
}

/// One menu choice: a target and what it tells us about the call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyChoice {
    pub goto: NodeId,
    #[serde(default)]
    pub set: SetFields,
}

/// Classification and fields a choice or a `set` node records.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetFields {
    /// Request type code from the taxonomy (`C`, `P`, …).
    pub request_type: Option<String>,
    /// Domain path from level 1 down, e.g. `["06", "0601"]`.
    pub domain: Option<Vec<String>>,
    /// Region code (GB/T 2260).
    pub region: Option<String>,
    /// One of the plan's languages.
    pub language: Option<String>,
    /// Free-form fields copied into the case.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

impl SetFields {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.request_type.is_none()
            && self.domain.is_none()
            && self.region.is_none()
            && self.language.is_none()
            && self.fields.is_empty()
    }
}

/// `kind = "collect"`: a number typed by the caller, e.g. a callback number.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectNode {
    pub prompts: Vec<PromptRef>,
    /// Case field the confirmed value is stored in.
    pub field: String,
    pub min_digits: u32,
    pub max_digits: u32,
    /// Key that ends the number early, usually `#`.
    pub terminator: Option<String>,
    /// Digit patterns, any of which must match: `0`–`9` literal, `X` any digit, `N` 2–9,
    /// `Z` 1–9, a trailing `.` one or more further digits. Empty: any digits.
    #[serde(default)]
    pub patterns: Vec<String>,
    pub timeout: Option<u32>,
    #[serde(default = "default_collect_inter_digit")]
    pub inter_digit_timeout: u32,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    pub invalid_prompt: Option<PromptRef>,
    pub timeout_prompt: Option<PromptRef>,
    pub confirm: Option<ConfirmStep>,
    pub next: NodeId,
    pub on_exhausted: Option<NodeId>,
}

fn default_collect_inter_digit() -> u32 {
    5
}

/// Read the number back and ask the caller to confirm it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmStep {
    /// Played before the digits ("you entered").
    pub before: Vec<PromptRef>,
    /// Played after the digits ("press 1 to confirm, 2 to re-enter").
    pub after: Vec<PromptRef>,
    #[serde(default = "default_confirm_key")]
    pub confirm_key: String,
    #[serde(default = "default_retry_key")]
    pub retry_key: String,
}

fn default_confirm_key() -> String {
    "1".to_owned()
}
fn default_retry_key() -> String {
    "2".to_owned()
}

/// `kind = "record"`: the caller's voice message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordNode {
    pub prompts: Vec<PromptRef>,
    /// Play the plan's `beep` prompt right before recording.
    #[serde(default = "default_true")]
    pub beep: bool,
    pub max_seconds: u32,
    #[serde(default)]
    pub min_seconds: u32,
    /// Stop after this many seconds of silence.
    pub silence_end_seconds: Option<u32>,
    /// Key that ends the message.
    pub end_key: Option<String>,
    /// Name of the recording in the case (`message`).
    pub field: String,
    /// Tries when the message is shorter than `min_seconds`.
    #[serde(default = "default_record_attempts")]
    pub max_attempts: u32,
    pub too_short_prompt: Option<PromptRef>,
    pub next: NodeId,
}

fn default_record_attempts() -> u32 {
    2
}

/// `kind = "set"`: classify the call, then `next`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetNode {
    #[serde(default)]
    pub set: SetFields,
    /// Region by called number (DNIS); checked before `region_by_trunk`.
    #[serde(default)]
    pub region_by_called: BTreeMap<String, String>,
    /// Region by the trunk name the call arrived on.
    #[serde(default)]
    pub region_by_trunk: BTreeMap<String, String>,
    pub next: NodeId,
}

/// `kind = "branch"`: the first matching rule wins, else `default`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchNode {
    pub rules: Vec<BranchRule>,
    pub default: NodeId,
}

/// One branch rule: every condition given must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchRule {
    pub goto: NodeId,
    /// ISO weekdays 1 (Monday) – 7 (Sunday).
    pub weekdays: Option<Vec<u8>>,
    /// Local time window `HH:MM-HH:MM` in the plan's timezone; may wrap midnight.
    pub time: Option<String>,
    /// Whether today is a day off in the holiday calendar: a listed holiday, or a Saturday or
    /// Sunday that is not listed as an adjusted workday (调休).
    pub day_off: Option<bool>,
    /// A field's name (`language`, `request_type`, `region` or a custom field) …
    pub field: Option<String>,
    /// … and the value it must have.
    pub equals: Option<String>,
    /// Called numbers (exact).
    pub called: Option<Vec<String>>,
    /// Trunk names.
    pub trunk: Option<Vec<String>>,
    /// Caller number prefixes.
    pub caller_prefix: Option<Vec<String>>,
}

/// `kind = "transfer"`: a blind transfer to a target written here, never from caller input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferNode {
    /// `sip:`, `sips:` or `tel:` URI; the default when `by_request_type` has no match.
    pub target: String,
    /// Queue per request type code.
    #[serde(default)]
    pub by_request_type: BTreeMap<String, String>,
    /// Marks an emergency hand-off: `110`, `119`, `120` or `122`.
    pub emergency: Option<String>,
    /// Prompt played before the transfer.
    #[serde(default)]
    pub prompts: Vec<PromptRef>,
    /// Where the call goes when the transfer fails.
    pub on_failure: NodeId,
}

/// `kind = "hangup"`: optional goodbye, then BYE.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HangupNode {
    #[serde(default)]
    pub prompts: Vec<PromptRef>,
    /// Outcome recorded in the case; derived from the call when absent.
    pub outcome: Option<HangupOutcome>,
}

/// Outcomes a plan may declare at a hang-up node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupOutcome {
    Completed,
    MessageLeft,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_in_a_node_is_refused() {
        let src = r#"
[plan]
name = "t"
version = "1"
entry = "a"
languages = ["zh-CN"]
default_language = "zh-CN"
person = "a"
[nodes.a]
kind = "hangup"
prompt = ["x"]
"#;
        let err = toml::from_str::<PlanFile>(src).unwrap_err();
        assert!(err.message().contains("unknown field `prompt`"), "{err}");
    }

    #[test]
    fn global_actions_parse_from_string_and_table() {
        let t: BTreeMap<String, GlobalAction> =
            toml::from_str("\"*\" = \"repeat\"\n\"0\" = { goto = \"agent\" }\n").unwrap();
        assert_eq!(t["*"], GlobalAction::Repeat);
        assert_eq!(t["0"], GlobalAction::Goto(NodeId("agent".into())));
    }
}

//! Dialplans: the TOML format, its validation, the per-call engine and the ops tools around them.
//!
//! Data flow: `dialplans/*.toml` → [`load`] (serde [`model`] + checks, spans → file:line) →
//! [`LoadedPlan`] shared by `Arc` → one [`Engine`] per call (events in, actions out, `now` passed
//! in) → [`CallJournal`] → the case skeleton. [`simulate`], [`testcases`] and [`graph`] run the
//! same code offline for `ivrd simulate/test/graph`. Nothing here touches sockets or the clock;
//! only [`load::load_file`] and [`testcases::run_file`] read files.

pub mod analysis;
pub mod calendar;
pub mod engine;
pub mod graph;
pub mod journal;
pub mod keypad;
mod keys;
pub mod load;
pub mod model;
mod recording;
mod route;
pub mod simulate;
pub mod span;
pub mod taxonomy;
pub mod testcases;
pub mod validate;

use std::fmt;
use std::path::PathBuf;

pub use engine::{Action, CallStart, Engine, Event, PromptId, TransferResult};
pub use journal::{CallJournal, Outcome};
pub use load::{
    CheckReport, DirPromptCatalog, LoadedPlan, PromptCatalog, check_file, load_file, load_str,
};
pub use model::{NodeId, PromptRef};

/// One thing wrong (or worth a warning) in a plan, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the caller named it.
    pub file: String,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    pub problem: Problem,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.problem),
            None => write!(f, "{}: {}", self.file, self.problem),
        }
    }
}

/// What is wrong; every variant names the node, key or value at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("node `{node}`: unknown target `{target}`")]
    UnknownTarget { node: String, target: String },
    #[error("node `{node}`: prompt `{prompt}` is missing for language `{language}`")]
    MissingPrompt {
        node: String,
        prompt: String,
        language: String,
    },
    #[error("node `{node}` is unreachable from the entry")]
    Unreachable { node: String },
    #[error("node `{node}` has no way out: it reaches no transfer or hang-up")]
    NoWayOut { node: String },
    #[error("cycle that cannot exit: {cycle}")]
    LoopWithoutExit { cycle: String },
    #[error("cycle with no prompt or input, the call would spin: {cycle}")]
    InstantLoop { cycle: String },
    #[error("a silent caller loops forever: {cycle}")]
    SilentLoop { cycle: String },
    #[error("node `{node}`: impossible key `{key}`: {reason}")]
    ImpossibleKey {
        node: String,
        key: String,
        reason: &'static str,
    },
    #[error("node `{node}`: duplicate key `{key}`")]
    DuplicateKey { node: String, key: String },
    #[error("node `{node}`: key `{long}` can never be pressed: `{short}` matches first")]
    ShadowedKey {
        node: String,
        short: String,
        long: String,
    },
    #[error("{node}: `{setting}` = {value} is out of range {min}–{max}")]
    OutOfRange {
        node: String,
        setting: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("node `{node}`: unknown {axis} `{code}` (not in the taxonomy)")]
    UnknownCode {
        node: String,
        axis: &'static str,
        code: String,
    },
    #[error("node `{node}` sets `{axis}` but the plan names no taxonomy file")]
    NoTaxonomy { node: String, axis: &'static str },
    #[error("{node}: language `{language}` is not one of the plan's languages")]
    UnknownLanguage { node: String, language: String },
    #[error("node `{node}`: bad transfer target `{target}` (want sip:, sips: or tel:)")]
    BadUri { node: String, target: String },
    #[error("node `{node}`: `{number}` is not an emergency number (110, 119, 120, 122)")]
    BadEmergency { node: String, number: String },
    #[error("node `{node}`: emergency target `{target}` does not dial {number}")]
    EmergencyMismatch {
        node: String,
        target: String,
        number: String,
    },
    #[error("node `{node}`: bad digit pattern `{pattern}`")]
    BadPattern { node: String, pattern: String },
    #[error("node `{node}`: bad time window `{value}` (want HH:MM-HH:MM)")]
    BadTimeWindow { node: String, value: String },
    #[error("node `{node}`: bad weekday {value} (want 1 = Monday … 7 = Sunday)")]
    BadWeekday { node: String, value: u8 },
    #[error("node `{node}`: rule {rule} has no condition")]
    EmptyRule { node: String, rule: usize },
    #[error("node `{node}`: rule {rule} needs both `field` and `equals`")]
    FieldWithoutValue { node: String, rule: usize },
    #[error("node `{node}`: rule {rule} branches on `day_off` but the plan names no holidays file")]
    NoHolidays { node: String, rule: usize },
    #[error("node `{node}` has no prompt")]
    NoPrompt { node: String },
    #[error("bad timezone `{value}` (want a fixed offset like +08:00)")]
    BadTimezone { value: String },
    #[error("the plan declares no languages")]
    NoLanguages,
    #[error("{file}: `{value}` is not a date (want YYYY-MM-DD)")]
    BadDate { file: String, value: String },
    #[error("a path goes through {depth} menus (more than 3): {path}")]
    DeepMenus { depth: usize, path: String },
    #[error("a silent caller can end at hang-up `{node}` without reaching a person")]
    SilentHangup { node: String },
    #[error("a silent caller needs up to {seconds} s, more than max_ivr_seconds = {limit}")]
    SilentOverLimit { seconds: u64, limit: u32 },
}

/// Why a plan could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DialplanError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A taxonomy or holiday file the plan names cannot be read.
    #[error("{plan}: cannot read {path}: {source}")]
    DataFile {
        plan: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax or a key/value that does not fit the format (serde's message).
    #[error("{file}:{}: {message}", line.map_or_else(|| "?".to_owned(), |l| l.to_string()))]
    Syntax {
        file: String,
        line: Option<usize>,
        message: String,
    },
    #[error("{} problem(s):\n{}", problems.len(), join_lines(problems))]
    Invalid { problems: Vec<Diagnostic> },
}

fn join_lines(d: &[Diagnostic]) -> String {
    d.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

impl DialplanError {
    /// Builds a syntax error from a toml error, with the line its span points at.
    pub fn from_toml(file: &str, src: &str, err: &toml::de::Error) -> DialplanError {
        DialplanError::Syntax {
            file: file.to_owned(),
            line: err.span().map(|s| span::line_at(src, s.start)),
            message: err.message().trim().to_owned(),
        }
    }

    /// The error on one line, problems separated by `; `, for the daemon's log: a log entry
    /// that spans lines loses its reason to every line-based collector (the multi-line
    /// [`fmt::Display`] form stays for `ivrd check`).
    pub fn one_line(&self) -> String {
        match self {
            DialplanError::Invalid { problems } => problems
                .iter()
                .map(|d| d.to_string().replace('\n', " "))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string().replace('\n', " "),
        }
    }
}

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod load_tests;
#[cfg(test)]
pub(crate) mod testutil;

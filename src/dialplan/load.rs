//! Parse and validate a plan into a [`LoadedPlan`] that engines share by `Arc`.
//!
//! Flow: text → serde ([`PlanFile`]) → referenced taxonomy and holiday files → per-node checks
//! (`validate.rs`) → graph checks (`analysis.rs`) → every finding gets `file:line` from the spans
//! (`span.rs`). A plan with any error is refused as a whole; warnings ride along in the plan.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::dialplan::analysis::{self, Analysis};
use crate::dialplan::calendar::{HolidayFile, Holidays, parse_utc_offset};
use crate::dialplan::model::{NodeDef, NodeId, PlanFile, PlanHeader};
use crate::dialplan::span::SpanIndex;
use crate::dialplan::taxonomy::Taxonomy;
use crate::dialplan::validate::{self, Finding};
use crate::dialplan::{Diagnostic, DialplanError, Problem};

/// Which prompts exist, per language, and how long they play.
pub trait PromptCatalog {
    /// Play time of `prompts/<language>/<prompt>`, `None` when it does not exist.
    fn duration(&self, language: &str, prompt: &str) -> Option<Duration>;
}

/// A catalogue held in memory, for tests and tools: `(language, prompt) → duration`.
impl PromptCatalog for BTreeMap<(String, String), Duration> {
    fn duration(&self, language: &str, prompt: &str) -> Option<Duration> {
        self.get(&(language.to_owned(), prompt.to_owned())).copied()
    }
}

/// Prompts as WAV files under `<dir>/<language>/<prompt>.wav`; durations read from the headers.
pub struct DirPromptCatalog {
    pub dir: PathBuf,
}

impl PromptCatalog for DirPromptCatalog {
    fn duration(&self, language: &str, prompt: &str) -> Option<Duration> {
        let path = self.dir.join(language).join(format!("{prompt}.wav"));
        let r = hound::WavReader::open(path).ok()?;
        let rate = r.spec().sample_rate.max(1);
        Some(Duration::from_millis(
            u64::from(r.duration()) * 1000 / u64::from(rate),
        ))
    }
}

/// A validated plan, immutable, shared by every call that started on it.
#[derive(Debug)]
pub struct LoadedPlan {
    /// The file as the caller named it.
    pub file: String,
    pub header: PlanHeader,
    pub nodes: BTreeMap<NodeId, NodeDef>,
    pub taxonomy: Option<Taxonomy>,
    pub holidays: Option<Holidays>,
    /// Minutes east of UTC for time-of-day branches.
    pub utc_offset_minutes: i32,
    /// Hex SHA-256 over the plan file, then the taxonomy file, then the holiday file.
    pub sha256: String,
    /// Non-fatal findings (deep menus, silent hang-ups).
    pub warnings: Vec<Diagnostic>,
    /// Longest time a silent caller needs before a transfer to a person starts.
    pub silent_worst_case: Option<Duration>,
    /// Most menus on one path from the entry.
    pub max_menu_depth: usize,
}

impl LoadedPlan {
    /// The plan's name as recorded in cases.
    pub fn name(&self) -> &str {
        &self.header.name
    }

    /// The plan's version as recorded in cases.
    pub fn version(&self) -> &str {
        &self.header.version
    }

    /// Rebuilds the raw file view (for tools that work on [`PlanFile`]).
    pub fn as_plan_file(&self) -> PlanFile {
        PlanFile {
            plan: self.header.clone(),
            nodes: self.nodes.clone(),
        }
    }
}

/// How `load_str` reaches the files a plan refers to and the prompts.
pub struct LoadContext<'a> {
    /// Reads a referenced data file (path already joined to the plan's directory).
    pub read: &'a dyn Fn(&Path) -> std::io::Result<String>,
    pub prompts: &'a dyn PromptCatalog,
}

/// Parses and validates plan text. `file` names the plan in messages and locates data files.
pub fn load_str(file: &Path, src: &str, cx: &LoadContext<'_>) -> Result<LoadedPlan, DialplanError> {
    let name = file.display().to_string();
    let plan: PlanFile =
        toml::from_str(src).map_err(|e| DialplanError::from_toml(&name, src, &e))?;
    let mut hasher = Sha256::new();
    hasher.update(src.as_bytes());
    let base = file.parent().unwrap_or(Path::new(""));
    let taxonomy = match &plan.plan.taxonomy {
        Some(rel) => Some(data_file::<Taxonomy>(
            &name,
            &base.join(rel),
            cx,
            &mut hasher,
        )?),
        None => None,
    };
    let holidays = match &plan.plan.holidays {
        Some(rel) => Some(load_holidays(&name, &base.join(rel), cx, &mut hasher)?),
        None => None,
    };
    let vcx = validate::Context {
        plan: &plan,
        taxonomy: taxonomy.as_ref(),
        has_holidays: holidays.is_some(),
        prompts: cx.prompts,
    };
    let mut errors = validate::check(&vcx);
    let mut analysis = Analysis::default();
    if errors.is_empty() {
        analysis = analysis::analyse(&plan, cx.prompts);
        errors.append(&mut analysis.errors);
    }
    let spans = SpanIndex::new(src);
    let locate = |(path, problem): Finding| Diagnostic {
        file: name.clone(),
        line: spans.line_of(&path),
        problem,
    };
    if !errors.is_empty() {
        let problems = errors.into_iter().map(locate).collect();
        return Err(DialplanError::Invalid { problems });
    }
    let warnings = analysis.warnings.into_iter().map(locate).collect();
    Ok(LoadedPlan {
        file: name.clone(),
        utc_offset_minutes: parse_utc_offset(&plan.plan.timezone).unwrap_or(480),
        header: plan.plan,
        nodes: plan.nodes,
        taxonomy,
        holidays,
        sha256: hex(&hasher.finalize()),
        warnings,
        silent_worst_case: analysis.silent_worst_case,
        max_menu_depth: analysis.max_menu_depth,
    })
}

fn load_holidays(
    plan: &str,
    path: &Path,
    cx: &LoadContext<'_>,
    hasher: &mut Sha256,
) -> Result<Holidays, DialplanError> {
    let raw = data_file::<HolidayFile>(plan, path, cx, hasher)?;
    Holidays::from_file(&raw).map_err(|value| {
        let file = path.display().to_string();
        DialplanError::Invalid {
            problems: vec![Diagnostic {
                file: file.clone(),
                line: None,
                problem: Problem::BadDate { file, value },
            }],
        }
    })
}

fn data_file<T: serde::de::DeserializeOwned>(
    plan: &str,
    path: &Path,
    cx: &LoadContext<'_>,
    hasher: &mut Sha256,
) -> Result<T, DialplanError> {
    let src = (cx.read)(path).map_err(|source| DialplanError::DataFile {
        plan: plan.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    hasher.update(src.as_bytes());
    toml::from_str(&src)
        .map_err(|e| DialplanError::from_toml(&path.display().to_string(), &src, &e))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads a plan file from disk with prompts from `prompts_dir`.
pub fn load_file(path: &Path, prompts_dir: &Path) -> Result<LoadedPlan, DialplanError> {
    let src = std::fs::read_to_string(path).map_err(|source| DialplanError::Io {
        path: path.to_owned(),
        source,
    })?;
    let catalog = DirPromptCatalog {
        dir: prompts_dir.to_owned(),
    };
    let read = |p: &Path| std::fs::read_to_string(p);
    load_str(
        path,
        &src,
        &LoadContext {
            read: &read,
            prompts: &catalog,
        },
    )
}

/// What `ivrd check` prints for a valid plan.
#[derive(Debug)]
pub struct CheckReport {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub nodes: usize,
    pub warnings: Vec<Diagnostic>,
    pub silent_worst_case: Option<Duration>,
    pub max_menu_depth: usize,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan {} version {} ok ({} nodes)",
            self.name, self.version, self.nodes
        )?;
        writeln!(f, "sha256 {}", self.sha256)?;
        writeln!(f, "deepest path: {} menus", self.max_menu_depth)?;
        match self.silent_worst_case {
            Some(d) => writeln!(f, "silent caller reaches a person within {} s", d.as_secs())?,
            None => writeln!(f, "silent caller never reaches a person")?,
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

impl CheckReport {
    /// Summarises a loaded plan.
    pub fn of(plan: &LoadedPlan) -> CheckReport {
        CheckReport {
            name: plan.header.name.clone(),
            version: plan.header.version.clone(),
            sha256: plan.sha256.clone(),
            nodes: plan.nodes.len(),
            warnings: plan.warnings.clone(),
            silent_worst_case: plan.silent_worst_case,
            max_menu_depth: plan.max_menu_depth,
        }
    }
}

/// `ivrd check FILE`: loads the plan (prompts from `prompts_dir`) and summarises it.
pub fn check_file(path: &Path, prompts_dir: &Path) -> Result<CheckReport, DialplanError> {
    load_file(path, prompts_dir).map(|p| CheckReport::of(&p))
}

//! `ivrd test`: scripted calls kept beside a plan (`<plan>.tests.toml`) with the path, fields
//! and outcome each must produce.
//!
//! Each case runs through [`crate::dialplan::simulate::simulate`], i.e. the real engine; a case
//! only names what it cares about, and every mismatch is reported, not just the first.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::dialplan::calendar::{Date, WallClock};
use crate::dialplan::journal::CallJournal;
use crate::dialplan::load::{LoadedPlan, PromptCatalog};
use crate::dialplan::simulate::{SimOptions, parse_script, simulate};
use crate::dialplan::{DialplanError, load};

/// A tests file: `[[case]]` tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    #[serde(rename = "case")]
    pub cases: Vec<TestCase>,
}

/// One scripted call and what it must produce.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// Caller script, see [`parse_script`]; empty means a silent caller.
    #[serde(default)]
    pub keys: String,
    pub language: Option<String>,
    pub caller: Option<String>,
    pub called: Option<String>,
    pub trunk: Option<String>,
    /// Local start time `YYYY-MM-DD HH:MM`; a Wednesday 10:00 when absent.
    pub at: Option<String>,
    /// SIP code the transfer fails with; accepted when absent.
    pub transfer_fails: Option<u16>,
    /// Seconds the caller speaks into a recording.
    pub speak_seconds: Option<u64>,
    /// Exact list of nodes entered.
    pub path: Option<Vec<String>>,
    /// Nodes that must be entered, in this order, others allowed between.
    pub visits: Option<Vec<String>>,
    pub outcome: Option<String>,
    pub target: Option<String>,
    pub request_type: Option<String>,
    pub domain: Option<Vec<String>>,
    pub region: Option<String>,
    pub final_language: Option<String>,
    #[serde(default)]
    pub fields: std::collections::BTreeMap<String, String>,
    /// The call must leave the IVR within this many seconds.
    pub max_seconds: Option<u64>,
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub failures: Vec<String>,
}

/// The result of a tests file.
#[derive(Debug, Clone)]
pub struct TestReport {
    pub results: Vec<CaseResult>,
}

impl TestReport {
    /// True when every case passed.
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.failures.is_empty())
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            if r.failures.is_empty() {
                writeln!(f, "ok    {}", r.name)?;
            } else {
                writeln!(f, "FAIL  {}", r.name)?;
                for m in &r.failures {
                    writeln!(f, "        {m}")?;
                }
            }
        }
        let failed = self
            .results
            .iter()
            .filter(|r| !r.failures.is_empty())
            .count();
        writeln!(f, "{} cases, {} failed", self.results.len(), failed)
    }
}

/// Why a tests file could not run.
#[derive(Debug, thiserror::Error)]
pub enum TestFileError {
    #[error(transparent)]
    Plan(#[from] DialplanError),
    #[error("case `{case}`: bad {what} `{value}`")]
    BadCase {
        case: String,
        what: &'static str,
        value: String,
    },
}

fn wall_clock(case: &TestCase) -> Result<WallClock, TestFileError> {
    let bad = || TestFileError::BadCase {
        case: case.name.clone(),
        what: "start time",
        value: case.at.clone().unwrap_or_default(),
    };
    let Some(at) = &case.at else {
        let date = Date {
            year: 2026,
            month: 11,
            day: 25,
        };
        return Ok(WallClock {
            date,
            weekday: 3,
            minute_of_day: 600,
        });
    };
    let (d, t) = at.split_once(' ').ok_or_else(bad)?;
    let date = Date::parse(d).ok_or_else(bad)?;
    let (h, m) = t.split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    // Weekday from the date via the Unix-time conversion (noon avoids any offset edge).
    let days = days_from_civil(date);
    let weekday = WallClock::from_unix(days * 86_400 + 43_200, 0).weekday;
    Ok(WallClock {
        date,
        weekday,
        minute_of_day: h * 60 + m,
    })
}

fn days_from_civil(d: Date) -> i64 {
    let y = i64::from(d.year) - i64::from(d.month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(d.month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d.day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Runs every case of a tests file against a loaded plan.
pub fn run_cases(
    plan: &Arc<LoadedPlan>,
    file: &TestFile,
    prompts: &dyn PromptCatalog,
) -> Result<TestReport, TestFileError> {
    let mut results = Vec::new();
    for case in &file.cases {
        let script = parse_script(&case.keys).map_err(|value| TestFileError::BadCase {
            case: case.name.clone(),
            what: "key",
            value,
        })?;
        let mut opts = SimOptions::new(script, wall_clock(case)?);
        opts.language = case.language.clone();
        opts.trunk = case.trunk.clone();
        opts.transfer_fails = case.transfer_fails;
        if let Some(c) = &case.caller {
            opts.caller = c.clone();
        }
        if let Some(c) = &case.called {
            opts.called = c.clone();
        }
        if let Some(s) = case.speak_seconds {
            opts.speak = Duration::from_secs(s);
        }
        let report = simulate(Arc::clone(plan), &opts, prompts, &|_| None);
        results.push(CaseResult {
            name: case.name.clone(),
            failures: compare(case, &report),
        });
    }
    Ok(TestReport { results })
}

fn compare(case: &TestCase, r: &crate::dialplan::simulate::SimulationReport) -> Vec<String> {
    let j = &r.journal;
    let mut fails = Vec::new();
    let visited: Vec<String> = j.nodes_visited().into_iter().map(str::to_owned).collect();
    let path = case.path.as_ref().map(|p| p.join(" → "));
    expect(&mut fails, "path", path, Some(visited.join(" → ")));
    classification(case, j, &mut fails);
    for (k, v) in &case.fields {
        let what = format!("field {k}");
        expect(&mut fails, &what, Some(v.clone()), j.fields.get(k).cloned());
    }
    if let Some(v) = &case.visits {
        let mut it = visited.iter();
        if !v.iter().all(|want| it.any(|n| n == want)) {
            fails.push(format!(
                "visits: expected {v:?} in order, path was {visited:?}"
            ));
        }
    }
    if let Some(max) = case.max_seconds {
        let took = j.ended_after.unwrap_or(r.elapsed).as_secs();
        if took > max {
            fails.push(format!("took {took} s, more than {max} s"));
        }
    }
    fails
}

/// Records a mismatch when the case states an expectation.
fn expect(fails: &mut Vec<String>, what: &str, want: Option<String>, got: Option<String>) {
    if want.is_some() && want != got {
        fails.push(format!("{what}: expected {want:?}, got {got:?}"));
    }
}

fn classification(case: &TestCase, j: &CallJournal, fails: &mut Vec<String>) {
    let outcome = j.outcome.as_ref().map(|o| o.as_str().to_owned());
    expect(fails, "outcome", case.outcome.clone(), outcome);
    let target = j.transfer.as_ref().map(|t| t.target.clone());
    expect(fails, "target", case.target.clone(), target);
    let rt = j.request_type.as_ref().map(|c| c.code.clone());
    expect(fails, "request_type", case.request_type.clone(), rt);
    let dom: Vec<String> = j.domain.iter().map(|c| c.code.clone()).collect();
    let want = case.domain.as_ref().map(|d| d.join("/"));
    expect(fails, "domain", want, Some(dom.join("/")));
    let region = j.region.as_ref().map(|c| c.code.clone());
    expect(fails, "region", case.region.clone(), region);
    let lang = Some(j.language.clone());
    expect(fails, "language", case.final_language.clone(), lang);
}

/// `ivrd test FILE`: loads `FILE` and runs the cases in the tests file beside it
/// (`12345.toml` → `12345.tests.toml`).
pub fn run_file(plan_path: &Path, prompts_dir: &Path) -> Result<TestReport, TestFileError> {
    let plan = Arc::new(load::load_file(plan_path, prompts_dir)?);
    let tests_path = plan_path.with_extension("tests.toml");
    let src = std::fs::read_to_string(&tests_path).map_err(|source| DialplanError::Io {
        path: tests_path.clone(),
        source,
    })?;
    let name = tests_path.display().to_string();
    let file: TestFile =
        toml::from_str(&src).map_err(|e| DialplanError::from_toml(&name, &src, &e))?;
    let catalog = load::DirPromptCatalog {
        dir: prompts_dir.to_owned(),
    };
    run_cases(&plan, &file, &catalog)
}

//! `ivrd simulate`: runs the real engine offline against a scripted caller and a virtual clock.
//!
//! Plays the driver's part: prompts take their catalogue length, keys arrive when the script says,
//! recordings and transfers end as the options say. The same runner backs `ivrd test`
//! (`testcases.rs`), so a shipped test checks exactly what a live call would do.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dialplan::calendar::WallClock;
use crate::dialplan::engine::{Action, CallStart, Engine, Event, PromptId, TransferResult};
use crate::dialplan::journal::{CallJournal, StepKind};
use crate::dialplan::load::{LoadedPlan, PromptCatalog};
use crate::media::digit::{Digit, DigitEvent, DtmfMethod};

/// One step of a caller script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptStep {
    /// Press a key 1 s after the current prompt ends (or 1 s after recording starts).
    Key(Digit),
    /// Press a key 0.5 s into the current prompt (barge-in / type-ahead).
    EarlyKey(Digit),
    /// Say nothing for this long before the next step.
    Wait(Duration),
    /// Hang up at this point.
    HangUp,
}

/// Parses a script like `"1,#,w5,!2,hangup"`: keys, `!k` early key, `wN` wait N s, `hangup`.
/// A token of several keys (`"13"`) presses them one after the other.
pub fn parse_script(s: &str) -> Result<Vec<ScriptStep>, String> {
    let mut out = Vec::new();
    for tok in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if tok == "hangup" {
            out.push(ScriptStep::HangUp);
        } else if let Some(n) = tok.strip_prefix('w') {
            let secs: u64 = n.parse().map_err(|_| tok.to_owned())?;
            out.push(ScriptStep::Wait(Duration::from_secs(secs)));
        } else {
            let (early, keys) = match tok.strip_prefix('!') {
                Some(k) => (true, k),
                None => (false, tok),
            };
            for c in keys.chars() {
                let d = Digit::from_char(c).ok_or_else(|| tok.to_owned())?;
                out.push(if early {
                    ScriptStep::EarlyKey(d)
                } else {
                    ScriptStep::Key(d)
                });
            }
        }
    }
    Ok(out)
}

/// How the simulated world behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub script: Vec<ScriptStep>,
    pub language: Option<String>,
    pub caller: String,
    pub called: String,
    pub trunk: Option<String>,
    pub wall: WallClock,
    /// How long the caller speaks into a recording before going quiet.
    pub speak: Duration,
    /// `None`: transfers are accepted; `Some(code)`: they fail with that SIP code.
    pub transfer_fails: Option<u16>,
    /// Prompt length when the catalogue does not know it.
    pub default_prompt: Duration,
}

impl SimOptions {
    /// A caller from a mobile number to 12345 on a weekday morning, with this script.
    pub fn new(script: Vec<ScriptStep>, wall: WallClock) -> SimOptions {
        SimOptions {
            script,
            language: None,
            caller: "13800000000".into(),
            called: "12345".into(),
            trunk: None,
            wall,
            speak: Duration::from_secs(10),
            transfer_fails: None,
            default_prompt: Duration::from_secs(2),
        }
    }
}

/// Everything a simulated call did.
#[derive(Debug, Clone)]
pub struct SimulationReport {
    pub journal: CallJournal,
    /// Actions with the virtual time they were taken at.
    pub actions: Vec<(Duration, Action)>,
    pub elapsed: Duration,
    /// Text of each prompt played, where the catalogue had it.
    pub texts: BTreeMap<String, String>,
}

/// Upper bound on simulated events, far above any valid plan's needs.
const MAX_EVENTS: usize = 10_000;

struct World {
    play: Option<(u64, Instant, Instant)>,
    rec: Option<(u64, Instant, Instant)>,
    transfer_at: Option<Instant>,
    idle_since: Instant,
}

/// The simulated driver: engine, virtual clock, caller script and the world's pending events.
struct Sim<'a> {
    e: Engine,
    w: World,
    now: Instant,
    t0: Instant,
    script: std::iter::Peekable<std::slice::Iter<'a, ScriptStep>>,
    not_before: Instant,
    opts: &'a SimOptions,
    prompts: &'a dyn PromptCatalog,
    text: &'a dyn Fn(&PromptId) -> Option<String>,
    report: SimulationReport,
}

/// Runs one call through the plan; `text` gives a prompt's text for the report.
pub fn simulate(
    plan: Arc<LoadedPlan>,
    opts: &SimOptions,
    prompts: &dyn PromptCatalog,
    text: &dyn Fn(&PromptId) -> Option<String>,
) -> SimulationReport {
    let t0 = Instant::now();
    let start = CallStart {
        now: t0,
        caller: opts.caller.clone(),
        called: opts.called.clone(),
        trunk: opts.trunk.clone(),
        wall: opts.wall,
        case_id: Some("SIM-0001".into()),
        language: opts.language.clone(),
    };
    let e = Engine::new(plan, start);
    let report = SimulationReport {
        journal: e.journal().clone(),
        actions: Vec::new(),
        elapsed: Duration::ZERO,
        texts: BTreeMap::new(),
    };
    let w = World {
        play: None,
        rec: None,
        transfer_at: None,
        idle_since: t0,
    };
    let script = opts.script.iter().peekable();
    let mut sim = Sim {
        e,
        w,
        now: t0,
        t0,
        script,
        not_before: t0,
        opts,
        prompts,
        text,
        report,
    };
    for _ in 0..MAX_EVENTS {
        sim.drain();
        if sim.e.is_done() || !sim.step() {
            break;
        }
    }
    sim.drain();
    sim.report.journal = sim.e.journal().clone();
    sim.report.elapsed = sim.now - t0;
    sim.report
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl Sim<'_> {
    /// When the caller's next scripted step happens, if it can happen yet.
    fn next_key_at(&mut self) -> Option<Instant> {
        while let Some(ScriptStep::Wait(d)) = self.script.peek() {
            self.not_before = self.now.max(self.w.idle_since) + *d;
            self.script.next();
        }
        let at = match self.script.peek() {
            Some(ScriptStep::EarlyKey(_)) => self.w.play.map_or(self.now, |p| p.1) + ms(500),
            Some(ScriptStep::Key(_) | ScriptStep::HangUp) if self.w.play.is_none() => {
                self.w.idle_since + ms(1000)
            }
            _ => return None,
        };
        Some(at.max(self.not_before).max(self.now))
    }

    /// Advances to the next event and feeds it; false when nothing is left to happen.
    fn step(&mut self) -> bool {
        let key_at = self.next_key_at();
        let w = &self.w;
        let candidates = [
            w.play.map(|p| p.2),
            w.rec.map(|r| r.2),
            w.transfer_at,
            self.e.poll_timeout(),
            key_at,
        ];
        let Some(next) = candidates.iter().flatten().min().copied() else {
            return false;
        };
        self.now = next;
        let now = next;
        if key_at == Some(now) {
            self.caller_step();
        } else if let Some((id, _, end)) = self.w.play.filter(|p| p.2 == now) {
            self.w.play = None;
            self.w.idle_since = end;
            self.e.handle(now, Event::PromptFinished { id });
        } else if let Some((id, started, _)) = self.w.rec.filter(|r| r.2 == now) {
            self.w.rec = None;
            self.w.idle_since = now;
            self.e.handle(
                now,
                Event::RecordingDone {
                    id,
                    duration: now - started,
                },
            );
        } else if self.w.transfer_at == Some(now) {
            self.w.transfer_at = None;
            let r = match self.opts.transfer_fails {
                None => TransferResult::Accepted,
                Some(code) => TransferResult::Failed { code: Some(code) },
            };
            self.e.handle(now, Event::Transfer(r));
        } else {
            self.e.handle(now, Event::Timeout);
        }
        true
    }

    fn caller_step(&mut self) {
        let now = self.now;
        match self.script.next() {
            Some(ScriptStep::Key(d) | ScriptStep::EarlyKey(d)) => {
                let ev = DigitEvent {
                    digit: *d,
                    method: DtmfMethod::Rfc4733,
                    at: now,
                };
                self.e.handle(now, Event::Digit(ev));
            }
            Some(ScriptStep::HangUp) => {
                self.e.handle(now, Event::HangUp);
                // A recording the caller ends by hanging up is still finalised by the driver.
                if let Some((id, started, _)) = self.w.rec.take() {
                    self.e.handle(
                        now,
                        Event::RecordingDone {
                            id,
                            duration: now - started,
                        },
                    );
                }
            }
            _ => {}
        }
    }

    /// Takes the engine's actions and updates the simulated world.
    fn drain(&mut self) {
        let now = self.now;
        while let Some(a) = self.e.poll_action() {
            match &a {
                Action::Play { id, prompts, .. } => {
                    let len: Duration = prompts.iter().map(|p| self.prompt_len(p)).sum();
                    self.w.play = Some((*id, now, now + len));
                    for p in prompts {
                        if let Some(t) = (self.text)(p) {
                            self.report.texts.insert(p.to_string(), t);
                        }
                    }
                }
                Action::StopPlayback { .. } => {
                    self.w.play = None;
                    self.w.idle_since = now;
                }
                Action::StartRecording {
                    id,
                    max,
                    silence_end,
                    ..
                } => {
                    let talk = self.opts.speak.min(*max);
                    let end = now + (talk + silence_end.unwrap_or_default()).min(*max);
                    self.w.rec = Some((*id, now, end));
                    self.w.idle_since = now;
                }
                Action::StopRecording { .. } => {
                    if let Some(r) = self.w.rec.as_mut() {
                        r.2 = now;
                    }
                }
                Action::Transfer { .. } => self.w.transfer_at = Some(now + ms(1500)),
                Action::HangUp { .. } => {}
            }
            self.report.actions.push((now - self.t0, a));
        }
    }

    fn prompt_len(&self, p: &PromptId) -> Duration {
        let len = self.prompts.duration(&p.language, p.name.as_str());
        len.unwrap_or(self.opts.default_prompt)
    }
}

impl fmt::Display for SimulationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let j = &self.journal;
        writeln!(f, "plan {} version {}", j.plan.name, j.plan.version)?;
        writeln!(f, "path: {}", j.nodes_visited().join(" → "))?;
        for s in &j.steps {
            let at = s.at.as_secs_f32();
            match &s.kind {
                StepKind::Enter => writeln!(f, "{at:7.1}s  enter {}", s.node)?,
                StepKind::Prompts(ps) => {
                    for p in ps {
                        let t = self.texts.get(&p.to_string()).map_or("", String::as_str);
                        writeln!(f, "{at:7.1}s    play {p}  {t}")?;
                    }
                }
                StepKind::Key { digit, method } => {
                    writeln!(f, "{at:7.1}s    key {digit} ({})", method.as_str())?
                }
                other => writeln!(f, "{at:7.1}s    {other}")?,
            }
        }
        writeln!(f, "language: {}", j.language)?;
        let rt = j
            .request_type
            .as_ref()
            .map(|c| format!("{} {}", c.code, c.label));
        writeln!(f, "request type: {}", rt.unwrap_or_else(|| "-".into()))?;
        let dom: Vec<String> = j
            .domain
            .iter()
            .map(|c| format!("{} {}", c.code, c.label))
            .collect();
        writeln!(
            f,
            "domain: {}",
            if dom.is_empty() {
                "-".into()
            } else {
                dom.join(" / ")
            }
        )?;
        let region = j.region.as_ref().map(|c| format!("{} {}", c.code, c.label));
        writeln!(f, "region: {}", region.unwrap_or_else(|| "-".into()))?;
        writeln!(f, "confidence: {}", j.confidence.as_str())?;
        for (k, v) in &j.fields {
            writeln!(f, "field {k} = {v}")?;
        }
        for r in &j.recordings {
            writeln!(f, "recording {} ({} ms)", r.field, r.duration.as_millis())?;
        }
        match &j.outcome {
            Some(o) => writeln!(f, "outcome: {o}")?,
            None => writeln!(f, "outcome: (call still running)")?,
        }
        writeln!(f, "time in IVR: {:.1} s", self.elapsed.as_secs_f32())
    }
}

/// Why `ivrd simulate` could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Plan(#[from] crate::dialplan::DialplanError),
    #[error("bad key script token `{token}` (keys 0-9 * # A-D, `!k`, `wN`, `hangup`)")]
    BadScript { token: String },
}

/// `ivrd simulate FILE --keys "1,#,2" [--language en] [--silence]`: loads the plan, runs one
/// call, and reports prompt texts from `prompts/<lang>/<name>.txt`. `silence` ignores `keys`.
pub fn simulate_file(
    plan_path: &std::path::Path,
    prompts_dir: &std::path::Path,
    keys: &str,
    language: Option<&str>,
    silence: bool,
    wall: WallClock,
) -> Result<SimulationReport, SimulateError> {
    let plan = Arc::new(crate::dialplan::load_file(plan_path, prompts_dir)?);
    let script = if silence {
        Vec::new()
    } else {
        parse_script(keys).map_err(|token| SimulateError::BadScript { token })?
    };
    let mut opts = SimOptions::new(script, wall);
    opts.language = language.map(str::to_owned);
    let catalog = crate::dialplan::DirPromptCatalog {
        dir: prompts_dir.to_owned(),
    };
    let text = |p: &PromptId| {
        let path = prompts_dir
            .join(&p.language)
            .join(format!("{}.txt", p.name));
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
    };
    Ok(simulate(plan, &opts, &catalog, &text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_parse_keys_waits_early_keys_and_hangup() {
        let s = parse_script("1, 13 ,w5,!#,hangup").unwrap();
        assert_eq!(
            s,
            [
                ScriptStep::Key(Digit::D1),
                ScriptStep::Key(Digit::D1),
                ScriptStep::Key(Digit::D3),
                ScriptStep::Wait(Duration::from_secs(5)),
                ScriptStep::EarlyKey(Digit::Pound),
                ScriptStep::HangUp,
            ]
        );
        assert_eq!(parse_script("1,x").unwrap_err(), "x");
        assert_eq!(parse_script("wfive").unwrap_err(), "wfive");
        assert!(parse_script("").unwrap().is_empty());
    }
}
